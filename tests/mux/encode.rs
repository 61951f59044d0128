//! Encoders: the ffmpeg CPU fallback round trip (frames → our muxer → ffmpeg's decode →
//! the same frames, approximately), its failure sentences (with stand-in ffmpeg scripts, so
//! no real ffmpeg is needed for those), and the no-encoder error.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use vrseg::video::chunk::VideoCodec;
use vrseg::video::demux::Demuxer;
use vrseg::video::encode::ffmpeg::{find_ffmpeg_in, FfmpegEncoder};
use vrseg::video::encode::{
    open_encoder, open_encoder_with, EncodeError, EncoderPreference, EncoderSettings, FrameData, FrameEncoder,
    InputFrame, PixelFormat,
};
use vrseg::video::mux::bitstream::NalFormat;
use vrseg::video::mux::{EncodedPacket, Muxer, VideoTrackConfig};

use crate::ffmpeg_or_skip;
use crate::tools::*;

/// A gray test frame: a moving diagonal gradient, a black bar (0) and a white square (255).
fn gray_frame(w: usize, h: usize, t: usize) -> Vec<u8> {
    let mut f = vec![0u8; w * h];
    for y in 0..h {
        for x in 0..w {
            let v = ((x * 3 + y * 2 + t * 7) % 200) as u8 + 20;
            f[y * w + x] = if y < h / 8 {
                0
            } else if x >= w / 2 && x < w / 2 + w / 4 && y >= h / 2 && y < h / 2 + h / 4 {
                255
            } else {
                v
            };
        }
    }
    f
}

/// Encodes `frames` (host, packed) with `encoder`, muxes with `pts`, returns the packets.
fn encode_all(encoder: &mut dyn FrameEncoder, frames: &[(Vec<u8>, usize)], pts: &[i64]) -> Vec<EncodedPacket> {
    let mut packets = Vec::new();
    for ((data, pitch), &p) in frames.iter().zip(pts) {
        encoder
            .encode(&InputFrame { data: FrameData::Host { data, pitch: *pitch }, pts: p }, &mut packets)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    encoder.finish(&mut packets).unwrap_or_else(|e| panic!("{e}"));
    packets
}

fn mux(out: &Path, encoder: &dyn FrameEncoder, timescale: u32, frame_duration: i64, packets: &[EncodedPacket]) {
    let (w, h) = encoder.coded_size();
    let config = VideoTrackConfig {
        codec: encoder.codec(),
        width: w,
        height: h,
        timescale,
        frame_duration,
        nal_format: NalFormat::AnnexB,
        parameter_sets: encoder.parameter_sets(),
        stereo: Some(vrseg::video::layout::StereoMode::SideBySideLeftFirst),
        extras: Default::default(),
        colour: vrseg::video::chunk::ColourDescription { full_range: Some(true), ..Default::default() },
    };
    let mut m = Muxer::create(out, config, None).unwrap();
    for p in packets {
        m.write(p).unwrap_or_else(|e| panic!("{e}"));
    }
    m.finish().unwrap();
}

/// Decodes the first video stream to packed `pix_fmt` frames.
fn decode_raw(path: &Path, pix_fmt: &str) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-i"])
        .arg(path)
        .args(["-map", "0:v", "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", pix_fmt, "-"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

#[test]
fn ffmpeg_fallback_gray_round_trip() {
    ffmpeg_or_skip!();
    let dir = scratch("encode_gray");
    let n = 12usize;
    // Irregular pts in a 15360 timescale; keyframes every 5 frames.
    let pts: Vec<i64> = (0..n as i64).map(|i| 1_000 + i * 512 + (i % 3) * 7).collect();
    for codec in [VideoCodec::Hevc, VideoCodec::H264] {
        for (w, h) in [(96usize, 64usize), (95, 63)] {
            let label = format!("{codec}_{w}x{h}");
            let mut settings = EncoderSettings::new(w as u32, h as u32, PixelFormat::Gray8, (30, 1));
            settings.codec = codec;
            settings.keyframe_interval = 5;
            settings.quality = 12;
            let mut encoder = FfmpegEncoder::open(&settings).unwrap_or_else(|e| panic!("{label}: {e}"));
            assert_eq!(encoder.coded_size(), (w as u32 + w as u32 % 2, h as u32 + h as u32 % 2));
            let frames: Vec<(Vec<u8>, usize)> = (0..n).map(|t| (gray_frame(w, h, t), w)).collect();
            let packets = encode_all(&mut encoder, &frames, &pts);
            assert_eq!(packets.len(), n, "{label}: one packet per frame");
            assert_eq!(packets.iter().map(|p| p.pts).collect::<Vec<_>>(), pts, "{label}: pts in order");
            let keys: Vec<usize> = packets.iter().enumerate().filter(|(_, p)| p.keyframe).map(|(i, _)| i).collect();
            assert_eq!(keys, [0, 5, 10], "{label}: keyframes");
            for ext in ["mp4", "mkv"] {
                let out = dir.join(format!("{label}.{ext}"));
                mux(&out, &encoder, 15_360, 512, &packets);
                let d = Demuxer::open(&out).unwrap();
                assert_eq!(d.info().frame_count, n as u64);
                let back: Vec<i64> = chunks(&out)
                    .iter()
                    .map(|c| vrseg::video::mux::audio::rescale(c.pts, u64::from(d.info().timescale), 15_360))
                    .collect();
                assert_eq!(back, pts, "{label}.{ext}: pts");
                // ffmpeg decodes what we muxed; compare with the input, approximately.
                let (cw, ch) = (w + w % 2, h + h % 2);
                let decoded = decode_raw(&out, "gray");
                assert_eq!(decoded.len(), cw * ch * n, "{label}.{ext}: decoded size");
                let (mut sum, mut worst) = (0u64, 0u8);
                for (t, (src, _)) in frames.iter().enumerate() {
                    let dec = &decoded[t * cw * ch..(t + 1) * cw * ch];
                    for y in 0..h {
                        for x in 0..w {
                            let e = src[y * w + x].abs_diff(dec[y * cw + x]);
                            sum += u64::from(e);
                            worst = worst.max(e);
                        }
                    }
                    // Full range survives: the black bar stays near 0, the square near 255.
                    assert!(dec[(h / 16) * cw + 3] <= 4, "{label}.{ext} frame {t}: black bar is {}", dec[3]);
                    let sq = (h / 2 + h / 8) * cw + w / 2 + w / 8;
                    assert!(dec[sq] >= 250, "{label}.{ext} frame {t}: white square is {}", dec[sq]);
                }
                let mean = sum as f64 / (w * h * n) as f64;
                eprintln!("{label}.{ext}: mean abs error {mean:.3}, max {worst}");
                assert!(mean < 2.0 && worst < 64, "{label}.{ext}: mean {mean}, max {worst}");
                let v = ffprobe(&out, &[]);
                assert_eq!(v["streams"][0]["color_range"], "pc", "{label}.{ext}: full range declared");
            }
        }
    }
}

#[test]
fn ffmpeg_fallback_nv12_host_frames_with_a_wide_pitch() {
    ffmpeg_or_skip!();
    let dir = scratch("encode_nv12");
    let (w, h, pitch, n) = (64usize, 48usize, 80usize, 6usize);
    let frames: Vec<(Vec<u8>, usize)> = (0..n)
        .map(|t| {
            let mut f = vec![0xEEu8; pitch * (h + h / 2)];
            for y in 0..h {
                for x in 0..w {
                    f[y * pitch + x] = (16 + (x + y + t * 5) % 200) as u8;
                }
            }
            for y in 0..h / 2 {
                for x in 0..w / 2 {
                    f[(h + y) * pitch + 2 * x] = (100 + x) as u8;
                    f[(h + y) * pitch + 2 * x + 1] = (150 - y) as u8;
                }
            }
            (f, pitch)
        })
        .collect();
    let settings = EncoderSettings::new(w as u32, h as u32, PixelFormat::Nv12, (25, 1));
    assert!(!settings.full_range, "pictures are limited range by default");
    let mut encoder = FfmpegEncoder::open(&settings).unwrap();
    let pts: Vec<i64> = (0..n as i64).map(|i| i * 40).collect();
    let packets = encode_all(&mut encoder, &frames, &pts);
    let out = dir.join("nv12.mkv");
    mux(&out, &encoder, 1000, 40, &packets);
    let decoded = decode_raw(&out, "nv12");
    let frame_bytes = w * h * 3 / 2;
    assert_eq!(decoded.len(), frame_bytes * n);
    let mut worst = 0u8;
    for (t, (src, _)) in frames.iter().enumerate() {
        let dec = &decoded[t * frame_bytes..(t + 1) * frame_bytes];
        for y in 0..h + h / 2 {
            for x in 0..w {
                worst = worst.max(src[y * pitch + x].abs_diff(dec[y * w + x]));
            }
        }
    }
    assert!(worst < 24, "max error {worst}");
}

/// A stand-in `ffmpeg` shell script: answers `-encoders` with `encoders` and otherwise runs
/// `body`.
fn fake_ffmpeg(dir: &Path, encoders: &str, body: &str) -> PathBuf {
    let path = dir.join("ffmpeg");
    let script = format!("#!/bin/sh\ncase \"$*\" in *-encoders*) printf '%s\\n' {encoders}; exit 0;; esac\n{body}\n");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn small_settings() -> EncoderSettings {
    EncoderSettings::new(96, 64, PixelFormat::Gray8, (30, 1))
}

#[test]
fn a_missing_encoder_is_named() {
    let dir = scratch("fake_no_x265");
    let ffmpeg = fake_ffmpeg(&dir, "' V....D libx264 H.264'", "exit 0");
    let err = FfmpegEncoder::open_with(&ffmpeg, &small_settings()).unwrap_err();
    assert!(matches!(err, EncodeError::FfmpegMissingEncoder { encoder: "libx265", .. }), "{err}");
    assert!(err.to_string().contains("has no libx265 encoder"), "{err}");
}

#[test]
fn ffmpeg_dying_mid_stream_is_a_sentence_with_the_frame_and_its_words() {
    let dir = scratch("fake_dies");
    let ffmpeg = fake_ffmpeg(
        &dir,
        "' V....D libx265 HEVC'",
        "head -c 20000 > /dev/null\necho 'fake ffmpeg: out of cheese' >&2\nexit 3",
    );
    let mut encoder = FfmpegEncoder::open_with(&ffmpeg, &small_settings()).unwrap();
    let frame = gray_frame(96, 64, 0);
    let mut packets = Vec::new();
    let mut failure = None;
    for t in 0..200 {
        if let Err(e) =
            encoder.encode(&InputFrame { data: FrameData::Host { data: &frame, pitch: 96 }, pts: t }, &mut packets)
        {
            failure = Some(e);
            break;
        }
    }
    let err = match failure {
        Some(e) => e,
        None => encoder.finish(&mut packets).unwrap_err(),
    };
    let text = err.to_string();
    eprintln!("{text}");
    assert!(matches!(err, EncodeError::Ffmpeg { .. }), "{text}");
    assert!(text.contains("failed at frame"), "{text}");
    assert!(text.contains("out of cheese"), "{text}");
    assert!(text.contains("exit status: 3"), "{text}");
    assert!(packets.is_empty());
}

#[test]
fn ffmpeg_returning_no_pictures_is_caught() {
    let dir = scratch("fake_garbage");
    let ffmpeg = fake_ffmpeg(&dir, "' V....D libx265 HEVC'", "cat > /dev/null\nprintf 'not a stream'\nexit 0");
    let mut encoder = FfmpegEncoder::open_with(&ffmpeg, &small_settings()).unwrap();
    let frame = gray_frame(96, 64, 0);
    let mut packets = Vec::new();
    for t in 0..5 {
        encoder
            .encode(&InputFrame { data: FrameData::Host { data: &frame, pitch: 96 }, pts: t }, &mut packets)
            .unwrap();
    }
    let err = encoder.finish(&mut packets).unwrap_err();
    assert!(err.to_string().contains("returned 0 pictures for 5 frames"), "{err}");
}

#[test]
fn no_encoder_at_all_suggests_masks_or_null() {
    let settings = small_settings();
    let missing = find_ffmpeg_in(std::ffi::OsStr::new("/nonexistent/vrseg-test"));
    let err = open_encoder_with(None, &settings, EncoderPreference::Auto, missing).err().expect("no encoder");
    let text = err.to_string();
    eprintln!("{text}");
    assert!(matches!(err, EncodeError::NoEncoder { .. }), "{text}");
    for needle in [
        "NVENC: no GPU",
        "no ffmpeg found on PATH (searched /nonexistent/vrseg-test)",
        "--output masks",
        "--output null",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in: {text}");
    }
    let err = open_encoder(None, &settings, EncoderPreference::NvencOnly).err().expect("no NVENC without a GPU");
    assert!(matches!(&err, EncodeError::NvencUnavailable { reason } if reason == "no GPU"), "{err}");
}

#[test]
fn settings_are_checked_before_anything_starts() {
    let mut s = EncoderSettings::new(8192, 4096, PixelFormat::Gray8, (30, 1));
    assert!(s.validate().is_ok());
    s.codec = VideoCodec::H264;
    let e = s.validate().unwrap_err().to_string();
    assert!(e.contains("4096") && e.contains("encode HEVC"), "{e}");
    let mut s = small_settings();
    s.quality = 52;
    assert!(s.validate().unwrap_err().to_string().contains("0–51"));
    let mut s = small_settings();
    s.frame_rate = (30, 0);
    assert!(s.validate().is_err());
    let mut s = small_settings();
    s.codec = VideoCodec::Vp9;
    assert!(s.validate().is_err());
    // A frame of the wrong size is refused with its index, before reaching ffmpeg.
    let dir = scratch("bad_frame");
    let ffmpeg = fake_ffmpeg(&dir, "' V....D libx265 HEVC'", "cat > /dev/null");
    let mut encoder = FfmpegEncoder::open_with(&ffmpeg, &small_settings()).unwrap();
    let short = vec![0u8; 100];
    let err = encoder
        .encode(&InputFrame { data: FrameData::Host { data: &short, pitch: 96 }, pts: 0 }, &mut Vec::new())
        .unwrap_err();
    assert!(err.to_string().starts_with("frame 0: 100 bytes given"), "{err}");
}

/// The shape of `vrseg run --output matte` on the CPU: a stereo source with audio, one gray
/// matte per frame in presentation order, whatever encoder opens, our muxer with the source's
/// audio and stereo metadata. The output has the source's frame count, pts, stereo mode and
/// audio packets.
#[test]
fn matte_run_shape_end_to_end() {
    ffmpeg_or_skip!();
    let dir = scratch("matte_run");
    let source = dir.join("sbs_source.mkv");
    make_source(
        &source,
        "libx265",
        15,
        6,
        Some(&["-c:a", "libopus", "-b:a", "32k"]),
        &["-metadata:s:v:0", "stereo_mode=left_right"],
    );
    let demuxer = Demuxer::open(&source).unwrap();
    let info = demuxer.info().clone();
    let (w, h) = (info.width, info.height);
    let fps = (info.fps.round() as u32, 1);
    let settings = EncoderSettings::new(w, h, PixelFormat::Gray8, fps);
    let mut encoder = open_encoder(None, &settings, EncoderPreference::Auto).unwrap();
    let out = dir.join("matte.mkv");
    let config = vrseg::video::encode::track_config(&demuxer, encoder.as_ref(), &settings);
    assert_eq!(config.stereo, Some(vrseg::video::layout::StereoMode::SideBySideLeftFirst));
    let audio = vrseg::video::mux::AudioCopy::all_tracks(&demuxer, vrseg::video::mux::AudioSpan::Whole);
    let mut muxer = Muxer::create(&out, config, Some(audio)).unwrap();
    let mut pts = demuxer.pts_list();
    pts.sort_unstable();
    let mut packets = Vec::new();
    for (t, &p) in pts.iter().enumerate() {
        let matte = gray_frame(w as usize, h as usize, t);
        let frame = InputFrame { data: FrameData::Host { data: &matte, pitch: w as usize }, pts: p };
        encoder.encode(&frame, &mut packets).unwrap();
        for packet in packets.drain(..) {
            muxer.write(&packet).unwrap();
        }
    }
    encoder.finish(&mut packets).unwrap();
    for packet in packets.drain(..) {
        muxer.write(&packet).unwrap();
    }
    let summary = muxer.finish().unwrap();
    assert_eq!(summary.video_frames, pts.len() as u64);
    let back = Demuxer::open(&out).unwrap();
    let mut back_pts = back.pts_list();
    back_pts.sort_unstable();
    assert_eq!(back_pts, pts, "pts (both Matroska, 1 ms ticks)");
    assert_eq!(back.stereo_metadata(), demuxer.stereo_metadata());
    assert_eq!(audio_samples(&out), audio_samples(&source), "audio packets");
    let v = ffprobe(&out, &[]);
    assert_eq!(v["streams"][0]["codec_name"], "hevc");
    assert_eq!(v["streams"][1]["codec_name"], "opus");
}

//! Source video packets and audio through our muxers, read back by our demuxers and ffprobe.

use std::path::Path;

use vrseg::testing::clips_dir;
use vrseg::video::chunk::VideoCodec;
use vrseg::video::demux::Demuxer;
use vrseg::video::layout::StereoMode;
use vrseg::video::mux::{AudioCopy, AudioSpan, ContainerKind, VideoTrackConfig};

use crate::ffmpeg_or_skip;
use crate::tools::*;

/// What a remux must keep, checked with our demuxer: frame count, pts (exact, or recovered by
/// rounding from Matroska's TimestampScale), keyframes, every chunk's bytes, and every audio
/// sample's bytes in order.
fn check_remux(source: &Path, output: &Path, expected_pts: &[i64]) {
    let src = Demuxer::open(source).unwrap();
    let out = Demuxer::open(output).unwrap_or_else(|e| panic!("reading back {}: {e}", output.display()));
    let (si, oi) = (src.info(), out.info());
    assert_eq!((oi.codec, oi.width, oi.height), (si.codec, si.width, si.height));
    let src_chunks = chunks(source);
    let out_chunks = chunks(output);
    assert_eq!(out_chunks.len(), src_chunks.len(), "frame count");
    let out_pts: Vec<i64> = out_chunks
        .iter()
        .map(|c| vrseg::video::mux::audio::rescale(c.pts, u64::from(oi.timescale), u64::from(si.timescale)))
        .collect();
    assert_eq!(out_pts, expected_pts, "pts (output timescale {}, source {})", oi.timescale, si.timescale);
    if oi.timescale == si.timescale {
        let raw: Vec<i64> = out_chunks.iter().map(|c| c.pts).collect();
        assert_eq!(raw, expected_pts, "raw pts in the same timescale");
    }
    let keys = |c: &[vrseg::video::chunk::Chunk]| c.iter().map(|c| c.is_keyframe).collect::<Vec<_>>();
    assert_eq!(keys(&out_chunks), keys(&src_chunks), "keyframes");
    for (i, (a, b)) in out_chunks.iter().zip(&src_chunks).enumerate() {
        assert!(a.data == b.data, "frame {i}: {} bytes vs source {} bytes differ", a.data.len(), b.data.len());
    }
    let src_audio = audio_samples(source);
    let out_audio = audio_samples(output);
    assert_eq!(out_audio.len(), src_audio.len(), "audio tracks");
    for (t, (o, s)) in out_audio.iter().zip(&src_audio).enumerate() {
        assert_eq!(o.len(), s.len(), "audio track {t}: packet count");
        assert!(o == s, "audio track {t}: packets differ from the source's");
    }
}

fn remux_source(source: &Path, output: &Path) -> vrseg::video::mux::MuxSummary {
    let d = Demuxer::open(source).unwrap();
    let codec = d.info().codec;
    let config = VideoTrackConfig::like_source(&d, codec);
    let audio = AudioCopy::all_tracks(&d, AudioSpan::Whole);
    let src_chunks = chunks(source);
    let pts: Vec<i64> = src_chunks.iter().map(|c| c.pts).collect();
    mux_chunks(output, config, Some(audio), &src_chunks, &pts)
}

/// Same container in and out: ffprobe must see the same packets (pts, sizes and flags for
/// audio; pts and flags for video) and ffmpeg must decode identical frames and samples.
fn same_family_round_trip(dir: &Path, source: &Path, ext: &str) {
    let output = dir.join(format!("out.{ext}"));
    let summary = remux_source(source, &output);
    assert_eq!(summary.path, output);
    assert!(!summary.partial);
    assert!(summary.warnings.is_empty(), "{:?}", summary.warnings);
    let src_pts: Vec<i64> = chunks(source).iter().map(|c| c.pts).collect();
    check_remux(source, &output, &src_pts);

    let strip = |p: Vec<(i64, u64, bool)>| p.into_iter().map(|(pts, _, key)| (pts, key)).collect::<Vec<_>>();
    assert_eq!(strip(ffprobe_packets(&output, "v:0")), strip(ffprobe_packets(source, "v:0")), "ffprobe video packets");
    assert_eq!(ffprobe_packets(&output, "a:0"), ffprobe_packets(source, "a:0"), "ffprobe audio packets");
    assert_eq!(decoded_md5s(&output, "0:v", &[]), decoded_md5s(source, "0:v", &[]), "decoded video");
    assert_eq!(decoded_md5s(&output, "0:a", &[]), decoded_md5s(source, "0:a", &[]), "decoded audio");
    // The file lasts as long as its longest track (the audio runs past the video here). The
    // last audio frame's length is not stored in Matroska (ffmpeg's muxer knew it from the
    // encoder), so the end agrees to within one audio frame.
    let duration = |p: &Path| -> f64 { ffprobe(p, &[])["format"]["duration"].as_str().unwrap().parse().unwrap() };
    let (ours, theirs) = (duration(&output), duration(source));
    assert!((ours - theirs).abs() <= 0.022, "duration {ours} s, source {theirs} s");
}

#[test]
fn mp4_hevc_aac_round_trip_keeps_everything() {
    ffmpeg_or_skip!();
    let dir = scratch("mp4_hevc_aac");
    let source = dir.join("source.mp4");
    make_source(&source, "libx265", 20, 8, Some(&["-c:a", "aac", "-b:a", "48k"]), &["-tag:v", "hvc1"]);
    same_family_round_trip(&dir, &source, "mp4");
    let out = ffprobe(&dir.join("out.mp4"), &[]);
    assert_eq!(out["streams"][0]["codec_tag_string"], "hvc1");
}

#[test]
fn mp4_h264_aac_round_trip_keeps_everything() {
    ffmpeg_or_skip!();
    let dir = scratch("mp4_h264_aac");
    let source = dir.join("source.mp4");
    make_source(&source, "libx264", 16, 5, Some(&["-c:a", "aac", "-b:a", "48k"]), &[]);
    same_family_round_trip(&dir, &source, "mp4");
    assert_eq!(ffprobe(&dir.join("out.mp4"), &[])["streams"][0]["codec_tag_string"], "avc1");
}

#[test]
fn mkv_hevc_opus_round_trip_keeps_everything() {
    ffmpeg_or_skip!();
    let dir = scratch("mkv_hevc_opus");
    let source = dir.join("source.mkv");
    make_source(&source, "libx265", 20, 8, Some(&["-c:a", "libopus", "-b:a", "32k"]), &[]);
    same_family_round_trip(&dir, &source, "mkv");
}

#[test]
fn mkv_h264_aac_round_trip_keeps_everything() {
    ffmpeg_or_skip!();
    let dir = scratch("mkv_h264_aac");
    let source = dir.join("source.mkv");
    make_source(&source, "libx264", 16, 5, Some(&["-c:a", "aac", "-b:a", "48k"]), &[]);
    same_family_round_trip(&dir, &source, "mkv");
}

/// MP4 → Matroska and back: video exact (Matroska pts recovered by rounding), AAC and Opus
/// translated with their packets byte for byte, and ffmpeg decodes the same pictures.
#[test]
fn cross_container_keeps_video_and_audio_packets() {
    ffmpeg_or_skip!();
    let dir = scratch("cross_container");
    for (name, vcodec, acodec, out_ext) in [
        ("hevc_aac.mp4", "libx265", "aac", "mkv"),
        ("h264_opus.mp4", "libx264", "libopus", "mkv"),
        ("hevc_opus.mkv", "libx265", "libopus", "mp4"),
        ("h264_aac.mkv", "libx264", "aac", "mp4"),
    ] {
        let source = dir.join(name);
        make_source(&source, vcodec, 12, 4, Some(&["-c:a", acodec, "-b:a", "48k"]), &[]);
        let output = dir.join(format!("{name}.out.{out_ext}"));
        let summary = remux_source(&source, &output);
        assert!(summary.warnings.is_empty(), "{name}: {:?}", summary.warnings);
        assert_eq!(summary.container, ContainerKind::from_path(&output).unwrap());
        let src_pts: Vec<i64> = chunks(&source).iter().map(|c| c.pts).collect();
        check_remux(&source, &output, &src_pts);
        assert_eq!(decoded_md5s(&output, "0:v", &[]), decoded_md5s(&source, "0:v", &[]), "{name}: decoded video");
        // ffmpeg reads the audio packets back with the same sizes, in the same order.
        let sizes = |p: Vec<(i64, u64, bool)>| p.into_iter().map(|x| x.1).collect::<Vec<_>>();
        assert_eq!(sizes(ffprobe_packets(&output, "a:0")), sizes(ffprobe_packets(&source, "a:0")), "{name}");
        // And decodes them to as many samples (Opus/AAC priming handled by the edit list or CodecDelay).
        let n_samples = |p: &Path| {
            let md5 = decoded_md5s(p, "0:a", &["-af", "asetnsamples=n=100000:p=0"]);
            md5.len()
        };
        assert!(n_samples(&output) >= 1, "{name}: audio decodes");
    }
}

/// Irregular, offset and negative first pts on committed clips (the muxer does not care that
/// these bitstreams have B-frames; it stores what it is given): MP4 keeps every tick, with
/// an edit list for the first; Matroska keeps every tick recoverable.
#[test]
fn exact_pts_with_irregular_gaps_and_offsets() {
    let dir = scratch("exact_pts");
    let source = clips_dir().join("hevc_hvc1.mp4");
    let d = Demuxer::open(&source).unwrap();
    let src_chunks = chunks(&source);
    for (label, first, gaps) in [
        ("offset", 7_777i64, vec![512i64, 511, 513, 1, 30_000, 512, 512]),
        ("zero", 0, vec![512, 512, 1024, 512, 512, 512, 512]),
        ("negative", -1_536, vec![512, 512, 512, 512, 700, 324, 512]),
    ] {
        let mut pts = vec![first];
        for g in &gaps {
            pts.push(pts.last().unwrap() + g);
        }
        assert_eq!(pts.len(), src_chunks.len());
        for ext in ["mp4", "mkv"] {
            if ext == "mkv" && first < 0 {
                continue;
            }
            let output = dir.join(format!("{label}.{ext}"));
            let config = VideoTrackConfig::like_source(&d, VideoCodec::Hevc);
            let summary = mux_chunks(&output, config, None, &src_chunks, &pts);
            assert_eq!((summary.first_pts, summary.last_pts), (pts[0], *pts.last().unwrap()));
            let out = Demuxer::open(&output).unwrap();
            let back: Vec<i64> = chunks(&output)
                .iter()
                .map(|c| {
                    vrseg::video::mux::audio::rescale(
                        c.pts,
                        u64::from(out.info().timescale),
                        u64::from(d.info().timescale),
                    )
                })
                .collect();
            assert_eq!(back, pts, "{label}.{ext}");
            if ext == "mp4" {
                assert_eq!(out.info().timescale, d.info().timescale);
                // ffmpeg applies our edit list the same way.
                if have("ffprobe") {
                    let f: Vec<i64> = ffprobe_packets(&output, "v:0").iter().map(|p| p.0).collect();
                    assert_eq!(f, pts, "{label}.mp4 through ffprobe");
                }
            }
        }
    }
    // A second opinion on the MP4 tables: Firefox's parser sees 8 samples with our sizes.
    let bytes = std::fs::read(dir.join("offset.mp4")).unwrap();
    let ctx = mp4parse::read_mp4(&mut std::io::Cursor::new(&bytes)).expect("mp4parse reads our file");
    let track = &ctx.tracks[0];
    let sizes = track.stsz.as_ref().expect("stsz").sample_sizes.len();
    assert_eq!(sizes, src_chunks.len());
}

/// Stereo metadata: st3d in MP4, StereoMode in Matroska, from the source or the config, read
/// back by our demuxer and by ffprobe; a `sv3d` box is copied into the MP4 sample entry.
#[test]
fn stereo_metadata_is_carried() {
    let dir = scratch("stereo");
    let source = clips_dir().join("hevc_hvc1.mp4");
    let d = Demuxer::open(&source).unwrap();
    let src_chunks = chunks(&source);
    let pts: Vec<i64> = (0..src_chunks.len() as i64).map(|i| i * 512).collect();
    // sv3d { svhd, proj { prhd, equi } }: an equirectangular projection.
    let full = |kind: &[u8; 4], payload: &[u8]| -> Vec<u8> {
        let mut b = ((payload.len() + 12) as u32).to_be_bytes().to_vec();
        b.extend_from_slice(kind);
        b.extend_from_slice(&[0, 0, 0, 0]);
        b.extend_from_slice(payload);
        b
    };
    let plain = |kind: &[u8; 4], payload: &[u8]| -> Vec<u8> {
        let mut b = ((payload.len() + 8) as u32).to_be_bytes().to_vec();
        b.extend_from_slice(kind);
        b.extend_from_slice(payload);
        b
    };
    let proj = plain(b"proj", &[full(b"prhd", &[0; 12]), full(b"equi", &[0; 16])].concat());
    let sv3d = plain(b"sv3d", &[full(b"svhd", &[0]), proj].concat());
    for (mode, ffprobe_type) in
        [(StereoMode::SideBySideLeftFirst, "side by side"), (StereoMode::TopBottomLeftFirst, "top and bottom")]
    {
        for ext in ["mp4", "mkv"] {
            let output = dir.join(format!("{mode:?}.{ext}"));
            let mut config = VideoTrackConfig::like_source(&d, VideoCodec::Hevc);
            config.stereo = Some(mode);
            if ext == "mp4" {
                config.extras.mp4_sv3d = Some(sv3d.clone());
            }
            let summary = mux_chunks(&output, config, None, &src_chunks, &pts);
            assert!(summary.warnings.is_empty(), "{:?}", summary.warnings);
            let back = Demuxer::open(&output).unwrap();
            assert_eq!(back.stereo_metadata(), Some(mode), "{ext}");
            if ext == "mp4" {
                assert_eq!(back.video_extras().mp4_sv3d.as_deref(), Some(sv3d.as_slice()));
            }
            if have("ffprobe") {
                let v = ffprobe(&output, &[]);
                let side = v["streams"][0]["side_data_list"].as_array().cloned().unwrap_or_default();
                assert!(
                    side.iter().any(|s| s["side_data_type"] == "Stereo 3D" && s["type"] == ffprobe_type),
                    "{ext}: {side:?}"
                );
                if ext == "mp4" {
                    assert!(
                        side.iter().any(|s| s["side_data_type"] == "Spherical Mapping"
                            && s["projection"] == "equirectangular"),
                        "{side:?}"
                    );
                }
            }
        }
    }
    // From the source: the committed st3d and StereoMode clips.
    for (clip, mode) in
        [("stereo_meta_st3d.mp4", StereoMode::SideBySideLeftFirst), ("stereo_meta.mkv", StereoMode::TopBottomLeftFirst)]
    {
        let d = Demuxer::open(clips_dir().join(clip)).unwrap();
        let config = VideoTrackConfig::like_source(&d, VideoCodec::Hevc);
        assert_eq!(config.stereo, Some(mode), "{clip}");
    }
    // A right-eye-first packing has no st3d code: MP4 says so in a warning, Matroska keeps it.
    let output = dir.join("rl.mp4");
    let mut config = VideoTrackConfig::like_source(&d, VideoCodec::Hevc);
    config.stereo = Some(StereoMode::SideBySideRightFirst);
    let summary = mux_chunks(&output, config.clone(), None, &src_chunks, &pts);
    assert_eq!(summary.warnings.len(), 1, "{:?}", summary.warnings);
    assert_eq!(Demuxer::open(&output).unwrap().stereo_metadata(), None);
    let output = dir.join("rl.mkv");
    mux_chunks(&output, config, None, &src_chunks, &pts);
    assert_eq!(Demuxer::open(&output).unwrap().stereo_metadata(), Some(StereoMode::SideBySideRightFirst));
}

/// The committed clips with audio (AAC in MP4, Opus in WebM) copy into both containers with
/// every packet byte-identical, without ffmpeg.
#[test]
fn committed_audio_clips_copy_byte_for_byte() {
    let dir = scratch("committed_audio");
    let video_source = clips_dir().join("hevc_hvc1.mp4");
    let d = Demuxer::open(&video_source).unwrap();
    let src_chunks = chunks(&video_source);
    let pts: Vec<i64> = (0..src_chunks.len() as i64).map(|i| i * 512).collect();
    for audio_clip in ["h264_aac.mp4", "vp9_opus.webm"] {
        let audio_source = clips_dir().join(audio_clip);
        let a = Demuxer::open(&audio_source).unwrap();
        assert_eq!(a.audio_tracks().len(), 1, "{audio_clip}");
        let expected = audio_samples(&audio_source);
        for ext in ["mp4", "mkv"] {
            let output = dir.join(format!("{audio_clip}.{ext}"));
            let config = VideoTrackConfig::like_source(&d, VideoCodec::Hevc);
            let summary =
                mux_chunks(&output, config, Some(AudioCopy::all_tracks(&a, AudioSpan::Whole)), &src_chunks, &pts);
            assert!(summary.warnings.is_empty(), "{audio_clip} → {ext}: {:?}", summary.warnings);
            assert_eq!(summary.audio_packets, vec![(0, expected[0].len() as u64)]);
            assert_eq!(audio_samples(&output), expected, "{audio_clip} → {ext}");
            let back = Demuxer::open(&output).unwrap();
            assert_eq!(back.audio()[0].codec, a.audio()[0].codec);
            assert_eq!(back.audio()[0].channels, a.audio()[0].channels);
            assert_eq!(back.audio()[0].sample_rate, a.audio()[0].sample_rate);
        }
    }
}

/// With `AudioSpan::VideoSpan`, only the audio overlapping the written frames is copied.
#[test]
fn video_span_trims_audio_to_the_frames() {
    let dir = scratch("video_span");
    let source = clips_dir().join("h264_aac.mp4");
    let d = Demuxer::open(&source).unwrap();
    let all = chunks(&source);
    // The clip has B-frames; use the first keyframe only, at its own pts, as a one-frame run.
    let first = all[0].clone();
    assert!(first.is_keyframe);
    let config = VideoTrackConfig::like_source(&d, VideoCodec::H264);
    let output = dir.join("one.mp4");
    let track = &d.audio_tracks()[0];
    let summary = mux_chunks(
        &output,
        config,
        Some(AudioCopy::all_tracks(&d, AudioSpan::VideoSpan)),
        std::slice::from_ref(&first),
        &[first.pts],
    );
    let ts_v = f64::from(d.info().timescale);
    let ts_a = f64::from(track.timescale);
    let end = (first.pts as f64 + d.info().timescale as f64 / d.info().fps) / ts_v;
    let expected = track
        .samples
        .iter()
        .filter(|s| (s.pts + s.duration) as f64 / ts_a > first.pts as f64 / ts_v && (s.pts as f64 / ts_a) < end)
        .count() as u64;
    assert!(expected >= 1 && expected < track.samples.len() as u64, "expected {expected}");
    assert_eq!(summary.audio_packets, vec![(0, expected)]);
}

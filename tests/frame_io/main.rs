//! Host-side frame output against ffmpeg: the committed per-frame MD5 goldens
//! (tests/data/clips/framemd5/, from tools/make-clips.sh), and — where `ffmpeg` is on PATH —
//! our framemd5 lines and y4m bytes against ffmpeg's own for the same decoded frames.
//!
//! The ffmpeg comparisons take ffmpeg's software decode as packed nv12/p010le
//! (`-f rawvideo`), i.e. exactly what the NVDEC decoder will hand over, push it through our
//! code and compare with what ffmpeg itself writes for `-f framemd5` / `-f yuv4mpegpipe`.
//! Without ffmpeg they print `skipped: ffmpeg not found` and pass.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use vrseg::video::framemd5::{framemd5_header, framemd5_line, parse_framemd5, FrameMd5Stream};
use vrseg::video::packed_frame::{packed_frame_bytes, PackedFormat, PackedFrame};
use vrseg::video::y4m::{ChromaSiting, Y4mStream, Y4mWriter};

use vrseg::testing::clips_dir;

fn golden_path(clip: &str) -> PathBuf {
    clips_dir().join("framemd5").join(format!("{clip}.framemd5"))
}

/// The ffprobe facts tools/make-clips.sh stores as CLIP.json.
struct Facts {
    codec: String,
    width: u32,
    height: u32,
    bit_depth: u8,
    frames: usize,
}

fn facts(clip: &str) -> Facts {
    let path = clips_dir().join(format!("{clip}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: Value = serde_json::from_str(&text).expect("golden json parses");
    Facts {
        codec: v["codec"].as_str().expect("codec").to_string(),
        width: v["width"].as_u64().expect("width") as u32,
        height: v["height"].as_u64().expect("height") as u32,
        bit_depth: v["bit_depth"].as_u64().expect("bit_depth") as u8,
        frames: v["frames"].as_u64().expect("frames") as usize,
    }
}

/// Every video clip with golden facts (CLIP.json), by file name.
fn video_clips() -> Vec<String> {
    let mut clips: Vec<String> = std::fs::read_dir(clips_dir())
        .expect("tests/data/clips exists")
        .filter_map(|e| {
            let name = e.expect("dir entry").file_name().to_string_lossy().into_owned();
            name.strip_suffix(".json").map(str::to_string)
        })
        .collect();
    clips.sort();
    clips
}

#[test]
fn every_nvdec_clip_has_a_golden_and_av1_has_none() {
    let clips = video_clips();
    assert!(clips.len() >= 20, "expected the committed fixtures, found {}", clips.len());
    for clip in clips {
        let has_golden = golden_path(&clip).exists();
        let is_av1 = facts(&clip).codec == "av1";
        assert_eq!(has_golden, !is_av1, "{clip}: golden present = {has_golden}");
    }
}

#[test]
fn goldens_parse_and_agree_with_the_clip_facts() {
    let mut checked = 0;
    for clip in video_clips() {
        let path = golden_path(&clip);
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let f = facts(&clip);
        let frames = parse_framemd5(&text).unwrap_or_else(|e| panic!("{clip}: {e}"));
        assert_eq!(frames.len(), f.frames, "{clip}: golden frames vs .json frames");
        let size = packed_frame_bytes(f.width, f.height, f.bit_depth) as u64;
        for (i, frame) in frames.iter().enumerate() {
            assert_eq!(frame.stream, 0, "{clip} frame {i}");
            assert_eq!(frame.size, size, "{clip} frame {i}: size vs {}x{}", f.width, f.height);
            // Rawvideo output: time base 1/frame-rate, one tick per frame, dts = pts.
            assert_eq!((frame.dts, frame.pts, frame.duration), (i as i64, i as i64, 1), "{clip} frame {i}");
        }
        // Our header writer reproduces ffmpeg's header. The time base is 1/frame-rate as
        // ffmpeg guesses it: 1/30 for every fixture but stereo_meta_st3d.mp4 (12/359, from
        // the millisecond timestamps its Matroska source left in the MP4); SAR is 1:1.
        let header: String = text.lines().take_while(|l| l.starts_with('#')).map(|l| format!("{l}\n")).collect();
        let time_base = header
            .lines()
            .find_map(|l| l.strip_prefix("#tb 0: "))
            .and_then(|tb| tb.split_once('/'))
            .and_then(|(n, d)| Some((n.parse().ok()?, d.parse().ok()?)))
            .unwrap_or_else(|| panic!("{clip}: no #tb line"));
        let ours = framemd5_header(&FrameMd5Stream {
            stream_index: 0,
            time_base,
            width: f.width,
            height: f.height,
            sample_aspect: (1, 1),
        });
        assert_eq!(header, ours, "{clip}: header");
        checked += 1;
    }
    assert!(checked >= 19, "only {checked} goldens found");
}

fn ffmpeg_found() -> bool {
    let found = Command::new("ffmpeg").arg("-version").output().is_ok_and(|o| o.status.success());
    if !found {
        println!("skipped: ffmpeg not found");
    }
    found
}

/// Runs ffmpeg with `args` (quiet, overwrite) and returns its stdout.
fn ffmpeg(args: &[&str]) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin"])
        .args(args)
        .output()
        .expect("run ffmpeg");
    assert!(out.status.success(), "ffmpeg {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn ffprobe_entry(clip: &Path, entry: &str) -> String {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
        .arg(format!("stream={entry}"))
        .args(["-of", "default=nw=1:nk=1"])
        .arg(clip)
        .output()
        .expect("run ffprobe");
    assert!(out.status.success(), "ffprobe {entry} failed");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The y4m stream facts ffmpeg uses for `clip`, read with ffprobe.
fn y4m_stream_from_ffprobe(clip: &Path, width: u32, height: u32, bit_depth: u8) -> Y4mStream {
    let rate = ffprobe_entry(clip, "r_frame_rate");
    let (num, den) = rate.split_once('/').expect("rate is num/den");
    let sar = ffprobe_entry(clip, "sample_aspect_ratio");
    let sample_aspect =
        sar.split_once(':').and_then(|(n, d)| Some((n.parse().ok()?, d.parse().ok()?))).filter(|&(n, _)| n != 0);
    Y4mStream {
        width,
        height,
        bit_depth,
        fps_num: num.parse().expect("rate num"),
        fps_den: den.parse().expect("rate den"),
        sample_aspect,
        chroma_siting: match ffprobe_entry(clip, "chroma_location").as_str() {
            "left" => ChromaSiting::Left,
            "center" => ChromaSiting::Center,
            "topleft" => ChromaSiting::TopLeft,
            _ => ChromaSiting::Unspecified,
        },
        full_range: match ffprobe_entry(clip, "color_range").as_str() {
            "tv" => Some(false),
            "pc" => Some(true),
            _ => None,
        },
    }
}

/// Decodes `input_args` with ffmpeg to the decoder's planar frames, packs them as the GPU
/// decoder will hand them over, runs them through [`Y4mWriter`] and compares with ffmpeg's own
/// yuv4mpegpipe output, header included. Returns the packed bytes.
fn y4m_matches_ffmpeg(label: &str, input_args: &[&str], stream: Y4mStream) -> Vec<u8> {
    let format = PackedFormat::for_bit_depth(stream.bit_depth).expect("8 or 10 bit");
    let (planar_fmt, strict) = match format {
        PackedFormat::Nv12 => ("yuv420p", "0"),
        // ffmpeg calls yuv420p10le in y4m unofficial and wants -strict -1 for it.
        PackedFormat::P010Le => ("yuv420p10le", "-1"),
    };
    let planar = ffmpeg(&[input_args, &["-pix_fmt", planar_fmt, "-f", "rawvideo", "-"]].concat());
    let expected =
        ffmpeg(&[input_args, &["-pix_fmt", planar_fmt, "-strict", strict, "-f", "yuv4mpegpipe", "-"]].concat());
    let packed = planar_to_packed(&planar, stream.width, stream.height, format);
    // Our packing agrees with ffmpeg's nv12/p010le output, except where ffmpeg 5.1's swscale
    // is wrong: at odd widths it leaves the last U/V pair of each p010le chroma row zero
    // (tools/make-clips.sh works around the same bug for the goldens).
    if format == PackedFormat::Nv12 || stream.width % 2 == 0 {
        let ffmpeg_packed =
            ffmpeg(&[input_args, &["-pix_fmt", format.ffmpeg_pix_fmt(), "-f", "rawvideo", "-"]].concat());
        assert!(
            ffmpeg_packed == packed,
            "{label}: ffmpeg's {} differs from the planar frames packed",
            format.ffmpeg_pix_fmt()
        );
    }

    let frame_bytes = packed_frame_bytes(stream.width, stream.height, stream.bit_depth);
    assert!(
        !packed.is_empty() && packed.len() % frame_bytes == 0,
        "{label}: {} bytes of {frame_bytes}-byte frames",
        packed.len()
    );
    let mut writer = Y4mWriter::new(Vec::new(), stream).expect("writer");
    for (index, bytes) in packed.chunks_exact(frame_bytes).enumerate() {
        let frame = PackedFrame::new(stream.width, stream.height, stream.bit_depth, index as i64, index as u64, bytes)
            .expect("frame");
        writer.write_frame(&frame).expect("write");
    }
    let ours = writer.finish().expect("finish");
    let header_end = |b: &[u8]| b.iter().position(|&c| c == b'\n').map_or(0, |p| p + 1);
    assert_eq!(
        String::from_utf8_lossy(&ours[..header_end(&ours)]),
        String::from_utf8_lossy(&expected[..header_end(&expected)]),
        "{label}: y4m header"
    );
    let comparable = as_ffmpeg51_writes_it(&ours, header_end(&ours), stream);
    assert_eq!(comparable.len(), expected.len(), "{label}: y4m length");
    if let Some(at) = comparable.iter().zip(&expected).position(|(a, b)| a != b) {
        panic!("{label}: y4m differs from ffmpeg's at byte {at}");
    }

    // ffmpeg reads our y4m back to the decoder's very frames.
    let round_trip =
        ffmpeg_with_stdin(&["-f", "yuv4mpegpipe", "-i", "-", "-pix_fmt", planar_fmt, "-f", "rawvideo", "-"], ours);
    assert!(round_trip == planar, "{label}: ffmpeg reads our y4m back differently");
    packed
}

/// Packs planar I420 frames (u8, or u16 LE with the value in the low 10 bits) into NV12 or
/// P010LE: the test's own, deliberately plain, inverse of the library's conversion.
fn planar_to_packed(planar: &[u8], width: u32, height: u32, format: PackedFormat) -> Vec<u8> {
    let sample = format.bytes_per_sample();
    let (w, h) = (width as usize, height as usize);
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let frame_len = (w * h + 2 * cw * ch) * sample;
    assert!(!planar.is_empty() && planar.len() % frame_len == 0, "{} bytes of {frame_len}-byte frames", planar.len());
    let to_packed_sample = |s: &[u8]| -> Vec<u8> {
        match format {
            PackedFormat::Nv12 => s.to_vec(),
            PackedFormat::P010Le => (u16::from_le_bytes([s[0], s[1]]) << 6).to_le_bytes().to_vec(),
        }
    };
    let mut packed = Vec::with_capacity(planar.len());
    for frame in planar.chunks_exact(frame_len) {
        let (luma, chroma) = frame.split_at(w * h * sample);
        let (u, v) = chroma.split_at(cw * ch * sample);
        for s in luma.chunks_exact(sample) {
            packed.extend(to_packed_sample(s));
        }
        for (us, vs) in u.chunks_exact(sample).zip(v.chunks_exact(sample)) {
            packed.extend(to_packed_sample(us));
            packed.extend(to_packed_sample(vs));
        }
    }
    packed
}

/// Our y4m as ffmpeg 5.1's yuv4mpegpipe muxer writes it. They differ only for high bit depth
/// at odd widths: ffmpeg computes a chroma row as `ceil(width × 2 bytes / 2)` = `width` bytes
/// (libavformat/yuv4mpegenc.c halves the byte width, not the sample count), so it drops the
/// high byte of the last U and V sample of every row, and its own y4m demuxer, which expects
/// `ceil(width / 2) × 2` bytes, then misreads the file. We write the full rows; this cuts them
/// the way ffmpeg does so that everything else can still be compared byte for byte.
fn as_ffmpeg51_writes_it(ours: &[u8], header_len: usize, stream: Y4mStream) -> Vec<u8> {
    let sample = if stream.bit_depth > 8 { 2 } else { 1 };
    let (w, h) = (stream.width as usize, stream.height as usize);
    let luma = w * h * sample;
    let full_row = w.div_ceil(2) * sample;
    let ffmpeg_row = (w * sample).div_ceil(2);
    let rows = h.div_ceil(2);
    let frame_len = b"FRAME\n".len() + luma + 2 * rows * full_row;
    let mut out = ours[..header_len].to_vec();
    for frame in ours[header_len..].chunks(frame_len) {
        out.extend_from_slice(&frame[..b"FRAME\n".len() + luma]);
        for row in frame[b"FRAME\n".len() + luma..].chunks(full_row) {
            out.extend_from_slice(&row[..ffmpeg_row]);
        }
    }
    out
}

/// Runs ffmpeg with `input` on its stdin and returns its stdout.
fn ffmpeg_with_stdin(args: &[&str], input: Vec<u8>) -> Vec<u8> {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ffmpeg");
    let mut stdin = child.stdin.take().expect("stdin");
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("ffmpeg output");
    feeder.join().expect("feeder thread").expect("write to ffmpeg");
    assert!(out.status.success(), "ffmpeg {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

#[test]
fn clips_decoded_by_ffmpeg_give_ffmpegs_y4m_and_framemd5() {
    if !ffmpeg_found() {
        return;
    }
    // 8-bit H.264 (left siting, range unsignalled) with B-frames, 8-bit HEVC (limited range),
    // 10-bit HEVC, 8-bit VP9 (unspecified siting) and 10-bit VP9 at an odd size.
    for clip in [
        "h264_bframes_moov_end.mp4",
        "hevc_hvc1.mp4",
        "hevc_10bit_318x158.mp4",
        "vp9_opus.webm",
        "vp9_10bit_259x147.webm",
    ] {
        let path = clips_dir().join(clip);
        let path_str = path.to_str().expect("utf-8 path");
        let f = facts(clip);
        let stream = y4m_stream_from_ffprobe(&path, f.width, f.height, f.bit_depth);
        let packed = y4m_matches_ffmpeg(clip, &["-threads", "1", "-i", path_str, "-map", "0:v:0"], stream);

        // The same frames hashed by us give the golden's lines, character for character.
        let text = std::fs::read_to_string(golden_path(clip)).expect("golden");
        let golden_lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        let goldens = parse_framemd5(&text).expect("golden parses");
        let frame_bytes = packed_frame_bytes(f.width, f.height, f.bit_depth);
        let frames: Vec<&[u8]> = packed.chunks_exact(frame_bytes).collect();
        assert_eq!(frames.len(), goldens.len(), "{clip}: frames");
        for ((bytes, golden), golden_line) in frames.iter().zip(&goldens).zip(&golden_lines) {
            let ours = framemd5_line(golden.stream, golden.dts, golden.pts, golden.duration, bytes);
            assert_eq!(&ours, golden_line, "{clip}");
        }
    }
}

#[test]
fn odd_sized_synthetic_frames_give_ffmpegs_y4m() {
    if !ffmpeg_found() {
        return;
    }
    // lavfi sources round sizes to even; scale gives the odd ones, setsar keeps A1:1.
    for (width, height) in [(3u32, 3u32), (7, 5), (4, 2), (259, 147), (130, 67)] {
        for (bit_depth, planar) in [(8u8, "yuv420p"), (10, "yuv420p10le")] {
            // Scale into the planar format first, so that the packed and the y4m outputs are
            // two lossless repackings of the same frames (scaling straight to nv12 takes a
            // different swscale path with different rounding).
            let filter = format!("scale={width}:{height},setsar=1,format={planar}");
            let input = ["-f", "lavfi", "-i", "testsrc2=size=260x148:rate=25", "-vf", &filter, "-frames:v", "3"];
            let stream = Y4mStream {
                width,
                height,
                bit_depth,
                fps_num: 25,
                fps_den: 1,
                sample_aspect: Some((1, 1)),
                // testsrc2 → scale: ffmpeg marks the frames limited range, siting unspecified.
                chroma_siting: ChromaSiting::Unspecified,
                full_range: Some(false),
            };
            y4m_matches_ffmpeg(&format!("{width}x{height} {bit_depth}-bit"), &input, stream);
        }
    }
}

//! `vrseg dev loop-clip` (src/video/loop_clip.rs) on the committed clips: B-frames (also
//! with negative composition offsets), open GOPs in HEVC (CRA + RASL) and H.264 (recovery
//! point I-frames), AAC audio, a Matroska source. Read back with our demuxer: N times the
//! frames, each copy's pts and dts the source's shifted by k x the clip's duration, pts
//! distinct, dts strictly increasing, the same bytes and keyframe flags, N times the
//! keyframes and the audio packets; where ffmpeg is installed it must decode the output to
//! N times the source's frame hashes and read the same pts.

use std::path::Path;

use vrseg::testing::clips_dir;
use vrseg::video::demux::Demuxer;
use vrseg::video::loop_clip::loop_clip;

use crate::tools::*;

const TIMES: u32 = 3;

fn check_loop(clip: &str) {
    let source = clips_dir().join(clip);
    let dir = scratch(&format!("loop-{clip}"));
    let output = dir.join("looped.mp4");
    let summary = loop_clip(&source, &output, TIMES).unwrap_or_else(|e| panic!("{clip}: {e}"));
    assert!(!dir.join("looped.mp4.partial").exists(), "{clip}: the temporary file is left");
    let src = chunks(&source);
    let out = chunks(&output);
    let n = src.len();
    assert_eq!(out.len(), TIMES as usize * n, "{clip}: frames");
    assert_eq!(summary.mux.video_frames, out.len() as u64);

    // The shift is the clip's span: earliest pts to the latest pts + its duration.
    let info = Demuxer::open(&source).unwrap().info().clone();
    assert_eq!(Demuxer::open(&output).unwrap().info().timescale, info.timescale, "{clip}: timescale");
    let nominal = (f64::from(info.timescale) / info.fps).round() as i64;
    let first = src.iter().map(|c| c.pts).min().unwrap();
    let end = src.iter().map(|c| c.pts + if c.duration > 0 { c.duration } else { nominal }).max().unwrap();
    assert_eq!(summary.shift, end - first, "{clip}: shift");
    for (i, o) in out.iter().enumerate() {
        let (k, s) = ((i / n) as i64, &src[i % n]);
        assert_eq!((o.pts, o.dts), (s.pts + k * summary.shift, s.dts + k * summary.shift), "{clip}: frame {i} pts/dts");
        assert_eq!(o.is_keyframe, s.is_keyframe, "{clip}: frame {i} keyframe flag");
        assert!(o.data == s.data, "{clip}: frame {i}: {} bytes vs the source's {}", o.data.len(), s.data.len());
    }
    assert!(out.windows(2).all(|w| w[0].dts < w[1].dts), "{clip}: dts not strictly increasing");
    let mut pts: Vec<i64> = out.iter().map(|c| c.pts).collect();
    pts.sort_unstable();
    assert!(pts.windows(2).all(|w| w[0] < w[1]), "{clip}: presentation times repeat");
    let keys = |c: &[vrseg::video::chunk::Chunk]| c.iter().filter(|c| c.is_keyframe).count();
    assert_eq!(keys(&out), TIMES as usize * keys(&src), "{clip}: keyframes");

    let (src_audio, out_audio) = (audio_samples(&source), audio_samples(&output));
    assert_eq!(out_audio.len(), src_audio.len(), "{clip}: audio tracks");
    for (t, (o, s)) in out_audio.iter().zip(&src_audio).enumerate() {
        let repeated: Vec<&Vec<u8>> = (0..TIMES).flat_map(|_| s.iter()).collect();
        assert_eq!(o.len(), repeated.len(), "{clip}: audio track {t} packets");
        assert!(o.iter().zip(&repeated).all(|(a, b)| a == *b), "{clip}: audio track {t} bytes");
    }

    if have("ffmpeg") && have("ffprobe") {
        let src_md5 = decoded_md5s(&source, "0:v", &[]);
        let out_md5 = decoded_md5s(&output, "0:v", &[]);
        let repeated: Vec<String> = (0..TIMES).flat_map(|_| src_md5.iter().cloned()).collect();
        assert_eq!(out_md5, repeated, "{clip}: ffmpeg's decode of the output is not the source's {TIMES} times");
        let mut probed: Vec<i64> = ffprobe_packets(&output, "v:0").iter().map(|p| p.0).collect();
        probed.sort_unstable();
        assert_eq!(probed, pts, "{clip}: ffprobe's pts");
        eprintln!("{clip}: {} frames, ffmpeg decodes {TIMES} x the source's {} frame hashes", out.len(), src_md5.len());
    } else {
        eprintln!("{clip}: ffmpeg not found: the decode check is skipped");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn b_frames_are_looped_in_decode_order() {
    check_loop("h264_bframes_moov_end.mp4");
    check_loop("h264_negcts.mp4");
}

#[test]
fn open_gops_loop_with_their_keyframes() {
    check_loop("hevc_opengop.mp4");
    check_loop("h264_opengop.mp4");
}

#[test]
fn audio_is_looped_with_the_video() {
    check_loop("h264_aac.mp4");
}

#[test]
fn a_matroska_source_loops_into_an_mp4() {
    check_loop("hevc.mkv");
}

#[test]
fn bad_requests_are_refused_and_leave_nothing() {
    let dir = scratch("loop-refused");
    let source = clips_dir().join("h264_aac.mp4");
    let err = |input: &Path, out: &str, times: u32| loop_clip(input, &dir.join(out), times).unwrap_err().to_string();
    assert!(err(&source, "a.mp4", 0).contains("--times 0"));
    assert!(err(&source, "a.mkv", 2).contains("name the output .mp4"));
    assert!(err(&clips_dir().join("vp9_10bit_259x147.webm"), "b.mp4", 2).contains("H.264 and HEVC"));
    assert!(err(&dir.join("missing.mp4"), "c.mp4", 2).contains("missing.mp4"));
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
}

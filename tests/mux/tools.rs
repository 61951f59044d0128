//! Helpers: scratch directories, ffmpeg/ffprobe, reading outputs back.

use std::path::{Path, PathBuf};
use std::process::Command;

use vrseg::video::chunk::Chunk;
use vrseg::video::demux::Demuxer;
use vrseg::video::mux::{EncodedPacket, Muxer, VideoTrackConfig};

/// A fresh scratch directory for one test: under cargo's target tmp dir, or the system's
/// temp dir where that build-time path does not exist (the GPU bundle runs elsewhere).
pub fn scratch(test: &str) -> PathBuf {
    let make = |root: PathBuf| -> Option<PathBuf> {
        let dir = root.join(test);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).ok().map(|_| dir)
    };
    make(Path::new(env!("CARGO_TARGET_TMPDIR")).join("mux-tests"))
        .or_else(|| make(std::env::temp_dir().join(format!("vrseg-mux-tests-{}", std::process::id()))))
        .expect("create a scratch dir")
}

/// Whether `tool -version` runs.
pub fn have(tool: &str) -> bool {
    Command::new(tool).arg("-version").output().is_ok_and(|o| o.status.success())
}

/// Returns from the test when ffmpeg/ffprobe are missing (fails with VRSEG_REQUIRE_FFMPEG=1).
#[macro_export]
macro_rules! ffmpeg_or_skip {
    () => {
        if !($crate::tools::have("ffmpeg") && $crate::tools::have("ffprobe")) {
            if std::env::var("VRSEG_REQUIRE_FFMPEG").is_ok_and(|v| v == "1") {
                panic!("{}: VRSEG_REQUIRE_FFMPEG=1 but ffmpeg/ffprobe are not on PATH", module_path!());
            }
            eprintln!("{}: skipped: ffmpeg not found", module_path!());
            return;
        }
    };
}

/// Runs ffmpeg quietly with `args`; panics with its stderr on failure.
pub fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(args)
        .output()
        .expect("run ffmpeg");
    assert!(out.status.success(), "ffmpeg {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// ffprobe's JSON for `path` (streams, packets).
pub fn ffprobe(path: &Path, extra: &[&str]) -> serde_json::Value {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-of", "json", "-show_streams", "-show_format"])
        .args(extra)
        .arg(path)
        .output()
        .expect("run ffprobe");
    assert!(out.status.success(), "ffprobe {} failed: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("ffprobe json")
}

/// Packets of one stream as ffprobe reads them: (pts, size, keyframe).
pub fn ffprobe_packets(path: &Path, stream: &str) -> Vec<(i64, u64, bool)> {
    let v = ffprobe(path, &["-select_streams", stream, "-show_packets"]);
    v["packets"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    (
                        p["pts"].as_i64().unwrap_or(i64::MIN),
                        p["size"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0),
                        p["flags"].as_str().is_some_and(|f| f.contains('K')),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// MD5 lines of every decoded frame of one stream (`ffmpeg -f framemd5`), hashes only.
pub fn decoded_md5s(path: &Path, map: &str, extra: &[&str]) -> Vec<String> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-i"])
        .arg(path)
        .args(["-map", map])
        .args(extra)
        .args(["-f", "framemd5", "-"])
        .output()
        .expect("run ffmpeg");
    assert!(out.status.success(), "decoding {} failed: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit(',').next().map(|h| h.trim().to_string()))
        .collect()
}

/// Every chunk of a file's video track.
pub fn chunks(path: &Path) -> Vec<Chunk> {
    let mut d = Demuxer::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut out = Vec::new();
    while let Some(c) = d.next_chunk().unwrap_or_else(|e| panic!("{e}")) {
        out.push(c);
    }
    out
}

/// Every sample of every audio track, as bytes.
pub fn audio_samples(path: &Path) -> Vec<Vec<Vec<u8>>> {
    let mut d = Demuxer::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let counts: Vec<usize> = d.audio_tracks().iter().map(|t| t.samples.len()).collect();
    counts.iter().enumerate().map(|(t, &n)| (0..n).map(|i| d.read_audio_sample(t, i).unwrap()).collect()).collect()
}

/// Muxes `chunks` (Annex-B, as the demuxer gives them) with the given pts into `out`.
pub fn mux_chunks(
    out: &Path,
    config: VideoTrackConfig,
    audio: Option<vrseg::video::mux::AudioCopy>,
    chunks: &[Chunk],
    pts: &[i64],
) -> vrseg::video::mux::MuxSummary {
    let mut muxer = Muxer::create(out, config, audio).unwrap_or_else(|e| panic!("{e}"));
    for (c, &p) in chunks.iter().zip(pts) {
        muxer
            .write(&EncodedPacket { data: c.data.clone(), pts: p, keyframe: c.is_keyframe })
            .unwrap_or_else(|e| panic!("{e}"));
    }
    muxer.finish().unwrap_or_else(|e| panic!("{e}"))
}

/// Makes a B-frame-free source clip with ffmpeg: 256x128 at 30 fps, `frames` frames, a
/// keyframe every `gop`, `vcodec` (libx264/libx265), and `audio` (ffmpeg audio codec args)
/// from a 1.5 s 440 Hz tone (longer than the video), into `path` (container by extension).
pub fn make_source(path: &Path, vcodec: &str, frames: u32, gop: u32, audio: Option<&[&str]>, extra: &[&str]) {
    let gop_s = gop.to_string();
    // A duration on the source, not -frames:v, which would also end the audio early.
    let video = format!("testsrc2=size=256x128:rate=30:duration={}", (f64::from(frames) - 0.5) / 30.0);
    let mut args: Vec<&str> = vec!["-f", "lavfi", "-i", &video];
    if audio.is_some() {
        args.extend(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=1.5"]);
    }
    args.extend(["-c:v", vcodec, "-g", &gop_s, "-bf", "0"]);
    let x265_params = format!("bframes=0:log-level=error:keyint={gop}:min-keyint={gop}:scenecut=0");
    if vcodec == "libx265" {
        args.extend(["-x265-params", &x265_params]);
    } else {
        args.extend(["-preset", "veryfast", "-sc_threshold", "0"]);
    }
    args.extend(["-pix_fmt", "yuv420p"]);
    if let Some(a) = audio {
        args.extend(a);
    }
    args.extend(extra);
    let path_s = path.to_str().expect("utf-8 path");
    args.push(path_s);
    ffmpeg(&args);
}

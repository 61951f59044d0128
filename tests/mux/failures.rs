//! Unfinished, killed, partial and refused writes: no file ever carries the finished name
//! unless it is complete.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vrseg::testing::clips_dir;
use vrseg::video::chunk::{Chunk, VideoCodec};
use vrseg::video::demux::Demuxer;
use vrseg::video::mux::output::{partial_path, temporary_path};
use vrseg::video::mux::{AudioCopy, AudioSpan, EncodedPacket, MuxError, Muxer, VideoTrackConfig};

use crate::tools::*;

fn hevc_source() -> (PathBuf, VideoTrackConfig, Vec<Chunk>) {
    let source = clips_dir().join("hevc_hvc1.mp4");
    let d = Demuxer::open(&source).unwrap();
    let config = VideoTrackConfig::like_source(&d, VideoCodec::Hevc);
    (source.clone(), config, chunks(&source))
}

fn packet(c: &Chunk, pts: i64) -> EncodedPacket {
    EncodedPacket { data: c.data.clone(), pts, keyframe: c.is_keyframe }
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn an_unfinished_muxer_removes_its_temporary_file() {
    let dir = scratch("unfinished");
    let (_, config, chunks) = hevc_source();
    for ext in ["mp4", "mkv"] {
        let out = dir.join(format!("out.{ext}"));
        let mut m = Muxer::create(&out, config.clone(), None).unwrap();
        for (i, c) in chunks.iter().take(3).enumerate() {
            m.write(&packet(c, i as i64 * 512)).unwrap();
        }
        assert!(temporary_path(&out).exists(), "written under the temporary name");
        assert!(!out.exists());
        drop(m);
    }
    assert!(files_in(&dir).is_empty(), "{:?}", files_in(&dir));
}

/// The child side of `a_killed_writer_leaves_only_the_temporary_name`: writes frames into
/// `VRSEG_MUX_KILL_OUT` forever. Ignored, so it runs only when that test starts it.
#[test]
#[ignore = "started by a_killed_writer_leaves_only_the_temporary_name"]
fn child_writer_for_the_kill_test() {
    let Some(out) = std::env::var_os("VRSEG_MUX_KILL_OUT") else {
        return;
    };
    let (_, config, chunks) = hevc_source();
    let mut m = Muxer::create(Path::new(&out), config, None).unwrap();
    let mut pts = 0;
    loop {
        for c in &chunks {
            m.write(&packet(c, pts)).unwrap();
            pts += 512;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// SIGKILL in the middle of a write: the finished name never appears; what is left is
/// `OUT.partial`, which for MP4 (no moov yet) is not even readable.
#[test]
fn a_killed_writer_leaves_only_the_temporary_name() {
    let dir = scratch("killed");
    for ext in ["mp4", "mkv"] {
        let out = dir.join(format!("out.{ext}"));
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "failures::child_writer_for_the_kill_test", "--nocapture"])
            .env("VRSEG_MUX_KILL_OUT", &out)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let temp = temporary_path(&out);
        let start = Instant::now();
        // Kill once a few MiB are out (past the 1 MiB write buffer's first flushes).
        while std::fs::metadata(&temp).map(|m| m.len()).unwrap_or(0) < 3 << 20 {
            assert!(start.elapsed() < Duration::from_secs(60), "the child wrote nothing");
            assert!(child.try_wait().unwrap().is_none(), "the child exited early");
            std::thread::sleep(Duration::from_millis(10));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!out.exists(), "{ext}: a killed write must not leave the finished name");
        assert!(!partial_path(&out).exists(), "{ext}: nor the finalised-partial name");
        assert!(temp.exists());
        if ext == "mp4" {
            assert!(Demuxer::open(&temp).is_err(), "an MP4 cut before its moov is not readable");
        }
    }
}

/// Ctrl-C: `finish_partial` finalises a valid file named `NAME.partial.EXT` holding the
/// frames written, with the audio up to the end of the last frame.
#[test]
fn finish_partial_writes_a_valid_file_named_partial() {
    let dir = scratch("partial");
    let (_, config, chunks) = hevc_source();
    let audio_source = clips_dir().join("h264_aac.mp4");
    let a = Demuxer::open(&audio_source).unwrap();
    for ext in ["mp4", "mkv"] {
        let out = dir.join(format!("out.{ext}"));
        let mut m = Muxer::create(&out, config.clone(), Some(AudioCopy::all_tracks(&a, AudioSpan::Whole))).unwrap();
        // Five frames at 30 fps in a 15360 timescale: the video ends at 5 * 512 = 2560.
        for (i, c) in chunks.iter().take(5).enumerate() {
            m.write(&packet(c, i as i64 * 512)).unwrap();
        }
        let summary = m.finish_partial().unwrap();
        assert!(summary.partial);
        assert_eq!(summary.path, partial_path(&out));
        assert!(!out.exists() && !temporary_path(&out).exists());
        let back = Demuxer::open(&summary.path).unwrap();
        assert_eq!(back.info().frame_count, 5);
        // Audio: samples starting before 2560/15360 s = 0.1667 s, i.e. before 8000 at 48 kHz.
        let expected = a.audio_tracks()[0].samples.iter().filter(|s| s.pts * 15360 < 2560 * 48_000).count();
        assert_eq!(summary.audio_packets, vec![(0, expected as u64)]);
        assert_eq!(back.audio_tracks()[0].samples.len(), expected);
        if have("ffprobe") {
            let v = ffprobe(&summary.path, &["-count_packets"]);
            assert_eq!(v["streams"][0]["nb_read_packets"], "5");
        }
    }
}

/// A failed run leaves an earlier complete output alone: the finished name is only ever
/// replaced by a rename of a complete file.
#[test]
fn a_failed_run_does_not_touch_an_existing_output() {
    let dir = scratch("existing");
    let (_, config, chunks) = hevc_source();
    let out = dir.join("out.mp4");
    std::fs::write(&out, b"previous complete output").unwrap();
    let mut m = Muxer::create(&out, config, None).unwrap();
    m.write(&packet(&chunks[0], 0)).unwrap();
    let err = m.write(&packet(&chunks[1], 0)).unwrap_err();
    assert!(matches!(err, MuxError::PtsOrder { index: 1, pts: 0, previous: 0, .. }), "{err}");
    drop(m);
    assert_eq!(std::fs::read(&out).unwrap(), b"previous complete output");
    assert_eq!(files_in(&dir), ["out.mp4"]);
}

#[test]
fn bad_input_is_refused_with_a_sentence() {
    let dir = scratch("refused");
    let (_, config, chunks) = hevc_source();
    let out = dir.join("out.mp4");
    let message = |e: MuxError| {
        let text = e.to_string();
        assert!(text.starts_with(&out.display().to_string()), "names the output: {text}");
        text
    };

    // The first frame must be a keyframe.
    let mut m = Muxer::create(&out, config.clone(), None).unwrap();
    let text = message(m.write(&EncodedPacket { data: chunks[1].data.clone(), pts: 0, keyframe: false }).unwrap_err());
    assert!(text.contains("not a keyframe"), "{text}");
    drop(m);

    // A keyframe flag on a picture that is not IDR/IRAP.
    let mut m = Muxer::create(&out, config.clone(), None).unwrap();
    m.write(&packet(&chunks[0], 0)).unwrap();
    let text = message(m.write(&EncodedPacket { data: chunks[1].data.clone(), pts: 1, keyframe: true }).unwrap_err());
    assert!(text.contains("frame 1") && text.contains("IDR/IRAP"), "{text}");
    drop(m);

    // Not Annex-B.
    let mut m = Muxer::create(&out, config.clone(), None).unwrap();
    m.write(&packet(&chunks[0], 0)).unwrap();
    let text = message(m.write(&EncodedPacket { data: vec![9, 9, 9, 9], pts: 1, keyframe: false }).unwrap_err());
    assert!(text.contains("frame 1") && text.contains("start code"), "{text}");
    drop(m);

    // A keyframe without parameter sets and none given up front.
    let mut m = Muxer::create(&out, config.clone(), None).unwrap();
    let slices_only: Vec<u8> = {
        let mut v = Vec::new();
        for nal in vrseg::video::demux::nal::AnnexBNals::new(&chunks[0].data) {
            if vrseg::video::mux::bitstream::param_kind(VideoCodec::Hevc, nal).is_none() {
                v.extend_from_slice(&[0, 0, 0, 1]);
                v.extend_from_slice(nal);
            }
        }
        v
    };
    let text = message(m.write(&EncodedPacket { data: slices_only, pts: 0, keyframe: true }).unwrap_err());
    assert!(text.contains("parameter sets"), "{text}");
    drop(m);

    // Nothing written: nothing to finalise, and nothing left behind.
    let m = Muxer::create(&out, config.clone(), None).unwrap();
    let text = message(m.finish().unwrap_err());
    assert!(text.contains("no video frame"), "{text}");

    // Containers and codecs vrseg does not write.
    for (name, needle) in [("out.webm", "WebM"), ("out.avi", ".mp4 or .mkv")] {
        let e = Muxer::create(&dir.join(name), config.clone(), None).unwrap_err();
        assert!(e.to_string().contains(needle), "{e}");
    }
    let mut vp9 = config.clone();
    vp9.codec = VideoCodec::Vp9;
    let e = Muxer::create(&out, vp9, None).unwrap_err();
    assert!(e.to_string().contains("H.264 and HEVC"), "{e}");
    assert!(files_in(&dir).is_empty(), "{:?}", files_in(&dir));
}

/// Parameter sets given up front are used; repeats in the stream are dropped from the
/// samples (hvc1); a different SPS mid-stream stays in band and the entry becomes hev1.
#[test]
fn parameter_sets_up_front_in_band_and_changed() {
    let dir = scratch("parameter_sets");
    let (_, mut config, chunks) = hevc_source();
    let sets: Vec<Vec<u8>> = vrseg::video::demux::nal::AnnexBNals::new(&chunks[0].data)
        .filter(|n| vrseg::video::mux::bitstream::param_kind(VideoCodec::Hevc, n).is_some())
        .map(|n| n.to_vec())
        .collect();
    assert_eq!(sets.len(), 3);
    config.parameter_sets = sets.clone();
    let out = dir.join("same.mp4");
    let pts: Vec<i64> = (0..chunks.len() as i64).map(|i| i * 512).collect();
    let summary = mux_chunks(&out, config.clone(), None, &chunks, &pts);
    assert_eq!(summary.video_entry, "hvc1");
    // A changed SPS (a different vui byte is enough for the muxer: it compares bytes) in
    // the second keyframe stays in its sample.
    let mut changed = chunks.clone();
    let key = changed.iter().skip(1).position(|c| c.is_keyframe).map(|i| i + 1);
    if let Some(k) = key {
        let mut data = Vec::new();
        for nal in vrseg::video::demux::nal::AnnexBNals::new(&changed[k].data) {
            data.extend_from_slice(&[0, 0, 0, 1]);
            data.extend_from_slice(nal);
            if vrseg::video::mux::bitstream::param_kind(VideoCodec::Hevc, nal)
                == Some(vrseg::video::mux::bitstream::ParamKind::Sps)
            {
                // Append a trailing-bits byte: still a parseable SPS, different bytes.
                let last = data.len() - 1;
                data.insert(last, 0x80);
            }
        }
        changed[k].data = data;
        let out = dir.join("changed.mp4");
        let summary = mux_chunks(&out, config, None, &changed, &pts);
        assert_eq!(summary.video_entry, "hev1");
        assert_eq!(Demuxer::open(&out).unwrap().info().frame_count, chunks.len() as u64);
    } else {
        panic!("the fixture has a second keyframe");
    }
}

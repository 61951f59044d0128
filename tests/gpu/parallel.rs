//! Parallel decode across NVDEC engines (src/video/parallel.rs) against
//! single-session decoding: on every committed clip NVDEC decodes (B-frames,
//! HEVC, 10-bit, VP9, Matroska, fragmented MP4, the open-GOP HEVC and H.264
//! clips of 7 GOPs), K = 1, 2, 3 and 7 sessions must give the same frames
//! (MD5 of each packed frame), in the same order, with the same pts; the
//! reorder window never holds more than its places and the frames go
//! through one pool reservation. Then the same through `vrseg run`, with
//! --start/--frames, and a damaged open-GOP clip.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use md5::{Digest, Md5};
use vrseg::gpu::{device_allocation_count, Gpu};
use vrseg::video::decode::{decode_file, decode_file_parallel, DecodeSummary, HostCopy};
use vrseg::video::demux::Demuxer;
use vrseg::video::parallel::{nvdec_engines, ParallelOptions};

use crate::gpu_or_skip;

use vrseg::testing::{clips_dir, models_dir};

/// Per frame: (index, pts, MD5 of the packed NV12/P010 bytes).
type Frames = Vec<(u64, i64, [u8; 16])>;

/// Decodes `path` with one session (`options` None: [`decode_file`], the
/// reference) or through [`decode_file_parallel`], hashing every frame.
fn try_hashed(gpu: &Gpu, path: &Path, options: Option<ParallelOptions>) -> Result<(Frames, DecodeSummary), String> {
    let mut frames = Vec::new();
    let mut sink = |_: &vrseg::video::chunk::StreamInfo, f: vrseg::video::decode::DecodedFrame| {
        frames.push((f.index, f.pts, Md5::digest(f.packed.expect("packed copy requested")).into()));
        Ok(())
    };
    let summary = match options {
        None => decode_file(gpu, path, HostCopy::Packed, &mut sink),
        Some(options) => decode_file_parallel(gpu, path, &options, HostCopy::Packed, &mut sink),
    }
    .map_err(|e| e.to_string())?;
    Ok((frames, summary))
}

fn hashed(gpu: &Gpu, path: &Path, options: Option<ParallelOptions>) -> (Frames, DecodeSummary) {
    try_hashed(gpu, path, options).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// K sessions, every GOP a chunk of its own (the committed clips have GOPs
/// of 6, which the default would merge), an optional window.
fn sessions(k: usize, window: Option<usize>) -> Option<ParallelOptions> {
    Some(ParallelOptions { decoders: Some(k), window, min_chunk_frames: 1 })
}

/// Runs `f` on its own thread: a deadlock fails the test instead of hanging the run.
fn within<T: Send + 'static>(what: &str, seconds: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(seconds)).unwrap_or_else(|_| panic!("{what}: no result in {seconds} s"))
}

/// Every clip with a golden framemd5 (the ones NVDEC decodes), plus the open-GOP clips.
fn clips() -> Vec<PathBuf> {
    let mut clips: Vec<PathBuf> = std::fs::read_dir(clips_dir().join("framemd5"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "framemd5"))
        .map(|p| clips_dir().join(p.file_stem().unwrap()))
        .collect();
    clips.sort();
    for required in ["hevc_opengop.mp4", "h264_opengop.mp4", "h264_bframes_moov_end.mp4", "hevc_hvc1.mp4"] {
        assert!(clips.contains(&clips_dir().join(required)), "{required} is missing from {clips:?}");
    }
    clips
}

#[test]
fn k_sessions_decode_every_clip_exactly_like_one() {
    let gpu = gpu_or_skip!();
    let mut mismatches = Vec::new();
    let mut split = 0;
    for clip in clips() {
        let name = clip.file_name().unwrap().to_string_lossy().into_owned();
        let engines = nvdec_engines(&gpu, Demuxer::open(&clip).unwrap().info()).unwrap();
        let (single, _) = hashed(&gpu, &clip, None);
        for k in [1usize, 2, 3, 7] {
            let before = device_allocation_count();
            let (frames, summary) = hashed(&gpu, &clip, sessions(k, None));
            let allocations = device_allocation_count() - before;
            let (chunks, window, peak, surfaces) = summary.parallel.as_ref().map_or((0, 0, 0, 0), |p| {
                (p.sessions.chunks, p.sessions.window_slots, p.sessions.window_peak, p.surface_bytes)
            });
            eprintln!(
                "{name}: K={k} on {engines} engines: {} sessions, {chunks} chunks, window {window} (peak {peak}), \
                 NVDEC surfaces ~{:.1} MB{}",
                summary.decoders,
                surfaces as f64 / 1e6,
                summary.decoders_note.as_deref().map(|n| format!("; note: {n}")).unwrap_or_default()
            );
            if summary.decoders > 1 {
                split += 1;
            }
            if frames != single {
                let first = frames.iter().zip(&single).position(|(a, b)| a != b);
                mismatches.push(format!(
                    "{name} K={k}: {} frames vs {} single-session; first difference at frame {first:?}: {:?} vs {:?}",
                    frames.len(),
                    single.len(),
                    first.map(|i| frames[i]),
                    first.map(|i| single[i])
                ));
            }
            if summary.decoders > k.min(engines) {
                mismatches.push(format!("{name} K={k}: {} sessions ran", summary.decoders));
            }
            if peak > window {
                mismatches.push(format!("{name} K={k}: {peak} frames waited in a window of {window}"));
            }
            if allocations != 1 {
                mismatches.push(format!("{name} K={k}: {allocations} device allocations (one pool expected)"));
            }
            if !(summary.concealed.is_empty() && summary.failed.is_empty()) {
                mismatches.push(format!("{name} K={k}: concealed {:?} failed {:?}", summary.concealed, summary.failed));
            }
        }
    }
    assert!(mismatches.is_empty(), "{} mismatches:\n{}", mismatches.len(), mismatches.join("\n"));
    assert!(split > 0, "no clip was split across sessions: does this GPU have a single NVDEC engine?");
}

#[test]
fn open_gop_clips_use_every_session_and_survive_the_smallest_window() {
    let gpu = gpu_or_skip!();
    for name in ["hevc_opengop.mp4", "h264_opengop.mp4"] {
        let clip = clips_dir().join(name);
        let engines = nvdec_engines(&gpu, Demuxer::open(&clip).unwrap().info()).unwrap();
        if engines < 2 {
            eprintln!("{name}: this GPU has one NVDEC engine; parallel decode is the single-session path here");
            return;
        }
        let (single, _) = hashed(&gpu, &clip, None);
        let k = engines.min(7);
        // The default split (chunks of at least 8 samples: the GOPs of 16 stay whole).
        let (frames, summary) = hashed(&gpu, &clip, Some(ParallelOptions::sessions(Some(k))));
        let report = summary.parallel.clone().expect("a parallel decode");
        assert_eq!(summary.decoders, k, "{name}: 7 GOPs keep {k} sessions busy");
        if name.starts_with("hevc") {
            assert_eq!(
                report.sessions.open_boundaries,
                report.sessions.chunks - 1,
                "{name}: every CRA has RASL pictures"
            );
        }
        assert!(report.sessions.open_boundaries > 0, "{name}: open GOPs");
        assert!(report.sessions.discarded > 0, "{name}: tails decode pictures that are not delivered");
        assert_eq!(frames, single, "{name}: K={k}");
        // One place in the window: sessions wait for each other, in order, and finish.
        let gpu2 = gpu.clone();
        let clip2 = clip.clone();
        let (frames, summary) = within(name, 120, move || hashed(&gpu2, &clip2, sessions(k, Some(1))));
        let report = summary.parallel.expect("a parallel decode");
        assert_eq!((report.sessions.window_slots, report.sessions.window_peak), (1, 1), "{name}");
        assert_eq!(frames, single, "{name}: K={k}, window 1");
    }
}

/// Overwrites 16 bytes in the middle of sample `sample`'s slice data in a
/// copy of `clip` (found by content: the MP4 stores the same bytes the
/// demuxer hands on, after the NAL length fields).
fn damaged_copy(clip: &Path, sample: u64, out: &Path) {
    let mut demuxer = Demuxer::open(clip).unwrap();
    demuxer.seek_to_index(sample);
    let chunk = demuxer.next_chunk().unwrap().unwrap();
    let middle = chunk.data.len() / 2;
    let needle = &chunk.data[middle..middle + 32];
    let mut bytes = std::fs::read(clip).unwrap();
    let at = bytes.windows(needle.len()).position(|w| w == needle).expect("the sample's bytes are in the file");
    assert_eq!(bytes.windows(needle.len()).filter(|w| *w == needle).count(), 1, "the pattern is unique");
    for (i, b) in bytes[at + 8..at + 24].iter_mut().enumerate() {
        *b ^= 0x5a ^ (i as u8);
    }
    std::fs::write(out, bytes).unwrap();
}

#[test]
fn a_damaged_gop_decodes_in_parallel_as_it_does_on_one_session() {
    let gpu = gpu_or_skip!();
    let clip = clips_dir().join("hevc_opengop.mp4");
    let keyframes = Demuxer::open(&clip).unwrap().keyframe_indices();
    let out = std::env::temp_dir().join(format!("vrseg-parallel-damaged-{}.mp4", std::process::id()));
    // A P picture a few samples after the fourth keyframe: the damage spreads
    // to what is predicted from it, up to the next keyframe's leading pictures.
    damaged_copy(&clip, keyframes[3] + 4, &out);
    let single = try_hashed(&gpu, &out, None);
    match &single {
        Ok((frames, summary)) => eprintln!(
            "damaged, one session: {} frames, concealed {:?}, failed {:?}",
            frames.len(),
            summary.concealed,
            summary.failed
        ),
        Err(e) => eprintln!("damaged, one session: {e}"),
    }
    let (clean, _) = hashed(&gpu, &clip, None);
    if let Ok((frames, _)) = &single {
        assert_ne!(frames, &clean, "the damage changes some frames");
    }
    // Whatever one session makes of the damage (frames, the frames NVDEC
    // reports, or an error), K sessions make the same of it.
    let outcome = |r: &Result<(Frames, DecodeSummary), String>| match r {
        Ok((frames, s)) => Ok((frames.clone(), s.concealed.clone(), s.failed.clone())),
        Err(e) => Err(e.clone()),
    };
    for k in [2, 3, 7] {
        let parallel = try_hashed(&gpu, &out, sessions(k, None));
        if let Ok((_, summary)) = &parallel {
            eprintln!("damaged, K={k}: {} sessions", summary.decoders);
        }
        assert_eq!(outcome(&parallel), outcome(&single), "K={k}");
    }
    std::fs::remove_file(&out).ok();
}

fn engine_plan(dir: &Path) -> PathBuf {
    use vrseg::engine::build::build_plan;
    use vrseg::engine::build::import::{import_file, ImportOptions};
    let options = ImportOptions { batch: Some(4), allow_empty_initializers: true };
    let mut graph = import_file(&models_dir().join("yolo11n-seg-320.structure.onnx"), &options).unwrap();
    vrseg::engine::build::fill_stripped_weights(&mut graph, 7);
    let path = dir.join("n320-b4.plan");
    build_plan(graph, "yolo11n-seg-320", &path).unwrap();
    path
}

#[test]
fn vrseg_run_gives_the_same_detections_on_one_and_all_sessions() {
    use vrseg::ops::yolo_seg::PostprocessConfig;
    use vrseg::pipeline::{run, OutputKind, RunOptions, RunStats};
    let gpu = gpu_or_skip!();
    let dir = std::env::temp_dir().join(format!("vrseg-parallel-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let engine = engine_plan(&dir);
    let clip = clips_dir().join("hevc_opengop.mp4");
    let engines = nvdec_engines(&gpu, Demuxer::open(&clip).unwrap().info()).unwrap();
    let run_with = |decoders: Option<usize>, start_s: Option<f64>, frames: Option<u64>, tag: &str| {
        let detections = dir.join(format!("{tag}.jsonl"));
        let options = RunOptions {
            input: clip.clone(),
            output: None,
            engine: engine.clone(),
            batch: None,
            tensorrt_search: vrseg::engine::tensorrt::LibrarySearch::from_env(),
            layout: None,
            kind: OutputKind::Null,
            postprocess: PostprocessConfig { conf: 0.05, classes: vec![], ..Default::default() },
            start_s,
            frames,
            gpu: 0,
            detections: Some(detections.clone()),
            frames_ahead: 3,
            decode_window: None,
            decoders,
            key_colour: None,
        };
        // Another test of this binary may raise the global Ctrl-C flag for a moment.
        let mut stats: RunStats = run(&options, &mut |_, _| {}).unwrap();
        if stats.interrupted {
            stats = run(&options, &mut |_, _| {}).unwrap();
        }
        assert!(!stats.interrupted, "{tag}");
        (std::fs::read_to_string(&detections).unwrap(), stats)
    };
    for (start_s, frames) in [(None, None), (Some(1.2), Some(37)), (Some(0.0), Some(5)), (Some(3.0), None)] {
        let tag = format!("{start_s:?}-{frames:?}");
        let (one, one_stats) = run_with(Some(1), start_s, frames, &format!("one-{tag}"));
        let (all, all_stats) = run_with(None, start_s, frames, &format!("all-{tag}"));
        eprintln!(
            "start {start_s:?} frames {frames:?}: {} frames; all engines: {} sessions, {} chunks, window {} slots \
             ({:.1} MB, peak {}), NVDEC surfaces ~{:.1} MB, {} pictures discarded",
            all_stats.frames_out,
            all_stats.decoders,
            all_stats.decode_chunks,
            all_stats.decode_window_slots,
            all_stats.decode_window_bytes as f64 / 1e6,
            all_stats.decode_window_peak,
            all_stats.decode_surface_bytes as f64 / 1e6,
            all_stats.decode_discarded
        );
        assert_eq!(one_stats.decoders, 1);
        assert_eq!(all_stats.frames_out, one_stats.frames_out, "{tag}");
        assert!(one_stats.frames_out > 0, "{tag}");
        assert_eq!(all, one, "{tag}: the detection lines (index, pts, boxes) of every frame agree");
        assert_eq!(all_stats.device_allocations_in_loop, 0, "{tag}");
        assert!(all_stats.decode_window_peak <= all_stats.decode_window_slots, "{tag}");
        for stats in [&one_stats, &all_stats] {
            // The clock stops at the finished output; NVDEC's teardown may
            // end later (the decode thread closes the channel before it).
            let p = &stats.phases;
            assert_eq!(stats.wall_s, p.output_done_at_s, "{tag}");
            assert!(p.last_batch_at_s <= p.output_done_at_s && p.output_done_at_s <= p.run_end_at_s, "{tag}: {p:?}");
        }
        if engines > 1 && frames.is_none_or(|f| f > 16) {
            assert!(all_stats.decoders > 1, "{tag}: {} sessions on {engines} engines", all_stats.decoders);
            assert!(all_stats.decode_window_slots > 0 && all_stats.decode_surface_bytes > 0, "{tag}");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

//! `vrseg run`'s pipeline (src/pipeline) end to end on the committed clips:
//! NVDEC → letterbox → native engine (random-weight YOLO11n-seg at 320,
//! batch 4) → postprocess → sink. Checks: every frame comes out once, with
//! the input's pts in presentation order; PNG masks have the frame's size;
//! the frame loop makes no device allocation; an existing output is refused;
//! an interrupted run renames its output to say so; a `--batch` the plan was
//! not built for is refused; a TensorRT engine where TensorRT is absent (the
//! H100) stops with "TensorRT not found" and leaves no output behind; green
//! and overlay frames equal the compose reference on the decoded input and
//! the run's mattes.

use std::path::{Path, PathBuf};

use vrseg::engine::build::build_plan;
use vrseg::engine::build::import::{import_file, ImportOptions};
use vrseg::engine::tensorrt::file::{encode_header, write_atomically, EngineMetadata, MetadataTensor};
use vrseg::engine::tensorrt::{LibrarySearch, TrtVersion};
use vrseg::ops::compose::{
    compose_reference, outline_thickness, ReferenceMode, Ycbcr8, DEFAULT_KEY_RGB, OVERLAY_TINT_RGB, PALETTE_RGB,
};
use vrseg::ops::letterbox::{eye_rects, YuvMatrix};
use vrseg::ops::yolo_seg::{Detection, PostprocessConfig};
use vrseg::pipeline::{partial_name, run, OutputKind, RunOptions, INTERRUPTED};
use vrseg::testing::{clips_dir, models_dir};
use vrseg::video::decode::HostCopy;
use vrseg::video::layout::StereoLayout;
use vrseg::video::nvdec::FrameLayout;

use crate::gpu_or_skip;

fn plan(dir: &Path) -> PathBuf {
    let options = ImportOptions { batch: Some(4), allow_empty_initializers: true };
    let mut graph = import_file(&models_dir().join("yolo11n-seg-320.structure.onnx"), &options).unwrap();
    vrseg::engine::build::fill_stripped_weights(&mut graph, 7);
    let path = dir.join("n320-b4.plan");
    build_plan(graph, "yolo11n-seg-320", &path).unwrap();
    path
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vrseg-pipeline-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The clip's presentation timestamps, sorted (from its ffprobe sidecar).
fn expected_pts(clip: &str) -> Vec<i64> {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(clips_dir().join(format!("{clip}.json"))).unwrap()).unwrap();
    let mut pts: Vec<i64> = json["packets"].as_array().unwrap().iter().map(|p| p[0].as_i64().unwrap()).collect();
    pts.sort();
    pts
}

fn options(clip: &str, engine: &Path, kind: OutputKind, output: Option<PathBuf>, detections: PathBuf) -> RunOptions {
    RunOptions {
        input: clips_dir().join(clip),
        output,
        engine: engine.to_path_buf(),
        batch: None,
        tensorrt_search: vrseg::engine::tensorrt::LibrarySearch::from_env(),
        layout: None,
        kind,
        postprocess: PostprocessConfig { conf: 0.05, classes: vec![], ..Default::default() },
        start_s: None,
        frames: None,
        gpu: 0,
        detections: Some(detections),
        frames_ahead: 3,
        decode_window: None,
        decoders: None,
        key_colour: None,
    }
}

#[test]
fn every_clip_kind_runs_through_the_pipeline_with_its_pts() {
    let _gpu = gpu_or_skip!();
    let dir = scratch("clips");
    let engine = plan(&dir);
    for clip in [
        "h264_1918x1078_3dh.mp4",
        "stereo_meta_st3d.mp4",
        "h264_bframes_moov_end.mp4",
        "hevc_10bit_318x158.mp4",
        "vp9_10bit_259x147.webm",
        "hevc.mkv",
    ] {
        let det = dir.join(format!("{clip}.jsonl"));
        let stats = run(&options(clip, &engine, OutputKind::Null, None, det.clone()), &mut |_, _| {}).unwrap();
        let want = expected_pts(clip);
        eprintln!(
            "{clip}: {} frames ({}), {}x{}, batch {} frames, {:.1} fps, pool {:.1} MB",
            stats.frames_out,
            stats.layout,
            stats.width,
            stats.height,
            stats.batch_frames,
            stats.fps,
            stats.vram_pool_bytes as f64 / 1e6
        );
        assert_eq!(stats.frames_out, want.len() as u64, "{clip}: frames out");
        assert_eq!(stats.device_allocations_in_loop, 0, "{clip}: the frame loop allocated device memory");
        assert_eq!(stats.download_bytes_per_frame, 0.0, "{clip}: null output copied frames to the host");
        let lines: Vec<serde_json::Value> =
            std::fs::read_to_string(&det).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let pts: Vec<i64> = lines.iter().map(|l| l["pts"].as_i64().unwrap()).collect();
        assert_eq!(pts, want, "{clip}: detection lines carry the input's pts in presentation order");
        for l in &lines {
            for d in l["detections"].as_array().unwrap() {
                let b: Vec<f64> = d["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
                assert!(b[0] <= b[2] && b[1] <= b[3], "{clip}: box {b:?}");
                assert!(
                    b[2] <= f64::from(stats.width) + 0.5 && b[3] <= f64::from(stats.height) + 0.5,
                    "{clip}: box {b:?}"
                );
            }
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn masks_are_one_png_per_frame_and_an_interrupted_run_says_so() {
    let _gpu = gpu_or_skip!();
    let dir = scratch("masks");
    let engine = plan(&dir);
    let clip = "h264_1918x1078_3dh.mp4";
    let out = dir.join("masks");
    let stats = run(&options(clip, &engine, OutputKind::Masks, Some(out.clone()), dir.join("d.jsonl")), &mut |_, _| {})
        .unwrap();
    let mut pngs: Vec<_> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().path()).collect();
    pngs.sort();
    assert_eq!(pngs.len() as u64, stats.frames_out);
    for png in &pngs {
        let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(png).unwrap()));
        let reader = decoder.read_info().unwrap();
        let info = reader.info();
        assert_eq!((info.width, info.height), (1918, 1078), "{}", png.display());
        assert_eq!(info.color_type, png::ColorType::Grayscale);
    }
    assert!(stats.download_bytes_per_frame >= (1918 * 1078) as f64, "masks are host output: the frame is downloaded");

    // The same output again: refused, nothing touched.
    let err = run(&options(clip, &engine, OutputKind::Masks, Some(out.clone()), dir.join("e.jsonl")), &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("exists"), "{err}");

    // Interrupted before the first frame: a valid, empty result named as interrupted.
    INTERRUPTED.store(true, std::sync::atomic::Ordering::Relaxed);
    let out2 = dir.join("masks2");
    let result =
        run(&options(clip, &engine, OutputKind::Masks, Some(out2.clone()), dir.join("f.jsonl")), &mut |_, _| {});
    INTERRUPTED.store(false, std::sync::atomic::Ordering::Relaxed);
    let stats = result.unwrap();
    assert!(stats.interrupted);
    assert!(!out2.exists(), "an interrupted run must not leave the final name");
    assert!(dir.join("masks2.interrupted").is_dir());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn matte_video_without_any_encoder_says_what_to_use_instead() {
    let gpu = gpu_or_skip!();
    let nvenc = vrseg::video::nvenc::probe(&gpu);
    let ffmpeg_on_path = std::process::Command::new("ffmpeg").arg("-version").output().is_ok();
    if nvenc.session_opens || ffmpeg_on_path {
        eprintln!("skipped: this machine has an encoder (NVENC {}, ffmpeg {ffmpeg_on_path})", nvenc.session_opens);
        return;
    }
    let dir = scratch("matte");
    let engine = plan(&dir);
    let out = dir.join("matte.mp4");
    let err = run(
        &options("h264_1918x1078_3dh.mp4", &engine, OutputKind::Matte, Some(out.clone()), dir.join("d.jsonl")),
        &mut |_, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("--output masks") && err.contains("--output null"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(!out.exists(), "no output file after a failed start: {left:?}");
    std::fs::remove_dir_all(&dir).ok();
}

/// The directory's entries, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn a_batch_the_plan_was_not_built_for_is_refused_before_the_output() {
    let _gpu = gpu_or_skip!();
    let dir = scratch("batch");
    let engine = plan(&dir);
    let out = dir.join("masks");
    let mut asked = options("h264_1918x1078_3dh.mp4", &engine, OutputKind::Masks, Some(out), dir.join("d.jsonl"));
    asked.batch = Some(3);
    let err = run(&asked, &mut |_, _| {}).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "{}: runs 4 images per inference, but --batch 3 of sbs frames needs 6 (3 × 2 eyes); rebuild it with \
             `vrseg build-engine MODEL.onnx --batch 6 -o NAME.plan`, or leave --batch out",
            engine.display()
        )
    );
    assert_eq!(listing(&dir), ["n320-b4.plan"], "nothing but the plan");
    // The plan's own batch (4 images: 2 stereo frames) runs (the clip has 3 frames; 2 asked).
    asked.batch = Some(2);
    asked.frames = Some(2);
    asked.output = Some(dir.join("masks-2"));
    let stats = run(&asked, &mut |_, _| {}).unwrap();
    assert_eq!((stats.batch_frames, stats.frames_out, stats.backend.as_str()), (2, 2, "native"));
    assert!(stats.engine_conversions.is_empty(), "{:?}", stats.engine_conversions);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_tensorrt_engine_without_tensorrt_stops_before_touching_the_output() {
    let gpu = gpu_or_skip!();
    let dir = scratch("tensorrt");
    // An engine as `build-engine --backend tensorrt` writes it on this GPU
    // (header, then a plan whose bytes nothing may read), and a bare plan
    // as `trtexec --saveEngine` writes it.
    let props = gpu.properties();
    let metadata = EngineMetadata {
        tensorrt: TrtVersion::new(10, 8, 0),
        tensorrt_build: None,
        gpu_name: props.name.clone(),
        compute_capability: props.compute_capability,
        vrseg_version: "test".into(),
        source: "model.onnx".into(),
        precision: "fp16".into(),
        batch: None,
        tensors: vec![MetadataTensor {
            name: "images".into(),
            role: "input".into(),
            dtype: "f32".into(),
            shape: vec![2, 3, 320, 320],
        }],
    };
    let plan_bytes = b"a TensorRT plan that must not be read";
    let with_header = dir.join("yolo.engine");
    write_atomically(&with_header, &[&encode_header(&metadata, plan_bytes), plan_bytes]).unwrap();
    let bare = dir.join("bare.trt");
    std::fs::write(&bare, plan_bytes).unwrap();
    let root = dir.join("no-tensorrt-here");
    for (engine, kind, output) in [
        (&with_header, OutputKind::Matte, "matte.mp4"),
        (&bare, OutputKind::Masks, "masks"),
        (&with_header, OutputKind::Null, ""),
    ] {
        let output = (!output.is_empty()).then(|| dir.join(output));
        let detections = dir.join("detections.jsonl");
        let mut asked = options("h264_1918x1078_3dh.mp4", engine, kind, output.clone(), detections.clone());
        asked.batch = Some(2);
        // Only TENSORRT_ROOT, so a TensorRT installed on the test machine cannot change the outcome.
        asked.tensorrt_search = LibrarySearch { root: Some(root.clone()), system: false, ..LibrarySearch::from_env() };
        let err = run(&asked, &mut |_, _| {}).unwrap_err().to_string();
        let expected = format!("TensorRT not found (searched: TENSORRT_ROOT={} (lib/", root.display());
        assert!(err.starts_with(&expected), "{}: {err}", engine.display());
        assert!(err.contains("install TensorRT 10 or 11 and set TENSORRT_ROOT"), "{err}");
        for path in output.iter().chain([&detections]) {
            assert!(!path.exists() && !partial_name(path).exists(), "{} or its partial file exists", path.display());
        }
        assert_eq!(listing(&dir), ["bare.trt", "yolo.engine"], "only the engines: nothing written");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The decoded frames of `clip` in the pool-slot layout the pipeline's
/// kernels read (NVDEC, bit-exact with ffmpeg per tests/gpu/decode.rs).
fn decoded_frames(gpu: &vrseg::gpu::Gpu, clip: &str) -> (FrameLayout, Vec<Vec<u8>>) {
    let mut frames = Vec::new();
    let mut slot_layout = None;
    vrseg::video::decode::decode_file(gpu, &clips_dir().join(clip), HostCopy::Packed, &mut |_, frame| {
        let l = frame.layout;
        let packed = frame.packed.expect("packed copy requested");
        let mut slot = vec![0u8; l.slot_bytes()];
        let (luma, chroma) = (l.luma_row_bytes(), l.chroma_row_bytes());
        for y in 0..l.height as usize {
            slot[y * l.pitch..y * l.pitch + luma].copy_from_slice(&packed[y * luma..(y + 1) * luma]);
        }
        let luma_bytes = luma * l.height as usize;
        for y in 0..l.chroma_height() as usize {
            let at = l.chroma_offset + y * l.pitch;
            slot[at..at + chroma].copy_from_slice(&packed[luma_bytes + y * chroma..luma_bytes + (y + 1) * chroma]);
        }
        frames.push(slot);
        slot_layout = Some(l);
        Ok(())
    })
    .unwrap();
    (slot_layout.expect("the clip has frames"), frames)
}

/// The frames of an 8-bit 4:2:0 y4m file as packed NV12 (Y rows, then interleaved U/V rows).
fn read_y4m_as_nv12(path: &Path, width: usize, height: usize) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    let header_end = bytes.iter().position(|&b| b == b'\n').unwrap();
    let header = std::str::from_utf8(&bytes[..header_end]).unwrap();
    assert!(header.starts_with(&format!("YUV4MPEG2 W{width} H{height} ")), "{header}");
    let (cw, ch) = (width.div_ceil(2), height.div_ceil(2));
    let frame_bytes = width * height + 2 * cw * ch;
    let mut frames = Vec::new();
    let mut at = header_end + 1;
    while at < bytes.len() {
        assert_eq!(&bytes[at..at + 6], b"FRAME\n", "{}: frame {} header", path.display(), frames.len());
        let planar = &bytes[at + 6..at + 6 + frame_bytes];
        let mut nv12 = planar[..width * height].to_vec();
        let (u, v) = planar[width * height..].split_at(cw * ch);
        for i in 0..cw * ch {
            nv12.extend_from_slice(&[u[i], v[i]]);
        }
        frames.push(nv12);
        at += 6 + frame_bytes;
    }
    frames
}

fn read_gray_png(path: &Path) -> (usize, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0u8; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Grayscale);
    buf.truncate(info.buffer_size());
    (info.line_size, buf)
}

/// Detections of every frame from a `--detections` file: per frame, per eye.
fn read_detections(path: &Path, eyes: usize) -> Vec<Vec<Vec<Detection>>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let mut per_eye = vec![Vec::new(); eyes];
            for d in v["detections"].as_array().unwrap() {
                let b: Vec<f32> = d["box"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
                per_eye[d["eye"].as_u64().unwrap() as usize].push(Detection {
                    sx1: b[0],
                    sy1: b[1],
                    sx2: b[2],
                    sy2: b[3],
                    score: d["score"].as_f64().unwrap() as f32,
                    class: d["class"].as_i64().unwrap() as i32,
                    ..Default::default()
                });
            }
            per_eye
        })
        .collect()
}

/// `--output green` and `--output overlay` end to end on the H100, which has
/// neither NVENC nor ffmpeg: the composed frames are written uncompressed
/// (`-o NAME.y4m`) and compared byte for byte with the CPU reference
/// (`compose_reference`) applied to the NVDEC-decoded input, the mattes of an
/// `--output masks` run of the same input and engine, and (overlay) the boxes
/// of its `--detections`. Also: one output frame per input frame, no device
/// allocation in the loop, the same detections in all three runs (the masks
/// run's mattes are the compose runs' mattes only if the pipeline is
/// deterministic, which this checks as far as the detections show it).
/// Not covered here: the encoders (NVENC, ffmpeg), which green/overlay share
/// with --output matte.
#[test]
fn green_and_overlay_compose_the_decoded_input_with_its_mattes() {
    let gpu = gpu_or_skip!();
    let dir = scratch("compose");
    let engine = plan(&dir);
    // (clip, forced layout, key colour): 8-bit SBS; 10-bit VP9 with odd
    // sizes split top/bottom (row 73 is in neither eye).
    for (clip, layout, key) in [
        ("h264_1918x1078_3dh.mp4", StereoLayout::Sbs, None),
        ("vp9_10bit_259x147.webm", StereoLayout::Tb, Some([255u8, 0, 255])),
    ] {
        let (slot_layout, frames) = decoded_frames(&gpu, clip);
        let (w, h) = (slot_layout.width as usize, slot_layout.height as usize);
        let eyes = eye_rects(layout, slot_layout.width, slot_layout.height);
        let run_kind = |kind: OutputKind, out: PathBuf, tag: &str| {
            let det = dir.join(format!("{clip}.{tag}.jsonl"));
            let mut o = options(clip, &engine, kind, Some(out), det.clone());
            o.layout = Some(layout);
            o.key_colour = key;
            o.decoders = Some(1);
            let stats = run(&o, &mut |_, _| {}).unwrap();
            assert_eq!(stats.frames_out, frames.len() as u64, "{clip} {tag}: frames out");
            assert_eq!(stats.device_allocations_in_loop, 0, "{clip} {tag}: the frame loop allocated");
            (stats, read_detections(&det, eyes.len()))
        };
        let masks_dir = dir.join(format!("{clip}.masks"));
        let (_, det_masks) = run_kind(OutputKind::Masks, masks_dir.clone(), "masks");
        let green_path = dir.join(format!("{clip}.green.y4m"));
        let (green_stats, det_green) = run_kind(OutputKind::Green, green_path.clone(), "green");
        let overlay_path = dir.join(format!("{clip}.overlay.y4m"));
        let (overlay_stats, det_overlay) = run_kind(OutputKind::Overlay, overlay_path.clone(), "overlay");
        assert_eq!(det_masks, det_green, "{clip}: detections differ between the masks and green runs");
        assert_eq!(det_masks, det_overlay, "{clip}: detections differ between the masks and overlay runs");
        assert!(green_stats.compose_gpu_s > 0.0 && overlay_stats.compose_gpu_s > 0.0);
        let packed_nv12 = w * h + 2 * w.div_ceil(2) * h.div_ceil(2);
        assert_eq!(
            green_stats.download_bytes_per_frame, packed_nv12 as f64,
            "{clip}: y4m downloads one frame per frame"
        );

        let mut pngs: Vec<_> = std::fs::read_dir(&masks_dir).unwrap().map(|e| e.unwrap().path()).collect();
        pngs.sort();
        assert_eq!(pngs.len(), frames.len());
        let green = read_y4m_as_nv12(&green_path, w, h);
        let overlay = read_y4m_as_nv12(&overlay_path, w, h);
        assert_eq!((green.len(), overlay.len()), (frames.len(), frames.len()), "{clip}: y4m frame counts");

        let info = vrseg::video::demux::Demuxer::open(clips_dir().join(clip)).unwrap().info().clone();
        let matrix = YuvMatrix::for_stream(&info.colour, info.width, info.height, info.bit_depth);
        let full = info.colour.full_range.unwrap_or(false);
        let key8 = Ycbcr8::from_rgb(key.unwrap_or(DEFAULT_KEY_RGB), matrix, full);
        let tint = Ycbcr8::from_rgb(OVERLAY_TINT_RGB, matrix, full);
        let palette = PALETTE_RGB.map(|c| Ycbcr8::from_rgb(c, matrix, full));
        let thickness = outline_thickness(eyes[0]);
        let (mut keyed, mut boxes) = (0usize, 0usize);
        for (f, frame) in frames.iter().enumerate() {
            let (matte_pitch, matte) = read_gray_png(&pngs[f]);
            keyed += matte.iter().filter(|&&a| a < 255).count();
            let want_green =
                compose_reference(frame, &slot_layout, &eyes, &matte, matte_pitch, &ReferenceMode::Green { key: key8 });
            let differing = want_green.iter().zip(&green[f]).filter(|(a, b)| a != b).count();
            assert_eq!(differing, 0, "{clip}: green frame {f}: {differing} bytes differ from the reference");
            let per_eye: Vec<&[Detection]> = det_overlay[f].iter().map(|d| &d[..]).collect();
            boxes += per_eye.iter().map(|d| d.len()).sum::<usize>();
            let mode = ReferenceMode::Overlay { tint, palette, thickness, detections: &per_eye };
            let want_overlay = compose_reference(frame, &slot_layout, &eyes, &matte, matte_pitch, &mode);
            let differing = want_overlay.iter().zip(&overlay[f]).filter(|(a, b)| a != b).count();
            assert_eq!(differing, 0, "{clip}: overlay frame {f}: {differing} bytes differ from the reference");
        }
        eprintln!(
            "{clip}: green and overlay exact on {} frames ({keyed} pixels not fully opaque, {boxes} boxes drawn)",
            frames.len()
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

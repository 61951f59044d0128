//! The `vrseg` binary as a user runs it. These run everywhere: on a machine
//! without a GPU they check the failure path (exit 3, one sentence, no panic);
//! with a GPU, the success path.

use std::process::{Command, Output};

/// The binary under test: `VRSEG_BIN` (set by the GPU bundle, whose layout
/// differs from the build tree) or the one cargo built.
fn vrseg(args: &[&str]) -> Output {
    let bin = std::env::var_os("VRSEG_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_vrseg").into());
    Command::new(&bin).args(args).output().unwrap_or_else(|e| panic!("cannot run {bin:?}: {e}"))
}

fn has_gpu() -> bool {
    vrseg::gpu::device_count().map(|n| n > 0).unwrap_or(false)
}

/// The failure contract: exit code 3 (no usable GPU), one line on stderr
/// starting with `vrseg: error:`, nothing on stdout, no panic.
fn assert_clean_no_gpu_failure(out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "stderr: {stderr}");
    assert!(out.stdout.is_empty(), "stdout: {}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(stderr.trim_end().lines().count(), 1, "more than one line: {stderr}");
    assert!(stderr.starts_with("vrseg: error: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn info_text() {
    let out = vrseg(&["info"]);
    if has_gpu() {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        for needle in ["GPU 0:", "NVDEC", "NVENC", "TensorRT", "Kernels:"] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    } else {
        assert_clean_no_gpu_failure(&out);
    }
}

#[test]
fn info_json_is_one_object() {
    let out = vrseg(&["info", "--json", "--kernels"]);
    if has_gpu() {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON value");
        assert!(value.is_object());
        for key in ["vrseg_version", "driver_cuda_version", "gpus", "tensorrt", "kernel_build", "kernel_resources"] {
            assert!(value.get(key).is_some(), "missing {key}");
        }
        let gpu = &value["gpus"][0];
        for key in ["name", "compute_capability", "total_memory_bytes", "nvdec", "nvenc"] {
            assert!(gpu.get(key).is_some(), "gpus[0] lacks {key}");
        }
    } else {
        assert_clean_no_gpu_failure(&out);
    }
}

#[test]
fn selftest_runs_or_fails_cleanly() {
    let out = vrseg(&["selftest", "--frames", "50"]);
    if has_gpu() {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.lines().last().is_some_and(|l| l.contains(" passed, 0 failed")), "{text}");
    } else {
        assert_clean_no_gpu_failure(&out);
    }
}

#[test]
fn a_missing_gpu_ordinal_is_named() {
    let out = vrseg(&["info", "--gpu", "97"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    if has_gpu() {
        assert!(stderr.contains("GPU 97 does not exist"), "{stderr}");
    }
}

#[test]
fn bad_arguments_exit_2() {
    let out = vrseg(&["no-such-command"]);
    assert_eq!(out.status.code(), Some(2));
    let out = vrseg(&["selftest", "--frames", "many"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn help_lists_the_commands() {
    let out = vrseg(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("info") && text.contains("selftest") && text.contains("probe"), "{text}");
}

fn clip(name: &str) -> String {
    vrseg::testing::clips_dir().join(name).to_string_lossy().into_owned()
}

#[test]
fn probe_json_has_the_documented_keys() {
    let path = clip("h264_1918x1078_3dh.mp4");
    let out = vrseg(&["probe", "--json", &path]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.trim_end().lines().count(), 1, "exactly one JSON line: {text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    for key in [
        "path",
        "container",
        "codec",
        "profile",
        "bit_depth",
        "width",
        "height",
        "frames",
        "fps",
        "duration_s",
        "layout",
        "layout_source",
        "audio",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {text}");
    }
    assert_eq!(v["container"], "mp4");
    assert_eq!(v["codec"], "h264");
    assert_eq!((v["width"].as_u64(), v["height"].as_u64()), (Some(1918), Some(1078)));
    assert_eq!((v["layout"].as_str(), v["layout_source"].as_str()), (Some("sbs"), Some("filename")));
}

#[test]
fn probe_failures_are_one_sentence_naming_the_file() {
    let dir = std::env::temp_dir().join(format!("vrseg-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty.mp4");
    std::fs::write(&empty, b"").unwrap();
    let text_mkv = dir.join("notes.mkv");
    std::fs::write(&text_mkv, b"this is a text file, not a video\n").unwrap();
    for path in [empty, text_mkv, dir.join("missing.mp4")] {
        let out = vrseg(&["probe", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(out.stdout.is_empty());
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(path.file_name().unwrap().to_str().unwrap()), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn decode_needs_somewhere_to_write() {
    let out = vrseg(&["decode", &clip("h264_aac.mp4")]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn decode_framemd5_hashes_match_ffmpeg() {
    let path = clip("h264_bframes_moov_end.mp4");
    let out = vrseg(&["decode", "--framemd5", "--quiet", &path]);
    if !has_gpu() {
        return assert_clean_no_gpu_failure(&out);
    }
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ours = vrseg::video::framemd5::parse_framemd5(&String::from_utf8_lossy(&out.stdout)).unwrap();
    let golden_path = std::path::Path::new(&clip("framemd5")).join("h264_bframes_moov_end.mp4.framemd5");
    let golden = vrseg::video::framemd5::parse_framemd5(&std::fs::read_to_string(golden_path).unwrap()).unwrap();
    let hashes = |v: &[vrseg::video::framemd5::FrameMd5]| v.iter().map(|f| (f.size, f.md5.clone())).collect::<Vec<_>>();
    assert_eq!(hashes(&ours), hashes(&golden));
}

#[test]
fn decode_to_y4m_renames_only_when_complete() {
    let dir = std::env::temp_dir().join(format!("vrseg-y4m-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let target = dir.join("out.y4m");
    let out = vrseg(&["decode", "--quiet", &clip("hevc_10bit_318x158.mp4"), "-o", target.to_str().unwrap()]);
    if has_gpu() {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let bytes = std::fs::read(&target).unwrap();
        let header_end = bytes.iter().position(|&b| b == b'\n').unwrap();
        let header = String::from_utf8_lossy(&bytes[..header_end]);
        assert!(header.starts_with("YUV4MPEG2 W318 H158 ") && header.contains("C420p10"), "{header}");
        // 8 frames of "FRAME\n" + 318x158 luma + 2 x 159x79 chroma, 2 bytes per sample.
        assert_eq!(bytes.len() - header_end - 1, 8 * (6 + (318 * 158 + 2 * 159 * 79) * 2));
    } else {
        assert_clean_no_gpu_failure(&out);
        assert!(!target.exists());
    }
    assert!(!dir.join("out.y4m.partial").exists(), "a .partial file was left behind");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn decode_of_a_missing_file_is_one_sentence() {
    let out = vrseg(&["decode", "--framemd5", "/nonexistent/clip.mp4"]);
    if !has_gpu() {
        return assert_clean_no_gpu_failure(&out);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("/nonexistent/clip.mp4"), "{stderr}");
}

#[test]
fn dev_letterbox_rejects_a_frame_of_the_wrong_size_before_touching_the_gpu() {
    // A 64x32 NV12 frame is 3072 bytes; give it 3000.
    let dir = std::env::temp_dir().join(format!("vrseg-dev-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let frame = dir.join("short.nv12");
    std::fs::write(&frame, vec![16u8; 3000]).unwrap();
    let output = dir.join("tensor.f16");
    let out = vrseg(&[
        "dev",
        "letterbox",
        frame.to_str().unwrap(),
        "--size",
        "64x32",
        "--layout",
        "sbs",
        "-o",
        output.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("holds 3000 bytes; the stated shape needs 3072"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!output.exists(), "no tensor may be written");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn build_engine_writes_a_plan_or_a_sentence_and_nothing_else() {
    let model = vrseg::testing::models_dir().join("yolo11n-seg-320.structure.onnx");
    let model = model.to_str().unwrap();
    let dir = std::env::temp_dir().join(format!("vrseg-cli-build-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plan = dir.join("y.plan");
    let plan_arg = plan.to_str().unwrap();

    // Stripped weights without the fixture flag: one sentence, no file.
    let out = vrseg(&["build-engine", model, "-o", plan_arg]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("no data") && err.contains("model.1.conv.weight"), "{err}");
    assert!(!plan.exists());

    // Not a model at all.
    let bogus = dir.join("bogus.onnx");
    std::fs::write(&bogus, b"this is not protobuf \xff\xff\xff").unwrap();
    let out = vrseg(&["build-engine", bogus.to_str().unwrap(), "-o", plan_arg]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("not a readable ONNX model"), "{err}");
    assert!(!plan.exists());

    let out = vrseg(&["build-engine", model, "-o", plan_arg, "--batch", "2", "--fill-stripped-weights", "3"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("images [2, 3, 320, 320]") && text.contains("output1 [2, 32, 80, 80]"), "{text}");
    assert!(text.contains("86 Conv+SiLU"), "{text}");
    let bytes = std::fs::read(&plan).unwrap();
    assert_eq!(&bytes[..8], b"VRSEGPLN");
    std::fs::remove_dir_all(&dir).ok();
}

// ---- vrseg build-engine --backend tensorrt, and options per backend ----

fn vrseg_with_env(args: &[&str], env: &[(&str, &std::path::Path)]) -> Output {
    let bin = std::env::var_os("VRSEG_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_vrseg").into());
    let mut cmd = Command::new(&bin);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap_or_else(|e| panic!("cannot run {bin:?}: {e}"))
}

/// A scratch directory with a stand-in model file (the checks before
/// TensorRT only need it to exist).
fn build_engine_scratch(tag: &str) -> (std::path::PathBuf, String, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("vrseg-build-engine-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("model.onnx");
    std::fs::write(&model, b"a model").unwrap();
    let engine = dir.join("model.engine");
    (dir, model.to_string_lossy().into_owned(), engine)
}

fn one_line_error(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(out.stdout.is_empty(), "stdout: {}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(stderr.trim_end().lines().count(), 1, "more than one line: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn build_engine_tensorrt_says_not_found_and_writes_nothing() {
    let probe = vrseg::engine::tensorrt_probe::probe();
    if probe.libraries[0].loaded_from.is_some() {
        eprintln!("skipped: TensorRT is installed on this machine, so it cannot be shown missing");
        return;
    }
    let (dir, model, engine) = build_engine_scratch("absent");
    let root = dir.join("no-tensorrt-here");
    let out = vrseg_with_env(
        &["build-engine", &model, "--backend", "tensorrt", "-o", engine.to_str().unwrap()],
        &[("TENSORRT_ROOT", &root)],
    );
    let stderr = one_line_error(&out);
    let expected = format!(
        "vrseg: error: TensorRT not found (searched: TENSORRT_ROOT={} (lib/, lib64/, targets/x86_64-linux-gnu/lib/, ./) \
         for libnvinfer.so.",
        root.display()
    );
    assert!(stderr.starts_with(&expected), "{stderr}");
    assert!(stderr.contains("through LD_LIBRARY_PATH"), "{stderr}");
    assert!(!engine.exists(), "no engine may be written");
    assert!(!dir.join("model.engine.partial").exists(), "no partial file may be left");
    let _ = std::fs::remove_dir_all(&dir);
}

/// With stand-in TensorRT libraries (vrseg::testing::tensorrt_fakes) the
/// whole path before TensorRT's builder runs as a user would meet it: the
/// library search through TENSORRT_ROOT, the version check, the ONNX
/// parser, the GPU (a real one where there is one), then the builder
/// factory, which the stand-in refuses as TensorRT does (null, the reason
/// in its log). Either way: one sentence, no engine, no partial file.
#[cfg(vrseg_tensorrt_shim)]
#[test]
fn build_engine_tensorrt_reaches_the_builder_through_stand_in_libraries() {
    use vrseg::engine::tensorrt::header_version;
    use vrseg::testing::tensorrt_fakes::{fake_root, fakes};
    let headers = header_version().expect("this build has the shim");
    let parser_soname = format!("libnvonnxparser.so.{}", headers.major);
    let f = fakes();
    let root = fake_root("cli-build", headers.major, &f.nvinfer, Some((&f.parser, &parser_soname)), headers);
    let (dir, _, engine) = build_engine_scratch("fake-trt");
    let model = vrseg::testing::models_dir().join("yolo11n-seg-320.structure.onnx");
    let model = model.to_str().unwrap();
    let out = vrseg_with_env(
        &["build-engine", model, "--backend", "tensorrt", "-o", engine.to_str().unwrap()],
        &[("TENSORRT_ROOT", &root)],
    );
    if has_gpu() {
        let stderr = one_line_error(&out);
        assert_eq!(
            stderr.trim_end(),
            "vrseg: error: parsing the ONNX model failed: createInferBuilder returned null (TensorRT: fake \
             libnvinfer: no builder here)"
        );
    } else {
        // TensorRT loaded; the GPU is the first thing missing.
        assert_clean_no_gpu_failure(&out);
    }
    assert!(!engine.exists(), "no engine may be written");
    assert!(!dir.join("model.engine.partial").exists(), "no partial file may be left");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn build_engine_refuses_int8_calibration_before_looking_for_tensorrt() {
    let (dir, model, engine) = build_engine_scratch("calib");
    let calib = dir.to_string_lossy().into_owned();
    let out = vrseg(&[
        "build-engine",
        &model,
        "--backend",
        "tensorrt",
        "-o",
        engine.to_str().unwrap(),
        "--int8",
        "--calib",
        &calib,
    ]);
    let stderr = one_line_error(&out);
    assert!(stderr.starts_with("vrseg: error: INT8 calibration (--calib) is not supported: "), "{stderr}");
    assert!(!engine.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn build_engine_refuses_the_other_backends_options() {
    let (dir, model, engine) = build_engine_scratch("foreign");
    let out_path = engine.to_str().unwrap();
    for (extra, needle) in [
        // The default backend is the native one: TensorRT's options are refused, by name.
        (&["--fp16"][..], "--fp16 is an option of --backend tensorrt; add --backend tensorrt, or leave it out"),
        (&["--json", "--timing-cache", "x.cache"][..], "--timing-cache, --json are options of --backend tensorrt"),
        (&["--batch", "1:2:8"][..], "the native engine is built for one batch size; give --batch N"),
        (&["--batch", "65"][..], "--batch 65: the native engine takes 1 to 64"),
        (
            &["--backend", "tensorrt", "--precision", "fp16"][..],
            "--precision is an option of the native engine (--backend native); for TensorRT",
        ),
        (
            &["--backend", "tensorrt", "--fill-stripped-weights", "3"][..],
            "--fill-stripped-weights is an option of the native engine",
        ),
    ] {
        let mut args = vec!["build-engine", &model, "-o", out_path];
        args.extend_from_slice(extra);
        let out = vrseg(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(stderr.contains(needle), "{extra:?}: {stderr}");
        assert!(!engine.exists(), "{extra:?}: no engine may be written");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn build_engine_checks_its_arguments() {
    let (dir, model, engine) = build_engine_scratch("args");
    let out_path = engine.to_str().unwrap();
    for (extra, needle) in [
        (&["--batch", "8:2:1"][..], "1 <= MIN <= OPT <= MAX"),
        (&["--batch", "1:2"][..], "is not MIN:OPT:MAX"),
        (&["--calib", "/tmp"][..], "--int8"),
        (&["--fp16", "--int8"][..], "cannot be used with"),
        (&["--opt-level", "9"][..], "0..=5"),
        (&["--input-size", "640x"][..], "is not HEIGHTxWIDTH"),
    ] {
        let mut args = vec!["build-engine", &model, "--backend", "tensorrt", "-o", out_path];
        args.extend_from_slice(extra);
        let out = vrseg(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(stderr.contains(needle), "{extra:?}: {stderr}");
    }
    let missing = dir.join("missing.onnx");
    let out = vrseg(&["build-engine", missing.to_str().unwrap(), "--backend", "tensorrt", "-o", out_path]);
    let stderr = one_line_error(&out);
    assert!(stderr.contains(&format!("could not read {}", missing.display())), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn run_with_a_tensorrt_engine_stops_before_touching_the_output() {
    let probe = vrseg::engine::tensorrt_probe::probe();
    if probe.libraries[0].loaded_from.is_some() {
        eprintln!("skipped: TensorRT is installed on this machine, so it cannot be shown missing");
        return;
    }
    // An engine file as `build-engine --backend tensorrt` writes it (header
    // and plan; the plan's bytes do not matter: nothing may read that far).
    use vrseg::engine::tensorrt::file::{encode_header, write_atomically, EngineMetadata};
    use vrseg::engine::tensorrt::TrtVersion;
    let (dir, _, engine) = build_engine_scratch("run-trt");
    let metadata = EngineMetadata {
        tensorrt: TrtVersion::new(10, 8, 0),
        tensorrt_build: None,
        gpu_name: "NVIDIA H100 80GB HBM3".into(),
        compute_capability: (9, 0),
        vrseg_version: "test".into(),
        source: "model.onnx".into(),
        precision: "model".into(),
        batch: None,
        tensors: Vec::new(),
    };
    let plan = b"a TensorRT plan";
    write_atomically(&engine, &[&encode_header(&metadata, plan), plan]).unwrap();
    let output = dir.join("matte.mp4");
    let root = dir.join("no-tensorrt-here");
    let out = vrseg_with_env(
        &[
            "run",
            &clip("h264_faststart.mp4"),
            "--engine",
            engine.to_str().unwrap(),
            "-o",
            output.to_str().unwrap(),
            "--batch",
            "2",
        ],
        &[("TENSORRT_ROOT", &root)],
    );
    // Before the GPU is opened, so the same on machines with and without one.
    let stderr = one_line_error(&out);
    let expected = format!(
        "vrseg: error: TensorRT not found (searched: TENSORRT_ROOT={} (lib/, lib64/, targets/x86_64-linux-gnu/lib/, ./) \
         for libnvinfer.so.",
        root.display()
    );
    assert!(stderr.starts_with(&expected), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(!output.exists(), "the output may not be touched; the directory holds {left:?}");
    assert_eq!(left.len(), 2, "only the model and the engine: {left:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

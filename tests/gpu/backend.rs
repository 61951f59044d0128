//! The Backend contract on a real GPU: `smoke_test` with stand-in backends
//! (pool buffers, workspace binding, NaN-poisoned outputs), the native
//! engine driven through `&mut dyn Backend` as the pipeline drives it, and the TensorRT
//! backend's loader where TensorRT is absent ("TensorRT not found
//! (searched: …)") or replaced by the stand-in libraries of
//! tests/data/tensorrt/fake_tensorrt.cpp (`vrseg::testing::tensorrt_fakes`:
//! prebuilt in `$VRSEG_TEST_TENSORRT_FAKES`, as the GPU bundle ships them,
//! or compiled here): the engine header's checks against this GPU, then the
//! shim reaching TensorRT's runtime factory. No real TensorRT runs here.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use cudarc::driver::CudaStream;
use vrseg::engine::backend::{smoke_test, Backend, BackendError, DType, TensorDesc, TensorRole};
use vrseg::engine::build::build_plan;
use vrseg::engine::build::import::{import_file, ImportOptions};
use vrseg::engine::native::NativeEngine;
use vrseg::engine::plan::Plan;
use vrseg::engine::tensorrt::file::{encode_header, write_atomically, EngineMetadata, MetadataTensor};
use vrseg::engine::tensorrt::{header_version, LibrarySearch, LoadOptions, TensorRtBackend, TrtVersion};
use vrseg::gpu::{DeviceView, PoolPlan, VramPool};
use vrseg::ops::memory::fill;
use vrseg::testing::models_dir;

use crate::gpu_or_skip;

/// (address, bytes) of the workspace a backend was given.
type Seen = Arc<Mutex<Option<(u64, usize)>>>;

/// Copies its input to its output (or, when `lazy`, writes nothing) and
/// records the workspace it was given.
struct CopyBackend {
    tensors: Vec<TensorDesc>,
    lazy: bool,
    workspace_seen: Seen,
}

impl CopyBackend {
    fn new(lazy: bool) -> (CopyBackend, Seen) {
        let shape = vec![2, 3, 5, 7];
        let seen = Arc::new(Mutex::new(None));
        let tensors = vec![
            TensorDesc { name: "images".into(), role: TensorRole::Input, dtype: DType::F16, shape: shape.clone() },
            TensorDesc { name: "copy".into(), role: TensorRole::Output, dtype: DType::F16, shape },
        ];
        (CopyBackend { tensors, lazy, workspace_seen: seen.clone() }, seen)
    }
}

impl Backend for CopyBackend {
    fn name(&self) -> &str {
        "copy"
    }
    fn batch_size(&self) -> usize {
        2
    }
    fn tensors(&self) -> &[TensorDesc] {
        &self.tensors
    }
    fn workspace_bytes(&self) -> usize {
        12345
    }
    unsafe fn bind_workspace(&mut self, workspace: DeviceView<'_>) -> Result<(), BackendError> {
        *self.workspace_seen.lock().unwrap() = Some((workspace.ptr(), workspace.bytes()));
        Ok(())
    }
    fn enqueue(
        &mut self,
        stream: &Arc<CudaStream>,
        inputs: &[DeviceView<'_>],
        outputs: &[DeviceView<'_>],
    ) -> Result<(), BackendError> {
        assert_eq!((inputs.len(), outputs.len()), (1, 1));
        if !self.lazy {
            let bytes = self.tensors[0].bytes();
            // SAFETY: both views are pool buffers of at least `bytes` (the
            // smoke test sizes them from `tensors`), alive until it synchronises.
            unsafe {
                cudarc::driver::result::memcpy_dtod_async(outputs[0].ptr(), inputs[0].ptr(), bytes, stream.cu_stream())
            }
            .map_err(|e| {
                BackendError::Gpu(vrseg::gpu::GpuError::Driver {
                    call: "cuMemcpyDtoDAsync",
                    status: vrseg::gpu::error::driver_status_text(&e),
                    context: String::new(),
                })
            })?;
        }
        Ok(())
    }
}

#[test]
fn smoke_test_runs_a_backend_on_pool_buffers() {
    let gpu = gpu_or_skip!();
    let (backend, seen) = CopyBackend::new(false);
    let report = smoke_test(&gpu, backend, 3).expect("the copy backend passes");
    assert_eq!((report.runs, report.batch, report.workspace_bytes), (3, 2, 12345));
    let (ptr, bytes) = seen.lock().unwrap().expect("the workspace was bound");
    assert!(bytes >= 12345 && ptr % 256 == 0, "workspace {bytes} bytes at {ptr:#x}");
}

#[test]
fn smoke_test_catches_an_output_the_engine_never_wrote() {
    let gpu = gpu_or_skip!();
    let (backend, _) = CopyBackend::new(true);
    let err = smoke_test(&gpu, backend, 1).unwrap_err().to_string();
    assert!(err.starts_with("copy: output `copy` element 0 is NaN after inference on zeros"), "{err}");
}

#[test]
fn the_native_engine_runs_through_the_backend_trait() {
    let gpu = gpu_or_skip!();
    let dir = scratch("native");
    let options = ImportOptions { batch: Some(2), allow_empty_initializers: true };
    let mut graph = import_file(&models_dir().join("yolo11n-seg-320.structure.onnx"), &options).unwrap();
    vrseg::engine::build::fill_stripped_weights(&mut graph, 11);
    let path = dir.join("n320-b2.plan");
    build_plan(graph, "yolo11n-seg-320", &path).unwrap();
    let plan = Plan::open(&path).unwrap();

    let mut pool_plan = PoolPlan::new();
    let buffers = NativeEngine::reserve(&plan, &mut pool_plan);
    let tensors = plan.tensors();
    // Each output twice: once for the trait's graph, once for the eager reference.
    let ids: Vec<_> = tensors
        .iter()
        .chain(tensors.iter().filter(|t| t.role == TensorRole::Output))
        .map(|t| {
            let id = pool_plan.buffer(format!("{} {}", t.role, t.name), t.bytes());
            pool_plan.align(id, 256);
            id
        })
        .collect();
    let pool = VramPool::reserve(&gpu, &pool_plan).unwrap();
    let stream = gpu.new_stream().unwrap();
    let mut native = NativeEngine::load(&gpu, &stream, &plan, &pool, buffers).unwrap();
    let views: Vec<DeviceView<'_>> = ids.iter().map(|&id| pool.buffer(id)).collect();
    let (input, outputs, eager) = (&views[..1], &views[1..3], &views[3..5]);

    let backend: &mut dyn Backend = &mut native;
    assert_eq!(backend.name(), path.display().to_string());
    assert_eq!((backend.batch_size(), backend.workspace_bytes()), (2, 0));
    assert_eq!(backend.tensors(), &tensors[..]);
    let shapes: Vec<String> = backend.tensors().iter().map(ToString::to_string).collect();
    assert_eq!(
        shapes,
        [
            "input `images` f16 [2, 3, 320, 320]",
            "output `output0` f32 [2, 116, 2100]",
            "output `output1` f32 [2, 32, 80, 80]"
        ]
    );

    let mut rng = vrseg::selftest::SplitMix64::new(crate::test_seed("native backend"));
    let image: Vec<half::f16> =
        (0..tensors[0].elements()).map(|_| half::f16::from_f32(rng.uniform_f32(0.0, 1.0))).collect();
    input[0].upload_blocking(&stream, &image).unwrap();
    for view in outputs.iter().chain(eager) {
        fill(&gpu, &stream, view, view.bytes() / 4, 0x7fc0_0000u32).unwrap(); // FP32 NaN
    }
    backend.enqueue(&stream, input, outputs).unwrap(); // captures the graph
    native.enqueue_eager(&stream, input, eager).unwrap();
    for (o, (a, b)) in outputs.iter().zip(eager).enumerate() {
        let (mut x, mut y) = (vec![0f32; a.bytes() / 4], vec![0f32; b.bytes() / 4]);
        a.download_blocking(&stream, &mut x).unwrap();
        b.download_blocking(&stream, &mut y).unwrap();
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            panic!("output {o} element {i} is {} after enqueue through the trait", x[i]);
        }
        assert!(
            x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()),
            "output {o}: the trait's graph and the eager forward differ"
        );
    }

    // The engine's own refusals come back as BackendError::Native.
    let backend: &mut dyn Backend = &mut native;
    let err = backend.enqueue(&stream, input, &outputs[..1]).unwrap_err();
    assert!(matches!(err, BackendError::Native(_)), "{err:?}");
    assert_eq!(err.to_string(), format!("{}: the model has 2 output(s), 1 buffer(s) were given", path.display()));
    drop(native);
    drop(pool);
    let _ = std::fs::remove_dir_all(&dir);
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vrseg-gpu-trt-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn engine_file(dir: &std::path::Path, name: &str, tensorrt: TrtVersion, gpu: &str, cc: (i32, i32)) -> PathBuf {
    let metadata = EngineMetadata {
        tensorrt,
        tensorrt_build: None,
        gpu_name: gpu.to_string(),
        compute_capability: cc,
        vrseg_version: "test".into(),
        source: "model.onnx".into(),
        precision: "model".into(),
        batch: None,
        tensors: vec![MetadataTensor {
            name: "images".into(),
            role: "input".into(),
            dtype: "f32".into(),
            shape: vec![1, 3, 64, 64],
        }],
    };
    let plan = b"not a real plan: the checks before TensorRT must refuse or pass it";
    let path = dir.join(name);
    write_atomically(&path, &[&encode_header(&metadata, plan), plan]).unwrap();
    path
}

fn options(root: PathBuf) -> LoadOptions {
    LoadOptions {
        batch: None,
        cuda_graph: true,
        search: LibrarySearch {
            root: Some(root),
            system: false,
            preferred_major: header_version().map(|v| v.major),
            ld_library_path: None,
        },
        shown_path: None,
    }
}

#[test]
fn tensorrt_load_stops_with_not_found_where_tensorrt_is_absent() {
    let gpu = gpu_or_skip!();
    let dir = scratch("absent");
    let props = gpu.properties();
    let path = engine_file(&dir, "x.engine", TrtVersion::new(11, 4, 0), &props.name, props.compute_capability);
    let err = TensorRtBackend::load(&gpu, &path, &options(dir.join("no-tensorrt"))).unwrap_err().to_string();
    let expected = format!("TensorRT not found (searched: TENSORRT_ROOT={} (lib/", dir.join("no-tensorrt").display());
    assert!(err.starts_with(&expected), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tensorrt_load_checks_the_engine_against_this_gpu_before_tensorrt_runs() {
    let Some(headers) = header_version() else {
        // Only a build without TensorRT headers lands here (CI and the GPU
        // bundle always have them: tools/setup.sh fetches them).
        if std::env::var("VRSEG_REQUIRE_TENSORRT_SHIM").is_ok_and(|v| v == "1") {
            panic!("VRSEG_REQUIRE_TENSORRT_SHIM=1 but this build has no TensorRT shim");
        }
        eprintln!("skipped: this build has no TensorRT shim (no TensorRT headers at build time)");
        return;
    };
    check_engines_against_this_gpu(headers);
}

#[cfg(vrseg_tensorrt_shim)]
fn check_engines_against_this_gpu(headers: TrtVersion) {
    use vrseg::testing::tensorrt_fakes::{fake_root, fakes};
    let gpu = gpu_or_skip!();
    let props = gpu.properties().clone();
    let dir = scratch("fake");
    // The stand-in reports the headers' own version, which the shim accepts.
    let fake = headers;
    let root = fake_root("gpu-load", headers.major, &fakes().nvinfer, None, fake);
    let options = options(root.clone());
    let load = |path: &PathBuf| TensorRtBackend::load(&gpu, path, &options).unwrap_err().to_string();

    let other_cc = if props.compute_capability == (8, 6) { (9, 0) } else { (8, 6) };
    let path = engine_file(&dir, "other-gpu.engine", fake, "NVIDIA GeForce RTX 3090", other_cc);
    let err = load(&path);
    let expected = format!(
        "{} was built for NVIDIA GeForce RTX 3090 (sm_{}{}), but GPU {} is {} ({})",
        path.display(),
        other_cc.0,
        other_cc.1,
        props.ordinal,
        props.name,
        props.sm()
    );
    assert!(err.starts_with(&expected), "{err}");

    let newer = TrtVersion::new(fake.major, fake.minor, fake.patch + 1);
    let path = engine_file(&dir, "other-release.engine", newer, &props.name, props.compute_capability);
    let err = load(&path);
    assert!(
        err.starts_with(&format!(
            "{} was built with TensorRT {newer}, but this machine has TensorRT {fake}",
            path.display()
        )),
        "{err}"
    );

    let path = engine_file(&dir, "match.engine", fake, &props.name, props.compute_capability);
    let err = load(&path);
    assert_eq!(
        err,
        "createInferRuntime failed: createInferRuntime returned null (TensorRT: fake libnvinfer: no runtime here)"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&root);
}

#[cfg(not(vrseg_tensorrt_shim))]
fn check_engines_against_this_gpu(_: TrtVersion) {
    unreachable!("header_version() is Some only with the shim")
}

//! GPU tests: every kernel against its CPU reference, the VRAM pool, the
//! kernel registry and the device queries. Each test prints
//! `skipped: no CUDA device` and returns where there is no GPU, and fails
//! instead when VRSEG_REQUIRE_GPU=1 (as the GPU bundle sets it).

mod backend;
mod compose;
mod convert;
mod decode;
mod engine;
mod info;
mod letterbox;
mod memory_kernels;
mod nvenc;
mod parallel;
mod pipeline;
mod pool;
mod registry;
mod sam2_kernels;
mod sam2_stack;
mod yolo_seg;

/// Opens the test GPU or returns from the test (see `gpu_for_tests`).
#[macro_export]
macro_rules! gpu_or_skip {
    () => {
        match vrseg::gpu::gpu_for_tests(module_path!()) {
            Some(gpu) => gpu,
            None => return,
        }
    };
}

/// A seed per test run, printed so that a failure can be replayed with VRSEG_TEST_SEED.
pub fn test_seed(test: &str) -> u64 {
    let seed = std::env::var("VRSEG_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(7)
    });
    eprintln!("{test}: VRSEG_TEST_SEED={seed}");
    seed
}

//! The GPU core: context and streams ([`Gpu`]), the typed kernel registry
//! ([`kernels`]), the VRAM pool ([`pool`]) and NVTX ranges ([`nvtx`]).
//!
//! Layering follows cudarc: `cudarc::driver::sys` (raw) → `cudarc::driver::result`
//! (checked calls) → the owning types here. Code outside `gpu` never calls the
//! driver's allocation functions; it asks the pool.

pub mod context;
pub mod copy;
pub mod error;
pub mod fatbin;
pub mod kernels;
pub mod launch;
pub mod nvtx;
pub mod pool;

pub use context::{device_count, DeviceProperties, Gpu};
pub use error::GpuError;
pub use kernels::{Kernel, Module};
pub use pool::{device_allocation_count, BufferId, DeviceView, PoolPlan, SlotRing, SlotsId, VramPool};

/// For GPU tests: the GPU named by `VRSEG_TEST_GPU` (default 0), or `None`
/// after printing `skipped: no CUDA device` — unless `VRSEG_REQUIRE_GPU=1`,
/// in which case a missing GPU fails the test.
pub fn gpu_for_tests(test: &str) -> Option<Gpu> {
    let ordinal = std::env::var("VRSEG_TEST_GPU").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    match Gpu::open(ordinal) {
        Ok(gpu) => Some(gpu),
        Err(e) => {
            if std::env::var("VRSEG_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("{test}: VRSEG_REQUIRE_GPU=1 but no GPU could be opened: {e}");
            }
            eprintln!("{test}: skipped: no CUDA device ({e})");
            None
        }
    }
}

//! Errors of the GPU core. Every variant says what failed and, where a user can
//! act, what to do; `Driver` names the driver call and its status.

use cudarc::driver::DriverError;

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error(
        "no NVIDIA driver found: libcuda could not be loaded (searched {searched}); \
         install the NVIDIA driver, or run on a machine with an NVIDIA GPU"
    )]
    NoDriver { searched: String },

    #[error("the NVIDIA driver reports no CUDA device ({detail}); check `nvidia-smi` and CUDA_VISIBLE_DEVICES")]
    NoDevice { detail: String },

    #[error("GPU {requested} does not exist: this machine has {count} CUDA device(s), numbered from 0")]
    NoSuchDevice { requested: usize, count: usize },

    #[error(
        "the NVIDIA driver supports CUDA {found_major}.{found_minor}, vrseg needs CUDA 12.0 or newer; update the driver"
    )]
    DriverTooOld { found_major: i32, found_minor: i32 },

    #[error("{call} failed: {status}{context}")]
    Driver { call: &'static str, status: String, context: String },

    #[error(
        "not enough GPU memory on {device}: needs {needed_gib:.2} GiB ({pool_gib:.2} GiB pool + {headroom_gib:.2} GiB headroom), \
         {free_gib:.2} GiB free; close other GPU programs or lower the batch size"
    )]
    OutOfMemory { device: String, needed_gib: f64, pool_gib: f64, headroom_gib: f64, free_gib: f64 },

    #[error("VRAM pool plan is invalid: {0}")]
    InvalidPlan(String),

    #[error("pool buffer `{buffer}` is {have} bytes, {op} needs {need}")]
    BufferTooSmall { buffer: String, have: usize, need: usize, op: &'static str },

    #[error("cannot launch {kernel}: {reason}")]
    InvalidLaunch { kernel: &'static str, reason: String },
}

/// Text of a driver status: `CUDA_ERROR_OUT_OF_MEMORY (out of memory)`.
pub fn driver_status_text(err: &DriverError) -> String {
    let name = err.error_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|_| format!("{:?}", err.0));
    match err.error_string() {
        Ok(text) => format!("{name} ({})", text.to_string_lossy()),
        Err(_) => name,
    }
}

/// Attaches the driver call's name to a cudarc result.
pub(crate) trait CheckDriver<T> {
    fn check(self, call: &'static str) -> Result<T, GpuError>;
    fn check_with(self, call: &'static str, context: impl FnOnce() -> String) -> Result<T, GpuError>;
}

impl<T> CheckDriver<T> for Result<T, DriverError> {
    fn check(self, call: &'static str) -> Result<T, GpuError> {
        self.map_err(|e| GpuError::Driver { call, status: driver_status_text(&e), context: String::new() })
    }

    fn check_with(self, call: &'static str, context: impl FnOnce() -> String) -> Result<T, GpuError> {
        self.map_err(|e| GpuError::Driver {
            call,
            status: driver_status_text(&e),
            context: format!(" ({})", context()),
        })
    }
}

//! Exit codes, documented in the README.

use vrseg::gpu::GpuError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Success = 0,
    /// The job ran and failed, or a check did not pass.
    Failure = 1,
    // 2: bad arguments, returned by clap itself before `run`.
    /// No usable NVIDIA driver or GPU.
    NoGpu = 3,
}

/// Chooses the exit code for an error that reached `main`.
pub fn code_for(err: &anyhow::Error) -> Code {
    match err.downcast_ref::<GpuError>() {
        Some(
            GpuError::NoDriver { .. }
            | GpuError::NoDevice { .. }
            | GpuError::NoSuchDevice { .. }
            | GpuError::DriverTooOld { .. },
        ) => Code::NoGpu,
        _ => Code::Failure,
    }
}

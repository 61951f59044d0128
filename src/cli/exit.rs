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
    /// Stopped by Ctrl-C (128 + SIGINT); what was done is kept under a name that says so.
    Interrupted = 130,
}

/// Chooses the exit code for an error that reached `main`.
pub fn code_for(err: &anyhow::Error) -> Code {
    if let Some(vrseg::pipeline::PipelineError::Gpu(e)) = err.downcast_ref::<vrseg::pipeline::PipelineError>() {
        if matches!(e, GpuError::NoDriver { .. } | GpuError::NoDevice { .. } | GpuError::NoSuchDevice { .. }) {
            return Code::NoGpu;
        }
    }
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

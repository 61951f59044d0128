//! Launchers for `kernels/sam2.cu`, the small kernels of SAM2's memory
//! attention: LayerNorm of the FP32 residual stream into FP16, the stack's
//! input `a + alpha · b` (FP16 in, FP32 out) and an FP16 add (the memory
//! bank's key input, memory + pos). CPU references beside them.

use cudarc::driver::{CudaStream, LaunchConfig, PushKernelArg};
use half::f16;

use crate::gpu::error::CheckDriver;
use crate::gpu::launch::grid_stride;
use crate::gpu::{DeviceView, Gpu, GpuError, Kernel};

/// Enqueues `y = LayerNorm(x) · gamma + beta` over `rows` rows of `cols`:
/// x FP32, gamma and beta FP32 `[cols]`, y FP16.
#[allow(clippy::too_many_arguments)]
pub fn layernorm(
    gpu: &Gpu,
    stream: &CudaStream,
    x: &DeviceView,
    gamma: &DeviceView,
    beta: &DeviceView,
    y: &DeviceView,
    rows: usize,
    cols: usize,
    eps: f32,
) -> Result<(), GpuError> {
    let kernel = Kernel::LayernormF32F16;
    let invalid = |reason: String| GpuError::InvalidLaunch { kernel: kernel.symbol(), reason };
    if rows == 0 || cols == 0 || i32::try_from(rows).is_err() || i32::try_from(cols).is_err() {
        return Err(invalid(format!("{rows} rows of {cols}")));
    }
    if !(eps.is_finite() && eps > 0.0) {
        return Err(invalid(format!("eps {eps}")));
    }
    x.require::<f32>(rows * cols, kernel.symbol())?;
    gamma.require::<f32>(cols, kernel.symbol())?;
    beta.require::<f32>(cols, kernel.symbol())?;
    y.require::<f16>(rows * cols, kernel.symbol())?;
    let function = gpu.kernels().function(gpu.context(), kernel)?;
    let config =
        LaunchConfig { grid_dim: (rows.div_ceil(8) as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    let (xp, gp, bp, yp, r, c) = (x.ptr(), gamma.ptr(), beta.ptr(), y.ptr(), rows as i32, cols as i32);
    // SAFETY: the arguments match `layernorm_f32_f16(const float*, const float*,
    // const float*, __half*, int32_t, int32_t, float)`; every buffer holds the
    // elements the grid touches, aligned (checked by `require`).
    unsafe {
        stream.launch_builder(function).arg(&xp).arg(&gp).arg(&bp).arg(&yp).arg(&r).arg(&c).arg(&eps).launch(config)
    }
    .check_with("cuLaunchKernel", || format!("{} into `{}`", kernel.symbol(), y.name()))?;
    Ok(())
}

/// Enqueues `out = a + alpha · b` over `count` elements: a and b FP16, out FP32.
pub fn scaled_add(
    gpu: &Gpu,
    stream: &CudaStream,
    a: &DeviceView,
    b: &DeviceView,
    alpha: f32,
    out: &DeviceView,
    count: usize,
) -> Result<(), GpuError> {
    let kernel = Kernel::ScaledAddF16F32;
    a.require::<f16>(count, kernel.symbol())?;
    b.require::<f16>(count, kernel.symbol())?;
    out.require::<f32>(count, kernel.symbol())?;
    if count == 0 {
        return Ok(());
    }
    let function = gpu.kernels().function(gpu.context(), kernel)?;
    let config = grid_stride(gpu, count as u64);
    let (ap, bp, op, n) = (a.ptr(), b.ptr(), out.ptr(), count as u64);
    // SAFETY: the arguments match `scaled_add_f16_f32(const __half*, const
    // __half*, float, float*, uint64_t)`; each buffer holds `count` aligned
    // elements (checked by `require`).
    unsafe { stream.launch_builder(function).arg(&ap).arg(&bp).arg(&alpha).arg(&op).arg(&n).launch(config) }
        .check_with("cuLaunchKernel", || format!("{} into `{}`", kernel.symbol(), out.name()))?;
    Ok(())
}

/// Enqueues `out = a + b` over `count` FP16 elements (one rounding).
pub fn add_f16(
    gpu: &Gpu,
    stream: &CudaStream,
    a: &DeviceView,
    b: &DeviceView,
    out: &DeviceView,
    count: usize,
) -> Result<(), GpuError> {
    let kernel = Kernel::AddF16;
    a.require::<f16>(count, kernel.symbol())?;
    b.require::<f16>(count, kernel.symbol())?;
    out.require::<f16>(count, kernel.symbol())?;
    if count == 0 {
        return Ok(());
    }
    let function = gpu.kernels().function(gpu.context(), kernel)?;
    let config = grid_stride(gpu, count as u64);
    let (ap, bp, op, n) = (a.ptr(), b.ptr(), out.ptr(), count as u64);
    // SAFETY: the arguments match `add_f16(const __half*, const __half*,
    // __half*, uint64_t)`; each buffer holds `count` aligned halves (checked
    // by `require`).
    unsafe { stream.launch_builder(function).arg(&ap).arg(&bp).arg(&op).arg(&n).launch(config) }
        .check_with("cuLaunchKernel", || format!("{} into `{}`", kernel.symbol(), out.name()))?;
    Ok(())
}

/// CPU reference of [`layernorm`] in f64 (biased variance, as torch.nn.LayerNorm).
pub fn layernorm_reference(x: &[f32], gamma: &[f32], beta: &[f32], rows: usize, cols: usize, eps: f32) -> Vec<f32> {
    let mut y = vec![0f32; rows * cols];
    for r in 0..rows {
        let xr = &x[r * cols..(r + 1) * cols];
        let mean = xr.iter().map(|&v| f64::from(v)).sum::<f64>() / cols as f64;
        let var = xr.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / cols as f64;
        let inv = 1.0 / (var + f64::from(eps)).sqrt();
        for c in 0..cols {
            y[r * cols + c] = ((f64::from(xr[c]) - mean) * inv * f64::from(gamma[c]) + f64::from(beta[c])) as f32;
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layernorm_reference_normalises_rows() {
        let x = [1.0f32, 2.0, 3.0, 4.0, 10.0, 10.0, 10.0, 10.0];
        let y = layernorm_reference(&x, &[1.0; 4], &[0.0; 4], 2, 4, 1e-5);
        let mean: f32 = y[..4].iter().sum::<f32>() / 4.0;
        let var: f32 = y[..4].iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 4.0;
        assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-4, "{y:?}");
        // A constant row has zero variance: eps keeps it finite (all zeros).
        assert!(y[4..].iter().all(|v| *v == 0.0));
        let y = layernorm_reference(&x, &[2.0; 4], &[0.5; 4], 2, 4, 1e-5);
        assert!((y[4] - 0.5).abs() < 1e-6);
    }
}

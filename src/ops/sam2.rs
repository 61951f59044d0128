//! Launchers for `kernels/sam2.cu`, the small kernels of SAM2's memory
//! attention: LayerNorm of the FP32 residual stream into FP16, the stack's
//! input `a + alpha · b` (FP16 in, FP32 out), an FP16 add (the memory
//! bank's key input, memory + pos) and the bank's keys at their frames'
//! current ages ([`age_keys`]). CPU references beside them.

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

/// Width of the keys [`age_keys`] is built for (SAM2's d_model).
pub const AGE_KEYS_WIDTH: usize = 256;

/// One [`age_keys`] launch: every layer's keys of the `valid` ring slots at
/// their ages, `keys[l][s·T + p] = keys0[l][s·T + p] + RoPE_p(tkeys[l][age(s) - 1])`
/// with `age(s) = (newest - s) mod window + 1` and T = side².
#[derive(Debug, Clone, Copy)]
pub struct AgeKeys<'pool> {
    /// FP16 `[layers][keys0_layer_rows, 256]`: keys without the temporal term.
    pub keys0: DeviceView<'pool>,
    pub keys0_layer_rows: usize,
    /// FP16 `[layers][keys_layer_rows, 256]`: the keys attention reads.
    pub keys: DeviceView<'pool>,
    pub keys_layer_rows: usize,
    /// FP32 `[layers, window, 256]`: row `a` is the key of age `a + 1`'s encoding.
    pub tkeys: DeviceView<'pool>,
    /// [`crate::ops::linear::axial_rope_factors`] for `side` and width 256.
    pub rope: DeviceView<'pool>,
    pub layers: usize,
    pub valid: usize,
    pub window: usize,
    pub newest: usize,
    pub side: usize,
}

/// Enqueues [`AgeKeys`]: rows of slots at or past `valid` (and pointer rows
/// after the ring) are not touched.
pub fn age_keys(gpu: &Gpu, stream: &CudaStream, job: &AgeKeys) -> Result<(), GpuError> {
    let kernel = Kernel::Sam2AgeKeys;
    let invalid = |reason: String| GpuError::InvalidLaunch { kernel: kernel.symbol(), reason };
    let (d, tokens) = (AGE_KEYS_WIDTH, job.side.saturating_mul(job.side));
    if job.layers == 0 || job.side == 0 || job.window == 0 || job.valid > job.window || job.newest >= job.window {
        return Err(invalid(format!(
            "{} layers, {} valid slots of a ring of {} (newest {}), {}x{} map",
            job.layers, job.valid, job.window, job.newest, job.side, job.side
        )));
    }
    if job.valid * tokens > job.keys0_layer_rows || job.valid * tokens > job.keys_layer_rows {
        return Err(invalid(format!(
            "{} slots of {tokens} rows in layers of {} (keys0) and {} (keys) rows",
            job.valid, job.keys0_layer_rows, job.keys_layer_rows
        )));
    }
    if job.valid == 0 {
        return Ok(());
    }
    let elements = |rows: usize| ((job.layers - 1) * rows + job.valid * tokens) * d;
    job.keys0.require::<f16>(elements(job.keys0_layer_rows), kernel.symbol())?;
    job.keys.require::<f16>(elements(job.keys_layer_rows), kernel.symbol())?;
    job.tkeys.require::<f32>(job.layers * job.window * d, kernel.symbol())?;
    job.rope.require::<[f32; 2]>(job.side * d / 4, kernel.symbol())?;
    for (view, what) in [(&job.keys0, "keys0"), (&job.keys, "keys"), (&job.tkeys, "tkeys")] {
        if view.ptr() % 16 != 0 {
            return Err(invalid(format!("{what} `{}` is not 16-byte aligned", view.name())));
        }
    }
    // Grid (token rows / 8, slots, layers): y and z are at most 65,535.
    if i32::try_from(tokens).is_err() || job.valid > 65_535 || job.layers > 65_535 {
        return Err(invalid(format!("{tokens} tokens, {} slots, {} layers exceed the grid", job.valid, job.layers)));
    }
    let function = gpu.kernels().function(gpu.context(), kernel)?;
    let config = LaunchConfig {
        grid_dim: (tokens.div_ceil(8) as u32, job.valid as u32, job.layers as u32),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let (k0, k, t, r) = (job.keys0.ptr(), job.keys.ptr(), job.tkeys.ptr(), job.rope.ptr());
    let (window, newest, side) = (job.window as i32, job.newest as i32, job.side as i32);
    let (k0_stride, k_stride) = ((job.keys0_layer_rows * d) as i64, (job.keys_layer_rows * d) as i64);
    // SAFETY: the arguments match `sam2_age_keys(const __half*, __half*,
    // const float*, const float2*, int32_t x 3, int64_t, int64_t)`; `require`
    // checked that keys0 and keys hold the valid rows of every layer and
    // tkeys `layers x window` rows (all 16-byte aligned), the table `side`
    // positions; the grid covers exactly `valid` slots of `layers` layers;
    // the views live in pools that synchronise before they free.
    unsafe {
        stream
            .launch_builder(function)
            .arg(&k0)
            .arg(&k)
            .arg(&t)
            .arg(&r)
            .arg(&window)
            .arg(&newest)
            .arg(&side)
            .arg(&k0_stride)
            .arg(&k_stride)
            .launch(config)
    }
    .check_with("cuLaunchKernel", || format!("{} into `{}`", kernel.symbol(), job.keys.name()))?;
    Ok(())
}

/// CPU reference of [`age_keys`] on dense host copies: returns `keys` with
/// the valid slots' rows replaced (f32; the GPU rounds each to FP16 once).
/// `table` is [`crate::ops::linear::axial_rope_table`]`(side, 256, θ)`.
#[allow(clippy::too_many_arguments)]
pub fn age_keys_reference(
    keys0: &[f32],
    keys0_layer_rows: usize,
    keys: &[f32],
    keys_layer_rows: usize,
    tkeys: &[f32],
    table: &[[f32; 2]],
    layers: usize,
    valid: usize,
    window: usize,
    newest: usize,
    side: usize,
) -> Vec<f32> {
    let (d, tokens) = (AGE_KEYS_WIDTH, side * side);
    let mut out = keys.to_vec();
    for l in 0..layers {
        for s in 0..valid {
            let age = (newest + window - s) % window + 1;
            let t = &tkeys[(l * window + age - 1) * d..][..d];
            for p in 0..tokens {
                let row0 = (l * keys0_layer_rows + s * tokens + p) * d;
                let row = (l * keys_layer_rows + s * tokens + p) * d;
                for pair in 0..d / 2 {
                    let [cos, sin] = table[p * d / 2 + pair];
                    let (t0, t1) = (f64::from(t[2 * pair]), f64::from(t[2 * pair + 1]));
                    let (cos, sin) = (f64::from(cos), f64::from(sin));
                    out[row + 2 * pair] = (f64::from(keys0[row0 + 2 * pair]) + t0 * cos - t1 * sin) as f32;
                    out[row + 2 * pair + 1] = (f64::from(keys0[row0 + 2 * pair + 1]) + t0 * sin + t1 * cos) as f32;
                }
            }
        }
    }
    out
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

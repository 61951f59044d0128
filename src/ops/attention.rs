//! Fused single-head attention at head dimension 256 (`kernels/attention.cu`):
//! `out = softmax(scale · Q Kᵀ) V` with an online softmax on tensor cores,
//! split over key ranges when there are too few query blocks to fill the
//! GPU, and a combine kernel that merges the splits. [`attention_reference`]
//! is the CPU twin.

use cudarc::driver::{sys, CudaStream, DeviceRepr, LaunchConfig, PushKernelArg};

use crate::gpu::error::CheckDriver;
use crate::gpu::{DeviceView, Gpu, GpuError, Kernel};

/// The only head dimension the kernel is built for (SAM2's memory attention).
pub const HEAD_DIM: usize = 256;
/// Query rows per block and keys per tile (`kBr`, `kBc` in attention.cu).
pub const BLOCK_Q: usize = 64;
pub const BLOCK_K: usize = 64;
/// Dynamic shared memory per block: Q, K and V tiles of 64 x 256 halves.
const SHARED_BYTES: usize = 3 * 64 * HEAD_DIM * 2;
/// Blocks the kernel keeps resident per SM (its launch bounds).
const BLOCKS_PER_SM: usize = 2;

/// One attention problem. Rows are `ld*` elements apart; all FP16.
#[derive(Debug, Clone, Copy)]
pub struct AttentionJob<'pool> {
    pub q: DeviceView<'pool>,
    pub ldq: usize,
    pub k: DeviceView<'pool>,
    pub ldk: usize,
    pub v: DeviceView<'pool>,
    pub ldv: usize,
    pub nq: usize,
    pub nk: usize,
    pub out: DeviceView<'pool>,
    pub ldo: usize,
    /// Softmax scale; SAM2 (torch SDPA's default) uses 1/sqrt(256).
    pub scale: f32,
}

/// Scratch for split-KV: each split's normalised output (FP16) and log2
/// denominator (FP32). Plan it with [`AttentionScratch::bytes`].
#[derive(Debug, Clone, Copy)]
pub struct AttentionScratch<'pool> {
    pub partial_out: DeviceView<'pool>,
    pub partial_lse: DeviceView<'pool>,
    pub max_splits: usize,
}

impl AttentionScratch<'_> {
    /// (partial_out bytes, partial_lse bytes) for up to `max_splits` splits of `nq` rows.
    pub fn bytes(nq: usize, max_splits: usize) -> (usize, usize) {
        (max_splits * nq * HEAD_DIM * 2, max_splits * nq * 4)
    }
}

/// How the keys are divided among blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Splits {
    /// As many splits as fill the GPU once (bounded by the scratch).
    Auto,
    /// At most this many (tests use it to cover every path).
    AtMost(usize),
}

/// Mirrors `AttentionParams` in kernels/attention.cu field for field.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct AttentionParams {
    q: u64,
    k: u64,
    v: u64,
    out: u64,
    partial_out: u64,
    partial_lse: u64,
    nq: i32,
    nk: i32,
    ldq: i32,
    ldk: i32,
    ldv: i32,
    ldo: i32,
    splits: i32,
    tiles_per_split: i32,
    scale_log2: f32,
    pad: i32,
}

// SAFETY: plain `repr(C)` integers and floats in the kernel struct's order
// (six 8-byte pointers, ten 4-byte fields: 88 bytes, pinned by
// `params_layout_matches_the_kernel`).
unsafe impl DeviceRepr for AttentionParams {}

/// (splits, tiles per split) for `nk` keys: every split non-empty.
pub fn split_plan(nq: usize, nk: usize, sms: usize, splits: Splits, max_splits: usize) -> (usize, usize) {
    let tiles = nk.div_ceil(BLOCK_K).max(1);
    let q_blocks = nq.div_ceil(BLOCK_Q).max(1);
    let wanted = match splits {
        // One wave: as many splits as leave every block resident at once.
        Splits::Auto => ((sms * BLOCKS_PER_SM) / q_blocks).max(1),
        Splits::AtMost(n) => n.max(1),
    };
    let splits = wanted.min(max_splits.max(1)).min(tiles);
    let per_split = tiles.div_ceil(splits);
    (tiles.div_ceil(per_split), per_split)
}

/// Sets the kernel's shared-memory limits once (96 KiB per block, and the
/// largest carveout so that two blocks fit per SM). Call at set-up.
pub fn prepare(gpu: &Gpu) -> Result<(), GpuError> {
    super::linear::require_tensor_cores(gpu, "attention_f16_d256")?;
    let kernel = Kernel::AttentionF16D256;
    let function = gpu.kernels().function(gpu.context(), kernel)?;
    gpu.allow_dynamic_shared_memory(function, kernel, SHARED_BYTES)?;
    use sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT as CARVEOUT;
    function
        .set_attribute(CARVEOUT, 100)
        .check_with("cuFuncSetAttribute", || format!("{} shared-memory carveout", kernel.symbol()))?;
    gpu.kernels().function(gpu.context(), Kernel::AttentionCombineF16D256)?;
    Ok(())
}

impl AttentionJob<'_> {
    fn validate(&self) -> Result<(), GpuError> {
        let kernel = Kernel::AttentionF16D256.symbol();
        let invalid = |reason: String| GpuError::InvalidLaunch { kernel, reason };
        if self.nq == 0 || self.nk == 0 {
            return Err(invalid(format!("{} queries against {} keys", self.nq, self.nk)));
        }
        for (ld, what) in [(self.ldq, "ldq"), (self.ldk, "ldk"), (self.ldv, "ldv"), (self.ldo, "ldo")] {
            if ld < HEAD_DIM || ld % 8 != 0 || i32::try_from(ld).is_err() {
                return Err(invalid(format!("{what} = {ld}: rows need at least {HEAD_DIM} elements, a multiple of 8")));
            }
        }
        if i32::try_from(self.nq).is_err() || i32::try_from(self.nk).is_err() {
            return Err(invalid("more than 2^31 rows".into()));
        }
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(invalid(format!("softmax scale {}", self.scale)));
        }
        for (view, rows, ld, what) in [
            (&self.q, self.nq, self.ldq, "Q"),
            (&self.k, self.nk, self.ldk, "K"),
            (&self.v, self.nk, self.ldv, "V"),
            (&self.out, self.nq, self.ldo, "out"),
        ] {
            if view.ptr() % 16 != 0 {
                return Err(invalid(format!("{what} `{}` is not 16-byte aligned", view.name())));
            }
            let need = ((rows - 1) * ld + HEAD_DIM) * 2;
            if view.bytes() < need {
                return Err(view.too_small(need, kernel));
            }
        }
        Ok(())
    }
}

/// Enqueues `job` on `stream` (plus the combine when the keys are split).
/// Call [`prepare`] once first.
pub fn attention(
    gpu: &Gpu,
    stream: &CudaStream,
    job: &AttentionJob,
    scratch: &AttentionScratch,
    splits: Splits,
) -> Result<(), GpuError> {
    super::linear::require_tensor_cores(gpu, "attention_f16_d256")?;
    job.validate()?;
    let sms = gpu.properties().multiprocessors.max(1) as usize;
    let (splits, per_split) = split_plan(job.nq, job.nk, sms, splits, scratch.max_splits);
    if splits > 1 {
        let (out_bytes, lse_bytes) = AttentionScratch::bytes(job.nq, splits);
        if scratch.partial_out.bytes() < out_bytes {
            return Err(scratch.partial_out.too_small(out_bytes, "attention split-KV scratch"));
        }
        if scratch.partial_lse.bytes() < lse_bytes {
            return Err(scratch.partial_lse.too_small(lse_bytes, "attention split-KV scratch"));
        }
        if scratch.partial_out.ptr() % 16 != 0 || scratch.partial_lse.ptr() % 4 != 0 {
            return Err(GpuError::InvalidLaunch {
                kernel: "attention_f16_d256",
                reason: "split-KV scratch is not 16-byte aligned".into(),
            });
        }
    }
    let params = AttentionParams {
        q: job.q.ptr(),
        k: job.k.ptr(),
        v: job.v.ptr(),
        out: job.out.ptr(),
        partial_out: scratch.partial_out.ptr(),
        partial_lse: scratch.partial_lse.ptr(),
        nq: job.nq as i32,
        nk: job.nk as i32,
        ldq: job.ldq as i32,
        ldk: job.ldk as i32,
        ldv: job.ldv as i32,
        ldo: job.ldo as i32,
        splits: splits as i32,
        tiles_per_split: per_split as i32,
        scale_log2: job.scale * std::f32::consts::LOG2_E,
        pad: 0,
    };
    let kernel = Kernel::AttentionF16D256;
    let function = gpu.kernels().function(gpu.context(), kernel)?;
    gpu.allow_dynamic_shared_memory(function, kernel, SHARED_BYTES)?;
    let config = LaunchConfig {
        grid_dim: (job.nq.div_ceil(BLOCK_Q) as u32, splits as u32, 1),
        block_dim: (128, 1, 1),
        shared_mem_bytes: SHARED_BYTES as u32,
    };
    // SAFETY: `params` matches the kernel's struct (see DeviceRepr above);
    // `validate` checked Q, K, V and out for every row the grid touches and
    // their 16-byte alignment, and the scratch holds `splits` partial outputs
    // when the grid has more than one split; the views live in a pool that
    // synchronises before it frees.
    unsafe { stream.launch_builder(function).arg(&params).launch(config) }
        .check_with("cuLaunchKernel", || format!("{} into `{}`", kernel.symbol(), job.out.name()))?;
    if splits > 1 {
        let kernel = Kernel::AttentionCombineF16D256;
        let function = gpu.kernels().function(gpu.context(), kernel)?;
        let config =
            LaunchConfig { grid_dim: (job.nq.div_ceil(8) as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: as above; the combine reads the `splits` partial outputs the
        // first kernel wrote (same stream, so after it) and writes `out`.
        unsafe { stream.launch_builder(function).arg(&params).launch(config) }
            .check_with("cuLaunchKernel", || format!("{} into `{}`", kernel.symbol(), job.out.name()))?;
    }
    Ok(())
}

/// CPU reference: `softmax(scale · q kᵀ) v` in f64 for dense `[nq, d]`,
/// `[nk, d]`, `[nk, d]` inputs; returns `[nq, d]`. Rows run on all cores.
pub fn attention_reference(q: &[f32], k: &[f32], v: &[f32], nq: usize, nk: usize, d: usize, scale: f32) -> Vec<f32> {
    let mut out = vec![0f32; nq * d];
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(32);
    let rows_per = nq.div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for (chunk_index, chunk) in out.chunks_mut(rows_per * d).enumerate() {
            scope.spawn(move || {
                let mut scores = vec![0f64; nk];
                let mut acc = vec![0f64; d];
                for (local, out_row) in chunk.chunks_mut(d).enumerate() {
                    let row = chunk_index * rows_per + local;
                    let qr = &q[row * d..(row + 1) * d];
                    let mut top = f64::NEG_INFINITY;
                    for (j, s) in scores.iter_mut().enumerate() {
                        let kr = &k[j * d..(j + 1) * d];
                        *s = qr.iter().zip(kr).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum::<f64>()
                            * f64::from(scale);
                        top = top.max(*s);
                    }
                    acc.iter_mut().for_each(|a| *a = 0.0);
                    let mut total = 0.0;
                    for (j, s) in scores.iter().enumerate() {
                        let p = (s - top).exp();
                        total += p;
                        for (a, x) in acc.iter_mut().zip(&v[j * d..(j + 1) * d]) {
                            *a += p * f64::from(*x);
                        }
                    }
                    for (o, a) in out_row.iter_mut().zip(&acc) {
                        *o = (a / total) as f32;
                    }
                }
            });
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_layout_matches_the_kernel() {
        assert_eq!(std::mem::size_of::<AttentionParams>(), 88);
        assert_eq!(std::mem::offset_of!(AttentionParams, nq), 48);
        assert_eq!(std::mem::offset_of!(AttentionParams, scale_log2), 80);
    }

    #[test]
    fn split_plan_fills_one_wave_and_leaves_no_split_empty() {
        // SAM2 self-attention on an H100: 64 query blocks, 64 key tiles.
        assert_eq!(split_plan(4096, 4096, 132, Splits::Auto, 8), (4, 16));
        // Cross-attention at W = 7 with 64 pointer tokens: 450 tiles.
        assert_eq!(split_plan(4096, 7 * 4096 + 64, 132, Splits::Auto, 8), (4, 113));
        // Few tiles: never more splits than tiles, none empty.
        for nk in 1..300 {
            for max in 1..12 {
                let (s, per) = split_plan(37, nk, 132, Splits::AtMost(max), 16);
                let tiles = nk.div_ceil(64);
                assert!(s >= 1 && s <= max && (s - 1) * per < tiles && s * per >= tiles, "nk {nk} max {max}");
            }
        }
    }

    #[test]
    fn reference_is_a_weighted_mean_of_values() {
        // Equal scores: the mean of V. A dominant key: its value.
        let (d, nk) = (4, 3);
        let q = vec![0f32; d];
        let k = vec![1f32; nk * d];
        let v: Vec<f32> = (0..nk * d).map(|i| (i / d) as f32).collect();
        let out = attention_reference(&q, &k, &v, 1, nk, d, 1.0);
        assert!(out.iter().all(|&x| (x - 1.0).abs() < 1e-6), "{out:?}");
        let q = vec![1f32; d];
        let mut k = vec![0f32; nk * d];
        k[2 * d..].iter_mut().for_each(|x| *x = 100.0);
        let out = attention_reference(&q, &k, &v, 1, nk, d, 1.0);
        assert!(out.iter().all(|&x| (x - 2.0).abs() < 1e-6), "{out:?}");
    }
}

//! Fused single-head attention at head dimension 256 (`kernels/attention.cu`):
//! `out = softmax(scale · Q Kᵀ) V` with an online softmax on tensor cores,
//! split over key ranges when there are too few query blocks to fill the
//! GPU, and a combine kernel that merges the splits. V is 256 wide
//! ([`AttentionKernel::D256`]) or 64 wide (the `V64` kernels: SAM2's
//! cross-attention with the value projection folded into the output
//! projection). [`attention_reference`] is the CPU twin.

use cudarc::driver::{sys, CudaStream, DeviceRepr, LaunchConfig, PushKernelArg};

use crate::gpu::error::CheckDriver;
use crate::gpu::{DeviceView, Gpu, GpuError, Kernel};

/// The only width of Q and K the kernels are built for (SAM2's memory attention).
pub const HEAD_DIM: usize = 256;
/// The narrow value width of the `V64` kernels (SAM2's `kv_in_dim`).
pub const NARROW_DV: usize = 64;
/// Keys per tile (`kBc` in attention.cu).
pub const BLOCK_K: usize = 64;

/// Which kernel runs a job: the value width and the query rows a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionKernel {
    /// Q, K and V 256 wide; 64 query rows a block, 2 blocks an SM.
    D256,
    /// Q and K 256 wide, V and out 64 wide; 64 query rows a block (one
    /// 16-row tile a warp), 3 blocks an SM.
    V64Rows64,
    /// As `V64Rows64` with 128 query rows a block (two 16-row tiles a warp,
    /// each K fragment feeding two mma), 2 blocks an SM.
    V64Rows128,
}

impl AttentionKernel {
    pub const ALL: [AttentionKernel; 3] =
        [AttentionKernel::D256, AttentionKernel::V64Rows64, AttentionKernel::V64Rows128];

    /// Width of V and of the output.
    pub fn dv(self) -> usize {
        match self {
            AttentionKernel::D256 => HEAD_DIM,
            _ => NARROW_DV,
        }
    }

    /// Query rows per block (`kBr`).
    pub fn block_q(self) -> usize {
        match self {
            AttentionKernel::V64Rows128 => 128,
            _ => 64,
        }
    }

    /// Blocks resident per SM (the kernel's launch bounds).
    fn blocks_per_sm(self) -> usize {
        match self {
            AttentionKernel::V64Rows64 => 3,
            _ => 2,
        }
    }

    /// Dynamic shared memory per block: Q and K tiles of 256-wide rows, a V
    /// tile of `dv`-wide rows.
    fn shared_bytes(self) -> usize {
        (self.block_q() + BLOCK_K) * HEAD_DIM * 2 + BLOCK_K * self.dv() * 2
    }

    fn kernel(self) -> Kernel {
        match self {
            AttentionKernel::D256 => Kernel::AttentionF16D256,
            AttentionKernel::V64Rows64 => Kernel::AttentionF16Qk256V64R64,
            AttentionKernel::V64Rows128 => Kernel::AttentionF16Qk256V64R128,
        }
    }

    fn combine(self) -> Kernel {
        match self {
            AttentionKernel::D256 => Kernel::AttentionCombineF16D256,
            _ => Kernel::AttentionCombineF16V64,
        }
    }

    /// Output rows one 256-thread combine block merges (8 warps; a warp
    /// merges 256 / dv rows).
    fn combine_rows_per_block(self) -> usize {
        8 * (HEAD_DIM / self.dv())
    }
}

/// One attention problem. Rows are `ld*` elements apart; all FP16. Q and K
/// rows are [`HEAD_DIM`] wide, V and out rows `kernel.dv()` wide.
#[derive(Debug, Clone, Copy)]
pub struct AttentionJob<'pool> {
    pub kernel: AttentionKernel,
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
/// denominator (FP32). Plan it with [`AttentionScratch::bytes`] (planned for
/// 256-wide values, it serves the 64-wide kernels too).
#[derive(Debug, Clone, Copy)]
pub struct AttentionScratch<'pool> {
    pub partial_out: DeviceView<'pool>,
    pub partial_lse: DeviceView<'pool>,
    pub max_splits: usize,
}

impl AttentionScratch<'_> {
    /// (partial_out bytes, partial_lse bytes) for up to `max_splits` splits
    /// of `nq` rows of 256-wide values.
    pub fn bytes(nq: usize, max_splits: usize) -> (usize, usize) {
        Self::bytes_for(nq, max_splits, HEAD_DIM)
    }

    /// The same for values `dv` wide.
    pub fn bytes_for(nq: usize, max_splits: usize, dv: usize) -> (usize, usize) {
        (max_splits * nq * dv * 2, max_splits * nq * 4)
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
pub fn split_plan(
    kernel: AttentionKernel,
    nq: usize,
    nk: usize,
    sms: usize,
    splits: Splits,
    max_splits: usize,
) -> (usize, usize) {
    let tiles = nk.div_ceil(BLOCK_K).max(1);
    let q_blocks = nq.div_ceil(kernel.block_q()).max(1);
    let wanted = match splits {
        // One wave: as many splits as leave every block resident at once.
        Splits::Auto => ((sms * kernel.blocks_per_sm()) / q_blocks).max(1),
        Splits::AtMost(n) => n.max(1),
    };
    let splits = wanted.min(max_splits.max(1)).min(tiles);
    let per_split = tiles.div_ceil(splits);
    (tiles.div_ceil(per_split), per_split)
}

/// Sets every attention kernel's shared-memory limits once (72 to 104 KiB
/// per block, and the largest carveout so that 2 or 3 blocks fit per SM).
/// Call at set-up.
pub fn prepare(gpu: &Gpu) -> Result<(), GpuError> {
    super::linear::require_tensor_cores(gpu, "attention_f16_d256")?;
    use sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT as CARVEOUT;
    for choice in AttentionKernel::ALL {
        let kernel = choice.kernel();
        let function = gpu.kernels().function(gpu.context(), kernel)?;
        gpu.allow_dynamic_shared_memory(function, kernel, choice.shared_bytes())?;
        function
            .set_attribute(CARVEOUT, 100)
            .check_with("cuFuncSetAttribute", || format!("{} shared-memory carveout", kernel.symbol()))?;
        gpu.kernels().function(gpu.context(), choice.combine())?;
    }
    Ok(())
}

impl AttentionJob<'_> {
    fn validate(&self) -> Result<(), GpuError> {
        let kernel = self.kernel.kernel().symbol();
        let invalid = |reason: String| GpuError::InvalidLaunch { kernel, reason };
        if self.nq == 0 || self.nk == 0 {
            return Err(invalid(format!("{} queries against {} keys", self.nq, self.nk)));
        }
        let dv = self.kernel.dv();
        for (ld, width, what) in
            [(self.ldq, HEAD_DIM, "ldq"), (self.ldk, HEAD_DIM, "ldk"), (self.ldv, dv, "ldv"), (self.ldo, dv, "ldo")]
        {
            if ld < width || ld % 8 != 0 || i32::try_from(ld).is_err() {
                return Err(invalid(format!("{what} = {ld}: rows need at least {width} elements, a multiple of 8")));
            }
        }
        if i32::try_from(self.nq).is_err() || i32::try_from(self.nk).is_err() {
            return Err(invalid("more than 2^31 rows".into()));
        }
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(invalid(format!("softmax scale {}", self.scale)));
        }
        for (view, rows, ld, width, what) in [
            (&self.q, self.nq, self.ldq, HEAD_DIM, "Q"),
            (&self.k, self.nk, self.ldk, HEAD_DIM, "K"),
            (&self.v, self.nk, self.ldv, dv, "V"),
            (&self.out, self.nq, self.ldo, dv, "out"),
        ] {
            if view.ptr() % 16 != 0 {
                return Err(invalid(format!("{what} `{}` is not 16-byte aligned", view.name())));
            }
            let need = ((rows - 1) * ld + width) * 2;
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
    let choice = job.kernel;
    let sms = gpu.properties().multiprocessors.max(1) as usize;
    let (splits, per_split) = split_plan(choice, job.nq, job.nk, sms, splits, scratch.max_splits);
    if splits > 1 {
        let (out_bytes, lse_bytes) = AttentionScratch::bytes_for(job.nq, splits, choice.dv());
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
    let kernel = choice.kernel();
    let function = gpu.kernels().function(gpu.context(), kernel)?;
    gpu.allow_dynamic_shared_memory(function, kernel, choice.shared_bytes())?;
    let config = LaunchConfig {
        grid_dim: (job.nq.div_ceil(choice.block_q()) as u32, splits as u32, 1),
        block_dim: (128, 1, 1),
        shared_mem_bytes: choice.shared_bytes() as u32,
    };
    // SAFETY: `params` matches the kernel's struct (see DeviceRepr above);
    // `validate` checked Q, K, V and out for every row the grid touches and
    // their 16-byte alignment, and the scratch holds `splits` partial outputs
    // when the grid has more than one split; the views live in a pool that
    // synchronises before it frees.
    unsafe { stream.launch_builder(function).arg(&params).launch(config) }
        .check_with("cuLaunchKernel", || format!("{} into `{}`", kernel.symbol(), job.out.name()))?;
    if splits > 1 {
        let kernel = choice.combine();
        let function = gpu.kernels().function(gpu.context(), kernel)?;
        let blocks = job.nq.div_ceil(choice.combine_rows_per_block()) as u32;
        let config = LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: as above; the combine reads the `splits` partial outputs the
        // first kernel wrote (same stream, so after it) and writes `out`.
        unsafe { stream.launch_builder(function).arg(&params).launch(config) }
            .check_with("cuLaunchKernel", || format!("{} into `{}`", kernel.symbol(), job.out.name()))?;
    }
    Ok(())
}

/// CPU reference: `softmax(scale · q kᵀ) v` in f64 for dense `[nq, d]`,
/// `[nk, d]`, `[nk, dv]` inputs; returns `[nq, dv]`. Rows run on all cores.
#[allow(clippy::too_many_arguments)]
pub fn attention_reference(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    nq: usize,
    nk: usize,
    d: usize,
    dv: usize,
    scale: f32,
) -> Vec<f32> {
    let mut out = vec![0f32; nq * dv];
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(32);
    let rows_per = nq.div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for (chunk_index, chunk) in out.chunks_mut(rows_per * dv).enumerate() {
            scope.spawn(move || {
                let mut scores = vec![0f64; nk];
                let mut acc = vec![0f64; dv];
                for (local, out_row) in chunk.chunks_mut(dv).enumerate() {
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
                        for (a, x) in acc.iter_mut().zip(&v[j * dv..(j + 1) * dv]) {
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
        use AttentionKernel::*;
        // SAM2 self-attention on an H100: 64 query blocks, 64 key tiles.
        assert_eq!(split_plan(D256, 4096, 4096, 132, Splits::Auto, 8), (4, 16));
        // Cross-attention at W = 7 with 64 pointer tokens: 450 tiles.
        assert_eq!(split_plan(D256, 4096, 7 * 4096 + 64, 132, Splits::Auto, 8), (4, 113));
        // 128-row blocks: 32 query blocks, 8 splits of 57 tiles (the last 51).
        assert_eq!(split_plan(V64Rows128, 4096, 7 * 4096 + 64, 132, Splits::Auto, 8), (8, 57));
        // 64-row blocks at 3 an SM: 6 splits.
        assert_eq!(split_plan(V64Rows64, 4096, 7 * 4096 + 64, 132, Splits::Auto, 8), (6, 75));
        // Few tiles: never more splits than tiles, none empty.
        for nk in 1..300 {
            for max in 1..12 {
                let (s, per) = split_plan(D256, 37, nk, 132, Splits::AtMost(max), 16);
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
        let out = attention_reference(&q, &k, &v, 1, nk, d, d, 1.0);
        assert!(out.iter().all(|&x| (x - 1.0).abs() < 1e-6), "{out:?}");
        let q = vec![1f32; d];
        let mut k = vec![0f32; nk * d];
        k[2 * d..].iter_mut().for_each(|x| *x = 100.0);
        let out = attention_reference(&q, &k, &v, 1, nk, d, d, 1.0);
        assert!(out.iter().all(|&x| (x - 2.0).abs() < 1e-6), "{out:?}");
        // Values narrower than the keys.
        let v2: Vec<f32> = (0..nk * 2).map(|i| (i / 2) as f32).collect();
        let out = attention_reference(&q, &k, &v2, 1, nk, d, 2, 1.0);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|&x| (x - 2.0).abs() < 1e-6), "{out:?}");
    }
}

//! Linear layers on tensor cores (`kernels/linear.cu`): `out = A · Wᵀ + bias`
//! with FP16 A and W (W as `torch.nn.Linear` stores it, `[n, k]`), FP32 bias
//! and accumulation, and one epilogue: FP16 store, ReLU, SAM2's axial RoPE,
//! or an FP32 residual add. [`linear_reference`] is the CPU twin.

use cudarc::driver::{CudaStream, DeviceRepr, LaunchConfig, PushKernelArg};

use crate::gpu::error::CheckDriver;
use crate::gpu::{DeviceView, Gpu, GpuError, Kernel};

/// The kernel's block tile in n (columns of the output).
const BLOCK_N: usize = 128;

/// Problems one launch can run ([`linear_batch`]; `kMaxBatch` in linear.cu).
pub const MAX_BATCH: usize = 8;

/// What happens to `acc + bias` before it is stored.
#[derive(Debug, Clone, Copy)]
pub enum Epilogue<'pool> {
    /// FP16 `out`.
    Store,
    /// FP16 `out`, negatives set to zero.
    Relu,
    /// FP16 `out`; columns `c < cols` of rows `r < rows` rotated as SAM2's
    /// axial RoPE does for row `r % side²` of a `side` x `side` map and head
    /// width `period`, with the factors of [`axial_rope_factors`] in `table`;
    /// pairs of adjacent columns form one complex number.
    Rope { table: DeviceView<'pool>, cols: usize, rows: usize, side: usize, period: usize },
    /// FP32 `out`: `out += acc + bias`.
    Residual,
}

impl Epilogue<'_> {
    fn code(&self) -> i32 {
        match self {
            Epilogue::Store => 0,
            Epilogue::Relu => 1,
            Epilogue::Rope { .. } => 2,
            Epilogue::Residual => 3,
        }
    }
}

/// One `out[m, n] = A[m, k] · W[n, k]ᵀ + bias[n]`.
#[derive(Debug, Clone, Copy)]
pub struct LinearJob<'pool> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// FP16 rows of A, `lda` elements apart. With `a_tail`, only the first
    /// `a_tail.1` rows come from here.
    pub a: DeviceView<'pool>,
    pub lda: usize,
    /// Rows `a_tail.1..m` of A, read from this view (row `r` at `r - a_tail.1`).
    pub a_tail: Option<(DeviceView<'pool>, usize)>,
    /// FP16 `[n, k]`, row-major.
    pub weight: DeviceView<'pool>,
    /// FP32 `[n]`.
    pub bias: DeviceView<'pool>,
    /// FP16 (FP32 for `Residual`) rows of `ldc` elements.
    pub out: DeviceView<'pool>,
    pub ldc: usize,
    pub epilogue: Epilogue<'pool>,
}

/// Mirrors `LinearParams` in kernels/linear.cu field for field.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct LinearParams {
    a0: u64,
    a1: u64,
    w: u64,
    bias: u64,
    out: u64,
    rope_table: u64,
    m: i32,
    n: i32,
    k: i32,
    lda: i32,
    ldc: i32,
    a_split: i32,
    epilogue: i32,
    rope_cols: i32,
    rope_rows: i32,
    rope_side: i32,
    rope_period: i32,
    pad: i32,
}

/// Mirrors `LinearBatch` in kernels/linear.cu: blockIdx.z picks a problem.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct LinearBatch {
    p: [LinearParams; MAX_BATCH],
}

// SAFETY: plain `repr(C)` integers whose order and types match the kernel's
// struct (six 8-byte pointers, then twelve 4-byte integers: 96 bytes, pinned
// by `params_layout_matches_the_kernel`), eight of them in a row.
unsafe impl DeviceRepr for LinearBatch {}

/// Fails unless `gpu` has the FP16 `mma.sync.m16n8k16` and `cp.async` the
/// tensor-core kernels use (compute capability 8.0 or newer).
pub fn require_tensor_cores(gpu: &Gpu, kernel: &'static str) -> Result<(), GpuError> {
    let (major, minor) = gpu.properties().compute_capability;
    if major < 8 {
        return Err(GpuError::InvalidLaunch {
            kernel,
            reason: format!(
                "needs FP16 tensor cores with mma.sync.m16n8k16 (compute capability 8.0 or newer); {} is {major}.{minor}",
                gpu.properties().name
            ),
        });
    }
    Ok(())
}

fn fits_i32(value: usize) -> bool {
    i32::try_from(value).is_ok()
}

impl LinearJob<'_> {
    fn head_rows(&self) -> usize {
        self.a_tail.map_or(self.m, |(_, rows)| rows)
    }

    fn validate(&self, kernel: &'static str) -> Result<(), GpuError> {
        let invalid = |reason: String| GpuError::InvalidLaunch { kernel, reason };
        let (m, n, k) = (self.m, self.n, self.k);
        if m == 0 || n == 0 || k == 0 {
            return Err(invalid(format!("empty product {m}x{n}x{k}")));
        }
        if k % 8 != 0 || n % 8 != 0 || self.lda % 8 != 0 || self.ldc % 8 != 0 {
            return Err(invalid(format!(
                "k = {k}, n = {n}, lda = {} and ldc = {} must be multiples of 8 (16-byte rows)",
                self.lda, self.ldc
            )));
        }
        if self.lda < k || self.ldc < n {
            return Err(invalid(format!("lda {} < k {k} or ldc {} < n {n}", self.lda, self.ldc)));
        }
        let rows_bytes = |rows: usize, ld: usize, width: usize, elem: usize| {
            if rows == 0 {
                0
            } else {
                ((rows - 1) * ld + width) * elem
            }
        };
        let aligned = |view: &DeviceView, what: &str| -> Result<(), GpuError> {
            if view.ptr() % 16 != 0 {
                return Err(invalid(format!("{what} `{}` is not 16-byte aligned", view.name())));
            }
            Ok(())
        };
        let head = self.head_rows();
        if head > m {
            return Err(invalid(format!("{head} rows from the first A source, but m = {m}")));
        }
        if head > 0 {
            aligned(&self.a, "A")?;
            let need = rows_bytes(head, self.lda, k, 2);
            if self.a.bytes() < need {
                return Err(self.a.too_small(need, kernel));
            }
        }
        if let Some((tail, _)) = &self.a_tail {
            aligned(tail, "A")?;
            let need = rows_bytes(m - head, self.lda, k, 2);
            if tail.bytes() < need {
                return Err(tail.too_small(need, kernel));
            }
        }
        aligned(&self.weight, "W")?;
        self.weight.require::<half::f16>(n * k, kernel)?;
        self.bias.require::<f32>(n, kernel)?;
        let out_elem = if matches!(self.epilogue, Epilogue::Residual) { 4 } else { 2 };
        let need = rows_bytes(m, self.ldc, n, out_elem);
        if self.out.bytes() < need {
            return Err(self.out.too_small(need, kernel));
        }
        if self.out.ptr() % (2 * out_elem as u64) != 0 {
            return Err(invalid(format!("output `{}` is not aligned for pairs of elements", self.out.name())));
        }
        if let Epilogue::Rope { table, cols, rows, side, period } = self.epilogue {
            if period == 0 || period % 4 != 0 || side == 0 || cols % 2 != 0 || cols > n {
                return Err(invalid(format!(
                    "RoPE over {cols} of {n} columns with head width {period} on a {side}x{side} map"
                )));
            }
            table.require::<[f32; 2]>(side * period / 4, kernel)?;
            if table.ptr() % 8 != 0 {
                return Err(invalid("RoPE table is not 8-byte aligned".into()));
            }
            if !fits_i32(rows.min(m)) || side.checked_mul(side).is_none_or(|t| !fits_i32(t)) || !fits_i32(period) {
                return Err(invalid("RoPE sizes beyond 2^31".into()));
            }
        }
        for (value, what) in [(m, "m"), (self.lda, "lda"), (self.ldc, "ldc"), (n, "n"), (k, "k")] {
            if !fits_i32(value) {
                return Err(invalid(format!("{what} = {value} is beyond 2^31")));
            }
        }
        Ok(())
    }
}

/// Enqueues one linear layer on `stream`.
pub fn linear(gpu: &Gpu, stream: &CudaStream, job: &LinearJob) -> Result<(), GpuError> {
    linear_batch(gpu, stream, std::slice::from_ref(job))
}

impl LinearJob<'_> {
    fn params(&self) -> LinearParams {
        let (rope_table, rope_cols, rope_rows, rope_side, rope_period) = match self.epilogue {
            Epilogue::Rope { table, cols, rows, side, period } => (table.ptr(), cols, rows.min(self.m), side, period),
            _ => (0, 0, 0, 1, 4),
        };
        let head = self.head_rows();
        LinearParams {
            a0: if head > 0 { self.a.ptr() } else { self.a_tail.map_or(self.a.ptr(), |(t, _)| t.ptr()) },
            a1: self.a_tail.map_or(self.a.ptr(), |(t, _)| t.ptr()),
            w: self.weight.ptr(),
            bias: self.bias.ptr(),
            out: self.out.ptr(),
            rope_table,
            m: self.m as i32,
            n: self.n as i32,
            k: self.k as i32,
            lda: self.lda as i32,
            ldc: self.ldc as i32,
            a_split: head as i32,
            epilogue: self.epilogue.code(),
            rope_cols: rope_cols as i32,
            rope_rows: rope_rows as i32,
            rope_side: rope_side as i32,
            rope_period: rope_period as i32,
            pad: 0,
        }
    }
}

/// Enqueues up to [`MAX_BATCH`] independent linear layers as one launch
/// (SAM2's key and value projections of every layer).
pub fn linear_batch(gpu: &Gpu, stream: &CudaStream, jobs: &[LinearJob]) -> Result<(), GpuError> {
    require_tensor_cores(gpu, "linear_f16")?;
    if jobs.is_empty() || jobs.len() > MAX_BATCH {
        return Err(GpuError::InvalidLaunch {
            kernel: "linear_f16",
            reason: format!("{} problems in one launch (1 to {MAX_BATCH})", jobs.len()),
        });
    }
    // 128-row block tiles where they fill every SM twice over (two blocks fit
    // per SM); 64-row tiles otherwise (narrow outputs of SAM2's 4096 tokens).
    let sms = gpu.properties().multiprocessors.max(1) as usize;
    let blocks_128: usize = jobs.iter().map(|j| j.m.div_ceil(128) * j.n.div_ceil(BLOCK_N)).sum();
    let (kernel, block_m) =
        if blocks_128 >= 2 * sms { (Kernel::LinearF16Bm128, 128) } else { (Kernel::LinearF16Bm64, 64) };
    let empty = LinearParams {
        a0: 0,
        a1: 0,
        w: 0,
        bias: 0,
        out: 0,
        rope_table: 0,
        m: 0,
        n: 0,
        k: 0,
        lda: 0,
        ldc: 0,
        a_split: 0,
        epilogue: 0,
        rope_cols: 0,
        rope_rows: 0,
        rope_side: 1,
        rope_period: 4,
        pad: 0,
    };
    let mut batch = LinearBatch { p: [empty; MAX_BATCH] };
    for (slot, job) in batch.p.iter_mut().zip(jobs) {
        job.validate(kernel.symbol())?;
        *slot = job.params();
    }
    let blocks_n = jobs.iter().map(|j| j.n.div_ceil(BLOCK_N)).max().unwrap_or(1);
    let blocks_m = jobs.iter().map(|j| j.m.div_ceil(block_m)).max().unwrap_or(1);
    let config = LaunchConfig {
        grid_dim: (blocks_n as u32, blocks_m as u32, jobs.len() as u32),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let function = gpu.kernels().function(gpu.context(), kernel)?;
    // SAFETY: `batch` matches the kernel's struct (see DeviceRepr above) and
    // the grid's z covers only the filled problems; `validate` checked that
    // each problem's A (both sources), W, bias, output and RoPE table hold
    // every element its blocks touch, with the alignment of its 16-byte loads
    // and pair stores (blocks past a smaller problem's m x n return at once);
    // the views live in a pool that synchronises before it frees.
    unsafe { stream.launch_builder(function).arg(&batch).launch(config) }
        .check_with("cuLaunchKernel", || format!("{} into `{}`", kernel.symbol(), jobs[0].out.name()))?;
    Ok(())
}

/// The factors the GPU's RoPE epilogue reads: entry `pos * dim / 4 + i` is
/// (cos, sin) of `pos · 1 / theta^(4i / dim)` for positions `0..side`,
/// computed exactly as [`axial_rope_table`] computes them (so every entry of
/// that table is one of these). `side * dim / 4` entries: 32 KiB for SAM2.
pub fn axial_rope_factors(side: usize, dim: usize, theta: f32) -> Vec<[f32; 2]> {
    assert!(dim % 4 == 0 && side > 0, "RoPE needs dim % 4 == 0 and a non-empty map");
    let quarter = dim / 4;
    let freqs: Vec<f32> = (0..quarter).map(|i| 1.0f32 / theta.powf((4 * i) as f32 / dim as f32)).collect();
    let mut table = Vec::with_capacity(side * quarter);
    for pos in 0..side {
        for freq in &freqs {
            let a = f64::from(pos as f32 * freq);
            table.push([a.cos() as f32, a.sin() as f32]);
        }
    }
    table
}

/// SAM2's axial RoPE table for a `side` x `side` feature map and head
/// dimension `dim` (`position_encoding.compute_axial_cis`): entry
/// `token * dim / 2 + pair` is (cos, sin) of the pair's angle. Pairs
/// `0..dim/4` turn with the token's column x = token % side, pairs
/// `dim/4..dim/2` with its row y = token / side, at frequencies
/// `1 / theta^(4i / dim)`. Computed in f32 as PyTorch computes it (angle =
/// position · frequency, rounded to f32), then cos and sin of that f32 angle.
pub fn axial_rope_table(side: usize, dim: usize, theta: f32) -> Vec<[f32; 2]> {
    assert!(dim % 4 == 0 && side > 0, "RoPE needs dim % 4 == 0 and a non-empty map");
    let quarter = dim / 4;
    let freqs: Vec<f32> = (0..quarter).map(|i| 1.0f32 / theta.powf((4 * i) as f32 / dim as f32)).collect();
    let mut table = Vec::with_capacity(side * side * dim / 2);
    for token in 0..side * side {
        let (x, y) = ((token % side) as f32, (token / side) as f32);
        for pair in 0..dim / 2 {
            let angle = if pair < quarter { x * freqs[pair] } else { y * freqs[pair - quarter] };
            let a = f64::from(angle);
            table.push([a.cos() as f32, a.sin() as f32]);
        }
    }
    table
}

/// CPU reference: the same product and epilogue in f64 accumulation, on
/// f32 copies of the FP16 inputs. `a` is `[m, k]` (dense), `w` `[n, k]`;
/// `residual` is the FP32 output's old content for `Residual` (else empty).
/// Returns `[m, n]` (dense); the RoPE table is [`axial_rope_table`]'s.
pub struct LinearReference<'a> {
    pub a: &'a [f32],
    pub w: &'a [f32],
    pub bias: &'a [f32],
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub relu: bool,
    pub rope: Option<RopeReference<'a>>,
    pub residual: Option<&'a [f32]>,
}

/// The RoPE of [`Epilogue::Rope`] for the CPU reference.
#[derive(Debug, Clone, Copy)]
pub struct RopeReference<'a> {
    pub table: &'a [[f32; 2]],
    pub cols: usize,
    pub rows: usize,
    pub tokens: usize,
    pub period: usize,
}

pub fn linear_reference(r: &LinearReference) -> Vec<f32> {
    let mut out = vec![0f32; r.m * r.n];
    for row in 0..r.m {
        let a = &r.a[row * r.k..(row + 1) * r.k];
        for c in 0..r.n {
            let w = &r.w[c * r.k..(c + 1) * r.k];
            let dot: f64 = a.iter().zip(w).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
            out[row * r.n + c] = (dot + f64::from(r.bias[c])) as f32;
        }
        if r.relu {
            for v in &mut out[row * r.n..(row + 1) * r.n] {
                *v = v.max(0.0);
            }
        }
        if let Some(RopeReference { table, cols, rows, tokens, period }) = r.rope {
            if row < rows {
                for c in (0..cols.min(r.n)).step_by(2) {
                    let [cos, sin] = table[(row % tokens) * period / 2 + (c % period) / 2];
                    let (v0, v1) = (out[row * r.n + c], out[row * r.n + c + 1]);
                    out[row * r.n + c] = v0 * cos - v1 * sin;
                    out[row * r.n + c + 1] = v0 * sin + v1 * cos;
                }
            }
        }
    }
    if let Some(old) = r.residual {
        for (o, x) in out.iter_mut().zip(old) {
            *o += x;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_factors_are_the_full_tables_entries() {
        let (side, dim) = (64, 256);
        let full = axial_rope_table(side, dim, 10000.0);
        let compact = axial_rope_factors(side, dim, 10000.0);
        assert_eq!(compact.len(), 64 * 64);
        for token in 0..side * side {
            for pair in 0..dim / 2 {
                let (pos, freq) = if pair < dim / 4 { (token % side, pair) } else { (token / side, pair - dim / 4) };
                assert_eq!(full[token * dim / 2 + pair], compact[pos * dim / 4 + freq], "token {token} pair {pair}");
            }
        }
    }

    #[test]
    fn params_layout_matches_the_kernel() {
        assert_eq!(std::mem::size_of::<LinearBatch>(), 8 * 96);
        assert_eq!(std::mem::size_of::<LinearParams>(), 96);
        assert_eq!(std::mem::offset_of!(LinearParams, m), 48);
        assert_eq!(std::mem::offset_of!(LinearParams, pad), 92);
    }

    #[test]
    fn rope_table_matches_sam2_at_known_points() {
        let table = axial_rope_table(64, 256, 10000.0);
        assert_eq!(table.len(), 4096 * 128);
        // Token 0 has position (0, 0): no rotation anywhere.
        assert!(table[..128].iter().all(|&[c, s]| c == 1.0 && s == 0.0));
        // Token 65 = (x 1, y 1): pair 0 and pair 64 both turn by 1 radian
        // (frequency 1), pair 1 by 10000^(-4/256).
        let row = &table[65 * 128..66 * 128];
        assert!((row[0][0] - 1f32.cos()).abs() < 1e-7 && (row[0][1] - 1f32.sin()).abs() < 1e-7);
        assert_eq!(row[0], row[64]);
        let f1 = 1.0 / 10000f64.powf(4.0 / 256.0);
        assert!((f64::from(row[1][1]) - f1.sin()).abs() < 1e-6);
        // Token 64 = (x 0, y 1): x pairs still, y pairs turning.
        assert_eq!(table[64 * 128], [1.0, 0.0]);
        assert!((table[64 * 128 + 64][1] - 1f32.sin()).abs() < 1e-7);
    }

    #[test]
    fn reference_rope_rotates_pairs_and_keeps_norms() {
        let table = axial_rope_table(3, 8, 10000.0);
        let (m, n, k) = (9, 8, 8);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
        let w: Vec<f32> = (0..n * k).map(|i| if i % (k + 1) == 0 { 1.0 } else { 0.0 }).collect();
        let bias = vec![0f32; n];
        let plain = linear_reference(&LinearReference {
            a: &a,
            w: &w,
            bias: &bias,
            m,
            n,
            k,
            relu: false,
            rope: None,
            residual: None,
        });
        assert_eq!(plain, a, "identity weights copy A");
        let rotated = linear_reference(&LinearReference {
            a: &a,
            w: &w,
            bias: &bias,
            m,
            n,
            k,
            relu: false,
            rope: Some(RopeReference { table: &table, cols: 8, rows: m, tokens: 9, period: 8 }),
            residual: None,
        });
        for row in 0..m {
            for c in (0..n).step_by(2) {
                let before = a[row * k + c].hypot(a[row * k + c + 1]);
                let after = rotated[row * n + c].hypot(rotated[row * n + c + 1]);
                assert!((before - after).abs() < 1e-5, "row {row} pair {c}: |{before}| -> |{after}|");
            }
        }
        assert_eq!(&rotated[..n], &a[..n], "token 0 is not rotated");
    }
}

//! The one matrix kernel under Conv (after im2col), ConvTranspose (before
//! col2im) and MatMul, and the thread pool that shares tiles among cores.
//!
//! Why a packed register-blocked kernel rather than three nested loops: the
//! YOLO-seg forward at 640x640 is ~5 G multiply-adds, nearly all of them in
//! convs, and CI runs it. Computing a 4 x 8 block of outputs in locals lets
//! the compiler keep the accumulators in vector registers and load each
//! weight and input once per 32 multiply-adds, which is what makes a few
//! seconds on two cores possible; the naive form is load-bound and ~10x
//! slower. No `unsafe`, no target features: plain code the autovectoriser
//! handles at SSE2, so the result does not depend on the host CPU.
//!
//! Every output element is one running sum over k in order 0, 1, ..., k-1
//! (no FMA contraction: Rust never fuses `a * b + c`), so results are the
//! same whatever the tiling or thread count.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Rows of A per kernel call.
pub(super) const MR: usize = 4;
/// Columns of B per kernel call (two SSE vectors).
pub(super) const NR: usize = 8;

/// An [m, k] matrix packed MR rows at a time and k-major inside each block,
/// so the kernel reads it front to back; rows past m are zero.
pub(super) struct PackedA {
    m: usize,
    k: usize,
    data: Vec<f32>,
}

impl PackedA {
    /// Packs the matrix whose element (row, col) is `at(row, col)`.
    pub(super) fn new(m: usize, k: usize, at: impl Fn(usize, usize) -> f32) -> Self {
        let blocks = m.div_ceil(MR);
        let mut data = vec![0.0; blocks * k * MR];
        for (block, packed) in data.chunks_exact_mut((k * MR).max(1)).enumerate().take(blocks) {
            for row in block * MR..((block + 1) * MR).min(m) {
                for col in 0..k {
                    packed[col * MR + row - block * MR] = at(row, col);
                }
            }
        }
        PackedA { m, k, data }
    }

    /// Packs a row-major [m, k] matrix.
    pub(super) fn from_rows(m: usize, k: usize, a: &[f32]) -> Self {
        debug_assert_eq!(a.len(), m * k);
        Self::new(m, k, |row, col| a[row * k + col])
    }
}

/// A · B for one column tile: `b` is a row-major [k, t] tile (t a multiple
/// of NR; columns at and past `width` are ignored) and the result is
/// row-major [m, width].
pub(super) fn multiply_tile(a: &PackedA, b: &[f32], t: usize, width: usize) -> Vec<f32> {
    assert!(t % NR == 0 && width <= t && b.len() >= a.k * t, "tile [{}, {t}] of {} elements", a.k, b.len());
    let mut out = vec![0.0; a.m * width];
    if a.k == 0 || width == 0 {
        return out;
    }
    for (block, packed) in a.data.chunks_exact(a.k * MR).enumerate() {
        let rows = (a.m - block * MR).min(MR);
        for j in (0..width).step_by(NR) {
            let acc = kernel(packed, &b[j..], t);
            let cols = (width - j).min(NR);
            for (r, acc_row) in acc.iter().enumerate().take(rows) {
                out[(block * MR + r) * width + j..][..cols].copy_from_slice(&acc_row[..cols]);
            }
        }
    }
    out
}

/// One MR x NR block: `packed` is an A block [k][MR], `b` starts at the
/// block's first column and has row stride `t`.
#[inline(always)]
fn kernel(packed: &[f32], b: &[f32], t: usize) -> [[f32; NR]; MR] {
    let mut acc = [[0.0f32; NR]; MR];
    // Fixed-size views let the compiler drop the bounds checks and unroll.
    for (w, b_row) in packed.chunks_exact(MR).zip(b.chunks(t)) {
        let w: &[f32; MR] = w.try_into().expect("chunks_exact gives MR");
        let bv: &[f32; NR] = b_row[..NR].try_into().expect("a tile row has NR columns past j");
        let [acc0, acc1, acc2, acc3] = &mut acc;
        axpy(acc0, w[0], bv);
        axpy(acc1, w[1], bv);
        axpy(acc2, w[2], bv);
        axpy(acc3, w[3], bv);
    }
    acc
}

const _: () = assert!(MR == 4 && NR == 8, "kernel and axpy spell out MR = 4 and NR = 8");

/// acc += w * b, spelled out rather than looped: tests run unoptimised,
/// where every loop step is a function call, and this is where every
/// multiply-add of the model happens (written out, the test profile runs
/// the YOLO-like graph ~8x faster; optimised builds vectorise both forms).
#[inline(always)]
fn axpy(acc: &mut [f32; NR], w: f32, b: &[f32; NR]) {
    acc[0] += w * b[0];
    acc[1] += w * b[1];
    acc[2] += w * b[2];
    acc[3] += w * b[3];
    acc[4] += w * b[4];
    acc[5] += w * b[5];
    acc[6] += w * b[6];
    acc[7] += w * b[7];
}

/// Columns per B tile for a product with inner dimension `k` over `cols`
/// columns, when `outer` independent products share the threads.
pub(super) fn tile_width(k: usize, cols: usize, outer: usize) -> usize {
    // Keep a [k, t] tile within ~128 KiB so it stays in L2 while every A
    // block passes over it, and at most 512 columns (a 3-channel 3x3 conv
    // has k = 27; longer tiles gain nothing).
    let by_cache = (32 * 1024 / k.max(1)).clamp(NR, 512);
    // At least ~4 tiles per thread overall, so uneven tiles balance out.
    let tiles_wanted = (4 * threads()).div_ceil(outer.max(1));
    let by_threads = cols.div_ceil(tiles_wanted).max(1);
    by_cache.min(by_threads).div_ceil(NR) * NR
}

/// The worker threads to use: every core the process may run on (asked
/// once: on Linux the answer reads cgroup files).
pub(super) fn threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// `(0..n).map(f).collect()`, with tasks handed out one at a time to
/// [`threads`] scoped threads (tasks differ in cost: edge tiles are narrow).
pub(super) fn par_map<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let workers = threads().min(n);
    if workers <= 1 {
        return (0..n).map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= n {
                return done;
            }
            done.push((i, f(i)));
        }
    };
    let mut results: Vec<(usize, T)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers).map(|_| scope.spawn(work)).collect();
        let mut all = Vec::with_capacity(n);
        for handle in handles {
            // A panic in a task is a bug here: pass it on unchanged.
            all.extend(handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
        }
        all
    });
    results.sort_unstable_by_key(|&(i, _)| i);
    results.into_iter().map(|(_, r)| r).collect()
}

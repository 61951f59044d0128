//! The kernels under SAM2's memory attention against their CPU references on
//! random inputs of awkward sizes: kernels/linear.cu (every epilogue, both
//! block tiles, two-source A, k and n tails, strided rows), kernels/
//! attention.cu (single key, tails, splits, strided Q/K/V, selective and
//! flat softmax; values 256 and 64 wide, 64- and 128-row blocks) and
//! kernels/sam2.cu (LayerNorm, the input and key-input adds, the memory
//! bank's keys re-aged with the temporal encoding). Outputs are poisoned
//! first; what lies between and after the rows must stay poison. Each CPU reference reads the same FP16-rounded inputs.

use half::f16;
use vrseg::gpu::{DeviceView, PoolPlan, VramPool};
use vrseg::ops::attention::{
    self, attention, attention_reference, AttentionJob, AttentionKernel, AttentionScratch, Splits,
};
use vrseg::ops::linear::{
    axial_rope_factors, axial_rope_table, linear, linear_batch, linear_reference, Epilogue, LinearJob, LinearReference,
    RopeReference,
};
use vrseg::ops::sam2::{add_f16, age_keys, age_keys_reference, layernorm, layernorm_reference, scaled_add, AgeKeys};
use vrseg::selftest::SplitMix64;

use crate::{gpu_or_skip, test_seed};

const GUARD: usize = 4096;

fn random(rng: &mut SplitMix64, count: usize, amplitude: f32) -> Vec<f32> {
    (0..count).map(|_| rng.uniform_f32(-amplitude, amplitude)).collect()
}

/// FP16-rounded values (what the GPU reads) and the halves themselves.
fn rounded(values: &[f32]) -> (Vec<f32>, Vec<f16>) {
    let h: Vec<f16> = values.iter().map(|&v| f16::from_f32(v)).collect();
    (h.iter().map(|v| v.to_f32()).collect(), h)
}

fn poison_bytes(rng: &mut SplitMix64, bytes: usize) -> Vec<u8> {
    let mut p = vec![0u8; bytes];
    rng.fill_bytes(&mut p);
    p
}

/// Worst |got - want| / (atol + rtol |want|); NaN counts as infinitely wrong.
fn worst(got: &[f32], want: &[f32], atol: f32, rtol: f32) -> (f32, usize) {
    let mut w = (0f32, 0usize);
    for (i, (g, x)) in got.iter().zip(want).enumerate() {
        let e = (g - x).abs() / (atol + rtol * x.abs());
        let e = if e.is_nan() { f32::INFINITY } else { e };
        if e > w.0 {
            w = (e, i);
        }
    }
    w
}

struct LinearCase {
    label: &'static str,
    m: usize,
    n: usize,
    k: usize,
    lda: usize,
    ldc: usize,
    /// Rows from the second A source (taken from the end).
    tail_rows: usize,
    epilogue: &'static str,
    /// RoPE (cols, rows, side) when epilogue == "rope".
    rope: (usize, usize, usize),
}

fn run_linear(case: &LinearCase) {
    let gpu = gpu_or_skip!();
    let mut rng = SplitMix64::new(test_seed(case.label));
    let (m, n, k) = (case.m, case.n, case.k);
    let head = m - case.tail_rows;
    let a = random(&mut rng, m * k, 1.0);
    let w = random(&mut rng, n * k, 1.0 / (k as f32).sqrt());
    let bias = random(&mut rng, n, 0.5);
    let (a_r, _) = rounded(&a);
    let (w_r, w_h) = rounded(&w);
    // Strided A images: row r of the head at r * lda, of the tail at (r - head) * lda.
    let strided = |rows: std::ops::Range<usize>| {
        let mut img = vec![f16::from_f32(f32::NAN); rows.len().max(1) * case.lda];
        for (i, r) in rows.enumerate() {
            for c in 0..k {
                img[i * case.lda + c] = f16::from_f32(a[r * k + c]);
            }
        }
        img
    };
    let (head_img, tail_img) = (strided(0..head), strided(head..m));
    let residual = case.epilogue == "residual";
    let out_elem = if residual { 4 } else { 2 };
    let out_bytes = m * case.ldc * out_elem;

    let mut plan = PoolPlan::new();
    let a_id = plan.buffer("test.a", head_img.len() * 2);
    let t_id = plan.buffer("test.a_tail", tail_img.len() * 2);
    let w_id = plan.buffer("test.w", n * k * 2);
    let b_id = plan.buffer("test.bias", n * 4);
    let o_id = plan.buffer("test.out", out_bytes + GUARD);
    let side = case.rope.2.max(1);
    let table = axial_rope_table(side, 256, 10000.0);
    let factors = axial_rope_factors(side, 256, 10000.0);
    let r_id = plan.buffer("test.rope", factors.len() * 8);
    let pool = VramPool::reserve(&gpu, &plan).unwrap();
    let stream = gpu.new_stream().unwrap();
    pool.buffer(a_id).upload_blocking(&stream, &head_img).unwrap();
    pool.buffer(t_id).upload_blocking(&stream, &tail_img).unwrap();
    pool.buffer(w_id).upload_blocking(&stream, &w_h).unwrap();
    pool.buffer(b_id).upload_blocking(&stream, &bias).unwrap();
    pool.buffer(r_id).upload_blocking(&stream, &factors).unwrap();
    // The residual's old content: random floats in the rows, poison elsewhere.
    let mut initial = poison_bytes(&mut rng, out_bytes + GUARD);
    let old: Vec<f32> = random(&mut rng, m * n, 2.0);
    if residual {
        for r in 0..m {
            for c in 0..n {
                let o = (r * case.ldc + c) * 4;
                initial[o..o + 4].copy_from_slice(&old[r * n + c].to_le_bytes());
            }
        }
    }
    let out = pool.buffer(o_id);
    out.upload_blocking(&stream, &initial).unwrap();

    let epilogue = match case.epilogue {
        "store" => Epilogue::Store,
        "relu" => Epilogue::Relu,
        "residual" => Epilogue::Residual,
        "rope" => Epilogue::Rope { table: pool.buffer(r_id), cols: case.rope.0, rows: case.rope.1, side, period: 256 },
        other => panic!("unknown epilogue {other}"),
    };
    let job = LinearJob {
        m,
        n,
        k,
        a: pool.buffer(a_id),
        lda: case.lda,
        a_tail: (case.tail_rows > 0).then(|| (pool.buffer(t_id), head)),
        weight: pool.buffer(w_id),
        bias: pool.buffer(b_id),
        out,
        ldc: case.ldc,
        epilogue,
    };
    linear(&gpu, &stream, &job).unwrap();
    let mut got = vec![0u8; out_bytes + GUARD];
    out.download_blocking(&stream, &mut got).unwrap();

    let want = linear_reference(&LinearReference {
        a: &a_r,
        w: &w_r,
        bias: &bias,
        m,
        n,
        k,
        relu: case.epilogue == "relu",
        rope: (case.epilogue == "rope").then_some(RopeReference {
            table: &table,
            cols: case.rope.0,
            rows: case.rope.1,
            tokens: side * side,
            period: 256,
        }),
        residual: residual.then_some(&old[..]),
    });
    let mut values = Vec::with_capacity(m * n);
    for r in 0..m {
        for c in 0..n {
            let o = (r * case.ldc + c) * out_elem;
            values.push(if residual {
                f32::from_le_bytes(got[o..o + 4].try_into().unwrap())
            } else {
                f16::from_le_bytes([got[o], got[o + 1]]).to_f32()
            });
        }
        let (gap_start, gap_end) = ((r * case.ldc + n) * out_elem, ((r + 1) * case.ldc) * out_elem);
        assert_eq!(&got[gap_start..gap_end], &initial[gap_start..gap_end], "{}: wrote past row {r}", case.label);
    }
    assert_eq!(&got[out_bytes..], &initial[out_bytes..], "{}: wrote past the output", case.label);
    // FP32 sums over k on the GPU against f64 on the CPU, then FP16 rounding
    // of the result (2^-11 relative) unless the output is FP32.
    let rtol = if residual { 1e-5 } else { 1.5e-3 };
    let (e, i) = worst(&values, &want, 2e-4 * (k as f32).sqrt() / 16.0, rtol);
    eprintln!("{}: worst error {e:.3} of tolerance at ({}, {})", case.label, i / n, i % n);
    assert!(
        e <= 1.0,
        "{}: element ({}, {}) is {} on the GPU and {} on the CPU",
        case.label,
        i / n,
        i % n,
        values[i],
        want[i]
    );
}

#[test]
fn linear_store_37x40x72_with_k_tail_and_wide_rows() {
    run_linear(&LinearCase {
        label: "linear store 37x40x72",
        m: 37,
        n: 40,
        k: 72,
        lda: 80,
        ldc: 48,
        tail_rows: 0,
        epilogue: "store",
        rope: (0, 0, 0),
    });
}

#[test]
fn linear_relu_2053x2048x256_on_128_row_tiles() {
    // 17 x 16 = 272 blocks of 128 x 128: the 128-row kernel on a 132-SM GPU.
    run_linear(&LinearCase {
        label: "linear relu 2053x2048x256",
        m: 2053,
        n: 2048,
        k: 256,
        lda: 256,
        ldc: 2048,
        tail_rows: 0,
        epilogue: "relu",
        rope: (0, 0, 0),
    });
}

#[test]
fn linear_residual_129x256x2048() {
    run_linear(&LinearCase {
        label: "linear residual 129x256x2048",
        m: 129,
        n: 256,
        k: 2048,
        lda: 2048,
        ldc: 264,
        tail_rows: 0,
        epilogue: "residual",
        rope: (0, 0, 0),
    });
}

#[test]
fn linear_rope_qkv_layout_rows_past_the_map() {
    // SAM2's self-attention projection: q and k rotated, v not; 300 rows of a
    // 12x12 map (rows wrap by 144), RoPE only on the first 250.
    run_linear(&LinearCase {
        label: "linear rope 300x768x64",
        m: 300,
        n: 768,
        k: 64,
        lda: 64,
        ldc: 768,
        tail_rows: 0,
        epilogue: "rope",
        rope: (512, 250, 12),
    });
}

#[test]
fn linear_rope_two_sources_like_memory_keys() {
    // Cross-attention keys: 3 frames of a 10x10 map from the ring with RoPE,
    // then 13 pointer tokens from a second buffer without.
    run_linear(&LinearCase {
        label: "linear rope two sources 313x256x64",
        m: 313,
        n: 256,
        k: 64,
        lda: 64,
        ldc: 256,
        tail_rows: 13,
        epilogue: "rope",
        rope: (256, 300, 10),
    });
}

#[test]
fn linear_only_second_source() {
    run_linear(&LinearCase {
        label: "linear store tail only 7x256x64",
        m: 7,
        n: 256,
        k: 64,
        lda: 72,
        ldc: 256,
        tail_rows: 7,
        epilogue: "store",
        rope: (0, 0, 0),
    });
}

/// Three problems of different sizes and epilogues in one launch (SAM2's
/// per-layer key and value projections): each equals its own reference and
/// no block of one touches another's output.
#[test]
fn linear_batch_of_three_problems() {
    let gpu = gpu_or_skip!();
    let mut rng = SplitMix64::new(test_seed("linear batch"));
    let side = 7;
    let table = axial_rope_table(side, 256, 10000.0);
    let factors = axial_rope_factors(side, 256, 10000.0);
    // (m, n, k, rope)
    let shapes = [(49usize, 256usize, 64usize, true), (300, 136, 64, false), (5, 512, 96, false)];
    let mut plan = PoolPlan::new();
    let ids: Vec<_> = shapes
        .iter()
        .enumerate()
        .map(|(i, &(m, n, k, _))| {
            (
                plan.buffer(format!("test.a{i}"), m * k * 2),
                plan.buffer(format!("test.w{i}"), n * k * 2),
                plan.buffer(format!("test.b{i}"), n * 4),
                plan.buffer(format!("test.out{i}"), m * n * 2 + GUARD),
            )
        })
        .collect();
    let r_id = plan.buffer("test.rope", factors.len() * 8);
    let pool = VramPool::reserve(&gpu, &plan).unwrap();
    let stream = gpu.new_stream().unwrap();
    pool.buffer(r_id).upload_blocking(&stream, &factors).unwrap();
    let mut host = Vec::new();
    let mut jobs = Vec::new();
    for (&(m, n, k, rope), &(a_id, w_id, b_id, o_id)) in shapes.iter().zip(&ids) {
        let (a, a_h) = rounded(&random(&mut rng, m * k, 1.0));
        let (w, w_h) = rounded(&random(&mut rng, n * k, 0.2));
        let bias = random(&mut rng, n, 0.5);
        let poison = poison_bytes(&mut rng, m * n * 2 + GUARD);
        pool.buffer(a_id).upload_blocking(&stream, &a_h).unwrap();
        pool.buffer(w_id).upload_blocking(&stream, &w_h).unwrap();
        pool.buffer(b_id).upload_blocking(&stream, &bias).unwrap();
        pool.buffer(o_id).upload_blocking(&stream, &poison).unwrap();
        jobs.push(LinearJob {
            m,
            n,
            k,
            a: pool.buffer(a_id),
            lda: k,
            a_tail: None,
            weight: pool.buffer(w_id),
            bias: pool.buffer(b_id),
            out: pool.buffer(o_id),
            ldc: n,
            epilogue: if rope {
                Epilogue::Rope { table: pool.buffer(r_id), cols: n, rows: m, side, period: 256 }
            } else {
                Epilogue::Store
            },
        });
        host.push((a, w, bias, poison));
    }
    linear_batch(&gpu, &stream, &jobs).unwrap();
    for (i, (&(m, n, k, rope), (a, w, bias, poison))) in shapes.iter().zip(&host).enumerate() {
        let mut got = vec![0u8; m * n * 2 + GUARD];
        pool.buffer(ids[i].3).download_blocking(&stream, &mut got).unwrap();
        assert_eq!(&got[m * n * 2..], &poison[m * n * 2..], "problem {i}: wrote past its output");
        let values: Vec<f32> =
            got[..m * n * 2].chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect();
        let want = linear_reference(&LinearReference {
            a,
            w,
            bias,
            m,
            n,
            k,
            relu: false,
            rope: rope.then_some(RopeReference { table: &table, cols: n, rows: m, tokens: side * side, period: 256 }),
            residual: None,
        });
        let (e, j) = worst(&values, &want, 2e-4, 1.5e-3);
        assert!(e <= 1.0, "problem {i}: element {j} is {} on the GPU and {} on the CPU", values[j], want[j]);
    }
}

#[test]
fn linear_refuses_bad_shapes_with_a_sentence() {
    let gpu = gpu_or_skip!();
    let mut plan = PoolPlan::new();
    let id = plan.buffer("test.any", 1 << 20);
    let pool = VramPool::reserve(&gpu, &plan).unwrap();
    let stream = gpu.new_stream().unwrap();
    let v = pool.buffer(id);
    let job = |k: usize, n: usize, out| LinearJob {
        m: 4,
        n,
        k,
        a: v,
        lda: k.max(8),
        a_tail: None,
        weight: v,
        bias: v,
        out,
        ldc: n.max(8),
        epilogue: Epilogue::Store,
    };
    let err = linear(&gpu, &stream, &job(12, 8, v)).unwrap_err().to_string();
    assert!(err.contains("multiples of 8"), "{err}");
    let small: DeviceView = v.sub(0, 16).unwrap();
    let err = linear(&gpu, &stream, &job(8, 8, small)).unwrap_err().to_string();
    assert!(err.contains("test.any") && err.contains("needs"), "{err}");
}

struct AttentionCase<'a> {
    label: &'a str,
    kernel: AttentionKernel,
    nq: usize,
    nk: usize,
    /// Row stride of Q and K (>= 256; 768 mimics the packed qkv buffer); V
    /// rows are `ld` apart for 256-wide values, `ld / 4` rounded up to a
    /// multiple of 8 for 64-wide ones (wider than the values unless ld = 256).
    ld: usize,
    splits: Splits,
    amplitude: f32,
    /// Scores that rise along the keys (the running max moves many times).
    rising: bool,
}

fn run_attention(case: &AttentionCase) {
    let gpu = gpu_or_skip!();
    let mut rng = SplitMix64::new(test_seed(case.label));
    let (nq, nk, d, ld) = (case.nq, case.nk, attention::HEAD_DIM, case.ld);
    let dv = case.kernel.dv();
    let ldv = if dv == d { ld } else { (ld / 4).next_multiple_of(8) };
    let mut q = random(&mut rng, nq * d, case.amplitude);
    let mut k = random(&mut rng, nk * d, case.amplitude);
    if case.rising {
        // q ≈ 0.5 and key j ≈ 2j/nk: scores rise from 0 to 16 (23 in log2
        // units) along the keys, plus noise.
        q.iter_mut().for_each(|x| *x = 0.5 + 0.1 * *x);
        for (j, row) in k.chunks_mut(d).enumerate() {
            row.iter_mut().for_each(|x| *x = 2.0 * j as f32 / nk as f32 + 0.1 * *x);
        }
    }
    let v = random(&mut rng, nk * dv, 1.0);
    let (q_r, _) = rounded(&q);
    let (k_r, _) = rounded(&k);
    let (v_r, _) = rounded(&v);
    // NaN between rows: a kernel reading past a row's width poisons its output.
    let image = |x: &[f32], rows: usize, width: usize, ld: usize| {
        let mut img = vec![f16::from_f32(f32::NAN); rows * ld];
        for r in 0..rows {
            for c in 0..width {
                img[r * ld + c] = f16::from_f32(x[r * width + c]);
            }
        }
        img
    };
    let ldo = dv + 8;
    let out_bytes = nq * ldo * 2;
    let (po, pl) = AttentionScratch::bytes_for(nq, 8, dv);
    let mut plan = PoolPlan::new();
    let q_id = plan.buffer("test.q", nq * ld * 2);
    let k_id = plan.buffer("test.k", nk * ld * 2);
    let v_id = plan.buffer("test.v", nk * ldv * 2);
    let o_id = plan.buffer("test.out", out_bytes + GUARD);
    let po_id = plan.buffer("test.partial_out", po);
    let pl_id = plan.buffer("test.partial_lse", pl);
    let pool = VramPool::reserve(&gpu, &plan).unwrap();
    let stream = gpu.new_stream().unwrap();
    pool.buffer(q_id).upload_blocking(&stream, &image(&q, nq, d, ld)).unwrap();
    pool.buffer(k_id).upload_blocking(&stream, &image(&k, nk, d, ld)).unwrap();
    pool.buffer(v_id).upload_blocking(&stream, &image(&v, nk, dv, ldv)).unwrap();
    let poison = poison_bytes(&mut rng, out_bytes + GUARD);
    let out = pool.buffer(o_id);
    out.upload_blocking(&stream, &poison).unwrap();
    // Poisoned scratch too: the combine must read only what the splits wrote.
    pool.buffer(po_id).upload_blocking(&stream, &poison_bytes(&mut rng, po)).unwrap();
    pool.buffer(pl_id).upload_blocking(&stream, &poison_bytes(&mut rng, pl)).unwrap();

    attention::prepare(&gpu).unwrap();
    let job = AttentionJob {
        kernel: case.kernel,
        q: pool.buffer(q_id),
        ldq: ld,
        k: pool.buffer(k_id),
        ldk: ld,
        v: pool.buffer(v_id),
        ldv,
        nq,
        nk,
        out,
        ldo,
        scale: 1.0 / 16.0,
    };
    let scratch = AttentionScratch { partial_out: pool.buffer(po_id), partial_lse: pool.buffer(pl_id), max_splits: 8 };
    attention(&gpu, &stream, &job, &scratch, case.splits).unwrap();
    let mut got = vec![0u8; out_bytes + GUARD];
    out.download_blocking(&stream, &mut got).unwrap();
    let want = attention_reference(&q_r, &k_r, &v_r, nq, nk, d, dv, 1.0 / 16.0);
    let mut values = Vec::with_capacity(nq * dv);
    for r in 0..nq {
        for c in 0..dv {
            let o = (r * ldo + c) * 2;
            values.push(f16::from_le_bytes([got[o], got[o + 1]]).to_f32());
        }
        let gap = (r * ldo + dv) * 2..(r + 1) * ldo * 2;
        assert_eq!(&got[gap.clone()], &poison[gap], "{}: wrote past row {r}", case.label);
    }
    assert_eq!(&got[out_bytes..], &poison[out_bytes..], "{}: wrote past the output", case.label);
    // P rounded to FP16 before P·V (2^-11 relative per weight) and the FP16
    // output: within 2e-3 for values in [-1, 1].
    let (e, i) = worst(&values, &want, 2e-3, 0.0);
    let sms = gpu.properties().multiprocessors as usize;
    let plan = attention::split_plan(case.kernel, nq, nk, sms, case.splits, 8);
    eprintln!("{}: splits {plan:?}, worst error {:.2e} at ({}, {})", case.label, e * 2e-3, i / dv, i % dv);
    assert!(
        e <= 1.0,
        "{}: ({}, {}) is {} on the GPU and {} on the CPU",
        case.label,
        i / dv,
        i % dv,
        values[i],
        want[i]
    );
}

#[test]
fn attention_one_key() {
    run_attention(&AttentionCase {
        label: "attention 37x1",
        kernel: AttentionKernel::D256,
        nq: 37,
        nk: 1,
        ld: 256,
        splits: Splits::Auto,
        amplitude: 1.0,
        rising: false,
    });
}

#[test]
fn attention_partial_tile_without_splits() {
    run_attention(&AttentionCase {
        label: "attention 200x63 unsplit",
        kernel: AttentionKernel::D256,
        nq: 200,
        nk: 63,
        ld: 256,
        splits: Splits::AtMost(1),
        amplitude: 2.0,
        rising: false,
    });
}

#[test]
fn attention_auto_splits_selective_softmax() {
    // Scores with a standard deviation near 5: the running max moves often.
    run_attention(&AttentionCase {
        label: "attention 130x1001 auto",
        kernel: AttentionKernel::D256,
        nq: 130,
        nk: 1001,
        ld: 256,
        splits: Splits::Auto,
        amplitude: 3.0,
        rising: false,
    });
}

#[test]
fn attention_strided_qkv_three_splits() {
    run_attention(&AttentionCase {
        label: "attention 65x4097 ld 768 3 splits",
        kernel: AttentionKernel::D256,
        nq: 65,
        nk: 4097,
        ld: 768,
        splits: Splits::AtMost(3),
        amplitude: 1.0,
        rising: false,
    });
}

#[test]
fn attention_many_query_blocks_seven_splits() {
    run_attention(&AttentionCase {
        label: "attention 1031x700 7 splits",
        kernel: AttentionKernel::D256,
        nq: 1031,
        nk: 700,
        ld: 264,
        splits: Splits::AtMost(7),
        amplitude: 2.0,
        rising: false,
    });
}

#[test]
fn attention_rising_scores() {
    run_attention(&AttentionCase {
        label: "attention 97x2000 rising",
        kernel: AttentionKernel::D256,
        nq: 97,
        nk: 2000,
        ld: 256,
        splits: Splits::AtMost(2),
        amplitude: 1.0,
        rising: true,
    });
}

/// The 64-wide-value kernels on the same awkward shapes: both block heights,
/// single key, tails, every split path, strided rows, rising scores.
#[test]
fn attention_v64_kernels() {
    for kernel in [AttentionKernel::V64Rows64, AttentionKernel::V64Rows128] {
        let cases = [
            ("v64 37x1", 37, 1, 256, Splits::Auto, 1.0, false),
            ("v64 200x63 unsplit", 200, 63, 256, Splits::AtMost(1), 2.0, false),
            ("v64 130x1001 auto", 130, 1001, 256, Splits::Auto, 3.0, false),
            ("v64 65x4097 ld 768 3 splits", 65, 4097, 768, Splits::AtMost(3), 1.0, false),
            ("v64 1031x700 7 splits", 1031, 700, 264, Splits::AtMost(7), 2.0, false),
            ("v64 97x2000 rising", 97, 2000, 256, Splits::AtMost(2), 1.0, true),
            ("v64 257x129 8 splits", 257, 129, 256, Splits::AtMost(8), 2.0, false),
        ];
        for (label, nq, nk, ld, splits, amplitude, rising) in cases {
            let label = format!("attention {label} {kernel:?}");
            run_attention(&AttentionCase { label: &label, kernel, nq, nk, ld, splits, amplitude, rising });
        }
    }
}

fn run_layernorm(rows: usize, cols: usize) {
    let gpu = gpu_or_skip!();
    let label = format!("layernorm {rows}x{cols}");
    let mut rng = SplitMix64::new(test_seed(&label));
    // Rows with an offset far from zero: a one-pass variance would cancel.
    let x: Vec<f32> = (0..rows * cols).map(|i| 30.0 * ((i / cols) % 3) as f32 + rng.uniform_f32(-3.0, 3.0)).collect();
    let gamma = random(&mut rng, cols, 1.5);
    let beta = random(&mut rng, cols, 0.5);
    let mut plan = PoolPlan::new();
    let x_id = plan.buffer("test.x", rows * cols * 4);
    let g_id = plan.buffer("test.gamma", cols * 4);
    let b_id = plan.buffer("test.beta", cols * 4);
    let y_id = plan.buffer("test.y", rows * cols * 2 + GUARD);
    let pool = VramPool::reserve(&gpu, &plan).unwrap();
    let stream = gpu.new_stream().unwrap();
    pool.buffer(x_id).upload_blocking(&stream, &x).unwrap();
    pool.buffer(g_id).upload_blocking(&stream, &gamma).unwrap();
    pool.buffer(b_id).upload_blocking(&stream, &beta).unwrap();
    let poison = poison_bytes(&mut rng, rows * cols * 2 + GUARD);
    let y = pool.buffer(y_id);
    y.upload_blocking(&stream, &poison).unwrap();
    layernorm(&gpu, &stream, &pool.buffer(x_id), &pool.buffer(g_id), &pool.buffer(b_id), &y, rows, cols, 1e-5).unwrap();
    let mut got = vec![0u8; rows * cols * 2 + GUARD];
    y.download_blocking(&stream, &mut got).unwrap();
    assert_eq!(&got[rows * cols * 2..], &poison[rows * cols * 2..], "{label}: wrote past the output");
    let values: Vec<f32> =
        got[..rows * cols * 2].chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect();
    let want = layernorm_reference(&x, &gamma, &beta, rows, cols, 1e-5);
    let (e, i) = worst(&values, &want, 1e-3, 1e-3);
    assert!(e <= 1.0, "{label}: element {i} is {} on the GPU and {} on the CPU", values[i], want[i]);
}

#[test]
fn layernorm_4099x256() {
    run_layernorm(4099, 256);
}

#[test]
fn layernorm_odd_width_37x37() {
    run_layernorm(37, 37);
}

#[test]
fn input_and_key_adds() {
    let gpu = gpu_or_skip!();
    let mut rng = SplitMix64::new(test_seed("sam2 adds"));
    let count = 100_003;
    let (a_r, a_h) = rounded(&random(&mut rng, count, 4.0));
    let (b_r, b_h) = rounded(&random(&mut rng, count, 4.0));
    let mut plan = PoolPlan::new();
    let a_id = plan.buffer("test.a", count * 2);
    let b_id = plan.buffer("test.b", count * 2);
    let s_id = plan.buffer("test.sum", count * 2 + GUARD);
    let x_id = plan.buffer("test.x", count * 4 + GUARD);
    let pool = VramPool::reserve(&gpu, &plan).unwrap();
    let stream = gpu.new_stream().unwrap();
    pool.buffer(a_id).upload_blocking(&stream, &a_h).unwrap();
    pool.buffer(b_id).upload_blocking(&stream, &b_h).unwrap();
    let poison = poison_bytes(&mut rng, count * 4 + GUARD);
    pool.buffer(s_id).upload_blocking(&stream, &poison[..count * 2 + GUARD]).unwrap();
    pool.buffer(x_id).upload_blocking(&stream, &poison).unwrap();
    let (a, b) = (pool.buffer(a_id), pool.buffer(b_id));
    add_f16(&gpu, &stream, &a, &b, &pool.buffer(s_id), count).unwrap();
    scaled_add(&gpu, &stream, &a, &b, 0.1, &pool.buffer(x_id), count).unwrap();
    let mut sum = vec![0u8; count * 2 + GUARD];
    pool.buffer(s_id).download_blocking(&stream, &mut sum).unwrap();
    let mut x = vec![0u8; count * 4 + GUARD];
    pool.buffer(x_id).download_blocking(&stream, &mut x).unwrap();
    assert_eq!(&sum[count * 2..], &poison[count * 2..count * 2 + GUARD]);
    assert_eq!(&x[count * 4..], &poison[count * 4..]);
    for i in 0..count {
        let s = f16::from_le_bytes([sum[2 * i], sum[2 * i + 1]]);
        assert_eq!(s, f16::from_f32(a_r[i] + b_r[i]), "memory + pos at {i}");
        let v = f32::from_le_bytes(x[4 * i..4 * i + 4].try_into().unwrap());
        let want = a_r[i] + 0.1 * b_r[i];
        assert!((v - want).abs() <= 1e-6 * (1.0 + want.abs()), "curr + 0.1 pos at {i}: {v} vs {want}");
    }
}

/// The bank's keys at their ages: a 7x7 map (49 tokens, not a multiple of
/// any tile), 3 layers, a ring of 5 that is not full (3 slots, newest 2) and
/// one that is full with its newest slot in the middle (newest 1); layers
/// padded with pointer rows that must stay poison, as must slots past
/// `valid`. Tolerance: one FP16 rounding of the FP32 sum (atol 1e-3 + rtol
/// 1e-3 for values of order 4).
#[test]
fn age_keys_matches_the_cpu_reference() {
    let gpu = gpu_or_skip!();
    let mut rng = SplitMix64::new(test_seed("sam2 age keys"));
    let (side, layers, window, pointer_rows, d) = (7, 3, 5, 11, 256);
    let tokens = side * side;
    let keys0_rows = window * tokens;
    let keys_rows = window * tokens + pointer_rows;
    let (keys0_r, keys0_h) = rounded(&random(&mut rng, layers * keys0_rows * d, 3.0));
    let tkeys = random(&mut rng, layers * window * d, 1.5);
    let factors = axial_rope_factors(side, d, 10000.0);
    let table = axial_rope_table(side, d, 10000.0);
    let mut plan = PoolPlan::new();
    let k0_id = plan.buffer("test.keys0", keys0_h.len() * 2);
    let k_id = plan.buffer("test.keys", layers * keys_rows * d * 2 + GUARD);
    let t_id = plan.buffer("test.tkeys", tkeys.len() * 4);
    let r_id = plan.buffer("test.rope", factors.len() * 8);
    let pool = VramPool::reserve(&gpu, &plan).unwrap();
    let stream = gpu.new_stream().unwrap();
    pool.buffer(k0_id).upload_blocking(&stream, &keys0_h).unwrap();
    pool.buffer(t_id).upload_blocking(&stream, &tkeys).unwrap();
    pool.buffer(r_id).upload_blocking(&stream, &factors).unwrap();
    for (valid, newest) in [(3, 2), (5, 1), (5, 4), (1, 0)] {
        let label = format!("age keys {valid} valid of {window}, newest {newest}");
        // Poison: finite halves (so the reference can carry them) that no
        // correct result equals by chance.
        let poison_h: Vec<f16> =
            (0..layers * keys_rows * d + GUARD / 2).map(|_| f16::from_f32(rng.uniform_f32(100.0, 200.0))).collect();
        let poison_r: Vec<f32> = poison_h.iter().map(|v| v.to_f32()).collect();
        let keys = pool.buffer(k_id);
        keys.upload_blocking(&stream, &poison_h).unwrap();
        let job = AgeKeys {
            keys0: pool.buffer(k0_id),
            keys0_layer_rows: keys0_rows,
            keys,
            keys_layer_rows: keys_rows,
            tkeys: pool.buffer(t_id),
            rope: pool.buffer(r_id),
            layers,
            valid,
            window,
            newest,
            side,
        };
        age_keys(&gpu, &stream, &job).unwrap();
        let mut got = vec![f16::ZERO; poison_h.len()];
        keys.download_blocking(&stream, &mut got).unwrap();
        let got: Vec<f32> = got.iter().map(|v| v.to_f32()).collect();
        let n = layers * keys_rows * d;
        let want = age_keys_reference(
            &keys0_r,
            keys0_rows,
            &poison_r[..n],
            keys_rows,
            &tkeys,
            &table,
            layers,
            valid,
            window,
            newest,
            side,
        );
        assert_eq!(&got[n..], &poison_r[n..], "{label}: wrote past the keys");
        for i in 0..n {
            let row = (i / d) % keys_rows;
            if row >= valid * tokens {
                assert_eq!(got[i].to_bits(), poison_r[i].to_bits(), "{label}: touched row {row} past the valid slots");
            }
        }
        let (e, i) = worst(&got[..n], &want, 1e-3, 1e-3);
        assert!(e <= 1.0, "{label}: element {i} is {} on the GPU and {} on the CPU", got[i], want[i]);
        // And the temporal term is really there: keys differ from keys0.
        let moved = (0..tokens * d).filter(|&i| (got[i] - keys0_r[i]).abs() > 1e-2).count();
        assert!(moved > tokens * d / 2, "{label}: keys barely differ from keys0 ({moved} moved)");
    }
    // A slot count past the ring is refused with a sentence.
    let bad = AgeKeys {
        keys0: pool.buffer(k0_id),
        keys0_layer_rows: keys0_rows,
        keys: pool.buffer(k_id),
        keys_layer_rows: keys_rows,
        tkeys: pool.buffer(t_id),
        rope: pool.buffer(r_id),
        layers,
        valid: 6,
        window,
        newest: 0,
        side,
    };
    let err = age_keys(&gpu, &stream, &bad).unwrap_err().to_string();
    assert!(err.contains("6 valid slots of a ring of 5"), "{err}");
}

#[test]
fn tensor_core_kernels_have_no_spills() {
    // 255 registers is the attention kernel's budget at 2 blocks per SM; a
    // spill there would cost more than any tuning gains.
    for r in vrseg::gpu::kernels::resource_report() {
        if r.kernel.starts_with("attention") || r.kernel.starts_with("linear") {
            assert_eq!(
                (r.spill_store_bytes, r.spill_load_bytes),
                (0, 0),
                "{} spills on {}: {} bytes stored, {} loaded",
                r.kernel,
                r.arch,
                r.spill_store_bytes,
                r.spill_load_bytes
            );
        }
    }
}

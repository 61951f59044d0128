//! SAM2.1 memory attention (src/models/sam2): one frame's forward through the
//! 4-layer stack at 64 x 64 tokens against a ring of W = 1, 3, 7 memory
//! frames and 64 object-pointer tokens (16 pointers), random weights shaped
//! like the real ones. Throughput is in FLOP (criterion prints it as
//! "elem/s": Gelem/s = GFLOP/s). Each iteration is one eager forward (about
//! 60 launches); the side-by-side with PyTorch, CUDA graphs on both sides,
//! is tools/parity/sam2_parity.py --bench. Beside it: the cross-attention
//! alone at W = 7 with each kernel (the folded 64-wide values on 64- and
//! 128-row blocks, and the 256-wide values of the unfolded projection), and
//! one append to a full ring of 7 with and without the temporal encoding
//! (the re-ageing of every slot's keys).
//!
//!     cargo bench --bench sam2

use std::time::Duration;

use criterion::{Criterion, Throughput};
use cudarc::driver::{sys, CudaStream};
use half::f16;
use vrseg::gpu::{Gpu, PoolPlan, VramPool};
use vrseg::models::sam2::bank::{MemoryBank, MemoryBankPlan};
use vrseg::models::sam2::stack::{MemoryAttention, MemoryAttentionPlan};
use vrseg::models::sam2::weights::MemoryAttentionWeights;
use vrseg::models::sam2::MemoryAttentionConfig;
use vrseg::ops::attention::{self, AttentionJob, AttentionKernel, AttentionScratch, Splits};
use vrseg::selftest::SplitMix64;

const POINTER_TOKENS: usize = 64;
const RING: usize = 7;

fn time_on_gpu(gpu: &Gpu, stream: &CudaStream, iters: u64, mut op: impl FnMut()) -> Duration {
    let flags = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
    let start = gpu.context().new_event(flags).expect("cuEventCreate");
    let end = gpu.context().new_event(flags).expect("cuEventCreate");
    start.record(stream).expect("cuEventRecord");
    for _ in 0..iters {
        op();
    }
    end.record(stream).expect("cuEventRecord");
    end.synchronize().expect("cuEventSynchronize");
    Duration::from_secs_f64(f64::from(start.elapsed_ms(&end).expect("cuEventElapsedTime")) / 1e3)
}

fn bench(c: &mut Criterion, gpu: &Gpu) {
    let config = MemoryAttentionConfig::sam2_1_hiera_t();
    let (t, d, m) = (config.tokens(), config.d_model, config.mem_dim);
    let weights = MemoryAttentionWeights::random(config, 1);
    let mut plan = PoolPlan::new();
    let bank_plan = MemoryBankPlan::new(&mut plan, &config, RING, POINTER_TOKENS).expect("bank plan");
    let stack_plan = MemoryAttentionPlan::new(&mut plan, config).expect("stack plan");
    let inputs = plan.buffer("bench.inputs", 2 * t * d * 2);
    let frame = plan.buffer("bench.frame", t * m * 2);
    let out = plan.buffer("bench.out", t * d * 2);
    let pool = VramPool::reserve(gpu, &plan).expect("VRAM pool for the bench");
    let stream = gpu.new_stream().expect("stream");
    let stack = MemoryAttention::new(gpu, &stream, &pool, stack_plan, &weights).expect("weights");
    let mut rng = SplitMix64::new(2);
    let mut fill = |view: vrseg::gpu::DeviceView| {
        let data: Vec<f16> = (0..view.bytes() / 2).map(|_| f16::from_f32(rng.uniform_f32(-1.7, 1.7))).collect();
        view.upload_blocking(&stream, &data).expect("upload");
    };
    fill(pool.buffer(inputs));
    fill(pool.buffer(frame));
    let curr = pool.buffer(inputs).sub(0, t * d * 2).expect("curr");
    let curr_pos = pool.buffer(inputs).sub(t * d * 2, t * d * 2).expect("curr_pos");
    let (frame, out) = (pool.buffer(frame), pool.buffer(out));

    let mut group = c.benchmark_group("sam2 memory attention 64x64, 64 pointer tokens");
    for window in [1usize, 3, 7] {
        let mut bank = MemoryBank::new(&pool, bank_plan);
        for _ in 0..window {
            stack.append(gpu, &stream, &mut bank, &frame, &frame).expect("append");
        }
        bank.set_object_pointers(gpu, &stream, &frame, &frame, POINTER_TOKENS).expect("pointers");
        group.throughput(Throughput::Elements(config.flops(window, POINTER_TOKENS) as u64));
        group.bench_function(format!("W = {window}"), |b| {
            b.iter_custom(|iters| {
                time_on_gpu(gpu, &stream, iters, || {
                    stack.forward(gpu, &stream, &bank, &curr, &curr_pos, &out).expect("forward")
                })
            })
        });
    }
    group.finish();

    // One append to a full ring, plain and with the temporal encoding.
    let mut group = c.benchmark_group("sam2 append to a full ring of 7");
    for temporal in [false, true] {
        let mut bank = MemoryBank::new(&pool, bank_plan);
        if temporal {
            let tpos: Vec<f32> = (0..RING * m).map(|i| ((i % 13) as f32 - 6.0) / 6.0).collect();
            stack.set_temporal_encoding(&stream, &mut bank, &tpos, RING).expect("temporal encoding");
        }
        for _ in 0..RING {
            stack.append(gpu, &stream, &mut bank, &frame, &frame).expect("append");
        }
        let label = if temporal { "temporal encoding (keys re-aged)" } else { "no temporal encoding" };
        group.bench_function(label, |b| {
            b.iter_custom(|iters| {
                time_on_gpu(gpu, &stream, iters, || {
                    stack.append(gpu, &stream, &mut bank, &frame, &frame).expect("append");
                })
            })
        });
    }
    group.finish();
}

/// Cross-attention of one layer at W = 7 (28,736 keys) with each kernel, on
/// the buffers of its own pool (values 256 wide for the unfolded kernel).
fn bench_cross_attention(c: &mut Criterion, gpu: &Gpu) {
    let (t, d, keys) = (4096usize, attention::HEAD_DIM, 7 * 4096 + POINTER_TOKENS);
    let mut plan = PoolPlan::new();
    let q_id = plan.buffer("bench.q", t * d * 2);
    let k_id = plan.buffer("bench.k", keys * d * 2);
    let v_id = plan.buffer("bench.v", keys * d * 2);
    let o_id = plan.buffer("bench.out", t * d * 2);
    let (po, pl) = AttentionScratch::bytes(t, 8);
    let po_id = plan.buffer("bench.partial_out", po);
    let pl_id = plan.buffer("bench.partial_lse", pl);
    let pool = VramPool::reserve(gpu, &plan).expect("VRAM pool for the bench");
    let stream = gpu.new_stream().expect("stream");
    attention::prepare(gpu).expect("attention set-up");
    let mut rng = SplitMix64::new(3);
    for id in [q_id, k_id, v_id] {
        let view = pool.buffer(id);
        let data: Vec<f16> = (0..view.bytes() / 2).map(|_| f16::from_f32(rng.uniform_f32(-1.0, 1.0))).collect();
        view.upload_blocking(&stream, &data).expect("upload");
    }
    let scratch = AttentionScratch { partial_out: pool.buffer(po_id), partial_lse: pool.buffer(pl_id), max_splits: 8 };
    let mut group = c.benchmark_group("sam2 cross-attention, one layer at W = 7");
    for kernel in [AttentionKernel::V64Rows128, AttentionKernel::V64Rows64, AttentionKernel::D256] {
        let dv = kernel.dv();
        let job = AttentionJob {
            kernel,
            q: pool.buffer(q_id),
            ldq: d,
            k: pool.buffer(k_id),
            ldk: d,
            v: pool.buffer(v_id),
            ldv: dv,
            nq: t,
            nk: keys,
            out: pool.buffer(o_id),
            ldo: dv,
            scale: 1.0 / 16.0,
        };
        let flops = 2.0 * t as f64 * keys as f64 * (d + dv) as f64;
        group.throughput(Throughput::Elements(flops as u64));
        group.bench_function(format!("{kernel:?}"), |b| {
            b.iter_custom(|iters| {
                time_on_gpu(gpu, &stream, iters, || {
                    attention::attention(gpu, &stream, &job, &scratch, Splits::Auto).expect("attention")
                })
            })
        });
    }
    group.finish();
}

fn main() {
    let Some(gpu) = vrseg::gpu::gpu_for_tests("bench sam2") else {
        return;
    };
    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    bench(&mut c, &gpu);
    bench_cross_attention(&mut c, &gpu);
    c.final_summary();
}

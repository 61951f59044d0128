//! Kernel benchmarks on the GPU, each beside the memory floor it is bounded by.
//! One module per op family. Every GPU bench synchronises inside
//! `iter_custom`, times with CUDA events, and reports `Throughput::Bytes`
//! (bytes read + bytes written) so the floor is one division away.
//!
//! The floor: a device-to-device copy (`cuMemcpyDtoDAsync`) of the same
//! bytes, measured in the same run on the same GPU.
//!
//!     cargo bench --bench kernels            # here, with a GPU
//!     bundle/run.sh bench                    # on the GPU machine (tools/gpu-bundle.sh)

use std::time::Duration;

use criterion::{Criterion, Throughput};
use cudarc::driver::{sys, CudaStream};
use vrseg::gpu::{Gpu, PoolPlan, VramPool};

/// Times `iters` enqueues of `op` on `stream` with CUDA events.
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
    let ms = start.elapsed_ms(&end).expect("cuEventElapsedTime");
    Duration::from_secs_f64(f64::from(ms) / 1e3)
}

mod memory {
    use super::*;
    use vrseg::ops::memory;

    /// 512 MiB: far beyond the 50 MB L2, so the numbers are DRAM numbers.
    const BYTES: usize = 512 << 20;

    pub fn bench(c: &mut Criterion, gpu: &Gpu) {
        let mut plan = PoolPlan::new();
        let a = plan.buffer("bench.a", BYTES);
        let b = plan.buffer("bench.b", BYTES);
        let pool = VramPool::reserve(gpu, &plan).expect("VRAM pool for the bench");
        let stream = gpu.new_stream().expect("stream");
        let (va, vb) = (pool.buffer(a), pool.buffer(b));

        let mut group = c.benchmark_group("memory");
        group.throughput(Throughput::Bytes((2 * BYTES) as u64));
        group.bench_function("floor: cuMemcpyDtoD 512 MiB (read+write)", |bench| {
            bench.iter_custom(|iters| {
                time_on_gpu(gpu, &stream, iters, || {
                    // SAFETY: both ranges are BYTES long, inside the live pool, and disjoint.
                    unsafe { cudarc::driver::result::memcpy_dtod_async(vb.ptr(), va.ptr(), BYTES, stream.cu_stream()) }
                        .expect("copy");
                })
            })
        });
        // A fill writes only: count the written bytes.
        group.throughput(Throughput::Bytes(BYTES as u64));
        group.bench_function("fill_u32 512 MiB (write)", |bench| {
            bench.iter_custom(|iters| {
                time_on_gpu(gpu, &stream, iters, || {
                    memory::fill(gpu, &stream, &va, BYTES / 4, 0xdead_beefu32).expect("fill")
                })
            })
        });
        group.bench_function("floor: cuMemsetD8 512 MiB (write)", |bench| {
            bench.iter_custom(|iters| {
                time_on_gpu(gpu, &stream, iters, || {
                    // SAFETY: the range is BYTES long inside the live pool.
                    unsafe { cudarc::driver::result::memset_d8_async(va.ptr(), 0x5a, BYTES, stream.cu_stream()) }
                        .expect("memset");
                })
            })
        });
        group.finish();
    }
}

fn main() {
    let Some(gpu) = vrseg::gpu::gpu_for_tests("bench kernels") else {
        return;
    };
    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    memory::bench(&mut c, &gpu);
    c.final_summary();
}

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
            bench.iter_custom(|iters| copy_floor(gpu, &stream, &[va], &vb, BYTES, iters))
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

/// A DtoD copy of `bytes_moved / 2` bytes between rotating buffers: the
/// floor for an op that reads and writes `bytes_moved` in all.
fn copy_floor(
    gpu: &Gpu,
    stream: &CudaStream,
    src: &[vrseg::gpu::DeviceView],
    dst: &vrseg::gpu::DeviceView,
    bytes: usize,
    iters: u64,
) -> Duration {
    let mut i = 0usize;
    time_on_gpu(gpu, stream, iters, || {
        let s = &src[i % src.len()];
        i += 1;
        // SAFETY: both ranges are `bytes` long, inside the live pool, and disjoint.
        unsafe { cudarc::driver::result::memcpy_dtod_async(dst.ptr(), s.ptr(), bytes, stream.cu_stream()) }
            .expect("copy");
    })
}

mod preprocess {
    use super::*;
    use vrseg::ops::letterbox::{eye_rects, letterbox, LetterboxGeometry, LetterboxJob, YuvMatrix, YuvToRgb};
    use vrseg::video::layout::StereoLayout;
    use vrseg::video::nvdec::FrameLayout;

    /// Frames the bench rotates through: 8 x 50 MB, far beyond the 50 MB L2,
    /// so every launch reads its frame from DRAM as a decoded frame would be.
    const RING: usize = 8;

    pub fn bench(c: &mut Criterion, gpu: &Gpu) {
        let layout = FrameLayout::new(8192, 4096, 8);
        let eyes = eye_rects(StereoLayout::Sbs, 8192, 4096);
        let geometry = LetterboxGeometry::ultralytics(eyes[0].w, eyes[0].h, 640, 640);
        let out_bytes = 2 * 3 * 640 * 640 * 2;
        let mut plan = PoolPlan::new();
        let frames: Vec<_> = (0..RING).map(|i| plan.buffer(format!("bench.frame{i}"), layout.slot_bytes())).collect();
        let out = plan.buffer("bench.tensor", out_bytes.max(layout.slot_bytes()));
        let pool = VramPool::reserve(gpu, &plan).expect("VRAM pool for the bench");
        let stream = gpu.new_stream().expect("stream");
        let views: Vec<_> = frames.iter().map(|id| pool.buffer(*id)).collect();
        for (i, v) in views.iter().enumerate() {
            vrseg::ops::memory::pattern_u32(gpu, &stream, v, v.bytes() / 4, i as u32).expect("pattern");
        }
        let out = pool.buffer(out);
        let colour = YuvToRgb::new(YuvMatrix::Bt709, false, 8);
        // Bytes moved: the NV12 frame read once, the FP16 tensor written once.
        let moved = layout.packed_bytes() + out_bytes;

        let mut group = c.benchmark_group("preprocess");
        group.throughput(Throughput::Bytes(moved as u64));
        group.bench_function("floor: cuMemcpyDtoD of the same bytes (NV12 8192x4096 + 2x3x640x640 f16)", |bench| {
            bench.iter_custom(|iters| copy_floor(gpu, &stream, &views, &out, moved / 2, iters))
        });
        group.bench_function("letterbox_nv12_f16 8192x4096 SBS -> 2x640x640", |bench| {
            bench.iter_custom(|iters| {
                let mut i = 0usize;
                time_on_gpu(gpu, &stream, iters, || {
                    let frame = [views[i % RING]];
                    i += 1;
                    let job =
                        LetterboxJob { frames: &frame, layout, bit_depth: 8, eyes: &eyes, colour, geometry, out: &out };
                    letterbox(gpu, &stream, &job).expect("letterbox");
                })
            })
        });
        group.finish();
    }
}

mod postprocess {
    use super::*;
    use vrseg::ops::letterbox::{eye_rects, LetterboxGeometry};
    use vrseg::ops::yolo_seg::{
        yolo_seg_postprocess, MatteTarget, PostprocessConfig, YoloSegBuffers, YoloSegJob, YoloSegShape,
    };
    use vrseg::selftest::SplitMix64;
    use vrseg::testing::fill_background_head;
    use vrseg::video::layout::StereoLayout;

    /// Heads with `hot` person boxes of 100-300 px per image, scores elsewhere below 0.2.
    fn heads(shape: &YoloSegShape, hot: usize) -> (Vec<f32>, Vec<f32>) {
        let mut rng = SplitMix64::new(7);
        let (a, nc, nm) = (shape.anchors, shape.classes, shape.coefficients);
        let rows = 4 + nc + nm;
        let mut out0 = vec![0f32; shape.output0_elements()];
        for b in 0..shape.batch {
            let head = &mut out0[b * rows * a..(b + 1) * rows * a];
            fill_background_head(&mut rng, head, shape, 0.2);
            for _ in 0..hot {
                let anchor = rng.below(a as u64) as usize;
                head[2 * a + anchor] = rng.uniform_f32(100.0, 300.0);
                head[3 * a + anchor] = rng.uniform_f32(100.0, 300.0);
                head[4 * a + anchor] = rng.uniform_f32(0.5, 0.99);
            }
        }
        let protos = (0..shape.protos_elements()).map(|_| rng.uniform_f32(-1.0, 1.0)).collect();
        (out0, protos)
    }

    pub fn bench(c: &mut Criterion, gpu: &Gpu) {
        let (w, h) = (8192u32, 4096u32);
        let eyes = eye_rects(StereoLayout::Sbs, w, h);
        let geometry = LetterboxGeometry::ultralytics(eyes[0].w, eyes[0].h, 640, 640);
        let shape = YoloSegShape::yolo_seg(2, 640);
        let config = PostprocessConfig::default();
        let matte_bytes = (w * h) as usize;
        let mut plan = PoolPlan::new();
        let out0_id = plan.buffer("bench.output0", shape.output0_elements() * 4);
        let protos_id = plan.buffer("bench.output1", shape.protos_elements() * 4);
        let matte_id = plan.buffer("bench.matte", matte_bytes);
        let src_id = plan.buffer("bench.floor_src", matte_bytes);
        let buffers = YoloSegBuffers::plan(&mut plan, shape, config.max_det);
        let pool = VramPool::reserve(gpu, &plan).expect("VRAM pool for the bench");
        let stream = gpu.new_stream().expect("stream");
        let (o, p, m) = (pool.buffer(out0_id), pool.buffer(protos_id), pool.buffer(matte_id));

        let mut group = c.benchmark_group("postprocess");
        // Bytes moved: the 8-bit matte written (heads and prototypes, 2 x 3.2 MB, are read too).
        let moved = matte_bytes + shape.output0_elements() * 4 + shape.protos_elements() * 4;
        group.throughput(Throughput::Bytes(moved as u64));
        group.bench_function("floor: cuMemcpyDtoD of the same bytes (matte 8192x4096 u8 + heads)", |bench| {
            bench.iter_custom(|iters| copy_floor(gpu, &stream, &[pool.buffer(src_id)], &m, moved / 2, iters))
        });
        for hot in [0usize, 3, 37] {
            let (out0, protos) = heads(&shape, hot);
            o.upload_blocking(&stream, &out0).expect("upload");
            p.upload_blocking(&stream, &protos).expect("upload");
            let job = YoloSegJob {
                output0: &o,
                protos: &p,
                config: &config,
                geometry,
                eyes: &eyes,
                matte: Some(MatteTarget {
                    frames: &m,
                    width: w,
                    height: h,
                    pitch: w as usize,
                    frame_stride: matte_bytes,
                }),
            };
            yolo_seg_postprocess(gpu, &stream, &pool, &buffers, &job).expect("postprocess");
            let kept = vrseg::ops::yolo_seg::download_detections(&stream, &pool, &buffers).expect("detections");
            let kept: Vec<usize> = kept.iter().map(Vec::len).collect();
            group.bench_function(format!("yolo_seg NMS + 160x160 -> 2x4096x4096 matte, {kept:?} kept"), |bench| {
                bench.iter_custom(|iters| {
                    time_on_gpu(gpu, &stream, iters, || {
                        yolo_seg_postprocess(gpu, &stream, &pool, &buffers, &job).expect("postprocess")
                    })
                })
            });
        }
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
    preprocess::bench(&mut c, &gpu);
    postprocess::bench(&mut c, &gpu);
    c.final_summary();
}

//! Throughput measurements behind `vrseg bench`. Benchmarks, not tests: they
//! report what they measured and never judge it; BENCHMARKS.md records the
//! figures next to their anchors.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::gpu::Gpu;
use crate::video::decode::{decode_file_parallel, DecodeError, HostCopy};
use crate::video::parallel::ParallelOptions;

/// CPU time this process has used so far (all threads, user + system),
/// including the NVIDIA driver's own threads.
pub fn process_cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct we pass; zero is a valid
    // initial value for it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF is valid and `usage` is a valid out-pointer.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

/// One whole-file decode, timed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DecodePass {
    pub frames: u64,
    /// From opening the file to the last frame in its pool slot.
    pub wall_s: f64,
    /// From opening the file to the first frame in its slot: demuxer and
    /// decoder set-up plus the first picture.
    pub first_frame_s: f64,
    /// frames / wall_s.
    pub fps: f64,
    /// Frames after the first over the time after the first: the session's
    /// decode rate without its start-up.
    pub steady_fps: f64,
    /// CPU seconds used during the pass / wall seconds (1.0 = one core busy).
    pub cpu_cores: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DecodeBench {
    pub tool: &'static str,
    pub version: &'static str,
    pub path: String,
    pub gpu: String,
    pub width: u32,
    pub height: u32,
    /// NVDEC sessions that decoded each pass (1: the plain single-session path).
    pub decoders: usize,
    /// Why fewer sessions ran than were asked for, when so.
    pub decoders_note: Option<String>,
    /// Chunks between keyframes, reorder window places and the most frames
    /// that waited there (parallel decode only; 0 otherwise).
    pub chunks: usize,
    pub window_slots: usize,
    pub window_peak: usize,
    /// NVDEC surfaces over all sessions, estimated.
    pub surface_bytes: u64,
    pub passes: Vec<DecodePass>,
    pub best_fps: f64,
    pub median_fps: f64,
    pub best_steady_fps: f64,
    pub median_steady_fps: f64,
    pub median_cpu_cores: f64,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Decodes `path` `passes` times on `decoders` NVDEC sessions per pass
/// (None: one per engine; 1: one session, as the single-session pipeline
/// does, frames into a two-slot VRAM pool and nowhere else; more: split at
/// keyframes, frames handed on in presentation order through a reorder
/// window of `window` slots, None: the default).
pub fn decode_throughput(
    gpu: &Gpu,
    path: &Path,
    passes: usize,
    decoders: Option<usize>,
    window: Option<usize>,
) -> Result<DecodeBench, DecodeError> {
    let mut results = Vec::with_capacity(passes);
    let mut size = (0, 0);
    let mut last_summary = None;
    for _ in 0..passes.max(1) {
        let cpu0 = process_cpu_time();
        let t0 = Instant::now();
        let mut first: Option<Instant> = None;
        let mut last = t0;
        let options = ParallelOptions { decoders, window, ..Default::default() };
        let summary = decode_file_parallel(gpu, path, &options, HostCopy::None, &mut |_, frame| {
            // `deliver` has synchronised the copy into the slot by now.
            let now = Instant::now();
            first.get_or_insert(now);
            last = now;
            size = (frame.layout.width, frame.layout.height);
            Ok(())
        })?;
        let wall = last.duration_since(t0).as_secs_f64().max(1e-9);
        let cpu = process_cpu_time().saturating_sub(cpu0).as_secs_f64();
        let first_s = first.map_or(wall, |f| f.duration_since(t0).as_secs_f64());
        let steady = if summary.frames > 1 { (summary.frames - 1) as f64 / (wall - first_s).max(1e-9) } else { 0.0 };
        results.push(DecodePass {
            frames: summary.frames,
            wall_s: wall,
            first_frame_s: first_s,
            fps: summary.frames as f64 / wall,
            steady_fps: steady,
            cpu_cores: cpu / wall,
        });
        last_summary = Some(summary);
    }
    let summary = last_summary.expect("at least one pass ran");
    let parallel = summary.parallel.as_ref();
    let fps: Vec<f64> = results.iter().map(|p| p.fps).collect();
    let steady: Vec<f64> = results.iter().map(|p| p.steady_fps).collect();
    Ok(DecodeBench {
        tool: "vrseg",
        version: env!("CARGO_PKG_VERSION"),
        path: path.display().to_string(),
        gpu: gpu.properties().name.clone(),
        width: size.0,
        height: size.1,
        decoders: summary.decoders,
        decoders_note: summary.decoders_note.clone(),
        chunks: parallel.map_or(0, |p| p.sessions.chunks),
        window_slots: parallel.map_or(0, |p| p.sessions.window_slots),
        window_peak: parallel.map_or(0, |p| p.sessions.window_peak),
        surface_bytes: parallel.map_or(0, |p| p.surface_bytes),
        best_fps: fps.iter().copied().fold(0.0, f64::max),
        median_fps: median(fps),
        best_steady_fps: steady.iter().copied().fold(0.0, f64::max),
        median_steady_fps: median(steady),
        median_cpu_cores: median(results.iter().map(|p| p.cpu_cores).collect()),
        passes: results,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
    }

    #[test]
    fn cpu_time_moves_forward_when_busy() {
        let before = process_cpu_time();
        let mut x = 0u64;
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        assert!(process_cpu_time() > before, "getrusage reported no CPU time after 30 ms of spinning");
    }
}

/// `vrseg bench engine`: forwards per second of a native plan, replayed as
/// its CUDA graph, on a random input.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EngineBench {
    pub plan: String,
    pub gpu: String,
    pub batch: usize,
    pub input: Vec<usize>,
    pub launches: usize,
    /// Arithmetic per image (2 per multiply-add).
    pub gflop_per_image: f64,
    /// Median over rounds of the time per forward (one batch).
    pub ms_per_batch: f64,
    pub best_ms_per_batch: f64,
    pub images_per_s: f64,
    pub tflops: f64,
    /// Per node, most expensive first (with `--layers`): one eager forward
    /// with events around each launch.
    pub layers: Vec<crate::engine::native::NodeTime>,
}

pub fn engine_throughput(gpu: &Gpu, path: &Path, rounds: usize, layers: bool) -> anyhow::Result<EngineBench> {
    use crate::engine::backend::Backend;
    use crate::engine::native::{plan_flop, NativeEngine, StandaloneBuffers};
    use crate::engine::plan::Plan;
    use crate::gpu::error::CheckDriver;
    let plan = Plan::open(path)?;
    let buffers = StandaloneBuffers::new(&plan);
    let pool = crate::gpu::VramPool::reserve(gpu, &buffers.pool)?;
    let stream = gpu.new_stream()?;
    let mut engine = NativeEngine::load(gpu, &stream, &plan, &pool, buffers.engine)?;
    let inputs: Vec<_> = buffers.inputs.iter().map(|&id| pool.buffer(id)).collect();
    let outputs: Vec<_> = buffers.outputs.iter().map(|&id| pool.buffer(id)).collect();
    let mut rng = crate::selftest::SplitMix64::new(1);
    for (view, info) in inputs.iter().zip(engine.inputs()) {
        let data: Vec<f32> = (0..info.shape.iter().product::<usize>()).map(|_| rng.uniform_f32(0.0, 1.0)).collect();
        crate::engine::backend::upload_as(view, &stream, &data, info.dtype)?;
    }
    let launches = engine.launches_per_forward(&inputs, &outputs)?;
    // Warm-up: capture, then enough replays to reach steady clocks.
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(500) {
        engine.enqueue(&stream, &inputs, &outputs)?;
        stream.synchronize().check("cuStreamSynchronize")?;
    }
    // Rounds of back-to-back replays, each about 200 ms.
    let probe = Instant::now();
    engine.enqueue(&stream, &inputs, &outputs)?;
    stream.synchronize().check("cuStreamSynchronize")?;
    let per = probe.elapsed().as_secs_f64().max(1e-5);
    let replays = ((0.2 / per) as usize).clamp(5, 5000);
    let timing = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
    let mut per_batch = Vec::with_capacity(rounds);
    for _ in 0..rounds.max(1) {
        let start = stream.record_event(timing).check("cuEventRecord")?;
        for _ in 0..replays {
            engine.enqueue(&stream, &inputs, &outputs)?;
        }
        let end = stream.record_event(timing).check("cuEventRecord")?;
        end.synchronize().check("cuEventSynchronize")?;
        per_batch.push(start.elapsed_ms(&end).check("cuEventElapsedTime")? as f64 / replays as f64);
    }
    per_batch.sort_by(f64::total_cmp);
    let median = per_batch[per_batch.len() / 2];
    let batch = plan.graph.batch;
    let flop = plan_flop(&plan.graph);
    let mut layer_times = Vec::new();
    if layers {
        layer_times = engine.profile(&stream, &inputs, &outputs)?;
        layer_times.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    }
    Ok(EngineBench {
        plan: path.display().to_string(),
        gpu: format!("{} ({})", gpu.properties().name, gpu.properties().sm()),
        batch,
        input: engine.inputs().first().map(|t| t.shape.clone()).unwrap_or_default(),
        launches,
        gflop_per_image: flop / batch as f64 / 1e9,
        ms_per_batch: median,
        best_ms_per_batch: per_batch[0],
        images_per_s: batch as f64 / (median / 1e3),
        tflops: flop / (median / 1e3) / 1e12,
        layers: layer_times,
    })
}

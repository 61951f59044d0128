//! Throughput measurements behind `vrseg bench`. Benchmarks, not tests: they
//! report what they measured and never judge it; BENCHMARKS.md records the
//! figures next to their anchors.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::gpu::Gpu;
use crate::video::decode::{decode_file, DecodeError, HostCopy};

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

/// Decodes `path` `passes` times with one NVDEC session per pass (as a
/// pipeline does), frames into a two-slot VRAM pool and nowhere else.
pub fn decode_throughput(gpu: &Gpu, path: &Path, passes: usize) -> Result<DecodeBench, DecodeError> {
    let mut results = Vec::with_capacity(passes);
    let mut size = (0, 0);
    for _ in 0..passes.max(1) {
        let cpu0 = process_cpu_time();
        let t0 = Instant::now();
        let mut first: Option<Instant> = None;
        let mut last = t0;
        let summary = decode_file(gpu, path, HostCopy::None, &mut |_, frame| {
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
    }
    let fps: Vec<f64> = results.iter().map(|p| p.fps).collect();
    let steady: Vec<f64> = results.iter().map(|p| p.steady_fps).collect();
    Ok(DecodeBench {
        tool: "vrseg",
        version: env!("CARGO_PKG_VERSION"),
        path: path.display().to_string(),
        gpu: gpu.properties().name.clone(),
        width: size.0,
        height: size.1,
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

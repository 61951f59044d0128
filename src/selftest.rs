//! `vrseg selftest`: proves on the user's own GPU that the embedded kernels
//! load and compute what their CPU references compute, that the VRAM pool
//! hands out disjoint buffers, and that a frame loop allocates nothing.
//! The GPU test suite runs the same checks on more sizes.

use std::time::{Duration, Instant};

use cudarc::driver::CudaStream;

use crate::gpu::error::CheckDriver;
use crate::gpu::nvtx::{self, Stage};
use crate::gpu::{device_allocation_count, DeviceView, Gpu, GpuError, Module, PoolPlan, VramPool};
use crate::ops::memory::{self, FillElement};

/// A small deterministic generator (SplitMix64) so the self-test needs no
/// dependency and every run can print the seed that reproduces it.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn fill_bytes(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    /// Uniform in `0..n` (n > 0); the tiny modulo bias is irrelevant here.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `[lo, hi)` with 24 bits of resolution.
    pub fn uniform_f32(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// The outcome of one check, with what it compared.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckOutcome {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

impl CheckOutcome {
    fn new(name: impl Into<String>, passed: bool, detail: impl Into<String>) -> Self {
        CheckOutcome { name: name.into(), passed, detail: detail.into() }
    }
}

/// Poisons `view` with random bytes, fills `count` elements of `T` starting
/// at byte `offset` (which may be unaligned to 16), and compares the whole
/// view with the CPU reference: the range holds `value`, every other byte
/// still holds its poison. Tolerance: exact.
pub fn check_fill<T: FillElement + PartialEq + std::fmt::Debug>(
    gpu: &Gpu,
    stream: &CudaStream,
    view: &DeviceView,
    offset: usize,
    count: usize,
    value: T,
    rng: &mut SplitMix64,
) -> Result<CheckOutcome, GpuError> {
    let name = format!("{} offset {offset} count {count}", T::KERNEL.symbol());
    let elem = std::mem::size_of::<T>();
    let end = offset + count * elem;
    let mut poison = vec![0u8; view.bytes()];
    rng.fill_bytes(&mut poison);
    view.upload_blocking(stream, &poison)?;

    let target = view.sub(offset, count * elem)?;
    memory::fill(gpu, stream, &target, count, value)?;
    let mut got = vec![0u8; view.bytes()];
    view.download_blocking(stream, &mut got)?;

    let mut expected = poison;
    for chunk in expected[offset..end].chunks_exact_mut(elem) {
        chunk.copy_from_slice(bytemuck::bytes_of(&value));
    }
    Ok(match got.iter().zip(&expected).position(|(g, e)| g != e) {
        None => CheckOutcome::new(name, true, format!("{} bytes exact", view.bytes())),
        Some(i) => CheckOutcome::new(
            name,
            false,
            format!(
                "byte {i} ({}): got {:#04x}, expected {:#04x}",
                if (offset..end).contains(&i) { "inside the fill" } else { "outside the fill: guard overwritten" },
                got[i],
                expected[i]
            ),
        ),
    })
}

/// Writes a different hash pattern into each view, then reads every view
/// back: if two pool buffers overlapped, one pattern would be damaged.
pub fn check_disjoint_patterns(gpu: &Gpu, stream: &CudaStream, views: &[DeviceView]) -> Result<CheckOutcome, GpuError> {
    for (i, v) in views.iter().enumerate() {
        memory::pattern_u32(gpu, stream, v, v.len_of::<u32>(), 0x5eed_0000 + i as u32)?;
    }
    for (i, v) in views.iter().enumerate() {
        let count = v.len_of::<u32>();
        let mut got = vec![0u32; count];
        v.download_blocking(stream, &mut got)?;
        let seed = 0x5eed_0000 + i as u32;
        if let Some(j) = (0..count).find(|&j| got[j] != memory::pattern_word(seed, j)) {
            return Ok(CheckOutcome::new(
                "pool buffers are disjoint",
                false,
                format!(
                    "`{}` word {j}: got {:#010x}, expected {:#010x}",
                    v.name(),
                    got[j],
                    memory::pattern_word(seed, j)
                ),
            ));
        }
    }
    Ok(CheckOutcome::new("pool buffers are disjoint", true, format!("{} buffers patterned and read back", views.len())))
}

/// Simulates `frames` frames through a ring of pool slots: acquire a slot,
/// write the frame's pattern into it, sample-check some frames, release it.
/// Passes when every sampled frame is right and no device allocation
/// happened in the loop (the process-wide counter stays flat).
pub fn check_frame_loop(
    gpu: &Gpu,
    stream: &CudaStream,
    pool: &VramPool,
    slots: crate::gpu::SlotsId,
    frames: usize,
) -> Result<CheckOutcome, GpuError> {
    let ring = pool.slot_ring(slots)?;
    let before = device_allocation_count();
    let slot_words = pool.slot(slots, 0).len_of::<u32>();
    // One host buffer for the sampled read-backs, allocated before the loop.
    let mut readback = vec![0u32; slot_words];
    let mut sampled = 0;
    for frame in 0..frames {
        let slot = ring.acquire(stream)?;
        let view = slot.view();
        memory::pattern_u32(gpu, stream, &view, slot_words, frame as u32)?;
        if frame % 97 == 0 || frame + 1 == frames {
            view.download_blocking(stream, &mut readback)?;
            if let Some(j) = (0..slot_words).find(|&j| readback[j] != memory::pattern_word(frame as u32, j)) {
                return Ok(CheckOutcome::new(
                    "frame loop",
                    false,
                    format!("frame {frame} slot {} word {j} wrong", slot.index()),
                ));
            }
            sampled += 1;
        }
        slot.release(stream)?;
    }
    stream.synchronize().check("cuStreamSynchronize")?;
    let after = device_allocation_count();
    Ok(CheckOutcome::new(
        format!("{frames} frames through {} pool slots", ring.capacity()),
        after == before,
        format!("device allocations before {before}, after {after}; {sampled} frames read back and correct"),
    ))
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SelfTestReport {
    pub gpu: String,
    pub seed: u64,
    pub module_load_ms: f64,
    pub checks: Vec<CheckOutcome>,
    pub wall_ms: f64,
}

impl SelfTestReport {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }
}

/// The whole self-test on one GPU.
pub fn run(gpu: &Gpu, seed: u64, frames: usize) -> Result<SelfTestReport, GpuError> {
    let _range = nvtx::range(Stage::SelfTest);
    let started = Instant::now();
    let mut rng = SplitMix64::new(seed);

    let load_started = Instant::now();
    {
        let _r = nvtx::range(Stage::ModuleLoad);
        gpu.preload(Module::ALL)?;
    }
    let module_load = load_started.elapsed();

    // Awkward sizes: a prime number of bytes, and 1080p NV12 frames (1.5 B/px).
    let mut plan = PoolPlan::new();
    let scratch = plan.buffer("selftest.scratch", 1_048_573);
    let second = plan.buffer("selftest.second", 65_537 * 4);
    let frames_id = plan.slots("selftest.frames", 1920 * 1080 * 3 / 2, 4);
    let pool = {
        let _r = nvtx::range(Stage::PoolReserve);
        VramPool::reserve(gpu, &plan)?
    };
    let stream = gpu.new_stream()?;

    let mut checks = Vec::new();
    let view = pool.buffer(scratch);
    for (offset, count) in [(0usize, 1usize), (3, 17), (1, 1_000_003), (7, 261_000)] {
        checks.push(check_fill::<u8>(gpu, &stream, &view, offset, count.min(view.bytes() - offset), 0xa5, &mut rng)?);
    }
    for (offset, count) in [(2usize, 500_001usize), (14, 31)] {
        checks.push(check_fill::<u16>(gpu, &stream, &view, offset, count, 0xbeef, &mut rng)?);
    }
    for (offset, count) in [(4usize, 262_139usize), (12, 5)] {
        checks.push(check_fill::<u32>(gpu, &stream, &view, offset, count, 0xdead_beef, &mut rng)?);
    }
    let mut views = vec![pool.buffer(scratch), pool.buffer(second)];
    views.extend((0..4).map(|i| pool.slot(frames_id, i)));
    checks.push(check_disjoint_patterns(gpu, &stream, &views)?);
    checks.push(check_frame_loop(gpu, &stream, &pool, frames_id, frames)?);

    Ok(SelfTestReport {
        gpu: format!("{} ({})", gpu.properties().name, gpu.properties().sm()),
        seed,
        module_load_ms: ms(module_load),
        checks,
        wall_ms: ms(started.elapsed()),
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_is_deterministic_and_fills_partial_words() {
        let mut a = SplitMix64::new(1);
        let mut b = SplitMix64::new(1);
        assert_eq!(a.next_u64(), b.next_u64());
        let mut buf = [0u8; 13];
        a.fill_bytes(&mut buf);
        assert!(buf.iter().any(|&x| x != 0));
    }
}

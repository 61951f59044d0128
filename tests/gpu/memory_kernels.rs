//! kernels/memory.cu against its CPU references. Tolerance: exact (integer
//! fills and hashes). Every output buffer is poisoned with random bytes first,
//! and the bytes around the written range must keep their poison.

use vrseg::gpu::{GpuError, PoolPlan, VramPool};
use vrseg::ops::memory::{self, FillElement};
use vrseg::selftest::{check_fill, SplitMix64};

use crate::{gpu_or_skip, test_seed};

/// Counts (elements) chosen to hit every path of the fill kernels: empty,
/// below one 16-byte vector, exactly one, one more, primes, and more elements
/// than one grid-stride pass of the whole GPU covers.
const COUNTS: &[usize] = &[0, 1, 3, 15, 16, 17, 31, 255, 257, 4_099, 65_537, 1_000_003];

fn fill_case<T: FillElement + PartialEq + std::fmt::Debug>(value_of: impl Fn(u64) -> T) {
    let gpu = gpu_or_skip!();
    let mut rng = SplitMix64::new(test_seed(std::any::type_name::<T>()));
    let elem = std::mem::size_of::<T>();
    let mut plan = PoolPlan::new();
    // 16 bytes of slack on each side of the largest fill, so guards exist.
    let buf = plan.buffer("test.fill", (1_000_003 + 64) * elem);
    let pool = VramPool::reserve(&gpu, &plan).unwrap();
    let stream = gpu.new_stream().unwrap();
    let view = pool.buffer(buf);
    for &count in COUNTS {
        // Offsets that are multiples of the element size but not of 16 bytes.
        for offset_elems in [0usize, 1, 3, 7] {
            let offset = offset_elems * elem;
            let value = value_of(rng.next_u64());
            let outcome = check_fill(&gpu, &stream, &view, offset, count, value, &mut rng).unwrap();
            assert!(outcome.passed, "{}: {}", outcome.name, outcome.detail);
        }
    }
}

#[test]
fn fill_u8_matches_cpu_reference() {
    fill_case::<u8>(|r| r as u8);
}

#[test]
fn fill_u16_matches_cpu_reference() {
    fill_case::<u16>(|r| r as u16);
}

#[test]
fn fill_u32_matches_cpu_reference() {
    fill_case::<u32>(|r| r as u32);
}

#[test]
fn pattern_u32_matches_cpu_reference() {
    let gpu = gpu_or_skip!();
    let mut rng = SplitMix64::new(test_seed("pattern_u32"));
    let mut plan = PoolPlan::new();
    let buf = plan.buffer("test.pattern", 1_000_003 * 4 + 256);
    let pool = VramPool::reserve(&gpu, &plan).unwrap();
    let stream = gpu.new_stream().unwrap();
    let view = pool.buffer(buf);
    for count in [1usize, 33, 1_000_003] {
        let seed = rng.next_u64() as u32;
        let mut poison = vec![0u8; view.bytes()];
        rng.fill_bytes(&mut poison);
        view.upload_blocking(&stream, &poison).unwrap();
        memory::pattern_u32(&gpu, &stream, &view, count, seed).unwrap();
        let mut got = vec![0u32; view.len_of::<u32>()];
        view.download_blocking(&stream, &mut got).unwrap();
        let poison_words: &[u32] = bytemuck::cast_slice(&poison[..got.len() * 4]);
        for (i, (&g, &p)) in got.iter().zip(poison_words).enumerate() {
            let expected = if i < count { memory::pattern_word(seed, i) } else { p };
            assert_eq!(g, expected, "count {count} seed {seed:#x}: word {i}: got {g:#010x}, expected {expected:#010x}");
        }
    }
}

#[test]
fn launch_rejects_a_view_too_small_or_misaligned() {
    let gpu = gpu_or_skip!();
    let mut plan = PoolPlan::new();
    let buf = plan.buffer("test.small", 100);
    let pool = VramPool::reserve(&gpu, &plan).unwrap();
    let stream = gpu.new_stream().unwrap();
    let view = pool.buffer(buf);
    match memory::fill::<u32>(&gpu, &stream, &view, 26, 0) {
        Err(GpuError::BufferTooSmall { buffer, have: 100, need: 104, .. }) => assert_eq!(buffer, "test.small"),
        other => panic!("expected BufferTooSmall, got {other:?}"),
    }
    let odd = view.sub(1, 8).unwrap();
    assert!(matches!(memory::fill::<u32>(&gpu, &stream, &odd, 1, 0), Err(GpuError::InvalidLaunch { .. })));
}

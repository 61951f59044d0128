//! `ops::convert` (FP16 <-> FP32 on kernels/engine_ops.cu's `tensor_map`)
//! against `convert_reference` on random values of awkward counts (1, odd,
//! primes, more than one grid-stride pass of the GPU) at offsets that are
//! not 16-byte aligned, every pair of types. Values mix ordinary ones,
//! FP16 subnormals, values that overflow FP16, signed zeros and infinities.
//! The destination is poisoned with random bytes first and must be fully
//! overwritten, with a guard after it untouched. Tolerance: exact (bit for
//! bit), NaN inputs excepted, which must stay NaN.

use vrseg::engine::backend::DType;
use vrseg::gpu::{GpuError, PoolPlan, VramPool};
use vrseg::ops::convert::{convert_elements, convert_reference, ConvertJob};
use vrseg::selftest::SplitMix64;

use crate::{gpu_or_skip, test_seed};

const COUNTS: &[usize] = &[1, 3, 31, 255, 257, 4_099, 65_537, 1_000_003];
const GUARD_BYTES: usize = 1024;
const MAX_BYTES: usize = 1_000_003 * 4 + 64 + GUARD_BYTES;

/// A value of one of several kinds, so every rounding path is exercised.
fn awkward_value(rng: &mut SplitMix64) -> f32 {
    match rng.next_u64() % 8 {
        0 => rng.uniform_f32(-1e5, 1e5),   // overflows FP16 past 65504
        1 => rng.uniform_f32(-1e-4, 1e-4), // FP16 subnormals and normals
        2 => rng.uniform_f32(-6e-8, 6e-8), // below FP16's smallest subnormal
        3 => [0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, 65504.0, 65520.0][(rng.next_u64() % 6) as usize],
        4 => f32::from_bits(rng.next_u64() as u32 & 0x807f_ffff | 0x3f80_0000), // ±[1, 2), every mantissa bit
        _ => rng.uniform_f32(-8.0, 8.0),
    }
}

fn encode(values: &[f32], dtype: DType) -> Vec<u8> {
    let f32s: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    match dtype {
        DType::F32 => f32s,
        DType::F16 => convert_reference(&f32s, DType::F32, DType::F16, values.len()),
    }
}

#[test]
fn conversions_match_the_cpu_reference_bit_for_bit() {
    let gpu = gpu_or_skip!();
    let mut rng = SplitMix64::new(test_seed("convert_elements"));
    let mut plan = PoolPlan::new();
    let src_id = plan.buffer("test.convert.src", MAX_BYTES);
    let dst_id = plan.buffer("test.convert.dst", MAX_BYTES);
    let pool = VramPool::reserve(&gpu, &plan).unwrap();
    let stream = gpu.new_stream().unwrap();
    let pairs =
        [(DType::F32, DType::F16), (DType::F16, DType::F32), (DType::F32, DType::F32), (DType::F16, DType::F16)];
    for &count in COUNTS {
        for (case, &(src_type, dst_type)) in pairs.iter().enumerate() {
            // Element-aligned, not 16-byte aligned.
            let src_offset = (1 + case) * src_type.bytes();
            let dst_offset = (3 + 2 * case) * dst_type.bytes();
            let label = format!("{count} elements {src_type} -> {dst_type} (offsets {src_offset}, {dst_offset})");
            let values: Vec<f32> = (0..count).map(|_| awkward_value(&mut rng)).collect();
            let src_bytes = encode(&values, src_type);
            let src = pool.buffer(src_id).sub(src_offset, src_bytes.len()).unwrap();
            src.upload_blocking(&stream, &src_bytes).unwrap();

            let dst_bytes = count * dst_type.bytes();
            let dst_and_guard = pool.buffer(dst_id).sub(dst_offset, dst_bytes + GUARD_BYTES).unwrap();
            let poison: Vec<u8> = (0..dst_bytes + GUARD_BYTES).map(|_| rng.next_u64() as u8).collect();
            dst_and_guard.upload_blocking(&stream, &poison).unwrap();
            let dst = dst_and_guard.sub(0, dst_bytes).unwrap();

            let job = ConvertJob { src: &src, src_type, dst: &dst, dst_type, count };
            convert_elements(&gpu, &stream, &job).unwrap_or_else(|e| panic!("{label}: {e}"));
            let mut got = vec![0u8; dst_bytes + GUARD_BYTES];
            dst_and_guard.download_blocking(&stream, &mut got).unwrap();

            let want = convert_reference(&src_bytes, src_type, dst_type, count);
            if let Some(i) = (0..count).find(|&i| {
                let w = dst_type.bytes();
                got[i * w..(i + 1) * w] != want[i * w..(i + 1) * w]
            }) {
                panic!("{label}: element {i} (input {}) differs from the reference", values[i]);
            }
            assert_eq!(&got[dst_bytes..], &poison[dst_bytes..], "{label}: the guard after the output was written");
        }
    }
}

#[test]
fn nan_stays_nan_in_both_directions() {
    let gpu = gpu_or_skip!();
    let mut plan = PoolPlan::new();
    let a = plan.buffer("test.convert.a", 64);
    let b = plan.buffer("test.convert.b", 64);
    let pool = VramPool::reserve(&gpu, &plan).unwrap();
    let stream = gpu.new_stream().unwrap();
    let (a, b) = (pool.buffer(a), pool.buffer(b));
    a.upload_blocking(&stream, &[f32::NAN, 1.0, -f32::NAN]).unwrap();
    convert_elements(
        &gpu,
        &stream,
        &ConvertJob { src: &a, src_type: DType::F32, dst: &b, dst_type: DType::F16, count: 3 },
    )
    .unwrap();
    let mut halves = [half::f16::ZERO; 3];
    b.download_blocking(&stream, &mut halves).unwrap();
    assert!(halves[0].is_nan() && halves[1] == half::f16::ONE && halves[2].is_nan(), "{halves:?}");
    convert_elements(
        &gpu,
        &stream,
        &ConvertJob { src: &b, src_type: DType::F16, dst: &a, dst_type: DType::F32, count: 3 },
    )
    .unwrap();
    let mut floats = [0f32; 3];
    a.download_blocking(&stream, &mut floats).unwrap();
    assert!(floats[0].is_nan() && floats[1] == 1.0 && floats[2].is_nan(), "{floats:?}");
}

#[test]
fn bad_jobs_are_refused_before_launch() {
    let gpu = gpu_or_skip!();
    let mut plan = PoolPlan::new();
    let id = plan.buffer("test.convert.one", 4096);
    let pool = VramPool::reserve(&gpu, &plan).unwrap();
    let stream = gpu.new_stream().unwrap();
    let whole = pool.buffer(id);
    let job = |src, src_type, dst, dst_type, count| {
        convert_elements(&gpu, &stream, &ConvertJob { src, src_type, dst, dst_type, count })
    };
    let (low, high) = (whole.sub(0, 2048).unwrap(), whole.sub(2048, 2048).unwrap());

    let err = job(&low, DType::F16, &high, DType::F32, 1000).unwrap_err();
    assert!(matches!(err, GpuError::BufferTooSmall { need: 4000, have: 2048, .. }), "{err}");

    let odd = whole.sub(2049, 1024).unwrap();
    let err = job(&low, DType::F16, &odd, DType::F32, 8).unwrap_err().to_string();
    assert!(err.contains("is not aligned"), "{err}");

    // FP16 -> FP32 in place would read halves it has already overwritten.
    let overlapping = whole.sub(1024, 3072).unwrap();
    let err = job(&low, DType::F16, &overlapping, DType::F32, 600).unwrap_err().to_string();
    assert!(
        err.starts_with("cannot launch convert_elements: source `test.convert.one`") && err.contains("overlap"),
        "{err}"
    );

    // Nothing to do is not an error, even for views that could hold nothing more.
    job(&low, DType::F16, &low, DType::F32, 0).unwrap();
}

//! kernels/letterbox.cu against `letterbox_reference` on random frames of
//! awkward sizes (odd, prime, 8K), NV12 and P016, SBS/TB/mono, square and
//! non-square model inputs. The output tensor is poisoned with random bytes
//! first and must be fully overwritten, with a guard after it untouched.
//! Tolerance: 2e-3 absolute (under 1/255): f32 accumulation on the GPU
//! against f64 on the CPU, plus FP16 rounding (≤ 4.9e-4 in [0, 1]).

use half::f16;
use vrseg::gpu::{PoolPlan, VramPool};
use vrseg::ops::letterbox::{
    eye_rects, letterbox, letterbox_reference, LetterboxGeometry, LetterboxJob, YuvMatrix, YuvToRgb,
};
use vrseg::selftest::SplitMix64;
use vrseg::video::layout::StereoLayout;
use vrseg::video::nvdec::FrameLayout;

use crate::{gpu_or_skip, test_seed};

const TOLERANCE: f32 = 2e-3;
const GUARD_BYTES: usize = 4096;

struct Case {
    width: u32,
    height: u32,
    bit_depth: u8,
    layout: StereoLayout,
    frames: usize,
    input: (i32, i32),
    matrix: YuvMatrix,
    full_range: bool,
}

fn run_case(case: &Case) {
    let gpu = gpu_or_skip!();
    let label = format!(
        "{}x{} {}-bit {:?} x{} → {:?}",
        case.width, case.height, case.bit_depth, case.layout, case.frames, case.input
    );
    let mut rng = SplitMix64::new(test_seed(&label));
    let layout = FrameLayout::new(case.width, case.height, case.bit_depth);
    let eyes = eye_rects(case.layout, case.width, case.height);
    let geometry = LetterboxGeometry::ultralytics(eyes[0].w, eyes[0].h, case.input.0, case.input.1);
    let colour = YuvToRgb::new(case.matrix, case.full_range, case.bit_depth);
    let elements = case.frames * eyes.len() * 3 * (case.input.0 * case.input.1) as usize;

    let mut plan = PoolPlan::new();
    let frame_ids: Vec<_> =
        (0..case.frames).map(|i| plan.buffer(format!("test.frame{i}"), layout.slot_bytes())).collect();
    let out_id = plan.buffer("test.letterbox_out", elements * 2 + GUARD_BYTES);
    let pool = VramPool::reserve(&gpu, &plan).unwrap();
    let stream = gpu.new_stream().unwrap();

    let mut host_frames = Vec::new();
    for id in &frame_ids {
        let mut bytes = vec![0u8; layout.slot_bytes()];
        rng.fill_bytes(&mut bytes);
        pool.buffer(*id).upload_blocking(&stream, &bytes).unwrap();
        host_frames.push(bytes);
    }
    let mut poison = vec![0u8; elements * 2 + GUARD_BYTES];
    rng.fill_bytes(&mut poison);
    let out = pool.buffer(out_id);
    out.upload_blocking(&stream, &poison).unwrap();

    let views: Vec<_> = frame_ids.iter().map(|id| pool.buffer(*id)).collect();
    let job =
        LetterboxJob { frames: &views, layout, bit_depth: case.bit_depth, eyes: &eyes, colour, geometry, out: &out };
    letterbox(&gpu, &stream, &job).unwrap();
    let mut got = vec![0u8; elements * 2 + GUARD_BYTES];
    out.download_blocking(&stream, &mut got).unwrap();
    assert_eq!(&got[elements * 2..], &poison[elements * 2..], "{label}: wrote past the tensor");

    let refs: Vec<&[u8]> = host_frames.iter().map(|f| &f[..]).collect();
    let want = letterbox_reference(&refs, &layout, case.bit_depth, &eyes, &colour, &geometry);
    let got: &[f16] = bytemuck::cast_slice(&got[..elements * 2]);
    let mut worst = (0f32, 0usize);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        // NaN (poison left behind) counts as infinitely wrong.
        let d = (g.to_f32() - w).abs();
        let d = if d.is_nan() { f32::INFINITY } else { d };
        if d > worst.0 {
            worst = (d, i);
        }
    }
    eprintln!("{label}: max abs difference {:.2e} at element {}", worst.0, worst.1);
    assert!(
        worst.0 <= TOLERANCE,
        "{label}: element {} is {} on the GPU and {} on the CPU (tolerance {TOLERANCE})",
        worst.1,
        got[worst.1],
        want[worst.1]
    );
}

#[test]
fn sbs_1918x1078_nv12_to_640() {
    run_case(&Case {
        width: 1918,
        height: 1078,
        bit_depth: 8,
        layout: StereoLayout::Sbs,
        frames: 3,
        input: (640, 640),
        matrix: YuvMatrix::Bt709,
        full_range: false,
    });
}

#[test]
fn sbs_8192x4096_nv12_to_640_two_frames() {
    run_case(&Case {
        width: 8192,
        height: 4096,
        bit_depth: 8,
        layout: StereoLayout::Sbs,
        frames: 2,
        input: (640, 640),
        matrix: YuvMatrix::Bt709,
        full_range: false,
    });
}

#[test]
fn tb_333x997_p016_10bit_bt2020() {
    run_case(&Case {
        width: 333,
        height: 997,
        bit_depth: 10,
        layout: StereoLayout::Tb,
        frames: 2,
        input: (640, 640),
        matrix: YuvMatrix::Bt2020,
        full_range: false,
    });
}

#[test]
fn mono_37x23_upscaled_full_range_601() {
    run_case(&Case {
        width: 37,
        height: 23,
        bit_depth: 8,
        layout: StereoLayout::Mono,
        frames: 5,
        input: (640, 640),
        matrix: YuvMatrix::Bt601,
        full_range: true,
    });
}

#[test]
fn sbs_4099x2053_p016_to_non_square_input() {
    run_case(&Case {
        width: 4099,
        height: 2053,
        bit_depth: 10,
        layout: StereoLayout::Sbs,
        frames: 1,
        input: (672, 384),
        matrix: YuvMatrix::Bt709,
        full_range: true,
    });
}

#[test]
fn mono_8192x4096_p016_wide_eye() {
    // 12.8x downscale of an 8192-wide eye: 68 KB of shared memory per block,
    // over the 48 KiB default (the launcher opts in).
    run_case(&Case {
        width: 8192,
        height: 4096,
        bit_depth: 10,
        layout: StereoLayout::Mono,
        frames: 1,
        input: (640, 640),
        matrix: YuvMatrix::Bt2020,
        full_range: false,
    });
}

#[test]
fn mono_4099x2053_nv12_to_a_tiny_input() {
    // 32x downscale: 33 taps per axis.
    run_case(&Case {
        width: 4099,
        height: 2053,
        bit_depth: 8,
        layout: StereoLayout::Mono,
        frames: 2,
        input: (128, 96),
        matrix: YuvMatrix::Bt601,
        full_range: false,
    });
}

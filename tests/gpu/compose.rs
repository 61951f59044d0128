//! kernels/compose.cu against `compose_reference` on random frames of
//! awkward sizes: odd and prime-ish widths and heights (odd sizes are legal
//! for the decoder's layout: ceil(w/2) chroma pairs, ceil(h/2) chroma rows),
//! tiles smaller and larger than a block, NV12 and P016 (10-bit) sources,
//! mono, SBS (with the odd split's middle column) and TB, batches of 1-3
//! frames, random mattes (a third 0, a third 255) that are random also
//! outside the eyes, and for the overlay random boxes: clipped at the eye's
//! edges, empty, inverted and NaN ones, counts from 0 to past max_det, and
//! garbage in the detection slots past each count. The output is poisoned
//! first; every byte of the packed NV12 frames must match exactly (integer
//! arithmetic on both sides: tolerance 0), and bytes past the rows and past
//! the last frame must keep their poison.

use vrseg::gpu::{PoolPlan, VramPool};
use vrseg::ops::compose::{
    compose, compose_reference, outline_thickness, BoxSource, ComposeJob, ComposeMode, FrameBatch, ReferenceMode,
    Ycbcr8, DEFAULT_KEY_RGB, OVERLAY_TINT_RGB, PALETTE_COLOURS, PALETTE_RGB,
};
use vrseg::ops::letterbox::{eye_rects, EyeRect, YuvMatrix};
use vrseg::ops::yolo_seg::Detection;
use vrseg::selftest::SplitMix64;
use vrseg::video::layout::StereoLayout;
use vrseg::video::nvdec::FrameLayout;

use crate::{gpu_or_skip, test_seed};

const GUARD_BYTES: usize = 4096;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Green,
    Overlay { max_det: usize },
}

struct Case {
    width: u32,
    height: u32,
    bit_depth: u8,
    layout: StereoLayout,
    frames: usize,
    mode: Mode,
    /// Extra bytes of matte/output pitch past the even row (0: the pipeline's 256-multiple).
    tight_pitch: Option<usize>,
}

/// A random box in eye pixels: mostly inside, some clipped at or past the
/// edges, some empty, inverted or NaN.
fn random_box(rng: &mut SplitMix64, eye: EyeRect, image: usize) -> Detection {
    let (w, h) = (eye.w as f32, eye.h as f32);
    let mut d = Detection {
        score: rng.uniform_f32(0.0, 1.0),
        class: rng.below(80) as i32,
        anchor: rng.below(8400) as i32,
        image: image as i32,
        ..Default::default()
    };
    let x1 = rng.uniform_f32(-0.1 * w, 1.05 * w);
    let y1 = rng.uniform_f32(-0.1 * h, 1.05 * h);
    let (bw, bh) = (rng.uniform_f32(0.0, 0.5 * w), rng.uniform_f32(0.0, 0.5 * h));
    (d.sx1, d.sy1, d.sx2, d.sy2) = match rng.below(12) {
        0 => (0.0, 0.0, w, h),                                               // the whole eye
        1 => (0.0, y1, bw, y1 + bh),                                         // on the left edge
        2 => (w - bw, y1, w, y1 + bh),                                       // on the right edge
        3 => (x1, h - bh, x1 + bw, h),                                       // on the bottom edge
        4 => (x1, y1, x1, y1 + bh),                                          // empty
        5 => (x1 + bw, y1, x1, y1 + bh),                                     // inverted
        6 => (f32::NAN, y1, x1 + bw, y1 + bh),                               // NaN
        7 => (x1, y1, x1 + 1.5, y1 + 1.5),                                   // tiny
        _ => (x1.max(0.0), y1.max(0.0), (x1 + bw).min(w), (y1 + bh).min(h)), // clipped, as the NMS writes them
    };
    d
}

fn run_case(case: &Case) {
    let gpu = gpu_or_skip!();
    let label = format!(
        "{}x{} {}-bit {:?} x{} {}",
        case.width,
        case.height,
        case.bit_depth,
        case.layout,
        case.frames,
        if case.mode == Mode::Green { "green".to_string() } else { "overlay".to_string() }
    );
    let mut rng = SplitMix64::new(test_seed(&label));
    let layout = FrameLayout::new(case.width, case.height, case.bit_depth);
    let eyes = eye_rects(case.layout, case.width, case.height);
    let (w, h) = (case.width as usize, case.height as usize);
    let even_row = w.div_ceil(2) * 2;
    let pitch = match case.tight_pitch {
        Some(extra) => even_row + extra,
        None => even_row.div_ceil(256) * 256,
    };
    let matte_stride = pitch * h + 2 * case.tight_pitch.unwrap_or(0);
    let out_stride = pitch * (h + h.div_ceil(2)) + 2 * case.tight_pitch.unwrap_or(0);
    let n = case.frames;
    let images = n * eyes.len();
    let max_det = match case.mode {
        Mode::Overlay { max_det } => max_det,
        Mode::Green => 1,
    };

    let mut plan = PoolPlan::new();
    let frame_ids: Vec<_> = (0..n).map(|i| plan.buffer(format!("test.frame{i}"), layout.slot_bytes())).collect();
    let matte_id = plan.buffer("test.mattes", n * matte_stride);
    let out_bytes = n * out_stride + GUARD_BYTES;
    let out_id = plan.buffer("test.compose_out", out_bytes);
    let det_id = plan.buffer("test.detections", images * max_det * std::mem::size_of::<Detection>());
    let count_id = plan.buffer("test.detection_counts", images * 4);
    let pool = VramPool::reserve(&gpu, &plan).unwrap();
    let stream = gpu.new_stream().unwrap();

    // Frames: random samples (P016: the code in the high bits, low bits zero as NVDEC writes).
    let mut host_frames = Vec::new();
    for id in &frame_ids {
        let mut bytes = vec![0u8; layout.slot_bytes()];
        rng.fill_bytes(&mut bytes);
        if case.bit_depth > 8 {
            let shift = 16 - u32::from(case.bit_depth);
            for pair in bytes.chunks_exact_mut(2) {
                let v = u16::from_le_bytes([pair[0], pair[1]]) >> shift << shift;
                pair.copy_from_slice(&v.to_le_bytes());
            }
        }
        pool.buffer(*id).upload_blocking(&stream, &bytes).unwrap();
        host_frames.push(bytes);
    }
    let mut mattes = vec![0u8; n * matte_stride];
    for m in mattes.iter_mut() {
        *m = match rng.below(3) {
            0 => 0,
            1 => 255,
            _ => rng.below(256) as u8,
        };
    }
    pool.buffer(matte_id).upload_blocking(&stream, &mattes).unwrap();
    let mut poison = vec![0u8; out_bytes];
    rng.fill_bytes(&mut poison);
    let out = pool.buffer(out_id);
    out.upload_blocking(&stream, &poison).unwrap();

    // Detections: garbage everywhere (also past each count), then the kept ones.
    let mut dets: Vec<Detection> =
        (0..images * max_det).map(|i| random_box(&mut rng, eyes[i / max_det % eyes.len()], 0)).collect();
    let mut counts = vec![0u32; images];
    for (i, c) in counts.iter_mut().enumerate() {
        *c = match rng.below(4) {
            _ if i == 0 => max_det as u32,                            // full
            _ if i + 1 == images && images > 1 => max_det as u32 + 5, // past max_det: clamped
            _ if i == 1 && images > 2 => 0,                           // none
            0 => 0,
            _ => rng.below(max_det as u64 + 1) as u32,
        };
        for d in 0..(*c as usize).min(max_det) {
            dets[i * max_det + d] = random_box(&mut rng, eyes[i % eyes.len()], i);
        }
    }
    let (det_view, count_view) = (pool.buffer(det_id), pool.buffer(count_id));
    det_view.upload_blocking(&stream, &dets).unwrap();
    count_view.upload_blocking(&stream, &counts).unwrap();

    let matrix = if case.bit_depth > 8 { YuvMatrix::Bt2020 } else { YuvMatrix::Bt709 };
    let key = Ycbcr8::from_rgb(DEFAULT_KEY_RGB, matrix, false);
    let tint = Ycbcr8::from_rgb(OVERLAY_TINT_RGB, matrix, false);
    let palette: [Ycbcr8; PALETTE_COLOURS] = PALETTE_RGB.map(|c| Ycbcr8::from_rgb(c, matrix, false));
    let thickness = outline_thickness(eyes[0]);
    let mode = match case.mode {
        Mode::Green => ComposeMode::Green { key },
        Mode::Overlay { max_det } => ComposeMode::Overlay {
            tint,
            palette,
            thickness,
            boxes: BoxSource { detections: &det_view, counts: &count_view, max_det },
        },
    };
    let views: Vec<_> = frame_ids.iter().map(|id| pool.buffer(*id)).collect();
    let matte_view = pool.buffer(matte_id);
    let job = ComposeJob {
        frames: &views,
        layout,
        eyes: &eyes,
        mattes: FrameBatch { view: &matte_view, pitch, frame_stride: matte_stride },
        out: FrameBatch { view: &out, pitch, frame_stride: out_stride },
        mode,
    };
    compose(&gpu, &stream, &job).unwrap();
    let mut got = vec![0u8; out_bytes];
    out.download_blocking(&stream, &mut got).unwrap();
    assert_eq!(&got[n * out_stride..], &poison[n * out_stride..], "{label}: wrote past the last frame");

    let chroma_row = even_row;
    let mut drawn_boxes = 0usize;
    for f in 0..n {
        let per_eye: Vec<&[Detection]> = (0..eyes.len())
            .map(|e| {
                let i = f * eyes.len() + e;
                &dets[i * max_det..i * max_det + (counts[i] as usize).min(max_det)]
            })
            .collect();
        drawn_boxes += per_eye.iter().map(|d| d.len()).sum::<usize>();
        let reference_mode = match case.mode {
            Mode::Green => ReferenceMode::Green { key },
            Mode::Overlay { .. } => ReferenceMode::Overlay { tint, palette, thickness, detections: &per_eye },
        };
        let want =
            compose_reference(&host_frames[f], &layout, &eyes, &mattes[f * matte_stride..], pitch, &reference_mode);
        let frame = &got[f * out_stride..(f + 1) * out_stride];
        let poisoned = &poison[f * out_stride..(f + 1) * out_stride];
        let rows = (0..h)
            .map(|y| (y * pitch, y * w, w))
            .chain((0..h.div_ceil(2)).map(|cy| ((h + cy) * pitch, w * h + cy * chroma_row, chroma_row)));
        let mut wrong = 0usize;
        let mut first = None;
        for (row, (at, packed_at, len)) in rows.enumerate() {
            for i in 0..len {
                if frame[at + i] != want[packed_at + i] {
                    wrong += 1;
                    first.get_or_insert((row, i, frame[at + i], want[packed_at + i]));
                }
            }
            // Row padding is not the kernel's to write.
            assert_eq!(
                &frame[at + len..at + pitch.min(len + 64)],
                &poisoned[at + len..at + pitch.min(len + 64)],
                "{label}: frame {f} row {row}: wrote past the row"
            );
        }
        assert_eq!(wrong, 0, "{label}: frame {f}: {wrong} bytes differ; first (row, column, GPU, CPU) = {first:?}");
    }
    match case.mode {
        Mode::Green => eprintln!("{label}: exact over {n} frame(s)"),
        Mode::Overlay { .. } => {
            eprintln!("{label}: exact over {n} frame(s), {drawn_boxes} kept boxes, outline {thickness} px")
        }
    }
}

#[test]
fn green_sbs_1102x622_nv12_three_frames() {
    run_case(&Case {
        width: 1102,
        height: 622,
        bit_depth: 8,
        layout: StereoLayout::Sbs,
        frames: 3,
        mode: Mode::Green,
        tight_pitch: None,
    });
}

#[test]
fn green_sbs_odd_split_1103x621_nv12_tight_pitch() {
    // The middle column 551 is in neither eye: keyed whatever the matte holds there.
    run_case(&Case {
        width: 1103,
        height: 621,
        bit_depth: 8,
        layout: StereoLayout::Sbs,
        frames: 2,
        mode: Mode::Green,
        tight_pitch: Some(6),
    });
}

#[test]
fn green_tb_334x998_p016_10bit() {
    run_case(&Case {
        width: 334,
        height: 998,
        bit_depth: 10,
        layout: StereoLayout::Tb,
        frames: 2,
        mode: Mode::Green,
        tight_pitch: None,
    });
}

#[test]
fn green_mono_37x23_smaller_than_a_block() {
    run_case(&Case {
        width: 37,
        height: 23,
        bit_depth: 8,
        layout: StereoLayout::Mono,
        frames: 3,
        mode: Mode::Green,
        tight_pitch: Some(2),
    });
}

#[test]
fn overlay_sbs_1102x620_nv12_boxes_clipped_at_edges() {
    run_case(&Case {
        width: 1102,
        height: 620,
        bit_depth: 8,
        layout: StereoLayout::Sbs,
        frames: 3,
        mode: Mode::Overlay { max_det: 40 },
        tight_pitch: None,
    });
}

#[test]
fn overlay_tb_259x147_p016_odd_sizes() {
    run_case(&Case {
        width: 259,
        height: 147,
        bit_depth: 10,
        layout: StereoLayout::Tb,
        frames: 2,
        mode: Mode::Overlay { max_det: 300 },
        tight_pitch: Some(4),
    });
}

#[test]
fn overlay_mono_4099x2053_p016_300_boxes() {
    // More boxes than a block's list holds: several culling chunks per tile.
    run_case(&Case {
        width: 4099,
        height: 2053,
        bit_depth: 10,
        layout: StereoLayout::Mono,
        frames: 1,
        mode: Mode::Overlay { max_det: 300 },
        tight_pitch: None,
    });
}

#[test]
fn overlay_sbs_8192x4096_nv12_300_boxes() {
    run_case(&Case {
        width: 8192,
        height: 4096,
        bit_depth: 8,
        layout: StereoLayout::Sbs,
        frames: 1,
        mode: Mode::Overlay { max_det: 300 },
        tight_pitch: None,
    });
}

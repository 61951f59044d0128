//! kernels/yolo_seg.cu against the CPU references in `ops::yolo_seg`, on
//! random heads with 0, 1, 37 and thousands of candidates, 640 and 1280
//! model inputs (the matte kernel's staged and direct paths).
//! - Detections: exactly the same kept set, in the same order, with
//!   bit-identical boxes and scores (both sides use the same rounded f32
//!   operations).
//! - Matte (poisoned first): every eye pixel within 1 LSB of the reference
//!   alpha, except within 1 pixel of a crop edge (f32 box coordinates) and,
//!   for the binary matte, where the reference logit is within 1e-3 of 0;
//!   bytes outside the eyes keep their poison.

use vrseg::gpu::{PoolPlan, VramPool};
use vrseg::ops::letterbox::{eye_rects, EyeRect, LetterboxGeometry};
use vrseg::ops::yolo_seg::{
    alpha_of, download_detections, matte_logits_reference, nms_reference, Detection, MatteTarget, PostprocessConfig,
    YoloSegBuffers, YoloSegJob, YoloSegShape,
};
use vrseg::selftest::SplitMix64;
use vrseg::testing::fill_background_head;
use vrseg::video::layout::StereoLayout;

use crate::{gpu_or_skip, test_seed};

/// Random heads: background class scores below `background`, and `hot`
/// anchors per image with a high score for a random class (person half the
/// time), boxes clustered so that NMS has work to do.
fn random_heads(rng: &mut SplitMix64, shape: &YoloSegShape, background: f32, hot: usize) -> (Vec<f32>, Vec<f32>) {
    let (a, nc, nm) = (shape.anchors, shape.classes, shape.coefficients);
    let rows = 4 + nc + nm;
    let mut out0 = vec![0f32; shape.output0_elements()];
    for b in 0..shape.batch {
        let head = &mut out0[b * rows * a..(b + 1) * rows * a];
        fill_background_head(rng, head, shape, background);
        // Hot anchors around a few centres.
        let centres: Vec<(f32, f32)> =
            (0..4).map(|_| (rng.uniform_f32(50.0, 590.0), rng.uniform_f32(50.0, 590.0))).collect();
        for h in 0..hot {
            let anchor = rng.below(a as u64) as usize;
            let (cx, cy) = centres[h % centres.len()];
            head[anchor] = cx + rng.uniform_f32(-20.0, 20.0);
            head[a + anchor] = cy + rng.uniform_f32(-20.0, 20.0);
            head[2 * a + anchor] = rng.uniform_f32(40.0, 160.0);
            head[3 * a + anchor] = rng.uniform_f32(60.0, 300.0);
            let class = if rng.below(2) == 0 { 0 } else { rng.below(nc as u64) as usize };
            head[(4 + class) * a + anchor] = rng.uniform_f32(0.3, 0.99);
        }
    }
    let protos = (0..shape.protos_elements()).map(|_| rng.uniform_f32(-1.0, 1.0)).collect();
    (out0, protos)
}

struct Case {
    name: &'static str,
    frame: (u32, u32),
    layout: StereoLayout,
    frames: usize,
    /// Square model input (640 or 1280).
    input: usize,
    background: f32,
    hot: usize,
    config: PostprocessConfig,
}

fn run_case(case: Case) {
    let gpu = gpu_or_skip!();
    let mut rng = SplitMix64::new(test_seed(case.name));
    let eyes: Vec<EyeRect> = eye_rects(case.layout, case.frame.0, case.frame.1);
    let shape = YoloSegShape::yolo_seg(case.frames * eyes.len(), case.input);
    let input = case.input as i32;
    let geometry = LetterboxGeometry::ultralytics(eyes[0].w, eyes[0].h, input, input);
    let (out0, protos) = random_heads(&mut rng, &shape, case.background, case.hot);
    let (mw, mh) = case.frame;
    let pitch = (mw as usize).div_ceil(256) * 256;
    let frame_stride = pitch * mh as usize;

    let mut plan = PoolPlan::new();
    let out0_id = plan.buffer("test.output0", out0.len() * 4);
    let protos_id = plan.buffer("test.output1", protos.len() * 4);
    let matte_id = plan.buffer("test.matte", frame_stride * case.frames);
    let buffers = YoloSegBuffers::plan(&mut plan, shape, case.config.max_det);
    let pool = VramPool::reserve(&gpu, &plan).unwrap();
    let stream = gpu.new_stream().unwrap();
    pool.buffer(out0_id).upload_blocking(&stream, &out0).unwrap();
    pool.buffer(protos_id).upload_blocking(&stream, &protos).unwrap();
    let mut poison = vec![0u8; frame_stride * case.frames];
    rng.fill_bytes(&mut poison);
    let matte = pool.buffer(matte_id);
    matte.upload_blocking(&stream, &poison).unwrap();

    let (o, p) = (pool.buffer(out0_id), pool.buffer(protos_id));
    let job = YoloSegJob {
        output0: &o,
        protos: &p,
        config: &case.config,
        geometry,
        eyes: &eyes,
        matte: Some(MatteTarget { frames: &matte, width: mw, height: mh, pitch, frame_stride }),
    };
    vrseg::ops::yolo_seg::yolo_seg_postprocess(&gpu, &stream, &pool, &buffers, &job).unwrap();
    let got = download_detections(&stream, &pool, &buffers).unwrap();
    let want = nms_reference(&out0, &shape, &case.config, &geometry, &eyes);
    let kept: Vec<usize> = want.iter().map(Vec::len).collect();
    eprintln!("{}: kept per image {kept:?}", case.name);
    for (image, (g, w)) in got.iter().zip(&want).enumerate() {
        let key = |d: &Detection| (d.anchor, d.class);
        assert_eq!(
            g.iter().map(key).collect::<Vec<_>>(),
            w.iter().map(key).collect::<Vec<_>>(),
            "{}: image {image}: kept (anchor, class) differ",
            case.name
        );
        for (a, b) in g.iter().zip(w) {
            assert_eq!(a, b, "{}: image {image}: detection fields differ", case.name);
        }
    }

    let mut got_matte = vec![0u8; frame_stride * case.frames];
    matte.download_blocking(&stream, &mut got_matte).unwrap();
    let logits = matte_logits_reference(&out0, &protos, &shape, &want, &geometry, &eyes);
    let mut inside = vec![false; frame_stride * case.frames];
    let mut worst = 0i32;
    for (image, ref_logits) in logits.iter().enumerate() {
        let (frame, e) = (image / eyes.len(), eyes[image % eyes.len()]);
        let dets = &want[image];
        for y in 0..e.h {
            for x in 0..e.w {
                let at = frame * frame_stride + (e.y + y) as usize * pitch + (e.x + x) as usize;
                inside[at] = true;
                let logit = ref_logits[(y * e.w + x) as usize];
                let diff = (i32::from(got_matte[at]) - i32::from(alpha_of(logit, case.config.binary))).abs();
                if diff == 0 {
                    continue;
                }
                let (px, py) = (x as f32, y as f32);
                let near_edge = dets.iter().any(|d| {
                    [d.sx1, d.sx2].iter().any(|v| (px - v).abs() <= 1.0)
                        || [d.sy1, d.sy2].iter().any(|v| (py - v).abs() <= 1.0)
                });
                let near_zero = case.config.binary && logit.is_some_and(|l| l.abs() < 1e-3);
                if near_edge || near_zero {
                    continue;
                }
                worst = worst.max(diff);
                assert!(
                    diff <= 1,
                    "{}: image {image} pixel ({x}, {y}): GPU {} vs CPU {} (logit {logit:?})",
                    case.name,
                    got_matte[at],
                    alpha_of(logit, case.config.binary)
                );
            }
        }
    }
    for (i, (g, p)) in got_matte.iter().zip(&poison).enumerate() {
        if !inside[i] {
            assert_eq!(g, p, "{}: byte {i} outside every eye was overwritten", case.name);
        }
    }
    eprintln!("{}: matte max difference {worst} LSB away from crop edges", case.name);
}

#[test]
fn no_detections_gives_an_empty_matte() {
    run_case(Case {
        name: "zero",
        frame: (1918, 1078),
        layout: StereoLayout::Sbs,
        frames: 2,
        input: 640,
        background: 0.2,
        hot: 0,
        config: PostprocessConfig::default(),
    });
}

#[test]
fn one_detection() {
    // Backgrounds stay below 0.2 and the hot anchor scores at least 0.3.
    let config = PostprocessConfig { conf: 0.29, classes: vec![], ..Default::default() };
    run_case(Case {
        name: "one",
        frame: (37, 23),
        layout: StereoLayout::Mono,
        frames: 1,
        input: 640,
        background: 0.2,
        hot: 1,
        config,
    });
}

#[test]
fn thirty_seven_hot_anchors_all_classes_soft_and_binary() {
    for binary in [false, true] {
        let config = PostprocessConfig { classes: vec![], binary, ..Default::default() };
        run_case(Case {
            name: "thirty-seven",
            frame: (1918, 1078),
            layout: StereoLayout::Sbs,
            frames: 1,
            input: 640,
            background: 0.2,
            hot: 37,
            config,
        });
    }
}

#[test]
fn thousands_of_candidates_take_the_global_sort_and_hit_max_det() {
    // conf 0.05 over uniform [0, 0.3) backgrounds: most anchors are candidates.
    let config = PostprocessConfig { conf: 0.05, classes: vec![], max_det: 300, ..Default::default() };
    run_case(Case {
        name: "thousands",
        frame: (333, 997),
        layout: StereoLayout::Tb,
        frames: 1,
        input: 640,
        background: 0.3,
        hot: 37,
        config,
    });
}

#[test]
fn sbs_8k_frames_person_only() {
    run_case(Case {
        name: "8k",
        frame: (8192, 4096),
        layout: StereoLayout::Sbs,
        frames: 1,
        input: 640,
        background: 0.2,
        hot: 37,
        config: PostprocessConfig::default(),
    });
}

#[test]
fn small_eyes_on_a_1280_model_sample_the_logits_directly() {
    // 250-pixel eyes on 320x320 prototypes: a 256-pixel tile spans 320 proto
    // columns, more than the matte kernel stages, so it reads global logits.
    run_case(Case {
        name: "direct",
        frame: (500, 151),
        layout: StereoLayout::Sbs,
        frames: 2,
        input: 1280,
        background: 0.2,
        hot: 37,
        config: PostprocessConfig { classes: vec![], ..Default::default() },
    });
}

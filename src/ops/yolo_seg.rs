//! Postprocess for YOLO-seg heads (`kernels/yolo_seg.cu`): score and class
//! filter, class-aware NMS, top-k, mask decode into an 8-bit matte, all on
//! the GPU; only the detections (tens of bytes each) reach the host.
//!
//! Semantics are Ultralytics 8.4.190's `non_max_suppression` (torchvision
//! NMS, `max_wh` class offset in f32, IoU strictly above the threshold
//! suppresses, `max_nms` then `max_det`) and its retina masks
//! (`process_mask_native`: logits upsampled to the eye's resolution undoing
//! the letterbox, `> 0` is the mask, cropped to the box in source pixels
//! with `x1 <= x < x2`). Differences, all deliberate:
//! - Equal scores are ordered by anchor index (torch's sort is not stable).
//! - The proto → source mapping is the exact inverse of the letterbox, one
//!   bilinear step. Ultralytics 8.4.190 first upsamples by 2 or 4 when the
//!   letterbox padding is not a multiple of 8 input pixels, then crops and
//!   resizes; where the padding is a multiple of 8 (every square eye, 16:9
//!   frames) the two agree exactly.
//! - The soft matte is `sigmoid(max logit)`, the union of the instances'
//!   probabilities; `binary` gives Ultralytics' `> 0` masks.
//! - Ultralytics drops detections whose final mask is empty; the detections
//!   here are NMS's kept set.

use cudarc::driver::{CudaStream, DeviceRepr, LaunchConfig, PushKernelArg};

use super::letterbox::{eye_pair, EyeRect, LetterboxGeometry};
use crate::gpu::error::CheckDriver;
use crate::gpu::{BufferId, DeviceView, Gpu, GpuError, Kernel, PoolPlan, VramPool};

/// Ultralytics' class offset for class-aware NMS.
pub const MAX_WH: f32 = 7680.0;
/// Detections per image the kernels keep at most.
pub const MAX_DETECTIONS: usize = 1024;
/// Classes the class filter can name (`class_mask` bits).
pub const MAX_CLASSES: usize = 128;
/// Mask coefficients per anchor the logit kernel holds in registers: 32, as
/// every Ultralytics segmentation head has (`Segment(nm=32)`); room for more
/// would cost the common case registers and occupancy.
pub const MAX_MASK_COEFFICIENTS: usize = 32;
/// Detections one block of the logit kernel handles (`kLogitGroup`).
const LOGIT_GROUP: u32 = 8;
/// Z-slices of the logit kernel's grid (each loops over every fourth group).
const LOGIT_SLICES: u32 = 4;
/// Matte tiles one block of the matte kernel handles (`kMatteTilesPerBlock`).
const MATTE_TILES_PER_BLOCK: u32 = 4;

/// One kept detection as the kernels write it.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Default, bytemuck::Pod, bytemuck::Zeroable, serde::Serialize)]
pub struct Detection {
    /// Box corners in letterboxed model-input pixels.
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
    /// Box corners in the eye's source pixels, clipped to the eye.
    pub sx1: f32,
    pub sy1: f32,
    pub sx2: f32,
    pub sy2: f32,
    pub score: f32,
    pub class: i32,
    pub anchor: i32,
    /// Image in the batch: frame * eyes + eye.
    pub image: i32,
}

/// The heads' shapes: output0 `[batch, 4 + classes + coefficients, anchors]`,
/// output1 `[batch, coefficients, proto_h, proto_w]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct YoloSegShape {
    pub batch: usize,
    pub classes: usize,
    pub coefficients: usize,
    pub anchors: usize,
    pub proto_h: usize,
    pub proto_w: usize,
}

impl YoloSegShape {
    /// Ultralytics' YOLO-seg at a square input: 80 classes, 32 coefficients,
    /// anchors at strides 8, 16, 32, prototypes at stride 4.
    pub fn yolo_seg(batch: usize, input: usize) -> YoloSegShape {
        let anchors = [8, 16, 32].iter().map(|s| (input / s) * (input / s)).sum();
        YoloSegShape { batch, classes: 80, coefficients: 32, anchors, proto_h: input / 4, proto_w: input / 4 }
    }

    pub fn output0_elements(&self) -> usize {
        self.batch * (4 + self.classes + self.coefficients) * self.anchors
    }

    pub fn protos_elements(&self) -> usize {
        self.batch * self.coefficients * self.proto_h * self.proto_w
    }

    fn key_stride(&self) -> usize {
        self.anchors.next_power_of_two()
    }
}

/// What to keep (Ultralytics' predict arguments).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PostprocessConfig {
    /// Boxes whose best class score is above this survive (`conf`, 0.25).
    pub conf: f32,
    /// IoU above which a lower-scored box of the same class is dropped (0.7).
    pub iou: f32,
    /// Class indices kept after the argmax; empty = all. Default: person (0).
    pub classes: Vec<u32>,
    /// NMS across classes (`agnostic_nms`).
    pub agnostic: bool,
    /// Kept boxes per image at most (300).
    pub max_det: usize,
    /// Candidates entering NMS at most (30000).
    pub max_nms: usize,
    /// 0/255 matte (Ultralytics' masks) instead of soft alpha.
    pub binary: bool,
}

impl Default for PostprocessConfig {
    fn default() -> Self {
        PostprocessConfig {
            conf: 0.25,
            iou: 0.7,
            classes: vec![0],
            agnostic: false,
            max_det: 300,
            max_nms: 30000,
            binary: false,
        }
    }
}

impl PostprocessConfig {
    fn class_mask(&self, classes: usize) -> Result<[u32; 4], String> {
        let mut mask = [0u32; 4];
        if self.classes.is_empty() {
            for c in 0..classes {
                mask[c / 32] |= 1 << (c % 32);
            }
        }
        for &c in &self.classes {
            if c as usize >= classes {
                return Err(format!("class {c} does not exist: the model has {classes} classes"));
            }
            mask[c as usize / 32] |= 1 << (c % 32);
        }
        Ok(mask)
    }

    fn keeps_class(&self, c: usize) -> bool {
        self.classes.is_empty() || self.classes.contains(&(c as u32))
    }
}

/// The pool buffers the postprocess needs, planned once.
#[derive(Debug, Clone, Copy)]
pub struct YoloSegBuffers {
    shape: YoloSegShape,
    max_det: usize,
    keys: BufferId,
    candidate_counts: BufferId,
    detections: BufferId,
    detection_counts: BufferId,
    logits: BufferId,
}

impl YoloSegBuffers {
    pub fn plan(plan: &mut PoolPlan, shape: YoloSegShape, max_det: usize) -> YoloSegBuffers {
        let b = shape.batch;
        YoloSegBuffers {
            shape,
            max_det,
            keys: plan.buffer("yolo_seg.sort_keys", b * shape.key_stride() * 8),
            candidate_counts: plan.buffer("yolo_seg.candidate_counts", b * 4),
            detections: plan.buffer("yolo_seg.detections", b * max_det * std::mem::size_of::<Detection>()),
            detection_counts: plan.buffer("yolo_seg.detection_counts", b * 4),
            logits: plan.buffer("yolo_seg.mask_logits", b * max_det * shape.proto_h * shape.proto_w * 4),
        }
    }

    pub fn detections<'p>(&self, pool: &'p VramPool) -> DeviceView<'p> {
        pool.buffer(self.detections)
    }

    pub fn detection_counts<'p>(&self, pool: &'p VramPool) -> DeviceView<'p> {
        pool.buffer(self.detection_counts)
    }
}

/// Where the matte goes: 8-bit frames of `width` x `height` (the decoded
/// frame's geometry), `pitch` bytes per row, `frame_stride` bytes apart, one
/// per frame of the batch; each eye's matte lands at that eye's rectangle.
#[derive(Debug)]
pub struct MatteTarget<'a, 'pool> {
    pub frames: &'a DeviceView<'pool>,
    pub width: u32,
    pub height: u32,
    pub pitch: usize,
    pub frame_stride: usize,
}

/// Mirrors `YoloSegParams` in kernels/yolo_seg.cu field for field.
#[repr(C)]
#[derive(Clone, Copy)]
struct YoloSegParams {
    output0: u64,
    protos: u64,
    keys: u64,
    candidate_counts: u64,
    detections: u64,
    detection_counts: u64,
    logits: u64,
    matte: u64,
    matte_frame_stride: u64,
    matte_pitch: u64,
    batch: i32,
    nc: i32,
    nm: i32,
    anchors: i32,
    proto_h: i32,
    proto_w: i32,
    key_stride: i32,
    max_det: i32,
    max_nms: i32,
    keep_limit: i32,
    conf: f32,
    iou: f32,
    class_mask: [u32; 4],
    agnostic: i32,
    binary: i32,
    in_w: i32,
    in_h: i32,
    new_w: i32,
    new_h: i32,
    pad_left: i32,
    pad_top: i32,
    eyes: i32,
    eye: [EyeRect; 2],
}

// SAFETY: plain `repr(C)` integers and floats in the kernel struct's order
// (`params_layout_matches_the_kernel` pins the size).
unsafe impl DeviceRepr for YoloSegParams {}

/// One batch of heads to postprocess.
pub struct YoloSegJob<'a, 'pool> {
    pub output0: &'a DeviceView<'pool>,
    pub protos: &'a DeviceView<'pool>,
    pub config: &'a PostprocessConfig,
    pub geometry: LetterboxGeometry,
    /// The eyes of each frame; batch image i is eye `i % eyes.len()` of frame `i / eyes.len()`.
    pub eyes: &'a [EyeRect],
    pub matte: Option<MatteTarget<'a, 'pool>>,
}

/// Enqueues the postprocess of one batch on `stream`: detections into the
/// scratch buffers, and the matte when a target is given.
pub fn yolo_seg_postprocess(
    gpu: &Gpu,
    stream: &CudaStream,
    pool: &VramPool,
    buffers: &YoloSegBuffers,
    job: &YoloSegJob,
) -> Result<(), GpuError> {
    let s = buffers.shape;
    let invalid = |reason: String| GpuError::InvalidLaunch { kernel: "yolo_seg", reason };
    if s.batch == 0 || s.anchors == 0 || s.proto_h == 0 || s.proto_w == 0 {
        return Err(invalid(format!("empty heads {s:?}")));
    }
    // Sort keys hold the anchor in 24 bits.
    if s.anchors >= 1 << 24 {
        return Err(invalid(format!("{} anchors (at most {})", s.anchors, (1 << 24) - 1)));
    }
    if s.classes == 0 || s.classes > MAX_CLASSES || s.coefficients == 0 || s.coefficients > MAX_MASK_COEFFICIENTS {
        return Err(invalid(format!(
            "{} classes and {} mask coefficients (1 to {MAX_CLASSES} and 1 to {MAX_MASK_COEFFICIENTS})",
            s.classes, s.coefficients
        )));
    }
    let c = job.config;
    if c.max_det == 0 || c.max_det > buffers.max_det.min(MAX_DETECTIONS) {
        return Err(invalid(format!("max_det {} (1 to {})", c.max_det, buffers.max_det.min(MAX_DETECTIONS))));
    }
    if !(0.0..=1.0).contains(&c.iou) || !c.conf.is_finite() {
        return Err(invalid(format!("conf {} / iou {} out of range", c.conf, c.iou)));
    }
    let class_mask = c.class_mask(s.classes).map_err(invalid)?;
    if job.eyes.is_empty() || job.eyes.len() > 2 || s.batch % job.eyes.len() != 0 {
        return Err(invalid(format!("{} eyes for a batch of {} images", job.eyes.len(), s.batch)));
    }
    job.output0.require::<f32>(s.output0_elements(), "yolo_seg output0")?;
    job.protos.require::<f32>(s.protos_elements(), "yolo_seg output1")?;
    let g = job.geometry;
    if g.in_w as usize % s.proto_w != 0 || g.in_h as usize % s.proto_h != 0 {
        return Err(invalid(format!("input {}x{} is not a multiple of the prototypes {s:?}", g.in_w, g.in_h)));
    }
    let (keys, candidate_counts) = (pool.buffer(buffers.keys), pool.buffer(buffers.candidate_counts));
    let (detections, detection_counts) = (pool.buffer(buffers.detections), pool.buffer(buffers.detection_counts));
    let logits = pool.buffer(buffers.logits);
    let frames = s.batch / job.eyes.len();
    let (matte, matte_pitch, matte_stride) = match &job.matte {
        Some(m) => {
            for e in job.eyes {
                if e.x < 0 || e.y < 0 || (e.x + e.w) as u32 > m.width || (e.y + e.h) as u32 > m.height {
                    return Err(invalid(format!("eye {e:?} is not inside the {}x{} matte", m.width, m.height)));
                }
            }
            if m.pitch < m.width as usize || m.frame_stride < m.pitch * m.height as usize {
                return Err(invalid(format!("matte pitch {} / frame stride {} too small", m.pitch, m.frame_stride)));
            }
            let need = (frames - 1) * m.frame_stride + m.pitch * m.height as usize;
            if m.frames.bytes() < need {
                return Err(m.frames.too_small(need, "yolo_seg matte"));
            }
            (m.frames.ptr(), m.pitch as u64, m.frame_stride as u64)
        }
        None => (0, 0, 0),
    };
    let params = YoloSegParams {
        output0: job.output0.ptr(),
        protos: job.protos.ptr(),
        keys: keys.ptr(),
        candidate_counts: candidate_counts.ptr(),
        detections: detections.ptr(),
        detection_counts: detection_counts.ptr(),
        logits: logits.ptr(),
        matte,
        matte_frame_stride: matte_stride,
        matte_pitch,
        batch: s.batch as i32,
        nc: s.classes as i32,
        nm: s.coefficients as i32,
        anchors: s.anchors as i32,
        proto_h: s.proto_h as i32,
        proto_w: s.proto_w as i32,
        key_stride: s.key_stride() as i32,
        max_det: buffers.max_det as i32,
        max_nms: c.max_nms.min(i32::MAX as usize) as i32,
        keep_limit: c.max_det as i32,
        conf: c.conf,
        iou: c.iou,
        class_mask,
        agnostic: c.agnostic as i32,
        binary: c.binary as i32,
        in_w: g.in_w,
        in_h: g.in_h,
        new_w: g.new_w,
        new_h: g.new_h,
        pad_left: g.pad_left,
        pad_top: g.pad_top,
        eyes: job.eyes.len() as i32,
        eye: eye_pair(job.eyes),
    };

    stream.context().bind_to_thread().check("cuCtxSetCurrent")?;
    // SAFETY: the counts buffer holds `batch` u32s (planned from the shape).
    unsafe { cudarc::driver::result::memset_d8_async(candidate_counts.ptr(), 0, s.batch * 4, stream.cu_stream()) }
        .check_with("cuMemsetD8Async", || "yolo_seg candidate counts".into())?;

    let launch = |kernel: Kernel, config: LaunchConfig| {
        let function = gpu.kernels().function(gpu.context(), kernel)?;
        let mut builder = stream.launch_builder(function);
        builder.arg(&params);
        // SAFETY: the params match the kernel's struct; every pointer in them
        // is a pool buffer planned from this shape (sizes checked above), and
        // the pool synchronises before it frees.
        unsafe { builder.launch(config) }.check_with("cuLaunchKernel", || kernel.symbol().to_string())?;
        Ok::<(), GpuError>(())
    };
    let batch = s.batch as u32;
    launch(
        Kernel::YoloSegCandidates,
        LaunchConfig {
            // 32 anchors per block, their classes split over 8 threads each.
            grid_dim: ((s.anchors as u32).div_ceil(32), batch, 1),
            block_dim: (32, 8, 1),
            shared_mem_bytes: 0,
        },
    )?;
    launch(Kernel::YoloSegNms, LaunchConfig { grid_dim: (batch, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 })?;
    if job.matte.is_some() {
        let pixels = (s.proto_h * s.proto_w) as u32;
        // Up to LOGIT_SLICES z-slices of LOGIT_GROUP detections each; slices
        // with no kept detection return at once.
        let slices = (c.max_det as u32).div_ceil(LOGIT_GROUP).min(LOGIT_SLICES);
        launch(
            Kernel::YoloSegMaskLogits,
            LaunchConfig {
                grid_dim: (pixels.div_ceil(256), batch, slices),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            },
        )?;
        let e = job.eyes[0];
        let matte = if matte_is_staged(&g, e, &s) { Kernel::YoloSegMatte } else { Kernel::YoloSegMatteDirect };
        launch(
            matte,
            LaunchConfig {
                // 32 x 8 threads of 8 pixels each in MATTE_TILES_PER_BLOCK
                // rows: one tile of 256 x 32 pixels per block.
                grid_dim: ((e.w as u32).div_ceil(256), (e.h as u32).div_ceil(8 * MATTE_TILES_PER_BLOCK), batch),
                block_dim: (32, 8, 1),
                shared_mem_bytes: 0,
            },
        )?;
    }
    Ok(())
}

/// Whether every 256 x 32 matte tile's proto-column span fits the kernel's
/// stage (3072 (value, slope) pairs, rows x columns, at most 255 columns):
/// then `yolo_seg_matte` runs, else `yolo_seg_matte_direct`. A tile of n
/// pixels (256, or the eye's width if narrower) spans at most
/// 2 + floor((n - 1) * step) columns, step being proto pixels per eye pixel;
/// the bound below adds one more for f32 rounding.
fn matte_is_staged(g: &LetterboxGeometry, eye: EyeRect, s: &YoloSegShape) -> bool {
    const STAGE_PAIRS: f64 = 3072.0;
    let tile_rows = f64::from(eye.h.min(8 * MATTE_TILES_PER_BLOCK as i32));
    let step = (f64::from(g.new_w) / f64::from(eye.w)) / (f64::from(g.in_w) / s.proto_w as f64);
    let cols = (f64::from(eye.w.min(256)) * step).ceil() + 2.0;
    cols <= 255.0 && tile_rows * cols <= STAGE_PAIRS
}

/// Copies the kept detections of a batch to the host (waits for the stream).
pub fn download_detections(
    stream: &CudaStream,
    pool: &VramPool,
    buffers: &YoloSegBuffers,
) -> Result<Vec<Vec<Detection>>, GpuError> {
    let b = buffers.shape.batch;
    let mut counts = vec![0u32; b];
    buffers.detection_counts(pool).download_blocking(stream, &mut counts)?;
    let mut all = vec![Detection::default(); b * buffers.max_det];
    buffers.detections(pool).download_blocking(stream, &mut all)?;
    Ok(counts
        .iter()
        .enumerate()
        .map(|(i, &n)| all[i * buffers.max_det..i * buffers.max_det + (n as usize).min(buffers.max_det)].to_vec())
        .collect())
}

// ---- CPU references -------------------------------------------------------

#[derive(Clone, Copy)]
struct NmsBox {
    x1: f32,
    y1: f32,
    x2: f32,
    y2: f32,
}

/// torchvision's suppression test, every f32 operation rounded as the kernel's.
fn overlaps(a: &NmsBox, b: &NmsBox, iou: f32) -> bool {
    let area_a = (a.x2 - a.x1) * (a.y2 - a.y1);
    let area_b = (b.x2 - b.x1) * (b.y2 - b.y1);
    let w = (a.x2.min(b.x2) - a.x1.max(b.x1)).max(0.0);
    let h = (a.y2.min(b.y2) - a.y1.max(b.y1)).max(0.0);
    let inter = w * h;
    inter / ((area_a + area_b) - inter) > iou
}

/// CPU reference of candidates + NMS: the kept detections of each image, in
/// score order.
pub fn nms_reference(
    output0: &[f32],
    shape: &YoloSegShape,
    config: &PostprocessConfig,
    geometry: &LetterboxGeometry,
    eyes: &[EyeRect],
) -> Vec<Vec<Detection>> {
    let (nc, a) = (shape.classes, shape.anchors);
    let rows = 4 + nc + shape.coefficients;
    (0..shape.batch)
        .map(|image| {
            let head = &output0[image * rows * a..(image + 1) * rows * a];
            let at = |row: usize, anchor: usize| head[row * a + anchor];
            // (score, anchor, class) of every candidate.
            let mut candidates: Vec<(f32, usize, usize)> = (0..a)
                .filter_map(|anchor| {
                    let (mut best, mut cls) = (f32::MIN, 0);
                    for c in 0..nc {
                        if at(4 + c, anchor) > best {
                            best = at(4 + c, anchor);
                            cls = c;
                        }
                    }
                    (best > config.conf && config.keeps_class(cls)).then_some((best, anchor, cls))
                })
                .collect();
            candidates.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
            candidates.truncate(config.max_nms);
            let mut kept: Vec<(NmsBox, f32, usize, usize)> = Vec::new();
            for (score, anchor, cls) in candidates {
                if kept.len() >= config.max_det.min(MAX_DETECTIONS) {
                    break;
                }
                let (cx, cy, w, h) = (at(0, anchor), at(1, anchor), at(2, anchor), at(3, anchor));
                let off = if config.agnostic { 0.0 } else { cls as f32 * MAX_WH };
                let b = NmsBox {
                    x1: (cx - w / 2.0) + off,
                    y1: (cy - h / 2.0) + off,
                    x2: (cx + w / 2.0) + off,
                    y2: (cy + h / 2.0) + off,
                };
                if kept.iter().all(|k| !overlaps(&k.0, &b, config.iou)) {
                    kept.push((b, score, cls, anchor));
                }
            }
            let eye = eyes[image % eyes.len()];
            let gx = geometry.new_w as f32 / eye.w as f32;
            let gy = geometry.new_h as f32 / eye.h as f32;
            let (fw, fh) = (eye.w as f32, eye.h as f32);
            kept.into_iter()
                .map(|(b, score, cls, anchor)| {
                    let off = if config.agnostic { 0.0 } else { cls as f32 * MAX_WH };
                    let (x1, y1, x2, y2) = (b.x1 - off, b.y1 - off, b.x2 - off, b.y2 - off);
                    Detection {
                        x1,
                        y1,
                        x2,
                        y2,
                        sx1: ((x1 - geometry.pad_left as f32) / gx).max(0.0).min(fw),
                        sy1: ((y1 - geometry.pad_top as f32) / gy).max(0.0).min(fh),
                        sx2: ((x2 - geometry.pad_left as f32) / gx).max(0.0).min(fw),
                        sy2: ((y2 - geometry.pad_top as f32) / gy).max(0.0).min(fh),
                        score,
                        class: cls as i32,
                        anchor: anchor as i32,
                        image: image as i32,
                    }
                })
                .collect()
        })
        .collect()
}

/// CPU reference of the mask: for every pixel of each eye, the largest mask
/// logit over the instances whose box holds the pixel (`None` where none
/// does). Returned per image as `eye.h` rows of `eye.w`.
pub fn matte_logits_reference(
    output0: &[f32],
    protos: &[f32],
    shape: &YoloSegShape,
    detections: &[Vec<Detection>],
    geometry: &LetterboxGeometry,
    eyes: &[EyeRect],
) -> Vec<Vec<Option<f32>>> {
    let (ph, pw, nm, a) = (shape.proto_h, shape.proto_w, shape.coefficients, shape.anchors);
    let rows = 4 + shape.classes + nm;
    let g = geometry;
    detections
        .iter()
        .enumerate()
        .map(|(image, dets)| {
            let eye = eyes[image % eyes.len()];
            let head = &output0[image * rows * a..];
            let proto = &protos[image * nm * ph * pw..];
            // Logits in proto space, accumulated in the kernel's order.
            let logits: Vec<Vec<f32>> = dets
                .iter()
                .map(|d| {
                    (0..ph * pw)
                        .map(|p| {
                            (0..nm).fold(0f32, |acc, c| {
                                head[(4 + shape.classes + c) * a + d.anchor as usize]
                                    .mul_add(proto[c * ph * pw + p], acc)
                            })
                        })
                        .collect()
                })
                .collect();
            let stride_x = g.in_w as f32 / pw as f32;
            let stride_y = g.in_h as f32 / ph as f32;
            let step_x = g.new_w as f32 / eye.w as f32 / stride_x;
            let step_y = g.new_h as f32 / eye.h as f32 / stride_y;
            let origin_x = g.pad_left as f32 / stride_x - 0.5;
            let origin_y = g.pad_top as f32 / stride_y - 0.5;
            let lo_x = (g.pad_left as f32 / stride_x).floor() as i32;
            let lo_y = (g.pad_top as f32 / stride_y).floor() as i32;
            let hi_x = (((g.pad_left + g.new_w) as f32 / stride_x).ceil() as i32 - 1).min(pw as i32 - 1);
            let hi_y = (((g.pad_top + g.new_h) as f32 / stride_y).ceil() as i32 - 1).min(ph as i32 - 1);
            let mut out = vec![None; (eye.w * eye.h) as usize];
            for y in 0..eye.h {
                let fy = (origin_y + (y as f32 + 0.5) * step_y).max(lo_y as f32);
                let y0 = (fy.floor() as i32).min(hi_y);
                let y1 = (y0 + 1).min(hi_y);
                let ly = fy - y0 as f32;
                for x in 0..eye.w {
                    let fx = (origin_x + (x as f32 + 0.5) * step_x).max(lo_x as f32);
                    let x0 = (fx.floor() as i32).min(hi_x);
                    let x1 = (x0 + 1).min(hi_x);
                    let lx = fx - x0 as f32;
                    let mut best: Option<f32> = None;
                    for (d, m) in dets.iter().zip(&logits) {
                        let (px, py) = (x as f32, y as f32);
                        if !(px >= d.sx1 && px < d.sx2 && py >= d.sy1 && py < d.sy2) {
                            continue;
                        }
                        let at = |yy: i32, xx: i32| m[yy as usize * pw + xx as usize];
                        let top = (1.0 - lx) * at(y0, x0) + lx * at(y0, x1);
                        let bottom = (1.0 - lx) * at(y1, x0) + lx * at(y1, x1);
                        let v = (1.0 - ly) * top + ly * bottom;
                        best = Some(best.map_or(v, |b: f32| b.max(v)));
                    }
                    out[(y * eye.w + x) as usize] = best;
                }
            }
            out
        })
        .collect()
}

/// The 8-bit alpha for a pixel's largest logit, as the kernel writes it.
pub fn alpha_of(logit: Option<f32>, binary: bool) -> u8 {
    match logit {
        None => 0,
        Some(l) if binary => u8::from(l > 0.0) * 255,
        Some(l) => (255.0 / (1.0 + (-f64::from(l)).exp())).round() as u8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_layout_matches_the_kernel() {
        assert_eq!(std::mem::size_of::<YoloSegParams>(), 10 * 8 + 33 * 4 + 4);
        assert_eq!(std::mem::size_of::<Detection>(), 48);
    }

    #[test]
    fn the_matte_stages_for_video_eyes_and_samples_directly_for_tiny_ones() {
        let shape = YoloSegShape::yolo_seg(2, 640);
        let at = |w: i32, h: i32, input: i32, shape: &YoloSegShape| {
            let g = LetterboxGeometry::ultralytics(w, h, input, input);
            matte_is_staged(&g, EyeRect { x: 0, y: 0, w, h }, shape)
        };
        assert!(at(4096, 4096, 640, &shape));
        assert!(at(959, 1078, 640, &shape));
        // 640 input, 333 x 498 eyes (the GPU test's TB case): 85 columns.
        assert!(at(333, 498, 640, &shape));
        // A 37 x 23 eye at 640 input spans 162 columns: 23 rows of them do not fit.
        assert!(!at(37, 23, 640, &shape));
        // 1280 input, 250-pixel eyes: 320 proto columns across a tile.
        assert!(!at(250, 151, 1280, &YoloSegShape::yolo_seg(2, 1280)));
        assert!(at(1920, 1080, 1280, &YoloSegShape::yolo_seg(2, 1280)));
    }

    #[test]
    fn yolo_seg_shapes_at_640_and_1280() {
        let s = YoloSegShape::yolo_seg(2, 640);
        assert_eq!((s.anchors, s.proto_h, s.key_stride()), (8400, 160, 16384));
        assert_eq!(YoloSegShape::yolo_seg(1, 1280).anchors, 33600);
    }

    /// A batch of one image with hand-placed boxes: scores, classes, boxes.
    fn heads(boxes: &[([f32; 4], usize, f32)], anchors: usize) -> (Vec<f32>, YoloSegShape) {
        let shape = YoloSegShape { batch: 1, classes: 3, coefficients: 2, anchors, proto_h: 4, proto_w: 4 };
        let mut out = vec![0f32; shape.output0_elements()];
        for (i, (b, cls, score)) in boxes.iter().enumerate() {
            for (r, v) in b.iter().enumerate() {
                out[r * anchors + i] = *v;
            }
            out[(4 + cls) * anchors + i] = *score;
        }
        (out, shape)
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes_per_class() {
        // Two heavily overlapping person boxes, one overlapping box of class
        // 1 and a weak person box under the threshold.
        let (out, shape) = heads(
            &[
                ([10.0, 10.0, 8.0, 8.0], 0, 0.9),
                ([10.5, 10.0, 8.0, 8.0], 0, 0.8),
                ([10.0, 10.0, 8.0, 8.0], 1, 0.7),
                ([30.0, 30.0, 4.0, 4.0], 0, 0.2),
            ],
            5,
        );
        let g = LetterboxGeometry::ultralytics(64, 64, 64, 64);
        let eyes = [EyeRect { x: 0, y: 0, w: 64, h: 64 }];
        let config = PostprocessConfig { classes: vec![], ..Default::default() };
        let kept = nms_reference(&out, &shape, &config, &g, &eyes);
        let got: Vec<(i32, i32)> = kept[0].iter().map(|d| (d.anchor, d.class)).collect();
        assert_eq!(got, vec![(0, 0), (2, 1)]);
        assert_eq!((kept[0][0].x1, kept[0][0].y2), (6.0, 14.0));
        // Person only; agnostic NMS lets the person box suppress class 1.
        let person = nms_reference(&out, &shape, &PostprocessConfig::default(), &g, &eyes);
        assert_eq!(person[0].len(), 1);
        let agnostic = PostprocessConfig { classes: vec![], agnostic: true, ..Default::default() };
        assert_eq!(nms_reference(&out, &shape, &agnostic, &g, &eyes)[0].len(), 1);
    }

    #[test]
    fn class_filter_applies_to_the_argmax_class() {
        // Best class is 1 (0.9), person scores 0.5: not a person detection.
        let (mut out, shape) = heads(&[([10.0, 10.0, 8.0, 8.0], 1, 0.9)], 1);
        out[4] = 0.5;
        let g = LetterboxGeometry::ultralytics(64, 64, 64, 64);
        let eyes = [EyeRect { x: 0, y: 0, w: 64, h: 64 }];
        assert!(nms_reference(&out, &shape, &PostprocessConfig::default(), &g, &eyes)[0].is_empty());
    }

    #[test]
    fn boxes_scale_back_to_source_pixels() {
        // 1280x720 eye in 640x640: gain 0.5, pad top 140.
        let g = LetterboxGeometry::ultralytics(1280, 720, 640, 640);
        let (out, shape) = heads(&[([320.0, 320.0, 100.0, 60.0], 0, 0.9)], 1);
        let eyes = [EyeRect { x: 0, y: 0, w: 1280, h: 720 }];
        let d = nms_reference(&out, &shape, &PostprocessConfig::default(), &g, &eyes)[0][0];
        assert_eq!((d.sx1, d.sy1, d.sx2, d.sy2), (540.0, 300.0, 740.0, 420.0));
    }

    #[test]
    fn unknown_classes_are_refused() {
        let config = PostprocessConfig { classes: vec![80], ..Default::default() };
        assert!(config.class_mask(80).unwrap_err().contains("80 classes"));
    }

    #[test]
    fn alpha_rounds_the_sigmoid_and_binary_thresholds_at_zero() {
        assert_eq!(alpha_of(None, false), 0);
        assert_eq!(alpha_of(Some(0.0), false), 128);
        assert_eq!(alpha_of(Some(20.0), false), 255);
        assert_eq!(alpha_of(Some(1e-6), true), 255);
        assert_eq!(alpha_of(Some(0.0), true), 0);
    }
}

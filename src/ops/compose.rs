//! Compose (`kernels/compose.cu`, whose header defines the arithmetic): a
//! batch of decoded frames (NV12 or P016) and their mattes → full-colour
//! 8-bit NV12 frames of the same geometry, for `vrseg run --output green`
//! (everything but people replaced by a key colour, the matte as alpha) and
//! `--output overlay` (people tinted, detection boxes outlined).
//!
//! Chroma is 2x2-subsampled: each chroma sample blends with the mean alpha
//! of the pixels of its 2x2 block (rounded half up). Pixels outside every
//! eye rectangle have alpha 0. The CPU twin, [`compose_reference`], matches
//! the kernels bit for bit (integer arithmetic throughout).

use cudarc::driver::{CudaStream, DeviceRepr, LaunchConfig, PushKernelArg};

use super::letterbox::{eye_pair, EyeRect, YuvMatrix, MAX_BATCH_FRAMES};
use super::yolo_seg::{Detection, MAX_DETECTIONS};
use crate::gpu::error::CheckDriver;
use crate::gpu::{DeviceView, Gpu, GpuError, Kernel};
use crate::video::nvdec::FrameLayout;

/// Box colours by class: Ultralytics' palette (`ultralytics.utils.plotting.Colors`), class `c` gets `c % 20`.
pub const PALETTE_RGB: [[u8; 3]; PALETTE_COLOURS] = [
    [0xFF, 0x38, 0x38],
    [0xFF, 0x9D, 0x97],
    [0xFF, 0x70, 0x1F],
    [0xFF, 0xB2, 0x1D],
    [0xCF, 0xD2, 0x31],
    [0x48, 0xF9, 0x0A],
    [0x92, 0xCC, 0x17],
    [0x3D, 0xDB, 0x86],
    [0x1A, 0x93, 0x34],
    [0x00, 0xD4, 0xBB],
    [0x2C, 0x99, 0xA8],
    [0x00, 0xC2, 0xFF],
    [0x34, 0x45, 0x93],
    [0x64, 0x73, 0xFF],
    [0x00, 0x18, 0xEC],
    [0x84, 0x38, 0xFF],
    [0x52, 0x00, 0x85],
    [0xCB, 0x38, 0xFF],
    [0xFF, 0x95, 0xC8],
    [0xFF, 0x37, 0xC7],
];
pub const PALETTE_COLOURS: usize = 20;

/// The default key colour of `--output green`: pure green.
pub const DEFAULT_KEY_RGB: [u8; 3] = [0, 255, 0];
/// The overlay's mask tint: the palette's person colour.
pub const OVERLAY_TINT_RGB: [u8; 3] = PALETTE_RGB[0];
/// The tint's weight at full alpha, out of 255: 115/255 = 45%.
pub const TINT_WEIGHT: u32 = 115;

/// Threads per block (x, y): one per 2x2 luma quad, a 64 x 16 pixel tile.
const BLOCK: (u32, u32) = (32, 8);

/// An 8-bit Y'CbCr colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ycbcr8 {
    pub y: u8,
    pub cb: u8,
    pub cr: u8,
}

impl Ycbcr8 {
    /// 8-bit R'G'B' in `matrix`, limited (16-235/240) or full range, rounded.
    pub fn from_rgb(rgb: [u8; 3], matrix: YuvMatrix, full_range: bool) -> Ycbcr8 {
        let (kr, kb) = matrix.kr_kb();
        let kg = 1.0 - kr - kb;
        let [r, g, b] = rgb.map(|c| f64::from(c) / 255.0);
        let y = kr * r + kg * g + kb * b;
        let pb = (b - y) / (2.0 * (1.0 - kb));
        let pr = (r - y) / (2.0 * (1.0 - kr));
        let code = |v: f64| v.round().clamp(0.0, 255.0) as u8;
        if full_range {
            Ycbcr8 { y: code(255.0 * y), cb: code(128.0 + 255.0 * pb), cr: code(128.0 + 255.0 * pr) }
        } else {
            Ycbcr8 { y: code(16.0 + 219.0 * y), cb: code(128.0 + 224.0 * pb), cr: code(128.0 + 224.0 * pr) }
        }
    }

    fn packed(self) -> u32 {
        u32::from(self.y) | u32::from(self.cb) << 8 | u32::from(self.cr) << 16
    }
}

/// Outline width for eyes of this size: 2 px up to ~1.5K, 3 px to ~2.5K, 4 px
/// from ~3.5K (max(w, h) / 1024, rounded, clamped to 2..=4).
pub fn outline_thickness(eye: EyeRect) -> i32 {
    ((f64::from(eye.w.max(eye.h)) / 1024.0).round() as i32).clamp(2, 4)
}

/// Where the overlay's boxes are: the postprocess's detection buffers
/// (`YoloSegBuffers::detections` / `detection_counts`), image `f * eyes + e`
/// holding `max_det` slots of which the first `count` are kept detections.
#[derive(Debug, Clone, Copy)]
pub struct BoxSource<'a, 'pool> {
    pub detections: &'a DeviceView<'pool>,
    pub counts: &'a DeviceView<'pool>,
    pub max_det: usize,
}

/// What to compose.
#[derive(Debug, Clone, Copy)]
pub enum ComposeMode<'a, 'pool> {
    /// out = a * src + (1 - a) * key.
    Green { key: Ycbcr8 },
    /// out = src + (tint - src) * a * TINT_WEIGHT / 255², then box outlines.
    Overlay { tint: Ycbcr8, palette: [Ycbcr8; PALETTE_COLOURS], thickness: i32, boxes: BoxSource<'a, 'pool> },
}

/// 8-bit frames in a batch buffer: frame `f` at `f * frame_stride`, rows `pitch` apart.
#[derive(Debug, Clone, Copy)]
pub struct FrameBatch<'a, 'pool> {
    pub view: &'a DeviceView<'pool>,
    pub pitch: usize,
    pub frame_stride: usize,
}

/// One batch to compose.
pub struct ComposeJob<'a, 'pool> {
    /// Decoded frames (pool slots), in batch order.
    pub frames: &'a [DeviceView<'pool>],
    pub layout: FrameLayout,
    /// 1 or 2 eye rectangles inside the frame.
    pub eyes: &'a [EyeRect],
    /// The batch's mattes (one luma plane each, the frame's size).
    pub mattes: FrameBatch<'a, 'pool>,
    /// NV12 output frames: `height` luma rows, then `ceil(height / 2)` UV rows, at `pitch`.
    pub out: FrameBatch<'a, 'pool>,
    pub mode: ComposeMode<'a, 'pool>,
}

/// Mirrors `ComposeParams` in kernels/compose.cu field for field.
#[repr(C)]
#[derive(Clone, Copy)]
struct ComposeParams {
    frames: [u64; MAX_BATCH_FRAMES],
    pitch: u64,
    chroma_offset: u64,
    matte: u64,
    matte_pitch: u64,
    matte_frame_stride: u64,
    out: u64,
    out_pitch: u64,
    out_frame_stride: u64,
    detections: u64,
    detection_counts: u64,
    width: i32,
    height: i32,
    frame_count: i32,
    eyes: i32,
    eye: [EyeRect; 2],
    max_det: i32,
    thickness: i32,
    colour: u32,
    tint_weight: u32,
    palette: [u32; PALETTE_COLOURS],
}

// SAFETY: plain `repr(C)` integers in the kernel struct's order
// (`params_layout_matches_the_kernel` pins the size).
unsafe impl DeviceRepr for ComposeParams {}

impl ComposeJob<'_, '_> {
    fn validate(&self) -> Result<(), GpuError> {
        let invalid = |reason: String| GpuError::InvalidLaunch { kernel: "compose", reason };
        let n = self.frames.len();
        if n == 0 || n > MAX_BATCH_FRAMES {
            return Err(invalid(format!("{n} frames in one batch (1 to {MAX_BATCH_FRAMES})")));
        }
        let l = &self.layout;
        let (w, h) = (l.width as usize, l.height as usize);
        if w == 0 || h == 0 {
            return Err(invalid(format!("empty frame {w}x{h}")));
        }
        if self.eyes.is_empty() || self.eyes.len() > 2 {
            return Err(invalid(format!("{} eye rectangles (1 or 2)", self.eyes.len())));
        }
        for e in self.eyes {
            if e.w <= 0 || e.h <= 0 || e.x < 0 || e.y < 0 || (e.x + e.w) as usize > w || (e.y + e.h) as usize > h {
                return Err(invalid(format!("eye {e:?} is not inside the {w}x{h} frame")));
            }
        }
        if !matches!(l.bytes_per_sample, 1 | 2) {
            return Err(invalid(format!("{} bytes per sample (1: NV12, 2: P016)", l.bytes_per_sample)));
        }
        // Pairs of samples are read and written as 2- and 4-byte vectors at even columns.
        if l.pitch % 4 != 0 || l.chroma_offset % 4 != 0 || l.pitch < l.chroma_row_bytes().max(l.luma_row_bytes()) {
            return Err(invalid(format!(
                "frame pitch {} / chroma offset {} (multiples of 4, pitch at least a row)",
                l.pitch, l.chroma_offset
            )));
        }
        if l.chroma_offset < l.pitch * h {
            return Err(invalid(format!("chroma offset {} overlaps the {h} luma rows", l.chroma_offset)));
        }
        for f in self.frames {
            if f.bytes() < l.slot_bytes() {
                return Err(f.too_small(l.slot_bytes(), "compose input frame"));
            }
            if f.ptr() % 4 != 0 {
                return Err(invalid(format!("frame `{}` is not 4-byte aligned", f.name())));
            }
        }
        let chroma_row = w.div_ceil(2) * 2;
        let check_batch = |b: &FrameBatch, rows: usize, what: &'static str| -> Result<(), GpuError> {
            if b.pitch % 2 != 0 || b.view.ptr() % 2 != 0 || b.frame_stride % 2 != 0 || b.pitch < chroma_row {
                return Err(invalid(format!(
                    "{what}: pitch {} / frame stride {} must be even and hold a {chroma_row}-byte row",
                    b.pitch, b.frame_stride
                )));
            }
            if b.frame_stride < b.pitch * rows {
                return Err(invalid(format!(
                    "{what}: frame stride {} under {rows} rows of {}",
                    b.frame_stride, b.pitch
                )));
            }
            let need = (n - 1) * b.frame_stride + b.pitch * rows;
            if b.view.bytes() < need {
                return Err(b.view.too_small(need, what));
            }
            Ok(())
        };
        check_batch(&self.mattes, h, "compose mattes")?;
        check_batch(&self.out, h + h.div_ceil(2), "compose output")?;
        if let ComposeMode::Overlay { thickness, boxes, .. } = &self.mode {
            if !(1..=64).contains(thickness) {
                return Err(invalid(format!("outline thickness {thickness} (1 to 64)")));
            }
            if boxes.max_det == 0 || boxes.max_det > MAX_DETECTIONS {
                return Err(invalid(format!("max_det {} (1 to {MAX_DETECTIONS})", boxes.max_det)));
            }
            let images = n * self.eyes.len();
            boxes.counts.require::<u32>(images, "compose detection counts")?;
            boxes.detections.require::<Detection>(images * boxes.max_det, "compose detections")?;
        }
        Ok(())
    }
}

/// Enqueues the compose of one batch on `stream`.
pub fn compose(gpu: &Gpu, stream: &CudaStream, job: &ComposeJob) -> Result<(), GpuError> {
    job.validate()?;
    let l = &job.layout;
    let p016 = l.bytes_per_sample == 2;
    let mut frames = [0u64; MAX_BATCH_FRAMES];
    for (slot, view) in frames.iter_mut().zip(job.frames) {
        *slot = view.ptr();
    }
    let mut params = ComposeParams {
        frames,
        pitch: l.pitch as u64,
        chroma_offset: l.chroma_offset as u64,
        matte: job.mattes.view.ptr(),
        matte_pitch: job.mattes.pitch as u64,
        matte_frame_stride: job.mattes.frame_stride as u64,
        out: job.out.view.ptr(),
        out_pitch: job.out.pitch as u64,
        out_frame_stride: job.out.frame_stride as u64,
        detections: 0,
        detection_counts: 0,
        width: l.width as i32,
        height: l.height as i32,
        frame_count: job.frames.len() as i32,
        eyes: job.eyes.len() as i32,
        eye: eye_pair(job.eyes),
        max_det: 0,
        thickness: 0,
        colour: 0,
        tint_weight: 0,
        palette: [0; PALETTE_COLOURS],
    };
    let kernel = match job.mode {
        ComposeMode::Green { key } => {
            params.colour = key.packed();
            if p016 {
                Kernel::ComposeGreenP016
            } else {
                Kernel::ComposeGreenNv12
            }
        }
        ComposeMode::Overlay { tint, palette, thickness, boxes } => {
            params.colour = tint.packed();
            params.tint_weight = TINT_WEIGHT;
            params.palette = palette.map(Ycbcr8::packed);
            params.thickness = thickness;
            params.max_det = boxes.max_det as i32;
            params.detections = boxes.detections.ptr();
            params.detection_counts = boxes.counts.ptr();
            if p016 {
                Kernel::ComposeOverlayP016
            } else {
                Kernel::ComposeOverlayNv12
            }
        }
    };
    let quads = (l.width.div_ceil(2), l.height.div_ceil(2));
    let config = LaunchConfig {
        grid_dim: (quads.0.div_ceil(BLOCK.0), quads.1.div_ceil(BLOCK.1), job.frames.len() as u32),
        block_dim: (BLOCK.0, BLOCK.1, 1),
        shared_mem_bytes: 0,
    };
    let function = gpu.kernels().function(gpu.context(), kernel)?;
    // SAFETY: `params` matches the kernel's struct (see DeviceRepr above); every
    // frame pointer holds a whole frame of `layout`, the matte and output
    // batches hold `frames` frames of their strides, and the detection buffers
    // hold `frames * eyes` images of `max_det` (checked by `validate`); the
    // views live in a pool that synchronises before it frees.
    unsafe { stream.launch_builder(function).arg(&params).launch(config) }
        .check_with("cuLaunchKernel", || format!("{} on `{}`", kernel.symbol(), job.out.view.name()))?;
    Ok(())
}

// ---- CPU reference ----------------------------------------------------------

/// What the CPU reference composes (the host-side twin of [`ComposeMode`]).
#[derive(Debug, Clone, Copy)]
pub enum ReferenceMode<'a> {
    Green {
        key: Ycbcr8,
    },
    /// `detections[e]`: the kept detections of eye `e` of this frame.
    Overlay {
        tint: Ycbcr8,
        palette: [Ycbcr8; PALETTE_COLOURS],
        thickness: i32,
        detections: &'a [&'a [Detection]],
    },
}

fn blend(v16: u32, colour8: u8, wc: u64, w_total: u64) -> u8 {
    let num = (w_total - wc) * u64::from(v16) + wc * (u64::from(colour8) << 8) + w_total * 128;
    (num / (w_total * 256)).min(255) as u8
}

/// The inclusive pixel rectangle a detection outlines, in frame coordinates
/// (the kernel's rule, f32 for f32), or `None` when it draws nothing.
pub fn box_rect(d: &Detection, eye: EyeRect) -> Option<[i32; 4]> {
    if !(d.sx1 < d.sx2 && d.sy1 < d.sy2) {
        return None;
    }
    let (ew, eh) = (eye.w as f32, eye.h as f32);
    let clip = |v: f32, hi: f32| v.max(0.0).min(hi);
    let x0 = clip(d.sx1, ew).floor() as i32;
    let y0 = clip(d.sy1, eh).floor() as i32;
    let x1 = (clip(d.sx2, ew).ceil() as i32 - 1).min(eye.w - 1);
    let y1 = (clip(d.sy2, eh).ceil() as i32 - 1).min(eye.h - 1);
    (x0 <= x1 && y0 <= y1).then_some([x0 + eye.x, y0 + eye.y, x1 + eye.x, y1 + eye.y])
}

/// CPU reference of one frame: `frame` laid out as `layout` says (samples
/// little-endian), `matte` rows `matte_pitch` apart. Returns the packed NV12
/// frame: `height` rows of `width` bytes, then `ceil(height / 2)` rows of
/// `2 * ceil(width / 2)` bytes.
pub fn compose_reference(
    frame: &[u8],
    layout: &FrameLayout,
    eyes: &[EyeRect],
    matte: &[u8],
    matte_pitch: usize,
    mode: &ReferenceMode,
) -> Vec<u8> {
    let (w, h) = (layout.width as usize, layout.height as usize);
    let bps = layout.bytes_per_sample as usize;
    let sample16 = |offset: usize| -> u32 {
        if bps == 2 {
            u32::from(u16::from_le_bytes([frame[offset], frame[offset + 1]]))
        } else {
            u32::from(frame[offset]) << 8
        }
    };
    let alpha = |x: usize, y: usize| -> u32 {
        let inside = eyes.iter().any(|e| {
            let (x, y) = (x as i32, y as i32);
            x >= e.x && x < e.x + e.w && y >= e.y && y < e.y + e.h
        });
        if inside {
            u32::from(matte[y * matte_pitch + x])
        } else {
            0
        }
    };
    let (colour, w_total, weight): (Ycbcr8, u64, Box<dyn Fn(u32) -> u64>) = match mode {
        ReferenceMode::Green { key } => (*key, 255, Box::new(|a| u64::from(255 - a))),
        ReferenceMode::Overlay { tint, .. } => (*tint, 255 * 255, Box::new(|a| u64::from(TINT_WEIGHT * a))),
    };
    // Outline colour of each pixel: the first box in detection order whose outline holds it.
    let mut outline: Vec<Option<Ycbcr8>> = vec![None; w * h];
    if let ReferenceMode::Overlay { palette, thickness: t, detections, .. } = mode {
        let t = *t;
        for (e, dets) in detections.iter().enumerate() {
            for d in dets.iter() {
                let Some([x0, y0, x1, y1]) = box_rect(d, eyes[e]) else { continue };
                let c = palette[(d.class as u32 as usize) % PALETTE_COLOURS];
                for y in y0..=y1 {
                    // Rows near the top or bottom are outline across; the others only near the sides.
                    let across = y < y0 + t || y > y1 - t;
                    let (left_end, right_start) =
                        if across { (x1, x1 + 1) } else { ((x0 + t - 1).min(x1), (x1 - t + 1).max(x0 + t)) };
                    for x in (x0..=left_end).chain(right_start..=x1) {
                        let o = &mut outline[y as usize * w + x as usize];
                        if o.is_none() {
                            *o = Some(c);
                        }
                    }
                }
            }
        }
    }
    let chroma_row = w.div_ceil(2) * 2;
    let mut out = vec![0u8; w * h + chroma_row * h.div_ceil(2)];
    for y in 0..h {
        for x in 0..w {
            out[y * w + x] = match outline[y * w + x] {
                Some(c) => c.y,
                None => blend(sample16(y * layout.pitch + x * bps), colour.y, weight(alpha(x, y)), w_total),
            };
        }
    }
    for cy in 0..h.div_ceil(2) {
        for cx in 0..w.div_ceil(2) {
            let (mut sum, mut n) = (0u32, 0u32);
            for (x, y) in [(2 * cx, 2 * cy), (2 * cx + 1, 2 * cy), (2 * cx, 2 * cy + 1), (2 * cx + 1, 2 * cy + 1)] {
                if x < w && y < h {
                    sum += alpha(x, y);
                    n += 1;
                }
            }
            let a = (sum + n / 2) / n;
            let src = layout.chroma_offset + cy * layout.pitch + 2 * cx * bps;
            let (u, v) = match outline[2 * cy * w + 2 * cx] {
                Some(c) => (c.cb, c.cr),
                None => (
                    blend(sample16(src), colour.cb, weight(a), w_total),
                    blend(sample16(src + bps), colour.cr, weight(a), w_total),
                ),
            };
            let at = w * h + cy * chroma_row + 2 * cx;
            out[at] = u;
            out[at + 1] = v;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_layout_matches_the_kernel() {
        // 64 frame pointers + 10 u64 fields, then 4 + 8 + 4 + 20 four-byte fields.
        assert_eq!(std::mem::size_of::<ComposeParams>(), 74 * 8 + 36 * 4);
        assert_eq!(std::mem::align_of::<ComposeParams>(), 8);
    }

    #[test]
    fn green_is_the_usual_codes_in_each_matrix_and_range() {
        // BT.709 limited: (0, 255, 0) → Y 173, Cb 42, Cr 26 (the textbook 8-bit values).
        assert_eq!(Ycbcr8::from_rgb([0, 255, 0], YuvMatrix::Bt709, false), Ycbcr8 { y: 173, cb: 42, cr: 26 });
        // BT.601 full range (JPEG): Y 150, Cb 44, Cr 21.
        assert_eq!(Ycbcr8::from_rgb([0, 255, 0], YuvMatrix::Bt601, true), Ycbcr8 { y: 150, cb: 44, cr: 21 });
        // Grey stays neutral in every matrix.
        for m in [YuvMatrix::Bt601, YuvMatrix::Bt709, YuvMatrix::Bt2020] {
            let g = Ycbcr8::from_rgb([128, 128, 128], m, true);
            assert_eq!((g.cb, g.cr), (128, 128));
        }
    }

    #[test]
    fn blend_is_exact_at_the_ends() {
        for s in [0u32, 1, 127, 254, 255] {
            // Full alpha keeps an 8-bit source; none gives the key.
            assert_eq!(u32::from(blend(s << 8, 77, 0, 255)), s);
            assert_eq!(blend(s << 8, 77, 255, 255), 77);
        }
        // P016: rounds to 8 bits, saturating at the top.
        assert_eq!(blend(0xFFC0, 0, 0, 255), 255);
        assert_eq!(blend(940 << 6, 0, 0, 255), 235);
        // Overlay at full alpha: 45% of the way to the tint.
        assert_eq!(blend(100 << 8, 200, u64::from(TINT_WEIGHT) * 255, 255 * 255), 145);
    }

    #[test]
    fn boxes_cover_their_pixels_and_empty_ones_draw_nothing() {
        let eye = EyeRect { x: 10, y: 0, w: 20, h: 10 };
        let d = |sx1, sy1, sx2, sy2| Detection { sx1, sy1, sx2, sy2, ..Default::default() };
        assert_eq!(box_rect(&d(0.0, 0.0, 20.0, 10.0), eye), Some([10, 0, 29, 9]));
        assert_eq!(box_rect(&d(2.5, 1.2, 3.1, 1.9), eye), Some([12, 1, 13, 1]));
        assert_eq!(box_rect(&d(3.0, 1.0, 3.0, 5.0), eye), None);
        assert_eq!(box_rect(&d(f32::NAN, 1.0, 3.0, 5.0), eye), None);
        assert_eq!(box_rect(&d(-5.0, -1.0, 99.0, 50.0), eye), Some([10, 0, 29, 9]));
        assert_eq!(outline_thickness(EyeRect { x: 0, y: 0, w: 4096, h: 4096 }), 4);
        assert_eq!(outline_thickness(EyeRect { x: 0, y: 0, w: 959, h: 1078 }), 2);
        assert_eq!(outline_thickness(EyeRect { x: 0, y: 0, w: 2880, h: 2880 }), 3);
    }
}

//! Preprocess: decoded NV12/P016 frames → the model's letterboxed RGB FP16
//! input, both eyes of every frame of a batch in one launch
//! (`kernels/letterbox.cu`, whose header defines the resampling).
//!
//! Tensor order: `[frames * eyes, 3, in_h, in_w]`, image `f * eyes + e` is
//! eye `e` of frame `f`; eye 0 is the left (SBS) or top (TB) eye as the
//! caller's rectangles say, channels R, G, B, values in [0, 1].

use cudarc::driver::{CudaStream, DeviceRepr, LaunchConfig, PushKernelArg};

use crate::gpu::error::CheckDriver;
use crate::gpu::{DeviceView, Gpu, GpuError, Kernel};
use crate::video::chunk::ColourDescription;
use crate::video::layout::StereoLayout;
use crate::video::nvdec::FrameLayout;

/// Frames one launch takes (the kernel's pointer table).
pub const MAX_BATCH_FRAMES: usize = 64;

/// Ultralytics' padding grey, 114/255.
pub const PAD_VALUE: f32 = 114.0 / 255.0;

/// A rectangle of a frame, in luma pixels.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, bytemuck::Pod, bytemuck::Zeroable, serde::Serialize)]
pub struct EyeRect {
    pub x: i32,
    pub y: i32,
    pub w: i32,
    pub h: i32,
}

/// The eyes of a `width` x `height` frame: SBS halves (left first), TB
/// halves (top first), or the whole frame. With an odd split the middle
/// column/row is left out, so both eyes have the same size.
pub fn eye_rects(layout: StereoLayout, width: u32, height: u32) -> Vec<EyeRect> {
    let (w, h) = (width as i32, height as i32);
    match layout {
        StereoLayout::Sbs => {
            let eye = w / 2;
            vec![EyeRect { x: 0, y: 0, w: eye, h }, EyeRect { x: w - eye, y: 0, w: eye, h }]
        }
        StereoLayout::Tb => {
            let eye = h / 2;
            vec![EyeRect { x: 0, y: 0, w, h: eye }, EyeRect { x: 0, y: h - eye, w, h: eye }]
        }
        StereoLayout::Mono => vec![EyeRect { x: 0, y: 0, w, h }],
    }
}

/// The kernels' fixed pair of eye rectangles: a mono frame repeats its one
/// eye (the kernels read only `eyes` of them).
pub(crate) fn eye_pair(eyes: &[EyeRect]) -> [EyeRect; 2] {
    [eyes[0], *eyes.get(1).unwrap_or(&eyes[0])]
}

/// Python's `round` (ties to even), which Ultralytics' geometry uses.
fn py_round(x: f64) -> i32 {
    x.round_ties_even() as i32
}

/// Where an eye lands in the model input, exactly as Ultralytics' `LetterBox`
/// (8.4.190: `auto=False`, `scaleup=True`, `center=True`) computes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct LetterboxGeometry {
    pub in_w: i32,
    pub in_h: i32,
    pub new_w: i32,
    pub new_h: i32,
    pub pad_left: i32,
    pub pad_top: i32,
}

impl LetterboxGeometry {
    pub fn ultralytics(eye_w: i32, eye_h: i32, in_w: i32, in_h: i32) -> LetterboxGeometry {
        let r = (f64::from(in_h) / f64::from(eye_h)).min(f64::from(in_w) / f64::from(eye_w));
        let new_w = py_round(f64::from(eye_w) * r).max(1);
        let new_h = py_round(f64::from(eye_h) * r).max(1);
        let dw = f64::from(in_w - new_w) / 2.0;
        let dh = f64::from(in_h - new_h) / 2.0;
        LetterboxGeometry { in_w, in_h, new_w, new_h, pad_left: py_round(dw - 0.1), pad_top: py_round(dh - 0.1) }
    }
}

/// Y'CbCr matrices by their ITU-T H.273 MatrixCoefficients codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum YuvMatrix {
    Bt601,
    Bt709,
    Bt2020,
}

impl YuvMatrix {
    /// The stream's matrix, or the usual guess when it does not say:
    /// BT.2020 for 10-bit UHD, BT.709 for HD and larger, BT.601 below.
    pub fn for_stream(colour: &ColourDescription, width: u32, height: u32, bit_depth: u8) -> YuvMatrix {
        match colour.matrix {
            Some(1) => YuvMatrix::Bt709,
            Some(5 | 6) => YuvMatrix::Bt601,
            Some(9 | 10) => YuvMatrix::Bt2020,
            _ if bit_depth > 8 && width.max(height) > 4096 => YuvMatrix::Bt2020,
            _ if height >= 720 || width >= 1280 => YuvMatrix::Bt709,
            _ => YuvMatrix::Bt601,
        }
    }

    /// (Kr, Kb).
    pub(crate) fn kr_kb(self) -> (f64, f64) {
        match self {
            YuvMatrix::Bt601 => (0.299, 0.114),
            YuvMatrix::Bt709 => (0.2126, 0.0722),
            YuvMatrix::Bt2020 => (0.2627, 0.0593),
        }
    }
}

/// Code values → normalised R'G'B': Y' = (Y - y_offset) * y_scale,
/// Pb/Pr = (C - c_offset) * c_scale, then the matrix rows.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable, serde::Serialize)]
pub struct YuvToRgb {
    pub y_offset: f32,
    pub y_scale: f32,
    pub c_offset: f32,
    pub c_scale: f32,
    pub r_cr: f32,
    pub g_cb: f32,
    pub g_cr: f32,
    pub b_cb: f32,
}

impl YuvToRgb {
    pub fn new(matrix: YuvMatrix, full_range: bool, bit_depth: u8) -> YuvToRgb {
        let (kr, kb) = matrix.kr_kb();
        let kg = 1.0 - kr - kb;
        let unit = f64::from(1u32 << (bit_depth - 8));
        let (y_offset, y_scale, c_scale) = if full_range {
            let max = f64::from((1u32 << bit_depth) - 1);
            (0.0, 1.0 / max, 1.0 / max)
        } else {
            (16.0 * unit, 1.0 / (219.0 * unit), 1.0 / (224.0 * unit))
        };
        YuvToRgb {
            y_offset: y_offset as f32,
            y_scale: y_scale as f32,
            c_offset: (128.0 * unit) as f32,
            c_scale: c_scale as f32,
            r_cr: (2.0 * (1.0 - kr)) as f32,
            g_cb: (-2.0 * (1.0 - kb) * kb / kg) as f32,
            g_cr: (-2.0 * (1.0 - kr) * kr / kg) as f32,
            b_cb: (2.0 * (1.0 - kb)) as f32,
        }
    }

    /// For a stream: its matrix and range, limited range when unsignalled.
    pub fn for_stream(colour: &ColourDescription, width: u32, height: u32, bit_depth: u8) -> YuvToRgb {
        YuvToRgb::new(
            YuvMatrix::for_stream(colour, width, height, bit_depth),
            colour.full_range.unwrap_or(false),
            bit_depth,
        )
    }

    fn convert(&self, y: f64, cb: f64, cr: f64) -> [f64; 3] {
        let yn = (y - f64::from(self.y_offset)) * f64::from(self.y_scale);
        let pb = (cb - f64::from(self.c_offset)) * f64::from(self.c_scale);
        let pr = (cr - f64::from(self.c_offset)) * f64::from(self.c_scale);
        [
            (yn + f64::from(self.r_cr) * pr).clamp(0.0, 1.0),
            (yn + f64::from(self.g_cb) * pb + f64::from(self.g_cr) * pr).clamp(0.0, 1.0),
            (yn + f64::from(self.b_cb) * pb).clamp(0.0, 1.0),
        ]
    }
}

/// Mirrors `LetterboxParams` in kernels/letterbox.cu field for field.
#[repr(C)]
#[derive(Clone, Copy)]
struct LetterboxParams {
    frames: [u64; MAX_BATCH_FRAMES],
    pitch: u64,
    chroma_offset: u64,
    out: u64,
    frame_count: i32,
    eyes: i32,
    eye: [EyeRect; 2],
    bytes_per_sample: i32,
    shift: i32,
    colour: YuvToRgb,
    out_w: i32,
    out_h: i32,
    new_w: i32,
    new_h: i32,
    pad_left: i32,
    pad_top: i32,
    pad_value: f32,
    scale_x: f32,
    scale_y: f32,
}

// SAFETY: plain `repr(C)` data of integers and floats whose layout matches the
// kernel's struct (the field order and types are the same; the test
// `params_layout_matches_the_kernel` pins the size).
unsafe impl DeviceRepr for LetterboxParams {}

/// One batch to preprocess.
pub struct LetterboxJob<'a, 'pool> {
    /// Decoded frames (pool slots), in batch order.
    pub frames: &'a [DeviceView<'pool>],
    pub layout: FrameLayout,
    /// Bit depth of the stream (8, 10 or 12); P016 keeps codes in the high bits.
    pub bit_depth: u8,
    /// 1 or 2 eye rectangles, all of one size.
    pub eyes: &'a [EyeRect],
    pub colour: YuvToRgb,
    pub geometry: LetterboxGeometry,
    /// FP16 tensor of `frames.len() * eyes.len() * 3 * in_h * in_w` elements.
    pub out: &'a DeviceView<'pool>,
}

impl LetterboxJob<'_, '_> {
    pub fn output_elements(&self) -> usize {
        self.frames.len() * self.eyes.len() * 3 * self.geometry.in_h as usize * self.geometry.in_w as usize
    }

    fn validate(&self) -> Result<(), GpuError> {
        let invalid = |reason: String| GpuError::InvalidLaunch { kernel: "letterbox", reason };
        if self.frames.is_empty() || self.frames.len() > MAX_BATCH_FRAMES {
            return Err(invalid(format!("{} frames in one batch (1 to {MAX_BATCH_FRAMES})", self.frames.len())));
        }
        if self.eyes.is_empty() || self.eyes.len() > 2 {
            return Err(invalid(format!("{} eye rectangles (1 or 2)", self.eyes.len())));
        }
        let (fw, fh) = (self.layout.width as i32, self.layout.height as i32);
        for e in self.eyes {
            if e.w <= 0 || e.h <= 0 || e.x < 0 || e.y < 0 || e.x + e.w > fw || e.y + e.h > fh {
                return Err(invalid(format!("eye {e:?} is not inside the {fw}x{fh} frame")));
            }
            if (e.w, e.h) != (self.eyes[0].w, self.eyes[0].h) {
                return Err(invalid("eyes of different sizes".into()));
            }
        }
        let g = &self.geometry;
        if g.in_w <= 0 || g.in_h <= 0 || g.new_w <= 0 || g.new_h <= 0 {
            return Err(invalid(format!("empty model input geometry {g:?}")));
        }
        if g.pad_left < 0 || g.pad_top < 0 || g.pad_left + g.new_w > g.in_w || g.pad_top + g.new_h > g.in_h {
            return Err(invalid(format!("the resized eye does not fit the model input: {g:?}")));
        }
        let bytes_per_sample = if self.bit_depth > 8 { 2 } else { 1 };
        if bytes_per_sample != self.layout.bytes_per_sample || !(8..=16).contains(&self.bit_depth) {
            return Err(invalid(format!(
                "{}-bit samples in a frame of {} bytes per sample",
                self.bit_depth, self.layout.bytes_per_sample
            )));
        }
        // The kernel reads rows in aligned 16-byte chunks.
        if self.layout.pitch % 16 != 0 || self.layout.chroma_offset % 16 != 0 {
            return Err(invalid(format!(
                "pitch {} and chroma offset {} must be multiples of 16",
                self.layout.pitch, self.layout.chroma_offset
            )));
        }
        for f in self.frames {
            if f.bytes() < self.layout.slot_bytes() {
                return Err(f.too_small(self.layout.slot_bytes(), "letterbox input"));
            }
            if f.ptr() % 16 != 0 {
                return Err(invalid(format!("frame `{}` is not 16-byte aligned", f.name())));
            }
        }
        self.out.require::<half::f16>(self.output_elements(), "letterbox output")
    }
}

/// Shared-memory floats for `samples` samples at the kernel's skewed
/// indices (one padding word every 32): `skewed_len` in letterbox.cu.
fn skewed_len(samples: usize) -> usize {
    samples + samples / 32 + 1
}

/// Bytes of dynamic shared memory one block of the kernel uses: the vertical
/// sums of the eye's luma and chroma chunks (`chunk_span` in letterbox.cu) and
/// one row of resampled luma.
fn letterbox_shared_bytes(eye: EyeRect, bytes_per_sample: usize, new_w: i32) -> usize {
    let per_chunk = 16 / bytes_per_sample;
    let chunks = |first: i32, last: i32, comps: usize| -> usize {
        let begin = (first as usize * comps * bytes_per_sample) & !15;
        let end = (last as usize + 1) * comps * bytes_per_sample;
        (end - begin).div_ceil(16)
    };
    let luma = chunks(eye.x, eye.x + eye.w - 1, 1);
    let chroma = chunks(eye.x / 2, (eye.x + eye.w - 1) / 2, 2);
    4 * (skewed_len(luma * per_chunk) + skewed_len(chroma * per_chunk) + new_w as usize)
}

/// Enqueues the preprocess of one batch on `stream`.
pub fn letterbox(gpu: &Gpu, stream: &CudaStream, job: &LetterboxJob) -> Result<(), GpuError> {
    job.validate()?;
    let g = job.geometry;
    let eye = job.eyes[0];
    let kernel = if job.layout.bytes_per_sample == 2 { Kernel::LetterboxP016F16 } else { Kernel::LetterboxNv12F16 };
    // Eyes of one size can still straddle different 16-byte chunk counts (the
    // right eye of an odd split starts mid-chunk): size for the larger.
    let shared_mem_bytes = job
        .eyes
        .iter()
        .map(|e| letterbox_shared_bytes(*e, job.layout.bytes_per_sample as usize, g.new_w))
        .max()
        .unwrap_or(0);
    let mut frames = [0u64; MAX_BATCH_FRAMES];
    for (slot, view) in frames.iter_mut().zip(job.frames) {
        *slot = view.ptr();
    }
    let params = LetterboxParams {
        frames,
        pitch: job.layout.pitch as u64,
        chroma_offset: job.layout.chroma_offset as u64,
        out: job.out.ptr(),
        frame_count: job.frames.len() as i32,
        eyes: job.eyes.len() as i32,
        eye: eye_pair(job.eyes),
        bytes_per_sample: job.layout.bytes_per_sample as i32,
        shift: if job.layout.bytes_per_sample == 2 { 16 - i32::from(job.bit_depth) } else { 0 },
        colour: job.colour,
        out_w: g.in_w,
        out_h: g.in_h,
        new_w: g.new_w,
        new_h: g.new_h,
        pad_left: g.pad_left,
        pad_top: g.pad_top,
        pad_value: PAD_VALUE,
        scale_x: eye.w as f32 / g.new_w as f32,
        scale_y: eye.h as f32 / g.new_h as f32,
    };
    let images = (job.frames.len() * job.eyes.len()) as u32;
    let config = LaunchConfig {
        grid_dim: (g.in_h as u32, images, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: shared_mem_bytes as u32,
    };
    let function = gpu.kernels().function(gpu.context(), kernel)?;
    gpu.allow_dynamic_shared_memory(function, kernel, shared_mem_bytes)?;
    // SAFETY: `params` matches the kernel's struct (see DeviceRepr above);
    // every frame pointer holds a whole frame of `layout` and the output holds
    // the whole tensor (checked by `validate`); the views live in a pool that
    // synchronises before it frees.
    unsafe { stream.launch_builder(function).arg(&params).launch(config) }
        .check_with("cuLaunchKernel", || format!("{} on `{}`", kernel.symbol(), job.out.name()))?;
    Ok(())
}

/// The source samples one output coordinate reads along one axis and their
/// weights: the kernel's `axis_taps`, in f64.
fn axis_taps(u: i32, s: f64, start: i32, len: i32, sub: i32) -> Vec<(i32, f64)> {
    let lo = start / sub;
    let hi = (start + len - 1) / sub;
    let sub_f = f64::from(sub);
    if s > 1.0 {
        let a = (f64::from(start) + f64::from(u) * s) / sub_f;
        let b = (f64::from(start) + f64::from(u + 1) * s) / sub_f;
        let first = (a.floor() as i32).max(lo);
        let last = ((b.ceil() as i32) - 1).min(hi);
        (first..=last)
            .map(|i| (i, (f64::from(i + 1).min(b) - f64::from(i).max(a)).max(0.0)))
            .filter(|&(_, w)| w > 0.0)
            .collect()
    } else {
        let c = (f64::from(start) + (f64::from(u) + 0.5) * s) / sub_f - 0.5;
        let i0 = c.floor();
        let frac = c - i0;
        let i0 = i0 as i32;
        vec![(i0.clamp(lo, hi), 1.0 - frac), ((i0 + 1).clamp(lo, hi), frac)]
    }
}

/// CPU reference of one batch: `frames` holds each frame as laid out in a
/// pool slot (`layout`'s pitch and chroma offset; samples little-endian).
/// Returns the `[frames * eyes, 3, in_h, in_w]` tensor in f32.
pub fn letterbox_reference(
    frames: &[&[u8]],
    layout: &FrameLayout,
    bit_depth: u8,
    eyes: &[EyeRect],
    colour: &YuvToRgb,
    g: &LetterboxGeometry,
) -> Vec<f32> {
    let (in_w, in_h) = (g.in_w as usize, g.in_h as usize);
    let plane = in_w * in_h;
    let mut out = vec![0f32; frames.len() * eyes.len() * 3 * plane];
    let bps = layout.bytes_per_sample as usize;
    let shift = if bps == 2 { 16 - u32::from(bit_depth) } else { 0 };
    let sample = |frame: &[u8], offset: usize| -> f64 {
        let raw = if bps == 2 {
            u32::from(u16::from_le_bytes([frame[offset], frame[offset + 1]]))
        } else {
            u32::from(frame[offset])
        };
        f64::from(raw) / f64::from(1u32 << shift)
    };
    for (fi, frame) in frames.iter().enumerate() {
        for (ei, eye) in eyes.iter().enumerate() {
            let image = fi * eyes.len() + ei;
            let (sx, sy) = (f64::from(eye.w) / f64::from(g.new_w), f64::from(eye.h) / f64::from(g.new_h));
            for y in 0..in_h {
                let uy = y as i32 - g.pad_top;
                for x in 0..in_w {
                    let ux = x as i32 - g.pad_left;
                    let rgb = if ux < 0 || uy < 0 || ux >= g.new_w || uy >= g.new_h {
                        [f64::from(PAD_VALUE); 3]
                    } else {
                        let resample = |sub: i32, base: usize, comps: usize| -> Vec<f64> {
                            let tx = axis_taps(ux, sx, eye.x, eye.w, sub);
                            let ty = axis_taps(uy, sy, eye.y, eye.h, sub);
                            let mut acc = vec![0f64; comps];
                            let mut wsum = 0.0;
                            for &(j, wy) in &ty {
                                for &(i, wx) in &tx {
                                    let w = wx * wy;
                                    for (c, a) in acc.iter_mut().enumerate() {
                                        let off = base + j as usize * layout.pitch + (i as usize * comps + c) * bps;
                                        *a += w * sample(frame, off);
                                    }
                                    wsum += w;
                                }
                            }
                            acc.iter().map(|a| a / wsum).collect()
                        };
                        let luma = resample(1, 0, 1);
                        let chroma = resample(2, layout.chroma_offset, 2);
                        colour.convert(luma[0], chroma[0], chroma[1])
                    };
                    for (c, v) in rgb.iter().enumerate() {
                        out[(image * 3 + c) * plane + y * in_w + x] = *v as f32;
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_layout_matches_the_kernel() {
        // 64 pointers + pitch + chroma offset + out (8 bytes each), then 2 + 8
        // + 2 + 8 + 6 + 1 + 2 four-byte fields = 29.
        assert_eq!(std::mem::size_of::<LetterboxParams>(), 67 * 8 + 29 * 4 + 4);
        assert_eq!(std::mem::align_of::<LetterboxParams>(), 8);
    }

    #[test]
    fn geometry_matches_ultralytics_examples() {
        // 4096² eye → 640², no padding.
        let g = LetterboxGeometry::ultralytics(4096, 4096, 640, 640);
        assert_eq!((g.new_w, g.new_h, g.pad_left, g.pad_top), (640, 640, 0, 0));
        // 640x427 (w x h): dh = 106.5 → top 106 (bottom 107).
        let g = LetterboxGeometry::ultralytics(640, 427, 640, 640);
        assert_eq!((g.new_w, g.new_h, g.pad_left, g.pad_top), (640, 427, 0, 106));
        // 1920x1080 → 640x360, top 140.
        let g = LetterboxGeometry::ultralytics(1920, 1080, 640, 640);
        assert_eq!((g.new_w, g.new_h, g.pad_left, g.pad_top), (640, 360, 0, 140));
        // 959x1078: r = 640/1078, new_w = round(569.38) = 569, dw = 35.5 → 35.
        let g = LetterboxGeometry::ultralytics(959, 1078, 640, 640);
        assert_eq!((g.new_w, g.new_h, g.pad_left, g.pad_top), (569, 640, 35, 0));
        // Ties go to even, as in Python: 2.5 → 2.
        assert_eq!(py_round(2.5), 2);
        assert_eq!(py_round(3.5), 4);
    }

    #[test]
    fn limited_range_black_and_white_and_full_range_grey() {
        let c = YuvToRgb::new(YuvMatrix::Bt709, false, 8);
        assert_eq!(c.convert(16.0, 128.0, 128.0), [0.0, 0.0, 0.0]);
        let white = c.convert(235.0, 128.0, 128.0);
        assert!(white.iter().all(|v| (v - 1.0).abs() < 1e-6), "{white:?}");
        let c10 = YuvToRgb::new(YuvMatrix::Bt2020, false, 10);
        let white10 = c10.convert(940.0, 512.0, 512.0);
        assert!(white10.iter().all(|v| (v - 1.0).abs() < 1e-6), "{white10:?}");
        let full = YuvToRgb::new(YuvMatrix::Bt601, true, 8);
        let grey = full.convert(128.0, 128.0, 128.0);
        assert!(grey.iter().all(|v| (v - 128.0 / 255.0).abs() < 1e-6), "{grey:?}");
        // BT.601 full-range pure red: Y 76, Cb 85, Cr 255 (JPEG) → R ≈ 1.
        let red = full.convert(76.245, 84.972, 255.5);
        assert!((red[0] - 1.0).abs() < 2e-3 && red[1] < 2e-3 && red[2] < 2e-3, "{red:?}");
    }

    #[test]
    fn area_taps_cover_the_interval_and_bilinear_taps_sum_to_one() {
        // 4096 → 640: s = 6.4, each output reads 7 or 8 pixels summing to 6.4.
        for u in [0, 1, 7, 639] {
            let taps = axis_taps(u, 6.4, 0, 4096, 1);
            let sum: f64 = taps.iter().map(|t| t.1).sum();
            assert!((sum - 6.4).abs() < 1e-9, "u {u}: {taps:?}");
            assert!(taps.iter().all(|&(i, _)| (0..4096).contains(&i)));
        }
        // Chroma of the right eye of an SBS frame starts at chroma column 2048.
        let taps = axis_taps(0, 6.4, 4096, 4096, 2);
        assert_eq!(taps.first().map(|t| t.0), Some(2048));
        // Upscale 320 → 640: bilinear, clamped at the edges.
        let taps = axis_taps(0, 0.5, 0, 320, 1);
        assert_eq!(taps, vec![(0, 0.25), (0, 0.75)]);
        let taps = axis_taps(639, 0.5, 0, 320, 1);
        assert_eq!(taps.iter().map(|t| t.0).collect::<Vec<_>>(), vec![319, 319]);
    }

    #[test]
    fn a_flat_frame_letterboxes_to_its_colour_with_grey_bars() {
        // 8x4 mono NV12 frame of limited-range mid grey → 8x8 input, bars top and bottom.
        let layout = FrameLayout::new(8, 4, 8);
        let mut frame = vec![0u8; layout.slot_bytes()];
        frame[..layout.chroma_offset].fill(126);
        frame[layout.chroma_offset..].fill(128);
        let g = LetterboxGeometry::ultralytics(8, 4, 8, 8);
        assert_eq!((g.new_w, g.new_h, g.pad_top), (8, 4, 2));
        let eyes = eye_rects(StereoLayout::Mono, 8, 4);
        let c = YuvToRgb::new(YuvMatrix::Bt709, false, 8);
        let out = letterbox_reference(&[&frame], &layout, 8, &eyes, &c, &g);
        let grey = (126.0 - 16.0) / 219.0;
        for ch in 0..3 {
            for y in 0..8 {
                let v = out[ch * 64 + y * 8 + 3];
                let want = if (2..6).contains(&y) { grey } else { f64::from(PAD_VALUE) };
                assert!((f64::from(v) - want).abs() < 1e-6, "channel {ch} row {y}: {v} vs {want}");
            }
        }
    }

    #[test]
    fn shared_memory_covers_the_eye_chunks() {
        // Left eye of 8K SBS NV12: 256 luma chunks, 256 chroma chunks of 16 samples.
        let eye = EyeRect { x: 0, y: 0, w: 4096, h: 4096 };
        assert_eq!(letterbox_shared_bytes(eye, 1, 640), 4 * (2 * (4096 + 128 + 1) + 640));
        // Right eye of a 1918-wide SBS frame starts mid-chunk: luma samples
        // 959..=1917 and chroma pairs 479..=958 both start in the chunk at byte 944.
        let eye = EyeRect { x: 959, y: 0, w: 959, h: 1078 };
        let luma = (1918 - 944usize).div_ceil(16);
        let chroma = ((958 + 1) * 2 - 944usize).div_ceil(16);
        assert_eq!(letterbox_shared_bytes(eye, 1, 569), 4 * (skewed_len(luma * 16) + skewed_len(chroma * 16) + 569));
        // P016 8192-wide mono: over the 48 KiB default, under sm_86's 99 KiB opt-in.
        let eye = EyeRect { x: 0, y: 0, w: 8192, h: 4096 };
        let bytes = letterbox_shared_bytes(eye, 2, 640);
        assert!(bytes > 48 * 1024 && bytes < 99 * 1024, "{bytes}");
    }

    #[test]
    fn eye_rects_split_odd_frames_evenly() {
        assert_eq!(
            eye_rects(StereoLayout::Sbs, 1919, 1078),
            vec![EyeRect { x: 0, y: 0, w: 959, h: 1078 }, EyeRect { x: 960, y: 0, w: 959, h: 1078 }]
        );
        assert_eq!(eye_rects(StereoLayout::Tb, 8, 9)[1], EyeRect { x: 0, y: 5, w: 8, h: 4 });
    }
}

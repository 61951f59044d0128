//! The NVDEC decoder: NVIDIA's parser finds pictures in our Annex-B / VP9
//! chunks, NVDEC decodes them, and each displayed picture is copied out of
//! the decoder's surface into memory the caller owns (a VRAM pool slot).
//!
//! Modelled on FFmpeg's `libavcodec/cuviddec.c`:
//! - the parser's callbacks are `extern "C"` trampolines that forward to
//!   [`ParserState`] through the user-data pointer; the display callback only
//!   queues the display info, and any error is stashed and checked after
//!   `cuvidParseVideoData` returns (which does not itself report them);
//! - the decoder is created in the sequence callback (whose return value sets
//!   the parser's surface count) and recreated only when the format really
//!   changes;
//! - mapping a surface is a guard, unmapped on every path;
//! - `cuvidGetDecodeStatus` on display catches concealed and failed pictures.
//!
//! Frames are handed out in presentation order, each exactly once, with the
//! pts of the chunk that carried it (passed through the parser's timestamp).
//! API guide: <https://docs.nvidia.com/video-technologies/video-codec-sdk/13.0/nvdec-video-decoder-api-prog-guide/>

use std::collections::VecDeque;
use std::ffi::{c_int, c_uint, c_void};
use std::sync::Arc;

use cudarc::driver::CudaStream;

use super::caps::{query_caps, DecoderCaps, NvdecError};
use crate::codec_sys::bindings::*;
use crate::codec_sys::{nvcuvid, NvcuvidApi};
use crate::gpu::copy::{copy_2d_async, Copy2dTarget};
use crate::gpu::error::CheckDriver;
use crate::gpu::{DeviceView, Gpu, GpuError};
use crate::video::chunk::{Chunk, StreamInfo, VideoCodec};

/// Pictures the parser may hold back for reordering before display. Two is
/// enough for decode/display overlap; presentation order is the parser's
/// job whatever the delay.
const DISPLAY_DELAY: u32 = 2;

/// Surfaces beyond the stream's own minimum: room for the display delay and
/// for pictures displayed but not yet copied out.
const EXTRA_SURFACES: u32 = DISPLAY_DELAY + 4;

/// NVDEC's own codec value for ours.
pub fn nvdec_codec(codec: VideoCodec) -> cudaVideoCodec {
    match codec {
        VideoCodec::H264 => cudaVideoCodec_enum::cudaVideoCodec_H264,
        VideoCodec::Hevc => cudaVideoCodec_enum::cudaVideoCodec_HEVC,
        VideoCodec::Vp9 => cudaVideoCodec_enum::cudaVideoCodec_VP9,
        VideoCodec::Av1 => cudaVideoCodec_enum::cudaVideoCodec_AV1,
    }
}

/// The pixel layout of a decoded frame in device memory: NV12 for 8-bit
/// sources, P016 (16-bit samples, value in the high bits) for 10/12-bit.
/// Both planes use `pitch`; the interleaved UV plane starts at `chroma_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct FrameLayout {
    pub width: u32,
    pub height: u32,
    /// 1 (NV12) or 2 (P016).
    pub bytes_per_sample: u32,
    /// Row stride in bytes, a multiple of 256.
    pub pitch: usize,
    /// Byte offset of the UV plane.
    pub chroma_offset: usize,
}

impl FrameLayout {
    pub fn new(width: u32, height: u32, bit_depth: u8) -> FrameLayout {
        let bytes_per_sample = if bit_depth > 8 { 2 } else { 1 };
        // Chroma rows cover odd widths: ceil(w/2) UV pairs.
        let row_bytes = (width as usize).div_ceil(2) * 2 * bytes_per_sample as usize;
        let pitch = row_bytes.div_ceil(256) * 256;
        FrameLayout { width, height, bytes_per_sample, pitch, chroma_offset: pitch * height as usize }
    }

    pub fn chroma_height(&self) -> u32 {
        self.height.div_ceil(2)
    }

    /// Bytes one frame occupies in a pool slot.
    pub fn slot_bytes(&self) -> usize {
        self.chroma_offset + self.pitch * self.chroma_height() as usize
    }

    /// Bytes of a luma row and of a chroma row with no padding.
    pub fn luma_row_bytes(&self) -> usize {
        self.width as usize * self.bytes_per_sample as usize
    }

    pub fn chroma_row_bytes(&self) -> usize {
        (self.width as usize).div_ceil(2) * 2 * self.bytes_per_sample as usize
    }

    /// Size of the frame packed without padding (what ffmpeg hashes for
    /// `-pix_fmt nv12` / `p010le`): luma rows then chroma rows.
    pub fn packed_bytes(&self) -> usize {
        self.luma_row_bytes() * self.height as usize + self.chroma_row_bytes() * self.chroma_height() as usize
    }
}

/// How NVDEC says a picture went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum PictureStatus {
    Ok,
    /// Decoded with errors hidden by concealment.
    Concealed,
    /// Decoding failed; the surface content is undefined.
    Failed,
    /// The codec does not report status (VP9, AV1).
    Unknown,
}

/// What the sequence header said, as the decoder was set up for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SequenceFormat {
    codec: cudaVideoCodec,
    coded_width: u32,
    coded_height: u32,
    display: (i32, i32, i32, i32),
    bit_depth: u8,
    chroma: cudaVideoChromaFormat,
    progressive: bool,
}

/// State the parser callbacks reach through their user-data pointer. Boxed,
/// so its address is stable for the parser's lifetime.
struct ParserState {
    api: &'static NvcuvidApi,
    ctx_lock: CUvideoctxlock,
    decoder: CUvideodecoder,
    format: Option<SequenceFormat>,
    caps: DecoderCaps,
    path_label: String,
    /// Display infos queued by the display callback, in presentation order.
    displayed: VecDeque<CUVIDPARSERDISPINFO>,
    /// The first error a callback met; the caller returns it after parsing.
    error: Option<NvdecError>,
    pictures_decoded: u64,
    /// Decode surfaces of the current decoder (0 before the first sequence header).
    surfaces: u32,
    /// Seconds spent in `cuvidCreateDecoder` (for the parallel decoder's report).
    decoder_create_s: f64,
    /// VRSEG_NVDEC_TRACE is set: report each decoded and displayed picture on stderr.
    trace: bool,
}

// The trampolines: each converts the user-data pointer back into the state
// and returns the parser's expected code (0 = stop with error, 1 = go on;
// the sequence callback returns the number of decode surfaces).

unsafe extern "C" fn on_sequence(user: *mut c_void, format: *mut CUVIDEOFORMAT) -> c_int {
    // SAFETY: `user` is the Box<ParserState> pointer given at parser creation;
    // the parser calls back only from inside cuvidParseVideoData, while the
    // decoder (and so the box) is alive and no other reference to it is in use.
    let state = unsafe { &mut *(user as *mut ParserState) };
    // SAFETY: the parser passes a valid format for the duration of the call.
    let format = unsafe { &*format };
    match state.handle_sequence(format) {
        Ok(surfaces) => surfaces as c_int,
        Err(e) => {
            state.error.get_or_insert(e);
            0
        }
    }
}

unsafe extern "C" fn on_decode(user: *mut c_void, params: *mut CUVIDPICPARAMS) -> c_int {
    // SAFETY: as in `on_sequence`.
    let state = unsafe { &mut *(user as *mut ParserState) };
    if state.decoder.is_null() {
        state.error.get_or_insert(NvdecError::Call {
            call: "cuvidDecodePicture",
            status: 0,
            context: " (picture before any sequence header)".into(),
        });
        return 0;
    }
    // SAFETY: `params` is valid for the call; `decoder` was created in the
    // sequence callback for this very stream and is alive.
    let status = unsafe { (state.api.cuvidDecodePicture)(state.decoder, params) };
    if status != cudaError_enum::CUDA_SUCCESS {
        state.error.get_or_insert(NvdecError::Call {
            call: "cuvidDecodePicture",
            status,
            context: format!(" ({}, picture {} in decode order)", state.path_label, state.pictures_decoded),
        });
        return 0;
    }
    state.pictures_decoded += 1;
    if state.trace {
        // SAFETY: `params` is valid for the call (checked non-null by the parser's contract).
        let p = unsafe { &*params };
        eprintln!("nvdec decode: surface {} (intra {}, reference {})", p.CurrPicIdx, p.intra_pic_flag, p.ref_pic_flag);
    }
    1
}

unsafe extern "C" fn on_display(user: *mut c_void, info: *mut CUVIDPARSERDISPINFO) -> c_int {
    // SAFETY: as in `on_sequence`.
    let state = unsafe { &mut *(user as *mut ParserState) };
    // A null info marks end of stream; nothing to queue.
    if !info.is_null() {
        // SAFETY: non-null and valid for the call; the struct is plain data.
        let info = unsafe { *info };
        if state.trace {
            eprintln!("nvdec display: surface {} pts {}", info.picture_index, info.timestamp);
        }
        state.displayed.push_back(info);
    }
    1
}

impl ParserState {
    fn handle_sequence(&mut self, f: &CUVIDEOFORMAT) -> Result<u32, NvdecError> {
        let format = SequenceFormat {
            codec: f.codec,
            coded_width: f.coded_width,
            coded_height: f.coded_height,
            display: (f.display_area.left, f.display_area.top, f.display_area.right, f.display_area.bottom),
            bit_depth: 8 + f.bit_depth_luma_minus8,
            chroma: f.chroma_format,
            progressive: f.progressive_sequence != 0,
        };
        let surfaces = (u32::from(f.min_num_decode_surfaces).max(1) + EXTRA_SURFACES).min(32);
        if self.format == Some(format) {
            return Ok(surfaces);
        }
        check_fits(&self.caps, format.coded_width, format.coded_height, format.bit_depth, &self.path_label)?;
        if format.chroma != cudaVideoChromaFormat_enum::cudaVideoChromaFormat_420 {
            return Err(NvdecError::Unsupported {
                what: format!("{}: chroma format {} (only 4:2:0 is supported)", self.path_label, format.chroma),
                way_out: "transcode to 4:2:0, e.g. `ffmpeg -i IN -pix_fmt yuv420p -c:v libx265 OUT.mp4`".into(),
            });
        }
        // A real change of format: frames of the old sequence were already
        // copied out (we copy after every parse call), so recreate.
        if !self.decoder.is_null() {
            // SAFETY: the decoder is ours and no frame of it is mapped.
            unsafe { (self.api.cuvidDestroyDecoder)(self.decoder) };
            self.decoder = std::ptr::null_mut();
        }
        let (left, top, right, bottom) = format.display;
        // NVDEC scales the display area to the target size, so the two must be
        // equal or the picture is resampled. 4:2:0 surfaces need even sizes:
        // an odd display area is widened by one column/row (which the copy-out
        // leaves out). It is not clamped to the coded size: VP9 reports odd
        // coded sizes (259x147), and clamping there made NVDEC scale 259 → 260
        // (seen on the H200: every pixel off); the decoder's own surface is
        // padded, so the extra column is readable.
        let even_right = left + ((right - left).max(0) + 1) / 2 * 2;
        let even_bottom = top + ((bottom - top).max(0) + 1) / 2 * 2;
        // Debug aid (README, "Development"): what the parser reported.
        if std::env::var_os("VRSEG_NVDEC_TRACE").is_some() {
            eprintln!(
                "nvdec sequence: {format:?}, min surfaces {}, target {}x{}",
                f.min_num_decode_surfaces,
                even_right - left,
                even_bottom - top
            );
        }
        // SAFETY: the create info is plain data; zero is its neutral state.
        let mut info: CUVIDDECODECREATEINFO = unsafe { std::mem::zeroed() };
        info.ulWidth = format.coded_width.into();
        info.ulHeight = format.coded_height.into();
        info.ulNumDecodeSurfaces = surfaces.into();
        info.CodecType = format.codec;
        info.ChromaFormat = format.chroma;
        info.ulCreationFlags = cudaVideoCreateFlags_enum::cudaVideoCreate_PreferCUVID.into();
        info.bitDepthMinus8 = u64::from(format.bit_depth - 8);
        info.ulMaxWidth = format.coded_width.into();
        info.ulMaxHeight = format.coded_height.into();
        info.display_area.left = left as i16;
        info.display_area.top = top as i16;
        info.display_area.right = even_right as i16;
        info.display_area.bottom = even_bottom as i16;
        info.OutputFormat = if format.bit_depth > 8 {
            cudaVideoSurfaceFormat_enum::cudaVideoSurfaceFormat_P016
        } else {
            cudaVideoSurfaceFormat_enum::cudaVideoSurfaceFormat_NV12
        };
        info.DeinterlaceMode = if format.progressive {
            cudaVideoDeinterlaceMode_enum::cudaVideoDeinterlaceMode_Weave
        } else {
            cudaVideoDeinterlaceMode_enum::cudaVideoDeinterlaceMode_Adaptive
        };
        info.ulTargetWidth = (even_right - left).max(0) as u64;
        info.ulTargetHeight = (even_bottom - top).max(0) as u64;
        info.ulNumOutputSurfaces = 2;
        info.vidLock = self.ctx_lock;
        let mut decoder: CUvideodecoder = std::ptr::null_mut();
        let creating = std::time::Instant::now();
        // SAFETY: `info` is fully initialised; the context is current (the
        // caller binds it before parsing); `decoder` is a valid out-pointer.
        let status = unsafe { (self.api.cuvidCreateDecoder)(&mut decoder, &mut info) };
        self.decoder_create_s += creating.elapsed().as_secs_f64();
        if status != cudaError_enum::CUDA_SUCCESS {
            return Err(NvdecError::Call {
                call: "cuvidCreateDecoder",
                status,
                context: format!(
                    " ({}: {}x{} {}-bit, {} surfaces)",
                    self.path_label, format.coded_width, format.coded_height, format.bit_depth, surfaces
                ),
            });
        }
        self.decoder = decoder;
        self.format = Some(format);
        self.surfaces = surfaces;
        Ok(surfaces)
    }
}

/// Stops before any decode when the GPU cannot take the stream, with the
/// limit and a way out in the sentence.
fn check_fits(caps: &DecoderCaps, width: u32, height: u32, bit_depth: u8, label: &str) -> Result<(), NvdecError> {
    let codec = caps.codec.to_uppercase().replace("H264", "H.264");
    if !caps.supported {
        return Err(NvdecError::Unsupported {
            what: format!("{label}: this GPU's NVDEC cannot decode {codec} {bit_depth}-bit"),
            way_out: "transcode to HEVC, e.g. `ffmpeg -i IN -c:v libx265 -crf 18 OUT.mp4`".into(),
        });
    }
    if width > caps.max_width || height > caps.max_height {
        return Err(NvdecError::Unsupported {
            what: format!(
                "{label}: {codec} of {width}x{height} is larger than this GPU's NVDEC decodes ({}x{} at most)",
                caps.max_width, caps.max_height
            ),
            way_out: if caps.codec == "h264" {
                "transcode to HEVC, which NVDEC decodes up to 8192x8192, e.g. `ffmpeg -i IN -c:v libx265 -crf 18 OUT.mp4`".into()
            } else {
                "scale it down first, e.g. `ffmpeg -i IN -vf scale=iw/2:ih/2 OUT.mp4`".into()
            },
        });
    }
    let macroblocks = width.div_ceil(16) * height.div_ceil(16);
    if caps.max_macroblocks > 0 && macroblocks > caps.max_macroblocks {
        return Err(NvdecError::Unsupported {
            what: format!(
                "{label}: {codec} of {width}x{height} has {macroblocks} macroblocks, more than this GPU's NVDEC's {}",
                caps.max_macroblocks
            ),
            way_out: "scale it down first".into(),
        });
    }
    if width < u32::from(caps.min_width) || height < u32::from(caps.min_height) {
        return Err(NvdecError::Unsupported {
            what: format!(
                "{label}: {codec} of {width}x{height} is smaller than this GPU's NVDEC decodes ({}x{} at least)",
                caps.min_width, caps.min_height
            ),
            way_out: "decode it on the CPU, e.g. with ffmpeg".into(),
        });
    }
    Ok(())
}

/// Creates a parser whose callbacks reach `state` (boxed, so its address is stable).
fn create_parser(state: &mut ParserState, codec: VideoCodec, timescale: u32) -> Result<CUvideoparser, NvdecError> {
    // SAFETY: the params are plain data; zero is their neutral state.
    let mut params: CUVIDPARSERPARAMS = unsafe { std::mem::zeroed() };
    params.CodecType = nvdec_codec(codec);
    // The sequence callback's return value replaces this with the real count.
    params.ulMaxNumDecodeSurfaces = 1;
    params.ulClockRate = timescale.max(1);
    params.ulMaxDisplayDelay = DISPLAY_DELAY;
    params.pUserData = state as *mut ParserState as *mut c_void;
    params.pfnSequenceCallback = Some(on_sequence);
    params.pfnDecodePicture = Some(on_decode);
    params.pfnDisplayPicture = Some(on_display);
    let mut parser: CUvideoparser = std::ptr::null_mut();
    // SAFETY: `params` is initialised; the user-data pointer targets the
    // boxed state, which the NvDecoder keeps as long as the parser lives.
    let status = unsafe { (state.api.cuvidCreateVideoParser)(&mut parser, &mut params) };
    if status != cudaError_enum::CUDA_SUCCESS {
        return Err(NvdecError::Call {
            call: "cuvidCreateVideoParser",
            status,
            context: format!(" ({})", state.path_label),
        });
    }
    Ok(parser)
}

/// One decoded picture, still in the decoder's surface. Copy it out with
/// [`MappedPicture::copy_to`]; the surface is unmapped when this drops.
pub struct MappedPicture<'d> {
    decoder: &'d NvDecoder,
    device_ptr: u64,
    source_pitch: u32,
    /// Presentation timestamp, from the chunk that carried the picture.
    pub pts: i64,
    /// Display order, from 0.
    pub index: u64,
    pub status: PictureStatus,
    pub layout: FrameLayout,
}

impl MappedPicture<'_> {
    /// Refuses a picture whose size differs from `layout` (the frame pool's
    /// slots are sized once, from the first sequence header).
    pub fn expect_layout(&self, layout: &FrameLayout, label: &str) -> Result<(), NvdecError> {
        if self.layout == *layout {
            return Ok(());
        }
        Err(NvdecError::Unsupported {
            what: format!(
                "{label}: the picture size changed mid-stream at pts {} (picture {} of this decoder session; {}x{} to {}x{})",
                self.pts, self.index, layout.width, layout.height, self.layout.width, self.layout.height
            ),
            way_out: "split the file where the size changes, or transcode it to one size".into(),
        })
    }

    /// Copies the picture into `dst` laid out as `self.layout` (NV12/P016 with
    /// the layout's pitch), enqueued on the decoder's stream, and waits for
    /// it, since the surface is unmapped right after.
    pub fn copy_to(&self, dst: &DeviceView) -> Result<(), NvdecError> {
        let l = &self.layout;
        if dst.bytes() < l.slot_bytes() {
            return Err(GpuError::BufferTooSmall {
                buffer: dst.name().to_string(),
                have: dst.bytes(),
                need: l.slot_bytes(),
                op: "NVDEC copy-out",
            }
            .into());
        }
        // The surface's UV plane follows the luma plane of the (even) target height.
        let surface_height = ((l.height + 1) & !1) as u64;
        let planes = [
            (self.device_ptr, dst.ptr(), l.luma_row_bytes(), l.height as usize),
            (
                self.device_ptr + u64::from(self.source_pitch) * surface_height,
                dst.ptr() + l.chroma_offset as u64,
                l.chroma_row_bytes(),
                l.chroma_height() as usize,
            ),
        ];
        for (src, dst_ptr, width_bytes, rows) in planes {
            let target = Copy2dTarget::Device { ptr: dst_ptr, pitch: l.pitch };
            // SAFETY: the source is the mapped surface (valid until unmap in
            // Drop, after the stream sync below); the destination rows lie
            // inside `dst` (size checked above).
            unsafe {
                copy_2d_async(&self.decoder.stream, src, self.source_pitch as usize, target, width_bytes, rows, || {
                    format!("frame {}", self.index)
                })
            }?;
        }
        Ok(self.decoder.stream.synchronize().check_with("cuStreamSynchronize", || format!("frame {}", self.index))?)
    }
}

impl Drop for MappedPicture<'_> {
    fn drop(&mut self) {
        // SAFETY: the pointer came from cuvidMapVideoFrame64 on this decoder
        // and is unmapped exactly once; copies from it were synchronised.
        let status =
            unsafe { (self.decoder.state.api.cuvidUnmapVideoFrame64)(self.decoder.state.decoder, self.device_ptr) };
        if status != cudaError_enum::CUDA_SUCCESS {
            eprintln!("vrseg: cuvidUnmapVideoFrame64 failed with CUDA status {status} (frame {})", self.index);
        }
    }
}

/// Counts of what NVDEC reported, for the run's summary.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DecodeReport {
    pub frames: u64,
    pub concealed: Vec<u64>,
    pub failed: Vec<u64>,
}

pub struct NvDecoder {
    gpu: Gpu,
    stream: Arc<CudaStream>,
    parser: CUvideoparser,
    state: Box<ParserState>,
    layout: FrameLayout,
    codec: VideoCodec,
    /// The parser's clock rate (the container's timescale), for restarts.
    timescale: u32,
    frames_out: u64,
    report: DecodeReport,
}

// SAFETY: the parser, decoder and context lock are driver handles usable from
// any thread once the context is current, which every entry point ensures
// (`bind_to_thread`); NvDecoder is never used from two threads at once (&mut).
unsafe impl Send for NvDecoder {}

impl NvDecoder {
    /// Checks the GPU's NVDEC against the stream (codec, bit depth, size)
    /// before anything is created, then sets up the parser. `label` names the
    /// input in errors (usually its path).
    pub fn new(gpu: &Gpu, stream: Arc<CudaStream>, info: &StreamInfo, label: &str) -> Result<NvDecoder, NvdecError> {
        let api = nvcuvid()?;
        let caps = query_caps(gpu, info.codec.name(), nvdec_codec(info.codec), info.bit_depth)?;
        check_fits(&caps, info.width, info.height, info.bit_depth, label)?;
        if info.chroma_format.is_some_and(|c| c != 1) {
            return Err(NvdecError::Unsupported {
                what: format!("{label}: chroma format {} (only 4:2:0 is supported)", info.chroma_format.unwrap_or(0)),
                way_out: "transcode to 4:2:0, e.g. `ffmpeg -i IN -pix_fmt yuv420p -c:v libx265 OUT.mp4`".into(),
            });
        }
        gpu.bind_to_thread()?;
        let mut ctx_lock: CUvideoctxlock = std::ptr::null_mut();
        // SAFETY: valid out-pointer; the context is alive for the decoder's life
        // (the Gpu handle is kept in `self`).
        let status = unsafe { (api.cuvidCtxLockCreate)(&mut ctx_lock, gpu.cu_context() as CUcontext) };
        if status != cudaError_enum::CUDA_SUCCESS {
            return Err(NvdecError::Call { call: "cuvidCtxLockCreate", status, context: String::new() });
        }
        let mut state = Box::new(ParserState {
            api,
            ctx_lock,
            decoder: std::ptr::null_mut(),
            format: None,
            caps,
            path_label: label.to_string(),
            displayed: VecDeque::new(),
            error: None,
            pictures_decoded: 0,
            surfaces: 0,
            decoder_create_s: 0.0,
            trace: std::env::var_os("VRSEG_NVDEC_TRACE").is_some(),
        });
        let parser = match create_parser(&mut state, info.codec, info.timescale) {
            Ok(parser) => parser,
            Err(e) => {
                // SAFETY: the lock was created above and is not used by anything else.
                unsafe { (api.cuvidCtxLockDestroy)(ctx_lock) };
                return Err(e);
            }
        };
        Ok(NvDecoder {
            gpu: gpu.clone(),
            stream,
            parser,
            state,
            layout: FrameLayout::new(info.width, info.height, info.bit_depth),
            codec: info.codec,
            timescale: info.timescale,
            frames_out: 0,
            report: DecodeReport::default(),
        })
    }

    /// Starts a new, unrelated stretch of the same stream (parallel decode's
    /// next chunk) after [`Self::flush`]: replaces the parser with a fresh
    /// one, so that the next chunk is parsed as if it began the stream (a
    /// CRA's RASL pictures are handled as at a stream start; no picture order
    /// count or reference carries over). Pictures still queued for display
    /// are dropped. The decoder and its surfaces are kept: the new parser's
    /// sequence header matches them, so nothing is allocated.
    pub fn restart(&mut self) -> Result<(), NvdecError> {
        self.gpu.bind_to_thread()?;
        if !self.parser.is_null() {
            // SAFETY: the parser is ours and idle (no parse call is running on
            // this `&mut self`); its callbacks only reach the boxed state, which stays.
            let status = unsafe { (self.state.api.cuvidDestroyVideoParser)(self.parser) };
            self.parser = std::ptr::null_mut();
            if status != cudaError_enum::CUDA_SUCCESS {
                return Err(NvdecError::Call {
                    call: "cuvidDestroyVideoParser",
                    status,
                    context: format!(" ({})", self.state.path_label),
                });
            }
        }
        self.state.displayed.clear();
        self.state.error = None;
        self.parser = create_parser(&mut self.state, self.codec, self.timescale)?;
        Ok(())
    }

    /// Device memory NVDEC holds for this session's surfaces, estimated from
    /// the decoder's creation parameters (decode surfaces at the coded size,
    /// two output surfaces at the display size, NV12/P016); the driver's
    /// own padding comes on top. 0 before the first sequence header.
    pub fn surface_bytes_estimate(&self) -> u64 {
        let Some(f) = self.state.format else { return 0 };
        let bytes_per_sample = if f.bit_depth > 8 { 2 } else { 1 };
        let frame = |w: u64, h: u64| w * (h + h.div_ceil(2)) * bytes_per_sample;
        let (l, t, r, b) = f.display;
        let decode = u64::from(self.state.surfaces) * frame(u64::from(f.coded_width), u64::from(f.coded_height));
        let output = 2 * frame((r - l).max(0) as u64, (b - t).max(0) as u64);
        decode + output
    }

    /// Seconds spent creating NVDEC decoders (`cuvidCreateDecoder`) so far.
    pub fn decoder_create_s(&self) -> f64 {
        self.state.decoder_create_s
    }

    /// The layout every frame will have: plan pool slots from it.
    pub fn layout(&self) -> FrameLayout {
        self.layout
    }

    pub fn report(&self) -> &DecodeReport {
        &self.report
    }

    fn parse(&mut self, data: &[u8], pts: i64, flags: u32) -> Result<(), NvdecError> {
        if self.parser.is_null() {
            // Only after a failed `restart`, which already returned its error.
            return Err(NvdecError::Call {
                call: "cuvidParseVideoData",
                status: 0,
                context: format!(" ({}: no parser after a failed restart)", self.state.path_label),
            });
        }
        self.gpu.bind_to_thread()?;
        let mut packet = CUVIDSOURCEDATAPACKET {
            flags: flags.into(),
            payload_size: data.len() as tcu_ulong,
            payload: if data.is_empty() { std::ptr::null() } else { data.as_ptr() },
            timestamp: pts,
        };
        // SAFETY: the payload outlives the call (the parser copies what it keeps);
        // the callbacks it triggers touch only the boxed state.
        let status = unsafe { (self.state.api.cuvidParseVideoData)(self.parser, &mut packet) };
        if let Some(e) = self.state.error.take() {
            return Err(e);
        }
        if status != cudaError_enum::CUDA_SUCCESS {
            return Err(NvdecError::Call {
                call: "cuvidParseVideoData",
                status,
                context: format!(" ({})", self.state.path_label),
            });
        }
        Ok(())
    }

    /// Feeds one chunk; `on_frame` receives every picture that became ready
    /// for display, in presentation order.
    pub fn decode(
        &mut self,
        chunk: &Chunk,
        on_frame: &mut dyn FnMut(&MappedPicture) -> Result<(), NvdecError>,
    ) -> Result<(), NvdecError> {
        let flags = CUvideopacketflags::CUVID_PKT_TIMESTAMP | CUvideopacketflags::CUVID_PKT_ENDOFPICTURE;
        self.parse(&chunk.data, chunk.pts, flags)?;
        self.drain(on_frame)
    }

    /// End of stream: the parser releases the pictures it still holds.
    pub fn flush(
        &mut self,
        on_frame: &mut dyn FnMut(&MappedPicture) -> Result<(), NvdecError>,
    ) -> Result<(), NvdecError> {
        self.parse(&[], 0, CUvideopacketflags::CUVID_PKT_ENDOFSTREAM)?;
        self.drain(on_frame)
    }

    fn drain(&mut self, on_frame: &mut dyn FnMut(&MappedPicture) -> Result<(), NvdecError>) -> Result<(), NvdecError> {
        while let Some(info) = self.state.displayed.pop_front() {
            let picture = self.map(&info)?;
            let (status, index) = (picture.status, picture.index);
            let delivered = on_frame(&picture);
            drop(picture);
            match status {
                PictureStatus::Concealed => self.report.concealed.push(index),
                PictureStatus::Failed => self.report.failed.push(index),
                _ => {}
            }
            delivered?;
            self.frames_out += 1;
            self.report.frames = self.frames_out;
        }
        Ok(())
    }

    fn map(&self, info: &CUVIDPARSERDISPINFO) -> Result<MappedPicture<'_>, NvdecError> {
        let decoder = self.state.decoder;
        let status = if matches!(self.codec, VideoCodec::H264 | VideoCodec::Hevc) {
            // SAFETY: plain data, zero-initialised as the API expects.
            let mut s: CUVIDGETDECODESTATUS = unsafe { std::mem::zeroed() };
            // SAFETY: valid decoder and picture index from the parser; `s` is a valid out-pointer.
            let r = unsafe { (self.state.api.cuvidGetDecodeStatus)(decoder, info.picture_index, &mut s) };
            match (r, s.decodeStatus) {
                (cudaError_enum::CUDA_SUCCESS, cuvidDecodeStatus_enum::cuvidDecodeStatus_Error) => {
                    PictureStatus::Failed
                }
                (cudaError_enum::CUDA_SUCCESS, cuvidDecodeStatus_enum::cuvidDecodeStatus_Error_Concealed) => {
                    PictureStatus::Concealed
                }
                (cudaError_enum::CUDA_SUCCESS, _) => PictureStatus::Ok,
                _ => PictureStatus::Unknown,
            }
        } else {
            PictureStatus::Unknown
        };
        // SAFETY: plain data, zero-initialised as the API expects.
        let mut proc: CUVIDPROCPARAMS = unsafe { std::mem::zeroed() };
        proc.progressive_frame = info.progressive_frame;
        proc.top_field_first = info.top_field_first;
        proc.second_field = 0;
        proc.output_stream = self.stream.cu_stream() as CUstream;
        let mut device_ptr: u64 = 0;
        let mut pitch: c_uint = 0;
        // SAFETY: decoder and picture index come from the parser for this
        // stream; the out-pointers are valid; the context is current (parse
        // bound it on this thread).
        let r = unsafe {
            (self.state.api.cuvidMapVideoFrame64)(decoder, info.picture_index, &mut device_ptr, &mut pitch, &mut proc)
        };
        if r != cudaError_enum::CUDA_SUCCESS {
            return Err(NvdecError::Call {
                call: "cuvidMapVideoFrame64",
                status: r,
                context: format!(" ({}, frame {})", self.state.path_label, self.frames_out),
            });
        }
        let layout = match self.state.format {
            Some(f) => {
                let (l, t, r, b) = f.display;
                FrameLayout::new((r - l).max(0) as u32, (b - t).max(0) as u32, f.bit_depth)
            }
            None => self.layout,
        };
        Ok(MappedPicture {
            decoder: self,
            device_ptr,
            source_pitch: pitch,
            pts: info.timestamp,
            index: self.frames_out,
            status,
            layout,
        })
    }
}

impl Drop for NvDecoder {
    fn drop(&mut self) {
        if let Err(e) = self.gpu.bind_to_thread() {
            eprintln!("vrseg: while closing the NVDEC decoder: {e}");
        }
        let api = self.state.api;
        // SAFETY: each handle was created by this decoder, is destroyed once,
        // and no mapped picture outlives `self` (they borrow it).
        unsafe {
            if !self.parser.is_null() {
                (api.cuvidDestroyVideoParser)(self.parser);
            }
            if !self.state.decoder.is_null() {
                (api.cuvidDestroyDecoder)(self.state.decoder);
            }
            (api.cuvidCtxLockDestroy)(self.state.ctx_lock);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_of_8k_nv12_and_odd_p016() {
        let l = FrameLayout::new(8192, 4096, 8);
        assert_eq!((l.pitch, l.chroma_offset, l.slot_bytes()), (8192, 8192 * 4096, 8192 * 4096 * 3 / 2));
        assert_eq!(l.packed_bytes(), 8192 * 4096 * 3 / 2);
        let l = FrameLayout::new(1917, 1077, 10);
        assert_eq!(l.luma_row_bytes(), 1917 * 2);
        assert_eq!(l.chroma_row_bytes(), 959 * 2 * 2);
        assert_eq!(l.chroma_height(), 539);
        assert_eq!(l.pitch % 256, 0);
        assert!(l.pitch >= l.chroma_row_bytes());
        assert_eq!(l.packed_bytes(), 1917 * 2 * 1077 + 959 * 4 * 539);
    }

    #[test]
    fn an_oversized_h264_stream_names_the_limit_and_the_way_out() {
        let caps = DecoderCaps {
            codec: "h264",
            chroma: "420",
            bit_depth: 8,
            supported: true,
            max_width: 4096,
            max_height: 4096,
            max_macroblocks: 65536,
            min_width: 48,
            min_height: 16,
            engines: 7,
            output_formats: vec!["nv12"],
        };
        let err = check_fits(&caps, 8192, 4096, 8, "clip.mp4").unwrap_err().to_string();
        assert!(
            err.contains("8192x4096") && err.contains("4096x4096 at most") && err.contains("transcode to HEVC"),
            "{err}"
        );
        assert!(check_fits(&caps, 3840, 2160, 8, "clip.mp4").is_ok());
        let av1 = DecoderCaps { codec: "av1", supported: false, ..caps };
        let err = check_fits(&av1, 640, 360, 8, "clip.mkv").unwrap_err().to_string();
        assert!(err.contains("cannot decode AV1"), "{err}");
    }
}

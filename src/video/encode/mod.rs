//! Encode: output frames (on the GPU or the host) → [`EncodedPacket`]s for the muxer.
//!
//! Two encoders behind one trait, [`FrameEncoder`]:
//! - [`nvenc::NvencEncoder`]: NVENC through the Video Codec SDK, reading NV12 frames straight
//!   from device memory (registered once per buffer, mapped per frame). Nothing frame-sized
//!   crosses PCIe.
//! - [`ffmpeg::FfmpegEncoder`], the CPU fallback: frames are copied to the host and piped as
//!   raw video into an `ffmpeg` found on PATH (libx265 / libx264); its Annex-B output is cut
//!   into access units here, so our muxer writes the file with the source's exact pts. The
//!   copy to the host is inherent to this path: one frame (gray: width × height bytes, NV12:
//!   1.5× that) per frame crosses PCIe and the pipe.
//!
//! [`open_encoder`] takes NVENC when a session opens, else ffmpeg, else fails with
//! [`EncodeError::NoEncoder`], whose message suggests `--output masks` or `--output null`.
//!
//! Every encoder here is B-frame free, so packets come out in the order frames go in, each
//! carrying its frame's pts (what the muxer's timing rules assume).

pub mod ffmpeg;
pub mod host;
pub mod nvenc;

use cudarc::driver::{sys, CudaStream};

use crate::gpu::{Gpu, GpuError};
use crate::video::chunk::VideoCodec;
use crate::video::mux::EncodedPacket;

/// What the pixels of an input frame are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// One 8-bit plane (a matte). Encoded as 4:2:0 with neutral chroma.
    Gray8,
    /// An 8-bit luma plane, then interleaved U/V rows (`ceil(height / 2)` of them) at the
    /// same pitch, directly after the luma rows.
    Nv12,
}

impl PixelFormat {
    /// Bytes of one packed frame: luma rows of `width` bytes, then (NV12) `ceil(height / 2)`
    /// chroma rows of `2 * ceil(width / 2)` bytes, as ffmpeg's rawvideo expects them.
    pub fn packed_bytes(self, width: u32, height: u32) -> usize {
        let luma = width as usize * height as usize;
        match self {
            PixelFormat::Gray8 => luma,
            PixelFormat::Nv12 => luma + nv12_chroma_row_bytes(width) * (height as usize).div_ceil(2),
        }
    }

    /// The name ffmpeg gives this layout (`-pix_fmt`).
    pub fn ffmpeg_name(self) -> &'static str {
        match self {
            PixelFormat::Gray8 => "gray",
            PixelFormat::Nv12 => "nv12",
        }
    }
}

/// Bytes in one NV12 chroma row: interleaved U/V for `ceil(width / 2)` columns.
pub fn nv12_chroma_row_bytes(width: u32) -> usize {
    2 * (width as usize).div_ceil(2)
}

/// Sets the chroma rows of an NV12 frame in device memory to 128 (neutral), so that a gray
/// matte written into its luma rows is an NV12 frame NVENC can read: done once per pool slot
/// at start-up, since the matte kernels write only luma. Enqueued on `stream`.
///
/// # Safety
/// `ptr` must hold `height + ceil(height / 2)` rows of `pitch` bytes of device memory that
/// stays allocated until the stream has run the memset.
pub unsafe fn fill_neutral_chroma(
    ptr: sys::CUdeviceptr,
    pitch: usize,
    width: u32,
    height: u32,
    stream: &CudaStream,
) -> Result<(), GpuError> {
    use crate::gpu::error::CheckDriver;
    stream.context().bind_to_thread().check("cuCtxSetCurrent")?;
    let chroma = ptr + (pitch * height as usize) as u64;
    // SAFETY: the caller guarantees the chroma rows lie in live device memory.
    unsafe {
        sys::cuMemsetD2D8Async(
            chroma,
            pitch,
            128,
            nv12_chroma_row_bytes(width),
            (height as usize).div_ceil(2),
            stream.cu_stream(),
        )
    }
    .result()
    .check_with("cuMemsetD2D8Async", || "neutral NV12 chroma".into())
}

/// Where an input frame's pixels are.
#[derive(Debug, Clone, Copy)]
pub enum FrameData<'a> {
    /// Device memory (a VRAM pool slot): rows `pitch` bytes apart from `ptr`. The frame is
    /// complete once the work enqueued on `stream` so far has run.
    Device { ptr: sys::CUdeviceptr, pitch: usize, stream: &'a CudaStream },
    /// Host memory, rows `pitch` bytes apart.
    Host { data: &'a [u8], pitch: usize },
}

/// One frame to encode.
#[derive(Debug, Clone, Copy)]
pub struct InputFrame<'a> {
    pub data: FrameData<'a>,
    /// The source frame's pts, handed through to its packet.
    pub pts: i64,
}

/// How to encode. Construct with [`EncoderSettings::new`] and adjust fields.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderSettings {
    /// HEVC, or H.264 (up to 4096 × 4096).
    pub codec: VideoCodec,
    pub width: u32,
    pub height: u32,
    pub input: PixelFormat,
    /// Nominal frame rate (numerator, denominator), for rate control and the bitstream's
    /// timing info; the packets' pts come from the input frames.
    pub frame_rate: (u32, u32),
    /// Frames from one keyframe to the next (closed GOP: every keyframe is IDR/IRAP).
    pub keyframe_interval: u32,
    /// Constant quality: x265/x264 CRF, NVENC target quality (0–51, lower is better).
    pub quality: u8,
    /// NVENC preset P1 (fastest) … P7 (best).
    pub nvenc_preset: u8,
    /// x265/x264 preset name (`ultrafast` … `veryslow`).
    pub cpu_preset: String,
    /// Full-range samples (0–255), as a matte's alpha is; declared in the bitstream's VUI.
    pub full_range: bool,
}

impl EncoderSettings {
    /// HEVC at constant quality 20, a keyframe every 2 s, NVENC P4, x265 `veryfast`,
    /// full range for gray input (a matte), limited for NV12 (a picture).
    pub fn new(width: u32, height: u32, input: PixelFormat, frame_rate: (u32, u32)) -> EncoderSettings {
        let fps = if frame_rate.1 > 0 { f64::from(frame_rate.0) / f64::from(frame_rate.1) } else { 30.0 };
        EncoderSettings {
            codec: VideoCodec::Hevc,
            width,
            height,
            input,
            frame_rate,
            keyframe_interval: ((2.0 * fps).round() as u32).max(1),
            quality: 20,
            nvenc_preset: 4,
            cpu_preset: "veryfast".into(),
            full_range: input == PixelFormat::Gray8,
        }
    }

    /// Checks what every encoder needs: a codec vrseg writes, sizes, rates.
    pub fn validate(&self) -> Result<(), EncodeError> {
        let bad = |reason: String| Err(EncodeError::Settings { reason });
        match self.codec {
            VideoCodec::Hevc => {}
            VideoCodec::H264 if self.width <= 4096 && self.height <= 4096 => {}
            VideoCodec::H264 => {
                return bad(format!(
                    "H.264 is limited to 4096 × 4096 here and the frame is {} × {}; encode HEVC",
                    self.width, self.height
                ))
            }
            other => return bad(format!("vrseg encodes HEVC or H.264, not {other}")),
        }
        if self.width == 0 || self.height == 0 {
            return bad(format!("the frame size {} × {} is empty", self.width, self.height));
        }
        if self.frame_rate.0 == 0 || self.frame_rate.1 == 0 {
            return bad(format!("the frame rate {}/{} is not a rate", self.frame_rate.0, self.frame_rate.1));
        }
        if self.keyframe_interval == 0 {
            return bad("the keyframe interval is 0".into());
        }
        if self.quality > 51 {
            return bad(format!("quality {} is outside 0–51", self.quality));
        }
        if !(1..=7).contains(&self.nvenc_preset) {
            return bad(format!("NVENC preset P{} does not exist (P1–P7)", self.nvenc_preset));
        }
        Ok(())
    }

    /// The size encoded: 4:2:0 video needs even sizes, so an odd width or height grows by one
    /// (the extra column/row is black).
    pub fn coded_size(&self) -> (u32, u32) {
        (self.width + self.width % 2, self.height + self.height % 2)
    }
}

/// Why encoding failed. Messages are sentences that say what to do.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("encoder settings: {reason}")]
    Settings { reason: String },
    #[error("NVENC is unavailable: {reason}")]
    NvencUnavailable { reason: String },
    #[error("NVENC {call} failed: {status}{detail}")]
    Nvenc { call: &'static str, status: String, detail: String },
    #[error("frame {frame}: {reason}")]
    BadFrame { frame: u64, reason: String },
    #[error("no ffmpeg found on PATH (searched {searched}); install ffmpeg (Debian/Ubuntu: apt-get install ffmpeg) or set VRSEG_FFMPEG to its path")]
    FfmpegNotFound { searched: String },
    #[error(
        "{ffmpeg} has no {encoder} encoder (its `-encoders` list lacks it); install an ffmpeg built with {encoder}"
    )]
    FfmpegMissingEncoder { ffmpeg: String, encoder: &'static str },
    #[error("ffmpeg ({ffmpeg}) failed at frame {frame}: {reason}{stderr}")]
    Ffmpeg { ffmpeg: String, frame: u64, reason: String, stderr: String },
    #[error("{0}")]
    Gpu(#[from] GpuError),
    #[error("no video encoder is available: NVENC: {nvenc}; CPU fallback: {ffmpeg}. Use --output masks (PNG files) or --output null (no output) instead")]
    NoEncoder { nvenc: String, ffmpeg: String },
}

/// An encoder: frames in, packets out, in order.
///
/// Contract: `encode` takes frames in presentation order and appends to `out` every packet
/// that is complete (possibly none yet, possibly earlier frames'). When `encode` returns the
/// encoder no longer reads the frame's memory, so a pool slot can be released. `finish`
/// flushes the rest; afterwards every frame given has exactly one packet, with its pts.
pub trait FrameEncoder: Send {
    /// Names the encoder in reports ("NVENC HEVC", "ffmpeg libx265").
    fn name(&self) -> String;
    fn codec(&self) -> VideoCodec;
    /// The encoded size (see [`EncoderSettings::coded_size`]).
    fn coded_size(&self) -> (u32, u32);
    /// Parameter sets (NAL units without start codes) when known before the first packet.
    fn parameter_sets(&self) -> Vec<Vec<u8>>;
    fn encode(&mut self, frame: &InputFrame, out: &mut Vec<EncodedPacket>) -> Result<(), EncodeError>;
    fn finish(&mut self, out: &mut Vec<EncodedPacket>) -> Result<(), EncodeError>;
}

/// The muxer's video track for `encoder`'s packets of a run over `source`: the source's
/// timescale, nominal frame duration, stereo metadata and projection; the encoder's codec,
/// coded size and parameter sets; the range the settings declare.
pub fn track_config(
    source: &crate::video::demux::Demuxer,
    encoder: &dyn FrameEncoder,
    settings: &EncoderSettings,
) -> crate::video::mux::VideoTrackConfig {
    let mut config = crate::video::mux::VideoTrackConfig::like_source(source, encoder.codec());
    (config.width, config.height) = encoder.coded_size();
    config.parameter_sets = encoder.parameter_sets();
    config.colour.full_range = Some(settings.full_range);
    config
}

/// Which encoders [`open_encoder`] may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncoderPreference {
    /// NVENC when a session opens, else the ffmpeg fallback.
    Auto,
    NvencOnly,
    FfmpegOnly,
}

/// Opens the first encoder that works, in the order of `preference`. With no GPU, NVENC is
/// skipped. The error, when nothing works, carries each encoder's reason.
pub fn open_encoder(
    gpu: Option<&Gpu>,
    settings: &EncoderSettings,
    preference: EncoderPreference,
) -> Result<Box<dyn FrameEncoder>, EncodeError> {
    let ffmpeg =
        if preference == EncoderPreference::NvencOnly { Ok(Default::default()) } else { ffmpeg::find_ffmpeg() };
    open_encoder_with(gpu, settings, preference, ffmpeg)
}

/// [`open_encoder`] with the ffmpeg to fall back on given (or the reason there is none).
pub fn open_encoder_with(
    gpu: Option<&Gpu>,
    settings: &EncoderSettings,
    preference: EncoderPreference,
    ffmpeg: Result<std::path::PathBuf, EncodeError>,
) -> Result<Box<dyn FrameEncoder>, EncodeError> {
    settings.validate()?;
    let mut nvenc_reason = "not tried".to_string();
    if preference != EncoderPreference::FfmpegOnly {
        match gpu {
            Some(gpu) => match nvenc::NvencEncoder::open(gpu, settings) {
                Ok(e) => return Ok(Box::new(e)),
                Err(e @ EncodeError::Settings { .. }) if preference == EncoderPreference::NvencOnly => return Err(e),
                Err(e) => nvenc_reason = e.to_string(),
            },
            None => nvenc_reason = "no GPU".into(),
        }
        if preference == EncoderPreference::NvencOnly {
            return Err(EncodeError::NvencUnavailable { reason: nvenc_reason });
        }
    }
    match ffmpeg.and_then(|path| ffmpeg::FfmpegEncoder::open_with(&path, settings)) {
        Ok(e) => Ok(Box::new(e)),
        Err(e @ (EncodeError::FfmpegNotFound { .. } | EncodeError::FfmpegMissingEncoder { .. })) => {
            Err(EncodeError::NoEncoder { nvenc: nvenc_reason, ffmpeg: e.to_string() })
        }
        Err(e) => Err(e),
    }
}

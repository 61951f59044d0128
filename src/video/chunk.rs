//! The one type that joins demux and decode: a [`Chunk`] is one compressed video sample, plus
//! [`StreamInfo`], what the decoder must know before the first chunk.
//!
//! Timestamps are integers in [`StreamInfo::timescale`] ticks per second, copied from the
//! container without passing through floats.

use serde::Serialize;

/// One compressed video sample (one access unit / one frame) in decode order.
///
/// Invariants the demuxers guarantee (and `tests/demux` checks on every fixture):
/// - `dts <= pts`.
/// - `dts` is non-decreasing from one chunk to the next; `index` counts up from 0 by one.
/// - The first chunk is a keyframe for every fixture ffmpeg writes; the demuxer does not drop
///   leading non-keyframes (the decoder decides what to do with them).
///
/// How `pts`/`dts` are derived per container:
/// - **MP4/MOV**: `dts` is the sum of `stts` (or `trun`/`tfdt`) durations and `pts = dts + ctts`.
///   If any composition offset is negative (`ctts` version 1), every `dts` is lowered by the
///   most negative offset so that `dts <= pts` holds (ffmpeg's `dts_shift`). Then the edit
///   list is applied to both: the first non-empty edit's `media_time` is subtracted and the
///   duration of leading empty edits (converted from the movie to the media timescale, rounded
///   down) is added. This reproduces the packet timestamps `ffprobe -show_packets` prints, so
///   for an x264 clip with B-frames the first keyframe has `pts == 0` and `dts < 0`. Only the
///   first non-empty edit is honoured; later edits (cuts) are not applied.
/// - **Matroska/WebM**: blocks carry presentation timestamps only. `pts` is the block time;
///   `dts` is reconstructed as the sorted `pts` list lowered by the smallest constant that makes
///   `dts <= pts` for every sample (so it equals `pts` for streams without reordering).
/// - **Raw Annex-B**: there is no container clock. Frames are numbered in decode order and
///   `pts = dts = index × duration`, where `timescale`/`duration` come from the SPS VUI timing
///   when present and are 25 fps (`timescale = 25`, `duration = 1`) otherwise. Presentation
///   order is not reconstructed from picture order counts, so for streams with B-frames the
///   `pts` are in decode order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// H.264/HEVC: Annex-B with 4-byte start codes, parameter sets in front of every keyframe
    /// that does not carry its own. VP9: one frame (or superframe) as stored. AV1: the sample's
    /// OBUs in the low-overhead format, as stored in the container.
    pub data: Vec<u8>,
    /// Presentation timestamp in `StreamInfo::timescale` ticks.
    pub pts: i64,
    /// Decode timestamp in `StreamInfo::timescale` ticks; `dts <= pts`.
    pub dts: i64,
    /// Duration in `StreamInfo::timescale` ticks (0 when the container gives none).
    pub duration: i64,
    /// A random access point: decoding can start here.
    pub is_keyframe: bool,
    /// Position in decode order, from 0.
    pub index: u64,
}

/// Video codecs the demuxer hands on to NVDEC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VideoCodec {
    H264,
    Hevc,
    Vp9,
    Av1,
}

impl VideoCodec {
    /// The short name ffprobe uses (`h264`, `hevc`, `vp9`, `av1`).
    pub fn name(self) -> &'static str {
        match self {
            VideoCodec::H264 => "h264",
            VideoCodec::Hevc => "hevc",
            VideoCodec::Vp9 => "vp9",
            VideoCodec::Av1 => "av1",
        }
    }
}

impl std::fmt::Display for VideoCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Colour description (ITU-T H.273 code points), from the container (`colr` nclx, Matroska
/// `Colour`) when present, else from the codec configuration (SPS VUI, `vpcC`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ColourDescription {
    pub matrix: Option<u8>,
    pub primaries: Option<u8>,
    pub transfer: Option<u8>,
    pub full_range: Option<bool>,
}

/// What the decoder needs to know about the video track before the first [`Chunk`].
#[derive(Debug, Clone, PartialEq)]
pub struct StreamInfo {
    pub codec: VideoCodec,
    /// Profile name as ffprobe prints it ("High", "Main 10", "Profile 0", ...), when known.
    pub profile: Option<String>,
    /// Luma bit depth (8, 10 or 12).
    pub bit_depth: u8,
    /// Chroma format: 0 = monochrome, 1 = 4:2:0, 2 = 4:2:2, 3 = 4:4:4, when known.
    pub chroma_format: Option<u8>,
    /// Displayed width in pixels (after SPS cropping / conformance window).
    pub width: u32,
    /// Displayed height in pixels.
    pub height: u32,
    /// Ticks per second of every timestamp in [`Chunk`].
    pub timescale: u32,
    /// Number of video samples in the file.
    pub frame_count: u64,
    /// Nominal frame rate: `timescale` over the most common sample duration.
    pub fps: f64,
    /// From the earliest pts to the end of the latest sample, in seconds.
    pub duration_s: f64,
    pub colour: ColourDescription,
    /// The container's codec configuration record as stored (`avcC`, `hvcC`, `vpcC`, `av1C`
    /// payload or Matroska `CodecPrivate`), empty when there is none.
    pub codec_private: Vec<u8>,
    /// Parameter sets (VPS/SPS/PPS) as Annex-B, ready to feed a decoder ahead of the first
    /// chunk; empty for VP9/AV1 and for streams whose parameter sets are only in band.
    pub parameter_sets_annexb: Vec<u8>,
}

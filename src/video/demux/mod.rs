//! Demux: MP4/MOV, Matroska/WebM and raw Annex-B files → [`Chunk`]s in decode order.
//!
//! Every container is reduced at [`Demuxer::open`] to the same small sample index (file offset,
//! size, timestamps, keyframe flag: about 40 bytes per sample) by reading only headers and
//! tables; sample bytes are read lazily, one seek + read per [`Demuxer::next_chunk`], so
//! memory does not grow with the size of the media data. Opening checks that every sample lies
//! inside the file, so a truncated file fails at open with [`DemuxError::Truncated`] naming
//! the first sample (or element) that runs past the end.
//!
//! The container parsers are our own (see `mp4.rs`, `matroska.rs`, `annexb.rs`): they handle
//! fragmented MP4, unknown-size Matroska clusters and truncation with checked arithmetic, and
//! never read `mdat` or a cluster whole.

pub mod annexb;
pub mod matroska;
pub mod mp4;
pub mod nal;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::video::chunk::{Chunk, StreamInfo, VideoCodec};
use crate::video::layout::StereoMode;

/// Why a file could not be demuxed. Each message is one sentence starting with the path.
#[derive(Debug, thiserror::Error)]
pub enum DemuxError {
    #[error("{path}: the file is empty (0 bytes); check that it finished copying or downloading")]
    Empty { path: PathBuf },
    #[error(
        "{path}: not a video file vrseg can read (expected MP4/MOV, Matroska/WebM, or a raw H.264/HEVC Annex-B stream)"
    )]
    UnknownContainer { path: PathBuf },
    #[error("{path}: the file is truncated: {what} ends at byte {end} but the file has only {file_len} bytes; re-copy or re-download it")]
    Truncated { path: PathBuf, what: String, end: u64, file_len: u64 },
    #[error("{path}: corrupt {element}: {reason}")]
    Corrupt { path: PathBuf, element: String, reason: String },
    #[error("{path}: unsupported video codec {codec} (vrseg reads H.264, HEVC, VP9 and AV1); transcode it, e.g. `ffmpeg -i IN -c:v libx264 OUT.mp4`")]
    UnsupportedCodec { path: PathBuf, codec: String },
    #[error("{path}: the file has no video track (audio only?)")]
    NoVideoTrack { path: PathBuf },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl DemuxError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            DemuxError::Empty { path }
            | DemuxError::UnknownContainer { path }
            | DemuxError::Truncated { path, .. }
            | DemuxError::Corrupt { path, .. }
            | DemuxError::UnsupportedCodec { path, .. }
            | DemuxError::NoVideoTrack { path }
            | DemuxError::Io { path, .. } => path,
        }
    }
}

/// A parse failure before the path is attached (the parsers do not carry the path around).
#[derive(Debug)]
pub enum Fault {
    Truncated { what: String, end: u64 },
    Corrupt { element: String, reason: String },
    UnsupportedCodec(String),
    NoVideoTrack,
    UnknownContainer,
    Io(std::io::Error),
}

impl Fault {
    pub(crate) fn corrupt(element: &str, reason: impl Into<String>) -> Fault {
        Fault::Corrupt { element: element.to_string(), reason: reason.into() }
    }

    pub(crate) fn at(self, path: &Path, file_len: u64) -> DemuxError {
        let path = path.to_path_buf();
        match self {
            Fault::Truncated { what, end } => DemuxError::Truncated { path, what, end, file_len },
            Fault::Corrupt { element, reason } => DemuxError::Corrupt { path, element, reason },
            Fault::UnsupportedCodec(codec) => DemuxError::UnsupportedCodec { path, codec },
            Fault::NoVideoTrack => DemuxError::NoVideoTrack { path },
            Fault::UnknownContainer => DemuxError::UnknownContainer { path },
            Fault::Io(source) => DemuxError::Io { path, source },
        }
    }
}

impl From<std::io::Error> for Fault {
    fn from(e: std::io::Error) -> Self {
        Fault::Io(e)
    }
}

/// The container a file was read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Container {
    Mp4,
    Matroska,
    AnnexB,
}

impl Container {
    pub fn name(self) -> &'static str {
        match self {
            Container::Mp4 => "mp4",
            Container::Matroska => "matroska",
            Container::AnnexB => "annexb",
        }
    }
}

/// An audio track, reported so that muxing can carry it over.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AudioTrackInfo {
    /// ffprobe-style short name ("aac", "opus", ...) or the container's codec id when unknown.
    pub codec: String,
    pub channels: u32,
    pub sample_rate: u32,
}

/// An audio track's codec configuration exactly as its container stores it: what a muxer
/// copies so that the audio reaches the output untouched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioConfig {
    /// MP4/MOV: the sample entry box's fourcc (`mp4a`, `Opus`, ...) and payload (everything
    /// after the 8-byte box header: reserved bytes, data reference index, the sound fields and
    /// child boxes such as `esds` or `dOps`), byte for byte.
    Mp4 { fourcc: [u8; 4], sample_entry: Vec<u8> },
    /// Matroska/WebM: `CodecID`, `CodecPrivate`, the `Audio` master element's payload, and the
    /// track's `CodecDelay` / `SeekPreRoll` / `DefaultDuration` in nanoseconds when present.
    Matroska {
        codec_id: String,
        codec_private: Vec<u8>,
        audio_element: Vec<u8>,
        codec_delay_ns: Option<u64>,
        seek_pre_roll_ns: Option<u64>,
        default_duration_ns: Option<u64>,
    },
}

/// Where one audio sample's bytes are and when it plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioSample {
    /// File offset of the sample's bytes.
    pub offset: u64,
    pub size: u32,
    /// Decode time in the track's timescale (MP4: the `stts` sum from 0, shifted like the
    /// video's by the edit list; Matroska: equal to `pts`).
    pub dts: i64,
    /// Presentation time in the track's timescale on the same timeline as the video chunks'
    /// `pts` (MP4: edit list applied as for video; Matroska: the block timestamp, and for the
    /// later frames of a laced block the block timestamp plus the frames before it).
    pub pts: i64,
    /// Duration in the track's timescale (0 when unknown).
    pub duration: i64,
    pub keyframe: bool,
    /// Matroska `DiscardPadding` of the sample's block in nanoseconds (samples to drop from
    /// its end, e.g. Opus end trimming); 0 when none.
    pub discard_padding_ns: i64,
}

/// An audio track with its sample index, for copying into an output file.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioTrack {
    pub info: AudioTrackInfo,
    /// MP4 `track_ID` or Matroska `TrackNumber` in the source.
    pub source_id: u64,
    /// Ticks per second of `AudioSample` times: the MP4 track's `mdhd` timescale, or for
    /// Matroska the segment's (the same as the video's [`StreamInfo::timescale`]).
    pub timescale: u32,
    /// ISO 639-2 language code when the container names one other than "und".
    pub language: Option<String>,
    pub config: AudioConfig,
    /// Samples in decode order.
    pub samples: Vec<AudioSample>,
}

/// One entry of the sample index: where a sample's bytes are and when it plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SampleEntry {
    pub offset: u64,
    pub size: u32,
    pub pts: i64,
    pub dts: i64,
    pub duration: i64,
    pub keyframe: bool,
}

/// How a sample's stored bytes become [`Chunk::data`].
#[derive(Debug, Clone)]
pub(crate) enum Payload {
    /// Length-prefixed NAL units (MP4, Matroska): convert to Annex-B.
    LengthPrefixed(nal::NalConfig),
    /// Already Annex-B (raw streams): insert parameter sets only where a keyframe lacks them.
    AnnexB { codec: VideoCodec, parameter_sets: Vec<Vec<u8>> },
    /// VP9 frames and AV1 temporal units: passed through.
    Verbatim,
}

/// What a container parser hands back.
#[derive(Clone)]
pub(crate) struct Parsed {
    pub container: Container,
    pub info: StreamInfo,
    pub audio: Vec<AudioTrackInfo>,
    pub stereo: Option<StereoMode>,
    pub samples: Vec<SampleEntry>,
    pub payload: Payload,
    /// Audio tracks whose samples were indexed (for copying).
    pub audio_tracks: Vec<AudioTrack>,
    /// Audio tracks listed in `audio` that cannot be copied, each with the reason.
    pub audio_skipped: Vec<String>,
    /// Boxes / elements that describe the video's projection, copied verbatim by muxers.
    pub video_extras: VideoExtras,
}

/// Container-level video metadata a muxer carries over byte for byte.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VideoExtras {
    /// MP4: the `sv3d` box (Spherical Video V2 projection) from the visual sample entry,
    /// header included.
    pub mp4_sv3d: Option<Vec<u8>>,
    /// Matroska: the `Projection` element (inside `Video`), header included.
    pub matroska_projection: Option<Vec<u8>>,
}

/// A demuxer over one file, any container. All containers reduce to one sample index, so this
/// is one type rather than a trait with three implementations.
pub struct Demuxer {
    path: PathBuf,
    file: File,
    file_len: u64,
    parsed: Parsed,
    next: usize,
}

impl std::fmt::Debug for Demuxer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Demuxer")
            .field("path", &self.path)
            .field("container", &self.parsed.container)
            .field("info", &self.parsed.info)
            .field("next", &self.next)
            .finish()
    }
}

impl Demuxer {
    /// Opens a file, detects its container from its first bytes (falling back to the
    /// extension for raw Annex-B), and builds the sample index.
    pub fn open(path: impl AsRef<Path>) -> Result<Demuxer, DemuxError> {
        let path = path.as_ref();
        let io = |source| DemuxError::Io { path: path.to_path_buf(), source };
        let mut file = File::open(path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        if file_len == 0 {
            return Err(DemuxError::Empty { path: path.to_path_buf() });
        }
        let mut head = [0u8; 64];
        let head_len = read_up_to(&mut file, &mut head).map_err(io)?;
        let head = &head[..head_len];
        let parsed = match sniff(head, path) {
            Some(Container::Mp4) => mp4::parse(&mut file, file_len),
            Some(Container::Matroska) => matroska::parse(&mut file, file_len),
            Some(Container::AnnexB) => annexb::parse(&mut file, file_len, path),
            None => Err(Fault::UnknownContainer),
        }
        .map_err(|f| f.at(path, file_len))?;
        check_samples_inside(&parsed.samples, file_len).map_err(|f| f.at(path, file_len))?;
        let mut parsed = parsed;
        drop_truncated_audio(&mut parsed, file_len);
        Ok(Demuxer { path: path.to_path_buf(), file, file_len, parsed, next: 0 })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn container(&self) -> Container {
        self.parsed.container
    }

    pub fn info(&self) -> &StreamInfo {
        &self.parsed.info
    }

    pub fn audio(&self) -> &[AudioTrackInfo] {
        &self.parsed.audio
    }

    /// Audio tracks whose sample tables were read, in container order: what a muxer copies.
    pub fn audio_tracks(&self) -> &[AudioTrack] {
        &self.parsed.audio_tracks
    }

    /// Audio tracks that cannot be copied (a damaged or truncated sample table, an unknown
    /// layout), one sentence each; the video is unaffected.
    pub fn audio_skipped(&self) -> &[String] {
        &self.parsed.audio_skipped
    }

    /// Projection metadata (MP4 `sv3d`, Matroska `Projection`) as stored, for muxers.
    pub fn video_extras(&self) -> &VideoExtras {
        &self.parsed.video_extras
    }

    /// The bytes of sample `index` of audio track `track` (an index into [`Self::audio_tracks`]).
    pub fn read_audio_sample(&mut self, track: usize, index: usize) -> Result<Vec<u8>, DemuxError> {
        let sample =
            self.parsed.audio_tracks.get(track).and_then(|t| t.samples.get(index)).copied().ok_or_else(|| {
                DemuxError::Corrupt {
                    path: self.path.clone(),
                    element: "audio track".into(),
                    reason: format!("no sample {index} in audio track {track}"),
                }
            })?;
        let entry = SampleEntry {
            offset: sample.offset,
            size: sample.size,
            pts: sample.pts,
            dts: sample.dts,
            duration: sample.duration,
            keyframe: sample.keyframe,
        };
        self.read_sample(index as u64, &entry)
    }

    /// Stereo packing signalled by the container (MP4 `st3d`, Matroska `StereoMode`).
    pub fn stereo_metadata(&self) -> Option<StereoMode> {
        self.parsed.stereo
    }

    /// Decode-order indices of the keyframes, for splitting the file into GOPs.
    pub fn keyframe_indices(&self) -> Vec<u64> {
        self.parsed.samples.iter().enumerate().filter(|(_, s)| s.keyframe).map(|(i, _)| i as u64).collect()
    }

    /// Presentation timestamps of all samples in decode order (cheap: from the index).
    pub fn pts_list(&self) -> Vec<i64> {
        self.parsed.samples.iter().map(|s| s.pts).collect()
    }

    /// Positions the demuxer so that the next chunk is the last keyframe (in decode order)
    /// whose pts is at or before `pts`; returns its index. With no such keyframe it goes to
    /// the first sample.
    pub fn seek_to_keyframe_before(&mut self, pts: i64) -> u64 {
        let target = self
            .parsed
            .samples
            .iter()
            .enumerate()
            .filter(|(_, s)| s.keyframe && s.pts <= pts)
            .map(|(i, _)| i)
            .next_back()
            .unwrap_or(0);
        self.next = target;
        target as u64
    }

    /// Positions the demuxer at a decode-order sample index (clamped to the end).
    pub fn seek_to_index(&mut self, index: u64) {
        self.next = usize::try_from(index).unwrap_or(usize::MAX).min(self.parsed.samples.len());
    }

    /// A second demuxer over the same file with its own file handle and read position (at
    /// the first sample), sharing nothing mutable with this one: parallel decode sessions
    /// each read their own sample ranges. The sample index is copied, not re-parsed.
    pub fn try_clone(&self) -> Result<Demuxer, DemuxError> {
        let file = File::open(&self.path).map_err(|source| DemuxError::Io { path: self.path.clone(), source })?;
        Ok(Demuxer { path: self.path.clone(), file, file_len: self.file_len, parsed: self.parsed.clone(), next: 0 })
    }

    /// The next sample in decode order, or `None` after the last one.
    pub fn next_chunk(&mut self) -> Result<Option<Chunk>, DemuxError> {
        let Some(&entry) = self.parsed.samples.get(self.next) else {
            return Ok(None);
        };
        let index = self.next as u64;
        self.next += 1;
        let raw = self.read_sample(index, &entry)?;
        let data = match &self.parsed.payload {
            Payload::LengthPrefixed(config) => {
                nal::length_prefixed_to_annexb(&raw, config, entry.keyframe).map_err(|f| {
                    let f = match f {
                        Fault::Corrupt { reason, .. } => Fault::Corrupt { element: format!("sample {index}"), reason },
                        other => other,
                    };
                    f.at(&self.path, self.file_len)
                })?
            }
            Payload::AnnexB { codec, parameter_sets } if entry.keyframe => {
                nal::annexb_with_parameter_sets(&raw, *codec, parameter_sets)
            }
            Payload::AnnexB { .. } | Payload::Verbatim => raw,
        };
        Ok(Some(Chunk {
            data,
            pts: entry.pts,
            dts: entry.dts,
            duration: entry.duration,
            is_keyframe: entry.keyframe,
            index,
        }))
    }

    fn read_sample(&mut self, index: u64, entry: &SampleEntry) -> Result<Vec<u8>, DemuxError> {
        let io = |source| DemuxError::Io { path: self.path.clone(), source };
        let mut buf = vec![0u8; entry.size as usize];
        self.file.seek(SeekFrom::Start(entry.offset)).map_err(io)?;
        if let Err(e) = self.file.read_exact(&mut buf) {
            // The file shrank after open, or the index lied: report it as truncation.
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                return Err(DemuxError::Truncated {
                    path: self.path.clone(),
                    what: format!("sample {index} (bytes {}..{})", entry.offset, entry.offset + u64::from(entry.size)),
                    end: entry.offset + u64::from(entry.size),
                    file_len: self.file.metadata().map(|m| m.len()).unwrap_or(self.file_len),
                });
            }
            return Err(io(e));
        }
        Ok(buf)
    }
}

/// Reads as much as fits into `buf` (short files give fewer bytes, not an error).
pub(crate) fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Reads exactly `len` bytes at `offset`; a short read is truncation of `what`.
pub(crate) fn read_at(
    file: &mut File,
    offset: u64,
    len: usize,
    what: impl FnOnce() -> String,
) -> Result<Vec<u8>, Fault> {
    let mut buf = vec![0u8; len];
    file.seek(SeekFrom::Start(offset))?;
    let got = read_up_to(file, &mut buf)?;
    if got < len {
        return Err(Fault::Truncated { what: what(), end: offset.saturating_add(len as u64) });
    }
    Ok(buf)
}

fn sniff(head: &[u8], path: &Path) -> Option<Container> {
    if head.len() >= 8 {
        let kind = &head[4..8];
        if matches!(kind, b"ftyp" | b"moov" | b"mdat" | b"free" | b"skip" | b"wide" | b"styp" | b"pnot" | b"moof") {
            return Some(Container::Mp4);
        }
    }
    if head.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
        return Some(Container::Matroska);
    }
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    let annexb_ext = matches!(ext.as_deref(), Some("h264" | "264" | "avc" | "h265" | "265" | "hevc"));
    let starts_with_start_code = head.starts_with(&[0, 0, 1]) || head.starts_with(&[0, 0, 0, 1]);
    if annexb_ext && starts_with_start_code {
        return Some(Container::AnnexB);
    }
    None
}

fn check_samples_inside(samples: &[SampleEntry], file_len: u64) -> Result<(), Fault> {
    for (i, s) in samples.iter().enumerate() {
        let end = s
            .offset
            .checked_add(u64::from(s.size))
            .ok_or_else(|| Fault::corrupt("sample table", format!("sample {i} offset {} overflows", s.offset)))?;
        if end > file_len {
            return Err(Fault::Truncated { what: format!("sample {i} (bytes {}..{end})", s.offset), end });
        }
    }
    Ok(())
}

/// Audio tracks whose samples run past the end of the file are not copyable: they move to
/// `audio_skipped` (the video is checked separately and fails the open).
fn drop_truncated_audio(parsed: &mut Parsed, file_len: u64) {
    let tracks = std::mem::take(&mut parsed.audio_tracks);
    for track in tracks {
        let past_end =
            track.samples.iter().position(|s| s.offset.checked_add(u64::from(s.size)).is_none_or(|end| end > file_len));
        match past_end {
            Some(i) => parsed.audio_skipped.push(format!(
                "audio track {} ({}): sample {i} runs past the end of the file (truncated)",
                track.source_id, track.info.codec
            )),
            None => parsed.audio_tracks.push(track),
        }
    }
}

/// Fills in the decode timestamps for containers that store presentation times only: the
/// sorted pts, lowered by the smallest shift that gives `dts <= pts` everywhere.
pub(crate) fn dts_from_pts(samples: &mut [SampleEntry]) {
    let mut sorted: Vec<i64> = samples.iter().map(|s| s.pts).collect();
    sorted.sort_unstable();
    let shift = samples.iter().zip(&sorted).map(|(s, &p)| p.saturating_sub(s.pts)).max().unwrap_or(0).max(0);
    for (s, &p) in samples.iter_mut().zip(&sorted) {
        s.dts = p.saturating_sub(shift);
    }
}

/// Nominal fps and duration from the sample index: `timescale` over the most common duration,
/// and the span from the earliest pts to the end of the latest sample.
pub(crate) fn fill_timing(info: &mut StreamInfo, samples: &[SampleEntry]) {
    info.frame_count = samples.len() as u64;
    let mut durations: Vec<i64> = samples.iter().map(|s| s.duration).filter(|&d| d > 0).collect();
    durations.sort_unstable();
    let mut best = (0i64, 0usize);
    let mut i = 0;
    while i < durations.len() {
        let j = durations[i..].iter().position(|&d| d != durations[i]).map_or(durations.len(), |k| i + k);
        if j - i > best.1 {
            best = (durations[i], j - i);
        }
        i = j;
    }
    info.fps = if best.0 > 0 && info.timescale > 0 { f64::from(info.timescale) / best.0 as f64 } else { 0.0 };
    let first = samples.iter().map(|s| s.pts).min();
    let last = samples.iter().map(|s| s.pts.saturating_add(s.duration)).max();
    info.duration_s = match (first, last) {
        (Some(a), Some(b)) if info.timescale > 0 => b.saturating_sub(a) as f64 / f64::from(info.timescale),
        _ => 0.0,
    };
}

/// Stream facts and payload handling derived from a codec configuration record (`avcC`,
/// `hvcC`, `vpcC`, `av1C` payload, or the same bytes as Matroska `CodecPrivate`).
/// `width`/`height` are the container's values, used where the record has no SPS.
pub(crate) fn describe_codec(
    codec: VideoCodec,
    record: &[u8],
    width: u32,
    height: u32,
) -> Result<(StreamInfo, Payload), Fault> {
    let mut info = StreamInfo {
        codec,
        profile: None,
        bit_depth: 8,
        chroma_format: None,
        width,
        height,
        timescale: 0,
        frame_count: 0,
        fps: 0.0,
        duration_s: 0.0,
        colour: Default::default(),
        codec_private: record.to_vec(),
        parameter_sets_annexb: Vec::new(),
    };
    let payload = match codec {
        VideoCodec::H264 | VideoCodec::Hevc => {
            let config = if codec == VideoCodec::H264 { nal::parse_avcc(record)? } else { nal::parse_hvcc(record)? };
            if let Some(sps) = config.sps() {
                let facts =
                    if codec == VideoCodec::H264 { nal::parse_h264_sps(sps)? } else { nal::parse_hevc_sps(sps)? };
                apply_sps(&mut info, &facts);
            }
            info.parameter_sets_annexb = config.parameter_sets_annexb();
            Payload::LengthPrefixed(config)
        }
        VideoCodec::Vp9 => {
            // vpcC (FullBox) and Matroska CodecPrivate differ; callers pass vpcC only from MP4.
            Payload::Verbatim
        }
        VideoCodec::Av1 => {
            // av1C: marker|version, seq_profile(3)|seq_level_idx(5), tier|high_bitdepth|twelve_bit|mono|...
            if record.len() >= 3 && record[0] & 0x80 != 0 {
                let profile = record[1] >> 5;
                let high_bitdepth = record[2] & 0x40 != 0;
                let twelve_bit = record[2] & 0x20 != 0;
                let mono = record[2] & 0x10 != 0;
                let sub_x = record[2] & 0x08 != 0;
                let sub_y = record[2] & 0x04 != 0;
                info.bit_depth = if twelve_bit {
                    12
                } else if high_bitdepth {
                    10
                } else {
                    8
                };
                info.profile = match profile {
                    0 => Some("Main".to_string()),
                    1 => Some("High".to_string()),
                    2 => Some("Professional".to_string()),
                    _ => None,
                };
                info.chroma_format = Some(match (mono, sub_x, sub_y) {
                    (true, _, _) => 0,
                    (false, true, true) => 1,
                    (false, true, false) => 2,
                    _ => 3,
                });
            }
            Payload::Verbatim
        }
    };
    Ok((info, payload))
}

/// Copies SPS facts into the stream info; the container's colour description, set later, wins.
pub(crate) fn apply_sps(info: &mut StreamInfo, sps: &nal::SpsInfo) {
    info.width = sps.width;
    info.height = sps.height;
    info.bit_depth = sps.bit_depth_luma;
    info.chroma_format = Some(sps.chroma_format);
    info.profile = sps.profile.clone();
    info.colour = sps.colour;
}

/// Applies an MP4 `vpcC` payload (after the FullBox header) or the equivalent fields.
pub(crate) fn apply_vpcc(info: &mut StreamInfo, vpcc: &[u8]) {
    // version 1: profile, level, bitDepth(4)|chromaSubsampling(3)|fullRange(1), primaries, transfer, matrix
    if vpcc.len() >= 6 {
        info.profile = Some(format!("Profile {}", vpcc[0]));
        info.bit_depth = vpcc[2] >> 4;
        info.chroma_format = Some(match (vpcc[2] >> 1) & 0x07 {
            0 | 1 => 1,
            2 => 2,
            _ => 3,
        });
        info.colour = crate::video::chunk::ColourDescription {
            primaries: Some(vpcc[3]),
            transfer: Some(vpcc[4]),
            matrix: Some(vpcc[5]),
            full_range: Some(vpcc[2] & 1 == 1),
        };
    }
}

/// Profile and bit depth from a VP9 keyframe's uncompressed header (for Matroska files
/// without CodecPrivate). Returns None for non-keyframes or garbage.
pub(crate) fn vp9_keyframe_facts(frame: &[u8]) -> Option<(u8, u8)> {
    let mut r = nal::BitReader::new(frame, "VP9 frame header");
    if r.bits(2).ok()? != 2 {
        return None;
    }
    let low = r.bits(1).ok()?;
    let high = r.bits(1).ok()?;
    let profile = (high << 1 | low) as u8;
    if profile == 3 {
        r.bits(1).ok()?;
    }
    if r.flag().ok()? {
        return None; // show_existing_frame
    }
    if r.flag().ok()? {
        return None; // not a keyframe
    }
    r.bits(2).ok()?; // show_frame, error_resilient_mode
    if r.bits(24).ok()? != 0x49_83_42 {
        return None;
    }
    let depth = if profile >= 2 {
        if r.flag().ok()? {
            12
        } else {
            10
        }
    } else {
        8
    };
    Some((profile, depth))
}

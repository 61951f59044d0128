//! Matroska / WebM sample index, with our own EBML reader.
//!
//! Only element headers and block headers are read; frame bytes stay in the file until
//! [`super::Demuxer::next_chunk`]. Quirks handled:
//! - Unknown-size Segment and Cluster (ffmpeg writes these when muxing to a pipe): an
//!   unknown-size cluster ends at the first element that cannot be a cluster child (the next
//!   Cluster, Cues, Tags, ...) or at the end of the file.
//! - SimpleBlock and BlockGroup (keyframe = no ReferenceBlock; BlockDuration honoured), and
//!   Xiph, EBML and fixed-size lacing.
//! - Truncation: any element or frame that runs past the end of the file is an error naming
//!   it, because a reader that treats a short read as end of stream would silently drop frames.
//! - Every step advances by at least a header (≥ 2 bytes), so corrupt sizes cannot make the
//!   scan loop forever; sizes are added with checked arithmetic.
//! - `TimestampScale` that does not divide 1 s evenly: timestamps are converted to ns.
//!
//! Why not the `matroska-demuxer` crate: it treats an I/O error as end of file (so a cut file
//! looks complete), and it reads every frame's bytes while indexing, whereas we index headers
//! only and need byte offsets for lazy reads.

use std::fs::File;

use super::{
    describe_codec, dts_from_pts, fill_timing, read_at, AudioConfig, AudioSample, AudioTrack, AudioTrackInfo,
    Container, Fault, Parsed, Payload, SampleEntry, VideoExtras,
};
use crate::video::chunk::{ColourDescription, VideoCodec};
use crate::video::layout::StereoMode;

const EBML_HEADER: u32 = 0x1A45_DFA3;
const DOC_TYPE: u32 = 0x4282;
const SEGMENT: u32 = 0x1853_8067;
const INFO: u32 = 0x1549_A966;
const TIMESTAMP_SCALE: u32 = 0x2A_D7B1;
const TRACKS: u32 = 0x1654_AE6B;
const TRACK_ENTRY: u32 = 0xAE;
const TRACK_NUMBER: u32 = 0xD7;
const TRACK_TYPE: u32 = 0x83;
const CODEC_ID: u32 = 0x86;
const CODEC_PRIVATE: u32 = 0x63A2;
const DEFAULT_DURATION: u32 = 0x23_E383;
const VIDEO: u32 = 0xE0;
const PIXEL_WIDTH: u32 = 0xB0;
const PIXEL_HEIGHT: u32 = 0xBA;
const STEREO_MODE: u32 = 0x53B8;
const COLOUR: u32 = 0x55B0;
const MATRIX: u32 = 0x55B1;
const RANGE: u32 = 0x55B9;
const TRANSFER: u32 = 0x55BA;
const PRIMARIES: u32 = 0x55BB;
const AUDIO: u32 = 0xE1;
const SAMPLING_FREQUENCY: u32 = 0xB5;
const CHANNELS: u32 = 0x9F;
const CLUSTER: u32 = 0x1F43_B675;
const CLUSTER_TIMESTAMP: u32 = 0xE7;
const SIMPLE_BLOCK: u32 = 0xA3;
const BLOCK_GROUP: u32 = 0xA0;
const BLOCK: u32 = 0xA1;
const REFERENCE_BLOCK: u32 = 0xFB;
const BLOCK_DURATION: u32 = 0x9B;
const CODEC_DELAY: u32 = 0x56AA;
const SEEK_PRE_ROLL: u32 = 0x56BB;
const LANGUAGE: u32 = 0x22_B59C;
const PROJECTION: u32 = 0x7670;
const DISCARD_PADDING: u32 = 0x75A2;

/// Elements that end an unknown-size cluster: level-1 elements and the EBML header.
const LEVEL1: [u32; 10] =
    [SEGMENT, EBML_HEADER, CLUSTER, INFO, TRACKS, 0x114D_9B74, 0x1C53_BB6B, 0x1254_C367, 0x1043_A770, 0x1941_A469];

/// The most an in-memory master element (Info, Tracks, BlockGroup header) may claim.
const MAX_IN_MEMORY: u64 = 64 << 20;

const UNKNOWN: u64 = u64::MAX;

/// Reads the file through a window so scanning element headers costs few system calls.
struct Window<'f> {
    file: &'f mut File,
    file_len: u64,
    start: u64,
    buf: Vec<u8>,
}

impl<'f> Window<'f> {
    fn new(file: &'f mut File, file_len: u64) -> Self {
        Window { file, file_len, start: 0, buf: Vec::new() }
    }

    /// Up to `n` bytes at `pos` (fewer at the end of the file).
    fn peek(&mut self, pos: u64, n: usize) -> Result<&[u8], Fault> {
        if pos >= self.file_len {
            return Ok(&[]);
        }
        let end = pos.saturating_add(n as u64).min(self.file_len);
        if pos < self.start || end > self.start + self.buf.len() as u64 {
            let want = (self.file_len.saturating_sub(pos)).min(64 * 1024).max(n as u64) as usize;
            let avail = (self.file_len.saturating_sub(pos) as usize).min(want);
            self.buf = read_at(self.file, pos, avail, || format!("bytes at {pos}"))?;
            self.start = pos;
        }
        let from = (pos - self.start) as usize;
        let to = (end - self.start) as usize;
        Ok(&self.buf[from..to])
    }
}

struct Header {
    id: u32,
    /// Size of the payload, or [`UNKNOWN`].
    size: u64,
    /// Length of ID + size fields.
    len: u64,
}

/// Reads a variable-length integer: (value with marker bit removed, length, all-ones flag).
fn vint(bytes: &[u8], max_len: usize) -> Option<(u64, usize, bool)> {
    let first = *bytes.first()?;
    let len = first.leading_zeros() as usize + 1;
    if len > max_len || bytes.len() < len {
        return None;
    }
    let mut value = u64::from(first) & (0xFF >> len);
    let mut all_ones = value == (0xFF >> len);
    for &b in &bytes[1..len] {
        value = (value << 8) | u64::from(b);
        all_ones &= b == 0xFF;
    }
    Some((value, len, all_ones))
}

fn parse_header(bytes: &[u8], pos: u64) -> Result<Header, Fault> {
    let first = *bytes
        .first()
        .ok_or_else(|| Fault::Truncated { what: format!("the element header at byte {pos}"), end: pos + 2 })?;
    let id_len = first.leading_zeros() as usize + 1;
    if id_len > 4 {
        return Err(Fault::corrupt("EBML element", format!("invalid element ID at byte {pos}")));
    }
    if bytes.len() < id_len + 1 {
        return Err(Fault::Truncated {
            what: format!("the element header at byte {pos}"),
            end: pos + id_len as u64 + 1,
        });
    }
    let id = bytes[..id_len].iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b));
    let size_bytes = &bytes[id_len..];
    let size_len = size_bytes[0].leading_zeros() as usize + 1;
    if size_len > 8 {
        return Err(Fault::corrupt("EBML element", format!("invalid size field for element 0x{id:X} at byte {pos}")));
    }
    let (size, size_len, all_ones) = vint(size_bytes, 8).ok_or_else(|| Fault::Truncated {
        what: format!("the element header at byte {pos}"),
        end: pos + (id_len + size_len) as u64,
    })?;
    Ok(Header { id, size: if all_ones { UNKNOWN } else { size }, len: (id_len + size_len) as u64 })
}

/// Child elements of an in-memory master element.
struct Children<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Children<'a> {
    type Item = Result<(u32, &'a [u8]), Fault>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.data.len() {
            return None;
        }
        let rest = &self.data[self.pos..];
        let result = parse_header(rest, self.pos as u64).and_then(|h| {
            if h.size == UNKNOWN {
                return Err(Fault::corrupt(
                    "EBML element",
                    format!("element 0x{:X} has unknown size inside a sized parent", h.id),
                ));
            }
            let start = h.len as usize;
            let end = h.len.checked_add(h.size).filter(|&e| e <= rest.len() as u64).ok_or_else(|| {
                Fault::corrupt(
                    "EBML element",
                    format!("element 0x{:X} claims {} bytes, more than its parent holds", h.id, h.size),
                )
            })?;
            Ok((h.id, start, end as usize))
        });
        match result {
            Ok((id, start, end)) => {
                self.pos += end;
                Some(Ok((id, &rest[start..end])))
            }
            Err(e) => {
                self.pos = self.data.len();
                Some(Err(e))
            }
        }
    }
}

fn children(data: &[u8]) -> Children<'_> {
    Children { data, pos: 0 }
}

/// An element re-serialised with its ID and an 8-byte size, as muxers copy it.
fn element_bytes(id: u32, payload: &[u8]) -> Vec<u8> {
    let id_bytes = id.to_be_bytes();
    let skip = id_bytes.iter().take_while(|&&b| b == 0).count();
    let mut out = Vec::with_capacity(4 + 8 + payload.len());
    out.extend_from_slice(&id_bytes[skip..]);
    out.push(0x01);
    out.extend_from_slice(&(payload.len() as u64).to_be_bytes()[1..]);
    out.extend_from_slice(payload);
    out
}

/// A signed EBML integer (big-endian two's complement of 0–8 bytes).
fn signed(data: &[u8]) -> i64 {
    if data.is_empty() {
        return 0;
    }
    let bits = 8 * data.len().min(8) as u32;
    let v = uint(data);
    if bits < 64 && v >> (bits - 1) & 1 == 1 {
        (v | (!0u64 << bits)) as i64
    } else {
        v as i64
    }
}

fn uint(data: &[u8]) -> u64 {
    data.iter().take(8).fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
}

fn float(data: &[u8]) -> f64 {
    match data.len() {
        4 => f64::from(f32::from_bits(uint(data) as u32)),
        8 => f64::from_bits(uint(data)),
        _ => 0.0,
    }
}

#[derive(Default)]
struct TrackEntry {
    number: u64,
    kind: u64,
    codec_id: String,
    codec_private: Vec<u8>,
    default_duration_ns: Option<u64>,
    width: u32,
    height: u32,
    stereo_mode: Option<u64>,
    colour: Option<ColourDescription>,
    sample_rate: f64,
    channels: u64,
    codec_delay_ns: Option<u64>,
    seek_pre_roll_ns: Option<u64>,
    language: Option<String>,
    /// The `Audio` element's payload, verbatim.
    audio_element: Vec<u8>,
    /// The `Projection` element, header included.
    projection: Option<Vec<u8>>,
}

fn parse_track(data: &[u8]) -> Result<TrackEntry, Fault> {
    let mut t = TrackEntry { channels: 1, sample_rate: 8000.0, ..TrackEntry::default() };
    for c in children(data) {
        let (id, p) = c?;
        match id {
            TRACK_NUMBER => t.number = uint(p),
            TRACK_TYPE => t.kind = uint(p),
            CODEC_ID => t.codec_id = String::from_utf8_lossy(p).trim_end_matches('\0').to_string(),
            CODEC_PRIVATE => t.codec_private = p.to_vec(),
            DEFAULT_DURATION => t.default_duration_ns = Some(uint(p)).filter(|&d| d > 0),
            CODEC_DELAY => t.codec_delay_ns = Some(uint(p)),
            SEEK_PRE_ROLL => t.seek_pre_roll_ns = Some(uint(p)),
            LANGUAGE => {
                let lang = String::from_utf8_lossy(p).trim_end_matches('\0').to_string();
                if !lang.is_empty() && lang != "und" {
                    t.language = Some(lang);
                }
            }
            VIDEO => {
                for v in children(p) {
                    let (vid, vp) = v?;
                    match vid {
                        PIXEL_WIDTH => t.width = u32::try_from(uint(vp)).unwrap_or(0),
                        PIXEL_HEIGHT => t.height = u32::try_from(uint(vp)).unwrap_or(0),
                        STEREO_MODE => t.stereo_mode = Some(uint(vp)),
                        PROJECTION => t.projection = Some(element_bytes(PROJECTION, vp)),
                        COLOUR => {
                            let mut colour = ColourDescription::default();
                            for c in children(vp) {
                                let (cid, cp) = c?;
                                let value = u8::try_from(uint(cp)).ok();
                                match cid {
                                    MATRIX => colour.matrix = value,
                                    TRANSFER => colour.transfer = value,
                                    PRIMARIES => colour.primaries = value,
                                    RANGE => {
                                        colour.full_range = match value {
                                            Some(1) => Some(false),
                                            Some(2) => Some(true),
                                            _ => None,
                                        }
                                    }
                                    _ => {}
                                }
                            }
                            t.colour = Some(colour);
                        }
                        _ => {}
                    }
                }
            }
            AUDIO => {
                t.audio_element = p.to_vec();
                for a in children(p) {
                    let (aid, ap) = a?;
                    match aid {
                        SAMPLING_FREQUENCY => t.sample_rate = float(ap),
                        CHANNELS => t.channels = uint(ap),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(t)
}

fn audio_codec_name(codec_id: &str) -> String {
    match codec_id {
        "A_AAC" => "aac".into(),
        "A_OPUS" => "opus".into(),
        "A_VORBIS" => "vorbis".into(),
        "A_AC3" => "ac3".into(),
        "A_EAC3" => "eac3".into(),
        "A_FLAC" => "flac".into(),
        "A_MPEG/L3" => "mp3".into(),
        "A_MPEG/L2" => "mp2".into(),
        "A_DTS" => "dts".into(),
        "A_TRUEHD" => "truehd".into(),
        id if id.starts_with("A_AAC") => "aac".into(),
        id if id.starts_with("A_PCM") => "pcm".into(),
        id => id.to_string(),
    }
}

fn video_codec(codec_id: &str) -> Option<VideoCodec> {
    match codec_id {
        "V_MPEG4/ISO/AVC" => Some(VideoCodec::H264),
        "V_MPEGH/ISO/HEVC" => Some(VideoCodec::Hevc),
        "V_VP9" => Some(VideoCodec::Vp9),
        "V_AV1" => Some(VideoCodec::Av1),
        _ => None,
    }
}

/// One audio frame as indexed: raw block timestamp, its place in a lace, BlockDuration.
struct AudioFrame {
    offset: u64,
    size: u32,
    block_ts: i64,
    lace_index: u32,
    lace_count: u32,
    keyframe: bool,
    block_duration: Option<u64>,
    discard_padding_ns: i64,
}

struct AudioIndex {
    entry: TrackEntry,
    info: AudioTrackInfo,
    frames: Vec<AudioFrame>,
}

struct Indexer {
    timestamp_scale: u64,
    video: Option<TrackEntry>,
    audio: Vec<AudioTrackInfo>,
    audio_index: Vec<AudioIndex>,
    unsupported: Option<String>,
    saw_tracks: bool,
    samples: Vec<SampleEntry>,
    /// Per sample: the duration from BlockDuration, if any, in raw ticks.
    block_durations: Vec<Option<u64>>,
}

/// Builds the index of the first video track.
pub(crate) fn parse(file: &mut File, file_len: u64) -> Result<Parsed, Fault> {
    let mut w = Window::new(file, file_len);
    // EBML header.
    let head = parse_header(w.peek(0, 12)?, 0)?;
    if head.id != EBML_HEADER || head.size == UNKNOWN || head.size > 4096 {
        return Err(Fault::UnknownContainer);
    }
    let head_end = head.len + head.size;
    if head_end > file_len {
        return Err(Fault::Truncated { what: "the EBML header".into(), end: head_end });
    }
    let ebml = w.peek(head.len, head.size as usize)?.to_vec();
    let mut doc_type = String::new();
    for c in children(&ebml) {
        let (id, p) = c?;
        if id == DOC_TYPE {
            doc_type = String::from_utf8_lossy(p).trim_end_matches('\0').to_string();
        }
    }
    if doc_type != "matroska" && doc_type != "webm" {
        return Err(Fault::UnknownContainer);
    }

    // Find the Segment.
    let mut pos = head_end;
    let (seg_start, seg_declared_end) = loop {
        if pos >= file_len {
            return Err(Fault::corrupt("Segment", "the file has no Segment element"));
        }
        let h = parse_header(w.peek(pos, 12)?, pos)?;
        if h.id == SEGMENT {
            let start = pos + h.len;
            let end = if h.size == UNKNOWN {
                None
            } else {
                Some(start.checked_add(h.size).ok_or_else(|| Fault::corrupt("Segment", "size overflows"))?)
            };
            break (start, end);
        }
        if h.size == UNKNOWN {
            return Err(Fault::corrupt("EBML element", format!("top-level element 0x{:X} has unknown size", h.id)));
        }
        pos = pos
            .checked_add(h.len)
            .and_then(|p| p.checked_add(h.size))
            .ok_or_else(|| Fault::corrupt("EBML element", "size overflows"))?;
    };
    let seg_end = seg_declared_end.unwrap_or(file_len).min(file_len);

    let mut ix = Indexer {
        timestamp_scale: 1_000_000,
        video: None,
        audio: Vec::new(),
        audio_index: Vec::new(),
        unsupported: None,
        saw_tracks: false,
        samples: Vec::new(),
        block_durations: Vec::new(),
    };
    let mut pos = seg_start;
    while pos < seg_end {
        let h = parse_header(w.peek(pos, 12)?, pos)?;
        let body = pos.checked_add(h.len).ok_or_else(|| Fault::corrupt("Segment", "size overflows"))?;
        if h.id == CLUSTER {
            pos = index_cluster(&mut w, &mut ix, body, h.size, seg_end, pos)?;
            continue;
        }
        if h.size == UNKNOWN {
            return Err(Fault::corrupt("Segment", format!("element 0x{:X} at byte {pos} has unknown size", h.id)));
        }
        let end = body.checked_add(h.size).ok_or_else(|| Fault::corrupt("Segment", "size overflows"))?;
        if end > file_len {
            return Err(Fault::Truncated { what: format!("element 0x{:X} at byte {pos}", h.id), end });
        }
        match h.id {
            INFO | TRACKS => {
                if h.size > MAX_IN_MEMORY {
                    return Err(Fault::corrupt("Tracks", format!("element at byte {pos} claims {} bytes", h.size)));
                }
                let data = w.peek(body, h.size as usize)?.to_vec();
                if h.id == INFO {
                    for c in children(&data) {
                        let (id, p) = c?;
                        if id == TIMESTAMP_SCALE {
                            ix.timestamp_scale = uint(p);
                        }
                    }
                    if ix.timestamp_scale == 0 {
                        return Err(Fault::corrupt("Info", "TimestampScale is 0"));
                    }
                } else {
                    read_tracks(&mut ix, &data)?;
                }
            }
            _ => {}
        }
        pos = end;
    }
    if let Some(end) = seg_declared_end {
        if end > file_len {
            return Err(Fault::Truncated { what: "the Segment element".into(), end });
        }
    }
    finish(ix, &mut w)
}

fn read_tracks(ix: &mut Indexer, data: &[u8]) -> Result<(), Fault> {
    ix.saw_tracks = true;
    for c in children(data) {
        let (id, p) = c?;
        if id != TRACK_ENTRY {
            continue;
        }
        let t = parse_track(p)?;
        match t.kind {
            1 if ix.video.is_none() => {
                if video_codec(&t.codec_id).is_some() {
                    ix.video = Some(t);
                } else if ix.unsupported.is_none() {
                    ix.unsupported = Some(t.codec_id.clone());
                }
            }
            2 => {
                let info = AudioTrackInfo {
                    codec: audio_codec_name(&t.codec_id),
                    channels: u32::try_from(t.channels).unwrap_or(0),
                    sample_rate: if t.sample_rate.is_finite() && t.sample_rate > 0.0 && t.sample_rate < 1e7 {
                        t.sample_rate as u32
                    } else {
                        0
                    },
                };
                ix.audio.push(info.clone());
                if t.number != 0 && !ix.audio_index.iter().any(|a| a.entry.number == t.number) {
                    ix.audio_index.push(AudioIndex { entry: t, info, frames: Vec::new() });
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Indexes one cluster; returns the position after it.
fn index_cluster(
    w: &mut Window,
    ix: &mut Indexer,
    body: u64,
    size: u64,
    seg_end: u64,
    cluster_pos: u64,
) -> Result<u64, Fault> {
    let unknown = size == UNKNOWN;
    let end = if unknown {
        seg_end
    } else {
        let end = body.checked_add(size).ok_or_else(|| Fault::corrupt("Cluster", "size overflows"))?;
        if end > w.file_len {
            return Err(Fault::Truncated {
                what: format!("the Cluster at byte {cluster_pos} (holding samples from index {})", ix.samples.len()),
                end,
            });
        }
        end
    };
    if !ix.saw_tracks {
        return Err(Fault::corrupt("Tracks", "a Cluster comes before the track list"));
    }
    let mut cluster_ts: u64 = 0;
    let mut pos = body;
    while pos < end {
        let h = parse_header(w.peek(pos, 12)?, pos)?;
        if unknown && LEVEL1.contains(&h.id) {
            return Ok(pos);
        }
        if h.size == UNKNOWN {
            return Err(Fault::corrupt("Cluster", format!("element 0x{:X} at byte {pos} has unknown size", h.id)));
        }
        let child_body = pos + h.len;
        let child_end = child_body.checked_add(h.size).ok_or_else(|| Fault::corrupt("Cluster", "size overflows"))?;
        if child_end > w.file_len {
            let what = if matches!(h.id, SIMPLE_BLOCK | BLOCK_GROUP) {
                format!("sample {} (block at bytes {pos}..{child_end})", ix.samples.len())
            } else {
                format!("element 0x{:X} at byte {pos}", h.id)
            };
            return Err(Fault::Truncated { what, end: child_end });
        }
        if child_end > end {
            return Err(Fault::corrupt(
                "Cluster",
                format!("child 0x{:X} at byte {pos} runs past the end of its cluster", h.id),
            ));
        }
        match h.id {
            CLUSTER_TIMESTAMP => cluster_ts = uint(w.peek(child_body, (h.size as usize).min(8))?),
            SIMPLE_BLOCK => {
                index_block(w, ix, child_body, h.size, cluster_ts, None, None, 0)?;
            }
            BLOCK_GROUP => {
                if h.size > MAX_IN_MEMORY {
                    return Err(Fault::corrupt("BlockGroup", format!("at byte {pos} claims {} bytes", h.size)));
                }
                // Read the group's child headers; the Block's frame bytes are skipped.
                let mut block: Option<(u64, u64)> = None;
                let mut has_reference = false;
                let mut discard_padding = 0i64;
                let mut duration = None;
                let mut cpos = child_body;
                while cpos < child_end {
                    let ch = parse_header(w.peek(cpos, 12)?, cpos)?;
                    if ch.size == UNKNOWN {
                        return Err(Fault::corrupt("BlockGroup", "a child has unknown size"));
                    }
                    let cbody = cpos + ch.len;
                    let cend = cbody
                        .checked_add(ch.size)
                        .filter(|&e| e <= child_end)
                        .ok_or_else(|| Fault::corrupt("BlockGroup", "a child runs past the group"))?;
                    match ch.id {
                        BLOCK => block = Some((cbody, ch.size)),
                        REFERENCE_BLOCK => has_reference = true,
                        DISCARD_PADDING => {
                            let raw = w.peek(cbody, (ch.size as usize).min(8))?;
                            discard_padding = signed(raw);
                        }
                        BLOCK_DURATION => duration = Some(uint(w.peek(cbody, (ch.size as usize).min(8))?)),
                        _ => {}
                    }
                    cpos = cend;
                }
                if let Some((bpos, bsize)) = block {
                    index_block(w, ix, bpos, bsize, cluster_ts, Some(!has_reference), duration, discard_padding)?;
                }
            }
            _ => {}
        }
        pos = child_end;
    }
    Ok(pos)
}

/// Reads a (Simple)Block header and appends its frame(s) for the video track.
#[allow(clippy::too_many_arguments)]
fn index_block(
    w: &mut Window,
    ix: &mut Indexer,
    pos: u64,
    size: u64,
    cluster_ts: u64,
    keyframe_from_group: Option<bool>,
    duration: Option<u64>,
    discard_padding_ns: i64,
) -> Result<(), Fault> {
    let Some(video) = &ix.video else {
        return Ok(());
    };
    let head = w.peek(pos, (size as usize).min(64 * 1024))?.to_vec();
    let (track, tlen, _) =
        vint(&head, 8).ok_or_else(|| Fault::corrupt("Block", format!("bad track number at byte {pos}")))?;
    let audio_track = ix.audio_index.iter().position(|a| a.entry.number == track);
    if track != video.number && audio_track.is_none() {
        return Ok(());
    }
    if head.len() < tlen + 3 {
        return Err(Fault::corrupt("Block", format!("header at byte {pos} is cut short")));
    }
    let rel = i16::from_be_bytes([head[tlen], head[tlen + 1]]);
    let flags = head[tlen + 2];
    let keyframe = keyframe_from_group.unwrap_or(flags & 0x80 != 0);
    let mut cursor = tlen + 3;
    let frames_total = size - cursor as u64;
    let lace_sizes: Vec<u64> = match (flags >> 1) & 0x03 {
        0 => vec![frames_total],
        lacing => {
            let count =
                usize::from(*head.get(cursor).ok_or_else(|| Fault::corrupt("Block", "lace count missing"))?) + 1;
            cursor += 1;
            let mut sizes = Vec::with_capacity(count);
            match lacing {
                1 => {
                    for _ in 0..count - 1 {
                        let mut s = 0u64;
                        loop {
                            let b = *head
                                .get(cursor)
                                .ok_or_else(|| Fault::corrupt("Block", "Xiph lace sizes cut short"))?;
                            cursor += 1;
                            s += u64::from(b);
                            if b != 255 {
                                break;
                            }
                        }
                        sizes.push(s);
                    }
                }
                3 => {
                    let (first, l, _) = vint(head.get(cursor..).unwrap_or(&[]), 8)
                        .ok_or_else(|| Fault::corrupt("Block", "EBML lace sizes cut short"))?;
                    cursor += l;
                    sizes.push(first);
                    let mut prev = first as i64;
                    for _ in 1..count - 1 {
                        let (raw, l, _) = vint(head.get(cursor..).unwrap_or(&[]), 8)
                            .ok_or_else(|| Fault::corrupt("Block", "EBML lace sizes cut short"))?;
                        cursor += l;
                        let bias = (1i64 << (7 * l - 1)) - 1;
                        prev = prev
                            .checked_add(raw as i64 - bias)
                            .filter(|&v| v >= 0)
                            .ok_or_else(|| Fault::corrupt("Block", "negative EBML lace size"))?;
                        sizes.push(prev as u64);
                    }
                }
                _ => {
                    let rest = size - cursor as u64;
                    if rest % count as u64 != 0 {
                        return Err(Fault::corrupt("Block", "fixed-size lacing does not divide the block"));
                    }
                    sizes = vec![rest / count as u64; count - 1];
                }
            }
            let used: u64 = sizes
                .iter()
                .try_fold(cursor as u64, |acc, &s| acc.checked_add(s))
                .ok_or_else(|| Fault::corrupt("Block", "lace sizes overflow"))?;
            let last = size.checked_sub(used).ok_or_else(|| Fault::corrupt("Block", "lace sizes exceed the block"))?;
            sizes.push(last);
            sizes
        }
    };
    let mut offset = pos + cursor as u64;
    let pts = i64::try_from(cluster_ts)
        .map_err(|_| Fault::corrupt("Cluster", "timestamp overflows"))?
        .checked_add(i64::from(rel))
        .ok_or_else(|| Fault::corrupt("Cluster", "timestamp overflows"))?;
    let lace_count = lace_sizes.len() as u32;
    for (i, &s) in lace_sizes.iter().enumerate() {
        let size32 = u32::try_from(s).map_err(|_| Fault::corrupt("Block", "frame larger than 4 GiB"))?;
        match audio_track {
            Some(a) => ix.audio_index[a].frames.push(AudioFrame {
                offset,
                size: size32,
                block_ts: pts,
                lace_index: i as u32,
                lace_count,
                // Every frame of a laced audio block starts a decodable packet.
                keyframe,
                block_duration: duration,
                // The padding trims the block's end, so it belongs to its last frame.
                discard_padding_ns: if i + 1 == lace_sizes.len() { discard_padding_ns } else { 0 },
            }),
            None => {
                ix.samples.push(SampleEntry {
                    offset,
                    size: size32,
                    pts,
                    dts: 0,
                    duration: 0,
                    keyframe: keyframe && i == 0,
                });
                ix.block_durations.push(duration);
            }
        }
        offset += s;
    }
    Ok(())
}

fn finish(ix: Indexer, w: &mut Window) -> Result<Parsed, Fault> {
    let Some(video) = ix.video else {
        return Err(match ix.unsupported {
            Some(id) => Fault::UnsupportedCodec(id),
            None => Fault::NoVideoTrack,
        });
    };
    let codec = video_codec(&video.codec_id).ok_or_else(|| Fault::UnsupportedCodec(video.codec_id.clone()))?;
    let record: &[u8] = if codec == VideoCodec::Vp9 { &[] } else { &video.codec_private };
    let (mut info, payload) = describe_codec(codec, record, video.width, video.height)?;
    if codec == VideoCodec::Vp9 {
        info.codec_private = video.codec_private.clone();
        apply_vp9_codec_private(&mut info, &video.codec_private);
    }
    if matches!(payload, Payload::LengthPrefixed(_)) && video.codec_private.is_empty() {
        return Err(Fault::corrupt("CodecPrivate", "the H.264/HEVC track has no codec configuration"));
    }
    if let Some(colour) = video.colour {
        let merged = ColourDescription {
            matrix: colour.matrix.filter(|&v| v != 2).or(info.colour.matrix),
            primaries: colour.primaries.filter(|&v| v != 2).or(info.colour.primaries),
            transfer: colour.transfer.filter(|&v| v != 2).or(info.colour.transfer),
            full_range: colour.full_range.or(info.colour.full_range),
        };
        info.colour = merged;
    }

    // Timescale: ticks of TimestampScale ns when that divides 1 s, else nanoseconds.
    let scale = ix.timestamp_scale;
    let (timescale, multiplier) = if 1_000_000_000 % scale == 0 {
        ((1_000_000_000 / scale) as u32, 1i64)
    } else {
        (1_000_000_000u32, i64::try_from(scale).unwrap_or(i64::MAX))
    };
    info.timescale = timescale;
    let default_ticks = video.default_duration_ns.map(|ns| {
        let per_tick = 1_000_000_000 / u64::from(timescale);
        ((ns + per_tick / 2) / per_tick) as i64
    });
    let mut samples = ix.samples;
    let overflow = || Fault::corrupt("Cluster", "timestamps overflow");
    for (s, d) in samples.iter_mut().zip(&ix.block_durations) {
        s.pts = s.pts.checked_mul(multiplier).ok_or_else(overflow)?;
        s.duration = match d {
            Some(d) => i64::try_from(*d).ok().and_then(|d| d.checked_mul(multiplier)).ok_or_else(overflow)?,
            None => default_ticks.unwrap_or(0),
        };
    }
    if default_ticks.is_none() {
        // Durations from the gaps between presentation times.
        let mut order: Vec<usize> = (0..samples.len()).collect();
        order.sort_by_key(|&i| samples[i].pts);
        for k in 0..order.len() {
            if samples[order[k]].duration == 0 {
                let gap = order
                    .get(k + 1)
                    .map(|&n| samples[n].pts.saturating_sub(samples[order[k]].pts))
                    .or_else(|| k.checked_sub(1).map(|p| samples[order[k]].pts.saturating_sub(samples[order[p]].pts)));
                samples[order[k]].duration = gap.unwrap_or(0).max(0);
            }
        }
    }
    dts_from_pts(&mut samples);
    if codec == VideoCodec::Vp9 && info.profile.is_none() {
        if let Some(first) = samples.iter().find(|s| s.keyframe) {
            let bytes = w.peek(first.offset, (first.size as usize).min(64))?.to_vec();
            if let Some((profile, depth)) = super::vp9_keyframe_facts(&bytes) {
                info.profile = Some(format!("Profile {profile}"));
                info.bit_depth = depth;
            }
        }
    }
    fill_timing(&mut info, &samples);
    let mut audio_tracks = Vec::new();
    let mut audio_skipped = Vec::new();
    for a in ix.audio_index {
        match audio_samples(&a, timescale, multiplier) {
            Some(samples) => audio_tracks.push(AudioTrack {
                info: a.info,
                source_id: a.entry.number,
                timescale,
                language: a.entry.language.clone(),
                config: AudioConfig::Matroska {
                    codec_id: a.entry.codec_id.clone(),
                    codec_private: a.entry.codec_private.clone(),
                    audio_element: a.entry.audio_element.clone(),
                    codec_delay_ns: a.entry.codec_delay_ns,
                    seek_pre_roll_ns: a.entry.seek_pre_roll_ns,
                    default_duration_ns: a.entry.default_duration_ns,
                },
                samples,
            }),
            None => audio_skipped
                .push(format!("audio track {} ({}): its timestamps overflow", a.entry.number, a.info.codec)),
        }
    }
    Ok(Parsed {
        container: Container::Matroska,
        info,
        audio: ix.audio,
        stereo: video.stereo_mode.map(StereoMode::from_matroska),
        samples,
        payload,
        audio_tracks,
        audio_skipped,
        video_extras: VideoExtras { mp4_sv3d: None, matroska_projection: video.projection.clone() },
    })
}

/// Audio frames with times in `timescale` ticks: the block time times `multiplier`; the later
/// frames of a laced block follow the first by DefaultDuration each, or share the gap to the
/// next block evenly when the track has none (the last block, with no next one, lasts as
/// long as the gap before it, as video frames do). None on overflow.
fn audio_samples(a: &AudioIndex, timescale: u32, multiplier: i64) -> Option<Vec<AudioSample>> {
    let per_tick = 1_000_000_000 / u64::from(timescale.max(1));
    let default_ticks = a.entry.default_duration_ns.map(|ns| ((ns + per_tick / 2) / per_tick) as i64);
    let mut out = Vec::with_capacity(a.frames.len());
    let mut previous_gap: Option<i64> = None;
    let mut previous_block: Option<i64> = None;
    for (i, f) in a.frames.iter().enumerate() {
        let block_pts = f.block_ts.checked_mul(multiplier)?;
        if f.lace_index == 0 {
            if let Some(prev) = previous_block {
                previous_gap = Some(block_pts.saturating_sub(prev).max(0));
            }
            previous_block = Some(block_pts);
        }
        // The next block's start (the first frame after this lace), for gap-based durations.
        let next_block =
            a.frames[i + 1..].iter().find(|n| n.lace_index == 0).map(|n| n.block_ts.checked_mul(multiplier));
        let next_block = match next_block {
            Some(None) => return None,
            Some(Some(t)) => Some(t),
            None => None,
        };
        let block_len = match (f.block_duration, next_block) {
            (Some(d), _) => i64::try_from(d).ok()?.checked_mul(multiplier)?,
            (None, Some(next)) => next.saturating_sub(block_pts).max(0),
            (None, None) => match default_ticks {
                Some(d) => d.checked_mul(i64::from(f.lace_count))?,
                None => previous_gap.unwrap_or(0),
            },
        };
        let frame_len = default_ticks.unwrap_or(block_len / i64::from(f.lace_count.max(1)));
        let pts = block_pts.checked_add(frame_len.checked_mul(i64::from(f.lace_index))?)?;
        out.push(AudioSample {
            offset: f.offset,
            size: f.size,
            dts: pts,
            pts,
            duration: if f.lace_count == 1 && f.block_duration.is_some() { block_len } else { frame_len },
            keyframe: f.keyframe,
            discard_padding_ns: f.discard_padding_ns,
        });
    }
    Some(out)
}

/// Matroska VP9 CodecPrivate: (id, length, value) features: 1 profile, 2 level, 3 bit depth,
/// 4 chroma subsampling.
fn apply_vp9_codec_private(info: &mut crate::video::chunk::StreamInfo, data: &[u8]) {
    let mut i = 0usize;
    while i + 2 <= data.len() {
        let (id, len) = (data[i], usize::from(data[i + 1]));
        let Some(value) = data.get(i + 2..i + 2 + len) else {
            break;
        };
        if len == 1 {
            match id {
                1 => info.profile = Some(format!("Profile {}", value[0])),
                3 => info.bit_depth = value[0],
                4 => {
                    info.chroma_format = Some(if value[0] <= 1 {
                        1
                    } else if value[0] == 2 {
                        2
                    } else {
                        3
                    })
                }
                _ => {}
            }
        }
        i += 2 + len;
    }
}

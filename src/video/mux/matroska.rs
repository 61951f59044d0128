//! Matroska writer (RFC 9559): EBML header, one Segment with a SeekHead, Info, Tracks,
//! Clusters of SimpleBlocks and Cues.
//!
//! - Timestamps: blocks carry presentation times in `TimestampScale` units. The scale is
//!   `1e9 / timescale` ns when that is a whole number (then every source pts is stored
//!   exactly, e.g. a Matroska source's own 1 ms); otherwise the largest power of ten of
//!   nanoseconds at most half a source tick, so that every source pts is recovered exactly by
//!   rounding (`round(ts · scale · timescale / 1e9) == pts`); see [`timestamp_scale`].
//! - A new Cluster starts at every video keyframe (each one gets a CuePoint), when a block's
//!   time no longer fits the 16-bit relative timestamp, or past 32 MiB. Clusters are
//!   assembled in memory and written with their size, so the file never holds an
//!   unknown-size element once finalised.
//! - Until finalised the Segment's size is "unknown" and the SeekHead is a Void: a file cut
//!   by a crash is still readable up to its last whole cluster (and carries the temporary
//!   name). Finalising writes Cues, the Info Duration, the SeekHead and the Segment size.

use crate::video::chunk::{ColourDescription, VideoCodec};

use super::output::OutputFile;

const EBML_HEADER: u32 = 0x1A45_DFA3;
const SEGMENT: u32 = 0x1853_8067;
const SEEK_HEAD: u32 = 0x114D_9B74;
const SEEK: u32 = 0x4DBB;
const SEEK_ID: u32 = 0x53AB;
const SEEK_POSITION: u32 = 0x53AC;
const INFO: u32 = 0x1549_A966;
const TIMESTAMP_SCALE: u32 = 0x2A_D7B1;
const DURATION: u32 = 0x4489;
const MUXING_APP: u32 = 0x4D80;
const WRITING_APP: u32 = 0x5741;
const TRACKS: u32 = 0x1654_AE6B;
const TRACK_ENTRY: u32 = 0xAE;
const CLUSTER: u32 = 0x1F43_B675;
const CLUSTER_TIMESTAMP: u32 = 0xE7;
const SIMPLE_BLOCK: u32 = 0xA3;
const CUES: u32 = 0x1C53_BB6B;
const BLOCK_GROUP: u32 = 0xA0;
const BLOCK: u32 = 0xA1;
const REFERENCE_BLOCK: u32 = 0xFB;
const DISCARD_PADDING: u32 = 0x75A2;
const VOID: u32 = 0xEC;

/// Bytes reserved after the Segment header for the SeekHead (written at the end).
const SEEK_HEAD_RESERVE: usize = 96;
/// A cluster is closed once it holds this much.
const MAX_CLUSTER_BYTES: usize = 32 << 20;

/// The ID's bytes (IDs keep their length marker, so leading zero bytes are dropped).
fn id_bytes(id: u32) -> Vec<u8> {
    let b = id.to_be_bytes();
    let skip = b.iter().take_while(|&&x| x == 0).count().min(3);
    b[skip..].to_vec()
}

/// A size as the shortest EBML variable-length integer (all-ones values are reserved for
/// "unknown", so such a value takes one byte more).
fn size_vint(n: u64) -> Vec<u8> {
    for len in 1..=8u32 {
        let max = (1u64 << (7 * len)) - 1;
        if n < max {
            let marked = n | (1u64 << (7 * len));
            return marked.to_be_bytes()[(8 - len as usize)..].to_vec();
        }
    }
    // Beyond 2^56 - 2: not representable; callers never write such sizes.
    vec![0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]
}

/// An 8-byte size field (for elements patched later).
fn size_vint8(n: u64) -> [u8; 8] {
    let mut b = n.to_be_bytes();
    b[0] = 0x01;
    b
}

pub(crate) fn element(id: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = id_bytes(id);
    out.extend(size_vint(payload.len() as u64));
    out.extend_from_slice(payload);
    out
}

pub(crate) fn uint_element(id: u32, v: u64) -> Vec<u8> {
    let b = v.to_be_bytes();
    let skip = b.iter().take_while(|&&x| x == 0).count().min(7);
    element(id, &b[skip..])
}

/// A signed integer element in the fewest two's-complement bytes.
fn signed_element(id: u32, v: i64) -> Vec<u8> {
    let b = v.to_be_bytes();
    let mut skip = 0;
    while skip < 7 {
        let (lead, next) = (b[skip], b[skip + 1]);
        let redundant = (lead == 0 && next & 0x80 == 0) || (lead == 0xff && next & 0x80 != 0);
        if !redundant {
            break;
        }
        skip += 1;
    }
    element(id, &b[skip..])
}

pub(crate) fn float_element(id: u32, v: f64) -> Vec<u8> {
    element(id, &v.to_bits().to_be_bytes())
}

fn string_element(id: u32, s: &str) -> Vec<u8> {
    element(id, s.as_bytes())
}

/// `TimestampScale` (ns per tick) for a source clock of `timescale` Hz; see the module docs.
pub fn timestamp_scale(timescale: u32) -> u64 {
    let ts = u64::from(timescale.max(1));
    if 1_000_000_000 % ts == 0 {
        return 1_000_000_000 / ts;
    }
    let half_tick_ns = 1_000_000_000 / (2 * ts);
    let mut scale = 1u64;
    while scale * 10 <= half_tick_ns {
        scale *= 10;
    }
    scale
}

/// The Matroska `StereoMode` code of a packing.
pub(crate) fn stereo_mode_code(mode: crate::video::layout::StereoMode) -> u64 {
    use crate::video::layout::StereoMode::*;
    match mode {
        Mono => 0,
        SideBySideLeftFirst => 1,
        TopBottomRightFirst => 2,
        TopBottomLeftFirst => 3,
        SideBySideRightFirst => 11,
        Other(v) => v,
    }
}

/// The video track as Tracks describes it.
#[derive(Debug, Clone)]
pub(crate) struct MatroskaVideo<'a> {
    pub codec: VideoCodec,
    pub codec_private: &'a [u8],
    pub width: u32,
    pub height: u32,
    pub default_duration_ns: Option<u64>,
    pub stereo_mode: Option<u64>,
    pub colour: ColourDescription,
    /// A `Projection` element copied from the source, header included.
    pub projection: Option<&'a [u8]>,
}

/// An audio track as Tracks describes it.
#[derive(Debug, Clone)]
pub(crate) struct MatroskaAudio<'a> {
    pub codec_id: &'a str,
    pub codec_private: &'a [u8],
    pub audio_element: &'a [u8],
    pub codec_delay_ns: Option<u64>,
    pub seek_pre_roll_ns: Option<u64>,
    pub default_duration_ns: Option<u64>,
    pub language: Option<&'a str>,
}

#[derive(Debug)]
pub(crate) struct MatroskaWriter {
    segment_size_at: u64,
    segment_data_start: u64,
    seek_head_at: u64,
    info_at: u64,
    duration_at: u64,
    tracks_at: u64,
    timestamp_scale: u64,
    cluster: Vec<u8>,
    cluster_ts: i64,
    cluster_cue: bool,
    cues: Vec<(i64, u64)>,
}

impl MatroskaWriter {
    /// Writes the EBML header, the Segment start, a Void for the SeekHead, Info and Tracks
    /// (video is track 1, audio tracks 2, 3, ...).
    pub(crate) fn start(
        file: &mut OutputFile,
        timestamp_scale: u64,
        video: &MatroskaVideo,
        audio: &[MatroskaAudio],
    ) -> std::io::Result<MatroskaWriter> {
        let header = [
            uint_element(0x4286, 1), // EBMLVersion
            uint_element(0x42F7, 1), // EBMLReadVersion
            uint_element(0x42F2, 4), // EBMLMaxIDLength
            uint_element(0x42F3, 8), // EBMLMaxSizeLength
            string_element(0x4282, "matroska"),
            uint_element(0x4287, 4), // DocTypeVersion
            uint_element(0x4285, 2), // DocTypeReadVersion
        ]
        .concat();
        file.write_all(&element(EBML_HEADER, &header))?;

        file.write_all(&id_bytes(SEGMENT))?;
        let segment_size_at = file.position();
        // Unknown size until finalised.
        file.write_all(&[0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])?;
        let segment_data_start = file.position();

        let seek_head_at = file.position();
        file.write_all(&void(SEEK_HEAD_RESERVE))?;

        let info_at = file.position();
        let app = format!("vrseg {}", env!("CARGO_PKG_VERSION"));
        let mut info = uint_element(TIMESTAMP_SCALE, timestamp_scale);
        info.extend(string_element(MUXING_APP, &app));
        info.extend(string_element(WRITING_APP, &app));
        let duration_offset_in_info = info.len() + id_bytes(DURATION).len() + 1;
        info.extend(float_element(DURATION, 0.0));
        let info_el = element(INFO, &info);
        let info_header_len = info_el.len() - info.len();
        let duration_at = info_at + (info_header_len + duration_offset_in_info) as u64;
        file.write_all(&info_el)?;

        let tracks_at = file.position();
        let mut tracks = element(TRACK_ENTRY, &video_entry(video));
        for (i, a) in audio.iter().enumerate() {
            tracks.extend(element(TRACK_ENTRY, &audio_entry(a, i as u64 + 2)));
        }
        file.write_all(&element(TRACKS, &tracks))?;

        Ok(MatroskaWriter {
            segment_size_at,
            segment_data_start,
            seek_head_at,
            info_at,
            duration_at,
            tracks_at,
            timestamp_scale,
            cluster: Vec::new(),
            cluster_ts: 0,
            cluster_cue: false,
            cues: Vec::new(),
        })
    }

    pub(crate) fn timestamp_scale(&self) -> u64 {
        self.timestamp_scale
    }

    /// Adds a SimpleBlock for `track` (1 = video) at `ts` (in TimestampScale ticks), or a
    /// BlockGroup when the block carries a `DiscardPadding` (ns, non-zero).
    pub(crate) fn write_block(
        &mut self,
        file: &mut OutputFile,
        track: u64,
        ts: i64,
        keyframe: bool,
        data: &[u8],
        discard_padding_ns: i64,
    ) -> std::io::Result<()> {
        let video_key = track == 1 && keyframe;
        if !self.cluster.is_empty() {
            let rel = ts - self.cluster_ts;
            if video_key || !(-32768..=32767).contains(&rel) || self.cluster.len() > MAX_CLUSTER_BYTES {
                self.flush_cluster(file)?;
            }
        }
        if self.cluster.is_empty() {
            self.cluster_ts = ts.max(0);
            self.cluster_cue = video_key;
            self.cluster.extend(uint_element(CLUSTER_TIMESTAMP, self.cluster_ts as u64));
        }
        let rel = i16::try_from(ts - self.cluster_ts)
            .map_err(|_| std::io::Error::other(format!("block time {ts} lies before its cluster's")))?;
        let track_vint = size_vint(track);
        let payload_len = track_vint.len() + 3 + data.len();
        if discard_padding_ns == 0 {
            self.cluster.extend(id_bytes(SIMPLE_BLOCK));
            self.cluster.extend(size_vint(payload_len as u64));
            self.cluster.extend(track_vint);
            self.cluster.extend_from_slice(&rel.to_be_bytes());
            self.cluster.push(if keyframe { 0x80 } else { 0x00 });
            self.cluster.extend_from_slice(data);
        } else {
            // A Block (no keyframe bit: a group without ReferenceBlock is a keyframe).
            let mut group = id_bytes(BLOCK);
            group.extend(size_vint(payload_len as u64));
            group.extend(track_vint);
            group.extend_from_slice(&rel.to_be_bytes());
            group.push(0x00);
            group.extend_from_slice(data);
            if !keyframe {
                group.extend(signed_element(REFERENCE_BLOCK, -1));
            }
            group.extend(signed_element(DISCARD_PADDING, discard_padding_ns));
            self.cluster.extend(element(BLOCK_GROUP, &group));
        }
        Ok(())
    }

    fn flush_cluster(&mut self, file: &mut OutputFile) -> std::io::Result<()> {
        if self.cluster.is_empty() {
            return Ok(());
        }
        let at = file.position();
        if self.cluster_cue {
            self.cues.push((self.cluster_ts, at - self.segment_data_start));
        }
        let mut head = id_bytes(CLUSTER);
        head.extend_from_slice(&size_vint8(self.cluster.len() as u64));
        file.write_all(&head)?;
        file.write_all(&self.cluster)?;
        self.cluster.clear();
        Ok(())
    }

    /// Writes the last cluster, Cues, the Duration (in ticks), the SeekHead and the Segment
    /// size.
    pub(crate) fn finish(mut self, file: &mut OutputFile, duration_ticks: f64) -> std::io::Result<()> {
        self.flush_cluster(file)?;
        let cues_at = file.position();
        let mut cues = Vec::new();
        for &(time, position) in &self.cues {
            let positions = [uint_element(0xF7, 1), uint_element(0xF1, position)].concat();
            let point = [uint_element(0xB3, time as u64), element(0xB7, &positions)].concat();
            cues.extend(element(0xBB, &point));
        }
        let has_cues = !cues.is_empty();
        if has_cues {
            file.write_all(&element(CUES, &cues))?;
        }
        file.patch(self.duration_at, &duration_ticks.to_bits().to_be_bytes())?;

        let rel = |at: u64| at - self.segment_data_start;
        let mut seeks = Vec::new();
        let mut targets = vec![(INFO, rel(self.info_at)), (TRACKS, rel(self.tracks_at))];
        if has_cues {
            targets.push((CUES, rel(cues_at)));
        }
        for (id, pos) in targets {
            let seek = [element(SEEK_ID, &id_bytes(id)), element(SEEK_POSITION, &pos.to_be_bytes())].concat();
            seeks.extend(element(SEEK, &seek));
        }
        let mut head = element(SEEK_HEAD, &seeks);
        let rest = SEEK_HEAD_RESERVE - head.len();
        head.extend(void(rest));
        file.patch(self.seek_head_at, &head)?;

        let size = file.position() - self.segment_data_start;
        file.patch(self.segment_size_at, &size_vint8(size))
    }
}

/// A Void element of exactly `total` bytes (at least 2).
fn void(total: usize) -> Vec<u8> {
    debug_assert!((2..=127).contains(&total));
    let mut v = id_bytes(VOID);
    v.extend(size_vint((total - 2) as u64));
    v.resize(total, 0);
    v
}

fn video_entry(v: &MatroskaVideo) -> Vec<u8> {
    let codec_id = match v.codec {
        VideoCodec::Hevc => "V_MPEGH/ISO/HEVC",
        VideoCodec::H264 => "V_MPEG4/ISO/AVC",
        VideoCodec::Vp9 => "V_VP9",
        VideoCodec::Av1 => "V_AV1",
    };
    let mut e = uint_element(0xD7, 1); // TrackNumber
    e.extend(uint_element(0x73C5, 1)); // TrackUID
    e.extend(uint_element(0x83, 1)); // TrackType video
    e.extend(uint_element(0x9C, 0)); // FlagLacing
    e.extend(string_element(0x22B59C, "und"));
    e.extend(string_element(0x86, codec_id));
    e.extend(element(0x63A2, v.codec_private));
    if let Some(d) = v.default_duration_ns {
        e.extend(uint_element(0x23E383, d));
    }
    let mut video = uint_element(0xB0, u64::from(v.width));
    video.extend(uint_element(0xBA, u64::from(v.height)));
    if let Some(mode) = v.stereo_mode {
        video.extend(uint_element(0x53B8, mode));
    }
    let c = v.colour;
    let mut colour = Vec::new();
    if let Some(m) = c.matrix {
        colour.extend(uint_element(0x55B1, u64::from(m)));
    }
    if let Some(full) = c.full_range {
        colour.extend(uint_element(0x55B9, if full { 2 } else { 1 }));
    }
    if let Some(t) = c.transfer {
        colour.extend(uint_element(0x55BA, u64::from(t)));
    }
    if let Some(p) = c.primaries {
        colour.extend(uint_element(0x55BB, u64::from(p)));
    }
    if !colour.is_empty() {
        video.extend(element(0x55B0, &colour));
    }
    if let Some(p) = v.projection {
        video.extend_from_slice(p);
    }
    e.extend(element(0xE0, &video));
    e
}

fn audio_entry(a: &MatroskaAudio, number: u64) -> Vec<u8> {
    let mut e = uint_element(0xD7, number);
    e.extend(uint_element(0x73C5, number));
    e.extend(uint_element(0x83, 2)); // TrackType audio
    e.extend(string_element(0x22B59C, a.language.unwrap_or("und")));
    e.extend(string_element(0x86, a.codec_id));
    if !a.codec_private.is_empty() {
        e.extend(element(0x63A2, a.codec_private));
    }
    if let Some(d) = a.default_duration_ns {
        e.extend(uint_element(0x23E383, d));
    }
    if let Some(d) = a.codec_delay_ns {
        e.extend(uint_element(0x56AA, d));
    }
    if let Some(d) = a.seek_pre_roll_ns {
        e.extend(uint_element(0x56BB, d));
    }
    e.extend(element(0xE1, a.audio_element));
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vints_are_shortest_and_avoid_the_unknown_pattern() {
        assert_eq!(size_vint(0), [0x80]);
        assert_eq!(size_vint(126), [0xFE]);
        assert_eq!(size_vint(127), [0x40, 0x7F]);
        assert_eq!(size_vint(16382), [0x7F, 0xFE]);
        assert_eq!(size_vint(16383), [0x20, 0x3F, 0xFF]);
        assert_eq!(size_vint8(5), [0x01, 0, 0, 0, 0, 0, 0, 5]);
        assert_eq!(id_bytes(0xA3), [0xA3]);
        assert_eq!(id_bytes(0x1A45_DFA3), [0x1A, 0x45, 0xDF, 0xA3]);
        assert_eq!(uint_element(0xD7, 0), [0xD7, 0x81, 0]);
        assert_eq!(uint_element(0xD7, 256), [0xD7, 0x82, 1, 0]);
        assert_eq!(void(96).len(), 96);
        assert_eq!(signed_element(0xFB, -1), [0xFB, 0x81, 0xFF]);
        assert_eq!(signed_element(0xFB, 128), [0xFB, 0x82, 0x00, 0x80]);
        assert_eq!(signed_element(0xFB, -129), [0xFB, 0x82, 0xFF, 0x7F]);
        assert_eq!(signed_element(0xFB, 0), [0xFB, 0x81, 0x00]);
    }

    #[test]
    fn timestamp_scales_recover_every_tick() {
        assert_eq!(timestamp_scale(1000), 1_000_000);
        assert_eq!(timestamp_scale(90_000), 1000);
        assert_eq!(timestamp_scale(15_360), 10_000);
        assert_eq!(timestamp_scale(30_000), 10_000);
        assert_eq!(timestamp_scale(1_000_000_000), 1);
        for timescale in [15_360u32, 90_000, 30_000, 24_000, 48_000, 44_100, 1001, 600] {
            let scale = timestamp_scale(timescale);
            let ticks_per_s = 1_000_000_000 / scale;
            for pts in [0i64, 1, 7, 512, 1023, 123_456_789, 4_000_000_001] {
                let stored = super::super::audio::rescale(pts, u64::from(timescale), ticks_per_s);
                let back = super::super::audio::rescale(stored, ticks_per_s, u64::from(timescale));
                assert_eq!(back, pts, "timescale {timescale}, scale {scale}");
            }
        }
    }
}

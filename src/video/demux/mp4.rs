//! ISO-BMFF (MP4, MOV, fragmented MP4) sample index.
//!
//! Only box headers are read at top level; `moov` and each `moof` are read whole (they hold
//! tables, not media), `mdat` never is. Quirks handled:
//! - `moov` before or after `mdat`; box size 0 (to end of parent/file) and 1 (64-bit size).
//! - `stco` and `co64` chunk offsets; `stsz` and `stz2` sizes; `stsc` runs; `stss` absent
//!   means every sample is a sync sample.
//! - `ctts` version 0 and 1, both read as signed (as ffmpeg does): a negative offset lowers
//!   every dts so that `dts <= pts` (see [`crate::video::chunk::Chunk`]).
//! - Edit lists: leading empty edits and the first non-empty edit's `media_time` shift all
//!   timestamps, matching ffprobe's packet timestamps.
//! - Fragments: `moof`/`traf`/`trun` with `tfhd` and `trex` defaults, `tfdt` (or running
//!   time when absent), `default-base-is-moof` and explicit base data offsets.
//!
//! Why not the `mp4-atom` crate: its MSRV (1.88) is above ours (1.85), it decodes boxes into
//! owned structs through a generic reader rather than giving us lazy offsets, and building the
//! sample index with checked arithmetic over `stsc`/`trun` is the part we would write anyway.

use std::fs::File;

use super::nal::ByteCursor;
use super::{
    describe_codec, fill_timing, read_at, AudioConfig, AudioSample, AudioTrack, AudioTrackInfo, Container, Fault,
    Parsed, SampleEntry, VideoExtras,
};
use crate::video::chunk::{ColourDescription, VideoCodec};
use crate::video::layout::StereoMode;

/// The most a `moov` or `moof` may claim before we refuse to read it into memory.
const MAX_TABLE_BOX: u64 = 1 << 30;

type FourCc = [u8; 4];

fn name(t: &FourCc) -> String {
    t.iter().map(|&b| if b.is_ascii_graphic() || b == b' ' { b as char } else { '?' }).collect()
}

/// Iterates over the child boxes of an in-memory payload.
struct Boxes<'a> {
    data: &'a [u8],
    pos: usize,
    parent: &'static str,
}

impl<'a> Boxes<'a> {
    fn new(data: &'a [u8], parent: &'static str) -> Self {
        Boxes { data, pos: 0, parent }
    }
}

impl<'a> Iterator for Boxes<'a> {
    type Item = Result<(FourCc, &'a [u8]), Fault>;
    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.data.get(self.pos..)?;
        if rest.len() < 8 {
            // Trailing padding shorter than a box header: ignore it, as ffmpeg does.
            self.pos = self.data.len();
            return None;
        }
        let size32 = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let kind: FourCc = [rest[4], rest[5], rest[6], rest[7]];
        let (header, size) = match size32 {
            0 => (8usize, rest.len() as u64),
            1 => {
                let Some(large) = rest.get(8..16) else {
                    self.pos = self.data.len();
                    return Some(Err(Fault::corrupt(
                        self.parent,
                        format!("box '{}' has a cut 64-bit size", name(&kind)),
                    )));
                };
                let mut a = [0u8; 8];
                a.copy_from_slice(large);
                (16usize, u64::from_be_bytes(a))
            }
            s => (8usize, u64::from(s)),
        };
        if size < header as u64 || size > rest.len() as u64 {
            self.pos = self.data.len();
            return Some(Err(Fault::corrupt(
                self.parent,
                format!("child box '{}' claims {size} bytes but {} remain", name(&kind), rest.len()),
            )));
        }
        let size = size as usize;
        self.pos += size;
        Some(Ok((kind, &rest[header..size])))
    }
}

fn find<'a>(data: &'a [u8], parent: &'static str, kind: &FourCc) -> Result<Option<&'a [u8]>, Fault> {
    for b in Boxes::new(data, parent) {
        let (k, payload) = b?;
        if &k == kind {
            return Ok(Some(payload));
        }
    }
    Ok(None)
}

#[derive(Default, Clone, Copy)]
struct TrexDefaults {
    duration: u32,
    size: u32,
    flags: u32,
}

#[derive(Default)]
struct Track {
    id: u32,
    handler: FourCc,
    timescale: u32,
    edits: Vec<(u64, i64)>,
    entry: Option<(FourCc, Vec<u8>)>,
    stbl: Vec<u8>,
    language: Option<String>,
}

/// An audio track while its samples are being gathered (sample table, then fragments).
struct AudioBuild {
    id: u32,
    timescale: u32,
    edits: Vec<(u64, i64)>,
    fourcc: FourCc,
    entry: Vec<u8>,
    info: AudioTrackInfo,
    language: Option<String>,
    trex: TrexDefaults,
    raw: Vec<RawSample>,
}

/// Builds the index of the first video track.
pub(crate) fn parse(file: &mut File, file_len: u64) -> Result<Parsed, Fault> {
    let mut pos = 0u64;
    let mut moov: Option<Vec<u8>> = None;
    let mut moofs: Vec<(u64, u64)> = Vec::new();
    while pos < file_len {
        let avail = (file_len - pos).min(16) as usize;
        if avail < 8 {
            return Err(Fault::Truncated { what: format!("the box header at byte {pos}"), end: pos + 8 });
        }
        let head = read_at(file, pos, avail, || format!("the box header at byte {pos}"))?;
        let kind: FourCc = [head[4], head[5], head[6], head[7]];
        let size32 = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let (header, size) = match size32 {
            0 => (8u64, file_len - pos),
            1 => {
                if avail < 16 {
                    return Err(Fault::Truncated {
                        what: format!("the '{}' box header at byte {pos}", name(&kind)),
                        end: pos + 16,
                    });
                }
                let mut a = [0u8; 8];
                a.copy_from_slice(&head[8..16]);
                (16u64, u64::from_be_bytes(a))
            }
            s => (8u64, u64::from(s)),
        };
        if size < header {
            return Err(Fault::corrupt(
                &name(&kind),
                format!("box at byte {pos} has size {size}, smaller than its header"),
            ));
        }
        if pos == 0 && !kind.iter().all(|b| b.is_ascii_alphanumeric() || *b == b' ') {
            return Err(Fault::UnknownContainer);
        }
        let end = pos
            .checked_add(size)
            .ok_or_else(|| Fault::corrupt(&name(&kind), format!("box at byte {pos} has an overflowing size")))?;
        if end > file_len {
            return Err(Fault::Truncated { what: format!("the '{}' box at byte {pos}", name(&kind)), end });
        }
        match &kind {
            b"moov" | b"moof" => {
                if size - header > MAX_TABLE_BOX {
                    return Err(Fault::corrupt(
                        &name(&kind),
                        format!("box at byte {pos} claims {size} bytes, more than vrseg reads into memory"),
                    ));
                }
                if &kind == b"moov" {
                    if moov.is_none() {
                        moov = Some(read_at(file, pos + header, (size - header) as usize, || "moov".to_string())?);
                    }
                } else {
                    moofs.push((pos, size));
                }
            }
            _ => {}
        }
        pos = end;
    }
    let moov =
        moov.ok_or_else(|| Fault::corrupt("moov", "the file has no movie box (moov), so its samples cannot be found"))?;
    let mut index = MoovIndex::parse(&moov, file_len)?;
    for (moof_pos, moof_size) in moofs {
        let payload = read_at(file, moof_pos + 8, (moof_size - 8) as usize, || "moof".to_string())?;
        index.add_fragment(&payload, moof_pos, file_len)?;
    }
    index.finish()
}

struct MoovIndex {
    container_info: Parsed,
    track_id: u32,
    trex: TrexDefaults,
    audio: Vec<AudioBuild>,
    /// Running decode time and composition offsets before edit/shift handling.
    raw: Vec<RawSample>,
    edits: Vec<(u64, i64)>,
    movie_timescale: u32,
}

#[derive(Clone, Copy)]
struct RawSample {
    offset: u64,
    size: u32,
    dts: i64,
    duration: u32,
    cto: i32,
    keyframe: bool,
}

impl MoovIndex {
    fn parse(moov: &[u8], file_len: u64) -> Result<MoovIndex, Fault> {
        let mut movie_timescale = 0u32;
        let mut tracks = Vec::new();
        let mut trex_list: Vec<(u32, TrexDefaults)> = Vec::new();
        for b in Boxes::new(moov, "moov") {
            let (kind, payload) = b?;
            match &kind {
                b"mvhd" => {
                    let mut r = ByteCursor::new(payload, "mvhd");
                    let version = r.u8()?;
                    r.bytes(3)?;
                    r.bytes(if version == 1 { 16 } else { 8 })?;
                    movie_timescale = r.u32()?;
                }
                b"trak" => tracks.push(parse_trak(payload)?),
                b"mvex" => {
                    for c in Boxes::new(payload, "mvex") {
                        let (k, p) = c?;
                        if &k == b"trex" {
                            let mut r = ByteCursor::new(p, "trex");
                            r.bytes(4)?;
                            let id = r.u32()?;
                            let _desc = r.u32()?;
                            let d = TrexDefaults { duration: r.u32()?, size: r.u32()?, flags: r.u32()? };
                            trex_list.push((id, d));
                        }
                    }
                }
                _ => {}
            }
        }
        let mut audio = Vec::new();
        let mut audio_builds = Vec::new();
        let mut audio_skipped = Vec::new();
        for t in tracks.iter().filter(|t| &t.handler == b"soun") {
            if let Some((fourcc, entry)) = &t.entry {
                let info = audio_info(fourcc, entry);
                audio.push(info.clone());
                // A damaged audio table costs the audio copy, never the video.
                match build_stbl_samples(&t.stbl, file_len) {
                    Ok(_) if t.timescale == 0 => {
                        audio_skipped.push(format!("audio track {} ({}): its timescale is 0", t.id, info.codec))
                    }
                    Ok(raw) => audio_builds.push(AudioBuild {
                        id: t.id,
                        timescale: t.timescale,
                        edits: t.edits.clone(),
                        fourcc: *fourcc,
                        entry: entry.clone(),
                        info,
                        language: t.language.clone(),
                        trex: trex_list.iter().find(|(id, _)| *id == t.id).map(|(_, d)| *d).unwrap_or_default(),
                        raw,
                    }),
                    Err(fault) => {
                        audio_skipped.push(format!("audio track {} ({}): {}", t.id, info.codec, fault_text(&fault)))
                    }
                }
            }
        }
        let mut unsupported = None;
        let mut chosen = None;
        for t in tracks.iter().filter(|t| &t.handler == b"vide") {
            match &t.entry {
                Some((fourcc, _)) if codec_of(fourcc).is_some() => {
                    chosen = Some(t);
                    break;
                }
                Some((fourcc, _)) => unsupported = unsupported.or(Some(name(fourcc))),
                None => {}
            }
        }
        let track = match (chosen, unsupported) {
            (Some(t), _) => t,
            (None, Some(fourcc)) => return Err(Fault::UnsupportedCodec(format!("'{fourcc}'"))),
            (None, None) => return Err(Fault::NoVideoTrack),
        };
        let (fourcc, entry) = track.entry.as_ref().ok_or(Fault::NoVideoTrack)?;
        let codec = codec_of(fourcc).ok_or_else(|| Fault::UnsupportedCodec(name(fourcc)))?;
        let visual = parse_visual_entry(entry, codec)?;
        let (mut info, payload) = describe_codec(codec, &visual.config, visual.width, visual.height)?;
        if codec == VideoCodec::Vp9 {
            super::apply_vpcc(&mut info, &visual.config);
        }
        if let Some(colour) = visual.colour {
            info.colour = colour;
        }
        if track.timescale == 0 {
            return Err(Fault::corrupt("mdhd", "the video track's timescale is 0"));
        }
        info.timescale = track.timescale;
        let raw = build_stbl_samples(&track.stbl, file_len)?;
        let trex = trex_list.iter().find(|(id, _)| *id == track.id).map(|(_, d)| *d).unwrap_or_default();
        Ok(MoovIndex {
            container_info: Parsed {
                container: Container::Mp4,
                info,
                audio,
                stereo: visual.stereo,
                samples: Vec::new(),
                payload,
                audio_tracks: Vec::new(),
                audio_skipped,
                video_extras: VideoExtras { mp4_sv3d: visual.sv3d, matroska_projection: None },
            },
            track_id: track.id,
            trex,
            audio: audio_builds,
            raw,
            edits: track.edits.clone(),
            movie_timescale,
        })
    }

    fn add_fragment(&mut self, moof: &[u8], moof_pos: u64, file_len: u64) -> Result<(), Fault> {
        for b in Boxes::new(moof, "moof") {
            let (kind, traf) = b?;
            if &kind != b"traf" {
                continue;
            }
            let tfhd = find(traf, "traf", b"tfhd")?.ok_or_else(|| Fault::corrupt("traf", "no tfhd box"))?;
            let mut r = ByteCursor::new(tfhd, "tfhd");
            let _flags = r.u32()?;
            let track_id = r.u32()?;
            if track_id == self.track_id {
                add_traf(traf, moof_pos, self.trex, &mut self.raw, file_len)?;
            } else if let Some(i) = self.audio.iter().position(|a| a.id == track_id) {
                let audio = &mut self.audio[i];
                if let Err(fault) = add_traf(traf, moof_pos, audio.trex, &mut audio.raw, file_len) {
                    let a = self.audio.remove(i);
                    self.container_info.audio_skipped.push(format!(
                        "audio track {} ({}): {}",
                        a.id,
                        a.info.codec,
                        fault_text(&fault)
                    ));
                }
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Parsed, Fault> {
        let timescale = self.container_info.info.timescale;
        // ffmpeg's dts_shift: negative composition offsets lower every dts.
        let dts_shift = self.raw.iter().map(|s| s.cto).min().unwrap_or(0).min(0).unsigned_abs();
        let edit_shift = edit_list_shift(&self.edits, self.movie_timescale, timescale);
        let overflow = || Fault::corrupt("sample table", "timestamps overflow");
        let mut samples = Vec::with_capacity(self.raw.len());
        for s in &self.raw {
            let pts =
                s.dts.checked_add(i64::from(s.cto)).and_then(|p| p.checked_add(edit_shift)).ok_or_else(overflow)?;
            let dts =
                s.dts.checked_sub(i64::from(dts_shift)).and_then(|d| d.checked_add(edit_shift)).ok_or_else(overflow)?;
            samples.push(SampleEntry {
                offset: s.offset,
                size: s.size,
                pts,
                dts,
                duration: i64::from(s.duration),
                keyframe: s.keyframe,
            });
        }
        fill_timing(&mut self.container_info.info, &samples);
        self.container_info.samples = samples;
        for a in std::mem::take(&mut self.audio) {
            match audio_samples(&a, self.movie_timescale) {
                Some(samples) => self.container_info.audio_tracks.push(AudioTrack {
                    info: a.info,
                    source_id: u64::from(a.id),
                    timescale: a.timescale,
                    language: a.language,
                    config: AudioConfig::Mp4 { fourcc: a.fourcc, sample_entry: a.entry },
                    samples,
                }),
                None => self
                    .container_info
                    .audio_skipped
                    .push(format!("audio track {} ({}): its timestamps overflow", a.id, a.info.codec)),
            }
        }
        Ok(self.container_info)
    }
}

/// An audio track's samples with the same timestamp rules as the video's (negative
/// composition offsets lower every dts; the edit list shifts both); None on overflow.
fn audio_samples(a: &AudioBuild, movie_timescale: u32) -> Option<Vec<AudioSample>> {
    let dts_shift = i64::from(a.raw.iter().map(|s| s.cto).min().unwrap_or(0).min(0).unsigned_abs());
    let edit_shift = edit_list_shift(&a.edits, movie_timescale, a.timescale);
    a.raw
        .iter()
        .map(|s| {
            Some(AudioSample {
                offset: s.offset,
                size: s.size,
                pts: s.dts.checked_add(i64::from(s.cto))?.checked_add(edit_shift)?,
                dts: s.dts.checked_sub(dts_shift)?.checked_add(edit_shift)?,
                duration: i64::from(s.duration),
                keyframe: s.keyframe,
                discard_padding_ns: 0,
            })
        })
        .collect()
}

/// A parse fault as a phrase, for the reasons audio tracks are skipped.
fn fault_text(fault: &Fault) -> String {
    match fault {
        Fault::Truncated { what, end } => format!("{what} runs past the end of the file (to byte {end})"),
        Fault::Corrupt { element, reason } => format!("corrupt {element}: {reason}"),
        Fault::UnsupportedCodec(c) => format!("unsupported codec {c}"),
        Fault::NoVideoTrack => "no video track".into(),
        Fault::UnknownContainer => "unknown container".into(),
        Fault::Io(e) => e.to_string(),
    }
}

/// Appends the samples of one `traf` (its `trun`s, with `tfhd`/`trex` defaults and `tfdt`)
/// to `raw`.
fn add_traf(
    traf: &[u8],
    moof_pos: u64,
    trex: TrexDefaults,
    raw: &mut Vec<RawSample>,
    file_len: u64,
) -> Result<(), Fault> {
    let tfhd = find(traf, "traf", b"tfhd")?.ok_or_else(|| Fault::corrupt("traf", "no tfhd box"))?;
    let mut r = ByteCursor::new(tfhd, "tfhd");
    let flags = r.u32()? & 0x00ff_ffff;
    let _track_id = r.u32()?;
    let base = if flags & 0x01 != 0 { r.u64()? } else { moof_pos };
    if flags & 0x02 != 0 {
        r.u32()?;
    }
    let mut defaults = trex;
    if flags & 0x08 != 0 {
        defaults.duration = r.u32()?;
    }
    if flags & 0x10 != 0 {
        defaults.size = r.u32()?;
    }
    if flags & 0x20 != 0 {
        defaults.flags = r.u32()?;
    }
    let mut next_dts = match raw.last() {
        Some(s) => {
            s.dts.checked_add(i64::from(s.duration)).ok_or_else(|| Fault::corrupt("trun", "decode time overflows"))?
        }
        None => 0,
    };
    if let Some(tfdt) = find(traf, "traf", b"tfdt")? {
        let mut r = ByteCursor::new(tfdt, "tfdt");
        let version = r.u8()?;
        r.bytes(3)?;
        let t = if version == 1 { r.u64()? } else { u64::from(r.u32()?) };
        next_dts = i64::try_from(t).map_err(|_| Fault::corrupt("tfdt", "base media decode time overflows"))?;
    }
    let mut data_pos = base;
    for c in Boxes::new(traf, "traf") {
        let (k, trun) = c?;
        if &k != b"trun" {
            continue;
        }
        let mut r = ByteCursor::new(trun, "trun");
        let tflags = r.u32()? & 0x00ff_ffff;
        let count = r.u32()?;
        if tflags & 0x01 != 0 {
            let off = r.u32()? as i32;
            data_pos = base
                .checked_add_signed(i64::from(off))
                .ok_or_else(|| Fault::corrupt("trun", "data offset points before the file"))?;
        }
        let first_flags = if tflags & 0x04 != 0 { Some(r.u32()?) } else { None };
        let per_sample = [0x100u32, 0x200, 0x400, 0x800].iter().filter(|&&f| tflags & f != 0).count() * 4;
        let max_count = r.remaining().checked_div(per_sample).unwrap_or(file_len as usize);
        if count as usize > max_count || raw.len().saturating_add(count as usize) as u64 > file_len {
            return Err(Fault::corrupt("trun", format!("claims {count} samples, more than the box or file can hold")));
        }
        for i in 0..count {
            let duration = if tflags & 0x100 != 0 { r.u32()? } else { defaults.duration };
            let size = if tflags & 0x200 != 0 { r.u32()? } else { defaults.size };
            let sflags = if tflags & 0x400 != 0 {
                r.u32()?
            } else if i == 0 {
                first_flags.unwrap_or(defaults.flags)
            } else {
                defaults.flags
            };
            let cto = if tflags & 0x800 != 0 { r.u32()? as i32 } else { 0 };
            let keyframe = sflags & 0x0001_0000 == 0;
            raw.push(RawSample { offset: data_pos, size, dts: next_dts, duration, cto, keyframe });
            data_pos = data_pos
                .checked_add(u64::from(size))
                .ok_or_else(|| Fault::corrupt("trun", "sample offsets overflow"))?;
            next_dts = next_dts
                .checked_add(i64::from(duration))
                .ok_or_else(|| Fault::corrupt("trun", "decode time overflows"))?;
        }
    }
    Ok(())
}

/// Total shift of the edit list in media ticks: leading empty edits push the media later,
/// the first non-empty edit's `media_time` pulls it earlier.
fn edit_list_shift(edits: &[(u64, i64)], movie_timescale: u32, media_timescale: u32) -> i64 {
    let mut empty: u128 = 0;
    for &(duration, media_time) in edits {
        if media_time == -1 {
            empty = empty.saturating_add(u128::from(duration));
            continue;
        }
        let empty_media = if movie_timescale > 0 {
            empty.saturating_mul(u128::from(media_timescale)) / u128::from(movie_timescale)
        } else {
            0
        };
        let empty_media = i64::try_from(empty_media).unwrap_or(i64::MAX / 2);
        return empty_media.saturating_sub(media_time);
    }
    0
}

fn codec_of(fourcc: &FourCc) -> Option<VideoCodec> {
    match fourcc {
        b"avc1" | b"avc3" => Some(VideoCodec::H264),
        b"hvc1" | b"hev1" => Some(VideoCodec::Hevc),
        b"vp09" => Some(VideoCodec::Vp9),
        b"av01" => Some(VideoCodec::Av1),
        _ => None,
    }
}

fn parse_trak(trak: &[u8]) -> Result<Track, Fault> {
    let mut t = Track::default();
    for b in Boxes::new(trak, "trak") {
        let (kind, payload) = b?;
        match &kind {
            b"tkhd" => {
                let mut r = ByteCursor::new(payload, "tkhd");
                let version = r.u8()?;
                r.bytes(3)?;
                r.bytes(if version == 1 { 16 } else { 8 })?;
                t.id = r.u32()?;
            }
            b"edts" => {
                if let Some(elst) = find(payload, "edts", b"elst")? {
                    let mut r = ByteCursor::new(elst, "elst");
                    let version = r.u8()?;
                    r.bytes(3)?;
                    let count = r.u32()?;
                    let entry_len = if version == 1 { 20 } else { 12 };
                    if count as usize > r.remaining() / entry_len {
                        return Err(Fault::corrupt("elst", format!("claims {count} edits, more than the box holds")));
                    }
                    for _ in 0..count {
                        let (d, m) = if version == 1 {
                            (r.u64()?, r.u64()? as i64)
                        } else {
                            (u64::from(r.u32()?), i64::from(r.u32()? as i32))
                        };
                        r.u32()?; // media rate
                        t.edits.push((d, m));
                    }
                }
            }
            b"mdia" => {
                for c in Boxes::new(payload, "mdia") {
                    let (k, p) = c?;
                    match &k {
                        b"mdhd" => {
                            let mut r = ByteCursor::new(p, "mdhd");
                            let version = r.u8()?;
                            r.bytes(3)?;
                            r.bytes(if version == 1 { 16 } else { 8 })?;
                            t.timescale = r.u32()?;
                            r.bytes(if version == 1 { 8 } else { 4 })?;
                            // ISO 639-2/T packed as three 5-bit letters offset by 0x60.
                            if let Ok(packed) = r.u16() {
                                let letters: String = [10u16, 5, 0]
                                    .iter()
                                    .map(|&shift| char::from(((packed >> shift) & 0x1f) as u8 + 0x60))
                                    .collect();
                                if letters.chars().all(|c| c.is_ascii_lowercase()) && letters != "und" {
                                    t.language = Some(letters);
                                }
                            }
                        }
                        b"hdlr" => {
                            let mut r = ByteCursor::new(p, "hdlr");
                            r.bytes(8)?;
                            let h = r.bytes(4)?;
                            t.handler = [h[0], h[1], h[2], h[3]];
                        }
                        b"minf" => {
                            if let Some(stbl) = find(p, "minf", b"stbl")? {
                                t.stbl = stbl.to_vec();
                                if let Some(stsd) = find(stbl, "stbl", b"stsd")? {
                                    let mut r = ByteCursor::new(stsd, "stsd");
                                    r.bytes(8)?; // version/flags, entry count
                                    if let Some(first) = Boxes::new(&stsd[8..], "stsd").next() {
                                        let (fourcc, entry) = first?;
                                        t.entry = Some((fourcc, entry.to_vec()));
                                    }
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(t)
}

struct VisualEntry {
    width: u32,
    height: u32,
    config: Vec<u8>,
    colour: Option<ColourDescription>,
    stereo: Option<StereoMode>,
    /// The `sv3d` box, header included.
    sv3d: Option<Vec<u8>>,
}

fn parse_visual_entry(entry: &[u8], codec: VideoCodec) -> Result<VisualEntry, Fault> {
    let mut r = ByteCursor::new(entry, "visual sample entry");
    r.bytes(24)?;
    let width = u32::from(r.u16()?);
    let height = u32::from(r.u16()?);
    r.bytes(50)?;
    let children = &entry[78..];
    let config_kind: &FourCc = match codec {
        VideoCodec::H264 => b"avcC",
        VideoCodec::Hevc => b"hvcC",
        VideoCodec::Vp9 => b"vpcC",
        VideoCodec::Av1 => b"av1C",
    };
    let mut v = VisualEntry { width, height, config: Vec::new(), colour: None, stereo: None, sv3d: None };
    let mut have_config = false;
    for b in Boxes::new(children, "visual sample entry") {
        let (kind, payload) = b?;
        if &kind == config_kind {
            // vpcC is a FullBox: drop version and flags.
            v.config =
                if codec == VideoCodec::Vp9 { payload.get(4..).unwrap_or(&[]).to_vec() } else { payload.to_vec() };
            have_config = true;
        } else if &kind == b"colr" && payload.len() >= 10 {
            let read16 = |i: usize| u16::from_be_bytes([payload[i], payload[i + 1]]);
            let as_u8 = |v: u16| u8::try_from(v).ok();
            match &payload[..4] {
                b"nclx" if payload.len() >= 11 => {
                    v.colour = Some(ColourDescription {
                        primaries: as_u8(read16(4)),
                        transfer: as_u8(read16(6)),
                        matrix: as_u8(read16(8)),
                        full_range: Some(payload[10] & 0x80 != 0),
                    })
                }
                b"nclc" => {
                    v.colour = Some(ColourDescription {
                        primaries: as_u8(read16(4)),
                        transfer: as_u8(read16(6)),
                        matrix: as_u8(read16(8)),
                        full_range: None,
                    })
                }
                _ => {}
            }
        } else if &kind == b"sv3d" {
            let size = u32::try_from(payload.len() + 8).unwrap_or(u32::MAX);
            let mut boxed = Vec::with_capacity(payload.len() + 8);
            boxed.extend_from_slice(&size.to_be_bytes());
            boxed.extend_from_slice(b"sv3d");
            boxed.extend_from_slice(payload);
            v.sv3d = Some(boxed);
        } else if &kind == b"st3d" && payload.len() >= 5 {
            // Spherical Video V2: FullBox, then stereo_mode 0 mono, 1 top-bottom, 2 left-right.
            v.stereo = Some(match payload[4] {
                0 => StereoMode::Mono,
                1 => StereoMode::TopBottomLeftFirst,
                2 => StereoMode::SideBySideLeftFirst,
                other => StereoMode::Other(u64::from(other)),
            });
        }
    }
    if !have_config && matches!(codec, VideoCodec::H264 | VideoCodec::Hevc) {
        return Err(Fault::corrupt(&name(config_kind), "the video sample entry has no codec configuration box"));
    }
    Ok(v)
}

fn audio_info(fourcc: &FourCc, entry: &[u8]) -> AudioTrackInfo {
    let codec = match fourcc {
        b"mp4a" => "aac".to_string(),
        b"Opus" => "opus".to_string(),
        b"ac-3" => "ac3".to_string(),
        b"ec-3" => "eac3".to_string(),
        b"fLaC" => "flac".to_string(),
        b"alac" => "alac".to_string(),
        b".mp3" => "mp3".to_string(),
        b"lpcm" | b"sowt" | b"twos" | b"in24" | b"in32" | b"fl32" | b"fl64" | b"ipcm" | b"fpcm" => "pcm".to_string(),
        other => name(other).trim().to_string(),
    };
    // SoundSampleEntry: 8 reserved/data-ref, version(2) revision(2) vendor(4),
    // channelcount(2) samplesize(2) pre_defined(2) reserved(2) samplerate(16.16)
    let mut r = ByteCursor::new(entry, "audio sample entry");
    let fields = (|| -> Result<(u16, u16, u32), Fault> {
        r.bytes(8)?;
        let version = r.u16()?;
        r.bytes(6)?;
        let channels = r.u16()?;
        r.bytes(6)?;
        let rate = r.u32()? >> 16;
        Ok((version, channels, rate))
    })();
    let (channels, sample_rate) = match fields {
        Ok((2, _, _)) => {
            // QuickTime sound description v2: rate as f64 and channel count follow.
            let mut r2 = ByteCursor::new(entry, "audio sample entry");
            let v2 = (|| -> Result<(u32, u32), Fault> {
                r2.bytes(8 + 20 + 4)?;
                let rate = f64::from_bits(r2.u64()?);
                let channels = r2.u32()?;
                Ok((channels, if rate.is_finite() && rate > 0.0 && rate < 1e7 { rate as u32 } else { 0 }))
            })();
            v2.unwrap_or((0, 0))
        }
        Ok((_, channels, rate)) => (u32::from(channels), rate),
        Err(_) => (0, 0),
    };
    AudioTrackInfo { codec, channels, sample_rate }
}

/// Expands `stts`, `ctts`, `stss`, `stsz`/`stz2`, `stsc` and `stco`/`co64` into samples.
fn build_stbl_samples(stbl: &[u8], file_len: u64) -> Result<Vec<RawSample>, Fault> {
    if stbl.is_empty() {
        return Ok(Vec::new());
    }
    let mut stts = None;
    let mut ctts = None;
    let mut stss = None;
    let mut sizes: Option<(u32, u32, &[u8], u8)> = None; // (constant size, count, table, field bits)
    let mut stsc = None;
    let mut chunk_offsets: Option<(&[u8], bool)> = None;
    for b in Boxes::new(stbl, "stbl") {
        let (kind, p) = b?;
        match &kind {
            b"stts" => stts = Some(p),
            b"ctts" => ctts = Some(p),
            b"stss" => stss = Some(p),
            b"stsc" => stsc = Some(p),
            b"stco" => chunk_offsets = Some((p, false)),
            b"co64" => chunk_offsets = Some((p, true)),
            b"stsz" => {
                let mut r = ByteCursor::new(p, "stsz");
                r.bytes(4)?;
                let constant = r.u32()?;
                let count = r.u32()?;
                sizes = Some((constant, count, &p[12..], 32));
            }
            b"stz2" => {
                let mut r = ByteCursor::new(p, "stz2");
                r.bytes(7)?;
                let bits = r.u8()?;
                let count = r.u32()?;
                if !matches!(bits, 4 | 8 | 16) {
                    return Err(Fault::corrupt("stz2", format!("field size {bits} is not 4, 8 or 16")));
                }
                sizes = Some((0, count, &p[12..], bits));
            }
            _ => {}
        }
    }
    let Some((constant, count, size_table, bits)) = sizes else {
        return Err(Fault::corrupt("stbl", "no sample size box (stsz or stz2)"));
    };
    if constant == 0 {
        let needed = (u64::from(count) * u64::from(bits)).div_ceil(8);
        if needed > size_table.len() as u64 {
            return Err(Fault::corrupt(
                "stsz",
                format!(
                    "claims {count} samples but holds sizes for only {}",
                    size_table.len() as u64 * 8 / u64::from(bits)
                ),
            ));
        }
    } else if u64::from(count).checked_mul(u64::from(constant)).is_none_or(|total| total > file_len) {
        return Err(Fault::corrupt(
            "stsz",
            format!("claims {count} samples of {constant} bytes, more than the file holds"),
        ));
    }
    let count_usize = count as usize;
    let size_of = |i: usize| -> u32 {
        if constant != 0 {
            return constant;
        }
        match bits {
            32 => u32::from_be_bytes([
                size_table[i * 4],
                size_table[i * 4 + 1],
                size_table[i * 4 + 2],
                size_table[i * 4 + 3],
            ]),
            16 => u32::from(u16::from_be_bytes([size_table[i * 2], size_table[i * 2 + 1]])),
            8 => u32::from(size_table[i]),
            _ => u32::from(if i % 2 == 0 { size_table[i / 2] >> 4 } else { size_table[i / 2] & 0x0f }),
        }
    };

    // Chunk offsets.
    let (co_data, is64) = chunk_offsets.ok_or_else(|| Fault::corrupt("stbl", "no chunk offset box (stco or co64)"))?;
    let mut r = ByteCursor::new(co_data, if is64 { "co64" } else { "stco" });
    r.bytes(4)?;
    let chunk_count = r.u32()?;
    let width = if is64 { 8 } else { 4 };
    if chunk_count as usize > r.remaining() / width {
        return Err(Fault::corrupt(
            if is64 { "co64" } else { "stco" },
            format!("claims {chunk_count} chunks, more than the box holds"),
        ));
    }
    let mut offsets = Vec::with_capacity(chunk_count as usize);
    for _ in 0..chunk_count {
        offsets.push(if is64 { r.u64()? } else { u64::from(r.u32()?) });
    }

    // Sample-to-chunk runs → per-sample offsets.
    let stsc = stsc.ok_or_else(|| Fault::corrupt("stbl", "no sample-to-chunk box (stsc)"))?;
    let mut r = ByteCursor::new(stsc, "stsc");
    r.bytes(4)?;
    let run_count = r.u32()?;
    if run_count as usize > r.remaining() / 12 {
        return Err(Fault::corrupt("stsc", format!("claims {run_count} entries, more than the box holds")));
    }
    let mut runs = Vec::with_capacity(run_count as usize);
    for _ in 0..run_count {
        let first_chunk = r.u32()?;
        let per_chunk = r.u32()?;
        r.u32()?;
        runs.push((first_chunk, per_chunk));
    }
    let mut samples: Vec<RawSample> = Vec::with_capacity(count_usize);
    'runs: for (i, &(first_chunk, per_chunk)) in runs.iter().enumerate() {
        let next_first = runs.get(i + 1).map_or(u64::from(chunk_count) + 1, |r| u64::from(r.0));
        if first_chunk == 0 || u64::from(first_chunk) > next_first {
            return Err(Fault::corrupt("stsc", format!("entry {i} has first_chunk {first_chunk}, out of order")));
        }
        for chunk in u64::from(first_chunk)..next_first.min(u64::from(chunk_count) + 1) {
            let mut offset = offsets[(chunk - 1) as usize];
            for _ in 0..per_chunk {
                if samples.len() == count_usize {
                    break 'runs;
                }
                let size = size_of(samples.len());
                samples.push(RawSample { offset, size, dts: 0, duration: 0, cto: 0, keyframe: stss.is_none() });
                offset = offset
                    .checked_add(u64::from(size))
                    .ok_or_else(|| Fault::corrupt("stsz", "sample offsets overflow"))?;
            }
        }
    }
    if samples.len() != count_usize {
        return Err(Fault::corrupt("stsc", format!("maps {} samples to chunks but stsz lists {count}", samples.len())));
    }

    // Decode times.
    let stts = stts.ok_or_else(|| Fault::corrupt("stbl", "no time-to-sample box (stts)"))?;
    let mut r = ByteCursor::new(stts, "stts");
    r.bytes(4)?;
    let entries = r.u32()?;
    if entries as usize > r.remaining() / 8 {
        return Err(Fault::corrupt("stts", format!("claims {entries} entries, more than the box holds")));
    }
    let mut i = 0usize;
    let mut dts = 0i64;
    let mut stts_total = 0u64;
    for _ in 0..entries {
        let n = r.u32()?;
        let delta = r.u32()?;
        stts_total += u64::from(n);
        for _ in 0..n {
            let Some(s) = samples.get_mut(i) else { break };
            s.dts = dts;
            s.duration = delta;
            dts = dts.checked_add(i64::from(delta)).ok_or_else(|| Fault::corrupt("stts", "decode times overflow"))?;
            i += 1;
        }
    }
    if stts_total != u64::from(count) {
        return Err(Fault::corrupt("stts", format!("gives durations for {stts_total} samples but stsz lists {count}")));
    }

    // Composition offsets (signed in both versions).
    if let Some(ctts) = ctts {
        let mut r = ByteCursor::new(ctts, "ctts");
        r.bytes(4)?;
        let entries = r.u32()?;
        if entries as usize > r.remaining() / 8 {
            return Err(Fault::corrupt("ctts", format!("claims {entries} entries, more than the box holds")));
        }
        let mut i = 0usize;
        for _ in 0..entries {
            let n = r.u32()?;
            let off = r.u32()? as i32;
            for _ in 0..n {
                let Some(s) = samples.get_mut(i) else { break };
                s.cto = off;
                i += 1;
            }
        }
    }

    // Sync samples.
    if let Some(stss) = stss {
        let mut r = ByteCursor::new(stss, "stss");
        r.bytes(4)?;
        let entries = r.u32()?;
        if entries as usize > r.remaining() / 4 {
            return Err(Fault::corrupt("stss", format!("claims {entries} entries, more than the box holds")));
        }
        for _ in 0..entries {
            let n = r.u32()? as usize;
            if let Some(s) = n.checked_sub(1).and_then(|k| samples.get_mut(k)) {
                s.keyframe = true;
            }
        }
    }
    Ok(samples)
}

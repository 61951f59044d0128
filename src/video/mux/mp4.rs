//! ISO-BMFF (MP4) writer: `ftyp`, one `mdat` with a 64-bit size written as samples arrive,
//! and `moov` at the end (ISO/IEC 14496-12; the sample entries of 14496-15 for HEVC/H.264).
//!
//! Timing decisions (encoder output has no B-frames, so decode order is presentation order;
//! a packet copy such as `vrseg dev loop-clip` may have them):
//! - The video track's timescale is the source's; sample durations (`stts`) are the
//!   differences of consecutive decode times (the pts when there is no reordering), the last
//!   one the nominal frame duration. A `ctts` (version 0) holds pts - dts only when some
//!   sample has a nonzero offset; encoder output never does.
//! - The first frame's decode time (its pts without reordering) is reproduced by an edit
//!   list, and only when it is not 0: an empty
//!   edit of that length when it is positive, a `media_time` when it is negative. The movie
//!   timescale equals the video's, so the edit is exact and a reader that applies edit lists
//!   (ffmpeg, our demuxer) sees every source pts exactly.
//! - Audio tracks keep their own timescale and durations; their first sample's time is
//!   placed the same way.
//! - `stco` switches to `co64` when an offset passes 4 GiB; `mvhd`/`tkhd`/`mdhd` use
//!   version 1 when a duration does not fit 32 bits.

use crate::video::chunk::{ColourDescription, VideoCodec};
use crate::video::layout::StereoMode;

use super::output::OutputFile;

fn put_u16(v: &mut Vec<u8>, x: u16) {
    v.extend_from_slice(&x.to_be_bytes());
}
fn put_u32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_be_bytes());
}
fn put_u64(v: &mut Vec<u8>, x: u64) {
    v.extend_from_slice(&x.to_be_bytes());
}

/// A box: 32-bit size, type, payload.
fn mp4_box(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    put_u32(&mut out, u32::try_from(payload.len() + 8).unwrap_or(u32::MAX));
    out.extend_from_slice(kind);
    out.extend_from_slice(payload);
    out
}

/// A full box: version, 24-bit flags, payload.
fn full_box(kind: &[u8; 4], version: u8, flags: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(payload.len() + 4);
    put_u32(&mut p, (u32::from(version) << 24) | (flags & 0x00ff_ffff));
    p.extend_from_slice(payload);
    mp4_box(kind, &p)
}

const IDENTITY_MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

/// The `st3d` stereo_mode for a packing, None where Spherical Video V2 has no code for it
/// (right eye first, exotic packings).
pub(crate) fn st3d_mode(mode: StereoMode) -> Option<u8> {
    match mode {
        StereoMode::Mono => Some(0),
        StereoMode::TopBottomLeftFirst => Some(1),
        StereoMode::SideBySideLeftFirst => Some(2),
        _ => None,
    }
}

/// Where a track's samples went: per-sample sizes, durations and sync flags, and chunks.
#[derive(Debug, Default)]
struct TrackSamples {
    sizes: Vec<u32>,
    durations: Vec<u32>,
    /// 1-based numbers of sync samples.
    sync: Vec<u32>,
    /// (file offset, samples) per chunk.
    chunks: Vec<(u64, u32)>,
    /// Time of the first sample (video: its decode time), in the track's timescale.
    first_time: Option<i64>,
    /// Video: pts - dts per sample (all 0 without reordering: no `ctts`).
    composition_offsets: Vec<u32>,
}

impl TrackSamples {
    fn add(&mut self, offset: u64, size: u32, duration: u32, sync: bool, new_chunk: bool) {
        self.sizes.push(size);
        self.durations.push(duration);
        if sync {
            self.sync.push(self.sizes.len() as u32);
        }
        match self.chunks.last_mut() {
            Some((_, n)) if !new_chunk => *n += 1,
            _ => self.chunks.push((offset, 1)),
        }
    }

    fn media_duration(&self) -> u64 {
        self.durations.iter().map(|&d| u64::from(d)).sum()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TrackRef {
    Video,
    Audio(usize),
}

/// The video track as the `moov` describes it.
#[derive(Debug, Clone)]
pub(crate) struct Mp4Video<'a> {
    pub codec: VideoCodec,
    pub width: u32,
    pub height: u32,
    pub timescale: u32,
    /// The decoder configuration record (`avcC`/`hvcC` payload).
    pub config_record: &'a [u8],
    /// `avc1`/`hvc1` when every parameter set is in the record, `avc3`/`hev1` when the
    /// stream also carries its own.
    pub parameter_sets_in_band: bool,
    pub colour: ColourDescription,
    pub st3d: Option<u8>,
    /// A `sv3d` box copied from the source, header included.
    pub sv3d: Option<&'a [u8]>,
}

/// An audio track as the `moov` describes it.
#[derive(Debug, Clone)]
pub(crate) struct Mp4Audio<'a> {
    /// The whole sample entry box.
    pub sample_entry_box: &'a [u8],
    pub timescale: u32,
    pub language: Option<&'a str>,
}

/// Writes samples into one `mdat` and the tables into `moov` at the end.
#[derive(Debug)]
pub(crate) struct Mp4Writer {
    mdat_header_at: u64,
    video: TrackSamples,
    video_dts: Vec<i64>,
    /// The latest presentation time written (the last pts without reordering).
    video_max_pts: Option<i64>,
    /// Media time where the presentation ends (set at finish).
    video_presented_end: Option<u64>,
    audio: Vec<TrackSamples>,
    last: Option<TrackRef>,
}

impl Mp4Writer {
    /// Writes `ftyp` and the `mdat` header (64-bit size, patched at the end).
    pub(crate) fn start(file: &mut OutputFile, codec: VideoCodec, audio_tracks: usize) -> std::io::Result<Mp4Writer> {
        let mut ftyp = Vec::new();
        ftyp.extend_from_slice(b"isom");
        put_u32(&mut ftyp, 0x200);
        for brand in [b"isom", b"iso2", b"mp41"] {
            ftyp.extend_from_slice(brand);
        }
        if codec == VideoCodec::H264 {
            ftyp.extend_from_slice(b"avc1");
        }
        file.write_all(&mp4_box(b"ftyp", &ftyp))?;
        let mdat_header_at = file.position();
        let mut header = Vec::with_capacity(16);
        put_u32(&mut header, 1);
        header.extend_from_slice(b"mdat");
        put_u64(&mut header, 16);
        file.write_all(&header)?;
        Ok(Mp4Writer {
            mdat_header_at,
            video: TrackSamples::default(),
            video_dts: Vec::new(),
            video_max_pts: None,
            video_presented_end: None,
            audio: (0..audio_tracks).map(|_| TrackSamples::default()).collect(),
            last: None,
        })
    }

    /// Appends one video sample (length-prefixed NAL units) with its presentation and
    /// decode times (equal without reordering; `dts <= pts`).
    pub(crate) fn write_video(
        &mut self,
        file: &mut OutputFile,
        data: &[u8],
        pts: i64,
        dts: i64,
        sync: bool,
    ) -> std::io::Result<()> {
        let size = sample_size(data)?;
        let offset_ticks = u32::try_from(pts - dts).map_err(|_| {
            std::io::Error::other(format!("pts {pts} before dts {dts} (or too far after) does not fit a ctts table"))
        })?;
        let offset = file.position();
        file.write_all(data)?;
        let new_chunk = self.last != Some(TrackRef::Video);
        self.last = Some(TrackRef::Video);
        if self.video.first_time.is_none() {
            self.video.first_time = Some(dts);
        }
        // Durations are filled from the dts differences at the end.
        self.video.add(offset, size, 0, sync, new_chunk);
        self.video.composition_offsets.push(offset_ticks);
        self.video_dts.push(dts);
        self.video_max_pts = Some(self.video_max_pts.map_or(pts, |m| m.max(pts)));
        Ok(())
    }

    /// Appends one audio sample of track `track`; `time` is its presentation time in the
    /// track's timescale (used for the first sample's edit).
    pub(crate) fn write_audio(
        &mut self,
        file: &mut OutputFile,
        track: usize,
        data: &[u8],
        time: i64,
        duration: i64,
        sync: bool,
    ) -> std::io::Result<()> {
        let size = sample_size(data)?;
        let duration = u32::try_from(duration).map_err(|_| {
            std::io::Error::other(format!("audio sample duration {duration} does not fit an MP4 table"))
        })?;
        let offset = file.position();
        file.write_all(data)?;
        let new_chunk = self.last != Some(TrackRef::Audio(track));
        self.last = Some(TrackRef::Audio(track));
        let t = self.audio.get_mut(track).ok_or_else(|| std::io::Error::other("no such audio track"))?;
        if t.first_time.is_none() {
            t.first_time = Some(time);
        }
        t.add(offset, size, duration, sync, new_chunk);
        Ok(())
    }

    /// Writes `moov` and patches the `mdat` size. `last_duration` is the last video sample's
    /// duration (the nominal frame duration).
    pub(crate) fn finish(
        mut self,
        file: &mut OutputFile,
        video: &Mp4Video,
        last_duration: i64,
        audio: &[Mp4Audio],
    ) -> std::io::Result<()> {
        let mdat_size = file.position() - self.mdat_header_at;
        file.patch(self.mdat_header_at + 8, &mdat_size.to_be_bytes())?;

        // Video durations from consecutive decode times.
        let mut durations = Vec::with_capacity(self.video_dts.len());
        for w in self.video_dts.windows(2) {
            let d = u32::try_from(w[1] - w[0]).map_err(|_| {
                std::io::Error::other(format!("a frame gap of {} ticks does not fit an MP4 table", w[1] - w[0]))
            })?;
            durations.push(d);
        }
        let fallback = durations.last().copied().unwrap_or(1);
        let last = u32::try_from(last_duration).ok().filter(|&d| d > 0).unwrap_or(fallback);
        durations.push(last);
        self.video.durations = durations;
        // With reordering the presentation ends after the latest pts, which can lie past the
        // last decode time: the edit list shows media time up to there.
        let first_dts = self.video.first_time.unwrap_or(0);
        self.video_presented_end =
            self.video_max_pts.map(|m| u64::try_from(m + i64::from(last) - first_dts).unwrap_or(0));

        let movie_timescale = video.timescale;
        let mut traks = Vec::new();
        let mut movie_duration = 0u64;
        let (trak, end) = self.video_trak(video, movie_timescale)?;
        traks.push(trak);
        movie_duration = movie_duration.max(end);
        for (i, (t, a)) in self.audio.iter().zip(audio).enumerate() {
            if t.sizes.is_empty() {
                continue;
            }
            let (trak, end) = audio_trak(t, a, i as u32 + 2, movie_timescale)?;
            traks.push(trak);
            movie_duration = movie_duration.max(end);
        }
        let next_track_id = audio.len() as u32 + 2;
        let mut moov = mvhd(movie_timescale, movie_duration, next_track_id);
        for t in traks {
            moov.extend(t);
        }
        file.write_all(&mp4_box(b"moov", &moov))
    }

    fn video_trak(&self, v: &Mp4Video, movie_timescale: u32) -> std::io::Result<(Vec<u8>, u64)> {
        let t = &self.video;
        let media_duration = t.media_duration();
        let shown_until = self.video_presented_end.unwrap_or(media_duration).max(media_duration);
        let (edts, presented) = edit_list(t.first_time.unwrap_or(0), shown_until, v.timescale, movie_timescale);
        let tkhd = tkhd(1, presented, false, v.width, v.height);
        let entry = visual_sample_entry(v)?;
        let stbl = sample_tables(t, &entry);
        let minf = [full_box(b"vmhd", 0, 1, &[0u8; 8]), dinf(), mp4_box(b"stbl", &stbl)].concat();
        let mdia =
            [mdhd(v.timescale, media_duration, None), hdlr(b"vide", "VideoHandler"), mp4_box(b"minf", &minf)].concat();
        let trak = [tkhd, edts, mp4_box(b"mdia", &mdia)].concat();
        Ok((mp4_box(b"trak", &trak), presented))
    }
}

fn audio_trak(t: &TrackSamples, a: &Mp4Audio, track_id: u32, movie_timescale: u32) -> std::io::Result<(Vec<u8>, u64)> {
    let media_duration = t.media_duration();
    let (edts, presented) = edit_list(t.first_time.unwrap_or(0), media_duration, a.timescale, movie_timescale);
    let tkhd = tkhd(track_id, presented, true, 0, 0);
    let stbl = sample_tables(t, a.sample_entry_box);
    let minf = [full_box(b"smhd", 0, 0, &[0u8; 4]), dinf(), mp4_box(b"stbl", &stbl)].concat();
    let mdia = [mdhd(a.timescale, media_duration, a.language), hdlr(b"soun", "SoundHandler"), mp4_box(b"minf", &minf)]
        .concat();
    let trak = [tkhd, edts, mp4_box(b"mdia", &mdia)].concat();
    Ok((mp4_box(b"trak", &trak), presented))
}

fn sample_size(data: &[u8]) -> std::io::Result<u32> {
    u32::try_from(data.len()).map_err(|_| std::io::Error::other("a sample larger than 4 GiB does not fit MP4"))
}

/// The edit list placing a track's first sample at `first_time` (track ticks), and the
/// presented duration in movie ticks. No `edts` when the first time is 0.
fn edit_list(first_time: i64, media_duration: u64, timescale: u32, movie_timescale: u32) -> (Vec<u8>, u64) {
    let to_movie = |ticks: u64| -> u64 {
        super::audio::rescale(
            i64::try_from(ticks).unwrap_or(i64::MAX),
            u64::from(timescale),
            u64::from(movie_timescale),
        )
        .max(0) as u64
    };
    let mut entries: Vec<(u64, i64)> = Vec::new();
    let presented;
    if first_time > 0 {
        let empty = to_movie(first_time as u64);
        let shown = to_movie(media_duration);
        entries.push((empty, -1));
        entries.push((shown, 0));
        presented = empty + shown;
    } else if first_time < 0 {
        let skipped = first_time.unsigned_abs();
        let shown = to_movie(media_duration.saturating_sub(skipped));
        entries.push((shown, -first_time));
        presented = shown;
    } else {
        return (Vec::new(), to_movie(media_duration));
    }
    let wide = entries.iter().any(|&(d, m)| d > u64::from(u32::MAX) || m > i64::from(i32::MAX));
    let mut p = Vec::new();
    put_u32(&mut p, entries.len() as u32);
    for (duration, media_time) in entries {
        if wide {
            put_u64(&mut p, duration);
            p.extend_from_slice(&media_time.to_be_bytes());
        } else {
            put_u32(&mut p, duration as u32);
            p.extend_from_slice(&(media_time as i32).to_be_bytes());
        }
        put_u32(&mut p, 0x0001_0000); // media rate 1.0
    }
    (mp4_box(b"edts", &full_box(b"elst", u8::from(wide), 0, &p)), presented)
}

/// Creation and modification times (0), `timescale` and `duration`, as
/// mvhd and mdhd begin: 32-bit fields in version 0, 64-bit in version 1
/// (`wide`, which a duration past 32 bits needs).
fn put_times(p: &mut Vec<u8>, wide: bool, timescale: u32, duration: u64) {
    if wide {
        put_u64(p, 0);
        put_u64(p, 0);
        put_u32(p, timescale);
        put_u64(p, duration);
    } else {
        put_u32(p, 0);
        put_u32(p, 0);
        put_u32(p, timescale);
        put_u32(p, duration as u32);
    }
}

fn mvhd(timescale: u32, duration: u64, next_track_id: u32) -> Vec<u8> {
    let wide = duration > u64::from(u32::MAX);
    let mut p = Vec::new();
    put_times(&mut p, wide, timescale, duration);
    put_u32(&mut p, 0x0001_0000); // rate
    put_u16(&mut p, 0x0100); // volume
    p.extend_from_slice(&[0u8; 10]);
    for m in IDENTITY_MATRIX {
        put_u32(&mut p, m);
    }
    p.extend_from_slice(&[0u8; 24]);
    put_u32(&mut p, next_track_id);
    full_box(b"mvhd", u8::from(wide), 0, &p)
}

fn tkhd(track_id: u32, duration: u64, audio: bool, width: u32, height: u32) -> Vec<u8> {
    let wide = duration > u64::from(u32::MAX);
    let mut p = Vec::new();
    if wide {
        put_u64(&mut p, 0);
        put_u64(&mut p, 0);
        put_u32(&mut p, track_id);
        put_u32(&mut p, 0);
        put_u64(&mut p, duration);
    } else {
        put_u32(&mut p, 0);
        put_u32(&mut p, 0);
        put_u32(&mut p, track_id);
        put_u32(&mut p, 0);
        put_u32(&mut p, duration as u32);
    }
    p.extend_from_slice(&[0u8; 8]);
    put_u16(&mut p, 0); // layer
    put_u16(&mut p, u16::from(audio)); // alternate group: audio tracks form group 1
    put_u16(&mut p, if audio { 0x0100 } else { 0 }); // volume
    put_u16(&mut p, 0);
    for m in IDENTITY_MATRIX {
        put_u32(&mut p, m);
    }
    put_u32(&mut p, width << 16);
    put_u32(&mut p, height << 16);
    // Flags: enabled | in movie.
    full_box(b"tkhd", u8::from(wide), 0x3, &p)
}

fn mdhd(timescale: u32, duration: u64, language: Option<&str>) -> Vec<u8> {
    let wide = duration > u64::from(u32::MAX);
    let mut p = Vec::new();
    put_times(&mut p, wide, timescale, duration);
    put_u16(&mut p, packed_language(language.unwrap_or("und")));
    put_u16(&mut p, 0);
    full_box(b"mdhd", u8::from(wide), 0, &p)
}

/// ISO 639-2/T code packed as three 5-bit letters; anything else is "und".
fn packed_language(code: &str) -> u16 {
    let b = code.as_bytes();
    if b.len() != 3 || !b.iter().all(|c| c.is_ascii_lowercase()) {
        return packed_language("und");
    }
    b.iter().fold(0u16, |acc, &c| (acc << 5) | u16::from(c - 0x60))
}

fn hdlr(kind: &[u8; 4], name: &str) -> Vec<u8> {
    let mut p = Vec::new();
    put_u32(&mut p, 0);
    p.extend_from_slice(kind);
    p.extend_from_slice(&[0u8; 12]);
    p.extend_from_slice(name.as_bytes());
    p.push(0);
    full_box(b"hdlr", 0, 0, &p)
}

fn dinf() -> Vec<u8> {
    let url = full_box(b"url ", 0, 1, &[]);
    let mut dref = Vec::new();
    put_u32(&mut dref, 1);
    dref.extend(url);
    mp4_box(b"dinf", &full_box(b"dref", 0, 0, &dref))
}

fn visual_sample_entry(v: &Mp4Video) -> std::io::Result<Vec<u8>> {
    let (width, height) = match (u16::try_from(v.width), u16::try_from(v.height)) {
        (Ok(w), Ok(h)) => (w, h),
        _ => return Err(std::io::Error::other(format!("{}x{} does not fit an MP4 sample entry", v.width, v.height))),
    };
    let (fourcc, config_kind): (&[u8; 4], &[u8; 4]) = match (v.codec, v.parameter_sets_in_band) {
        (VideoCodec::Hevc, false) => (b"hvc1", b"hvcC"),
        (VideoCodec::Hevc, true) => (b"hev1", b"hvcC"),
        (VideoCodec::H264, false) => (b"avc1", b"avcC"),
        (VideoCodec::H264, true) => (b"avc3", b"avcC"),
        (other, _) => return Err(std::io::Error::other(format!("vrseg does not write {other} into MP4"))),
    };
    let mut p = vec![0u8; 6];
    put_u16(&mut p, 1); // data reference index
    p.extend_from_slice(&[0u8; 16]);
    put_u16(&mut p, width);
    put_u16(&mut p, height);
    put_u32(&mut p, 0x0048_0000); // 72 dpi
    put_u32(&mut p, 0x0048_0000);
    put_u32(&mut p, 0);
    put_u16(&mut p, 1); // frame count
    let mut compressor = [0u8; 32];
    let name = b"vrseg";
    compressor[0] = name.len() as u8;
    compressor[1..=name.len()].copy_from_slice(name);
    p.extend_from_slice(&compressor);
    put_u16(&mut p, 0x0018); // depth
    p.extend_from_slice(&(-1i16).to_be_bytes());
    p.extend(mp4_box(config_kind, v.config_record));
    let c = v.colour;
    if c.primaries.is_some() || c.transfer.is_some() || c.matrix.is_some() || c.full_range.is_some() {
        let mut colr = b"nclx".to_vec();
        put_u16(&mut colr, u16::from(c.primaries.unwrap_or(2)));
        put_u16(&mut colr, u16::from(c.transfer.unwrap_or(2)));
        put_u16(&mut colr, u16::from(c.matrix.unwrap_or(2)));
        colr.push(if c.full_range == Some(true) { 0x80 } else { 0 });
        p.extend(mp4_box(b"colr", &colr));
    }
    if let Some(mode) = v.st3d {
        p.extend(full_box(b"st3d", 0, 0, &[mode]));
    }
    if let Some(sv3d) = v.sv3d {
        p.extend_from_slice(sv3d);
    }
    Ok(mp4_box(fourcc, &p))
}

/// `stbl`: `stsd` with one entry, `stts`, `stss` (unless every sample is sync), `stsc`,
/// `stsz`, `stco`/`co64`.
fn sample_tables(t: &TrackSamples, sample_entry_box: &[u8]) -> Vec<u8> {
    let mut stsd = Vec::new();
    put_u32(&mut stsd, 1);
    stsd.extend_from_slice(sample_entry_box);

    let mut runs: Vec<(u32, u32)> = Vec::new();
    for &d in &t.durations {
        match runs.last_mut() {
            Some((n, delta)) if *delta == d => *n += 1,
            _ => runs.push((1, d)),
        }
    }
    let mut stts = Vec::new();
    put_u32(&mut stts, runs.len() as u32);
    for (n, d) in runs {
        put_u32(&mut stts, n);
        put_u32(&mut stts, d);
    }

    let mut stsc_runs: Vec<(u32, u32)> = Vec::new(); // (first chunk, samples per chunk)
    for (i, &(_, n)) in t.chunks.iter().enumerate() {
        if stsc_runs.last().is_none_or(|&(_, per)| per != n) {
            stsc_runs.push((i as u32 + 1, n));
        }
    }
    let mut stsc = Vec::new();
    put_u32(&mut stsc, stsc_runs.len() as u32);
    for (first, per) in stsc_runs {
        put_u32(&mut stsc, first);
        put_u32(&mut stsc, per);
        put_u32(&mut stsc, 1);
    }

    let mut stsz = Vec::new();
    put_u32(&mut stsz, 0);
    put_u32(&mut stsz, t.sizes.len() as u32);
    for &s in &t.sizes {
        put_u32(&mut stsz, s);
    }

    let wide = t.chunks.iter().any(|&(o, _)| o > u64::from(u32::MAX));
    let mut co = Vec::new();
    put_u32(&mut co, t.chunks.len() as u32);
    for &(o, _) in &t.chunks {
        if wide {
            put_u64(&mut co, o);
        } else {
            put_u32(&mut co, o as u32);
        }
    }

    let mut out = full_box(b"stsd", 0, 0, &stsd);
    out.extend(full_box(b"stts", 0, 0, &stts));
    if t.composition_offsets.iter().any(|&o| o != 0) {
        let mut offset_runs: Vec<(u32, u32)> = Vec::new();
        for &o in &t.composition_offsets {
            match offset_runs.last_mut() {
                Some((n, off)) if *off == o => *n += 1,
                _ => offset_runs.push((1, o)),
            }
        }
        let mut ctts = Vec::new();
        put_u32(&mut ctts, offset_runs.len() as u32);
        for (n, o) in offset_runs {
            put_u32(&mut ctts, n);
            put_u32(&mut ctts, o);
        }
        out.extend(full_box(b"ctts", 0, 0, &ctts));
    }
    if t.sync.len() != t.sizes.len() {
        let mut stss = Vec::new();
        put_u32(&mut stss, t.sync.len() as u32);
        for &s in &t.sync {
            put_u32(&mut stss, s);
        }
        out.extend(full_box(b"stss", 0, 0, &stss));
    }
    out.extend(full_box(b"stsc", 0, 0, &stsc));
    out.extend(full_box(b"stsz", 0, 0, &stsz));
    out.extend(full_box(if wide { b"co64" } else { b"stco" }, 0, 0, &co));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_packing() {
        assert_eq!(packed_language("und"), 0x55C4);
        assert_eq!(packed_language("eng"), 0x15C7);
        assert_eq!(packed_language("EN"), 0x55C4);
    }

    #[test]
    fn edit_lists_place_the_first_sample() {
        assert_eq!(edit_list(0, 100, 30, 30), (Vec::new(), 100));
        let (late, shown) = edit_list(512, 1000, 15360, 15360);
        assert_eq!(shown, 1512);
        // elst v0: count 2, (512, -1, 1.0), (1000, 0, 1.0)
        assert_eq!(
            &late[8 + 8 + 4..],
            &[0, 0, 0, 2, 0, 0, 2, 0, 0xff, 0xff, 0xff, 0xff, 0, 1, 0, 0, 0, 0, 0x03, 0xe8, 0, 0, 0, 0, 0, 1, 0, 0]
        );
        let (early, shown) = edit_list(-1024, 48000, 48000, 15360);
        assert_eq!(shown, 15032); // (48000 - 1024) * 15360 / 48000
        assert_eq!(&early[early.len() - 8..early.len() - 4], &1024i32.to_be_bytes());
    }
}

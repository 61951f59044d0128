//! Mux: encoded video packets (plus the source's audio, copied untouched) → an MP4 or
//! Matroska file, with our own writers (no ffmpeg).
//!
//! One [`Muxer`] writes one file:
//! 1. [`Muxer::create`] opens `OUT.partial` (see [`output`]) for the container named by the
//!    extension (`.mp4`/`.m4v`/`.mov` → MP4, `.mkv` → Matroska).
//! 2. [`Muxer::write`] takes [`EncodedPacket`]s in presentation order, each with the source
//!    frame's pts in the source timescale. The first must be a keyframe. Parameter sets come
//!    from [`VideoTrackConfig::parameter_sets`] or, when that is empty, from the first
//!    keyframe; repeats of them are dropped from the samples (they live in `avcC`/`hvcC` /
//!    CodecPrivate), new ones stay in band (and MP4 then names the entry `hev1`/`avc3`).
//!    Audio samples are interleaved by time as video arrives.
//! 3. [`Muxer::finish`] writes the remaining audio and the indexes and renames the file to
//!    `OUT`; [`Muxer::finish_partial`] does the same for a run stopped early (Ctrl-C), naming
//!    it `NAME.partial.EXT`. Dropping a `Muxer` unfinished removes `OUT.partial`.
//!
//! The output has no B-frames, so each sample's decode time is its presentation time: MP4
//! stores pts differences in `stts` (no `ctts`) and the first pts as an edit list when it is
//! not 0 (see [`mp4`]); Matroska stores pts as block times (see [`matroska::timestamp_scale`]
//! for when that is exact).
//!
//! Stereo metadata: MP4 `st3d` (left eye first packings and mono; others cannot be written
//! and produce a warning) and the source's `sv3d` copied into the sample entry; Matroska
//! `StereoMode` and the source's `Projection` copied. Cross-container, `sv3d`/`Projection`
//! are not translated (a warning says so).

pub mod audio;
pub mod bitstream;
pub mod matroska;
pub mod mp4;
pub mod output;
pub mod png_sequence;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::video::chunk::{ColourDescription, VideoCodec};
use crate::video::demux::{AudioTrack, Container, Demuxer, VideoExtras};
use crate::video::layout::StereoMode;

use audio::{earlier, AudioDeclaration, AudioPlan};
use bitstream::{is_access_unit_delimiter, param_kind, split_nals, NalFormat, ParameterSets};
use output::{partial_path, OutputFile};

/// One encoded picture, as an encoder hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedPacket {
    /// The access unit: Annex-B or length-prefixed NAL units, per [`VideoTrackConfig::nal_format`].
    pub data: Vec<u8>,
    /// The source frame's presentation time in [`VideoTrackConfig::timescale`] ticks.
    pub pts: i64,
    /// An IDR (H.264) or IRAP (HEVC) picture.
    pub keyframe: bool,
}

/// The output video track.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoTrackConfig {
    /// H.264 or HEVC.
    pub codec: VideoCodec,
    pub width: u32,
    pub height: u32,
    /// Ticks per second of every pts: the source's [`crate::video::chunk::StreamInfo::timescale`].
    pub timescale: u32,
    /// Nominal frame duration in ticks: the last frame's duration and Matroska's
    /// DefaultDuration (0 when unknown: the last frame then lasts as long as the one before).
    pub frame_duration: i64,
    pub nal_format: NalFormat,
    /// Parameter sets (VPS/SPS/PPS NAL units without start codes) when the encoder gives them
    /// up front; empty to take them from the first keyframe.
    pub parameter_sets: Vec<Vec<u8>>,
    /// Stereo packing to declare (`st3d` / `StereoMode`).
    pub stereo: Option<StereoMode>,
    /// Projection boxes / elements copied from the source.
    pub extras: VideoExtras,
    /// Colour description to declare (`colr` / `Colour`); the bitstream's VUI should agree.
    pub colour: ColourDescription,
}

impl VideoTrackConfig {
    /// A track with the source's geometry, timescale, nominal frame duration, stereo
    /// metadata and projection, for an encoder producing `codec` as Annex-B.
    pub fn like_source(source: &Demuxer, codec: VideoCodec) -> VideoTrackConfig {
        let info = source.info();
        let frame_duration = if info.fps > 0.0 { (f64::from(info.timescale) / info.fps).round() as i64 } else { 0 };
        VideoTrackConfig {
            codec,
            width: info.width,
            height: info.height,
            timescale: info.timescale,
            frame_duration,
            nal_format: NalFormat::AnnexB,
            parameter_sets: Vec::new(),
            stereo: source.stereo_metadata(),
            extras: source.video_extras().clone(),
            colour: ColourDescription::default(),
        }
    }
}

/// The output container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerKind {
    Mp4,
    Matroska,
}

impl ContainerKind {
    /// From the output's extension: `.mp4`, `.m4v`, `.mov` → MP4; `.mkv` → Matroska.
    pub fn from_path(path: &Path) -> Result<ContainerKind, MuxError> {
        let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("mp4" | "m4v" | "mov") => Ok(ContainerKind::Mp4),
            Some("mkv") => Ok(ContainerKind::Matroska),
            Some("webm") => Err(MuxError::Unsupported {
                path: path.to_path_buf(),
                reason: "WebM holds only VP8/VP9/AV1 video and vrseg writes H.264/HEVC; name the output .mkv or .mp4"
                    .into(),
            }),
            _ => Err(MuxError::Unsupported {
                path: path.to_path_buf(),
                reason: "the output's extension names no container vrseg writes; use .mp4 or .mkv".into(),
            }),
        }
    }
}

/// Which source audio samples go into the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioSpan {
    /// All of them (a whole-file run).
    Whole,
    /// Those that overlap the written video, from the first frame's pts to the end of the
    /// last frame (a run with a start time or a frame limit).
    VideoSpan,
}

/// The source's audio to copy.
#[derive(Debug, Clone)]
pub struct AudioCopy {
    pub source: PathBuf,
    pub tracks: Vec<AudioTrack>,
    pub span: AudioSpan,
}

impl AudioCopy {
    /// Every copyable audio track of `source`.
    pub fn all_tracks(source: &Demuxer, span: AudioSpan) -> AudioCopy {
        AudioCopy { source: source.path().to_path_buf(), tracks: source.audio_tracks().to_vec(), span }
    }
}

/// Why muxing failed. Each message starts with the output path.
#[derive(Debug, thiserror::Error)]
pub enum MuxError {
    #[error("{path}: cannot write the output: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {reason}")]
    Unsupported { path: PathBuf, reason: String },
    #[error("{path}: frame {index} has pts {pts}, not after the previous frame's {previous}; the muxer takes frames in presentation order with distinct timestamps")]
    PtsOrder { path: PathBuf, index: u64, pts: i64, previous: i64 },
    #[error("{path}: frame 0 is not a keyframe; an output must start with an IDR/IRAP picture (check the encoder's settings)")]
    FirstNotKeyframe { path: PathBuf },
    #[error("{path}: the encoder gave no parameter sets (VPS/SPS/PPS) in its first keyframe or up front, so the stream cannot be described")]
    NoParameterSets { path: PathBuf },
    #[error("{path}: frame {index}: {reason}")]
    Bitstream { path: PathBuf, index: u64, reason: String },
    #[error("{path}: no video frame was written, so there is nothing to finalise")]
    Empty { path: PathBuf },
    #[error("{path}: copying audio from {source_path}: {reason}")]
    Audio { path: PathBuf, source_path: PathBuf, reason: String },
}

/// What a finished file holds.
#[derive(Debug, Clone, PartialEq)]
pub struct MuxSummary {
    /// Where the file is now (the requested name, or the `.partial.` name).
    pub path: PathBuf,
    pub partial: bool,
    pub container: ContainerKind,
    pub video_frames: u64,
    pub first_pts: i64,
    pub last_pts: i64,
    /// Samples copied per output audio track, with the source track's index.
    pub audio_packets: Vec<(usize, u64)>,
    pub bytes: u64,
    /// The MP4 sample entry type (`hvc1`, `hev1`, `avc1`, `avc3`) or Matroska CodecID.
    pub video_entry: String,
    /// Metadata or audio that could not be carried, one sentence each.
    pub warnings: Vec<String>,
}

enum Writer {
    Mp4(mp4::Mp4Writer),
    /// Matroska writes its header at the first packet, once CodecPrivate is known.
    MatroskaPending,
    Matroska(matroska::MatroskaWriter),
}

/// Writes one output file; see the module docs.
pub struct Muxer {
    kind: ContainerKind,
    file: OutputFile,
    config: VideoTrackConfig,
    sets: ParameterSets,
    sets_in_band: bool,
    writer: Writer,
    audio: Vec<AudioPlan>,
    audio_source: Option<(PathBuf, File)>,
    span: AudioSpan,
    frames: u64,
    first_pts: i64,
    last_pts: i64,
    last_dts: i64,
    /// The sample being built (reused: no allocation per frame once grown).
    sample: Vec<u8>,
    audio_buf: Vec<u8>,
    /// The latest end of a written audio sample: (ticks, ticks per second).
    audio_end: Option<(i64, u64)>,
    warnings: Vec<String>,
}

impl std::fmt::Debug for Muxer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Muxer")
            .field("kind", &self.kind)
            .field("file", &self.file)
            .field("frames", &self.frames)
            .finish_non_exhaustive()
    }
}

impl Muxer {
    /// Opens `path`'s temporary file for the container its extension names.
    pub fn create(path: &Path, config: VideoTrackConfig, audio: Option<AudioCopy>) -> Result<Muxer, MuxError> {
        let kind = ContainerKind::from_path(path)?;
        if !matches!(config.codec, VideoCodec::H264 | VideoCodec::Hevc) {
            return Err(MuxError::Unsupported {
                path: path.to_path_buf(),
                reason: format!("vrseg muxes H.264 and HEVC, not {}", config.codec),
            });
        }
        if config.timescale == 0 {
            return Err(MuxError::Unsupported { path: path.to_path_buf(), reason: "the video timescale is 0".into() });
        }
        let mut warnings = Vec::new();
        let segment_timescale = 1_000_000_000 / matroska::timestamp_scale(config.timescale);
        let mut plans = Vec::new();
        let mut audio_source = None;
        let mut span = AudioSpan::Whole;
        if let Some(copy) = audio {
            span = copy.span;
            for (i, track) in copy.tracks.iter().enumerate() {
                match AudioPlan::new(i, track, kind, segment_timescale) {
                    Ok(plan) => plans.push(plan),
                    Err(warning) => warnings.push(format!("{warning}; it is left out")),
                }
            }
            if !plans.is_empty() {
                let file = File::open(&copy.source).map_err(|e| MuxError::Audio {
                    path: path.to_path_buf(),
                    source_path: copy.source.clone(),
                    reason: e.to_string(),
                })?;
                audio_source = Some((copy.source.clone(), file));
            }
        }
        match (kind, config.stereo) {
            (ContainerKind::Mp4, Some(mode)) if mp4::st3d_mode(mode).is_none() => warnings.push(format!(
                "stereo packing {mode:?} has no st3d code (Spherical Video V2 names mono, top-bottom and left-right only); the MP4 carries no stereo metadata"
            )),
            _ => {}
        }
        match kind {
            ContainerKind::Mp4 if config.extras.matroska_projection.is_some() => warnings.push(
                "the source's Matroska Projection is not translated into an MP4 sv3d box; the output has no projection metadata"
                    .into(),
            ),
            ContainerKind::Matroska if config.extras.mp4_sv3d.is_some() => warnings.push(
                "the source's MP4 sv3d box is not translated into a Matroska Projection; the output has no projection metadata"
                    .into(),
            ),
            _ => {}
        }
        let mut file = OutputFile::create(path).map_err(|source| MuxError::Io { path: path.to_path_buf(), source })?;
        let writer = match kind {
            ContainerKind::Mp4 => Writer::Mp4(
                mp4::Mp4Writer::start(&mut file, config.codec, plans.len())
                    .map_err(|source| MuxError::Io { path: path.to_path_buf(), source })?,
            ),
            ContainerKind::Matroska => Writer::MatroskaPending,
        };
        let sets = ParameterSets::from_nals(config.codec, config.parameter_sets.iter().map(|p| p.as_slice()));
        Ok(Muxer {
            kind,
            file,
            config,
            sets,
            sets_in_band: false,
            writer,
            audio: plans,
            audio_source,
            span,
            frames: 0,
            first_pts: 0,
            last_pts: 0,
            last_dts: 0,
            sample: Vec::new(),
            audio_buf: Vec::new(),
            audio_end: None,
            warnings,
        })
    }

    /// The final path (what [`Muxer::finish`] renames to).
    pub fn path(&self) -> &Path {
        self.file.final_path()
    }

    /// Frames written so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    fn io(&self) -> impl Fn(std::io::Error) -> MuxError + '_ {
        |source| MuxError::Io { path: self.file.final_path().to_path_buf(), source }
    }

    /// Adds one frame; see the module docs for the rules.
    pub fn write(&mut self, packet: &EncodedPacket) -> Result<(), MuxError> {
        let index = self.frames;
        if index > 0 && packet.pts <= self.last_pts {
            let path = self.file.final_path().to_path_buf();
            return Err(MuxError::PtsOrder { path, index, pts: packet.pts, previous: self.last_pts });
        }
        self.write_sample(packet, packet.pts, false)
    }

    /// Adds one frame of a stream with reordering (B-frames), in decode order: `dts`
    /// strictly increasing, `dts <= packet.pts`. For copying packets as a source stores them
    /// (`vrseg dev loop-clip`); MP4 only (a `ctts` holds pts - dts). The packet's keyframe
    /// flag is the sample's sync flag as given (a source may mark H.264 recovery-point
    /// I-frames, which are not IDR), except that the first frame must be an IDR/IRAP.
    pub fn write_reordered(&mut self, packet: &EncodedPacket, dts: i64) -> Result<(), MuxError> {
        let index = self.frames;
        let path = self.file.final_path().to_path_buf();
        if self.kind != ContainerKind::Mp4 && packet.pts != dts {
            return Err(MuxError::Unsupported {
                path,
                reason: "frames out of presentation order (B-frames) are written to MP4 only; name the output .mp4"
                    .into(),
            });
        }
        if index > 0 && dts <= self.last_dts {
            return Err(MuxError::Bitstream {
                path,
                index,
                reason: format!("dts {dts} is not after the previous frame's {}", self.last_dts),
            });
        }
        if dts > packet.pts {
            return Err(MuxError::Bitstream { path, index, reason: format!("dts {dts} is after pts {}", packet.pts) });
        }
        self.write_sample(packet, dts, true)
    }

    /// `copied_flags`: the packet's keyframe flag is the sync flag (a packet copy); else the
    /// sync flag is whether the access unit is IDR/IRAP, and a keyframe flag must agree.
    fn write_sample(&mut self, packet: &EncodedPacket, dts: i64, copied_flags: bool) -> Result<(), MuxError> {
        let index = self.frames;
        let path = self.file.final_path().to_path_buf();
        let codec = self.config.codec;
        let nals = split_nals(&packet.data, self.config.nal_format).map_err(|reason| MuxError::Bitstream {
            path: path.clone(),
            index,
            reason,
        })?;
        if nals.is_empty() {
            return Err(MuxError::Bitstream { path, index, reason: "the packet holds no NAL unit".into() });
        }
        let random_access = bitstream::is_random_access_au(codec, &nals);
        let sync = if copied_flags { packet.keyframe || (index == 0 && random_access) } else { random_access };
        if packet.keyframe && !random_access && !copied_flags {
            return Err(MuxError::Bitstream {
                path,
                index,
                reason: "marked as a keyframe but holds no IDR/IRAP picture".into(),
            });
        }
        if index == 0 {
            if !random_access {
                return Err(MuxError::FirstNotKeyframe { path });
            }
            if !self.sets.is_complete(codec) {
                self.sets = ParameterSets::from_nals(codec, nals.iter().copied());
            }
            if !self.sets.is_complete(codec) {
                return Err(MuxError::NoParameterSets { path });
            }
            self.begin(packet.pts)?;
        }

        // The sample: 4-byte lengths; no AUDs; parameter sets only when new.
        self.sample.clear();
        for nal in &nals {
            if is_access_unit_delimiter(codec, nal) {
                continue;
            }
            if let Some(kind) = param_kind(codec, nal) {
                if self.sets.contains(kind, nal) {
                    continue;
                }
                self.sets_in_band = true;
            }
            let len = u32::try_from(nal.len()).map_err(|_| MuxError::Bitstream {
                path: path.clone(),
                index,
                reason: "a NAL unit larger than 4 GiB".into(),
            })?;
            self.sample.extend_from_slice(&len.to_be_bytes());
            self.sample.extend_from_slice(nal);
        }

        self.write_audio_before(Some((dts, u64::from(self.config.timescale))))?;
        let sample = std::mem::take(&mut self.sample);
        let result = match &mut self.writer {
            Writer::Mp4(w) => w.write_video(&mut self.file, &sample, packet.pts, dts, sync),
            Writer::Matroska(w) => {
                let ts =
                    audio::rescale(packet.pts, u64::from(self.config.timescale), 1_000_000_000 / w.timestamp_scale());
                w.write_block(&mut self.file, 1, ts, sync, &sample, 0)
            }
            Writer::MatroskaPending => Err(std::io::Error::other("the Matroska header was not written")),
        };
        self.sample = sample;
        result.map_err(self.io())?;
        if index == 0 {
            self.first_pts = packet.pts;
            self.last_pts = packet.pts;
        }
        // With reordering the latest presentation time is the largest so far.
        self.first_pts = self.first_pts.min(packet.pts);
        self.last_pts = self.last_pts.max(packet.pts);
        self.last_dts = dts;
        self.frames += 1;
        Ok(())
    }

    /// At the first frame: writes the Matroska header and skips audio before the video when
    /// only the video's span is copied.
    fn begin(&mut self, first_pts: i64) -> Result<(), MuxError> {
        let path = self.file.final_path().to_path_buf();
        let video_ts = u64::from(self.config.timescale);
        if self.span == AudioSpan::VideoSpan {
            for plan in &mut self.audio {
                // Skip samples that end at or before the first frame.
                while let Some(s) = plan.source.samples.get(plan.next) {
                    let (t, ts) = plan.source_time(s);
                    if !earlier(first_pts, video_ts, t + s.duration, ts) {
                        plan.next += 1;
                    } else {
                        break;
                    }
                }
            }
        }
        if let Writer::MatroskaPending = self.writer {
            if first_pts < 0 {
                return Err(MuxError::Unsupported {
                    path,
                    reason: format!("the first frame's pts {first_pts} is negative, which Matroska cannot store; write an .mp4 output"),
                });
            }
            let record = bitstream::config_record(self.config.codec, &self.sets, false)
                .map_err(|reason| MuxError::Bitstream { path: path.clone(), index: 0, reason })?;
            let scale = matroska::timestamp_scale(self.config.timescale);
            let default_duration_ns = (self.config.frame_duration > 0)
                .then(|| audio::rescale(self.config.frame_duration, video_ts, 1_000_000_000) as u64);
            let video = matroska::MatroskaVideo {
                codec: self.config.codec,
                codec_private: &record,
                width: self.config.width,
                height: self.config.height,
                default_duration_ns,
                stereo_mode: self.config.stereo.map(matroska::stereo_mode_code),
                colour: self.config.colour,
                projection: self.config.extras.matroska_projection.as_deref(),
            };
            let audio: Vec<matroska::MatroskaAudio> = self
                .audio
                .iter()
                .filter_map(|p| match &p.declaration {
                    AudioDeclaration::Matroska {
                        codec_id,
                        codec_private,
                        audio_element,
                        codec_delay_ns,
                        seek_pre_roll_ns,
                        default_duration_ns,
                    } => Some(matroska::MatroskaAudio {
                        codec_id,
                        codec_private,
                        audio_element,
                        codec_delay_ns: *codec_delay_ns,
                        seek_pre_roll_ns: *seek_pre_roll_ns,
                        default_duration_ns: *default_duration_ns,
                        language: p.language.as_deref(),
                    }),
                    AudioDeclaration::Mp4 { .. } => None,
                })
                .collect();
            let writer = matroska::MatroskaWriter::start(&mut self.file, scale, &video, &audio)
                .map_err(|source| MuxError::Io { path, source })?;
            self.writer = Writer::Matroska(writer);
        }
        Ok(())
    }

    /// Writes audio samples, earliest first across tracks, while they start before `limit`
    /// (ticks, ticks per second); all remaining ones when `limit` is None.
    fn write_audio_before(&mut self, limit: Option<(i64, u64)>) -> Result<(), MuxError> {
        loop {
            // The earliest pending sample over all tracks.
            let mut best: Option<(usize, i64, u64)> = None;
            for (i, plan) in self.audio.iter().enumerate() {
                if let Some(s) = plan.source.samples.get(plan.next) {
                    let (t, ts) = plan.source_time(s);
                    if best.is_none_or(|(_, bt, bts)| earlier(t, ts, bt, bts)) {
                        best = Some((i, t, ts));
                    }
                }
            }
            let Some((i, t, ts)) = best else { return Ok(()) };
            if let Some((limit_t, limit_ts)) = limit {
                if !earlier(t, ts, limit_t, limit_ts) {
                    return Ok(());
                }
            }
            self.write_one_audio(i)?;
        }
    }

    fn write_one_audio(&mut self, plan_index: usize) -> Result<(), MuxError> {
        let out_path = self.file.final_path().to_path_buf();
        let plan = &mut self.audio[plan_index];
        let sample = plan.source.samples[plan.next];
        let Some((source_path, file)) = self.audio_source.as_mut() else {
            return Ok(());
        };
        let read = |file: &mut File, buf: &mut Vec<u8>| -> std::io::Result<()> {
            buf.resize(sample.size as usize, 0);
            file.seek(SeekFrom::Start(sample.offset))?;
            file.read_exact(buf)
        };
        read(file, &mut self.audio_buf).map_err(|e| MuxError::Audio {
            path: out_path.clone(),
            source_path: source_path.clone(),
            reason: format!("sample {} of audio track {}: {e}", plan.next, plan.source.source_id),
        })?;
        let time = plan.out_time(&sample);
        let duration = plan.out_duration(&sample, &self.audio_buf);
        let track_number = plan_index as u64 + 2;
        let result = match &mut self.writer {
            Writer::Mp4(w) => {
                w.write_audio(&mut self.file, plan_index, &self.audio_buf, time, duration, sample.keyframe)
            }
            Writer::Matroska(w) => {
                // DiscardPadding is carried between Matroska files only (its unit is ns, so
                // the value moves unchanged).
                let padding = if plan.same_family() { sample.discard_padding_ns } else { 0 };
                w.write_block(
                    &mut self.file,
                    track_number,
                    time + plan.block_shift,
                    sample.keyframe,
                    &self.audio_buf,
                    padding,
                )
            }
            Writer::MatroskaPending => Ok(()),
        };
        result.map_err(|source| MuxError::Io { path: out_path, source })?;
        // DiscardPadding trims the sample's end (ns).
        let trimmed = audio::rescale(sample.discard_padding_ns, 1_000_000_000, plan.out_timescale);
        let end = (time + duration - trimmed.max(0), plan.out_timescale);
        if self.audio_end.is_none_or(|(t, ts)| earlier(t, ts, end.0, end.1)) {
            self.audio_end = Some(end);
        }
        plan.next += 1;
        plan.written += 1;
        Ok(())
    }

    /// Finalises a complete run and renames the file to its requested name.
    pub fn finish(self) -> Result<MuxSummary, MuxError> {
        self.close(false)
    }

    /// Finalises a run stopped early (Ctrl-C): a valid file named `NAME.partial.EXT`, with
    /// audio up to the end of the last frame.
    pub fn finish_partial(self) -> Result<MuxSummary, MuxError> {
        self.close(true)
    }

    fn close(mut self, partial: bool) -> Result<MuxSummary, MuxError> {
        let path = self.file.final_path().to_path_buf();
        if self.frames == 0 {
            return Err(MuxError::Empty { path });
        }
        let video_ts = u64::from(self.config.timescale);
        let last_duration = if self.config.frame_duration > 0 { self.config.frame_duration } else { 0 };
        let video_end = self.last_pts + last_duration.max(1);
        if partial || self.span == AudioSpan::VideoSpan {
            self.write_audio_before(Some((video_end, video_ts)))?;
        } else {
            self.write_audio_before(None)?;
        }
        let video_entry;
        let writer = std::mem::replace(&mut self.writer, Writer::MatroskaPending);
        match writer {
            Writer::Mp4(w) => {
                let record = bitstream::config_record(self.config.codec, &self.sets, !self.sets_in_band)
                    .map_err(|reason| MuxError::Bitstream { path: path.clone(), index: 0, reason })?;
                let video = mp4::Mp4Video {
                    codec: self.config.codec,
                    width: self.config.width,
                    height: self.config.height,
                    timescale: self.config.timescale,
                    config_record: &record,
                    parameter_sets_in_band: self.sets_in_band,
                    colour: self.config.colour,
                    st3d: self.config.stereo.and_then(mp4::st3d_mode),
                    sv3d: self.config.extras.mp4_sv3d.as_deref(),
                };
                video_entry = match (self.config.codec, self.sets_in_band) {
                    (VideoCodec::Hevc, false) => "hvc1",
                    (VideoCodec::Hevc, true) => "hev1",
                    (_, false) => "avc1",
                    (_, true) => "avc3",
                }
                .to_string();
                let audio: Vec<mp4::Mp4Audio> = self
                    .audio
                    .iter()
                    .map(|p| match &p.declaration {
                        AudioDeclaration::Mp4 { sample_entry_box, timescale } => {
                            mp4::Mp4Audio { sample_entry_box, timescale: *timescale, language: p.language.as_deref() }
                        }
                        AudioDeclaration::Matroska { .. } => {
                            mp4::Mp4Audio { sample_entry_box: &[], timescale: 1, language: None }
                        }
                    })
                    .collect();
                w.finish(&mut self.file, &video, last_duration, &audio)
                    .map_err(|source| MuxError::Io { path: path.clone(), source })?;
            }
            Writer::Matroska(w) => {
                video_entry = match self.config.codec {
                    VideoCodec::Hevc => "V_MPEGH/ISO/HEVC",
                    _ => "V_MPEG4/ISO/AVC",
                }
                .to_string();
                // The segment lasts until the last track ends.
                let ticks = 1_000_000_000 / w.timestamp_scale();
                let mut end = audio::rescale(video_end, video_ts, ticks);
                if let Some((t, ts)) = self.audio_end {
                    end = end.max(audio::rescale(t, ts, ticks));
                }
                w.finish(&mut self.file, end as f64).map_err(|source| MuxError::Io { path: path.clone(), source })?;
            }
            Writer::MatroskaPending => return Err(MuxError::Empty { path }),
        }
        let bytes = self.file.position();
        let target = if partial { partial_path(&path) } else { path.clone() };
        let Muxer { file, audio, frames, first_pts, last_pts, warnings, kind, .. } = self;
        let final_path = file.commit(&target).map_err(|source| MuxError::Io { path: path.clone(), source })?;
        Ok(MuxSummary {
            path: final_path,
            partial,
            container: kind,
            video_frames: frames,
            first_pts,
            last_pts,
            audio_packets: audio.iter().map(|p| (p.source_index, p.written)).collect(),
            bytes,
            video_entry,
            warnings,
        })
    }
}

/// The container a source was read as, as the output kind that keeps its audio verbatim.
pub fn same_family(container: Container) -> ContainerKind {
    match container {
        Container::Matroska => ContainerKind::Matroska,
        Container::Mp4 | Container::AnnexB => ContainerKind::Mp4,
    }
}

//! The facts `vrseg probe FILE [--json]` prints: container, codec, size, frame count, timing,
//! stereo layout and audio tracks. CPU only; reads headers and tables, never sample data.

use std::fmt;
use std::path::Path;

use serde::Serialize;

use crate::video::chunk::{ColourDescription, VideoCodec};
use crate::video::demux::{AudioTrackInfo, Container, DemuxError, Demuxer};
use crate::video::layout::{detect_layout, LayoutSource, StereoLayout};

/// What `vrseg probe` reports. Serialises to one JSON object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeReport {
    pub path: String,
    /// "mp4" | "matroska" | "annexb"
    pub container: Container,
    /// "h264" | "hevc" | "vp9" | "av1"
    pub codec: VideoCodec,
    pub profile: Option<String>,
    pub bit_depth: u8,
    pub width: u32,
    pub height: u32,
    /// Number of video samples.
    pub frames: u64,
    /// Nominal frame rate from the sample durations.
    pub fps: f64,
    pub duration_s: f64,
    /// Ticks per second of the stream's timestamps.
    pub timescale: u32,
    /// "sbs" | "tb" | "mono"
    pub layout: StereoLayout,
    /// "metadata" | "filename" | "aspect"
    pub layout_source: LayoutSource,
    /// True when the left (or top) half holds the right eye.
    pub right_eye_first: bool,
    pub keyframes: u64,
    pub colour: ColourDescription,
    pub audio: Vec<AudioTrackInfo>,
}

/// Opens `path`, indexes it, and gathers the report.
pub fn probe(path: &Path) -> Result<ProbeReport, DemuxError> {
    let demuxer = Demuxer::open(path)?;
    let info = demuxer.info();
    let layout = detect_layout(demuxer.stereo_metadata(), path, info.width, info.height);
    Ok(ProbeReport {
        path: path.display().to_string(),
        container: demuxer.container(),
        codec: info.codec,
        profile: info.profile.clone(),
        bit_depth: info.bit_depth,
        width: info.width,
        height: info.height,
        frames: info.frame_count,
        fps: info.fps,
        duration_s: info.duration_s,
        timescale: info.timescale,
        layout: layout.layout,
        layout_source: layout.source,
        right_eye_first: layout.right_eye_first,
        keyframes: demuxer.keyframe_indices().len() as u64,
        colour: info.colour,
        audio: demuxer.audio().to_vec(),
    })
}

impl fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.path)?;
        writeln!(f, "  container  {}", self.container.name())?;
        let profile = self.profile.as_deref().map(|p| format!(" ({p})")).unwrap_or_default();
        writeln!(f, "  video      {}{profile}, {}-bit, {}x{}", self.codec, self.bit_depth, self.width, self.height)?;
        writeln!(
            f,
            "  frames     {} ({} keyframes), {:.3} fps, {:.3} s",
            self.frames, self.keyframes, self.fps, self.duration_s
        )?;
        let order = if self.right_eye_first { ", right eye first" } else { "" };
        writeln!(f, "  layout     {} (from {}{order})", self.layout.name(), self.layout_source.name())?;
        if self.audio.is_empty() {
            write!(f, "  audio      none")
        } else {
            for (i, a) in self.audio.iter().enumerate() {
                let label = if i == 0 { "audio" } else { "" };
                write!(f, "  {label:<10} {}, {} ch, {} Hz", a.codec, a.channels, a.sample_rate)?;
                if i + 1 < self.audio.len() {
                    writeln!(f)?;
                }
            }
            Ok(())
        }
    }
}

//! `vrseg dev loop-clip`: a clip's packets written N times back to back into a
//! new MP4, through our demuxer and muxer (no decode, no encode, no ffmpeg).
//! Made for the GPU machine, which has no ffmpeg: a long many-GOP 8K clip for
//! throughput runs from the short one that fits in the bundle.
//!
//! Copy `k` (from 0) of every video packet keeps its bytes and keyframe flag
//! and has pts and dts shifted by `k * D`, where `D` is the clip's duration in
//! the video timescale: from its earliest pts to the latest pts + that
//! packet's duration (the nominal frame duration when the container gives
//! none). Packets go in decode order, so B-frames stay B-frames (the MP4 gets
//! a `ctts`). Audio samples are copied the same way, shifted by `D` in their
//! own timescale (rounded); MP4 audio timing follows the sample durations, so
//! where a track is not exactly `D` long each copy's audio starts up to one
//! audio frame early or late. The output is written as `OUT.partial` and
//! renamed when complete (the muxer's rule).

use std::path::{Path, PathBuf};

use crate::video::chunk::VideoCodec;
use crate::video::demux::{DemuxError, Demuxer};
use crate::video::mux::audio::rescale;
use crate::video::mux::{AudioCopy, AudioSpan, EncodedPacket, MuxError, MuxSummary, Muxer, VideoTrackConfig};

#[derive(Debug, thiserror::Error)]
pub enum LoopClipError {
    #[error(transparent)]
    Demux(#[from] DemuxError),
    #[error(transparent)]
    Mux(#[from] MuxError),
    #[error("{path}: {reason}")]
    Input { path: PathBuf, reason: String },
}

/// What was written.
#[derive(Debug, Clone)]
pub struct LoopClipSummary {
    pub mux: MuxSummary,
    /// The shift between copies, in video ticks, and the video timescale.
    pub shift: i64,
    pub timescale: u32,
    pub source_frames: u64,
}

/// Writes `input`'s packets `times` times into the MP4 `output`.
pub fn loop_clip(input: &Path, output: &Path, times: u32) -> Result<LoopClipSummary, LoopClipError> {
    let bad = |reason: String| LoopClipError::Input { path: input.to_path_buf(), reason };
    if times == 0 {
        return Err(bad("--times 0 would write no frame; give 1 or more".into()));
    }
    if !output.extension().is_some_and(|e| e.eq_ignore_ascii_case("mp4")) {
        return Err(LoopClipError::Input {
            path: output.to_path_buf(),
            reason: "loop-clip writes MP4: name the output .mp4".into(),
        });
    }
    let mut demuxer = Demuxer::open(input)?;
    let info = demuxer.info().clone();
    if !matches!(info.codec, VideoCodec::H264 | VideoCodec::Hevc) {
        return Err(bad(format!(
            "the video is {}; loop-clip copies H.264 and HEVC (what our muxer writes)",
            info.codec
        )));
    }
    let nominal = if info.fps > 0.0 { (f64::from(info.timescale) / info.fps).round() as i64 } else { 0 };

    // Pass 1: the clip's span (and that it has frames).
    let (mut first, mut end, mut frames) = (i64::MAX, i64::MIN, 0u64);
    while let Some(chunk) = demuxer.next_chunk()? {
        let duration = if chunk.duration > 0 { chunk.duration } else { nominal.max(1) };
        first = first.min(chunk.pts);
        end = end.max(chunk.pts + duration);
        frames += 1;
    }
    if frames == 0 {
        return Err(bad("the video track has no frames".into()));
    }
    let shift = end - first;

    let mut config = VideoTrackConfig::like_source(&demuxer, info.codec);
    config.colour = info.colour;
    let tracks = demuxer
        .audio_tracks()
        .iter()
        .map(|track| {
            let mut looped = track.clone();
            let audio_shift = rescale(shift, u64::from(info.timescale), u64::from(track.timescale));
            looped.samples = (0..i64::from(times))
                .flat_map(|k| {
                    track.samples.iter().map(move |s| {
                        let mut s = *s;
                        s.pts += k * audio_shift;
                        s.dts += k * audio_shift;
                        s
                    })
                })
                .collect();
            looped
        })
        .collect();
    let audio = AudioCopy { source: input.to_path_buf(), tracks, span: AudioSpan::Whole };
    let mut muxer = Muxer::create(output, config, Some(audio))?;

    // Pass 2, `times` over: the packets as stored, shifted.
    for k in 0..i64::from(times) {
        demuxer.seek_to_index(0);
        while let Some(chunk) = demuxer.next_chunk()? {
            let packet = EncodedPacket { data: chunk.data, pts: chunk.pts + k * shift, keyframe: chunk.is_keyframe };
            muxer.write_reordered(&packet, chunk.dts + k * shift)?;
        }
    }
    let mux = muxer.finish()?;
    Ok(LoopClipSummary { mux, shift, timescale: info.timescale, source_frames: frames })
}

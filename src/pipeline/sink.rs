//! Where a batch's mattes go. Every file a sink writes is written under a
//! temporary name and renamed when the run completes; an interrupted run
//! leaves a name that says so, a failed run leaves nothing that looks done.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use cudarc::driver::CudaStream;

use super::{PipelineError, RunOptions};
use crate::gpu::{DeviceView, Gpu};
use crate::ops::yolo_seg::Detection;
use crate::video::chunk::StreamInfo;
use crate::video::demux::Demuxer;
use crate::video::encode::host::HostFrame;
use crate::video::encode::{
    open_encoder, track_config, EncoderPreference, EncoderSettings, FrameData, FrameEncoder, InputFrame, PixelFormat,
};
use crate::video::layout::StereoLayout;
use crate::video::mux::output::{partial_path, OutputFile};
use crate::video::mux::{AudioCopy, AudioSpan, EncodedPacket, Muxer};
use crate::video::packed_frame::PackedFrame;
use crate::video::y4m::{packed_to_i420, ChromaSiting, Y4mStream};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// 8-bit alpha video, each eye's matte where that eye was.
    Matte,
    /// The input with everything but people replaced by a key colour.
    Green,
    /// The input with tinted masks, as a preview.
    Overlay,
    /// One PNG per frame (the whole frame's matte).
    Masks,
    /// Everything computed, nothing written.
    Null,
}

impl OutputKind {
    pub fn name(self) -> &'static str {
        match self {
            OutputKind::Matte => "matte",
            OutputKind::Green => "green",
            OutputKind::Overlay => "overlay",
            OutputKind::Masks => "masks",
            OutputKind::Null => "null",
        }
    }
}

/// `name.partial` beside `path`: what a file or directory is called until it is complete.
pub fn partial_name(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!("{name}.partial"))
}

/// `name.interrupted.ext`: what an interrupted run's valid output is renamed to.
pub fn interrupted_name(path: &Path) -> PathBuf {
    let stem = path.file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    match path.extension() {
        Some(ext) => path.with_file_name(format!("{stem}.interrupted.{}", ext.to_string_lossy())),
        None => path.with_file_name(format!("{stem}.interrupted")),
    }
}

pub enum Sink {
    Null,
    Masks(MasksSink),
    Video(Box<VideoSink>),
    Y4m(Box<Y4mSink>),
}

/// `--output matte|green|overlay`: NV12 frames (matte: luma = alpha,
/// neutral chroma; green/overlay: the composed picture) through NVENC, or
/// ffmpeg when no NVENC session opens, into our muxer with the source's pts,
/// audio and stereo metadata.
pub struct VideoSink {
    /// The frames are mattes (their chroma is set to neutral once, at start-up).
    matte: bool,
    encoder: Box<dyn FrameEncoder>,
    muxer: Option<Muxer>,
    packets: Vec<EncodedPacket>,
    /// Bytes per frame the encoder copies to the host (the ffmpeg fallback).
    host_bytes_per_frame: u64,
    downloaded: u64,
}

/// `-o NAME.y4m` for the video outputs: the NV12 frames uncompressed as
/// YUV4MPEG2 (8-bit 4:2:0), for tools that take raw video and for machines
/// with no encoder. Every frame crosses to the host (what --stats reports).
/// Y4M has a nominal frame rate and no timestamps or audio: frames are
/// written in presentation order, one per input frame.
pub struct Y4mSink {
    matte: bool,
    file: Option<OutputFile>,
    host: HostFrame,
    planar: Vec<u8>,
    width: u32,
    height: u32,
    downloaded: u64,
}

pub struct MasksSink {
    final_dir: PathBuf,
    work_dir: PathBuf,
    width: u32,
    height: u32,
    host: Vec<u8>,
    written: u64,
    digits: usize,
    downloaded: u64,
}

impl Sink {
    pub fn open(
        options: &RunOptions,
        info: &StreamInfo,
        _layout: StereoLayout,
        demuxer: &Demuxer,
        gpu: &Gpu,
    ) -> Result<Sink, PipelineError> {
        let output = || {
            options.output.clone().ok_or_else(|| PipelineError::Setup {
                what: format!("--output {} needs -o OUTPUT", options.kind.name()),
            })
        };
        match options.kind {
            OutputKind::Null => Ok(Sink::Null),
            OutputKind::Masks => {
                let final_dir = output()?;
                if final_dir.exists() {
                    return Err(PipelineError::Setup {
                        what: format!(
                            "{} exists; masks go into a new directory: remove it or pick another",
                            final_dir.display()
                        ),
                    });
                }
                let work_dir = partial_name(&final_dir);
                let _ = std::fs::remove_dir_all(&work_dir);
                std::fs::create_dir_all(&work_dir)
                    .map_err(|e| PipelineError::Setup { what: format!("cannot create {}: {e}", work_dir.display()) })?;
                let digits = info.frame_count.max(1).to_string().len().max(6);
                Ok(Sink::Masks(MasksSink {
                    final_dir,
                    work_dir,
                    width: info.width,
                    height: info.height,
                    host: Vec::new(),
                    written: 0,
                    digits,
                    downloaded: 0,
                }))
            }
            OutputKind::Matte | OutputKind::Green | OutputKind::Overlay => {
                let path = output()?;
                let matte = options.kind == OutputKind::Matte;
                let frame_duration =
                    if info.fps > 0.0 { (f64::from(info.timescale) / info.fps).round().max(1.0) as u32 } else { 1 };
                // Alpha uses all 256 codes; a composed picture keeps the source's range.
                let full_range = matte || info.colour.full_range.unwrap_or(false);
                if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("y4m")) {
                    let gcd = |mut a: u32, mut b: u32| {
                        while b != 0 {
                            (a, b) = (b, a % b);
                        }
                        a.max(1)
                    };
                    let g = gcd(info.timescale, frame_duration);
                    let stream = Y4mStream {
                        width: info.width,
                        height: info.height,
                        bit_depth: 8,
                        fps_num: info.timescale.max(1) / g,
                        fps_den: frame_duration / g,
                        sample_aspect: None,
                        chroma_siting: ChromaSiting::ffmpeg_decoder_default(info.codec),
                        full_range: Some(full_range),
                    };
                    let mut file = OutputFile::create(&path).map_err(|e| PipelineError::Setup {
                        what: format!(
                            "cannot create {}: {e}",
                            crate::video::mux::output::temporary_path(&path).display()
                        ),
                    })?;
                    file.write_all(stream.header_line().as_bytes())
                        .map_err(|e| PipelineError::Setup { what: format!("{}: {e}", file.temp_path().display()) })?;
                    return Ok(Sink::Y4m(Box::new(Y4mSink {
                        matte,
                        file: Some(file),
                        host: HostFrame::new(info.width, info.height, PixelFormat::Nv12),
                        planar: Vec::new(),
                        width: info.width,
                        height: info.height,
                        downloaded: 0,
                    })));
                }
                let mut settings =
                    EncoderSettings::new(info.width, info.height, PixelFormat::Nv12, (info.timescale, frame_duration));
                settings.full_range = full_range;
                let encoder =
                    open_encoder(Some(gpu), &settings, EncoderPreference::Auto).map_err(|e| PipelineError::Setup {
                        what: format!(
                            "{e}; or write the mattes as PNGs with --output masks, or nothing with --output null"
                        ),
                    })?;
                let span = if options.start_s.is_some() || options.frames.is_some() {
                    AudioSpan::VideoSpan
                } else {
                    AudioSpan::Whole
                };
                let muxer = Muxer::create(
                    &path,
                    track_config(demuxer, encoder.as_ref(), &settings),
                    Some(AudioCopy::all_tracks(demuxer, span)),
                )
                .map_err(|e| PipelineError::Setup { what: e.to_string() })?;
                let host_bytes_per_frame = if encoder.name().contains("NVENC") {
                    0
                } else {
                    PixelFormat::Nv12.packed_bytes(info.width, info.height) as u64
                };
                Ok(Sink::Video(Box::new(VideoSink {
                    matte,
                    encoder,
                    muxer: Some(muxer),
                    packets: Vec::new(),
                    host_bytes_per_frame,
                    downloaded: 0,
                })))
            }
        }
    }

    /// Whether the sink reads the mattes as NV12 frames (neutral chroma after
    /// the luma, set once by the pipeline).
    pub fn wants_nv12(&self) -> bool {
        match self {
            Sink::Video(v) => v.matte,
            Sink::Y4m(y) => y.matte,
            Sink::Null | Sink::Masks(_) => false,
        }
    }

    /// Takes one batch's frames (mattes, or NV12 frames for green/overlay:
    /// `frames.len()` frames of `frame_stride` bytes, rows `pitch` apart),
    /// enqueued on `stream`.
    pub fn batch(
        &mut self,
        stream: &CudaStream,
        mattes: &DeviceView,
        pitch: usize,
        frame_stride: usize,
        frames: &[(u64, i64)],
    ) -> Result<(), String> {
        match self {
            Sink::Null => Ok(()),
            Sink::Masks(m) => {
                let bytes = frames.len() * frame_stride;
                m.host.resize(bytes, 0);
                let view = mattes.sub(0, bytes).map_err(|e| e.to_string())?;
                view.download_blocking(stream, &mut m.host).map_err(|e| e.to_string())?;
                m.downloaded += bytes as u64;
                for (f, &(index, _pts)) in frames.iter().enumerate() {
                    let path = m.work_dir.join(format!("{:0width$}.png", index, width = m.digits));
                    let frame = &m.host[f * frame_stride..(f + 1) * frame_stride];
                    write_gray_png(&path, frame, pitch, m.width, m.height)?;
                    m.written += 1;
                }
                Ok(())
            }
            Sink::Video(v) => {
                let muxer = v.muxer.as_mut().expect("the muxer lives until finish");
                for (f, &(_index, pts)) in frames.iter().enumerate() {
                    let frame = InputFrame {
                        data: FrameData::Device { ptr: mattes.ptr() + (f * frame_stride) as u64, pitch, stream },
                        pts,
                    };
                    v.encoder.encode(&frame, &mut v.packets).map_err(|e| e.to_string())?;
                    v.downloaded += v.host_bytes_per_frame;
                    for p in v.packets.drain(..) {
                        muxer.write(&p).map_err(|e| e.to_string())?;
                    }
                }
                Ok(())
            }
            Sink::Y4m(y) => {
                let file = y.file.as_mut().expect("the file lives until finish");
                for (f, &(index, pts)) in frames.iter().enumerate() {
                    let frame = InputFrame {
                        data: FrameData::Device { ptr: mattes.ptr() + (f * frame_stride) as u64, pitch, stream },
                        pts,
                    };
                    let packed = y.host.fill(&frame, index).map_err(|e| e.to_string())?;
                    let packed =
                        PackedFrame::new(y.width, y.height, 8, pts, index, packed).map_err(|e| e.to_string())?;
                    packed_to_i420(&packed, &mut y.planar);
                    file.write_all(b"FRAME\n")
                        .and_then(|()| file.write_all(&y.planar))
                        .map_err(|e| format!("{}: {e}", file.temp_path().display()))?;
                }
                y.downloaded = y.host.bytes_from_device();
                Ok(())
            }
        }
    }

    /// Completes the output: renamed to its final name, or to a name that
    /// says it is partial when the run was interrupted.
    pub fn finish(&mut self, interrupted: bool) -> Result<(), String> {
        match self {
            Sink::Null => Ok(()),
            Sink::Masks(m) => {
                let target = if interrupted { interrupted_name(&m.final_dir) } else { m.final_dir.clone() };
                std::fs::rename(&m.work_dir, &target)
                    .map_err(|e| format!("cannot rename {} to {}: {e}", m.work_dir.display(), target.display()))
            }
            Sink::Video(v) => {
                let mut muxer = v.muxer.take().expect("finish is called once");
                v.encoder.finish(&mut v.packets).map_err(|e| e.to_string())?;
                for p in v.packets.drain(..) {
                    muxer.write(&p).map_err(|e| e.to_string())?;
                }
                let summary = if interrupted { muxer.finish_partial() } else { muxer.finish() };
                summary.map(|_| ()).map_err(|e| e.to_string())
            }
            Sink::Y4m(y) => {
                let file = y.file.take().expect("finish is called once");
                let target =
                    if interrupted { partial_path(file.final_path()) } else { file.final_path().to_path_buf() };
                let temp = file.temp_path().to_path_buf();
                file.commit(&target)
                    .map(|_| ())
                    .map_err(|e| format!("cannot finish {} as {}: {e}", temp.display(), target.display()))
            }
        }
    }

    /// After a failure: removes what was written.
    pub fn abandon(&mut self) {
        match self {
            Sink::Masks(m) => {
                let _ = std::fs::remove_dir_all(&m.work_dir);
            }
            // Dropping an unfinished muxer deletes its temporary file.
            Sink::Video(v) => drop(v.muxer.take()),
            // Dropping an uncommitted output file deletes it.
            Sink::Y4m(y) => drop(y.file.take()),
            Sink::Null => {}
        }
    }

    /// Bytes copied device → host so far.
    pub fn downloaded_bytes(&self) -> u64 {
        match self {
            Sink::Null => 0,
            Sink::Masks(m) => m.downloaded,
            Sink::Video(v) => v.downloaded,
            Sink::Y4m(y) => y.downloaded,
        }
    }
}

fn write_gray_png(path: &Path, frame: &[u8], pitch: usize, width: u32, height: u32) -> Result<(), String> {
    let file = File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let mut encoder = png::Encoder::new(BufWriter::new(file), width, height);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    // Mattes are mostly flat: fast compression is within a few % of the best here.
    encoder.set_compression(png::Compression::Fast);
    let mut writer = encoder.write_header().map_err(|e| format!("{}: {e}", path.display()))?;
    let mut stream = writer.stream_writer().map_err(|e| format!("{}: {e}", path.display()))?;
    for row in frame.chunks(pitch).take(height as usize) {
        stream.write_all(&row[..width as usize]).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    stream.finish().map_err(|e| format!("{}: {e}", path.display()))
}

/// `--detections`: one JSON object per frame and line, written to a
/// temporary file and renamed at the end.
pub struct LineWriter {
    path: PathBuf,
    tmp: PathBuf,
    out: BufWriter<File>,
}

impl LineWriter {
    pub fn create(path: &Path) -> Result<LineWriter, String> {
        let tmp = partial_name(path);
        let file = File::create(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
        Ok(LineWriter { path: path.to_path_buf(), tmp, out: BufWriter::new(file) })
    }

    pub fn frame(&mut self, index: u64, pts: i64, eyes: &[&Vec<Detection>]) -> Result<(), String> {
        let boxes: Vec<serde_json::Value> = eyes
            .iter()
            .enumerate()
            .flat_map(|(eye, dets)| {
                dets.iter().map(move |d| {
                    serde_json::json!({
                        "eye": eye,
                        "box": [d.sx1, d.sy1, d.sx2, d.sy2],
                        "score": d.score,
                        "class": d.class,
                    })
                })
            })
            .collect();
        let line = serde_json::json!({ "frame": index, "pts": pts, "detections": boxes });
        writeln!(self.out, "{line}").map_err(|e| format!("{}: {e}", self.tmp.display()))
    }

    /// After a failure: removes the temporary file.
    pub fn abandon(self) {
        let tmp = self.tmp.clone();
        drop(self);
        let _ = std::fs::remove_file(tmp);
    }

    pub fn finish(mut self, interrupted: bool) -> Result<(), String> {
        self.out.flush().map_err(|e| format!("{}: {e}", self.tmp.display()))?;
        let target = if interrupted { interrupted_name(&self.path) } else { self.path.clone() };
        std::fs::rename(&self.tmp, &target)
            .map_err(|e| format!("cannot rename {} to {}: {e}", self.tmp.display(), target.display()))
    }
}

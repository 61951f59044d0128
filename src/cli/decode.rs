//! `vrseg decode FILE (-o OUT.y4m | -o - | --framemd5)`: NVDEC decode of a
//! whole file, written as YUV4MPEG2 or as ffmpeg-comparable frame hashes.

use std::cell::Cell;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use vrseg::video::chunk::StreamInfo;
use vrseg::video::decode::{decode_file, decode_file_parallel, DecodeError, HostCopy};
use vrseg::video::framemd5::{framemd5_header, framemd5_line, FrameMd5Stream};
use vrseg::video::packed_frame::PackedFrame;
use vrseg::video::y4m::{ChromaSiting, Y4mStream, Y4mWriter};

use super::exit::Code;
use super::print_err;

/// A frame rate as the ratio y4m wants: NTSC-style rates as n·1000/1001,
/// others to the millihertz.
pub fn frame_rate_ratio(fps: f64) -> (u32, u32) {
    if !(fps.is_finite() && fps > 0.0) {
        return (25, 1);
    }
    let ntsc = fps * 1.001;
    if (ntsc - ntsc.round()).abs() < 1e-3 && (fps - fps.round()).abs() > 1e-3 {
        return ((ntsc.round() as u32) * 1000, 1001);
    }
    if (fps - fps.round()).abs() < 1e-6 {
        return (fps.round() as u32, 1);
    }
    let (mut n, mut d) = ((fps * 1000.0).round() as u32, 1000u32);
    let g = gcd(n, d);
    n /= g;
    d /= g;
    (n, d)
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a.max(1)
    } else {
        gcd(b, a % b)
    }
}

/// Where decoded frames go. The y4m header needs the stream's facts, so the
/// writer is made at the first frame.
enum Sink {
    FrameMd5 { out: Box<dyn Write>, header_written: bool },
    Y4m { out: Option<Box<dyn Write>>, writer: Option<Y4mWriter<Box<dyn Write>>> },
}

impl Sink {
    fn finish(self) -> std::io::Result<()> {
        match self {
            Sink::FrameMd5 { mut out, .. } | Sink::Y4m { out: Some(mut out), writer: None } => out.flush(),
            Sink::Y4m { writer: Some(writer), .. } => {
                writer.finish().map_err(|e| std::io::Error::other(e.to_string()))?.flush()
            }
            Sink::Y4m { out: None, writer: None } => Ok(()),
        }
    }
}

pub fn run(
    file: &Path,
    output: Option<&Path>,
    framemd5: bool,
    decoders: usize,
    gpu: usize,
    quiet: bool,
) -> anyhow::Result<Code> {
    let device = vrseg::gpu::Gpu::open(gpu)?;
    let to_stdout = framemd5 || output == Some(Path::new("-"));
    // Write under a temporary name; rename only when every frame is out, so
    // an interrupted or failed run leaves nothing that looks finished.
    let partial: Option<PathBuf> = match output {
        Some(p) if p != Path::new("-") => Some(PathBuf::from(format!("{}.partial", p.display()))),
        _ => None,
    };
    let out: Box<dyn Write> = match &partial {
        Some(tmp) => Box::new(BufWriter::with_capacity(
            1 << 22,
            File::create(tmp).with_context(|| format!("cannot create {}", tmp.display()))?,
        )),
        None => Box::new(BufWriter::with_capacity(1 << 22, std::io::stdout().lock())),
    };
    let mut sink = if framemd5 {
        Sink::FrameMd5 { out, header_written: false }
    } else {
        Sink::Y4m { out: Some(out), writer: None }
    };

    let pipe_closed = Cell::new(false);
    let started = Instant::now();
    let mut write_frame = |info: &StreamInfo, frame: vrseg::video::decode::DecodedFrame| -> Result<(), String> {
        let packed = frame.packed.expect("decode asked for packed host copies");
        let result: Result<(), std::io::Error> = match &mut sink {
            Sink::FrameMd5 { out: w, header_written } => {
                let duration = (f64::from(info.timescale) / info.fps.max(1e-9)).round() as i64;
                (|| {
                    if !*header_written {
                        let header = FrameMd5Stream {
                            stream_index: 0,
                            time_base: (1, info.timescale),
                            width: frame.layout.width,
                            height: frame.layout.height,
                            sample_aspect: (0, 1),
                        };
                        w.write_all(framemd5_header(&header).as_bytes())?;
                        *header_written = true;
                    }
                    writeln!(w, "{}", framemd5_line(0, frame.pts, frame.pts, duration, packed))
                })()
            }
            Sink::Y4m { out, writer } => {
                if writer.is_none() {
                    let (fps_num, fps_den) = frame_rate_ratio(info.fps);
                    let stream = Y4mStream {
                        width: frame.layout.width,
                        height: frame.layout.height,
                        bit_depth: info.bit_depth,
                        fps_num,
                        fps_den,
                        sample_aspect: None,
                        chroma_siting: ChromaSiting::ffmpeg_decoder_default(info.codec),
                        full_range: info.colour.full_range,
                    };
                    let out = out.take().expect("the y4m output is taken once, at the first frame");
                    *writer = Some(Y4mWriter::new(out, stream).map_err(|e| e.to_string())?);
                }
                let packed_frame = PackedFrame::new(
                    frame.layout.width,
                    frame.layout.height,
                    info.bit_depth,
                    frame.pts,
                    frame.index,
                    packed,
                )
                .map_err(|e| e.to_string())?;
                match writer.as_mut().expect("created above").write_frame(&packed_frame) {
                    Ok(()) => Ok(()),
                    Err(vrseg::video::y4m::Y4mError::Io(e)) => Err(e),
                    Err(e) => return Err(e.to_string()),
                }
            }
        };
        result.map_err(|e| {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                pipe_closed.set(true);
            }
            e.to_string()
        })
    };

    let outcome = if decoders == 1 {
        decode_file(&device, file, HostCopy::Packed, &mut write_frame)
    } else {
        let options = vrseg::video::parallel::ParallelOptions::sessions(Some(decoders));
        decode_file_parallel(&device, file, &options, HostCopy::Packed, &mut write_frame)
    };
    let flushed = sink.finish();
    if pipe_closed.get() && to_stdout {
        // `vrseg decode x -o - | head -c 100`: the reader had enough.
        return Ok(Code::Success);
    }
    let summary = match outcome {
        Ok(summary) => summary,
        Err(e) => {
            if let Some(tmp) = &partial {
                let kept = matches!(e, DecodeError::FrameCountMismatch { .. } | DecodeError::Nvdec(_))
                    && tmp.metadata().is_ok_and(|m| m.len() > 0);
                if kept {
                    print_err(&format!("vrseg: the frames decoded so far are in {} (partial)", tmp.display()));
                } else {
                    let _ = std::fs::remove_file(tmp);
                }
            }
            return Err(e.into());
        }
    };
    flushed.context("writing the output")?;
    if let (Some(tmp), Some(out)) = (&partial, output) {
        std::fs::rename(tmp, out).with_context(|| format!("cannot rename {} to {}", tmp.display(), out.display()))?;
    }
    let seconds = started.elapsed().as_secs_f64();
    if !quiet {
        print_err(&format!(
            "decoded {} frames ({}x{}, {}-bit) in {:.2} s, {:.1} frames/s, {} NVDEC session{}",
            summary.frames,
            summary.layout.width,
            summary.layout.height,
            if summary.layout.bytes_per_sample == 2 { 10 } else { 8 },
            seconds,
            summary.frames as f64 / seconds.max(1e-9),
            summary.decoders,
            if summary.decoders == 1 { "" } else { "s" }
        ));
        if let Some(note) = &summary.decoders_note {
            print_err(&format!("vrseg: note: {note}"));
        }
    }
    if !summary.concealed.is_empty() {
        print_err(&format!("vrseg: warning: NVDEC concealed errors in frames {:?}", summary.concealed));
    }
    if !summary.failed.is_empty() {
        print_err(&format!(
            "vrseg: error: {}: NVDEC failed to decode frames {:?}; the stream is damaged there",
            file.display(),
            summary.failed
        ));
        return Ok(Code::Failure);
    }
    Ok(Code::Success)
}

#[cfg(test)]
mod tests {
    use super::frame_rate_ratio;

    #[test]
    fn frame_rates_become_exact_ratios() {
        assert_eq!(frame_rate_ratio(30.0), (30, 1));
        assert_eq!(frame_rate_ratio(30000.0 / 1001.0), (30000, 1001));
        assert_eq!(frame_rate_ratio(60000.0 / 1001.0), (60000, 1001));
        assert_eq!(frame_rate_ratio(12.5), (25, 2));
        assert_eq!(frame_rate_ratio(f64::NAN), (25, 1));
    }
}

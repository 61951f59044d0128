//! YUV4MPEG2 (`.y4m`) output of decoded frames, byte-identical to what ffmpeg 5.1's
//! `yuv4mpegpipe` muxer writes for `-pix_fmt yuv420p` (8-bit) and `-pix_fmt yuv420p10le
//! -strict -1` (10-bit), given the same stream facts.
//!
//! The header ffmpeg writes (libavformat/yuv4mpegenc.c) is
//! `YUV4MPEG2 W<w> H<h> F<num>:<den> I<p|t|b> A<sar num>:<sar den><colour tag>[ XCOLORRANGE=…]`:
//! - `F` is the frame rate (ffmpeg: the inverse of the output stream time base).
//! - `I` is `p` unless the codec signals field order; vrseg only handles progressive video.
//! - `A0:0` when the sample aspect ratio is unknown.
//! - The colour tag for 8-bit 4:2:0 depends on the decoder's chroma sample location:
//!   `C420mpeg2 XYSCSS=420MPEG2` for *left* (H.264 and HEVC decoders default to it),
//!   `C420paldv XYSCSS=420PALDV` for *top-left*, and `C420jpeg XYSCSS=420JPEG` otherwise
//!   (*center* or unspecified, e.g. VP9). For 10-bit it is always `C420p10 XYSCSS=420P10`.
//! - `XCOLORRANGE=LIMITED` / `FULL` only when the range is known.
//!
//! Each frame is `FRAME\n` followed by the planar Y, U, V planes (I420). For 10-bit, samples
//! are little-endian u16 with the value in the **low** 10 bits, so P010's high-bit samples are
//! shifted right by 6.
//!
//! One deliberate difference: for 10-bit at an **odd width**, ffmpeg 5.1's muxer writes each
//! chroma row as `ceil(width × 2 / 2)` = `width` bytes (it halves the byte width, not the
//! sample count), dropping the high byte of the last U and V sample, and its own y4m demuxer
//! then misreads the file. We write the full `ceil(width / 2) × 2` bytes, which ffmpeg reads
//! back correctly (tests/frame_io checks both).

use std::io::Write;

use crate::video::packed_frame::{PackedFormat, PackedFrame, PackedFrameError, PackedLayout};

/// Where chroma samples sit relative to luma, as ffmpeg's `AVChromaLocation` (only the values
/// that change the y4m header are distinguished).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChromaSiting {
    /// MPEG-2/H.264 default: co-sited horizontally with the left luma sample (`C420mpeg2`).
    Left,
    /// JPEG/MPEG-1: centred (`C420jpeg`).
    Center,
    /// PAL DV: co-sited with the top-left luma sample (`C420paldv`).
    TopLeft,
    /// Not signalled; ffmpeg then writes `C420jpeg`.
    #[default]
    Unspecified,
}

impl ChromaSiting {
    /// What ffmpeg's software decoders report when the bitstream does not say: H.264 and HEVC
    /// decoders assume *left* (their specs' default), VP9 and AV1 leave it unspecified.
    pub fn ffmpeg_decoder_default(codec: crate::video::chunk::VideoCodec) -> Self {
        use crate::video::chunk::VideoCodec;
        match codec {
            VideoCodec::H264 | VideoCodec::Hevc => ChromaSiting::Left,
            VideoCodec::Vp9 | VideoCodec::Av1 => ChromaSiting::Unspecified,
        }
    }
}

/// The stream facts a y4m header carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Y4mStream {
    pub width: u32,
    pub height: u32,
    /// 8 (written as 8-bit yuv420p) or 10 (yuv420p10le).
    pub bit_depth: u8,
    /// Frame rate numerator and denominator (`F30000:1001`).
    pub fps_num: u32,
    pub fps_den: u32,
    /// Sample (pixel) aspect ratio; `None` writes `A0:0` (unknown).
    pub sample_aspect: Option<(u32, u32)>,
    pub chroma_siting: ChromaSiting,
    /// `Some(true)` full (JPEG) range, `Some(false)` limited (TV) range, `None` unknown.
    pub full_range: Option<bool>,
}

impl Y4mStream {
    /// The header line, newline included, exactly as ffmpeg 5.1 writes it.
    pub fn header_line(&self) -> String {
        let (aspect_num, aspect_den) = self.sample_aspect.unwrap_or((0, 0));
        let colour_tag = if self.bit_depth > 8 {
            " C420p10 XYSCSS=420P10"
        } else {
            match self.chroma_siting {
                ChromaSiting::Left => " C420mpeg2 XYSCSS=420MPEG2",
                ChromaSiting::TopLeft => " C420paldv XYSCSS=420PALDV",
                ChromaSiting::Center | ChromaSiting::Unspecified => " C420jpeg XYSCSS=420JPEG",
            }
        };
        let range = match self.full_range {
            Some(true) => " XCOLORRANGE=FULL",
            Some(false) => " XCOLORRANGE=LIMITED",
            None => "",
        };
        format!(
            "YUV4MPEG2 W{} H{} F{}:{} Ip A{}:{}{}{}\n",
            self.width, self.height, self.fps_num, self.fps_den, aspect_num, aspect_den, colour_tag, range
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Y4mError {
    #[error("y4m stream {width}x{height}: {reason}")]
    BadStream { width: u32, height: u32, reason: &'static str },
    #[error("frame {index} is {frame_width}x{frame_height} {frame_depth}-bit but the y4m stream is {width}x{height} {depth}-bit")]
    FrameMismatch {
        index: u64,
        frame_width: u32,
        frame_height: u32,
        frame_depth: u8,
        width: u32,
        height: u32,
        depth: u8,
    },
    #[error(transparent)]
    Frame(#[from] PackedFrameError),
    #[error("writing y4m: {0}")]
    Io(#[from] std::io::Error),
}

/// Writes a y4m stream: the header on construction, then one `FRAME` per [`write_frame`]
/// call, converting packed NV12/P010 to planar I420 through one reused scratch buffer.
///
/// [`write_frame`]: Y4mWriter::write_frame
pub struct Y4mWriter<W: Write> {
    out: W,
    stream: Y4mStream,
    layout: PackedLayout,
    planar: Vec<u8>,
    frames_written: u64,
}

impl<W: Write> Y4mWriter<W> {
    /// Checks `stream` and writes its header to `out`.
    pub fn new(mut out: W, stream: Y4mStream) -> Result<Self, Y4mError> {
        let bad = |reason| Y4mError::BadStream { width: stream.width, height: stream.height, reason };
        if stream.width == 0 || stream.height == 0 {
            return Err(bad("width and height must be at least 1"));
        }
        if stream.fps_num == 0 || stream.fps_den == 0 {
            return Err(bad("the frame rate must be a positive fraction"));
        }
        let format = PackedFormat::for_bit_depth(stream.bit_depth)?;
        let layout = PackedLayout::new(stream.width, stream.height, format)?;
        out.write_all(stream.header_line().as_bytes())?;
        Ok(Y4mWriter { out, stream, layout, planar: Vec::with_capacity(layout.total_bytes), frames_written: 0 })
    }

    /// Appends `frame`, which must have the stream's size and bit depth.
    pub fn write_frame(&mut self, frame: &PackedFrame<'_>) -> Result<(), Y4mError> {
        if (frame.width(), frame.height(), frame.bit_depth())
            != (self.stream.width, self.stream.height, self.stream.bit_depth)
        {
            return Err(Y4mError::FrameMismatch {
                index: frame.index(),
                frame_width: frame.width(),
                frame_height: frame.height(),
                frame_depth: frame.bit_depth(),
                width: self.stream.width,
                height: self.stream.height,
                depth: self.stream.bit_depth,
            });
        }
        packed_to_i420(frame, &mut self.planar);
        debug_assert_eq!(self.planar.len(), self.layout.total_bytes);
        self.out.write_all(b"FRAME\n")?;
        self.out.write_all(&self.planar)?;
        self.frames_written += 1;
        Ok(())
    }

    pub fn frames_written(&self) -> u64 {
        self.frames_written
    }

    pub fn stream(&self) -> &Y4mStream {
        &self.stream
    }

    /// Flushes and returns the output.
    pub fn finish(mut self) -> Result<W, Y4mError> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Converts a packed frame to planar I420 as y4m stores it (Y, then U, then V; for P010,
/// u16 LE samples shifted down to the low 10 bits), replacing the contents of `planar`.
/// The result has the same length as the packed frame.
pub fn packed_to_i420(frame: &PackedFrame<'_>, planar: &mut Vec<u8>) {
    let layout = frame.layout();
    planar.clear();
    planar.reserve(layout.total_bytes);
    let chroma_width = layout.chroma_width();
    match layout.format {
        PackedFormat::Nv12 => {
            planar.extend_from_slice(frame.luma_plane());
            let uv_rows = frame.chroma_plane().chunks_exact(layout.chroma_row_bytes);
            for row in uv_rows.clone() {
                planar.extend(row.iter().step_by(2).take(chroma_width));
            }
            for row in uv_rows {
                planar.extend(row.iter().skip(1).step_by(2).take(chroma_width));
            }
        }
        PackedFormat::P010Le => {
            // The low 6 bits of P010 are zero for 10-bit content; shifting drops them.
            let push_shifted = |planar: &mut Vec<u8>, sample: &[u8]| {
                let value = u16::from_le_bytes([sample[0], sample[1]]) >> 6;
                planar.extend_from_slice(&value.to_le_bytes());
            };
            for sample in frame.luma_plane().chunks_exact(2) {
                push_shifted(planar, sample);
            }
            let uv_rows = frame.chroma_plane().chunks_exact(layout.chroma_row_bytes);
            for row in uv_rows.clone() {
                for sample in row.chunks_exact(4) {
                    push_shifted(planar, &sample[..2]);
                }
            }
            for row in uv_rows {
                for sample in row.chunks_exact(4) {
                    push_shifted(planar, &sample[2..]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(width: u32, height: u32, bit_depth: u8) -> Y4mStream {
        Y4mStream {
            width,
            height,
            bit_depth,
            fps_num: 30,
            fps_den: 1,
            sample_aspect: Some((1, 1)),
            chroma_siting: ChromaSiting::Unspecified,
            full_range: Some(false),
        }
    }

    #[test]
    fn header_lines_match_ffmpeg() {
        // Written by ffmpeg 5.1 for a 3x3 lavfi `color` source (`-f yuv4mpegpipe`).
        assert_eq!(
            stream(3, 3, 8).header_line(),
            "YUV4MPEG2 W3 H3 F30:1 Ip A1:1 C420jpeg XYSCSS=420JPEG XCOLORRANGE=LIMITED\n"
        );
        assert_eq!(
            stream(3, 3, 10).header_line(),
            "YUV4MPEG2 W3 H3 F30:1 Ip A1:1 C420p10 XYSCSS=420P10 XCOLORRANGE=LIMITED\n"
        );
        // An x264 clip: left chroma siting, range not signalled.
        let h264 = Y4mStream { chroma_siting: ChromaSiting::Left, full_range: None, ..stream(256, 128, 8) };
        assert_eq!(h264.header_line(), "YUV4MPEG2 W256 H128 F30:1 Ip A1:1 C420mpeg2 XYSCSS=420MPEG2\n");
        let odd = Y4mStream {
            fps_num: 30000,
            fps_den: 1001,
            sample_aspect: None,
            chroma_siting: ChromaSiting::TopLeft,
            full_range: Some(true),
            ..stream(7, 5, 8)
        };
        assert_eq!(
            odd.header_line(),
            "YUV4MPEG2 W7 H5 F30000:1001 Ip A0:0 C420paldv XYSCSS=420PALDV XCOLORRANGE=FULL\n"
        );
    }

    #[test]
    fn nv12_3x3_to_i420() {
        // Y 3x3 = 1..=9; UV plane 2 rows of (U V U V): ceil(3/2) = 2 pairs per row.
        let packed = [
            1, 2, 3, 4, 5, 6, 7, 8, 9, // Y
            10, 20, 11, 21, // UV row 0
            12, 22, 13, 23, // UV row 1
        ];
        let frame = PackedFrame::new(3, 3, 8, 0, 0, &packed).expect("3x3 nv12");
        let mut out = Vec::new();
        let mut w = Y4mWriter::new(&mut out, stream(3, 3, 8)).expect("writer");
        w.write_frame(&frame).expect("frame");
        w.write_frame(&frame).expect("frame");
        assert_eq!(w.frames_written(), 2);
        w.finish().expect("flush");
        let header = b"YUV4MPEG2 W3 H3 F30:1 Ip A1:1 C420jpeg XYSCSS=420JPEG XCOLORRANGE=LIMITED\n";
        let frame_bytes: &[u8] = &[
            b'F', b'R', b'A', b'M', b'E', b'\n', //
            1, 2, 3, 4, 5, 6, 7, 8, 9, // Y
            10, 11, 12, 13, // U 2x2
            20, 21, 22, 23, // V 2x2
        ];
        let expected: Vec<u8> = [&header[..], frame_bytes, frame_bytes].concat();
        assert_eq!(out, expected);
    }

    #[test]
    fn p010_4x2_to_i420_low_bits() {
        // 10-bit values v stored as v << 6; y4m wants v itself in the low bits.
        let y: [u16; 8] = [0, 1, 2, 3, 64, 512, 1022, 1023];
        let uv: [u16; 4] = [100, 900, 101, 901]; // one row of (U V U V)
        let mut packed = Vec::new();
        for v in y.iter().chain(uv.iter()) {
            packed.extend_from_slice(&(v << 6).to_le_bytes());
        }
        let frame = PackedFrame::new(4, 2, 10, 0, 0, &packed).expect("4x2 p010");
        let mut planar = Vec::new();
        packed_to_i420(&frame, &mut planar);
        let expected: Vec<u8> = [
            0x00, 0x00, 0x01, 0x00, 0x02, 0x00, 0x03, 0x00, // Y row 0
            0x40, 0x00, 0x00, 0x02, 0xFE, 0x03, 0xFF, 0x03, // Y row 1
            0x64, 0x00, 0x65, 0x00, // U: 100, 101
            0x84, 0x03, 0x85, 0x03, // V: 900, 901
        ]
        .to_vec();
        assert_eq!(planar, expected);
    }

    #[test]
    fn p010_odd_size_keeps_every_chroma_sample() {
        // 3x3 P010: chroma 2x2 per plane, rows of 2 pairs = 8 bytes.
        let layout = PackedLayout::new(3, 3, PackedFormat::P010Le).expect("layout");
        let packed: Vec<u8> = (0..layout.total_bytes / 2).flat_map(|i| ((i as u16) << 6).to_le_bytes()).collect();
        let frame = PackedFrame::new(3, 3, 10, 0, 0, &packed).expect("3x3 p010");
        let mut planar = Vec::new();
        packed_to_i420(&frame, &mut planar);
        let samples: Vec<u16> = planar.chunks_exact(2).map(|s| u16::from_le_bytes([s[0], s[1]])).collect();
        // Y 0..=8, then the UV rows (9 10 11 12) and (13 14 15 16) split into
        // U = 9, 11, 13, 15 and V = 10, 12, 14, 16.
        assert_eq!(samples, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 13, 15, 10, 12, 14, 16]);
    }

    #[test]
    fn mismatched_frames_and_streams_are_errors() {
        let packed = [0u8; 12];
        let frame = PackedFrame::new(4, 2, 8, 0, 5, &packed).expect("4x2 nv12");
        let mut w = Y4mWriter::new(Vec::new(), stream(3, 3, 8)).expect("writer");
        let err = w.write_frame(&frame).expect_err("size mismatch");
        assert_eq!(err.to_string(), "frame 5 is 4x2 8-bit but the y4m stream is 3x3 8-bit");
        assert!(matches!(Y4mWriter::new(Vec::new(), stream(0, 2, 8)), Err(Y4mError::BadStream { .. })));
        assert!(matches!(
            Y4mWriter::new(Vec::new(), stream(2, 2, 12)),
            Err(Y4mError::Frame(PackedFrameError::UnsupportedBitDepth { bit_depth: 12 }))
        ));
        let no_rate = Y4mStream { fps_den: 0, ..stream(2, 2, 8) };
        assert!(Y4mWriter::new(Vec::new(), no_rate).is_err());
    }
}

//! Per-frame MD5 lines in ffmpeg's `-f framemd5` format (version 2), so that our decoder's
//! output can be compared line by line, or by the hash column alone, with
//! `ffmpeg -i CLIP -map 0:v:0 -pix_fmt nv12|p010le -f framemd5 -` (see tools/make-clips.sh,
//! which commits such goldens under tests/data/clips/framemd5/; for 10-bit clips it hashes
//! the decoder's planar frames repacked to P010 itself, because ffmpeg 5.1's swscale zeroes
//! the last chroma pair of odd-width p010le rows).
//!
//! ffmpeg 5.1 (libavformat/hashenc.c, framehash_write_packet) prints each frame as
//! `"%d, %10"PRId64", %10"PRId64", %8"PRId64", %8d, "` of stream index, dts, pts, duration and
//! size, then the lowercase hex MD5 of the packet, which for video decoded to rawvideo is the
//! packed frame exactly as [`crate::video::packed_frame`] lays it out. Packets with side data
//! get `, S=N, size, hash…` appended; decoded rawvideo has none, and the parser ignores it.
//! Timestamps are in the output stream's time base (the `#tb` header line); for rawvideo
//! ffmpeg makes that 1/frame-rate, so pts counts frames rather than container ticks.

use md5::{Digest, Md5};

/// One `-f framemd5` frame line, without the newline. Equal inputs give byte-identical text to
/// ffmpeg's.
pub fn framemd5_line(stream_index: u32, dts: i64, pts: i64, duration: i64, bytes: &[u8]) -> String {
    let digest = Md5::digest(bytes);
    let mut hex = String::with_capacity(32);
    for byte in digest.iter() {
        hex.push_str(&format!("{byte:02x}"));
    }
    format!("{stream_index}, {dts:>10}, {pts:>10}, {duration:>8}, {size:>8}, {hex}", size = bytes.len())
}

/// The facts ffmpeg's framemd5 header states about one video stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameMd5Stream {
    pub stream_index: u32,
    /// Time base of the dts/pts/duration columns (ffmpeg: 1/frame rate for rawvideo).
    pub time_base: (u32, u32),
    pub width: u32,
    pub height: u32,
    /// Sample aspect ratio; ffmpeg prints `0/1` when unknown.
    pub sample_aspect: (u32, u32),
}

/// The header ffmpeg 5.1 writes before the frame lines for one rawvideo stream with
/// `-fflags +bitexact` (without it ffmpeg adds `#software: Lavf…` after `#hash`), each line
/// ending in a newline.
pub fn framemd5_header(stream: &FrameMd5Stream) -> String {
    let i = stream.stream_index;
    format!(
        "#format: frame checksums\n\
         #version: 2\n\
         #hash: MD5\n\
         #tb {i}: {}/{}\n\
         #media_type {i}: video\n\
         #codec_id {i}: rawvideo\n\
         #dimensions {i}: {}x{}\n\
         #sar {i}: {}/{}\n\
         #stream#, dts,        pts, duration,     size, hash\n",
        stream.time_base.0,
        stream.time_base.1,
        stream.width,
        stream.height,
        stream.sample_aspect.0,
        stream.sample_aspect.1,
    )
}

/// One parsed frame line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameMd5 {
    pub stream: u32,
    pub dts: i64,
    pub pts: i64,
    pub duration: i64,
    /// Bytes hashed (the packed frame size).
    pub size: u64,
    /// Lowercase hex MD5, 32 characters.
    pub md5: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("framemd5 line {line}: {reason}: {text:?}")]
pub struct FrameMd5ParseError {
    /// 1-based line number.
    pub line: usize,
    pub reason: &'static str,
    pub text: String,
}

/// Parses the frame lines of ffmpeg `-f framemd5` output (`#` header lines and blank lines are
/// skipped). Fields after the hash (packet side data) are ignored.
pub fn parse_framemd5(text: &str) -> Result<Vec<FrameMd5>, FrameMd5ParseError> {
    let mut frames = Vec::new();
    for (line_index, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let err = |reason| FrameMd5ParseError { line: line_index + 1, reason, text: line.to_string() };
        let mut fields = trimmed.split(',').map(str::trim);
        let mut next = |what| fields.next().ok_or_else(|| err(what));
        let stream = next("missing stream index")?;
        let dts = next("missing dts")?;
        let pts = next("missing pts")?;
        let duration = next("missing duration")?;
        let size = next("missing size")?;
        let md5 = next("missing hash")?;
        let frame = FrameMd5 {
            stream: stream.parse().map_err(|_| err("bad stream index"))?,
            dts: dts.parse().map_err(|_| err("bad dts"))?,
            pts: pts.parse().map_err(|_| err("bad pts"))?,
            duration: duration.parse().map_err(|_| err("bad duration"))?,
            size: size.parse().map_err(|_| err("bad size"))?,
            md5: md5.to_string(),
        };
        let is_md5 =
            frame.md5.len() == 32 && frame.md5.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !is_md5 {
            return Err(err("the hash is not 32 lowercase hex digits"));
        }
        frames.push(frame);
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_matches_ffmpeg_formatting() {
        // MD5 of the empty input and of "abc" (RFC 1321 test suite).
        assert_eq!(
            framemd5_line(0, 0, 0, 1, b""),
            "0,          0,          0,        1,        0, d41d8cd98f00b204e9800998ecf8427e"
        );
        assert_eq!(
            framemd5_line(1, -2, 123456, 512, b"abc"),
            "1,         -2,     123456,      512,        3, 900150983cd24fb0d6963f7d28e17f72"
        );
        // Wider than the column: printf's width is a minimum, never a truncation.
        assert_eq!(
            framemd5_line(0, 12345678901, 12345678901, 123456789, b"abc"),
            "0, 12345678901, 12345678901, 123456789,        3, 900150983cd24fb0d6963f7d28e17f72"
        );
    }

    #[test]
    fn header_matches_ffmpeg_bitexact() {
        let header = framemd5_header(&FrameMd5Stream {
            stream_index: 0,
            time_base: (1, 30),
            width: 318,
            height: 158,
            sample_aspect: (1, 1),
        });
        assert_eq!(
            header,
            "#format: frame checksums\n#version: 2\n#hash: MD5\n#tb 0: 1/30\n\
             #media_type 0: video\n#codec_id 0: rawvideo\n#dimensions 0: 318x158\n#sar 0: 1/1\n\
             #stream#, dts,        pts, duration,     size, hash\n"
        );
    }

    #[test]
    fn parses_our_own_lines_and_side_data_tails() {
        let text = format!(
            "#format: frame checksums\n{}\n\n{}, S=1,        8, 0123456789abcdef0123456789abcdef\n",
            framemd5_line(0, -1, 2, 1, b"abc"),
            framemd5_line(0, 0, 3, 1, b""),
        );
        let frames = parse_framemd5(&text).expect("parses");
        assert_eq!(
            frames,
            vec![
                FrameMd5 {
                    stream: 0,
                    dts: -1,
                    pts: 2,
                    duration: 1,
                    size: 3,
                    md5: "900150983cd24fb0d6963f7d28e17f72".into()
                },
                FrameMd5 {
                    stream: 0,
                    dts: 0,
                    pts: 3,
                    duration: 1,
                    size: 0,
                    md5: "d41d8cd98f00b204e9800998ecf8427e".into()
                },
            ]
        );
    }

    #[test]
    fn rejects_malformed_lines() {
        let e = parse_framemd5("#tb 0: 1/30\n0, 0, 0, 1\n").expect_err("short");
        assert_eq!((e.line, e.reason), (2, "missing size"));
        let e = parse_framemd5("0, x, 0, 1, 3, 900150983cd24fb0d6963f7d28e17f72").expect_err("dts");
        assert_eq!(e.reason, "bad dts");
        let e = parse_framemd5("0, 0, 0, 1, 3, 900150983CD24FB0D6963F7D28E17F72").expect_err("hex");
        assert_eq!(e.reason, "the hash is not 32 lowercase hex digits");
    }
}

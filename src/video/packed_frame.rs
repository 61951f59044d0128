//! A decoded frame as the decoder hands it to the host: one **packed** buffer, NV12 for 8-bit
//! sources and P010LE for 10-bit ones, laid out exactly as ffmpeg lays out `-pix_fmt nv12` /
//! `-pix_fmt p010le` frames for `-f rawvideo` and `-f framemd5`.
//!
//! ffmpeg fills those buffers with `av_image_fill_arrays(.., align = 1)` (via
//! `av_image_copy_to_buffer`), which for the two semi-planar 4:2:0 formats means:
//!
//! | plane | offset | row bytes (= stride) | rows |
//! | --- | --- | --- | --- |
//! | Y | 0 | `width × s` | `height` |
//! | UV interleaved | `width × height × s` | `ceil(width / 2) × 2 × s` | `ceil(height / 2)` |
//!
//! with `s` = 1 byte per sample for NV12 and 2 for P010LE. There is no padding between rows or
//! planes. For odd widths the chroma row is one byte (sample) *wider* than the luma row: the
//! last chroma pair covers a single luma column (3×3 NV12 is 9 + 2 × 4 = 17 bytes, checked
//! against ffmpeg 5.1 in the tests below).
//!
//! P010LE holds each sample as a little-endian u16 with the 10 significant bits in bits 15..6
//! and zeros below; NVDEC's `cudaVideoSurfaceFormat_P016` output for 10-bit streams is the same
//! bytes, so the GPU path can copy its surface rows straight into this layout.

/// The packed pixel formats the decoder delivers, chosen by the stream's bit depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PackedFormat {
    /// 8-bit 4:2:0: Y plane, then interleaved U/V bytes.
    Nv12,
    /// 10-bit 4:2:0 in 16-bit little-endian containers, value in the high 10 bits.
    P010Le,
}

impl PackedFormat {
    /// The format the decoder delivers for a stream of `bit_depth` bits: NV12 for 8, P010LE
    /// for 10. Other depths have no agreed host layout yet (12-bit would need P016 with
    /// ffmpeg's `p016le`/`p012le` naming and a different y4m shift), so they are an error.
    pub fn for_bit_depth(bit_depth: u8) -> Result<Self, PackedFrameError> {
        match bit_depth {
            8 => Ok(PackedFormat::Nv12),
            10 => Ok(PackedFormat::P010Le),
            other => Err(PackedFrameError::UnsupportedBitDepth { bit_depth: other }),
        }
    }

    /// Bytes per stored sample: 1 for NV12, 2 for P010LE.
    pub fn bytes_per_sample(self) -> usize {
        match self {
            PackedFormat::Nv12 => 1,
            PackedFormat::P010Le => 2,
        }
    }

    /// Significant bits per sample.
    pub fn bit_depth(self) -> u8 {
        match self {
            PackedFormat::Nv12 => 8,
            PackedFormat::P010Le => 10,
        }
    }

    /// ffmpeg's `-pix_fmt` name for this layout (`nv12`, `p010le`).
    pub fn ffmpeg_pix_fmt(self) -> &'static str {
        match self {
            PackedFormat::Nv12 => "nv12",
            PackedFormat::P010Le => "p010le",
        }
    }
}

/// Where each plane of a packed frame lies, in bytes. See the module docs for the formulas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackedLayout {
    pub format: PackedFormat,
    pub width: u32,
    pub height: u32,
    /// Bytes per luma row (`width × bytes_per_sample`); the Y plane starts at offset 0.
    pub luma_row_bytes: usize,
    /// Offset of the interleaved UV plane (`luma_row_bytes × height`).
    pub chroma_offset: usize,
    /// Bytes per UV row (`ceil(width / 2) × 2 × bytes_per_sample`).
    pub chroma_row_bytes: usize,
    /// UV rows (`ceil(height / 2)`).
    pub chroma_rows: usize,
    /// Total bytes of the frame: `chroma_offset + chroma_row_bytes × chroma_rows`.
    pub total_bytes: usize,
}

impl PackedLayout {
    /// The layout of a `width × height` frame in `format`. Fails only when the frame would not
    /// fit in the address space (no real video comes near).
    pub fn new(width: u32, height: u32, format: PackedFormat) -> Result<Self, PackedFrameError> {
        let too_large = || PackedFrameError::TooLarge { width, height };
        let sample = format.bytes_per_sample();
        let w = usize::try_from(width).map_err(|_| too_large())?;
        let h = usize::try_from(height).map_err(|_| too_large())?;
        let luma_row_bytes = w.checked_mul(sample).ok_or_else(too_large)?;
        let chroma_offset = luma_row_bytes.checked_mul(h).ok_or_else(too_large)?;
        // One U and one V sample per 2×2 luma block, rounded up at odd edges.
        let chroma_row_bytes = w.div_ceil(2).checked_mul(2 * sample).ok_or_else(too_large)?;
        let chroma_rows = h.div_ceil(2);
        let total_bytes = chroma_row_bytes
            .checked_mul(chroma_rows)
            .and_then(|c| c.checked_add(chroma_offset))
            .ok_or_else(too_large)?;
        Ok(PackedLayout {
            format,
            width,
            height,
            luma_row_bytes,
            chroma_offset,
            chroma_row_bytes,
            chroma_rows,
            total_bytes,
        })
    }

    /// Chroma samples per row of each of U and V (`ceil(width / 2)`).
    pub fn chroma_width(&self) -> usize {
        self.chroma_row_bytes / (2 * self.format.bytes_per_sample())
    }
}

/// Exact byte size of a packed NV12 (`bit_depth` 8) or P010LE (`bit_depth` > 8) frame of
/// `width × height`, as ffmpeg's `av_image_get_buffer_size(fmt, w, h, 1)` computes it:
/// `w·h·s + ceil(w/2)·2·s·ceil(h/2)` with `s` bytes per sample. Sizes too large for the
/// address space give `usize::MAX`, which no buffer can match.
pub fn packed_frame_bytes(width: u32, height: u32, bit_depth: u8) -> usize {
    let format = if bit_depth <= 8 { PackedFormat::Nv12 } else { PackedFormat::P010Le };
    PackedLayout::new(width, height, format).map_or(usize::MAX, |l| l.total_bytes)
}

/// Errors describing a packed frame that does not match what it claims to be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackedFrameError {
    #[error("unsupported bit depth {bit_depth} for a packed frame (vrseg hands on 8-bit NV12 and 10-bit P010 frames)")]
    UnsupportedBitDepth { bit_depth: u8 },
    #[error("a {width}x{height} frame is too large to address")]
    TooLarge { width: u32, height: u32 },
    #[error("frame {index}: {width}x{height} {format} needs {expected} bytes, but the buffer has {actual}")]
    WrongSize { index: u64, width: u32, height: u32, format: &'static str, expected: usize, actual: usize },
    #[error("frame {index}: the frame is empty ({width}x{height})")]
    Empty { index: u64, width: u32, height: u32 },
}

/// One decoded frame in host memory, borrowed from the decoder's output buffer, with its size
/// checked against [`PackedLayout`] on construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackedFrame<'a> {
    layout: PackedLayout,
    pts: i64,
    index: u64,
    bytes: &'a [u8],
}

impl<'a> PackedFrame<'a> {
    /// Wraps `bytes` as frame number `index` (presentation order, from 0) with presentation
    /// time `pts` (in whatever time base the caller uses; carried, never interpreted here).
    /// Fails unless `bytes.len()` is exactly [`packed_frame_bytes`]`(width, height, bit_depth)`
    /// and `bit_depth` is 8 or 10.
    pub fn new(
        width: u32,
        height: u32,
        bit_depth: u8,
        pts: i64,
        index: u64,
        bytes: &'a [u8],
    ) -> Result<Self, PackedFrameError> {
        if width == 0 || height == 0 {
            return Err(PackedFrameError::Empty { index, width, height });
        }
        let format = PackedFormat::for_bit_depth(bit_depth)?;
        let layout = PackedLayout::new(width, height, format)?;
        if bytes.len() != layout.total_bytes {
            return Err(PackedFrameError::WrongSize {
                index,
                width,
                height,
                format: format.ffmpeg_pix_fmt(),
                expected: layout.total_bytes,
                actual: bytes.len(),
            });
        }
        Ok(PackedFrame { layout, pts, index, bytes })
    }

    pub fn width(&self) -> u32 {
        self.layout.width
    }

    pub fn height(&self) -> u32 {
        self.layout.height
    }

    pub fn bit_depth(&self) -> u8 {
        self.layout.format.bit_depth()
    }

    pub fn format(&self) -> PackedFormat {
        self.layout.format
    }

    pub fn layout(&self) -> &PackedLayout {
        &self.layout
    }

    pub fn pts(&self) -> i64 {
        self.pts
    }

    pub fn index(&self) -> u64 {
        self.index
    }

    /// The whole packed buffer (what `-f framemd5` hashes).
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The Y plane: `height` rows of `luma_row_bytes`.
    pub fn luma_plane(&self) -> &'a [u8] {
        // In bounds: the constructor checked bytes.len() == total_bytes >= chroma_offset.
        &self.bytes[..self.layout.chroma_offset]
    }

    /// The interleaved UV plane: `chroma_rows` rows of `chroma_row_bytes`.
    pub fn chroma_plane(&self) -> &'a [u8] {
        &self.bytes[self.layout.chroma_offset..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_ffmpeg_for_odd_and_even_sizes() {
        // (w, h, nv12 bytes, p010le bytes), measured with ffmpeg 5.1:
        // `ffmpeg -f lavfi -i color=size=8x8 -vf scale=W:H -frames:v 1 -pix_fmt nv12 -f rawvideo - | wc -c`
        for (w, h, nv12, p010) in [
            (3, 3, 17, 34),
            (5, 3, 27, 54),
            (4, 2, 12, 24),
            (7, 5, 59, 118),
            (256, 128, 49152, 98304),
            (318, 158, 75366, 150732),
        ] {
            assert_eq!(packed_frame_bytes(w, h, 8), nv12, "{w}x{h} nv12");
            assert_eq!(packed_frame_bytes(w, h, 10), p010, "{w}x{h} p010le");
        }
        assert_eq!(packed_frame_bytes(1, 1, 8), 3);
        assert_eq!(packed_frame_bytes(0, 0, 8), 0);
        assert_eq!(packed_frame_bytes(u32::MAX, u32::MAX, 10), usize::MAX);
    }

    #[test]
    fn layout_offsets_for_an_odd_frame() {
        let l = PackedLayout::new(5, 3, PackedFormat::P010Le).expect("layout");
        assert_eq!(l.luma_row_bytes, 10);
        assert_eq!(l.chroma_offset, 30);
        assert_eq!(l.chroma_row_bytes, 12);
        assert_eq!(l.chroma_rows, 2);
        assert_eq!(l.chroma_width(), 3);
        assert_eq!(l.total_bytes, 54);
    }

    #[test]
    fn frame_checks_its_size_and_depth() {
        let buf = [0u8; 17];
        let f = PackedFrame::new(3, 3, 8, 7, 2, &buf).expect("3x3 nv12");
        assert_eq!(f.luma_plane().len(), 9);
        assert_eq!(f.chroma_plane().len(), 8);
        assert_eq!((f.pts(), f.index(), f.bit_depth()), (7, 2, 8));
        assert_eq!(
            PackedFrame::new(3, 3, 10, 0, 4, &buf),
            Err(PackedFrameError::WrongSize {
                index: 4,
                width: 3,
                height: 3,
                format: "p010le",
                expected: 34,
                actual: 17
            })
        );
        assert_eq!(
            PackedFrame::new(3, 3, 12, 0, 0, &buf),
            Err(PackedFrameError::UnsupportedBitDepth { bit_depth: 12 })
        );
        assert!(matches!(PackedFrame::new(0, 3, 8, 0, 0, &[]), Err(PackedFrameError::Empty { .. })));
    }
}

//! `--output masks`: one 8-bit gray PNG per frame (the whole SBS/TB matte), named
//! `PREFIX` + the frame number zero-padded (`frame_000000.png`, counting from 0 in output
//! order) in a directory. Each file is written as `NAME.png.partial` and renamed when
//! complete, so an interrupted run leaves only whole PNGs under their final names.
//!
//! Frames in device memory are copied to the host first (inherent to writing images).
//! Compression is `png::Compression::Fast` (fdeflate): mattes are mostly flat and compress
//! well at that level, and an 8K frame must not take longer to write than to compute.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use crate::video::encode::host::HostFrame;
use crate::video::encode::{EncodeError, InputFrame, PixelFormat};

/// Why a mask image could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PngError {
    #[error("{path}: cannot write the mask image: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: cannot encode the mask image: {reason}")]
    Encode { path: PathBuf, reason: String },
    #[error("{0}")]
    Frame(#[from] EncodeError),
}

/// Writes mask frames as numbered PNGs; see the module docs.
#[derive(Debug)]
pub struct MaskPngWriter {
    dir: PathBuf,
    prefix: String,
    digits: usize,
    width: u32,
    height: u32,
    host: HostFrame,
    written: u64,
}

impl MaskPngWriter {
    /// Creates `dir` if needed. `expected_frames` sets the zero padding (at least 6 digits,
    /// more when the count needs them), so names sort in frame order.
    pub fn create(dir: &Path, prefix: &str, width: u32, height: u32, expected_frames: u64) -> Result<Self, PngError> {
        std::fs::create_dir_all(dir).map_err(|source| PngError::Io { path: dir.to_path_buf(), source })?;
        let digits = expected_frames.saturating_sub(1).to_string().len().max(6);
        Ok(MaskPngWriter {
            dir: dir.to_path_buf(),
            prefix: prefix.to_string(),
            digits,
            width,
            height,
            host: HostFrame::new(width, height, PixelFormat::Gray8),
            written: 0,
        })
    }

    /// The path frame `index` is written to.
    pub fn path_of(&self, index: u64) -> PathBuf {
        self.dir.join(format!("{}{:0width$}.png", self.prefix, index, width = self.digits))
    }

    /// Frames written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Bytes copied from device memory so far.
    pub fn bytes_from_device(&self) -> u64 {
        self.host.bytes_from_device()
    }

    /// Writes the next frame (gray, or the luma rows of an NV12 slot) and returns its path.
    pub fn write(&mut self, frame: &InputFrame) -> Result<PathBuf, PngError> {
        let index = self.written;
        let path = self.path_of(index);
        let mut temp = path.clone().into_os_string();
        temp.push(".partial");
        let temp = PathBuf::from(temp);
        let pixels = self.host.fill(frame, index)?;
        let io = |source| PngError::Io { path: path.clone(), source };
        let file = File::create(&temp).map_err(io)?;
        let result = (|| -> Result<(), PngError> {
            let mut encoder = png::Encoder::new(BufWriter::new(file), self.width, self.height);
            encoder.set_color(png::ColorType::Grayscale);
            encoder.set_depth(png::BitDepth::Eight);
            encoder.set_compression(png::Compression::Fast);
            let encode = |e: png::EncodingError| PngError::Encode { path: path.clone(), reason: e.to_string() };
            let mut writer = encoder.write_header().map_err(encode)?;
            writer.write_image_data(pixels).map_err(encode)?;
            writer.finish().map_err(encode)?;
            Ok(())
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&temp);
            return Err(e);
        }
        std::fs::rename(&temp, &path).map_err(|source| {
            let _ = std::fs::remove_file(&temp);
            PngError::Io { path: path.clone(), source }
        })?;
        self.written += 1;
        Ok(path)
    }
}

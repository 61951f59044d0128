//! Frames that must leave the GPU (the ffmpeg fallback, PNG masks): one reusable host
//! buffer, filled by pitched copies from device memory or from host rows.

use crate::gpu::copy::{copy_2d_async, Copy2dTarget};
use crate::gpu::error::CheckDriver;

use super::{nv12_chroma_row_bytes, EncodeError, FrameData, InputFrame, PixelFormat};

/// A packed host copy of one frame (rows of exactly the used width), reused frame after
/// frame: allocated once, never per frame.
#[derive(Debug)]
pub struct HostFrame {
    width: u32,
    height: u32,
    format: PixelFormat,
    buf: Vec<u8>,
    bytes_from_device: u64,
}

impl HostFrame {
    pub fn new(width: u32, height: u32, format: PixelFormat) -> HostFrame {
        HostFrame { width, height, format, buf: vec![0; format.packed_bytes(width, height)], bytes_from_device: 0 }
    }

    /// Bytes copied from device memory so far (for the run's statistics).
    pub fn bytes_from_device(&self) -> u64 {
        self.bytes_from_device
    }

    /// Packs `frame` (frame number `index`, for messages) into the buffer and returns it.
    /// A device frame is copied on its stream, which is then synchronised: when this returns
    /// the device memory is no longer read.
    pub fn fill(&mut self, frame: &InputFrame, index: u64) -> Result<&[u8], EncodeError> {
        let (w, h) = (self.width as usize, self.height as usize);
        let luma = w * h;
        let chroma_row = nv12_chroma_row_bytes(self.width);
        let chroma_rows = h.div_ceil(2);
        let widest = match self.format {
            PixelFormat::Gray8 => w,
            PixelFormat::Nv12 => chroma_row.max(w),
        };
        let bad = |reason: String| EncodeError::BadFrame { frame: index, reason };
        match frame.data {
            FrameData::Host { data, pitch } => {
                if pitch < widest {
                    return Err(bad(format!("row pitch {pitch} is narrower than the frame's {widest} bytes")));
                }
                let rows = match self.format {
                    PixelFormat::Gray8 => h,
                    PixelFormat::Nv12 => h + chroma_rows,
                };
                let need = (rows - 1) * pitch + if self.format == PixelFormat::Nv12 { chroma_row } else { w };
                if data.len() < need {
                    return Err(bad(format!("{} bytes given, the frame needs {need}", data.len())));
                }
                for y in 0..h {
                    self.buf[y * w..(y + 1) * w].copy_from_slice(&data[y * pitch..y * pitch + w]);
                }
                if self.format == PixelFormat::Nv12 {
                    for y in 0..chroma_rows {
                        let src = (h + y) * pitch;
                        let dst = luma + y * chroma_row;
                        self.buf[dst..dst + chroma_row].copy_from_slice(&data[src..src + chroma_row]);
                    }
                }
            }
            FrameData::Device { ptr, pitch, stream } => {
                if pitch < widest {
                    return Err(bad(format!("row pitch {pitch} is narrower than the frame's {widest} bytes")));
                }
                stream.context().bind_to_thread().check("cuCtxSetCurrent")?;
                let context = || format!("frame {index} to the host");
                // SAFETY: the caller's frame holds `h` luma rows (and for NV12 `chroma_rows`
                // chroma rows after them) of `pitch` bytes at `ptr` (the FrameData contract);
                // the destination is this buffer, borrowed mutably until the synchronise
                // below, with room for the packed rows (sized at construction).
                unsafe {
                    copy_2d_async(
                        stream,
                        ptr,
                        pitch,
                        Copy2dTarget::Host { ptr: self.buf.as_mut_ptr(), pitch: w },
                        w,
                        h,
                        context,
                    )?;
                    if self.format == PixelFormat::Nv12 {
                        copy_2d_async(
                            stream,
                            ptr + (h * pitch) as u64,
                            pitch,
                            Copy2dTarget::Host { ptr: self.buf.as_mut_ptr().add(luma), pitch: chroma_row },
                            chroma_row,
                            chroma_rows,
                            context,
                        )?;
                    }
                }
                stream
                    .synchronize()
                    .check_with("cuStreamSynchronize", || format!("copying frame {index} to the host"))?;
                self.bytes_from_device += self.buf.len() as u64;
            }
        }
        Ok(&self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_frames_are_packed_row_by_row() {
        // 3 x 3 NV12 with pitch 5: luma rows of 3, chroma rows of 4 (2 * ceil(3/2)), 2 of them.
        let mut data = vec![0u8; 5 * 5];
        for (i, b) in data.iter_mut().enumerate() {
            *b = i as u8;
        }
        let mut f = HostFrame::new(3, 3, PixelFormat::Nv12);
        let packed = f.fill(&InputFrame { data: FrameData::Host { data: &data, pitch: 5 }, pts: 0 }, 0).unwrap();
        assert_eq!(packed, [0, 1, 2, 5, 6, 7, 10, 11, 12, 15, 16, 17, 18, 20, 21, 22, 23]);
        let mut g = HostFrame::new(3, 2, PixelFormat::Gray8);
        let packed = g.fill(&InputFrame { data: FrameData::Host { data: &data, pitch: 5 }, pts: 0 }, 0).unwrap();
        assert_eq!(packed, [0, 1, 2, 5, 6, 7]);
        let err = g.fill(&InputFrame { data: FrameData::Host { data: &data[..7], pitch: 5 }, pts: 0 }, 4).unwrap_err();
        assert!(err.to_string().starts_with("frame 4: 7 bytes given"), "{err}");
        let err = g.fill(&InputFrame { data: FrameData::Host { data: &data, pitch: 2 }, pts: 0 }, 4).unwrap_err();
        assert!(err.to_string().contains("narrower"), "{err}");
    }
}

//! Whole-file decode: demux → NVDEC → a VRAM pool slot per frame, handed to a
//! sink. The sink sees each frame once, in presentation order; with
//! [`HostCopy::Packed`] it also gets the frame packed on the host (for
//! `vrseg decode`, which the user asked to write frames out).

use std::path::Path;

use cudarc::driver::CudaStream;

use super::chunk::StreamInfo;
use super::demux::{DemuxError, Demuxer};
use super::nvdec::{FrameLayout, NvDecoder, NvdecError, PictureStatus};
use super::parallel::{self, NvdecParallelReport, ParallelError, ParallelOptions, SlotFrame};
use crate::gpu::copy::{copy_2d_async, Copy2dTarget};
use crate::gpu::error::CheckDriver;
use crate::gpu::nvtx::{self, Stage};
use crate::gpu::{DeviceView, Gpu, GpuError, PoolPlan, VramPool};

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(transparent)]
    Demux(#[from] DemuxError),
    #[error(transparent)]
    Nvdec(#[from] NvdecError),
    #[error(transparent)]
    Gpu(#[from] GpuError),
    #[error(transparent)]
    Parallel(#[from] ParallelError),
    #[error(
        "{path}: NVDEC returned {decoded} frames but the file has {expected} video samples; the stream is probably damaged"
    )]
    FrameCountMismatch { path: String, decoded: u64, expected: u64 },
}

/// Whether the sink wants the frame's pixels on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostCopy {
    None,
    /// NV12 / P010 rows without padding, exactly the bytes ffmpeg hashes.
    Packed,
}

/// One decoded frame as the sink sees it.
pub struct DecodedFrame<'a> {
    pub index: u64,
    pub pts: i64,
    pub status: PictureStatus,
    pub layout: FrameLayout,
    /// The frame in its pool slot.
    pub device: DeviceView<'a>,
    /// The packed host copy, when asked for.
    pub packed: Option<&'a [u8]>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DecodeSummary {
    pub frames: u64,
    pub concealed: Vec<u64>,
    pub failed: Vec<u64>,
    pub layout: FrameLayout,
    /// NVDEC sessions that decoded the file (1: the plain single-session path).
    pub decoders: usize,
    /// Why fewer sessions ran than were asked for, when so.
    pub decoders_note: Option<String>,
    /// The parallel decode's report (chunks, window, surfaces), when `decoders > 1`.
    pub parallel: Option<NvdecParallelReport>,
}

/// Copies a frame from its slot into `dst`, packed (no row padding).
pub fn download_packed(
    stream: &CudaStream,
    src: &DeviceView,
    layout: &FrameLayout,
    dst: &mut [u8],
) -> Result<(), GpuError> {
    let packed = layout.packed_bytes();
    if dst.len() < packed {
        return Err(GpuError::BufferTooSmall {
            buffer: "host frame".into(),
            have: dst.len(),
            need: packed,
            op: "packed download",
        });
    }
    if src.bytes() < layout.slot_bytes() {
        return Err(GpuError::BufferTooSmall {
            buffer: src.name().into(),
            have: src.bytes(),
            need: layout.slot_bytes(),
            op: "packed download",
        });
    }
    let luma_bytes = layout.luma_row_bytes() * layout.height as usize;
    let planes = [
        (src.ptr(), 0usize, layout.luma_row_bytes(), layout.height as usize),
        (
            src.ptr() + layout.chroma_offset as u64,
            luma_bytes,
            layout.chroma_row_bytes(),
            layout.chroma_height() as usize,
        ),
    ];
    stream.context().bind_to_thread().check("cuCtxSetCurrent")?;
    for (src_ptr, dst_offset, row_bytes, rows) in planes {
        let target = Copy2dTarget::Host { ptr: dst[dst_offset..].as_mut_ptr(), pitch: row_bytes };
        // SAFETY: source rows lie inside the slot (size checked above); the
        // host destination holds `rows * row_bytes` bytes from `dst_offset`
        // (checked above) and stays borrowed until the sync below.
        unsafe { copy_2d_async(stream, src_ptr, layout.pitch, target, row_bytes, rows, || "frame to host".into()) }?;
    }
    stream.synchronize().check("cuStreamSynchronize")
}

/// Decodes `path` on `gpu`, calling `sink` once per frame in presentation
/// order. Device memory: one pool of two frame slots, reserved before the
/// first chunk; nothing is allocated per frame (the host buffer for packed
/// copies is allocated once too).
pub fn decode_file(
    gpu: &Gpu,
    path: &Path,
    host: HostCopy,
    sink: &mut dyn FnMut(&StreamInfo, DecodedFrame) -> Result<(), String>,
) -> Result<DecodeSummary, DecodeError> {
    let label = path.display().to_string();
    let mut demuxer = Demuxer::open(path)?;
    let info = demuxer.info().clone();
    let stream = gpu.new_priority_stream()?;
    let mut decoder = NvDecoder::new(gpu, stream.clone(), &info, &label)?;
    let layout = decoder.layout();

    let mut plan = PoolPlan::new();
    let slots = plan.slots("decode.frames", layout.slot_bytes(), 2);
    let pool = VramPool::reserve(gpu, &plan)?;
    let ring = pool.slot_ring(slots)?;
    let mut host_frame = match host {
        HostCopy::Packed => vec![0u8; layout.packed_bytes()],
        HostCopy::None => Vec::new(),
    };

    let mut deliver = |picture: &super::nvdec::MappedPicture| -> Result<(), NvdecError> {
        let _range = nvtx::range(Stage::Decode);
        picture.expect_layout(&layout, &label)?;
        let slot = ring.acquire(&stream)?;
        let view = slot.view();
        picture.copy_to(&view)?;
        let packed = match host {
            HostCopy::Packed => {
                download_packed(&stream, &view, &layout, &mut host_frame)?;
                Some(&host_frame[..])
            }
            HostCopy::None => None,
        };
        let frame = DecodedFrame {
            index: picture.index,
            pts: picture.pts,
            status: picture.status,
            layout,
            device: view,
            packed,
        };
        let sunk = sink(&info, frame);
        slot.release(&stream)?;
        sunk.map_err(|reason| NvdecError::Output { label: label.clone(), frame: picture.index, reason })
    };

    while let Some(chunk) = {
        let _range = nvtx::range(Stage::Demux);
        demuxer.next_chunk()?
    } {
        decoder.decode(&chunk, &mut deliver)?;
    }
    decoder.flush(&mut deliver)?;

    let report = decoder.report().clone();
    if report.frames != info.frame_count {
        return Err(DecodeError::FrameCountMismatch {
            path: label,
            decoded: report.frames,
            expected: info.frame_count,
        });
    }
    Ok(DecodeSummary {
        frames: report.frames,
        concealed: report.concealed,
        failed: report.failed,
        layout,
        decoders: 1,
        decoders_note: None,
        parallel: None,
    })
}

/// [`decode_file`] on several NVDEC sessions ([`parallel`]): `options.decoders`
/// sessions (None: one per NVDEC engine), a reorder window of `options.window`
/// frames (None: the default within a quarter of the GPU's memory). The sink
/// sees the same frames in the same order as with [`decode_file`]; a frame's
/// `index` is its presentation rank. With one session, or a file that cannot
/// be split, this is [`decode_file`] (the summary's note says why).
pub fn decode_file_parallel(
    gpu: &Gpu,
    path: &Path,
    options: &ParallelOptions,
    host: HostCopy,
    sink: &mut dyn FnMut(&StreamInfo, DecodedFrame) -> Result<(), String>,
) -> Result<DecodeSummary, DecodeError> {
    let label = path.display().to_string();
    let demuxer = Demuxer::open(path)?;
    let info = demuxer.info().clone();
    let engines = parallel::nvdec_engines(gpu, &info)?;
    let layout = FrameLayout::new(info.width, info.height, info.bit_depth);
    let budget = parallel::default_window_budget(gpu)?;
    let setup = parallel::setup(&demuxer, options, engines, (None, None), layout.slot_bytes(), budget)?;
    if setup.decoders == 1 {
        drop(demuxer);
        let mut summary = decode_file(gpu, path, host, sink)?;
        summary.decoders_note = setup.note;
        return Ok(summary);
    }

    // The window's slots, plus one the consumer holds and one to spare.
    let mut plan = PoolPlan::new();
    let slots = plan.slots("decode.frames (reorder window)", layout.slot_bytes(), setup.window + 2);
    let pool = VramPool::reserve(gpu, &plan)?;
    let ring = pool.slot_ring(slots)?;
    // The consumer's stream: downloads, and the release of each slot.
    let stream = gpu.new_stream()?;
    let mut host_frame = match host {
        HostCopy::Packed => vec![0u8; layout.packed_bytes()],
        HostCopy::None => Vec::new(),
    };
    let mut frames = 0u64;
    let mut consume = |rank: u64, frame: SlotFrame| -> Result<(), ParallelError> {
        let view = frame.slot.view();
        let packed = match host {
            HostCopy::Packed => {
                download_packed(&stream, &view, &layout, &mut host_frame)?;
                Some(&host_frame[..])
            }
            HostCopy::None => None,
        };
        let decoded = DecodedFrame { index: rank, pts: frame.pts, status: frame.status, layout, device: view, packed };
        let sunk = sink(&info, decoded);
        frame.slot.release(&stream)?;
        frames += 1;
        sunk.map_err(|reason| NvdecError::Output { label: label.clone(), frame: rank, reason }.into())
    };
    let report = parallel::decode_into_ring(gpu, &demuxer, &setup, &ring, &|| false, &mut consume, &mut || {})?;
    if frames != info.frame_count {
        return Err(DecodeError::FrameCountMismatch { path: label, decoded: frames, expected: info.frame_count });
    }
    Ok(DecodeSummary {
        frames,
        concealed: report.sessions.concealed.clone(),
        failed: report.sessions.failed.clone(),
        layout,
        decoders: setup.decoders,
        decoders_note: setup.note,
        parallel: Some(report),
    })
}

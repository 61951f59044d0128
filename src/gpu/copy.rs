//! Pitched 2D copies (`cuMemcpy2DAsync`) out of device memory: decoded
//! surfaces into pool slots, and pool slots into packed host frames.

use cudarc::driver::{sys, CudaStream};

use super::error::{CheckDriver, GpuError};

/// Where the rows of a 2D copy go.
#[derive(Debug, Clone, Copy)]
pub enum Copy2dTarget {
    Device { ptr: sys::CUdeviceptr, pitch: usize },
    Host { ptr: *mut u8, pitch: usize },
}

/// Enqueues a copy of `rows` rows of `row_bytes` bytes from device memory at
/// `src` (row stride `src_pitch`) to `dst`. `context` names the copy in errors.
///
/// # Safety
/// `src` must hold `rows` rows of `src_pitch` bytes (the last may be
/// `row_bytes` long) for as long as the copy runs, and `dst` must hold
/// `rows` rows of its pitch likewise and stay valid (a host buffer: stay
/// borrowed) until the stream has passed this copy.
pub unsafe fn copy_2d_async(
    stream: &CudaStream,
    src: sys::CUdeviceptr,
    src_pitch: usize,
    dst: Copy2dTarget,
    row_bytes: usize,
    rows: usize,
    context: impl FnOnce() -> String,
) -> Result<(), GpuError> {
    let (dst_type, dst_host, dst_device, dst_pitch) = match dst {
        Copy2dTarget::Device { ptr, pitch } => {
            (sys::CUmemorytype::CU_MEMORYTYPE_DEVICE, std::ptr::null_mut(), ptr, pitch)
        }
        Copy2dTarget::Host { ptr, pitch } => (sys::CUmemorytype::CU_MEMORYTYPE_HOST, ptr.cast(), 0, pitch),
    };
    let copy = sys::CUDA_MEMCPY2D {
        srcXInBytes: 0,
        srcY: 0,
        srcMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
        srcHost: std::ptr::null(),
        srcDevice: src,
        srcArray: std::ptr::null_mut(),
        srcPitch: src_pitch,
        dstXInBytes: 0,
        dstY: 0,
        dstMemoryType: dst_type,
        dstHost: dst_host,
        dstDevice: dst_device,
        dstArray: std::ptr::null_mut(),
        dstPitch: dst_pitch,
        WidthInBytes: row_bytes,
        Height: rows,
    };
    // SAFETY: the caller guarantees both ranges (see above); the descriptor
    // lives for the call, which reads it before returning.
    unsafe { sys::cuMemcpy2DAsync_v2(&copy, stream.cu_stream()) }.result().check_with("cuMemcpy2DAsync", context)
}

//! FP16 <-> FP32 conversion of a dense tensor, for engines whose I/O types
//! differ from the pipeline's: the letterbox writes FP16 and the YOLO-seg
//! postprocess reads FP32, while a TensorRT engine from an Ultralytics ONNX
//! may take FP32 input or give FP16 outputs. It launches the native engine's
//! `tensor_map` kernel (`kernels/engine_ops.cu`, a strided element map that
//! loads either type and stores either, rounding to nearest even into FP16)
//! as a plain copy over one flat dimension, rather than a second kernel that
//! would do the same.

use cudarc::driver::{CudaStream, PushKernelArg};

use crate::engine::backend::DType;
use crate::engine::native::kernels::{MapParams, TensorRef, MAP_COPY};
use crate::gpu::error::CheckDriver;
use crate::gpu::launch::grid_stride;
use crate::gpu::{DeviceView, Gpu, GpuError, Kernel};

const OP: &str = "convert_elements";

/// One conversion: the first `count` elements of `src` (of `src_type`) into
/// the first `count` of `dst` (of `dst_type`).
#[derive(Debug, Clone, Copy)]
pub struct ConvertJob<'a, 'pool> {
    pub src: &'a DeviceView<'pool>,
    pub src_type: DType,
    pub dst: &'a DeviceView<'pool>,
    pub dst_type: DType,
    pub count: usize,
}

fn invalid(reason: String) -> GpuError {
    GpuError::InvalidLaunch { kernel: OP, reason }
}

/// Fails unless `view` holds `count` elements of `dtype`, aligned for it.
fn require(view: &DeviceView<'_>, dtype: DType, count: usize) -> Result<(), GpuError> {
    match dtype {
        DType::F16 => view.require::<u16>(count, OP),
        DType::F32 => view.require::<f32>(count, OP),
    }
}

impl ConvertJob<'_, '_> {
    /// Sizes, alignment, the kernel's 32-bit dimension, and no overlap (the
    /// kernel reads and writes in no set order, so a conversion in place
    /// would read elements it has already overwritten).
    pub fn validate(&self) -> Result<(), GpuError> {
        require(self.src, self.src_type, self.count)?;
        require(self.dst, self.dst_type, self.count)?;
        if self.count > i32::MAX as usize {
            return Err(invalid(format!("{} elements; the kernel takes at most {}", self.count, i32::MAX)));
        }
        let span = |v: &DeviceView<'_>, t: DType| v.ptr()..v.ptr() + (self.count * t.bytes()) as u64;
        let (s, d) = (span(self.src, self.src_type), span(self.dst, self.dst_type));
        if self.count > 0 && s.start < d.end && d.start < s.end {
            return Err(invalid(format!(
                "source `{}` [{:#x}, {:#x}) and destination `{}` [{:#x}, {:#x}) overlap",
                self.src.name(),
                s.start,
                s.end,
                self.dst.name(),
                d.start,
                d.end
            )));
        }
        Ok(())
    }
}

/// Enqueues the conversion on `stream` (validated first; nothing to do for
/// `count` 0).
pub fn convert_elements(gpu: &Gpu, stream: &CudaStream, job: &ConvertJob<'_, '_>) -> Result<(), GpuError> {
    job.validate()?;
    if job.count == 0 {
        return Ok(());
    }
    let flat = [job.count];
    let params = MapParams {
        out: TensorRef::new(job.dst.ptr(), job.dst_type, &flat, 1),
        input: TensorRef::new(job.src.ptr(), job.src_type, &flat, 1),
        div: [1; 4],
        op: MAP_COPY,
        run: 1,
    };
    let kernel = Kernel::TensorMap;
    let function = gpu.kernels().function(gpu.context(), kernel)?;
    let config = grid_stride(gpu, job.count as u64);
    // SAFETY: `params` mirrors the kernel's `MapParams` (size-checked in
    // engine::native::kernels); both views hold `count` elements of their
    // types, aligned, and do not overlap (`validate`); they live in a pool
    // that synchronises before it frees.
    unsafe { stream.launch_builder(function).arg(&params).launch(config) }.check_with("cuLaunchKernel", || {
        format!("{} ({OP}) `{}` -> `{}`", kernel.symbol(), job.src.name(), job.dst.name())
    })?;
    Ok(())
}

/// CPU reference: `count` little-endian elements of `src_type` in `src`,
/// converted to `dst_type` (FP32 -> FP16 rounds to nearest even, overflow
/// gives infinity, as `__float2half_rn`).
pub fn convert_reference(src: &[u8], src_type: DType, dst_type: DType, count: usize) -> Vec<u8> {
    let value = |i: usize| -> f32 {
        match src_type {
            DType::F16 => half::f16::from_le_bytes([src[2 * i], src[2 * i + 1]]).to_f32(),
            DType::F32 => f32::from_le_bytes(src[4 * i..4 * i + 4].try_into().expect("4 bytes")),
        }
    };
    let mut out = Vec::with_capacity(count * dst_type.bytes());
    for i in 0..count {
        match dst_type {
            DType::F16 => out.extend_from_slice(&half::f16::from_f32(value(i)).to_le_bytes()),
            DType::F32 => out.extend_from_slice(&value(i).to_le_bytes()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_rounds_to_nearest_even_and_overflows_to_infinity() {
        let src: Vec<u8> = [1.0f32, 1.0 + 1.0 / 2048.0, 1.0 + 3.0 / 2048.0, 70_000.0, -2.5e-6]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let halves = convert_reference(&src, DType::F32, DType::F16, 5);
        let got: Vec<f32> = halves.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect();
        // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: even is 1.
        assert_eq!(&got[..4], &[1.0, 1.0, 1.0 + 2.0 / 1024.0, f32::INFINITY]);
        assert!(got[4] < 0.0 && (got[4] + 2.5e-6).abs() < 6e-8, "a subnormal FP16: {}", got[4]);
        let back = convert_reference(&halves, DType::F16, DType::F32, 5);
        assert_eq!(&back[..4], &1.0f32.to_le_bytes());
    }
}

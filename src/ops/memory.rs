//! Launchers for `kernels/memory.cu`: fills (poisoning outputs, clearing
//! slots) and the hash pattern that pool and kernel tests use to tell
//! buffers apart.

use cudarc::driver::{CudaStream, DeviceRepr, PushKernelArg};

use crate::gpu::error::CheckDriver;
use crate::gpu::launch::grid_stride;
use crate::gpu::{DeviceView, Gpu, GpuError, Kernel};

/// Element types the fill kernels exist for.
pub trait FillElement: DeviceRepr + bytemuck::Pod + Copy {
    const KERNEL: Kernel;
}

impl FillElement for u8 {
    const KERNEL: Kernel = Kernel::FillU8;
}
impl FillElement for u16 {
    const KERNEL: Kernel = Kernel::FillU16;
}
impl FillElement for u32 {
    const KERNEL: Kernel = Kernel::FillU32;
}

/// Sets the first `count` elements of `dst` to `value`, enqueued on `stream`.
pub fn fill<T: FillElement>(
    gpu: &Gpu,
    stream: &CudaStream,
    dst: &DeviceView,
    count: usize,
    value: T,
) -> Result<(), GpuError> {
    dst.require::<T>(count, T::KERNEL.symbol())?;
    if count == 0 {
        return Ok(());
    }
    let function = gpu.kernels().function(gpu.context(), T::KERNEL)?;
    let config = grid_stride(gpu, count as u64);
    let (ptr, count) = (dst.ptr(), count as u64);
    // SAFETY: the arguments match `fill_*(T* dst, uint64_t count, T value)`;
    // `dst` holds at least `count` elements of T and is T-aligned (checked by
    // `require`), and lives in the pool, which outlives the enqueued work
    // because VramPool::drop synchronises before freeing.
    unsafe { stream.launch_builder(function).arg(&ptr).arg(&count).arg(&value).launch(config) }
        .check_with("cuLaunchKernel", || format!("{} on `{}`", T::KERNEL.symbol(), dst.name()))?;
    Ok(())
}

/// Writes `pattern_word(seed, i)` to element `i` of the first `count` u32s of `dst`.
pub fn pattern_u32(gpu: &Gpu, stream: &CudaStream, dst: &DeviceView, count: usize, seed: u32) -> Result<(), GpuError> {
    let kernel = Kernel::PatternU32;
    dst.require::<u32>(count, kernel.symbol())?;
    if count == 0 {
        return Ok(());
    }
    let function = gpu.kernels().function(gpu.context(), kernel)?;
    let config = grid_stride(gpu, count as u64);
    let (ptr, count) = (dst.ptr(), count as u64);
    // SAFETY: the arguments match `pattern_u32(uint32_t* dst, uint64_t count,
    // uint32_t seed)`; `dst` holds `count` aligned u32s (checked by `require`).
    unsafe { stream.launch_builder(function).arg(&ptr).arg(&count).arg(&seed).launch(config) }
        .check_with("cuLaunchKernel", || format!("{} on `{}`", kernel.symbol(), dst.name()))?;
    Ok(())
}

/// CPU twin of `vrseg::hash_u32` in kernels/common.cuh (lowbias32).
pub fn hash_u32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// CPU reference of `pattern_u32`: the word at index `i`. The index is taken
/// modulo 2^32, as the kernel does.
pub fn pattern_word(seed: u32, i: usize) -> u32 {
    hash_u32(seed.wrapping_add(i as u32))
}

/// CPU reference of `pattern_u32` over a whole buffer.
pub fn pattern_reference(seed: u32, count: usize) -> Vec<u32> {
    (0..count).map(|i| pattern_word(seed, i)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_a_bijection_fixing_zero_and_pattern_index_wraps() {
        // lowbias32 maps 0 to 0 and is injective; GPU parity tests pin the rest.
        assert_eq!(hash_u32(0), 0);
        let sample: std::collections::HashSet<u32> = (0..100_000u32).map(hash_u32).collect();
        assert_eq!(sample.len(), 100_000);
        assert_eq!(pattern_word(7, 3), hash_u32(10));
        assert_eq!(pattern_word(u32::MAX, 1), hash_u32(0));
    }
}

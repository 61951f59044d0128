// Shared helpers for every kernel family. Kernels are `extern "C"` so that their
// names in the fatbin are the names build.rs turns into the Rust `Kernel` enum.
#pragma once

#include <cstdint>

// Every entry point goes through this macro: unmangled names, and one place to
// add launch-bound hints later.
#define VRSEG_KERNEL extern "C" __global__

namespace vrseg {

// 64-bit global thread index: frames of 8192x4096 and batched tensors exceed
// 2^31 bytes, so 32-bit index arithmetic would wrap.
__device__ __forceinline__ uint64_t global_thread_index() {
    return static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ uint64_t global_thread_count() {
    return static_cast<uint64_t>(gridDim.x) * blockDim.x;
}

// A 32-bit integer hash (lowbias32, Chris Wellons). Used to fill buffers with
// patterns that are cheap to recompute on the CPU, so that tests can tell which
// buffer wrote which bytes. The CPU twin is `ops::memory::pattern_word`.
__host__ __device__ __forceinline__ uint32_t hash_u32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}

// Programmatic dependent launch (sm_90 and later): the native engine
// launches its kernels with programmatic stream serialisation, so a kernel's
// blocks may be scheduled while the kernel before it is still finishing (its
// launch and block set-up hidden behind that kernel's tail). Every such
// kernel calls this first, before touching memory: it returns once the
// kernel before it has completed and its writes are visible, so each kernel
// still runs after every earlier one (by induction), reads what they wrote
// and overwrites nothing they still read. A kernel launched without the
// attribute, or built for an earlier architecture, does not wait here.
__device__ __forceinline__ void wait_for_prior_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

// sigmoid(v) from one exp and one approximate reciprocal (MUFU). An IEEE
// division (what nvcc emits for `1 / (1 + exp(-v))`: a slow-path check and
// call per element) weighed on every conv epilogue. The approximation
// (about 2 ulp) is far below an FP16 output's step; where exp(-v)
// overflows, the reciprocal of infinity is 0, as it should be.
__device__ __forceinline__ float fast_sigmoid(float v) { return __fdividef(1.0f, 1.0f + __expf(-v)); }

}  // namespace vrseg

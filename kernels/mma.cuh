// Tensor-core building blocks shared by the GEMM (linear.cu), the fused
// attention (attention.cu), the engine's convolutions (engine_conv.cu) and
// its FP16 matmul (engine_ops.cu): cp.async copies into shared memory,
// ldmatrix fragment loads and the FP16 mma.sync.m16n8k16 with FP32
// accumulation.
//
// All of these need sm_80 or newer (cp.async, m16n8k16). vrseg ships sm_86,
// sm_89, sm_90 and sm_120 (build.rs); a build for an older architecture
// still compiles, and its kernels trap, while the Rust launchers refuse to
// launch them on such a GPU with a sentence (ops::linear::require_tensor_cores).
//
// Fragment layouts (PTX ISA, "Matrix fragments for mma.m16n8k16"), with
// g = lane / 4 and t = lane % 4:
//   A 16x16 (row-major): a0 (row g, cols 2t..2t+1), a1 (row g+8, same cols),
//                        a2 (row g, cols 2t+8..), a3 (row g+8, cols 2t+8..)
//   B 16x8 (k x n, "col"): b0 (k 2t..2t+1, col g), b1 (k 2t+8.., col g)
//   C 16x8 (f32): c0,c1 (row g, cols 2t, 2t+1), c2,c3 (row g+8, cols 2t, 2t+1)
// ldmatrix.x4 takes the row addresses of four 8x8 matrices from lanes 0-7,
// 8-15, 16-23 and 24-31 and gives each lane (row lane/4, cols 2(lane%4)..+1)
// of each; with .trans, (rows 2(lane%4)..+1, col lane/4).
#pragma once

#include <cuda_fp16.h>
#include <cstdint>

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#define VRSEG_NO_TENSOR_CORES 1
#endif

namespace vrseg {
namespace mma {

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global -> shared copy; with `valid` false it writes 16 zero bytes
// and reads nothing (src-size 0), so tails need no separate path. `src` must
// still be a mapped address: callers pass the tensor's base for invalid rows.
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, bool valid) {
#ifndef VRSEG_NO_TENSOR_CORES
    const int bytes = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes));
#else
    __trap();
#endif
}

__device__ __forceinline__ void cp_async_commit() {
#ifndef VRSEG_NO_TENSOR_CORES
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}

// Waits until at most `N` committed groups of this thread are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#ifndef VRSEG_NO_TENSOR_CORES
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
#ifndef VRSEG_NO_TENSOR_CORES
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
#else
    __trap();
#endif
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
#ifndef VRSEG_NO_TENSOR_CORES
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
#else
    __trap();
#endif
}

// d += a * b, FP16 inputs, FP32 accumulators.
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#ifndef VRSEG_NO_TENSOR_CORES
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
    __trap();
#endif
}

// Two floats as one register of two halves (low half first), rounded to nearest.
__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
}

}  // namespace mma
}  // namespace vrseg

// The small kernels of SAM2's memory-attention stack (src/models/sam2):
// LayerNorm of the FP32 residual stream into FP16, the stack's input
// (curr + 0.1 · curr_pos) and the memory bank's key input (memory + pos).
// The matrix work is in linear.cu and attention.cu.
#include <cuda_fp16.h>

#include "common.cuh"

// y[r, :] = (x[r, :] - mean) / sqrt(var + eps) · gamma + beta, with the biased
// variance (torch.nn.LayerNorm). x FP32 [rows, cols], y FP16 [rows, cols];
// one warp per row, two passes over the row (the second re-reads it from L1/L2:
// mean first, then the centred sum of squares, which loses nothing to
// cancellation). cols is any positive count; 256 (SAM2's width) with
// 16-byte aligned buffers takes a path that keeps the row in registers.
VRSEG_KERNEL void __launch_bounds__(256) layernorm_f32_f16(const float* __restrict__ x,
                                                           const float* __restrict__ gamma,
                                                           const float* __restrict__ beta,
                                                           __half* __restrict__ y,
                                                           int32_t rows,
                                                           int32_t cols,
                                                           float eps) {
    const int row = blockIdx.x * 8 + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;
    const float* xr = x + static_cast<int64_t>(row) * cols;
    __half* yr = y + static_cast<int64_t>(row) * cols;
    const bool aligned =
        ((reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(y) | reinterpret_cast<uintptr_t>(gamma) |
          reinterpret_cast<uintptr_t>(beta)) & 15) == 0;
    if (cols == 256 && aligned) {
        // SAM2's width: 8 values a lane, kept in registers, 16-byte accesses.
        const float4* x4 = reinterpret_cast<const float4*>(xr) + lane * 2;
        const float4 a = x4[0], b = x4[1];
        float v[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
        float sum = 0.f;
#pragma unroll
        for (int i = 0; i < 8; ++i) sum += v[i];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
        const float mean = sum * (1.f / 256.f);
        float sq = 0.f;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            v[i] -= mean;
            sq += v[i] * v[i];
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) sq += __shfl_xor_sync(0xffffffffu, sq, o);
        const float inv_std = rsqrtf(sq * (1.f / 256.f) + eps);
        const float4* g4 = reinterpret_cast<const float4*>(gamma) + lane * 2;
        const float4* b4 = reinterpret_cast<const float4*>(beta) + lane * 2;
        const float4 g0 = g4[0], g1 = g4[1], c0 = b4[0], c1 = b4[1];
        const float gs[8] = {g0.x, g0.y, g0.z, g0.w, g1.x, g1.y, g1.z, g1.w};
        const float bs[8] = {c0.x, c0.y, c0.z, c0.w, c1.x, c1.y, c1.z, c1.w};
        uint32_t packed[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            __half2 h = __floats2half2_rn(v[2 * i] * inv_std * gs[2 * i] + bs[2 * i],
                                          v[2 * i + 1] * inv_std * gs[2 * i + 1] + bs[2 * i + 1]);
            packed[i] = *reinterpret_cast<uint32_t*>(&h);
        }
        reinterpret_cast<uint4*>(yr)[lane] = make_uint4(packed[0], packed[1], packed[2], packed[3]);
        return;
    }
    float sum = 0.f;
    for (int c = lane; c < cols; c += 32) sum += xr[c];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    const float mean = sum / static_cast<float>(cols);
    float sq = 0.f;
    for (int c = lane; c < cols; c += 32) {
        const float d = xr[c] - mean;
        sq += d * d;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) sq += __shfl_xor_sync(0xffffffffu, sq, o);
    const float inv_std = rsqrtf(sq / static_cast<float>(cols) + eps);
    for (int c = lane; c < cols; c += 32) yr[c] = __float2half_rn((xr[c] - mean) * inv_std * gamma[c] + beta[c]);
}

// out = a + alpha · b, FP16 inputs, FP32 output (the stack's residual stream
// starts as curr + 0.1 · curr_pos: MemoryAttention's pos_enc_at_input).
VRSEG_KERNEL void scaled_add_f16_f32(const __half* __restrict__ a,
                                     const __half* __restrict__ b,
                                     float alpha,
                                     float* __restrict__ out,
                                     uint64_t count) {
    for (uint64_t i = vrseg::global_thread_index(); i < count; i += vrseg::global_thread_count()) {
        out[i] = __half2float(a[i]) + alpha * __half2float(b[i]);
    }
}

// out = a + b in FP16 (rounded once from the exact FP32 sum, as an FP16 add
// rounds): the memory bank's key input, memory + memory_pos.
VRSEG_KERNEL void add_f16(const __half* __restrict__ a,
                          const __half* __restrict__ b,
                          __half* __restrict__ out,
                          uint64_t count) {
    for (uint64_t i = vrseg::global_thread_index(); i < count; i += vrseg::global_thread_count()) {
        out[i] = __float2half_rn(__half2float(a[i]) + __half2float(b[i]));
    }
}

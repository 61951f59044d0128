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
// cancellation). cols is any positive count.
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
    __half* yr = y + static_cast<int64_t>(row) * cols;
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

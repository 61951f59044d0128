// The small kernels of SAM2's memory-attention stack (src/models/sam2):
// LayerNorm of the FP32 residual stream into FP16, the stack's input
// (curr + 0.1 · curr_pos), the memory bank's key input (memory + pos) and
// the bank's keys at their frames' current ages (temporal encoding).
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

// The memory bank's keys at the frames' current ages (src/models/sam2/bank.rs):
//
//   keys[l][s·T + p] = keys0[l][s·T + p] + RoPE_p(tkeys[l][age(s) - 1])
//
// for every layer l, valid slot s < valid and token p < T of a side x side
// map. keys0 holds RoPE((memory + spatial pos) W_k + b_k) of each frame,
// projected once at append; tkeys[l][a] = W_k · maskmem_tpos_enc[a] is the
// key of the temporal encoding of age a + 1 (FP32, 256 wide). RoPE is
// linear, so RoPE(x + t) = RoPE(x) + RoPE(t): the sum is the key SAM2 would
// project from memory + spatial pos + temporal pos at the frame's age now.
// age(s) = (newest - s) mod window + 1: the newest slot is 1 frame old.
// The RoPE factors are the linear epilogue's (ops::linear::axial_rope_factors,
// table[position · 64 + frequency] for a head of 256: pairs 0..63 turn with
// the token's column, 64..127 with its row). Grid (ceil(T / 8), valid,
// layers) of 256 threads: a warp per token row, 8 columns a lane (16-byte
// loads and stores); the FP32 sum is rounded to FP16 once.
VRSEG_KERNEL void __launch_bounds__(256) sam2_age_keys(const __half* __restrict__ keys0,
                                                       __half* __restrict__ keys,
                                                       const float* __restrict__ tkeys,
                                                       const float2* __restrict__ rope,
                                                       int32_t window,
                                                       int32_t newest,
                                                       int32_t side,
                                                       int64_t keys0_layer_stride,
                                                       int64_t keys_layer_stride) {
    constexpr int kD = 256, kQuarter = kD / 4;
    const int tokens = side * side;
    const int token = blockIdx.x * 8 + (threadIdx.x >> 5);
    if (token >= tokens) return;
    const int chunk = threadIdx.x & 31;
    const int slot = blockIdx.y;
    const int layer = blockIdx.z;
    const int age = (newest - slot + window) % window + 1;
    const int64_t row = static_cast<int64_t>(slot) * tokens + token;
    const float4* t4 = reinterpret_cast<const float4*>(tkeys + (static_cast<int64_t>(layer) * window + age - 1) * kD) +
                       chunk * 2;
    const float4 ta = t4[0], tb = t4[1];
    const float t[8] = {ta.x, ta.y, ta.z, ta.w, tb.x, tb.y, tb.z, tb.w};
    const uint4 in = *reinterpret_cast<const uint4*>(keys0 + layer * keys0_layer_stride + row * kD + chunk * 8);
    const __half2* k0 = reinterpret_cast<const __half2*>(&in);
    // Pairs chunk·4 .. chunk·4 + 3 all turn with the same coordinate.
    const int pos = chunk * 4 < kQuarter ? token % side : token / side;
    const float2* cs_row = rope + pos * kQuarter + (chunk * 4) % kQuarter;
    uint4 result;
    uint32_t* packed = reinterpret_cast<uint32_t*>(&result);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
        const float2 cs = __ldg(cs_row + e);
        const float2 k = __half22float2(k0[e]);
        const float t0 = t[2 * e], t1 = t[2 * e + 1];
        const __half2 h = __floats2half2_rn(k.x + (t0 * cs.x - t1 * cs.y), k.y + (t0 * cs.y + t1 * cs.x));
        packed[e] = *reinterpret_cast<const uint32_t*>(&h);
    }
    *reinterpret_cast<uint4*>(keys + layer * keys_layer_stride + row * kD + chunk * 8) = result;
}

// What the two convolution families share: the launch parameters, one
// definition for engine_conv.cu (FP16 inputs and weights) and
// engine_conv_f32.cu (FP32); the epilogue's element helpers and
// activations; and the direct NCHW depthwise convolution.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

#include "common.cuh"

namespace vrseg::conv {

// Mirrors `engine::native::kernels::ConvParams` (#[repr(C)], field for
// field). `T` is the element type of the input and the weight: the layout is
// the same for both (pointers). engine_conv_f32.cu leaves the GEMM-packing,
// split-K and NHWC fields unused.
template <typename T>
struct ConvParamsOf {
    const T* x;
    const T* weight;
    const float* bias;
    const void* residual;
    void* y;
    float* partial;  // split-K sums [splits][m_total][batch * oh * ow]
    int64_t x_batch_stride;
    int64_t residual_batch_stride;
    int64_t y_batch_stride;
    // NCHW output: elements from one channel plane to the next (oh * ow, or
    // more where the output is a slice of a concatenation along its last
    // axis: YOLO's per-scale head outputs).
    int64_t y_channel_stride;
    int32_t batch, cin, h, w;
    int32_t cout, oh, ow;
    int32_t kh, kw, sh, sw, dh, dw, pad_t, pad_l;
    int32_t k_total, k_pad, m_total;
    int32_t activation;
    int32_t y_f32, residual_f32;
    int32_t transposed_stride;
    int32_t vector_b;
    int32_t k_split;  // K tiles per split (grid z); 0: no split
    int32_t splits;   // grid z when split
    // NHWC operands (FP16 only): elements from one pixel to the next; 0: NCHW.
    int32_t x_pixel_stride;
    int32_t y_pixel_stride;
    int32_t residual_pixel_stride;
};

// Mirrors `engine::native::kernels::DepthwiseParams`.
template <typename T>
struct DepthwiseParamsOf {
    const T* x;
    const T* weight;  // [channels][kh * kw], or [kh * kw][channels] for NHWC
    const float* bias;
    const void* residual;
    void* y;
    int64_t x_batch_stride;
    int64_t residual_batch_stride;
    int64_t y_batch_stride;
    int32_t batch, channels, h, w;
    int32_t oh, ow;
    int32_t kh, kw, sh, sw, dh, dw, pad_t, pad_l;
    int32_t activation;
    int32_t y_f32, residual_f32;
    // NHWC (conv_depthwise_nhwc): elements from one pixel to the next.
    int32_t x_pixel_stride;
    int32_t y_pixel_stride;
    int32_t residual_pixel_stride;
};

// Element `i` of an FP32 (`is_f32`) or FP16 buffer, as FP32.
__device__ __forceinline__ float load_any(const void* base, int64_t i, int32_t is_f32) {
    return is_f32 ? static_cast<const float*>(base)[i] : __half2float(static_cast<const __half*>(base)[i]);
}
// Stores `v` as element `i` of an FP32 or FP16 (round to nearest) buffer.
__device__ __forceinline__ void store_any(void* base, int64_t i, int32_t is_f32, float v) {
    if (is_f32) {
        static_cast<float*>(base)[i] = v;
    } else {
        static_cast<__half*>(base)[i] = __float2half_rn(v);
    }
}

// `activation` codes (Rust: `steps::activation_code`): 0 none, 1 SiLU,
// 2 sigmoid (YOLO's class scores, pushed into their convs by the build).
// Both share one sigmoid, then differ by a multiply. `activate` (the FP16
// family) takes `fast_sigmoid`, far below an FP16 output's step;
// `activate_exact` (FP32 plans) IEEE expf and division, keeping FP32
// rounding in the epilogue too.
__device__ __forceinline__ float activate(float v, int32_t code) {
    if (code == 0) return v;
    const float sigmoid = vrseg::fast_sigmoid(v);
    return code == 1 ? v * sigmoid : sigmoid;
}
__device__ __forceinline__ float activate_exact(float v, int32_t code) {
    if (code == 0) return v;
    const float sigmoid = 1.0f / (1.0f + expf(-v));
    return code == 1 ? v * sigmoid : sigmoid;
}

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }

// Depthwise convolution (groups == channels, one filter per channel) over
// NCHW values, direct, one thread per output element (grid-stride), then the
// epilogue: + bias, activation (`kExact`: `activate_exact`), + residual.
template <typename T, bool kExact>
__device__ __forceinline__ void depthwise_nchw(const DepthwiseParamsOf<T>& p) {
    const int64_t per_image = static_cast<int64_t>(p.channels) * p.oh * p.ow;
    const int64_t total = per_image * p.batch;
    const int taps = p.kh * p.kw;
    for (int64_t i = vrseg::global_thread_index(); i < total; i += vrseg::global_thread_count()) {
        // 32-bit divisions (every YOLO tensor has fewer than 2^32 elements).
        const uint32_t plane = static_cast<uint32_t>(p.oh * p.ow);
        uint32_t img32, c32, pix32;
        if (total <= 0xffffffffll) {
            const uint32_t j = static_cast<uint32_t>(i);
            const uint32_t q = j / plane;
            pix32 = j - q * plane;
            img32 = q / static_cast<uint32_t>(p.channels);
            c32 = q - img32 * static_cast<uint32_t>(p.channels);
        } else {
            img32 = static_cast<uint32_t>(i / per_image);
            const int64_t rest = i - static_cast<int64_t>(img32) * per_image;
            c32 = static_cast<uint32_t>(rest / plane);
            pix32 = static_cast<uint32_t>(rest - static_cast<int64_t>(c32) * plane);
        }
        const int img = static_cast<int>(img32);
        const int c = static_cast<int>(c32);
        const int pix = static_cast<int>(pix32);
        const int oy = pix / p.ow;
        const int ox = pix - oy * p.ow;
        const T* src = p.x + img * p.x_batch_stride + static_cast<int64_t>(c) * p.h * p.w;
        const T* wc = p.weight + static_cast<int64_t>(c) * taps;
        float v = 0.0f;
        for (int ky = 0; ky < p.kh; ++ky) {
            const int iy = oy * p.sh - p.pad_t + ky * p.dh;
            if (static_cast<unsigned>(iy) >= static_cast<unsigned>(p.h)) continue;
            for (int kx = 0; kx < p.kw; ++kx) {
                const int ix = ox * p.sw - p.pad_l + kx * p.dw;
                if (static_cast<unsigned>(ix) >= static_cast<unsigned>(p.w)) continue;
                v = fmaf(to_float(src[iy * p.w + ix]), to_float(wc[ky * p.kw + kx]), v);
            }
        }
        if (p.bias) v += p.bias[c];
        v = kExact ? activate_exact(v, p.activation) : activate(v, p.activation);
        const int64_t at = static_cast<int64_t>(c) * p.oh * p.ow + pix;
        if (p.residual) v += load_any(p.residual, img * p.residual_batch_stride + at, p.residual_f32);
        store_any(p.y, img * p.y_batch_stride + at, p.y_f32, v);
    }
}

}  // namespace vrseg::conv

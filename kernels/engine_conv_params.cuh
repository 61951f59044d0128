// The convolution families' launch parameters, one definition for
// engine_conv.cu (FP16 inputs and weights) and engine_conv_f32.cu (FP32),
// and the element helpers both epilogues use.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

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

}  // namespace vrseg::conv

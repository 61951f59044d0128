// Native engine: the convolution family of FP32 plans (`vrseg build-engine
// --precision fp32`; src/engine/native/steps.rs launches). FP32 weights in
// ONNX's layout, FP32 activations (NCHW), FP32 arithmetic on the CUDA cores:
// no tensor cores, since TF32 keeps FP16's 10-bit mantissa and the point of
// these plans is to agree with an FP32 framework to FP32 rounding.
//
// conv_f32: convolution (group 1) as an implicit GEMM. GEMM M = output
//   channels, N = output pixels of the whole batch, K = Cin*kh*kw in ONNX
//   order (c, ky, kx), so the weight [M][Cin][kh][kw] is the row-major M x K
//   matrix as it stands. `transposed_stride` s > 0 runs a ConvTranspose
//   whose kernel equals its stride (no padding, the host checks): a 1x1 GEMM
//   over input pixels whose rows (m, i, j) are the weight's [Cin][M][s][s]
//   read column-wise, each scattered to output pixel (s*y + i, s*x + j).
//   64 x 64 output tiles, K in steps of 16 through shared memory, the next
//   step's loads held in registers while this one computes; 256 threads of
//   4 x 4 outputs each. Epilogue as the FP16 kernels': + bias, SiLU or
//   sigmoid (IEEE expf and division here), + residual, stored FP32 or FP16
//   at the output's placement (batch stride: a slice of a channel
//   concatenation; channel stride: of a concatenation along the last axis).
//
// conv_f32_depthwise: groups == channels, direct, one thread per output
//   element, the same epilogue.
#include <cuda_fp16.h>

#include "common.cuh"
#include "engine_conv_params.cuh"

namespace {

using ConvParams = vrseg::conv::ConvParamsOf<float>;
using DepthwiseParams = vrseg::conv::DepthwiseParamsOf<float>;
using vrseg::conv::activate_exact;
using vrseg::conv::load_any;
using vrseg::conv::store_any;

constexpr int kTileM = 64;
constexpr int kTileN = 64;
constexpr int kTileK = 16;
constexpr int kThreads = 256;
// Each thread loads kLoads elements of each operand per K step.
constexpr int kLoads = kTileM * kTileK / kThreads;
static_assert(kTileN * kTileK / kThreads == kLoads, "both operand tiles take the same loads a thread");

}  // namespace

VRSEG_KERNEL void __launch_bounds__(kThreads) conv_f32(ConvParams p) {
    vrseg::wait_for_prior_grid();
    // K-major tiles (a K step's 64 rows or columns contiguous), padded so
    // that the float4 reads stay 16-byte aligned.
    __shared__ __align__(16) float a_tile[kTileK][kTileM + 4];
    __shared__ __align__(16) float b_tile[kTileK][kTileN + 4];

    const int tid = threadIdx.x;
    const int s = p.transposed_stride;
    const int pixels = p.oh * p.ow;
    const int64_t n_total = static_cast<int64_t>(p.batch) * pixels;
    const int m0 = blockIdx.y * kTileM;
    const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kTileN;
    const int taps = p.kh * p.kw;

    // Weight loads. Conv: a row's K is contiguous, so a thread takes kLoads
    // consecutive k of one row. Transposed: a K index's rows are contiguous
    // ([Cin][M*s*s]), so consecutive threads take consecutive rows.
    const int a_row = s == 0 ? tid / (kTileK / kLoads) : tid % kTileM;
    const int a_k = s == 0 ? (tid % (kTileK / kLoads)) * kLoads : (tid / kTileM) * kLoads;
    const int am = m0 + a_row;
    // Input loads: consecutive threads on consecutive pixels (coalesced), a
    // thread's column fixed for the whole K walk.
    const int b_col = tid % kTileN;
    const int b_k = (tid / kTileN) * kLoads;
    const int64_t bn = n0 + b_col;
    const bool b_valid = bn < n_total;
    const int b_img = b_valid ? static_cast<int>(bn / pixels) : 0;
    const int b_pix = b_valid ? static_cast<int>(bn - static_cast<int64_t>(b_img) * pixels) : 0;
    const int b_oy = b_pix / p.ow;
    const int b_ox = b_pix - b_oy * p.ow;
    const float* const x_img = p.x + b_img * p.x_batch_stride;
    const int64_t plane = static_cast<int64_t>(p.h) * p.w;

    float a_next[kLoads];
    float b_next[kLoads];
    auto load_step = [&](int k0) {
#pragma unroll
        for (int q = 0; q < kLoads; ++q) {
            const int k = k0 + a_k + q;
            float v = 0.0f;
            if (am < p.m_total && k < p.k_total) {
                v = s == 0 ? p.weight[static_cast<int64_t>(am) * p.k_total + k]
                           : p.weight[static_cast<int64_t>(k) * p.m_total + am];
            }
            a_next[q] = v;
        }
#pragma unroll
        for (int q = 0; q < kLoads; ++q) {
            const int k = k0 + b_k + q;
            float v = 0.0f;
            if (b_valid && k < p.k_total) {
                const int c = k / taps;
                const int t = k - c * taps;
                const int ky = t / p.kw;
                const int kx = t - ky * p.kw;
                const int iy = b_oy * p.sh - p.pad_t + ky * p.dh;
                const int ix = b_ox * p.sw - p.pad_l + kx * p.dw;
                if (static_cast<unsigned>(iy) < static_cast<unsigned>(p.h) &&
                    static_cast<unsigned>(ix) < static_cast<unsigned>(p.w)) {
                    v = x_img[c * plane + iy * p.w + ix];
                }
            }
            b_next[q] = v;
        }
    };

    // This thread's outputs: rows ty*4 .. +4, columns tx*4 .. +4.
    const int tx = tid % (kTileN / 4);
    const int ty = tid / (kTileN / 4);
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;

    load_step(0);
    for (int k0 = 0; k0 < p.k_total; k0 += kTileK) {
#pragma unroll
        for (int q = 0; q < kLoads; ++q) {
            a_tile[a_k + q][a_row] = a_next[q];
            b_tile[b_k + q][b_col] = b_next[q];
        }
        __syncthreads();
        if (k0 + kTileK < p.k_total) load_step(k0 + kTileK);
#pragma unroll
        for (int kk = 0; kk < kTileK; ++kk) {
            const float4 a = *reinterpret_cast<const float4*>(&a_tile[kk][ty * 4]);
            const float4 b = *reinterpret_cast<const float4*>(&b_tile[kk][tx * 4]);
            const float av[4] = {a.x, a.y, a.z, a.w};
            const float bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
        }
        __syncthreads();
    }

    const int ow_out = s > 0 ? p.ow * s : p.ow;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int m = m0 + ty * 4 + i;
        if (m >= p.m_total) continue;
        // Output channel and, for a transposed conv, the pixel phase (i, j).
        const int channel = s > 0 ? m / (s * s) : m;
        const int phase = s > 0 ? m - channel * s * s : 0;
        const int pi = s > 0 ? phase / s : 0;
        const int pj = s > 0 ? phase - pi * s : 0;
        const float bias = p.bias ? p.bias[channel] : 0.0f;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int64_t gn = n0 + tx * 4 + j;
            if (gn >= n_total) continue;
            const int img = static_cast<int>(gn / pixels);
            const int pix = static_cast<int>(gn - static_cast<int64_t>(img) * pixels);
            int64_t at = pix;  // within the output channel's plane
            if (s > 0) {
                const int y = pix / p.ow;
                const int x = pix - y * p.ow;
                at = static_cast<int64_t>(y * s + pi) * ow_out + x * s + pj;
            }
            float v = activate_exact(acc[i][j] + bias, p.activation);
            if (p.residual) {
                const int64_t plane_out = static_cast<int64_t>(p.oh) * ow_out * (s > 0 ? s : 1);
                v += load_any(p.residual, img * p.residual_batch_stride + channel * plane_out + at, p.residual_f32);
            }
            store_any(p.y, img * p.y_batch_stride + channel * p.y_channel_stride + at, p.y_f32, v);
        }
    }
}

VRSEG_KERNEL void conv_f32_depthwise(DepthwiseParams p) {
    vrseg::wait_for_prior_grid();
    vrseg::conv::depthwise_nchw<float, true>(p);
}

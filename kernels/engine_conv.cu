// Native engine: the convolution family (src/engine/native/steps.rs launches).
//
// conv_igemm_{32,64,128}_{gather,vector,rows,rows2}: convolution as an
//   implicit GEMM on tensor cores.
//   GEMM M = output channels (rows of the packed weight matrix), N = output
//   pixels of the whole batch, K = Cin*kh*kw in ONNX order (c, ky, kx). The
//   weight matrix is packed by `vrseg build-engine` as FP16 [m_pad][k_pad],
//   zero padded to multiples of 128 rows and 32 columns, so weight tiles load
//   without bounds checks. Two shared-memory stages; mma.sync m16n8k16,
//   FP16 in, FP32 accumulate. The input tile (K x 128 pixels) is loaded in
//   one of three ways (`vector_b`, and the kernel name's suffix):
//   0  gather: element by element from NCHW with padding checks;
//   1  vector: 1x1/stride-1/unpadded over planes of a multiple of 8 pixels:
//      its rows are contiguous, 16-byte cp.async loads;
//   2  rows (stride 1 along x), rows2 (stride 2): input rows of a multiple of
//      8 pixels, output rows of a multiple of 16: a thread's 16 output pixels,
//      all in one output row, read one input-row segment as 3 or 5 aligned
//      16-byte loads whose halves are shifted or de-interleaved in registers;
//      padding is whole 8-pixel chunks outside the row.
//   Rows keep the next tile's loads raw in registers during this tile's mma
//   and arrange them only afterwards (see `b_raw`).
//   Epilogue: + bias, SiLU or sigmoid, + residual, stored as FP16 or FP32 at
//   the output's placement (a batch stride lets a conv write straight into its
//   slice of a channel concatenation; an NCHW output's `y_channel_stride`,
//   into its slice of a concatenation along the last axis). `transposed_stride` s > 0 runs a ConvTranspose whose kernel
//   equals its stride (no padding) as the same GEMM over input pixels, with
//   rows (m, i, j) scattered to output pixel (s*y + i, s*x + j).
//   Split-K (`k_split` > 0): block z of the grid runs K tiles
//   [z * k_split, (z + 1) * k_split) and writes its raw FP32 sums to
//   `partial[z][m][n]`; conv_splitk_reduce then adds the splits and applies
//   the epilogue. The host splits GEMMs whose tiles cannot fill the GPU
//   (small images at batch 1), where one block would otherwise walk all of K.
//   Block: 256 threads (2 x 4 warps), tile BM x 128 x 32, warp tile
//   (BM/2) x 32. BM is chosen by the host from the channel count.
//
// conv_igemm_{32,64,128}_nhwc: the same GEMM over an NHWC input: both tiles
//   by 16-byte cp.async (8 channels of a pixel per chunk) through a
//   kNhwcStages-deep pipeline; any geometry. Dynamic shared memory.
//   Every igemm kernel writes NHWC (y_pixel_stride > 0) or NCHW outputs.
//
// conv_wgmma_nhwc_n{48,64,96,128,192,256} (sm_90a builds on Hopper): the
//   NHWC GEMM on warpgroup MMA, 128 pixels by a channel width that fits
//   cout, operands read by the tensor cores from swizzled shared memory
//   (wgmma.cuh); NHWC outputs only. See the kernel.
//   conv_wgmma_nhwc_n128_s3: 128 channels in 3 stages, two blocks an SM
//   (short K).
//
// conv_stem_c{16,32,64,96,128}: a whole K of at most 32 (YOLO's stem, 3
//   channels x 3x3) from an NCHW input to an NHWC output: weights held in
//   registers, 16-pixel mma.sync tiles built from global memory. See the kernel.
//
// conv_splitk_reduce: sums the split-K partials, same epilogue (not for
//   transposed convolutions, which the host never splits).
//
// conv_depthwise: groups == channels (one filter per channel), direct, one
//   thread per output element, same epilogue. conv_depthwise_3x3_row4: the
//   same for 3x3/1 filters, 4 outputs of a row per thread.
//   conv_depthwise_nhwc: NHWC values, 8 channels of a pixel per thread.
#include <cuda_fp16.h>

#include "common.cuh"
#include "engine_conv_params.cuh"
#include "mma.cuh"
#include "wgmma.cuh"

namespace {

namespace wgmma = vrseg::wgmma;

using ConvParams = vrseg::conv::ConvParamsOf<__half>;
using DepthwiseParams = vrseg::conv::DepthwiseParamsOf<__half>;
using vrseg::conv::activate;
using vrseg::conv::load_any;
using vrseg::conv::store_any;

constexpr int kBlockN = 128;
constexpr int kBlockK = 32;
constexpr int kThreads = 256;
constexpr int kPadA = 8;  // halves: 80-byte rows make ldmatrix conflict-free
constexpr int kPadB = 8;  // halves: 272-byte rows, likewise for ldmatrix.trans

__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, int src_bytes) {
    const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::); }
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

// engine_conv's fragment helpers on mma.cuh's (one copy of the asm).
__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const void* smem) {
    vrseg::mma::ldmatrix_x4(*reinterpret_cast<uint32_t(*)[4]>(r), vrseg::mma::smem_addr(smem));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const void* smem) {
    vrseg::mma::ldmatrix_x4_trans(*reinterpret_cast<uint32_t(*)[4]>(r), vrseg::mma::smem_addr(smem));
}
__device__ __forceinline__ void mma_16816(float c[4], const uint32_t a[4], const uint32_t b[2]) {
    vrseg::mma::mma_16816(*reinterpret_cast<float(*)[4]>(c), *reinterpret_cast<const uint32_t(*)[4]>(a), b[0], b[1]);
}

// Eight FP16 values plus eight more (a residual), summed in FP32 and rounded
// once, as the element-by-element epilogue does.
__device__ __forceinline__ uint4 add_halves8(uint4 a, uint4 b) {
    __half2* ah = reinterpret_cast<__half2*>(&a);
    const __half2* bh = reinterpret_cast<const __half2*>(&b);
#pragma unroll
    for (int q = 0; q < 4; ++q) {
        const float2 fa = __half22float2(ah[q]);
        const float2 fb = __half22float2(bh[q]);
        ah[q] = __floats2half2_rn(fa.x + fb.x, fa.y + fb.y);
    }
    return a;
}

// out[q] = in[q + s] for s in 0..3, as two rounds of selects: a register
// array indexed by a run-time value would go to local memory.
template <int N>
__device__ __forceinline__ void shift_words(const uint32_t* in, int s, uint32_t (&out)[N]) {
    uint32_t by2[N + 1];
#pragma unroll
    for (int q = 0; q < N + 1; ++q) by2[q] = (s & 2) ? in[q + 2] : in[q];
#pragma unroll
    for (int q = 0; q < N; ++q) out[q] = (s & 1) ? by2[q + 1] : by2[q];
}

// Writes an NHWC FP16 output from a staged tile: `tile_t` holds act(acc +
// bias) of kCols GEMM columns (pixels) by BM rows (output channels), a
// pixel's channels contiguous in rows of BM + 8 halves. Each pixel's
// channels go out as 16-byte vectors, the residual (NHWC like the output)
// added there. A transposed convolution's rows are (i, j, channel) here
// (tap-major packing), so 8 consecutive rows are 8 channels of one output
// pixel.
template <int BM, int kCols>
__device__ __forceinline__ void store_nhwc_staged(const ConvParams& p, const __half* tile_t, int m0, int64_t n0) {
    constexpr int kStrideT = BM + 8;
    const int tid = threadIdx.x;
    const int s = p.transposed_stride;
    const int pixels = p.oh * p.ow;
    const int64_t n_total = static_cast<int64_t>(p.batch) * pixels;
    const int ow_out = s > 0 ? p.ow * s : p.ow;
    // Element offset of output row m at GEMM column gn.
    auto out_at = [&](int m, int img, int pix) -> int64_t {
        if (s == 0) return static_cast<int64_t>(img) * p.y_batch_stride + static_cast<int64_t>(pix) * p.y_pixel_stride + m;
        const int ij = m / p.cout;
        const int i = ij / s;
        const int j = ij - i * s;
        const int y = pix / p.ow;
        const int x = pix - y * p.ow;
        return static_cast<int64_t>(img) * p.y_batch_stride +
               static_cast<int64_t>((y * s + i) * ow_out + x * s + j) * p.y_pixel_stride + (m - ij * p.cout);
    };
    const bool vec = p.cout % 8 == 0 && p.y_pixel_stride % 8 == 0 && p.y_batch_stride % 8 == 0 &&
                     (reinterpret_cast<uintptr_t>(p.y) & 15) == 0 &&
                     (p.residual == nullptr ||
                      (!p.residual_f32 && p.residual_pixel_stride % 8 == 0 && p.residual_batch_stride % 8 == 0 &&
                       (reinterpret_cast<uintptr_t>(p.residual) & 15) == 0));
    for (int v = tid; v < kCols * (BM / 8); v += kThreads) {
        const int c = v / (BM / 8);
        const int r8 = (v % (BM / 8)) * 8;
        const int m = m0 + r8;
        const int64_t gn = n0 + c;
        if (m >= p.m_total || gn >= n_total) continue;
        const int img = static_cast<int>(gn / pixels);
        const int pix = static_cast<int>(gn - static_cast<int64_t>(img) * pixels);
        if (vec) {
            uint4 packed = *reinterpret_cast<const uint4*>(&tile_t[c * kStrideT + r8]);
            if (p.residual) {
                const uint4 res = *reinterpret_cast<const uint4*>(
                    static_cast<const __half*>(p.residual) + static_cast<int64_t>(img) * p.residual_batch_stride +
                    static_cast<int64_t>(pix) * p.residual_pixel_stride + m);
                packed = add_halves8(packed, res);
            }
            *reinterpret_cast<uint4*>(static_cast<__half*>(p.y) + out_at(m, img, pix)) = packed;
        } else {
            for (int q = 0; q < 8 && m + q < p.m_total; ++q) {
                float out = __half2float(tile_t[c * kStrideT + r8 + q]);
                if (p.residual) {
                    out += load_any(p.residual,
                                    static_cast<int64_t>(img) * p.residual_batch_stride +
                                        static_cast<int64_t>(pix) * p.residual_pixel_stride + m + q,
                                    p.residual_f32);
                }
                static_cast<__half*>(p.y)[out_at(m + q, img, pix)] = __float2half_rn(out);
            }
        }
    }
}

// The epilogue of every implicit-GEMM kernel: this block's BM x 128 tile of
// FP32 sums (`acc`, mma accumulator layout) becomes the output. `smem` (at
// least kSmemBytes, free now) stages FP16 tiles so that global stores are
// 16-byte vectors. Outputs: split-K partial sums; NHWC FP16 (8 channels of
// a pixel per store); NCHW FP16 (8 pixels of a channel per store); FP32 or
// unaligned NCHW element by element.
// Warps: 2 along M times 4 along the 128 columns.
template <int BM, int kSmemBytes>
__device__ __forceinline__ void conv_epilogue(const ConvParams& p,
                                              const float (&acc)[BM / 32][4][4],
                                              unsigned char* smem, int m0, int64_t n0) {
    constexpr int kWarpsN = 4;
    constexpr int kWarpM = BM / 2;
    constexpr int kWarpN = kBlockN / kWarpsN;
    constexpr int kMT = kWarpM / 16;
    constexpr int kNT = kWarpN / 8;
    const int tid = threadIdx.x;
    const int lane = tid & 31;
    const int warp = tid >> 5;
    const int wm = warp / kWarpsN;
    const int wn = warp % kWarpsN;
    const int pixels = p.oh * p.ow;
    const int64_t n_total = static_cast<int64_t>(p.batch) * pixels;
    // Epilogue. Accumulator (mt, nt, e): row g (+8 for e >= 2), column 2t + (e & 1).
    const int g = lane >> 2;
    const int t = lane & 3;
    const int s = p.transposed_stride;

    if (p.k_split > 0) {
        // Raw sums of this split; conv_splitk_reduce applies the epilogue.
        float* part = p.partial + static_cast<int64_t>(blockIdx.z) * p.m_total * n_total;
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
            for (int hi = 0; hi < 2; ++hi) {
                const int m = m0 + wm * kWarpM + mt * 16 + g + hi * 8;
                if (m >= p.m_total) continue;
#pragma unroll
                for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
                    for (int e = 0; e < 2; ++e) {
                        const int64_t gn = n0 + wn * kWarpN + nt * 8 + 2 * t + e;
                        if (gn < n_total) part[static_cast<int64_t>(m) * n_total + gn] = acc[mt][nt][hi * 2 + e];
                    }
            }
        return;
    }

    if (p.y_pixel_stride > 0) {
        // NHWC FP16 output: stage act(acc + bias) transposed, a pixel's BM
        // channels contiguous (rows of BM + 8 halves: conflict-free), for
        // store_nhwc_staged.
        constexpr int kStrideT = BM + 8;
        static_assert(kBlockN * kStrideT * 2 <= kSmemBytes, "the transposed C tile fits the stage buffers");
        __half* tile_t = reinterpret_cast<__half*>(smem);
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
            for (int hi = 0; hi < 2; ++hi) {
                const int r = wm * kWarpM + mt * 16 + g + hi * 8;
                const int m = m0 + r;
                const int channel = s > 0 ? m % p.cout : m;
                const float bias = (p.bias && m < p.m_total) ? p.bias[channel] : 0.0f;
#pragma unroll
                for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
                    for (int e = 0; e < 2; ++e) {
                        float v = acc[mt][nt][hi * 2 + e] + bias;
                        v = activate(v, p.activation);
                        tile_t[(wn * kWarpN + nt * 8 + 2 * t + e) * kStrideT + r] = __float2half_rn(v);
                    }
            }
        __syncthreads();
        store_nhwc_staged<BM, kBlockN>(p, tile_t, m0, n0);
        return;
    }

    if (!p.y_f32 && (s == 0 || BM % s == 0)) {
        // FP16 output: stage act(acc + bias) for the whole tile in shared
        // memory (the pipeline buffers are free now), then write each
        // channel's 128 pixels as 16-byte vectors, adding the residual there
        // (or, for a transposed convolution, interleave the s row phases of
        // each pixel so that consecutive threads write consecutive outputs).
        // Rows of 136 halves keep the fragment stores conflict-free.
        constexpr int kStrideC = kBlockN + 8;
        static_assert(BM * kStrideC * 2 <= kSmemBytes, "the C tile fits the stage buffers");
        __half* tile_c = reinterpret_cast<__half*>(smem);
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
            for (int hi = 0; hi < 2; ++hi) {
                const int r = wm * kWarpM + mt * 16 + g + hi * 8;
                const int m = m0 + r;
                const int channel = s > 0 ? m / (s * s) : m;
                const float bias = (p.bias && m < p.m_total) ? p.bias[channel] : 0.0f;
#pragma unroll
                for (int nt = 0; nt < kNT; ++nt) {
                    float v0 = acc[mt][nt][hi * 2] + bias;
                    float v1 = acc[mt][nt][hi * 2 + 1] + bias;
                    v0 = activate(v0, p.activation);
                    v1 = activate(v1, p.activation);
                    *reinterpret_cast<__half2*>(&tile_c[r * kStrideC + wn * kWarpN + nt * 8 + 2 * t]) =
                        __floats2half2_rn(v0, v1);
                }
            }
        __syncthreads();
        if (s > 0) {
            // Tile rows are (channel, i, j), j fastest; BM and m0 are
            // multiples of s, so row r + j (j < s) are the j phases of one
            // (channel, i).
            const int ow = p.ow * s;
            const int64_t plane_out = static_cast<int64_t>(p.oh * s) * ow;
            if (s == 2 && p.ow % 4 == 0 && p.y_batch_stride % 8 == 0 &&
                (reinterpret_cast<uintptr_t>(p.y) & 15) == 0) {
                // 16-byte stores: 4 input pixels of one row (rows of a
                // multiple of 4 never split a quad) times the 2 phases j give
                // 8 consecutive outputs of output row 2y + i.
                for (int v = tid; v < (BM / 2) * (kBlockN / 4); v += kThreads) {
                    const int r = (v / (kBlockN / 4)) * 2;
                    const int c = (v % (kBlockN / 4)) * 4;
                    const int m = m0 + r;
                    const int64_t gn = n0 + c;
                    if (m >= p.m_total || gn >= n_total) continue;
                    const int img = static_cast<int>(gn / pixels);
                    const int pix = static_cast<int>(gn - static_cast<int64_t>(img) * pixels);
                    const int y = pix / p.ow;
                    const int x = pix - y * p.ow;
                    const int channel = m / 4;
                    const int i = (m / 2) % 2;
                    const __half2* j0 = reinterpret_cast<const __half2*>(&tile_c[r * kStrideC + c]);
                    const __half2* j1 = reinterpret_cast<const __half2*>(&tile_c[(r + 1) * kStrideC + c]);
                    uint4 packed;
                    __half2* out = reinterpret_cast<__half2*>(&packed);
                    out[0] = __lows2half2(j0[0], j1[0]);
                    out[1] = __highs2half2(j0[0], j1[0]);
                    out[2] = __lows2half2(j0[1], j1[1]);
                    out[3] = __highs2half2(j0[1], j1[1]);
                    *reinterpret_cast<uint4*>(static_cast<__half*>(p.y) + static_cast<int64_t>(img) * p.y_batch_stride +
                                              channel * plane_out + (y * 2 + i) * ow + x * 2) = packed;
                }
                return;
            }
            // Any stride: element v walks j, then pixel, then row group.
            for (int v = tid; v < BM * kBlockN; v += kThreads) {
                const int j = v % s;
                const int c = (v / s) % kBlockN;
                const int r = (v / (s * kBlockN)) * s + j;
                const int m = m0 + r;
                const int64_t gn = n0 + c;
                if (m >= p.m_total || gn >= n_total) continue;
                const int img = static_cast<int>(gn / pixels);
                const int pix = static_cast<int>(gn - static_cast<int64_t>(img) * pixels);
                const int y = pix / p.ow;
                const int x = pix - y * p.ow;
                const int channel = m / (s * s);
                const int i = (m / s) % s;
                static_cast<__half*>(p.y)[static_cast<int64_t>(img) * p.y_batch_stride + channel * plane_out +
                                          (y * s + i) * ow + x * s + j] = tile_c[r * kStrideC + c];
            }
            return;
        }
        // 16-byte vectors need 8-pixel groups that never straddle images and
        // aligned bases; otherwise write element by element (still coalesced).
        const bool vec_out = (pixels % 8 == 0) && (p.y_batch_stride % 8 == 0) && (p.y_channel_stride % 8 == 0) &&
                             ((reinterpret_cast<uintptr_t>(p.y) & 15) == 0);
        const bool vec_res = p.residual == nullptr ||
                             (!p.residual_f32 && (p.residual_batch_stride % 8 == 0) &&
                              ((reinterpret_cast<uintptr_t>(p.residual) & 15) == 0));
        if (vec_out && vec_res) {
            for (int v = tid; v < BM * (kBlockN / 8); v += kThreads) {
                const int r = v / (kBlockN / 8);
                const int c8 = (v % (kBlockN / 8)) * 8;
                const int m = m0 + r;
                const int64_t gn = n0 + c8;
                if (m >= p.m_total || gn >= n_total) continue;
                const int img = static_cast<int>(gn / pixels);
                const int pix = static_cast<int>(gn - static_cast<int64_t>(img) * pixels);
                const int64_t at = static_cast<int64_t>(m) * pixels + pix;
                uint4 packed = *reinterpret_cast<const uint4*>(&tile_c[r * kStrideC + c8]);
                if (p.residual) {
                    const uint4 res = *reinterpret_cast<const uint4*>(
                        static_cast<const __half*>(p.residual) + static_cast<int64_t>(img) * p.residual_batch_stride + at);
                    packed = add_halves8(packed, res);
                }
                *reinterpret_cast<uint4*>(static_cast<__half*>(p.y) + static_cast<int64_t>(img) * p.y_batch_stride +
                                          m * p.y_channel_stride + pix) = packed;
            }
        } else {
            for (int v = tid; v < BM * kBlockN; v += kThreads) {
                const int r = v / kBlockN;
                const int c = v % kBlockN;
                const int m = m0 + r;
                const int64_t gn = n0 + c;
                if (m >= p.m_total || gn >= n_total) continue;
                const int img = static_cast<int>(gn / pixels);
                const int pix = static_cast<int>(gn - static_cast<int64_t>(img) * pixels);
                const int64_t at = static_cast<int64_t>(m) * pixels + pix;
                float out = __half2float(tile_c[r * kStrideC + c]);
                if (p.residual) {
                    out += load_any(p.residual, static_cast<int64_t>(img) * p.residual_batch_stride + at, p.residual_f32);
                }
                static_cast<__half*>(p.y)[static_cast<int64_t>(img) * p.y_batch_stride + m * p.y_channel_stride + pix] =
                    __float2half_rn(out);
            }
        }
        return;
    }

    if (s == 0) {
        // FP32 NCHW output (the head's outputs): stage act(acc + bias) 32
        // rows at a time in shared memory (the fragments' scattered 4-byte
        // stores would touch 8 rows' sectors per instruction), then write
        // each row's 128 pixels with consecutive threads on consecutive
        // pixels. Rows of 136 floats keep the float2 fragment stores
        // conflict-free per half-warp.
        constexpr int kRowsStaged = 32;
        constexpr int kStrideF = kBlockN + 8;
        static_assert(kRowsStaged * kStrideF * 4 <= kSmemBytes, "32 staged FP32 rows fit the stage buffers");
        float* const tile_f = reinterpret_cast<float*>(smem);
#pragma unroll
        for (int q = 0; q < BM / kRowsStaged; ++q) {
            if (q > 0) __syncthreads();  // the previous rows' stores have read the tile
#pragma unroll
            for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
                for (int hi = 0; hi < 2; ++hi) {
                    const int r = wm * kWarpM + mt * 16 + g + hi * 8;
                    if (r / kRowsStaged != q) continue;
                    const int m = m0 + r;
                    const float bias = (p.bias && m < p.m_total) ? p.bias[m] : 0.0f;
#pragma unroll
                    for (int nt = 0; nt < kNT; ++nt) {
                        const float2 v = make_float2(activate(acc[mt][nt][hi * 2] + bias, p.activation),
                                                     activate(acc[mt][nt][hi * 2 + 1] + bias, p.activation));
                        *reinterpret_cast<float2*>(&tile_f[(r - q * kRowsStaged) * kStrideF + wn * kWarpN + nt * 8 + 2 * t]) = v;
                    }
                }
            __syncthreads();
            for (int v = tid; v < kRowsStaged * kBlockN; v += kThreads) {
                const int r = v / kBlockN;
                const int c = v % kBlockN;
                const int m = m0 + q * kRowsStaged + r;
                const int64_t gn = n0 + c;
                if (m >= p.m_total || gn >= n_total) continue;
                const int img = static_cast<int>(gn / pixels);
                const int pix = static_cast<int>(gn - static_cast<int64_t>(img) * pixels);
                float out = tile_f[r * kStrideF + c];
                if (p.residual) {
                    out += load_any(p.residual,
                                    static_cast<int64_t>(img) * p.residual_batch_stride + static_cast<int64_t>(m) * pixels + pix,
                                    p.residual_f32);
                }
                store_any(p.y, static_cast<int64_t>(img) * p.y_batch_stride + m * p.y_channel_stride + pix, p.y_f32, out);
            }
        }
        return;
    }

    // Transposed convolutions whose rows (m, i, j) do not tile BM (or FP32
    // ones): scatter straight from the fragments.
    int col_img[kNT][2];
    int col_pix[kNT][2];
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            const int64_t gn = n0 + wn * kWarpN + nt * 8 + 2 * t + e;
            if (gn < n_total) {
                col_img[nt][e] = static_cast<int>(gn / pixels);
                col_pix[nt][e] = static_cast<int>(gn - static_cast<int64_t>(col_img[nt][e]) * pixels);
            } else {
                col_img[nt][e] = -1;
                col_pix[nt][e] = 0;
            }
        }
    const int ss = s * s;
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int hi = 0; hi < 2; ++hi) {
            const int m = m0 + wm * kWarpM + mt * 16 + g + hi * 8;
            if (m >= p.m_total) continue;
            const int channel = m / ss;
            const float bias = p.bias ? p.bias[channel] : 0.0f;
            const int i = (m / s) % s;
            const int j = m % s;
            const int ow = p.ow * s;
#pragma unroll
            for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const int img = col_img[nt][e];
                    if (img < 0) continue;
                    const int pix = col_pix[nt][e];
                    const float v = activate(acc[mt][nt][hi * 2 + e] + bias, p.activation);
                    const int y = pix / p.ow;
                    const int x = pix - y * p.ow;
                    const int64_t out = static_cast<int64_t>(img) * p.y_batch_stride +
                                        static_cast<int64_t>(channel) * (p.oh * s) * ow + (y * s + i) * ow + x * s + j;
                    store_any(p.y, out, p.y_f32, v);
                }
        }
}

// Input-tile loads (`ConvParams::vector_b`), a template argument so that
// each kernel carries only its own load code and registers.
constexpr int kGather = 0;
constexpr int kVector = 1;
constexpr int kRows = 2;   // row segments, stride 1
constexpr int kRows2 = 3;  // row segments, stride 2

template <int BM, int kLoad>
__device__ __forceinline__ void conv_igemm(const ConvParams& p) {
    constexpr int kWarpM = BM / 2;
    constexpr int kMT = kWarpM / 16;
    constexpr int kNT = 4;
    constexpr int kStrideA = kBlockK + kPadA;
    constexpr int kStrideB = kBlockN + kPadB;
    // One block of shared memory: two pipeline stages of the A and B tiles,
    // reused as the output tile by the FP16 epilogue.
    constexpr int kBytesA = 2 * BM * kStrideA * 2;
    constexpr int kBytesB = 2 * kBlockK * kStrideB * 2;
    __shared__ __align__(16) unsigned char smem[kBytesA + kBytesB];
    auto tile_a = reinterpret_cast<__half(*)[BM][kStrideA]>(smem);
    auto tile_b = reinterpret_cast<__half(*)[kBlockK][kStrideB]>(smem + kBytesA);

    const int tid = threadIdx.x;
    const int lane = tid & 31;
    const int warp = tid >> 5;
    const int wm = warp >> 2;
    const int wn = warp & 3;
    const int m0 = blockIdx.y * BM;
    const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kBlockN;
    const int pixels = p.oh * p.ow;  // GEMM columns per image
    const int64_t n_total = static_cast<int64_t>(p.batch) * pixels;
    const int plane = p.h * p.w;
    const int khkw = p.kh * p.kw;
    const int k_tiles = p.k_pad / kBlockK;

    // Gather geometry: this thread loads one K row (b_kr) of 16 consecutive
    // pixel columns (b_seg .. b_seg + 15), so a tile's (c, ky, kx) is fixed
    // per thread, the pixels advance incrementally, and the 16 values go to
    // shared memory as two 16-byte stores.
    const int b_kr = tid >> 3;
    const int b_seg = (tid & 7) * 16;
    const int64_t b_gn0 = n0 + b_seg;
    const bool b_any = b_gn0 < n_total;
    const int b_img0 = b_any ? static_cast<int>(b_gn0 / pixels) : 0;
    const int b_pix0 = b_any ? static_cast<int>(b_gn0 - static_cast<int64_t>(b_img0) * pixels) : 0;
    const int b_oy0 = b_pix0 / p.ow;
    const int b_ox0 = b_pix0 - b_oy0 * p.ow;
    // Columns of this thread's 16 that exist (the last tile is ragged).
    const int b_valid = b_any ? static_cast<int>(n_total - b_gn0 < 16 ? n_total - b_gn0 : 16) : 0;
    // The next K tile's input. Row segments stay raw words until after this
    // tile's mma (store_b_regs), so that no warp waits for its loads before
    // its tensor-core work (shifting them at once stalls it for the whole
    // global-memory latency); the gather packs its halves as they come (16
    // raw halves across the mma cost more in registers than they save: 4.83
    // against 5.25 ms on YOLO11x-seg's 768-channel stride-2 conv, H100).
    constexpr int kRawWords = kLoad == kRows2 ? 20 : kLoad == kRows ? 12 : kLoad == kGather ? 8 : 1;
    uint32_t b_raw[kRawWords];
    int b_shift = 0;  // row segments: halves before the first wanted one (0..7)

    auto load_a = [&](int kt, int buf) {
        for (int i = tid; i < BM * 4; i += kThreads) {
            const int r = i >> 2;
            const int cv = (i & 3) * 8;
            const __half* src = p.weight + static_cast<int64_t>(m0 + r) * p.k_pad + kt * kBlockK + cv;
            cp_async_16(&tile_a[buf][r][cv], src, 16);
        }
    };
    auto load_b_vector = [&](int kt, int buf) {
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            const int v = tid + i * kThreads;
            const int kr = v >> 4;
            const int nv = (v & 15) * 8;
            const int k = kt * kBlockK + kr;
            const int64_t gn = n0 + nv;
            const bool ok = gn < n_total && k < p.k_total;
            const __half* src = p.x;
            if (ok) {
                const int img = static_cast<int>(gn / pixels);
                const int pix = static_cast<int>(gn - static_cast<int64_t>(img) * pixels);
                src = p.x + static_cast<int64_t>(img) * p.x_batch_stride + static_cast<int64_t>(k) * plane + pix;
            }
            cp_async_16(&tile_b[buf][kr][nv], src, ok ? 16 : 0);
        }
    };
    auto load_b_regs = [&](int kt) {
        const int k = kt * kBlockK + b_kr;
        const int c = k / khkw;
        const int r = k - c * khkw;
        const int ky = r / p.kw;
        const int kx = r - ky * p.kw;
        const int dy = ky * p.dh - p.pad_t;
        const int dx = kx * p.dw - p.pad_l;
        if constexpr (kLoad == kRows || kLoad == kRows2) {
            // The host picks these modes only for output rows of whole
            // 16-pixel groups, so this thread's 16 pixels are all in one row
            // of one image, or all past the end (b_valid == 0). Stride 1
            // needs halves shift .. shift + 15 (3 chunks), stride 2 halves
            // shift, shift + 2, .. shift + 30 (5 chunks).
            const int iy = b_oy0 * p.sh + dy;
            const bool row_ok = b_valid != 0 && k < p.k_total && static_cast<unsigned>(iy) < static_cast<unsigned>(p.h);
            const __half* row =
                p.x + static_cast<int64_t>(b_img0) * p.x_batch_stride + static_cast<int64_t>(c) * plane + iy * p.w;
            const int start = b_ox0 * (kLoad == kRows ? 1 : 2) + dx;
            const int base = start & ~7;  // floor to a 16-byte chunk (two's complement: -1 -> -8)
            b_shift = start - base;
            // Chunks are whole 8-pixel groups (w % 8 == 0): in the row or padding.
#pragma unroll
            for (int q = 0; q < kRawWords / 4; ++q) {
                const int e0 = base + 8 * q;
                uint4 v = make_uint4(0u, 0u, 0u, 0u);
                if (row_ok && e0 >= 0 && e0 + 8 <= p.w) v = __ldg(reinterpret_cast<const uint4*>(row + e0));
                b_raw[4 * q] = v.x;
                b_raw[4 * q + 1] = v.y;
                b_raw[4 * q + 2] = v.z;
                b_raw[4 * q + 3] = v.w;
            }
            return;
        }
        if constexpr (kLoad == kGather) {
            const int valid = k < p.k_total ? b_valid : 0;
            const unsigned short* src =
                reinterpret_cast<const unsigned short*>(p.x) + static_cast<int64_t>(b_img0) * p.x_batch_stride +
                static_cast<int64_t>(c) * plane;
            int oy = b_oy0;
            int ox = b_ox0;
#pragma unroll
            for (int j = 0; j < 16; ++j) {
                const int iy = oy * p.sh + dy;
                const int ix = ox * p.sw + dx;
                const bool ok = j < valid && static_cast<unsigned>(iy) < static_cast<unsigned>(p.h) &&
                                static_cast<unsigned>(ix) < static_cast<unsigned>(p.w);
                const uint32_t v = ok ? __ldg(src + iy * p.w + ix) : 0u;
                if (j & 1) {
                    b_raw[j >> 1] |= v << 16;
                } else {
                    b_raw[j >> 1] = v;
                }
                if (++ox == p.ow) {
                    ox = 0;
                    if (++oy == p.oh) {
                        oy = 0;
                        src += p.x_batch_stride;
                    }
                }
            }
        }
    };
    auto store_b_regs = [&](int buf) {
        uint32_t b_regs[8];
        if constexpr (kLoad == kRows) {
            uint32_t w[9];
            shift_words(b_raw, b_shift >> 1, w);
#pragma unroll
            for (int q = 0; q < 8; ++q) b_regs[q] = (b_shift & 1) ? __funnelshift_r(w[q], w[q + 1], 16) : w[q];
        } else if constexpr (kLoad == kRows2) {
            uint32_t w[17];
            shift_words(b_raw, b_shift >> 1, w);
#pragma unroll
            for (int q = 0; q < 8; ++q) b_regs[q] = __byte_perm(w[2 * q], w[2 * q + 1], (b_shift & 1) ? 0x7632 : 0x5410);
        } else {
#pragma unroll
            for (int q = 0; q < 8; ++q) b_regs[q] = b_raw[q];
        }
        uint4* dst = reinterpret_cast<uint4*>(&tile_b[buf][b_kr][b_seg]);
        dst[0] = make_uint4(b_regs[0], b_regs[1], b_regs[2], b_regs[3]);
        dst[1] = make_uint4(b_regs[4], b_regs[5], b_regs[6], b_regs[7]);
    };

    float acc[kMT][kNT][4];
#pragma unroll
    for (int i = 0; i < kMT; ++i)
#pragma unroll
        for (int j = 0; j < kNT; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

    // This block's K tiles (all of them unless split).
    const int kt_begin = p.k_split > 0 ? static_cast<int>(blockIdx.z) * p.k_split : 0;
    const int kt_end = p.k_split > 0 ? min(k_tiles, kt_begin + p.k_split) : k_tiles;
    constexpr bool vector_b = kLoad == kVector;

    load_a(kt_begin, 0);
    if constexpr (vector_b) {
        load_b_vector(kt_begin, 0);
    } else {
        load_b_regs(kt_begin);
        store_b_regs(0);
    }
    cp_async_commit();
    cp_async_wait_all();
    __syncthreads();

    for (int kt = kt_begin; kt < kt_end; ++kt) {
        const int cur = (kt - kt_begin) & 1;
        const bool more = kt + 1 < kt_end;
        if (more) {
            load_a(kt + 1, cur ^ 1);
            if constexpr (vector_b) {
                load_b_vector(kt + 1, cur ^ 1);
            } else {
                load_b_regs(kt + 1);
            }
            cp_async_commit();
        }
#pragma unroll
        for (int kk = 0; kk < kBlockK; kk += 16) {
            uint32_t a[kMT][4];
            uint32_t b[kNT][2];
#pragma unroll
            for (int mt = 0; mt < kMT; ++mt) {
                ldmatrix_x4(a[mt], &tile_a[cur][wm * kWarpM + mt * 16 + (lane & 15)][kk + (lane >> 4) * 8]);
            }
#pragma unroll
            for (int pair = 0; pair < kNT / 2; ++pair) {
                uint32_t r[4];
                ldmatrix_x4_trans(r, &tile_b[cur][kk + (lane & 7) + ((lane >> 3) & 1) * 8]
                                            [wn * 32 + pair * 16 + (lane >> 4) * 8]);
                b[2 * pair][0] = r[0];
                b[2 * pair][1] = r[1];
                b[2 * pair + 1][0] = r[2];
                b[2 * pair + 1][1] = r[3];
            }
#pragma unroll
            for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
                for (int nt = 0; nt < kNT; ++nt) mma_16816(acc[mt][nt], a[mt], b[nt]);
        }
        if (more) {
            if constexpr (!vector_b) store_b_regs(cur ^ 1);
            cp_async_wait_all();
        }
        __syncthreads();
    }

    conv_epilogue<BM, kBytesA + kBytesB>(p, acc, smem, m0, n0);
}


// The K cursor of an NHWC implicit GEMM (K = (ky, kx, c), tap-major): a
// thread's chunk column `k` and its tap and channel, stepped a K tile at a
// time (a chunk of 8 channels never straddles taps: cin is a multiple of 8).
struct NhwcTapCursor {
    int k, c, ky, kx;
    __device__ __forceinline__ void start(const ConvParams& p, int k0) {
        k = k0;
        const int tap = k0 / p.cin;
        c = k0 - tap * p.cin;
        ky = tap / p.kw;
        kx = tap - ky * p.kw;
    }
    // Where tap (ky, kx) sits from tap (0, 0), and whether column k is
    // inside K: computed once per tile for all of a thread's pixels.
    struct Offsets {
        int dy, dx, c;
        bool in_k;
    };
    __device__ __forceinline__ Offsets offsets(const ConvParams& p) const {
        return Offsets{ky * p.dh, kx * p.dw, c, k < p.k_total};
    }
    __device__ __forceinline__ void advance(const ConvParams& p, int step) {
        k += step;
        c += step;
        while (c >= p.cin) {
            c -= p.cin;
            if (++kx == p.kw) {
                kx = 0;
                ++ky;
            }
        }
    }
};

// The output pixels a thread loads input chunks for (GEMM columns
// `first + step * j`), fixed for the whole K loop: each one's image offset
// and the input position of tap (0, 0).
template <int kPixels>
struct NhwcPixelRows {
    int64_t image[kPixels];
    int iy0[kPixels], ix0[kPixels];
    bool valid[kPixels];

    __device__ __forceinline__ void init(const ConvParams& p, int64_t first, int step) {
        const int pixels = p.oh * p.ow;
        const int64_t n_total = static_cast<int64_t>(p.batch) * pixels;
#pragma unroll
        for (int j = 0; j < kPixels; ++j) {
            const int64_t gn = first + static_cast<int64_t>(step) * j;
            valid[j] = gn < n_total;
            const int img = valid[j] ? static_cast<int>(gn / pixels) : 0;
            const int pix = valid[j] ? static_cast<int>(gn - static_cast<int64_t>(img) * pixels) : 0;
            const int oy = pix / p.ow;
            const int ox = pix - oy * p.ow;
            image[j] = static_cast<int64_t>(img) * p.x_batch_stride;
            iy0[j] = oy * p.sh - p.pad_t;
            ix0[j] = ox * p.sw - p.pad_l;
        }
    }

    // The 16-byte chunk (8 channels) pixel j reads at the cursor's tap, or
    // null where it is padding, past K or past the last pixel (a zero fill).
    __device__ __forceinline__ const __half* chunk(const ConvParams& p, int j, const NhwcTapCursor::Offsets& t) const {
        const int iy = iy0[j] + t.dy;
        const int ix = ix0[j] + t.dx;
        const bool ok = valid[j] && t.in_k && static_cast<unsigned>(iy) < static_cast<unsigned>(p.h) &&
                        static_cast<unsigned>(ix) < static_cast<unsigned>(p.w);
        return ok ? p.x + image[j] + (static_cast<int64_t>(iy) * p.w + ix) * p.x_pixel_stride + t.c : nullptr;
    }
};

// Dynamic shared memory of the NHWC kernels (their stages exceed the 48 KiB
// a static array may take).
extern __shared__ uint4 conv_nhwc_smem[];

// Shared memory of an NHWC kernel: kStages of A (BM rows) and B (128 pixel
// rows), kBK + 8 halves a row (the padding keeps ldmatrix conflict-free).
template <int BM, int kBK, int kStages>
__host__ __device__ constexpr int nhwc_smem_bytes() {
    return kStages * (BM + kBlockN) * (kBK + kPadA) * 2;
}

// Implicit GEMM over an NHWC input (`x_pixel_stride` > 0, channels a
// multiple of 8, weights packed tap-major: K = (ky, kx, c)). Both operand
// tiles are stored [rows][kBK K + 8 pad] and loaded by 16-byte cp.async, a
// chunk being 8 weights of a row or 8 channels of one input pixel (zero-
// filled for padding and past K), so any kernel size, stride, dilation or
// padding takes the same path, and tiles go kStages - 1 ahead of the mma.
// Both fragments come from ldmatrix without transposing. The thread's
// pixels (B tile rows tid / chunks + j * threads / chunks) are fixed for the
// whole K loop; its chunk's (ky, kx, c) advances kBK channels a tile. K
// tiles (and `k_split`) count kBK columns; the last may run past the
// weight's 32-column padding, which loads as zeros.
template <int BM, int kBK, int kStages>
__device__ __forceinline__ void conv_igemm_nhwc(const ConvParams& p) {
    constexpr int kWarpsN = 4;
    constexpr int kWarpM = BM / 2;
    constexpr int kWarpN = kBlockN / kWarpsN;
    constexpr int kMT = kWarpM / 16;
    constexpr int kNT = kWarpN / 8;
    constexpr int kChunks = kBK / 8;  // 16-byte chunks per tile row
    // Pixel rows of the B tile per thread (each loads one chunk of each).
    constexpr int kPixelsPerThread = kBlockN * kChunks / kThreads;
    constexpr int kPixelStep = kThreads / kChunks;
    constexpr int kStride = kBK + kPadA;
    constexpr int kStageHalves = (BM + kBlockN) * kStride;
    __half* const stages = reinterpret_cast<__half*>(conv_nhwc_smem);

    const int tid = threadIdx.x;
    const int lane = tid & 31;
    const int warp = tid >> 5;
    const int wm = warp / kWarpsN;
    const int wn = warp % kWarpsN;
    const int m0 = blockIdx.y * BM;
    const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kBlockN;
    const int k_tiles = (p.k_pad + kBK - 1) / kBK;
    const int kt_begin = p.k_split > 0 ? static_cast<int>(blockIdx.z) * p.k_split : 0;
    const int kt_end = p.k_split > 0 ? min(k_tiles, kt_begin + p.k_split) : k_tiles;
    const int tiles = kt_end - kt_begin;

    const int kc = (tid % kChunks) * 8;  // this thread's chunk of a K tile
    NhwcPixelRows<kPixelsPerThread> rows;
    rows.init(p, n0 + tid / kChunks, kPixelStep);
    // (ky, kx, c) of the chunk of the next tile to load.
    NhwcTapCursor tap;
    tap.start(p, kt_begin * kBK + kc);

    auto load_stage = [&](int stage) {
        __half* tile_a = stages + stage * kStageHalves;
        __half* tile_b = tile_a + BM * kStride;
        const int k0 = tap.k - kc;  // the tile's first column
        for (int i = tid; i < BM * kChunks; i += kThreads) {
            const int r = i / kChunks;
            const int cv = (i % kChunks) * 8;
            const bool ok = kBK == kBlockK || k0 + cv < p.k_pad;
            cp_async_16(tile_a + r * kStride + cv,
                        ok ? p.weight + static_cast<int64_t>(m0 + r) * p.k_pad + k0 + cv : p.weight, ok ? 16 : 0);
        }
        const NhwcTapCursor::Offsets at = tap.offsets(p);
#pragma unroll
        for (int j = 0; j < kPixelsPerThread; ++j) {
            const __half* src = rows.chunk(p, j, at);
            cp_async_16(tile_b + (tid / kChunks + kPixelStep * j) * kStride + kc, src ? src : p.x, src ? 16 : 0);
        }
        tap.advance(p, kBK);
    };

    float acc[kMT][kNT][4];
#pragma unroll
    for (int i = 0; i < kMT; ++i)
#pragma unroll
        for (int j = 0; j < kNT; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

    // One commit group per tile (empty past the end), so that waiting for
    // all but kStages - 2 groups means tile t has landed.
#pragma unroll
    for (int st = 0; st < kStages - 1; ++st) {
        if (st < tiles) load_stage(st);
        cp_async_commit();
    }
    for (int t = 0; t < tiles; ++t) {
        cp_async_wait<kStages - 2>();
        // Every warp is past tile t - 1, whose stage the next load reuses.
        __syncthreads();
        if (t + kStages - 1 < tiles) load_stage((t + kStages - 1) % kStages);
        cp_async_commit();
        const __half* tile_a = stages + (t % kStages) * kStageHalves;
        const __half* tile_b = tile_a + BM * kStride;
#pragma unroll
        for (int kk = 0; kk < kBK; kk += 16) {
            uint32_t a[kMT][4];
            uint32_t b[kNT][2];
#pragma unroll
            for (int mt = 0; mt < kMT; ++mt) {
                ldmatrix_x4(a[mt], tile_a + (wm * kWarpM + mt * 16 + (lane & 15)) * kStride + kk + (lane >> 4) * 8);
            }
#pragma unroll
            for (int pair = 0; pair < kNT / 2; ++pair) {
                // Matrices (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7),
                // (n 8-15, k 8-15) of this pair of 8-column fragments.
                uint32_t r[4];
                ldmatrix_x4(r, tile_b + (wn * kWarpN + pair * 16 + (lane >> 4) * 8 + (lane & 7)) * kStride + kk +
                                   ((lane >> 3) & 1) * 8);
                b[2 * pair][0] = r[0];
                b[2 * pair][1] = r[1];
                b[2 * pair + 1][0] = r[2];
                b[2 * pair + 1][1] = r[3];
            }
#pragma unroll
            for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
                for (int nt = 0; nt < kNT; ++nt) mma_16816(acc[mt][nt], a[mt], b[nt]);
        }
    }
    cp_async_wait_all();
    __syncthreads();
    conv_epilogue<BM, nhwc_smem_bytes<BM, kBK, kStages>()>(p, acc, reinterpret_cast<unsigned char*>(conv_nhwc_smem), m0, n0);
}

// conv_wgmma_nhwc_n{48,64,96,128,192,256} (sm_90a): the NHWC implicit GEMM
// on Hopper's warpgroup MMA, its roles swapped from the mma.sync kernels:
// the instruction's M side is pixels (64 per warpgroup, two warpgroups:
// 128 a block) and its N side output channels, kN of them, one of the
// instruction's widths that fits cout (48 and 96 for YOLO's 48 and 96
// channels, 192 for 192 and 384, 256 for 768), so no tile computes rows
// that do not exist.
// The operands stay in shared memory, 128-byte swizzled (wgmma.cuh), and
// the tensor cores read them there: no ldmatrix and no fragment registers,
// so the warps' issue slots go to the loads and the epilogue, and one K
// tile's mma runs while the next tiles land. Loads are the 16-byte cp.async
// chunks of conv_igemm_nhwc (8 channels of a pixel, 8 weights of a row,
// zero-filled for padding and past K), issued kStages - 2 tiles ahead:
// the stage a load overwrites held the tile whose mma every warpgroup
// waited for before the barrier that precedes the load. A thread's sums
// are 2 channels of one pixel, so the staged output tile is already pixel-
// major (store_nhwc_staged). Split-K as the mma.sync kernels (`k_split`,
// in 64-deep tiles here). Only NHWC FP16 outputs and no transposed
// convolution (the host chooses it only then). 4 stages, one block an SM
// (up to 227 KiB of stages); for short K (a few tiles), where the SM
// idles while one block fills its pipeline and writes its tile, 3 stages
// of 128 channels let two blocks share an SM (n128_s3).
constexpr int kWgmmaPixels = 128;
constexpr int kWgmmaK = 64;
constexpr int kWgmmaStages = 4;

// Dynamic shared memory of conv_wgmma_nhwc_n<kN>: the stages, plus slack to
// align them to the 1024 bytes the swizzle needs. Mirrors
// `steps::wgmma_shared_bytes`.
__host__ __device__ constexpr int wgmma_smem_bytes(int n, int stages = kWgmmaStages) {
    return stages * (kWgmmaPixels + n) * kWgmmaK * 2 + 1024;
}
static_assert(wgmma_smem_bytes(256) <= 227 * 1024, "conv_wgmma_nhwc's stages fit sm_90's shared memory");

#ifdef VRSEG_HAS_WGMMA
__device__ __forceinline__ void cp_async_16_at(uint32_t smem, const void* gmem, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem), "l"(gmem), "r"(src_bytes));
}
#endif

template <int kN, int kStages = kWgmmaStages>
__device__ __forceinline__ void conv_wgmma_nhwc(const ConvParams& p) {
#ifdef VRSEG_HAS_WGMMA
    constexpr int kRowBytes = kWgmmaK * 2;  // 128: one swizzle row
    constexpr int kABytes = kWgmmaPixels * kRowBytes;
    constexpr int kStageBytes = (kWgmmaPixels + kN) * kRowBytes;
    constexpr int kChunks = kWgmmaK / 8;              // 16-byte chunks a row
    constexpr int kRowsPerPass = kThreads / kChunks;  // 32
    constexpr int kPixelRows = kWgmmaPixels / kRowsPerPass;
    constexpr int kWeightRows = (kN + kRowsPerPass - 1) / kRowsPerPass;
    constexpr int kAcc = kN / 2;
    static_assert(kN % 16 == 0 && kRowsPerPass % 8 == 0, "a thread's rows share one swizzle phase");
    static_assert(kStageBytes % 1024 == 0, "every stage and its weight tile stay 1024-byte aligned");
    static_assert(kWgmmaPixels * (kN + 8) * 2 + 1024 <= wgmma_smem_bytes(kN, kStages), "the staged output tile fits");
    static_assert(kStages >= 3, "loads run at least one tile ahead of the mma");

    const uint32_t raw = static_cast<uint32_t>(__cvta_generic_to_shared(conv_nhwc_smem));
    const uint32_t base = (raw + 1023) & ~1023u;
    unsigned char* const base_ptr = reinterpret_cast<unsigned char*>(conv_nhwc_smem) + (base - raw);

    const int tid = threadIdx.x;
    const int warpgroup = tid / 128;
    // Grid x walks the channel tiles: the blocks of one pixel tile run
    // together and share its input reads in L2 (the weights, a few MB,
    // stay there anyway).
    const int m0 = blockIdx.x * kN;
    const int64_t n0 = static_cast<int64_t>(blockIdx.y) * kWgmmaPixels;
    const int pixels = p.oh * p.ow;
    const int64_t n_total = static_cast<int64_t>(p.batch) * pixels;
    // Split-K: block z runs K tiles [z * k_split, (z + 1) * k_split).
    const int k_tiles = (p.k_pad + kWgmmaK - 1) / kWgmmaK;
    const int kt_begin = p.k_split > 0 ? static_cast<int>(blockIdx.z) * p.k_split : 0;
    const int kt_end = p.k_split > 0 ? min(k_tiles, kt_begin + p.k_split) : k_tiles;
    const int tiles = kt_end - kt_begin;

    const int chunk = tid % kChunks;
    const int kc = chunk * 8;
    const int row0 = tid / kChunks;
    // Rows row0 + 32 j all sit at row0's swizzle phase.
    const uint32_t chunk_at = wgmma::sw128_offset(row0, chunk);

    NhwcPixelRows<kPixelRows> rows;
    rows.init(p, n0 + row0, kRowsPerPass);
    // Weight rows past cout (the last channel tile may reach beyond the
    // packed weight's 128-row padding) load as zeros.
    bool w_valid[kWeightRows];
#pragma unroll
    for (int j = 0; j < kWeightRows; ++j) w_valid[j] = m0 + row0 + kRowsPerPass * j < p.m_total;
    // A width that is no multiple of 32 (48) leaves some threads' last row
    // outside the tile: they load nothing there.
    bool w_in_tile[kWeightRows];
#pragma unroll
    for (int j = 0; j < kWeightRows; ++j) w_in_tile[j] = row0 + kRowsPerPass * j < kN;
    const __half* const w_row = p.weight + static_cast<int64_t>(m0 + row0) * p.k_pad;

    NhwcTapCursor tap;
    tap.start(p, kt_begin * kWgmmaK + kc);

    auto load_stage = [&](int stage) {
        const uint32_t a_dst = base + stage * kStageBytes + chunk_at;
        const uint32_t b_dst = a_dst + kABytes;
        const NhwcTapCursor::Offsets at = tap.offsets(p);
#pragma unroll
        for (int j = 0; j < kPixelRows; ++j) {
            const __half* src = rows.chunk(p, j, at);
            cp_async_16_at(a_dst + j * kRowsPerPass * kRowBytes, src ? src : p.x, src ? 16 : 0);
        }
        // K past the weight's 32-column padding (the last 64-deep tile)
        // loads as zeros too.
        const bool kw_ok = tap.k < p.k_pad;
#pragma unroll
        for (int j = 0; j < kWeightRows; ++j) {
            if (kN % kRowsPerPass != 0 && !w_in_tile[j]) continue;
            const bool ok = kw_ok && w_valid[j];
            cp_async_16_at(b_dst + j * kRowsPerPass * kRowBytes,
                           ok ? w_row + static_cast<int64_t>(j) * kRowsPerPass * p.k_pad + tap.k : p.weight,
                           ok ? 16 : 0);
        }
        tap.advance(p, kWgmmaK);
    };

    float acc[kAcc];
#pragma unroll
    for (int i = 0; i < kAcc; ++i) acc[i] = 0.0f;

    // One commit group per tile (empty past the end): waiting for all but
    // the newest kAhead - 1 groups means tile t has landed.
    constexpr int kAhead = kStages - 2;
#pragma unroll
    for (int st = 0; st < kAhead; ++st) {
        if (st < tiles) load_stage(st);
        cp_async_commit();
    }
    for (int t = 0; t < tiles; ++t) {
        cp_async_wait<kAhead - 1>();
        // This thread's chunks of tile t are written; make them visible to
        // the tensor cores' (async-proxy) reads, then wait for every thread's.
        // The barrier also means both warpgroups waited for tile t - 1's mma
        // (below, last iteration), so tile t - 2's stage is free.
        wgmma::fence_proxy_async_shared();
        __syncthreads();
        if (t + kAhead < tiles) load_stage((t + kAhead) % kStages);
        cp_async_commit();

        const uint32_t stage = base + (t % kStages) * kStageBytes;
        const uint32_t a_tile = stage + warpgroup * 64 * kRowBytes;
        const uint32_t b_tile = stage + kABytes;
        wgmma::fence_operands(acc);
        wgmma::fence();
#pragma unroll
        for (int kk = 0; kk < kWgmmaK / 16; ++kk) {
            // 16 K columns are 32 bytes into each swizzled row.
            wgmma::mma_m64k16<kN>(acc, wgmma::sw128_descriptor(a_tile + kk * 32),
                                  wgmma::sw128_descriptor(b_tile + kk * 32));
        }
        wgmma::commit_group();
        // Tile t - 1's mma is done: its stage may be refilled after the
        // next barrier.
        wgmma::wait_group<1>();
        wgmma::fence_operands(acc);
    }
    wgmma::wait_group<0>();
    wgmma::fence_operands(acc);
    cp_async_wait_all();

    const int lane = tid & 31;
    const int g = lane >> 2;
    const int t4 = lane & 3;
    const int pixel_row = warpgroup * 64 + ((tid % 128) / 32) * 16 + g;
    if (p.k_split > 0) {
        // Raw sums of this split, [split][channel][pixel] as the mma.sync
        // kernels write them; conv_splitk_reduce applies the epilogue.
        float* part = p.partial + static_cast<int64_t>(blockIdx.z) * p.m_total * n_total;
#pragma unroll
        for (int j = 0; j < kN / 8; ++j)
#pragma unroll
            for (int h = 0; h < 2; ++h)
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const int m = m0 + 8 * j + 2 * t4 + e;
                    const int64_t gn = n0 + pixel_row + 8 * h;
                    if (m < p.m_total && gn < n_total) part[static_cast<int64_t>(m) * n_total + gn] = acc[4 * j + 2 * h + e];
                }
        return;
    }
    // Every warpgroup is done reading the stages: they hold the output now.
    __syncthreads();

    // Stage act(acc + bias), a pixel's kN channels contiguous (rows of
    // kN + 8 halves: a warp's half2 stores hit 32 different banks).
    constexpr int kStrideT = kN + 8;
    __half* const tile_t = reinterpret_cast<__half*>(base_ptr);
#pragma unroll
    for (int j = 0; j < kN / 8; ++j) {
        const int c = 8 * j + 2 * t4;
        const int m = m0 + c;
        const float b0 = (p.bias && m < p.m_total) ? p.bias[m] : 0.0f;
        const float b1 = (p.bias && m + 1 < p.m_total) ? p.bias[m + 1] : 0.0f;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            float v0 = acc[4 * j + 2 * h] + b0;
            float v1 = acc[4 * j + 2 * h + 1] + b1;
            v0 = activate(v0, p.activation);
            v1 = activate(v1, p.activation);
            *reinterpret_cast<__half2*>(&tile_t[(pixel_row + 8 * h) * kStrideT + c]) = __floats2half2_rn(v0, v1);
        }
    }
    __syncthreads();
    store_nhwc_staged<kN, kWgmmaPixels>(p, tile_t, m0, n0);
#else
    __trap();
#endif
}

}  // namespace

#define VRSEG_CONV_IGEMM(BM, BLOCKS)                                                                     \
    VRSEG_KERNEL void __launch_bounds__(kThreads, BLOCKS) conv_igemm_##BM##_gather(ConvParams p) { vrseg::wait_for_prior_grid();       \
        conv_igemm<BM, kGather>(p);                                                                        \
    }                                                                                                      \
    VRSEG_KERNEL void __launch_bounds__(kThreads, BLOCKS) conv_igemm_##BM##_vector(ConvParams p) { vrseg::wait_for_prior_grid();       \
        conv_igemm<BM, kVector>(p);                                                                        \
    }                                                                                                      \
    VRSEG_KERNEL void __launch_bounds__(kThreads, BLOCKS) conv_igemm_##BM##_rows(ConvParams p) { vrseg::wait_for_prior_grid();         \
        conv_igemm<BM, kRows>(p);                                                                          \
    }                                                                                                      \
    VRSEG_KERNEL void __launch_bounds__(kThreads, BLOCKS) conv_igemm_##BM##_rows2(ConvParams p) { vrseg::wait_for_prior_grid();        \
        conv_igemm<BM, kRows2>(p);                                                                         \
    }                                                                                                      \
    VRSEG_KERNEL void __launch_bounds__(kThreads, BLOCKS) conv_igemm_##BM##_nhwc(ConvParams p) { vrseg::wait_for_prior_grid();         \
        conv_igemm_nhwc<BM, 32, 4>(p);                                                                     \
    }
VRSEG_CONV_IGEMM(128, 2)
VRSEG_CONV_IGEMM(64, 3)
VRSEG_CONV_IGEMM(32, 4)

// 64-deep K tiles (3 stages, 110 KB: sm_90's shared memory, not the RTX
// cards' 99 KB a block): half the barriers and address arithmetic per mma.
VRSEG_KERNEL void __launch_bounds__(kThreads, 2) conv_igemm_128_nhwc_k64(ConvParams p) {
    vrseg::wait_for_prior_grid();
    conv_igemm_nhwc<128, 64, 3>(p);
}


// Hopper's warpgroup MMA (an sm_90a build; a trap elsewhere, never chosen
// there), one kernel per channel-tile width.
#define VRSEG_CONV_WGMMA(N)                                                                         \
    VRSEG_KERNEL void __launch_bounds__(kThreads, 1) conv_wgmma_nhwc_n##N(ConvParams p) { vrseg::wait_for_prior_grid(); \
        conv_wgmma_nhwc<N>(p);                                                                     \
    }
VRSEG_CONV_WGMMA(48)
VRSEG_CONV_WGMMA(64)
VRSEG_CONV_WGMMA(96)
VRSEG_CONV_WGMMA(128)
VRSEG_CONV_WGMMA(192)
VRSEG_CONV_WGMMA(256)

// 128 channels in 3 stages (99 KB): two blocks an SM, for short K, where
// one block's epilogue and pipeline fill leave the SM idle.
VRSEG_KERNEL void __launch_bounds__(kThreads, 2) conv_wgmma_nhwc_n128_s3(ConvParams p) {
    vrseg::wait_for_prior_grid();
    conv_wgmma_nhwc<128, 3>(p);
}

// conv_stem_c{16,32,64,96,128}: a convolution whose whole K (cin x kh x
// kw) fits one 32-deep tile, from an NCHW FP16 input to an NHWC FP16 output
// of at most 128 channels: YOLO's stem (3 channels, 3x3/2, on the model
// input). The GEMM kernels spend a whole block's load, barrier and staged
// epilogue on one K step here (1.4 ms of x-seg at batch 32 for 0.6 GB of
// output). Instead each warp keeps the weights in registers as mma B
// fragments for the whole kernel and walks 16-pixel tiles: it builds the A
// fragment (16 pixels x 32 K) straight from global memory (each lane's 8 K
// columns, so their (channel, ky, kx) are decoded once), runs 2 x kNT
// mma.sync, and stores each lane's channel pairs. Pixels are the GEMM's M,
// channels its N, so a pixel's channels leave together.
template <int kNT>
__device__ __forceinline__ void conv_stem(const ConvParams& p) {
    const int lane = threadIdx.x & 31;
    const int g = lane >> 2;
    const int t = lane & 3;
    // B fragments: W[8j + g][16s + 2t + {0,1}] and [.. + 8 + {0,1}] (weights
    // are [m_pad][k_pad] with K contiguous, zero-padded to 32 columns).
    uint32_t bw[2][kNT][2];
#pragma unroll
    for (int s = 0; s < 2; ++s)
#pragma unroll
        for (int j = 0; j < kNT; ++j) {
            const int ch = 8 * j + g;
            const __half* row = p.weight + static_cast<int64_t>(ch) * p.k_pad + 16 * s + 2 * t;
            const bool ok = ch < p.m_total;
            bw[s][j][0] = ok ? *reinterpret_cast<const uint32_t*>(row) : 0u;
            bw[s][j][1] = ok ? *reinterpret_cast<const uint32_t*>(row + 8) : 0u;
        }
    // This lane's K columns, 16s + 2t + {0, 1, 8, 9}: input plane offset and
    // tap displacement (-1 offset: past K, reads as zero).
    const int taps = p.kh * p.kw;
    int tap_plane[2][4], tap_dy[2][4], tap_dx[2][4];
#pragma unroll
    for (int s = 0; s < 2; ++s)
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const int k = 16 * s + 2 * t + (r & 1) + (r >> 1) * 8;
            const int c = k / taps;
            const int tap = k - c * taps;
            const int ky = tap / p.kw;
            tap_plane[s][r] = k < p.k_total ? c * p.h * p.w : -1;
            tap_dy[s][r] = ky * p.dh;
            tap_dx[s][r] = (tap - ky * p.kw) * p.dw;
        }
    const int pixels = p.oh * p.ow;
    const int64_t n_total = static_cast<int64_t>(p.batch) * pixels;
    const int64_t tiles = (n_total + 15) / 16;
    const int warps_per_block = blockDim.x / 32;
    const int64_t warp_stride = static_cast<int64_t>(gridDim.x) * warps_per_block;
    for (int64_t tile = static_cast<int64_t>(blockIdx.x) * warps_per_block + threadIdx.x / 32; tile < tiles;
         tile += warp_stride) {
        // Rows g and g + 8 of the tile: this lane's two pixels.
        const __half* src[2];
        int iy0[2], ix0[2];
        int64_t out[2];
        bool valid[2];
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int64_t gn = tile * 16 + g + 8 * h;
            valid[h] = gn < n_total;
            const int img = valid[h] ? static_cast<int>(gn / pixels) : 0;
            const int pix = valid[h] ? static_cast<int>(gn - static_cast<int64_t>(img) * pixels) : 0;
            const int oy = pix / p.ow;
            const int ox = pix - oy * p.ow;
            src[h] = p.x + static_cast<int64_t>(img) * p.x_batch_stride;
            iy0[h] = oy * p.sh - p.pad_t;
            ix0[h] = ox * p.sw - p.pad_l;
            out[h] = static_cast<int64_t>(img) * p.y_batch_stride + static_cast<int64_t>(pix) * p.y_pixel_stride;
        }
        // A fragments: a[s][q * 2 + h] holds pixel row h's K columns
        // 16s + 2t + 8q + {0, 1}.
        uint32_t a[2][4];
#pragma unroll
        for (int s = 0; s < 2; ++s)
#pragma unroll
            for (int q = 0; q < 2; ++q)
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    unsigned short bits[2];
#pragma unroll
                    for (int e = 0; e < 2; ++e) {
                        const int r = 2 * q + e;
                        const int iy = iy0[h] + tap_dy[s][r];
                        const int ix = ix0[h] + tap_dx[s][r];
                        const bool in = valid[h] && tap_plane[s][r] >= 0 &&
                                        static_cast<unsigned>(iy) < static_cast<unsigned>(p.h) &&
                                        static_cast<unsigned>(ix) < static_cast<unsigned>(p.w);
                        bits[e] = in ? __ldg(reinterpret_cast<const unsigned short*>(src[h]) + tap_plane[s][r] +
                                             iy * p.w + ix)
                                     : static_cast<unsigned short>(0);
                    }
                    a[s][q * 2 + h] = static_cast<uint32_t>(bits[0]) | (static_cast<uint32_t>(bits[1]) << 16);
                }
        // One n8 tile at a time, stored at once (4 live sums, not 4 kNT:
        // the registers go to more resident warps). Lane (g, t) holds
        // channels 8j + 2t, +1 of pixels g and g + 8.
#pragma unroll
        for (int j = 0; j < kNT; ++j) {
            float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
            for (int s = 0; s < 2; ++s) mma_16816(acc, a[s], bw[s][j]);
            const int ch = 8 * j + 2 * t;
            if (ch >= p.m_total) continue;  // m_total is a multiple of 8
            const float b0 = p.bias ? p.bias[ch] : 0.0f;
            const float b1 = p.bias ? p.bias[ch + 1] : 0.0f;
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                if (!valid[h]) continue;
                const __half2 v = __floats2half2_rn(activate(acc[2 * h] + b0, p.activation),
                                                    activate(acc[2 * h + 1] + b1, p.activation));
                *reinterpret_cast<__half2*>(static_cast<__half*>(p.y) + out[h] + ch) = v;
            }
        }
    }
}

#define VRSEG_CONV_STEM(C) \
    VRSEG_KERNEL void __launch_bounds__(kThreads, 2) conv_stem_c##C(ConvParams p) { vrseg::wait_for_prior_grid(); conv_stem<C / 8>(p); }
VRSEG_CONV_STEM(16)
VRSEG_CONV_STEM(32)
VRSEG_CONV_STEM(64)
VRSEG_CONV_STEM(96)
VRSEG_CONV_STEM(128)

VRSEG_KERNEL void conv_splitk_reduce(ConvParams p) {
    vrseg::wait_for_prior_grid();
    const int pixels = p.oh * p.ow;
    const int64_t n_total = static_cast<int64_t>(p.batch) * pixels;
    const int64_t total = static_cast<int64_t>(p.m_total) * n_total;
    for (int64_t i = vrseg::global_thread_index(); i < total; i += vrseg::global_thread_count()) {
        const int m = static_cast<int>(i / n_total);
        const int64_t gn = i - static_cast<int64_t>(m) * n_total;
        float v = 0.0f;
        for (int z = 0; z < p.splits; ++z) v += p.partial[z * total + i];
        if (p.bias) v += p.bias[m];
        v = activate(v, p.activation);
        const int img = static_cast<int>(gn / pixels);
        const int64_t pix = gn - static_cast<int64_t>(img) * pixels;
        if (p.y_pixel_stride > 0) {
            // NHWC (FP16, the residual in the output's layout).
            if (p.residual) {
                v += load_any(p.residual, img * p.residual_batch_stride + pix * p.residual_pixel_stride + m, p.residual_f32);
            }
            store_any(p.y, img * p.y_batch_stride + pix * p.y_pixel_stride + m, 0, v);
            continue;
        }
        if (p.residual) v += load_any(p.residual, img * p.residual_batch_stride + static_cast<int64_t>(m) * pixels + pix, p.residual_f32);
        store_any(p.y, img * p.y_batch_stride + m * p.y_channel_stride + pix, p.y_f32, v);
    }
}

// 3x3, stride 1, dilation 1 (YOLO11's DWConv), output rows of a multiple of
// 4: each thread makes 4 neighbouring outputs of one row from a 3 x 6 input
// window (18 loads for 36 multiply-adds, one index split for 4 outputs),
// which the one-output kernel spends most of its time on.
VRSEG_KERNEL void conv_depthwise_3x3_row4(DepthwiseParams p) {
    vrseg::wait_for_prior_grid();
    const int quads_per_row = p.ow / 4;
    const int64_t total = static_cast<int64_t>(p.batch) * p.channels * p.oh * quads_per_row;
    for (int64_t i = vrseg::global_thread_index(); i < total; i += vrseg::global_thread_count()) {
        int64_t q = i;
        const int qx = static_cast<int>(q % quads_per_row);
        q /= quads_per_row;
        const int oy = static_cast<int>(q % p.oh);
        q /= p.oh;
        const int c = static_cast<int>(q % p.channels);
        const int img = static_cast<int>(q / p.channels);
        const int ox0 = qx * 4;
        const __half* src = p.x + img * p.x_batch_stride + static_cast<int64_t>(c) * p.h * p.w;
        const __half* wc = p.weight + c * 9;
        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
        for (int ky = 0; ky < 3; ++ky) {
            const int iy = oy - p.pad_t + ky;
            if (static_cast<unsigned>(iy) >= static_cast<unsigned>(p.h)) continue;
            float win[6];
#pragma unroll
            for (int j = 0; j < 6; ++j) {
                const int ix = ox0 - p.pad_l + j;
                win[j] = static_cast<unsigned>(ix) < static_cast<unsigned>(p.w) ? __half2float(src[iy * p.w + ix]) : 0.0f;
            }
#pragma unroll
            for (int kx = 0; kx < 3; ++kx) {
                const float wv = __half2float(wc[ky * 3 + kx]);
#pragma unroll
                for (int r = 0; r < 4; ++r) acc[r] += win[r + kx] * wv;
            }
        }
        const float bias = p.bias ? p.bias[c] : 0.0f;
        const int64_t at = static_cast<int64_t>(c) * p.oh * p.ow + oy * p.ow + ox0;
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            float v = acc[r] + bias;
            v = activate(v, p.activation);
            if (p.residual) v += load_any(p.residual, img * p.residual_batch_stride + at + r, p.residual_f32);
            store_any(p.y, img * p.y_batch_stride + at + r, p.y_f32, v);
        }
    }
}

VRSEG_KERNEL void conv_depthwise(DepthwiseParams p) {
    vrseg::wait_for_prior_grid();
    vrseg::conv::depthwise_nchw<__half, false>(p);
}

// Depthwise over NHWC values (channels a multiple of 8, FP16 throughout,
// weights tap-major [kh * kw][channels]): a thread makes 8 channels of one
// output pixel from 16-byte loads of 8 channels per tap, its warp covering
// consecutive channel groups and pixels (coalesced).
VRSEG_KERNEL void conv_depthwise_nhwc(DepthwiseParams p) {
    vrseg::wait_for_prior_grid();
    const int groups = p.channels / 8;
    const int64_t total = static_cast<int64_t>(p.batch) * p.oh * p.ow * groups;
    const int plane = p.oh * p.ow;
    for (int64_t i = vrseg::global_thread_index(); i < total; i += vrseg::global_thread_count()) {
        // Index splits in 32 bits wherever the index fits (every YOLO-seg
        // tensor), as `unravel` does for the copies: 64-bit divisions are a
        // call each (measured: 2.5% of x-seg's depthwise time).
        int c, pix, img;
        if (static_cast<uint64_t>(i) <= 0xffffffffull) {
            uint32_t q = static_cast<uint32_t>(i);
            const uint32_t rest = q / static_cast<uint32_t>(groups);
            c = static_cast<int>(q - rest * static_cast<uint32_t>(groups)) * 8;
            img = static_cast<int>(rest / static_cast<uint32_t>(plane));
            pix = static_cast<int>(rest - static_cast<uint32_t>(img) * static_cast<uint32_t>(plane));
        } else {
            const int64_t rest = i / groups;
            c = static_cast<int>(i - rest * groups) * 8;
            img = static_cast<int>(rest / plane);
            pix = static_cast<int>(rest - static_cast<int64_t>(img) * plane);
        }
        const int oy = pix / p.ow;
        const int ox = pix - oy * p.ow;
        const __half* src = p.x + img * p.x_batch_stride + c;
        float acc[8];
#pragma unroll
        for (int r = 0; r < 8; ++r) acc[r] = 0.0f;
        for (int ky = 0; ky < p.kh; ++ky) {
            const int iy = oy * p.sh - p.pad_t + ky * p.dh;
            if (static_cast<unsigned>(iy) >= static_cast<unsigned>(p.h)) continue;
            for (int kx = 0; kx < p.kw; ++kx) {
                const int ix = ox * p.sw - p.pad_l + kx * p.dw;
                if (static_cast<unsigned>(ix) >= static_cast<unsigned>(p.w)) continue;
                const uint4 xv = *reinterpret_cast<const uint4*>(src + (static_cast<int64_t>(iy) * p.w + ix) * p.x_pixel_stride);
                const uint4 wv = *reinterpret_cast<const uint4*>(p.weight + (ky * p.kw + kx) * p.channels + c);
                const __half2* xh = reinterpret_cast<const __half2*>(&xv);
                const __half2* wh = reinterpret_cast<const __half2*>(&wv);
#pragma unroll
                for (int r = 0; r < 4; ++r) {
                    const float2 xf = __half22float2(xh[r]);
                    const float2 wf = __half22float2(wh[r]);
                    acc[2 * r] += xf.x * wf.x;
                    acc[2 * r + 1] += xf.y * wf.y;
                }
            }
        }
        uint4 res = make_uint4(0u, 0u, 0u, 0u);
        if (p.residual) {
            res = *reinterpret_cast<const uint4*>(static_cast<const __half*>(p.residual) + img * p.residual_batch_stride +
                                                  static_cast<int64_t>(pix) * p.residual_pixel_stride + c);
        }
        const __half2* rh = reinterpret_cast<const __half2*>(&res);
        uint4 packed;
        __half2* out = reinterpret_cast<__half2*>(&packed);
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            float v0 = acc[2 * r] + (p.bias ? p.bias[c + 2 * r] : 0.0f);
            float v1 = acc[2 * r + 1] + (p.bias ? p.bias[c + 2 * r + 1] : 0.0f);
            v0 = activate(v0, p.activation);
            v1 = activate(v1, p.activation);
            const float2 rf = __half22float2(rh[r]);
            out[r] = __floats2half2_rn(v0 + rf.x, v1 + rf.y);
        }
        *reinterpret_cast<uint4*>(static_cast<__half*>(p.y) + img * p.y_batch_stride +
                                  static_cast<int64_t>(pix) * p.y_pixel_stride + c) = packed;
    }
}

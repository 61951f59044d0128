// Preprocess: decoded NV12 / P016 frames → letterboxed RGB FP16 NCHW model
// input, every eye of every frame of a batch in one launch, one fused pass
// (read YUV, resample, convert, write). The CPU twin is
// `ops::letterbox::letterbox_reference`; the definition below is the contract
// between them.
//
// Geometry (Ultralytics' LetterBox, computed on the host): an eye of
// eye_w x eye_h is resized to new_w x new_h and placed at (pad_left, pad_top)
// in an out_w x out_h canvas filled with `pad_value`.
//
// Resampling, per axis, in continuous source coordinates where pixel i covers
// [i, i+1): output pixel u of the resized eye covers [u*s, (u+1)*s) with
// s = eye_len / new_len.
//  - s > 1 (downscale): area average, each source pixel weighted by its
//    overlap with that interval: no aliasing at 4096 → 640.
//  - s <= 1 (upscale or same size): bilinear at the centre (u + 0.5)*s - 0.5,
//    indices clamped to the eye (PyTorch's align_corners=False).
// Chroma is one sample per 2x2 luma block: its plane coordinate is the luma
// coordinate / 2, so the same rules apply on the chroma grid (interval halved;
// bilinear centre (p / 2) - 0.5 for luma position p), clamped to the chroma
// samples the eye touches.
// Y, Cb, Cr are resampled separately, then converted with the stream's
// matrix and range and clamped to [0, 1] (the conversion is affine, so this
// equals converting first except where clamping bites).
#include "common.cuh"

#include <cuda_fp16.h>

namespace {

constexpr int kMaxFrames = 64;

struct Rect {
    int32_t x, y, w, h;
};

// Mirrors `LetterboxParams` in src/ops/letterbox.rs field for field.
struct LetterboxParams {
    uint64_t frames[kMaxFrames];  // device pointer of each frame's luma plane
    uint64_t pitch;               // bytes per row, both planes
    uint64_t chroma_offset;       // bytes from luma start to the UV plane
    __half* out;                  // [frames * eyes, 3, out_h, out_w]
    int32_t frame_count;
    int32_t eyes;
    Rect eye[2];
    int32_t bytes_per_sample;  // 1 (NV12) or 2 (P016)
    int32_t shift;             // stored sample / 2^shift = code value (P016: 16 - bit depth; low bits kept as a fraction)
    float y_offset, y_scale;   // Y' = (Y - y_offset) * y_scale
    float c_offset, c_scale;   // Pb = (Cb - c_offset) * c_scale
    float r_cr, g_cb, g_cr, b_cb;  // R = Y' + r_cr Pr; G = Y' + g_cb Pb + g_cr Pr; B = Y' + b_cb Pb
    int32_t out_w, out_h;
    int32_t new_w, new_h;
    int32_t pad_left, pad_top;
    float pad_value;
    float scale_x, scale_y;  // eye_len / new_len per axis
};

// The source samples one output coordinate reads along one axis, and their
// weights. `lo`/`hi` clamp indices to the plane span the eye covers.
struct AxisTaps {
    int32_t first, last;  // inclusive index range
    float a, b;           // area interval (area mode)
    float frac;           // bilinear fraction (bilinear mode)
    int32_t i0;           // bilinear left index before clamping
    int32_t lo, hi;
    bool area;

    __device__ float weight(int32_t i) const {
        if (area) {
            return fmaxf(0.0f, fminf(static_cast<float>(i + 1), b) - fmaxf(static_cast<float>(i), a));
        }
        // Bilinear: clamped neighbours fold onto the edge sample.
        const int32_t left = min(max(i0, lo), hi);
        const int32_t right = min(max(i0 + 1, lo), hi);
        float w = 0.0f;
        if (i == left) w += 1.0f - frac;
        if (i == right) w += frac;
        return w;
    }
};

// `start` is the eye's first source coordinate in this plane's units, `len`
// the eye length in luma units, `sub` 1 for luma and 2 for chroma.
__device__ AxisTaps axis_taps(int32_t u, float s, int32_t start_luma, int32_t len_luma, int32_t sub) {
    AxisTaps t;
    t.lo = start_luma / sub;
    t.hi = (start_luma + len_luma - 1) / sub;
    t.area = s > 1.0f;
    if (t.area) {
        t.a = (static_cast<float>(start_luma) + u * s) / sub;
        t.b = (static_cast<float>(start_luma) + (u + 1) * s) / sub;
        t.first = max(static_cast<int32_t>(floorf(t.a)), t.lo);
        t.last = min(static_cast<int32_t>(ceilf(t.b)) - 1, t.hi);
        t.frac = 0.0f;
        t.i0 = 0;
    } else {
        const float c = (static_cast<float>(start_luma) + (u + 0.5f) * s) / sub - 0.5f;
        const float f = floorf(c);
        t.i0 = static_cast<int32_t>(f);
        t.frac = c - f;
        t.first = min(max(t.i0, t.lo), t.hi);
        t.last = min(max(t.i0 + 1, t.lo), t.hi);
        t.a = t.b = 0.0f;
    }
    return t;
}

// Sums weight(i) * sample(i) over one axis' taps for one row. With TAPS > 0
// the loop is unrolled to TAPS predicated loads, so a thread's loads for a
// row are all in flight at once (the kernel is latency-bound otherwise);
// TAPS = 0 loops over whatever count the scale needs.
template <typename Sample, int TAPS, int STRIDE>
struct RowTaps {
    float w[TAPS > 0 ? TAPS : 1];
    int32_t idx[TAPS > 0 ? TAPS : 1];
    float wsum;

    __device__ explicit RowTaps(const AxisTaps& t) {
        wsum = 0.0f;
        if constexpr (TAPS > 0) {
#pragma unroll
            for (int32_t k = 0; k < TAPS; ++k) {
                const int32_t i = t.first + k;
                w[k] = i <= t.last ? t.weight(i) : 0.0f;
                idx[k] = min(i, t.last) * STRIDE;
                wsum += w[k];
            }
        } else {
            for (int32_t i = t.first; i <= t.last; ++i) wsum += t.weight(i);
        }
    }

    // Weighted sum of component `c` of the row's taps.
    __device__ float sum(const Sample* row, const AxisTaps& t, int32_t c) const {
        float acc = 0.0f;
        if constexpr (TAPS > 0) {
            Sample v[TAPS];
#pragma unroll
            for (int32_t k = 0; k < TAPS; ++k) v[k] = __ldg(row + idx[k] + c);
#pragma unroll
            for (int32_t k = 0; k < TAPS; ++k) acc = fmaf(w[k], static_cast<float>(v[k]), acc);
        } else {
            for (int32_t i = t.first; i <= t.last; ++i) acc += t.weight(i) * static_cast<float>(__ldg(row + i * STRIDE + c));
        }
        return acc;
    }
};

template <typename Sample, int TAPS>
__device__ void letterbox_pixel(const LetterboxParams& p, int32_t x, int32_t y, int32_t image) {
    const int32_t frame = image / p.eyes;
    const Rect eye = p.eye[image % p.eyes];
    const uint64_t plane = static_cast<uint64_t>(p.out_w) * p.out_h;
    __half* out = p.out + static_cast<uint64_t>(image) * 3 * plane + static_cast<uint64_t>(y) * p.out_w + x;

    const int32_t ux = x - p.pad_left;
    const int32_t uy = y - p.pad_top;
    if (ux < 0 || uy < 0 || ux >= p.new_w || uy >= p.new_h) {
        const __half pad = __float2half_rn(p.pad_value);
        out[0] = pad;
        out[plane] = pad;
        out[2 * plane] = pad;
        return;
    }

    const uint8_t* base = reinterpret_cast<const uint8_t*>(p.frames[frame]);
    const float shift_div = static_cast<float>(1u << p.shift);
    // Chroma needs at most half the luma taps, plus one for the phase.
    constexpr int CTAPS = TAPS > 0 ? TAPS / 2 + 1 : 0;

    // Luma.
    const AxisTaps tx = axis_taps(ux, p.scale_x, eye.x, eye.w, 1);
    const AxisTaps ty = axis_taps(uy, p.scale_y, eye.y, eye.h, 1);
    const RowTaps<Sample, TAPS, 1> lx(tx);
    float luma = 0.0f, luma_wy = 0.0f;
    for (int32_t j = ty.first; j <= ty.last; ++j) {
        const float wy = ty.weight(j);
        const Sample* row = reinterpret_cast<const Sample*>(base + static_cast<uint64_t>(j) * p.pitch);
        luma += wy * lx.sum(row, tx, 0);
        luma_wy += wy;
    }

    // Chroma: interleaved Cb, Cr pairs.
    const AxisTaps cx = axis_taps(ux, p.scale_x, eye.x, eye.w, 2);
    const AxisTaps cy = axis_taps(uy, p.scale_y, eye.y, eye.h, 2);
    const RowTaps<Sample, CTAPS, 2> cxt(cx);
    float cb = 0.0f, cr = 0.0f, chroma_wy = 0.0f;
    const uint8_t* chroma = base + p.chroma_offset;
    for (int32_t j = cy.first; j <= cy.last; ++j) {
        const float wy = cy.weight(j);
        const Sample* row = reinterpret_cast<const Sample*>(chroma + static_cast<uint64_t>(j) * p.pitch);
        cb += wy * cxt.sum(row, cx, 0);
        cr += wy * cxt.sum(row, cx, 1);
        chroma_wy += wy;
    }

    // Stored samples → code values (P016 keeps the code in the high bits).
    const float yv = luma / (luma_wy * lx.wsum * shift_div);
    const float cbv = cb / (chroma_wy * cxt.wsum * shift_div);
    const float crv = cr / (chroma_wy * cxt.wsum * shift_div);
    const float yn = (yv - p.y_offset) * p.y_scale;
    const float pb = (cbv - p.c_offset) * p.c_scale;
    const float pr = (crv - p.c_offset) * p.c_scale;
    const float r = __saturatef(yn + p.r_cr * pr);
    const float g = __saturatef(yn + p.g_cb * pb + p.g_cr * pr);
    const float b = __saturatef(yn + p.b_cb * pb);
    out[0] = __float2half_rn(r);
    out[plane] = __float2half_rn(g);
    out[2 * plane] = __float2half_rn(b);
}

template <typename Sample, int TAPS>
__device__ __forceinline__ void letterbox_entry(const LetterboxParams& p) {
    const int32_t x = blockIdx.x * blockDim.x + threadIdx.x;
    const int32_t y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= p.out_w || y >= p.out_h) return;
    letterbox_pixel<Sample, TAPS>(p, x, y, blockIdx.z);
}

}  // namespace

// grid (ceil(out_w / 32), ceil(out_h / 8), frames * eyes), block (32, 8).
// The _tN variants serve scales whose luma taps fit N (ceil(scale) + 1 <= N:
// up to 3x, 7x and 15x downscale); the plain ones any scale.
VRSEG_KERNEL void letterbox_nv12_f16(const LetterboxParams p) { letterbox_entry<uint8_t, 0>(p); }
VRSEG_KERNEL void letterbox_nv12_f16_t4(const LetterboxParams p) { letterbox_entry<uint8_t, 4>(p); }
VRSEG_KERNEL void letterbox_nv12_f16_t8(const LetterboxParams p) { letterbox_entry<uint8_t, 8>(p); }
VRSEG_KERNEL void letterbox_nv12_f16_t16(const LetterboxParams p) { letterbox_entry<uint8_t, 16>(p); }
VRSEG_KERNEL void letterbox_p016_f16(const LetterboxParams p) { letterbox_entry<uint16_t, 0>(p); }
VRSEG_KERNEL void letterbox_p016_f16_t4(const LetterboxParams p) { letterbox_entry<uint16_t, 4>(p); }
VRSEG_KERNEL void letterbox_p016_f16_t8(const LetterboxParams p) { letterbox_entry<uint16_t, 8>(p); }
VRSEG_KERNEL void letterbox_p016_f16_t16(const LetterboxParams p) { letterbox_entry<uint16_t, 16>(p); }

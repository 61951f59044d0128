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
//
// Work split: one block per output row of one image. The block first sums
// the row's source rows vertically (16-byte loads, each source byte read
// about once), luma and chroma together, into shared memory; then each
// output column sums its horizontal taps from there and converts.
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

// One block per output row of one image: the row's source rows are summed
// vertically first, 16 bytes per thread per source row (fully coalesced
// 16-byte loads; each source byte is read about once), into shared memory as
// floats; then each output column sums its horizontal taps from there.
// Luma and chroma are summed in the same pass, so all of a block's loads are
// in flight together.
constexpr int kThreads = 256;
constexpr int kRowsPerLoad = 4;  // source rows a thread has in flight per step

// Shared-memory index with one padding word every 32: output columns read
// about `scale` words apart (6.4 at 4096 → 640), which without the skew
// would pile several threads of a warp onto one bank.
__device__ __forceinline__ int32_t skew(int32_t i) { return i + (i >> 5); }

// Exact u8 / u16 lane of a 32-bit word as a float: the lane is moved into the
// mantissa of 2^23 (one PRMT) and 2^23 subtracted, which avoids the
// quarter-rate integer-to-float conversion.
__device__ __forceinline__ float u8_lane(uint32_t word, uint32_t lane) {
    return __uint_as_float(__byte_perm(word, 0x4B000000u, 0x7440u | lane)) - 8388608.0f;
}
__device__ __forceinline__ float u16_lane(uint32_t word, uint32_t lane) {
    return __uint_as_float(__byte_perm(word, 0x4B000000u, lane ? 0x7432u : 0x7410u)) - 8388608.0f;
}

// acc[k] += w * sample k of the 16 bytes in v.
template <typename Sample>
__device__ __forceinline__ void accumulate(float* acc, const uint4& v, float w) {
    const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int32_t q = 0; q < 4; ++q) {
        if constexpr (sizeof(Sample) == 1) {
#pragma unroll
            for (uint32_t l = 0; l < 4; ++l) acc[q * 4 + l] = fmaf(w, u8_lane(words[q], l), acc[q * 4 + l]);
        } else {
#pragma unroll
            for (uint32_t l = 0; l < 2; ++l) acc[q * 2 + l] = fmaf(w, u16_lane(words[q], l), acc[q * 2 + l]);
        }
    }
}

// Vertical weighted sums of rows ty.first..ty.last of one plane, over the
// 16-byte chunks [0, chunks) that start at byte `byte0` of each row, stored
// as floats at skew(sample index from byte0) in `sums`.
template <typename Sample>
__device__ void vertical_sums(const uint8_t* plane, uint64_t pitch, int32_t byte0, int32_t chunks, const AxisTaps& ty,
                              float* sums) {
    constexpr int32_t kPer = 16 / sizeof(Sample);
    for (int32_t c = threadIdx.x; c < chunks; c += blockDim.x) {
        float acc[kPer];
#pragma unroll
        for (int32_t i = 0; i < kPer; ++i) acc[i] = 0.0f;
        const uint8_t* column = plane + byte0 + static_cast<uint64_t>(c) * 16;
        for (int32_t j = ty.first; j <= ty.last; j += kRowsPerLoad) {
            uint4 v[kRowsPerLoad];
            float w[kRowsPerLoad];
#pragma unroll
            for (int32_t k = 0; k < kRowsPerLoad; ++k) {
                // Rows past the last are re-reads of it with weight 0.
                const int32_t row = min(j + k, ty.last);
                w[k] = j + k <= ty.last ? ty.weight(j + k) : 0.0f;
                v[k] = __ldg(reinterpret_cast<const uint4*>(column + static_cast<uint64_t>(row) * pitch));
            }
#pragma unroll
            for (int32_t k = 0; k < kRowsPerLoad; ++k) accumulate<Sample>(acc, v[k], w[k]);
        }
#pragma unroll
        for (int32_t i = 0; i < kPer; ++i) sums[skew(c * kPer + i)] = acc[i];
    }
}

// The 16-byte chunks of a plane row that hold samples [first, last]
// (`comps` interleaved components per sample): first byte, 16-aligned, and count.
__device__ __forceinline__ int2 chunk_span(int32_t first, int32_t last, int32_t comps, int32_t bytes_per_sample) {
    const int32_t begin = (first * comps * bytes_per_sample) & ~15;
    const int32_t end = (last + 1) * comps * bytes_per_sample;
    return make_int2(begin, (end - begin + 15) / 16);
}

// Floats of shared memory for `samples` samples at skewed indices.
__device__ __host__ __forceinline__ int32_t skewed_len(int32_t samples) { return samples + samples / 32 + 1; }

template <typename Sample>
__device__ __forceinline__ void letterbox_row(const LetterboxParams& p) {
    extern __shared__ float shared[];
    const int32_t y = blockIdx.x;
    const int32_t image = blockIdx.y;
    const uint64_t plane_elems = static_cast<uint64_t>(p.out_w) * p.out_h;
    __half* out = p.out + static_cast<uint64_t>(image) * 3 * plane_elems + static_cast<uint64_t>(y) * p.out_w;
    const __half pad = __float2half_rn(p.pad_value);
    const int32_t uy = y - p.pad_top;
    if (uy < 0 || uy >= p.new_h) {
        for (int32_t x = threadIdx.x; x < p.out_w; x += blockDim.x) {
            out[x] = pad;
            out[plane_elems + x] = pad;
            out[2 * plane_elems + x] = pad;
        }
        return;
    }

    const int32_t frame = image / p.eyes;
    const Rect eye = p.eye[image % p.eyes];
    const uint8_t* base = reinterpret_cast<const uint8_t*>(p.frames[frame]);
    const int32_t bps = sizeof(Sample);
    constexpr int32_t kPer = 16 / sizeof(Sample);

    // Luma samples [eye.x, eye.x + eye.w); chroma pairs [eye.x / 2, (eye.x + eye.w - 1) / 2].
    const int2 luma_span = chunk_span(eye.x, eye.x + eye.w - 1, 1, bps);
    const int2 chroma_span = chunk_span(eye.x / 2, (eye.x + eye.w - 1) / 2, 2, bps);
    float* luma_sums = shared;
    float* chroma_sums = luma_sums + skewed_len(luma_span.y * kPer);
    float* luma_out = chroma_sums + skewed_len(chroma_span.y * kPer);
    const int32_t luma_first = luma_span.x / bps;        // sample at luma_sums[skew(0)]
    const int32_t chroma_first = chroma_span.x / bps;    // interleaved element at chroma_sums[skew(0)]

    const AxisTaps ty = axis_taps(uy, p.scale_y, eye.y, eye.h, 1);
    const AxisTaps cy = axis_taps(uy, p.scale_y, eye.y, eye.h, 2);
    vertical_sums<Sample>(base, p.pitch, luma_span.x, luma_span.y, ty, luma_sums);
    vertical_sums<Sample>(base + p.chroma_offset, p.pitch, chroma_span.x, chroma_span.y, cy, chroma_sums);
    float luma_wy = 0.0f, chroma_wy = 0.0f;
    for (int32_t j = ty.first; j <= ty.last; ++j) luma_wy += ty.weight(j);
    for (int32_t j = cy.first; j <= cy.last; ++j) chroma_wy += cy.weight(j);
    __syncthreads();

    // Stored samples → code values (P016 keeps the code in the high bits).
    const float shift_div = static_cast<float>(1u << p.shift);
    for (int32_t u = threadIdx.x; u < p.new_w; u += blockDim.x) {
        const AxisTaps tx = axis_taps(u, p.scale_x, eye.x, eye.w, 1);
        float acc = 0.0f, wsum = 0.0f;
        for (int32_t i = tx.first; i <= tx.last; ++i) {
            const float w = tx.weight(i);
            acc = fmaf(w, luma_sums[skew(i - luma_first)], acc);
            wsum += w;
        }
        luma_out[u] = acc / (wsum * luma_wy * shift_div);
    }
    __syncthreads();

    for (int32_t x = threadIdx.x; x < p.out_w; x += blockDim.x) {
        const int32_t u = x - p.pad_left;
        if (u < 0 || u >= p.new_w) {
            out[x] = pad;
            out[plane_elems + x] = pad;
            out[2 * plane_elems + x] = pad;
            continue;
        }
        const AxisTaps cx = axis_taps(u, p.scale_x, eye.x, eye.w, 2);
        float cb = 0.0f, cr = 0.0f, wsum = 0.0f;
        for (int32_t i = cx.first; i <= cx.last; ++i) {
            const float w = cx.weight(i);
            const int32_t e = 2 * i - chroma_first;
            cb = fmaf(w, chroma_sums[skew(e)], cb);
            cr = fmaf(w, chroma_sums[skew(e + 1)], cr);
            wsum += w;
        }
        const float norm = 1.0f / (wsum * chroma_wy * shift_div);
        const float yn = (luma_out[u] - p.y_offset) * p.y_scale;
        const float pb = (cb * norm - p.c_offset) * p.c_scale;
        const float pr = (cr * norm - p.c_offset) * p.c_scale;
        out[x] = __float2half_rn(__saturatef(yn + p.r_cr * pr));
        out[plane_elems + x] = __float2half_rn(__saturatef(yn + p.g_cb * pb + p.g_cr * pr));
        out[2 * plane_elems + x] = __float2half_rn(__saturatef(yn + p.b_cb * pb));
    }
}

}  // namespace

// grid (out_h, frames * eyes), block 256, dynamic shared memory
// `letterbox_shared_bytes` in src/ops/letterbox.rs. Frame pointers, pitch and
// chroma offset are multiples of 16 (checked by the launcher).
VRSEG_KERNEL void __launch_bounds__(kThreads) letterbox_nv12_f16(const LetterboxParams p) { letterbox_row<uint8_t>(p); }
VRSEG_KERNEL void __launch_bounds__(kThreads) letterbox_p016_f16(const LetterboxParams p) { letterbox_row<uint16_t>(p); }

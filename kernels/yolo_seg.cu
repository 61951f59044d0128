// Postprocess for YOLO-seg heads as Ultralytics exports them:
//   output0 [B, 4 + nc + nm, A]  (cx, cy, w, h, class scores, mask coefficients)
//   output1 [B, nm, ph, pw]      (mask prototypes)
// Four launches per batch, all on one stream, nothing copied to the host but
// the detections:
//   1. yolo_seg_candidates  score filter + class filter, compacted per image
//   2. yolo_seg_nms         sort by score, class-aware greedy NMS, top max_det
//   3. yolo_seg_mask_logits coefficients x prototypes for every kept instance
//   4. yolo_seg_matte       per source pixel: undo the letterbox, bilinear
//                           logit, crop to the box, union over instances,
//                           8-bit alpha into the output frame (logits staged
//                           in shared memory; yolo_seg_matte_direct, for eyes
//                           far smaller than the prototypes, reads them from
//                           global memory)
// The CPU twin of each step is in src/ops/yolo_seg.rs; semantics follow
// ultralytics 8.4.190 (utils/nms.py non_max_suppression, torchvision nms,
// utils/ops.py scale_boxes / crop_mask), differences noted there.
#include "common.cuh"

#include <cfloat>

namespace {

constexpr int kNmsThreads = 256;
constexpr int kLogitGroup = 8;  // detections per block of yolo_seg_mask_logits (LOGIT_GROUP in yolo_seg.rs)
constexpr int kSharedSortKeys = 2048;  // 16 KiB of u64 keys (static shared memory stays under 48 KiB)
constexpr float kMaxWh = 7680.0f;      // Ultralytics' class offset for class-aware NMS

struct Detection {
    float x1, y1, x2, y2;  // letterboxed model-input pixels
    float sx1, sy1, sx2, sy2;  // the eye's source pixels (scale_boxes, clipped)
    float score;
    int32_t cls;
    int32_t anchor;
    int32_t image;
};

struct Rect {
    int32_t x, y, w, h;
};

// Mirrors `YoloSegParams` in src/ops/yolo_seg.rs field for field.
struct YoloSegParams {
    const float* output0;      // [B, 4 + nc + nm, A]
    const float* protos;       // [B, nm, ph, pw]
    unsigned long long* keys;  // [B, key_stride] candidate sort keys
    uint32_t* candidate_counts;  // [B]
    Detection* detections;     // [B, max_det]
    uint32_t* detection_counts;  // [B]
    float* logits;             // [B, max_det, ph * pw]
    uint8_t* matte;            // output frames, one per `frames`, `matte_pitch` bytes per row
    uint64_t matte_frame_stride;  // bytes between frames of the matte batch
    uint64_t matte_pitch;
    int32_t batch, nc, nm, anchors;
    int32_t proto_h, proto_w;
    int32_t key_stride;        // power of two >= anchors
    int32_t max_det, max_nms;  // max_det: detections stride per image (planned)
    int32_t keep_limit;        // detections kept per image (<= max_det)
    float conf, iou;
    uint32_t class_mask[4];    // bit c set: class c is kept (nc <= 128)
    int32_t agnostic;
    int32_t binary;
    // Letterbox geometry (same for every eye of the batch).
    int32_t in_w, in_h, new_w, new_h, pad_left, pad_top;
    int32_t eyes;
    Rect eye[2];
};

__device__ __forceinline__ bool class_kept(const YoloSegParams& p, int32_t c) {
    return (p.class_mask[c >> 5] >> (c & 31)) & 1u;
}

// Descending order on this key = score descending, then anchor ascending.
// Scores are sigmoid outputs (>= 0), whose IEEE bits order like the values.
// The low word holds (2^24 - 1 - anchor) above the class, so NMS needs no
// second argmax over the class scores (anchors < 2^24, classes < 256).
__device__ __forceinline__ unsigned long long sort_key(float score, int32_t anchor, int32_t cls) {
    const uint32_t low = ((0xFFFFFFu - static_cast<uint32_t>(anchor)) << 8) | static_cast<uint32_t>(cls);
    return (static_cast<unsigned long long>(__float_as_uint(score)) << 32) | low;
}

__device__ __forceinline__ int32_t key_anchor(unsigned long long key) {
    return static_cast<int32_t>(0xFFFFFFu - (static_cast<uint32_t>(key & 0xFFFFFFFFull) >> 8));
}

__device__ __forceinline__ int32_t key_class(unsigned long long key) { return static_cast<int32_t>(key & 0xFFull); }

// Box (x1, y1, x2, y2) with the class offset, computed exactly as the CPU
// reference does: f32, each operation rounded (no FMA contraction).
struct Box {
    float x1, y1, x2, y2;
};

__device__ __forceinline__ Box nms_box(const YoloSegParams& p, int32_t image, int32_t anchor, int32_t cls) {
    const float* col = p.output0 + static_cast<uint64_t>(image) * (4 + p.nc + p.nm) * p.anchors + anchor;
    const uint64_t a = p.anchors;
    const float cx = col[0], cy = col[a], w = col[2 * a], h = col[3 * a];
    const float hw = __fdiv_rn(w, 2.0f), hh = __fdiv_rn(h, 2.0f);
    const float off = p.agnostic ? 0.0f : __fmul_rn(static_cast<float>(cls), kMaxWh);
    return Box{__fadd_rn(__fsub_rn(cx, hw), off), __fadd_rn(__fsub_rn(cy, hh), off), __fadd_rn(__fadd_rn(cx, hw), off),
               __fadd_rn(__fadd_rn(cy, hh), off)};
}

// torchvision's test: suppressed when inter / (area_a + area_b - inter) > iou.
__device__ __forceinline__ bool overlaps(const Box& a, const Box& b, float iou) {
    const float area_a = __fmul_rn(__fsub_rn(a.x2, a.x1), __fsub_rn(a.y2, a.y1));
    const float area_b = __fmul_rn(__fsub_rn(b.x2, b.x1), __fsub_rn(b.y2, b.y1));
    const float w = fmaxf(0.0f, __fsub_rn(fminf(a.x2, b.x2), fmaxf(a.x1, b.x1)));
    const float h = fmaxf(0.0f, __fsub_rn(fminf(a.y2, b.y2), fmaxf(a.y1, b.y1)));
    const float inter = __fmul_rn(w, h);
    return __fdiv_rn(inter, __fsub_rn(__fadd_rn(area_a, area_b), inter)) > iou;
}

// Bitonic sort, descending, of n_pow2 keys by one block.
__device__ void bitonic_sort_desc(unsigned long long* keys, int32_t n_pow2) {
    for (int32_t size = 2; size <= n_pow2; size <<= 1) {
        for (int32_t stride = size >> 1; stride > 0; stride >>= 1) {
            for (int32_t i = threadIdx.x; i < n_pow2; i += blockDim.x) {
                const int32_t j = i ^ stride;
                if (j > i) {
                    const bool descending = (i & size) == 0;
                    const unsigned long long a = keys[i], b = keys[j];
                    if (descending ? (a < b) : (a > b)) {
                        keys[i] = b;
                        keys[j] = a;
                    }
                }
            }
            __syncthreads();
        }
    }
}

}  // namespace

// grid (ceil(A / 32), B), block (32, kClassGroups); candidate_counts zeroed
// before. Each anchor's class scores are split over kClassGroups threads
// (group g reads classes g, g + 8, ...), all of a thread's loads issued
// before its compares: the kernel waits on memory about once instead of
// once per class, over enough blocks to fill the GPU.
constexpr int32_t kClassGroups = 8;
constexpr int32_t kClassesPerThread = 128 / kClassGroups;  // nc <= 128
VRSEG_KERNEL void yolo_seg_candidates(const YoloSegParams p) {
    __shared__ float group_best[kClassGroups][32];
    __shared__ int32_t group_class[kClassGroups][32];
    const int32_t anchor = blockIdx.x * 32 + threadIdx.x;
    const int32_t image = blockIdx.y;
    const int32_t g = threadIdx.y;
    float best = -FLT_MAX;
    int32_t best_class = p.nc;  // past every class: loses every tie below
    if (anchor < p.anchors) {
        const float* scores = p.output0 + (static_cast<uint64_t>(image) * (4 + p.nc + p.nm) + 4) * p.anchors + anchor;
        float s[kClassesPerThread];
#pragma unroll
        for (int32_t k = 0; k < kClassesPerThread; ++k) {
            const int32_t c = g + k * kClassGroups;
            s[k] = c < p.nc ? __ldg(scores + static_cast<uint64_t>(c) * p.anchors) : -FLT_MAX;
        }
        // Ascending classes with a strict compare: the first maximal one.
#pragma unroll
        for (int32_t k = 0; k < kClassesPerThread; ++k) {
            const int32_t c = g + k * kClassGroups;
            if (c < p.nc && s[k] > best) {
                best = s[k];
                best_class = c;
            }
        }
    }
    group_best[g][threadIdx.x] = best;
    group_class[g][threadIdx.x] = best_class;
    __syncthreads();
    if (g != 0 || anchor >= p.anchors) return;
    // torch's max(1): the highest score, the lowest class among equals.
    for (int32_t other = 1; other < kClassGroups; ++other) {
        const float v = group_best[other][threadIdx.x];
        const int32_t c = group_class[other][threadIdx.x];
        if (v > best || (v == best && c < best_class)) {
            best = v;
            best_class = c;
        }
    }
    if (!(best > p.conf) || best_class >= p.nc || !class_kept(p, best_class)) return;
    const uint32_t slot = atomicAdd(&p.candidate_counts[image], 1u);
    // slot < anchors always: each anchor is counted at most once.
    p.keys[static_cast<uint64_t>(image) * p.key_stride + slot] = sort_key(best, anchor, best_class);
}

// grid (B), block kNmsThreads.
VRSEG_KERNEL void yolo_seg_nms(const YoloSegParams p) {
    const int32_t image = blockIdx.x;
    __shared__ unsigned long long shared_keys[kSharedSortKeys];
    __shared__ Box kept_boxes[1024];
    __shared__ Box chunk_boxes[kNmsThreads];
    __shared__ uint32_t chunk_masks[kNmsThreads][kNmsThreads / 32];
    __shared__ int32_t chunk_keep[kNmsThreads];
    __shared__ int32_t kept_count;

    unsigned long long* global_keys = p.keys + static_cast<uint64_t>(image) * p.key_stride;
    const int32_t n_all = min(static_cast<int32_t>(p.candidate_counts[image]), p.anchors);
    int32_t n_pow2 = 1;
    while (n_pow2 < n_all) n_pow2 <<= 1;
    unsigned long long* keys = n_pow2 <= kSharedSortKeys ? shared_keys : global_keys;
    for (int32_t i = threadIdx.x; i < n_pow2; i += blockDim.x) {
        // Padding keys are 0: below every real key (a real score is > conf >= 0
        // or its anchor bits are nonzero), so they sort last.
        keys[i] = i < n_all ? global_keys[i] : 0ull;
    }
    if (threadIdx.x == 0) kept_count = 0;
    __syncthreads();
    if (n_all > 1) bitonic_sort_desc(keys, n_pow2);
    const int32_t n = min(n_all, p.max_nms);
    const int32_t max_kept = min(min(p.keep_limit, p.max_det), 1024);

    for (int32_t base = 0; base < n; base += kNmsThreads) {
        const int32_t count = min(kNmsThreads, n - base);
        const int32_t t = threadIdx.x;
        const int32_t kept_before = kept_count;
        if (kept_before >= max_kept) break;
        // a. Each candidate against the boxes kept by earlier chunks.
        bool alive = false;
        Box box{};
        int32_t anchor = 0, cls = 0;
        if (t < count) {
            anchor = key_anchor(keys[base + t]);
            cls = key_class(keys[base + t]);
            box = nms_box(p, image, anchor, cls);
            alive = true;
            for (int32_t k = 0; k < kept_before && alive; ++k) alive = !overlaps(kept_boxes[k], box, p.iou);
            chunk_boxes[t] = box;
        }
        chunk_keep[t] = alive ? 1 : 0;
        __syncthreads();
        // b. Which later candidates of this chunk each one would suppress.
        for (int32_t w = 0; w < kNmsThreads / 32; ++w) {
            uint32_t bits = 0;
            if (t < count) {
                for (int32_t b = 0; b < 32; ++b) {
                    const int32_t j = w * 32 + b;
                    if (j > t && j < count && overlaps(box, chunk_boxes[j], p.iou)) bits |= 1u << b;
                }
            }
            chunk_masks[t][w] = bits;
        }
        __syncthreads();
        // c. Greedy scan in score order (one thread; 256 steps of 8 words).
        if (t == 0) {
            uint32_t removed[kNmsThreads / 32] = {};
            int32_t kept = kept_before;
            for (int32_t i = 0; i < count; ++i) {
                const bool gone = (removed[i >> 5] >> (i & 31)) & 1u;
                if (!chunk_keep[i] || gone || kept >= max_kept) {
                    chunk_keep[i] = 0;
                    continue;
                }
                chunk_keep[i] = kept + 1;  // 1-based output slot
                kept_boxes[kept] = chunk_boxes[i];
                ++kept;
                for (int32_t w = 0; w < kNmsThreads / 32; ++w) removed[w] |= chunk_masks[i][w];
            }
            kept_count = kept;
        }
        __syncthreads();
        // d. Kept candidates write their detection.
        if (t < count && chunk_keep[t] > 0) {
            Detection d;
            const float off = p.agnostic ? 0.0f : __fmul_rn(static_cast<float>(cls), kMaxWh);
            d.x1 = __fsub_rn(box.x1, off);
            d.y1 = __fsub_rn(box.y1, off);
            d.x2 = __fsub_rn(box.x2, off);
            d.y2 = __fsub_rn(box.y2, off);
            // scale_boxes (8.4.190): subtract the pad, divide by the per-axis
            // gain new/eye, clip to [0, eye size].
            const Rect e = p.eye[image % p.eyes];
            const float gx = __fdiv_rn(static_cast<float>(p.new_w), static_cast<float>(e.w));
            const float gy = __fdiv_rn(static_cast<float>(p.new_h), static_cast<float>(e.h));
            const float fw = static_cast<float>(e.w), fh = static_cast<float>(e.h);
            d.sx1 = fminf(fmaxf(__fdiv_rn(__fsub_rn(d.x1, static_cast<float>(p.pad_left)), gx), 0.0f), fw);
            d.sy1 = fminf(fmaxf(__fdiv_rn(__fsub_rn(d.y1, static_cast<float>(p.pad_top)), gy), 0.0f), fh);
            d.sx2 = fminf(fmaxf(__fdiv_rn(__fsub_rn(d.x2, static_cast<float>(p.pad_left)), gx), 0.0f), fw);
            d.sy2 = fminf(fmaxf(__fdiv_rn(__fsub_rn(d.y2, static_cast<float>(p.pad_top)), gy), 0.0f), fh);
            d.score = __uint_as_float(static_cast<uint32_t>(keys[base + t] >> 32));
            d.cls = cls;
            d.anchor = anchor;
            d.image = image;
            p.detections[static_cast<uint64_t>(image) * p.max_det + chunk_keep[t] - 1] = d;
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) p.detection_counts[image] = kept_count;
}

// grid (ceil(ph * pw / 256), B, Z), block 256: logits[b][k][pixel] for the
// kept detections k of image b, in groups of kLogitGroup; z-slice z takes
// groups z, z + Z, ... Slices with no group (the kept count is known only on
// the device) return at once, and a few instances spread over several slices
// of blocks instead of looping in one.
VRSEG_KERNEL void yolo_seg_mask_logits(const YoloSegParams p) {
    constexpr int kMaxCoeff = 32;  // nm <= 32 (MAX_MASK_COEFFICIENTS; YOLO-seg heads have 32)
    __shared__ float coeff[kLogitGroup][kMaxCoeff];
    const int32_t image = blockIdx.y;
    const int32_t kept = min(static_cast<int32_t>(p.detection_counts[image]), p.max_det);
    if (static_cast<int32_t>(blockIdx.z) * kLogitGroup >= kept) return;  // uniform
    const int32_t pixels = p.proto_h * p.proto_w;
    const int32_t pixel = blockIdx.x * blockDim.x + threadIdx.x;
    float proto[kMaxCoeff];
    if (pixel < pixels) {
        const float* src = p.protos + static_cast<uint64_t>(image) * p.nm * pixels + pixel;
#pragma unroll
        for (int32_t c = 0; c < kMaxCoeff; ++c) proto[c] = c < p.nm ? src[static_cast<uint64_t>(c) * pixels] : 0.0f;
    }
    const float* head = p.output0 + static_cast<uint64_t>(image) * (4 + p.nc + p.nm) * p.anchors;
    for (int32_t first = blockIdx.z * kLogitGroup; first < kept; first += gridDim.z * kLogitGroup) {
        const int32_t in_group = min(kLogitGroup, kept - first);
        __syncthreads();  // the previous group's coefficients are consumed
        // Every coefficient slot is written, zero past nm: the products below run
        // over all kMaxCoeff, and stale shared memory could hold a NaN (NaN * 0
        // is NaN).
        for (int32_t i = threadIdx.x; i < kLogitGroup * kMaxCoeff; i += blockDim.x) {
            const int32_t k = i / kMaxCoeff, c = i % kMaxCoeff;
            float v = 0.0f;
            if (k < in_group && c < p.nm) {
                const Detection& d = p.detections[static_cast<uint64_t>(image) * p.max_det + first + k];
                v = head[static_cast<uint64_t>(4 + p.nc + c) * p.anchors + d.anchor];
            }
            coeff[k][c] = v;
        }
        __syncthreads();
        if (pixel < pixels) {
            for (int32_t k = 0; k < in_group; ++k) {
                float acc = 0.0f;
#pragma unroll
                for (int32_t c = 0; c < kMaxCoeff; ++c) acc = fmaf(coeff[k][c], proto[c], acc);
                p.logits[(static_cast<uint64_t>(image) * p.max_det + first + k) * pixels + pixel] = acc;
            }
        }
    }
}

namespace {

// yolo_seg_matte's block: 32 x 8 threads, each writing 8 horizontally
// adjacent pixels (one 8-byte store; a warp stores 256 contiguous bytes) in
// each of 4 rows, so a block's tile is 256 pixels by 32 rows.
constexpr int kMattePixels = 8;
constexpr int kMatteThreadsX = 32;
constexpr int kMatteRows = 8;
constexpr int kMatteTileW = kMatteThreadsX * kMattePixels;  // 256 pixels
constexpr int kMatteTilesPerBlock = 4;  // MATTE_TILES_PER_BLOCK in yolo_seg.rs
constexpr int kTileList = 128;
// Staged (value, slope) pairs per block: 24 KiB.
constexpr int kStagePairs = 3072;

// Where a source pixel's centre falls on one proto axis (the exact inverse of
// the letterbox, clamped to the proto pixels the unpadded picture covers:
// scale_masks' crop): left sample index and the fraction towards the next.
// A plain struct (it lives in shared memory too: one thread of a matte block
// computes it, sparing every thread its divisions).
struct ProtoAxis {
    float origin, step;
    int32_t lo, hi;

    __device__ static ProtoAxis make(int32_t pad, int32_t new_len, int32_t eye_len, int32_t in_len,
                                     int32_t proto_len) {
        ProtoAxis a;
        const float stride = static_cast<float>(in_len) / proto_len;
        a.step = static_cast<float>(new_len) / eye_len / stride;
        a.origin = pad / stride - 0.5f;
        a.lo = static_cast<int32_t>(floorf(pad / stride));
        a.hi = min(static_cast<int32_t>(ceilf((pad + new_len) / stride)) - 1, proto_len - 1);
        return a;
    }

    __device__ __forceinline__ int32_t sample(int32_t pixel, float* frac) const {
        const float f = fmaxf(origin + (pixel + 0.5f) * step, static_cast<float>(lo));
        const int32_t i = min(static_cast<int32_t>(floorf(f)), hi);
        *frac = f - i;
        return i;
    }
};

__device__ __forceinline__ float tanh_approx(float x) {
    float y;
    asm("tanh.approx.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// The matte kernels carry half logits (h = logit / 2, an exact scaling that
// keeps the sign), because 255 * sigmoid(2h) = 127.5 + 127.5 * tanh(h): one
// MUFU.TANH instead of an exponential and a reciprocal, and no multiply (the
// matte is bound by issued instructions). tanh.approx's absolute error
// (< 2^-10.9) is under 0.07 LSB here; the CPU reference rounds the exact
// sigmoid. The FMA adds 1.5 * 2^23, so its one rounding (to the nearest
// integer, ties to even, like __float2uint_rn) leaves the alpha in the low
// byte of the result's bits, where a byte permute picks it up (no F2I, which
// issues at a quarter of the FMA rate). A pixel no instance covers
// (h = -FLT_MAX) gives tanh = -1, alpha 0. Binary: 255 where h > 0.
__device__ __forceinline__ uint32_t alpha_bits(float half_logit, bool binary) {
    if (binary) return half_logit > 0.0f ? 255u : 0u;
    return __float_as_uint(fmaf(127.5f, tanh_approx(half_logit), 12582912.0f + 127.5f));
}

// Eight pixels' alpha (the low byte of each alpha_bits), packed little-endian.
__device__ __forceinline__ uint2 pack_alpha(const uint32_t (&bits)[8]) {
    uint2 v;
    v.x = __byte_perm(__byte_perm(bits[0], bits[1], 0x0040), __byte_perm(bits[2], bits[3], 0x0040), 0x5410);
    v.y = __byte_perm(__byte_perm(bits[4], bits[5], 0x0040), __byte_perm(bits[6], bits[7], 0x0040), 0x5410);
    return v;
}

// crop_mask keeps pixel index i when x1 <= i < x2: does the box touch the
// pixel rectangle [x0, x1) x [y0, y1)?
__device__ __forceinline__ bool box_touches(const Detection& d, int32_t x0, int32_t x1, int32_t y0, int32_t y1) {
    return d.sx2 > x0 && d.sx1 < x1 && d.sy2 > y0 && d.sy1 < y1;
}

// Stores one thread's run of alpha bytes, packed little-endian in `alpha`
// (one 8-byte store where aligned).
__device__ __forceinline__ void store_alpha(uint8_t* out, uint2 alpha, int32_t count) {
    if (count == kMattePixels && (reinterpret_cast<uintptr_t>(out) & 7) == 0) {
        *reinterpret_cast<uint2*>(out) = alpha;
    } else {
#pragma unroll
        for (int32_t i = 0; i < kMattePixels; ++i) {
            if (i < count) out[i] = static_cast<uint8_t>((i < 4 ? alpha.x : alpha.y) >> (8 * (i % 4)));
        }
    }
}

// Zeros for this thread's run of pixels in rows [y0, y1) (every 8th row
// from y0 + threadIdx.y) of the tile column starting at tile_x0.
__device__ __forceinline__ void matte_zero_rows(const YoloSegParams& p, int32_t image, const Rect& e, int32_t tile_x0,
                                             int32_t y0, int32_t y1) {
    const int32_t x_first = tile_x0 + threadIdx.x * kMattePixels;
    if (x_first >= e.w) return;
    const int32_t count = min(kMattePixels, e.w - x_first);
    uint8_t* frame = p.matte + static_cast<uint64_t>(image / p.eyes) * p.matte_frame_stride;
    const uint2 zeros = make_uint2(0, 0);
    for (int32_t y = y0 + threadIdx.y; y < y1; y += kMatteRows) {
        store_alpha(frame + static_cast<uint64_t>(e.y + y) * p.matte_pitch + e.x + x_first, zeros, count);
    }
}

struct MatteShared {
    int32_t tile_list[kTileList];
    // The listed instances' crop boxes as the first and one-past-last pixel
    // kept on each axis: ceil(sx1), ceil(sy1), ceil(sx2), ceil(sy2) (an
    // integer x satisfies sx1 <= x < sx2 exactly when
    // ceil(sx1) <= x < ceil(sx2)).
    int4 tile_box[kTileList];
    int32_t tile_count;
    ProtoAxis ax, ay;
    float2 stage[kStagePairs];
};

__device__ __forceinline__ int4 pixel_box(const Detection& d) {
    return make_int4(static_cast<int32_t>(ceilf(d.sx1)), static_cast<int32_t>(ceilf(d.sy1)),
                     static_cast<int32_t>(ceilf(d.sx2)), static_cast<int32_t>(ceilf(d.sy2)));
}

// Stores one thread's run of alpha bytes, or, for a later group of
// instances, the bytewise max of them and what the thread stored before
// (the union of all instances: the 8-bit alpha is monotone in the logit, so
// the max of per-group alphas is the alpha of the max logit).
__device__ __forceinline__ void merge_alpha(uint8_t* out, uint2 alpha, int32_t count, bool first_group) {
    if (!first_group) {
        uint2 before = make_uint2(0, 0);
        if (count == kMattePixels && (reinterpret_cast<uintptr_t>(out) & 7) == 0) {
            before = *reinterpret_cast<const uint2*>(out);
        } else {
#pragma unroll
            for (int32_t i = 0; i < kMattePixels; ++i) {
                if (i < count) (i < 4 ? before.x : before.y) |= static_cast<uint32_t>(out[i]) << (8 * (i % 4));
            }
        }
        alpha = make_uint2(__vmaxu4(alpha.x, before.x), __vmaxu4(alpha.y, before.y));
    }
    store_alpha(out, alpha, count);
}

// The block's tile: 256 x 32 pixels of one eye (kMatteTilesPerBlock * 8
// rows); thread (x, y) does the 8 pixels from tile_x0 + 8 x in rows
// y, y + 8, y + 16, y + 24, so the list of instances, the stage and the
// pixels' column mapping serve 4 rows. Every thread of the block calls it.
//
// The kept instances whose crop box touches the tile are listed (with more
// instances than the list holds, every pixel tests every instance). A tile
// with none stores zeros. Otherwise, for groups of listed instances (one
// group unless more than fit the stage), each warp stages in shared memory
// each instance's logit interpolated to its own 4 rows at every proto
// column the tile spans, as (value, slope to the next column) pairs, and
// then reads them back for its pixels. kStaged false (yolo_seg_matte_direct):
// the host found the span too wide to stage; logits are sampled in global
// memory instead.
template <bool kStaged>
__device__ __forceinline__ void matte_tile(const YoloSegParams& p, MatteShared& sh, int32_t image, const Rect& e,
                                           int32_t kept, int32_t tile_x0, int32_t tile_y0) {
    constexpr int R = kMatteTilesPerBlock;
    const int32_t tile_x1 = min(tile_x0 + kMatteTileW, e.w), tile_y1 = min(tile_y0 + kMatteRows * R, e.h);
    const Detection* dets = p.detections + static_cast<uint64_t>(image) * p.max_det;
    uint8_t* frame = p.matte + static_cast<uint64_t>(image / p.eyes) * p.matte_frame_stride;
    const int32_t flat = threadIdx.y * kMatteThreadsX + threadIdx.x;
    const int32_t x_first = tile_x0 + threadIdx.x * kMattePixels;
    const int32_t count = x_first < e.w ? min(kMattePixels, e.w - x_first) : 0;

    const bool all_listed = kept > kTileList;
    if (flat == 0) {
        sh.tile_count = 0;
        sh.ax = ProtoAxis::make(p.pad_left, p.new_w, e.w, p.in_w, p.proto_w);
        sh.ay = ProtoAxis::make(p.pad_top, p.new_h, e.h, p.in_h, p.proto_h);
    }
    __syncthreads();
    if (!all_listed) {
        for (int32_t k = flat; k < kept; k += blockDim.x * blockDim.y) {
            const Detection& d = dets[k];
            if (box_touches(d, tile_x0, tile_x1, tile_y0, tile_y1)) {
                const int32_t slot = atomicAdd(&sh.tile_count, 1);
                sh.tile_list[slot] = k;
                sh.tile_box[slot] = pixel_box(d);
            }
        }
    }
    __syncthreads();
    const int32_t n_list = all_listed ? kept : sh.tile_count;
    if (n_list == 0) {  // uniform: the block check was conservative
        matte_zero_rows(p, image, e, tile_x0, tile_y0, tile_y1);
        return;
    }

    const ProtoAxis ax = sh.ax, ay = sh.ay;
    const uint64_t pixels = static_cast<uint64_t>(p.proto_h) * p.proto_w;
    const float* logits = p.logits + static_cast<uint64_t>(image) * p.max_det * pixels;
    float unused;
    const int32_t col_first = ax.sample(tile_x0, &unused);
    const int32_t cols = ax.sample(tile_x1 - 1, &unused) - col_first + 1;
    const int32_t rows = tile_y1 - tile_y0;
    const int32_t per_instance = rows * cols;
    // The host's bound (matte_is_staged) makes this impossible; were it
    // wrong, stop loudly (a launch failure) rather than write past the stage.
    if (kStaged && (per_instance > kStagePairs || cols > 255)) __trap();
    const int32_t group = kStaged ? kStagePairs / per_instance : n_list;

    // Lanes stage (row, column) pairs: `width` (a power of two >= cols, at
    // most 32) lanes per row, this warp's rows only.
    const int32_t width = cols > 16 ? 32 : cols > 8 ? 16 : cols > 4 ? 8 : 4;
    const int32_t lane_col = threadIdx.x & (width - 1), lane_row = threadIdx.x / width;

    // This thread's pixels in proto space, the same for every row and
    // instance. Column offsets from col_first take one byte each (a staged
    // tile spans at most 255 columns; the direct path recomputes columns).
#define VRSEG_OFFSET(i) static_cast<int32_t>((offsets[(i) / 4] >> (8 * ((i) % 4))) & 0xFFu)
    uint32_t offsets[kMattePixels / 4] = {};
    float ta[kMattePixels], tb[kMattePixels];
#pragma unroll
    for (int32_t i = 0; i < kMattePixels; ++i) {
        const uint32_t o = ax.sample(x_first + min(i, max(count - 1, 0)), &ta[i]) - col_first;
        offsets[i / 4] |= min(o, 255u) << (8 * (i % 4));
        tb[i] = 0.0f;
    }
    // A run of 8 pixels almost always spans one or two proto columns (it
    // does whenever the eye has more than 7 pixels per column, every video
    // eye). Then, since the bilinear logit is continuous across a column
    // boundary (value[c + 1] = value[c] + slope[c]), pixel i's logit is
    //   value[c0] + ta[i] * slope[c0] + tb[i] * slope[c0 + 1]
    // with (ta, tb) = (frac, 0) in column c0 and (1, frac) in column c0 + 1:
    // two shared loads per instance and row instead of eight, two FMAs per
    // pixel. Wider runs load one (value, slope) pair per pixel.
    const int32_t o_first = VRSEG_OFFSET(0), o_last = VRSEG_OFFSET(kMattePixels - 1);
    const bool narrow = kStaged && o_last - o_first <= 1;
    if (narrow) {
#pragma unroll
        for (int32_t i = 0; i < kMattePixels; ++i) {
            if (VRSEG_OFFSET(i) != o_first) {
                tb[i] = ta[i];
                ta[i] = 1.0f;
            }
        }
    }

    for (int32_t g0 = 0; g0 < n_list; g0 += group) {  // uniform
        const int32_t in_group = min(group, n_list - g0);
        if (kStaged) {
            __syncwarp();  // this warp's readers of the previous group are done
            for (int32_t j = lane_row; j < R; j += kMatteThreadsX / width) {
                const int32_t r = threadIdx.y + j * kMatteRows;
                if (r >= rows) break;
                float fy;
                const int32_t sy0 = ay.sample(tile_y0 + r, &fy);
                const int32_t sy1 = min(sy0 + 1, ay.hi);
                for (int32_t l = 0; l < in_group; ++l) {
                    const int32_t k = all_listed ? g0 + l : sh.tile_list[g0 + l];
                    const float* L0 = logits + static_cast<uint64_t>(k) * pixels + sy0 * p.proto_w;
                    const float* L1 = logits + static_cast<uint64_t>(k) * pixels + sy1 * p.proto_w;
                    for (int32_t i = lane_col; i < cols; i += width) {
                        const int32_t c = col_first + i, c1 = min(c + 1, ax.hi);
                        const float a0 = __ldg(L0 + c), a1 = __ldg(L1 + c);
                        const float b0 = __ldg(L0 + c1), b1 = __ldg(L1 + c1);
                        const float v = (1.0f - fy) * a0 + fy * a1;
                        const float w = (1.0f - fy) * b0 + fy * b1;
                        sh.stage[(l * rows + r) * cols + i] = make_float2(0.5f * v, 0.5f * (w - v));  // half logits
                    }
                }
            }
            __syncwarp();
        }

        // Not unrolled: copies of the instance loop would cost registers.
#pragma unroll 1
        for (int32_t j = 0; j < R; ++j) {
            const int32_t r = threadIdx.y + j * kMatteRows;
            const int32_t y = tile_y0 + r;
            if (y >= tile_y1 || count == 0) continue;
            float best[kMattePixels];  // half logits
#pragma unroll
            for (int32_t i = 0; i < kMattePixels; ++i) best[i] = -FLT_MAX;
            bool any = false;
            for (int32_t l = 0; l < in_group; ++l) {
                const int32_t k = all_listed ? g0 + l : sh.tile_list[g0 + l];
                const int4 box = all_listed ? pixel_box(dets[k]) : sh.tile_box[g0 + l];
                if (y < box.y || y >= box.w) continue;
                // The box's pixels as indices into this thread's run.
                const int32_t i_lo = min(max(box.x - x_first, 0), count);
                const int32_t i_hi = min(max(box.z - x_first, 0), count);
                if (i_lo >= i_hi) continue;
                any = true;
                // The whole run inside the box (the common case) takes loops
                // without per-pixel predicates.
                const bool full = i_lo == 0 && i_hi == kMattePixels;
                if constexpr (kStaged) {
                    const float2* row = sh.stage + (l * rows + r) * cols;
                    if (narrow) {
                        const float2 v0 = row[o_first];
                        const float s1 = row[o_last].y;
                        if (full) {
#pragma unroll
                            for (int32_t i = 0; i < kMattePixels; ++i) {
                                best[i] = fmaxf(best[i], fmaf(tb[i], s1, fmaf(ta[i], v0.y, v0.x)));
                            }
                        } else {
#pragma unroll
                            for (int32_t i = 0; i < kMattePixels; ++i) {
                                const float v = fmaf(tb[i], s1, fmaf(ta[i], v0.y, v0.x));
                                if (i >= i_lo && i < i_hi) best[i] = fmaxf(best[i], v);
                            }
                        }
                    } else {
#pragma unroll
                        for (int32_t i = 0; i < kMattePixels; ++i) {
                            if (full || (i >= i_lo && i < i_hi)) {
                                const float2 v = row[VRSEG_OFFSET(i)];
                                best[i] = fmaxf(best[i], fmaf(ta[i], v.y, v.x));
                            }
                        }
                    }
                } else {
                    float ly;
                    const int32_t y0 = ay.sample(y, &ly);
                    const int32_t y1 = min(y0 + 1, ay.hi);
                    const float* L = logits + static_cast<uint64_t>(k) * pixels;
                    const float* row0 = L + y0 * p.proto_w;
                    const float* row1 = L + y1 * p.proto_w;
#pragma unroll
                    for (int32_t i = 0; i < kMattePixels; ++i) {
                        if (i >= i_lo && i < i_hi) {
                            float fx;
                            const int32_t x0 = ax.sample(x_first + i, &fx), x1 = min(x0 + 1, ax.hi);
                            const float v = (1.0f - ly) * __ldg(row0 + x0) + ly * __ldg(row1 + x0);
                            const float w = (1.0f - ly) * __ldg(row0 + x1) + ly * __ldg(row1 + x1);
                            best[i] = fmaxf(best[i], 0.5f * fmaf(fx, w - v, v));
                        }
                    }
                }
            }
            // Pixels no instance covers stay 0, without the predicated
            // sigmoids the compiler would otherwise if-convert.
            uint2 alpha = make_uint2(0, 0);
            if (any) {
                uint32_t bits[kMattePixels];
#pragma unroll
                for (int32_t i = 0; i < kMattePixels; ++i) bits[i] = alpha_bits(best[i], p.binary);
                alpha = pack_alpha(bits);
            }
            merge_alpha(frame + static_cast<uint64_t>(e.y + y) * p.matte_pitch + e.x + x_first, alpha, count, g0 == 0);
        }
    }
#undef VRSEG_OFFSET
}

// grid (ceil(eye_w / 256), ceil(eye_h / 32), B), block (32, 8): one tile of
// 256 x 32 pixels per block (see matte_tile). A block no instance touches
// stores zeros after one check: most blocks of a frame. Image b is eye
// (b % eyes) of matte frame (b / eyes).
template <bool kStaged>
__device__ __forceinline__ void matte_entry(const YoloSegParams& p) {
    __shared__ MatteShared sh;
    const int32_t image = blockIdx.z;
    const Rect e = p.eye[image % p.eyes];
    const int32_t kept = min(static_cast<int32_t>(p.detection_counts[image]), p.max_det);
    const int32_t tile_x0 = blockIdx.x * kMatteTileW;
    const int32_t tile_y0 = blockIdx.y * kMatteTilesPerBlock * kMatteRows;
    const int32_t tile_x1 = min(tile_x0 + kMatteTileW, e.w);
    const int32_t tile_y1 = min(tile_y0 + kMatteTilesPerBlock * kMatteRows, e.h);
    const Detection* dets = p.detections + static_cast<uint64_t>(image) * p.max_det;
    bool touched = false;
    for (int32_t k = threadIdx.y * kMatteThreadsX + threadIdx.x; k < kept && !touched; k += blockDim.x * blockDim.y) {
        touched = box_touches(dets[k], tile_x0, tile_x1, tile_y0, tile_y1);
    }
    if (!__syncthreads_or(touched)) {
        matte_zero_rows(p, image, e, tile_x0, tile_y0, tile_y1);
        return;
    }
    matte_tile<kStaged>(p, sh, image, e, kept, tile_x0, tile_y0);
}

}  // namespace

VRSEG_KERNEL void __launch_bounds__(256, 3) yolo_seg_matte(const YoloSegParams p) { matte_entry<true>(p); }
VRSEG_KERNEL void __launch_bounds__(256, 3) yolo_seg_matte_direct(const YoloSegParams p) { matte_entry<false>(p); }

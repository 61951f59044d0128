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
//                           8-bit alpha into the output frame
// The CPU twin of each step is in src/ops/yolo_seg.rs; semantics follow
// ultralytics 8.4.190 (utils/nms.py non_max_suppression, torchvision nms,
// utils/ops.py scale_boxes / crop_mask), differences noted there.
#include "common.cuh"

#include <cfloat>

namespace {

constexpr int kNmsThreads = 256;
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
__device__ __forceinline__ unsigned long long sort_key(float score, int32_t anchor) {
    return (static_cast<unsigned long long>(__float_as_uint(score)) << 32) | (0xFFFFFFFFu - static_cast<uint32_t>(anchor));
}

__device__ __forceinline__ int32_t key_anchor(unsigned long long key) {
    return static_cast<int32_t>(0xFFFFFFFFu - static_cast<uint32_t>(key & 0xFFFFFFFFull));
}

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

// grid (ceil(A / 256), B), block 256. candidate_counts zeroed before.
VRSEG_KERNEL void yolo_seg_candidates(const YoloSegParams p) {
    const int32_t anchor = blockIdx.x * blockDim.x + threadIdx.x;
    const int32_t image = blockIdx.y;
    if (anchor >= p.anchors) return;
    const float* scores = p.output0 + (static_cast<uint64_t>(image) * (4 + p.nc + p.nm) + 4) * p.anchors + anchor;
    // First maximal class, as torch's max(1) returns.
    float best = -FLT_MAX;
    int32_t best_class = 0;
    for (int32_t c = 0; c < p.nc; ++c) {
        const float s = scores[static_cast<uint64_t>(c) * p.anchors];
        if (s > best) {
            best = s;
            best_class = c;
        }
    }
    if (!(best > p.conf) || !class_kept(p, best_class)) return;
    const uint32_t slot = atomicAdd(&p.candidate_counts[image], 1u);
    // slot < anchors always: each anchor is counted at most once.
    p.keys[static_cast<uint64_t>(image) * p.key_stride + slot] = sort_key(best, anchor);
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
            const float* scores = p.output0 + (static_cast<uint64_t>(image) * (4 + p.nc + p.nm) + 4) * p.anchors + anchor;
            float best = -FLT_MAX;
            for (int32_t c = 0; c < p.nc; ++c) {
                const float s = scores[static_cast<uint64_t>(c) * p.anchors];
                if (s > best) {
                    best = s;
                    cls = c;
                }
            }
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

// grid (ceil(ph * pw / 256), B), block 256: logits[b][k][pixel] for every
// kept detection k of image b.
VRSEG_KERNEL void yolo_seg_mask_logits(const YoloSegParams p) {
    constexpr int kMaxCoeff = 64;  // nm <= 64 (YOLO-seg uses 32)
    constexpr int kGroup = 32;     // detections whose coefficients sit in shared memory at once
    __shared__ float coeff[kGroup][kMaxCoeff];
    const int32_t image = blockIdx.y;
    const int32_t pixels = p.proto_h * p.proto_w;
    const int32_t pixel = blockIdx.x * blockDim.x + threadIdx.x;
    const int32_t kept = p.detection_counts[image];
    float proto[kMaxCoeff];
    if (pixel < pixels) {
        const float* src = p.protos + static_cast<uint64_t>(image) * p.nm * pixels + pixel;
#pragma unroll
        for (int32_t c = 0; c < kMaxCoeff; ++c) proto[c] = c < p.nm ? src[static_cast<uint64_t>(c) * pixels] : 0.0f;
    }
    const float* head = p.output0 + static_cast<uint64_t>(image) * (4 + p.nc + p.nm) * p.anchors;
    for (int32_t group = 0; group < kept; group += kGroup) {
        const int32_t in_group = min(kGroup, kept - group);
        __syncthreads();
        // Every coefficient slot is written, zero past nm: the products below
        // run over all kMaxCoeff, and stale shared memory could hold a NaN
        // (NaN * 0 is NaN).
        for (int32_t i = threadIdx.x; i < in_group * kMaxCoeff; i += blockDim.x) {
            const int32_t k = i / kMaxCoeff, c = i % kMaxCoeff;
            const Detection& d = p.detections[static_cast<uint64_t>(image) * p.max_det + group + k];
            coeff[k][c] = c < p.nm ? head[static_cast<uint64_t>(4 + p.nc + c) * p.anchors + d.anchor] : 0.0f;
        }
        __syncthreads();
        if (pixel < pixels) {
            for (int32_t k = 0; k < in_group; ++k) {
                float acc = 0.0f;
#pragma unroll
                for (int32_t c = 0; c < kMaxCoeff; ++c) acc = fmaf(coeff[k][c], proto[c], acc);
                p.logits[(static_cast<uint64_t>(image) * p.max_det + group + k) * pixels + pixel] = acc;
            }
        }
    }
}

// Pixels per thread in yolo_seg_matte: one 16-byte store per thread where
// the row allows it.
constexpr int kMattePixels = 16;

// grid (ceil(eye_w / 256), ceil(eye_h / 16), B), block (16, 16); each thread
// writes 16 horizontally adjacent pixels of its eye in the matte frame.
// Image b is eye (b % eyes) of matte frame (b / eyes).
// 3 blocks of 256 per SM (<= 80 registers, no spill): the kernel is latency-bound.
VRSEG_KERNEL void __launch_bounds__(256, 3) yolo_seg_matte(const YoloSegParams p) {
    constexpr int kTileList = 128;
    __shared__ int32_t tile_list[kTileList];
    __shared__ int32_t tile_count;
    const int32_t image = blockIdx.z;
    const Rect e = p.eye[image % p.eyes];
    const int32_t tile_w = blockDim.x * kMattePixels;
    const int32_t tile_x0 = blockIdx.x * tile_w, tile_y0 = blockIdx.y * blockDim.y;
    const int32_t tile_x1 = min(tile_x0 + tile_w, e.w), tile_y1 = min(tile_y0 + static_cast<int32_t>(blockDim.y), e.h);
    const int32_t kept = p.detection_counts[image];
    const Detection* dets = p.detections + static_cast<uint64_t>(image) * p.max_det;
    uint8_t* frame = p.matte + static_cast<uint64_t>(image / p.eyes) * p.matte_frame_stride;

    // The instances whose crop box touches this tile; with more instances
    // than the list holds, every pixel tests every instance instead.
    const bool slow = kept > kTileList;
    if (threadIdx.x == 0 && threadIdx.y == 0) tile_count = 0;
    __syncthreads();
    if (!slow) {
        const int32_t flat = threadIdx.y * blockDim.x + threadIdx.x;
        for (int32_t k = flat; k < kept; k += blockDim.x * blockDim.y) {
            const Detection& d = dets[k];
            // crop_mask keeps pixel index i when x1 <= i < x2.
            if (d.sx2 > tile_x0 && d.sx1 < tile_x1 && d.sy2 > tile_y0 && d.sy1 < tile_y1) {
                tile_list[atomicAdd(&tile_count, 1)] = k;
            }
        }
    }
    __syncthreads();
    const int32_t n_list = slow ? kept : tile_count;

    const int32_t y = tile_y0 + threadIdx.y;
    const int32_t x_first = tile_x0 + threadIdx.x * kMattePixels;
    if (y >= e.h || x_first >= e.w) return;
    uint8_t* out = frame + static_cast<uint64_t>(e.y + y) * p.matte_pitch + e.x + x_first;
    const int32_t count = min(kMattePixels, e.w - x_first);
    const bool vector_store = count == kMattePixels && (reinterpret_cast<uintptr_t>(out) & 15) == 0;

    float best[kMattePixels];
#pragma unroll
    for (int32_t i = 0; i < kMattePixels; ++i) best[i] = -FLT_MAX;
    bool any = false;

    if (n_list > 0) {
        // Proto-space mapping of a source pixel centre (exact inverse of the
        // letterbox): letterbox coordinate pad + (x + 0.5) * new / eye, over
        // the proto stride, minus 0.5 for sample centres. Indices clamp to the
        // proto pixels the unpadded picture covers (scale_masks' crop).
        const float stride_x = static_cast<float>(p.in_w) / p.proto_w;
        const float stride_y = static_cast<float>(p.in_h) / p.proto_h;
        const float step_x = static_cast<float>(p.new_w) / e.w / stride_x;
        const float step_y = static_cast<float>(p.new_h) / e.h / stride_y;
        const float origin_x = p.pad_left / stride_x - 0.5f;
        const float origin_y = p.pad_top / stride_y - 0.5f;
        const int32_t lo_x = static_cast<int32_t>(floorf(p.pad_left / stride_x));
        const int32_t lo_y = static_cast<int32_t>(floorf(p.pad_top / stride_y));
        const int32_t hi_x = min(static_cast<int32_t>(ceilf((p.pad_left + p.new_w) / stride_x)) - 1, p.proto_w - 1);
        const int32_t hi_y = min(static_cast<int32_t>(ceilf((p.pad_top + p.new_h) / stride_y)) - 1, p.proto_h - 1);
        const float fy = fmaxf(origin_y + (y + 0.5f) * step_y, static_cast<float>(lo_y));
        const int32_t y0 = min(static_cast<int32_t>(floorf(fy)), hi_y);
        const int32_t y1 = min(y0 + 1, hi_y);
        const float ly = fy - y0;
        const uint64_t pixels = static_cast<uint64_t>(p.proto_h) * p.proto_w;
        const float py = static_cast<float>(y);
        for (int32_t l = 0; l < n_list; ++l) {
            const int32_t k = slow ? l : tile_list[l];
            const Detection& d = dets[k];
            if (!(py >= d.sy1 && py < d.sy2)) continue;
            if (!(static_cast<float>(x_first + count - 1) >= d.sx1 && static_cast<float>(x_first) < d.sx2)) continue;
            const float* row0 = p.logits + (static_cast<uint64_t>(image) * p.max_det + k) * pixels + y0 * p.proto_w;
            const float* row1 = row0 + (y1 - y0) * p.proto_w;
            // Vertically interpolated values at columns x0 and x0 + 1, reloaded
            // only when the column changes (about every 25 pixels at 4096 → 160).
            int32_t cached = -1;
            float left = 0.0f, right = 0.0f;
#pragma unroll
            for (int32_t i = 0; i < kMattePixels; ++i) {
                const float px = static_cast<float>(x_first + i);
                if (i < count && px >= d.sx1 && px < d.sx2) {
                    const float fx = fmaxf(origin_x + (px + 0.5f) * step_x, static_cast<float>(lo_x));
                    const int32_t x0 = min(static_cast<int32_t>(floorf(fx)), hi_x);
                    if (x0 != cached) {
                        const int32_t x1 = min(x0 + 1, hi_x);
                        left = (1.0f - ly) * __ldg(row0 + x0) + ly * __ldg(row1 + x0);
                        right = (1.0f - ly) * __ldg(row0 + x1) + ly * __ldg(row1 + x1);
                        cached = x0;
                    }
                    const float lx = fx - x0;
                    best[i] = fmaxf(best[i], (1.0f - lx) * left + lx * right);
                    any = true;
                }
            }
        }
    }

    // No instance touches these pixels (most of a frame): zeros, without the
    // 16 predicated sigmoids the compiler would otherwise if-convert.
    uint8_t alpha[kMattePixels];
    if (!any) {
#pragma unroll
        for (int32_t i = 0; i < kMattePixels; ++i) alpha[i] = 0;
    } else {
#pragma unroll
        for (int32_t i = 0; i < kMattePixels; ++i) {
            const float b = best[i];
            uint8_t a = 0;
            if (b > -FLT_MAX) {
                a = p.binary ? (b > 0.0f ? 255 : 0) : static_cast<uint8_t>(__float2uint_rn(255.0f / (1.0f + __expf(-b))));
            }
            alpha[i] = a;
        }
    }
    if (vector_store) {
        uint4 v;
        v.x = alpha[0] | (alpha[1] << 8) | (alpha[2] << 16) | (static_cast<uint32_t>(alpha[3]) << 24);
        v.y = alpha[4] | (alpha[5] << 8) | (alpha[6] << 16) | (static_cast<uint32_t>(alpha[7]) << 24);
        v.z = alpha[8] | (alpha[9] << 8) | (alpha[10] << 16) | (static_cast<uint32_t>(alpha[11]) << 24);
        v.w = alpha[12] | (alpha[13] << 8) | (alpha[14] << 16) | (static_cast<uint32_t>(alpha[15]) << 24);
        *reinterpret_cast<uint4*>(out) = v;
    } else {
#pragma unroll
        for (int32_t i = 0; i < kMattePixels; ++i) {
            if (i < count) out[i] = alpha[i];
        }
    }
}

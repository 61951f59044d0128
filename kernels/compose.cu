// Compose op family: a decoded frame (NV12 8-bit or P016) and its matte → a
// full-colour 8-bit NV12 frame of the same geometry, for `vrseg run --output
// green|overlay`. One thread per 2x2 luma quad (= one chroma sample), one
// block per 64 x 16 luma tile, one grid z-slice per frame of the batch.
//
//   compose_green_*    out = a * src + (1 - a) * key           (a = matte / 255)
//   compose_overlay_*  out = src + (tint - src) * w * a / 255  (w = tint_weight / 255, ~45%)
//                      then box outlines (`thickness` pixels, inside the box)
//                      in their class's palette colour, opaque.
//
// Arithmetic is integer and exact, so the CPU twin in src/ops/compose.rs
// matches bit for bit. Samples are taken at 16-bit scale (8-bit: s << 8,
// P016: as stored, the code in the high bits) and every blend is
//   out = ((W - wc) * v + wc * (c << 8) + W * 128) / (W * 256), clamped to 255
// with the colour's weight wc out of W (green: W = 255, wc = 255 - a;
// overlay: W = 255 * 255, wc = tint_weight * a). At a = 255 green gives
// (v + 128) >> 8: the 8-bit source unchanged, P016 rounded to 8 bits.
//
// Alpha: the matte's byte for pixels inside an eye rectangle, 0 elsewhere
// (the middle column/row an odd split leaves out of both eyes is keyed /
// left untinted; the matte there is never read as alpha). Chroma takes the
// mean alpha of the pixels of its 2x2 block that exist (4, or 2/1 at an odd
// edge), rounded half up.
//
// Boxes (overlay): detection d of image f * eyes + e, in the eye's source
// pixels (Detection::sx1..sy2, already clipped to the eye), covers the
// inclusive pixel rectangle [floor(sx1), ceil(sx2) - 1] x [floor(sy1),
// ceil(sy2) - 1] offset by the eye's origin; boxes with sx1 >= sx2 or
// sy1 >= sy2 (or NaN) are not drawn. Its outline is the pixels of that
// rectangle less than `thickness` from its edge. Where outlines cross, the
// first box in detection order (highest score) wins. A chroma sample takes
// the outline colour of its block's top-left luma pixel.
//
// Box drawing is tiled: each block walks the detections of its frame in
// chunks of 256, keeps (in order, by ballot + prefix) those whose outline
// touches its tile, and its pixels test only that short list. Cost per frame
// is tiles x boxes / 256 culling tests plus pixels x (boxes near the pixel),
// not pixels x boxes.
#include "common.cuh"

namespace {

constexpr int kMaxBatchFrames = 64;  // MAX_BATCH_FRAMES in src/ops/compose.rs
constexpr int kPaletteColours = 20;  // PALETTE_COLOURS
constexpr int kBlockX = 32;
constexpr int kBlockY = 8;
constexpr int kThreads = kBlockX * kBlockY;
constexpr int kTileW = 2 * kBlockX;  // luma pixels
constexpr int kTileH = 2 * kBlockY;

struct Detection {
    float x1, y1, x2, y2;
    float sx1, sy1, sx2, sy2;
    float score;
    int32_t cls;
    int32_t anchor;
    int32_t image;
};

struct Rect {
    int32_t x, y, w, h;
};

// Mirrors `ComposeParams` in src/ops/compose.rs field for field.
struct ComposeParams {
    uint64_t frames[kMaxBatchFrames];  // decoded frames (pool slots)
    uint64_t pitch;                    // their row stride, bytes
    uint64_t chroma_offset;            // their UV plane, bytes from the frame
    uint64_t matte;                    // 8-bit mattes, one per frame
    uint64_t matte_pitch;
    uint64_t matte_frame_stride;
    uint64_t out;                      // NV12 frames: height luma rows, then ceil(height/2) UV rows, same pitch
    uint64_t out_pitch;
    uint64_t out_frame_stride;
    uint64_t detections;               // overlay: [frames * eyes, max_det] Detection
    uint64_t detection_counts;         // overlay: [frames * eyes] u32
    int32_t width, height;
    int32_t frame_count;
    int32_t eyes;
    Rect eye[2];
    int32_t max_det;                   // detections stride per image
    int32_t thickness;                 // outline width, pixels
    uint32_t colour;                   // green: key, overlay: tint; Y | Cb << 8 | Cr << 16
    uint32_t tint_weight;              // overlay: tint weight at full alpha, out of 255
    uint32_t palette[kPaletteColours]; // overlay: box colour of class c is palette[c % 20]
};

// Inclusive pixel rectangle of a box, in frame coordinates.
struct BoxRect {
    int32_t x0, y0, x1, y1;
};

__device__ __forceinline__ uint32_t blend(uint32_t v16, uint32_t colour8, uint32_t wc, uint32_t w_total) {
    const unsigned long long num = static_cast<unsigned long long>(w_total - wc) * v16 +
                                   static_cast<unsigned long long>(wc) * (colour8 << 8) +
                                   static_cast<unsigned long long>(w_total) * 128ull;
    const unsigned long long q = num / (static_cast<unsigned long long>(w_total) * 256ull);
    return q > 255ull ? 255u : static_cast<uint32_t>(q);
}

__device__ __forceinline__ int eye_of(const ComposeParams& p, int x, int y) {
    for (int e = 0; e < p.eyes; ++e) {
        const Rect r = p.eye[e];
        if (x >= r.x && x < r.x + r.w && y >= r.y && y < r.y + r.h) return e;
    }
    return -1;
}

__device__ __forceinline__ bool on_outline(const BoxRect& b, int t, int x, int y) {
    const bool inside = x >= b.x0 && x <= b.x1 && y >= b.y0 && y <= b.y1;
    const bool interior = x >= b.x0 + t && x <= b.x1 - t && y >= b.y0 + t && y <= b.y1 - t;
    return inside && !interior;
}

// Two horizontally adjacent samples (the second only when `both`), at 16-bit scale.
template <typename T>
__device__ __forceinline__ void load_pair(const uint8_t* row, int x, bool both, uint32_t& a, uint32_t& b);

template <>
__device__ __forceinline__ void load_pair<uint8_t>(const uint8_t* row, int x, bool both, uint32_t& a, uint32_t& b) {
    if (both) {
        // SAFETY (alignment): x is even and the launcher checks even pitches and bases.
        const uchar2 v = *reinterpret_cast<const uchar2*>(row + x);
        a = static_cast<uint32_t>(v.x) << 8;
        b = static_cast<uint32_t>(v.y) << 8;
    } else {
        a = static_cast<uint32_t>(row[x]) << 8;
        b = 0;
    }
}

template <>
__device__ __forceinline__ void load_pair<uint16_t>(const uint8_t* row, int x, bool both, uint32_t& a, uint32_t& b) {
    const uint16_t* r = reinterpret_cast<const uint16_t*>(row);
    if (both) {
        // x even, pitch and base multiples of 4: a 4-byte aligned pair.
        const ushort2 v = *reinterpret_cast<const ushort2*>(r + x);
        a = v.x;
        b = v.y;
    } else {
        a = r[x];
        b = 0;
    }
}

template <typename T, bool kOverlay>
__device__ __forceinline__ void compose_quad(const ComposeParams& p) {
    __shared__ BoxRect list_rect[kThreads];
    __shared__ uint32_t list_colour[kThreads];
    __shared__ int warp_totals[kThreads / 32];

    const int f = blockIdx.z;
    const int tid = threadIdx.y * kBlockX + threadIdx.x;
    const int qx = blockIdx.x * kBlockX + threadIdx.x;
    const int qy = blockIdx.y * kBlockY + threadIdx.y;
    const int x0 = 2 * qx;
    const int y0 = 2 * qy;
    const bool active = x0 < p.width && y0 < p.height;
    const bool has_right = x0 + 1 < p.width;
    const bool has_below = y0 + 1 < p.height;

    // Up to four pixels: (x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1).
    uint32_t luma[4] = {0, 0, 0, 0};
    uint32_t alpha[4] = {0, 0, 0, 0};
    uint32_t u = 0, v = 0;
    const uint8_t* frame = reinterpret_cast<const uint8_t*>(p.frames[f]);
    if (active) {
        const uint8_t* matte = reinterpret_cast<const uint8_t*>(p.matte) + f * p.matte_frame_stride;
        for (int dy = 0; dy < 2; ++dy) {
            if (dy == 1 && !has_below) break;
            const int y = y0 + dy;
            load_pair<T>(frame + static_cast<uint64_t>(y) * p.pitch, x0, has_right, luma[2 * dy], luma[2 * dy + 1]);
            const uint8_t* mrow = matte + static_cast<uint64_t>(y) * p.matte_pitch;
            uint32_t m0, m1;
            if (has_right) {
                const uchar2 m = *reinterpret_cast<const uchar2*>(mrow + x0);
                m0 = m.x;
                m1 = m.y;
            } else {
                m0 = mrow[x0];
                m1 = 0;
            }
            alpha[2 * dy] = eye_of(p, x0, y) >= 0 ? m0 : 0;
            alpha[2 * dy + 1] = has_right && eye_of(p, x0 + 1, y) >= 0 ? m1 : 0;
        }
        const uint8_t* crow = frame + p.chroma_offset + static_cast<uint64_t>(qy) * p.pitch;
        load_pair<T>(crow, 2 * qx, true, u, v);
    }

    // Outline colour per pixel, 0 = none (colours carry bit 24 as "set").
    uint32_t outline[4] = {0, 0, 0, 0};
    if constexpr (kOverlay) {
        const int count0 =
            min(static_cast<int>(reinterpret_cast<const uint32_t*>(p.detection_counts)[f * p.eyes]), p.max_det);
        const int count1 = p.eyes > 1
            ? min(static_cast<int>(reinterpret_cast<const uint32_t*>(p.detection_counts)[f * p.eyes + 1]), p.max_det)
            : 0;
        const int total = count0 + count1;
        const int tx0 = blockIdx.x * kTileW;
        const int ty0 = blockIdx.y * kTileH;
        const int tx1 = min(tx0 + kTileW, p.width) - 1;
        const int ty1 = min(ty0 + kTileH, p.height) - 1;
        const int t = p.thickness;
        const Detection* dets = reinterpret_cast<const Detection*>(p.detections);
        const int lane = tid & 31;
        const int warp = tid >> 5;
        for (int base = 0; base < total; base += kThreads) {
            const int c = base + tid;
            bool keep = false;
            BoxRect r{0, 0, -1, -1};
            uint32_t colour = 0;
            if (c < total) {
                const int e = c < count0 ? 0 : 1;
                const int d = c - (e == 0 ? 0 : count0);
                const Detection det = dets[static_cast<uint64_t>(f * p.eyes + e) * p.max_det + d];
                const Rect eye = p.eye[e];
                if (det.sx1 < det.sx2 && det.sy1 < det.sy2) {
                    const float ew = static_cast<float>(eye.w), eh = static_cast<float>(eye.h);
                    const float fx1 = fminf(fmaxf(det.sx1, 0.0f), ew), fx2 = fminf(fmaxf(det.sx2, 0.0f), ew);
                    const float fy1 = fminf(fmaxf(det.sy1, 0.0f), eh), fy2 = fminf(fmaxf(det.sy2, 0.0f), eh);
                    r.x0 = static_cast<int>(floorf(fx1));
                    r.y0 = static_cast<int>(floorf(fy1));
                    r.x1 = min(static_cast<int>(ceilf(fx2)) - 1, eye.w - 1);
                    r.y1 = min(static_cast<int>(ceilf(fy2)) - 1, eye.h - 1);
                    if (r.x0 <= r.x1 && r.y0 <= r.y1) {
                        r.x0 += eye.x;
                        r.x1 += eye.x;
                        r.y0 += eye.y;
                        r.y1 += eye.y;
                        const bool touches = r.x0 <= tx1 && r.x1 >= tx0 && r.y0 <= ty1 && r.y1 >= ty0;
                        const bool tile_inside = tx0 >= r.x0 + t && tx1 <= r.x1 - t && ty0 >= r.y0 + t && ty1 <= r.y1 - t;
                        keep = touches && !tile_inside;
                        colour = p.palette[static_cast<uint32_t>(det.cls) % kPaletteColours] | (1u << 24);
                    }
                }
            }
            // Ordered compaction: rank within the warp, then the warps before.
            const unsigned ballot = __ballot_sync(0xffffffffu, keep);
            if (lane == 0) warp_totals[warp] = __popc(ballot);
            __syncthreads();
            int offset = 0, len = 0;
            for (int w = 0; w < kThreads / 32; ++w) {
                offset += w < warp ? warp_totals[w] : 0;
                len += warp_totals[w];
            }
            if (keep) {
                const int at = offset + __popc(ballot & ((1u << lane) - 1u));
                list_rect[at] = r;
                list_colour[at] = colour;
            }
            __syncthreads();
            if (active) {
                for (int i = 0; i < len; ++i) {
                    const BoxRect b = list_rect[i];
                    for (int k = 0; k < 4; ++k) {
                        const int x = x0 + (k & 1), y = y0 + (k >> 1);
                        if (outline[k] == 0 && on_outline(b, t, x, y)) outline[k] = list_colour[i];
                    }
                }
            }
            __syncthreads();  // the list is rewritten by the next chunk
        }
    }
    if (!active) return;

    const uint32_t cy = p.colour & 0xff, ccb = (p.colour >> 8) & 0xff, ccr = (p.colour >> 16) & 0xff;
    const uint32_t w_total = kOverlay ? 255u * 255u : 255u;
    auto weight = [&](uint32_t a) -> uint32_t { return kOverlay ? p.tint_weight * a : 255u - a; };
    uint8_t* out = reinterpret_cast<uint8_t*>(p.out) + f * p.out_frame_stride;
    uint32_t alpha_sum = 0, pixels = 0;
    uint8_t y_out[4];
    for (int k = 0; k < 4; ++k) {
        const bool exists = (!(k & 1) || has_right) && (!(k >> 1) || has_below);
        if (!exists) continue;
        alpha_sum += alpha[k];
        ++pixels;
        y_out[k] = outline[k] ? static_cast<uint8_t>(outline[k] & 0xff)
                              : static_cast<uint8_t>(blend(luma[k], cy, weight(alpha[k]), w_total));
    }
    for (int dy = 0; dy < 2; ++dy) {
        if (dy == 1 && !has_below) break;
        uint8_t* row = out + static_cast<uint64_t>(y0 + dy) * p.out_pitch;
        if (has_right) {
            *reinterpret_cast<uchar2*>(row + x0) = make_uchar2(y_out[2 * dy], y_out[2 * dy + 1]);
        } else {
            row[x0] = y_out[2 * dy];
        }
    }
    const uint32_t a_mean = (alpha_sum + pixels / 2) / pixels;
    uint8_t u_out, v_out;
    if (outline[0]) {
        u_out = static_cast<uint8_t>((outline[0] >> 8) & 0xff);
        v_out = static_cast<uint8_t>((outline[0] >> 16) & 0xff);
    } else {
        u_out = static_cast<uint8_t>(blend(u, ccb, weight(a_mean), w_total));
        v_out = static_cast<uint8_t>(blend(v, ccr, weight(a_mean), w_total));
    }
    uint8_t* crow = out + static_cast<uint64_t>(p.height + qy) * p.out_pitch;
    *reinterpret_cast<uchar2*>(crow + 2 * qx) = make_uchar2(u_out, v_out);
}

}  // namespace

VRSEG_KERNEL void __launch_bounds__(kThreads) compose_green_nv12(const ComposeParams p) { compose_quad<uint8_t, false>(p); }
VRSEG_KERNEL void __launch_bounds__(kThreads) compose_green_p016(const ComposeParams p) { compose_quad<uint16_t, false>(p); }
VRSEG_KERNEL void __launch_bounds__(kThreads) compose_overlay_nv12(const ComposeParams p) { compose_quad<uint8_t, true>(p); }
VRSEG_KERNEL void __launch_bounds__(kThreads) compose_overlay_p016(const ComposeParams p) { compose_quad<uint16_t, true>(p); }

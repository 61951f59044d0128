// Fused single-head attention at head dimension 256 (SAM2's memory attention:
// RoPEAttention with num_heads 1, internal dim 256), FlashAttention-2 style:
//
//   out = softmax(scale · Q Kᵀ) V      Q [nq, 256], K and V [nk, 256], FP16
//
// with an online softmax over key tiles, so the nq x nk score matrix never
// exists in memory. FP32 accumulation everywhere; P is rounded to FP16 for
// the P·V product (as FlashAttention does).
//
// One block = 64 query rows (4 warps of 16 rows) against a range of 64-key
// tiles. Split-KV: with `splits` > 1, blockIdx.y picks a range of key tiles
// and the block writes its normalised partial output (FP16) and the log2 of
// its softmax denominator (FP32); attention_combine merges the splits. SAM2
// has only 4096 query rows (64 blocks), so splitting keys is what fills a
// 132-SM GPU.
//
// Shared memory: Q, K and V tiles of 64 rows x 512 bytes (96 KiB); 16-byte
// chunk c of row r sits at chunk c ^ (r & 7), so the 8 rows of an ldmatrix
// phase hit 8 different bank groups. Pipeline (FlashAttention-2's): V of
// tile j loads while S = Q Kᵀ is computed; K of tile j+1 loads while the
// softmax and P·V run. Two blocks per SM (launch bounds) overlap each
// other's waits. (Measured on an H100 against this: 128 query rows per block
// with 8 warps, with single or double-buffered K and V, were about 3% slower.
// All three sit near 43% of the tensor pipe's peak; what they share is the
// ldmatrix traffic per mma, 288 bytes, which we take to be the bound.)
//
// The running max is raised lazily (FlashAttention-3's trick): a row keeps
// its max, and the rescale of its accumulators is skipped, until a tile's max
// exceeds it by more than kLazyRescale (log2 units), so exp2 values stay
// below 2^8, well inside FP16 for P. The final normalisation uses the same
// max, so the result is unchanged.
//
// Keys past nk in the last tile are masked to -inf (and their K/V rows are
// zero-filled, so no stale shared memory reaches the sums); query rows past
// nq are computed on zeros and not stored.
#include "common.cuh"
#include "mma.cuh"

namespace {

using vrseg::mma::cp_async_16;
using vrseg::mma::cp_async_commit;
using vrseg::mma::cp_async_wait;
using vrseg::mma::ldmatrix_x4;
using vrseg::mma::ldmatrix_x4_trans;
using vrseg::mma::mma_16816;
using vrseg::mma::pack_half2;
using vrseg::mma::smem_addr;

constexpr int kD = 256;    // head dimension
constexpr int kBc = 64;    // keys per tile
constexpr int kTileBytes = 64 * kD * 2;
constexpr float kLazyRescale = 8.0f;

// Mirrors `AttentionParams` in src/ops/attention.rs field for field.
struct AttentionParams {
    const __half* q;
    const __half* k;
    const __half* v;
    __half* out;           // [nq, ldo] FP16, written when splits == 1
    __half* partial_out;   // [splits, nq, dv] FP16, normalised per split (dv = 256 or 64)
    float* partial_lse;    // [splits, nq]: log2 of the split's denominator, in scaled-log2 units
    int32_t nq, nk;
    int32_t ldq, ldk, ldv, ldo;  // row strides in elements
    int32_t splits;
    int32_t tiles_per_split;
    float scale_log2;  // softmax scale times log2(e)
    int32_t pad;
};

__device__ __forceinline__ uint32_t swizzle512(int row, int chunk) {
    return static_cast<uint32_t>(row * 512 + ((chunk ^ (row & 7)) << 4));
}

// Copies rows [row0, row0 + ROWS) of a [rows, ld] FP16 matrix into a tile;
// rows at or past `rows` become zeros.
template <int ROWS, int THREADS = 128>
__device__ __forceinline__ void load_tile(uint32_t tile, const __half* base, int row0, int rows, int ld) {
    const int tid = threadIdx.x;
#pragma unroll
    for (int i = 0; i < (ROWS * 32) / THREADS; ++i) {
        const int idx = tid + i * THREADS;
        const int row = idx >> 5, chunk = idx & 31;
        const int r = row0 + row;
        const bool valid = r < rows;
        const __half* src = valid ? base + static_cast<int64_t>(r) * ld + chunk * 8 : base;
        cp_async_16(tile + swizzle512(row, chunk), src, valid);
    }
}

}  // namespace

VRSEG_KERNEL void __launch_bounds__(128, 2) attention_f16_d256(const AttentionParams p) {
#ifndef VRSEG_NO_TENSOR_CORES
    constexpr int kBr = 64;  // query rows per block
    extern __shared__ __align__(128) uint8_t smem[];
    const uint32_t sq = smem_addr(smem);
    const uint32_t sk = sq + kTileBytes;
    const uint32_t sv = sk + kTileBytes;

    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int q0 = blockIdx.x * kBr;
    const int split = blockIdx.y;
    const int tiles_total = (p.nk + kBc - 1) / kBc;
    const int tile_begin = split * p.tiles_per_split;
    const int tile_end = min(tile_begin + p.tiles_per_split, tiles_total);

    load_tile<kBr>(sq, p.q, q0, p.nq, p.ldq);
    load_tile<kBc>(sk, p.k, tile_begin * kBc, p.nk, p.ldk);
    cp_async_commit();

    float acc_o[kD / 8][4];
#pragma unroll
    for (int j = 0; j < kD / 8; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc_o[j][e] = 0.f;
    // Running max of the raw scores and the thread's partial denominators,
    // for rows g and g + 8 of the warp's 16.
    float row_max[2] = {-INFINITY, -INFINITY};
    float row_sum[2] = {0.f, 0.f};

    for (int tile = tile_begin; tile < tile_end; ++tile) {
        cp_async_wait<0>();
        __syncthreads();  // K(tile) visible; every warp is past P·V of the last tile, so V may be overwritten
        load_tile<kBc>(sv, p.v, tile * kBc, p.nk, p.ldv);
        cp_async_commit();

        // S = Q Kᵀ for this warp's 16 rows and the tile's 64 keys.
        float acc_s[kBc / 8][4];
#pragma unroll
        for (int j = 0; j < kBc / 8; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc_s[j][e] = 0.f;
#pragma unroll
        for (int ks = 0; ks < kD / 16; ++ks) {
            uint32_t a[4];
            ldmatrix_x4(a, sq + swizzle512(warp * 16 + (lane & 15), ks * 2 + (lane >> 4)));
#pragma unroll
            for (int jp = 0; jp < kBc / 16; ++jp) {
                uint32_t b[4];
                ldmatrix_x4(b, sk + swizzle512(jp * 16 + (lane & 7) + ((lane >> 4) << 3), ks * 2 + ((lane >> 3) & 1)));
                mma_16816(acc_s[2 * jp], a, b[0], b[1]);
                mma_16816(acc_s[2 * jp + 1], a, b[2], b[3]);
            }
        }

        cp_async_wait<0>();
        __syncthreads();  // V(tile) visible; every warp is done with K(tile)
        if (tile + 1 < tile_end) {
            load_tile<kBc>(sk, p.k, (tile + 1) * kBc, p.nk, p.ldk);
        }
        cp_async_commit();

        // Mask keys past nk (only the last tile of all can hold any).
        const int key0 = tile * kBc;
        if (key0 + kBc > p.nk) {
#pragma unroll
            for (int j = 0; j < kBc / 8; ++j) {
                const int key = key0 + j * 8 + 2 * t;
                if (key >= p.nk) {
                    acc_s[j][0] = -INFINITY;
                    acc_s[j][2] = -INFINITY;
                }
                if (key + 1 >= p.nk) {
                    acc_s[j][1] = -INFINITY;
                    acc_s[j][3] = -INFINITY;
                }
            }
        }

        // Online softmax: new running max per row (the 4 lanes of a quad share a row).
        float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int j = 0; j < kBc / 8; ++j) {
            tile_max[0] = fmaxf(tile_max[0], fmaxf(acc_s[j][0], acc_s[j][1]));
            tile_max[1] = fmaxf(tile_max[1], fmaxf(acc_s[j][2], acc_s[j][3]));
        }
        // Lazy max: raise a row's max only when the tile's exceeds it by more
        // than kLazyRescale; skip the accumulator rescale when no row of the
        // warp moved (the usual case once the first tiles are seen).
        float rescale[2];
        bool moved = false;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            tile_max[h] = fmaxf(tile_max[h], __shfl_xor_sync(0xffffffffu, tile_max[h], 1));
            tile_max[h] = fmaxf(tile_max[h], __shfl_xor_sync(0xffffffffu, tile_max[h], 2));
            rescale[h] = 1.f;
            if (tile_max[h] != -INFINITY &&
                (row_max[h] == -INFINITY || (tile_max[h] - row_max[h]) * p.scale_log2 > kLazyRescale)) {
                // exp2(-inf) = 0 for a row that had no key yet.
                rescale[h] = exp2f((row_max[h] - tile_max[h]) * p.scale_log2);
                row_max[h] = tile_max[h];
                moved = true;
            }
            // A row with no key so far (all masked) keeps max -inf: use 0 so
            // that exp2(-inf - 0) = 0 instead of NaN.
            const float base = row_max[h] == -INFINITY ? 0.f : row_max[h] * p.scale_log2;
            row_sum[h] *= rescale[h];
#pragma unroll
            for (int j = 0; j < kBc / 8; ++j) {
                acc_s[j][2 * h] = exp2f(acc_s[j][2 * h] * p.scale_log2 - base);
                acc_s[j][2 * h + 1] = exp2f(acc_s[j][2 * h + 1] * p.scale_log2 - base);
                row_sum[h] += acc_s[j][2 * h] + acc_s[j][2 * h + 1];
            }
        }
        if (__any_sync(0xffffffffu, moved)) {
#pragma unroll
            for (int j = 0; j < kD / 8; ++j) {
                acc_o[j][0] *= rescale[0];
                acc_o[j][1] *= rescale[0];
                acc_o[j][2] *= rescale[1];
                acc_o[j][3] *= rescale[1];
            }
        }

        // O += P V: the S accumulators of key tiles 2kk and 2kk+1 are exactly
        // the A fragment of keys 16kk..16kk+15.
#pragma unroll
        for (int kk = 0; kk < kBc / 16; ++kk) {
            uint32_t a[4];
            a[0] = pack_half2(acc_s[2 * kk][0], acc_s[2 * kk][1]);
            a[1] = pack_half2(acc_s[2 * kk][2], acc_s[2 * kk][3]);
            a[2] = pack_half2(acc_s[2 * kk + 1][0], acc_s[2 * kk + 1][1]);
            a[3] = pack_half2(acc_s[2 * kk + 1][2], acc_s[2 * kk + 1][3]);
#pragma unroll
            for (int dp = 0; dp < kD / 16; ++dp) {
                uint32_t b[4];
                ldmatrix_x4_trans(b, sv + swizzle512(kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, dp * 2 + (lane >> 4)));
                mma_16816(acc_o[2 * dp], a, b[0], b[1]);
                mma_16816(acc_o[2 * dp + 1], a, b[2], b[3]);
            }
        }
    }
    cp_async_wait<0>();

    // Full row sums, then normalise and store.
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        row_sum[h] += __shfl_xor_sync(0xffffffffu, row_sum[h], 1);
        row_sum[h] += __shfl_xor_sync(0xffffffffu, row_sum[h], 2);
    }
    const float inv[2] = {row_sum[0] > 0.f ? 1.f / row_sum[0] : 0.f, row_sum[1] > 0.f ? 1.f / row_sum[1] : 0.f};
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const int row = q0 + warp * 16 + g + h * 8;
        if (row >= p.nq) continue;
        if (p.splits == 1) {
            __half* dst = p.out + static_cast<int64_t>(row) * p.ldo;
#pragma unroll
            for (int j = 0; j < kD / 8; ++j) {
                *reinterpret_cast<__half2*>(dst + j * 8 + 2 * t) =
                    __floats2half2_rn(acc_o[j][2 * h] * inv[h], acc_o[j][2 * h + 1] * inv[h]);
            }
        } else {
            __half* dst = p.partial_out + (static_cast<int64_t>(split) * p.nq + row) * kD;
#pragma unroll
            for (int j = 0; j < kD / 8; ++j) {
                *reinterpret_cast<__half2*>(dst + j * 8 + 2 * t) =
                    __floats2half2_rn(acc_o[j][2 * h] * inv[h], acc_o[j][2 * h + 1] * inv[h]);
            }
            if (t == 0) {
                // log2 of the split's denominator relative to exp2(0): the
                // scores were exponentiated as exp2(s·scale_log2 - max·scale_log2).
                p.partial_lse[static_cast<int64_t>(split) * p.nq + row] =
                    row_sum[h] > 0.f ? row_max[h] * p.scale_log2 + log2f(row_sum[h]) : -INFINITY;
            }
        }
    }
#else
    __trap();
#endif
}

// Merges the splits of an attention kernel: out[row] = Σ_s w_s O_s / Σ_s w_s
// with w_s = exp2(lse_s - max_s lse_s). DV / 8 lanes per row, 8 columns a
// lane (one 16-byte load per split): one row a warp at DV = 256, four at 64.
template <int DV>
__device__ __forceinline__ void combine_body(const AttentionParams& p) {
    constexpr int kLanesPerRow = DV / 8;
    constexpr int kRowsPerWarp = 32 / kLanesPerRow;
    const int lane = threadIdx.x & 31;
    const int row = (blockIdx.x * 8 + (threadIdx.x >> 5)) * kRowsPerWarp + lane / kLanesPerRow;
    const int col = (lane % kLanesPerRow) * 8;
    if (row >= p.nq) return;
    float top = -INFINITY;
    for (int s = 0; s < p.splits; ++s) top = fmaxf(top, p.partial_lse[static_cast<int64_t>(s) * p.nq + row]);
    float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    float total = 0.f;
    for (int s = 0; s < p.splits; ++s) {
        const float lse = p.partial_lse[static_cast<int64_t>(s) * p.nq + row];
        const float w = lse == -INFINITY ? 0.f : exp2f(lse - top);
        total += w;
        const uint4 packed_in =
            *reinterpret_cast<const uint4*>(p.partial_out + (static_cast<int64_t>(s) * p.nq + row) * DV + col);
        const __half2* x = reinterpret_cast<const __half2*>(&packed_in);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const float2 f = __half22float2(x[i]);
            acc[2 * i] += w * f.x;
            acc[2 * i + 1] += w * f.y;
        }
    }
    const float inv = total > 0.f ? 1.f / total : 0.f;
    uint4 packed;
    packed.x = vrseg::mma::pack_half2(acc[0] * inv, acc[1] * inv);
    packed.y = vrseg::mma::pack_half2(acc[2] * inv, acc[3] * inv);
    packed.z = vrseg::mma::pack_half2(acc[4] * inv, acc[5] * inv);
    packed.w = vrseg::mma::pack_half2(acc[6] * inv, acc[7] * inv);
    *reinterpret_cast<uint4*>(p.out + static_cast<int64_t>(row) * p.ldo + col) = packed;
}

VRSEG_KERNEL void __launch_bounds__(256) attention_combine_f16_d256(const AttentionParams p) {
    combine_body<256>(p);
}

VRSEG_KERNEL void __launch_bounds__(256) attention_combine_f16_v64(const AttentionParams p) {
    combine_body<64>(p);
}

// ---------------------------------------------------------------------------
// Cross-attention with the value projection folded out (SAM2's memory bank):
//
//   out = softmax(scale · Q Kᵀ) V      Q, K [·, 256], V [nk, 64], out [nq, 64]
//
// SAM2's values are v_proj(memory) = M W_vᵀ + b_v with 64-wide memory tokens
// M. Softmax rows sum to 1, so softmax(S)(M W_vᵀ + 1 b_vᵀ) = (softmax(S) M) W_vᵀ
// + b_v: the kernel takes the raw tokens as V, and the caller folds W_v and
// b_v into the output projection. P·V costs a quarter of the d = 256 kernel's
// and V traffic a quarter of its bytes.
//
// Same FlashAttention-2 structure as attention_f16_d256 (V of tile j loads
// during S = Q Kᵀ, K of tile j+1 during softmax and P·V; lazy max; split-KV
// with FP16 partials), but each warp owns MT x 16 query rows: with MT = 2
// every K fragment read from shared memory feeds 2 mma instead of 1 (the
// d = 256 kernel is bound by that ldmatrix traffic) and a block of 128 rows
// reads every K tile from L2 once for twice the rows. The accumulators fit
// because O is only 64 wide. Shared memory: Q (MT x 64 rows x 512 bytes), K
// (64 x 512) and V (64 x 128, chunk c of row r at c ^ (r & 7)).
namespace {

constexpr int kDv = 64;

__device__ __forceinline__ uint32_t swizzle128(int row, int chunk) {
    return static_cast<uint32_t>(row * 128 + ((chunk ^ (row & 7)) << 4));
}

// Rows [row0, row0 + 64) of a [rows, ld] FP16 matrix of 64 columns into a V
// tile; rows at or past `rows` become zeros.
__device__ __forceinline__ void load_v64_tile(uint32_t tile, const __half* base, int row0, int rows, int ld) {
    const int tid = threadIdx.x;
#pragma unroll
    for (int i = 0; i < (kBc * 8) / 128; ++i) {
        const int idx = tid + i * 128;
        const int row = idx >> 3, chunk = idx & 7;
        const int r = row0 + row;
        const bool valid = r < rows;
        const __half* src = valid ? base + static_cast<int64_t>(r) * ld + chunk * 8 : base;
        cp_async_16(tile + swizzle128(row, chunk), src, valid);
    }
}

template <int MT>
__device__ __forceinline__ void attention_v64_body(const AttentionParams& p) {
#ifndef VRSEG_NO_TENSOR_CORES
    constexpr int kBr = 64 * MT;  // 4 warps of MT x 16 rows
    extern __shared__ __align__(128) uint8_t smem[];
    const uint32_t sq = smem_addr(smem);
    const uint32_t sk = sq + kBr * 512;
    const uint32_t sv = sk + kBc * 512;

    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int q0 = blockIdx.x * kBr;
    const int split = blockIdx.y;
    const int tiles_total = (p.nk + kBc - 1) / kBc;
    const int tile_begin = split * p.tiles_per_split;
    const int tile_end = min(tile_begin + p.tiles_per_split, tiles_total);

    load_tile<kBr>(sq, p.q, q0, p.nq, p.ldq);
    load_tile<kBc>(sk, p.k, tile_begin * kBc, p.nk, p.ldk);
    cp_async_commit();

    float acc_o[MT][kDv / 8][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int j = 0; j < kDv / 8; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc_o[mt][j][e] = 0.f;
    // Per m-tile: rows g and g + 8 of its 16.
    float row_max[MT][2], row_sum[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
        row_max[mt][0] = row_max[mt][1] = -INFINITY;
        row_sum[mt][0] = row_sum[mt][1] = 0.f;
    }

    for (int tile = tile_begin; tile < tile_end; ++tile) {
        cp_async_wait<0>();
        __syncthreads();  // K(tile) visible; every warp is past P·V of the last tile
        load_v64_tile(sv, p.v, tile * kBc, p.nk, p.ldv);
        cp_async_commit();

        float acc_s[MT][kBc / 8][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int j = 0; j < kBc / 8; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e) acc_s[mt][j][e] = 0.f;
#pragma unroll
        for (int ks = 0; ks < kD / 16; ++ks) {
            uint32_t a[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                ldmatrix_x4(a[mt], sq + swizzle512(warp * 16 * MT + mt * 16 + (lane & 15), ks * 2 + (lane >> 4)));
            }
#pragma unroll
            for (int jp = 0; jp < kBc / 16; ++jp) {
                uint32_t b[4];
                ldmatrix_x4(b, sk + swizzle512(jp * 16 + (lane & 7) + ((lane >> 4) << 3), ks * 2 + ((lane >> 3) & 1)));
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    mma_16816(acc_s[mt][2 * jp], a[mt], b[0], b[1]);
                    mma_16816(acc_s[mt][2 * jp + 1], a[mt], b[2], b[3]);
                }
            }
        }

        cp_async_wait<0>();
        __syncthreads();  // V(tile) visible; every warp is done with K(tile)
        if (tile + 1 < tile_end) {
            load_tile<kBc>(sk, p.k, (tile + 1) * kBc, p.nk, p.ldk);
        }
        cp_async_commit();

        const int key0 = tile * kBc;
        if (key0 + kBc > p.nk) {
#pragma unroll
            for (int j = 0; j < kBc / 8; ++j) {
                const int key = key0 + j * 8 + 2 * t;
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    if (key >= p.nk) {
                        acc_s[mt][j][0] = -INFINITY;
                        acc_s[mt][j][2] = -INFINITY;
                    }
                    if (key + 1 >= p.nk) {
                        acc_s[mt][j][1] = -INFINITY;
                        acc_s[mt][j][3] = -INFINITY;
                    }
                }
            }
        }

        // Online softmax with the lazy max (see attention_f16_d256).
        float rescale[MT][2];
        bool moved = false;
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
            float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
            for (int j = 0; j < kBc / 8; ++j) {
                tile_max[0] = fmaxf(tile_max[0], fmaxf(acc_s[mt][j][0], acc_s[mt][j][1]));
                tile_max[1] = fmaxf(tile_max[1], fmaxf(acc_s[mt][j][2], acc_s[mt][j][3]));
            }
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                tile_max[h] = fmaxf(tile_max[h], __shfl_xor_sync(0xffffffffu, tile_max[h], 1));
                tile_max[h] = fmaxf(tile_max[h], __shfl_xor_sync(0xffffffffu, tile_max[h], 2));
                rescale[mt][h] = 1.f;
                if (tile_max[h] != -INFINITY &&
                    (row_max[mt][h] == -INFINITY || (tile_max[h] - row_max[mt][h]) * p.scale_log2 > kLazyRescale)) {
                    rescale[mt][h] = exp2f((row_max[mt][h] - tile_max[h]) * p.scale_log2);
                    row_max[mt][h] = tile_max[h];
                    moved = true;
                }
                const float base = row_max[mt][h] == -INFINITY ? 0.f : row_max[mt][h] * p.scale_log2;
                row_sum[mt][h] *= rescale[mt][h];
#pragma unroll
                for (int j = 0; j < kBc / 8; ++j) {
                    acc_s[mt][j][2 * h] = exp2f(acc_s[mt][j][2 * h] * p.scale_log2 - base);
                    acc_s[mt][j][2 * h + 1] = exp2f(acc_s[mt][j][2 * h + 1] * p.scale_log2 - base);
                    row_sum[mt][h] += acc_s[mt][j][2 * h] + acc_s[mt][j][2 * h + 1];
                }
            }
        }
        if (__any_sync(0xffffffffu, moved)) {
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int j = 0; j < kDv / 8; ++j) {
                    acc_o[mt][j][0] *= rescale[mt][0];
                    acc_o[mt][j][1] *= rescale[mt][0];
                    acc_o[mt][j][2] *= rescale[mt][1];
                    acc_o[mt][j][3] *= rescale[mt][1];
                }
        }

        // O += P V over the tile's 64 keys, 16 at a time.
#pragma unroll
        for (int kk = 0; kk < kBc / 16; ++kk) {
            uint32_t a[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                a[mt][0] = pack_half2(acc_s[mt][2 * kk][0], acc_s[mt][2 * kk][1]);
                a[mt][1] = pack_half2(acc_s[mt][2 * kk][2], acc_s[mt][2 * kk][3]);
                a[mt][2] = pack_half2(acc_s[mt][2 * kk + 1][0], acc_s[mt][2 * kk + 1][1]);
                a[mt][3] = pack_half2(acc_s[mt][2 * kk + 1][2], acc_s[mt][2 * kk + 1][3]);
            }
#pragma unroll
            for (int dp = 0; dp < kDv / 16; ++dp) {
                uint32_t b[4];
                ldmatrix_x4_trans(b, sv + swizzle128(kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, dp * 2 + (lane >> 4)));
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    mma_16816(acc_o[mt][2 * dp], a[mt], b[0], b[1]);
                    mma_16816(acc_o[mt][2 * dp + 1], a[mt], b[2], b[3]);
                }
            }
        }
    }
    cp_async_wait<0>();

#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            float sum = row_sum[mt][h];
            sum += __shfl_xor_sync(0xffffffffu, sum, 1);
            sum += __shfl_xor_sync(0xffffffffu, sum, 2);
            const float inv = sum > 0.f ? 1.f / sum : 0.f;
            const int row = q0 + warp * 16 * MT + mt * 16 + g + h * 8;
            if (row >= p.nq) continue;
            __half* dst = p.splits == 1 ? p.out + static_cast<int64_t>(row) * p.ldo
                                        : p.partial_out + (static_cast<int64_t>(split) * p.nq + row) * kDv;
#pragma unroll
            for (int j = 0; j < kDv / 8; ++j) {
                *reinterpret_cast<__half2*>(dst + j * 8 + 2 * t) =
                    __floats2half2_rn(acc_o[mt][j][2 * h] * inv, acc_o[mt][j][2 * h + 1] * inv);
            }
            if (p.splits > 1 && t == 0) {
                p.partial_lse[static_cast<int64_t>(split) * p.nq + row] =
                    sum > 0.f ? row_max[mt][h] * p.scale_log2 + log2f(sum) : -INFINITY;
            }
        }
    }
#else
    __trap();
#endif
}

}  // namespace

// 64 query rows a block (one m-tile a warp), three blocks an SM (72 KiB each).
VRSEG_KERNEL void __launch_bounds__(128, 3) attention_f16_qk256_v64_r64(const AttentionParams p) {
    attention_v64_body<1>(p);
}

// 128 query rows a block (two m-tiles a warp), two blocks an SM (104 KiB each).
VRSEG_KERNEL void __launch_bounds__(128, 2) attention_f16_qk256_v64_r128(const AttentionParams p) {
    attention_v64_body<2>(p);
}

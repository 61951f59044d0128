// Linear layers on tensor cores: out = A · Wᵀ + bias, A [m, k] FP16 row-major
// (stride lda), W [n, k] FP16 row-major (PyTorch's nn.Linear weight as it
// is stored), bias [n] FP32, FP32 accumulation, with one of four epilogues:
//
//   STORE     out FP16 [m, n] (stride ldc)
//   RELU      out FP16, max(0, ·)
//   ROPE      out FP16; columns c < rope_cols of rows r < rope_rows rotated
//             as SAM2's axial RoPE does (position_encoding.apply_rotary_enc):
//             pairs (c, c+1), c even, are one complex number, multiplied by
//             (cos, sin) of position · frequency. With P = rope_period (the
//             head width) and side s, token r % s² sits at (x, y) =
//             (tok % s, tok / s); pair i = (c % P) / 2 turns with x at
//             frequency i for i < P/4 and with y at frequency i - P/4 after
//             (compute_axial_cis). The factors come from
//             table[position * (P / 4) + frequency] (s x P/4 entries, 32 KiB
//             for SAM2), and the rotation is applied to the FP32 value before
//             rounding.
//   RESIDUAL  out FP32 [m, n]: out += A · Wᵀ + bias (the residual stream).
//
// Rows of A come from two sources: rows r < a_split from a0, the others
// from a1 (row r - a_split), both with stride lda (the object-pointer tokens
// live apart from the memory frames).
//
// A launch runs up to kMaxBatch independent problems (blockIdx.z picks one;
// blocks outside their problem's m x n return at once): SAM2's per-layer key
// and value projections of a memory frame go in one launch.
//
// Tiling: BM x 128 x 32 block tiles (BM = 128 or 64), 8 warps as 2 x 4 with
// (BM/2) x 32 warp tiles, a 3-stage cp.async pipeline in static shared
// memory. (Measured on an H100 against this: 4 warps of 64 x 64 tiles, 4-6
// stages in dynamic shared memory, and A = LayerNorm(x) normalised in the
// kernel were each slower or no faster for SAM2's products.) Shared rows are 64
// bytes (32 halves); 16-byte chunk c of row r sits at chunk c ^ ((r >> 1) & 3),
// so the 8 rows of each ldmatrix phase fall in 8 different bank groups.
// Requirements (checked by ops::linear): k % 8 == 0, n % 8 == 0, lda and ldc
// multiples of 8, 16-byte aligned A and W, m, n, k > 0. Any m, n, k beyond
// that: tails are zero-filled on load and guarded on store.
#include "common.cuh"
#include "mma.cuh"

namespace {

using vrseg::mma::cp_async_16;
using vrseg::mma::cp_async_commit;
using vrseg::mma::cp_async_wait;
using vrseg::mma::ldmatrix_x4;
using vrseg::mma::mma_16816;
using vrseg::mma::smem_addr;

enum Epilogue : int32_t { kStore = 0, kRelu = 1, kRope = 2, kResidual = 3 };

// Mirrors `LinearParams` in src/ops/linear.rs field for field.
struct LinearParams {
    const __half* a0;
    const __half* a1;
    const __half* w;
    const float* bias;
    void* out;
    const float2* rope_table;
    int32_t m, n, k;
    int32_t lda, ldc;
    int32_t a_split;
    int32_t epilogue;
    int32_t rope_cols, rope_rows, rope_side, rope_period;
    int32_t pad;
};

constexpr int kMaxBatch = 8;

// Mirrors `LinearBatch` in src/ops/linear.rs.
struct LinearBatch {
    LinearParams p[kMaxBatch];
};

constexpr int kBN = 128;
constexpr int kBK = 32;
constexpr int kStages = 3;
constexpr int kThreads = 256;

__device__ __forceinline__ uint32_t swizzle64(int row, int chunk) {
    return static_cast<uint32_t>(row * 64 + ((chunk ^ ((row >> 1) & 3)) << 4));
}

template <int BM>
__device__ __forceinline__ void linear_body(const LinearParams& p) {
#ifndef VRSEG_NO_TENSOR_CORES
    constexpr int MT = BM / 32;  // 16-row m-tiles per warp (warp tile BM/2 rows)
    constexpr int NT = 4;        // 8-col n-tiles per warp (warp tile 32 cols)
    constexpr int kAStage = BM * kBK * 2;
    constexpr int kBStage = kBN * kBK * 2;
    __shared__ __align__(128) uint8_t smem[kStages * (kAStage + kBStage)];

    const int tid = threadIdx.x;
    const int lane = tid & 31;
    const int warp = tid >> 5;
    const int wm = warp >> 2;  // 0..1
    const int wn = warp & 3;   // 0..3
    const int n0 = blockIdx.x * kBN;
    const int m0 = blockIdx.y * BM;
    if (n0 >= p.n || m0 >= p.m) return;  // a smaller problem of the batch
    const int ktiles = (p.k + kBK - 1) / kBK;
    const uint32_t sbase = smem_addr(smem);

    auto load_tile = [&](int kt, int stage) {
        const uint32_t sa = sbase + stage * (kAStage + kBStage);
        const uint32_t sb = sa + kAStage;
        const int kbase = kt * kBK;
        // A: BM rows x 4 chunks.
#pragma unroll
        for (int i = 0; i < (BM * 4) / kThreads; ++i) {
            const int idx = tid + i * kThreads;
            const int row = idx >> 2, chunk = idx & 3;
            const int r = m0 + row, kk = kbase + chunk * 8;
            const bool valid = r < p.m && kk < p.k;
            const __half* src = p.a0;
            if (valid) {
                src = r < p.a_split ? p.a0 + static_cast<int64_t>(r) * p.lda + kk
                                    : p.a1 + static_cast<int64_t>(r - p.a_split) * p.lda + kk;
            }
            cp_async_16(sa + swizzle64(row, chunk), src, valid);
        }
        // W: 128 rows (output columns) x 4 chunks.
#pragma unroll
        for (int i = 0; i < (kBN * 4) / kThreads; ++i) {
            const int idx = tid + i * kThreads;
            const int row = idx >> 2, chunk = idx & 3;
            const int c = n0 + row, kk = kbase + chunk * 8;
            const bool valid = c < p.n && kk < p.k;
            const __half* src = valid ? p.w + static_cast<int64_t>(c) * p.k + kk : p.w;
            cp_async_16(sb + swizzle64(row, chunk), src, valid);
        }
    };

    float acc[MT][NT][4];
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < NT; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) {
        if (s < ktiles) load_tile(s, s);
        cp_async_commit();
    }

    for (int kt = 0; kt < ktiles; ++kt) {
        cp_async_wait<kStages - 2>();
        __syncthreads();
        {
            const int next = kt + kStages - 1;
            if (next < ktiles) load_tile(next, next % kStages);
            cp_async_commit();
        }
        const int stage = kt % kStages;
        const uint32_t sa = sbase + stage * (kAStage + kBStage);
        const uint32_t sb = sa + kAStage;
#pragma unroll
        for (int ks = 0; ks < kBK / 16; ++ks) {
            uint32_t af[MT][4];
#pragma unroll
            for (int i = 0; i < MT; ++i) {
                const int row = wm * (BM / 2) + i * 16 + (lane & 15);
                const int chunk = ks * 2 + (lane >> 4);
                ldmatrix_x4(af[i], sa + swizzle64(row, chunk));
            }
            uint32_t bf[NT / 2][4];
#pragma unroll
            for (int jp = 0; jp < NT / 2; ++jp) {
                const int row = wn * 32 + jp * 16 + (lane & 7) + ((lane >> 4) << 3);
                const int chunk = ks * 2 + ((lane >> 3) & 1);
                ldmatrix_x4(bf[jp], sb + swizzle64(row, chunk));
            }
#pragma unroll
            for (int i = 0; i < MT; ++i)
#pragma unroll
                for (int j = 0; j < NT; ++j)
                    mma_16816(acc[i][j], af[i], bf[j >> 1][(j & 1) * 2], bf[j >> 1][(j & 1) * 2 + 1]);
        }
    }
    cp_async_wait<0>();

    // Epilogue: each thread owns pairs of adjacent columns.
    const int g = lane >> 2, t = lane & 3;
    const int tokens = p.rope_side * p.rope_side;
    const int quarter = p.rope_period >> 2;
#pragma unroll
    for (int j = 0; j < NT; ++j) {
        const int c = n0 + wn * 32 + j * 8 + 2 * t;
        if (c >= p.n) continue;
        const float b0 = p.bias[c], b1 = p.bias[c + 1];
        const int pair = (c % max(p.rope_period, 2)) >> 1;
#pragma unroll
        for (int i = 0; i < MT; ++i) {
#pragma unroll
            for (int half = 0; half < 2; ++half) {
                const int r = m0 + wm * (BM / 2) + i * 16 + g + half * 8;
                if (r >= p.m) continue;
                float v0 = acc[i][j][half * 2] + b0;
                float v1 = acc[i][j][half * 2 + 1] + b1;
                const int64_t o = static_cast<int64_t>(r) * p.ldc + c;
                if (p.epilogue == kResidual) {
                    float2* dst = reinterpret_cast<float2*>(static_cast<float*>(p.out) + o);
                    float2 x = *dst;
                    x.x += v0;
                    x.y += v1;
                    *dst = x;
                    continue;
                }
                if (p.epilogue == kRelu) {
                    v0 = fmaxf(v0, 0.f);
                    v1 = fmaxf(v1, 0.f);
                } else if (p.epilogue == kRope && c < p.rope_cols && r < p.rope_rows) {
                    const int tok = r % tokens;
                    const int pos = pair < quarter ? tok % p.rope_side : tok / p.rope_side;
                    const int freq = pair < quarter ? pair : pair - quarter;
                    const float2 cs = __ldg(p.rope_table + pos * quarter + freq);
                    const float re = v0 * cs.x - v1 * cs.y;
                    const float im = v0 * cs.y + v1 * cs.x;
                    v0 = re;
                    v1 = im;
                }
                *reinterpret_cast<__half2*>(static_cast<__half*>(p.out) + o) = __floats2half2_rn(v0, v1);
            }
        }
    }
#else
    __trap();
#endif
}

}  // namespace

// Block tile 128 x 128: for wide outputs (enough blocks for two per SM).
VRSEG_KERNEL void __launch_bounds__(kThreads) linear_f16_bm128(const LinearBatch batch) {
    linear_body<128>(batch.p[blockIdx.z]);
}

// Block tile 64 x 128: twice the blocks for narrow outputs (n = 256 at m = 4096
// gives 128 blocks instead of 64 on a 132-SM GPU).
VRSEG_KERNEL void __launch_bounds__(kThreads) linear_f16_bm64(const LinearBatch batch) {
    linear_body<64>(batch.p[blockIdx.z]);
}

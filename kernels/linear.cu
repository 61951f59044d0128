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
// live apart from the memory frames). The linear_ln_* kernels instead take A
// = LayerNorm(x) · gamma + beta of an FP32 [m, 256] residual stream (k = 256):
// each block normalises its BM rows into shared memory once (as
// sam2.cu's layernorm_f32_f16 does, rounded to FP16) and keeps them there, so
// SAM2's pre-norm projections need no LayerNorm launch and no FP16 copy of
// the normalised rows.
//
// A launch runs up to kMaxBatch independent problems (blockIdx.z picks one;
// blocks outside their problem's m x n return at once): SAM2's per-layer key
// and value projections of a memory frame go in one launch.
//
// Tiling: BM x 128 x 32 block tiles, 8 warps as 2 x 4 with (BM/2) x 32 warp
// tiles (BM = 128 or 64), a 4-stage cp.async pipeline in dynamic shared
// memory (64 KiB for BM = 128, 48 KiB for BM = 64; measured on an H100, 8
// warps a block beat 4 warps of 64 x 64 tiles: the narrow SAM2 products have
// one or two blocks per SM and need the warps to hide latency). Staged rows
// are 64 bytes (32 halves); 16-byte chunk c of row r sits at chunk
// c ^ ((r >> 1) & 3), so the 8 rows of each ldmatrix phase fall in 8
// different bank groups. The resident normalised A of linear_ln_* has rows
// of 512 bytes with chunk c at c ^ (r & 7), for the same reason.
// Requirements (checked by ops::linear): k % 8 == 0, n % 8 == 0, lda and ldc
// multiples of 8, 16-byte aligned A and W, m, n, k > 0. Tails are zero-filled
// on load and guarded on store.
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
    // linear_ln_*: A = LayerNorm(ln_x) (FP32 [m, 256]) with ln_gamma, ln_beta.
    const float* ln_x;
    const float* ln_gamma;
    const float* ln_beta;
    float ln_eps;
    int32_t pad;
};

constexpr int kMaxBatch = 8;

// Mirrors `LinearBatch` in src/ops/linear.rs.
struct LinearBatch {
    LinearParams p[kMaxBatch];
};

constexpr int kBN = 128;
constexpr int kBK = 32;
constexpr int kThreads = 256;
constexpr int kStages = 4;
constexpr int kLnWidth = 256;  // the normalised A's k

__device__ __forceinline__ uint32_t swizzle64(int row, int chunk) {
    return static_cast<uint32_t>(row * 64 + ((chunk ^ ((row >> 1) & 3)) << 4));
}

__device__ __forceinline__ uint32_t swizzle512(int row, int chunk) {
    return static_cast<uint32_t>(row * 512 + ((chunk ^ (row & 7)) << 4));
}

// LayerNorm of rows [m0, m0 + BM) of p.ln_x into the resident A tile: one
// warp per row, 8 values a lane (two 16-byte loads), the biased variance from
// the centred values; rows past m are zeros.
template <int BM>
__device__ __forceinline__ void layernorm_rows(const LinearParams& p, int m0, uint32_t sa) {
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const float4* g4 = reinterpret_cast<const float4*>(p.ln_gamma) + lane * 2;
    const float4* b4 = reinterpret_cast<const float4*>(p.ln_beta) + lane * 2;
    const float4 g0 = g4[0], g1 = g4[1], c0 = b4[0], c1 = b4[1];
    const float gs[8] = {g0.x, g0.y, g0.z, g0.w, g1.x, g1.y, g1.z, g1.w};
    const float bs[8] = {c0.x, c0.y, c0.z, c0.w, c1.x, c1.y, c1.z, c1.w};
    for (int row = warp; row < BM; row += kThreads / 32) {
        const int r = m0 + row;
        uint4 packed = make_uint4(0, 0, 0, 0);
        if (r < p.m) {
            const float4* x4 = reinterpret_cast<const float4*>(p.ln_x + static_cast<int64_t>(r) * kLnWidth) + lane * 2;
            const float4 a = x4[0], b = x4[1];
            float v[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
            float sum = 0.f;
#pragma unroll
            for (int i = 0; i < 8; ++i) sum += v[i];
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
            const float mean = sum * (1.f / kLnWidth);
            float sq = 0.f;
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                v[i] -= mean;
                sq += v[i] * v[i];
            }
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) sq += __shfl_xor_sync(0xffffffffu, sq, o);
            const float inv_std = rsqrtf(sq * (1.f / kLnWidth) + p.ln_eps);
            uint32_t h[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                h[i] = vrseg::mma::pack_half2(v[2 * i] * inv_std * gs[2 * i] + bs[2 * i],
                                              v[2 * i + 1] * inv_std * gs[2 * i + 1] + bs[2 * i + 1]);
            }
            packed = make_uint4(h[0], h[1], h[2], h[3]);
        }
        asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};\n" ::"r"(sa + swizzle512(row, lane)), "r"(packed.x),
                     "r"(packed.y), "r"(packed.z), "r"(packed.w));
    }
}

template <int BM, bool LN>
__device__ __forceinline__ void linear_body(const LinearParams& p) {
#ifndef VRSEG_NO_TENSOR_CORES
    constexpr int WM = BM / 2;   // warp tile rows
    constexpr int WN = 32;       // warp tile cols
    constexpr int MT = WM / 16;  // 16-row m-tiles per warp
    constexpr int NT = WN / 8;   // 8-col n-tiles per warp
    // Staged A per stage (none when A is the resident normalised tile).
    constexpr int kAStage = LN ? 0 : BM * kBK * 2;
    constexpr int kBStage = kBN * kBK * 2;
    constexpr int kResident = LN ? BM * kLnWidth * 2 : 0;
    // Dynamic shared memory: kResident + kStages * (kAStage + kBStage) bytes.
    extern __shared__ __align__(128) uint8_t smem[];

    const int n0 = blockIdx.x * kBN;
    const int m0 = blockIdx.y * BM;
    if (n0 >= p.n || m0 >= p.m) return;  // a smaller problem of the batch

    const int tid = threadIdx.x;
    const int lane = tid & 31;
    const int warp = tid >> 5;
    const int wm = warp >> 2;  // 0..1
    const int wn = warp & 3;   // 0..3
    const int ktiles = (p.k + kBK - 1) / kBK;
    const uint32_t resident = smem_addr(smem);
    const uint32_t sbase = resident + kResident;

    auto load_tile = [&](int kt, int stage) {
        const uint32_t sa = sbase + stage * (kAStage + kBStage);
        const uint32_t sb = sa + kAStage;
        const int kbase = kt * kBK;
        // A: BM rows x 4 chunks (unless resident).
#pragma unroll
        for (int i = 0; i < (LN ? 0 : (BM * 4) / kThreads); ++i) {
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
    // The first W tiles are in flight; normalise the block's rows meanwhile.
    if constexpr (LN) layernorm_rows<BM>(p, m0, resident);

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
                const int row = wm * WM + i * 16 + (lane & 15);
                if constexpr (LN) {
                    ldmatrix_x4(af[i], resident + swizzle512(row, kt * 4 + ks * 2 + (lane >> 4)));
                } else {
                    ldmatrix_x4(af[i], sa + swizzle64(row, ks * 2 + (lane >> 4)));
                }
            }
            uint32_t bf[NT / 2][4];
#pragma unroll
            for (int jp = 0; jp < NT / 2; ++jp) {
                const int row = wn * WN + jp * 16 + (lane & 7) + ((lane >> 4) << 3);
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
        const int c = n0 + wn * WN + j * 8 + 2 * t;
        if (c >= p.n) continue;
        const float b0 = p.bias[c], b1 = p.bias[c + 1];
        const int pair = (c % max(p.rope_period, 2)) >> 1;
#pragma unroll
        for (int i = 0; i < MT; ++i) {
#pragma unroll
            for (int half = 0; half < 2; ++half) {
                const int r = m0 + wm * WM + i * 16 + g + half * 8;
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
    linear_body<128, false>(batch.p[blockIdx.z]);
}

// Block tile 64 x 128: twice the blocks for narrow outputs (n = 256 at m = 4096
// gives 128 blocks instead of 64 on a 132-SM GPU).
VRSEG_KERNEL void __launch_bounds__(kThreads) linear_f16_bm64(const LinearBatch batch) {
    linear_body<64, false>(batch.p[blockIdx.z]);
}

// The same with A = LayerNorm(ln_x) resident in shared memory (k = 256).
VRSEG_KERNEL void __launch_bounds__(kThreads) linear_ln_f16_bm128(const LinearBatch batch) {
    linear_body<128, true>(batch.p[blockIdx.z]);
}

VRSEG_KERNEL void __launch_bounds__(kThreads) linear_ln_f16_bm64(const LinearBatch batch) {
    linear_body<64, true>(batch.p[blockIdx.z]);
}

// Native engine: every op that is not a convolution (src/engine/native/ops.rs
// launches). These run on small tensors in YOLO-seg (the C2PSA attention at
// 1/32 scale, the detect head's decode, upsampling, the SPPF pools), so they
// favour one general strided form over many specialised ones.
//
// A tensor operand is a `TensorRef`: base pointer, element type (FP16 or
// FP32), up to 4 dims (left-padded with 1s) and a stride per dim in elements.
// Broadcast dims have stride 0; transposes permute strides; slices move the
// base and scale strides. Values are computed in FP32.
//
// tensor_map      out[i] = f(in[i / div]) per dim: copy (reshape, concat,
//                 slice, transpose, split), nearest resize (div = scale),
//                 sigmoid; converts between FP16 and FP32.
// transpose_last2 out = in with its last two dims swapped (FP16), through
//                 32x32 shared-memory tiles: both sides coalesced.
// tensor_binary   out = a (+ - * /) b with broadcasting.
// softmax_thread  softmax along one axis, one thread per row (short axes).
// softmax_warp    the same, one warp per row (long axes).
// softmax_warp512 the same for contiguous FP16 rows of at most 512, held in
//                 registers.
// max_pool        2-D max pooling over dims 2 and 3, padding never wins.
// max_pool_nhwc8  the same for FP16 NHWC values (channels the contiguous dim,
//                 a multiple of 8): 8 channels a thread as 16-byte vectors.
// matmul          batched matrix product over dims 0 and 1, 64x64 tiles, 4x4
//                 outputs a thread (FP32 operands).
// matmul_f16_mma  the same for FP16 operands on tensor cores (mma.sync).
#include <cuda_fp16.h>

#include "common.cuh"
#include "mma.cuh"

namespace {

// Mirrors `engine::native::ops::TensorRef`.
struct TensorRef {
    void* ptr;
    int64_t strides[4];
    int32_t dims[4];
    int32_t is_f32;
    int32_t reserved;
};

__device__ __forceinline__ float load(const TensorRef& t, int64_t off) {
    return t.is_f32 ? static_cast<const float*>(t.ptr)[off] : __half2float(static_cast<const __half*>(t.ptr)[off]);
}
__device__ __forceinline__ void store(const TensorRef& t, int64_t off, float v) {
    if (t.is_f32) {
        static_cast<float*>(t.ptr)[off] = v;
    } else {
        static_cast<__half*>(t.ptr)[off] = __float2half_rn(v);
    }
}
__device__ __forceinline__ int64_t element_count(const TensorRef& t) {
    return static_cast<int64_t>(t.dims[0]) * t.dims[1] * t.dims[2] * t.dims[3];
}
// Splits a linear index over `t.dims` (last dim fastest). Tensors of fewer
// than 2^32 elements (every one in YOLO-seg, batch 64 at 1280 included)
// take 32-bit unsigned divisions, several times cheaper than 64-bit ones.
__device__ __forceinline__ void unravel(const TensorRef& t, int64_t i, int idx[4]) {
    if (static_cast<uint64_t>(i) <= 0xffffffffull) {
        uint32_t j = static_cast<uint32_t>(i);
#pragma unroll
        for (int d = 3; d >= 0; --d) {
            const uint32_t n = static_cast<uint32_t>(t.dims[d]);
            const uint32_t q = j / n;
            idx[d] = static_cast<int>(j - q * n);
            j = q;
        }
        return;
    }
#pragma unroll
    for (int d = 3; d >= 0; --d) {
        idx[d] = static_cast<int>(i % t.dims[d]);
        i /= t.dims[d];
    }
}
__device__ __forceinline__ int64_t offset_of(const TensorRef& t, const int idx[4]) {
    return idx[0] * t.strides[0] + idx[1] * t.strides[1] + idx[2] * t.strides[2] + idx[3] * t.strides[3];
}

// Mirrors `engine::native::ops::MapParams`.
struct MapParams {
    TensorRef out;
    TensorRef in;
    int32_t div[4];
    int32_t op;   // 0 copy, 1 sigmoid
    int32_t run;  // elements per thread along dim 3 (kRun, where dims[3] % kRun == 0); <= 1: one;
                  // kVec16: one 16-byte FP16 copy (see tensor_map)
};

struct BinaryParams {
    TensorRef out;
    TensorRef a;
    TensorRef b;
    int32_t op;   // 0 add, 1 sub, 2 mul, 3 div
    int32_t run;  // as MapParams::run
};

struct SoftmaxParams {
    TensorRef out;
    TensorRef in;
    int32_t axis;
    int32_t reserved;
};

struct PoolParams {
    TensorRef out;
    TensorRef in;
    int32_t kh, kw, sh, sw, pad_t, pad_l;
};

struct MatmulParams {
    TensorRef out;  // [b0, b1, m, n]
    TensorRef a;    // [b0, b1, m, k] (broadcast dims have stride 0)
    TensorRef b;    // [b0, b1, k, n]
    int32_t k;
    int32_t reserved;
};

// Kernels whose grid z walks dims 0 x 1 of `out` (matmul, transpose_last2):
// the batch element block z names, and its element offset in each operand.
struct BatchIndex {
    int b0, b1;
};
__device__ __forceinline__ BatchIndex batch_of(const TensorRef& out) {
    const int b0 = blockIdx.z / out.dims[1];
    return {b0, static_cast<int>(blockIdx.z) - b0 * out.dims[1]};
}
__device__ __forceinline__ int64_t batch_offset(const TensorRef& t, BatchIndex b) {
    return b.b0 * t.strides[0] + b.b1 * t.strides[1];
}

// The offset of row `row` (an index over every dim but `axis`) of `t`.
__device__ __forceinline__ int64_t row_offset(const TensorRef& t, int axis, int64_t row) {
    int64_t off = 0;
#pragma unroll
    for (int d = 3; d >= 0; --d) {
        if (d == axis) continue;
        off += (row % t.dims[d]) * t.strides[d];
        row /= t.dims[d];
    }
    return off;
}

}  // namespace

// Elements per thread along the last dim when the host asks for runs: one
// index split and one base offset serve kRun elements, which these
// memory-bound kernels otherwise spend most of their instructions on.
constexpr int kRun = 4;

// MapParams::run asking for 16-byte copies: FP16 in and out, dim 3
// contiguous and undivided on both sides, every other stride, dims[3] and
// both pointers multiples of 8 elements (the host checks all of it). NHWC
// copies (a nearest resize into a concat slice, channels fastest) then move
// 8 channels an instruction.
constexpr int kVec16 = 8;

VRSEG_KERNEL void tensor_map(MapParams p) {
    vrseg::wait_for_prior_grid();
    if (p.run == kVec16) {
        const int64_t total = element_count(p.out) / kVec16;
        const uint4* in = static_cast<const uint4*>(p.in.ptr);
        uint4* out = static_cast<uint4*>(p.out.ptr);
        for (int64_t i = vrseg::global_thread_index(); i < total; i += vrseg::global_thread_count()) {
            int idx[4];
            unravel(p.out, i * kVec16, idx);
            const int64_t in0 = (idx[0] / p.div[0]) * p.in.strides[0] + (idx[1] / p.div[1]) * p.in.strides[1] +
                                (idx[2] / p.div[2]) * p.in.strides[2] + idx[3];
            const int64_t out0 =
                idx[0] * p.out.strides[0] + idx[1] * p.out.strides[1] + idx[2] * p.out.strides[2] + idx[3];
            out[out0 / kVec16] = in[in0 / kVec16];
        }
        return;
    }
    const int run = p.run > 1 ? kRun : 1;
    const int64_t total = element_count(p.out) / run;
    const bool same_x = p.div[3] == 1;
    for (int64_t i = vrseg::global_thread_index(); i < total; i += vrseg::global_thread_count()) {
        int idx[4];
        unravel(p.out, i * run, idx);
        const int64_t in0 = (idx[0] / p.div[0]) * p.in.strides[0] + (idx[1] / p.div[1]) * p.in.strides[1] +
                            (idx[2] / p.div[2]) * p.in.strides[2];
        const int64_t out0 = idx[0] * p.out.strides[0] + idx[1] * p.out.strides[1] + idx[2] * p.out.strides[2];
#pragma unroll
        for (int j = 0; j < kRun; ++j) {
            if (j >= run) break;
            const int x = idx[3] + j;
            float v = load(p.in, in0 + (same_x ? x : x / p.div[3]) * p.in.strides[3]);
            if (p.op == 1) v = vrseg::fast_sigmoid(v);
            store(p.out, out0 + x * p.out.strides[3], v);
        }
    }
}

VRSEG_KERNEL void tensor_binary(BinaryParams p) {
    vrseg::wait_for_prior_grid();
    const int run = p.run > 1 ? kRun : 1;
    const int64_t total = element_count(p.out) / run;
    for (int64_t i = vrseg::global_thread_index(); i < total; i += vrseg::global_thread_count()) {
        int idx[4];
        unravel(p.out, i * run, idx);
        const int64_t a0 = idx[0] * p.a.strides[0] + idx[1] * p.a.strides[1] + idx[2] * p.a.strides[2];
        const int64_t b0 = idx[0] * p.b.strides[0] + idx[1] * p.b.strides[1] + idx[2] * p.b.strides[2];
        const int64_t out0 = idx[0] * p.out.strides[0] + idx[1] * p.out.strides[1] + idx[2] * p.out.strides[2];
#pragma unroll
        for (int j = 0; j < kRun; ++j) {
            if (j >= run) break;
            const int x = idx[3] + j;
            const float a = load(p.a, a0 + x * p.a.strides[3]);
            const float b = load(p.b, b0 + x * p.b.strides[3]);
            float v;
            switch (p.op) {
                case 0: v = a + b; break;
                case 1: v = a - b; break;
                case 2: v = a * b; break;
                default: v = a / b; break;
            }
            store(p.out, out0 + x * p.out.strides[3], v);
        }
    }
}

VRSEG_KERNEL void softmax_thread(SoftmaxParams p) {
    vrseg::wait_for_prior_grid();
    const int n = p.in.dims[p.axis];
    const int64_t rows = element_count(p.in) / n;
    const int64_t si = p.in.strides[p.axis];
    const int64_t so = p.out.strides[p.axis];
    for (int64_t r = vrseg::global_thread_index(); r < rows; r += vrseg::global_thread_count()) {
        const int64_t in0 = row_offset(p.in, p.axis, r);
        const int64_t out0 = row_offset(p.out, p.axis, r);
        float mx = -INFINITY;
        for (int j = 0; j < n; ++j) mx = fmaxf(mx, load(p.in, in0 + j * si));
        float sum = 0.0f;
        for (int j = 0; j < n; ++j) sum += __expf(load(p.in, in0 + j * si) - mx);
        const float inv = 1.0f / sum;
        for (int j = 0; j < n; ++j) store(p.out, out0 + j * so, __expf(load(p.in, in0 + j * si) - mx) * inv);
    }
}

// FP16 rows of at most 512 contiguous elements (YOLO's attention): each
// lane keeps its 16 (j = lane + 32 q) in registers, so the row is read
// once and each exp is taken once; addresses are one row pointer plus
// constant offsets. The same sums in the same order as softmax_warp, so the
// same results. x-seg's attention rows (400 long, [32, 6, 400, 400] at
// batch 32) took 0.14 ms a pass in softmax_warp, which reads the row three
// times. The host checks the dtype, the strides and the length.
VRSEG_KERNEL void softmax_warp512(SoftmaxParams p) {
    vrseg::wait_for_prior_grid();
    constexpr int kPerLane = 16;
    const int n = p.in.dims[p.axis];
    const int64_t rows = element_count(p.in) / n;
    const int lane = threadIdx.x & 31;
    const int64_t warps = vrseg::global_thread_count() / 32;
    for (int64_t r = vrseg::global_thread_index() / 32; r < rows; r += warps) {
        const __half* in = static_cast<const __half*>(p.in.ptr) + row_offset(p.in, p.axis, r) + lane;
        __half* out = static_cast<__half*>(p.out.ptr) + row_offset(p.out, p.axis, r) + lane;
        float v[kPerLane];
        float mx = -INFINITY;
#pragma unroll
        for (int q = 0; q < kPerLane; ++q) {
            v[q] = lane + 32 * q < n ? __half2float(in[32 * q]) : -INFINITY;
            mx = fmaxf(mx, v[q]);
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        float sum = 0.0f;
#pragma unroll
        for (int q = 0; q < kPerLane; ++q) {
            if (lane + 32 * q < n) {
                v[q] = __expf(v[q] - mx);
                sum += v[q];
            }
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
        const float inv = 1.0f / sum;
#pragma unroll
        for (int q = 0; q < kPerLane; ++q) {
            if (lane + 32 * q < n) out[32 * q] = __float2half_rn(v[q] * inv);
        }
    }
}

VRSEG_KERNEL void softmax_warp(SoftmaxParams p) {
    vrseg::wait_for_prior_grid();
    const int n = p.in.dims[p.axis];
    const int64_t rows = element_count(p.in) / n;
    const int64_t si = p.in.strides[p.axis];
    const int64_t so = p.out.strides[p.axis];
    const int lane = threadIdx.x & 31;
    const int64_t warps = vrseg::global_thread_count() / 32;
    for (int64_t r = vrseg::global_thread_index() / 32; r < rows; r += warps) {
        const int64_t in0 = row_offset(p.in, p.axis, r);
        const int64_t out0 = row_offset(p.out, p.axis, r);
        float mx = -INFINITY;
        for (int j = lane; j < n; j += 32) mx = fmaxf(mx, load(p.in, in0 + j * si));
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        float sum = 0.0f;
        for (int j = lane; j < n; j += 32) sum += __expf(load(p.in, in0 + j * si) - mx);
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
        const float inv = 1.0f / sum;
        for (int j = lane; j < n; j += 32) store(p.out, out0 + j * so, __expf(load(p.in, in0 + j * si) - mx) * inv);
    }
}

// The max over the pooling window of output element `idx` (padding never wins).
static __device__ __forceinline__ float pool_window_max(const PoolParams& p, const int idx[4]) {
    const int64_t base = idx[0] * p.in.strides[0] + idx[1] * p.in.strides[1];
    float mx = -INFINITY;
    for (int ky = 0; ky < p.kh; ++ky) {
        const int iy = idx[2] * p.sh - p.pad_t + ky;
        if (static_cast<unsigned>(iy) >= static_cast<unsigned>(p.in.dims[2])) continue;
        for (int kx = 0; kx < p.kw; ++kx) {
            const int ix = idx[3] * p.sw - p.pad_l + kx;
            if (static_cast<unsigned>(ix) >= static_cast<unsigned>(p.in.dims[3])) continue;
            mx = fmaxf(mx, load(p.in, base + iy * p.in.strides[2] + ix * p.in.strides[3]));
        }
    }
    return mx;
}

VRSEG_KERNEL void max_pool(PoolParams p) {
    vrseg::wait_for_prior_grid();
    const int64_t total = element_count(p.out);
    for (int64_t i = vrseg::global_thread_index(); i < total; i += vrseg::global_thread_count()) {
        int idx[4];
        unravel(p.out, i, idx);
        store(p.out, offset_of(p.out, idx), pool_window_max(p, idx));
    }
}

// Swaps the last two dims of an FP16 value (YOLO's attention transposes
// its [N, heads, 400, 400] scores before the second product): `in` is the
// permuted view, dims as `out`'s, whose dim 2 is the contiguous one; `out`
// is dense along dim 3. A 32x32 tile is read along in's rows (dim 2
// contiguous) into shared memory and written along out's rows. tensor_map,
// which walks the output, read the input 800 bytes apart (0.156 ms for x-seg
// at batch 32, 0.8 TB/s). Block 32 x 8, grid (dim 3 tiles, dim 2 tiles,
// dims 0 x 1).
VRSEG_KERNEL void __launch_bounds__(256) transpose_last2(MapParams p) {
    vrseg::wait_for_prior_grid();
    __shared__ __half tile[32][33];
    const int rows = p.out.dims[2];  // out's dim 2: contiguous in `in`
    const int cols = p.out.dims[3];
    const int r0 = blockIdx.y * 32;
    const int c0 = blockIdx.x * 32;
    const BatchIndex batch = batch_of(p.out);
    const __half* in = static_cast<const __half*>(p.in.ptr) + batch_offset(p.in, batch);
    __half* out = static_cast<__half*>(p.out.ptr) + batch_offset(p.out, batch);
    const int tx = threadIdx.x & 31;
    const int ty = threadIdx.x >> 5;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        const int c = c0 + ty + 8 * k;
        const int r = r0 + tx;
        if (c < cols && r < rows) tile[ty + 8 * k][tx] = in[c * p.in.strides[3] + r];
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        const int r = r0 + ty + 8 * k;
        const int c = c0 + tx;
        if (r < rows && c < cols) out[r * p.out.strides[2] + c] = tile[tx][ty + 8 * k];
    }
}

// 8 channels of one output pixel a thread, as 16-byte loads and half2 max
// (exact: a max rounds nothing; NaN handling as fmaxf's, the other operand
// wins). YOLO's SPPF pools (5x5/1 over [N, C, 20, 20] at 640) ran at 0.19 ms
// each for x-seg at batch 32 one element a thread, most of it index
// arithmetic and 2-byte loads. The host checks: FP16 both sides, channels
// contiguous and a multiple of 8, every other stride a multiple of 8 and
// both addresses 16-byte aligned; indices fit 32 bits. (Otherwise max_pool
// runs it, through the strides.)
VRSEG_KERNEL void max_pool_nhwc8(PoolParams p) {
    vrseg::wait_for_prior_grid();
    const uint32_t vectors = static_cast<uint32_t>(p.out.dims[1] / 8);
    const uint32_t total = vectors * static_cast<uint32_t>(p.out.dims[0]) * static_cast<uint32_t>(p.out.dims[2]) *
                           static_cast<uint32_t>(p.out.dims[3]);
    const __half* const in = static_cast<const __half*>(p.in.ptr);
    __half* const out = static_cast<__half*>(p.out.ptr);
    const __half2 lowest = __float2half2_rn(-INFINITY);
    for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
        uint32_t j = i;
        const int c = static_cast<int>(j % vectors) * 8;
        j /= vectors;
        const int x = static_cast<int>(j % static_cast<uint32_t>(p.out.dims[3]));
        j /= static_cast<uint32_t>(p.out.dims[3]);
        const int y = static_cast<int>(j % static_cast<uint32_t>(p.out.dims[2]));
        const int n = static_cast<int>(j / static_cast<uint32_t>(p.out.dims[2]));
        __half2 mx[4] = {lowest, lowest, lowest, lowest};
        const __half* const image = in + n * p.in.strides[0] + c;
        for (int ky = 0; ky < p.kh; ++ky) {
            const int iy = y * p.sh - p.pad_t + ky;
            if (static_cast<unsigned>(iy) >= static_cast<unsigned>(p.in.dims[2])) continue;
            const __half* const row = image + iy * p.in.strides[2];
            for (int kx = 0; kx < p.kw; ++kx) {
                const int ix = x * p.sw - p.pad_l + kx;
                if (static_cast<unsigned>(ix) >= static_cast<unsigned>(p.in.dims[3])) continue;
                const uint4 v = *reinterpret_cast<const uint4*>(row + ix * p.in.strides[3]);
                const __half2* h = reinterpret_cast<const __half2*>(&v);
#pragma unroll
                for (int q = 0; q < 4; ++q) mx[q] = __hmax2(mx[q], h[q]);
            }
        }
        __half* const dst = out + n * p.out.strides[0] + y * p.out.strides[2] + x * p.out.strides[3] + c;
        *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(mx);
    }
}

// The batched matmul for FP16 operands (YOLO's attention) on tensor cores:
// 64x64 output tiles, 32-deep K steps; 8 warps of 16 rows x 32 columns,
// mma.sync m16n8k16 from ldmatrix fragments, FP32 sums. Operands are read
// element by element through their strides (transposed views), walking
// whichever of their two matrix dims is contiguous so that consecutive
// threads read consecutive halves. (The CUDA-core kernel below ran x-seg's
// attention products at 10 TFLOP/s.)
constexpr int kMatmulTileMma = 64;
constexpr int kMmaK = 32;
constexpr int kMmaPadA = 8;  // halves: 80-byte rows, ldmatrix conflict-free
constexpr int kMmaPadB = 8;  // halves: 144-byte rows, likewise for .trans

VRSEG_KERNEL void __launch_bounds__(256) matmul_f16_mma(MatmulParams p) {
    vrseg::wait_for_prior_grid();
    __shared__ __align__(16) __half tile_a[kMatmulTileMma][kMmaK + kMmaPadA];  // [row][k]
    __shared__ __align__(16) __half tile_b[kMmaK][kMatmulTileMma + kMmaPadB];  // [k][col]
    const int tid = threadIdx.x;
    const int lane = tid & 31;
    const int warp = tid >> 5;
    const int wm = warp & 3;   // rows 16 wm
    const int wn = warp >> 2;  // columns 32 wn
    const BatchIndex batch = batch_of(p.out);
    const int row0 = blockIdx.y * kMatmulTileMma;
    const int col0 = blockIdx.x * kMatmulTileMma;
    const int m = p.out.dims[2];
    const int n = p.out.dims[3];
    const __half* a = static_cast<const __half*>(p.a.ptr) + batch_offset(p.a, batch);
    const __half* b = static_cast<const __half*>(p.b.ptr) + batch_offset(p.b, batch);
    const bool a_k_fast = p.a.strides[3] == 1;  // walk k (else rows) with consecutive threads
    const bool b_col_fast = p.b.strides[3] == 1;
    // Element e of a K step: its tile positions, the same every step.
    constexpr int kPerThread = kMatmulTileMma * kMmaK / 256;
    auto a_at = [&](int e, int& r, int& kk) {
        r = a_k_fast ? e / kMmaK : e % kMatmulTileMma;
        kk = a_k_fast ? e % kMmaK : e / kMatmulTileMma;
    };
    auto b_at = [&](int e, int& kk, int& c) {
        c = b_col_fast ? e % kMatmulTileMma : e / kMmaK;
        kk = b_col_fast ? e / kMatmulTileMma : e % kMmaK;
    };
    // The next K step's elements, loaded into registers while this step's
    // mma runs (the loads are single halves through arbitrary strides: their
    // latency, not bandwidth, bounds the kernel).
    __half next_a[kPerThread], next_b[kPerThread];
    auto fetch = [&](int k0) {
#pragma unroll
        for (int i = 0; i < kPerThread; ++i) {
            const int e = threadIdx.x + 256 * i;
            int r, kk, c, bkk;
            a_at(e, r, kk);
            b_at(e, bkk, c);
            const int ar = row0 + r, ak = k0 + kk, bk = k0 + bkk, bc = col0 + c;
            next_a[i] = (ar < m && ak < p.k) ? a[ar * p.a.strides[2] + ak * p.a.strides[3]] : __float2half(0.0f);
            next_b[i] = (bk < p.k && bc < n) ? b[bk * p.b.strides[2] + bc * p.b.strides[3]] : __float2half(0.0f);
        }
    };
    float acc[4][4] = {};
    fetch(0);
    for (int k0 = 0; k0 < p.k; k0 += kMmaK) {
#pragma unroll
        for (int i = 0; i < kPerThread; ++i) {
            const int e = tid + 256 * i;
            int r, kk, c, bkk;
            a_at(e, r, kk);
            b_at(e, bkk, c);
            tile_a[r][kk] = next_a[i];
            tile_b[bkk][c] = next_b[i];
        }
        __syncthreads();
        if (k0 + kMmaK < p.k) fetch(k0 + kMmaK);
#pragma unroll
        for (int kk = 0; kk < kMmaK; kk += 16) {
            uint32_t af[4];
            vrseg::mma::ldmatrix_x4(af, vrseg::mma::smem_addr(&tile_a[wm * 16 + (lane & 15)][kk + (lane >> 4) * 8]));
#pragma unroll
            for (int half_cols = 0; half_cols < 2; ++half_cols) {
                // Two n8 tiles: r[0], r[1] for columns +0..7, r[2], r[3] for +8..15.
                uint32_t r[4];
                vrseg::mma::ldmatrix_x4_trans(r, vrseg::mma::smem_addr(&tile_b[kk + (lane & 7) + ((lane >> 3) & 1) * 8]
                                                                              [wn * 32 + half_cols * 16 + (lane >> 4) * 8]));
                vrseg::mma::mma_16816(acc[2 * half_cols], af, r[0], r[1]);
                vrseg::mma::mma_16816(acc[2 * half_cols + 1], af, r[2], r[3]);
            }
        }
        __syncthreads();
    }
    // Lane (g, t): rows g and g + 8 of the warp's 16, columns 2t, 2t + 1 of
    // each n8 tile.
    const int g = lane >> 2;
    const int t = lane & 3;
    const int64_t out0 = batch_offset(p.out, batch);
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int h = 0; h < 2; ++h)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                const int row = row0 + wm * 16 + g + 8 * h;
                const int col = col0 + wn * 32 + 8 * j + 2 * t + e;
                if (row < m && col < n) store(p.out, out0 + row * p.out.strides[2] + col * p.out.strides[3], acc[j][2 * h + e]);
            }
}

// 64x64 output tiles, 16-deep K steps; each thread keeps a 4x4 block of
// sums in registers, so a K step costs it 8 shared-memory reads for 16
// FMAs (one output a thread took 2 reads an FMA). Operands are read
// through their strides (YOLO's attention multiplies transposed views).
constexpr int kMatmulTile = 64;
constexpr int kMatmulK = 16;

VRSEG_KERNEL void __launch_bounds__(256) matmul(MatmulParams p) {
    vrseg::wait_for_prior_grid();
    // [k][row] and [k][col], rows of 64 + 4 floats: 16-byte aligned for
    // the float4 reads, and the transposing stores spread over banks.
    __shared__ __align__(16) float tile_a[kMatmulK][kMatmulTile + 4];
    __shared__ __align__(16) float tile_b[kMatmulK][kMatmulTile + 4];
    const int tid = threadIdx.x;
    const int tx = tid & 15;  // output columns 4 tx .. 4 tx + 3
    const int ty = tid >> 4;  // output rows 4 ty .. 4 ty + 3
    const BatchIndex batch = batch_of(p.out);
    const int row0 = blockIdx.y * kMatmulTile;
    const int col0 = blockIdx.x * kMatmulTile;
    const int m = p.out.dims[2];
    const int n = p.out.dims[3];
    const int64_t a0 = batch_offset(p.a, batch);
    const int64_t bb0 = batch_offset(p.b, batch);
    float acc[4][4] = {};
    for (int k0 = 0; k0 < p.k; k0 += kMatmulK) {
#pragma unroll
        for (int i = 0; i < kMatmulTile * kMatmulK / 256; ++i) {
            const int e = tid + 256 * i;
            const int r = e / kMatmulK;  // A: consecutive threads walk k
            const int kk = e % kMatmulK;
            const int ar = row0 + r;
            const int ak = k0 + kk;
            tile_a[kk][r] = (ar < m && ak < p.k) ? load(p.a, a0 + ar * p.a.strides[2] + ak * p.a.strides[3]) : 0.0f;
            const int bkk = e / kMatmulTile;  // B: consecutive threads walk columns
            const int c = e % kMatmulTile;
            const int bk = k0 + bkk;
            const int bc = col0 + c;
            tile_b[bkk][c] = (bk < p.k && bc < n) ? load(p.b, bb0 + bk * p.b.strides[2] + bc * p.b.strides[3]) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < kMatmulK; ++kk) {
            const float4 a = *reinterpret_cast<const float4*>(&tile_a[kk][4 * ty]);
            const float4 b = *reinterpret_cast<const float4*>(&tile_b[kk][4 * tx]);
            const float av[4] = {a.x, a.y, a.z, a.w};
            const float bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] += av[i] * bv[j];
        }
        __syncthreads();
    }
    const int64_t out0 = batch_offset(p.out, batch);
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int row = row0 + 4 * ty + i;
            const int col = col0 + 4 * tx + j;
            if (row < m && col < n) store(p.out, out0 + row * p.out.strides[2] + col * p.out.strides[3], acc[i][j]);
        }
}

// Memory op family: filling and patterning raw buffers.
//
// fill_*    poisons outputs before every parity test (standards: "output poisoned
//           first") and clears pool slots; 16-byte stores where the pointer allows.
// pattern_u32 writes hash(seed + i) so that tests can prove that pool buffers do
//           not overlap and that a kernel touched exactly the elements it owns.
#include "common.cuh"

// One fill kernel per element width. The body handles an unaligned head and
// tail with scalar stores and the aligned middle with 16-byte vector stores,
// which is what lets a fill run at the memory-bandwidth floor.
#define VRSEG_FILL_KERNEL(NAME, T)                                                    \
    VRSEG_KERNEL void NAME(T* __restrict__ dst, uint64_t count, T value) {           \
        constexpr uint64_t per_vec = 16 / sizeof(T);                                  \
        const uint64_t addr = reinterpret_cast<uint64_t>(dst);                        \
        /* elements before the first 16-byte boundary (addr is T-aligned) */          \
        uint64_t head = ((16 - (addr & 15)) & 15) / sizeof(T);                        \
        if (head > count) head = count;                                               \
        const uint64_t vec_count = (count - head) / per_vec;                          \
        const uint64_t tail_start = head + vec_count * per_vec;                       \
        const uint64_t stride = vrseg::global_thread_count();                         \
        const uint64_t tid = vrseg::global_thread_index();                            \
        union { T lanes[per_vec]; uint4 vec; } packed;                                \
        _Pragma("unroll") for (uint64_t l = 0; l < per_vec; ++l) packed.lanes[l] = value; \
        uint4* vec_dst = reinterpret_cast<uint4*>(dst + head);                        \
        for (uint64_t i = tid; i < vec_count; i += stride) vec_dst[i] = packed.vec;   \
        for (uint64_t i = tid; i < head; i += stride) dst[i] = value;                 \
        for (uint64_t i = tail_start + tid; i < count; i += stride) dst[i] = value;   \
    }

VRSEG_FILL_KERNEL(fill_u8, uint8_t)
VRSEG_FILL_KERNEL(fill_u16, uint16_t)
VRSEG_FILL_KERNEL(fill_u32, uint32_t)

VRSEG_KERNEL void pattern_u32(uint32_t* __restrict__ dst, uint64_t count, uint32_t seed) {
    const uint64_t stride = vrseg::global_thread_count();
    for (uint64_t i = vrseg::global_thread_index(); i < count; i += stride) {
        dst[i] = vrseg::hash_u32(seed + static_cast<uint32_t>(i));
    }
}

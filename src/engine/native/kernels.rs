//! The parameter structs of the convolution kernels
//! (`kernels/engine_conv_params.cuh`, read by `engine_conv.cu` and
//! `engine_conv_f32.cu`) and of `kernels/engine_ops.cu`, field for field,
//! and how a plan value becomes a [`TensorRef`].

use cudarc::driver::DeviceRepr;

use crate::engine::build::memory::ElementType;

/// Mirrors `ConvParamsOf` in kernels/engine_conv_params.cuh.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConvParams {
    pub x: u64,
    pub weight: u64,
    pub bias: u64,
    pub residual: u64,
    pub y: u64,
    /// Split-K sums, `[splits][m_total][batch * oh * ow]` FP32.
    pub partial: u64,
    pub x_batch_stride: i64,
    pub residual_batch_stride: i64,
    pub y_batch_stride: i64,
    /// NCHW output: elements from one channel plane to the next (`oh * ow`,
    /// more for a slice of a concatenation along the last axis).
    pub y_channel_stride: i64,
    pub batch: i32,
    pub cin: i32,
    pub h: i32,
    pub w: i32,
    pub cout: i32,
    pub oh: i32,
    pub ow: i32,
    pub kh: i32,
    pub kw: i32,
    pub sh: i32,
    pub sw: i32,
    pub dh: i32,
    pub dw: i32,
    pub pad_t: i32,
    pub pad_l: i32,
    pub k_total: i32,
    pub k_pad: i32,
    pub m_total: i32,
    pub activation: i32,
    pub y_f32: i32,
    pub residual_f32: i32,
    pub transposed_stride: i32,
    /// How the input tile loads: [`B_GATHER`], [`B_VECTOR`] or [`B_ROWS`].
    pub vector_b: i32,
    /// K tiles per split (grid z); 0: not split.
    pub k_split: i32,
    /// Grid z of a split launch (read by `conv_splitk_reduce`).
    pub splits: i32,
    /// NHWC operands: elements from one pixel to the next; 0 for NCHW. An
    /// NHWC input runs the `_nhwc` kernels; the output and residual share a
    /// layout.
    pub x_pixel_stride: i32,
    pub y_pixel_stride: i32,
    pub residual_pixel_stride: i32,
}
// SAFETY: #[repr(C)] plain data whose layout matches the CUDA struct (8-byte
// fields first, then 4-byte ones, 192 bytes, no implicit padding).
unsafe impl DeviceRepr for ConvParams {}
const _: () = assert!(std::mem::size_of::<ConvParams>() == 192);

/// `ConvParams::vector_b`: element-by-element gather from NCHW.
pub const B_GATHER: i32 = 0;
/// 1x1, stride 1, unpadded, planes of a multiple of 8: 16-byte cp.async rows.
pub const B_VECTOR: i32 = 1;
/// Stride 1 or 2 along x over rows of a multiple of 8 pixels: one input-row
/// segment per 16 output pixels, as aligned 16-byte loads.
pub const B_ROWS: i32 = 2;
/// An NHWC input (`_nhwc` kernels; the device code keys on the kernel, not
/// this field, which `conv_steps` uses to pick it).
pub const B_NHWC: i32 = 4;

/// Mirrors `DepthwiseParamsOf` in kernels/engine_conv_params.cuh.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DepthwiseParams {
    pub x: u64,
    pub weight: u64,
    pub bias: u64,
    pub residual: u64,
    pub y: u64,
    pub x_batch_stride: i64,
    pub residual_batch_stride: i64,
    pub y_batch_stride: i64,
    pub batch: i32,
    pub channels: i32,
    pub h: i32,
    pub w: i32,
    pub oh: i32,
    pub ow: i32,
    pub kh: i32,
    pub kw: i32,
    pub sh: i32,
    pub sw: i32,
    pub dh: i32,
    pub dw: i32,
    pub pad_t: i32,
    pub pad_l: i32,
    pub activation: i32,
    pub y_f32: i32,
    pub residual_f32: i32,
    /// As [`ConvParams::x_pixel_stride`] (`conv_depthwise_nhwc`).
    pub x_pixel_stride: i32,
    pub y_pixel_stride: i32,
    pub residual_pixel_stride: i32,
}
// SAFETY: as ConvParams (144 bytes, no implicit padding).
unsafe impl DeviceRepr for DepthwiseParams {}

impl DepthwiseParams {
    /// A depthwise convolution (channels = cin = cout) with `p`'s geometry
    /// and epilogue.
    pub fn from_conv(p: &ConvParams) -> DepthwiseParams {
        DepthwiseParams {
            x: p.x,
            weight: p.weight,
            bias: p.bias,
            residual: p.residual,
            y: p.y,
            x_batch_stride: p.x_batch_stride,
            residual_batch_stride: p.residual_batch_stride,
            y_batch_stride: p.y_batch_stride,
            batch: p.batch,
            channels: p.cin,
            h: p.h,
            w: p.w,
            oh: p.oh,
            ow: p.ow,
            kh: p.kh,
            kw: p.kw,
            sh: p.sh,
            sw: p.sw,
            dh: p.dh,
            dw: p.dw,
            pad_t: p.pad_t,
            pad_l: p.pad_l,
            activation: p.activation,
            y_f32: p.y_f32,
            residual_f32: p.residual_f32,
            x_pixel_stride: p.x_pixel_stride,
            y_pixel_stride: p.y_pixel_stride,
            residual_pixel_stride: p.residual_pixel_stride,
        }
    }
}
const _: () = assert!(std::mem::size_of::<DepthwiseParams>() == 144);

/// Mirrors `TensorRef` in kernels/engine_ops.cu: a strided view of up to 4
/// dims, left-padded with 1s; broadcast dims have stride 0.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TensorRef {
    pub ptr: u64,
    pub strides: [i64; 4],
    pub dims: [i32; 4],
    pub is_f32: i32,
    pub reserved: i32,
}
const _: () = assert!(std::mem::size_of::<TensorRef>() == 64);

impl TensorRef {
    /// A value of `shape` at `ptr`: dense within one image, `batch_stride`
    /// elements between images (dim 0). Dims of size 1 get stride 0, which
    /// makes broadcasting and padding uniform.
    pub fn new(ptr: u64, element: ElementType, shape: &[usize], batch_stride: usize) -> TensorRef {
        assert!(shape.len() <= 4, "the plan checker refuses tensors of more than 4 dims");
        let mut t = TensorRef { ptr, is_f32: (element == ElementType::F32) as i32, ..Default::default() };
        t.dims = [1; 4];
        let rank = shape.len();
        let mut dense = 1usize;
        for i in (0..rank).rev() {
            let d = 4 - rank + i;
            t.dims[d] = shape[i] as i32;
            t.strides[d] = if i == 0 { batch_stride as i64 } else { dense as i64 };
            dense *= shape[i];
        }
        for d in 0..4 {
            if t.dims[d] == 1 {
                t.strides[d] = 0;
            }
        }
        t
    }

    /// An NHWC value of logical (ONNX) `shape` [N, C, H, W] at `ptr`:
    /// `batch_stride` elements between images, `pixel_stride` between
    /// pixels, channels contiguous. The dims stay in ONNX order (every op
    /// indexes logically), the strides say where elements are; no stride is
    /// zeroed, so narrowing any dim moves the pointer correctly.
    pub fn nhwc(ptr: u64, shape: &[usize], batch_stride: usize, pixel_stride: usize) -> TensorRef {
        assert_eq!(shape.len(), 4, "only 4-D values are stored NHWC");
        let (w, ps) = (shape[3] as i64, pixel_stride as i64);
        TensorRef {
            ptr,
            strides: [batch_stride as i64, 1, w * ps, ps],
            dims: [shape[0] as i32, shape[1] as i32, shape[2] as i32, shape[3] as i32],
            is_f32: 0,
            reserved: 0,
        }
    }

    /// Whether the dims of more than one element are in memory order
    /// (strides non-increasing), as an elementwise kernel walks them.
    fn in_memory_order(&self) -> bool {
        let strides: Vec<i64> = (0..4).filter(|&d| self.dims[d] > 1).map(|d| self.strides[d]).collect();
        strides.windows(2).all(|w| w[0] >= w[1])
    }

    pub fn elements(&self) -> usize {
        self.dims.iter().map(|&d| d as usize).product()
    }

    pub fn element_bytes(&self) -> u64 {
        if self.is_f32 != 0 {
            4
        } else {
            2
        }
    }

    /// This tensor broadcast to `dims` (numpy rules, both left-padded to 4).
    pub fn broadcast_to(mut self, dims: [i32; 4]) -> Option<TensorRef> {
        for (d, &want) in dims.iter().enumerate() {
            if self.dims[d] == want {
                continue;
            }
            if self.dims[d] != 1 {
                return None;
            }
            self.dims[d] = want;
            self.strides[d] = 0;
        }
        Some(self)
    }

    /// The sub-range [start, start + len) of dim `d`.
    pub fn narrow(mut self, d: usize, start: usize, len: usize) -> TensorRef {
        self.ptr += start as u64 * self.strides[d] as u64 * self.element_bytes();
        self.dims[d] = len as i32;
        self
    }
}

/// Mirrors `MapParams`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MapParams {
    pub out: TensorRef,
    pub input: TensorRef,
    pub div: [i32; 4],
    pub op: i32,
    /// Elements per thread along the last dim: [`RUN`] where the last dim
    /// is a multiple of it (see [`run_for`]), else 1.
    pub run: i32,
}
// SAFETY: #[repr(C)] plain data matching the CUDA struct (152 bytes).
unsafe impl DeviceRepr for MapParams {}

/// `kRun` in engine_ops.cu.
pub const RUN: i32 = 4;
/// `MapParams::run` for one 16-byte FP16 copy a thread (`kVec16`).
pub const RUN_VEC16: i32 = 8;

/// Whether a map from `input` to `out` (dims already in memory order) may
/// copy 8 FP16 elements at a time: dim 3 contiguous and not divided on both
/// sides, and every other offset 16-byte aligned.
pub fn copies_by_16_bytes(out: &TensorRef, input: &TensorRef, div: &[i32; 4]) -> bool {
    div[3] == 1 && out.dims[3] % RUN_VEC16 == 0 && by_16_bytes(out, 3) && by_16_bytes(input, 3)
}

/// Whether 8 consecutive FP16 elements of `t` along dim `contiguous` are
/// one aligned 16-byte vector wherever a kernel starts one at a multiple of
/// 8 along it: FP16, 16-byte aligned, that dim contiguous and every other
/// stride a multiple of 8.
fn by_16_bytes(t: &TensorRef, contiguous: usize) -> bool {
    t.is_f32 == 0
        && t.ptr % 16 == 0
        && t.strides[contiguous] == 1
        && (0..4).filter(|&d| d != contiguous).all(|d| t.strides[d] % 8 == 0)
}

/// Whether a transpose into `out` from `input` (the permuted view, dims as
/// `out`'s) swaps the last two dims of an FP16 value, each dense along its
/// contiguous dim, for `transpose_last2`: out's dim 3 and input's dim 2
/// contiguous, both 32-row tiles worth it (at least 32 a side), the batch
/// dims within one grid's z (65,535 blocks).
pub fn swaps_last_two(out: &TensorRef, input: &TensorRef) -> bool {
    out.is_f32 == 0
        && input.is_f32 == 0
        && out.strides[3] == 1
        && input.strides[2] == 1
        && out.dims[2] >= 32
        && out.dims[3] >= 32
        && (out.dims[0] as i64) * (out.dims[1] as i64) <= 65_535
}

/// The longest (FP16, contiguous) softmax row `softmax_warp512` holds in
/// registers (32 lanes of 16).
pub const SOFTMAX_REGISTER_ROW: usize = 512;

/// Whether a max-pool of NHWC values (dims in ONNX order, channels the
/// contiguous dim 1) may run 8 FP16 channels a thread (`max_pool_nhwc8`):
/// channels contiguous on both sides and a multiple of 8, every other
/// stride a multiple of 8, 16-byte aligned, and an output whose element
/// count (the kernel's index) fits 32 bits.
pub fn pools_by_16_bytes(out: &TensorRef, input: &TensorRef) -> bool {
    out.dims[1] % 8 == 0
        && out.dims[1] == input.dims[1]
        && out.elements() <= u32::MAX as usize
        && by_16_bytes(out, 1)
        && by_16_bytes(input, 1)
}

/// The run length for an elementwise launch writing `out`, and the threads
/// it needs.
pub fn run_for(out: &TensorRef) -> (i32, u64) {
    let elements = out.elements() as u64;
    if out.dims[3] % RUN == 0 {
        (RUN, elements / RUN as u64)
    } else {
        (1, elements)
    }
}

/// The dim order in which an elementwise launch writing `out` walks memory
/// contiguously: `None` when ONNX order already does (NCHW values), else a
/// permutation (output dim k is logical dim perm[k]) that sorts `out`'s
/// strides, size-1 dims first. Elementwise ops (map with per-dim divisors,
/// binary) may apply it to all operands alike without changing results.
pub fn memory_order(out: &TensorRef) -> Option<[usize; 4]> {
    if out.in_memory_order() {
        return None;
    }
    let mut perm = [0usize, 1, 2, 3];
    perm.sort_by_key(|&d| std::cmp::Reverse(if out.dims[d] == 1 { i64::MAX } else { out.strides[d] }));
    Some(perm)
}

/// `t` with its dims reordered by `perm` (see [`memory_order`]).
pub fn permuted(t: TensorRef, perm: [usize; 4]) -> TensorRef {
    let mut p = t;
    for (k, &d) in perm.iter().enumerate() {
        p.dims[k] = t.dims[d];
        p.strides[k] = t.strides[d];
    }
    p
}

pub const MAP_COPY: i32 = 0;
pub const MAP_SIGMOID: i32 = 1;

/// Mirrors `BinaryParams`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BinaryParams {
    pub out: TensorRef,
    pub a: TensorRef,
    pub b: TensorRef,
    pub op: i32,
    /// As [`MapParams::run`].
    pub run: i32,
}
// SAFETY: #[repr(C)] plain data matching the CUDA struct (200 bytes).
unsafe impl DeviceRepr for BinaryParams {}

/// Mirrors `SoftmaxParams`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SoftmaxParams {
    pub out: TensorRef,
    pub input: TensorRef,
    pub axis: i32,
    pub reserved: i32,
}
// SAFETY: #[repr(C)] plain data matching the CUDA struct (136 bytes).
unsafe impl DeviceRepr for SoftmaxParams {}

/// Mirrors `PoolParams`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolParams {
    pub out: TensorRef,
    pub input: TensorRef,
    pub kh: i32,
    pub kw: i32,
    pub sh: i32,
    pub sw: i32,
    pub pad_t: i32,
    pub pad_l: i32,
}
// SAFETY: #[repr(C)] plain data matching the CUDA struct (152 bytes).
unsafe impl DeviceRepr for PoolParams {}

/// Mirrors `MatmulParams`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MatmulParams {
    pub out: TensorRef,
    pub a: TensorRef,
    pub b: TensorRef,
    pub k: i32,
    pub reserved: i32,
}
// SAFETY: #[repr(C)] plain data matching the CUDA struct (200 bytes).
unsafe impl DeviceRepr for MatmulParams {}

const _: () = assert!(std::mem::size_of::<MapParams>() == 152);
const _: () = assert!(std::mem::size_of::<BinaryParams>() == 200);
const _: () = assert!(std::mem::size_of::<SoftmaxParams>() == 136);
const _: () = assert!(std::mem::size_of::<PoolParams>() == 152);
const _: () = assert!(std::mem::size_of::<MatmulParams>() == 200);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_becomes_a_left_padded_strided_ref() {
        let t = TensorRef::new(0x1000, ElementType::F16, &[3, 5, 7], 100);
        assert_eq!(t.dims, [1, 3, 5, 7]);
        assert_eq!(t.strides, [0, 100, 7, 1]);
        let s = TensorRef::new(0, ElementType::F32, &[], 1);
        assert_eq!((s.dims, s.strides), ([1; 4], [0; 4]));
        let b = TensorRef::new(0, ElementType::F32, &[1, 8400], 8400).broadcast_to([1, 1, 4, 8400]).unwrap();
        assert_eq!(b.strides, [0, 0, 0, 1]);
        assert!(TensorRef::new(0, ElementType::F32, &[3], 1).broadcast_to([1, 1, 1, 4]).is_none());
        let n = t.narrow(2, 2, 3);
        assert_eq!((n.ptr, n.dims[2]), (0x1000 + 2 * 7 * 2, 3));
    }

    #[test]
    fn an_nhwc_value_is_walked_channels_last() {
        // [2, 16, 5, 7], a 16-channel slice of a 48-channel root.
        let t = TensorRef::nhwc(0x2000, &[2, 16, 5, 7], 5 * 7 * 48, 48);
        assert_eq!(t.strides, [1680, 1, 336, 48]);
        assert_eq!(memory_order(&t), Some([0, 2, 3, 1]));
        let p = permuted(t, [0, 2, 3, 1]);
        assert_eq!((p.dims, p.strides), ([2, 5, 7, 16], [1680, 336, 48, 1]));
        // NCHW values (and size-1 dims anywhere) keep ONNX order.
        assert_eq!(memory_order(&TensorRef::new(0, ElementType::F16, &[2, 16, 5, 7], 560)), None);
        assert_eq!(memory_order(&TensorRef::new(0, ElementType::F16, &[1, 3, 1, 7], 21)), None);
        // A channel narrow moves by one element per channel.
        assert_eq!(t.narrow(1, 8, 8).ptr, 0x2000 + 8 * 2);
    }

    #[test]
    fn sixteen_byte_copies_need_fp16_contiguous_aligned_operands() {
        // An NHWC resize into a concat slice, channels last (memory order).
        let out = TensorRef { ptr: 0x1000, strides: [4096, 256, 64, 1], dims: [2, 4, 4, 64], ..Default::default() };
        let input = TensorRef { ptr: 0x2000, strides: [512, 128, 64, 1], dims: [2, 2, 2, 64], ..Default::default() };
        let div = [1, 2, 2, 1];
        assert!(copies_by_16_bytes(&out, &input, &div));
        assert!(!copies_by_16_bytes(&TensorRef { ptr: 0x1008, ..out }, &input, &div), "unaligned pointer");
        assert!(!copies_by_16_bytes(&TensorRef { strides: [4096, 256, 68, 1], ..out }, &input, &div), "odd stride");
        assert!(!copies_by_16_bytes(&TensorRef { is_f32: 1, ..out }, &input, &div), "FP32");
        assert!(!copies_by_16_bytes(&out, &input, &[1, 2, 2, 2]), "divided last dim");
        assert!(!copies_by_16_bytes(&TensorRef { dims: [2, 4, 4, 60], ..out }, &input, &div), "60 channels");
        assert!(!copies_by_16_bytes(&out, &TensorRef { strides: [512, 128, 64, 0], ..input }, &div), "broadcast");
    }

    #[test]
    fn tiled_transposes_swap_the_last_two_dims_of_fp16_values() {
        // Attention scores [32, 6, 400, 400] transposed: the permuted view
        // of the dense input has its contiguous dim at 2.
        let out = TensorRef {
            ptr: 0x1000,
            strides: [960_000, 160_000, 400, 1],
            dims: [32, 6, 400, 400],
            ..Default::default()
        };
        let input = TensorRef { strides: [960_000, 160_000, 1, 400], ..out };
        assert!(swaps_last_two(&out, &input));
        assert!(!swaps_last_two(&out, &TensorRef { is_f32: 1, ..input }), "FP32");
        assert!(!swaps_last_two(&out, &out), "a copy, not a transpose");
        let narrow = |t: TensorRef| TensorRef { dims: [32, 6, 400, 12], ..t };
        assert!(!swaps_last_two(&narrow(out), &narrow(input)), "12 columns: no tile");
        let nhwc = TensorRef { strides: [960_000, 1, 2400, 6], ..out };
        assert!(!swaps_last_two(&nhwc, &input), "an output not dense along its last dim");
    }

    #[test]
    fn sixteen_byte_pools_need_fp16_channels_last_aligned_operands() {
        // SPPF: an NHWC pool (dims in ONNX order, channels stride 1) into
        // its slice of a 4-way channel concat (pixel stride 4 x 384).
        let input =
            TensorRef { ptr: 0x1000, strides: [153_600, 1, 7680, 384], dims: [32, 384, 20, 20], ..Default::default() };
        let out = TensorRef { ptr: 0x1300, strides: [614_400, 1, 30_720, 1536], ..input };
        assert!(pools_by_16_bytes(&out, &input));
        assert!(!pools_by_16_bytes(&TensorRef { ptr: 0x1302, ..out }, &input), "unaligned slice");
        assert!(!pools_by_16_bytes(&TensorRef { is_f32: 1, ..out }, &input), "FP32");
        let narrow = |t: TensorRef| TensorRef { dims: [32, 20, 20, 20], ..t };
        assert!(!pools_by_16_bytes(&narrow(out), &narrow(input)), "20 channels");
        assert!(!pools_by_16_bytes(&TensorRef { strides: [614_400, 1, 30_720, 1532], ..out }, &input), "odd stride");
        let nchw = TensorRef { strides: [153_600, 400, 20, 1], ..input };
        assert!(!pools_by_16_bytes(&out, &nchw), "NCHW input");
        let huge = TensorRef { dims: [32 * 4096, 384, 20, 20], ..out };
        assert!(!pools_by_16_bytes(&huge, &TensorRef { dims: huge.dims, ..input }), "index beyond 32 bits");
    }

    #[test]
    fn depthwise_params_keep_the_convs_geometry_and_epilogue() {
        let p = ConvParams {
            x: 1,
            weight: 2,
            bias: 3,
            residual: 4,
            y: 5,
            x_batch_stride: 6,
            residual_batch_stride: 7,
            y_batch_stride: 8,
            batch: 9,
            cin: 10,
            h: 11,
            w: 12,
            cout: 10,
            oh: 13,
            ow: 14,
            kh: 15,
            kw: 16,
            sh: 17,
            sw: 18,
            dh: 19,
            dw: 20,
            pad_t: 21,
            pad_l: 22,
            activation: 1,
            y_f32: 1,
            residual_f32: 1,
            ..Default::default()
        };
        let d = DepthwiseParams::from_conv(&p);
        let want = DepthwiseParams {
            x: 1,
            weight: 2,
            bias: 3,
            residual: 4,
            y: 5,
            x_batch_stride: 6,
            residual_batch_stride: 7,
            y_batch_stride: 8,
            batch: 9,
            channels: 10,
            h: 11,
            w: 12,
            oh: 13,
            ow: 14,
            kh: 15,
            kw: 16,
            sh: 17,
            sw: 18,
            dh: 19,
            dw: 20,
            pad_t: 21,
            pad_l: 22,
            activation: 1,
            y_f32: 1,
            residual_f32: 1,
            x_pixel_stride: 0,
            y_pixel_stride: 0,
            residual_pixel_stride: 0,
        };
        assert_eq!(d, want);
    }

    /// The native engine launches its kernels with programmatic dependent
    /// launch (`NativeEngine::launch_programmatic`), which keeps the order of
    /// the forward only if every kernel waits for the one before it before
    /// touching memory: each entry point of the engine's kernel files must
    /// begin with `vrseg::wait_for_prior_grid()`.
    #[test]
    fn every_engine_kernel_waits_for_the_kernel_before_it() {
        let files = [
            ("engine_conv.cu", include_str!("../../../kernels/engine_conv.cu")),
            ("engine_conv_f32.cu", include_str!("../../../kernels/engine_conv_f32.cu")),
            ("engine_ops.cu", include_str!("../../../kernels/engine_ops.cu")),
        ];
        let mut entries = 0;
        for (name, text) in files {
            for (at, _) in text.match_indices("VRSEG_KERNEL") {
                let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
                if text[line_start..at].trim_start().starts_with("//") {
                    continue;
                }
                let body = &text[at + text[at..].find('{').expect("an entry point has a body") + 1..];
                let first = body.trim_start_matches(|c: char| c.is_whitespace() || c == '\\');
                let signature = text[at..].lines().next().unwrap_or_default();
                assert!(
                    first.starts_with("vrseg::wait_for_prior_grid();"),
                    "{name}: `{signature}` does not begin with vrseg::wait_for_prior_grid()"
                );
                entries += 1;
            }
        }
        assert!(entries >= 25, "found {entries} entry points");
    }
}

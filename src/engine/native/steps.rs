//! Turning plan nodes into kernel launches for one set of bound buffers:
//! pointers resolved from placements, views and in-place concatenations
//! dropped, tile shapes chosen.

use cudarc::driver::LaunchConfig;

use super::kernels::*;
use super::{EngineError, NativeEngine, Params, Step};
use crate::engine::build::ir::{Activation, Op};
use crate::engine::build::memory::{ElementType, Layout, Storage};
use crate::engine::plan::{PlanValue, WeightFormat};
use crate::gpu::launch::grid_stride;
use crate::gpu::Kernel;

/// Pixel columns per conv tile (`kBlockN` in engine_conv.cu).
const CONV_TILE_N: usize = 128;
/// Output rows and pixel columns per `conv_f32` tile (`kTileM`, `kTileN` in
/// engine_conv_f32.cu).
const CONV_F32_TILE: usize = 64;

impl NativeEngine<'_> {
    /// Device address of value `v`'s first element for the bound pointers
    /// `key` (inputs, then outputs).
    fn address(&self, v: usize, key: &[u64]) -> u64 {
        let p = self.graph.values[v].placement;
        let base = match p.storage {
            Storage::Arena => self.arena.ptr(),
            Storage::Input(i) => key[i],
            Storage::Output(i) => key[self.graph.inputs.len() + i],
            Storage::Constant => {
                self.weights.ptr() + self.weight_offset[p.root].expect("the plan checker maps every constant")
            }
        };
        base + p.offset as u64
    }

    fn tensor(&self, v: usize, key: &[u64]) -> TensorRef {
        let value = &self.graph.values[v];
        match value.placement.layout {
            Layout::Nchw => {
                TensorRef::new(self.address(v, key), value.element, &value.shape, value.placement.batch_stride)
            }
            Layout::Nhwc { pixel_stride } => {
                TensorRef::nhwc(self.address(v, key), &value.shape, value.placement.batch_stride, pixel_stride)
            }
            Layout::NchwPlanes { plane_stride } => {
                let mut t =
                    TensorRef::new(self.address(v, key), value.element, &value.shape, value.placement.batch_stride);
                // The channel dim (ONNX axis 1), unless broadcast-zeroed.
                let d = 4 - value.shape.len() + 1;
                if t.dims[d] > 1 {
                    t.strides[d] = plane_stride as i64;
                }
                t
            }
        }
    }

    /// Elements between channel planes of NCHW value `v` (its own plane
    /// size unless it is a slice along the last axis).
    fn channel_stride(&self, v: usize) -> i64 {
        let value = &self.graph.values[v];
        match value.placement.layout {
            Layout::NchwPlanes { plane_stride } => plane_stride as i64,
            _ => value.shape.iter().skip(2).product::<usize>() as i64,
        }
    }

    /// Elements between pixels of value `v` when it is NHWC, else 0 (the
    /// kernels' convention).
    fn pixel_stride(&self, v: usize) -> i32 {
        match self.graph.values[v].placement.layout {
            Layout::Nchw | Layout::NchwPlanes { .. } => 0,
            Layout::Nhwc { pixel_stride } => pixel_stride as i32,
        }
    }

    fn refuse(&self, node: usize, reason: impl Into<String>) -> EngineError {
        let n = &self.graph.nodes[node];
        EngineError::Node { plan: self.path.clone(), node: n.name.clone(), op: n.op.onnx_type(), reason: reason.into() }
    }

    /// The launches of one forward, in plan order.
    pub(super) fn compile(&self, key: &[u64]) -> Result<Vec<Step>, EngineError> {
        if let Some(what) = damaged_layout(&self.graph.values) {
            return Err(EngineError::Binding { plan: self.path.clone(), what });
        }
        let mut steps = Vec::new();
        for (i, node) in self.graph.nodes.iter().enumerate() {
            self.compile_node(i, &node.op, key, &mut steps)?;
        }
        Ok(steps)
    }

    fn map_step(&self, node: usize, mut out: TensorRef, mut input: TensorRef, mut div: [i32; 4], op: i32) -> Step {
        // Walk NHWC outputs channels-last (coalesced), permuting every
        // operand's dims and the divisors alike.
        if let Some(perm) = memory_order(&out) {
            out = permuted(out, perm);
            input = permuted(input, perm);
            div = perm.map(|d| div[d]);
        }
        let (run, threads) = if op == MAP_COPY && copies_by_16_bytes(&out, &input, &div) {
            (RUN_VEC16, out.elements() as u64 / RUN_VEC16 as u64)
        } else {
            run_for(&out)
        };
        Step {
            node,
            kernel: Kernel::TensorMap,
            config: grid_stride(&self.gpu, threads),
            params: Params::Map(MapParams { out, input, div, op, run }),
        }
    }

    /// A copy of `input` into `out` unless both already are the same memory
    /// (a view, or a concatenation member written in place).
    fn copy_unless_same(&self, node: usize, out: TensorRef, input: TensorRef, steps: &mut Vec<Step>) {
        let same = out.ptr == input.ptr
            && out.dims == input.dims
            && (0..4).all(|d| out.dims[d] == 1 || out.strides[d] == input.strides[d])
            && out.is_f32 == input.is_f32;
        if !same {
            steps.push(self.map_step(node, out, input, [1; 4], MAP_COPY));
        }
    }

    fn compile_node(&self, i: usize, op: &Op, key: &[u64], steps: &mut Vec<Step>) -> Result<(), EngineError> {
        let node = &self.graph.nodes[i];
        let rank_of = |v: usize| self.graph.values[v].shape.len();
        match op {
            Op::Conv(c) => {
                let x = &self.graph.values[node.inputs[0]];
                let y = &self.graph.values[node.outputs[0]];
                let has_bias = node.inputs.len() == 3 + c.residual as usize;
                let bias = if has_bias { self.address(node.inputs[2], key) } else { 0 };
                let (residual, residual_stride, residual_f32) = if c.residual {
                    let r = *node.inputs.last().unwrap();
                    let rv = &self.graph.values[r];
                    (self.address(r, key), rv.placement.batch_stride as i64, (rv.element == ElementType::F32) as i32)
                } else {
                    (0, 0, 0)
                };
                let (n, cin, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
                let (cout, oh, ow) = (y.shape[1], y.shape[2], y.shape[3]);
                let activation = activation_code(c.activation);
                // Geometry and epilogue, shared by the depthwise kernel; the
                // GEMM's K and M follow below for the implicit-GEMM kernels.
                let mut p = ConvParams {
                    x: self.address(node.inputs[0], key),
                    weight: self.address(node.inputs[1], key),
                    bias,
                    residual,
                    y: self.address(node.outputs[0], key),
                    x_batch_stride: x.placement.batch_stride as i64,
                    residual_batch_stride: residual_stride,
                    y_batch_stride: y.placement.batch_stride as i64,
                    y_channel_stride: self.channel_stride(node.outputs[0]),
                    batch: n as i32,
                    cin: cin as i32,
                    h: h as i32,
                    w: w as i32,
                    cout: cout as i32,
                    oh: oh as i32,
                    ow: ow as i32,
                    kh: c.kernel[0] as i32,
                    kw: c.kernel[1] as i32,
                    sh: c.stride[0] as i32,
                    sw: c.stride[1] as i32,
                    dh: c.dilation[0] as i32,
                    dw: c.dilation[1] as i32,
                    pad_t: c.pads[0] as i32,
                    pad_l: c.pads[1] as i32,
                    activation,
                    y_f32: (y.element == ElementType::F32) as i32,
                    residual_f32,
                    x_pixel_stride: self.pixel_stride(node.inputs[0]),
                    y_pixel_stride: self.pixel_stride(node.outputs[0]),
                    residual_pixel_stride: if c.residual { self.pixel_stride(*node.inputs.last().unwrap()) } else { 0 },
                    ..Default::default()
                };
                if c.residual && (p.residual_pixel_stride > 0) != (p.y_pixel_stride > 0) {
                    return Err(self.refuse(i, "its residual and output are stored in different layouts"));
                }
                let pitched = matches!(y.placement.layout, Layout::NchwPlanes { .. });
                if c.group != 1 && (c.group != cin || cout != cin) {
                    return Err(self.refuse(i, "grouped convolution other than depthwise"));
                }
                if x.element == ElementType::F32 {
                    p.k_total = (cin / c.group * c.kernel[0] * c.kernel[1]) as i32;
                    p.m_total = cout as i32;
                    return self.conv_f32_steps(i, p, c.group != 1, pitched, node.inputs[1], steps);
                }
                if c.group != 1 {
                    if pitched {
                        return Err(self.refuse(i, "a depthwise conv writing a slice along the last axis"));
                    }
                    let outputs = y.shape.iter().product::<usize>() as u64;
                    let nhwc = p.x_pixel_stride > 0;
                    let tap_major = self.weight_format(node.inputs[1]) == Some(WeightFormat::F16TapMajor);
                    if nhwc != (p.y_pixel_stride > 0) || nhwc != tap_major {
                        return Err(self.refuse(i, "a depthwise conv's input, output and weight disagree on layout"));
                    }
                    if nhwc {
                        // Checked by the plan's layout rule; the kernel's 16-byte accesses rely on it.
                        let aligned = cin % 8 == 0
                            && [p.x, p.y, p.weight].iter().all(|a| a % 16 == 0)
                            && (p.residual == 0 || (p.residual % 16 == 0 && residual_f32 == 0))
                            && p.y_f32 == 0;
                        if !aligned {
                            return Err(
                                self.refuse(i, "an NHWC depthwise conv needs 8-channel groups, FP16, 16-byte aligned")
                            );
                        }
                        steps.push(Step {
                            node: i,
                            kernel: Kernel::ConvDepthwiseNhwc,
                            config: grid_stride(&self.gpu, outputs / 8),
                            params: Params::Depthwise(DepthwiseParams::from_conv(&p)),
                        });
                        return Ok(());
                    }
                    let row4 = c.kernel == [3, 3] && c.stride == [1, 1] && c.dilation == [1, 1] && ow % 4 == 0;
                    steps.push(Step {
                        node: i,
                        kernel: if row4 { Kernel::ConvDepthwise3x3Row4 } else { Kernel::ConvDepthwise },
                        config: grid_stride(&self.gpu, if row4 { outputs / 4 } else { outputs }),
                        params: Params::Depthwise(DepthwiseParams::from_conv(&p)),
                    });
                    return Ok(());
                }
                let (rows, cols) = self.gemm_shape(i, node.inputs[1], p.x_pixel_stride > 0)?;
                p.k_total = (cin * c.kernel[0] * c.kernel[1]) as i32;
                p.k_pad = cols as i32;
                p.m_total = cout as i32;
                let pointwise = c.kernel == [1, 1] && c.stride == [1, 1] && c.pads == [0; 4];
                self.conv_steps(i, p, rows, cols, pointwise, steps)?;
            }
            Op::ConvTranspose(t) => {
                let x = &self.graph.values[node.inputs[0]];
                let y = &self.graph.values[node.outputs[0]];
                let s = t.stride[0];
                if t.kernel != t.stride || t.pads != [0; 4] || t.stride[0] != t.stride[1] {
                    return Err(self.refuse(i, "only kernel = stride, unpadded, square ConvTranspose runs natively"));
                }
                if matches!(y.placement.layout, Layout::NchwPlanes { .. }) {
                    return Err(self.refuse(i, "a ConvTranspose writing a slice along the last axis"));
                }
                let (n, cin, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
                let cout = y.shape[1];
                let f32 = x.element == ElementType::F32;
                let (rows, cols) = if f32 {
                    (0, 0)
                } else {
                    self.gemm_shape(i, node.inputs[1], self.pixel_stride(node.outputs[0]) > 0)?
                };
                let p = ConvParams {
                    x: self.address(node.inputs[0], key),
                    weight: self.address(node.inputs[1], key),
                    bias: if node.inputs.len() > 2 { self.address(node.inputs[2], key) } else { 0 },
                    residual: 0,
                    y: self.address(node.outputs[0], key),
                    x_batch_stride: x.placement.batch_stride as i64,
                    residual_batch_stride: 0,
                    y_batch_stride: y.placement.batch_stride as i64,
                    y_channel_stride: self.channel_stride(node.outputs[0]),
                    batch: n as i32,
                    cin: cin as i32,
                    h: h as i32,
                    w: w as i32,
                    cout: cout as i32,
                    oh: h as i32,
                    ow: w as i32,
                    kh: 1,
                    kw: 1,
                    sh: 1,
                    sw: 1,
                    dh: 1,
                    dw: 1,
                    pad_t: 0,
                    pad_l: 0,
                    k_total: cin as i32,
                    k_pad: cols as i32,
                    m_total: (cout * s * s) as i32,
                    activation: 0,
                    y_f32: (y.element == ElementType::F32) as i32,
                    residual_f32: 0,
                    transposed_stride: s as i32,
                    x_pixel_stride: self.pixel_stride(node.inputs[0]),
                    y_pixel_stride: self.pixel_stride(node.outputs[0]),
                    ..Default::default()
                };
                if f32 {
                    return self.conv_f32_steps(i, p, false, false, node.inputs[1], steps);
                }
                self.conv_steps(i, p, rows, cols, true, steps)?;
            }
            Op::MaxPool(m) => {
                let out = self.tensor(node.outputs[0], key);
                // The kernel steps through the input's rows and columns by
                // their strides, so a size-1 dim must keep its dense stride.
                let input = restride(restride(self.tensor(node.inputs[0], key), 2), 3);
                let nhwc = self.pixel_stride(node.inputs[0]) > 0;
                let p = PoolParams {
                    out,
                    input,
                    kh: m.kernel[0] as i32,
                    kw: m.kernel[1] as i32,
                    sh: m.stride[0] as i32,
                    sw: m.stride[1] as i32,
                    pad_t: m.pads[0] as i32,
                    pad_l: m.pads[1] as i32,
                };
                // NHWC values take 8 channels a thread (the planner makes
                // only values of a multiple of 8 channels NHWC); max_pool
                // runs anything else through the strides.
                let (kernel, threads) = if nhwc && pools_by_16_bytes(&p.out, &p.input) {
                    (Kernel::MaxPoolNhwc8, out.elements() as u64 / 8)
                } else {
                    (Kernel::MaxPool, out.elements() as u64)
                };
                steps.push(Step { node: i, kernel, config: grid_stride(&self.gpu, threads), params: Params::Pool(p) });
            }
            Op::ResizeNearest { scales } => {
                let out = self.tensor(node.outputs[0], key);
                let input = self.tensor(node.inputs[0], key);
                let mut div = [1i32; 4];
                for (k, &s) in scales.iter().enumerate() {
                    div[4 - scales.len() + k] = s as i32;
                }
                steps.push(self.map_step(i, out, input, div, MAP_COPY));
            }
            Op::Concat { axis } => {
                let out = self.tensor(node.outputs[0], key);
                let d = 4 - rank_of(node.outputs[0]) + axis;
                let mut start = 0;
                for &x in &node.inputs {
                    let len = self.graph.values[x].shape[*axis];
                    let input = self.tensor(x, key);
                    self.copy_unless_same(i, restride(out, d).narrow(d, start, len), input, steps);
                    start += len;
                }
            }
            Op::Split { axis, sizes } => {
                let input = self.tensor(node.inputs[0], key);
                let d = 4 - rank_of(node.inputs[0]) + axis;
                let mut start = 0;
                for (&y, &len) in node.outputs.iter().zip(sizes) {
                    let out = self.tensor(y, key);
                    self.copy_unless_same(i, out, restride(input, d).narrow(d, start, len), steps);
                    start += len;
                }
            }
            Op::Slice { axes, starts, steps: step_by, .. } => {
                let out = self.tensor(node.outputs[0], key);
                let r = rank_of(node.inputs[0]);
                let mut input = self.tensor(node.inputs[0], key);
                for d in 0..4 {
                    input = restride(input, d);
                }
                for ((&a, &s), &st) in axes.iter().zip(starts).zip(step_by) {
                    let d = 4 - r + a;
                    input.ptr += s as u64 * input.strides[d] as u64 * input.element_bytes();
                    input.strides[d] *= st as i64;
                }
                input.dims = out.dims;
                self.copy_unless_same(i, out, input, steps);
            }
            Op::Reshape { .. } => {
                let (x, y) = (node.inputs[0], node.outputs[0]);
                if self.pixel_stride(x) > 0 || self.pixel_stride(y) > 0 {
                    return Err(self.refuse(i, "a reshape of an NHWC value (the plan's layout rule keeps them NCHW)"));
                }
                let (xv, yv) = (&self.graph.values[x], &self.graph.values[y]);
                if self.address(x, key) == self.address(y, key) && xv.element == yv.element {
                    return Ok(());
                }
                // Both dense within an image: copy image by image, flat.
                let (xb, yb) = (xv.shape.first().copied().unwrap_or(1), yv.shape.first().copied().unwrap_or(1));
                let per = yv.shape.iter().skip(1).product::<usize>();
                let (out, input) = if xb == yb {
                    (
                        TensorRef::new(self.address(y, key), yv.element, &[yb, per], yv.placement.batch_stride),
                        TensorRef::new(self.address(x, key), xv.element, &[xb, per], xv.placement.batch_stride),
                    )
                } else if xv.placement.batch_stride * xb == xv.shape.iter().product::<usize>()
                    && yv.placement.batch_stride * yb == yv.shape.iter().product::<usize>()
                {
                    let all = yv.shape.iter().product::<usize>();
                    (
                        TensorRef::new(self.address(y, key), yv.element, &[all], all),
                        TensorRef::new(self.address(x, key), xv.element, &[all], all),
                    )
                } else {
                    return Err(self.refuse(i, "a reshape across the batch of a strided value"));
                };
                steps.push(self.map_step(i, out, input, [1; 4], MAP_COPY));
            }
            Op::Transpose { perm } => {
                let out = self.tensor(node.outputs[0], key);
                let mut input = self.tensor(node.inputs[0], key);
                for d in 0..4 {
                    input = restride(input, d);
                }
                let r = perm.len();
                let mut permuted = input;
                for (k, &p) in perm.iter().enumerate() {
                    permuted.dims[4 - r + k] = input.dims[4 - r + p];
                    permuted.strides[4 - r + k] = input.strides[4 - r + p];
                }
                if swaps_last_two(&out, &permuted) {
                    let tiles = |n: i32| (n as u32).div_ceil(32);
                    steps.push(Step {
                        node: i,
                        kernel: Kernel::TransposeLast2,
                        config: LaunchConfig {
                            grid_dim: (tiles(out.dims[3]), tiles(out.dims[2]), (out.dims[0] * out.dims[1]) as u32),
                            block_dim: (256, 1, 1),
                            shared_mem_bytes: 0,
                        },
                        params: Params::Map(MapParams { out, input: permuted, div: [1; 4], op: MAP_COPY, run: 1 }),
                    });
                } else {
                    steps.push(self.map_step(i, out, permuted, [1; 4], MAP_COPY));
                }
            }
            Op::Sigmoid => {
                let out = self.tensor(node.outputs[0], key);
                let input = self.tensor(node.inputs[0], key);
                steps.push(self.map_step(i, out, input, [1; 4], MAP_SIGMOID));
            }
            Op::Add | Op::Sub | Op::Mul | Op::Div => {
                let out = self.tensor(node.outputs[0], key);
                let operand = |v: usize| {
                    self.tensor(v, key)
                        .broadcast_to(out.dims)
                        .ok_or_else(|| self.refuse(i, "operands do not broadcast"))
                };
                let (mut a, mut b) = (operand(node.inputs[0])?, operand(node.inputs[1])?);
                let mut out = out;
                if let Some(perm) = memory_order(&out) {
                    (out, a, b) = (permuted(out, perm), permuted(a, perm), permuted(b, perm));
                }
                let op = match op {
                    Op::Add => 0,
                    Op::Sub => 1,
                    Op::Mul => 2,
                    _ => 3,
                };
                let (run, threads) = run_for(&out);
                steps.push(Step {
                    node: i,
                    kernel: Kernel::TensorBinary,
                    config: grid_stride(&self.gpu, threads),
                    params: Params::Binary(BinaryParams { out, a, b, op, run }),
                });
            }
            Op::Softmax { axis } => {
                let out = self.tensor(node.outputs[0], key);
                let input = self.tensor(node.inputs[0], key);
                let d = 4 - rank_of(node.inputs[0]) + axis;
                let (out, input) = (restride(out, d), restride(input, d));
                let rows = (out.elements() / out.dims[d] as usize) as u64;
                // A warp a row from 32 elements; contiguous FP16 rows of up
                // to 512 (16 a lane) stay in registers.
                let in_registers = |t: &TensorRef| t.is_f32 == 0 && t.strides[d] == 1;
                let (kernel, threads) = match out.dims[d] as usize {
                    0..32 => (Kernel::SoftmaxThread, rows),
                    32..=SOFTMAX_REGISTER_ROW if in_registers(&out) && in_registers(&input) => {
                        (Kernel::SoftmaxWarp512, rows * 32)
                    }
                    _ => (Kernel::SoftmaxWarp, rows * 32),
                };
                steps.push(Step {
                    node: i,
                    kernel,
                    config: grid_stride(&self.gpu, threads),
                    params: Params::Softmax(SoftmaxParams { out, input, axis: d as i32, reserved: 0 }),
                });
            }
            Op::MatMul => {
                let out = self.tensor(node.outputs[0], key);
                let mut a = self.tensor(node.inputs[0], key);
                let mut b = self.tensor(node.inputs[1], key);
                for d in 2..4 {
                    a = restride(a, d);
                    b = restride(b, d);
                }
                for d in 0..2 {
                    for t in [&mut a, &mut b] {
                        if t.dims[d] != out.dims[d] {
                            if t.dims[d] != 1 {
                                return Err(self.refuse(i, "batch dims do not broadcast"));
                            }
                            t.dims[d] = out.dims[d];
                            t.strides[d] = 0;
                        }
                    }
                }
                let k = a.dims[3];
                if b.dims[2] != k || a.dims[2] != out.dims[2] || b.dims[3] != out.dims[3] {
                    return Err(self.refuse(i, "operand shapes do not agree"));
                }
                let (m, n) = (out.dims[2] as u32, out.dims[3] as u32);
                // FP16 operands run on tensor cores; FP32 ones keep FP32 products.
                let tensor_cores = a.is_f32 == 0 && b.is_f32 == 0;
                steps.push(Step {
                    node: i,
                    kernel: if tensor_cores { Kernel::MatmulF16Mma } else { Kernel::Matmul },
                    config: LaunchConfig {
                        // 64x64 output tiles (`kMatmulTile` in engine_ops.cu).
                        grid_dim: (n.div_ceil(64), m.div_ceil(64), (out.dims[0] * out.dims[1]) as u32),
                        block_dim: (256, 1, 1),
                        shared_mem_bytes: 0,
                    },
                    params: Params::Matmul(MatmulParams { out, a, b, k, reserved: 0 }),
                });
            }
        }
        Ok(())
    }

    fn weight_format(&self, weight: usize) -> Option<WeightFormat> {
        self.graph.weights.iter().find(|w| w.value == weight).map(|w| w.format)
    }

    /// The packed shape of a conv weight, which must be packed in the order
    /// its kernel reads (`tap_major` for an NHWC input, or a transposed
    /// conv's NHWC output).
    fn gemm_shape(&self, node: usize, weight: usize, tap_major: bool) -> Result<(usize, usize), EngineError> {
        match (self.weight_format(weight), tap_major) {
            (Some(WeightFormat::F16Gemm { rows, cols }), false)
            | (Some(WeightFormat::F16GemmTapMajor { rows, cols }), true) => Ok((rows, cols)),
            (other, _) => Err(self.refuse(
                node,
                format!(
                    "its weight is stored as {other:?}, not GEMM-packed FP16 {} (rebuild the plan)",
                    if tap_major { "in tap-major order" } else { "in ONNX order" }
                ),
            )),
        }
    }

    /// An FP32 plan's convolution, transposed convolution (where
    /// `p.transposed_stride` is set) or depthwise convolution
    /// (`kernels/engine_conv_f32.cu`): FP32 input and weight in ONNX's
    /// layout, NCHW values. `pitched`: the output is a slice along the last
    /// axis (its channel planes further apart than their size), which the
    /// depthwise kernel does not write.
    fn conv_f32_steps(
        &self,
        node: usize,
        p: ConvParams,
        depthwise: bool,
        pitched: bool,
        weight: usize,
        steps: &mut Vec<Step>,
    ) -> Result<(), EngineError> {
        match self.weight_format(weight) {
            Some(WeightFormat::F32) => {}
            other => {
                return Err(self.refuse(
                    node,
                    format!("its input is FP32 but its weight is stored as {other:?}, not FP32 (rebuild the plan)"),
                ))
            }
        }
        if p.x_pixel_stride > 0 || p.y_pixel_stride > 0 || p.residual_pixel_stride > 0 {
            return Err(self.refuse(node, "an FP32 convolution over NHWC values (FP32 plans store every value NCHW)"));
        }
        if depthwise {
            if pitched {
                return Err(self.refuse(node, "a depthwise conv writing a slice along the last axis"));
            }
            let outputs = p.batch as u64 * p.cin as u64 * p.oh as u64 * p.ow as u64;
            steps.push(Step {
                node,
                kernel: Kernel::ConvF32Depthwise,
                config: grid_stride(&self.gpu, outputs),
                params: Params::Depthwise(DepthwiseParams::from_conv(&p)),
            });
            return Ok(());
        }
        let columns = p.batch as usize * p.oh as usize * p.ow as usize;
        let grid = (columns.div_ceil(CONV_F32_TILE), (p.m_total as usize).div_ceil(CONV_F32_TILE));
        if grid.0 > i32::MAX as usize || grid.1 > 65_535 {
            return Err(self.refuse(node, format!("a {}x{columns} GEMM is beyond one launch's grid", p.m_total)));
        }
        steps.push(Step {
            node,
            kernel: Kernel::ConvF32,
            config: LaunchConfig {
                grid_dim: (grid.0 as u32, grid.1 as u32, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            },
            params: Params::Conv(p),
        });
        Ok(())
    }

    /// Chooses how an implicit-GEMM convolution runs: its input-tile loads,
    /// tile height, grid, and whether K is split (then a second launch adds
    /// the splits and applies the epilogue).
    fn conv_steps(
        &self,
        node: usize,
        mut p: ConvParams,
        rows: usize,
        cols: usize,
        pointwise: bool,
        steps: &mut Vec<Step>,
    ) -> Result<(), EngineError> {
        let m = p.m_total as usize;
        let k = p.k_total as usize;
        if rows < crate::engine::build::gemm_rows(m) || cols < k || cols % 32 != 0 {
            return Err(self.refuse(node, format!("its packed weight is {rows}x{cols}, the GEMM is {m}x{k}")));
        }
        let pixels = (p.oh as usize) * (p.ow as usize);
        let columns = p.batch as usize * pixels;
        let n_tiles = columns.div_ceil(CONV_TILE_N);
        let plane = (p.h as usize) * (p.w as usize);
        let aligned = p.x % 16 == 0 && p.x_batch_stride % 8 == 0;
        let nhwc_in = p.x_pixel_stride > 0;
        if nhwc_in && !(aligned && p.cin % 8 == 0 && p.x_pixel_stride % 8 == 0) {
            return Err(self.refuse(node, "an NHWC input needs 8-channel groups, 16-byte aligned"));
        }
        if p.y_pixel_stride > 0 && p.y_f32 != 0 {
            return Err(self.refuse(node, "an NHWC output must be FP16"));
        }
        p.vector_b = if nhwc_in {
            B_NHWC
        } else if pointwise && plane % 8 == 0 && aligned {
            B_VECTOR
        } else if p.transposed_stride == 0 && (p.sw == 1 || p.sw == 2) && p.w % 8 == 0 && p.ow % 16 == 0 && aligned {
            // Output rows of whole 16-pixel groups: no group straddles two
            // rows, so no thread of a warp falls back to the gather.
            B_ROWS
        } else {
            B_GATHER
        };
        let sms = self.gpu.properties().multiprocessors.max(1) as usize;
        // A whole K in one 32-deep tile from an NCHW input into an NHWC
        // output (the stem: 3 channels x 3x3): weights held in registers,
        // 16-pixel tiles a warp (`conv_stem_c*`), instead of a GEMM block
        // whose load, barrier and epilogue serve one K step.
        if !nhwc_in && p.y_pixel_stride > 0 && p.residual == 0 && p.transposed_stride == 0 && k <= 32 && m % 8 == 0 {
            let kernel = match m {
                0..=16 => Some(Kernel::ConvStemC16),
                17..=32 => Some(Kernel::ConvStemC32),
                33..=64 => Some(Kernel::ConvStemC64),
                65..=96 => Some(Kernel::ConvStemC96),
                97..=128 => Some(Kernel::ConvStemC128),
                _ => None,
            };
            if let Some(kernel) = kernel {
                // Eight warps a block, each walking 16-pixel tiles.
                let blocks = columns.div_ceil(16 * 8).clamp(1, 8 * sms);
                steps.push(Step {
                    node,
                    kernel,
                    config: LaunchConfig {
                        grid_dim: (blocks as u32, 1, 1),
                        block_dim: (256, 1, 1),
                        shared_mem_bytes: 0,
                    },
                    params: Params::Conv(p),
                });
                return Ok(());
            }
        }
        let mut tile_m = if m <= 32 {
            32
        } else if m <= 64 {
            64
        } else {
            128
        };
        // Too few 128-row tiles to fill the GPU twice: halve them.
        if tile_m == 128 && n_tiles * m.div_ceil(128) < 2 * sms {
            tile_m = 64;
        }
        // 128-row NHWC tiles take 64-deep K steps where the GPU's shared
        // memory holds their 3 stages (sm_90; not the RTX cards' 99 KiB).
        let optin = self.gpu.properties().shared_memory_per_block_optin.max(0) as usize;
        // Hopper: NHWC-to-NHWC GEMMs run on warpgroup MMA, 128 pixels by a
        // channel width that fits cout, K split where the tiles cannot give
        // every SM one. Measured on the H100 (BENCHMARKS.md), the mma.sync
        // kernels stay ahead only on GEMMs too small to split. (Short GEMMs
        // whose channels the mma.sync tiles cover exactly were kept off
        // wgmma until the epilogue's activation lost its IEEE division; since
        // then wgmma is level or ahead on them too: n-seg batch 32 1.4%.)
        if self.wgmma && nhwc_in && p.y_pixel_stride > 0 && p.transposed_stride == 0 && m >= 48 {
            // Short K (at most 12 tiles) over 128 channels or more: the
            // 3-stage 128-wide kernel, two blocks an SM, whose second block
            // covers the first one's pipeline fill and epilogue (measured on
            // the H100 with K limits of 384 to 1152: x-seg batch 32 -1.7%,
            // n-seg -3.9%, level across the limits).
            let two_blocks = cols <= WGMMA_SHORT_K && m >= 128;
            let width = if two_blocks { 128 } else { wgmma_width(m) };
            let grid = (m.div_ceil(width), columns.div_ceil(WGMMA_PIXELS));
            let shared = if two_blocks { wgmma_shared_bytes_staged(width, 3) } else { wgmma_shared_bytes(width) };
            let blocks = grid.0 * grid.1;
            let k_tiles = cols.div_ceil(64);
            // Blocks of this width one SM holds (shared memory; registers).
            let per_sm = if width <= 96 || two_blocks { 2 } else { 1 };
            let splits = if blocks >= sms {
                1
            } else {
                split_k(blocks, k_tiles, per_sm * sms, m * columns * 4, self.partials.bytes())
            };
            // Half the SMs busy with wgmma still beats every SM with mma.sync
            // (3x3 192->192 at 20x20, batch 32, where the split's partial
            // sums would not fit the workspace).
            let fills = splits > 1 || 2 * blocks >= sms;
            if fills && optin >= shared && grid.1 <= 65_535 {
                let kernel = match width {
                    128 if two_blocks => Kernel::ConvWgmmaNhwcN128S3,
                    48 => Kernel::ConvWgmmaNhwcN48,
                    64 => Kernel::ConvWgmmaNhwcN64,
                    96 => Kernel::ConvWgmmaNhwcN96,
                    128 => Kernel::ConvWgmmaNhwcN128,
                    192 => Kernel::ConvWgmmaNhwcN192,
                    _ => Kernel::ConvWgmmaNhwcN256,
                };
                // Grid x walks the channel tiles (see the kernel).
                let config = LaunchConfig {
                    grid_dim: (grid.0 as u32, grid.1 as u32, 1),
                    block_dim: (256, 1, 1),
                    shared_mem_bytes: shared as u32,
                };
                self.push_gemm(node, kernel, config, p, k_tiles, splits, steps);
                return Ok(());
            }
        }
        let deep_k = nhwc_in && tile_m == 128 && optin >= nhwc_shared_bytes(128, 64, 3);
        // Row-segment kernels come per stride along x (1 or 2), which fixes
        // how many chunks a thread keeps in registers across the mma.
        let rows2 = p.sw == 2;
        let kernel = match (tile_m, p.vector_b) {
            (32, B_NHWC) => Kernel::ConvIgemm32Nhwc,
            (64, B_NHWC) => Kernel::ConvIgemm64Nhwc,
            (_, B_NHWC) if deep_k => Kernel::ConvIgemm128NhwcK64,
            (_, B_NHWC) => Kernel::ConvIgemm128Nhwc,
            (32, B_VECTOR) => Kernel::ConvIgemm32Vector,
            (32, B_ROWS) if rows2 => Kernel::ConvIgemm32Rows2,
            (32, B_ROWS) => Kernel::ConvIgemm32Rows,
            (32, _) => Kernel::ConvIgemm32Gather,
            (64, B_VECTOR) => Kernel::ConvIgemm64Vector,
            (64, B_ROWS) if rows2 => Kernel::ConvIgemm64Rows2,
            (64, B_ROWS) => Kernel::ConvIgemm64Rows,
            (64, _) => Kernel::ConvIgemm64Gather,
            (_, B_VECTOR) => Kernel::ConvIgemm128Vector,
            (_, B_ROWS) if rows2 => Kernel::ConvIgemm128Rows2,
            (_, B_ROWS) => Kernel::ConvIgemm128Rows,
            _ => Kernel::ConvIgemm128Gather,
        };
        let m_tiles = m.div_ceil(tile_m);
        if n_tiles > i32::MAX as usize || m_tiles > 65_535 {
            return Err(self.refuse(node, format!("a {m}x{columns} GEMM is beyond one launch's grid")));
        }
        let k_depth = if deep_k { 64 } else { 32 };
        let k_tiles = cols.div_ceil(k_depth);
        // Blocks of this tile height one SM holds (the kernels' launch bounds).
        let per_sm = match tile_m {
            32 => 4,
            64 => 3,
            _ => 2,
        };
        let splits = if p.transposed_stride == 0 {
            split_k(n_tiles * m_tiles, k_tiles, per_sm * sms, m * columns * 4, self.partials.bytes())
        } else {
            1
        };
        // The NHWC kernels' pipeline stages are dynamic shared memory.
        let shared_mem_bytes = match (nhwc_in, deep_k) {
            (true, true) => nhwc_shared_bytes(128, 64, 3) as u32,
            (true, false) => nhwc_shared_bytes(tile_m, 32, NHWC_STAGES) as u32,
            _ => 0,
        };
        let config =
            LaunchConfig { grid_dim: (n_tiles as u32, m_tiles as u32, 1), block_dim: (256, 1, 1), shared_mem_bytes };
        self.push_gemm(node, kernel, config, p, k_tiles, splits, steps);
        Ok(())
    }

    /// Pushes an implicit-GEMM launch; split `splits` ways along its
    /// `k_tiles` K steps when more than 1 (grid z, partial sums in the
    /// split-K buffer), followed by the reduce that adds the splits and
    /// applies the epilogue.
    #[allow(clippy::too_many_arguments)]
    fn push_gemm(
        &self,
        node: usize,
        kernel: Kernel,
        mut config: LaunchConfig,
        mut p: ConvParams,
        k_tiles: usize,
        splits: usize,
        steps: &mut Vec<Step>,
    ) {
        if splits <= 1 {
            steps.push(Step { node, kernel, config, params: Params::Conv(p) });
            return;
        }
        p.k_split = k_tiles.div_ceil(splits) as i32;
        p.splits = k_tiles.div_ceil(p.k_split as usize) as i32;
        p.partial = self.partials.ptr();
        config.grid_dim.2 = p.splits as u32;
        steps.push(Step { node, kernel, config, params: Params::Conv(p) });
        let outputs = p.m_total as u64 * p.batch as u64 * p.oh as u64 * p.ow as u64;
        steps.push(Step {
            node,
            kernel: Kernel::ConvSplitkReduce,
            config: grid_stride(&self.gpu, outputs),
            params: Params::Conv(p),
        });
    }
}

/// `ConvParams::activation` (`activate` in engine_conv.cu).
pub(super) fn activation_code(activation: Activation) -> i32 {
    match activation {
        Activation::None => 0,
        Activation::Silu => 1,
        Activation::Sigmoid => 2,
    }
}

/// What `memory::layouts` guarantees and the NHWC kernels rely on (4-D FP16
/// values of whole 8-channel groups, 16-byte aligned pixels), and that a
/// value with spread channel planes has planes at least its own size apart:
/// the first value of a plan that breaks it, said as a sentence (the plan
/// is damaged).
pub(super) fn damaged_layout(values: &[PlanValue]) -> Option<String> {
    values.iter().find_map(|value| {
        if let Layout::NchwPlanes { plane_stride } = value.placement.layout {
            let plane = value.shape.iter().skip(2).product::<usize>();
            return (value.shape.len() < 3 || plane_stride < plane).then(|| {
                format!(
                    "value {:?} {:?} is stored with channel planes {plane_stride} apart, which the plan builder \
                     never writes: the plan is damaged, rebuild it with `vrseg build-engine`",
                    value.name, value.shape
                )
            });
        }
        let Layout::Nhwc { pixel_stride } = value.placement.layout else { return None };
        let fits = value.shape.len() == 4
            && value.element == ElementType::F16
            && value.shape[1] % 8 == 0
            && pixel_stride % 8 == 0
            && pixel_stride >= value.shape[1];
        (!fits).then(|| {
            format!(
                "value {:?} {:?} ({}) is stored NHWC with pixel stride {pixel_stride}, which the plan builder never \
                 writes: the plan is damaged, rebuild it with `vrseg build-engine`",
                value.name, value.shape, value.element
            )
        })
    })
}

/// Pixels per `conv_wgmma_nhwc_n*` tile (`kWgmmaPixels`).
const WGMMA_PIXELS: usize = 128;

/// The channel widths of the `conv_wgmma_nhwc_n*` kernels.
const WGMMA_WIDTHS: [usize; 6] = [256, 192, 128, 96, 64, 48];

/// The wgmma channel width for `cout` output channels: the least work,
/// counted as tiles x (width + 64), the 64 standing for what a tile costs
/// beyond its channels (it loads and stages its 128 pixels again); then the
/// widest. 48 for 48, 96 for 80 and 96, 192 for 192 and 384, 256 for 200
/// and 768.
pub(super) fn wgmma_width(cout: usize) -> usize {
    *WGMMA_WIDTHS.iter().min_by_key(|&&w| (cout.div_ceil(w) * (w + 64), usize::MAX - w)).expect("widths are listed")
}

/// Dynamic shared memory of `conv_wgmma_nhwc_n{width}` (`wgmma_smem_bytes`
/// in engine_conv.cu): 4 stages of 64-deep pixel and weight tiles, plus
/// 1 KiB to align them for the swizzle.
pub(super) fn wgmma_shared_bytes(width: usize) -> usize {
    wgmma_shared_bytes_staged(width, 4)
}

/// The same for `stages` stages (`conv_wgmma_nhwc_n128_s3`: 3, 99 KiB, two
/// blocks an SM).
pub(super) fn wgmma_shared_bytes_staged(width: usize, stages: usize) -> usize {
    stages * (WGMMA_PIXELS + width) * 64 * 2 + 1024
}

/// The longest K (in elements: 12 tiles of 64) sent to
/// `conv_wgmma_nhwc_n128_s3`.
const WGMMA_SHORT_K: usize = 768;

/// `kNhwcStages` in engine_conv.cu.
pub(super) const NHWC_STAGES: usize = 4;

/// Dynamic shared memory of an NHWC conv launch (`nhwc_smem_bytes` in
/// engine_conv.cu): `stages` of A (tile_m rows) and B (128 pixel rows),
/// `k_depth` + 8 padding halves a row.
pub(super) fn nhwc_shared_bytes(tile_m: usize, k_depth: usize, stages: usize) -> usize {
    stages * (tile_m + CONV_TILE_N) * (k_depth + 8) * 2
}

/// How many ways to split the K loop of a GEMM of `blocks` output tiles and
/// `k_tiles` K steps (32-deep for the mma.sync kernels, 64-deep for wgmma),
/// on a GPU that holds `slots` such blocks at once:
/// enough to fill every slot (a block alone on an SM leaves its memory
/// latency unhidden), each split keeping at least 4 K steps (its pipeline
/// start-up and the reduce must stay small beside it), and the partial sums
/// (`split_bytes` each) within the `workspace`. 1: no split.
pub(super) fn split_k(blocks: usize, k_tiles: usize, slots: usize, split_bytes: usize, workspace: usize) -> usize {
    if blocks >= slots || k_tiles < 8 {
        return 1;
    }
    let want = slots.div_ceil(blocks);
    let most = (k_tiles / 4).min(workspace / split_bytes.max(1));
    want.min(most).max(1)
}

/// Gives dim `d` its dense stride back where `TensorRef::new` zeroed it for
/// size 1, so that narrowing or striding along it moves the pointer by the
/// right amount. The dense stride of dim d is the product of the dims after
/// it (every dim but the batch is dense within an image).
fn restride(mut t: TensorRef, d: usize) -> TensorRef {
    if t.dims[d] == 1 && t.strides[d] == 0 {
        t.strides[d] = t.dims[d + 1..].iter().map(|&x| x as i64).product();
    }
    t
}

#[cfg(test)]
mod tests {
    use super::{damaged_layout, split_k};
    use crate::engine::build::ir::DType;
    use crate::engine::build::memory::{ElementType, Layout, Placement, Storage};
    use crate::engine::plan::PlanValue;

    #[test]
    fn wgmma_widths_fit_the_channel_counts() {
        for (cout, width) in [
            (48, 48),
            (64, 64),
            (80, 96),
            (96, 96),
            (128, 128),
            (192, 192),
            (200, 256),
            (376, 192),
            (256, 256),
            (384, 192),
            (768, 256),
            (1536, 256),
        ] {
            assert_eq!(super::wgmma_width(cout), width, "cout {cout}");
        }
        // The widest kernel's stages fit sm_90's 227 KiB a block, and two
        // blocks of the 3-stage kernel (each with the 1 KiB the hardware
        // keeps a block) fit its 228 KiB an SM.
        assert!(super::wgmma_shared_bytes(256) <= 227 * 1024);
        assert!(2 * (super::wgmma_shared_bytes_staged(128, 3) + 1024) <= 228 * 1024);
    }

    #[test]
    fn a_plan_claiming_nhwc_where_the_builder_never_would_is_damaged() {
        let value = |shape: &[usize], element, layout| PlanValue {
            name: "v".into(),
            shape: shape.to_vec(),
            dtype: DType::F32,
            element,
            placement: Placement { storage: Storage::Arena, root: 0, offset: 0, batch_stride: 0, layout },
        };
        let nhwc = |pixel_stride| Layout::Nhwc { pixel_stride };
        let good = [value(&[2, 16, 5, 7], ElementType::F16, nhwc(48)), value(&[2, 3], ElementType::F32, Layout::Nchw)];
        assert_eq!(damaged_layout(&good), None);
        for bad in [
            value(&[2, 16, 35], ElementType::F16, nhwc(16)),
            value(&[2, 16, 5, 7], ElementType::F32, nhwc(16)),
            value(&[2, 12, 5, 7], ElementType::F16, nhwc(16)),
            value(&[2, 16, 5, 7], ElementType::F16, nhwc(20)),
            value(&[2, 16, 5, 7], ElementType::F16, nhwc(8)),
        ] {
            let said = damaged_layout(std::slice::from_ref(&bad)).expect("refused");
            assert!(said.contains("damaged") && said.contains("vrseg build-engine"), "{said}");
        }
    }

    #[test]
    fn k_is_split_only_where_tiles_cannot_fill_the_gpu() {
        // YOLO11x-seg at batch 1, 768 channels at 20x20: 4 x 12 tiles of 64
        // rows (3 a SM: 396 slots on 132 SMs), K = 6912 (216 steps).
        assert_eq!(split_k(4 * 12, 216, 396, 768 * 400 * 4, 16 << 20), 9);
        // 768 channels at 40x40: 156 tiles, split 3 ways (14.7 MB of sums).
        assert_eq!(split_k(13 * 12, 216, 396, 768 * 1600 * 4, 16 << 20), 3);
        // 8 tiles, deep K: as many splits as slots want.
        assert_eq!(split_k(8, 216, 396, 96 * 400 * 4, 16 << 20), 50);
        // Enough tiles already, or too little K to split.
        assert_eq!(split_k(396, 216, 396, 1, 16 << 20), 1);
        assert_eq!(split_k(2, 7, 396, 1, 16 << 20), 1);
        // Each split keeps at least 4 K steps.
        assert_eq!(split_k(2, 36, 396, 1, 16 << 20), 9);
        // The partial sums must fit the workspace.
        assert_eq!(split_k(2, 216, 396, 4 << 20, 16 << 20), 4);
        assert_eq!(split_k(2, 216, 396, 32 << 20, 16 << 20), 1);
    }
}

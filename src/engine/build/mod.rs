//! Build time: ONNX → graph → fusions → plan, for `vrseg build-engine`. The
//! runtime never uses this module (it loads plans); the CPU reference
//! executor beside it runs these graphs for tests and for checking a build.

pub mod fuse;
pub mod import;
pub mod ir;
pub mod memory;
pub mod onnx;

use std::path::PathBuf;

/// What can go wrong turning a model into a plan. Every variant says where
/// (file, node) and what to do.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("could not read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a readable ONNX model: {reason}")]
    Damaged { path: PathBuf, reason: String },
    #[error("node {node:?} ({op_type}) is not supported: {reason}")]
    Unsupported { op_type: String, node: String, reason: String },
    #[error("node {node:?} ({op_type}): {reason}")]
    Shape { op_type: String, node: String, reason: String },
    /// The default-domain opset is outside what the importer maps.
    #[error(
        "{path} uses ONNX opset {version}; vrseg reads opsets {min} to {max}: export the model again with opset 17 \
         (Ultralytics: model.export(format=\"onnx\", opset=17))",
        min = import::MIN_OPSET,
        max = import::MAX_OPSET
    )]
    Opset { path: PathBuf, version: i64 },
    /// Something about the model as a whole (an input, a tensor, the options
    /// it was imported with) that vrseg cannot build; `reason` names it and
    /// says what to do.
    #[error("{path} cannot be built: {reason}")]
    UnsupportedModel { path: PathBuf, reason: String },
    /// Writing the plan file failed (its error names the file).
    #[error(transparent)]
    Plan(#[from] crate::engine::plan::PlanError),
}

/// What a plan stores and computes in (`vrseg build-engine --precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// FP16 weights and activations on tensor cores with FP32 accumulation;
    /// the head's tail (box decode, scores, mask coefficients) and the model
    /// outputs FP32. The fast one, and the default.
    #[default]
    Fp16,
    /// FP32 weights and activations throughout, FP32 arithmetic on the CUDA
    /// cores (no tensor cores: TF32 keeps FP16's 10-bit mantissa). Outputs
    /// agree with an FP32 framework to FP32 rounding, so scores a few 1e-4
    /// apart (which FP16 cannot order) keep their order: for checking
    /// against a reference, and for users who need ONNX Runtime's
    /// detections exactly. Several times slower than FP16.
    Fp32,
}

impl Precision {
    /// The name in the plan's header and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp16 => "fp16",
            Precision::Fp32 => "fp32",
        }
    }

    /// The precision a plan header or `--precision` names.
    pub fn from_name(name: &str) -> Option<Precision> {
        match name {
            "fp16" => Some(Precision::Fp16),
            "fp32" => Some(Precision::Fp32),
            _ => None,
        }
    }

    /// The element type of the convolutions' inputs and weights.
    pub fn conv_element(self) -> memory::ElementType {
        match self {
            Precision::Fp16 => memory::ElementType::F16,
            Precision::Fp32 => memory::ElementType::F32,
        }
    }
}

use std::path::Path;

use crate::engine::plan::{self, PlanGraph, PlanNode, PlanValue, PlanWeight, WeightFormat};
use ir::{Graph, Op, TensorData};
use memory::{MemoryPlan, Storage};

/// Turns a fused, planned graph into the plan's graph section and weight
/// blobs. In an FP16 plan, convolution weights become FP16 in the layout the
/// convolution kernels read (GEMM-packed, or per-channel filters for
/// depthwise) and every other constant stays FP32 (biases and the head's
/// anchor tables are small and precision-sensitive). In an FP32 plan every
/// constant is FP32 in ONNX's layout, which the FP32 kernels read as it is.
/// Constants that no node reads are dropped.
pub fn lower(
    graph: &Graph,
    memory: &MemoryPlan,
    source: &str,
    precision: Precision,
) -> Result<(PlanGraph, Vec<Vec<u8>>), BuildError> {
    check_native_support(graph, memory, precision)?;
    // A conv's weight is packed for the layout its kernel reads: K in tap
    // order for an NHWC input, output rows in pixel-phase order for an NHWC
    // transposed conv's output, taps first for an NHWC depthwise conv.
    let nhwc = |v: usize| matches!(memory.placements[v].layout, memory::Layout::Nhwc { .. });
    let mut conv_format: Vec<Option<ConvWeight>> = vec![None; graph.values.len()];
    for node in &graph.nodes {
        let kind = match &node.op {
            Op::Conv(c) if c.group == 1 => ConvWeight::Gemm { tap_major: nhwc(node.inputs[0]) },
            Op::Conv(_) => ConvWeight::Depthwise { tap_major: nhwc(node.inputs[0]) },
            Op::ConvTranspose(_) => ConvWeight::TransposedGemm { tap_major: nhwc(node.outputs[0]) },
            _ => continue,
        };
        let w = node.inputs[1];
        if conv_format[w].is_some_and(|k| k != kind) {
            return Err(BuildError::Unsupported {
                op_type: node.op.onnx_type().into(),
                node: node.name.clone(),
                reason: format!(
                    "its weight {:?} is shared with a convolution that reads another layout",
                    graph.values[w].name
                ),
            });
        }
        conv_format[w] = Some(kind);
    }
    let consumers = graph.consumers();
    let mut weights = Vec::new();
    let mut blobs = Vec::new();
    for (v, value) in graph.values.iter().enumerate() {
        let Some(data) = &value.constant else { continue };
        if consumers[v].is_empty() {
            continue;
        }
        let TensorData::F32(data) = data else {
            let node = &graph.nodes[consumers[v][0]];
            return Err(BuildError::Unsupported {
                op_type: node.op.onnx_type().into(),
                node: node.name.clone(),
                reason: format!(
                    "it reads the integer constant {:?} as a tensor; the engine computes in floating point",
                    value.name
                ),
            });
        };
        let (format, blob) = match conv_format[v] {
            Some(kind) if precision == Precision::Fp16 => {
                let (format, halves) = pack_conv_weight(kind, &value.shape, data);
                (format, bytemuck::cast_slice(&halves).to_vec())
            }
            _ => (WeightFormat::F32, bytemuck::cast_slice(data).to_vec()),
        };
        weights.push(PlanWeight { value: v, offset: 0, bytes: 0, format });
        blobs.push(blob);
    }
    let values = graph
        .values
        .iter()
        .zip(&memory.placements)
        .zip(&memory.element_types)
        .map(|((v, &placement), &element)| PlanValue {
            name: v.name.clone(),
            shape: v.shape.clone(),
            dtype: v.dtype,
            element,
            placement,
        })
        .collect();
    let nodes = graph
        .nodes
        .iter()
        .map(|n| PlanNode {
            name: n.name.clone(),
            op: n.op.clone(),
            inputs: n.inputs.clone(),
            outputs: n.outputs.clone(),
        })
        .collect();
    let batch = graph.inputs.first().and_then(|&v| graph.values[v].shape.first().copied()).unwrap_or(1);
    debug_assert!(memory.placements.iter().all(|p| p.storage != Storage::Constant || p.offset == 0));
    Ok((
        PlanGraph {
            producer: format!("vrseg {}", env!("CARGO_PKG_VERSION")),
            source: source.to_string(),
            batch,
            precision: precision.name().into(),
            values,
            nodes,
            inputs: graph.inputs.clone(),
            outputs: graph.outputs.clone(),
            weights,
            arena_bytes: memory.arena_bytes,
        },
        blobs,
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConvWeight {
    Gemm { tap_major: bool },
    Depthwise { tap_major: bool },
    TransposedGemm { tap_major: bool },
}

/// Rows of a packed weight matrix: a multiple of the M tile the kernel
/// uses for that many rows (32 up to 32 rows, 64 up to 64, else 128), so
/// its tiles never run off the matrix.
pub fn gemm_rows(m: usize) -> usize {
    match m {
        0..=32 => 32,
        33..=64 => 64,
        _ => m.div_ceil(128) * 128,
    }
}
/// Columns are padded to this (the K tile).
pub const GEMM_COL_ALIGN: usize = 32;

/// Packs a convolution weight as [`WeightFormat`] describes.
fn pack_conv_weight(kind: ConvWeight, shape: &[usize], data: &[f32]) -> (WeightFormat, Vec<half::f16>) {
    let f16 = half::f16::from_f32;
    match kind {
        ConvWeight::Depthwise { tap_major: false } => (WeightFormat::F16, data.iter().map(|&x| f16(x)).collect()),
        ConvWeight::Depthwise { tap_major: true } => {
            // [C, 1, kH, kW] -> [kH * kW][C].
            let (c_all, taps) = (shape[0], shape[2] * shape[3]);
            let mut out = vec![half::f16::ZERO; c_all * taps];
            for c in 0..c_all {
                for t in 0..taps {
                    out[t * c_all + c] = f16(data[c * taps + t]);
                }
            }
            (WeightFormat::F16TapMajor, out)
        }
        ConvWeight::Gemm { tap_major } => {
            // [M, C, kH, kW]: row m, columns (c, ky, kx) or (ky, kx, c).
            let (m, c_in, taps) = (shape[0], shape[1], shape[2] * shape[3]);
            let k = c_in * taps;
            let rows = gemm_rows(m);
            let cols = k.div_ceil(GEMM_COL_ALIGN) * GEMM_COL_ALIGN;
            let mut out = vec![half::f16::ZERO; rows * cols];
            for r in 0..m {
                for c in 0..c_in {
                    for t in 0..taps {
                        let col = if tap_major { t * c_in + c } else { c * taps + t };
                        out[r * cols + col] = f16(data[(r * c_in + c) * taps + t]);
                    }
                }
            }
            let format = if tap_major {
                WeightFormat::F16GemmTapMajor { rows, cols }
            } else {
                WeightFormat::F16Gemm { rows, cols }
            };
            (format, out)
        }
        ConvWeight::TransposedGemm { tap_major } => {
            // [C, M, s, s] -> rows (m, i, j) or (i, j, m), columns c.
            let (c_in, m, kh, kw) = (shape[0], shape[1], shape[2], shape[3]);
            let rows = gemm_rows(m * kh * kw);
            let cols = c_in.div_ceil(GEMM_COL_ALIGN) * GEMM_COL_ALIGN;
            let mut out = vec![half::f16::ZERO; rows * cols];
            for c in 0..c_in {
                for mm in 0..m {
                    for i in 0..kh {
                        for j in 0..kw {
                            let row = if tap_major { (i * kw + j) * m + mm } else { (mm * kh + i) * kw + j };
                            out[row * cols + c] = f16(data[((c * m + mm) * kh + i) * kw + j]);
                        }
                    }
                }
            }
            let format = if tap_major {
                WeightFormat::F16GemmTapMajor { rows, cols }
            } else {
                WeightFormat::F16Gemm { rows, cols }
            };
            (format, out)
        }
    }
}

/// Refuses, at build time, what the native engine's kernels cannot run, so
/// that a plan that loads also runs. Each refusal names the node and says why.
pub fn check_native_support(graph: &Graph, memory: &MemoryPlan, precision: Precision) -> Result<(), BuildError> {
    let conv_element = precision.conv_element();
    let refuse = |node: &ir::Node, reason: String| BuildError::Unsupported {
        op_type: node.op.onnx_type().into(),
        node: node.name.clone(),
        reason,
    };
    for node in &graph.nodes {
        for &v in node.inputs.iter().chain(&node.outputs) {
            if graph.values[v].shape.len() > 4 {
                return Err(refuse(
                    node,
                    format!(
                        "value {:?} has {} dimensions; the native engine runs tensors of at most 4",
                        graph.values[v].name,
                        graph.values[v].shape.len()
                    ),
                ));
            }
        }
        match &node.op {
            Op::Conv(c) => {
                let x = node.inputs[0];
                let w = &graph.values[node.inputs[1]].shape;
                let channels = graph.values[x].shape[1];
                if c.group != 1 && !(c.group == channels && w[0] == channels && w[1] == 1) {
                    return Err(refuse(
                        node,
                        format!(
                            "grouped convolution with {} groups over {channels} channels; the native engine runs \
                             group 1 and depthwise (groups = channels = outputs)",
                            c.group
                        ),
                    ));
                }
                if memory.element_types[x] != conv_element {
                    return Err(refuse(
                        node,
                        format!(
                            "its input is also a model output (stored FP32); the {} convolution kernels read {}",
                            precision.name(),
                            conv_element
                        ),
                    ));
                }
            }
            Op::ConvTranspose(t) => {
                let x = node.inputs[0];
                let plain = t.kernel == t.stride
                    && t.pads == [0; 4]
                    && t.dilation == [1, 1]
                    && t.output_padding == [0, 0]
                    && t.group == 1
                    && t.kernel[0] == t.kernel[1];
                if !plain {
                    return Err(refuse(
                        node,
                        "the native engine runs ConvTranspose only with a square kernel equal to its stride, no \
                         padding, dilation 1 and group 1 (the upsampling YOLO's mask prototypes use)"
                            .into(),
                    ));
                }
                if memory.element_types[x] != conv_element {
                    return Err(refuse(
                        node,
                        format!(
                            "its input is stored {}; the {} convolution kernels read {}",
                            memory.element_types[x],
                            precision.name(),
                            conv_element
                        ),
                    ));
                }
            }
            Op::MatMul => {
                for &v in &node.inputs {
                    if graph.values[v].shape.len() < 2 {
                        return Err(refuse(node, "a 1-D MatMul operand (vector product) is not supported".into()));
                    }
                }
            }
            Op::MaxPool(_) if graph.values[node.inputs[0]].shape.len() != 4 => {
                return Err(refuse(node, "the native engine pools 4-D (NCHW) tensors only".into()));
            }
            _ => {}
        }
    }
    Ok(())
}

/// What a build did, for the CLI's report.
#[derive(Debug, Clone)]
pub struct BuildReport {
    pub onnx_nodes: usize,
    pub plan_nodes: usize,
    pub fusions: fuse::FuseReport,
    pub ops: Vec<(String, usize)>,
    pub memory: MemoryPlan,
    pub plan_bytes: u64,
    pub inputs: Vec<(String, Vec<usize>)>,
    pub outputs: Vec<(String, Vec<usize>)>,
}

/// Fuses and plans an imported graph and writes an FP16 plan (the part of
/// `vrseg build-engine` after import).
pub fn build_plan(graph: Graph, source: &str, out: &Path) -> Result<BuildReport, BuildError> {
    build_plan_as(graph, source, out, Precision::Fp16)
}

/// [`build_plan`] for a plan of `precision`.
pub fn build_plan_as(
    mut graph: Graph,
    source: &str,
    out: &Path,
    precision: Precision,
) -> Result<BuildReport, BuildError> {
    let onnx_nodes = graph.nodes.len();
    let fusions = fuse::fuse_all(&mut graph);
    let memory = memory::plan_for(&graph, precision);
    if let Err(reason) = memory::check(&graph, &memory) {
        // A planner bug, not the user's: say so rather than write a plan
        // that would corrupt activations.
        return Err(BuildError::Shape { op_type: "memory plan".into(), node: String::new(), reason });
    }
    let (mut plan_graph, blobs) = lower(&graph, &memory, source, precision)?;
    let plan_bytes = plan::write_plan(out, &mut plan_graph, &blobs, 0)?;
    let describe =
        |ids: &[usize]| ids.iter().map(|&v| (graph.values[v].name.clone(), graph.values[v].shape.clone())).collect();
    Ok(BuildReport {
        onnx_nodes,
        plan_nodes: graph.nodes.len(),
        fusions,
        ops: graph.op_histogram(),
        memory,
        plan_bytes,
        inputs: describe(&graph.inputs),
        outputs: describe(&graph.outputs),
    })
}

/// Refills the convolution weights a test fixture was stripped of (all
/// zeros after `ImportOptions::allow_empty_initializers`): uniform with He
/// variance (2 / fan_in), so activations keep their scale through a deep
/// SiLU network. Weights with data are left alone. Returns how many were
/// filled. Random weights make meaningless masks; they serve tests, speed
/// measurements and the embedded demo.
pub fn fill_stripped_weights(graph: &mut Graph, seed: u64) -> usize {
    let mut rng = crate::selftest::SplitMix64::new(seed);
    let weights: Vec<usize> = graph
        .nodes
        .iter()
        .filter(|n| matches!(n.op, Op::Conv(_) | Op::ConvTranspose(_)))
        .map(|n| n.inputs[1])
        .collect();
    let mut filled = 0;
    for v in weights {
        let value = &mut graph.values[v];
        let fan_in: usize = value.shape.iter().skip(1).product();
        let bound = (6.0 / fan_in.max(1) as f32).sqrt();
        if let Some(TensorData::F32(data)) = &mut value.constant {
            if !data.is_empty() && data.iter().all(|&x| x == 0.0) {
                data.iter_mut().for_each(|x| *x = rng.uniform_f32(-bound, bound));
                filled += 1;
            }
        }
    }
    filled
}

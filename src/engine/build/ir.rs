//! The build-time graph: what `vrseg build-engine` makes of an ONNX model
//! before it writes a plan. Shapes are static (pinned at import), constants
//! are values with data, and every op's parameters that ONNX passes as
//! constant inputs (Reshape's shape, Split's sizes, Slice's bounds, Resize's
//! scales) are attributes here, so an op's inputs are tensors it computes on.
//!
//! Layout: NCHW, row-major, f32 at build time (the plan stores FP16 weights).
//! Semantics are ONNX's (opset 17, as Ultralytics exports) unless a variant
//! says otherwise; fused variants (`Conv` with an activation or a residual)
//! are defined by the unfused ops they replace, so the CPU reference
//! executor can check every fusion pass against the graph before it.

use std::collections::HashMap;

/// Index of a value in `Graph::values`.
pub type ValueId = usize;

/// Element type of a value. The YOLO-seg graph computes in f32 (FP16 in the
/// plan); i64 appears only in constants that import folds into attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum DType {
    F32,
    I64,
}

/// Constant data (initializers, Constant nodes, folded subgraphs).
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

impl TensorData {
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::I64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::F32,
            TensorData::I64(_) => DType::I64,
        }
    }
}

/// A tensor in the graph: a model input, a constant, or an op's output.
#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    /// The ONNX name (unique in the graph).
    pub name: String,
    /// Static shape, outermost first.
    pub shape: Vec<usize>,
    pub dtype: DType,
    /// Data, for constants; `None` for inputs and computed values.
    pub constant: Option<TensorData>,
}

impl Value {
    pub fn elements(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Activation applied in a conv's epilogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Activation {
    /// Identity.
    None,
    /// x * sigmoid(x) (ONNX: Sigmoid then Mul by the Sigmoid's input).
    Silu,
    /// sigmoid(x) (ONNX: a Sigmoid of the conv's output, possibly through
    /// reshapes and a concatenation: `fuse::fuse_conv_sigmoid`).
    Sigmoid,
}

/// 2-D convolution (ONNX Conv, NCHW, weight [M, C/group, kH, kW], optional
/// bias [M]), with a fused epilogue: y = act(conv(x) + bias), then
/// y += residual when `residual` is set (the residual is the node's last
/// input, shaped like the output: ONNX Add(act(conv), residual)).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Conv {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    /// Pads as ONNX orders them: [top, left, bottom, right].
    pub pads: [usize; 4],
    pub group: usize,
    pub activation: Activation,
    pub residual: bool,
}

/// ONNX ConvTranspose (NCHW, weight [C, M/group, kH, kW], optional bias).
/// Output padding is folded into `output_padding`; explicit output_shape is
/// resolved to pads at import.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ConvTranspose {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    pub pads: [usize; 4],
    pub output_padding: [usize; 2],
    pub group: usize,
}

/// ONNX MaxPool (2-D, NCHW; no indices output, ceil_mode 0, dilation 1).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MaxPool {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub pads: [usize; 4],
}

/// The operations vrseg's engine runs. Binary elementwise ops broadcast as
/// ONNX does (multidirectional, numpy rules).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Op {
    /// inputs: x, weight, [bias], [residual (when `residual`)].
    Conv(Conv),
    /// inputs: x, weight, [bias].
    ConvTranspose(ConvTranspose),
    MaxPool(MaxPool),
    /// ONNX Resize, mode "nearest", coordinate_transformation_mode
    /// "asymmetric", nearest_mode "floor", integer scales per axis (what
    /// nn.Upsample(scale_factor=2) exports); the output shape is the input's
    /// times `scales`.
    ResizeNearest {
        scales: Vec<usize>,
    },
    /// Concatenation along `axis` (non-negative).
    Concat {
        axis: usize,
    },
    /// Split along `axis` into outputs of `sizes` (their sum is the axis).
    Split {
        axis: usize,
        sizes: Vec<usize>,
    },
    /// ONNX Slice with constant bounds, one entry per axis listed, already
    /// clamped to the shape (start and end in 0..=dim, step >= 1).
    Slice {
        axes: Vec<usize>,
        starts: Vec<usize>,
        ends: Vec<usize>,
        steps: Vec<usize>,
    },
    /// Reshape to the (resolved, all positive) output shape: a view.
    Reshape {
        shape: Vec<usize>,
    },
    /// ONNX Transpose: output axis i is input axis perm[i].
    Transpose {
        perm: Vec<usize>,
    },
    /// ONNX MatMul (numpy matmul: batched over leading axes, broadcasting).
    MatMul,
    Add,
    Sub,
    Mul,
    Div,
    Sigmoid,
    /// ONNX Softmax (opset >= 13): along `axis` only.
    Softmax {
        axis: usize,
    },
}

impl Op {
    /// The ONNX op type this op (or its unfused form) comes from, for messages.
    pub fn onnx_type(&self) -> &'static str {
        match self {
            Op::Conv(_) => "Conv",
            Op::ConvTranspose(_) => "ConvTranspose",
            Op::MaxPool(_) => "MaxPool",
            Op::ResizeNearest { .. } => "Resize",
            Op::Concat { .. } => "Concat",
            Op::Split { .. } => "Split",
            Op::Slice { .. } => "Slice",
            Op::Reshape { .. } => "Reshape",
            Op::Transpose { .. } => "Transpose",
            Op::MatMul => "MatMul",
            Op::Add => "Add",
            Op::Sub => "Sub",
            Op::Mul => "Mul",
            Op::Div => "Div",
            Op::Sigmoid => "Sigmoid",
            Op::Softmax { .. } => "Softmax",
        }
    }
}

/// One op applied to values.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The ONNX node name (for messages; fused nodes keep the conv's name).
    pub name: String,
    pub op: Op,
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
}

/// A whole model: values, the nodes in a topological order, and which values
/// are the model's inputs and outputs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Graph {
    pub values: Vec<Value>,
    pub nodes: Vec<Node>,
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
}

impl Graph {
    pub fn value(&self, id: ValueId) -> &Value {
        &self.values[id]
    }

    /// Adds a value and returns its id.
    pub fn add_value(&mut self, value: Value) -> ValueId {
        self.values.push(value);
        self.values.len() - 1
    }

    /// The nodes that read each value, by value id.
    pub fn consumers(&self) -> Vec<Vec<usize>> {
        let mut out = vec![Vec::new(); self.values.len()];
        for (n, node) in self.nodes.iter().enumerate() {
            for &v in &node.inputs {
                if !out[v].contains(&n) {
                    out[v].push(n);
                }
            }
        }
        out
    }

    /// The node that writes each value, by value id (None: input or constant).
    pub fn producers(&self) -> Vec<Option<usize>> {
        let mut out = vec![None; self.values.len()];
        for (n, node) in self.nodes.iter().enumerate() {
            for &v in &node.outputs {
                out[v] = Some(n);
            }
        }
        out
    }

    /// Op counts by ONNX type, sorted by name (for reports and tests).
    pub fn op_histogram(&self) -> Vec<(String, usize)> {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for node in &self.nodes {
            let key = match &node.op {
                Op::Conv(c) => {
                    let mut k = "Conv".to_string();
                    if c.activation == Activation::Silu {
                        k.push_str("+SiLU");
                    }
                    if c.residual {
                        k.push_str("+Add");
                    }
                    k
                }
                op => op.onnx_type().to_string(),
            };
            *counts.entry(key).or_default() += 1;
        }
        let mut v: Vec<_> = counts.into_iter().collect();
        v.sort();
        v
    }

    /// Drops values no node, input or output refers to, renumbering the rest
    /// (after fusion passes leave intermediate values behind).
    pub fn compact(&mut self) {
        let mut used = vec![false; self.values.len()];
        for node in &self.nodes {
            for &v in node.inputs.iter().chain(&node.outputs) {
                used[v] = true;
            }
        }
        for &v in self.inputs.iter().chain(&self.outputs) {
            used[v] = true;
        }
        let mut remap = vec![usize::MAX; self.values.len()];
        let mut values = Vec::with_capacity(self.values.len());
        for (old, value) in std::mem::take(&mut self.values).into_iter().enumerate() {
            if used[old] {
                remap[old] = values.len();
                values.push(value);
            }
        }
        self.values = values;
        for node in &mut self.nodes {
            for v in node.inputs.iter_mut().chain(node.outputs.iter_mut()) {
                *v = remap[*v];
            }
        }
        for v in self.inputs.iter_mut().chain(self.outputs.iter_mut()) {
            *v = remap[*v];
        }
    }
}

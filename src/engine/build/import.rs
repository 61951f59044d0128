//! ONNX model → `ir::Graph`: static shapes, constants folded, every op mapped
//! to `ir::Op` with ONNX's semantics (opset 17, as Ultralytics exports).
//!
//! What import does, in order:
//! 1. Decodes the protobuf (`onnx::decode_model`) and checks the default
//!    domain's opset (`MIN_OPSET..=MAX_OPSET`).
//! 2. Makes initializers constant values and the other graph inputs
//!    `Graph::inputs`, pinning their shapes (the batch, see below).
//! 3. Walks the nodes in file order (ONNX requires a topological order; a
//!    node reading a value that a later node writes is refused). A node whose
//!    inputs are all constants and that `fold` can evaluate becomes constant
//!    outputs and leaves the graph; `Shape` always folds, since every shape is
//!    static. Parameters ONNX passes as inputs (Reshape's shape, Slice's
//!    bounds, Split's sizes, Resize's scales) must be constant and become
//!    attributes of the `ir::Op`. Identity-like nodes are removed.
//! 4. Binds the graph outputs in order, keeping their names, and drops the
//!    values nothing uses any more (`Graph::compact`).
//!
//! Every value that is not a constant is f32: graph inputs must be FLOAT,
//! and integer tensors only ever come from constants and folding. Shapes are
//! inferred here for every node; the model's `value_info` is not read, and
//! the graph outputs' declared shapes are only checked against the inference.
//!
//! # The batch
//! A graph input whose axis 0 is symbolic (or unknown) gets
//! `ImportOptions::batch` (1 when that is None); shapes computed from it
//! (`Shape` → `Gather` → `Concat` → `Reshape`) fold with that value. Any
//! other symbolic dimension is refused: export with a fixed image size.
//!
//! A model exported with a fixed batch B0 can be rebuilt for another batch
//! N (`batch: Some(N)`): the inputs' axis 0 becomes N, shape inference
//! carries it through, and the one op that writes the batch as a number,
//! Reshape, is rewritten by this rule: **when a Reshape's data input has the
//! batch in axis 0 and its target shape's entry 0 is B0, that entry becomes
//! N.** A value "has the batch in axis 0" when it is a model input, or a node
//! output of batch size N in axis 0 computed from such a value. A node that
//! takes such a value and gives an output whose axis 0 is not N (a Reshape
//! folding the batch into another axis, a Concat or Split along axis 0, a
//! Transpose moving axis 0, a Softmax along it) is refused with a sentence
//! asking for an export with batch=N, because its numbers cannot be
//! trusted to mean the batch.

mod fold;

use std::collections::{HashMap, HashSet};
use std::path::Path;

use fold::{Binary, Const, MAX_FOLD_ELEMENTS};

use super::ir::{self, DType, Graph, Node, Op, TensorData, Value, ValueId};
use super::onnx::{self, data_type, NodeProto, TensorProto};
use super::BuildError;

/// Oldest default-domain opset read: Resize and Slice take their parameters
/// as inputs from 11 on, which is what the mapping below expects.
pub const MIN_OPSET: i64 = 11;
/// Newest opset read: the ops vrseg maps keep opset 17's semantics up to 21
/// (Resize 18/19 add attributes that are checked; Split 18 adds
/// num_outputs; Reshape, Squeeze, Unsqueeze are unchanged).
pub const MAX_OPSET: i64 = 21;

/// The most elements any value may have (4 TiB of f32): a guard against
/// arithmetic overflow on damaged dims, far above any real activation.
const MAX_VALUE_ELEMENTS: usize = 1 << 40;

/// The largest kernel, stride, pad or dilation accepted: keeps all spatial
/// arithmetic far from overflow.
const MAX_ATTR: i64 = 1 << 31;

/// The ONNX ops vrseg's engine can run, for the sentence that refuses others.
const SUPPORTED_OPS: &str = "Conv, ConvTranspose, MaxPool, Resize (nearest), Concat, Split, Slice, Reshape, \
     Flatten, Squeeze, Unsqueeze, Transpose, MatMul, Add, Sub, Mul, Div, Sigmoid, Softmax, Identity, plus shape \
     arithmetic on constants";

/// How to import a model.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// The batch to build for. A symbolic batch axis takes it (None: 1); a
    /// fixed one is rewritten to it (see the module documentation).
    pub batch: Option<usize>,
    /// Accept float initializers that have dims but no data, as zeros. For
    /// test fixtures whose weights were stripped to keep the repository
    /// small: the tests refill `Value::constant` before running the graph.
    /// Integer initializers must still carry their data (they hold shapes).
    pub allow_empty_initializers: bool,
}

/// Reads and imports the ONNX model at `path`.
pub fn import_file(path: &Path, options: &ImportOptions) -> Result<Graph, BuildError> {
    let bytes = std::fs::read(path).map_err(|source| BuildError::Read { path: path.to_path_buf(), source })?;
    import(&bytes, path, options)
}

/// Imports an ONNX model from its bytes; `path` names it in messages and is
/// where external tensor data is looked for (beside it).
pub fn import(bytes: &[u8], path: &Path, options: &ImportOptions) -> Result<Graph, BuildError> {
    let model = onnx::decode_model(bytes, path)?;
    let opset = default_opset(&model, path)?;
    let graph =
        model.graph.as_ref().ok_or_else(|| damaged(path, "the model has no graph; export it again".to_string()))?;
    if options.batch == Some(0) {
        return Err(BuildError::UnsupportedModel {
            path: path.to_path_buf(),
            reason: "batch 0 was asked for; the batch must be at least 1".into(),
        });
    }
    let mut im = Importer {
        path,
        opset,
        options,
        graph: Graph::default(),
        names: HashMap::new(),
        leading: Vec::new(),
        rewrite: None,
    };
    im.initializers(&graph.initializer)?;
    im.inputs(&graph.input)?;

    // Where each value is written, so a read before its writer is reported
    // as an order problem rather than as an unknown name.
    let mut writer: HashMap<&str, usize> = HashMap::new();
    for (i, node) in graph.node.iter().enumerate() {
        for out in node.output.iter().filter(|o| !o.is_empty()) {
            writer.entry(out.as_str()).or_insert(i);
        }
    }
    for (i, node) in graph.node.iter().enumerate() {
        im.node(i, node, &writer)?;
    }
    im.outputs(&graph.output)?;
    let mut g = im.graph;
    g.compact();
    Ok(g)
}

fn damaged(path: &Path, reason: String) -> BuildError {
    BuildError::Damaged { path: path.to_path_buf(), reason }
}

/// The default domain's opset version, checked against the range vrseg maps.
fn default_opset(model: &onnx::ModelProto, path: &Path) -> Result<i64, BuildError> {
    let version = model
        .opset_import
        .iter()
        .filter(|o| matches!(o.domain.as_deref(), None | Some("") | Some("ai.onnx")))
        .filter_map(|o| o.version)
        .max()
        .ok_or_else(|| {
            damaged(
                path,
                "it imports no version of the default ONNX operator set (opset_import); export it again".into(),
            )
        })?;
    if !(MIN_OPSET..=MAX_OPSET).contains(&version) {
        return Err(BuildError::Opset { path: path.to_path_buf(), version });
    }
    Ok(version)
}

/// A model exported with batch `from`, being built for batch `to`.
#[derive(Debug, Clone, Copy)]
struct BatchRewrite {
    from: usize,
    to: usize,
}

struct Importer<'a> {
    path: &'a Path,
    opset: i64,
    options: &'a ImportOptions,
    graph: Graph,
    /// ONNX value name → value. Removed nodes (Identity) alias their output
    /// name to their input's value.
    names: HashMap<String, ValueId>,
    /// Per value: axis 0 is the batch (only tracked while `rewrite` is set).
    leading: Vec<bool>,
    rewrite: Option<BatchRewrite>,
}

/// What a node turns into.
enum Outcome {
    /// Constant outputs, in output order; the node leaves the graph.
    Fold(Vec<Const>),
    /// The node is an identity: its output is this value.
    Alias(ValueId),
    /// An `ir::Node` with f32 outputs of these shapes.
    Emit { op: Op, inputs: Vec<ValueId>, outputs: Vec<Vec<usize>> },
}

fn emit(op: Op, inputs: Vec<ValueId>, shape: Vec<usize>) -> Outcome {
    Outcome::Emit { op, inputs, outputs: vec![shape] }
}

/// The node being imported: its name for messages and its attributes.
struct Cx<'n> {
    node: &'n NodeProto,
    op: &'n str,
    label: String,
    path: &'n Path,
}

impl Cx<'_> {
    fn shape_err(&self, reason: impl Into<String>) -> BuildError {
        BuildError::Shape { op_type: self.op.to_string(), node: self.label.clone(), reason: reason.into() }
    }

    fn unsupported(&self, reason: impl Into<String>) -> BuildError {
        BuildError::Unsupported { op_type: self.op.to_string(), node: self.label.clone(), reason: reason.into() }
    }

    fn damaged(&self, reason: impl std::fmt::Display) -> BuildError {
        damaged(self.path, format!("node {:?} ({}) {reason}; export the model again", self.label, self.op))
    }

    fn attr(&self, name: &str, ty: i32, present: bool) -> Result<bool, BuildError> {
        match self.node.attr(name) {
            None => Ok(false),
            Some(a) => match a.r#type {
                Some(t) if t != 0 && t != ty => {
                    Err(self.damaged(format!("has attribute {name:?} of type {t}, not {ty}")))
                }
                Some(t) if t != 0 => Ok(true),
                // IR version 1: no type field; the filled field tells.
                _ => Ok(present),
            },
        }
    }

    fn int(&self, name: &str) -> Result<Option<i64>, BuildError> {
        let a = self.node.attr(name);
        Ok(if self.attr(name, onnx::attribute_type::INT, a.is_some_and(|a| a.i.is_some()))? {
            Some(a.and_then(|a| a.i).unwrap_or(0))
        } else {
            None
        })
    }

    fn int_or(&self, name: &str, default: i64) -> Result<i64, BuildError> {
        Ok(self.int(name)?.unwrap_or(default))
    }

    fn ints(&self, name: &str) -> Result<Option<Vec<i64>>, BuildError> {
        let a = self.node.attr(name);
        Ok(if self.attr(name, onnx::attribute_type::INTS, a.is_some_and(|a| !a.ints.is_empty()))? {
            a.map(|a| a.ints.clone())
        } else {
            None
        })
    }

    fn float(&self, name: &str) -> Result<Option<f32>, BuildError> {
        let a = self.node.attr(name);
        Ok(if self.attr(name, onnx::attribute_type::FLOAT, a.is_some_and(|a| a.f.is_some()))? {
            Some(a.and_then(|a| a.f).unwrap_or(0.0))
        } else {
            None
        })
    }

    fn floats(&self, name: &str) -> Result<Option<Vec<f32>>, BuildError> {
        let a = self.node.attr(name);
        Ok(if self.attr(name, onnx::attribute_type::FLOATS, a.is_some_and(|a| !a.floats.is_empty()))? {
            a.map(|a| a.floats.clone())
        } else {
            None
        })
    }

    fn string(&self, name: &str) -> Result<Option<String>, BuildError> {
        let a = self.node.attr(name);
        if !self.attr(name, onnx::attribute_type::STRING, a.is_some_and(|a| a.s.is_some()))? {
            return Ok(None);
        }
        let bytes = a.and_then(|a| a.s.clone()).unwrap_or_default();
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| self.damaged(format!("has attribute {name:?} that is not UTF-8")))
    }

    fn string_or(&self, name: &str, default: &str) -> Result<String, BuildError> {
        Ok(self.string(name)?.unwrap_or_else(|| default.to_string()))
    }

    fn tensor(&self, name: &str) -> Result<Option<&TensorProto>, BuildError> {
        let a = self.node.attr(name);
        Ok(if self.attr(name, onnx::attribute_type::TENSOR, a.is_some_and(|a| a.t.is_some()))? {
            a.and_then(|a| a.t.as_ref())
        } else {
            None
        })
    }

    /// Normalises a possibly negative axis against `rank`.
    fn axis(&self, axis: i64, rank: usize) -> Result<usize, BuildError> {
        let r = rank as i64;
        if (-r..r).contains(&axis) {
            Ok(if axis < 0 { (axis + r) as usize } else { axis as usize })
        } else {
            Err(self.shape_err(format!("axis {axis} is outside a rank-{rank} tensor")))
        }
    }

    /// A kernel size, stride, pad or dilation.
    fn small(&self, what: &str, v: i64, min: i64) -> Result<usize, BuildError> {
        if (min..=MAX_ATTR).contains(&v) {
            Ok(v as usize)
        } else {
            Err(self.unsupported(format!("{what} {v} is outside {min}..={MAX_ATTR}")))
        }
    }

    /// An attribute of two spatial entries (strides, dilations, kernel_shape).
    fn pair(&self, name: &str, default: usize, min: i64) -> Result<[usize; 2], BuildError> {
        match self.ints(name)? {
            None => Ok([default; 2]),
            Some(v) if v.len() == 2 => Ok([self.small(name, v[0], min)?, self.small(name, v[1], min)?]),
            Some(v) => Err(self.unsupported(format!("{name} {v:?} is not two entries: only 2-D (NCHW) is supported"))),
        }
    }
}

/// A node's name for messages: its ONNX name, or its index and first output
/// when it has none (names are optional in ONNX).
fn node_label(index: usize, node: &NodeProto) -> String {
    match node.name.as_deref() {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => format!("#{index} (unnamed, writes {})", node.output.first().map(String::as_str).unwrap_or("nothing")),
    }
}

impl Importer<'_> {
    fn add(
        &mut self,
        name: &str,
        shape: Vec<usize>,
        dtype: DType,
        constant: Option<TensorData>,
        lead: bool,
    ) -> ValueId {
        let id = self.graph.add_value(Value { name: name.to_string(), shape, dtype, constant });
        self.leading.push(lead);
        self.names.insert(name.to_string(), id);
        id
    }

    fn value(&self, id: ValueId) -> &Value {
        self.graph.value(id)
    }

    fn shape(&self, id: ValueId) -> &[usize] {
        &self.graph.value(id).shape
    }

    fn konst(&self, id: ValueId) -> Option<Const> {
        let v = self.value(id);
        v.constant.as_ref().map(|d| Const { shape: v.shape.clone(), data: d.clone() })
    }

    fn initializers(&mut self, inits: &[TensorProto]) -> Result<(), BuildError> {
        let missing = if self.options.allow_empty_initializers {
            onnx::MissingData::ZeroFloats
        } else {
            onnx::MissingData::Refuse
        };
        for t in inits {
            let name = t.name.as_deref().unwrap_or("");
            if name.is_empty() {
                return Err(damaged(self.path, "an initializer has no name; export the model again".into()));
            }
            if self.names.contains_key(name) {
                return Err(damaged(
                    self.path,
                    format!("initializer {name:?} is defined twice; export the model again"),
                ));
            }
            let what = format!("initializer {name:?}");
            let tensor = onnx::decode_tensor(t, &what, self.path, missing)?;
            self.add(name, tensor.shape, tensor.data.dtype(), Some(tensor.data), false);
        }
        Ok(())
    }

    /// Graph inputs that are not initializers: their shapes pinned, the batch
    /// chosen (module documentation).
    fn inputs(&mut self, inputs: &[onnx::ValueInfoProto]) -> Result<(), BuildError> {
        use onnx::tensor_shape_proto::dimension::Value as Dim;
        let mut fixed_batch: Option<(usize, String)> = None;
        for info in inputs {
            let name = info.name.as_deref().unwrap_or("");
            if name.is_empty() {
                return Err(damaged(self.path, "a graph input has no name; export the model again".into()));
            }
            if self.names.contains_key(name) {
                // An initializer listed as an input too (IR < 4 style): a constant.
                continue;
            }
            let model = |reason: String| BuildError::UnsupportedModel {
                path: self.path.to_path_buf(),
                reason: format!("input {name:?} {reason}"),
            };
            let ty =
                info.tensor_type().ok_or_else(|| model("is not a tensor; vrseg's models take image tensors".into()))?;
            let elem = ty.elem_type.unwrap_or(0);
            if elem != data_type::FLOAT {
                return Err(model(format!(
                    "has element type {}; vrseg feeds float32 images: export the model with a float32 input \
                     (Ultralytics: half=False)",
                    data_type::name(elem)
                )));
            }
            let dims = &ty
                .shape
                .as_ref()
                .ok_or_else(|| model("has no shape; export the model with a fixed image size (imgsz=640)".into()))?
                .dim;
            let mut shape = Vec::with_capacity(dims.len());
            for (axis, d) in dims.iter().enumerate() {
                let known = match &d.value {
                    Some(Dim::DimValue(v)) if *v > 0 => usize::try_from(*v).ok(),
                    _ => None,
                };
                let dim = match (axis, known) {
                    (_, Some(v)) => v,
                    (0, None) => self.options.batch.unwrap_or(1),
                    (_, None) => {
                        let what = match &d.value {
                            Some(Dim::DimParam(p)) => format!("symbolic ({p:?})"),
                            _ => "unknown".to_string(),
                        };
                        return Err(model(format!(
                            "has a {what} size in axis {axis}; vrseg builds for fixed image sizes: export with a \
                             fixed size (Ultralytics: imgsz=640, dynamic=False)"
                        )));
                    }
                };
                if axis == 0 && known.is_some() {
                    if let Some(n) = self.options.batch.filter(|&n| n != dim) {
                        match &fixed_batch {
                            Some((b0, other)) if *b0 != dim => {
                                return Err(model(format!(
                                    "has batch {dim} and input {other:?} batch {b0}; vrseg can only change one \
                                     common batch: export the model with batch={n}"
                                )))
                            }
                            _ => fixed_batch = Some((dim, name.to_string())),
                        }
                        self.rewrite = Some(BatchRewrite { from: dim, to: n });
                        shape.push(n);
                        continue;
                    }
                }
                shape.push(dim);
            }
            if fold::volume(&shape).is_none_or(|n| n > MAX_VALUE_ELEMENTS) {
                return Err(model(format!("has shape {shape:?}, too many elements; the file is damaged")));
            }
            let id = self.add(name, shape, DType::F32, None, true);
            self.graph.inputs.push(id);
        }
        Ok(())
    }

    fn node(&mut self, index: usize, node: &NodeProto, writer: &HashMap<&str, usize>) -> Result<(), BuildError> {
        let op = node.op_type.as_deref().unwrap_or("");
        let cx = Cx { node, op, label: node_label(index, node), path: self.path };
        if op.is_empty() {
            return Err(cx.damaged("has no op_type"));
        }
        if let Some(domain) = node.domain.as_deref().filter(|d| !d.is_empty() && *d != "ai.onnx") {
            return Err(cx.unsupported(format!(
                "it is from operator domain {domain:?}, an extension of one runtime; vrseg reads standard ONNX ops \
                 only: export without runtime-specific optimisation (no onnxruntime graph optimisation, no \
                 custom ops)"
            )));
        }
        let mut ins = Vec::with_capacity(node.input.len());
        for name in &node.input {
            if name.is_empty() {
                ins.push(None);
                continue;
            }
            match self.names.get(name) {
                Some(&id) => ins.push(Some(id)),
                None => {
                    return Err(match writer.get(name.as_str()) {
                        Some(&later) if later >= index => cx.damaged(format!(
                            "reads {name:?} before node #{later} writes it: the nodes are not in topological \
                             order, as ONNX requires"
                        )),
                        _ => cx.damaged(format!("reads {name:?}, which no initializer, input or node defines")),
                    })
                }
            }
        }
        for name in node.output.iter().filter(|n| !n.is_empty()) {
            if self.names.contains_key(name) {
                return Err(cx.damaged(format!("writes {name:?}, which is already defined")));
            }
        }
        let outcome = self.op(&cx, &ins)?;
        self.bind(&cx, outcome)
    }

    /// Gives a node's outcome its output names.
    fn bind(&mut self, cx: &Cx, outcome: Outcome) -> Result<(), BuildError> {
        let outs = &cx.node.output;
        let produced = match &outcome {
            Outcome::Fold(c) => c.len(),
            Outcome::Alias(_) => 1,
            Outcome::Emit { outputs, .. } => outputs.len(),
        };
        if outs.len() < produced {
            return Err(cx.damaged(format!("has {} outputs where {} gives {produced}", outs.len(), cx.op)));
        }
        if let Some((i, name)) = outs.iter().enumerate().skip(produced).find(|(_, n)| !n.is_empty()) {
            return Err(cx.unsupported(format!(
                "its output {i} ({name:?}) is not supported: vrseg computes only the first {produced}"
            )));
        }
        if let Some(i) = outs[..produced].iter().position(|n| n.is_empty()) {
            return Err(cx.damaged(format!("has an unnamed output {i}")));
        }
        match outcome {
            Outcome::Fold(consts) => {
                for (name, c) in outs.iter().zip(consts) {
                    if fold::volume(&c.shape).is_none_or(|n| n > MAX_VALUE_ELEMENTS) {
                        return Err(cx.shape_err(format!("output {name:?} would have shape {:?}", c.shape)));
                    }
                    self.add(name, c.shape, c.data.dtype(), Some(c.data), false);
                }
            }
            Outcome::Alias(id) => {
                self.names.insert(outs[0].clone(), id);
            }
            Outcome::Emit { op, inputs, outputs } => {
                let lead_in = self.rewrite.is_some() && inputs.iter().any(|&v| self.leading[v]);
                let mut ids = Vec::with_capacity(outputs.len());
                for (name, shape) in outs.iter().zip(outputs) {
                    if fold::volume(&shape).is_none_or(|n| n > MAX_VALUE_ELEMENTS) {
                        return Err(
                            cx.shape_err(format!("output {name:?} would have shape {shape:?}, too many elements"))
                        );
                    }
                    let lead = lead_in && self.rewrite.is_some_and(|r| shape.first() == Some(&r.to));
                    if lead_in && !lead {
                        return Err(self.batch_refusal(
                            cx,
                            &format!("gives {name:?} the shape {shape:?}, whose axis 0 is no longer the batch"),
                        ));
                    }
                    ids.push(self.add(name, shape, DType::F32, None, lead));
                }
                self.graph.nodes.push(Node { name: cx.label.clone(), op, inputs, outputs: ids });
            }
        }
        Ok(())
    }

    /// Refuses a node that moves the batch while it is being rewritten.
    fn batch_refusal(&self, cx: &Cx, detail: &str) -> BuildError {
        let (from, to) = self.rewrite.map_or((0, 0), |r| (r.from, r.to));
        cx.unsupported(format!(
            "the model was exported with batch {from} and batch {to} was asked for, but this node {detail}; vrseg \
             can change the batch only of models whose ops keep it in axis 0: export the model with batch={to} \
             (Ultralytics: model.export(format=\"onnx\", batch={to}))"
        ))
    }

    /// True when `id` carries the batch in axis 0 during a batch rewrite.
    fn is_leading(&self, id: ValueId) -> bool {
        self.rewrite.is_some() && self.leading[id]
    }

    fn op(&mut self, cx: &Cx, ins: &[Option<ValueId>]) -> Result<Outcome, BuildError> {
        match cx.op {
            "Constant" => self.constant(cx),
            "Identity" => Ok(Outcome::Alias(self.input(cx, ins, 0)?)),
            "Dropout" => self.dropout(cx, ins),
            "Shape" => self.shape_op(cx, ins),
            "Cast" => self.cast(cx, ins),
            "Gather" => self.gather(cx, ins),
            "Unsqueeze" => self.unsqueeze(cx, ins),
            "Squeeze" => self.squeeze(cx, ins),
            "Flatten" => self.flatten(cx, ins),
            "Reshape" => self.reshape(cx, ins),
            "Concat" => self.concat(cx, ins),
            "Split" => self.split(cx, ins),
            "Slice" => self.slice(cx, ins),
            "Transpose" => self.transpose(cx, ins),
            "Add" => self.binary(cx, ins, Binary::Add),
            "Sub" => self.binary(cx, ins, Binary::Sub),
            "Mul" => self.binary(cx, ins, Binary::Mul),
            "Div" => self.binary(cx, ins, Binary::Div),
            "Range" => self.range(cx, ins),
            "ConstantOfShape" => self.constant_of_shape(cx, ins),
            "Expand" => self.expand(cx, ins),
            "Sigmoid" => self.sigmoid(cx, ins),
            "Softmax" => self.softmax(cx, ins),
            "MatMul" => self.matmul(cx, ins),
            "Conv" => self.conv(cx, ins),
            "ConvTranspose" => self.conv_transpose(cx, ins),
            "MaxPool" => self.max_pool(cx, ins),
            "Resize" => self.resize(cx, ins),
            other => Err(cx.unsupported(format!(
                "vrseg's engine has no kernel for {other}; it runs {SUPPORTED_OPS}. Export the model with \
                 opset 17 and simplify=True (Ultralytics does), or replace the layer that produces {other}"
            ))),
        }
    }

    /// Inference-mode Dropout is the identity; its mask output is refused in
    /// `bind`, and training_mode (input 2, opset 12) must be false.
    fn dropout(&mut self, cx: &Cx, ins: &[Option<ValueId>]) -> Result<Outcome, BuildError> {
        let training = match self.const_input(cx, ins, 2, "training_mode")? {
            Some(c) => match c.data {
                TensorData::F32(v) => v.iter().any(|&x| x != 0.0),
                TensorData::I64(v) => v.iter().any(|&x| x != 0),
            },
            None => false,
        };
        if training {
            return Err(cx.unsupported("it is in training mode; export the model in eval mode"));
        }
        Ok(Outcome::Alias(self.input(cx, ins, 0)?))
    }

    // ---- inputs of a node ----

    /// Required input `i`.
    fn input(&self, cx: &Cx, ins: &[Option<ValueId>], i: usize) -> Result<ValueId, BuildError> {
        ins.get(i).copied().flatten().ok_or_else(|| cx.damaged(format!("lacks its required input {i}")))
    }

    /// Optional input `i` that must be constant when present: ONNX passes
    /// the op's parameters this way, and vrseg fixes them at build time.
    fn const_input(&self, cx: &Cx, ins: &[Option<ValueId>], i: usize, what: &str) -> Result<Option<Const>, BuildError> {
        let Some(id) = ins.get(i).copied().flatten() else { return Ok(None) };
        self.konst(id).map(Some).ok_or_else(|| {
            cx.unsupported(format!(
                "its {what} (input {i}, {:?}) is computed from the image at run time; vrseg needs it constant \
                 at build time: export with a fixed input size and simplify=True",
                self.value(id).name
            ))
        })
    }

    /// Optional constant int64 input as a list.
    fn const_ints(
        &self,
        cx: &Cx,
        ins: &[Option<ValueId>],
        i: usize,
        what: &str,
    ) -> Result<Option<Vec<i64>>, BuildError> {
        match self.const_input(cx, ins, i, what)? {
            None => Ok(None),
            Some(Const { data: TensorData::I64(v), .. }) => Ok(Some(v)),
            Some(_) => Err(cx.damaged(format!("has a {what} input (input {i}) that is not int64"))),
        }
    }

    /// Refuses integer arithmetic on a value computed at run time (every
    /// such value is f32; see the module documentation).
    fn check_f32(&self, cx: &Cx, id: ValueId) -> Result<(), BuildError> {
        if self.value(id).dtype == DType::F32 {
            Ok(())
        } else {
            Err(cx.unsupported("it computes on integers at run time; vrseg's kernels compute in float"))
        }
    }

    fn fold_guard(&self, cx: &Cx, shape: &[usize]) -> Result<(), BuildError> {
        match fold::volume(shape) {
            Some(n) if n <= MAX_FOLD_ELEMENTS => Ok(()),
            _ => Err(cx.unsupported(format!(
                "it makes a constant of shape {shape:?}, more than {MAX_FOLD_ELEMENTS} elements to compute at \
                 build time"
            ))),
        }
    }

    // ---- constants and shape arithmetic ----

    fn constant(&mut self, cx: &Cx) -> Result<Outcome, BuildError> {
        let c = if let Some(t) = cx.tensor("value")? {
            let what = format!("attribute \"value\" of node {:?}", cx.label);
            let t = onnx::decode_tensor(t, &what, self.path, onnx::MissingData::Refuse)?;
            Const { shape: t.shape, data: t.data }
        } else if let Some(v) = cx.float("value_float")? {
            Const::f32s(vec![], vec![v])
        } else if let Some(v) = cx.floats("value_floats")? {
            Const::f32s(vec![v.len()], v)
        } else if let Some(v) = cx.int("value_int")? {
            Const::i64s(vec![], vec![v])
        } else if let Some(v) = cx.ints("value_ints")? {
            Const::i64s(vec![v.len()], v)
        } else {
            return Err(cx.unsupported(
                "only value, value_float(s) and value_int(s) constants are read (not sparse or string ones)",
            ));
        };
        Ok(Outcome::Fold(vec![c]))
    }

    fn shape_op(&mut self, cx: &Cx, ins: &[Option<ValueId>]) -> Result<Outcome, BuildError> {
        let shape = self.shape(self.input(cx, ins, 0)?).to_vec();
        let r = shape.len() as i64;
        // Opset 15 start/end: negative counts from the end; both clamp to 0..=rank.
        let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
        let start = clamp(cx.int_or("start", 0)?);
        let end = clamp(cx.int_or("end", r)?).max(start);
        let dims: Vec<i64> = shape[start..end].iter().map(|&d| d as i64).collect();
        Ok(Outcome::Fold(vec![Const::i64s(vec![dims.len()], dims)]))
    }

    fn cast(&mut self, cx: &Cx, ins: &[Option<ValueId>]) -> Result<Outcome, BuildError> {
        let x = self.input(cx, ins, 0)?;
        let to = cx.int("to")?.ok_or_else(|| cx.damaged("lacks its \"to\" attribute"))?;
        let to32 = i32::try_from(to).unwrap_or(-1);
        let (dtype, round_f16, int32) = match to32 {
            data_type::FLOAT | data_type::DOUBLE => (DType::F32, false, false),
            data_type::FLOAT16 => (DType::F32, true, false),
            data_type::INT64 => (DType::I64, false, false),
            data_type::INT32 => (DType::I64, false, true),
            other => {
                return Err(cx.unsupported(format!(
                    "casts to {}; vrseg computes in float and folds int64/int32 shape arithmetic only",
                    data_type::name(other)
                )))
            }
        };
        if let Some(c) = self.konst(x) {
            return Ok(Outcome::Fold(vec![fold::cast(&c, dtype, round_f16, int32)]));
        }
        if dtype == DType::F32 && !round_f16 && self.value(x).dtype == DType::F32 {
            return Ok(Outcome::Alias(x));
        }
        Err(cx.unsupported(format!(
            "it casts a value computed at run time to {}; vrseg computes in float32 only: export with half=False",
            data_type::name(to32)
        )))
    }

    fn gather(&mut self, cx: &Cx, ins: &[Option<ValueId>]) -> Result<Outcome, BuildError> {
        let data = self.input(cx, ins, 0)?;
        let Some(data) = self.konst(data) else {
            return Err(cx.unsupported(
                "vrseg's engine has no Gather kernel: only Gather on shapes and constants, which import folds, \
                 is supported",
            ));
        };
        let Some(indices) = self.const_input(cx, ins, 1, "indices")? else {
            return Err(cx.damaged("lacks its indices input"));
        };
        let TensorData::I64(idx) = &indices.data else { return Err(cx.damaged("has float indices")) };
        let axis = cx.axis(cx.int_or("axis", 0)?, data.shape.len())?;
        let mut out = data.shape[..axis].to_vec();
        out.extend_from_slice(&indices.shape);
        out.extend_from_slice(&data.shape[axis + 1..]);
        self.fold_guard(cx, &out)?;
        let c = fold::gather(&data, idx, &indices.shape, axis).map_err(|e| cx.shape_err(e))?;
        Ok(Outcome::Fold(vec![c]))
    }

    /// A reshape of `x` to `shape` (already resolved): folded for a
    /// constant, an `Op::Reshape` otherwise.
    fn reshape_to(&self, x: ValueId, shape: Vec<usize>) -> Outcome {
        match self.konst(x) {
            Some(c) => Outcome::Fold(vec![c.reshaped(shape)]),
            None => emit(Op::Reshape { shape: shape.clone() }, vec![x], shape),
        }
    }

    /// Axes for Squeeze/Unsqueeze: an input from opset 13, an attribute before.
    fn axes_param(&self, cx: &Cx, ins: &[Option<ValueId>]) -> Result<Option<Vec<i64>>, BuildError> {
        if self.opset >= 13 {
            self.const_ints(cx, ins, 1, "axes")
        } else {
            cx.ints("axes")
        }
    }

    fn unsqueeze(&mut self, cx: &Cx, ins: &[Option<ValueId>]) -> Result<Outcome, BuildError> {
        let x = self.input(cx, ins, 0)?;
        let axes = self.axes_param(cx, ins)?.ok_or_else(|| cx.damaged("lacks its axes"))?;
        let shape = self.shape(x);
        let rank = shape.len() + axes.len();
        let mut insert = vec![false; rank];
        for &a in &axes {
            let a = cx.axis(a, rank)?;
            if std::mem::replace(&mut insert[a], true) {
                return Err(cx.shape_err(format!("axes {axes:?} name axis {a} twice")));
            }
        }
        let mut dims = shape.iter();
        let out = insert.iter().map(|&new| if new { 1 } else { dims.next().copied().unwrap_or(1) }).collect();
        Ok(self.reshape_to(x, out))
    }

    fn squeeze(&mut self, cx: &Cx, ins: &[Option<ValueId>]) -> Result<Outcome, BuildError> {
        let x = self.input(cx, ins, 0)?;
        let shape = self.shape(x).to_vec();
        let drop: Vec<bool> = match self.axes_param(cx, ins)? {
            None => shape.iter().map(|&d| d == 1).collect(),
            Some(axes) => {
                let mut drop = vec![false; shape.len()];
                for &a in &axes {
                    let a = cx.axis(a, shape.len())?;
                    if shape[a] != 1 {
                        return Err(
                            cx.shape_err(format!("axis {a} of shape {shape:?} is not 1 and cannot be squeezed"))
                        );
                    }
                    drop[a] = true;
                }
                drop
            }
        };
        let out = shape.iter().zip(&drop).filter(|(_, &d)| !d).map(|(&s, _)| s).collect();
        Ok(self.reshape_to(x, out))
    }

    fn flatten(&mut self, cx: &Cx, ins: &[Option<ValueId>]) -> Result<Outcome, BuildError> {
        let x = self.input(cx, ins, 0)?;
        let shape = self.shape(x);
        let r = shape.len() as i64;
        let axis = cx.int_or("axis", 1)?;
        if !(-r..=r).contains(&axis) {
            return Err(cx.shape_err(format!("axis {axis} is outside a rank-{r} tensor")));
        }
        let axis = if axis < 0 { axis + r } else { axis } as usize;
        let out = vec![shape[..axis].iter().product(), shape[axis..].iter().product()];
        Ok(self.reshape_to(x, out))
    }

    /// ONNX Reshape: 0 copies the input's dim (allowzero=0), one -1 is
    /// inferred. During a batch rewrite, the rule in the module
    /// documentation replaces entry 0.
    fn reshape(&mut self, cx: &Cx, ins: &[Option<ValueId>]) -> Result<Outcome, BuildError> {
        let x = self.input(cx, ins, 0)?;
        let mut target = self.const_ints(cx, ins, 1, "shape")?.ok_or_else(|| cx.damaged("lacks its shape input"))?;
        let allowzero = cx.int_or("allowzero", 0)? != 0;
        let shape = self.shape(x).to_vec();
        // During a batch rewrite, entry 0 of a reshape of a batch-leading
        // value must say "the batch": B0 (rewritten to N), 0 (copy) or -1
        // (checked below to resolve to N). Any other number was not the batch
        // in the exported model, even if it equals N.
        let rewrite = self.rewrite.filter(|_| self.is_leading(x));
        if let Some(r) = rewrite {
            match target.first() {
                Some(&t) if t == r.from as i64 => target[0] = r.to as i64,
                Some(0 | -1) => {}
                _ => {
                    return Err(self.batch_refusal(
                        cx,
                        &format!(
                            "reshapes its batch-first input to {target:?}, which does not keep the batch in axis 0"
                        ),
                    ))
                }
            }
        }
        let total = fold::elements(&shape).unwrap_or(0);
        let mut out = Vec::with_capacity(target.len());
        let mut infer = None;
        for (i, &t) in target.iter().enumerate() {
            let d = match t {
                -1 if infer.is_none() => {
                    infer = Some(i);
                    1
                }
                -1 => return Err(cx.shape_err(format!("target shape {target:?} has more than one -1"))),
                0 if !allowzero => *shape.get(i).ok_or_else(|| {
                    cx.shape_err(format!("target shape {target:?} copies axis {i} (0), which input {shape:?} lacks"))
                })?,
                t if t >= 0 && t <= MAX_VALUE_ELEMENTS as i64 => t as usize,
                t => return Err(cx.shape_err(format!("target shape {target:?} has the entry {t}"))),
            };
            out.push(d);
        }
        let known = fold::elements(&out).filter(|_| fold::volume(&out).is_some_and(|v| v <= MAX_VALUE_ELEMENTS));
        let mismatch = || cx.shape_err(format!("input of shape {shape:?} cannot be reshaped to {target:?}"));
        match (infer, known) {
            (Some(i), Some(k)) if k > 0 && total % k == 0 => out[i] = total / k,
            (None, Some(k)) if k == total => {}
            _ => return Err(mismatch()),
        }
        Ok(self.reshape_to(x, out))
    }

    fn concat(&mut self, cx: &Cx, ins: &[Option<ValueId>]) -> Result<Outcome, BuildError> {
        if ins.is_empty() {
            return Err(cx.damaged("has no inputs"));
        }
        let ids: Vec<ValueId> = (0..ins.len()).map(|i| self.input(cx, ins, i)).collect::<Result<_, _>>()?;
        let first = self.shape(ids[0]).to_vec();
        let axis = cx.axis(cx.int("axis")?.ok_or_else(|| cx.damaged("lacks its axis"))?, first.len())?;
        let dtype = self.value(ids[0]).dtype;
        let mut out = first.clone();
        out[axis] = 0;
        for &id in &ids {
            let s = self.shape(id);
            let same =
                s.len() == first.len() && s.iter().zip(&first).enumerate().all(|(d, (a, b))| d == axis || a == b);
            if !same {
                return Err(cx.shape_err(format!(
                    "input {:?} of shape {s:?} does not match {first:?} outside axis {axis}",
                    self.value(id).name
                )));
            }
            if self.value(id).dtype != dtype {
                return Err(cx.shape_err("its inputs have different element types"));
            }
            out[axis] += s[axis];
        }
        let consts: Option<Vec<Const>> = ids.iter().map(|&id| self.konst(id)).collect();
        if let Some(consts) = consts {
            self.fold_guard(cx, &out)?;
            let refs: Vec<&Const> = consts.iter().collect();
            return Ok(Outcome::Fold(vec![fold::concat(&refs, axis, &out)]));
        }
        if axis == 0 && ids.iter().any(|&id| self.is_leading(id)) {
            return Err(self.batch_refusal(cx, "concatenates along axis 0"));
        }
        Ok(emit(Op::Concat { axis }, ids, out))
    }

    fn split(&mut self, cx: &Cx, ins: &[Option<ValueId>]) -> Result<Outcome, BuildError> {
        let x = self.input(cx, ins, 0)?;
        let shape = self.shape(x).to_vec();
        let axis = cx.axis(cx.int_or("axis", 0)?, shape.len())?;
        let dim = shape[axis];
        let n = cx.node.output.len();
        let given = if self.opset >= 13 { self.const_ints(cx, ins, 1, "split")? } else { cx.ints("split")? };
        let sizes: Vec<usize> = match given {
            Some(s) => {
                let sizes: Vec<usize> = s.iter().map(|&v| usize::try_from(v).unwrap_or(usize::MAX)).collect();
                let sum = sizes.iter().try_fold(0usize, |a, &b| a.checked_add(b));
                if sizes.len() != n || sum != Some(dim) {
                    return Err(cx.shape_err(format!(
                        "split sizes {s:?} do not divide axis {axis} of {shape:?} into {n} outputs"
                    )));
                }
                sizes
            }
            None => {
                let parts = match cx.int("num_outputs")? {
                    Some(k) if k as usize != n || k < 1 => {
                        return Err(cx.damaged(format!("has num_outputs {k} but {n} outputs")))
                    }
                    _ => n,
                };
                if parts == 0 {
                    return Err(cx.damaged("has no outputs"));
                }
                if dim % parts == 0 {
                    vec![dim / parts; parts]
                } else if self.opset >= 18 && dim.div_ceil(parts) * (parts - 1) < dim {
                    // Opset 18: chunks of ceil(dim / n), the last one smaller.
                    let chunk = dim.div_ceil(parts);
                    let mut s = vec![chunk; parts - 1];
                    s.push(dim - chunk * (parts - 1));
                    s
                } else {
                    return Err(
                        cx.shape_err(format!("axis {axis} of {shape:?} does not split into {parts} equal parts"))
                    );
                }
            }
        };
        let shapes: Vec<Vec<usize>> = sizes
            .iter()
            .map(|&s| {
                let mut o = shape.clone();
                o[axis] = s;
                o
            })
            .collect();
        if let Some(c) = self.konst(x) {
            let mut start = vec![0; shape.len()];
            let step = vec![1; shape.len()];
            let mut parts = Vec::with_capacity(sizes.len());
            for (o, &s) in shapes.iter().zip(&sizes) {
                parts.push(fold::slice(&c, &start, &step, o));
                start[axis] += s;
            }
            return Ok(Outcome::Fold(parts));
        }
        if axis == 0 && self.is_leading(x) {
            return Err(self.batch_refusal(cx, "splits along axis 0"));
        }
        Ok(Outcome::Emit { op: Op::Split { axis, sizes }, inputs: vec![x], outputs: shapes })
    }

    /// ONNX Slice (opset 10+ form: bounds as inputs), clamped as the
    /// specification says for positive steps: a negative start or end counts
    /// from the end, then both clamp to 0..=dim (so INT64_MAX means "to the
    /// end"); an end before the start gives an empty axis.
    fn slice(&mut self, cx: &Cx, ins: &[Option<ValueId>]) -> Result<Outcome, BuildError> {
        let x = self.input(cx, ins, 0)?;
        let shape = self.shape(x).to_vec();
        let starts = self.const_ints(cx, ins, 1, "starts")?.ok_or_else(|| cx.damaged("lacks its starts"))?;
        let ends = self.const_ints(cx, ins, 2, "ends")?.ok_or_else(|| cx.damaged("lacks its ends"))?;
        let axes = self.const_ints(cx, ins, 3, "axes")?.unwrap_or_else(|| (0..starts.len() as i64).collect());
        let steps = self.const_ints(cx, ins, 4, "steps")?.unwrap_or_else(|| vec![1; starts.len()]);
        if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
            return Err(cx.damaged(format!(
                "has starts {starts:?}, ends {ends:?}, axes {axes:?} and steps {steps:?} of different lengths"
            )));
        }
        let mut out = shape.clone();
        let mut first = vec![0usize; shape.len()];
        let mut stride = vec![1usize; shape.len()];
        let mut seen = vec![false; shape.len()];
        let (mut r_axes, mut r_starts, mut r_ends, mut r_steps) = (vec![], vec![], vec![], vec![]);
        for i in 0..starts.len() {
            let axis = cx.axis(axes[i], shape.len())?;
            if std::mem::replace(&mut seen[axis], true) {
                return Err(cx.shape_err(format!("axes {axes:?} name axis {axis} twice")));
            }
            let step = steps[i];
            if step == 0 {
                return Err(cx.shape_err("a step is 0"));
            }
            if step < 0 {
                return Err(cx.unsupported(format!(
                    "it steps backwards (step {step} on axis {axis}); vrseg's Slice runs forwards only: flip the \
                     tensor in the model another way"
                )));
            }
            let dim = shape[axis] as i64;
            let clamp = |v: i64| (if v < 0 { v.saturating_add(dim) } else { v }).clamp(0, dim) as usize;
            let start = clamp(starts[i]);
            let end = clamp(ends[i]).max(start);
            let step = usize::try_from(step).unwrap_or(usize::MAX).min(shape[axis].max(1));
            out[axis] = (end - start).div_ceil(step);
            first[axis] = start;
            stride[axis] = step;
            r_axes.push(axis);
            r_starts.push(start);
            r_ends.push(end);
            r_steps.push(step);
        }
        if let Some(c) = self.konst(x) {
            return Ok(Outcome::Fold(vec![fold::slice(&c, &first, &stride, &out)]));
        }
        Ok(emit(Op::Slice { axes: r_axes, starts: r_starts, ends: r_ends, steps: r_steps }, vec![x], out))
    }

    fn transpose(&mut self, cx: &Cx, ins: &[Option<ValueId>]) -> Result<Outcome, BuildError> {
        let x = self.input(cx, ins, 0)?;
        let shape = self.shape(x).to_vec();
        let perm: Vec<usize> = match cx.ints("perm")? {
            None => (0..shape.len()).rev().collect(),
            Some(p) => p.iter().map(|&a| usize::try_from(a).unwrap_or(usize::MAX)).collect(),
        };
        let mut sorted = perm.clone();
        sorted.sort_unstable();
        if sorted != (0..shape.len()).collect::<Vec<_>>() {
            return Err(cx.shape_err(format!("perm {perm:?} is not a permutation of the axes of {shape:?}")));
        }
        if let Some(c) = self.konst(x) {
            return Ok(Outcome::Fold(vec![fold::transpose(&c, &perm)]));
        }
        if perm.first().is_some_and(|&p| p != 0) && self.is_leading(x) {
            return Err(self.batch_refusal(cx, &format!("moves axis 0 (perm {perm:?})")));
        }
        let out = perm.iter().map(|&p| shape[p]).collect();
        Ok(emit(Op::Transpose { perm }, vec![x], out))
    }

    fn binary(&mut self, cx: &Cx, ins: &[Option<ValueId>], op: Binary) -> Result<Outcome, BuildError> {
        let (a, b) = (self.input(cx, ins, 0)?, self.input(cx, ins, 1)?);
        let (sa, sb) = (self.shape(a), self.shape(b));
        let out = fold::broadcast_shape(sa, sb)
            .ok_or_else(|| cx.shape_err(format!("shapes {sa:?} and {sb:?} do not broadcast")))?;
        if self.value(a).dtype != self.value(b).dtype {
            return Err(cx.shape_err("its inputs have different element types"));
        }
        if let (Some(ca), Some(cb)) = (self.konst(a), self.konst(b)) {
            self.fold_guard(cx, &out)?;
            return Ok(Outcome::Fold(vec![fold::binary(op, &ca, &cb, &out).map_err(|e| cx.shape_err(e))?]));
        }
        self.check_f32(cx, a)?;
        let op = match op {
            Binary::Add => Op::Add,
            Binary::Sub => Op::Sub,
            Binary::Mul => Op::Mul,
            Binary::Div => Op::Div,
        };
        Ok(emit(op, vec![a, b], out))
    }

    fn range(&mut self, cx: &Cx, ins: &[Option<ValueId>]) -> Result<Outcome, BuildError> {
        let mut scalar = Vec::with_capacity(3);
        for (i, what) in ["start", "limit", "delta"].iter().enumerate() {
            let c = self.const_input(cx, ins, i, what)?.ok_or_else(|| cx.damaged(format!("lacks its {what}")))?;
            if c.data.len() != 1 {
                return Err(cx.shape_err(format!("its {what} is not a scalar (shape {:?})", c.shape)));
            }
            scalar.push(c.data);
        }
        match (&scalar[0], &scalar[1], &scalar[2]) {
            (TensorData::I64(s), TensorData::I64(l), TensorData::I64(d)) => {
                let (s, l, d) = (s[0], l[0], d[0]);
                if d == 0 {
                    return Err(cx.shape_err("its delta is 0"));
                }
                let n = (i128::from(l) - i128::from(s)).div_euclid(i128::from(d))
                    + i128::from((i128::from(l) - i128::from(s)).rem_euclid(i128::from(d)) != 0);
                let n = usize::try_from(n.max(0)).unwrap_or(usize::MAX);
                self.fold_guard(cx, &[n])?;
                let v = (0..n as i64).map(|k| s + k * d).collect();
                Ok(Outcome::Fold(vec![Const::i64s(vec![n], v)]))
            }
            (TensorData::F32(s), TensorData::F32(l), TensorData::F32(d)) => {
                let (s, l, d) = (s[0], l[0], d[0]);
                let n = ((l - s) / d).ceil();
                if !n.is_finite() {
                    return Err(cx.shape_err(format!("range({s}, {l}, {d}) has no finite length")));
                }
                let n = n.max(0.0) as usize;
                self.fold_guard(cx, &[n])?;
                Ok(Outcome::Fold(vec![Const::f32s(vec![n], (0..n).map(|k| s + k as f32 * d).collect())]))
            }
            _ => Err(cx.shape_err("its start, limit and delta have different element types")),
        }
    }

    fn constant_of_shape(&mut self, cx: &Cx, ins: &[Option<ValueId>]) -> Result<Outcome, BuildError> {
        let dims = self.const_ints(cx, ins, 0, "shape")?.ok_or_else(|| cx.damaged("lacks its shape input"))?;
        let shape: Vec<usize> = dims
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| cx.shape_err(format!("shape {dims:?} has a negative entry"))))
            .collect::<Result<_, _>>()?;
        self.fold_guard(cx, &shape)?;
        let n = fold::elements(&shape).unwrap_or(0);
        let data = match cx.tensor("value")? {
            None => TensorData::F32(vec![0.0; n]),
            Some(t) => {
                let what = format!("attribute \"value\" of node {:?}", cx.label);
                match onnx::decode_tensor(t, &what, self.path, onnx::MissingData::Refuse)?.data {
                    TensorData::F32(v) if v.len() == 1 => TensorData::F32(vec![v[0]; n]),
                    TensorData::I64(v) if v.len() == 1 => TensorData::I64(vec![v[0]; n]),
                    _ => return Err(cx.damaged("has a value attribute that is not one element")),
                }
            }
        };
        Ok(Outcome::Fold(vec![Const { shape, data }]))
    }

    fn expand(&mut self, cx: &Cx, ins: &[Option<ValueId>]) -> Result<Outcome, BuildError> {
        let x = self.input(cx, ins, 0)?;
        let target = self.const_ints(cx, ins, 1, "shape")?.ok_or_else(|| cx.damaged("lacks its shape input"))?;
        let target: Vec<usize> = target
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| cx.shape_err(format!("shape {target:?} has a negative entry"))))
            .collect::<Result<_, _>>()?;
        let Some(c) = self.konst(x) else {
            return Err(cx.unsupported(
                "vrseg's engine has no Expand kernel: only Expand of constants, which import folds, is supported",
            ));
        };
        let out = fold::broadcast_shape(&c.shape, &target)
            .ok_or_else(|| cx.shape_err(format!("shape {:?} does not broadcast to {target:?}", c.shape)))?;
        self.fold_guard(cx, &out)?;
        Ok(Outcome::Fold(vec![fold::expand(&c, &out)]))
    }

    // ---- ops that run on the GPU ----

    fn sigmoid(&mut self, cx: &Cx, ins: &[Option<ValueId>]) -> Result<Outcome, BuildError> {
        let x = self.input(cx, ins, 0)?;
        self.check_f32(cx, x)?;
        if let Some(Const { shape, data: TensorData::F32(v) }) = self.konst(x) {
            return Ok(Outcome::Fold(vec![Const::f32s(shape, fold::sigmoid(&v))]));
        }
        Ok(emit(Op::Sigmoid, vec![x], self.shape(x).to_vec()))
    }

    /// Softmax along one axis. Before opset 13 ONNX flattened the input to
    /// 2-D at `axis` (default 1) and normalised over everything after it;
    /// that is one-axis softmax only when the axes after `axis` are all 1,
    /// which is what is accepted there.
    fn softmax(&mut self, cx: &Cx, ins: &[Option<ValueId>]) -> Result<Outcome, BuildError> {
        let x = self.input(cx, ins, 0)?;
        self.check_f32(cx, x)?;
        let shape = self.shape(x).to_vec();
        let default = if self.opset >= 13 { -1 } else { 1 };
        let axis = cx.axis(cx.int_or("axis", default)?, shape.len())?;
        if self.opset < 13 && shape[axis + 1..].iter().any(|&d| d != 1) {
            return Err(cx.unsupported(format!(
                "before opset 13, Softmax normalises over all axes from {axis} of {shape:?} together; vrseg's \
                 Softmax runs along one axis: export with opset 13 or newer (17 recommended)"
            )));
        }
        if axis == 0 && self.is_leading(x) {
            return Err(self.batch_refusal(cx, "normalises along axis 0"));
        }
        Ok(emit(Op::Softmax { axis }, vec![x], shape))
    }

    /// numpy matmul: 1-D operands get a 1 prepended (left) or appended
    /// (right) that the output drops; leading axes broadcast.
    fn matmul(&mut self, cx: &Cx, ins: &[Option<ValueId>]) -> Result<Outcome, BuildError> {
        let (a, b) = (self.input(cx, ins, 0)?, self.input(cx, ins, 1)?);
        self.check_f32(cx, a)?;
        self.check_f32(cx, b)?;
        let (sa, sb) = (self.shape(a).to_vec(), self.shape(b).to_vec());
        if sa.is_empty() || sb.is_empty() {
            return Err(cx.shape_err(format!("MatMul of {sa:?} and {sb:?}: operands must have rank 1 or more")));
        }
        let ea = if sa.len() == 1 { vec![1, sa[0]] } else { sa.clone() };
        let eb = if sb.len() == 1 { vec![sb[0], 1] } else { sb.clone() };
        let (m, k) = (ea[ea.len() - 2], ea[ea.len() - 1]);
        let (k2, n) = (eb[eb.len() - 2], eb[eb.len() - 1]);
        let batch = fold::broadcast_shape(&ea[..ea.len() - 2], &eb[..eb.len() - 2]);
        let Some(mut out) = batch.filter(|_| k == k2) else {
            return Err(cx.shape_err(format!("shapes {sa:?} and {sb:?} do not multiply")));
        };
        if sa.len() > 1 {
            out.push(m);
        }
        if sb.len() > 1 {
            out.push(n);
        }
        Ok(emit(Op::MatMul, vec![a, b], out))
    }

    /// The weight (and bias) of a Conv or ConvTranspose: constants, since
    /// the plan stores them.
    fn weights(
        &self,
        cx: &Cx,
        ins: &[Option<ValueId>],
        bias_len: impl Fn(&[usize]) -> usize,
    ) -> Result<Vec<ValueId>, BuildError> {
        let w = self.input(cx, ins, 1)?;
        let ws = self.shape(w).to_vec();
        if self.value(w).constant.is_none() || self.value(w).dtype != DType::F32 {
            return Err(cx.unsupported(format!(
                "its weight {:?} is not a float constant; vrseg stores weights in the plan: export with the \
                 weights as initializers (no quantisation)",
                self.value(w).name
            )));
        }
        if ws.len() != 4 {
            return Err(
                cx.unsupported(format!("its weight has shape {ws:?}: only 2-D convolution (NCHW) is supported"))
            );
        }
        let mut ids = vec![self.input(cx, ins, 0)?, w];
        if let Some(b) = ins.get(2).copied().flatten() {
            if self.value(b).constant.is_none() || self.value(b).dtype != DType::F32 {
                return Err(cx.unsupported(format!("its bias {:?} is not a float constant", self.value(b).name)));
            }
            let want = bias_len(&ws);
            if self.shape(b) != [want] {
                return Err(cx.shape_err(format!("its bias has shape {:?}, not [{want}]", self.shape(b))));
            }
            ids.push(b);
        }
        if ins.len() > 3 {
            return Err(cx.damaged(format!("has {} inputs, more than 3", ins.len())));
        }
        Ok(ids)
    }

    /// An NCHW input's shape.
    fn nchw(&self, cx: &Cx, x: ValueId) -> Result<[usize; 4], BuildError> {
        self.check_f32(cx, x)?;
        <[usize; 4]>::try_from(self.shape(x)).map_err(|_| {
            cx.unsupported(format!("its input has shape {:?}: only 2-D (NCHW) is supported", self.shape(x)))
        })
    }

    fn conv(&mut self, cx: &Cx, ins: &[Option<ValueId>]) -> Result<Outcome, BuildError> {
        let ids = self.weights(cx, ins, |w| w[0])?;
        let [n, c, h, w] = self.nchw(cx, ids[0])?;
        let ws = self.shape(ids[1]).to_vec();
        let group = cx.small("group", cx.int_or("group", 1)?, 1)?;
        if ws[1].checked_mul(group) != Some(c) || ws[0] % group != 0 {
            return Err(cx.shape_err(format!(
                "input channels {c} and weight {ws:?} do not match for group {group} (C must be weight[1] x group)"
            )));
        }
        let kernel = self.kernel(cx, [ws[2], ws[3]])?;
        let stride = cx.pair("strides", 1, 1)?;
        let dilation = cx.pair("dilations", 1, 1)?;
        let (pads, [oh, ow]) = window(cx, [h, w], kernel, stride, dilation, false)?;
        let conv =
            ir::Conv { kernel, stride, dilation, pads, group, activation: ir::Activation::None, residual: false };
        Ok(emit(Op::Conv(conv), ids, vec![n, ws[0], oh, ow]))
    }

    /// The kernel size: from the weight, checked against kernel_shape when
    /// the node has one (it may be absent).
    fn kernel(&self, cx: &Cx, from_weight: [usize; 2]) -> Result<[usize; 2], BuildError> {
        if from_weight.contains(&0) {
            return Err(cx.shape_err(format!("its weight has an empty kernel {from_weight:?}")));
        }
        match cx.ints("kernel_shape")? {
            Some(k) if k != [from_weight[0] as i64, from_weight[1] as i64] => {
                Err(cx.shape_err(format!("kernel_shape {k:?} does not match the weight's {from_weight:?}")))
            }
            _ => Ok(from_weight),
        }
    }

    /// ONNX ConvTranspose: out = stride (in - 1) + output_padding +
    /// (k - 1) dilation + 1 - pad_begin - pad_end; an output_shape attribute
    /// or SAME auto_pad fixes the pads as the specification says.
    fn conv_transpose(&mut self, cx: &Cx, ins: &[Option<ValueId>]) -> Result<Outcome, BuildError> {
        let group = cx.small("group", cx.int_or("group", 1)?, 1)?;
        let ids = self.weights(cx, ins, |w| w[1].saturating_mul(group))?;
        let [n, c, h, w] = self.nchw(cx, ids[0])?;
        let ws = self.shape(ids[1]).to_vec();
        if c != ws[0] || c % group != 0 {
            return Err(cx.shape_err(format!("input channels {c} do not match weight {ws:?} for group {group}")));
        }
        let kernel = self.kernel(cx, [ws[2], ws[3]])?;
        let stride = cx.pair("strides", 1, 1)?;
        let dilation = cx.pair("dilations", 1, 1)?;
        let output_padding = cx.pair("output_padding", 0, 0)?;
        let auto_pad = cx.string_or("auto_pad", "NOTSET")?;
        let input = [h, w];
        // The output size with no padding at all, per axis.
        let full: Vec<i128> = (0..2)
            .map(|i| {
                stride[i] as i128 * (input[i] as i128 - 1)
                    + output_padding[i] as i128
                    + (kernel[i] as i128 - 1) * dilation[i] as i128
                    + 1
            })
            .collect();
        let wanted: Option<[i128; 2]> = match cx.ints("output_shape")? {
            Some(s) if s.len() >= 2 => Some([s[s.len() - 2] as i128, s[s.len() - 1] as i128]),
            Some(s) => return Err(cx.shape_err(format!("output_shape {s:?} has fewer than two entries"))),
            None if auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER" => {
                Some([input[0] as i128 * stride[0] as i128, input[1] as i128 * stride[1] as i128])
            }
            None => None,
        };
        let mut pads = [0usize; 4];
        match (wanted, auto_pad.as_str()) {
            (Some(out), _) => {
                for i in 0..2 {
                    let total = full[i] - out[i];
                    if total < 0 || total > MAX_ATTR as i128 {
                        return Err(cx.unsupported(format!(
                            "its output_shape {:?} needs padding {total} on axis {}; vrseg supports output shapes \
                             the kernel reaches with non-negative pads",
                            out,
                            i + 2
                        )));
                    }
                    let (small, large) = ((total / 2) as usize, (total - total / 2) as usize);
                    (pads[i], pads[i + 2]) = if auto_pad == "SAME_UPPER" { (small, large) } else { (large, small) };
                }
            }
            (None, "NOTSET") => {
                if let Some(p) = cx.ints("pads")? {
                    pads = four_pads(cx, &p)?;
                }
            }
            (None, "VALID") => {}
            (None, other) => return Err(cx.unsupported(format!("auto_pad {other:?} is not one ONNX defines"))),
        }
        let mut out = [0usize; 2];
        for i in 0..2 {
            let o = full[i] - pads[i] as i128 - pads[i + 2] as i128;
            out[i] = usize::try_from(o)
                .ok()
                .filter(|&o| o > 0)
                .ok_or_else(|| cx.shape_err(format!("pads {pads:?} leave no output on axis {}", i + 2)))?;
        }
        let op = ir::ConvTranspose { kernel, stride, dilation, pads, output_padding, group };
        Ok(emit(Op::ConvTranspose(op), ids, vec![n, ws[1].saturating_mul(group), out[0], out[1]]))
    }

    fn max_pool(&mut self, cx: &Cx, ins: &[Option<ValueId>]) -> Result<Outcome, BuildError> {
        let x = self.input(cx, ins, 0)?;
        let [n, c, h, w] = self.nchw(cx, x)?;
        let kernel = match cx.ints("kernel_shape")? {
            Some(k) if k.len() == 2 => [cx.small("kernel_shape", k[0], 1)?, cx.small("kernel_shape", k[1], 1)?],
            _ => return Err(cx.damaged("lacks a two-entry kernel_shape")),
        };
        let stride = cx.pair("strides", 1, 1)?;
        if cx.pair("dilations", 1, 1)? != [1, 1] {
            return Err(cx.unsupported("only dilation 1 is supported for MaxPool"));
        }
        if cx.int_or("storage_order", 0)? != 0 {
            return Err(cx.unsupported("only storage_order 0 (row-major) is supported for MaxPool"));
        }
        let ceil = cx.int_or("ceil_mode", 0)? != 0;
        let (pads, [oh, ow]) = window(cx, [h, w], kernel, stride, [1, 1], ceil)?;
        Ok(emit(Op::MaxPool(ir::MaxPool { kernel, stride, pads }), vec![x], vec![n, c, oh, ow]))
    }

    /// ONNX Resize, nearest, by whole factors. Accepted when the source pixel
    /// of output x is floor(x / s) for every integer scale s, which holds for:
    /// asymmetric + floor (what nn.Upsample(scale_factor=2) exports:
    /// x / s = q + r/s with 0 <= r/s < 1); half_pixel or pytorch_half_pixel +
    /// either round mode ((x + 0.5) / s - 0.5 lies strictly within 0.5 of q);
    /// tf_half_pixel_for_nn + floor ((x + 0.5) / s lies strictly between q
    /// and q + 1). Axes of scale 1 read pixel x under every mode.
    fn resize(&mut self, cx: &Cx, ins: &[Option<ValueId>]) -> Result<Outcome, BuildError> {
        let x = self.input(cx, ins, 0)?;
        self.check_f32(cx, x)?;
        let shape = self.shape(x).to_vec();
        let rank = shape.len();
        let mode = cx.string_or("mode", "nearest")?;
        let ctm = cx.string_or("coordinate_transformation_mode", "half_pixel")?;
        let nearest = cx.string_or("nearest_mode", "round_prefer_floor")?;
        let axes: Vec<usize> = match cx.ints("axes")? {
            Some(a) => a.iter().map(|&a| cx.axis(a, rank)).collect::<Result<_, _>>()?,
            None => (0..rank).collect(),
        };
        let mut scales = vec![1usize; rank];
        let given = match self.const_input(cx, ins, 2, "scales")? {
            Some(Const { data: TensorData::F32(v), .. }) if !v.is_empty() => Some(v),
            Some(Const { data: TensorData::I64(_), .. }) => return Err(cx.damaged("has int64 scales")),
            _ => None,
        };
        if let Some(v) = given {
            if v.len() != axes.len() {
                return Err(cx.shape_err(format!("scales {v:?} do not give one entry per axis of {shape:?}")));
            }
            for (&a, &s) in axes.iter().zip(&v) {
                if !(s >= 1.0 && s.fract() == 0.0 && s <= MAX_ATTR as f32) {
                    return Err(cx.unsupported(format!(
                        "its scale {s} on axis {a} is not a whole number of at least 1; vrseg's Resize upsamples \
                         by whole factors only"
                    )));
                }
                scales[a] = s as usize;
            }
        } else if let Some(sizes) = self.const_ints(cx, ins, 3, "sizes")? {
            if sizes.len() != axes.len() {
                return Err(cx.shape_err(format!("sizes {sizes:?} do not give one entry per axis of {shape:?}")));
            }
            let policy = cx.string_or("keep_aspect_ratio_policy", "stretch")?;
            if policy != "stretch" {
                return Err(
                    cx.unsupported(format!("keep_aspect_ratio_policy {policy:?}: only \"stretch\" is supported"))
                );
            }
            for (&a, &s) in axes.iter().zip(&sizes) {
                let d = shape[a] as i64;
                if d == 0 || s < d || s % d != 0 {
                    return Err(cx.unsupported(format!(
                        "its size {s} on axis {a} is not a whole multiple of the input's {d}; vrseg's Resize \
                         upsamples by whole factors only"
                    )));
                }
                scales[a] = (s / d) as usize;
            }
        } else {
            return Err(cx.damaged("has neither scales nor sizes"));
        }
        if mode != "nearest" {
            return Err(cx.unsupported(format!(
                "mode {mode:?}: only nearest-neighbour Resize is supported (nn.Upsample(mode=\"nearest\"))"
            )));
        }
        let floor_exact = matches!(
            (ctm.as_str(), nearest.as_str()),
            ("asymmetric", "floor")
                | ("half_pixel" | "pytorch_half_pixel", "round_prefer_floor" | "round_prefer_ceil")
                | ("tf_half_pixel_for_nn", "floor")
        );
        if !floor_exact && scales.iter().any(|&s| s != 1) {
            return Err(cx.unsupported(format!(
                "coordinate_transformation_mode {ctm:?} with nearest_mode {nearest:?} does not read pixel \
                 floor(x / scale); vrseg supports what nn.Upsample(scale_factor=2, mode=\"nearest\") exports \
                 (asymmetric with floor) and the modes equal to it"
            )));
        }
        let mut out = Vec::with_capacity(rank);
        for (d, s) in shape.iter().zip(&scales) {
            out.push(d.checked_mul(*s).ok_or_else(|| cx.shape_err("the output size overflows"))?);
        }
        if scales.iter().all(|&s| s == 1) {
            return Ok(Outcome::Alias(x));
        }
        Ok(emit(Op::ResizeNearest { scales }, vec![x], out))
    }

    // ---- graph outputs ----

    /// Binds the graph outputs in order. A value reached through an alias
    /// (an Identity before the output) takes the output's name; one that is
    /// already an input, a constant or another output gets a copy (a Reshape
    /// to its own shape) under the output's name.
    fn outputs(&mut self, outputs: &[onnx::ValueInfoProto]) -> Result<(), BuildError> {
        use onnx::tensor_shape_proto::dimension::Value as Dim;
        let mut taken: HashSet<ValueId> = HashSet::new();
        for info in outputs {
            let name = info.name.as_deref().unwrap_or("");
            let &id = self.names.get(name).ok_or_else(|| {
                damaged(self.path, format!("graph output {name:?} is written by no node; export the model again"))
            })?;
            let mut id = id;
            if self.value(id).name != name {
                let inputs: HashSet<ValueId> = self.graph.inputs.iter().copied().collect();
                let own = !inputs.contains(&id) && self.value(id).constant.is_none() && !taken.contains(&id);
                if own {
                    self.graph.values[id].name = name.to_string();
                } else {
                    let shape = self.shape(id).to_vec();
                    let dtype = self.value(id).dtype;
                    let v = Value { name: name.to_string(), shape: shape.clone(), dtype, constant: None };
                    let copy = self.graph.add_value(v);
                    self.leading.push(false);
                    self.graph.nodes.push(Node {
                        name: format!("copy to output {name}"),
                        op: Op::Reshape { shape },
                        inputs: vec![id],
                        outputs: vec![copy],
                    });
                    id = copy;
                }
            }
            taken.insert(id);
            // The declared shape, where static, must be the inferred one (axis
            // 0 excepted when the batch was chosen at import).
            if let Some(dims) = info.tensor_type().and_then(|t| t.shape.as_ref()).map(|s| &s.dim) {
                let inferred = self.shape(id).to_vec();
                let skip_batch = self.options.batch.is_some();
                let ok = dims.len() == inferred.len()
                    && dims.iter().zip(&inferred).enumerate().all(|(axis, (d, &got))| match d.value {
                        Some(Dim::DimValue(v)) if v > 0 && !(axis == 0 && skip_batch) => v as u64 == got as u64,
                        _ => true,
                    });
                if !ok {
                    let declared: Vec<String> = dims
                        .iter()
                        .map(|d| match &d.value {
                            Some(Dim::DimValue(v)) => v.to_string(),
                            Some(Dim::DimParam(p)) => p.clone(),
                            None => "?".into(),
                        })
                        .collect();
                    return Err(BuildError::Shape {
                        op_type: "graph output".into(),
                        node: name.to_string(),
                        reason: format!(
                            "the model declares shape [{}] but vrseg infers {inferred:?}; export the model again, \
                             and if this persists report it as a vrseg bug with the model",
                            declared.join(", ")
                        ),
                    });
                }
            }
            self.graph.outputs.push(id);
        }
        Ok(())
    }
}

/// Pads as ONNX orders them ([x1_begin, x2_begin, x1_end, x2_end] = [top,
/// left, bottom, right]).
fn four_pads(cx: &Cx, p: &[i64]) -> Result<[usize; 4], BuildError> {
    if p.len() != 4 {
        return Err(cx.unsupported(format!("pads {p:?} are not four entries: only 2-D (NCHW) is supported")));
    }
    Ok([cx.small("pad", p[0], 0)?, cx.small("pad", p[1], 0)?, cx.small("pad", p[2], 0)?, cx.small("pad", p[3], 0)?])
}

/// Pads and output size of a sliding window (Conv, MaxPool) per ONNX:
/// explicit pads (NOTSET), none (VALID), or SAME_UPPER/SAME_LOWER, which pad
/// so that out = ceil(in / stride), the odd pixel at the end (UPPER) or the
/// start (LOWER). `ceil` (MaxPool's ceil_mode) is accepted only where it
/// gives the same size as floor, since vrseg's MaxPool rounds down.
fn window(
    cx: &Cx,
    input: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    ceil: bool,
) -> Result<([usize; 4], [usize; 2]), BuildError> {
    let auto_pad = cx.string_or("auto_pad", "NOTSET")?;
    // The pixels one window spans.
    let reach = |i: usize| (kernel[i] as u128 - 1) * dilation[i] as u128 + 1;
    let mut pads = [0usize; 4];
    match auto_pad.as_str() {
        "NOTSET" => {
            if let Some(p) = cx.ints("pads")? {
                pads = four_pads(cx, &p)?;
            }
        }
        "VALID" => {}
        "SAME_UPPER" | "SAME_LOWER" => {
            for i in 0..2 {
                let out = (input[i] as u128).div_ceil(stride[i] as u128).max(1);
                let total = ((out - 1) * stride[i] as u128 + reach(i)).saturating_sub(input[i] as u128);
                let total = usize::try_from(total)
                    .ok()
                    .filter(|&t| t <= MAX_ATTR as usize)
                    .ok_or_else(|| cx.shape_err(format!("SAME padding of axis {} would be {total} pixels", i + 2)))?;
                let (small, large) = (total / 2, total - total / 2);
                (pads[i], pads[i + 2]) = if auto_pad == "SAME_UPPER" { (small, large) } else { (large, small) };
            }
        }
        other => return Err(cx.unsupported(format!("auto_pad {other:?} is not one ONNX defines"))),
    }
    let mut out = [0usize; 2];
    for i in 0..2 {
        // All terms are below 2^41 (dims) or 2^62 (kernel x dilation): no overflow in u128.
        let padded = input[i] as u128 + pads[i] as u128 + pads[i + 2] as u128;
        if padded < reach(i) {
            return Err(cx.shape_err(format!(
                "the kernel reaches {} pixels on axis {}, more than the padded input's {padded}",
                reach(i),
                i + 2
            )));
        }
        let span = padded - reach(i);
        out[i] = usize::try_from(span / stride[i] as u128 + 1).unwrap_or(usize::MAX);
        if ceil && span % stride[i] as u128 != 0 {
            return Err(cx.unsupported(format!(
                "ceil_mode 1 gives a larger output than floor here (axis {}); vrseg's MaxPool rounds down: export \
                 with ceil_mode=False",
                i + 2
            )));
        }
    }
    Ok((pads, out))
}

#[cfg(test)]
mod tests;

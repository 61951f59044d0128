//! The CPU reference executor: runs a build-time [`Graph`] on f32 data exactly
//! as ONNX (opset 17) defines each op, slowly but plainly. It is the ground
//! truth every fusion pass and the GPU engine are checked against, so it
//! trusts nothing in the graph: every node's input shapes are checked against
//! its op and its declared output shapes before it computes.
//!
//! Values live only as long as something reads them: a computed value is
//! freed after its last consumer (YOLO-seg at 640x640 has activations of tens
//! of megabytes), and inputs and constants are borrowed, never copied.
//! [`run_all`] keeps everything, for finding the first node where two graphs
//! (or the reference and the GPU) part ways.
//!
//! Layout of the module, one file per op family: `conv` (Conv, ConvTranspose,
//! MaxPool), `gemm` (the one matrix kernel under Conv, ConvTranspose and
//! MatMul, plus the thread pool), `layout` (Concat, Split, Slice, Reshape,
//! Transpose, Resize), `elementwise` (the broadcasting binaries, Sigmoid,
//! Softmax), `matmul`.
//!
//! Determinism: every output element is summed in one fixed order whatever
//! the thread count, so two runs give bit-identical results.
//!
//! Speed (2 cores, YOLO11n-seg-shaped graph of 4.9 G multiply-adds at
//! 640x640, see `tests/yolo_like.rs`): ~0.5 s in release, ~7 s in the
//! unoptimised test profile; at 320x320 0.17 s and ~1.3 s.

mod conv;
mod elementwise;
mod gemm;
mod layout;
mod matmul;
#[cfg(test)]
mod tests;

use std::borrow::Cow;

use crate::engine::build::ir::{DType, Graph, Node, Op, TensorData};

/// What can go wrong running a graph. Node errors name the node and its ONNX
/// op type, so a message points straight at the model.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("the graph has {expected} inputs ({names}), but {got} were given")]
    InputCount { expected: usize, got: usize, names: String },
    #[error("input {name:?} has {got} elements, but its shape {shape:?} needs {expected}")]
    InputLength { name: String, shape: Vec<usize>, expected: usize, got: usize },
    #[error("input {name:?} is {dtype:?}; the reference executor computes on f32 only")]
    InputType { name: String, dtype: DType },
    #[error("constant {name:?} holds {got} elements, but its shape {shape:?} needs {expected}")]
    ConstantLength { name: String, shape: Vec<usize>, expected: usize, got: usize },
    #[error("node {node:?} ({op}): {reason}")]
    Node { node: String, op: &'static str, reason: String },
    #[error("{place} refers to value #{id}, but the graph has only {count} values")]
    UnknownValue { place: String, id: usize, count: usize },
    #[error("graph output {name:?} is never computed (no node writes it and it is no input or f32 constant)")]
    OutputMissing { name: String },
}

/// Runs `graph` on `inputs` (one slice per `graph.inputs`, in that order,
/// row-major in the value's shape) and returns the outputs in `graph.outputs`
/// order.
pub fn run(graph: &Graph, inputs: &[&[f32]]) -> Result<Vec<Vec<f32>>, ReferenceError> {
    let values = execute(graph, inputs, Keep::Outputs)?.values;
    graph
        .outputs
        .iter()
        .map(|&v| match &values[v] {
            Some(data) => Ok(data.to_vec()),
            None => Err(ReferenceError::OutputMissing { name: graph.value(v).name.clone() }),
        })
        .collect()
}

/// Like [`run`], but keeps every value: the result is indexed by value id
/// ([`ValueId`](crate::engine::build::ir::ValueId)) and holds the data of
/// every input, f32 constant and computed value (`None` for i64 constants
/// and for values no node writes). For debugging: compare two graphs' values
/// in node order to find the first that differs.
pub fn run_all(graph: &Graph, inputs: &[&[f32]]) -> Result<Vec<Option<Vec<f32>>>, ReferenceError> {
    let values = execute(graph, inputs, Keep::All)?.values;
    Ok(values.into_iter().map(|v| v.map(Cow::into_owned)).collect())
}

/// A tensor an op reads: data with its static shape from the graph.
#[derive(Debug, Clone, Copy)]
struct Tensor<'a> {
    data: &'a [f32],
    shape: &'a [usize],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// Free each computed value after its last consumer.
    Outputs,
    All,
}

struct Execution<'g> {
    /// By value id; inputs and constants are borrowed.
    values: Vec<Option<Cow<'g, [f32]>>>,
    /// The most f32 elements held in computed values at once (tests check
    /// that freeing works).
    #[cfg_attr(not(test), allow(dead_code))]
    peak_owned: usize,
}

/// Checks that every value id the graph mentions exists, so that the rest
/// can index without panicking on a malformed graph.
fn check_value_ids(graph: &Graph) -> Result<(), ReferenceError> {
    let count = graph.values.len();
    let unknown = |place: String, id: usize| ReferenceError::UnknownValue { place, id, count };
    for (i, &id) in graph.inputs.iter().enumerate() {
        if id >= count {
            return Err(unknown(format!("graph input {i}"), id));
        }
    }
    for (i, &id) in graph.outputs.iter().enumerate() {
        if id >= count {
            return Err(unknown(format!("graph output {i}"), id));
        }
    }
    for node in &graph.nodes {
        if let Some(&id) = node.inputs.iter().chain(&node.outputs).find(|&&id| id >= count) {
            return Err(unknown(format!("node {:?} ({})", node.name, node.op.onnx_type()), id));
        }
    }
    Ok(())
}

fn execute<'g>(graph: &'g Graph, inputs: &[&'g [f32]], keep: Keep) -> Result<Execution<'g>, ReferenceError> {
    check_value_ids(graph)?;
    if inputs.len() != graph.inputs.len() {
        let names: Vec<&str> = graph.inputs.iter().map(|&v| graph.value(v).name.as_str()).collect();
        return Err(ReferenceError::InputCount {
            expected: graph.inputs.len(),
            got: inputs.len(),
            names: names.join(", "),
        });
    }
    let mut values: Vec<Option<Cow<'g, [f32]>>> = vec![None; graph.values.len()];
    for (value, slot) in graph.values.iter().zip(values.iter_mut()) {
        if let Some(data) = &value.constant {
            if data.len() != value.elements() {
                return Err(ReferenceError::ConstantLength {
                    name: value.name.clone(),
                    shape: value.shape.clone(),
                    expected: value.elements(),
                    got: data.len(),
                });
            }
            // i64 constants stay None: the node that reads one reports it.
            if let TensorData::F32(data) = data {
                *slot = Some(Cow::Borrowed(data.as_slice()));
            }
        }
    }
    for (&id, &data) in graph.inputs.iter().zip(inputs) {
        let value = graph.value(id);
        if value.dtype != DType::F32 {
            return Err(ReferenceError::InputType { name: value.name.clone(), dtype: value.dtype });
        }
        if data.len() != value.elements() {
            return Err(ReferenceError::InputLength {
                name: value.name.clone(),
                shape: value.shape.clone(),
                expected: value.elements(),
                got: data.len(),
            });
        }
        values[id] = Some(Cow::Borrowed(data));
    }

    // The index of the last node reading each value; graph outputs are read
    // "after the end" so they are never freed.
    let mut last_use: Vec<Option<usize>> = vec![None; graph.values.len()];
    for (n, node) in graph.nodes.iter().enumerate() {
        for &v in &node.inputs {
            last_use[v] = Some(n);
        }
    }
    for &v in &graph.outputs {
        last_use[v] = Some(usize::MAX);
    }

    let (mut owned, mut peak_owned) = (0usize, 0usize);
    for (n, node) in graph.nodes.iter().enumerate() {
        let node_error =
            |reason: String| ReferenceError::Node { node: node.name.clone(), op: node.op.onnx_type(), reason };
        let mut args = Vec::with_capacity(node.inputs.len());
        for &v in &node.inputs {
            let value = graph.value(v);
            let data = values[v].as_deref().ok_or_else(|| {
                node_error(match &value.constant {
                    Some(TensorData::I64(_)) => {
                        format!("input {:?} is an i64 constant; import must fold it into an attribute", value.name)
                    }
                    _ => format!("reads {:?} before any node writes it (nodes out of order?)", value.name),
                })
            })?;
            args.push(Tensor { data, shape: &value.shape });
        }
        let mut out_shapes = Vec::with_capacity(node.outputs.len());
        for &v in &node.outputs {
            let value = graph.value(v);
            if value.dtype != DType::F32 {
                return Err(node_error(format!(
                    "output {:?} is declared {:?}; ops compute f32",
                    value.name, value.dtype
                )));
            }
            if values[v].is_some() || value.constant.is_some() {
                return Err(node_error(format!(
                    "writes {:?}, which already holds data (an input, a constant, or another node's output)",
                    value.name
                )));
            }
            out_shapes.push(value.shape.as_slice());
        }

        let results = eval(node, &args, &out_shapes).map_err(node_error)?;
        // Every op checks its shapes before computing, so a length mismatch
        // here is a bug in the op, not in the graph; report it all the same.
        for ((&v, data), shape) in node.outputs.iter().zip(results).zip(&out_shapes) {
            let expected: usize = shape.iter().product();
            if data.len() != expected {
                return Err(node_error(format!(
                    "computed {} elements for {:?} {shape:?}, which needs {expected} (reference executor bug)",
                    data.len(),
                    graph.value(v).name
                )));
            }
            owned += data.len();
            values[v] = Some(Cow::Owned(data));
        }
        peak_owned = peak_owned.max(owned);

        if keep == Keep::Outputs {
            // Inputs read for the last time, and outputs nobody reads (Split
            // pieces a graph ignores).
            for &v in node.inputs.iter().chain(&node.outputs) {
                // Borrowed inputs and constants cost nothing to keep.
                if last_use[v].is_none_or(|last| last == n) && matches!(values[v], Some(Cow::Owned(_))) {
                    owned -= values[v].take().map_or(0, |data| data.len());
                }
            }
        }
    }
    Ok(Execution { values, peak_owned })
}

/// Runs one node; errors are reasons, which the caller wraps with the node.
fn eval(node: &Node, ins: &[Tensor], outs: &[&[usize]]) -> Result<Vec<Vec<f32>>, String> {
    let expected_outputs = match &node.op {
        Op::Split { sizes, .. } => sizes.len(),
        _ => 1,
    };
    if outs.len() != expected_outputs {
        return Err(format!("has {} outputs, expected {expected_outputs}", outs.len()));
    }
    let single = |data: Result<Vec<f32>, String>| data.map(|d| vec![d]);
    match &node.op {
        Op::Conv(p) => single(conv::conv(p, ins, outs[0])),
        Op::ConvTranspose(p) => single(conv::conv_transpose(p, ins, outs[0])),
        Op::MaxPool(p) => single(conv::max_pool(p, ins, outs[0])),
        Op::ResizeNearest { scales } => single(layout::resize_nearest(scales, ins, outs[0])),
        Op::Concat { axis } => single(layout::concat(*axis, ins, outs[0])),
        Op::Split { axis, sizes } => layout::split(*axis, sizes, ins, outs),
        Op::Slice { axes, starts, ends, steps } => single(layout::slice(axes, starts, ends, steps, ins, outs[0])),
        Op::Reshape { shape } => single(layout::reshape(shape, ins, outs[0])),
        Op::Transpose { perm } => single(layout::transpose(perm, ins, outs[0])),
        Op::MatMul => single(matmul::matmul(ins, outs[0])),
        Op::Add => single(elementwise::binary(ins, outs[0], |a, b| a + b)),
        Op::Sub => single(elementwise::binary(ins, outs[0], |a, b| a - b)),
        Op::Mul => single(elementwise::binary(ins, outs[0], |a, b| a * b)),
        Op::Div => single(elementwise::binary(ins, outs[0], |a, b| a / b)),
        Op::Sigmoid => single(elementwise::sigmoid_op(ins, outs[0])),
        Op::Softmax { axis } => single(elementwise::softmax(*axis, ins, outs[0])),
    }
}

/// Checks the number of inputs an op got.
fn expect_inputs(ins: &[Tensor], allowed: std::ops::RangeInclusive<usize>) -> Result<(), String> {
    if allowed.contains(&ins.len()) {
        Ok(())
    } else if allowed.start() == allowed.end() {
        Err(format!("has {} inputs, expected {}", ins.len(), allowed.start()))
    } else {
        Err(format!("has {} inputs, expected {} to {}", ins.len(), allowed.start(), allowed.end()))
    }
}

/// Checks that the graph declares the output shape the op computes.
fn expect_output(declared: &[usize], computed: &[usize]) -> Result<(), String> {
    if declared == computed {
        Ok(())
    } else {
        Err(format!("output is declared {declared:?}, but the inputs give {computed:?}"))
    }
}

/// Checks a tensor's rank, naming it.
fn expect_rank(what: &str, t: &Tensor, rank: usize) -> Result<(), String> {
    if t.shape.len() == rank {
        Ok(())
    } else {
        Err(format!("{what} has shape {:?}, expected rank {rank}", t.shape))
    }
}

/// Row-major strides of `shape`, in elements.
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Calls `f(offset)` for every row of `shape` (all axes but the last) in
/// row-major order, where `offset` is `sum(index[i] * strides[i])` over
/// those axes. The ops that move data run their innermost axis as a plain
/// loop and use this for the rest; a rank-0 or rank-1 shape has one row.
fn for_each_row(shape: &[usize], strides: &[usize], mut f: impl FnMut(usize)) {
    let outer = &shape[..shape.len().saturating_sub(1)];
    if outer.contains(&0) || shape.last() == Some(&0) {
        return;
    }
    let mut index = vec![0usize; outer.len()];
    let mut offset = 0usize;
    loop {
        f(offset);
        // Odometer: bump the last outer axis, carrying into earlier ones.
        let mut axis = outer.len();
        loop {
            if axis == 0 {
                return;
            }
            axis -= 1;
            index[axis] += 1;
            offset += strides[axis];
            if index[axis] < outer[axis] {
                break;
            }
            offset -= strides[axis] * outer[axis];
            index[axis] = 0;
        }
    }
}

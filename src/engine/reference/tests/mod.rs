//! Tests of the reference executor against ONNX semantics: per op, a naive
//! formula written straight from the ONNX operator spec (nested loops, f64
//! sums where the op sums) on random inputs of awkward sizes, plus the fixed
//! examples from the ONNX operator docs; graph-level behaviour (errors,
//! freeing, `run_all`); and a YOLO11n-seg-shaped graph end to end.
//!
//! Tolerances: ops that only move or pick data (Concat, Split, Slice,
//! Reshape, Transpose, Resize, MaxPool) and single f32 operations (Add, Sub,
//! Mul, Div) must match exactly. Sums (Conv, ConvTranspose, MatMul) are
//! compared with an f64 naive sum: |got - want| <= 1e-5 * sum(|terms|) +
//! 1e-6, i.e. relative to the magnitude of what was added, which stays
//! meaningful under cancellation. Transcendentals (Sigmoid, Softmax, SiLU):
//! 1e-6 relative (+1e-30 absolute for results near f32's subnormals).

mod graph;
mod ops;
mod yolo_like;

use crate::engine::build::ir::{DType, Graph, Node, Op, TensorData, Value, ValueId};
use crate::selftest::SplitMix64;

/// Builds small graphs for tests: values named in creation order.
#[derive(Default)]
pub(super) struct Builder {
    pub graph: Graph,
}

impl Builder {
    fn value(&mut self, prefix: &str, shape: &[usize], constant: Option<TensorData>) -> ValueId {
        let name = format!("{prefix}{}", self.graph.values.len());
        let dtype = constant.as_ref().map_or(DType::F32, TensorData::dtype);
        self.graph.add_value(Value { name, shape: shape.to_vec(), dtype, constant })
    }

    pub fn input(&mut self, shape: &[usize]) -> ValueId {
        let id = self.value("input", shape, None);
        self.graph.inputs.push(id);
        id
    }

    pub fn constant(&mut self, shape: &[usize], data: Vec<f32>) -> ValueId {
        self.value("const", shape, Some(TensorData::F32(data)))
    }

    /// A node writing new values of `out_shapes`.
    pub fn node(&mut self, op: Op, inputs: &[ValueId], out_shapes: &[&[usize]]) -> Vec<ValueId> {
        let outputs: Vec<ValueId> = out_shapes.iter().map(|s| self.value("v", s, None)).collect();
        let name = format!("{}_{}", op.onnx_type().to_lowercase(), self.graph.nodes.len());
        self.graph.nodes.push(Node { name, op, inputs: inputs.to_vec(), outputs: outputs.clone() });
        outputs
    }

    pub fn node1(&mut self, op: Op, inputs: &[ValueId], out_shape: &[usize]) -> ValueId {
        self.node(op, inputs, &[out_shape])[0]
    }

    pub fn shape(&self, v: ValueId) -> Vec<usize> {
        self.graph.value(v).shape.clone()
    }

    pub fn output(&mut self, v: ValueId) {
        self.graph.outputs.push(v);
    }
}

/// Runs one op whose inputs are all graph inputs; returns its outputs.
pub(super) fn run_op(op: Op, inputs: &[(&[usize], &[f32])], out_shapes: &[&[usize]]) -> Vec<Vec<f32>> {
    try_run_op(op, inputs, out_shapes).unwrap_or_else(|e| panic!("{e}"))
}

pub(super) fn try_run_op(
    op: Op,
    inputs: &[(&[usize], &[f32])],
    out_shapes: &[&[usize]],
) -> Result<Vec<Vec<f32>>, super::ReferenceError> {
    let mut b = Builder::default();
    let ids: Vec<ValueId> = inputs.iter().map(|(shape, _)| b.input(shape)).collect();
    for v in b.node(op, &ids, out_shapes) {
        b.output(v);
    }
    let data: Vec<&[f32]> = inputs.iter().map(|(_, d)| *d).collect();
    super::run(&b.graph, &data)
}

/// Uniform values in [-1, 1).
pub(super) fn random(rng: &mut SplitMix64, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.uniform_f32(-1.0, 1.0)).collect()
}

/// Row-major offset of `index` in `shape`.
pub(super) fn offset(shape: &[usize], index: &[usize]) -> usize {
    assert_eq!(shape.len(), index.len());
    index.iter().zip(shape).fold(0, |acc, (&i, &d)| {
        assert!(i < d, "index {index:?} outside {shape:?}");
        acc * d + i
    })
}

/// The multi-index of row-major position `flat` in `shape`.
pub(super) fn unravel(shape: &[usize], mut flat: usize) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for (i, &d) in shape.iter().enumerate().rev() {
        index[i] = flat % d;
        flat /= d;
    }
    index
}

/// Sums: |got - want| <= 1e-5 * scale + 1e-6, scale = sum of |terms|.
pub(super) fn assert_sums_close(what: &str, got: &[f32], want: &[f64], scale: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, ((&g, &w), &s)) in got.iter().zip(want).zip(scale).enumerate() {
        let tol = 1e-5 * s + 1e-6;
        assert!((g as f64 - w).abs() <= tol, "{what}: element {i}: got {g}, expected {w} (tolerance {tol:e})");
    }
}

/// Transcendentals: 1e-6 relative, 1e-30 absolute.
pub(super) fn assert_relative(what: &str, got: &[f32], want: &[f64]) {
    assert_relative_within(what, got, want, 1e-6);
}

pub(super) fn assert_relative_within(what: &str, got: &[f32], want: &[f64], relative: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tol = relative * w.abs() + 1e-30;
        assert!((g as f64 - w).abs() <= tol, "{what}: element {i}: got {g:e}, expected {w:e}");
    }
}

/// Data movement: bit-exact (NaN-free inputs, so `==` is enough).
pub(super) fn assert_exact(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = got.iter().zip(want).position(|(g, w)| g.to_bits() != w.to_bits()) {
        panic!("{what}: element {i}: got {}, expected {}", got[i], want[i]);
    }
}

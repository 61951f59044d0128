//! Whole-graph behaviour: inputs and outputs, `run_all`, freeing, errors.

use super::*;
use crate::engine::build::ir::{Activation, Conv};
use crate::engine::reference::{execute, run, run_all, Keep, ReferenceError};

/// input -> Sigmoid -> ... (`len` times) -> output.
fn sigmoid_chain(len: usize, width: usize) -> Graph {
    let mut b = Builder::default();
    let mut v = b.input(&[width]);
    for _ in 0..len {
        v = b.node1(Op::Sigmoid, &[v], &[width]);
    }
    b.output(v);
    b.graph
}

#[test]
fn values_are_freed_after_their_last_reader() {
    let graph = sigmoid_chain(8, 1000);
    let x = vec![0.5f32; 1000];
    // At most the value being read and the one being written.
    assert_eq!(execute(&graph, &[&x], Keep::Outputs).unwrap().peak_owned, 2000);
    assert_eq!(execute(&graph, &[&x], Keep::All).unwrap().peak_owned, 8000);
}

#[test]
fn run_all_keeps_every_value_and_agrees_with_run() {
    let mut b = Builder::default();
    let x = b.input(&[2, 3]);
    let c = b.constant(&[3], vec![1.0, 2.0, 3.0]);
    let i64_constant = b.graph.add_value(Value {
        name: "unused_i64".into(),
        shape: vec![1],
        dtype: DType::I64,
        constant: Some(TensorData::I64(vec![7])),
    });
    let sum = b.node1(Op::Add, &[x, c], &[2, 3]);
    let parts = b.node(Op::Split { axis: 1, sizes: vec![1, 2] }, &[sum], &[&[2, 1], &[2, 2]]);
    let y = b.node1(Op::Sigmoid, &[parts[1]], &[2, 2]);
    b.output(y);
    b.output(x); // an input may be an output too
    b.output(y); // and an output may repeat
    let data = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0];

    let outputs = run(&b.graph, &[&data]).unwrap();
    assert_eq!(outputs.len(), 3);
    assert_eq!(outputs[1], data);
    assert_eq!(outputs[0], outputs[2]);
    let all = run_all(&b.graph, &[&data]).unwrap();
    assert_eq!(all.len(), b.graph.values.len());
    assert_eq!(all[x].as_deref(), Some(&data[..]));
    assert_eq!(all[c].as_deref(), Some(&[1.0, 2.0, 3.0][..]));
    assert_eq!(all[i64_constant], None);
    assert_eq!(all[sum].as_deref(), Some(&[1.0, 3.0, 5.0, 4.0, 6.0, 8.0][..]));
    assert_eq!(all[parts[0]].as_deref(), Some(&[1.0, 4.0][..]), "unread Split pieces are kept by run_all");
    assert_eq!(all[y].as_deref(), Some(&outputs[0][..]));
}

#[test]
fn inputs_are_checked() {
    let graph = sigmoid_chain(1, 4);
    let err = run(&graph, &[]).unwrap_err();
    assert!(matches!(err, ReferenceError::InputCount { expected: 1, got: 0, .. }), "{err}");
    assert!(err.to_string().contains("input0"), "{err}");
    let err = run(&graph, &[&[1.0, 2.0, 3.0]]).unwrap_err();
    assert!(matches!(err, ReferenceError::InputLength { expected: 4, got: 3, .. }), "{err}");
    assert!(err.to_string().contains("\"input0\""), "{err}");
}

#[test]
fn node_errors_name_the_node() {
    // An i64 constant reaching a float op.
    let mut b = Builder::default();
    let x = b.input(&[2]);
    let idx = b.graph.add_value(Value {
        name: "indices".into(),
        shape: vec![2],
        dtype: DType::I64,
        constant: Some(TensorData::I64(vec![0, 1])),
    });
    let y = b.node1(Op::Add, &[x, idx], &[2]);
    b.output(y);
    let err = run(&b.graph, &[&[1.0, 2.0]]).unwrap_err().to_string();
    assert!(
        err.contains("add_0") && err.contains("(Add)") && err.contains("\"indices\"") && err.contains("i64"),
        "{err}"
    );

    // A declared output shape that disagrees with the op.
    let err = try_run_op(Op::Add, &[(&[2, 3], &[0.0; 6]), (&[3], &[0.0; 3])], &[&[3, 2]]).unwrap_err().to_string();
    assert!(err.contains("add_0") && err.contains("[3, 2]") && err.contains("[2, 3]"), "{err}");

    // Shapes that do not broadcast.
    let err = try_run_op(Op::Mul, &[(&[2, 3], &[0.0; 6]), (&[2], &[0.0; 2])], &[&[2, 3]]).unwrap_err().to_string();
    assert!(err.contains("mul_0") && err.contains("do not broadcast"), "{err}");

    // A conv whose weight does not fit its groups.
    let p = Conv {
        kernel: [3, 3],
        stride: [1, 1],
        dilation: [1, 1],
        pads: [1; 4],
        group: 2,
        activation: Activation::None,
        residual: false,
    };
    let err = try_run_op(Op::Conv(p), &[(&[1, 4, 5, 5], &[0.0; 100]), (&[3, 4, 3, 3], &[0.0; 108])], &[&[1, 3, 5, 5]])
        .unwrap_err()
        .to_string();
    assert!(err.contains("conv_0") && err.contains("(Conv)") && err.contains("group 2"), "{err}");

    // A MatMul with mismatched inner dimensions.
    let err =
        try_run_op(Op::MatMul, &[(&[2, 3], &[0.0; 6]), (&[4, 2], &[0.0; 8])], &[&[2, 2]]).unwrap_err().to_string();
    assert!(err.contains("matmul_0") && err.contains("inner dimensions"), "{err}");
}

#[test]
fn graph_errors_are_reported() {
    // Nodes out of order: the first reads what the second writes.
    let mut b = Builder::default();
    let x = b.input(&[2]);
    let y = b.node1(Op::Sigmoid, &[x], &[2]);
    let z = b.node1(Op::Sigmoid, &[y], &[2]);
    b.output(z);
    b.graph.nodes.swap(0, 1);
    let err = run(&b.graph, &[&[0.0, 0.0]]).unwrap_err().to_string();
    assert!(err.contains("sigmoid_1") && err.contains("before any node writes it"), "{err}");

    // An output nothing writes.
    let mut b = Builder::default();
    let x = b.input(&[2]);
    let orphan = b.graph.add_value(Value { name: "orphan".into(), shape: vec![2], dtype: DType::F32, constant: None });
    let y = b.node1(Op::Sigmoid, &[x], &[2]);
    b.output(y);
    b.output(orphan);
    let err = run(&b.graph, &[&[0.0, 0.0]]).unwrap_err();
    assert!(matches!(&err, ReferenceError::OutputMissing { name } if name == "orphan"), "{err}");

    // A node reading a value the graph does not have.
    let mut b = Builder::default();
    let x = b.input(&[2]);
    let y = b.node1(Op::Add, &[x, 99], &[2]);
    b.output(y);
    let err = run(&b.graph, &[&[0.0, 0.0]]).unwrap_err();
    assert!(matches!(err, ReferenceError::UnknownValue { id: 99, .. }), "{err}");
    assert!(err.to_string().contains("add_0"), "{err}");

    // A constant whose data does not fill its shape.
    let mut b = Builder::default();
    let x = b.input(&[2]);
    let c = b.constant(&[3], vec![1.0, 2.0]);
    let y = b.node1(Op::Add, &[x, c], &[2]);
    b.output(y);
    let err = run(&b.graph, &[&[0.0, 0.0]]).unwrap_err();
    assert!(matches!(err, ReferenceError::ConstantLength { expected: 3, got: 2, .. }), "{err}");
}

//! Fusion passes over the build graph. Each pass rewrites a pattern of ONNX
//! ops into one fused op whose definition (in `ir`) is exactly the ops it
//! replaced, so the CPU reference executor can check every pass against the
//! graph before it (tests/engine_build.rs does, on YOLO11n-seg).
//!
//! A pass only fuses when the intermediate values have no other reader and
//! are not model outputs: nothing outside the pattern may observe a value
//! that stops existing.

use super::ir::{Activation, Graph, Node, Op, ValueId};

/// What a pass did, for `vrseg build-engine`'s report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FuseReport {
    pub silu: usize,
    pub residual: usize,
    /// Sigmoids moved into the convs that feed them.
    pub sigmoid: usize,
}

/// Runs every pass in order.
pub fn fuse_all(graph: &mut Graph) -> FuseReport {
    let silu = fuse_conv_silu(graph);
    let residual = fuse_conv_residual(graph);
    let sigmoid = fuse_conv_sigmoid(graph);
    FuseReport { silu, residual, sigmoid }
}

fn is_output(graph: &Graph, v: ValueId) -> bool {
    graph.outputs.contains(&v)
}

/// Conv → Sigmoid → Mul(conv, sigmoid) (how torch exports nn.SiLU) becomes
/// Conv with `Activation::Silu`. Returns how many were fused.
pub fn fuse_conv_silu(graph: &mut Graph) -> usize {
    let mut fused = 0;
    loop {
        let consumers = graph.consumers();
        let producers = graph.producers();
        let mut found = None;
        for (c, node) in graph.nodes.iter().enumerate() {
            let Op::Conv(conv) = &node.op else { continue };
            if conv.activation != Activation::None || conv.residual {
                continue;
            }
            let x = node.outputs[0];
            if is_output(graph, x) || consumers[x].len() != 2 {
                continue;
            }
            let (mut sig, mut mul) = (None, None);
            for &n in &consumers[x] {
                match graph.nodes[n].op {
                    Op::Sigmoid => sig = Some(n),
                    Op::Mul => mul = Some(n),
                    _ => {}
                }
            }
            let (Some(s), Some(m)) = (sig, mul) else { continue };
            let sv = graph.nodes[s].outputs[0];
            let mul_inputs = &graph.nodes[m].inputs;
            let pairs = mul_inputs.len() == 2
                && ((mul_inputs[0] == x && mul_inputs[1] == sv) || (mul_inputs[0] == sv && mul_inputs[1] == x));
            if !pairs || is_output(graph, sv) || consumers[sv] != [m] || producers[sv] != Some(s) {
                continue;
            }
            found = Some((c, s, m));
            break;
        }
        let Some((c, s, m)) = found else { break };
        let y = graph.nodes[m].outputs[0];
        if let Op::Conv(conv) = &mut graph.nodes[c].op {
            conv.activation = Activation::Silu;
        }
        graph.nodes[c].outputs[0] = y;
        remove_nodes(graph, &[s, m]);
        fused += 1;
    }
    if fused > 0 {
        graph.compact();
    }
    fused
}

/// Add(conv, r) or Add(r, conv), with r shaped like the conv's output (no
/// broadcasting) and the conv's output read by the Add alone, becomes Conv
/// with `residual` (r as its last input). The fused node takes the Add's
/// place in the order: r may be computed after the conv, never after the Add.
pub fn fuse_conv_residual(graph: &mut Graph) -> usize {
    let mut fused = 0;
    loop {
        let consumers = graph.consumers();
        let producers = graph.producers();
        let mut found = None;
        for (a, node) in graph.nodes.iter().enumerate() {
            if node.op != Op::Add || node.inputs.len() != 2 || node.inputs[0] == node.inputs[1] {
                continue;
            }
            for side in 0..2 {
                let (x, r) = (node.inputs[side], node.inputs[1 - side]);
                let Some(c) = producers[x] else { continue };
                let Op::Conv(conv) = &graph.nodes[c].op else { continue };
                if conv.residual || is_output(graph, x) || consumers[x] != [a] {
                    continue;
                }
                if graph.values[r].shape != graph.values[x].shape || graph.values[r].constant.is_some() {
                    continue;
                }
                found = Some((a, c, r));
                break;
            }
            if found.is_some() {
                break;
            }
        }
        let Some((a, c, r)) = found else { break };
        let mut conv_node: Node = graph.nodes[c].clone();
        if let Op::Conv(conv) = &mut conv_node.op {
            conv.residual = true;
        }
        conv_node.inputs.push(r);
        conv_node.outputs[0] = graph.nodes[a].outputs[0];
        graph.nodes[a] = conv_node;
        remove_nodes(graph, &[c]);
        fused += 1;
    }
    if fused > 0 {
        graph.compact();
    }
    fused
}

/// A Sigmoid whose input comes from convs through reshapes and
/// concatenations only (YOLO's class scores: three per-scale 1x1 convs,
/// each flattened, concatenated along the anchors, then one Sigmoid) moves
/// into those convs' epilogues (`Activation::Sigmoid`): a sigmoid commutes
/// with ops that only move elements. The convs must have no activation and
/// no residual, and every value on the way must be read by the next op
/// alone (and be no model output), since each now holds sigmoid values.
/// The reshapes and the concatenation stay (the memory plan makes them
/// views); the Sigmoid's output takes the place of its input. Returns how
/// many Sigmoids were removed.
pub fn fuse_conv_sigmoid(graph: &mut Graph) -> usize {
    let mut fused = 0;
    loop {
        let consumers = graph.consumers();
        let producers = graph.producers();
        // The convs feeding `v` through element-moving ops read by one op
        // each, or None.
        let leaves = |start: ValueId| -> Option<Vec<usize>> {
            let mut convs = Vec::new();
            let mut stack = vec![start];
            while let Some(v) = stack.pop() {
                if is_output(graph, v) || consumers[v].len() != 1 {
                    return None;
                }
                let p = producers[v]?;
                match &graph.nodes[p].op {
                    Op::Conv(c) if c.activation == Activation::None && !c.residual => convs.push(p),
                    Op::Reshape { .. } | Op::Concat { .. } => stack.extend(graph.nodes[p].inputs.iter().copied()),
                    _ => return None,
                }
            }
            Some(convs)
        };
        let mut found = None;
        for (s, node) in graph.nodes.iter().enumerate() {
            if node.op != Op::Sigmoid {
                continue;
            }
            let x = node.inputs[0];
            if let Some(convs) = leaves(x) {
                found = Some((s, x, convs, producers[x].expect("leaves found a producer")));
                break;
            }
        }
        let Some((s, x, convs, producer)) = found else { break };
        for c in convs {
            if let Op::Conv(conv) = &mut graph.nodes[c].op {
                conv.activation = Activation::Sigmoid;
            }
        }
        let y = graph.nodes[s].outputs[0];
        let slot = graph.nodes[producer].outputs.iter().position(|&o| o == x).expect("the producer writes x");
        graph.nodes[producer].outputs[slot] = y;
        remove_nodes(graph, &[s]);
        fused += 1;
    }
    if fused > 0 {
        graph.compact();
    }
    fused
}

fn remove_nodes(graph: &mut Graph, indices: &[usize]) {
    let mut idx = indices.to_vec();
    idx.sort_unstable();
    for i in idx.into_iter().rev() {
        graph.nodes.remove(i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::build::ir::{Conv, DType, TensorData, Value};

    fn value(g: &mut Graph, name: &str, shape: &[usize], data: Option<Vec<f32>>) -> ValueId {
        g.add_value(Value {
            name: name.into(),
            shape: shape.to_vec(),
            dtype: DType::F32,
            constant: data.map(TensorData::F32),
        })
    }

    fn node(name: &str, op: Op, inputs: Vec<ValueId>, outputs: Vec<ValueId>) -> Node {
        Node { name: name.into(), op, inputs, outputs }
    }

    fn conv_op() -> Op {
        Op::Conv(Conv {
            kernel: [1, 1],
            stride: [1, 1],
            dilation: [1, 1],
            pads: [0; 4],
            group: 1,
            activation: Activation::None,
            residual: false,
        })
    }

    /// x → Conv → (Sigmoid, Mul) → Add(·, x) → output.
    fn block() -> Graph {
        let mut g = Graph::default();
        let x = value(&mut g, "x", &[1, 2, 3, 3], None);
        let w = value(&mut g, "w", &[2, 2, 1, 1], Some(vec![1.0, 0.5, -0.5, 1.0]));
        let c = value(&mut g, "c", &[1, 2, 3, 3], None);
        let s = value(&mut g, "s", &[1, 2, 3, 3], None);
        let m = value(&mut g, "m", &[1, 2, 3, 3], None);
        let y = value(&mut g, "y", &[1, 2, 3, 3], None);
        g.inputs = vec![x];
        g.outputs = vec![y];
        g.nodes = vec![
            node("conv", conv_op(), vec![x, w], vec![c]),
            node("sig", Op::Sigmoid, vec![c], vec![s]),
            node("mul", Op::Mul, vec![s, c], vec![m]),
            node("add", Op::Add, vec![x, m], vec![y]),
        ];
        g
    }

    #[test]
    fn conv_sigmoid_mul_add_becomes_one_conv() {
        let mut g = block();
        let report = fuse_all(&mut g);
        assert_eq!(report, FuseReport { silu: 1, residual: 1, sigmoid: 0 });
        assert_eq!(g.nodes.len(), 1);
        let node = &g.nodes[0];
        let Op::Conv(conv) = &node.op else { panic!("{:?}", node.op) };
        assert_eq!((conv.activation, conv.residual), (Activation::Silu, true));
        assert_eq!(node.name, "conv");
        // x, w, then the residual x; the output is the Add's.
        assert_eq!(node.inputs.iter().map(|&v| g.values[v].name.as_str()).collect::<Vec<_>>(), ["x", "w", "x"]);
        assert_eq!(g.values[node.outputs[0]].name, "y");
        assert_eq!(g.values.len(), 3, "intermediate values are gone: {:?}", g.values);
    }

    #[test]
    fn a_conv_output_read_elsewhere_is_not_fused() {
        let mut g = block();
        // The conv's raw output is also a model output: SiLU must not fuse.
        let c = g.nodes[0].outputs[0];
        g.outputs.push(c);
        assert_eq!(fuse_conv_silu(&mut g), 0);
        // The Add reads the Mul, not a conv: no residual fusion either.
        assert_eq!(fuse_conv_residual(&mut g), 0);
        assert_eq!(g.nodes.len(), 4);
    }

    /// Two convs → reshape each → concat along the last axis → Sigmoid → output.
    fn scores(extra_reader: bool) -> Graph {
        let mut g = Graph::default();
        let x = value(&mut g, "x", &[1, 2, 3, 3], None);
        let w = value(&mut g, "w", &[2, 2, 1, 1], Some(vec![1.0, 0.5, -0.5, 1.0]));
        let (c0, c1) = (value(&mut g, "c0", &[1, 2, 3, 3], None), value(&mut g, "c1", &[1, 2, 3, 3], None));
        let (r0, r1) = (value(&mut g, "r0", &[1, 2, 9], None), value(&mut g, "r1", &[1, 2, 9], None));
        let cat = value(&mut g, "cat", &[1, 2, 18], None);
        let y = value(&mut g, "y", &[1, 2, 18], None);
        g.inputs = vec![x];
        g.outputs = vec![y];
        let reshape = || Op::Reshape { shape: vec![1, 2, 9] };
        g.nodes = vec![
            node("conv0", conv_op(), vec![x, w], vec![c0]),
            node("conv1", conv_op(), vec![x, w], vec![c1]),
            node("flat0", reshape(), vec![c0], vec![r0]),
            node("flat1", reshape(), vec![c1], vec![r1]),
            node("cat", Op::Concat { axis: 2 }, vec![r0, r1], vec![cat]),
            node("sig", Op::Sigmoid, vec![cat], vec![y]),
        ];
        if extra_reader {
            let z = value(&mut g, "z", &[1, 2, 9], None);
            g.outputs.push(z);
            g.nodes.push(node("neg", Op::Sub, vec![r1, r1], vec![z]));
        }
        g
    }

    #[test]
    fn a_sigmoid_of_reshaped_concatenated_convs_moves_into_the_convs() {
        let mut g = scores(false);
        assert_eq!(fuse_conv_sigmoid(&mut g), 1);
        let ops: Vec<_> = g.nodes.iter().map(|n| n.op.onnx_type()).collect();
        assert_eq!(ops, ["Conv", "Conv", "Reshape", "Reshape", "Concat"]);
        for node in &g.nodes[..2] {
            let Op::Conv(conv) = &node.op else { unreachable!() };
            assert_eq!(conv.activation, Activation::Sigmoid, "{}", node.name);
        }
        // The concatenation now writes the Sigmoid's output, the model's.
        assert_eq!(g.values[g.nodes[4].outputs[0]].name, "y");
        assert_eq!(g.outputs, [g.nodes[4].outputs[0]]);
    }

    #[test]
    fn a_sigmoid_does_not_move_past_a_value_read_elsewhere() {
        // r1 is also read by another node: its raw values must stay.
        let mut g = scores(true);
        assert_eq!(fuse_conv_sigmoid(&mut g), 0);
        assert!(g.nodes.iter().any(|n| n.op == Op::Sigmoid));
    }

    #[test]
    fn a_broadcast_add_is_not_a_residual() {
        let mut g = Graph::default();
        let x = value(&mut g, "x", &[1, 2, 3, 3], None);
        let w = value(&mut g, "w", &[2, 2, 1, 1], Some(vec![1.0; 4]));
        let c = value(&mut g, "c", &[1, 2, 3, 3], None);
        let b = value(&mut g, "b", &[1, 2, 1, 1], None);
        let y = value(&mut g, "y", &[1, 2, 3, 3], None);
        g.inputs = vec![x, b];
        g.outputs = vec![y];
        g.nodes = vec![
            Node { name: "conv".into(), op: conv_op(), inputs: vec![x, w], outputs: vec![c] },
            Node { name: "add".into(), op: Op::Add, inputs: vec![c, b], outputs: vec![y] },
        ];
        assert_eq!(fuse_conv_residual(&mut g), 0);
    }
}

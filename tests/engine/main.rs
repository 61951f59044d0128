//! The build side of the native engine on the real YOLO11n-seg graph
//! (tests/data/models: Ultralytics 8.4.190's export with its convolution
//! weights stripped; the weights are regenerated here from a seed).
//! - Import: op types and the output shapes Ultralytics documents.
//! - Fusions: the CPU reference executor gives the same outputs on the
//!   graph after every pass as on the imported graph (relative L2 ≤ 1e-5:
//!   a fused epilogue sums in the same order, so only f32 rounding of the
//!   SiLU, sigmoid and residual can differ).
//! - Memory plan: no two values live at once share arena bytes; the layout
//!   rule stores the convolution region NHWC and keeps NCHW wherever an op
//!   needs it.
//! - Plan: written, reopened, same graph.

use std::path::PathBuf;

use vrseg::engine::build::fuse::{fuse_conv_residual, fuse_conv_sigmoid, fuse_conv_silu};
use vrseg::engine::build::import::{import_file, ImportOptions};
use vrseg::engine::build::ir::{Graph, Op};
use vrseg::engine::build::{build_plan, fill_stripped_weights, memory};
use vrseg::engine::plan::Plan;
use vrseg::engine::reference;
use vrseg::selftest::SplitMix64;

fn fixture(size: u32) -> PathBuf {
    vrseg::testing::models_dir().join(format!("yolo11n-seg-{size}.structure.onnx"))
}

/// Imports a fixture and refills its stripped convolution weights from a seed.
fn yolo(size: u32, batch: usize, seed: u64) -> Graph {
    let options = ImportOptions { batch: Some(batch), allow_empty_initializers: true };
    let mut graph = import_file(&fixture(size), &options).expect("the fixture imports");
    assert!(fill_stripped_weights(&mut graph, seed) > 50);
    graph
}

fn input(graph: &Graph, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    (0..graph.values[graph.inputs[0]].elements()).map(|_| rng.uniform_f32(0.0, 1.0)).collect()
}

fn relative_l2(got: &[f32], want: &[f32]) -> f64 {
    let (mut num, mut den) = (0f64, 0f64);
    for (&g, &w) in got.iter().zip(want) {
        num += f64::from(g - w).powi(2);
        den += f64::from(w).powi(2);
    }
    (num / den.max(1e-30)).sqrt()
}

/// A fixture after every fusion pass, with its memory plan checked.
fn fused_and_planned(size: u32, batch: usize, seed: u64) -> (Graph, memory::MemoryPlan) {
    let mut graph = yolo(size, batch, seed);
    vrseg::engine::build::fuse::fuse_all(&mut graph);
    let plan = memory::plan(&graph);
    memory::check(&graph, &plan).unwrap();
    (graph, plan)
}

#[test]
fn the_fixture_imports_as_ultralytics_exports_it() {
    let graph = yolo(640, 1, 1);
    let shapes: Vec<_> = graph.outputs.iter().map(|&v| graph.values[v].shape.clone()).collect();
    assert_eq!(shapes, [vec![1, 116, 8400], vec![1, 32, 160, 160]]);
    assert_eq!(graph.values[graph.inputs[0]].shape, [1, 3, 640, 640]);
    let convs = graph.nodes.iter().filter(|n| matches!(n.op, Op::Conv(_))).count();
    assert_eq!(convs, 100);
    let batch8 = import_file(&fixture(640), &ImportOptions { batch: Some(8), allow_empty_initializers: true }).unwrap();
    let shapes: Vec<_> = batch8.outputs.iter().map(|&v| batch8.values[v].shape.clone()).collect();
    assert_eq!(shapes, [vec![8, 116, 8400], vec![8, 32, 160, 160]]);
}

#[test]
fn every_fusion_pass_keeps_the_outputs() {
    let mut graph = yolo(320, 1, 7);
    let x = input(&graph, 11);
    let want = reference::run(&graph, &[&x]).expect("reference on the imported graph");
    // Outputs worth comparing: finite, and not constant (an all-zero output
    // would make any pass look right).
    for (o, out) in want.iter().enumerate() {
        assert!(out.iter().all(|v| v.is_finite()), "output {o} has non-finite values");
        let mean = out.iter().map(|&v| f64::from(v)).sum::<f64>() / out.len() as f64;
        let var = out.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / out.len() as f64;
        assert!(var > 1e-6, "output {o} is nearly constant (variance {var:e})");
    }
    let silu = fuse_conv_silu(&mut graph);
    let after_silu = reference::run(&graph, &[&x]).expect("reference after the SiLU pass");
    let residual = fuse_conv_residual(&mut graph);
    let after_residual = reference::run(&graph, &[&x]).expect("reference after the residual pass");
    eprintln!("fused {silu} SiLU, {residual} residual; {} nodes left: {:?}", graph.nodes.len(), graph.op_histogram());
    // Every SiLU fused: the one Sigmoid left is the class scores'.
    let sigmoids = graph.nodes.iter().filter(|n| n.op == Op::Sigmoid).count();
    assert_eq!((silu, sigmoids), (86, 1), "Conv+SiLU fused, Sigmoids left");
    assert!(residual >= 6, "only {residual} residual adds fused");
    // The class scores' Sigmoid moves into the three per-scale convs, through
    // their reshapes and the concatenation.
    let sigmoid = fuse_conv_sigmoid(&mut graph);
    let after_sigmoid = reference::run(&graph, &[&x]).expect("reference after the sigmoid pass");
    let sigmoids = graph.nodes.iter().filter(|n| n.op == Op::Sigmoid).count();
    assert_eq!((sigmoid, sigmoids), (1, 0), "the class scores' Sigmoid fused");
    for (stage, got) in [("silu", &after_silu), ("residual", &after_residual), ("sigmoid", &after_sigmoid)] {
        for (o, (g, w)) in got.iter().zip(&want).enumerate() {
            let err = relative_l2(g, w);
            eprintln!("after {stage}: output {o}: relative L2 {err:.2e}");
            assert!(err <= 1e-5, "after the {stage} pass output {o} moved: relative L2 {err:e}");
        }
    }
}

#[test]
fn the_memory_plan_of_yolo_never_overlaps_live_values() {
    for batch in [1, 4] {
        let (_, plan) = fused_and_planned(640, batch, 3);
        eprintln!(
            "batch {batch}: arena {:.1} MB ({:.1} MB without reuse), {} concats in place, {} splits as views",
            plan.arena_bytes as f64 * 1e-6,
            plan.unshared_bytes as f64 * 1e-6,
            plan.concats_in_place,
            plan.splits_as_views
        );
        assert!(plan.arena_bytes * 2 < plan.unshared_bytes, "liveness saved less than half");
        assert!(plan.concats_in_place >= 10, "{} concats in place", plan.concats_in_place);
    }
}

#[test]
fn the_layout_rule_stores_convolutions_nhwc_and_keeps_nchw_where_needed() {
    use memory::Layout;
    let (graph, plan) = fused_and_planned(640, 2, 3);
    let nhwc = |v: usize| matches!(plan.placements[v].layout, Layout::Nhwc { .. });
    let external = |v: usize| graph.inputs.contains(&v) || graph.outputs.contains(&v);
    let (mut conv_outputs, mut conv_outputs_nhwc) = (0, 0);
    for node in &graph.nodes {
        let touched: Vec<usize> = node.inputs.iter().chain(&node.outputs).copied().collect();
        match &node.op {
            // Ops that work on NCHW memory never see an NHWC value.
            Op::Reshape { .. } | Op::Transpose { .. } | Op::Softmax { .. } | Op::MatMul | Op::Slice { .. } => {
                for &v in &touched {
                    assert!(!nhwc(v), "{}: {:?} touches NHWC value {v}", node.name, node.op.onnx_type());
                }
            }
            // A channel concat or split keeps one layout across its members.
            Op::Concat { axis: 1 } | Op::Split { axis: 1, .. } => {
                let first = nhwc(touched[0]);
                assert!(touched.iter().all(|&v| nhwc(v) == first), "{}: members in mixed layouts", node.name);
            }
            Op::Conv(_) => {
                conv_outputs += 1;
                conv_outputs_nhwc += nhwc(node.outputs[0]) as usize;
            }
            _ => {}
        }
        for &v in &touched {
            let value = &graph.values[v];
            if nhwc(v) {
                // NHWC only for 4-D FP16 activations of whole 8-channel groups.
                assert!(!external(v) && value.constant.is_none() && value.shape.len() == 4 && value.shape[1] % 8 == 0);
                assert_eq!(plan.element_types[v], memory::ElementType::F16);
                let Layout::Nhwc { pixel_stride } = plan.placements[v].layout else { unreachable!() };
                assert_eq!(
                    pixel_stride, graph.values[plan.placements[v].root].shape[1],
                    "value {v}: the root's channels"
                );
            }
        }
    }
    // The model input and outputs are NCHW; most convolutions write NHWC.
    for &v in graph.inputs.iter().chain(&graph.outputs) {
        assert!(!nhwc(v));
    }
    eprintln!("{conv_outputs_nhwc} of {conv_outputs} conv outputs NHWC, {} values NHWC", plan.nhwc_values);
    assert!(conv_outputs_nhwc * 10 >= conv_outputs * 8, "only {conv_outputs_nhwc} of {conv_outputs} conv outputs NHWC");
}

/// YOLO's head output (output0 = boxes, class scores, mask coefficients,
/// each joined from three scales along the anchors) is assembled in place:
/// every head concatenation is a view, and the per-scale class-score and
/// mask-coefficient convs write their planes straight into output0's rows,
/// 8400 anchors apart; the box convs into the DFL's input.
#[test]
fn the_head_outputs_are_written_in_place() {
    use memory::{Layout, Storage};
    let (graph, plan) = fused_and_planned(640, 2, 3);
    let root = |v: usize| plan.placements[v].root;
    let head_concats: Vec<_> =
        graph.nodes.iter().filter(|n| n.name.starts_with("/model.23/") && matches!(n.op, Op::Concat { .. })).collect();
    assert_eq!(head_concats.len(), 5, "Concat, Concat_1..4");
    for node in &head_concats {
        for &x in &node.inputs {
            assert_eq!(root(x), root(node.outputs[0]), "{}: input {:?} is a copy", node.name, graph.values[x].name);
        }
    }
    let output0 = graph.outputs[0];
    let (mut into_output, mut into_dfl) = (0, 0);
    for node in &graph.nodes {
        let Op::Conv(_) = node.op else { continue };
        let y = node.outputs[0];
        let Layout::NchwPlanes { plane_stride } = plan.placements[y].layout else { continue };
        assert_eq!(plane_stride, 8400, "{}", node.name);
        assert_eq!(graph.values[y].shape[0], 2);
        if root(y) == output0 {
            assert_eq!(plan.placements[y].storage, Storage::Output(0));
            assert_eq!(plan.placements[y].batch_stride, 116 * 8400);
            into_output += 1;
        } else {
            into_dfl += 1;
        }
    }
    // Class scores (cv3.*) and mask coefficients (cv4.*) at three scales; boxes (cv2.*).
    assert_eq!((into_output, into_dfl), (6, 3));
}

#[test]
fn a_plan_of_yolo_round_trips() {
    let graph = yolo(320, 2, 5);
    let dir = std::env::temp_dir().join(format!("vrseg-engine-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("yolo11n-seg.plan");
    let report = build_plan(graph, "yolo11n-seg-320.structure.onnx", &path).unwrap();
    let plan = Plan::open(&path).unwrap();
    assert_eq!(plan.graph.nodes.len(), report.plan_nodes);
    assert_eq!(plan.header.batch, 2);
    plan.check_input(&[2, 3, 320, 320]).unwrap();
    // 2.87 M parameters, FP16: about 5.7 MB of weights.
    eprintln!("weights section: {} bytes", plan.header.weights_bytes);
    assert!(plan.header.weights_bytes > 5_000_000 && plan.header.weights_bytes < 7_000_000);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_fp32_plan_of_yolo_keeps_everything_fp32_and_nchw() {
    use vrseg::engine::build::memory::{ElementType, Layout};
    use vrseg::engine::build::{build_plan_as, Precision};
    use vrseg::engine::plan::WeightFormat;
    let graph = yolo(320, 2, 5);
    let dir = std::env::temp_dir().join(format!("vrseg-engine-fp32-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("yolo11n-seg-fp32.plan");
    let report = build_plan_as(graph, "yolo11n-seg-320.structure.onnx", &path, Precision::Fp32).unwrap();
    let plan = Plan::open(&path).unwrap();
    assert_eq!(plan.precision(), Precision::Fp32);
    // The fusions and in-place concatenations are the FP16 plan's; only the
    // storage differs.
    assert!(report.fusions.silu > 80 && report.memory.concats_in_place > 10, "{:?}", report.fusions);
    assert!(plan.graph.values.iter().all(|v| v.element == ElementType::F32));
    assert!(plan.graph.values.iter().all(|v| !matches!(v.placement.layout, Layout::Nhwc { .. })));
    assert!(plan.graph.weights.iter().all(|w| w.format == WeightFormat::F32));
    // The same 2.87 M parameters as FP32, unpadded: about 11.5 MB.
    eprintln!("weights section: {} bytes", plan.header.weights_bytes);
    assert!(plan.header.weights_bytes > 10_500_000 && plan.header.weights_bytes < 12_500_000);
    let tensors: Vec<String> = plan.tensors().iter().map(ToString::to_string).collect();
    assert_eq!(tensors[0], "input `images` f32 [2, 3, 320, 320]");
    std::fs::remove_dir_all(&dir).ok();
}

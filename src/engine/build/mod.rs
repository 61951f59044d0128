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

use std::path::Path;

use crate::engine::plan::{self, PlanGraph, PlanNode, PlanValue, PlanWeight, WeightFormat};
use ir::{Graph, Op, TensorData};
use memory::{MemoryPlan, Storage};

/// Turns a fused, planned graph into the plan's graph section and weight
/// blobs: convolution weights become FP16 (the engine's compute type), every
/// other constant stays FP32 (biases and the head's anchor tables are small
/// and precision-sensitive). Constants that no node reads are dropped.
pub fn lower(graph: &Graph, memory: &MemoryPlan, source: &str) -> Result<(PlanGraph, Vec<Vec<u8>>), BuildError> {
    let mut fp16 = vec![false; graph.values.len()];
    for node in &graph.nodes {
        if matches!(node.op, Op::Conv(_) | Op::ConvTranspose(_)) {
            fp16[node.inputs[1]] = true;
        }
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
        let (format, blob) = if fp16[v] {
            let halves: Vec<half::f16> = data.iter().map(|&x| half::f16::from_f32(x)).collect();
            (WeightFormat::F16, bytemuck::cast_slice(&halves).to_vec())
        } else {
            (WeightFormat::F32, bytemuck::cast_slice(data).to_vec())
        };
        weights.push(PlanWeight { value: v, offset: 0, bytes: 0, format });
        blobs.push(blob);
    }
    let values = graph
        .values
        .iter()
        .zip(&memory.placements)
        .map(|(v, &placement)| PlanValue { name: v.name.clone(), shape: v.shape.clone(), dtype: v.dtype, placement })
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
            precision: "fp16".into(),
            values,
            nodes,
            inputs: graph.inputs.clone(),
            outputs: graph.outputs.clone(),
            weights,
            arena_elements: memory.arena_elements,
        },
        blobs,
    ))
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

/// Fuses and plans an imported graph and writes the plan (the part of
/// `vrseg build-engine` after import).
pub fn build_plan(mut graph: Graph, source: &str, out: &Path) -> Result<BuildReport, BuildError> {
    let onnx_nodes = graph.nodes.len();
    let fusions = fuse::fuse_all(&mut graph);
    let memory = memory::plan(&graph);
    if let Err(reason) = memory::check(&graph, &memory) {
        // A planner bug, not the user's: say so rather than write a plan
        // that would corrupt activations.
        return Err(BuildError::Shape { op_type: "memory plan".into(), node: String::new(), reason });
    }
    let (mut plan_graph, blobs) = lower(&graph, &memory, source)?;
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

//! The native engine's plan file: what `vrseg build-engine` writes and the
//! runtime maps with memmap2.
//!
//! Layout (all integers little-endian):
//! - bytes 0..256: [`PlanHeader`] (magic `VRSEGPLN`, format version, section
//!   offsets and sizes, the activation arena size, the GPU architecture the
//!   plan was tuned for or 0 for any);
//! - the graph section: UTF-8 JSON of [`PlanGraph`] (ops, values with their
//!   placements, weight table): small, and readable with `jq` when a build
//!   needs explaining;
//! - the weights section, 256-byte aligned: every weight blob 256-byte
//!   aligned within it, FP16 for convolution weights in the layout the
//!   convolution kernels read ([`WeightFormat::F16Gemm`]), FP32 for biases
//!   and other constants. The section is uploaded to the GPU as one block.
//!
//! A plan is written under a temporary name and renamed when complete, so a
//! failed or interrupted build leaves no file that looks like a plan.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::build::ir::{DType, Op};
use super::build::memory::{ElementType, Placement};

pub const PLAN_MAGIC: [u8; 8] = *b"VRSEGPLN";
/// Bumped whenever the header, the graph JSON or a weight layout changes
/// meaning; a plan of another version is refused, not guessed at.
/// Version 2: per-value element types, byte placements, GEMM-packed
/// convolution weights. Version 3: per-value layouts (NHWC between
/// convolutions, with pixel strides) and tap-major weights for the NHWC kernels.
/// Version 4: NCHW slices along the last axis (`Layout::NchwPlanes`) and the
/// sigmoid conv activation.
pub const PLAN_VERSION: u32 = 4;
pub const PLAN_HEADER_BYTES: usize = 256;
pub const PLAN_ALIGN: usize = 256;

/// The fixed header at the start of a plan.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct PlanHeader {
    pub magic: [u8; 8],
    pub version: u32,
    pub header_bytes: u32,
    pub graph_offset: u64,
    pub graph_bytes: u64,
    pub weights_offset: u64,
    pub weights_bytes: u64,
    /// Activation arena, bytes.
    pub arena_bytes: u64,
    /// Compute capability the plan was tuned for (e.g. 90), 0 when it
    /// holds no per-GPU choices.
    pub sm: u32,
    pub batch: u32,
    pub reserved: [u64; 24],
}

const _: () = assert!(std::mem::size_of::<PlanHeader>() == PLAN_HEADER_BYTES);

/// How a weight blob's elements are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum WeightFormat {
    /// FP16, in the ONNX order of the value's shape (depthwise filters).
    F16,
    /// FP32, in the ONNX order of the value's shape.
    F32,
    /// FP16 matrix of `rows` x `cols`, row-major, zero padded: the A operand
    /// of the implicit-GEMM convolution (`kernels/engine_conv.cu`). Conv
    /// weight [M, C, kH, kW]: row m holds the weight's (c, ky, kx) in ONNX
    /// order. ConvTranspose weight [C, M, s, s] (kernel = stride): row
    /// (m * s + i) * s + j holds w[c, m, i, j] over c. `rows` is
    /// `build::gemm_rows` of the GEMM's M and `cols` a multiple of 32, so
    /// the kernel's tiles never run off it.
    F16Gemm { rows: usize, cols: usize },
    /// As `F16Gemm`, in the order the NHWC kernels read. Conv (input NHWC):
    /// row m holds the weight's (ky, kx, c), channels fastest, so that a
    /// 16-byte chunk of K is 8 channels of one input pixel. ConvTranspose
    /// (output NHWC): row ((i * s + j) * M + m) holds w[c, m, i, j] over c,
    /// so that 8 consecutive rows are 8 channels of one output pixel.
    F16GemmTapMajor { rows: usize, cols: usize },
    /// FP16 depthwise filters [kH * kW][C]: a tap's channels contiguous (the
    /// NHWC depthwise kernel reads 8 channels as one 16-byte load).
    F16TapMajor,
}

impl WeightFormat {
    /// Bytes of a blob of this format holding `elements` values (padding
    /// included for the GEMM layout).
    pub fn blob_bytes(self, elements: usize) -> usize {
        match self {
            WeightFormat::F16 | WeightFormat::F16TapMajor => elements * 2,
            WeightFormat::F32 => elements * 4,
            WeightFormat::F16Gemm { rows, cols } | WeightFormat::F16GemmTapMajor { rows, cols } => rows * cols * 2,
        }
    }
}

/// One constant in the weights section.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PlanWeight {
    /// Index into `PlanGraph::values`.
    pub value: usize,
    /// Bytes from the start of the weights section (256-byte aligned).
    pub offset: u64,
    pub bytes: u64,
    pub format: WeightFormat,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PlanValue {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: DType,
    /// How the engine stores it on the GPU.
    pub element: ElementType,
    pub placement: Placement,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PlanNode {
    pub name: String,
    pub op: Op,
    pub inputs: Vec<usize>,
    pub outputs: Vec<usize>,
}

/// The graph section.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PlanGraph {
    /// "vrseg X.Y.Z".
    pub producer: String,
    /// The model file the plan was built from (its file name).
    pub source: String,
    pub batch: usize,
    /// What the plan stores and computes in: "fp16" or "fp32"
    /// ([`crate::engine::build::Precision`]).
    pub precision: String,
    pub values: Vec<PlanValue>,
    pub nodes: Vec<PlanNode>,
    pub inputs: Vec<usize>,
    pub outputs: Vec<usize>,
    pub weights: Vec<PlanWeight>,
    /// Activation arena, bytes.
    pub arena_bytes: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("could not open plan {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    #[error(
        "{path} is not a vrseg plan (no VRSEGPLN header); build one with `vrseg build-engine MODEL.onnx -o {path}`"
    )]
    NotAPlan { path: PathBuf },
    #[error(
        "{path} is a version {found} plan; this vrseg reads version {PLAN_VERSION}: rebuild it with `vrseg build-engine`"
    )]
    Version { path: PathBuf, found: u32 },
    #[error("{path} is damaged: {reason}; rebuild it with `vrseg build-engine`")]
    Damaged { path: PathBuf, reason: String },
    #[error("{path} was tuned for sm_{plan}, this GPU is sm_{device}: rebuild it on this GPU (or without tuning)")]
    Architecture { path: PathBuf, plan: u32, device: u32 },
    #[error("{path} was built for input {plan:?}, the pipeline needs {wanted:?}: rebuild with `vrseg build-engine --batch {batch}`")]
    InputShape { path: PathBuf, plan: Vec<usize>, wanted: Vec<usize>, batch: usize },
    #[error("could not write plan {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

fn align_up(x: usize) -> usize {
    x.div_ceil(PLAN_ALIGN) * PLAN_ALIGN
}

/// Writes a plan: the graph section and the weight blobs (already encoded,
/// one per `graph.weights` entry, in order; their offsets and sizes are
/// filled in here). Temporary file, then rename; nothing is left on error.
pub fn write_plan(path: &Path, graph: &mut PlanGraph, blobs: &[Vec<u8>], sm: u32) -> Result<u64, PlanError> {
    assert_eq!(graph.weights.len(), blobs.len(), "one blob per weight entry");
    let mut offset = 0usize;
    for (w, blob) in graph.weights.iter_mut().zip(blobs) {
        w.offset = offset as u64;
        w.bytes = blob.len() as u64;
        offset = align_up(offset + blob.len());
    }
    let weights_bytes = offset;
    let json = serde_json::to_vec(graph).expect("plan graph serialises");
    let graph_offset = PLAN_HEADER_BYTES;
    let weights_offset = align_up(graph_offset + json.len());
    let header = PlanHeader {
        magic: PLAN_MAGIC,
        version: PLAN_VERSION,
        header_bytes: PLAN_HEADER_BYTES as u32,
        graph_offset: graph_offset as u64,
        graph_bytes: json.len() as u64,
        weights_offset: weights_offset as u64,
        weights_bytes: weights_bytes as u64,
        arena_bytes: graph.arena_bytes as u64,
        sm,
        batch: graph.batch as u32,
        reserved: [0; 24],
    };

    let tmp = temp_name(path);
    let result = (|| -> std::io::Result<u64> {
        let file = std::fs::File::create(&tmp)?;
        let mut out = std::io::BufWriter::new(file);
        out.write_all(bytemuck::bytes_of(&header))?;
        out.write_all(&json)?;
        out.write_all(&vec![0u8; weights_offset - graph_offset - json.len()])?;
        let mut written = 0usize;
        for blob in blobs {
            out.write_all(blob)?;
            let padded = align_up(written + blob.len());
            out.write_all(&vec![0u8; padded - written - blob.len()])?;
            written = padded;
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok((weights_offset + weights_bytes) as u64)
    })();
    match result {
        Ok(size) => {
            std::fs::rename(&tmp, path).map_err(|source| {
                let _ = std::fs::remove_file(&tmp);
                PlanError::Write { path: path.to_path_buf(), source }
            })?;
            Ok(size)
        }
        Err(source) => {
            let _ = std::fs::remove_file(&tmp);
            Err(PlanError::Write { path: path.to_path_buf(), source })
        }
    }
}

/// `dir/.name.partial`: hidden and plainly unfinished.
pub fn temp_name(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "plan".into());
    path.with_file_name(format!(".{name}.partial"))
}

/// A plan mapped from disk, checked.
pub struct Plan {
    path: PathBuf,
    map: memmap2::Mmap,
    pub header: PlanHeader,
    pub graph: PlanGraph,
}

impl Plan {
    pub fn open(path: &Path) -> Result<Plan, PlanError> {
        let file = std::fs::File::open(path).map_err(|source| PlanError::Open { path: path.into(), source })?;
        // SAFETY: the map is read-only and lives as long as `Plan`; plans are
        // build outputs that nothing rewrites in place (build-engine writes a
        // new file and renames it over the old one, which leaves this
        // mapping's pages intact).
        let map =
            unsafe { memmap2::Mmap::map(&file) }.map_err(|source| PlanError::Open { path: path.into(), source })?;
        Self::from_map(path, map)
    }

    fn from_map(path: &Path, map: memmap2::Mmap) -> Result<Plan, PlanError> {
        let damaged = |reason: String| PlanError::Damaged { path: path.into(), reason };
        if map.len() < 8 || map[..8] != PLAN_MAGIC {
            return Err(PlanError::NotAPlan { path: path.into() });
        }
        if map.len() < PLAN_HEADER_BYTES {
            return Err(damaged(format!("{} bytes, shorter than the {PLAN_HEADER_BYTES}-byte header", map.len())));
        }
        let header: PlanHeader = bytemuck::pod_read_unaligned(&map[..PLAN_HEADER_BYTES]);
        if header.version != PLAN_VERSION {
            return Err(PlanError::Version { path: path.into(), found: header.version });
        }
        let section = |offset: u64, bytes: u64, what: &str| -> Result<std::ops::Range<usize>, PlanError> {
            let end = offset.checked_add(bytes).filter(|&e| e <= map.len() as u64);
            match end {
                Some(end) => Ok(offset as usize..end as usize),
                None => Err(PlanError::Damaged {
                    path: path.into(),
                    reason: format!(
                        "the {what} section ends at byte {}, the file has {}",
                        offset as u128 + bytes as u128,
                        map.len()
                    ),
                }),
            }
        };
        let graph_range = section(header.graph_offset, header.graph_bytes, "graph")?;
        let weights_range = section(header.weights_offset, header.weights_bytes, "weights")?;
        if header.weights_offset as usize % PLAN_ALIGN != 0 {
            return Err(damaged("the weights section is not 256-byte aligned".into()));
        }
        let graph: PlanGraph =
            serde_json::from_slice(&map[graph_range]).map_err(|e| damaged(format!("graph section: {e}")))?;
        if crate::engine::build::Precision::from_name(&graph.precision).is_none() {
            return Err(damaged(format!(
                "its precision {:?} is none this vrseg runs (fp16, fp32); a newer vrseg may have written it",
                graph.precision
            )));
        }
        let n = graph.values.len();
        for w in &graph.weights {
            let fits = w.offset.checked_add(w.bytes).is_some_and(|e| e <= weights_range.len() as u64);
            if !fits || w.offset as usize % PLAN_ALIGN != 0 || w.value >= n {
                return Err(damaged(format!("weight entry {w:?} is outside the weights section or misaligned")));
            }
            let v = &graph.values[w.value];
            let want = w.format.blob_bytes(v.shape.iter().product::<usize>());
            if want as u64 != w.bytes {
                return Err(damaged(format!("weight {:?} has {} bytes, its shape needs {want}", v.name, w.bytes)));
            }
        }
        for node in &graph.nodes {
            if node.inputs.iter().chain(&node.outputs).any(|&v| v >= n) {
                return Err(damaged(format!("node {:?} refers to a value that does not exist", node.name)));
            }
        }
        if graph.inputs.iter().chain(&graph.outputs).any(|&v| v >= n) {
            return Err(damaged("a model input or output refers to a value that does not exist".into()));
        }
        Ok(Plan { path: path.into(), map, header, graph })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the plan computes in (checked when it was opened).
    pub fn precision(&self) -> crate::engine::build::Precision {
        crate::engine::build::Precision::from_name(&self.graph.precision).unwrap_or_default()
    }

    /// The weights section's bytes (what the native engine uploads, as one block).
    pub fn weights_section(&self) -> &[u8] {
        let start = self.header.weights_offset as usize;
        &self.map[start..start + self.header.weights_bytes as usize]
    }

    /// The bytes of one weight entry.
    pub fn weight_bytes(&self, w: &PlanWeight) -> &[u8] {
        let start = self.header.weights_offset as usize + w.offset as usize;
        &self.map[start..start + w.bytes as usize]
    }

    /// The model's inputs, then its outputs, as an engine running this plan
    /// binds them (dense row-major, at the plan's batch).
    pub fn tensors(&self) -> Vec<crate::engine::backend::TensorDesc> {
        use crate::engine::backend::{TensorDesc, TensorRole};
        let g = &self.graph;
        let inputs = g.inputs.iter().map(|&v| (v, TensorRole::Input));
        let outputs = g.outputs.iter().map(|&v| (v, TensorRole::Output));
        inputs
            .chain(outputs)
            .map(|(v, role)| {
                let value = &g.values[v];
                TensorDesc { name: value.name.clone(), role, dtype: value.element, shape: value.shape.clone() }
            })
            .collect()
    }

    /// Refuses a plan tuned for another GPU.
    pub fn check_device(&self, sm: u32) -> Result<(), PlanError> {
        if self.header.sm != 0 && self.header.sm != sm {
            return Err(PlanError::Architecture { path: self.path.clone(), plan: self.header.sm, device: sm });
        }
        Ok(())
    }

    /// Refuses a plan whose first input is not `wanted`.
    pub fn check_input(&self, wanted: &[usize]) -> Result<(), PlanError> {
        let plan = self.graph.inputs.first().map(|&v| self.graph.values[v].shape.clone()).unwrap_or_default();
        if plan != wanted {
            return Err(PlanError::InputShape {
                path: self.path.clone(),
                plan,
                wanted: wanted.to_vec(),
                batch: wanted.first().copied().unwrap_or(1),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::build::ir::{Activation, Conv, Graph, Node, TensorData, Value};
    use crate::engine::build::{build_plan, BuildError};

    /// x [2,3,5,7] → Conv(3→4, 3x3, pad 1) + SiLU → y.
    fn tiny_graph() -> Graph {
        let mut g = Graph::default();
        let v = |name: &str, shape: &[usize], data: Option<Vec<f32>>| Value {
            name: name.into(),
            shape: shape.to_vec(),
            dtype: DType::F32,
            constant: data.map(TensorData::F32),
        };
        let x = g.add_value(v("x", &[2, 3, 5, 7], None));
        let w = g.add_value(v("w", &[4, 3, 3, 3], Some((0..108).map(|i| i as f32 * 0.01).collect())));
        let b = g.add_value(v("b", &[4], Some(vec![0.5, -0.5, 0.25, 1.0])));
        let y = g.add_value(v("y", &[2, 4, 5, 7], None));
        g.inputs = vec![x];
        g.outputs = vec![y];
        g.nodes = vec![Node {
            name: "conv".into(),
            op: Op::Conv(Conv {
                kernel: [3, 3],
                stride: [1, 1],
                dilation: [1, 1],
                pads: [1, 1, 1, 1],
                group: 1,
                activation: Activation::Silu,
                residual: false,
            }),
            inputs: vec![x, w, b],
            outputs: vec![y],
        }];
        g
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vrseg-plan-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("model.plan")
    }

    #[test]
    fn a_plan_round_trips_with_fp16_weights_and_fp32_biases() {
        let path = scratch("roundtrip");
        let report = build_plan(tiny_graph(), "tiny.onnx", &path).unwrap();
        assert_eq!(report.plan_nodes, 1);
        let plan = Plan::open(&path).unwrap();
        assert_eq!(plan.header.batch, 2);
        assert_eq!(plan.graph.source, "tiny.onnx");
        assert_eq!(plan.graph.weights.len(), 2);
        let w = &plan.graph.weights[0];
        assert_eq!(w.format, WeightFormat::F16Gemm { rows: 32, cols: 32 });
        let halves: Vec<half::f16> =
            plan.weight_bytes(w).chunks(2).map(|c| half::f16::from_le_bytes([c[0], c[1]])).collect();
        assert_eq!(halves.len(), 32 * 32);
        // Row 3 holds weights 81..108 (K = 27), then zero padding.
        assert!((halves[3 * 32 + 26].to_f32() - 1.07).abs() < 1e-3);
        assert_eq!(halves[3 * 32 + 27].to_f32(), 0.0);
        assert_eq!(halves[4 * 32].to_f32(), 0.0);
        let b = &plan.graph.weights[1];
        assert_eq!((b.format, b.offset % 256), (WeightFormat::F32, 0));
        assert_eq!(bytemuck::pod_read_unaligned::<f32>(&plan.weight_bytes(b)[12..16]), 1.0);
        plan.check_input(&[2, 3, 5, 7]).unwrap();
        let err = plan.check_input(&[4, 3, 5, 7]).unwrap_err().to_string();
        assert!(err.contains("--batch 4"), "{err}");
        plan.check_device(90).unwrap();
        let tensors: Vec<String> = plan.tensors().iter().map(ToString::to_string).collect();
        assert_eq!(tensors, ["input `x` f16 [2, 3, 5, 7]", "output `y` f32 [2, 4, 5, 7]"]);
        assert!(!temp_name(&path).exists());
    }

    #[test]
    fn an_fp32_plan_keeps_weights_and_activations_fp32_in_onnx_order() {
        let path = scratch("fp32");
        crate::engine::build::build_plan_as(tiny_graph(), "tiny.onnx", &path, crate::engine::build::Precision::Fp32)
            .unwrap();
        let plan = Plan::open(&path).unwrap();
        assert_eq!((plan.graph.precision.as_str(), plan.precision()), ("fp32", crate::engine::build::Precision::Fp32));
        let w = &plan.graph.weights[0];
        assert_eq!((w.format, w.bytes), (WeightFormat::F32, 108 * 4));
        // ONNX's [M, C, kH, kW] order, unpadded: element 81 is row 3's first.
        assert_eq!(bytemuck::pod_read_unaligned::<f32>(&plan.weight_bytes(w)[81 * 4..82 * 4]), 81.0f32 * 0.01);
        assert!(plan.graph.values.iter().all(|v| v.element == ElementType::F32));
        assert!(plan.graph.values.iter().all(|v| v.placement.layout == crate::engine::build::memory::Layout::Nchw));
        let tensors: Vec<String> = plan.tensors().iter().map(ToString::to_string).collect();
        assert_eq!(tensors, ["input `x` f32 [2, 3, 5, 7]", "output `y` f32 [2, 4, 5, 7]"]);

        // A precision this vrseg does not know is refused with a sentence.
        let bytes = std::fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        let at = text.find("\"precision\":\"fp32\"").expect("the graph section names its precision");
        let mut other = bytes.clone();
        other[at + 13..at + 17].copy_from_slice(b"int4");
        std::fs::write(&path, &other).unwrap();
        let err = Plan::open(&path).err().unwrap().to_string();
        assert!(err.contains("\"int4\"") && err.contains("fp16, fp32"), "{err}");
    }

    #[test]
    fn damaged_plans_are_refused_with_a_sentence() {
        let path = scratch("damaged");
        build_plan(tiny_graph(), "tiny.onnx", &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();

        std::fs::write(&path, b"not a plan at all").unwrap();
        let err = Plan::open(&path).err().unwrap();
        assert!(matches!(err, PlanError::NotAPlan { .. }), "{err}");

        std::fs::write(&path, &bytes[..bytes.len() - 300]).unwrap();
        let err = Plan::open(&path).err().unwrap().to_string();
        assert!(err.contains("damaged") && err.contains("weights section ends"), "{err}");

        let mut other = bytes.clone();
        other[8..12].copy_from_slice(&7u32.to_le_bytes());
        std::fs::write(&path, &other).unwrap();
        let err = Plan::open(&path).err().unwrap().to_string();
        assert!(err.contains("version 7 plan") && err.contains("rebuild"), "{err}");

        let mut garbled = bytes.clone();
        garbled[PLAN_HEADER_BYTES] = b'#';
        std::fs::write(&path, &garbled).unwrap();
        let err = Plan::open(&path).err().unwrap().to_string();
        assert!(err.contains("graph section"), "{err}");
    }

    #[test]
    fn a_failed_write_leaves_nothing_behind() {
        let dir = std::env::temp_dir().join(format!("vrseg-plan-{}-fail", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("missing-dir").join("x.plan");
        let err = build_plan(tiny_graph(), "tiny.onnx", &path).unwrap_err();
        assert!(matches!(err, BuildError::Plan(PlanError::Write { .. })), "{err}");
        assert!(!path.exists() && !temp_name(&path).exists());
    }
}

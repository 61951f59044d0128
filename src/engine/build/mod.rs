//! Build time: ONNX → graph → fusions → plan, for `vrseg build-engine`. The
//! runtime never uses this module (it loads plans); the CPU reference
//! executor beside it runs these graphs for tests and for checking a build.

pub mod import;
pub mod ir;
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
    #[error("could not write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

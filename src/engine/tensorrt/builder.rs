//! `vrseg build-engine --backend tensorrt`: ONNX → TensorRT plan → engine
//! file, through TensorRT's ONNX parser and builder.

use std::path::Path;
use std::time::Instant;

use super::error::TensorRtError;
use super::file::{encode_header, write_atomically, EngineMetadata, PartialFile};
use super::handles::{shared_library, BuildSettings, Network};
use super::request::{BuildReport, BuildRequest, Precision};
use super::search::LibrarySearch;
use super::shapes::{metadata_tensor, plan_profile};
use super::{LoadOptions, TensorRtBackend};
use crate::engine::backend::smoke_test;
use crate::gpu::Gpu;

/// Inferences on zeros after a build: the first captures the CUDA graph,
/// the others replay it.
const VERIFY_RUNS: usize = 3;

/// Builds the engine `request` describes. In order, so that the first
/// problem found is the one reported: the request itself (no TensorRT
/// needed), TensorRT and its ONNX parser ("TensorRT not found (searched:
/// …)"), the GPU, the model, the build. The engine is written to
/// `OUT.partial`; with `request.verify` it is loaded back from there through
/// [`TensorRtBackend`] and run on zeros ([`smoke_test`]); only then is it
/// renamed to `OUT`. Any failure removes the partial file, so `OUT` exists
/// only as a whole engine that (unless `--no-verify`) ran. The timing cache
/// is written whole or not at all too.
pub fn build_engine(request: &BuildRequest, search: &LibrarySearch) -> Result<BuildReport, TensorRtError> {
    request.check(super::header_version())?;
    let library = shared_library(search)?;
    library.require_parser()?;
    let gpu = Gpu::open(request.gpu)?;
    gpu.bind_to_thread()?;
    let started = Instant::now();

    let mut network = Network::parse(&library, &request.model)?;
    let inputs = network.inputs()?;
    let outputs = network.outputs()?;
    let profile = plan_profile(&inputs, request.batch, request.input_size)?;
    let timing_cache = match &request.timing_cache {
        Some(path) if path.exists() => {
            Some(std::fs::read(path).map_err(|source| TensorRtError::Read { path: path.clone(), source })?)
        }
        _ => None,
    };
    let settings = BuildSettings {
        workspace_bytes: request.workspace_mib.unwrap_or(0).saturating_mul(1 << 20),
        fp16: request.precision == Precision::Fp16,
        int8: request.precision == Precision::Int8,
        optimization_level: request.optimization_level,
        profile,
        timing_cache,
    };
    let built = network.build(&settings)?;
    let plan = built.plan.as_slice();

    let props = gpu.properties();
    let metadata = EngineMetadata {
        tensorrt: library.version(),
        tensorrt_build: library.build(),
        gpu_name: props.name.clone(),
        compute_capability: props.compute_capability,
        vrseg_version: env!("CARGO_PKG_VERSION").to_string(),
        source: file_name(&request.model),
        precision: request.precision.name().to_string(),
        batch: request.batch,
        tensors: inputs.iter().chain(&outputs).map(metadata_tensor).collect(),
    };
    let header = encode_header(&metadata, plan);
    // Removed on every failure below until `commit`.
    let engine = PartialFile::write(&request.output, &[&header, plan])?;

    let mut warnings = Vec::new();
    if built.timing_cache_rejected {
        if let Some(path) = &request.timing_cache {
            warnings.push(format!(
                "the timing cache {} was made by another GPU or TensorRT release; built without it and replaced it",
                path.display()
            ));
        }
    }
    if let (Some(path), Some(cache)) = (&request.timing_cache, &built.timing_cache) {
        write_atomically(path, &[cache.as_slice()])?;
    }
    let bytes = (header.len() + plan.len()) as u64;
    let seconds = started.elapsed().as_secs_f64();
    // The builder's memory goes before the engine is loaded back.
    drop(built);
    drop(network);
    let verified = if request.verify {
        let options = LoadOptions {
            batch: None,
            cuda_graph: true,
            search: search.clone(),
            shown_path: Some(request.output.clone()),
        };
        let report = TensorRtBackend::load(&gpu, engine.path(), &options)
            .map_err(|e| e.to_string())
            .and_then(|backend| smoke_test(&gpu, backend, VERIFY_RUNS).map_err(|e| e.to_string()))
            .map_err(|reason| TensorRtError::VerifyFailed { path: request.output.clone(), reason })?;
        warnings.extend(report.warnings.iter().cloned());
        Some(report)
    } else {
        None
    };
    engine.commit()?;
    Ok(BuildReport {
        output: request.output.clone(),
        bytes,
        tensorrt: library.version(),
        gpu: format!("{} ({})", props.name, props.sm()),
        tensors: metadata.tensors,
        seconds,
        timing_cache: request.timing_cache.clone(),
        verified,
        warnings,
    })
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string())
}

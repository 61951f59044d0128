//! Errors of the TensorRT backend. Each says what failed and what to do.

use std::path::PathBuf;

use super::version::TrtVersion;
use crate::gpu::GpuError;

#[derive(Debug, thiserror::Error)]
pub enum TensorRtError {
    /// libnvinfer could not be loaded from any candidate.
    #[error(
        "TensorRT not found (searched: {searched}){detail}; install TensorRT 10 or 11 and set TENSORRT_ROOT to its \
         directory, or add its lib directory to LD_LIBRARY_PATH"
    )]
    NotFound {
        searched: String,
        /// Candidates that exist but failed to load (a missing dependency, say), as "; …".
        detail: String,
    },

    /// libnvinfer loaded, libnvonnxparser did not (building needs it).
    #[error(
        "TensorRT's ONNX parser not found (searched: {searched}){detail}; it ships with TensorRT as libnvonnxparser: \
         install it beside {nvinfer}"
    )]
    ParserNotFound { searched: String, detail: String, nvinfer: String },

    /// TensorRT is there but this binary has no shim to drive it.
    #[error(
        "this vrseg was built without TensorRT headers, so its TensorRT backend is not compiled{found}; rebuild \
         vrseg with TENSORRT_ROOT set to your TensorRT directory (or after tools/setup.sh) to use it"
    )]
    NotBuilt {
        /// " (TensorRT itself is installed: …)" when the library loads.
        found: String,
    },

    /// The library cannot be driven by a shim compiled against these headers.
    #[error(
        "TensorRT {library} ({path}) does not match the TensorRT {headers} headers vrseg's TensorRT backend was \
         compiled against: {reason}; rebuild vrseg with TENSORRT_ROOT pointing at this TensorRT"
    )]
    LibraryMismatch { library: String, path: String, headers: TrtVersion, reason: String },

    /// libnvonnxparser and libnvinfer come from different releases.
    #[error(
        "TensorRT's ONNX parser {path} is from TensorRT {parser}, but libnvinfer ({nvinfer}) is {version}: use the \
         parser of the same TensorRT release"
    )]
    ParserMismatch { path: String, parser: TrtVersion, nvinfer: String, version: TrtVersion },

    /// The engine file was made by another TensorRT release.
    #[error(
        "{path} was built with TensorRT {built}, but this machine has TensorRT {found}: a TensorRT engine loads only \
         into the release that built it; rebuild it here with `vrseg build-engine --backend tensorrt`"
    )]
    EngineVersionMismatch { path: PathBuf, built: TrtVersion, found: TrtVersion },

    /// The engine file was made for another GPU architecture.
    #[error(
        "{path} was built for {built}, but {running}: a TensorRT engine runs only on the GPU architecture it was \
         built on; rebuild it on this GPU with `vrseg build-engine --backend tensorrt`"
    )]
    EngineForOtherGpu {
        path: PathBuf,
        /// "NVIDIA H100 80GB HBM3 (sm_90)"
        built: String,
        /// "GPU 0 is NVIDIA GeForce RTX 4090 (sm_89)"
        running: String,
    },

    #[error("{path} is not a usable vrseg TensorRT engine: {reason}")]
    BadEngineFile { path: PathBuf, reason: String },

    #[error("{path}: tensor `{tensor}` {reason}")]
    UnsupportedTensor { path: PathBuf, tensor: String, reason: String },

    /// Arguments that cannot work, found before TensorRT is touched.
    #[error("{0}")]
    InvalidRequest(String),

    /// What this TensorRT release cannot do.
    #[error("{0}")]
    Unsupported(String),

    /// The engine was built but did not run back through the runtime path;
    /// it was not written.
    #[error(
        "TensorRT built {path}, but running it back on zeros failed, so it was not written: {reason} (--no-verify \
         skips this check and keeps the engine)"
    )]
    VerifyFailed { path: PathBuf, reason: String },

    /// A shim call failed; `message` quotes TensorRT's log.
    #[error("{call} failed: {message}")]
    Call { call: &'static str, message: String },

    #[error("could not read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },

    #[error("could not write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },

    #[error(transparent)]
    Gpu(#[from] GpuError),
}

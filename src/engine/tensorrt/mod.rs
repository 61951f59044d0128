//! The TensorRT backend: TensorRT engines behind the [`Backend`] trait, and
//! `vrseg build-engine --backend tensorrt`.
//!
//! vrseg never links TensorRT. A C++ shim (`shim.h`, `shim.cpp`; extern "C",
//! opaque handles, create/destroy pairs, errors returned, no exception across
//! the boundary) is compiled against TensorRT's headers by build.rs, and at
//! run time dlopens libnvinfer and libnvonnxparser and reaches TensorRT only
//! through their exported factory functions. A machine without TensorRT runs
//! vrseg as before; asking for this backend there says "TensorRT not found
//! (searched: …)".
//!
//! The layers, as for CUDA (style.md, "three layers"):
//! 1. `sys`: bindgen's declarations of `shim.h` (generated at build time);
//! 2. `checked`: one function per shim call, returning `Result` and naming
//!    the call, `unsafe` where the caller keeps a promise;
//! 3. `handles`: owning types (`Library`, `Runtime`, `Engine`, `Context`,
//!    `Network`, `Blob`) that destroy their handle once and keep their
//!    parent alive;
//!
//! and on top, [`TensorRtBackend`] (load, bind, enqueue, CUDA graph) and
//! [`build_engine`]. The decisions that need no TensorRT live apart, tested
//! on any machine: [`search`] (where the libraries are looked for),
//! [`file`] (the engine file's header and its checks against this GPU and
//! TensorRT release), [`shapes`] (optimisation profiles, run-time shapes),
//! [`request`] (what `build-engine` may ask for).
//!
//! A build without TensorRT headers compiles `absent.rs` in place of the
//! shim layers: the same entry points, which report why the backend is
//! unavailable.
//!
//! [`Backend`]: crate::engine::backend::Backend

pub mod error;
pub mod file;
pub mod request;
pub mod search;
pub mod shapes;
pub mod version;

#[cfg(vrseg_tensorrt_shim)]
mod builder;
#[cfg(vrseg_tensorrt_shim)]
mod checked;
#[cfg(vrseg_tensorrt_shim)]
mod handles;
#[cfg(vrseg_tensorrt_shim)]
mod runtime;
#[cfg(vrseg_tensorrt_shim)]
mod sys;

#[cfg(not(vrseg_tensorrt_shim))]
mod absent;

#[cfg(all(test, vrseg_tensorrt_shim))]
mod tests;

use std::sync::atomic::AtomicI32;

#[cfg(not(vrseg_tensorrt_shim))]
pub use absent::{build_engine, load_library, TensorRtBackend};
#[cfg(vrseg_tensorrt_shim)]
pub use builder::build_engine;
#[cfg(vrseg_tensorrt_shim)]
pub use runtime::TensorRtBackend;

pub use error::TensorRtError;
pub use file::{BatchRange, EngineFile, EngineMetadata};
pub use request::{parse_batch, BuildReport, BuildRequest, Precision};
pub use search::LibrarySearch;
pub use version::TrtVersion;

/// How [`TensorRtBackend::load`] sets the engine up.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The batch to run at; None: the first profile's optimum (or the
    /// engine's fixed batch).
    pub batch: Option<usize>,
    /// Capture the inference into a CUDA graph at the first enqueue and
    /// replay it while the stream and buffers stay the same.
    pub cuda_graph: bool,
    pub search: LibrarySearch,
    /// The path messages name, when it is not the file loaded
    /// (`build-engine` verifies an engine in its `.partial` file, before
    /// the rename, and names the final path).
    pub shown_path: Option<std::path::PathBuf>,
}

impl Default for LoadOptions {
    fn default() -> LoadOptions {
        LoadOptions { batch: None, cuda_graph: true, search: LibrarySearch::from_env(), shown_path: None }
    }
}

/// The TensorRT that loaded.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LibraryInfo {
    pub version: TrtVersion,
    pub build: Option<i32>,
    pub nvinfer: String,
    pub parser: Option<String>,
}

/// Loads TensorRT with `search` (once per process and search: later calls
/// return the library already loaded), without touching a GPU. Fails with "TensorRT
/// not found (searched: …)", a version mismatch with the shim's headers, or
/// "built without TensorRT headers".
#[cfg(vrseg_tensorrt_shim)]
pub fn load_library(search: &LibrarySearch) -> Result<LibraryInfo, TensorRtError> {
    let library = handles::shared_library(search)?;
    Ok(LibraryInfo {
        version: library.version(),
        build: library.build(),
        nvinfer: library.nvinfer_path().to_string(),
        parser: library.parser_path().map(str::to_string),
    })
}

/// The TensorRT release whose headers the shim was compiled against; None
/// when this build has no shim.
pub fn header_version() -> Option<TrtVersion> {
    #[cfg(vrseg_tensorrt_shim)]
    {
        TrtVersion::from_encoded(checked::header_version())
    }
    #[cfg(not(vrseg_tensorrt_shim))]
    {
        None
    }
}

/// Where the shim's headers came from, as build.rs recorded it
/// ("TensorRT 11.4.0 at …", or "none (…)").
pub fn headers_description() -> &'static str {
    env!("VRSEG_TENSORRT_HEADERS")
}

/// 1 when a library of this version can be driven by the shim (same major,
/// not older than the headers); always false without a shim.
pub fn library_compatible(version: TrtVersion) -> bool {
    #[cfg(vrseg_tensorrt_shim)]
    {
        checked::library_compatible(version.encoded())
    }
    #[cfg(not(vrseg_tensorrt_shim))]
    {
        let _ = version;
        false
    }
}

/// How much of TensorRT's own log reaches stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Nothing (a failing call's error still quotes TensorRT's errors).
    Quiet = 0,
    /// Warnings (the default).
    Warnings = 2,
    /// Warnings and information.
    Info = 3,
    /// Everything, errors included as TensorRT logs them.
    Verbose = 4,
}

pub(crate) static LOG_LEVEL: AtomicI32 = AtomicI32::new(LogLevel::Warnings as i32);

pub fn set_log_level(level: LogLevel) {
    LOG_LEVEL.store(level as i32, std::sync::atomic::Ordering::Relaxed);
}

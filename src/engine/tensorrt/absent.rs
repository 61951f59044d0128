//! This build has no TensorRT shim (no headers were found when it was
//! compiled). The same entry points as the live backend: they check what
//! needs no TensorRT, then say why the backend is unavailable — "TensorRT
//! not found (searched: …)" where TensorRT is absent too, "built without
//! TensorRT headers" where it is installed.

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;

use cudarc::driver::CudaStream;

use super::error::TensorRtError;
use super::file::{EngineFile, EngineMetadata};
use super::request::{BuildReport, BuildRequest};
use super::search::LibrarySearch;
use super::{LibraryInfo, LoadOptions};
use crate::engine::backend::{Backend, BackendError, TensorDesc};
use crate::gpu::{DeviceView, Gpu};

/// Why the backend cannot run: TensorRT missing, or this build lacking the shim.
fn unavailable(search: &LibrarySearch) -> TensorRtError {
    for candidate in search.candidates("nvinfer") {
        // SAFETY: loading runs the library's initialisers; TensorRT's are
        // built for dlopen. The handle is dropped (dlclose) at once.
        if unsafe { libloading::Library::new(&candidate) }.is_ok() {
            return TensorRtError::NotBuilt { found: format!(" (TensorRT itself is installed: {candidate})") };
        }
    }
    TensorRtError::NotFound { searched: search.describe("nvinfer"), detail: String::new() }
}

pub fn load_library(search: &LibrarySearch) -> Result<LibraryInfo, TensorRtError> {
    Err(unavailable(search))
}

pub fn build_engine(request: &BuildRequest, search: &LibrarySearch) -> Result<BuildReport, TensorRtError> {
    request.check(None)?;
    Err(unavailable(search))
}

/// Never constructed in this build.
pub struct TensorRtBackend {
    never: Infallible,
}

impl std::fmt::Debug for TensorRtBackend {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.never {}
    }
}

impl TensorRtBackend {
    pub fn load(gpu: &Gpu, path: &Path, options: &LoadOptions) -> Result<TensorRtBackend, TensorRtError> {
        let _ = gpu;
        EngineFile::open(path)?;
        Err(unavailable(&options.search))
    }

    pub fn metadata(&self) -> Option<&EngineMetadata> {
        match self.never {}
    }
}

impl Backend for TensorRtBackend {
    fn name(&self) -> &str {
        match self.never {}
    }

    fn batch_size(&self) -> usize {
        match self.never {}
    }

    fn tensors(&self) -> &[TensorDesc] {
        match self.never {}
    }

    fn enqueue(
        &mut self,
        _stream: &Arc<CudaStream>,
        _inputs: &[DeviceView<'_>],
        _outputs: &[DeviceView<'_>],
    ) -> Result<(), BackendError> {
        match self.never {}
    }
}

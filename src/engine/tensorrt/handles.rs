//! Owning types over the shim's handles: each destroys its handle exactly
//! once in `Drop`, and holds an `Arc` to the object it was made from, so a
//! runtime outlives its engines, an engine its contexts, and the library
//! everything (TensorRT's ownership rules, enforced by types). They reach
//! the shim only through `checked`.
//!
//! Thread safety follows TensorRT's ("Thread Safety" in its developer
//! guide): the runtime and engines may be shared between threads, a builder
//! (here: `Network`) and an execution context are used by one thread at a
//! time, which `&mut self` on their mutating calls ensures.

use std::ffi::{c_char, c_void, CString};
use std::io::Write as _;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use super::checked::{self, owned_string};
use super::error::TensorRtError;
use super::search::LibrarySearch;
use super::shapes::{IoTensor, ProfileInput};
use super::sys;
use super::version::{version_in_file_name, TrtVersion};
use super::{LogLevel, LOG_LEVEL};
use crate::engine::backend::TensorRole;

/// TensorRT's log callback. Errors (severity 0 and 1) are quoted by the
/// failing call's error already, so they are printed only when verbose.
///
/// Called from any thread, TensorRT's builder threads included; it must not
/// unwind, hence no `eprintln!` (which panics when stderr is closed).
unsafe extern "C" fn log_to_stderr(_user: *mut c_void, severity: i32, message: *const c_char) {
    let level = LOG_LEVEL.load(Ordering::Relaxed);
    let shown = if severity <= 1 { level >= LogLevel::Verbose as i32 } else { severity <= level };
    if !shown {
        return;
    }
    // SAFETY: TensorRT passes a NUL-terminated message valid for this call.
    let Some(text) = (unsafe { owned_string(message) }) else { return };
    let label = match severity {
        0 => "internal error",
        1 => "error",
        2 => "warning",
        3 => "info",
        _ => "verbose",
    };
    let _ = writeln!(std::io::stderr().lock(), "TensorRT {label}: {text}");
}

/// libnvinfer (and libnvonnxparser when it loaded), opened by the shim.
pub struct Library {
    raw: NonNull<sys::vrseg_trt_library>,
    version: TrtVersion,
    build: Option<i32>,
    nvinfer_path: String,
    parser_path: Option<String>,
    parser_error: String,
    parser_searched: String,
}

// SAFETY: after `vrseg_trt_library_open` the shim's library object is only
// read (paths, function pointers); its logger serialises itself with a mutex,
// and TensorRT's factory functions may be called from any thread.
unsafe impl Send for Library {}
// SAFETY: as above: no method mutates the object.
unsafe impl Sync for Library {}

impl Drop for Library {
    fn drop(&mut self) {
        // SAFETY: `raw` came from vrseg_trt_library_open and is closed only
        // here; every object made from it holds an Arc to this Library, so
        // none is left.
        unsafe { checked::library_close(self.raw) };
    }
}

/// The libraries opened so far, by the search that found them. TensorRT
/// keeps the first logger it is given for the whole process, so vrseg opens
/// its libraries once and keeps them; a run uses one search
/// (`LibrarySearch::from_env`), so in practice this holds one entry. Keyed
/// by search so that a call never gets a library its own search would not
/// have found (tests search stand-in directories one after another). A
/// failure is not cached: the next call searches again.
static SHARED: Mutex<Vec<(LibrarySearch, Arc<Library>)>> = Mutex::new(Vec::new());

/// Opens TensorRT with `search` once per process, or returns the library
/// that search opened before.
pub fn shared_library(search: &LibrarySearch) -> Result<Arc<Library>, TensorRtError> {
    let mut shared = SHARED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, library)) = shared.iter().find(|(s, _)| s == search) {
        return Ok(library.clone());
    }
    let library = Arc::new(Library::open(search)?);
    shared.push((search.clone(), library.clone()));
    Ok(library)
}

fn cstrings(candidates: &[String]) -> Vec<CString> {
    // A candidate with a NUL byte cannot name a file; leave it out.
    candidates.iter().filter_map(|c| CString::new(c.as_str()).ok()).collect()
}

impl Library {
    /// dlopens libnvinfer (required) and libnvonnxparser (optional until a
    /// build asks for it), then refuses a library these headers cannot drive.
    pub fn open(search: &LibrarySearch) -> Result<Library, TensorRtError> {
        let nvinfer = cstrings(&search.candidates("nvinfer"));
        let parser = cstrings(&search.candidates("nvonnxparser"));
        let raw = checked::library_open(&nvinfer, &parser, log_to_stderr).map_err(|f| {
            if f.status == sys::vrseg_trt_status::VRSEG_TRT_NOT_FOUND {
                let detail = if f.message == "no reason given" { String::new() } else { format!("; {}", f.message) };
                TensorRtError::NotFound { searched: search.describe("nvinfer"), detail }
            } else {
                TensorRtError::Call { call: "loading TensorRT", message: f.message }
            }
        })?;
        // SAFETY: `raw` is live (just opened, closed only by `Library`'s Drop).
        let checked::LibraryFacts { version: encoded, build, nvinfer_path, parser_path, parser_error } =
            unsafe { checked::library_facts(raw) };
        let headers = super::header_version().expect("the shim is compiled in this build");
        let library = Library {
            raw,
            version: TrtVersion::from_encoded(encoded).unwrap_or(TrtVersion::new(0, 0, 0)),
            build: (build >= 0).then_some(build),
            nvinfer_path,
            parser_path,
            parser_error,
            parser_searched: search.describe("nvonnxparser"),
        };
        if !checked::library_compatible(encoded) {
            // Dropping `library` closes the handle; no TensorRT object was made.
            return Err(mismatch(&library, encoded, headers));
        }
        Ok(library)
    }

    pub fn version(&self) -> TrtVersion {
        self.version
    }

    pub fn build(&self) -> Option<i32> {
        self.build
    }

    pub fn nvinfer_path(&self) -> &str {
        &self.nvinfer_path
    }

    pub fn parser_path(&self) -> Option<&str> {
        self.parser_path.as_deref()
    }

    /// Fails unless the ONNX parser loaded and comes from the same TensorRT
    /// release as libnvinfer (where its file name says which).
    pub fn require_parser(&self) -> Result<(), TensorRtError> {
        let Some(parser) = &self.parser_path else {
            let detail = if self.parser_error.is_empty() { String::new() } else { format!("; {}", self.parser_error) };
            return Err(TensorRtError::ParserNotFound {
                searched: self.parser_searched.clone(),
                detail,
                nvinfer: self.nvinfer_path.clone(),
            });
        };
        // The file behind the soname: TensorRT's lib/ links libnvonnxparser.so.10
        // to libnvonnxparser.so.10.8.0, whose name says the release.
        let real = std::fs::canonicalize(parser).map(|p| p.to_string_lossy().into_owned());
        if let Some(found) = version_in_file_name(real.as_deref().unwrap_or(parser)) {
            if (found.major, found.minor) != (self.version.major, self.version.minor) {
                return Err(TensorRtError::ParserMismatch {
                    path: real.unwrap_or_else(|_| parser.clone()),
                    parser: found,
                    nvinfer: self.nvinfer_path.clone(),
                    version: self.version,
                });
            }
        }
        Ok(())
    }
}

fn mismatch(library: &Library, encoded: i32, headers: TrtVersion) -> TensorRtError {
    let found = TrtVersion::from_encoded(encoded);
    let reason = match found {
        None => format!("getInferLibVersion() returned {encoded}, which is no TensorRT version"),
        Some(v) if v.major != headers.major => {
            "the major versions differ, and TensorRT's C++ interfaces change between major versions".to_string()
        }
        Some(_) => "the library is older than the headers and may lack what they declare".to_string(),
    };
    TensorRtError::LibraryMismatch {
        library: found.map(|v| v.to_string()).unwrap_or_else(|| encoded.to_string()),
        path: library.nvinfer_path.clone(),
        headers,
        reason,
    }
}

/// An `IRuntime`.
pub struct Runtime {
    raw: NonNull<sys::vrseg_trt_runtime>,
    _library: Arc<Library>,
}

// SAFETY: TensorRT's runtime may be used from several threads at once
// (deserialising is its only use here).
unsafe impl Send for Runtime {}
// SAFETY: as above.
unsafe impl Sync for Runtime {}

impl Drop for Runtime {
    fn drop(&mut self) {
        // SAFETY: created in `new`, destroyed only here; every engine holds an
        // Arc to this runtime, so none outlives it.
        unsafe { checked::runtime_destroy(self.raw) };
    }
}

impl Runtime {
    pub fn new(library: &Arc<Library>) -> Result<Arc<Runtime>, TensorRtError> {
        let raw = checked::runtime_create(library.raw)?;
        Ok(Arc::new(Runtime { raw, _library: library.clone() }))
    }

    /// Deserialises `plan`. The CUDA context of the GPU to run on must be
    /// current on this thread (`Gpu::bind_to_thread`).
    pub fn deserialize(self: &Arc<Self>, plan: &[u8]) -> Result<Arc<Engine>, TensorRtError> {
        // SAFETY: `self.raw` is live while `self` is; the context promise is
        // this function's documented precondition, which every caller keeps
        // by binding the GPU first (a wrong context makes TensorRT fail, not
        // corrupt memory).
        let raw = unsafe { checked::engine_deserialize(self.raw, plan) }?;
        Ok(Arc::new(Engine { raw, _runtime: self.clone() }))
    }
}

/// An `ICudaEngine`.
pub struct Engine {
    raw: NonNull<sys::vrseg_trt_engine>,
    _runtime: Arc<Runtime>,
}

// SAFETY: an engine's queries and createExecutionContext may be called from
// several threads (TensorRT's thread-safety rules); nothing here mutates it.
unsafe impl Send for Engine {}
// SAFETY: as above.
unsafe impl Sync for Engine {}

impl Drop for Engine {
    fn drop(&mut self) {
        // SAFETY: created by deserialize, destroyed only here; contexts hold an
        // Arc to their engine, so none outlives it.
        unsafe { checked::engine_destroy(self.raw) };
    }
}

fn dims_vec(dims: &sys::vrseg_trt_dims) -> Vec<i64> {
    let rank = dims.rank.clamp(0, sys::VRSEG_TRT_MAX_DIMS as i32) as usize;
    dims.d[..rank].to_vec()
}

fn dims_c(shape: &[i64]) -> Result<sys::vrseg_trt_dims, TensorRtError> {
    if shape.len() > sys::VRSEG_TRT_MAX_DIMS as usize {
        return Err(TensorRtError::InvalidRequest(format!("a shape of rank {} exceeds TensorRT's 8", shape.len())));
    }
    let mut dims = sys::vrseg_trt_dims { rank: shape.len() as i32, ..Default::default() };
    dims.d[..shape.len()].copy_from_slice(shape);
    Ok(dims)
}

/// # Safety
/// `info.name` is valid for the call (its engine or network is alive).
unsafe fn io_tensor(info: &sys::vrseg_trt_tensor_info) -> IoTensor {
    let role = match info.mode {
        1 => Some(TensorRole::Input),
        2 => Some(TensorRole::Output),
        _ => None,
    };
    IoTensor {
        // SAFETY: passed on from the caller.
        name: unsafe { owned_string(info.name) }.unwrap_or_default(),
        role,
        dtype: info.dtype,
        shape: dims_vec(&info.shape),
        on_device: info.on_device == 1,
        linear: info.linear == 1,
    }
}

impl Engine {
    pub fn io_tensors(&self) -> Result<Vec<IoTensor>, TensorRtError> {
        // SAFETY: `self.raw` is live while `self` is.
        let count = unsafe { checked::engine_io_count(self.raw) };
        (0..count)
            .map(|i| {
                // SAFETY: live handle; the name is copied while the engine lives.
                unsafe { checked::engine_io_info(self.raw, i).map(|info| io_tensor(&info)) }
            })
            .collect()
    }

    pub fn profile_count(&self) -> i32 {
        // SAFETY: `self.raw` is live while `self` is.
        unsafe { checked::engine_profile_count(self.raw) }
    }

    /// (min, opt, max) of input `name` in `profile`.
    pub fn profile_shape(&self, name: &str, profile: i32) -> Result<[Vec<i64>; 3], TensorRtError> {
        // SAFETY: `self.raw` is live while `self` is.
        let [min, opt, max] = unsafe { checked::engine_profile_shape(self.raw, name, profile) }?;
        Ok([dims_vec(&min), dims_vec(&opt), dims_vec(&max)])
    }

    /// Activation memory a context needs for `profile`.
    pub fn device_memory(&self, profile: i32) -> Result<usize, TensorRtError> {
        // SAFETY: `self.raw` is live while `self` is.
        let bytes = unsafe { checked::engine_device_memory(self.raw, profile) }?;
        usize::try_from(bytes).map_err(|_| TensorRtError::Call {
            call: "ICudaEngine::getDeviceMemorySizeForProfileV2",
            message: format!("returned {bytes} bytes"),
        })
    }

    pub fn create_context(self: &Arc<Self>) -> Result<Context, TensorRtError> {
        // SAFETY: the engine is live and the Arc kept in Context outlives it.
        let raw = unsafe { checked::context_create(self.raw) }?;
        Ok(Context { raw, _engine: self.clone() })
    }
}

/// An `IExecutionContext` with caller-provided device memory.
pub struct Context {
    raw: NonNull<sys::vrseg_trt_context>,
    _engine: Arc<Engine>,
}

// SAFETY: an execution context may move between threads; it is used by one
// at a time, which `&mut self` on every call that changes it ensures.
unsafe impl Send for Context {}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: created by create_context, destroyed only here.
        unsafe { checked::context_destroy(self.raw) };
    }
}

impl Context {
    pub fn set_input_shape(&mut self, name: &str, shape: &[i64]) -> Result<(), TensorRtError> {
        let dims = dims_c(shape)?;
        // SAFETY: live handle, exclusively borrowed.
        unsafe { checked::context_set_input_shape(self.raw, name, &dims) }
    }

    pub fn tensor_shape(&self, name: &str) -> Result<Vec<i64>, TensorRtError> {
        // SAFETY: live handle.
        unsafe { checked::context_tensor_shape(self.raw, name) }.map(|d| dims_vec(&d))
    }

    /// # Safety
    /// `[ptr, ptr + bytes)` is device memory of this context's GPU that stays
    /// allocated, and used by nothing else, while work enqueued on this
    /// context may run.
    pub unsafe fn set_device_memory(&mut self, ptr: u64, bytes: usize) -> Result<(), TensorRtError> {
        // SAFETY: live handle, exclusively borrowed; memory: passed on.
        unsafe { checked::context_set_device_memory(self.raw, ptr, bytes as i64) }
    }

    /// # Safety
    /// `ptr` is device memory of this context's GPU, large enough for tensor
    /// `name`, valid while work enqueued with this binding may run.
    pub unsafe fn set_tensor_address(&mut self, name: &str, ptr: u64) -> Result<(), TensorRtError> {
        // SAFETY: live handle, exclusively borrowed; memory: passed on.
        unsafe { checked::context_set_tensor_address(self.raw, name, ptr) }
    }

    /// # Safety
    /// Every I/O tensor and the device memory are bound as their setters
    /// require; `stream` is a live stream of this context's GPU, whose CUDA
    /// context is current on this thread.
    pub unsafe fn enqueue(&mut self, stream: *mut c_void) -> Result<(), TensorRtError> {
        // SAFETY: passed on.
        unsafe { checked::context_enqueue(self.raw, stream) }
    }
}

/// A builder holding one parsed ONNX network.
pub struct Network {
    raw: NonNull<sys::vrseg_trt_network>,
    _library: Arc<Library>,
}

// SAFETY: a builder may move between threads; it is used by one at a time
// (`&mut self` for the build).
unsafe impl Send for Network {}

impl Drop for Network {
    fn drop(&mut self) {
        // SAFETY: created by parse, destroyed only here.
        unsafe { checked::network_destroy(self.raw) };
    }
}

/// What `Network::build` asks of TensorRT.
#[derive(Debug, Clone, Default)]
pub struct BuildSettings {
    pub workspace_bytes: u64,
    pub fp16: bool,
    pub int8: bool,
    pub optimization_level: Option<u8>,
    pub profile: Option<Vec<ProfileInput>>,
    pub timing_cache: Option<Vec<u8>>,
}

pub struct BuildOutput {
    pub plan: Blob,
    pub timing_cache: Option<Blob>,
    pub timing_cache_rejected: bool,
}

impl Network {
    /// Parses `onnx`; needs the ONNX parser (`Library::require_parser`).
    pub fn parse(library: &Arc<Library>, onnx: &Path) -> Result<Network, TensorRtError> {
        library.require_parser()?;
        let raw = checked::network_parse(library.raw, onnx)?;
        Ok(Network { raw, _library: library.clone() })
    }

    fn tensors(&self, input: bool) -> Result<Vec<IoTensor>, TensorRtError> {
        // SAFETY: `self.raw` is live while `self` is.
        let count = unsafe { checked::network_io_count(self.raw, input) };
        (0..count)
            .map(|i| {
                // SAFETY: live handle; the name is copied while the network lives.
                unsafe { checked::network_io_info(self.raw, input, i).map(|info| io_tensor(&info)) }
            })
            .collect()
    }

    pub fn inputs(&self) -> Result<Vec<IoTensor>, TensorRtError> {
        self.tensors(true)
    }

    pub fn outputs(&self) -> Result<Vec<IoTensor>, TensorRtError> {
        self.tensors(false)
    }

    /// Builds a plan. The CUDA context of the GPU to build for must be
    /// current on this thread.
    pub fn build(&mut self, settings: &BuildSettings) -> Result<BuildOutput, TensorRtError> {
        let names: Vec<CString> = match &settings.profile {
            Some(p) => p
                .iter()
                .map(|i| {
                    CString::new(i.name.as_str())
                        .map_err(|_| TensorRtError::InvalidRequest(format!("input name {:?} has a NUL", i.name)))
                })
                .collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        let mut profile = Vec::new();
        for (input, name) in settings.profile.iter().flatten().zip(&names) {
            profile.push(sys::vrseg_trt_profile_input {
                name: name.as_ptr(),
                min: dims_c(&input.min)?,
                opt: dims_c(&input.opt)?,
                max: dims_c(&input.max)?,
            });
        }
        let cache = settings.timing_cache.as_deref().unwrap_or(&[]);
        let config = sys::vrseg_trt_build_config {
            workspace_bytes: settings.workspace_bytes,
            fp16: i32::from(settings.fp16),
            int8: i32::from(settings.int8),
            optimization_level: settings.optimization_level.map(i32::from).unwrap_or(-1),
            profile: if profile.is_empty() { std::ptr::null() } else { profile.as_ptr() },
            profile_count: profile.len(),
            timing_cache: if cache.is_empty() { std::ptr::null() } else { cache.as_ptr().cast() },
            timing_cache_bytes: cache.len(),
        };
        // SAFETY: live handle, exclusively borrowed; `config` and everything
        // it points to (`profile`, `names`, `cache`) outlive the call. The
        // GPU context promise is this function's documented precondition.
        let result = unsafe { checked::network_build(self.raw, &config) }.map_err(|(status, error)| {
            if status == sys::vrseg_trt_status::VRSEG_TRT_UNSUPPORTED {
                match error {
                    TensorRtError::Call { message, .. } => TensorRtError::Unsupported(message),
                    other => other,
                }
            } else {
                error
            }
        })?;
        let plan = NonNull::new(result.plan).map(|raw| Blob { raw });
        let timing_cache = NonNull::new(result.timing_cache).map(|raw| Blob { raw });
        let plan = plan.ok_or_else(|| TensorRtError::Call {
            call: "IBuilder::buildSerializedNetwork",
            message: "the shim returned success and no plan".into(),
        })?;
        Ok(BuildOutput { plan, timing_cache, timing_cache_rejected: result.timing_cache_rejected == 1 })
    }
}

/// Bytes TensorRT returned (`IHostMemory`).
pub struct Blob {
    raw: NonNull<sys::vrseg_trt_blob>,
}

// SAFETY: an IHostMemory is an immutable byte buffer once returned.
unsafe impl Send for Blob {}
// SAFETY: as above.
unsafe impl Sync for Blob {}

impl Drop for Blob {
    fn drop(&mut self) {
        // SAFETY: handed to us by network_build, destroyed only here; slices
        // from `as_slice` borrow `self`, so none outlives it.
        unsafe { checked::blob_destroy(self.raw) };
    }
}

impl Blob {
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: live handle; data/size describe TensorRT's buffer, which
        // lives until the handle is destroyed, which `&self` prevents.
        unsafe { checked::blob_bytes(self.raw) }
    }
}

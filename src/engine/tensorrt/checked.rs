//! The thin layer over `sys`: one function per shim call, each returning a
//! `Result` whose error names the call and quotes the shim's sentence (which
//! quotes TensorRT's log). Calls stay `unsafe` where the caller must keep
//! an ordering or lifetime promise; `handles.rs` keeps them.

use std::ffi::{c_char, c_void, CStr, CString};
use std::ptr::NonNull;

use super::error::TensorRtError;
use super::sys;

/// A zeroed error buffer for one call.
fn error_buffer() -> Box<sys::vrseg_trt_error> {
    Box::new(sys::vrseg_trt_error { message: [0; sys::VRSEG_TRT_MESSAGE_BYTES as usize] })
}

fn message(error: &sys::vrseg_trt_error) -> String {
    // SAFETY: the buffer is zero-initialised and the shim writes at most
    // VRSEG_TRT_MESSAGE_BYTES - 1 bytes plus a NUL (snprintf), so a NUL
    // terminates it within its length.
    let text = unsafe { CStr::from_ptr(error.message.as_ptr()) };
    let text = text.to_string_lossy().into_owned();
    if text.is_empty() {
        "no reason given".to_string()
    } else {
        text
    }
}

/// The status of one call, with the error text when it failed.
pub(super) struct Failure {
    pub status: sys::vrseg_trt_status,
    pub message: String,
}

/// Runs `f` with a fresh error buffer; Ok on VRSEG_TRT_OK.
fn run(f: impl FnOnce(*mut sys::vrseg_trt_error) -> sys::vrseg_trt_status) -> Result<(), Failure> {
    let mut error = error_buffer();
    let status = f(&mut *error);
    if status == sys::vrseg_trt_status::VRSEG_TRT_OK {
        Ok(())
    } else {
        Err(Failure { status, message: message(&error) })
    }
}

fn call_error(call: &'static str) -> impl FnOnce(Failure) -> TensorRtError {
    move |f| TensorRtError::Call { call, message: f.message }
}

fn name_cstring(name: &str) -> Result<CString, TensorRtError> {
    CString::new(name).map_err(|_| TensorRtError::InvalidRequest(format!("tensor name {name:?} contains a NUL byte")))
}

fn non_null<T>(ptr: *mut T, call: &'static str) -> Result<NonNull<T>, TensorRtError> {
    NonNull::new(ptr)
        .ok_or_else(|| TensorRtError::Call { call, message: "the shim returned success and a null handle".into() })
}

/// Reads a C string the shim owns.
///
/// # Safety
/// `ptr` is null or a NUL-terminated string valid for the duration of the call.
pub(super) unsafe fn owned_string(ptr: *const c_char) -> Option<String> {
    // SAFETY: passed on from the caller.
    (!ptr.is_null()).then(|| unsafe { CStr::from_ptr(ptr) }.to_string_lossy().into_owned())
}

pub(super) fn header_version() -> i32 {
    // SAFETY: a constant from the compiled headers; no arguments, no state.
    unsafe { sys::vrseg_trt_header_version() }
}

pub(super) fn library_compatible(version: i32) -> bool {
    // SAFETY: pure arithmetic on its argument.
    unsafe { sys::vrseg_trt_library_compatible(version) == 1 }
}

/// The log callback TensorRT's messages reach.
pub(super) type LogFn = unsafe extern "C" fn(*mut c_void, i32, *const c_char);

/// dlopens the libraries. Err carries the raw status, which the caller turns
/// into "not found" or "does not export".
pub(super) fn library_open(
    nvinfer: &[CString],
    parser: &[CString],
    log: LogFn,
) -> Result<NonNull<sys::vrseg_trt_library>, Failure> {
    let nvinfer_ptrs: Vec<*const c_char> = nvinfer.iter().map(|c| c.as_ptr()).collect();
    let parser_ptrs: Vec<*const c_char> = parser.iter().map(|c| c.as_ptr()).collect();
    let mut out: *mut sys::vrseg_trt_library = std::ptr::null_mut();
    run(|error| {
        // SAFETY: the pointer arrays and the strings they point to live until
        // the call returns (the shim copies what it keeps); `log` is a plain
        // function with no user data, valid for the whole process.
        unsafe {
            sys::vrseg_trt_library_open(
                nvinfer_ptrs.as_ptr(),
                nvinfer_ptrs.len(),
                parser_ptrs.as_ptr(),
                parser_ptrs.len(),
                Some(log),
                std::ptr::null_mut(),
                &mut out,
                error,
            )
        }
    })?;
    NonNull::new(out).ok_or(Failure {
        status: sys::vrseg_trt_status::VRSEG_TRT_EXCEPTION,
        message: "the shim returned success and a null handle".into(),
    })
}

/// What the shim recorded when it opened the libraries.
pub(super) struct LibraryFacts {
    /// `getInferLibVersion()`, encoded.
    pub version: i32,
    /// `getInferLibBuildVersion()`, or -1.
    pub build: i32,
    pub nvinfer_path: String,
    pub parser_path: Option<String>,
    /// Why the parser did not load; empty when it did.
    pub parser_error: String,
}

/// # Safety
/// `library` is live (the strings it returns are copied before this returns).
pub(super) unsafe fn library_facts(library: NonNull<sys::vrseg_trt_library>) -> LibraryFacts {
    let raw = library.as_ptr();
    // SAFETY: the caller's promise; these getters only read the handle, and
    // each string is copied while the handle is live.
    unsafe {
        LibraryFacts {
            version: sys::vrseg_trt_library_version(raw),
            build: sys::vrseg_trt_library_build(raw),
            nvinfer_path: owned_string(sys::vrseg_trt_library_nvinfer_path(raw)).unwrap_or_default(),
            parser_path: owned_string(sys::vrseg_trt_library_parser_path(raw)),
            parser_error: owned_string(sys::vrseg_trt_library_parser_error(raw)).unwrap_or_default(),
        }
    }
}

/// # Safety
/// `library` came from [`library_open`], is closed only here, and every
/// object made from it has been destroyed.
pub(super) unsafe fn library_close(library: NonNull<sys::vrseg_trt_library>) {
    // SAFETY: the caller's promise.
    unsafe { sys::vrseg_trt_library_close(library.as_ptr()) }
}

pub(super) fn runtime_create(
    library: NonNull<sys::vrseg_trt_library>,
) -> Result<NonNull<sys::vrseg_trt_runtime>, TensorRtError> {
    let mut out = std::ptr::null_mut();
    // SAFETY: `library` is a live handle (the caller holds its owner).
    run(|error| unsafe { sys::vrseg_trt_runtime_create(library.as_ptr(), &mut out, error) })
        .map_err(call_error("createInferRuntime"))?;
    non_null(out, "createInferRuntime")
}

/// # Safety
/// `runtime` is live, and the CUDA context of the GPU to run on is current.
pub(super) unsafe fn engine_deserialize(
    runtime: NonNull<sys::vrseg_trt_runtime>,
    plan: &[u8],
) -> Result<NonNull<sys::vrseg_trt_engine>, TensorRtError> {
    let mut out = std::ptr::null_mut();
    // SAFETY: `plan` is borrowed for the call, which copies what it keeps;
    // the rest is the caller's promise.
    run(|error| unsafe {
        sys::vrseg_trt_engine_deserialize(runtime.as_ptr(), plan.as_ptr().cast(), plan.len(), &mut out, error)
    })
    .map_err(call_error("IRuntime::deserializeCudaEngine"))?;
    non_null(out, "IRuntime::deserializeCudaEngine")
}

/// # Safety
/// `runtime` came from [`runtime_create`], is destroyed only here, and no
/// engine made from it is left.
pub(super) unsafe fn runtime_destroy(runtime: NonNull<sys::vrseg_trt_runtime>) {
    // SAFETY: the caller's promise.
    unsafe { sys::vrseg_trt_runtime_destroy(runtime.as_ptr()) }
}

/// # Safety
/// `engine` came from [`engine_deserialize`], is destroyed only here, and no
/// context made from it is left.
pub(super) unsafe fn engine_destroy(engine: NonNull<sys::vrseg_trt_engine>) {
    // SAFETY: the caller's promise.
    unsafe { sys::vrseg_trt_engine_destroy(engine.as_ptr()) }
}

/// # Safety
/// `engine` is live.
pub(super) unsafe fn engine_io_count(engine: NonNull<sys::vrseg_trt_engine>) -> i32 {
    // SAFETY: the caller's promise; a query with no other precondition.
    unsafe { sys::vrseg_trt_engine_io_count(engine.as_ptr()) }
}

/// # Safety
/// `engine` is live.
pub(super) unsafe fn engine_profile_count(engine: NonNull<sys::vrseg_trt_engine>) -> i32 {
    // SAFETY: the caller's promise; a query with no other precondition.
    unsafe { sys::vrseg_trt_engine_profile_count(engine.as_ptr()) }
}

/// # Safety
/// `engine` is live; the returned name is valid while it lives.
pub(super) unsafe fn engine_io_info(
    engine: NonNull<sys::vrseg_trt_engine>,
    index: i32,
) -> Result<sys::vrseg_trt_tensor_info, TensorRtError> {
    let mut info = sys::vrseg_trt_tensor_info::default();
    // SAFETY: the caller's promise; `info` is a valid out-pointer.
    run(|error| unsafe { sys::vrseg_trt_engine_io_info(engine.as_ptr(), index, &mut info, error) })
        .map_err(call_error("ICudaEngine I/O tensor query"))?;
    Ok(info)
}

/// # Safety
/// `engine` is live.
pub(super) unsafe fn engine_profile_shape(
    engine: NonNull<sys::vrseg_trt_engine>,
    name: &str,
    profile: i32,
) -> Result<[sys::vrseg_trt_dims; 3], TensorRtError> {
    let name = name_cstring(name)?;
    let mut dims = [sys::vrseg_trt_dims::default(); 3];
    let [min, opt, max] = &mut dims;
    // SAFETY: the caller's promise; `name` and the out-pointers outlive the call.
    run(|error| unsafe {
        sys::vrseg_trt_engine_profile_shape(engine.as_ptr(), name.as_ptr(), profile, min, opt, max, error)
    })
    .map_err(call_error("ICudaEngine::getProfileShape"))?;
    Ok(dims)
}

/// # Safety
/// `engine` is live.
pub(super) unsafe fn engine_device_memory(
    engine: NonNull<sys::vrseg_trt_engine>,
    profile: i32,
) -> Result<i64, TensorRtError> {
    let mut bytes = 0i64;
    // SAFETY: the caller's promise; `bytes` is a valid out-pointer.
    run(|error| unsafe { sys::vrseg_trt_engine_device_memory(engine.as_ptr(), profile, &mut bytes, error) })
        .map_err(call_error("ICudaEngine::getDeviceMemorySizeForProfileV2"))?;
    Ok(bytes)
}

/// # Safety
/// `engine` is live and outlives the context.
pub(super) unsafe fn context_create(
    engine: NonNull<sys::vrseg_trt_engine>,
) -> Result<NonNull<sys::vrseg_trt_context>, TensorRtError> {
    let mut out = std::ptr::null_mut();
    // SAFETY: the caller's promise.
    run(|error| unsafe { sys::vrseg_trt_context_create(engine.as_ptr(), &mut out, error) })
        .map_err(call_error("ICudaEngine::createExecutionContext"))?;
    non_null(out, "ICudaEngine::createExecutionContext")
}

/// # Safety
/// `context` came from [`context_create`], is destroyed only here, and no
/// work enqueued on it may still run.
pub(super) unsafe fn context_destroy(context: NonNull<sys::vrseg_trt_context>) {
    // SAFETY: the caller's promise.
    unsafe { sys::vrseg_trt_context_destroy(context.as_ptr()) }
}

/// # Safety
/// `context` is live; `[memory, memory + bytes)` is device memory of its GPU
/// that stays allocated and unused by others while the context runs work.
pub(super) unsafe fn context_set_device_memory(
    context: NonNull<sys::vrseg_trt_context>,
    memory: u64,
    bytes: i64,
) -> Result<(), TensorRtError> {
    // SAFETY: the caller's promise.
    run(|error| unsafe { sys::vrseg_trt_context_set_device_memory(context.as_ptr(), memory, bytes, error) })
        .map_err(call_error("IExecutionContext::setDeviceMemoryV2"))
}

/// # Safety
/// `context` is live and not used by another thread.
pub(super) unsafe fn context_set_input_shape(
    context: NonNull<sys::vrseg_trt_context>,
    name: &str,
    shape: &sys::vrseg_trt_dims,
) -> Result<(), TensorRtError> {
    let name = name_cstring(name)?;
    // SAFETY: the caller's promise; `name` and `shape` outlive the call.
    run(|error| unsafe { sys::vrseg_trt_context_set_input_shape(context.as_ptr(), name.as_ptr(), shape, error) })
        .map_err(call_error("IExecutionContext::setInputShape"))
}

/// # Safety
/// `context` is live.
pub(super) unsafe fn context_tensor_shape(
    context: NonNull<sys::vrseg_trt_context>,
    name: &str,
) -> Result<sys::vrseg_trt_dims, TensorRtError> {
    let name = name_cstring(name)?;
    let mut dims = sys::vrseg_trt_dims::default();
    // SAFETY: the caller's promise; `name` and `dims` outlive the call.
    run(|error| unsafe { sys::vrseg_trt_context_tensor_shape(context.as_ptr(), name.as_ptr(), &mut dims, error) })
        .map_err(call_error("IExecutionContext::getTensorShape"))?;
    Ok(dims)
}

/// # Safety
/// `context` is live and not used by another thread; `address` is device
/// memory large enough for the tensor that stays valid while work enqueued
/// with this binding may run.
pub(super) unsafe fn context_set_tensor_address(
    context: NonNull<sys::vrseg_trt_context>,
    name: &str,
    address: u64,
) -> Result<(), TensorRtError> {
    let name = name_cstring(name)?;
    // SAFETY: the caller's promise; `name` outlives the call.
    run(|error| unsafe { sys::vrseg_trt_context_set_tensor_address(context.as_ptr(), name.as_ptr(), address, error) })
        .map_err(call_error("IExecutionContext::setTensorAddress"))
}

/// # Safety
/// `context` is live and not used by another thread, every I/O tensor and
/// the device memory are bound (see above), and `stream` is a live stream of
/// the context's GPU, whose CUDA context is current.
pub(super) unsafe fn context_enqueue(
    context: NonNull<sys::vrseg_trt_context>,
    stream: *mut c_void,
) -> Result<(), TensorRtError> {
    // SAFETY: the caller's promise.
    run(|error| unsafe { sys::vrseg_trt_context_enqueue(context.as_ptr(), stream, error) })
        .map_err(call_error("IExecutionContext::enqueueV3"))
}

/// Parses `onnx` into a new network (builder, network definition, parser).
pub(super) fn network_parse(
    library: NonNull<sys::vrseg_trt_library>,
    onnx: &std::path::Path,
) -> Result<NonNull<sys::vrseg_trt_network>, TensorRtError> {
    use std::os::unix::ffi::OsStrExt as _;
    let path = CString::new(onnx.as_os_str().as_bytes())
        .map_err(|_| TensorRtError::InvalidRequest(format!("{} contains a NUL byte", onnx.display())))?;
    let mut out = std::ptr::null_mut();
    // SAFETY: `library` is live (the caller holds its owner); `path` outlives the call.
    run(|error| unsafe { sys::vrseg_trt_network_parse(library.as_ptr(), path.as_ptr(), &mut out, error) })
        .map_err(call_error("parsing the ONNX model"))?;
    non_null(out, "parsing the ONNX model")
}

/// # Safety
/// `network` came from [`network_parse`] and is destroyed only here (blobs
/// it built are independent of it).
pub(super) unsafe fn network_destroy(network: NonNull<sys::vrseg_trt_network>) {
    // SAFETY: the caller's promise.
    unsafe { sys::vrseg_trt_network_destroy(network.as_ptr()) }
}

/// The number of the network's inputs (`input`) or outputs.
///
/// # Safety
/// `network` is live.
pub(super) unsafe fn network_io_count(network: NonNull<sys::vrseg_trt_network>, input: bool) -> i32 {
    // SAFETY: the caller's promise; queries with no other precondition.
    unsafe {
        if input {
            sys::vrseg_trt_network_input_count(network.as_ptr())
        } else {
            sys::vrseg_trt_network_output_count(network.as_ptr())
        }
    }
}

/// # Safety
/// `network` is live; the returned name is valid while it lives.
pub(super) unsafe fn network_io_info(
    network: NonNull<sys::vrseg_trt_network>,
    input: bool,
    index: i32,
) -> Result<sys::vrseg_trt_tensor_info, TensorRtError> {
    let mut info = sys::vrseg_trt_tensor_info::default();
    // SAFETY: the caller's promise; `info` is a valid out-pointer.
    run(|error| unsafe {
        if input {
            sys::vrseg_trt_network_input_info(network.as_ptr(), index, &mut info, error)
        } else {
            sys::vrseg_trt_network_output_info(network.as_ptr(), index, &mut info, error)
        }
    })
    .map_err(call_error("INetworkDefinition I/O tensor query"))?;
    Ok(info)
}

/// # Safety
/// `network` is live and not used by another thread; the CUDA context of
/// the GPU to build for is current; every pointer in `config` is valid for
/// the call.
pub(super) unsafe fn network_build(
    network: NonNull<sys::vrseg_trt_network>,
    config: &sys::vrseg_trt_build_config,
) -> Result<sys::vrseg_trt_build_result, (sys::vrseg_trt_status, TensorRtError)> {
    let mut result = sys::vrseg_trt_build_result::default();
    // SAFETY: the caller's promise; `result` is a valid out-pointer.
    run(|error| unsafe { sys::vrseg_trt_network_build(network.as_ptr(), config, &mut result, error) }).map_err(
        |f| (f.status, TensorRtError::Call { call: "IBuilder::buildSerializedNetwork", message: f.message }),
    )?;
    Ok(result)
}

/// # Safety
/// `blob` came from [`network_build`] and is destroyed only here, after
/// every slice from [`blob_bytes`] is gone.
pub(super) unsafe fn blob_destroy(blob: NonNull<sys::vrseg_trt_blob>) {
    // SAFETY: the caller's promise.
    unsafe { sys::vrseg_trt_blob_destroy(blob.as_ptr()) }
}

/// The bytes of `blob` (empty when TensorRT returned none).
///
/// # Safety
/// `blob` is live and stays so for `'a`: TensorRT's buffer lives until the
/// blob is destroyed.
pub(super) unsafe fn blob_bytes<'a>(blob: NonNull<sys::vrseg_trt_blob>) -> &'a [u8] {
    // SAFETY: the caller's promise; data/size describe one live buffer.
    unsafe {
        let data = sys::vrseg_trt_blob_data(blob.as_ptr());
        let size = sys::vrseg_trt_blob_size(blob.as_ptr());
        if data.is_null() || size == 0 {
            &[]
        } else {
            std::slice::from_raw_parts(data.cast::<u8>(), size)
        }
    }
}

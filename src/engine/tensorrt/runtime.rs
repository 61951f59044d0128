//! [`TensorRtBackend`]: a TensorRT engine behind the [`Backend`] trait.

use std::ffi::c_void;
use std::path::Path;
use std::sync::Arc;

use cudarc::driver::{sys as cu, CudaGraph, CudaStream};

use super::error::TensorRtError;
use super::file::{check_compatible, EngineFile, EngineMetadata, RunningOn};
use super::handles::{shared_library, Context, Engine, Runtime};
use super::shapes::{dtype_name, input_shapes, to_dtype, InputProfile, IoTensor};
use super::LoadOptions;
use crate::engine::backend::{check_buffers, Backend, BackendError, BufferRef, TensorDesc, TensorRole};
use crate::gpu::error::CheckDriver;
use crate::gpu::{DeviceView, Gpu};

/// TensorRT asks for 256-byte aligned device memory.
const WORKSPACE_ALIGNMENT: u64 = 256;

/// A graph captured from one enqueue, replayed while the stream and the
/// buffers stay the same.
struct CapturedGraph {
    graph: CudaGraph,
    stream: cu::CUstream,
    addresses: Vec<u64>,
}

// SAFETY: a CUDA graph may be used from any thread as long as calls on it
// are serialised (CUDA's "graph thread safety" rules), which `&mut
// TensorRtBackend` ensures; the stream handle is only compared, never used.
unsafe impl Send for CapturedGraph {}

/// A deserialised TensorRT engine with one execution context, running at a
/// fixed batch size on this process's VRAM pool: its activations in the
/// workspace the caller binds, its inputs and outputs in the buffers passed
/// to `enqueue` (TensorRT allocates only the engine's weights itself, once,
/// when the engine is loaded).
pub struct TensorRtBackend {
    // Fields drop in order: the graph, then the context, then the engine.
    graph: Option<CapturedGraph>,
    context: Context,
    _engine: Arc<Engine>,
    gpu: Gpu,
    name: String,
    batch: usize,
    tensors: Vec<TensorDesc>,
    workspace_bytes: usize,
    workspace_bound: bool,
    /// Addresses bound with setTensorAddress, in the order of `tensors`.
    bound: Vec<u64>,
    use_graph: bool,
    warnings: Vec<String>,
    metadata: Option<EngineMetadata>,
}

impl std::fmt::Debug for TensorRtBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TensorRtBackend").field("name", &self.name).field("batch", &self.batch).finish()
    }
}

fn unsupported(path: &Path, tensor: &IoTensor, reason: String) -> TensorRtError {
    TensorRtError::UnsupportedTensor { path: path.to_path_buf(), tensor: tensor.name.clone(), reason }
}

/// Refuses tensors vrseg cannot bind: host-side (shape) tensors, vectorised
/// layouts, and element types other than f16 / f32.
fn check_io(path: &Path, tensor: &IoTensor) -> Result<(), TensorRtError> {
    if tensor.role.is_none() {
        return Err(unsupported(path, tensor, "is neither an input nor an output".into()));
    }
    if !tensor.on_device {
        return Err(unsupported(
            path,
            tensor,
            "lives in host memory (a shape tensor); vrseg binds device tensors only".into(),
        ));
    }
    if !tensor.linear {
        return Err(unsupported(
            path,
            tensor,
            "has a vectorised layout; rebuild the engine with linear I/O formats (no --inputIOFormats/--outputIOFormats)"
                .into(),
        ));
    }
    if to_dtype(tensor.dtype).is_none() {
        return Err(unsupported(
            path,
            tensor,
            format!("has type {}; vrseg exchanges f16 and f32 tensors only", dtype_name(tensor.dtype)),
        ));
    }
    Ok(())
}

impl TensorRtBackend {
    /// Loads `path` for `gpu`. In order, so that the first problem found is
    /// the one reported: the file's header (no TensorRT needed), TensorRT
    /// itself ("TensorRT not found (searched: …)"), the engine's TensorRT
    /// release and GPU architecture against this machine, then TensorRT's
    /// own deserialisation.
    pub fn load(gpu: &Gpu, file_path: &Path, options: &LoadOptions) -> Result<TensorRtBackend, TensorRtError> {
        let file = EngineFile::open(file_path)?;
        // The path every later message names.
        let path = options.shown_path.as_deref().unwrap_or(file_path);
        let library = shared_library(&options.search)?;
        let props = gpu.properties();
        let warnings = match file.metadata() {
            Some(meta) => check_compatible(
                path,
                meta,
                &RunningOn {
                    tensorrt: library.version(),
                    ordinal: props.ordinal,
                    gpu_name: &props.name,
                    compute_capability: props.compute_capability,
                },
            )?,
            None => Vec::new(),
        };
        gpu.bind_to_thread()?;
        let runtime = Runtime::new(&library)?;
        let engine = runtime.deserialize(file.plan())?;

        let io = engine.io_tensors()?;
        for t in &io {
            check_io(path, t)?;
        }
        let inputs: Vec<IoTensor> = io.iter().filter(|t| t.role == Some(TensorRole::Input)).cloned().collect();
        let outputs: Vec<IoTensor> = io.iter().filter(|t| t.role == Some(TensorRole::Output)).cloned().collect();
        let mut profiles = Vec::new();
        for input in inputs.iter().filter(|t| t.shape.iter().any(|&d| d < 0)) {
            if engine.profile_count() < 1 {
                return Err(unsupported(path, input, "is dynamic but the engine has no optimisation profile".into()));
            }
            let [min, opt, max] = engine.profile_shape(&input.name, 0)?;
            profiles.push(InputProfile { name: input.name.clone(), min, opt, max });
        }
        let (batch, shapes) = input_shapes(path, &inputs, &profiles, options.batch)?;

        let mut context = engine.create_context()?;
        let mut tensors = Vec::with_capacity(io.len());
        for (input, shape) in inputs.iter().zip(&shapes) {
            context.set_input_shape(&input.name, shape)?;
            tensors.push(descriptor(path, input, shape)?);
        }
        for output in &outputs {
            let shape = context.tensor_shape(&output.name)?;
            if shape.iter().any(|&d| d < 0) {
                return Err(unsupported(
                    path,
                    output,
                    format!("has a data-dependent shape {shape:?}; vrseg needs outputs whose size the inputs fix"),
                ));
            }
            tensors.push(descriptor(path, output, &shape)?);
        }
        let workspace_bytes = engine.device_memory(0)?;
        Ok(TensorRtBackend {
            graph: None,
            context,
            _engine: engine,
            gpu: gpu.clone(),
            name: format!("TensorRT {}: {}", library.version(), path.display()),
            batch,
            bound: vec![0; tensors.len()],
            tensors,
            workspace_bytes,
            workspace_bound: workspace_bytes == 0,
            use_graph: options.cuda_graph,
            warnings,
            metadata: file.metadata().cloned(),
        })
    }

    /// The engine's vrseg header, when it has one.
    pub fn metadata(&self) -> Option<&EngineMetadata> {
        self.metadata.as_ref()
    }

    /// Captures the enqueue just made into a CUDA graph. A failed capture
    /// is not an error: the inference already ran directly, and later calls
    /// keep enqueueing directly.
    fn capture(&mut self, stream: &Arc<CudaStream>, addresses: Vec<u64>) -> Result<(), BackendError> {
        use cu::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL;
        if let Err(e) = stream.begin_capture(CU_STREAM_CAPTURE_MODE_THREAD_LOCAL) {
            let status = crate::gpu::error::driver_status_text(&e);
            return self.no_graph(format!("cuStreamBeginCapture: {status}"));
        }
        // SAFETY: as for the direct enqueue in `enqueue` (same bindings, same
        // stream); during capture TensorRT records instead of launching.
        let enqueued = unsafe { self.context.enqueue(stream.cu_stream().cast::<c_void>()) };
        // Capture ends on every path, or the stream stays unusable.
        let ended = stream.end_capture(cu::CUgraphInstantiate_flags(0));
        let failure = match (enqueued, ended) {
            (Ok(()), Ok(Some(graph))) => {
                self.graph = Some(CapturedGraph { graph, stream: stream.cu_stream(), addresses });
                return Ok(());
            }
            (Err(e), _) => e.to_string(),
            (Ok(()), Err(e)) => format!("cuStreamEndCapture: {}", crate::gpu::error::driver_status_text(&e)),
            (Ok(()), Ok(None)) => "the capture recorded nothing".into(),
        };
        self.no_graph(failure)
    }

    /// Gives up on graphs for this backend, with a warning saying why.
    fn no_graph(&mut self, why: String) -> Result<(), BackendError> {
        self.use_graph = false;
        self.warnings.push(format!("{}: no CUDA graph ({why}); enqueueing directly", self.name));
        Ok(())
    }
}

fn descriptor(path: &Path, tensor: &IoTensor, shape: &[i64]) -> Result<TensorDesc, TensorRtError> {
    let dtype = to_dtype(tensor.dtype).ok_or_else(|| unsupported(path, tensor, "has an unsupported type".into()))?;
    let role = tensor.role.ok_or_else(|| unsupported(path, tensor, "has no role".into()))?;
    Ok(TensorDesc { name: tensor.name.clone(), role, dtype, shape: shape.iter().map(|&d| d.max(0) as usize).collect() })
}

impl Backend for TensorRtBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn batch_size(&self) -> usize {
        self.batch
    }

    fn tensors(&self) -> &[TensorDesc] {
        &self.tensors
    }

    fn workspace_bytes(&self) -> usize {
        self.workspace_bytes
    }

    fn warnings(&self) -> &[String] {
        &self.warnings
    }

    unsafe fn bind_workspace(&mut self, workspace: DeviceView<'_>) -> Result<(), BackendError> {
        if workspace.bytes() < self.workspace_bytes {
            return Err(BackendError::WorkspaceTooSmall {
                backend: self.name.clone(),
                buffer: workspace.name().to_string(),
                need: self.workspace_bytes,
                have: workspace.bytes(),
            });
        }
        if workspace.ptr() % WORKSPACE_ALIGNMENT != 0 {
            return Err(BackendError::WorkspaceMisaligned {
                backend: self.name.clone(),
                buffer: workspace.name().to_string(),
                ptr: workspace.ptr(),
                align: WORKSPACE_ALIGNMENT as usize,
            });
        }
        self.gpu.bind_to_thread()?;
        // SAFETY: the range is the caller's pool buffer of this GPU, large
        // enough (checked above); the caller promises (this function's
        // contract) it stays allocated and unshared while work may run.
        unsafe { self.context.set_device_memory(workspace.ptr(), workspace.bytes()) }?;
        self.workspace_bound = true;
        // A graph captured with the old memory must not replay.
        self.graph = None;
        Ok(())
    }

    fn enqueue(
        &mut self,
        stream: &Arc<CudaStream>,
        inputs: &[DeviceView<'_>],
        outputs: &[DeviceView<'_>],
    ) -> Result<(), BackendError> {
        let ins: Vec<BufferRef<'_>> = inputs.iter().map(BufferRef::from).collect();
        let outs: Vec<BufferRef<'_>> = outputs.iter().map(BufferRef::from).collect();
        check_buffers(&self.name, TensorRole::Input, &self.tensors, &ins)?;
        check_buffers(&self.name, TensorRole::Output, &self.tensors, &outs)?;
        if !self.workspace_bound {
            return Err(BackendError::NoWorkspace { backend: self.name.clone(), bytes: self.workspace_bytes });
        }
        let addresses: Vec<u64> = ins.iter().chain(&outs).map(|b| b.ptr).collect();
        self.gpu.bind_to_thread()?;
        if let Some(g) = &self.graph {
            if g.stream == stream.cu_stream() && g.addresses == addresses {
                return g.graph.launch().check("cuGraphLaunch").map_err(BackendError::from);
            }
        }
        self.graph = None;
        if addresses != self.bound {
            for (tensor, &ptr) in self.tensors.iter().zip(&addresses) {
                // SAFETY: `ptr` is a pool buffer of this GPU at least as large
                // as the tensor and aligned for its type (check_buffers); the
                // pool outlives the work, as the Backend contract requires of
                // pool buffers passed to enqueue.
                unsafe { self.context.set_tensor_address(&tensor.name, ptr) }?;
            }
            self.bound = addresses.clone();
        }
        // SAFETY: every I/O tensor is bound (above) and the device memory too
        // (`workspace_bound`); `stream` is a live stream of this GPU, whose
        // context is current (bound above); `&mut self` keeps other threads out.
        unsafe { self.context.enqueue(stream.cu_stream().cast::<c_void>()) }?;
        if self.use_graph {
            // The direct enqueue above ran this call's inference and served
            // as the warm-up TensorRT asks for before a capture.
            self.capture(stream, addresses)?;
        }
        Ok(())
    }
}

impl Drop for TensorRtBackend {
    fn drop(&mut self) {
        // Work enqueued on the context may still run; TensorRT's objects go
        // only after it has finished, with this GPU's context current (the
        // engine frees its weights through the CUDA runtime). Errors cannot
        // be returned from here, so they are reported, not lost.
        if let Err(e) = self.gpu.bind_to_thread().and_then(|_| self.gpu.synchronize()) {
            eprintln!("vrseg: while releasing {}: {e}", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backend_can_move_to_the_gpu_worker_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<TensorRtBackend>();
    }
}

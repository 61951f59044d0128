//! The one interface both inference engines implement: vrseg's native plan
//! executor and TensorRT. The pipeline sees tensors by name, shape and
//! type, hands in pool buffers, and enqueues; how the engine runs is its own
//! business.
//!
//! The contract:
//! 1. [`Backend::tensors`] lists inputs, then outputs, each with its shape at
//!    [`Backend::batch_size`] (fixed when the backend is made).
//! 2. [`Backend::workspace_bytes`] says how much scratch device memory the
//!    engine needs; the caller adds it to its `PoolPlan` and binds the buffer
//!    once with [`Backend::bind_workspace`].
//! 3. [`Backend::enqueue`] takes one buffer per input and per output, in the
//!    order of `tensors()`, and enqueues the whole inference on `stream`
//!    without waiting for it. Inputs must be written before (on `stream`, or
//!    ordered before it by an event); outputs are ready when `stream` reaches
//!    this point.

use std::fmt;
use std::sync::Arc;

use cudarc::driver::CudaStream;

use crate::engine::native::EngineError;
use crate::engine::tensorrt::TensorRtError;
use crate::gpu::error::CheckDriver;
use crate::gpu::{BufferId, DeviceView, Gpu, GpuError, PoolPlan, VramPool};

/// Element types the pipeline exchanges with an engine: the native plan's
/// own element type, one definition for both engines.
pub use crate::engine::build::memory::ElementType as DType;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum TensorRole {
    Input,
    Output,
}

impl fmt::Display for TensorRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TensorRole::Input => "input",
            TensorRole::Output => "output",
        })
    }
}

/// One input or output, its shape at the backend's batch size. Layout is
/// dense row-major (C order).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TensorDesc {
    pub name: String,
    pub role: TensorRole,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl TensorDesc {
    pub fn elements(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn bytes(&self) -> usize {
        self.elements() * self.dtype.bytes()
    }
}

impl fmt::Display for TensorDesc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dims: Vec<String> = self.shape.iter().map(usize::to_string).collect();
        write!(f, "{} `{}` {} [{}]", self.role, self.name, self.dtype, dims.join(", "))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Gpu(#[from] GpuError),

    #[error(transparent)]
    TensorRt(#[from] TensorRtError),

    #[error(transparent)]
    Native(#[from] EngineError),

    #[error("{backend}: {expected} {role} buffer(s) expected, in the order of its tensors; got {got}")]
    BufferCount { backend: String, role: TensorRole, expected: usize, got: usize },

    #[error("{backend}: {role} `{tensor}` needs {need} bytes; buffer `{buffer}` has {have}")]
    BufferTooSmall { backend: String, role: TensorRole, tensor: String, buffer: String, need: usize, have: usize },

    #[error("{backend}: {role} `{tensor}` needs {align}-byte alignment; buffer `{buffer}` at {ptr:#x} is not aligned")]
    Misaligned { backend: String, role: TensorRole, tensor: String, buffer: String, ptr: u64, align: usize },

    #[error("{backend}: its {bytes}-byte workspace is not bound; bind a pool buffer with bind_workspace first")]
    NoWorkspace { backend: String, bytes: usize },

    #[error("{backend}: its workspace needs {need} bytes; buffer `{buffer}` has {have}")]
    WorkspaceTooSmall { backend: String, buffer: String, need: usize, have: usize },

    #[error("{backend}: its workspace needs {align}-byte alignment; buffer `{buffer}` at {ptr:#x} is not aligned")]
    WorkspaceMisaligned { backend: String, buffer: String, ptr: u64, align: usize },

    #[error("{backend}: output `{tensor}` element {index} is {value} after inference on zeros (outputs start as NaN, so an element the engine never wrote stays NaN)")]
    NotFinite { backend: String, tensor: String, index: usize, value: String },
}

/// An inference engine the pipeline can drive. See the module docs for the contract.
pub trait Backend {
    /// For messages: "TensorRT 10.8.0: engines/yolo11n-seg.engine".
    fn name(&self) -> &str;

    /// Images per inference (the first dimension of every tensor).
    fn batch_size(&self) -> usize;

    /// Inputs first, then outputs.
    fn tensors(&self) -> &[TensorDesc];

    /// Scratch device memory the engine needs, in bytes.
    fn workspace_bytes(&self) -> usize {
        0
    }

    /// Gives the engine its scratch memory (at least `workspace_bytes()`).
    ///
    /// # Safety
    /// The buffer must stay allocated, and used by nothing else, for as long
    /// as work this backend enqueues may run: keep the pool alive beyond the
    /// backend, and do not hand the buffer to another stage.
    unsafe fn bind_workspace(&mut self, workspace: DeviceView<'_>) -> Result<(), BackendError> {
        let _ = workspace;
        Ok(())
    }

    /// Enqueues one inference on `stream` (see the module docs).
    fn enqueue(
        &mut self,
        stream: &Arc<CudaStream>,
        inputs: &[DeviceView<'_>],
        outputs: &[DeviceView<'_>],
    ) -> Result<(), BackendError>;

    /// Things worth telling the user that are not errors (an engine built
    /// on another GPU model; a CUDA graph that could not be captured).
    fn warnings(&self) -> &[String] {
        &[]
    }

    fn inputs(&self) -> Vec<&TensorDesc> {
        self.tensors().iter().filter(|t| t.role == TensorRole::Input).collect()
    }

    fn outputs(&self) -> Vec<&TensorDesc> {
        self.tensors().iter().filter(|t| t.role == TensorRole::Output).collect()
    }
}

/// What [`smoke_test`] saw.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SmokeReport {
    pub backend: String,
    pub batch: usize,
    pub runs: usize,
    /// Wall time per inference over all runs, the first (graph capture) included.
    pub ms_per_run: f64,
    pub workspace_bytes: usize,
    pub tensors: Vec<TensorDesc>,
    /// The backend's warnings after the runs.
    pub warnings: Vec<String>,
}

/// The first element of `bytes` (of `dtype`) that is not finite, with its value.
fn first_non_finite(dtype: DType, bytes: &[u8]) -> Option<(usize, String)> {
    match dtype {
        DType::F32 => bytes.chunks_exact(4).enumerate().find_map(|(i, b)| {
            let v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            (!v.is_finite()).then(|| (i, v.to_string()))
        }),
        DType::F16 => bytes.chunks_exact(2).enumerate().find_map(|(i, b)| {
            let v = half::f16::from_le_bytes([b[0], b[1]]);
            (!v.is_finite()).then(|| (i, v.to_string()))
        }),
    }
}

/// Copies `data` into `view` as `dtype` (FP16 rounded to nearest) and waits
/// for the copy: how the host feeds an engine input of either type, for
/// `vrseg dev engine`, `vrseg bench engine` and tests (the pipeline's
/// inputs never leave the GPU).
pub fn upload_as(view: &DeviceView<'_>, stream: &CudaStream, data: &[f32], dtype: DType) -> Result<(), GpuError> {
    match dtype {
        DType::F16 => {
            let halves: Vec<half::f16> = data.iter().map(|&x| half::f16::from_f32(x)).collect();
            view.upload_blocking(stream, &halves)
        }
        DType::F32 => view.upload_blocking(stream, data),
    }
}

/// Runs `backend` `runs` times on zeroed inputs, every buffer and its
/// workspace from one VRAM pool as the pipeline will give them, and checks
/// that every output element is finite. Outputs start as NaN, so an output
/// the engine never writes fails too. `vrseg build-engine` runs this on the
/// engine it has just written. Takes the backend by value: the pool it binds
/// is freed on return, so the backend must not enqueue again.
pub fn smoke_test<B: Backend>(gpu: &Gpu, backend: B, runs: usize) -> Result<SmokeReport, BackendError> {
    let runs = runs.max(1);
    let tensors = backend.tensors().to_vec();
    let mut plan = PoolPlan::new();
    let ids: Vec<BufferId> =
        tensors.iter().map(|t| plan.buffer(format!("{}.{}", t.role, t.name), t.bytes().max(1))).collect();
    let workspace_bytes = backend.workspace_bytes();
    let workspace = (workspace_bytes > 0).then(|| plan.buffer("engine.workspace", workspace_bytes));
    let pool = VramPool::reserve(gpu, &plan)?;
    let stream = gpu.new_stream()?;
    // Declared after the pool and the stream, so dropped before them on
    // every path, errors included.
    let mut backend = backend;
    let result = smoke_runs(&mut backend, &pool, &stream, &tensors, &ids, workspace, runs);
    // Nothing the backend enqueued may still run when the pool is freed; on
    // success the runs synchronised already, so this is for the error paths.
    let drained = stream.synchronize().check("cuStreamSynchronize");
    let ms_per_run = result?;
    drained?;
    let report = SmokeReport {
        backend: backend.name().to_string(),
        batch: backend.batch_size(),
        runs,
        ms_per_run,
        workspace_bytes,
        tensors,
        warnings: backend.warnings().to_vec(),
    };
    drop(backend);
    drop(pool);
    Ok(report)
}

/// The body of [`smoke_test`]: binds, uploads, runs, checks; the time per run in ms.
fn smoke_runs<B: Backend>(
    backend: &mut B,
    pool: &VramPool,
    stream: &Arc<CudaStream>,
    tensors: &[TensorDesc],
    ids: &[BufferId],
    workspace: Option<BufferId>,
    runs: usize,
) -> Result<f64, BackendError> {
    if let Some(id) = workspace {
        // SAFETY: the pool outlives every use of the backend: `smoke_test`
        // drops the backend, after draining the stream, before the pool.
        unsafe { backend.bind_workspace(pool.buffer(id)) }?;
    }
    for (t, &id) in tensors.iter().zip(ids) {
        // Zeros in, NaN (all bits set) out.
        let fill = if t.role == TensorRole::Input { 0u8 } else { 0xff };
        pool.buffer(id).upload_blocking(stream, &vec![fill; t.bytes()])?;
    }
    let views = |role| -> Vec<DeviceView<'_>> {
        tensors.iter().zip(ids).filter(|(t, _)| t.role == role).map(|(_, &id)| pool.buffer(id)).collect()
    };
    let (inputs, outputs) = (views(TensorRole::Input), views(TensorRole::Output));
    let started = std::time::Instant::now();
    for _ in 0..runs {
        backend.enqueue(stream, &inputs, &outputs)?;
    }
    stream.synchronize().check("cuStreamSynchronize")?;
    let ms_per_run = started.elapsed().as_secs_f64() * 1e3 / runs as f64;
    for (t, &id) in tensors.iter().zip(ids).filter(|(t, _)| t.role == TensorRole::Output) {
        let mut bytes = vec![0u8; t.bytes()];
        pool.buffer(id).download_blocking(stream, &mut bytes)?;
        if let Some((index, value)) = first_non_finite(t.dtype, &bytes) {
            return Err(BackendError::NotFinite {
                backend: backend.name().to_string(),
                tensor: t.name.clone(),
                index,
                value,
            });
        }
    }
    Ok(ms_per_run)
}

/// A buffer as [`check_buffers`] sees it: name, device address, bytes.
#[derive(Debug, Clone, Copy)]
pub struct BufferRef<'a> {
    pub name: &'a str,
    pub ptr: u64,
    pub bytes: usize,
}

impl<'a> From<&DeviceView<'a>> for BufferRef<'a> {
    fn from(v: &DeviceView<'a>) -> BufferRef<'a> {
        BufferRef { name: v.name(), ptr: v.ptr(), bytes: v.bytes() }
    }
}

/// Checks one role's buffers against its tensors: count, size, alignment to
/// the element type (the checks every backend makes before enqueueing).
pub fn check_buffers(
    backend: &str,
    role: TensorRole,
    tensors: &[TensorDesc],
    buffers: &[BufferRef<'_>],
) -> Result<(), BackendError> {
    let wanted: Vec<&TensorDesc> = tensors.iter().filter(|t| t.role == role).collect();
    if wanted.len() != buffers.len() {
        return Err(BackendError::BufferCount {
            backend: backend.to_string(),
            role,
            expected: wanted.len(),
            got: buffers.len(),
        });
    }
    for (tensor, buffer) in wanted.iter().zip(buffers) {
        if buffer.bytes < tensor.bytes() {
            return Err(BackendError::BufferTooSmall {
                backend: backend.to_string(),
                role,
                tensor: tensor.name.clone(),
                buffer: buffer.name.to_string(),
                need: tensor.bytes(),
                have: buffer.bytes,
            });
        }
        let align = tensor.dtype.bytes();
        if buffer.ptr % align as u64 != 0 {
            return Err(BackendError::Misaligned {
                backend: backend.to_string(),
                role,
                tensor: tensor.name.clone(),
                buffer: buffer.name.to_string(),
                ptr: buffer.ptr,
                align,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensors() -> Vec<TensorDesc> {
        vec![
            TensorDesc {
                name: "images".into(),
                role: TensorRole::Input,
                dtype: DType::F16,
                shape: vec![2, 3, 640, 640],
            },
            TensorDesc {
                name: "output0".into(),
                role: TensorRole::Output,
                dtype: DType::F32,
                shape: vec![2, 116, 8400],
            },
            TensorDesc {
                name: "output1".into(),
                role: TensorRole::Output,
                dtype: DType::F32,
                shape: vec![2, 32, 160, 160],
            },
        ]
    }

    #[test]
    fn non_finite_outputs_are_found_with_their_index() {
        let f32s: Vec<u8> = [1.0f32, 2.0, f32::NAN].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(first_non_finite(DType::F32, &f32s), Some((2, "NaN".into())));
        assert_eq!(first_non_finite(DType::F32, &f32s[..8]), None);
        let f16s: Vec<u8> = [half::f16::ONE, half::f16::INFINITY].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(first_non_finite(DType::F16, &f16s), Some((1, "inf".into())));
        assert_eq!(first_non_finite(DType::F16, &[0xff, 0xff]).map(|(i, _)| i), Some(0));
    }

    #[test]
    fn descriptors_know_their_size_and_print_it() {
        let t = &tensors()[0];
        assert_eq!(t.bytes(), 2 * 3 * 640 * 640 * 2);
        assert_eq!(t.to_string(), "input `images` f16 [2, 3, 640, 640]");
    }

    #[test]
    fn buffers_are_checked_for_count_size_and_alignment() {
        let t = tensors();
        let input = BufferRef { name: "letterbox.out", ptr: 0x1000, bytes: t[0].bytes() };
        check_buffers("TensorRT", TensorRole::Input, &t, &[input]).unwrap();

        let err = check_buffers("TensorRT", TensorRole::Output, &t, &[input]).unwrap_err().to_string();
        assert_eq!(err, "TensorRT: 2 output buffer(s) expected, in the order of its tensors; got 1");

        let small = BufferRef { bytes: t[0].bytes() - 1, ..input };
        let err = check_buffers("TensorRT", TensorRole::Input, &t, &[small]).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "TensorRT: input `images` needs {} bytes; buffer `letterbox.out` has {}",
                t[0].bytes(),
                small.bytes
            )
        );

        let odd = BufferRef { ptr: 0x1001, ..input };
        let err = check_buffers("TensorRT", TensorRole::Input, &t, &[odd]).unwrap_err().to_string();
        assert!(err.contains("needs 2-byte alignment") && err.contains("0x1001"), "{err}");
    }
}

//! The native engine's runtime: runs a plan written by `vrseg build-engine`
//! on the GPU with vrseg's own kernels (`kernels/engine_conv.cu`,
//! `kernels/engine_ops.cu`).
//!
//! - [`NativeEngine::reserve`] adds the plan's two buffers to a [`PoolPlan`]:
//!   the weights section (uploaded once, as one block, in the layout the
//!   kernels read) and the activation arena the build planned by liveness.
//! - [`NativeEngine::load`] uploads the weights.
//! - The engine is a [`Backend`]: its `enqueue` runs one forward on a
//!   stream for the given input and output buffers. The first call for a
//!   set of buffers turns the plan's nodes into launches (pointers resolved,
//!   tiles chosen) and captures them as one CUDA graph; later calls with the
//!   same buffers replay it, so a forward costs one `cuGraphLaunch` on the
//!   host.
//!
//! Nothing is allocated after `load`: every byte the forward touches is a
//! pool buffer, the weights, or the caller's tensors. The arena is one of
//! the plan's own pool buffers (from `reserve`), so the engine asks the
//! caller for no [`Backend::workspace_bytes`].

pub(crate) mod kernels;
mod steps;

use std::path::PathBuf;
use std::sync::Arc;

use cudarc::driver::{sys, CudaFunction, CudaGraph, CudaStream, LaunchConfig, PushKernelArg};

pub use kernels::TensorRef;
use kernels::*;

use crate::engine::backend::{Backend, BackendError, TensorDesc, TensorRole};
use crate::engine::build::Precision;
use crate::engine::plan::{Plan, PlanError, PlanGraph};
use crate::gpu::error::CheckDriver;
use crate::gpu::{BufferId, DeviceView, Gpu, GpuError, Kernel, Module, PoolPlan, VramPool};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Gpu(#[from] GpuError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A node the kernels cannot run as planned (the build checks refuse
    /// these first; this catches plans from elsewhere).
    #[error("{plan}: node {node:?} ({op}): {reason}; rebuild the plan with this vrseg's `build-engine`")]
    Node { plan: PathBuf, node: String, op: &'static str, reason: String },
    #[error("{plan}: {what}")]
    Binding { plan: PathBuf, what: String },
}

/// The plan's pool buffers.
#[derive(Debug, Clone, Copy)]
pub struct EngineBuffers {
    pub weights: BufferId,
    pub arena: BufferId,
    /// Split-K partial sums (FP32), shared by every split convolution of a
    /// forward in turn (they run in stream order).
    pub partials: BufferId,
}

/// Bytes of split-K partial sums an engine keeps. Splitting pays where a
/// GEMM's output tiles cannot fill the GPU, which means small outputs: at
/// batch 1 YOLO11x-seg's largest split (768 channels at 40x40, 3 ways) needs
/// 14.7 MB; a GEMM whose splits would not fit splits fewer ways.
pub const SPLIT_K_BYTES: usize = 16 << 20;

/// Kernel parameters of one launch.
#[derive(Debug, Clone, Copy)]
enum Params {
    Conv(ConvParams),
    Depthwise(DepthwiseParams),
    Map(MapParams),
    Binary(BinaryParams),
    Softmax(SoftmaxParams),
    Pool(PoolParams),
    Matmul(MatmulParams),
}

/// One kernel launch of a forward.
#[derive(Debug, Clone)]
struct Step {
    /// Index of the plan node it runs (for messages and profiles).
    node: usize,
    kernel: Kernel,
    config: LaunchConfig,
    params: Params,
}

/// Most CUDA graphs kept (one per set of bound buffers; a pipeline binds a
/// few slots in rotation).
const GRAPH_CACHE: usize = 8;

pub struct NativeEngine<'pool> {
    gpu: Gpu,
    path: PathBuf,
    /// The plan's path, for messages ([`Backend::name`]).
    name: String,
    /// The plan's inputs, then its outputs ([`Plan::tensors`]).
    tensors: Vec<TensorDesc>,
    graph: PlanGraph,
    weights: DeviceView<'pool>,
    arena: DeviceView<'pool>,
    partials: DeviceView<'pool>,
    /// Bytes from the weights buffer's start, per value (constants only).
    weight_offset: Vec<Option<u64>>,
    /// Graphs by bound pointers (inputs then outputs), most recent last.
    graphs: Vec<(Vec<u64>, CudaGraph, usize)>,
    /// Large NHWC convolutions run on Hopper's warpgroup MMA
    /// (`conv_wgmma_nhwc_n*`): where the GPU and the build have it,
    /// unless `VRSEG_NO_WGMMA` is set (to compare the mma.sync kernels).
    wgmma: bool,
    /// Kernels are launched with programmatic stream serialisation
    /// (compute capability 9.0 and later, unless `VRSEG_NO_PDL` is set):
    /// see [`NativeEngine::launch_programmatic`].
    pdl: bool,
}

/// The kernels built on Hopper's warpgroup MMA.
pub const WGMMA_KERNELS: [Kernel; 7] = [
    Kernel::ConvWgmmaNhwcN48,
    Kernel::ConvWgmmaNhwcN64,
    Kernel::ConvWgmmaNhwcN96,
    Kernel::ConvWgmmaNhwcN128,
    Kernel::ConvWgmmaNhwcN128S3,
    Kernel::ConvWgmmaNhwcN192,
    Kernel::ConvWgmmaNhwcN256,
];

/// Set (to anything) to keep the native engine off its wgmma kernels on a
/// GPU that has it, to measure or test the mma.sync path there.
pub const NO_WGMMA_ENV: &str = "VRSEG_NO_WGMMA";

/// Set (to anything) to launch the native engine's kernels one after the
/// other, without programmatic dependent launch, to measure what it gains.
pub const NO_PDL_ENV: &str = "VRSEG_NO_PDL";

impl<'pool> NativeEngine<'pool> {
    /// Adds the plan's weights and arena to `pool`.
    pub fn reserve(plan: &Plan, pool: &mut PoolPlan) -> EngineBuffers {
        let name = plan.path().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let weights = pool.buffer(format!("engine weights ({name})"), (plan.header.weights_bytes as usize).max(256));
        pool.align(weights, 256);
        let arena = pool.buffer(format!("engine activations ({name})"), (plan.header.arena_bytes as usize).max(256));
        pool.align(arena, 256);
        let partials = pool.buffer(format!("engine split-K partials ({name})"), SPLIT_K_BYTES);
        pool.align(partials, 256);
        EngineBuffers { weights, arena, partials }
    }

    /// Uploads the weights (one copy, blocking) and checks the plan against
    /// this GPU.
    pub fn load(
        gpu: &Gpu,
        stream: &Arc<CudaStream>,
        plan: &Plan,
        pool: &'pool VramPool,
        buffers: EngineBuffers,
    ) -> Result<NativeEngine<'pool>, EngineError> {
        let (major, minor) = gpu.properties().compute_capability;
        plan.check_device((major * 10 + minor) as u32)?;
        match plan.precision() {
            Precision::Fp16 => gpu.preload(&[Module::EngineConv, Module::EngineOps])?,
            Precision::Fp32 => gpu.preload(&[Module::EngineConvF32, Module::EngineOps])?,
        }
        let weights = pool.buffer(buffers.weights);
        let arena = pool.buffer(buffers.arena);
        let partials = pool.buffer(buffers.partials);
        weights.upload_blocking(stream, plan.weights_section())?;
        let mut weight_offset = vec![None; plan.graph.values.len()];
        for w in &plan.graph.weights {
            weight_offset[w.value] = Some(w.offset);
        }
        Ok(NativeEngine {
            gpu: gpu.clone(),
            path: plan.path().to_path_buf(),
            name: plan.path().display().to_string(),
            tensors: plan.tensors(),
            graph: plan.graph.clone(),
            weights,
            arena,
            partials,
            weight_offset,
            graphs: Vec::new(),
            wgmma: gpu.properties().has_wgmma() && std::env::var_os(NO_WGMMA_ENV).is_none(),
            pdl: gpu.properties().has_programmatic_launch() && std::env::var_os(NO_PDL_ENV).is_none(),
        })
    }

    /// Whether large NHWC convolutions take the wgmma kernels; `set_wgmma`
    /// turns it off (or back on where the GPU has it) for later forwards,
    /// dropping captured graphs. Returns the setting now in force.
    pub fn set_wgmma(&mut self, on: bool) -> bool {
        self.wgmma = on && self.gpu.properties().has_wgmma();
        self.graphs.clear();
        self.wgmma
    }

    /// The kernels of one forward, in launch order (tests check which path
    /// a GEMM took).
    pub fn kernels_per_forward(
        &self,
        inputs: &[DeviceView<'_>],
        outputs: &[DeviceView<'_>],
    ) -> Result<Vec<Kernel>, EngineError> {
        Ok(self.compile(&self.bind(inputs, outputs)?)?.iter().map(|s| s.kernel).collect())
    }

    /// Kernel launches per forward (views and in-place concatenations cost none).
    pub fn launches_per_forward(
        &self,
        inputs: &[DeviceView<'_>],
        outputs: &[DeviceView<'_>],
    ) -> Result<usize, EngineError> {
        Ok(self.kernels_per_forward(inputs, outputs)?.len())
    }

    /// Enqueues one forward on `stream` as a CUDA graph (captured on the
    /// first call with these buffers). Inputs must be written before, in
    /// stream order; outputs are complete when the stream reaches this point.
    /// ([`Backend::enqueue`] is this, its error widened.)
    fn enqueue_graph(
        &mut self,
        stream: &Arc<CudaStream>,
        inputs: &[DeviceView<'_>],
        outputs: &[DeviceView<'_>],
    ) -> Result<(), EngineError> {
        let key = self.bind(inputs, outputs)?;
        let stamp = self.graphs.iter().map(|g| g.2).max().unwrap_or(0) + 1;
        if let Some(entry) = self.graphs.iter_mut().find(|g| g.0 == key) {
            entry.2 = stamp;
            entry.1.launch().check_with("cuGraphLaunch", || format!("forward of {}", self.path.display()))?;
            return Ok(());
        }
        let steps = self.compile(&key)?;
        // Look every function up before capturing: with the driver's lazy
        // module loading, a first lookup loads code, which must not happen
        // inside a capture.
        for step in &steps {
            self.prepare_function(step)?;
        }
        stream.context().bind_to_thread().check("cuCtxSetCurrent")?;
        // Relaxed: other threads of the pipeline (NVDEC's) keep calling the
        // driver while this one captures; nothing in the capture allocates.
        stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)
            .check_with("cuStreamBeginCapture", || format!("forward of {}", self.path.display()))?;
        let launched = steps.iter().try_for_each(|s| self.launch(stream, s));
        // End the capture whatever happened, so the stream is usable again.
        let captured = stream.end_capture(sys::CUgraphInstantiate_flags(0));
        launched?;
        let graph = captured
            .check_with("cuStreamEndCapture", || format!("forward of {}", self.path.display()))?
            .ok_or_else(|| EngineError::Binding {
                plan: self.path.clone(),
                what: "the CUDA graph capture came back empty".into(),
            })?;
        graph.launch().check_with("cuGraphLaunch", || format!("forward of {}", self.path.display()))?;
        if self.graphs.len() >= GRAPH_CACHE {
            let oldest = self.graphs.iter().enumerate().min_by_key(|(_, g)| g.2).map(|(i, _)| i).unwrap();
            self.graphs.remove(oldest);
        }
        self.graphs.push((key, graph, stamp));
        Ok(())
    }

    /// Runs one forward launch by launch, without a graph (tests compare the
    /// two; profiles see one kernel per node).
    pub fn enqueue_eager(
        &self,
        stream: &Arc<CudaStream>,
        inputs: &[DeviceView<'_>],
        outputs: &[DeviceView<'_>],
    ) -> Result<(), EngineError> {
        let key = self.bind(inputs, outputs)?;
        for step in self.compile(&key)? {
            self.launch(stream, &step)?;
        }
        Ok(())
    }

    /// Checks the caller's buffers and returns their pointers (inputs, then outputs).
    fn bind(&self, inputs: &[DeviceView<'_>], outputs: &[DeviceView<'_>]) -> Result<Vec<u64>, EngineError> {
        let mut key = Vec::with_capacity(inputs.len() + outputs.len());
        for (role, views) in [(TensorRole::Input, inputs), (TensorRole::Output, outputs)] {
            let wanted: Vec<&TensorDesc> = self.tensors.iter().filter(|t| t.role == role).collect();
            if wanted.len() != views.len() {
                return Err(EngineError::Binding {
                    plan: self.path.clone(),
                    what: format!("the model has {} {role}(s), {} buffer(s) were given", wanted.len(), views.len()),
                });
            }
            for (tensor, view) in wanted.into_iter().zip(views) {
                if view.bytes() < tensor.bytes() {
                    return Err(EngineError::Binding {
                        plan: self.path.clone(),
                        what: format!(
                            "{role} `{}` {:?} ({:?}) needs {} bytes; buffer `{}` has {}",
                            tensor.name,
                            tensor.shape,
                            tensor.dtype,
                            tensor.bytes(),
                            view.name(),
                            view.bytes()
                        ),
                    });
                }
                if view.ptr() % 16 != 0 {
                    return Err(EngineError::Binding {
                        plan: self.path.clone(),
                        what: format!("{role} buffer `{}` at {:#x} is not 16-byte aligned", view.name(), view.ptr()),
                    });
                }
                key.push(view.ptr());
            }
        }
        Ok(key)
    }

    /// Loads a step's function and lets it take the dynamic shared memory
    /// the step asks for (the NHWC convolutions' pipeline stages exceed the
    /// default 48 KiB), with the largest shared-memory carveout so that two
    /// or more such blocks fit an SM.
    fn prepare_function(&self, step: &Step) -> Result<&CudaFunction, EngineError> {
        let function = self.gpu.kernels().function(self.gpu.context(), step.kernel)?;
        let bytes = step.config.shared_mem_bytes as usize;
        if bytes > 0 {
            self.gpu.allow_dynamic_shared_memory(function, step.kernel, bytes)?;
            use sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT as CARVEOUT;
            function
                .set_attribute(CARVEOUT, 100)
                .check_with("cuFuncSetAttribute", || format!("{} shared-memory carveout", step.kernel.symbol()))?;
        }
        Ok(function)
    }

    /// Whether kernels are launched with programmatic dependent launch;
    /// `set_programmatic_launch` turns it off (or back on where the GPU has
    /// it) for later forwards, dropping captured graphs. Returns the setting
    /// now in force.
    pub fn set_programmatic_launch(&mut self, on: bool) -> bool {
        self.pdl = on && self.gpu.properties().has_programmatic_launch();
        self.graphs.clear();
        self.pdl
    }

    fn launch(&self, stream: &Arc<CudaStream>, step: &Step) -> Result<(), EngineError> {
        let function = self.prepare_function(step)?;
        if self.pdl {
            return self.launch_programmatic(stream, function, step);
        }
        let mut builder = stream.launch_builder(function);
        match &step.params {
            Params::Conv(p) => builder.arg(p),
            Params::Depthwise(p) => builder.arg(p),
            Params::Map(p) => builder.arg(p),
            Params::Binary(p) => builder.arg(p),
            Params::Softmax(p) => builder.arg(p),
            Params::Pool(p) => builder.arg(p),
            Params::Matmul(p) => builder.arg(p),
        };
        // SAFETY: each params struct mirrors its kernel's (size-checked in
        // `kernels`); every pointer in it was resolved by `compile` from the
        // plan's placements into the weights, the arena (sized by the plan's
        // memory check) or a bound buffer checked by `bind` to hold its whole
        // tensor, or is the split-K partials buffer, which `split_k` never
        // lets a launch overrun; the pool outlives `'pool`, and it synchronises before freeing.
        unsafe { builder.launch(step.config) }.check_with("cuLaunchKernel", || self.launch_context(step, ""))?;
        Ok(())
    }

    /// What a failed launch of `step` names: its kernel (`how` it was
    /// launched, if not plainly), node and plan.
    fn launch_context(&self, step: &Step, how: &str) -> String {
        format!(
            "{}{how} for node {:?} of {}",
            step.kernel.symbol(),
            self.graph.nodes[step.node].name,
            self.path.display()
        )
    }
}

impl NativeEngine<'_> {
    /// Launches `step` with programmatic stream serialisation
    /// (`cuLaunchKernelEx`): its blocks may be scheduled while the kernel
    /// before it on `stream` is still finishing, hiding the launch and the
    /// block set-up behind that kernel's last wave (kernel boundaries are a
    /// visible share of a batch-1 forward's 200-odd launches). Every engine
    /// kernel starts with `vrseg::wait_for_prior_grid()` (`griddepcontrol.wait`,
    /// kernels/common.cuh), which returns once the kernel before it has
    /// completed and its writes are visible, so the order of the forward is
    /// kept. A captured CUDA graph keeps these programmatic edges.
    fn launch_programmatic(
        &self,
        stream: &Arc<CudaStream>,
        function: &CudaFunction,
        step: &Step,
    ) -> Result<(), EngineError> {
        let mut params: *mut std::ffi::c_void = match &step.params {
            Params::Conv(p) => p as *const ConvParams as *mut _,
            Params::Depthwise(p) => p as *const DepthwiseParams as *mut _,
            Params::Map(p) => p as *const MapParams as *mut _,
            Params::Binary(p) => p as *const BinaryParams as *mut _,
            Params::Softmax(p) => p as *const SoftmaxParams as *mut _,
            Params::Pool(p) => p as *const PoolParams as *mut _,
            Params::Matmul(p) => p as *const MatmulParams as *mut _,
        };
        // SAFETY: CUlaunchAttribute is plain C data; all-zero bytes are a
        // valid value, then the id and its member are set.
        let mut attribute: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
        attribute.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
        attribute.value.programmaticStreamSerializationAllowed = 1;
        let c = &step.config;
        let config = sys::CUlaunchConfig {
            gridDimX: c.grid_dim.0,
            gridDimY: c.grid_dim.1,
            gridDimZ: c.grid_dim.2,
            blockDimX: c.block_dim.0,
            blockDimY: c.block_dim.1,
            blockDimZ: c.block_dim.2,
            sharedMemBytes: c.shared_mem_bytes,
            hStream: stream.cu_stream(),
            attrs: &mut attribute,
            numAttrs: 1,
        };
        stream.context().bind_to_thread().check("cuCtxSetCurrent")?;
        // SAFETY: as in `launch`: the one kernel argument is the params
        // struct its kernel mirrors (size-checked in `kernels`), whose
        // pointers `compile` resolved into buffers that outlive the forward;
        // `params`, `attribute` and `config` live until the call returns,
        // which copies them.
        unsafe { sys::cuLaunchKernelEx(&config, function.cu_function(), &mut params, std::ptr::null_mut()) }
            .result()
            .check_with("cuLaunchKernelEx", || self.launch_context(step, " (programmatic dependent launch)"))?;
        Ok(())
    }
}

impl Backend for NativeEngine<'_> {
    /// The plan's path.
    fn name(&self) -> &str {
        &self.name
    }

    /// The batch the plan was built for (`build-engine --batch`).
    fn batch_size(&self) -> usize {
        self.graph.batch
    }

    fn tensors(&self) -> &[TensorDesc] {
        &self.tensors
    }

    // No workspace: the arena is the plan's own pool buffer (`reserve`).

    fn enqueue(
        &mut self,
        stream: &Arc<CudaStream>,
        inputs: &[DeviceView<'_>],
        outputs: &[DeviceView<'_>],
    ) -> Result<(), BackendError> {
        self.enqueue_graph(stream, inputs, outputs).map_err(BackendError::from)
    }
}

/// Time of one node in an eager forward (see [`NativeEngine::profile`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeTime {
    pub node: String,
    pub op: String,
    /// Kernels it launched ("" for views).
    pub kernels: String,
    pub ms: f64,
    /// Arithmetic of the node (multiply-adds count 2).
    pub flop: f64,
    /// Bytes of its inputs, weights and outputs (a lower bound on traffic).
    pub bytes: f64,
}

impl NativeEngine<'_> {
    /// FLOP of one forward of node `i` at the plan's batch.
    pub fn node_flop(&self, i: usize) -> f64 {
        node_flop(&self.graph, i)
    }

    /// Runs one eager forward with an event pair around every launch and
    /// returns per-node GPU times, in plan order (benchmarks only: it
    /// creates events and synchronises).
    pub fn profile(
        &self,
        stream: &Arc<CudaStream>,
        inputs: &[DeviceView<'_>],
        outputs: &[DeviceView<'_>],
    ) -> Result<Vec<NodeTime>, EngineError> {
        let key = self.bind(inputs, outputs)?;
        let steps = self.compile(&key)?;
        let timing = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
        let mut events = Vec::with_capacity(steps.len());
        for step in &steps {
            let start = stream.record_event(timing).check("cuEventRecord")?;
            self.launch(stream, step)?;
            let end = stream.record_event(timing).check("cuEventRecord")?;
            events.push((step.node, step.kernel, start, end));
        }
        stream.synchronize().check("cuStreamSynchronize")?;
        let mut times: Vec<NodeTime> = self
            .graph
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let bytes: usize = n
                    .inputs
                    .iter()
                    .chain(&n.outputs)
                    .map(|&v| {
                        let value = &self.graph.values[v];
                        value.shape.iter().product::<usize>() * value.element.bytes()
                    })
                    .sum();
                NodeTime {
                    node: n.name.clone(),
                    op: describe_op(&self.graph, i),
                    kernels: String::new(),
                    ms: 0.0,
                    flop: node_flop(&self.graph, i),
                    bytes: bytes as f64,
                }
            })
            .collect();
        for (node, kernel, start, end) in events {
            let ms = start.elapsed_ms(&end).check("cuEventElapsedTime")? as f64;
            let t = &mut times[node];
            t.ms += ms;
            if !t.kernels.contains(kernel.symbol()) {
                if !t.kernels.is_empty() {
                    t.kernels.push('+');
                }
                t.kernels.push_str(kernel.symbol());
            }
        }
        Ok(times)
    }
}

/// "Conv 3x3/2 64->128 80x80" and the like, for profiles.
fn describe_op(graph: &PlanGraph, i: usize) -> String {
    use crate::engine::build::ir::Op;
    let n = &graph.nodes[i];
    let shape = |v: usize| &graph.values[v].shape;
    match &n.op {
        Op::Conv(c) => {
            let (x, y) = (shape(n.inputs[0]), shape(n.outputs[0]));
            let dw = if c.group > 1 { " depthwise" } else { "" };
            format!("Conv{dw} {}x{}/{} {}->{} at {}x{}", c.kernel[0], c.kernel[1], c.stride[0], x[1], y[1], y[2], y[3])
        }
        op => format!("{} -> {:?}", op.onnx_type(), shape(n.outputs[0])),
    }
}

/// FLOP of node `i` (2 per multiply-add; elementwise ops count 1 per output).
pub fn node_flop(graph: &PlanGraph, i: usize) -> f64 {
    use crate::engine::build::ir::Op;
    let n = &graph.nodes[i];
    let elements = |v: usize| graph.values[v].shape.iter().product::<usize>() as f64;
    match &n.op {
        Op::Conv(_) => {
            let w = &graph.values[n.inputs[1]].shape;
            let per_output: usize = w[1..].iter().product();
            2.0 * elements(n.outputs[0]) * per_output as f64
        }
        Op::ConvTranspose(_) => {
            let cin = graph.values[n.inputs[0]].shape[1] as f64;
            2.0 * elements(n.outputs[0]) * cin
        }
        Op::MatMul => {
            let a = &graph.values[n.inputs[0]].shape;
            2.0 * elements(n.outputs[0]) * a[a.len() - 1] as f64
        }
        _ => elements(n.outputs[0]),
    }
}

/// FLOP of one forward of the whole plan at its batch.
pub fn plan_flop(graph: &PlanGraph) -> f64 {
    (0..graph.nodes.len()).map(|i| node_flop(graph, i)).sum()
}

/// A pool plan holding a plan's engine buffers and one buffer per model
/// input and output (for `vrseg bench engine`, `vrseg dev engine` and tests;
/// the pipeline plans its own I/O slots).
pub struct StandaloneBuffers {
    pub pool: PoolPlan,
    pub engine: EngineBuffers,
    pub inputs: Vec<BufferId>,
    pub outputs: Vec<BufferId>,
}

impl StandaloneBuffers {
    pub fn new(plan: &Plan) -> StandaloneBuffers {
        let mut pool = PoolPlan::new();
        let engine = NativeEngine::reserve(plan, &mut pool);
        let mut io = |ids: &[usize], role: &str| -> Vec<BufferId> {
            ids.iter()
                .map(|&v| {
                    let value = &plan.graph.values[v];
                    let bytes = value.shape.iter().product::<usize>() * value.element.bytes();
                    let id = pool.buffer(format!("engine {role} `{}`", value.name), bytes);
                    pool.align(id, 256);
                    id
                })
                .collect()
        };
        let inputs = io(&plan.graph.inputs, "input");
        let outputs = io(&plan.graph.outputs, "output");
        StandaloneBuffers { pool, engine, inputs, outputs }
    }
}

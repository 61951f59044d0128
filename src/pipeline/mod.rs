//! `vrseg run`: demux/decode → letterbox → engine → postprocess → sink, the
//! only module that knows video, kernels and models together.
//!
//! Threads and streams:
//! - The decode thread owns the demuxer and the NVDEC session (its own
//!   stream). Each picture is copied into a slot of the frame ring in the
//!   VRAM pool and handed on through a bounded channel; `SlotRing::acquire`
//!   blocks when every slot is in flight, which is the pipeline's
//!   backpressure. With several NVDEC engines (`RunOptions::decoders`, by
//!   default all of them) the decode thread instead runs one session per
//!   engine on chunks of the file between keyframes
//!   ([`crate::video::parallel`]) and hands their frames on in presentation
//!   order; the ring grows by the reorder window, `--stats` reports both,
//!   and when each session was ready, gave its first frame, finished and
//!   was torn down (`decode_parallel`), beside the set-up steps and the
//!   run's timeline (`phases`).
//! - The calling thread is the GPU worker. It gathers a batch of frames,
//!   enqueues letterbox (both eyes of every frame in one launch), gives the
//!   slots back (reusable once the letterbox has read them, on the GPU), the
//!   engine (its CUDA graph), and the postprocess (NMS + matte into the
//!   batch's matte frames), all on one compute stream, then hands the batch
//!   to the sink. `--output green|overlay` keeps the batch's slots until the
//!   compose kernel (src/ops/compose.rs) has read them with the mattes (and,
//!   for overlay, the detections still on the GPU) into the batch's NV12
//!   frames.
//!
//! The engine is a [`Backend`]: the native plan executor or a TensorRT
//! engine, told apart by the file's header ([`engine_io::engine_kind`]), and
//! held to one rule for YOLO-seg's inputs and outputs
//! ([`engine_io::yolo_seg_io`]). The letterbox writes FP16 and the
//! postprocess reads FP32; where the engine's types differ (TensorRT engines
//! from an Ultralytics ONNX often take FP32, or give FP16 when exported with
//! `half=True`), an FP16<->FP32 conversion ([`crate::ops::convert`]) runs on
//! the compute stream between them, into pool buffers. A TensorRT engine is
//! checked (its header, then TensorRT itself) before the GPU, the input or
//! the output is touched, so "TensorRT not found" leaves nothing behind.
//! - Sinks that write to the host (PNG masks, `--detections`, encoders
//!   without NVENC) wait for their batch; `null` does not wait at all.
//!
//! Every device buffer is planned once in one [`VramPool`]: the frame ring,
//! the engine's weights and arena (native) or workspace (TensorRT), its
//! input and outputs and their conversions, the postprocess scratch, the
//! matte frames and (green, overlay) the composed frames. The frame loop
//! allocates nothing on the
//! device (checked by the `pipeline` GPU test).

pub mod engine_io;
mod sink;

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::time::Instant;

use cudarc::driver::{sys, CudaEvent};

pub use sink::{partial_name, OutputKind, Sink};

use crate::engine::backend::{Backend, BackendError, DType, TensorDesc};
use crate::engine::native::{EngineError, NativeEngine};
use crate::engine::plan::{Plan, PlanError};
use crate::engine::tensorrt::{self, LibrarySearch, LoadOptions, TensorRtBackend, TensorRtError};
use crate::gpu::error::CheckDriver;
use crate::gpu::nvtx::{self, Stage};
use crate::gpu::pool::Slot;
use crate::gpu::{device_allocation_count, DeviceView, Gpu, GpuError, Module, PoolPlan, VramPool};
use crate::ops::compose::{
    compose, outline_thickness, BoxSource, ComposeJob, ComposeMode, FrameBatch, Ycbcr8, DEFAULT_KEY_RGB,
    OVERLAY_TINT_RGB, PALETTE_RGB,
};
use crate::ops::convert::{convert_elements, ConvertJob};
use crate::ops::letterbox::{eye_rects, letterbox, LetterboxGeometry, LetterboxJob, YuvMatrix, YuvToRgb};
use crate::ops::yolo_seg::{
    download_detections, yolo_seg_postprocess, Detection, MatteTarget, PostprocessConfig, YoloSegBuffers, YoloSegJob,
};
use crate::video::demux::{DemuxError, Demuxer};
use crate::video::layout::{detect_layout, StereoLayout};
use crate::video::nvdec::{FrameLayout, NvDecoder, NvdecError};
use crate::video::parallel::{self, ParallelError};
use engine_io::{engine_kind, yolo_seg_io, EngineKind, YoloSegIo};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Demux(#[from] DemuxError),
    #[error(transparent)]
    Nvdec(#[from] NvdecError),
    #[error(transparent)]
    Gpu(#[from] GpuError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    TensorRt(#[from] TensorRtError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Parallel(#[from] ParallelError),
    #[error("{0}")]
    Sink(String),
    #[error("{what}")]
    Setup { what: String },
}

/// What `vrseg run` was asked to do.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub input: PathBuf,
    /// Output file (or directory for masks); `None` only for `OutputKind::Null`.
    pub output: Option<PathBuf>,
    /// A native plan or a TensorRT engine (told apart by its header).
    pub engine: PathBuf,
    /// Frames per inference. A native plan's batch is fixed when it is
    /// built: this must match it. A TensorRT engine runs `batch × eyes`
    /// images within its optimisation profile. `None`: the plan's batch, or
    /// the profile's optimum.
    pub batch: Option<usize>,
    /// Where TensorRT's libraries are looked for (`LibrarySearch::from_env()`
    /// for the CLI).
    pub tensorrt_search: LibrarySearch,
    /// Forced stereo layout; `None` detects it (metadata, file name, aspect).
    pub layout: Option<StereoLayout>,
    pub kind: OutputKind,
    pub postprocess: PostprocessConfig,
    /// Skip frames before this presentation time (seconds).
    pub start_s: Option<f64>,
    /// Stop after this many frames.
    pub frames: Option<u64>,
    pub gpu: usize,
    /// One JSON line per frame: boxes in source pixels, scores, classes, eye.
    pub detections: Option<PathBuf>,
    /// Frames the decoder may run ahead of the GPU worker (ring slots beyond one batch).
    pub frames_ahead: usize,
    /// NVDEC sessions decoding the input in parallel (src/video/parallel.rs);
    /// `None`: one per NVDEC engine; 1: the plain single-session path.
    pub decoders: Option<usize>,
    /// Places in the parallel decoder's reorder window; `None`: its default
    /// ([`parallel::default_window`] within a quarter of the GPU's memory).
    pub decode_window: Option<usize>,
    /// `--output green`'s key colour, 8-bit R'G'B' (converted to the
    /// output's matrix and range); `None`: pure green.
    pub key_colour: Option<[u8; 3]>,
}

/// Per-stage times and counts, for the summary line and `--stats`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RunStats {
    pub input: String,
    /// The backend's name: the plan's path, or "TensorRT X.Y.Z: path".
    pub engine: String,
    /// "native" or "tensorrt".
    pub backend: String,
    /// FP16<->FP32 conversions inserted between the pipeline and the engine
    /// (input ones count in `letterbox_gpu_s`, output ones in `postprocess_gpu_s`).
    pub engine_conversions: Vec<String>,
    /// What the backend had to say that is not an error (an engine built on
    /// another GPU model; a CUDA graph TensorRT would not capture).
    pub engine_warnings: Vec<String>,
    pub gpu: String,
    pub layout: String,
    pub width: u32,
    pub height: u32,
    pub frames_in: u64,
    pub frames_out: u64,
    pub batches: u64,
    pub batch_frames: usize,
    /// Seconds from the start of the run (opening the GPU) to the output
    /// complete under its final name; NVDEC's teardown may run a little past
    /// it (`phases.run_end_at_s`).
    pub wall_s: f64,
    /// frames_out / wall_s.
    pub fps: f64,
    /// Frames after the first batch over the time after the first batch was
    /// handed to the sink: the pipeline's rate without its set-up (pool,
    /// weights, graph capture, NVDEC session start, first batch).
    pub steady_fps: f64,
    /// Decode thread: demux + NVDEC + copy into the ring, seconds (overlaps the GPU work).
    pub decode_s: f64,
    /// GPU time per stage (events), seconds, summed over batches.
    pub letterbox_gpu_s: f64,
    pub inference_gpu_s: f64,
    pub postprocess_gpu_s: f64,
    /// Compose kernel (green, overlay), seconds, summed over batches.
    pub compose_gpu_s: f64,
    /// Host time in the sink (PNG encoding, encoders, detection downloads), seconds.
    pub sink_s: f64,
    pub concealed_frames: Vec<u64>,
    pub failed_frames: Vec<u64>,
    /// Bytes of the VRAM pool (everything the run keeps on the GPU).
    pub vram_pool_bytes: usize,
    /// Host→device bytes per frame: the compressed bitstream NVDEC reads.
    pub bitstream_bytes_per_frame: f64,
    /// Device→host bytes per frame (the sink's downloads: 0 for null and NVENC).
    pub download_bytes_per_frame: f64,
    pub device_allocations_in_loop: u64,
    pub interrupted: bool,
    /// NVDEC sessions that decoded the input (1: single-session).
    pub decoders: usize,
    /// Why fewer sessions ran than were asked for, when so.
    pub decoders_note: Option<String>,
    /// Chunks between keyframes the input was split into (0 when single-session).
    pub decode_chunks: usize,
    /// Places of the parallel decoder's reorder window (frame-ring slots beyond
    /// the batch and `frames_ahead`), and the most frames that waited there.
    pub decode_window_slots: usize,
    pub decode_window_peak: usize,
    /// Bytes of those slots (part of `vram_pool_bytes`).
    pub decode_window_bytes: usize,
    /// NVDEC's own surfaces over all sessions, estimated (outside the pool).
    pub decode_surface_bytes: u64,
    /// Pictures decoded and dropped by the parallel decoder (tails, leading pictures, outside --start/--frames).
    pub decode_discarded: u64,
    /// Frames no decoder session displayed (damaged stream): skipped.
    pub decode_missing_frames: Vec<u64>,
    /// Where the run's time went before, around and after the frame loop.
    pub phases: RunPhases,
    /// The parallel decoder's own report (per-session timing, waits), when `decoders > 1`.
    pub decode_parallel: Option<parallel::NvdecParallelReport>,
}

/// Set-up steps (durations) and the run's timeline (instants), in seconds;
/// instants are counted from the start of the run, the clock of `wall_s`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RunPhases {
    /// Opening the GPU (the CUDA context, the kernels' registry).
    pub gpu_open_s: f64,
    /// Opening the engine file, the input (demux index), choosing the
    /// layout and planning the decode (NVDEC caps, chunks).
    pub inputs_open_s: f64,
    /// Reserving the VRAM pool.
    pub pool_reserve_s: f64,
    /// Loading the engine (weights upload; TensorRT: loaded in `inputs_open_s`).
    pub engine_load_s: f64,
    /// The engine's first forward: its CUDA graph captured, waited for.
    pub graph_capture_s: f64,
    /// Opening the sink (output file, encoder), the detections file and the timing events.
    pub sink_open_s: f64,
    /// The decode thread started (it creates the NVDEC session(s)).
    pub decode_start_at_s: f64,
    /// The GPU worker got its first frame.
    pub first_frame_at_s: f64,
    /// The first batch was done on the GPU (the start of `steady_fps`'s clock).
    pub first_batch_at_s: f64,
    /// The decode thread handed on its last frame and ended.
    pub decode_end_at_s: f64,
    /// The worker enqueued its last batch.
    pub last_batch_at_s: f64,
    /// The output was complete under its final name (the end of `wall_s`).
    pub output_done_at_s: f64,
    /// The decode thread was joined: NVDEC's sessions were torn down, which
    /// may end after the output (the run returns here).
    pub run_end_at_s: f64,
}

/// Set by the Ctrl-C handler: stop decoding, drain, finish a partial output.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// One decoded frame waiting in its ring slot.
struct Ready<'ring, 'pool> {
    slot: Slot<'ring, 'pool>,
    index: u64,
    pts: i64,
}

enum DecodeMsg<'ring, 'pool> {
    Frame(Ready<'ring, 'pool>),
    /// The decode thread stopped with an error (after sending every frame before it).
    Failed(PipelineError),
}

/// GPU timing events of one batch (reused round-robin, so nothing is
/// created in the frame loop).
struct BatchEvents {
    marks: [CudaEvent; 5],
    pending: bool,
}

/// An engine file opened as far as is possible before the VRAM pool exists.
enum OpenedEngine {
    /// A plan: its weights and arena go into the pool, then it loads.
    Native(Plan),
    /// Loaded: its I/O fixed at the run's batch, its workspace size known.
    TensorRt(TensorRtBackend),
}

/// One FP16<->FP32 conversion between the pipeline's buffers and the engine's.
struct Conversion<'pool> {
    src: DeviceView<'pool>,
    src_type: DType,
    dst: DeviceView<'pool>,
    dst_type: DType,
    count: usize,
}

impl Conversion<'_> {
    fn enqueue(&self, gpu: &Gpu, stream: &cudarc::driver::CudaStream) -> Result<(), GpuError> {
        let job = ConvertJob {
            src: &self.src,
            src_type: self.src_type,
            dst: &self.dst,
            dst_type: self.dst_type,
            count: self.count,
        };
        convert_elements(gpu, stream, &job)
    }

    fn describe(&self, what: &str) -> String {
        format!("{what}: {} elements {} -> {}", self.count, self.src_type, self.dst_type)
    }
}

/// The engine's buffers as the worker drives them.
struct EngineBinding<'pool> {
    /// Where the letterbox writes (FP16).
    letterboxed: DeviceView<'pool>,
    /// The engine's input and outputs, in the order of its `tensors()`.
    inputs: Vec<DeviceView<'pool>>,
    outputs: Vec<DeviceView<'pool>>,
    /// What the postprocess reads (FP32).
    heads: DeviceView<'pool>,
    protos: DeviceView<'pool>,
    /// Letterbox → engine input, when the engine takes FP32.
    before: Vec<Conversion<'pool>>,
    /// Engine outputs → postprocess, when the engine gives FP16.
    after: Vec<Conversion<'pool>>,
}

impl EngineBinding<'_> {
    /// Conversion in, inference, conversions out, on `stream`.
    fn enqueue_all(
        &self,
        engine: &mut dyn Backend,
        gpu: &Gpu,
        stream: &std::sync::Arc<cudarc::driver::CudaStream>,
    ) -> Result<(), PipelineError> {
        for c in &self.before {
            c.enqueue(gpu, stream)?;
        }
        engine.enqueue(stream, &self.inputs, &self.outputs)?;
        for c in &self.after {
            c.enqueue(gpu, stream)?;
        }
        Ok(())
    }
}

/// Where the engine writes an output the postprocess reads as `f32_view`:
/// that buffer itself, or the FP16 buffer `id`, converted after inference.
fn engine_output<'pool>(
    pool: &'pool VramPool,
    id: Option<crate::gpu::BufferId>,
    f32_view: DeviceView<'pool>,
    count: usize,
    after: &mut Vec<Conversion<'pool>>,
) -> DeviceView<'pool> {
    match id {
        Some(id) => {
            let src = pool.buffer(id);
            after.push(Conversion { src, src_type: DType::F16, dst: f32_view, dst_type: DType::F32, count });
            src
        }
        None => f32_view,
    }
}

/// The backend's load error; for a batch TensorRT refuses, with the frames
/// and eyes that made it.
fn tensorrt_load_error(e: TensorRtError, asked_frames: Option<usize>, eyes: usize) -> PipelineError {
    match (&e, asked_frames) {
        (TensorRtError::UnsupportedTensor { .. }, Some(frames)) => PipelineError::Setup {
            what: format!("{e} (--batch {frames} frames of {eyes} eye(s) is {} images)", frames * eyes),
        },
        _ => e.into(),
    }
}

/// Runs the pipeline; `progress` is called after every batch with (frames done, frames expected).
pub fn run(options: &RunOptions, progress: &mut dyn FnMut(u64, u64)) -> Result<RunStats, PipelineError> {
    let started = Instant::now();
    let mut phases = RunPhases::default();
    let mut step = Instant::now();
    // The seconds since the last call (a set-up step's duration).
    let mut lap = move || {
        let now = Instant::now();
        let secs = (now - step).as_secs_f64();
        step = now;
        secs
    };
    if options.batch == Some(0) {
        return Err(PipelineError::Setup { what: "--batch is a number of frames, at least 1".into() });
    }
    let kind = engine_kind(&options.engine);
    if kind == EngineKind::TensorRt {
        // Before the GPU, the input or the output is touched: the engine
        // file's header, then TensorRT itself ("TensorRT not found
        // (searched: …)"), the checks `TensorRtBackend::load` starts with.
        tensorrt::EngineFile::open(&options.engine)?;
        tensorrt::load_library(&options.tensorrt_search)?;
    }
    let gpu = Gpu::open(options.gpu)?;
    phases.gpu_open_s = lap();
    let plan = match kind {
        EngineKind::Native => Some(Plan::open(&options.engine)?),
        EngineKind::TensorRt => None,
    };
    let demuxer = Demuxer::open(&options.input)?;
    let info = demuxer.info().clone();
    let detected = detect_layout(demuxer.stereo_metadata(), &options.input, info.width, info.height);
    let layout = options.layout.unwrap_or(detected.layout);
    let mut eyes = eye_rects(layout, info.width, info.height);
    if options.layout.is_none() && detected.right_eye_first && eyes.len() == 2 {
        eyes.swap(0, 1); // image 0 of a frame is always the left (top) eye
    }
    let eye_count = eyes.len();

    // The engine, loaded (a TensorRT engine at the run's batch) before the
    // pool is planned and the output opened.
    let opened = match plan {
        Some(plan) => OpenedEngine::Native(plan),
        None => {
            let load = LoadOptions {
                batch: options.batch.map(|frames| frames * eye_count),
                search: options.tensorrt_search.clone(),
                ..LoadOptions::default()
            };
            let backend = TensorRtBackend::load(&gpu, &options.engine, &load)
                .map_err(|e| tensorrt_load_error(e, options.batch, eye_count))?;
            OpenedEngine::TensorRt(backend)
        }
    };
    let (tensors, workspace_bytes): (Vec<TensorDesc>, usize) = match &opened {
        OpenedEngine::Native(plan) => (plan.tensors(), 0),
        OpenedEngine::TensorRt(backend) => (backend.tensors().to_vec(), backend.workspace_bytes()),
    };
    let io: YoloSegIo = yolo_seg_io(&options.engine, kind, &tensors, eye_count, layout.name(), options.batch)
        .map_err(|what| PipelineError::Setup { what })?;
    let (images, side, batch_frames, shape) = (io.images, io.side, io.batch_frames, io.shape);

    let probe_decoder_layout = FrameLayout::new(info.width, info.height, info.bit_depth);
    let start_pts = options.start_s.map(|s| (s * f64::from(info.timescale)).round() as i64);
    let decode_options = parallel::ParallelOptions {
        window: options.decode_window,
        ..parallel::ParallelOptions::sessions(options.decoders)
    };
    let decode_setup = parallel::setup(
        &demuxer,
        &decode_options,
        parallel::nvdec_engines(&gpu, &info)?,
        (start_pts, options.frames),
        probe_decoder_layout.slot_bytes(),
        parallel::default_window_budget(&gpu)?,
    )?;
    let geometry = LetterboxGeometry::ultralytics(eyes[0].w, eyes[0].h, side as i32, side as i32);
    let colour = YuvToRgb::for_stream(&info.colour, info.width, info.height, info.bit_depth);
    let matte_pitch = (info.width as usize).div_ceil(256) * 256;
    // Room for NV12 chroma after each matte: encoders read the mattes as NV12.
    let matte_frame = matte_pitch * (info.height as usize + (info.height as usize).div_ceil(2));

    // One pool for everything, reserved before the first chunk.
    let mut pool_plan = PoolPlan::new();
    // Parallel decode adds its reorder window: frames that wait for their turn.
    let ring_slots = batch_frames + options.frames_ahead.max(1) + decode_setup.window;
    let ring_id = pool_plan.slots("frames (decoded NV12/P016)", probe_decoder_layout.slot_bytes(), ring_slots);
    let native_buffers = match &opened {
        OpenedEngine::Native(plan) => Some(NativeEngine::reserve(plan, &mut pool_plan)),
        OpenedEngine::TensorRt(_) => None,
    };
    let input_elements = images * 3 * side * side;
    let mut aligned = |name: &str, bytes: usize| {
        let id = pool_plan.buffer(name, bytes);
        pool_plan.align(id, 256);
        id
    };
    let letterboxed_id = aligned("engine input (letterboxed FP16)", input_elements * 2);
    let engine_input_id =
        (io.input == DType::F32).then(|| aligned("engine input (FP32, converted from FP16)", input_elements * 4));
    let heads_id = aligned("engine output0 (heads, FP32)", shape.output0_elements() * 4);
    let protos_id = aligned("engine output1 (prototypes, FP32)", shape.protos_elements() * 4);
    let engine_heads_id = (io.heads_type == DType::F16)
        .then(|| aligned("engine output0 (heads, FP16, converted to FP32)", shape.output0_elements() * 2));
    let engine_protos_id = (io.protos_type == DType::F16)
        .then(|| aligned("engine output1 (prototypes, FP16, converted to FP32)", shape.protos_elements() * 2));
    let workspace_id =
        (workspace_bytes > 0).then(|| aligned("engine workspace (TensorRT activations)", workspace_bytes));
    let post = YoloSegBuffers::plan(&mut pool_plan, shape, options.postprocess.max_det);
    let matte_id = pool_plan.buffer("mattes (8-bit, one batch)", batch_frames * matte_frame);
    let composing = matches!(options.kind, OutputKind::Green | OutputKind::Overlay);
    // Same geometry as the mattes: NV12 at `matte_pitch`, chroma after the luma.
    let composed_id =
        composing.then(|| pool_plan.buffer("composed frames (NV12, one batch)", batch_frames * matte_frame));
    phases.inputs_open_s = lap();
    let pool = {
        let _range = nvtx::range(Stage::PoolReserve);
        VramPool::reserve(&gpu, &pool_plan)?
    };
    phases.pool_reserve_s = lap();
    let compute = gpu.new_stream()?;
    // Declared after the pool, so dropped before it on every path: nothing
    // the engine enqueued may outlive the buffers it was given.
    let mut engine: Box<dyn Backend + '_> = match (opened, native_buffers) {
        (OpenedEngine::Native(plan), Some(buffers)) => {
            Box::new(NativeEngine::load(&gpu, &compute, &plan, &pool, buffers)?)
        }
        (OpenedEngine::TensorRt(backend), _) => Box::new(backend),
        (OpenedEngine::Native(_), None) => unreachable!("a plan's buffers are planned above"),
    };
    phases.engine_load_s = lap();
    if let Some(id) = workspace_id {
        // SAFETY: the pool outlives the engine (declared before it), and the
        // workspace buffer is handed to nothing else.
        unsafe { engine.bind_workspace(pool.buffer(id)) }?;
    }
    let ring = pool.slot_ring(ring_id)?;
    let mattes = pool.buffer(matte_id);
    let binding = {
        let letterboxed = pool.buffer(letterboxed_id);
        let (heads, protos) = (pool.buffer(heads_id), pool.buffer(protos_id));
        let mut before = Vec::new();
        let mut after = Vec::new();
        let input = match engine_input_id {
            Some(id) => {
                let dst = pool.buffer(id);
                before.push(Conversion {
                    src: letterboxed,
                    src_type: DType::F16,
                    dst,
                    dst_type: DType::F32,
                    count: input_elements,
                });
                dst
            }
            None => letterboxed,
        };
        let engine_heads = engine_output(&pool, engine_heads_id, heads, shape.output0_elements(), &mut after);
        let engine_protos = engine_output(&pool, engine_protos_id, protos, shape.protos_elements(), &mut after);
        let mut outputs = vec![engine_heads; 2];
        outputs[io.protos] = engine_protos;
        EngineBinding { letterboxed, inputs: vec![input], outputs, heads, protos, before, after }
    };
    if !binding.before.is_empty() || !binding.after.is_empty() {
        gpu.preload(&[Module::EngineOps])?;
    }
    let composed = composed_id.map(|id| pool.buffer(id));
    let (detection_view, count_view) = (post.detections(&pool), post.detection_counts(&pool));
    // The output keeps the source's matrix and range (8-bit): the key, tint
    // and box colours are converted into them once.
    let out_matrix = YuvMatrix::for_stream(&info.colour, info.width, info.height, info.bit_depth);
    let out_full_range = info.colour.full_range.unwrap_or(false);
    let to_ycbcr = |rgb: [u8; 3]| Ycbcr8::from_rgb(rgb, out_matrix, out_full_range);
    let compose_mode = match options.kind {
        OutputKind::Green => Some(ComposeMode::Green { key: to_ycbcr(options.key_colour.unwrap_or(DEFAULT_KEY_RGB)) }),
        OutputKind::Overlay => Some(ComposeMode::Overlay {
            tint: to_ycbcr(OVERLAY_TINT_RGB),
            palette: PALETTE_RGB.map(to_ycbcr),
            thickness: outline_thickness(eyes[0]),
            boxes: BoxSource { detections: &detection_view, counts: &count_view, max_det: options.postprocess.max_det },
        }),
        _ => None,
    };

    // Run the engine once now, before the decoder starts: its CUDA graph is
    // captured here (a capture must not race NVDEC's own driver calls, and it
    // is set-up work), and the conversions' kernels load. (The input holds
    // whatever the pool held; these outputs are overwritten.)
    let _ = lap(); // buffers bound, compose colours: nothing to speak of
    binding.enqueue_all(engine.as_mut(), &gpu, &compute)?;
    compute.synchronize().check("cuStreamSynchronize")?;
    phases.graph_capture_s = lap();
    let mut sink = Sink::open(options, &info, layout, &demuxer, &gpu)?;
    if sink.wants_nv12() {
        for f in 0..batch_frames {
            // SAFETY: frame f of the matte buffer holds height + ceil(height / 2)
            // rows of `matte_pitch` bytes (planned above); the pool outlives the stream's work.
            unsafe {
                crate::video::encode::fill_neutral_chroma(
                    mattes.ptr() + (f * matte_frame) as u64,
                    matte_pitch,
                    info.width,
                    info.height,
                    &compute,
                )
            }
            .map_err(|e| PipelineError::Setup { what: e.to_string() })?;
        }
    }
    let mut detections_out = match &options.detections {
        Some(path) => Some(sink::LineWriter::create(path).map_err(PipelineError::Sink)?),
        None => None,
    };

    let mut stats = RunStats {
        input: options.input.display().to_string(),
        engine: engine.name().to_string(),
        backend: kind.name().to_string(),
        engine_conversions: (binding.before.iter().map(|c| c.describe("input")))
            .chain(binding.after.iter().map(|c| c.describe("output")))
            .collect(),
        engine_warnings: engine.warnings().to_vec(),
        gpu: format!("{} ({})", gpu.properties().name, gpu.properties().sm()),
        layout: layout.name().to_string(),
        width: info.width,
        height: info.height,
        batch_frames,
        vram_pool_bytes: pool.total_bytes(),
        decoders: decode_setup.decoders,
        decoders_note: decode_setup.note.clone(),
        decode_chunks: decode_setup.plan.as_ref().map_or(0, |p| p.chunks.len()),
        decode_window_slots: decode_setup.window,
        decode_window_bytes: decode_setup.window * probe_decoder_layout.slot_bytes(),
        ..Default::default()
    };
    let timing = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
    let mut event_sets: Vec<BatchEvents> = (0..4)
        .map(|_| -> Result<BatchEvents, GpuError> {
            let e = || gpu.context().new_event(timing).check("cuEventCreate");
            Ok(BatchEvents { marks: [e()?, e()?, e()?, e()?, e()?], pending: false })
        })
        .collect::<Result<_, _>>()?;
    let expected = options.frames.map(|n| n.min(info.frame_count)).unwrap_or(info.frame_count);
    let frame_limit = options.frames.unwrap_or(u64::MAX);
    let label = options.input.display().to_string();
    let mut bitstream_bytes = 0u64;
    let mut decode_s = 0f64;
    let mut parallel_report = None;

    // Stops the decoder early: set on Ctrl-C (through INTERRUPTED) or when
    // the worker fails. Per run, so one failed run cannot stop the next.
    let stop = AtomicBool::new(false);
    let stopped = || stop.load(Ordering::Relaxed) || INTERRUPTED.load(Ordering::Relaxed);
    let mut first_batch_done: Option<(u64, Instant)> = None;
    let mut first_frame_at: Option<Instant> = None;
    let (tx, rx) = sync_channel::<DecodeMsg>(ring_slots);
    phases.sink_open_s = lap();
    let since_start = |at: Instant| at.saturating_duration_since(started).as_secs_f64();
    let worker_result = std::thread::scope(|scope| -> Result<Result<OutputFinished, PipelineError>, PipelineError> {
        let ring = &ring;
        let gpu = &gpu;
        let stopped = &stopped;
        let info = &info;
        let label = &label;
        let decode_setup = &decode_setup;
        // (bitstream bytes, seconds, concealed, failed, NVDEC surface bytes, the parallel report)
        type DecodeOutcome = (u64, f64, Vec<u64>, Vec<u64>, u64, Option<parallel::NvdecParallelReport>);
        let t0 = Instant::now();
        let decode_thread = scope.spawn(move || -> DecodeOutcome {
            let mut bytes = 0u64;
            let mut demuxer = demuxer;
            // Closing the channel ends the worker's input. It is closed as
            // soon as the last frame is sent, before NVDEC tears down (tens
            // to hundreds of milliseconds a session, serialised by the
            // driver), so the output is finished meanwhile.
            let tx = RefCell::new(Some(tx));
            // A closed channel means the worker stopped; it reports why.
            let send = |msg| {
                if let Some(tx) = tx.borrow().as_ref() {
                    let _ = tx.send(msg);
                }
            };
            let mut close = || drop(tx.borrow_mut().take());
            if decode_setup.decoders > 1 {
                // K sessions, frames handed on in presentation order (src/video/parallel.rs).
                let outcome = parallel::decode_into_ring(
                    gpu,
                    &demuxer,
                    decode_setup,
                    ring,
                    stopped,
                    &mut |rank, frame| {
                        send(DecodeMsg::Frame(Ready { slot: frame.slot, index: rank, pts: frame.pts }));
                        Ok(())
                    },
                    &mut close,
                );
                let report = match outcome {
                    Ok(report) => report,
                    Err(e) => {
                        send(DecodeMsg::Failed(e.into()));
                        Default::default()
                    }
                };
                close();
                let (concealed, failed) = (report.sessions.concealed.clone(), report.sessions.failed.clone());
                let (bytes, surfaces) = (report.bitstream_bytes, report.surface_bytes);
                return (bytes, t0.elapsed().as_secs_f64(), concealed, failed, surfaces, Some(report));
            }
            let outcome = (|| -> Result<(Vec<u64>, Vec<u64>, u64), PipelineError> {
                let stream = gpu.new_priority_stream()?;
                let mut decoder = NvDecoder::new(gpu, stream.clone(), info, label)?;
                let sent = std::cell::Cell::new(0u64);
                let mut deliver = |picture: &crate::video::nvdec::MappedPicture| -> Result<(), NvdecError> {
                    let _range = nvtx::range(Stage::Decode);
                    if sent.get() >= frame_limit || stopped() {
                        return Ok(());
                    }
                    if start_pts.is_some_and(|s| picture.pts < s) {
                        return Ok(());
                    }
                    let slot = ring.acquire(&stream)?;
                    picture.copy_to(&slot.view())?;
                    sent.set(sent.get() + 1);
                    send(DecodeMsg::Frame(Ready { slot, index: picture.index, pts: picture.pts }));
                    Ok(())
                };
                while let Some(chunk) = {
                    let _range = nvtx::range(Stage::Demux);
                    demuxer.next_chunk()?
                } {
                    if sent.get() >= frame_limit || stopped() {
                        break;
                    }
                    bytes += chunk.data.len() as u64;
                    decoder.decode(&chunk, &mut deliver)?;
                }
                decoder.flush(&mut deliver)?;
                // Every frame is sent: the worker may finish while the
                // decoder is destroyed (at the end of this closure).
                close();
                let report = decoder.report();
                Ok((report.concealed.clone(), report.failed.clone(), decoder.surface_bytes_estimate()))
            })();
            let (concealed, failed, surfaces) = match outcome {
                Ok(r) => r,
                Err(e) => {
                    send(DecodeMsg::Failed(e));
                    (Vec::new(), Vec::new(), 0)
                }
            };
            close();
            (bytes, t0.elapsed().as_secs_f64(), concealed, failed, surfaces, None)
        });

        let result = worker(
            &GpuRefs { gpu, stream: &compute },
            &rx,
            &mut WorkerState {
                engine: engine.as_mut(),
                binding: &binding,
                eyes: &eyes,
                batch_frames,
                geometry,
                colour,
                bit_depth: info.bit_depth,
                layout: probe_decoder_layout,
                mattes: &mattes,
                composed: composed.as_ref().zip(compose_mode),
                matte_pitch,
                matte_frame,
                pool: &pool,
                post: &post,
                config: &options.postprocess,
                sink: &mut sink,
                detections: detections_out.as_mut(),
                stats: &mut stats,
                events: &mut event_sets,
                progress,
                expected,
                first_batch_done: &mut first_batch_done,
                first_frame_at: &mut first_frame_at,
            },
        );
        let last_batch_at = Instant::now();
        // On a worker error, stop the decoder and drain the channel so it can finish.
        if result.is_err() {
            stop.store(true, Ordering::Relaxed);
            while rx.recv().is_ok() {}
        }
        // Every frame is done: finish the output now. The decode thread
        // closed the channel before tearing NVDEC down, which it may still
        // be doing; the output does not wait for it.
        let finished = match &result {
            Ok(()) => Some(finish_output(&compute, &mut sink, detections_out.take())),
            Err(_) => None,
        };
        let (bytes, secs, concealed, failed, surfaces, report) =
            decode_thread.join().expect("the decode thread panicked");
        phases.decode_start_at_s = since_start(t0);
        phases.decode_end_at_s = phases.decode_start_at_s + secs;
        phases.last_batch_at_s = since_start(last_batch_at);
        phases.run_end_at_s = since_start(Instant::now());
        bitstream_bytes = bytes;
        stats.decode_surface_bytes = surfaces;
        decode_s = secs;
        stats.concealed_frames = concealed;
        stats.failed_frames = failed;
        parallel_report = report;
        result.map(|()| finished.expect("the output is finished after a worker success"))
    });
    let finished = match worker_result {
        Err(e) => {
            sink.abandon();
            if let Some(d) = detections_out {
                d.abandon();
            }
            return Err(e);
        }
        Ok(finished) => finished?,
    };
    collect_times(&mut event_sets, &mut stats)?;
    stats.interrupted = finished.interrupted;
    stats.decode_s = decode_s;
    if let Some(report) = parallel_report {
        stats.decode_window_peak = report.sessions.window_peak;
        stats.decode_discarded = report.sessions.discarded;
        stats.decode_missing_frames = report.sessions.missing.clone();
        stats.decode_parallel = Some(report);
    }
    phases.first_frame_at_s = first_frame_at.map_or(0.0, since_start);
    phases.first_batch_at_s = first_batch_done.map_or(0.0, |(_, at)| since_start(at));
    phases.output_done_at_s = since_start(finished.done_at);
    stats.phases = phases;
    stats.sink_s += finished.sink_s;
    stats.wall_s = stats.phases.output_done_at_s;
    stats.fps = stats.frames_out as f64 / stats.wall_s.max(1e-9);
    if let Some((frames, at)) = first_batch_done {
        let after = finished.done_at.saturating_duration_since(at).as_secs_f64();
        if stats.frames_out > frames && after > 0.0 {
            stats.steady_fps = (stats.frames_out - frames) as f64 / after;
        }
    }
    stats.bitstream_bytes_per_frame = bitstream_bytes as f64 / stats.frames_in.max(1) as f64;
    stats.download_bytes_per_frame = sink.downloaded_bytes() as f64 / stats.frames_out.max(1) as f64;
    Ok(stats)
}

/// What finishing the output left for the run's statistics.
struct OutputFinished {
    /// Ctrl-C came before the output was finished: it has a partial name.
    interrupted: bool,
    /// Seconds in the sink's finish (encoder flush, muxer, renames).
    sink_s: f64,
    /// When the output was complete: the end of `wall_s`.
    done_at: Instant,
}

/// Waits for the last batch's GPU work, then finishes the output (and the
/// detections file) under its final name, or a partial one after Ctrl-C.
fn finish_output(
    compute: &cudarc::driver::CudaStream,
    sink: &mut Sink,
    detections: Option<sink::LineWriter>,
) -> Result<OutputFinished, PipelineError> {
    compute.synchronize().check("cuStreamSynchronize")?;
    let interrupted = INTERRUPTED.load(Ordering::Relaxed);
    let t = Instant::now();
    sink.finish(interrupted).map_err(PipelineError::Sink)?;
    if let Some(d) = detections {
        d.finish(interrupted).map_err(PipelineError::Sink)?;
    }
    Ok(OutputFinished { interrupted, sink_s: t.elapsed().as_secs_f64(), done_at: Instant::now() })
}

struct GpuRefs<'a> {
    gpu: &'a Gpu,
    stream: &'a std::sync::Arc<cudarc::driver::CudaStream>,
}

struct WorkerState<'w, 'pool> {
    engine: &'w mut (dyn Backend + 'pool),
    binding: &'w EngineBinding<'pool>,
    eyes: &'w [crate::ops::letterbox::EyeRect],
    batch_frames: usize,
    geometry: LetterboxGeometry,
    colour: YuvToRgb,
    bit_depth: u8,
    layout: FrameLayout,
    mattes: &'w crate::gpu::DeviceView<'pool>,
    /// Green/overlay: the batch's NV12 output frames (the mattes' pitch and
    /// stride) and what to compose into them.
    composed: Option<(&'w crate::gpu::DeviceView<'pool>, ComposeMode<'w, 'pool>)>,
    matte_pitch: usize,
    matte_frame: usize,
    pool: &'pool VramPool,
    post: &'w YoloSegBuffers,
    config: &'w PostprocessConfig,
    sink: &'w mut Sink,
    detections: Option<&'w mut sink::LineWriter>,
    stats: &'w mut RunStats,
    events: &'w mut Vec<BatchEvents>,
    progress: &'w mut dyn FnMut(u64, u64),
    expected: u64,
    /// Frames and instant when the first batch left the sink (for steady_fps).
    first_batch_done: &'w mut Option<(u64, Instant)>,
    /// When the first frame arrived.
    first_frame_at: &'w mut Option<Instant>,
}

/// Reads finished batch timings out of the event sets.
fn collect_times(events: &mut [BatchEvents], stats: &mut RunStats) -> Result<(), GpuError> {
    for set in events.iter_mut().filter(|s| s.pending) {
        read_times(set, stats)?;
    }
    Ok(())
}

fn read_times(set: &mut BatchEvents, stats: &mut RunStats) -> Result<(), GpuError> {
    set.marks[4].synchronize().check("cuEventSynchronize")?;
    let ms = |a: usize, b: usize| -> Result<f64, GpuError> {
        Ok(set.marks[a].elapsed_ms(&set.marks[b]).check("cuEventElapsedTime")? as f64 / 1e3)
    };
    stats.letterbox_gpu_s += ms(0, 1)?;
    stats.inference_gpu_s += ms(1, 2)?;
    stats.postprocess_gpu_s += ms(2, 3)?;
    stats.compose_gpu_s += ms(3, 4)?;
    set.pending = false;
    Ok(())
}

fn worker(g: &GpuRefs, rx: &Receiver<DecodeMsg>, w: &mut WorkerState) -> Result<(), PipelineError> {
    let mut batch: Vec<Ready> = Vec::with_capacity(w.batch_frames);
    let mut frame_meta: Vec<(u64, i64)> = Vec::with_capacity(w.batch_frames);
    let mut views = Vec::with_capacity(w.batch_frames);
    let mut allocations_at_start = None;
    let mut done = false;
    while !done {
        batch.clear();
        while batch.len() < w.batch_frames {
            match rx.recv() {
                Ok(DecodeMsg::Frame(ready)) => {
                    w.first_frame_at.get_or_insert_with(Instant::now);
                    batch.push(ready);
                }
                Ok(DecodeMsg::Failed(e)) => return Err(e),
                Err(_) => {
                    done = true;
                    break;
                }
            }
        }
        if batch.is_empty() {
            break;
        }
        let set_index = (w.stats.batches as usize) % w.events.len();
        if w.events[set_index].pending {
            read_times(&mut w.events[set_index], w.stats)?;
        }
        let set = &mut w.events[set_index];
        let stream = g.stream;
        set.marks[0].record(stream).check("cuEventRecord")?;
        {
            let _range = nvtx::range(Stage::Preprocess);
            views.clear();
            views.extend(batch.iter().map(|r| r.slot.view()));
            let job = LetterboxJob {
                frames: &views,
                layout: w.layout,
                bit_depth: w.bit_depth,
                eyes: w.eyes,
                colour: w.colour,
                geometry: w.geometry,
                out: &w.binding.letterboxed,
            };
            letterbox(g.gpu, stream, &job)?;
            for c in &w.binding.before {
                c.enqueue(g.gpu, stream)?;
            }
        }
        frame_meta.clear();
        frame_meta.extend(batch.iter().map(|ready| (ready.index, ready.pts)));
        if w.composed.is_none() {
            // Only the letterbox reads the frames: the decoder may reuse the slots.
            for ready in batch.drain(..) {
                ready.slot.release(stream)?;
            }
        }
        set.marks[1].record(stream).check("cuEventRecord")?;
        {
            let _range = nvtx::range(Stage::Inference);
            w.engine.enqueue(stream, &w.binding.inputs, &w.binding.outputs)?;
        }
        set.marks[2].record(stream).check("cuEventRecord")?;
        {
            let _range = nvtx::range(Stage::Postprocess);
            for c in &w.binding.after {
                c.enqueue(g.gpu, stream)?;
            }
            let job = YoloSegJob {
                output0: &w.binding.heads,
                protos: &w.binding.protos,
                config: w.config,
                geometry: w.geometry,
                eyes: w.eyes,
                matte: Some(MatteTarget {
                    frames: w.mattes,
                    width: w.layout.width,
                    height: w.layout.height,
                    pitch: w.matte_pitch,
                    frame_stride: w.matte_frame,
                }),
            };
            yolo_seg_postprocess(g.gpu, stream, w.pool, w.post, &job)?;
        }
        set.marks[3].record(stream).check("cuEventRecord")?;
        if let Some((out, mode)) = w.composed {
            let _range = nvtx::range(Stage::Compose);
            // `views` still holds this batch's slots, which are released only below.
            let job = ComposeJob {
                frames: &views,
                layout: w.layout,
                eyes: w.eyes,
                mattes: FrameBatch { view: w.mattes, pitch: w.matte_pitch, frame_stride: w.matte_frame },
                out: FrameBatch { view: out, pitch: w.matte_pitch, frame_stride: w.matte_frame },
                mode,
            };
            compose(g.gpu, stream, &job)?;
            for ready in batch.drain(..) {
                ready.slot.release(stream)?;
            }
        }
        set.marks[4].record(stream).check("cuEventRecord")?;
        set.pending = true;
        // The graph was captured before the loop: from here on nothing may
        // touch the device allocator.
        if w.stats.batches == 0 {
            allocations_at_start = Some(device_allocation_count());
        }

        let t = Instant::now();
        {
            let _range = nvtx::range(Stage::Compose);
            let detections: Option<Vec<Vec<Detection>>> =
                if w.detections.is_some() { Some(download_detections(stream, w.pool, w.post)?) } else { None };
            if let (Some(out), Some(dets)) = (w.detections.as_deref_mut(), &detections) {
                for (f, &(index, pts)) in frame_meta.iter().enumerate() {
                    let per_eye: Vec<&Vec<Detection>> =
                        (0..w.eyes.len()).map(|e| &dets[f * w.eyes.len() + e]).collect();
                    out.frame(index, pts, &per_eye).map_err(PipelineError::Sink)?;
                }
            }
            let frames = w.composed.map_or(w.mattes, |(out, _)| out);
            w.sink.batch(stream, frames, w.matte_pitch, w.matte_frame, &frame_meta).map_err(PipelineError::Sink)?;
        }
        w.stats.sink_s += t.elapsed().as_secs_f64();
        w.stats.batches += 1;
        w.stats.frames_in += frame_meta.len() as u64;
        w.stats.frames_out += frame_meta.len() as u64;
        if w.first_batch_done.is_none() {
            // Wait for the first batch once, so the steady clock starts after real work.
            stream.synchronize().check("cuStreamSynchronize")?;
            *w.first_batch_done = Some((w.stats.frames_out, Instant::now()));
        }
        (w.progress)(w.stats.frames_out, w.expected);
    }
    if let Some(n) = allocations_at_start {
        w.stats.device_allocations_in_loop = device_allocation_count() - n;
    }
    Ok(())
}

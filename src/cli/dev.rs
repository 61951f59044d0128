//! `vrseg dev`: the kernels one at a time on files, for comparing them with
//! other implementations (tools/parity/ultralytics_parity.py drives these
//! against Ultralytics). Hidden from `--help`: the inputs are raw arrays whose
//! shapes the caller states, not videos.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Subcommand, ValueEnum};
use half::f16;

use vrseg::gpu::{Gpu, PoolPlan, VramPool};
use vrseg::ops::letterbox::{eye_rects, letterbox, LetterboxGeometry, LetterboxJob, YuvMatrix, YuvToRgb};
use vrseg::ops::yolo_seg::{
    download_detections, yolo_seg_postprocess, MatteTarget, PostprocessConfig, YoloSegBuffers, YoloSegJob, YoloSegShape,
};
use vrseg::video::layout::StereoLayout;
use vrseg::video::nvdec::FrameLayout;

use super::exit;

mod sam2;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LayoutArg {
    Sbs,
    Tb,
    Mono,
}

impl From<LayoutArg> for StereoLayout {
    fn from(l: LayoutArg) -> StereoLayout {
        match l {
            LayoutArg::Sbs => StereoLayout::Sbs,
            LayoutArg::Tb => StereoLayout::Tb,
            LayoutArg::Mono => StereoLayout::Mono,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum MatrixArg {
    Bt601,
    Bt709,
    Bt2020,
}

impl From<MatrixArg> for YuvMatrix {
    fn from(m: MatrixArg) -> YuvMatrix {
        match m {
            MatrixArg::Bt601 => YuvMatrix::Bt601,
            MatrixArg::Bt709 => YuvMatrix::Bt709,
            MatrixArg::Bt2020 => YuvMatrix::Bt2020,
        }
    }
}

/// `WIDTHxHEIGHT`.
fn parse_size(text: &str) -> Result<(u32, u32), String> {
    let (w, h) = text.split_once('x').ok_or_else(|| format!("`{text}` is not WIDTHxHEIGHT"))?;
    let parse =
        |v: &str| v.parse::<u32>().ok().filter(|&n| n > 0).ok_or_else(|| format!("`{text}` is not WIDTHxHEIGHT"));
    Ok((parse(w)?, parse(h)?))
}

/// The frame and model geometry both subcommands take.
#[derive(Debug, clap::Args)]
pub struct FrameArgs {
    /// Frame size, WIDTHxHEIGHT.
    #[arg(long, value_parser = parse_size)]
    size: (u32, u32),
    #[arg(long, value_enum)]
    layout: LayoutArg,
    /// Square model input side.
    #[arg(long, default_value_t = 640)]
    input: u32,
}

#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// One packed NV12 frame (ffmpeg's `-pix_fmt nv12 -f rawvideo`: luma rows,
    /// then interleaved CbCr rows) → the model input tensor, FP16
    /// [eyes, 3, input, input], written raw (little-endian).
    Letterbox {
        frame: PathBuf,
        #[command(flatten)]
        geometry: FrameArgs,
        #[arg(long, value_enum, default_value = "bt709")]
        matrix: MatrixArg,
        #[arg(long)]
        full_range: bool,
        #[arg(short, long)]
        output: PathBuf,
        #[arg(long, default_value_t = 0)]
        gpu: usize,
    },
    /// YOLO-seg heads (raw little-endian f32: output0 [eyes, 4 + 80 + 32,
    /// anchors] and output1 [eyes, 32, input / 4, input / 4]) of one frame →
    /// `detections.json` (kept boxes per eye) and `matte.gray` (the frame's
    /// 8-bit matte, width x height bytes) in OUT_DIR.
    YoloSeg {
        #[arg(long)]
        output0: PathBuf,
        #[arg(long)]
        output1: PathBuf,
        #[command(flatten)]
        geometry: FrameArgs,
        #[arg(long, default_value_t = 0.25)]
        conf: f32,
        #[arg(long, default_value_t = 0.7)]
        iou: f32,
        /// Keep every class (default: person only).
        #[arg(long)]
        all_classes: bool,
        /// 0/255 masks (Ultralytics' `> 0`) instead of soft alpha.
        #[arg(long)]
        binary: bool,
        #[arg(short, long)]
        output_dir: PathBuf,
        #[arg(long, default_value_t = 0)]
        gpu: usize,
    },
    /// A native engine plan on raw inputs: each `--input` is the model input
    /// as little-endian f32 in ONNX order (converted to FP16 for an FP16
    /// plan, as the pipeline feeds it; as it is for an FP32 plan); writes
    /// `output0.f32`, `output1.f32`, … (f32, ONNX order) into OUT_DIR.
    /// Several inputs run one forward each, into numbered subdirectories.
    Engine {
        plan: PathBuf,
        #[arg(long, required = true)]
        input: Vec<PathBuf>,
        #[arg(short, long)]
        output_dir: PathBuf,
        #[arg(long, default_value_t = 0)]
        gpu: usize,
    },
    /// SAM2.1's memory-attention stack (weights and inputs as safetensors,
    /// see tools/parity/sam2_parity.py) → its output, optionally timed.
    Sam2Attention(sam2::Sam2AttentionArgs),
    /// INPUT's packets (H.264/HEVC, and its audio) written N times back to
    /// back into a new MP4, pts/dts shifted by the clip's duration each time,
    /// keyframes kept (src/video/loop_clip.rs): a long many-GOP clip on a
    /// machine without ffmpeg.
    LoopClip {
        input: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        times: u32,
    },
}

fn read_exact_len(path: &Path, bytes: usize, what: &str) -> anyhow::Result<Vec<u8>> {
    let data = std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))?;
    if data.len() != bytes {
        bail!("{what} {} holds {} bytes; the stated shape needs {bytes}", path.display(), data.len());
    }
    Ok(data)
}

pub fn run(command: DevCommand) -> anyhow::Result<exit::Code> {
    match command {
        DevCommand::Sam2Attention(args) => sam2::run(args),
        DevCommand::LoopClip { input, output, times } => {
            let summary = vrseg::video::loop_clip::loop_clip(&input, &output, times)?;
            eprintln!(
                "vrseg dev loop-clip: {} x {} frames = {} frames, pts {}..{} (shift {} ticks of 1/{} s), {} audio packets, {} bytes → {}",
                times,
                summary.source_frames,
                summary.mux.video_frames,
                summary.mux.first_pts,
                summary.mux.last_pts,
                summary.shift,
                summary.timescale,
                summary.mux.audio_packets.iter().map(|p| p.1).sum::<u64>(),
                summary.mux.bytes,
                summary.mux.path.display()
            );
            for warning in &summary.mux.warnings {
                eprintln!("vrseg dev loop-clip: warning: {warning}");
            }
            Ok(exit::Code::Success)
        }
        DevCommand::Letterbox {
            frame,
            geometry: FrameArgs { size, layout, input },
            matrix,
            full_range,
            output,
            gpu,
        } => {
            let (w, h) = size;
            if w % 2 != 0 || h % 2 != 0 {
                bail!("packed NV12 needs an even width and height, not {w}x{h}");
            }
            let packed = read_exact_len(&frame, (w * h + w * h / 2) as usize, "NV12 frame")?;
            let frame_layout = FrameLayout::new(w, h, 8);
            // Packed rows → the pool slot's pitched rows.
            let mut slot = vec![0u8; frame_layout.slot_bytes()];
            let (wu, hu) = (w as usize, h as usize);
            for (row, src) in packed.chunks_exact(wu).enumerate() {
                let dst = if row < hu {
                    row * frame_layout.pitch
                } else {
                    frame_layout.chroma_offset + (row - hu) * frame_layout.pitch
                };
                slot[dst..dst + wu].copy_from_slice(src);
            }
            let eyes = eye_rects(layout.into(), w, h);
            let side = input as i32;
            let geometry = LetterboxGeometry::ultralytics(eyes[0].w, eyes[0].h, side, side);
            let elements = eyes.len() * 3 * (input * input) as usize;

            let device = Gpu::open(gpu)?;
            let mut plan = PoolPlan::new();
            let frame_id = plan.buffer("dev.frame", slot.len());
            let out_id = plan.buffer("dev.letterbox_out", elements * 2);
            let pool = VramPool::reserve(&device, &plan)?;
            let stream = device.new_stream()?;
            let view = pool.buffer(frame_id);
            view.upload_blocking(&stream, &slot)?;
            let out = pool.buffer(out_id);
            let frames = [view];
            let job = LetterboxJob {
                frames: &frames,
                layout: frame_layout,
                bit_depth: 8,
                eyes: &eyes,
                colour: YuvToRgb::new(matrix.into(), full_range, 8),
                geometry,
                out: &out,
            };
            letterbox(&device, &stream, &job)?;
            let mut tensor = vec![f16::ZERO; elements];
            out.download_blocking(&stream, &mut tensor)?;
            std::fs::write(&output, bytemuck::cast_slice::<f16, u8>(&tensor))
                .with_context(|| format!("writing {}", output.display()))?;
            super::print_err(&format!(
                "letterbox: {} eye(s) of {}x{} → {geometry:?}, wrote {}",
                eyes.len(),
                eyes[0].w,
                eyes[0].h,
                output.display()
            ));
            Ok(exit::Code::Success)
        }
        DevCommand::YoloSeg {
            output0,
            output1,
            geometry: FrameArgs { size, layout, input },
            conf,
            iou,
            all_classes,
            binary,
            output_dir,
            gpu,
        } => {
            let (w, h) = size;
            let eyes = eye_rects(layout.into(), w, h);
            let shape = YoloSegShape::yolo_seg(eyes.len(), input as usize);
            let side = input as i32;
            let geometry = LetterboxGeometry::ultralytics(eyes[0].w, eyes[0].h, side, side);
            let heads = read_exact_len(&output0, shape.output0_elements() * 4, "output0")?;
            let protos = read_exact_len(&output1, shape.protos_elements() * 4, "output1")?;
            let config = PostprocessConfig {
                conf,
                iou,
                classes: if all_classes { vec![] } else { vec![0] },
                binary,
                ..Default::default()
            };
            let pitch = (w as usize).div_ceil(256) * 256;
            let frame_stride = pitch * h as usize;

            let device = Gpu::open(gpu)?;
            let mut plan = PoolPlan::new();
            let out0_id = plan.buffer("dev.output0", heads.len());
            let protos_id = plan.buffer("dev.output1", protos.len());
            let matte_id = plan.buffer("dev.matte", frame_stride);
            let buffers = YoloSegBuffers::plan(&mut plan, shape, config.max_det);
            let pool = VramPool::reserve(&device, &plan)?;
            let stream = device.new_stream()?;
            let (o, p, m) = (pool.buffer(out0_id), pool.buffer(protos_id), pool.buffer(matte_id));
            o.upload_blocking(&stream, &heads)?;
            p.upload_blocking(&stream, &protos)?;
            // The kernels write only the eyes' pixels; the rest reads as 0.
            m.upload_blocking(&stream, &vec![0u8; frame_stride])?;
            let job = YoloSegJob {
                output0: &o,
                protos: &p,
                config: &config,
                geometry,
                eyes: &eyes,
                matte: Some(MatteTarget { frames: &m, width: w, height: h, pitch, frame_stride }),
            };
            yolo_seg_postprocess(&device, &stream, &pool, &buffers, &job)?;
            let detections = download_detections(&stream, &pool, &buffers)?;
            let mut matte = vec![0u8; frame_stride];
            m.download_blocking(&stream, &mut matte)?;
            let packed: Vec<u8> = matte.chunks_exact(pitch).flat_map(|row| &row[..w as usize]).copied().collect();

            std::fs::create_dir_all(&output_dir).with_context(|| format!("creating {}", output_dir.display()))?;
            let json = serde_json::json!({ "geometry": geometry, "eyes": eyes, "detections": detections });
            std::fs::write(output_dir.join("detections.json"), serde_json::to_string(&json)? + "\n")?;
            std::fs::write(output_dir.join("matte.gray"), &packed)?;
            let kept: Vec<usize> = detections.iter().map(Vec::len).collect();
            super::print_err(&format!("yolo-seg: kept {kept:?} per eye, wrote {}", output_dir.display()));
            Ok(exit::Code::Success)
        }
        DevCommand::Engine { plan, input, output_dir, gpu } => {
            use vrseg::engine::backend::{upload_as, Backend};
            use vrseg::engine::native::{NativeEngine, StandaloneBuffers};
            let plan = vrseg::engine::plan::Plan::open(&plan)?;
            let device = Gpu::open(gpu)?;
            let buffers = StandaloneBuffers::new(&plan);
            let pool = VramPool::reserve(&device, &buffers.pool)?;
            let stream = device.new_stream()?;
            let mut engine = NativeEngine::load(&device, &stream, &plan, &pool, buffers.engine)?;
            let infos: Vec<_> = engine.inputs().into_iter().cloned().collect();
            if infos.len() != 1 {
                bail!("{} has {} inputs; `vrseg dev engine` feeds models with one", plan.path().display(), infos.len());
            }
            let inputs: Vec<_> = buffers.inputs.iter().map(|&id| pool.buffer(id)).collect();
            let outputs: Vec<_> = buffers.outputs.iter().map(|&id| pool.buffer(id)).collect();
            let elements: usize = infos[0].shape.iter().product();
            for (k, path) in input.iter().enumerate() {
                let raw = read_exact_len(path, elements * 4, &format!("input {:?}", infos[0].shape))?;
                let floats: Vec<f32> =
                    raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
                upload_as(&inputs[0], &stream, &floats, infos[0].dtype)?;
                engine.enqueue(&stream, &inputs, &outputs)?;
                let dir = if input.len() == 1 { output_dir.clone() } else { output_dir.join(k.to_string()) };
                std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
                for (o, (view, info)) in outputs.iter().zip(engine.outputs()).enumerate() {
                    let mut data = vec![0f32; info.shape.iter().product()];
                    view.download_blocking(&stream, &mut data)?;
                    std::fs::write(dir.join(format!("output{o}.f32")), bytemuck::cast_slice(&data))?;
                }
            }
            super::print_err(&format!("engine: {} forward(s), wrote {}", input.len(), output_dir.display()));
            Ok(exit::Code::Success)
        }
    }
}

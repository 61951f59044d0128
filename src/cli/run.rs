//! `vrseg run`: the max-throughput pipeline from a video to per-eye mattes.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::Context;
use clap::ValueEnum;

use vrseg::ops::yolo_seg::PostprocessConfig;
use vrseg::pipeline::{self, OutputKind, RunOptions, INTERRUPTED};
use vrseg::video::layout::StereoLayout;

use super::{exit, print_err};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LayoutChoice {
    Auto,
    Sbs,
    Tb,
    Mono,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OutputChoice {
    Matte,
    Green,
    Overlay,
    Masks,
    Null,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The input video (MP4/MOV, MKV/WebM or raw H.264/HEVC).
    pub input: PathBuf,
    /// Output file (a directory for --output masks); not needed for --output null.
    #[arg(short = 'o', long = "out", value_name = "OUTPUT")]
    pub output: Option<PathBuf>,
    /// The engine from `vrseg build-engine`: a native plan, or a TensorRT
    /// engine (`--backend tensorrt`; told apart by the file's header).
    #[arg(long)]
    pub engine: PathBuf,
    /// Frames per inference (both eyes of a stereo frame count as one). A
    /// native plan's batch is fixed when it is built, so this must match it;
    /// a TensorRT engine runs FRAMES × eyes images within its optimisation
    /// profile. Default: the plan's batch, or the profile's optimum.
    #[arg(long, value_name = "FRAMES", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub batch: Option<u32>,
    #[arg(long, value_enum, default_value = "auto")]
    pub layout: LayoutChoice,
    /// What to write: an 8-bit alpha video (matte), the input keyed to green
    /// outside people (green), a tinted preview with detection boxes
    /// (overlay), one PNG per frame (masks), or nothing (null: everything
    /// computed, for benchmarks). Video outputs named `*.y4m` are written
    /// uncompressed (YUV4MPEG2), needing no encoder.
    #[arg(long = "output", value_enum, default_value = "matte")]
    pub kind: OutputChoice,
    /// --output green: the key colour as 8-bit R,G,B (default 0,255,0),
    /// converted to the output's colour space.
    #[arg(long = "key-colour", alias = "key-color", value_name = "R,G,B", value_parser = parse_rgb)]
    pub key_colour: Option<[u8; 3]>,
    /// Minimum class score (Ultralytics' conf).
    #[arg(long, default_value_t = 0.25)]
    pub conf: f32,
    /// NMS IoU threshold.
    #[arg(long, default_value_t = 0.7)]
    pub iou: f32,
    /// Classes to keep: `person` (default), `all`, or COCO indices separated by commas.
    #[arg(long, default_value = "person")]
    pub classes: String,
    /// 0/255 masks instead of soft alpha.
    #[arg(long)]
    pub binary: bool,
    /// Start at this time in seconds.
    #[arg(long)]
    pub start: Option<f64>,
    /// Process at most this many frames.
    #[arg(long)]
    pub frames: Option<u64>,
    #[arg(long, default_value_t = 0)]
    pub gpu: usize,
    /// One JSON line per frame with boxes in source pixels, scores, classes and eye.
    #[arg(long)]
    pub detections: Option<PathBuf>,
    /// Per-stage times, counts, VRAM and host/device traffic as JSON.
    #[arg(long)]
    pub stats: Option<PathBuf>,
    /// No progress and no summary line.
    #[arg(long)]
    pub quiet: bool,
    /// NVDEC sessions decoding the input in parallel, split at keyframes
    /// (default: one per NVDEC engine of the GPU; 1: a single session).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub decoders: Option<u32>,
    /// Frames the parallel decoder's reorder window may hold (default: enough
    /// for every session to keep decoding, within a quarter of the GPU's
    /// memory). For measurements.
    #[arg(long, value_name = "FRAMES", hide = true, value_parser = clap::value_parser!(u32).range(1..))]
    pub decode_window: Option<u32>,
}

fn parse_rgb(text: &str) -> Result<[u8; 3], String> {
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    let bad = || format!("`{text}` is not three numbers 0-255 separated by commas, such as 0,255,0");
    if parts.len() != 3 {
        return Err(bad());
    }
    let mut rgb = [0u8; 3];
    for (c, p) in rgb.iter_mut().zip(&parts) {
        *c = p.parse().map_err(|_| bad())?;
    }
    Ok(rgb)
}

fn parse_classes(text: &str) -> anyhow::Result<Vec<u32>> {
    match text {
        "person" => Ok(vec![0]),
        "all" => Ok(vec![]),
        list => list
            .split(',')
            .map(|c| {
                c.trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|&n| n < 80)
                    .with_context(|| format!("--classes: `{c}` is not `person`, `all` or a COCO class index 0..79"))
            })
            .collect(),
    }
}

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

pub fn run(args: &RunArgs) -> anyhow::Result<exit::Code> {
    let kind = match args.kind {
        OutputChoice::Matte => OutputKind::Matte,
        OutputChoice::Green => OutputKind::Green,
        OutputChoice::Overlay => OutputKind::Overlay,
        OutputChoice::Masks => OutputKind::Masks,
        OutputChoice::Null => OutputKind::Null,
    };
    if kind != OutputKind::Null && args.output.is_none() {
        anyhow::bail!("-o OUTPUT is needed for --output {} (only null writes nothing)", kind.name());
    }
    if args.key_colour.is_some() && !matches!(kind, OutputKind::Green) {
        anyhow::bail!("--key-colour applies to --output green only");
    }
    if !(0.0..=1.0).contains(&args.conf) || !(0.0..=1.0).contains(&args.iou) {
        anyhow::bail!("--conf and --iou are between 0 and 1");
    }
    let options = RunOptions {
        input: args.input.clone(),
        output: args.output.clone(),
        engine: args.engine.clone(),
        batch: args.batch.map(|n| n as usize),
        tensorrt_search: vrseg::engine::tensorrt::LibrarySearch::from_env(),
        layout: match args.layout {
            LayoutChoice::Auto => None,
            LayoutChoice::Sbs => Some(StereoLayout::Sbs),
            LayoutChoice::Tb => Some(StereoLayout::Tb),
            LayoutChoice::Mono => Some(StereoLayout::Mono),
        },
        kind,
        postprocess: PostprocessConfig {
            conf: args.conf,
            iou: args.iou,
            classes: parse_classes(&args.classes)?,
            binary: args.binary,
            ..Default::default()
        },
        start_s: args.start,
        frames: args.frames,
        gpu: args.gpu,
        detections: args.detections.clone(),
        frames_ahead: 8,
        decoders: args.decoders.map(|n| n as usize),
        decode_window: args.decode_window.map(|n| n as usize),
        key_colour: args.key_colour,
    };
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_interrupt as *const () as libc::sighandler_t);
    }
    let show_progress = !args.quiet && std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut last_draw = Instant::now();
    let mut progress = |done: u64, total: u64| {
        if show_progress && (last_draw.elapsed().as_millis() >= 200 || done == total) {
            last_draw = Instant::now();
            let secs = started.elapsed().as_secs_f64();
            let fps = done as f64 / secs.max(1e-9);
            let eta = if fps > 0.0 { total.saturating_sub(done) as f64 / fps } else { 0.0 };
            let width = 30usize;
            let filled = (width as u64 * done / total.max(1)) as usize;
            eprint!(
                "\r[{}{}] {done}/{total} frames  {fps:.1} fps  ETA {eta:.0} s   ",
                "#".repeat(filled.min(width)),
                " ".repeat(width - filled.min(width))
            );
        }
    };
    let stats = pipeline::run(&options, &mut progress);
    if show_progress {
        eprintln!();
    }
    let stats = stats?;
    for warning in &stats.engine_warnings {
        print_err(&format!("vrseg: warning: {warning}"));
    }
    if let Some(path) = &args.stats {
        std::fs::write(path, serde_json::to_string_pretty(&stats)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if !args.quiet {
        print_err(&format!(
            "vrseg run: {} frames of {} ({}x{} {}) in {:.2} s = {:.1} fps ({:.1} fps after the first batch) on {}; GPU per \
             frame: letterbox {:.3} ms, inference {:.3} ms, postprocess {:.3} ms{} (batch {} frames); {} NVDEC session{}{}",
            stats.frames_out,
            stats.input,
            stats.width,
            stats.height,
            stats.layout,
            stats.wall_s,
            stats.fps,
            stats.steady_fps,
            stats.gpu,
            1e3 * stats.letterbox_gpu_s / stats.frames_out.max(1) as f64,
            1e3 * stats.inference_gpu_s / stats.frames_out.max(1) as f64,
            1e3 * stats.postprocess_gpu_s / stats.frames_out.max(1) as f64,
            if matches!(kind, OutputKind::Green | OutputKind::Overlay) {
                format!(", compose {:.3} ms", 1e3 * stats.compose_gpu_s / stats.frames_out.max(1) as f64)
            } else {
                String::new()
            },
            stats.batch_frames,
            stats.decoders,
            if stats.decoders == 1 { "" } else { "s" },
            if stats.interrupted { "; interrupted: the output's name says so" } else { "" }
        ));
        if let Some(note) = &stats.decoders_note {
            print_err(&format!("vrseg: note: {note}"));
        }
    }
    Ok(if stats.interrupted { exit::Code::Interrupted } else { exit::Code::Success })
}

#[cfg(test)]
mod tests {
    use super::parse_rgb;

    #[test]
    fn key_colours_are_three_bytes() {
        assert_eq!(parse_rgb("0,255,0"), Ok([0, 255, 0]));
        assert_eq!(parse_rgb(" 12, 34 ,56"), Ok([12, 34, 56]));
        for bad in ["0,255", "0,256,0", "a,b,c", "1,2,3,4", ""] {
            assert!(parse_rgb(bad).is_err(), "{bad}");
        }
    }
}

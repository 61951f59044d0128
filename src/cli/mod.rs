//! Command-line arguments → validated settings → run. Only this layer and
//! `main` use `anyhow`; the library returns typed errors.

use std::io::Write;

use clap::{Parser, Subcommand};

pub mod build_engine;
pub mod decode;
pub mod dev;
pub mod exit;
pub mod run;

#[derive(Debug, Parser)]
#[command(name = "vrseg", version, about = "Per-eye person mattes for stereoscopic VR video on NVIDIA GPUs")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the GPUs, NVDEC/NVENC capabilities, TensorRT and the built-in kernels.
    Info {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Report only this GPU (default: all).
        #[arg(long)]
        gpu: Option<usize>,
        /// Also list every kernel's registers, stack and spills (ptxas's report).
        #[arg(long)]
        kernels: bool,
    },
    /// Describe a video file: container, codec, size, frames, stereo layout, audio (no GPU needed).
    Probe {
        file: std::path::PathBuf,
        /// Print exactly one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Decode a video on the GPU (NVDEC) and write its frames as YUV4MPEG2, or
    /// one MD5 per frame comparable with `ffmpeg -pix_fmt nv12|p010le -f framemd5`.
    #[command(group(clap::ArgGroup::new("sink").required(true).args(["output", "framemd5"])))]
    Decode {
        file: std::path::PathBuf,
        /// Output .y4m file, or `-` for stdout.
        #[arg(short, long)]
        output: Option<std::path::PathBuf>,
        /// Print one line per frame: index, pts, size, MD5 of the frame as NV12 (P010 for 10-bit).
        #[arg(long)]
        framemd5: bool,
        /// NVDEC sessions decoding the file in parallel, split at keyframes;
        /// frames come out in the same order either way (default 1).
        #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
        decoders: u32,
        #[arg(long, default_value_t = 0)]
        gpu: usize,
        /// No summary line on stderr.
        #[arg(long)]
        quiet: bool,
    },
    /// Measure throughput (a benchmark: it reports, it does not judge).
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
    /// Run the built-in GPU self-test: kernels against CPU references, the VRAM
    /// pool, and a frame loop that must not allocate.
    Selftest {
        #[arg(long, default_value_t = 0)]
        gpu: usize,
        /// Frames to push through the pool's slot ring.
        #[arg(long, default_value_t = 1000)]
        frames: usize,
        /// Seed of the random inputs (printed, so a failure can be replayed).
        #[arg(long)]
        seed: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Cut people out of a video: per-eye mattes (or masks, or nothing, for benchmarks).
    Run(run::RunArgs),
    /// Turn an ONNX model into an engine: a native plan (no GPU needed) or, with --backend tensorrt, a TensorRT engine.
    BuildEngine(build_engine::BuildEngineArgs),
    /// Run one kernel family on raw arrays (for parity tools; see tools/parity).
    #[command(hide = true)]
    Dev {
        #[command(subcommand)]
        what: dev::DevCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Forwards/s of a native engine plan (its CUDA graph replayed on a random
    /// input), with achieved TFLOP/s; `--layers` adds a per-node breakdown.
    Engine {
        plan: std::path::PathBuf,
        /// Timed rounds (about 200 ms each); the median is reported.
        #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=1000))]
        rounds: u32,
        /// Also time every node once, eagerly (most expensive first).
        #[arg(long)]
        layers: bool,
        #[arg(long, default_value_t = 0)]
        gpu: usize,
        /// Print exactly one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Decode-only frames/s of FILE on one NVDEC session (or N with
    /// --decoders), frames into the VRAM pool and nowhere else; also the CPU
    /// cores busy meanwhile.
    Decode {
        file: std::path::PathBuf,
        /// Whole-file passes; the median and the best are reported.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
        passes: u32,
        /// NVDEC sessions decoding the file in parallel, split at keyframes
        /// (frames still in presentation order); at most the GPU's NVDEC engines.
        #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
        decoders: u32,
        /// Frames that may wait in the parallel decoder's reorder window
        /// (default: a whole chunk for each session but one, plus 4 per session,
        /// within a quarter of the GPU's memory).
        #[arg(long, value_name = "FRAMES", value_parser = clap::value_parser!(u32).range(1..=100000))]
        window: Option<u32>,
        #[arg(long, default_value_t = 0)]
        gpu: usize,
        /// Print exactly one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// One line on stderr (progress, summaries, warnings).
pub fn print_err(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Writes to stdout; a closed pipe (`vrseg info | head -1`) is not an error.
pub fn print_out(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

pub fn run(cli: Cli) -> anyhow::Result<exit::Code> {
    match cli.command {
        Command::Info { json, gpu, kernels } => {
            let info = vrseg::info::gather(gpu)?;
            if json {
                let mut value = serde_json::to_value(&info)?;
                if kernels {
                    value["kernel_resources"] =
                        serde_json::to_value(vrseg::gpu::kernels::resource_report().collect::<Vec<_>>())?;
                }
                print_out(&(serde_json::to_string_pretty(&value)? + "\n"))?;
            } else {
                let mut text = format!("{info}\n");
                if kernels {
                    text.push_str(&format!(
                        "{:<28} {:<7} {:>5} {:>6} {:>9} {:>9}\n",
                        "kernel", "arch", "regs", "stack", "spill-st", "spill-ld"
                    ));
                    for r in vrseg::gpu::kernels::resource_report() {
                        text.push_str(&format!(
                            "{:<28} {:<7} {:>5} {:>6} {:>9} {:>9}\n",
                            r.kernel, r.arch, r.registers, r.stack_bytes, r.spill_store_bytes, r.spill_load_bytes
                        ));
                    }
                }
                print_out(&text)?;
            }
            Ok(exit::Code::Success)
        }
        Command::Probe { file, json } => {
            let report = vrseg::video::probe::probe(&file)?;
            if json {
                print_out(&(serde_json::to_string(&report)? + "\n"))?;
            } else {
                print_out(&format!("{report}\n"))?;
            }
            Ok(exit::Code::Success)
        }
        Command::Decode { file, output, framemd5, decoders, gpu, quiet } => {
            decode::run(&file, output.as_deref(), framemd5, decoders as usize, gpu, quiet)
        }
        Command::Bench { what: BenchCommand::Decode { file, passes, decoders, window, gpu, json } } => {
            let device = vrseg::gpu::Gpu::open(gpu)?;
            let bench = vrseg::bench::decode_throughput(
                &device,
                &file,
                passes as usize,
                Some(decoders as usize),
                window.map(|w| w as usize),
            )?;
            if json {
                print_out(&(serde_json::to_string(&bench)? + "\n"))?;
            } else {
                let mut text = format!(
                    "vrseg decode bench: {} ({}x{}) on {}, {} NVDEC session{}\n",
                    bench.path,
                    bench.width,
                    bench.height,
                    bench.gpu,
                    bench.decoders,
                    if bench.decoders == 1 { "" } else { "s" }
                );
                if bench.decoders > 1 {
                    text.push_str(&format!(
                        "  {} chunks, reorder window {} frames (peak {}), NVDEC surfaces about {:.2} GiB\n",
                        bench.chunks,
                        bench.window_slots,
                        bench.window_peak,
                        bench.surface_bytes as f64 / (1u64 << 30) as f64
                    ));
                }
                if let Some(note) = &bench.decoders_note {
                    text.push_str(&format!("  note: {note}\n"));
                }
                for (i, p) in bench.passes.iter().enumerate() {
                    text.push_str(&format!(
                        "  pass {}: {} frames in {:.3} s = {:.1} fps (steady {:.1} fps, first frame {:.0} ms), {:.2} CPU cores\n",
                        i + 1,
                        p.frames,
                        p.wall_s,
                        p.fps,
                        p.steady_fps,
                        p.first_frame_s * 1e3,
                        p.cpu_cores
                    ));
                }
                text.push_str(&format!(
                    "median {:.1} fps (steady {:.1}), best {:.1} fps (steady {:.1}), {:.2} CPU cores\n",
                    bench.median_fps,
                    bench.median_steady_fps,
                    bench.best_fps,
                    bench.best_steady_fps,
                    bench.median_cpu_cores
                ));
                print_out(&text)?;
            }
            Ok(exit::Code::Success)
        }
        Command::Bench { what: BenchCommand::Engine { plan, rounds, layers, gpu, json } } => {
            let device = vrseg::gpu::Gpu::open(gpu)?;
            let bench = vrseg::bench::engine_throughput(&device, &plan, rounds as usize, layers)?;
            if json {
                print_out(&(serde_json::to_string(&bench)? + "\n"))?;
            } else {
                let mut text = format!(
                    "vrseg engine bench: {} on {}\n  input {:?}, {} launches per forward (one CUDA graph), {:.2} GFLOP per image\n  {:.3} ms per batch (best {:.3}) = {:.1} images/s, {:.1} TFLOP/s\n",
                    bench.plan,
                    bench.gpu,
                    bench.input,
                    bench.launches,
                    bench.gflop_per_image,
                    bench.ms_per_batch,
                    bench.best_ms_per_batch,
                    bench.images_per_s,
                    bench.tflops
                );
                if !bench.layers.is_empty() {
                    let total: f64 = bench.layers.iter().map(|l| l.ms).sum();
                    text.push_str(&format!("  eager per node (total {total:.3} ms), most expensive first:\n"));
                    for l in bench.layers.iter().take(15) {
                        text.push_str(&format!(
                            "  {:>8.3} ms {:>5.1}%  {:>7.1} TFLOP/s {:>7.0} GB/s  {:<40} {} [{}]\n",
                            l.ms,
                            100.0 * l.ms / total,
                            l.flop / (l.ms / 1e3) / 1e12,
                            l.bytes / (l.ms / 1e3) / 1e9,
                            l.op,
                            l.node,
                            l.kernels
                        ));
                    }
                }
                print_out(&text)?;
            }
            Ok(exit::Code::Success)
        }
        Command::Dev { what } => dev::run(what),
        Command::BuildEngine(args) => build_engine::run(args),
        Command::Run(args) => run::run(&args),
        Command::Selftest { gpu, frames, seed, json } => {
            let seed = seed.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
            let device = vrseg::gpu::Gpu::open(gpu)?;
            let report = vrseg::selftest::run(&device, seed, frames)?;
            if json {
                print_out(&(serde_json::to_string_pretty(&report)? + "\n"))?;
            } else {
                let mut text = format!(
                    "vrseg self-test on {} (seed {}; modules loaded in {:.1} ms)\n",
                    report.gpu, report.seed, report.module_load_ms
                );
                for c in &report.checks {
                    text.push_str(&format!(
                        "  {} {:<44} {}\n",
                        if c.passed { "ok  " } else { "FAIL" },
                        c.name,
                        c.detail
                    ));
                }
                let failed = report.checks.iter().filter(|c| !c.passed).count();
                text.push_str(&format!(
                    "{} passed, {} failed ({:.0} ms)\n",
                    report.checks.len() - failed,
                    failed,
                    report.wall_ms
                ));
                print_out(&text)?;
            }
            Ok(if report.passed() { exit::Code::Success } else { exit::Code::Failure })
        }
    }
}

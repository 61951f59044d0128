//! `vrseg build-engine MODEL.onnx -o OUT [--backend native|tensorrt]`: an
//! ONNX model → an engine file. Build time only: the runtime loads the
//! engine file and never parses ONNX.
//!
//! - `--backend native` (the default): the native engine's plan, on any
//!   machine (no GPU needed): import, fuse, plan memory, write the plan.
//! - `--backend tensorrt`: a TensorRT engine, built by TensorRT's ONNX parser
//!   and builder on the GPU that will run it, then loaded back and run once.
//!
//! Each backend has options the other does not take; giving one to the
//! wrong backend is a usage error (exit 2) naming the backend it belongs to.

use std::path::{Path, PathBuf};

use clap::{CommandFactory as _, ValueEnum};

use vrseg::engine::build::import::{import_file, ImportOptions};
use vrseg::engine::build::{build_plan_as, fill_stripped_weights, BuildReport, Precision as NativePrecision};
use vrseg::engine::tensorrt::{self, BatchRange, BuildRequest, LibrarySearch, LogLevel, Precision, TensorRtError};

use super::{exit, print_err, print_out};

/// The native engine's batch limit (issue #5: batch 1 to 64).
const NATIVE_MAX_BATCH: u32 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// vrseg's own engine: a plan file, built without a GPU.
    Native,
    /// NVIDIA TensorRT 10 or 11, loaded at run time: an engine built on the GPU that will run it.
    Tensorrt,
}

/// `HEIGHTxWIDTH`, or `N` for N x N.
fn parse_input_size(text: &str) -> Result<(u32, u32), String> {
    let bad = || format!("`{text}` is not HEIGHTxWIDTH (e.g. 640x640) or a single side");
    let side = |v: &str| v.trim().parse::<u32>().ok().filter(|&n| n > 0);
    match text.split_once('x') {
        Some((h, w)) => Ok((side(h).ok_or_else(bad)?, side(w).ok_or_else(bad)?)),
        None => side(text).map(|n| (n, n)).ok_or_else(bad),
    }
}

const TRT: &str = "TensorRT (--backend tensorrt)";
const NATIVE: &str = "Native engine (--backend native, the default)";

#[derive(Debug, clap::Args)]
pub struct BuildEngineArgs {
    /// The ONNX model (tools/export/export_yolo_seg.py writes one from an Ultralytics .pt).
    pub model: PathBuf,
    /// The engine file to write (conventionally engines/NAME.plan for the native engine, engines/NAME.engine for
    /// TensorRT); written under a temporary name and renamed when whole.
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,
    /// The engine to build for.
    #[arg(long, value_enum, default_value_t = BackendArg::Native)]
    pub backend: BackendArg,
    /// Native: images per inference, 1 to 64 (default 1), pinned into the model. TensorRT: the optimisation
    /// profile's batch range MIN:OPT:MAX (N means N:N:N), for a model exported with a dynamic batch.
    #[arg(long, value_parser = tensorrt::parse_batch, value_name = "N|MIN:OPT:MAX")]
    pub batch: Option<BatchRange>,

    /// Weight and activation precision. fp16 (the default): tensor cores, FP32 accumulation, the fast one.
    /// fp32: FP32 weights and arithmetic throughout (CUDA cores, several times slower), outputs within FP32
    /// rounding of ONNX Runtime, so near-equal scores keep their order and the detections are the reference's.
    #[arg(long, value_parser = ["fp16", "fp32"], help_heading = NATIVE)]
    pub precision: Option<String>,
    /// Accept a model whose convolution weights were stripped (the test
    /// fixtures in tests/data/models) and fill them with seeded random
    /// values: for tests, speed measurements and the embedded demo only.
    #[arg(long, value_name = "SEED", hide = true)]
    pub fill_stripped_weights: Option<u64>,

    /// TensorRT 10: let the builder use FP16 kernels (TensorRT 11 takes the precision from the model).
    #[arg(long, conflicts_with = "int8", help_heading = TRT)]
    pub fp16: bool,
    /// TensorRT 10: INT8 kernels for a model quantised with Q/DQ nodes.
    #[arg(long, help_heading = TRT)]
    pub int8: bool,
    /// INT8 calibration batches (not supported: the error says what to do instead).
    #[arg(long, value_name = "DIR", requires = "int8", help_heading = TRT)]
    pub calib: Option<PathBuf>,
    /// HEIGHTxWIDTH for a model with dynamic spatial dimensions.
    #[arg(long, value_parser = parse_input_size, value_name = "HxW", help_heading = TRT)]
    pub input_size: Option<(u32, u32)>,
    /// Builder workspace limit in MiB (default: TensorRT's).
    #[arg(long, value_name = "MIB", help_heading = TRT)]
    pub workspace: Option<u64>,
    /// Timing cache: read when it exists, written after the build (later builds go faster).
    #[arg(long, value_name = "FILE", help_heading = TRT)]
    pub timing_cache: Option<PathBuf>,
    /// Builder optimisation level, 0 to 5 (TensorRT's default: 3).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=5), help_heading = TRT)]
    pub opt_level: Option<u8>,
    /// The GPU to build on (default 0).
    #[arg(long, help_heading = TRT)]
    pub gpu: Option<usize>,
    /// Do not load the engine back and run it on zeros after building it.
    #[arg(long, help_heading = TRT)]
    pub no_verify: bool,
    /// Also print TensorRT's information messages (its warnings always show).
    #[arg(long, help_heading = TRT)]
    pub verbose: bool,
    /// Print the summary as one JSON object.
    #[arg(long, help_heading = TRT)]
    pub json: bool,
}

impl BuildEngineArgs {
    /// The options given that belong to the other backend, by flag name.
    fn foreign_options(&self) -> Vec<&'static str> {
        let given = |present: bool, flag: &'static str| present.then_some(flag);
        match self.backend {
            BackendArg::Native => [
                given(self.fp16, "--fp16"),
                given(self.int8, "--int8"),
                given(self.calib.is_some(), "--calib"),
                given(self.input_size.is_some(), "--input-size"),
                given(self.workspace.is_some(), "--workspace"),
                given(self.timing_cache.is_some(), "--timing-cache"),
                given(self.opt_level.is_some(), "--opt-level"),
                given(self.gpu.is_some(), "--gpu"),
                given(self.no_verify, "--no-verify"),
                given(self.verbose, "--verbose"),
                given(self.json, "--json"),
            ]
            .into_iter()
            .flatten()
            .collect(),
            BackendArg::Tensorrt => [
                given(self.precision.is_some(), "--precision"),
                given(self.fill_stripped_weights.is_some(), "--fill-stripped-weights"),
            ]
            .into_iter()
            .flatten()
            .collect(),
        }
    }

    /// Argument checks clap cannot express (they depend on --backend):
    /// the sentence for a usage error, or None.
    fn usage_error(&self) -> Option<String> {
        let foreign = self.foreign_options();
        if !foreign.is_empty() {
            let list = foreign.join(", ");
            let (is, options) = if foreign.len() == 1 { ("is an option", "it") } else { ("are options", "them") };
            return Some(match self.backend {
                BackendArg::Native => format!(
                    "{list} {is} of --backend tensorrt; add --backend tensorrt, or leave {options} out to build a \
                     native plan"
                ),
                BackendArg::Tensorrt if self.precision.is_some() => format!(
                    "{list} {is} of the native engine (--backend native); for TensorRT, TensorRT 10 takes --fp16 \
                     and TensorRT 11 the model's own types"
                ),
                BackendArg::Tensorrt => format!("{list} {is} of the native engine (--backend native)"),
            });
        }
        if self.backend == BackendArg::Native {
            if let Some(b) = self.batch {
                if b.min != b.max || b.min != b.opt {
                    return Some(format!(
                        "--batch {}:{}:{}: the native engine is built for one batch size; give --batch N",
                        b.min, b.opt, b.max
                    ));
                }
                if b.min > NATIVE_MAX_BATCH {
                    return Some(format!("--batch {}: the native engine takes 1 to {NATIVE_MAX_BATCH}", b.min));
                }
            }
        }
        None
    }
}

pub fn run(args: BuildEngineArgs) -> anyhow::Result<exit::Code> {
    if let Some(message) = args.usage_error() {
        // A usage error like clap's own: its format and exit code 2.
        let mut command = super::Cli::command();
        command.build();
        let command = command.find_subcommand_mut("build-engine").expect("build-engine is a subcommand");
        command.error(clap::error::ErrorKind::ArgumentConflict, message).exit();
    }
    match args.backend {
        BackendArg::Native => run_native(&args),
        BackendArg::Tensorrt => run_tensorrt(args),
    }
}

fn run_native(args: &BuildEngineArgs) -> anyhow::Result<exit::Code> {
    let batch = args.batch.map_or(1, |b| b.min);
    let options =
        ImportOptions { batch: Some(batch as usize), allow_empty_initializers: args.fill_stripped_weights.is_some() };
    let mut graph = import_file(&args.model, &options)?;
    if let Some(seed) = args.fill_stripped_weights {
        let filled = fill_stripped_weights(&mut graph, seed);
        print_err(&format!(
            "filled {filled} stripped weight tensors with random values (seed {seed}): masks will be meaningless"
        ));
    }
    let source = args.model.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let precision = args.precision.as_deref().and_then(NativePrecision::from_name).unwrap_or_default();
    let report = build_plan_as(graph, &source, &args.output, precision)?;
    print_out(&describe(&args.model, &args.output, &report, precision))?;
    print_err(&format!(
        "run it with `vrseg run VIDEO --engine {}`, or time it with `vrseg bench engine {}`",
        args.output.display(),
        args.output.display()
    ));
    Ok(exit::Code::Success)
}

fn describe(model: &Path, out: &Path, r: &BuildReport, precision: NativePrecision) -> String {
    let shapes =
        |v: &[(String, Vec<usize>)]| v.iter().map(|(n, s)| format!("{n} {s:?}")).collect::<Vec<_>>().join(", ");
    let ops = r.ops.iter().map(|(op, n)| format!("{op} {n}")).collect::<Vec<_>>().join(", ");
    format!(
        "{} -> {} ({:.1} MB)\n  inputs: {}\n  outputs: {}\n  {} ONNX nodes -> {} after fusion ({} Conv+SiLU, {} residual adds, {} sigmoids into convs)\n  ops: {}\n  activations: {:.1} MB arena ({}; {:.1} MB without reuse); {} concats written in place, {} splits as views; {} of {} values stored NHWC (between convolutions)\n",
        model.display(),
        out.display(),
        r.plan_bytes as f64 / 1e6,
        shapes(&r.inputs),
        shapes(&r.outputs),
        r.onnx_nodes,
        r.plan_nodes,
        r.fusions.silu,
        r.fusions.residual,
        r.fusions.sigmoid,
        ops,
        r.memory.arena_bytes as f64 * 1e-6,
        match precision {
            NativePrecision::Fp16 => "FP16, FP32 past the last convolution",
            NativePrecision::Fp32 => "FP32 throughout",
        },
        r.memory.unshared_bytes as f64 * 1e-6,
        r.memory.concats_in_place,
        r.memory.splits_as_views,
        r.memory.nhwc_values,
        r.memory.placements.len(),
    )
}

fn run_tensorrt(args: BuildEngineArgs) -> anyhow::Result<exit::Code> {
    let request = BuildRequest {
        model: args.model,
        output: args.output,
        precision: if args.fp16 {
            Precision::Fp16
        } else if args.int8 {
            Precision::Int8
        } else {
            Precision::Model
        },
        calibration: args.calib,
        batch: args.batch,
        input_size: args.input_size,
        workspace_mib: args.workspace,
        timing_cache: args.timing_cache,
        optimization_level: args.opt_level,
        gpu: args.gpu.unwrap_or(0),
        verify: !args.no_verify,
    };
    tensorrt::set_log_level(if args.verbose { LogLevel::Info } else { LogLevel::Warnings });
    let report = match tensorrt::build_engine(&request, &LibrarySearch::from_env()) {
        Ok(report) => report,
        // A GPU error goes up as itself, so that `main` gives it its exit code (3).
        Err(TensorRtError::Gpu(e)) => return Err(e.into()),
        Err(e) => return Err(e.into()),
    };
    for warning in &report.warnings {
        print_err(&format!("vrseg: warning: {warning}"));
    }
    if args.json {
        print_out(&(serde_json::to_string(&report)? + "\n"))?;
        return Ok(exit::Code::Success);
    }
    let mut text = format!(
        "built {} ({:.1} MiB) with TensorRT {} on {} in {:.1} s\n",
        report.output.display(),
        report.bytes as f64 / (1u64 << 20) as f64,
        report.tensorrt,
        report.gpu,
        report.seconds
    );
    for t in &report.tensors {
        let dims: Vec<String> = t.shape.iter().map(|d| if *d < 0 { "?".into() } else { d.to_string() }).collect();
        text.push_str(&format!("  {:<6} {:<12} {:<5} [{}]\n", t.role, t.name, t.dtype, dims.join(", ")));
    }
    if let Some(cache) = &report.timing_cache {
        text.push_str(&format!("  timing cache: {}\n", cache.display()));
    }
    if let Some(v) = &report.verified {
        text.push_str(&format!(
            "  verified: loaded back at batch {} ({:.1} MiB workspace from the VRAM pool), {} runs on zeros, all \
             outputs finite, {:.2} ms per run\n",
            v.batch,
            v.workspace_bytes as f64 / (1u64 << 20) as f64,
            v.runs,
            v.ms_per_run
        ));
    }
    print_out(&text)?;
    Ok(exit::Code::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_sizes_parse() {
        assert_eq!(parse_input_size("640x480"), Ok((640, 480)));
        assert_eq!(parse_input_size("640"), Ok((640, 640)));
        assert!(parse_input_size("640x").is_err());
        assert!(parse_input_size("0x640").is_err());
    }
}

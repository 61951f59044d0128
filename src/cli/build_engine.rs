//! `vrseg build-engine`: an ONNX model → an engine file for one backend.
//! Build time only: the runtime loads the engine file and never parses ONNX.

use std::path::PathBuf;

use anyhow::bail;
use clap::ValueEnum;

use vrseg::engine::tensorrt::{self, BatchRange, BuildRequest, LibrarySearch, LogLevel, Precision, TensorRtError};

use super::{exit, print_err, print_out};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// vrseg's own plan executor.
    Native,
    /// NVIDIA TensorRT 10 or 11, loaded at run time.
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

#[derive(Debug, clap::Args)]
pub struct BuildEngineArgs {
    /// The ONNX model.
    model: PathBuf,
    /// The engine to build for.
    #[arg(long, value_enum, default_value_t = BackendArg::Native)]
    backend: BackendArg,
    /// The engine file to write (written as OUT.partial and renamed when whole).
    #[arg(short, long, value_name = "OUT")]
    output: PathBuf,
    /// TensorRT 10: let the builder use FP16 kernels (TensorRT 11 takes the precision from the model).
    #[arg(long, conflicts_with = "int8")]
    fp16: bool,
    /// TensorRT 10: INT8 kernels for a model quantised with Q/DQ nodes.
    #[arg(long)]
    int8: bool,
    /// INT8 calibration batches (not supported: the error says what to do instead).
    #[arg(long, value_name = "DIR", requires = "int8")]
    calib: Option<PathBuf>,
    /// Batch range MIN:OPT:MAX (or N) of the optimisation profile, for a model with a dynamic batch.
    #[arg(long, value_parser = tensorrt::parse_batch, value_name = "MIN:OPT:MAX")]
    batch: Option<BatchRange>,
    /// HEIGHTxWIDTH for a model with dynamic spatial dimensions.
    #[arg(long, value_parser = parse_input_size, value_name = "HxW")]
    input_size: Option<(u32, u32)>,
    /// Builder workspace limit in MiB (default: TensorRT's).
    #[arg(long, value_name = "MIB")]
    workspace: Option<u64>,
    /// Timing cache: read when it exists, written after the build (later builds go faster).
    #[arg(long, value_name = "FILE")]
    timing_cache: Option<PathBuf>,
    /// Builder optimisation level, 0 to 5 (TensorRT's default: 3).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=5))]
    opt_level: Option<u8>,
    #[arg(long, default_value_t = 0)]
    gpu: usize,
    /// Do not load the engine back and run it on zeros after building it.
    #[arg(long)]
    no_verify: bool,
    /// Also print TensorRT's information messages (its warnings always show).
    #[arg(long)]
    verbose: bool,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(args: BuildEngineArgs) -> anyhow::Result<exit::Code> {
    match args.backend {
        BackendArg::Native => run_native(args),
        BackendArg::Tensorrt => run_tensorrt(args),
    }
}

fn run_native(args: BuildEngineArgs) -> anyhow::Result<exit::Code> {
    bail!(
        "vrseg build-engine --backend native is not built yet (it arrives with the native engine); to build {} now, \
         use --backend tensorrt on a machine with TensorRT",
        args.model.display()
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
        gpu: args.gpu,
        verify: !args.no_verify,
    };
    tensorrt::set_log_level(if args.verbose { LogLevel::Info } else { LogLevel::Warnings });
    let report = match tensorrt::build_engine(&request, &LibrarySearch::from_env()) {
        Ok(report) => report,
        // GPU errors keep their own type, so `main` gives them their exit code.
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

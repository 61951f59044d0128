//! `vrseg build-engine MODEL.onnx -o engines/NAME.plan [--batch N]`: ONNX →
//! the native engine's plan, on any machine (no GPU needed).

use std::path::{Path, PathBuf};

use vrseg::engine::build::import::{import_file, ImportOptions};
use vrseg::engine::build::{build_plan, fill_stripped_weights, BuildReport};

use super::{exit, print_err, print_out};

#[derive(Debug, clap::Args)]
pub struct BuildEngineArgs {
    /// The ONNX model (tools/export/export_yolo_seg.py writes one from an Ultralytics .pt).
    pub model: PathBuf,
    /// The plan to write (conventionally engines/NAME.plan).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Images per inference; pins the model's batch axis.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub batch: u32,
    /// Weight and activation precision (FP16 is the one the engine runs).
    #[arg(long, default_value = "fp16", value_parser = ["fp16"])]
    pub precision: String,
    /// Accept a model whose convolution weights were stripped (the test
    /// fixtures in tests/data/models) and fill them with seeded random
    /// values: for tests, speed measurements and the embedded demo only.
    #[arg(long, value_name = "SEED", hide = true)]
    pub fill_stripped_weights: Option<u64>,
}

pub fn run(args: &BuildEngineArgs) -> anyhow::Result<exit::Code> {
    let options = ImportOptions {
        batch: Some(args.batch as usize),
        allow_empty_initializers: args.fill_stripped_weights.is_some(),
    };
    let mut graph = import_file(&args.model, &options)?;
    if let Some(seed) = args.fill_stripped_weights {
        let filled = fill_stripped_weights(&mut graph, seed);
        print_err(&format!(
            "filled {filled} stripped weight tensors with random values (seed {seed}): masks will be meaningless"
        ));
    }
    let source = args.model.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let report = build_plan(graph, &source, &args.output)?;
    print_out(&describe(&args.model, &args.output, &report))?;
    print_err("note: the native engine's GPU runtime is not built yet; this plan is what it will load");
    Ok(exit::Code::Success)
}

fn describe(model: &Path, out: &Path, r: &BuildReport) -> String {
    let shapes =
        |v: &[(String, Vec<usize>)]| v.iter().map(|(n, s)| format!("{n} {s:?}")).collect::<Vec<_>>().join(", ");
    let ops = r.ops.iter().map(|(op, n)| format!("{op} {n}")).collect::<Vec<_>>().join(", ");
    format!(
        "{} -> {} ({:.1} MB)\n  inputs: {}\n  outputs: {}\n  {} ONNX nodes -> {} after fusion ({} Conv+SiLU, {} residual adds)\n  ops: {}\n  activations: {:.1} MB arena (FP16, FP32 past the last convolution; {:.1} MB without reuse); {} concats written in place, {} splits as views\n",
        model.display(),
        out.display(),
        r.plan_bytes as f64 / 1e6,
        shapes(&r.inputs),
        shapes(&r.outputs),
        r.onnx_nodes,
        r.plan_nodes,
        r.fusions.silu,
        r.fusions.residual,
        ops,
        r.memory.arena_bytes as f64 * 1e-6,
        r.memory.unshared_bytes as f64 * 1e-6,
        r.memory.concats_in_place,
        r.memory.splits_as_views,
    )
}

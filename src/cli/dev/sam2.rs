//! `vrseg dev sam2-attention`: SAM2.1's memory-attention stack on files, for
//! tools/parity/sam2_parity.py, which writes the weights and inputs from
//! Meta's own module and compares the output, and times both.

use std::path::PathBuf;

use anyhow::{bail, Context};
use cudarc::driver::sys;
use half::f16;

use vrseg::gpu::{Gpu, PoolPlan, VramPool};
use vrseg::models::sam2::bank::{MemoryBank, MemoryBankPlan};
use vrseg::models::sam2::reference::{memory_attention_reference, MemoryAttentionInputs};
use vrseg::models::sam2::stack::{MemoryAttention, MemoryAttentionPlan};
use vrseg::models::sam2::weights::{read_safetensors, write_safetensors, MemoryAttentionWeights, Tensor};
use vrseg::models::sam2::MemoryAttentionConfig;

use crate::cli::exit;

#[derive(Debug, clap::Args)]
pub struct Sam2AttentionArgs {
    /// `MemoryAttention.state_dict()` as safetensors.
    #[arg(long)]
    weights: PathBuf,
    /// Inputs as safetensors: curr and curr_pos [T, 256] (T = side², token
    /// major), memory and memory_pos [F, T, 64] (F frames, appended in
    /// order), obj_ptrs and obj_ptr_pos [P, 64] (optional), maskmem_tpos_enc
    /// [A, 64] (optional: SAM2's temporal encoding, row age - 1 added to a
    /// frame's memory_pos at its age, the last frame 1 frame old; A >= the
    /// window).
    #[arg(long)]
    inputs: PathBuf,
    /// Frames the ring holds; frames beyond it push the oldest out.
    #[arg(long, default_value_t = 7)]
    window: usize,
    /// Runs the stack on the GPU and writes its `out` [T, 256] (f32) here.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Writes the plain-Rust CPU reference's `out` here (no GPU needed; slow
    /// at T = 4096).
    #[arg(long)]
    cpu_reference: Option<PathBuf>,
    /// Times this many forwards (eager, then replays of one CUDA graph) after
    /// warm-up and prints one JSON line.
    #[arg(long)]
    bench: Option<usize>,
    #[arg(long, default_value_t = 0)]
    gpu: usize,
}

fn tensor<'a>(inputs: &'a std::collections::BTreeMap<String, Tensor>, name: &str) -> anyhow::Result<&'a Tensor> {
    inputs.get(name).with_context(|| format!("the inputs file has no tensor `{name}`"))
}

fn halves(data: &[f32]) -> Vec<f16> {
    data.iter().map(|&v| f16::from_f32(v)).collect()
}

pub fn run(args: Sam2AttentionArgs) -> anyhow::Result<exit::Code> {
    let inputs = read_safetensors(&args.inputs)?;
    let curr = tensor(&inputs, "curr")?;
    let curr_pos = tensor(&inputs, "curr_pos")?;
    let memory = tensor(&inputs, "memory")?;
    let memory_pos = tensor(&inputs, "memory_pos")?;
    let (t, d) = match curr.shape[..] {
        [t, d] => (t, d),
        _ => bail!("curr has shape {:?}; [tokens, 256] expected", curr.shape),
    };
    let side = (t as f64).sqrt().round() as usize;
    if side * side != t {
        bail!("curr has {t} tokens, not a square feature map");
    }
    let config = MemoryAttentionConfig::sam2_1_hiera_t().with_side(side);
    if d != config.d_model || curr_pos.shape != curr.shape {
        bail!("curr {:?} and curr_pos {:?}: [{t}, {}] expected", curr.shape, curr_pos.shape, config.d_model);
    }
    let frames = match memory.shape[..] {
        [f, tt, m] if tt == t && m == config.mem_dim && memory_pos.shape == memory.shape => f,
        _ => bail!(
            "memory {:?} and memory_pos {:?}: [frames, {t}, {}] expected",
            memory.shape,
            memory_pos.shape,
            config.mem_dim
        ),
    };
    let empty = Tensor { shape: vec![0, config.mem_dim], data: vec![] };
    let ptrs = inputs.get("obj_ptrs").unwrap_or(&empty);
    let ptr_pos = inputs.get("obj_ptr_pos").unwrap_or(&empty);
    let pointers = match ptrs.shape[..] {
        [p, m] if m == config.mem_dim && ptr_pos.shape == ptrs.shape => p,
        _ => bail!("obj_ptrs {:?} and obj_ptr_pos {:?}: [P, {}] expected", ptrs.shape, ptr_pos.shape, config.mem_dim),
    };
    if args.window == 0 {
        bail!("--window must be at least 1");
    }
    let tpos = match inputs.get("maskmem_tpos_enc") {
        None => None,
        Some(tp) => match tp.shape[..] {
            [rows, m] if m == config.mem_dim && rows >= args.window => Some((tp, rows)),
            _ => bail!("maskmem_tpos_enc has shape {:?}; [ages >= window, {}] expected", tp.shape, config.mem_dim),
        },
    };
    let weights = MemoryAttentionWeights::load(config, &args.weights)?;
    let frame_elems = t * config.mem_dim;
    if args.output.is_none() && args.cpu_reference.is_none() {
        bail!("nothing to do: give -o OUT (GPU) and/or --cpu-reference OUT (CPU)");
    }

    if let Some(path) = &args.cpu_reference {
        // The ring keeps the last `window` frames (their order does not matter).
        let first = frames.saturating_sub(args.window);
        let mut mem: Vec<f32> = memory.data[first * frame_elems..].to_vec();
        let mut pos: Vec<f32> = memory_pos.data[first * frame_elems..].to_vec();
        if let Some((tp, _)) = tpos {
            // Frame f is frames - f frames old: memory_pos + tpos[age - 1].
            let m = config.mem_dim;
            for (i, frame_pos) in pos.chunks_mut(frame_elems).enumerate() {
                let age = frames - (first + i);
                let row = &tp.data[(age - 1) * m..age * m];
                frame_pos.chunks_mut(m).for_each(|p| p.iter_mut().zip(row).for_each(|(a, b)| *a += b));
            }
        }
        mem.extend_from_slice(&ptrs.data);
        pos.extend_from_slice(&ptr_pos.data);
        let reference = memory_attention_reference(
            &weights,
            &MemoryAttentionInputs {
                curr: &curr.data,
                curr_pos: &curr_pos.data,
                memory: &mem,
                memory_pos: &pos,
                spatial_keys: (frames - first) * t,
            },
        );
        write_safetensors(path, &[("out", &[t, d], &reference)])?;
    }

    let Some(output) = &args.output else {
        return Ok(exit::Code::Success);
    };

    let device = Gpu::open(args.gpu)?;
    let mut plan = PoolPlan::new();
    let bank_plan = MemoryBankPlan::new(&mut plan, &config, args.window, pointers)?;
    let stack_plan = MemoryAttentionPlan::new(&mut plan, config)?;
    let curr_id = plan.buffer("dev.curr", t * d * 2);
    let pos_id = plan.buffer("dev.curr_pos", t * d * 2);
    let out_id = plan.buffer("dev.out", t * d * 2);
    let mem_id = plan.buffer("dev.memory_frame", frame_elems * 2);
    let mem_pos_id = plan.buffer("dev.memory_pos_frame", frame_elems * 2);
    let ptr_id = plan.buffer("dev.obj_ptrs", pointers.max(1) * config.mem_dim * 2);
    let ptr_pos_id = plan.buffer("dev.obj_ptr_pos", pointers.max(1) * config.mem_dim * 2);
    let pool = VramPool::reserve(&device, &plan)?;
    let stream = device.new_stream()?;
    let stack = MemoryAttention::new(&device, &stream, &pool, stack_plan, &weights)?;
    let mut bank = MemoryBank::new(&pool, bank_plan);
    if let Some((tp, rows)) = tpos {
        stack.set_temporal_encoding(&stream, &mut bank, &tp.data, rows)?;
    }

    pool.buffer(curr_id).upload_blocking(&stream, &halves(&curr.data))?;
    pool.buffer(pos_id).upload_blocking(&stream, &halves(&curr_pos.data))?;
    for f in 0..frames {
        let range = f * frame_elems..(f + 1) * frame_elems;
        pool.buffer(mem_id).upload_blocking(&stream, &halves(&memory.data[range.clone()]))?;
        pool.buffer(mem_pos_id).upload_blocking(&stream, &halves(&memory_pos.data[range]))?;
        stack.append(&device, &stream, &mut bank, &pool.buffer(mem_id), &pool.buffer(mem_pos_id))?;
        stream.synchronize().context("waiting for an append")?;
    }
    if pointers > 0 {
        pool.buffer(ptr_id).upload_blocking(&stream, &halves(&ptrs.data))?;
        pool.buffer(ptr_pos_id).upload_blocking(&stream, &halves(&ptr_pos.data))?;
    }
    bank.set_object_pointers(&device, &stream, &pool.buffer(ptr_id), &pool.buffer(ptr_pos_id), pointers)?;

    let (curr_v, pos_v, out_v) = (pool.buffer(curr_id), pool.buffer(pos_id), pool.buffer(out_id));
    stack.forward(&device, &stream, &bank, &curr_v, &pos_v, &out_v)?;
    let mut out = vec![f16::ZERO; t * d];
    out_v.download_blocking(&stream, &mut out)?;
    let out: Vec<f32> = out.iter().map(|v| v.to_f32()).collect();
    write_safetensors(output, &[("out", &[t, d], &out)])?;
    let kept = bank.valid_frames();
    crate::cli::print_err(&format!(
        "sam2-attention: {frames} frame(s) appended to a ring of {}, {kept} attended, {pointers} pointer token(s), \
         temporal encoding {}; wrote {}",
        args.window,
        if tpos.is_some() { "by age" } else { "none" },
        output.display()
    ));

    if let Some(iters) = args.bench {
        let iters = iters.max(1);
        let timed = |run: &mut dyn FnMut() -> anyhow::Result<()>| -> anyhow::Result<f64> {
            let flags = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
            let start = device.context().new_event(flags).context("cuEventCreate")?;
            let end = device.context().new_event(flags).context("cuEventCreate")?;
            for _ in 0..3 {
                run()?;
            }
            start.record(&stream).context("cuEventRecord")?;
            for _ in 0..iters {
                run()?;
            }
            end.record(&stream).context("cuEventRecord")?;
            end.synchronize().context("cuEventSynchronize")?;
            Ok(f64::from(start.elapsed_ms(&end).context("cuEventElapsedTime")?) / iters as f64)
        };
        let eager_ms = timed(&mut || Ok(stack.forward(&device, &stream, &bank, &curr_v, &pos_v, &out_v)?))?;
        stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .context("cuStreamBeginCapture")?;
        let captured = stack.forward(&device, &stream, &bank, &curr_v, &pos_v, &out_v);
        let graph = stream.end_capture(sys::CUgraphInstantiate_flags(0)).context("cuStreamEndCapture")?;
        captured?;
        let graph = graph.context("stream capture produced no graph")?;
        let graph_ms = timed(&mut || graph.launch().context("cuGraphLaunch"))?;
        // The replayed graph must give the eager forward's output bit for bit.
        let mut replayed = vec![f16::ZERO; t * d];
        out_v.download_blocking(&stream, &mut replayed)?;
        if let Some(i) = replayed.iter().zip(&out).position(|(a, b)| a.to_f32().to_bits() != b.to_bits()) {
            bail!("the CUDA graph's output differs from the eager forward's at element {i}");
        }
        let gflop = config.flops(kept, pointers) / 1e9;
        let line = serde_json::json!({
            "device": device.properties().name,
            "frames": kept,
            "pointer_tokens": pointers,
            "tokens": t,
            "iters": iters,
            "eager_ms": eager_ms,
            "graph_ms": graph_ms,
            "gflop": gflop,
            "tflops_graph": gflop / graph_ms,
        });
        crate::cli::print_out(&format!("{line}\n"))?;
    }
    Ok(exit::Code::Success)
}

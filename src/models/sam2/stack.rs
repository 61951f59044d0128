//! The memory-attention stack on the GPU: weights uploaded once into the
//! VRAM pool (FP16 matrices, FP32 biases and LayerNorm parameters), scratch
//! planned once, [`MemoryAttention::append`] projecting a frame's keys into
//! the bank once (and re-ageing the ring's keys when a temporal encoding is
//! set), and [`MemoryAttention::forward`] enqueuing one frame: nothing
//! allocated, nothing synchronised, so a CUDA graph can capture it.
//!
//! Per layer, as `MemoryAttentionLayer.forward` does it:
//!
//! ```text
//! h = norm1(x);  q, k, v = h Wq, h Wk, h Wv (+ RoPE on q, k);  x += out_proj(attn(q, k, v))
//! h = norm2(x);  q = RoPE(h Wq);  k = RoPE_spatial((memory + pos) Wk);  v = memory Wv
//!                x += out_proj(attn(q, k, v))
//! h = norm3(x);  x += linear2(relu(linear1(h)))
//! ```
//!
//! with x = curr + 0.1 · curr_pos at the start (FP32) and norm(x) at the end.
//! The memory frames' keys are the bank's (computed at append); the object
//! pointers' are projected at the start of each forward, every layer in one
//! launch. Cross-attention runs with the value projection folded out: the
//! kernel multiplies the softmax by the raw 64-wide memory tokens, and
//! `out_proj ∘ v_proj` is one 64 -> 256 linear, `W_o W_v` and `W_o b_v + b_o`,
//! computed in f64 at load (exact because softmax rows sum to 1; see
//! [`super::bank`]).

use cudarc::driver::CudaStream;
use half::f16;

use super::bank::copy_device;
use super::bank::MemoryBank;
use super::weights::MemoryAttentionWeights;
use super::{MemoryAttentionConfig, Sam2Error};
use crate::gpu::{BufferId, DeviceView, Gpu, PoolPlan, VramPool};
use crate::ops::attention::{self, AttentionJob, AttentionKernel, AttentionScratch, Splits};
use crate::ops::linear::{axial_rope_factors, linear, linear_batch, Epilogue, LinearJob, MAX_BATCH};
use crate::ops::sam2::{add_f16, age_keys, layernorm, scaled_add, AgeKeys};

/// Splits of the key range the attention scratch is planned for.
const MAX_SPLITS: usize = 8;
/// The cross-attention kernel (values 64 wide); measured on an H100 in
/// BENCHMARKS.md against the 64-row variant.
pub const CROSS_ATTENTION_KERNEL: AttentionKernel = AttentionKernel::V64Rows128;
/// Weight offsets are rounded up to this many elements (256 bytes of FP16).
const WEIGHT_ALIGN: usize = 128;

/// Offsets (in elements) of one layer's parameters in the weight buffers.
#[derive(Debug, Clone, Copy, Default)]
struct LayerOffsets {
    // FP16 matrices: self-attention q, k and v stacked as one [3d, d] weight.
    sa_qkv_w: usize,
    sa_out_w: usize,
    ca_q_w: usize,
    ca_k_w: usize,
    /// out_proj ∘ v_proj: `W_o W_v`, `[d_model, mem_dim]`.
    ca_vo_w: usize,
    ffn1_w: usize,
    ffn2_w: usize,
    // FP32 vectors.
    sa_qkv_b: usize,
    sa_out_b: usize,
    ca_q_b: usize,
    ca_k_b: usize,
    /// `W_o b_v + b_o`.
    ca_vo_b: usize,
    ffn1_b: usize,
    ffn2_b: usize,
    norm: [(usize, usize); 3],
}

/// Host images of the two weight buffers and where each tensor sits.
struct WeightImages {
    f16: Vec<f16>,
    f32: Vec<f32>,
    layers: Vec<LayerOffsets>,
    final_norm: (usize, usize),
}

fn push_aligned<T: Copy>(buffer: &mut Vec<T>, data: impl IntoIterator<Item = T>, zero: T) -> usize {
    let start = buffer.len().next_multiple_of(WEIGHT_ALIGN);
    buffer.resize(start, zero);
    buffer.extend(data);
    start
}

/// Layer `l`'s cross-attention `out_proj ∘ v_proj` as one linear, in f64:
/// (`W_o W_v` `[d_model, mem_dim]` row-major, `W_o b_v + b_o`).
pub fn fold_value_projection(weights: &MemoryAttentionWeights, l: usize) -> (Vec<f64>, Vec<f64>) {
    let (d, m) = (weights.config.d_model, weights.config.mem_dim);
    let wo = &weights.layer(l, "cross_attn_image.out_proj.weight").data;
    let bo = &weights.layer(l, "cross_attn_image.out_proj.bias").data;
    let wv = &weights.layer(l, "cross_attn_image.v_proj.weight").data;
    let bv = &weights.layer(l, "cross_attn_image.v_proj.bias").data;
    let mut w = vec![0f64; d * m];
    let mut b = vec![0f64; d];
    for o in 0..d {
        for i in 0..d {
            let x = f64::from(wo[o * d + i]);
            for c in 0..m {
                w[o * m + c] += x * f64::from(wv[i * m + c]);
            }
            b[o] += x * f64::from(bv[i]);
        }
        b[o] += f64::from(bo[o]);
    }
    (w, b)
}

impl WeightImages {
    fn build(weights: &MemoryAttentionWeights) -> Self {
        let config = &weights.config;
        let (mut h, mut f) = (Vec::new(), Vec::new());
        let mut layers = Vec::with_capacity(config.layers);
        let half =
            |name: &str, l: usize| weights.layer(l, name).data.iter().map(|&v| f16::from_f32(v)).collect::<Vec<_>>();
        for l in 0..config.layers {
            let mut o = LayerOffsets::default();
            let mut qkv = half("self_attn.q_proj.weight", l);
            qkv.extend(half("self_attn.k_proj.weight", l));
            qkv.extend(half("self_attn.v_proj.weight", l));
            o.sa_qkv_w = push_aligned(&mut h, qkv, f16::ZERO);
            o.sa_out_w = push_aligned(&mut h, half("self_attn.out_proj.weight", l), f16::ZERO);
            o.ca_q_w = push_aligned(&mut h, half("cross_attn_image.q_proj.weight", l), f16::ZERO);
            o.ca_k_w = push_aligned(&mut h, half("cross_attn_image.k_proj.weight", l), f16::ZERO);
            let (vo_w, vo_b) = fold_value_projection(weights, l);
            o.ca_vo_w = push_aligned(&mut h, vo_w.iter().map(|&v| f16::from_f64(v)), f16::ZERO);
            o.ffn1_w = push_aligned(&mut h, half("linear1.weight", l), f16::ZERO);
            o.ffn2_w = push_aligned(&mut h, half("linear2.weight", l), f16::ZERO);
            let vec = |name: &str| weights.layer(l, name).data.clone();
            let mut qkv_b = vec("self_attn.q_proj.bias");
            qkv_b.extend(vec("self_attn.k_proj.bias"));
            qkv_b.extend(vec("self_attn.v_proj.bias"));
            o.sa_qkv_b = push_aligned(&mut f, qkv_b, 0.0);
            o.sa_out_b = push_aligned(&mut f, vec("self_attn.out_proj.bias"), 0.0);
            o.ca_q_b = push_aligned(&mut f, vec("cross_attn_image.q_proj.bias"), 0.0);
            o.ca_k_b = push_aligned(&mut f, vec("cross_attn_image.k_proj.bias"), 0.0);
            o.ca_vo_b = push_aligned(&mut f, vo_b.iter().map(|&v| v as f32), 0.0);
            o.ffn1_b = push_aligned(&mut f, vec("linear1.bias"), 0.0);
            o.ffn2_b = push_aligned(&mut f, vec("linear2.bias"), 0.0);
            for (i, norm) in ["norm1", "norm2", "norm3"].iter().enumerate() {
                let w = push_aligned(&mut f, vec(&format!("{norm}.weight")), 0.0);
                let b = push_aligned(&mut f, vec(&format!("{norm}.bias")), 0.0);
                o.norm[i] = (w, b);
            }
            layers.push(o);
        }
        let w = push_aligned(&mut f, weights.get("norm.weight").data.clone(), 0.0);
        let b = push_aligned(&mut f, weights.get("norm.bias").data.clone(), 0.0);
        WeightImages { f16: h, f32: f, layers, final_norm: (w, b) }
    }

    /// (FP16 elements, FP32 elements) for a config, without building the images.
    fn sizes(config: &MemoryAttentionConfig) -> (usize, usize) {
        let weights = MemoryAttentionWeights::random(config.with_side(1), 0);
        let images = WeightImages::build(&weights);
        (images.f16.len(), images.f32.len())
    }
}

/// Where the stack's weights and scratch live in a pool plan (the memory
/// bank is planned apart: [`super::bank::MemoryBankPlan::new`]).
#[derive(Debug, Clone, Copy)]
pub struct MemoryAttentionPlan {
    pub config: MemoryAttentionConfig,
    weights_f16: BufferId,
    weights_f32: BufferId,
    rope: BufferId,
    x: BufferId,
    h: BufferId,
    qkv: BufferId,
    attn: BufferId,
    ffn: BufferId,
    partial_out: BufferId,
    partial_lse: BufferId,
}

impl MemoryAttentionPlan {
    /// Declares the weights and the per-frame scratch.
    pub fn new(plan: &mut PoolPlan, config: MemoryAttentionConfig) -> Result<Self, Sam2Error> {
        if config.d_model != attention::HEAD_DIM {
            return Err(Sam2Error::Shape(format!(
                "d_model {} (the attention kernel is built for one head of width {})",
                config.d_model,
                attention::HEAD_DIM
            )));
        }
        if config.mem_dim % 8 != 0 || config.ffn_dim % 8 != 0 || config.side == 0 || config.layers == 0 {
            return Err(Sam2Error::Shape(format!("unsupported memory-attention config {config:?}")));
        }
        let (t, d) = (config.tokens(), config.d_model);
        let (f16_len, f32_len) = WeightImages::sizes(&config);
        let (partial_out, partial_lse) = AttentionScratch::bytes(t, MAX_SPLITS);
        Ok(MemoryAttentionPlan {
            config,
            weights_f16: plan.buffer("sam2.weights_f16", f16_len * 2),
            weights_f32: plan.buffer("sam2.weights_f32", f32_len * 4),
            rope: plan.buffer("sam2.rope_factors", config.side * d / 4 * 8),
            x: plan.buffer("sam2.x", t * d * 4),
            h: plan.buffer("sam2.h", t * d * 2),
            qkv: plan.buffer("sam2.qkv", t * 3 * d * 2),
            attn: plan.buffer("sam2.attn", t * d * 2),
            ffn: plan.buffer("sam2.ffn", t * config.ffn_dim * 2),
            partial_out: plan.buffer("sam2.attn_partial_out", partial_out),
            partial_lse: plan.buffer("sam2.attn_partial_lse", partial_lse),
        })
    }
}

/// The stack, ready to run: weights on the GPU.
pub struct MemoryAttention<'pool> {
    plan: MemoryAttentionPlan,
    pool: &'pool VramPool,
    layers: Vec<LayerOffsets>,
    final_norm: (usize, usize),
    /// Each layer's cross-attention k_proj weight `[d_model, mem_dim]` (for
    /// the temporal encoding's keys).
    weights_k: Vec<Vec<f32>>,
    cross_kernel: AttentionKernel,
}

impl<'pool> MemoryAttention<'pool> {
    /// Uploads the weights and the RoPE factors (waits for the copies; set-up only).
    pub fn new(
        gpu: &Gpu,
        stream: &CudaStream,
        pool: &'pool VramPool,
        plan: MemoryAttentionPlan,
        weights: &MemoryAttentionWeights,
    ) -> Result<Self, Sam2Error> {
        let config = plan.config;
        if weights.config.d_model != config.d_model
            || weights.config.layers != config.layers
            || weights.config.ffn_dim != config.ffn_dim
            || weights.config.mem_dim != config.mem_dim
        {
            return Err(Sam2Error::Shape(format!(
                "weights for {:?} given to a stack planned for {config:?}",
                weights.config
            )));
        }
        attention::prepare(gpu)?;
        let images = WeightImages::build(weights);
        pool.buffer(plan.weights_f16).upload_blocking(stream, &images.f16)?;
        pool.buffer(plan.weights_f32).upload_blocking(stream, &images.f32)?;
        let factors = axial_rope_factors(config.side, config.d_model, config.rope_theta);
        pool.buffer(plan.rope).upload_blocking(stream, &factors)?;
        let weights_k =
            (0..config.layers).map(|l| weights.layer(l, "cross_attn_image.k_proj.weight").data.clone()).collect();
        Ok(MemoryAttention {
            plan,
            pool,
            layers: images.layers,
            final_norm: images.final_norm,
            weights_k,
            cross_kernel: CROSS_ATTENTION_KERNEL,
        })
    }

    pub fn plan(&self) -> &MemoryAttentionPlan {
        &self.plan
    }

    /// Picks the cross-attention kernel (one of the 64-wide-value ones);
    /// [`CROSS_ATTENTION_KERNEL`] unless changed (benches compare them).
    pub fn set_cross_attention_kernel(&mut self, kernel: AttentionKernel) -> Result<(), Sam2Error> {
        if kernel.dv() != self.plan.config.mem_dim {
            return Err(Sam2Error::Shape(format!(
                "cross-attention kernel {kernel:?} has values {} wide; the memory tokens are {}",
                kernel.dv(),
                self.plan.config.mem_dim
            )));
        }
        self.cross_kernel = kernel;
        Ok(())
    }

    fn f16_at(&self, offset: usize, len: usize) -> Result<DeviceView<'pool>, Sam2Error> {
        Ok(self.pool.buffer(self.plan.weights_f16).sub(offset * 2, len * 2)?)
    }

    fn f32_at(&self, offset: usize, len: usize) -> Result<DeviceView<'pool>, Sam2Error> {
        Ok(self.pool.buffer(self.plan.weights_f32).sub(offset * 4, len * 4)?)
    }

    fn check_bank(&self, bank: &MemoryBank) -> Result<(), Sam2Error> {
        let (c, bp) = (&self.plan.config, bank.plan());
        if bp.tokens != c.tokens() || bp.mem_dim != c.mem_dim || bp.d_model != c.d_model || bp.layers != c.layers {
            return Err(Sam2Error::Shape(format!(
                "a memory bank of {} tokens of width {} for {} layers of {} given to a stack of {} tokens of \
                 width {} and {} layers of {}",
                bp.tokens,
                bp.mem_dim,
                bp.layers,
                bp.d_model,
                c.tokens(),
                c.mem_dim,
                c.layers,
                c.d_model
            )));
        }
        Ok(())
    }

    /// Every layer's key projection of `rows` rows of `key_input` (memory +
    /// pos) into the rows from `row0` of `keys0` (the ring's keys without the
    /// temporal term) when `into_keys0`, else of the bank's keys; RoPE when
    /// `rope`. One launch ([`MAX_BATCH`] problems a launch).
    #[allow(clippy::too_many_arguments)]
    fn project_keys(
        &self,
        gpu: &Gpu,
        stream: &CudaStream,
        bank: &MemoryBank<'pool>,
        key_input: DeviceView<'pool>,
        rows: usize,
        row0: usize,
        rope: bool,
        into_keys0: bool,
    ) -> Result<(), Sam2Error> {
        let c = &self.plan.config;
        let (d, m) = (c.d_model, c.mem_dim);
        let table = self.pool.buffer(self.plan.rope);
        let epilogue =
            if rope { Epilogue::Rope { table, cols: d, rows, side: c.side, period: d } } else { Epilogue::Store };
        let mut jobs = Vec::with_capacity(c.layers);
        for (l, o) in self.layers.iter().enumerate() {
            let dst = if into_keys0 { bank.keys0(l)? } else { bank.keys(l)? };
            jobs.push(LinearJob {
                m: rows,
                n: d,
                k: m,
                a: key_input,
                lda: m,
                a_tail: None,
                weight: self.f16_at(o.ca_k_w, d * m)?,
                bias: self.f32_at(o.ca_k_b, d)?,
                out: dst.sub(row0 * d * 2, rows * d * 2)?,
                ldc: d,
                epilogue,
            });
        }
        for chunk in jobs.chunks(MAX_BATCH) {
            linear_batch(gpu, stream, chunk)?;
        }
        Ok(())
    }

    /// Sets SAM2's temporal encoding of memory frames by age
    /// (`maskmem_tpos_enc`, `[rows, mem_dim]` row-major, row `a - 1` for a
    /// frame `a` frames old; at least `window` rows, later ones unused) for
    /// `bank`, which must be empty: from then on every append re-ages the
    /// ring's keys (see [`super::bank`]). Computes `W_k · tpos[a]` per layer
    /// in f64 and uploads it (waits for the copy; set-up only).
    pub fn set_temporal_encoding(
        &self,
        stream: &CudaStream,
        bank: &mut MemoryBank<'pool>,
        tpos: &[f32],
        rows: usize,
    ) -> Result<(), Sam2Error> {
        self.check_bank(bank)?;
        let c = &self.plan.config;
        let (d, m, window) = (c.d_model, c.mem_dim, bank.plan().window);
        if bank.appended() > 0 {
            return Err(Sam2Error::Shape(format!(
                "the temporal encoding is set on a bank that already holds {} frame(s): set it before the first \
                 append (or after MemoryBank::reset)",
                bank.appended()
            )));
        }
        if rows < window || tpos.len() != rows * m {
            return Err(Sam2Error::Shape(format!(
                "a temporal encoding of {} values as {rows} rows of {m}; a ring of {window} frames needs at least \
                 {window} rows of {m} (one per age)",
                tpos.len()
            )));
        }
        if let Some(bad) = tpos.iter().find(|v| !v.is_finite()) {
            return Err(Sam2Error::Shape(format!("the temporal encoding holds {bad}")));
        }
        let mut tkeys = vec![0f32; c.layers * window * d];
        for (l, out) in tkeys.chunks_mut(window * d).enumerate() {
            let wk = &self.weights_k[l];
            for (age, row) in out.chunks_mut(d).enumerate() {
                let t = &tpos[age * m..(age + 1) * m];
                for (o, v) in row.iter_mut().enumerate() {
                    let dot: f64 =
                        wk[o * m..(o + 1) * m].iter().zip(t).map(|(w, x)| f64::from(*w) * f64::from(*x)).sum();
                    *v = dot as f32;
                }
            }
        }
        bank.temporal_keys().upload_blocking(stream, &tkeys)?;
        bank.mark_temporal();
        Ok(())
    }

    /// Enqueues the append of one frame's memory and its (spatial) position
    /// encoding (FP16 `[tokens, mem_dim]` each, on the GPU) to the bank: the
    /// frame's tokens become its values, every layer's keys are projected
    /// into the next slot (the oldest frame leaves the window once it is
    /// full), and with a temporal encoding every valid slot's keys are
    /// rewritten for its new age. Returns the slot written.
    pub fn append(
        &self,
        gpu: &Gpu,
        stream: &CudaStream,
        bank: &mut MemoryBank<'pool>,
        memory: &DeviceView<'pool>,
        memory_pos: &DeviceView<'pool>,
    ) -> Result<usize, Sam2Error> {
        self.check_bank(bank)?;
        let c = &self.plan.config;
        let (t, m, d) = (c.tokens(), c.mem_dim, c.d_model);
        let bytes = t * m * 2;
        for view in [memory, memory_pos] {
            if view.bytes() < bytes {
                return Err(view.too_small(bytes, "memory bank append").into());
            }
        }
        let slot = bank.next_slot();
        let values = bank.values().sub(slot * bytes, bytes)?;
        copy_device(gpu, stream, &values, memory, bytes, "a memory frame into the memory bank's values")?;
        let key_input = bank.key_input();
        add_f16(gpu, stream, memory, memory_pos, &key_input, t * m)?;
        let temporal = bank.has_temporal_encoding();
        self.project_keys(gpu, stream, bank, key_input, t, slot * t, true, temporal)?;
        bank.commit_append();
        if temporal {
            let plan = *bank.plan();
            age_keys(
                gpu,
                stream,
                &AgeKeys {
                    keys0: bank.all_keys0(),
                    keys0_layer_rows: plan.window * t,
                    keys: bank.all_keys(),
                    keys_layer_rows: plan.rows_per_layer(),
                    tkeys: bank.temporal_keys(),
                    rope: self.pool.buffer(self.plan.rope),
                    layers: c.layers,
                    valid: bank.valid_frames(),
                    window: plan.window,
                    newest: slot,
                    side: c.side,
                },
            )?;
            debug_assert_eq!(d, crate::ops::sam2::AGE_KEYS_WIDTH);
        }
        Ok(slot)
    }

    /// Enqueues one frame: `curr` and `curr_pos` FP16 `[tokens, 256]` (the
    /// current frame's features and position encoding, token-major as SAM2
    /// flattens them), attending to the bank's valid frames and pointers;
    /// writes FP16 `[tokens, 256]` into `out`.
    pub fn forward(
        &self,
        gpu: &Gpu,
        stream: &CudaStream,
        bank: &MemoryBank<'pool>,
        curr: &DeviceView,
        curr_pos: &DeviceView,
        out: &DeviceView,
    ) -> Result<(), Sam2Error> {
        self.check_bank(bank)?;
        let c = &self.plan.config;
        let (t, d) = (c.tokens(), c.d_model);
        let spatial = bank.valid_frames() * t;
        let pointers = bank.pointer_tokens();
        let keys = spatial + pointers;
        if keys == 0 {
            return Err(Sam2Error::EmptyMemory);
        }
        let need = t * d * 2;
        for (view, op) in
            [(curr, "memory attention input"), (curr_pos, "memory attention input"), (out, "memory attention output")]
        {
            if view.bytes() < need {
                return Err(view.too_small(need, op).into());
            }
        }

        let pool = self.pool;
        let (x, h, qkv, attn, ffn) = (
            pool.buffer(self.plan.x),
            pool.buffer(self.plan.h),
            pool.buffer(self.plan.qkv),
            pool.buffer(self.plan.attn),
            pool.buffer(self.plan.ffn),
        );
        let rope = pool.buffer(self.plan.rope);
        let scratch = AttentionScratch {
            partial_out: pool.buffer(self.plan.partial_out),
            partial_lse: pool.buffer(self.plan.partial_lse),
            max_splits: MAX_SPLITS,
        };
        let scale = 1.0 / (d as f32).sqrt();
        let rope_over = |cols: usize| Epilogue::Rope { table: rope, cols, rows: t, side: c.side, period: d };
        let dense = |a: DeviceView<'pool>, k: usize, weight, bias, out, n: usize, epilogue| LinearJob {
            m: t,
            n,
            k,
            a,
            lda: k,
            a_tail: None,
            weight,
            bias,
            out,
            ldc: n,
            epilogue,
        };
        let norm = |i: usize, o: &LayerOffsets| -> Result<(), Sam2Error> {
            let (nw, nb) = o.norm[i];
            layernorm(gpu, stream, &x, &self.f32_at(nw, d)?, &self.f32_at(nb, d)?, &h, t, d, c.layer_norm_eps)?;
            Ok(())
        };

        // The pointer tokens' keys and values go after the valid frames' rows.
        let m = c.mem_dim;
        if pointers > 0 {
            self.project_keys(gpu, stream, bank, bank.pointer_key_input(), pointers, spatial, false, false)?;
            let values = bank.values().sub(spatial * m * 2, pointers * m * 2)?;
            copy_device(
                gpu,
                stream,
                &values,
                &bank.pointer_memory(),
                pointers * m * 2,
                "object pointers into the values",
            )?;
        }
        scaled_add(gpu, stream, curr, curr_pos, c.input_pos_scale, &x, t * d)?;
        for (l, o) in self.layers.iter().enumerate() {
            // Self-attention: q = k = v = norm1(x), RoPE on q and k.
            norm(0, o)?;
            let (w, b) = (self.f16_at(o.sa_qkv_w, 3 * d * d)?, self.f32_at(o.sa_qkv_b, 3 * d)?);
            linear(gpu, stream, &dense(h, d, w, b, qkv, 3 * d, rope_over(2 * d)))?;
            let column = |col: usize| qkv.sub(col * 2, qkv.bytes() - col * 2);
            let job = AttentionJob {
                kernel: AttentionKernel::D256,
                q: qkv,
                ldq: 3 * d,
                k: column(d)?,
                ldk: 3 * d,
                v: column(2 * d)?,
                ldv: 3 * d,
                nq: t,
                nk: t,
                out: attn,
                ldo: d,
                scale,
            };
            attention::attention(gpu, stream, &job, &scratch, Splits::Auto)?;
            let (w, b) = (self.f16_at(o.sa_out_w, d * d)?, self.f32_at(o.sa_out_b, d)?);
            linear(gpu, stream, &dense(attn, d, w, b, x, d, Epilogue::Residual))?;

            // Cross-attention to the bank: q = RoPE(norm2(x) Wq), keys cached,
            // values the raw memory tokens; x += (P · memory) (W_o W_v)ᵀ + W_o b_v + b_o.
            norm(1, o)?;
            let (w, b) = (self.f16_at(o.ca_q_w, d * d)?, self.f32_at(o.ca_q_b, d)?);
            linear(gpu, stream, &dense(h, d, w, b, qkv, d, rope_over(d)))?;
            let job = AttentionJob {
                kernel: self.cross_kernel,
                q: qkv,
                ldq: d,
                k: bank.keys(l)?,
                ldk: d,
                v: bank.values(),
                ldv: m,
                nq: t,
                nk: keys,
                out: attn,
                ldo: m,
                scale,
            };
            attention::attention(gpu, stream, &job, &scratch, Splits::Auto)?;
            let (w, b) = (self.f16_at(o.ca_vo_w, d * m)?, self.f32_at(o.ca_vo_b, d)?);
            linear(gpu, stream, &dense(attn, m, w, b, x, d, Epilogue::Residual))?;

            // Feed-forward.
            norm(2, o)?;
            let (w, b) = (self.f16_at(o.ffn1_w, c.ffn_dim * d)?, self.f32_at(o.ffn1_b, c.ffn_dim)?);
            linear(gpu, stream, &dense(h, d, w, b, ffn, c.ffn_dim, Epilogue::Relu))?;
            let (w, b) = (self.f16_at(o.ffn2_w, d * c.ffn_dim)?, self.f32_at(o.ffn2_b, d)?);
            linear(gpu, stream, &dense(ffn, c.ffn_dim, w, b, x, d, Epilogue::Residual))?;
        }
        let (nw, nb) = self.final_norm;
        layernorm(gpu, stream, &x, &self.f32_at(nw, d)?, &self.f32_at(nb, d)?, out, t, d, c.layer_norm_eps)?;
        Ok(())
    }
}

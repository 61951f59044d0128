//! The memory-attention stack on the GPU: weights uploaded once into the
//! VRAM pool (FP16 matrices, FP32 biases and LayerNorm parameters), scratch
//! planned once, and [`MemoryAttention::forward`] enqueuing one frame: 4 +
//! 14 per layer kernel launches (16 with split attention), nothing
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

use cudarc::driver::CudaStream;
use half::f16;

use super::bank::MemoryBank;
use super::weights::MemoryAttentionWeights;
use super::{MemoryAttentionConfig, Sam2Error};
use crate::gpu::{BufferId, DeviceView, Gpu, PoolPlan, VramPool};
use crate::ops::attention::{self, AttentionJob, AttentionScratch, Splits};
use crate::ops::linear::{axial_rope_table, linear, Epilogue, LinearJob};
use crate::ops::sam2::{layernorm, scaled_add};

/// Splits of the key range the attention scratch is planned for.
const MAX_SPLITS: usize = 8;
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
    ca_v_w: usize,
    ca_out_w: usize,
    ffn1_w: usize,
    ffn2_w: usize,
    // FP32 vectors.
    sa_qkv_b: usize,
    sa_out_b: usize,
    ca_q_b: usize,
    ca_k_b: usize,
    ca_v_b: usize,
    ca_out_b: usize,
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
            o.ca_v_w = push_aligned(&mut h, half("cross_attn_image.v_proj.weight", l), f16::ZERO);
            o.ca_out_w = push_aligned(&mut h, half("cross_attn_image.out_proj.weight", l), f16::ZERO);
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
            o.ca_v_b = push_aligned(&mut f, vec("cross_attn_image.v_proj.bias"), 0.0);
            o.ca_out_b = push_aligned(&mut f, vec("cross_attn_image.out_proj.bias"), 0.0);
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

/// Where the stack's weights and scratch live in a pool plan.
#[derive(Debug, Clone, Copy)]
pub struct MemoryAttentionPlan {
    pub config: MemoryAttentionConfig,
    /// Most keys a cross-attention can have: window * tokens + pointer tokens.
    pub max_keys: usize,
    weights_f16: BufferId,
    weights_f32: BufferId,
    rope: BufferId,
    x: BufferId,
    h: BufferId,
    qkv: BufferId,
    attn: BufferId,
    ffn: BufferId,
    keys: BufferId,
    values: BufferId,
    partial_out: BufferId,
    partial_lse: BufferId,
}

impl MemoryAttentionPlan {
    /// Declares the weights and scratch for a bank of `window` frames and up
    /// to `max_pointer_tokens` object-pointer tokens.
    pub fn new(
        plan: &mut PoolPlan,
        config: MemoryAttentionConfig,
        window: usize,
        max_pointer_tokens: usize,
    ) -> Result<Self, Sam2Error> {
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
        let max_keys = window * t + max_pointer_tokens;
        let (f16_len, f32_len) = WeightImages::sizes(&config);
        let (partial_out, partial_lse) = AttentionScratch::bytes(t, MAX_SPLITS);
        Ok(MemoryAttentionPlan {
            config,
            max_keys,
            weights_f16: plan.buffer("sam2.weights_f16", f16_len * 2),
            weights_f32: plan.buffer("sam2.weights_f32", f32_len * 4),
            rope: plan.buffer("sam2.rope_table", t * d / 2 * 8),
            x: plan.buffer("sam2.x", t * d * 4),
            h: plan.buffer("sam2.h", t * d * 2),
            qkv: plan.buffer("sam2.qkv", t * 3 * d * 2),
            attn: plan.buffer("sam2.attn", t * d * 2),
            ffn: plan.buffer("sam2.ffn", t * config.ffn_dim * 2),
            keys: plan.buffer("sam2.cross_keys", max_keys.max(1) * d * 2),
            values: plan.buffer("sam2.cross_values", max_keys.max(1) * d * 2),
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
}

impl<'pool> MemoryAttention<'pool> {
    /// Uploads the weights and the RoPE table (waits for the copies; set-up only).
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
        let table = axial_rope_table(config.side, config.d_model, config.rope_theta);
        pool.buffer(plan.rope).upload_blocking(stream, &table)?;
        Ok(MemoryAttention { plan, pool, layers: images.layers, final_norm: images.final_norm })
    }

    pub fn plan(&self) -> &MemoryAttentionPlan {
        &self.plan
    }

    fn f16_at(&self, offset: usize, len: usize) -> Result<DeviceView<'pool>, Sam2Error> {
        Ok(self.pool.buffer(self.plan.weights_f16).sub(offset * 2, len * 2)?)
    }

    fn f32_at(&self, offset: usize, len: usize) -> Result<DeviceView<'pool>, Sam2Error> {
        Ok(self.pool.buffer(self.plan.weights_f32).sub(offset * 4, len * 4)?)
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
        let c = &self.plan.config;
        let (t, d, m) = (c.tokens(), c.d_model, c.mem_dim);
        let bp = bank.plan();
        if bp.tokens != t || bp.mem_dim != m {
            return Err(Sam2Error::Shape(format!(
                "a memory bank of {} tokens of width {} for a stack of {t} tokens of width {m}",
                bp.tokens, bp.mem_dim
            )));
        }
        let spatial = bank.valid_frames() * t;
        let keys = spatial + bank.pointer_tokens();
        if keys == 0 {
            return Err(Sam2Error::EmptyMemory);
        }
        if keys > self.plan.max_keys {
            return Err(Sam2Error::Shape(format!(
                "{keys} memory tokens; the stack was planned for at most {}",
                self.plan.max_keys
            )));
        }
        let need = t * d * 2;
        for (view, what) in [(curr, "curr"), (curr_pos, "curr_pos"), (out, "out")] {
            if view.bytes() < need {
                return Err(view
                    .too_small(need, if what == "out" { "memory attention output" } else { "memory attention input" })
                    .into());
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
        let (kbuf, vbuf) = (pool.buffer(self.plan.keys), pool.buffer(self.plan.values));
        let rope = pool.buffer(self.plan.rope);
        let scratch = AttentionScratch {
            partial_out: pool.buffer(self.plan.partial_out),
            partial_lse: pool.buffer(self.plan.partial_lse),
            max_splits: MAX_SPLITS,
        };
        let scale = 1.0 / (d as f32).sqrt();
        let rope_over = |cols: usize, rows: usize| Epilogue::Rope { table: rope, cols, rows, tokens: t, period: d };
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

        scaled_add(gpu, stream, curr, curr_pos, c.input_pos_scale, &x, t * d)?;
        for o in &self.layers {
            // Self-attention.
            let (nw, nb) = o.norm[0];
            layernorm(gpu, stream, &x, &self.f32_at(nw, d)?, &self.f32_at(nb, d)?, &h, t, d, c.layer_norm_eps)?;
            let qkv_w = self.f16_at(o.sa_qkv_w, 3 * d * d)?;
            let qkv_b = self.f32_at(o.sa_qkv_b, 3 * d)?;
            linear(gpu, stream, &dense(h, d, qkv_w, qkv_b, qkv, 3 * d, rope_over(2 * d, t)))?;
            let head = |col: usize| qkv.sub(col * 2, qkv.bytes() - col * 2);
            let job = AttentionJob {
                q: qkv,
                ldq: 3 * d,
                k: head(d)?,
                ldk: 3 * d,
                v: head(2 * d)?,
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

            // Cross-attention to the memory bank.
            let (nw, nb) = o.norm[1];
            layernorm(gpu, stream, &x, &self.f32_at(nw, d)?, &self.f32_at(nb, d)?, &h, t, d, c.layer_norm_eps)?;
            let (w, b) = (self.f16_at(o.ca_q_w, d * d)?, self.f32_at(o.ca_q_b, d)?);
            linear(gpu, stream, &dense(h, d, w, b, qkv, d, rope_over(d, t)))?;
            let memory_rows =
                |head: DeviceView<'pool>, tail: DeviceView<'pool>, weight, bias, out, epilogue| LinearJob {
                    m: keys,
                    n: d,
                    k: m,
                    a: head,
                    lda: m,
                    a_tail: Some((tail, spatial)),
                    weight,
                    bias,
                    out,
                    ldc: d,
                    epilogue,
                };
            let (w, b) = (self.f16_at(o.ca_k_w, d * m)?, self.f32_at(o.ca_k_b, d)?);
            let job = memory_rows(bank.key_input(), bank.pointer_key_input(), w, b, kbuf, rope_over(d, spatial));
            linear(gpu, stream, &job)?;
            let (w, b) = (self.f16_at(o.ca_v_w, d * m)?, self.f32_at(o.ca_v_b, d)?);
            linear(gpu, stream, &memory_rows(bank.memory(), bank.pointer_memory(), w, b, vbuf, Epilogue::Store))?;
            let job = AttentionJob {
                q: qkv,
                ldq: d,
                k: kbuf,
                ldk: d,
                v: vbuf,
                ldv: d,
                nq: t,
                nk: keys,
                out: attn,
                ldo: d,
                scale,
            };
            attention::attention(gpu, stream, &job, &scratch, Splits::Auto)?;
            let (w, b) = (self.f16_at(o.ca_out_w, d * d)?, self.f32_at(o.ca_out_b, d)?);
            linear(gpu, stream, &dense(attn, d, w, b, x, d, Epilogue::Residual))?;

            // Feed-forward.
            let (nw, nb) = o.norm[2];
            layernorm(gpu, stream, &x, &self.f32_at(nw, d)?, &self.f32_at(nb, d)?, &h, t, d, c.layer_norm_eps)?;
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

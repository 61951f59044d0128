//! Plain-Rust CPU twin of the memory-attention stack: `MemoryAttention.forward`
//! of Meta's sam2 package in f32 storage with f64 sums, written from the
//! module's code (memory_attention.py, sam/transformer.py RoPEAttention,
//! position_encoding.py apply_rotary_enc), composed of the ops' references.

use super::weights::MemoryAttentionWeights;
use crate::ops::attention::attention_reference;
use crate::ops::linear::{axial_rope_table, linear_reference, LinearReference, RopeReference};
use crate::ops::sam2::layernorm_reference;

/// The module's inputs, token-major (`[tokens, channels]`, batch 1).
pub struct MemoryAttentionInputs<'a> {
    /// `[tokens, d_model]`.
    pub curr: &'a [f32],
    pub curr_pos: &'a [f32],
    /// `[keys, mem_dim]`: `spatial_keys` rows of memory frames (`tokens` rows
    /// each, in any frame order), then the object-pointer tokens.
    pub memory: &'a [f32],
    pub memory_pos: &'a [f32],
    /// Rows of `memory` that get RoPE (all but the `num_obj_ptr_tokens`).
    pub spatial_keys: usize,
}

/// `MemoryAttention(curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens)`;
/// returns `[tokens, d_model]`.
pub fn memory_attention_reference(weights: &MemoryAttentionWeights, inputs: &MemoryAttentionInputs) -> Vec<f32> {
    let c = &weights.config;
    let (t, d, m, f) = (c.tokens(), c.d_model, c.mem_dim, c.ffn_dim);
    let keys = inputs.memory.len() / m;
    let table = axial_rope_table(c.side, d, c.rope_theta);
    let scale = 1.0 / (d as f32).sqrt();
    let linear = |a: &[f32], rows: usize, name: &str, layer: usize, rope_rows: usize| -> Vec<f32> {
        let w = weights.layer(layer, &format!("{name}.weight"));
        let (n, k) = (w.shape[0], w.shape[1]);
        linear_reference(&LinearReference {
            a,
            w: &w.data,
            bias: &weights.layer(layer, &format!("{name}.bias")).data,
            m: rows,
            n,
            k,
            relu: false,
            rope: (rope_rows > 0).then_some(RopeReference {
                table: &table,
                cols: n,
                rows: rope_rows,
                tokens: t,
                period: d,
            }),
            residual: None,
        })
    };
    let norm = |x: &[f32], w: &str, b: &str| {
        layernorm_reference(x, &weights.get(w).data, &weights.get(b).data, t, d, c.layer_norm_eps)
    };
    let add = |a: &mut [f32], b: &[f32]| a.iter_mut().zip(b).for_each(|(x, y)| *x += y);

    // pos_enc_at_input: output = curr + 0.1 * curr_pos.
    let mut x: Vec<f32> = inputs.curr.iter().zip(inputs.curr_pos).map(|(a, p)| a + c.input_pos_scale * p).collect();
    // pos_enc_at_cross_attn_keys: k = memory + pos; v = memory.
    let key_input: Vec<f32> = inputs.memory.iter().zip(inputs.memory_pos).map(|(a, p)| a + p).collect();
    for l in 0..c.layers {
        let ln = |i: usize| (format!("layers.{l}.norm{i}.weight"), format!("layers.{l}.norm{i}.bias"));
        // _forward_sa: q = k = v = norm1(x) (pos_enc_at_attn is false); RoPE on q and k.
        let (w, b) = ln(1);
        let h = norm(&x, &w, &b);
        let q = linear(&h, t, "self_attn.q_proj", l, t);
        let k = linear(&h, t, "self_attn.k_proj", l, t);
        let v = linear(&h, t, "self_attn.v_proj", l, 0);
        let o = attention_reference(&q, &k, &v, t, t, d, d, scale);
        add(&mut x, &linear(&o, t, "self_attn.out_proj", l, 0));
        // _forward_ca: q = norm2(x) (no pos), RoPE on q and the spatial keys.
        let (w, b) = ln(2);
        let h = norm(&x, &w, &b);
        let q = linear(&h, t, "cross_attn_image.q_proj", l, t);
        let k = linear(&key_input, keys, "cross_attn_image.k_proj", l, inputs.spatial_keys);
        let v = linear(inputs.memory, keys, "cross_attn_image.v_proj", l, 0);
        let o = attention_reference(&q, &k, &v, t, keys, d, d, scale);
        add(&mut x, &linear(&o, t, "cross_attn_image.out_proj", l, 0));
        // MLP: linear2(relu(linear1(norm3(x)))).
        let (w, b) = ln(3);
        let h = norm(&x, &w, &b);
        let mut hidden = linear(&h, t, "linear1", l, 0);
        hidden.iter_mut().for_each(|v| *v = v.max(0.0));
        debug_assert_eq!(hidden.len(), t * f);
        add(&mut x, &linear(&hidden, t, "linear2", l, 0));
    }
    norm(&x, "norm.weight", "norm.bias")
}

//! SAM2.1's memory attention (Meta's `sam2` package,
//! `sam2/modeling/memory_attention.py`, configured by
//! `configs/sam2.1/sam2.1_hiera_t.yaml`), run as a fixed window: a ring of
//! the last W frames' memories plus object-pointer tokens.
//!
//! 1. [`MemoryAttentionConfig::sam2_1_hiera_t`] states the architecture
//!    (every SAM2.1 size shares it): 4 layers of d_model 256; each layer is
//!    pre-LayerNorm self-attention with 2D axial RoPE over the 64 x 64
//!    current-frame tokens, pre-LayerNorm cross-attention to the memory (keys
//!    = memory + memory_pos with RoPE on the spatial tokens, repeated per
//!    frame; object-pointer tokens without RoPE; kv_in_dim 64), and a ReLU
//!    feed-forward of 2048; single-head attention at width 256; a final
//!    LayerNorm. The input is curr + 0.1 · curr_pos (`pos_enc_at_input`);
//!    positions are added nowhere else but the cross-attention keys
//!    (`pos_enc_at_attn: false`, `pos_enc_at_cross_attn_queries: false`,
//!    `pos_enc_at_cross_attn_keys: true`).
//! 2. [`weights::MemoryAttentionWeights`] reads the module's `state_dict`
//!    from a safetensors file (tools/parity/sam2_parity.py writes one).
//! 3. [`bank::MemoryBank`] is the ring of frame memories in the VRAM pool.
//! 4. [`stack::MemoryAttention`] runs the stack on the GPU: our linear,
//!    LayerNorm and fused attention kernels, FP16 storage, FP32 accumulation
//!    and an FP32 residual stream.
//! 5. [`reference::memory_attention_reference`] is the plain-Rust CPU twin.

pub mod bank;
pub mod reference;
pub mod stack;
pub mod weights;

use crate::gpu::GpuError;

/// The memory-attention architecture. The GPU kernels are built for
/// `d_model` = 256 (one attention head of width 256).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryAttentionConfig {
    pub d_model: usize,
    pub layers: usize,
    pub ffn_dim: usize,
    /// Width of memory and object-pointer tokens (`kv_in_dim`).
    pub mem_dim: usize,
    /// The feature map is `side` x `side` tokens (64 for 1024-pixel inputs).
    pub side: usize,
    pub rope_theta: f32,
    /// Scale of curr_pos added to the input (`pos_enc_at_input`).
    pub input_pos_scale: f32,
    pub layer_norm_eps: f32,
}

impl MemoryAttentionConfig {
    /// `sam2.1_hiera_t.yaml`'s memory_attention (the same in every SAM2.1 size).
    pub fn sam2_1_hiera_t() -> Self {
        MemoryAttentionConfig {
            d_model: 256,
            layers: 4,
            ffn_dim: 2048,
            mem_dim: 64,
            side: 64,
            rope_theta: 10000.0,
            input_pos_scale: 0.1,
            layer_norm_eps: 1e-5,
        }
    }

    /// The same architecture on a `side` x `side` map (SAM2's RoPEAttention
    /// recomputes its table for a square map of any side; tests use small ones).
    pub fn with_side(self, side: usize) -> Self {
        MemoryAttentionConfig { side, ..self }
    }

    /// Tokens of one frame (current or memory).
    pub fn tokens(&self) -> usize {
        self.side * self.side
    }

    /// FLOPs of one forward (multiply-adds count 2) with `frames` memory
    /// frames and `pointer_tokens` object-pointer tokens.
    pub fn flops(&self, frames: usize, pointer_tokens: usize) -> f64 {
        let (t, d, m) = (self.tokens() as f64, self.d_model as f64, self.mem_dim as f64);
        let keys = (frames * self.tokens() + pointer_tokens) as f64;
        let self_attn = 2.0 * t * d * 3.0 * d + 4.0 * t * t * d + 2.0 * t * d * d;
        let cross = 2.0 * t * d * d + 2.0 * 2.0 * keys * m * d + 4.0 * t * keys * d + 2.0 * t * d * d;
        let ffn = 2.0 * 2.0 * t * d * self.ffn_dim as f64;
        self.layers as f64 * (self_attn + cross + ffn)
    }
}

/// Errors of the SAM2 model code: what failed, on which file or tensor.
#[derive(Debug, thiserror::Error)]
pub enum Sam2Error {
    #[error("{path}: {reason}")]
    Weights { path: String, reason: String },

    #[error("{0}")]
    Shape(String),

    #[error(
        "the memory bank holds no memory frame and no object pointer: append a frame's memory before running \
         memory attention (SAM2 adds its no-memory embedding instead on a first frame)"
    )]
    EmptyMemory,

    #[error(transparent)]
    Gpu(#[from] GpuError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flops_match_the_issue_estimate() {
        // About 600 GFLOP at W = 7 (issue #8).
        let gflop = MemoryAttentionConfig::sam2_1_hiera_t().flops(7, 64) / 1e9;
        assert!((590.0..620.0).contains(&gflop), "{gflop}");
    }
}

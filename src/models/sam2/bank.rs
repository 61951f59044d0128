//! The memory bank: a fixed ring of the last `window` frames' memories in
//! the VRAM pool, plus the object-pointer tokens of the current frame.
//!
//! Values. SAM2's cross-attention values are `v_proj(memory)`, and nothing
//! lies between v_proj and the softmax product (RoPEAttention.forward: no
//! RoPE on v). Softmax rows sum to 1, so `softmax(S) (M W_vᵀ + 1 b_vᵀ) =
//! (softmax(S) M) W_vᵀ + b_v`: the bank keeps the raw 64-wide memory tokens
//! as the values of every layer (`[window · tokens + pointers, 64]` FP16),
//! the attention kernel multiplies P by them, and the stack folds W_v and b_v
//! into the output projection.
//!
//! Keys. A frame's keys enter the bank projected once, when it is appended:
//! for every layer `RoPE((memory + memory_pos) W_k + b_k)` (`[tokens, 256]`
//! FP16). In SAM2's video predictor (`SAM2Base._prepare_memory_conditioned_features`)
//! memory_pos = the frame's spatial encoding (`maskmem_pos_enc`) + a temporal
//! encoding `maskmem_tpos_enc[age - 1]` that depends on how many frames ago
//! the memory was made, so a frame's keys change as it ages. With a temporal
//! encoding set ([`super::stack::MemoryAttention::set_temporal_encoding`]),
//! append projects the frame with its spatial encoding alone into `keys0`,
//! and after every append a kernel rewrites every valid slot's keys as
//! `keys0 + RoPE(W_k · tpos[age - 1])` (exact: RoPE is linear, and the
//! temporal term is one 256-vector per layer and age; see
//! [`crate::ops::sam2::age_keys`]). Without one, keys are projected straight
//! into `keys` and never change (the caller's memory_pos is all there is).
//!
//! What the ring assumes:
//! - every frame in it is a non-conditioning memory whose age is the number
//!   of appends since it (the newest is 1 frame old, as SAM2's `t_rel`), and
//!   age `a` takes row `a - 1` of the table (SAM2's index `num_maskmem -
//!   t_pos - 1 = t_rel - 1`); the table needs `window` rows. SAM2 itself
//!   keeps conditioning frames apart (`t_pos = 0`, row `num_maskmem - 1`,
//!   whatever their age) and takes only `num_maskmem - 1` recent frames; a
//!   ring of 7 gives its oldest frame row 6, the conditioning row. A pinned
//!   conditioning slot is not modelled.
//! - one append per frame, in order (`memory_temporal_stride_for_eval` = 1),
//!   forward-in-time tracking.
//! - the object pointers' encodings (their own temporal term included) come
//!   with them every frame ([`MemoryBank::set_object_pointers`]).
//!
//! Frame `f` goes to slot `f % window`. Until the ring is full, slots
//! `0..appended` are the valid ones, and once it is full every slot is: the
//! valid slots are always a prefix of the ring, so a layer's cross-attention
//! reads `valid_frames() * tokens` contiguous key rows, followed by the
//! pointer tokens' rows, and never sees an empty slot (that is the mask).
//! Attention does not depend on the order of its keys (each frame's RoPE
//! positions are its own token positions, `rope_k_repeat`), so the slot order
//! does not matter. Appending is O(1) in the frames seen, and nothing is
//! allocated after set-up.
//!
//! The object-pointer tokens change every frame; the bank keeps them raw
//! (tokens and tokens + pos) and the forward projects their keys and copies
//! their values into the rows after the valid frames.

use cudarc::driver::CudaStream;

use super::{MemoryAttentionConfig, Sam2Error};
use crate::gpu::error::CheckDriver;
use crate::gpu::{BufferId, DeviceView, Gpu, PoolPlan, VramPool};
use crate::ops::sam2::add_f16;

/// Where the bank lives in a pool plan.
#[derive(Debug, Clone, Copy)]
pub struct MemoryBankPlan {
    pub window: usize,
    pub tokens: usize,
    pub mem_dim: usize,
    pub d_model: usize,
    pub layers: usize,
    pub max_pointer_tokens: usize,
    keys: BufferId,
    keys0: BufferId,
    values: BufferId,
    temporal_keys: BufferId,
    key_input: BufferId,
    pointer_memory: BufferId,
    pointer_key_input: BufferId,
}

impl MemoryBankPlan {
    /// Declares the ring for `window` frames of `config`'s map and room for
    /// `max_pointer_tokens` object-pointer tokens: per layer
    /// `(window * tokens + max_pointer_tokens) x d_model` keys and
    /// `window * tokens x d_model` keys without the temporal term, and
    /// `(window * tokens + max_pointer_tokens) x mem_dim` values for all layers.
    pub fn new(
        plan: &mut PoolPlan,
        config: &MemoryAttentionConfig,
        window: usize,
        max_pointer_tokens: usize,
    ) -> Result<Self, Sam2Error> {
        let (t, m, d, layers) = (config.tokens(), config.mem_dim, config.d_model, config.layers);
        if window == 0 || t == 0 || m == 0 || m % 8 != 0 || layers == 0 {
            return Err(Sam2Error::Shape(format!(
                "a memory bank of {window} frames of {t} tokens of width {m} for {layers} layers (width a multiple of 8)"
            )));
        }
        let rows = window * t + max_pointer_tokens;
        let pointer_bytes = max_pointer_tokens.max(1) * m * 2;
        Ok(MemoryBankPlan {
            window,
            tokens: t,
            mem_dim: m,
            d_model: d,
            layers,
            max_pointer_tokens,
            keys: plan.buffer("sam2.bank.keys", layers * rows * d * 2),
            keys0: plan.buffer("sam2.bank.keys0", layers * window * t * d * 2),
            values: plan.buffer("sam2.bank.values", rows * m * 2),
            temporal_keys: plan.buffer("sam2.bank.temporal_keys", layers * window * d * 4),
            key_input: plan.buffer("sam2.bank.key_input", t * m * 2),
            pointer_memory: plan.buffer("sam2.bank.pointer_memory", pointer_bytes),
            pointer_key_input: plan.buffer("sam2.bank.pointer_key_input", pointer_bytes),
        })
    }

    /// Key (or value) rows per layer.
    pub fn rows_per_layer(&self) -> usize {
        self.window * self.tokens + self.max_pointer_tokens
    }
}

/// The ring itself. Create it once per video; [`MemoryBank::reset`] starts over.
#[derive(Debug)]
pub struct MemoryBank<'pool> {
    plan: MemoryBankPlan,
    pool: &'pool VramPool,
    appended: u64,
    pointer_tokens: usize,
    temporal: bool,
}

impl<'pool> MemoryBank<'pool> {
    pub fn new(pool: &'pool VramPool, plan: MemoryBankPlan) -> Self {
        MemoryBank { plan, pool, appended: 0, pointer_tokens: 0, temporal: false }
    }

    /// Whether keys carry a temporal encoding by age (see the module docs).
    pub fn has_temporal_encoding(&self) -> bool {
        self.temporal
    }

    pub(crate) fn mark_temporal(&mut self) {
        self.temporal = true;
    }

    /// The slot of the newest frame, if any.
    pub fn newest_slot(&self) -> Option<usize> {
        self.appended.checked_sub(1).map(|f| (f % self.plan.window as u64) as usize)
    }

    pub fn plan(&self) -> &MemoryBankPlan {
        &self.plan
    }

    /// Frames appended since the start (or the last reset).
    pub fn appended(&self) -> u64 {
        self.appended
    }

    /// Frames the next forward attends to: min(appended, window).
    pub fn valid_frames(&self) -> usize {
        self.appended.min(self.plan.window as u64) as usize
    }

    /// The slot the next append writes.
    pub fn next_slot(&self) -> usize {
        (self.appended % self.plan.window as u64) as usize
    }

    pub fn pointer_tokens(&self) -> usize {
        self.pointer_tokens
    }

    /// Forgets every frame and pointer (a new video); nothing is cleared on
    /// the GPU. A temporal encoding stays set.
    pub fn reset(&mut self) {
        self.appended = 0;
        self.pointer_tokens = 0;
    }

    /// Layer `layer`'s key rows: slot `s` at rows `s * tokens..`, the pointer
    /// tokens after the valid frames.
    pub fn keys(&self, layer: usize) -> Result<DeviceView<'pool>, Sam2Error> {
        let bytes = self.plan.rows_per_layer() * self.plan.d_model * 2;
        Ok(self.pool.buffer(self.plan.keys).sub(layer * bytes, bytes)?)
    }

    /// Every layer's keys (`rows_per_layer()` rows a layer).
    pub(crate) fn all_keys(&self) -> DeviceView<'pool> {
        self.pool.buffer(self.plan.keys)
    }

    /// Layer `layer`'s keys without the temporal term (ring rows only).
    pub(crate) fn keys0(&self, layer: usize) -> Result<DeviceView<'pool>, Sam2Error> {
        let bytes = self.plan.window * self.plan.tokens * self.plan.d_model * 2;
        Ok(self.pool.buffer(self.plan.keys0).sub(layer * bytes, bytes)?)
    }

    pub(crate) fn all_keys0(&self) -> DeviceView<'pool> {
        self.pool.buffer(self.plan.keys0)
    }

    /// FP32 `[layers, window, d_model]`: W_k · tpos[age - 1] per layer and age.
    pub(crate) fn temporal_keys(&self) -> DeviceView<'pool> {
        self.pool.buffer(self.plan.temporal_keys)
    }

    /// The value rows of every layer: the raw memory tokens (`mem_dim` wide),
    /// laid out as [`MemoryBank::keys`].
    pub fn values(&self) -> DeviceView<'pool> {
        self.pool.buffer(self.plan.values)
    }

    /// Scratch for the appended frame's memory + pos.
    pub(crate) fn key_input(&self) -> DeviceView<'pool> {
        self.pool.buffer(self.plan.key_input)
    }

    pub fn pointer_memory(&self) -> DeviceView<'pool> {
        self.pool.buffer(self.plan.pointer_memory)
    }

    pub fn pointer_key_input(&self) -> DeviceView<'pool> {
        self.pool.buffer(self.plan.pointer_key_input)
    }

    /// Counts the append whose projections were just enqueued into `next_slot()`.
    pub(crate) fn commit_append(&mut self) {
        self.appended += 1;
    }

    /// Enqueues the object-pointer tokens of the next forward (FP16 `[count,
    /// mem_dim]` and their position encodings); they replace the previous ones.
    /// `count` may be 0.
    pub fn set_object_pointers(
        &mut self,
        gpu: &Gpu,
        stream: &CudaStream,
        pointers: &DeviceView,
        pointer_pos: &DeviceView,
        count: usize,
    ) -> Result<(), Sam2Error> {
        if count > self.plan.max_pointer_tokens {
            return Err(Sam2Error::Shape(format!(
                "{count} object-pointer tokens; the bank was planned for at most {}",
                self.plan.max_pointer_tokens
            )));
        }
        self.pointer_tokens = 0;
        if count == 0 {
            return Ok(());
        }
        let bytes = count * self.plan.mem_dim * 2;
        for view in [pointers, pointer_pos] {
            if view.bytes() < bytes {
                return Err(view.too_small(bytes, "object pointers").into());
            }
        }
        copy_device(gpu, stream, &self.pointer_memory(), pointers, bytes, "object pointers into the memory bank")?;
        add_f16(gpu, stream, pointers, pointer_pos, &self.pointer_key_input(), count * self.plan.mem_dim)?;
        self.pointer_tokens = count;
        Ok(())
    }
}

/// Enqueues a copy of `bytes` from `src` to `dst` (both checked to hold them).
pub(crate) fn copy_device(
    gpu: &Gpu,
    stream: &CudaStream,
    dst: &DeviceView,
    src: &DeviceView,
    bytes: usize,
    what: &str,
) -> Result<(), Sam2Error> {
    if src.bytes() < bytes {
        return Err(src.too_small(bytes, "device copy").into());
    }
    if dst.bytes() < bytes {
        return Err(dst.too_small(bytes, "device copy").into());
    }
    if bytes == 0 {
        return Ok(());
    }
    gpu.bind_to_thread()?;
    // SAFETY: both views hold `bytes` (checked above) and live in pools that
    // synchronise before they free.
    unsafe { cudarc::driver::result::memcpy_dtod_async(dst.ptr(), src.ptr(), bytes, stream.cu_stream()) }
        .check_with("cuMemcpyDtoDAsync", || what.to_string())?;
    Ok(())
}

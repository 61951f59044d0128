//! The memory bank: a fixed ring of the last `window` frames' memories in
//! the VRAM pool, plus the object-pointer tokens of the current frame.
//!
//! A frame's memory enters the bank already projected: for every layer, the
//! cross-attention's keys `RoPE((memory + memory_pos) Wk + bk)` and values
//! `memory Wv + bv` (`[tokens, 256]` FP16 each), which depend on nothing but
//! the frame. [`super::stack::MemoryAttention::append`] computes them once, in
//! one launch, when the frame arrives, so a forward reads them instead of
//! projecting W frames again every frame; appending is O(1) in the frames
//! seen, and nothing is allocated after set-up. (Meta's module projects its
//! whole memory on every call; the result is the same, since the projections
//! are row-wise.)
//!
//! Frame `f` goes to slot `f % window`. Until the ring is full, slots
//! `0..appended` are the valid ones, and once it is full every slot is: the
//! valid slots are always a prefix of the ring, so a layer's cross-attention
//! reads `valid_frames() * tokens` contiguous key rows, followed by the
//! pointer tokens' rows, and never sees an empty slot (that is the mask).
//! Attention does not depend on the order of its keys (each frame's RoPE
//! positions are its own token positions, `rope_k_repeat`), so the slot order
//! does not matter.
//!
//! The object-pointer tokens change every frame; the bank keeps them raw
//! (tokens and tokens + pos) and the forward projects them into the rows
//! after the valid frames.

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
    values: BufferId,
    key_input: BufferId,
    pointer_memory: BufferId,
    pointer_key_input: BufferId,
}

impl MemoryBankPlan {
    /// Declares the ring for `window` frames of `config`'s map and room for
    /// `max_pointer_tokens` object-pointer tokens: per layer
    /// `(window * tokens + max_pointer_tokens) x d_model` keys and values.
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
            values: plan.buffer("sam2.bank.values", layers * rows * d * 2),
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
}

impl<'pool> MemoryBank<'pool> {
    pub fn new(pool: &'pool VramPool, plan: MemoryBankPlan) -> Self {
        MemoryBank { plan, pool, appended: 0, pointer_tokens: 0 }
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

    /// Forgets every frame and pointer (a new video); nothing is cleared on the GPU.
    pub fn reset(&mut self) {
        self.appended = 0;
        self.pointer_tokens = 0;
    }

    fn layer_view(&self, id: BufferId, layer: usize) -> Result<DeviceView<'pool>, Sam2Error> {
        let bytes = self.plan.rows_per_layer() * self.plan.d_model * 2;
        Ok(self.pool.buffer(id).sub(layer * bytes, bytes)?)
    }

    /// Layer `layer`'s key rows: slot `s` at rows `s * tokens..`, the pointer
    /// tokens after the valid frames.
    pub fn keys(&self, layer: usize) -> Result<DeviceView<'pool>, Sam2Error> {
        self.layer_view(self.plan.keys, layer)
    }

    /// Layer `layer`'s value rows, laid out as [`MemoryBank::keys`].
    pub fn values(&self, layer: usize) -> Result<DeviceView<'pool>, Sam2Error> {
        self.layer_view(self.plan.values, layer)
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
        let dst = self.pointer_memory();
        gpu.bind_to_thread()?;
        // SAFETY: `bytes` fit the source (checked above) and the pointer
        // buffer (planned for max_pointer_tokens >= count rows); both live in
        // pools that synchronise before they free.
        unsafe { cudarc::driver::result::memcpy_dtod_async(dst.ptr(), pointers.ptr(), bytes, stream.cu_stream()) }
            .check_with("cuMemcpyDtoDAsync", || "object pointers into the memory bank".to_string())?;
        add_f16(gpu, stream, pointers, pointer_pos, &self.pointer_key_input(), count * self.plan.mem_dim)?;
        self.pointer_tokens = count;
        Ok(())
    }
}

//! The memory bank: a fixed ring of the last `window` frames' memories in
//! the VRAM pool, plus the object-pointer tokens of the current frame.
//!
//! Each slot holds one frame's memory `[tokens, mem_dim]` FP16 twice: as the
//! values read it (memory) and as the keys read it (memory + memory_pos,
//! `pos_enc_at_cross_attn_keys`), so appending is one copy and one add,
//! O(1) in the number of frames seen, and nothing is allocated after set-up.
//!
//! Frame `f` goes to slot `f % window`. Until the ring is full, slots
//! `0..appended` are the valid ones, and once it is full every slot is: the
//! valid slots are always a prefix of the ring, so the cross-attention reads
//! `valid_frames() * tokens` contiguous rows and never sees an empty slot
//! (that is the mask). Attention does not depend on the order of its keys
//! (each frame's RoPE positions are its own token positions,
//! `rope_k_repeat`), so the slot order does not matter.

use cudarc::driver::CudaStream;

use super::Sam2Error;
use crate::gpu::error::CheckDriver;
use crate::gpu::{BufferId, DeviceView, Gpu, PoolPlan, VramPool};
use crate::ops::sam2::add_f16;

/// Where the bank lives in a pool plan.
#[derive(Debug, Clone, Copy)]
pub struct MemoryBankPlan {
    pub window: usize,
    pub tokens: usize,
    pub mem_dim: usize,
    pub max_pointer_tokens: usize,
    memory: BufferId,
    key_input: BufferId,
    pointer_memory: BufferId,
    pointer_key_input: BufferId,
}

impl MemoryBankPlan {
    /// Declares the ring (`window` frames of `tokens` x `mem_dim`) and room
    /// for `max_pointer_tokens` object-pointer tokens.
    pub fn new(
        plan: &mut PoolPlan,
        window: usize,
        tokens: usize,
        mem_dim: usize,
        max_pointer_tokens: usize,
    ) -> Result<Self, Sam2Error> {
        if window == 0 || tokens == 0 || mem_dim == 0 || mem_dim % 8 != 0 {
            return Err(Sam2Error::Shape(format!(
                "a memory bank of {window} frames of {tokens} tokens of width {mem_dim} (width a multiple of 8)"
            )));
        }
        let frame_bytes = tokens * mem_dim * 2;
        let pointer_bytes = max_pointer_tokens.max(1) * mem_dim * 2;
        Ok(MemoryBankPlan {
            window,
            tokens,
            mem_dim,
            max_pointer_tokens,
            memory: plan.buffer("sam2.bank.memory", window * frame_bytes),
            key_input: plan.buffer("sam2.bank.key_input", window * frame_bytes),
            pointer_memory: plan.buffer("sam2.bank.pointer_memory", pointer_bytes),
            pointer_key_input: plan.buffer("sam2.bank.pointer_key_input", pointer_bytes),
        })
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

    fn frame_bytes(&self) -> usize {
        self.plan.tokens * self.plan.mem_dim * 2
    }

    /// Memory rows (values) of the valid frames: `valid_frames() * tokens` rows.
    pub fn memory(&self) -> DeviceView<'pool> {
        self.pool.buffer(self.plan.memory)
    }

    /// Key-input rows (memory + pos) of the valid frames.
    pub fn key_input(&self) -> DeviceView<'pool> {
        self.pool.buffer(self.plan.key_input)
    }

    pub fn pointer_memory(&self) -> DeviceView<'pool> {
        self.pool.buffer(self.plan.pointer_memory)
    }

    pub fn pointer_key_input(&self) -> DeviceView<'pool> {
        self.pool.buffer(self.plan.pointer_key_input)
    }

    /// Enqueues the append of one frame's memory and its position encoding
    /// (FP16 `[tokens, mem_dim]` each, on the GPU) into the next slot; the
    /// oldest frame leaves the window once it is full.
    pub fn append(
        &mut self,
        gpu: &Gpu,
        stream: &CudaStream,
        memory: &DeviceView,
        memory_pos: &DeviceView,
    ) -> Result<usize, Sam2Error> {
        let bytes = self.frame_bytes();
        let count = self.plan.tokens * self.plan.mem_dim;
        for (view, what) in [(memory, "memory"), (memory_pos, "memory_pos")] {
            if view.bytes() < bytes {
                return Err(view
                    .too_small(bytes, if what == "memory" { "memory bank append" } else { "memory bank append (pos)" })
                    .into());
            }
        }
        let slot = self.next_slot();
        let values = self.memory().sub(slot * bytes, bytes)?;
        let keys = self.key_input().sub(slot * bytes, bytes)?;
        gpu.bind_to_thread()?;
        // SAFETY: both ranges are `bytes` long: the source was checked above,
        // the destination is slot `slot` of the ring (a sub-view checked by
        // `sub`); both live in pools that synchronise before they free.
        unsafe { cudarc::driver::result::memcpy_dtod_async(values.ptr(), memory.ptr(), bytes, stream.cu_stream()) }
            .check_with("cuMemcpyDtoDAsync", || format!("memory bank append into slot {slot}"))?;
        add_f16(gpu, stream, memory, memory_pos, &keys, count)?;
        self.appended += 1;
        Ok(slot)
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
        // buffer (planned for max_pointer_tokens >= count rows).
        unsafe { cudarc::driver::result::memcpy_dtod_async(dst.ptr(), pointers.ptr(), bytes, stream.cu_stream()) }
            .check_with("cuMemcpyDtoDAsync", || "object pointers into the memory bank".to_string())?;
        add_f16(gpu, stream, pointers, pointer_pos, &self.pointer_key_input(), count * self.plan.mem_dim)?;
        self.pointer_tokens = count;
        Ok(())
    }
}

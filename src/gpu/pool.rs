//! The VRAM pool: every device buffer vrseg uses is carved out of one
//! reservation made at start-up from a [`PoolPlan`].
//!
//! 1. Stages declare what they need: `plan.buffer("letterbox.out", bytes)` or
//!    `plan.slots("decode.frames", frame_bytes, 8)` for a ring of equal slots.
//! 2. [`VramPool::reserve`] checks the device's free memory against the plan's
//!    total and stops with "needs X GiB, Y GiB free" before any work starts,
//!    then makes the process's one `cuMemAlloc` for buffers.
//! 3. Buffers are 256-byte-aligned offsets into that allocation
//!    ([`DeviceView`]); slot rings hand slots out through a bounded queue, which
//!    is where backpressure comes from, and order GPU reuse with events.
//!
//! [`device_allocation_count`] counts every device allocation vrseg makes, so
//! tests and benches can assert that a frame loop allocates nothing.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use cudarc::driver::{sys, CudaEvent, CudaStream};

use super::context::Gpu;
use super::error::{CheckDriver, GpuError};

/// Alignment of every pool buffer: what cudaMalloc guarantees, enough for
/// 16-byte vector access, texture/surface pitch rules and TMA descriptors.
pub const POOL_ALIGNMENT: usize = 256;

/// Device memory kept free beyond the pool, for what the driver, NVDEC and
/// cuBLAS/TensorRT workspaces allocate on their own behalf.
pub const POOL_HEADROOM_BYTES: usize = 256 << 20;

static DEVICE_ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static DEVICE_BYTES_ALLOCATED: AtomicU64 = AtomicU64::new(0);

/// How many device allocations vrseg has made in this process (all of them go
/// through [`VramPool::reserve`]).
pub fn device_allocation_count() -> u64 {
    DEVICE_ALLOCATIONS.load(Ordering::SeqCst)
}

/// Total bytes vrseg has asked the driver for, over the process's life.
pub fn device_bytes_allocated() -> u64 {
    DEVICE_BYTES_ALLOCATED.load(Ordering::SeqCst)
}

/// Handle to a single buffer in a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferId(usize);

/// Handle to a ring of equal slots in a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotsId(usize);

#[derive(Debug, Clone)]
struct PlanEntry {
    name: String,
    slot_bytes: usize,
    count: usize,
    align: usize,
}

/// Named sizes and alignments: what a run will need, declared before it starts.
#[derive(Debug, Clone, Default)]
pub struct PoolPlan {
    entries: Vec<PlanEntry>,
}

/// Where each plan entry lives in the reservation.
#[derive(Debug, Clone)]
pub struct PoolLayout {
    /// Offset of slot 0 of each entry, and the stride between slots.
    offsets: Vec<(usize, usize)>,
    total_bytes: usize,
}

fn align_up(value: usize, align: usize) -> Option<usize> {
    debug_assert!(align.is_power_of_two());
    value.checked_add(align - 1).map(|v| v & !(align - 1))
}

impl PoolPlan {
    pub fn new() -> Self {
        Self::default()
    }

    /// One buffer of `bytes` bytes, 256-byte aligned.
    pub fn buffer(&mut self, name: impl Into<String>, bytes: usize) -> BufferId {
        self.entries.push(PlanEntry { name: name.into(), slot_bytes: bytes, count: 1, align: POOL_ALIGNMENT });
        BufferId(self.entries.len() - 1)
    }

    /// `count` equal slots of `bytes_each`, handed out by a [`SlotRing`].
    pub fn slots(&mut self, name: impl Into<String>, bytes_each: usize, count: usize) -> SlotsId {
        self.entries.push(PlanEntry { name: name.into(), slot_bytes: bytes_each, count, align: POOL_ALIGNMENT });
        SlotsId(self.entries.len() - 1)
    }

    /// Raises an entry's alignment (a power of two ≥ 256), e.g. for 2 MiB pages.
    pub fn align(&mut self, id: BufferId, align: usize) {
        self.entries[id.0].align = align.max(POOL_ALIGNMENT);
    }

    /// Offsets and total size, with checked arithmetic: a plan that would
    /// overflow `usize` is an error, not a wrap-around.
    pub fn layout(&self) -> Result<PoolLayout, GpuError> {
        let mut offset = 0usize;
        let mut offsets = Vec::with_capacity(self.entries.len());
        for e in &self.entries {
            if !e.align.is_power_of_two() {
                return Err(GpuError::InvalidPlan(format!(
                    "`{}` asks for alignment {}, not a power of two",
                    e.name, e.align
                )));
            }
            if e.slot_bytes == 0 || e.count == 0 {
                return Err(GpuError::InvalidPlan(format!(
                    "`{}` asks for {} slots of {} bytes",
                    e.name, e.count, e.slot_bytes
                )));
            }
            let overflow =
                || GpuError::InvalidPlan(format!("`{}` makes the pool larger than the address space", e.name));
            let stride = align_up(e.slot_bytes, e.align).ok_or_else(overflow)?;
            let start = align_up(offset, e.align).ok_or_else(overflow)?;
            let span = stride.checked_mul(e.count).ok_or_else(overflow)?;
            offset = start.checked_add(span).ok_or_else(overflow)?;
            offsets.push((start, stride));
        }
        Ok(PoolLayout { offsets, total_bytes: offset })
    }

    pub fn total_bytes(&self) -> Result<usize, GpuError> {
        Ok(self.layout()?.total_bytes)
    }

    /// (name, bytes per slot, slots) of every entry, for `--stats` and errors.
    pub fn entries(&self) -> impl Iterator<Item = (&str, usize, usize)> {
        self.entries.iter().map(|e| (e.name.as_str(), e.slot_bytes, e.count))
    }
}

const GIB: f64 = (1u64 << 30) as f64;

/// The one device reservation. Dropping it frees the memory; every view
/// borrows the pool, so none outlives it.
pub struct VramPool {
    gpu: Gpu,
    base: sys::CUdeviceptr,
    plan: PoolPlan,
    layout: PoolLayout,
}

impl std::fmt::Debug for VramPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VramPool")
            .field("bytes", &self.layout.total_bytes)
            .field("entries", &self.plan.entries.len())
            .finish()
    }
}

impl VramPool {
    /// Checks free memory, then reserves the whole plan in one allocation.
    pub fn reserve(gpu: &Gpu, plan: &PoolPlan) -> Result<VramPool, GpuError> {
        let layout = plan.layout()?;
        let (free, _total) = gpu.memory_info()?;
        let needed = layout.total_bytes.saturating_add(POOL_HEADROOM_BYTES);
        if needed > free {
            return Err(GpuError::OutOfMemory {
                device: format!("{} (GPU {})", gpu.properties().name, gpu.properties().ordinal),
                needed_gib: needed as f64 / GIB,
                pool_gib: layout.total_bytes as f64 / GIB,
                headroom_gib: POOL_HEADROOM_BYTES as f64 / GIB,
                free_gib: free as f64 / GIB,
            });
        }
        gpu.bind_to_thread()?;
        // Even an empty plan gets a real (tiny) allocation so that `base` is valid.
        let bytes = layout.total_bytes.max(POOL_ALIGNMENT);
        // SAFETY: the context is current on this thread (bound above); the
        // returned pointer is owned by this pool and freed exactly once in Drop.
        #[allow(clippy::disallowed_methods)] // the one allocation the pool exists for
        let base = unsafe { cudarc::driver::result::malloc_sync(bytes) }
            .check_with("cuMemAlloc", || format!("VRAM pool of {:.2} GiB", bytes as f64 / GIB))?;
        DEVICE_ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        DEVICE_BYTES_ALLOCATED.fetch_add(bytes as u64, Ordering::SeqCst);
        Ok(VramPool { gpu: gpu.clone(), base, plan: plan.clone(), layout })
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    pub fn total_bytes(&self) -> usize {
        self.layout.total_bytes
    }

    pub fn plan(&self) -> &PoolPlan {
        &self.plan
    }

    fn view_of(&self, entry: usize, slot: usize) -> DeviceView<'_> {
        let (start, stride) = self.layout.offsets[entry];
        let e = &self.plan.entries[entry];
        DeviceView {
            ptr: self.base + (start + slot * stride) as u64,
            bytes: e.slot_bytes,
            name: &e.name,
            _pool: PhantomData,
        }
    }

    pub fn buffer(&self, id: BufferId) -> DeviceView<'_> {
        self.view_of(id.0, 0)
    }

    /// Slot `index` of a slot entry, without ring bookkeeping (for set-up code
    /// that fills every slot, or for tests).
    pub fn slot(&self, id: SlotsId, index: usize) -> DeviceView<'_> {
        assert!(index < self.plan.entries[id.0].count, "slot index out of range");
        self.view_of(id.0, index)
    }

    /// A ring that hands out the entry's slots. Creates one event per slot,
    /// so call it at start-up, not per frame.
    pub fn slot_ring(&self, id: SlotsId) -> Result<SlotRing<'_>, GpuError> {
        let count = self.plan.entries[id.0].count;
        let (tx, rx) = sync_channel(count);
        let mut events = Vec::with_capacity(count);
        for i in 0..count {
            tx.send(i).expect("receiver is alive and the channel holds `count` items");
            events.push(
                self.gpu
                    .context()
                    .new_event(Some(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING))
                    .check("cuEventCreate")?,
            );
        }
        Ok(SlotRing { pool: self, id, free_tx: tx, free_rx: Mutex::new(rx), events: Arc::new(events) })
    }
}

impl Drop for VramPool {
    fn drop(&mut self) {
        // Work that still reads the pool must finish before the memory goes;
        // errors here cannot be returned, so they are reported and not lost.
        if let Err(e) = self.gpu.bind_to_thread().and_then(|_| self.gpu.synchronize()) {
            eprintln!("vrseg: while freeing the VRAM pool: {e}");
        }
        // SAFETY: `base` came from cuMemAlloc in `reserve`, is freed only here,
        // and no view outlives `self` (views borrow the pool).
        if let Err(e) = unsafe { cudarc::driver::result::free_sync(self.base) }.check("cuMemFree") {
            eprintln!("vrseg: while freeing the VRAM pool: {e}");
        }
    }
}

/// A byte range of the pool. Copyable: the GPU side of ordering is the job of
/// streams and events, not of Rust borrows, since device memory is never
/// dereferenced on the host.
#[derive(Clone, Copy)]
pub struct DeviceView<'pool> {
    ptr: sys::CUdeviceptr,
    bytes: usize,
    name: &'pool str,
    _pool: PhantomData<&'pool VramPool>,
}

impl std::fmt::Debug for DeviceView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceView({} @ {:#x}, {} bytes)", self.name, self.ptr, self.bytes)
    }
}

impl<'pool> DeviceView<'pool> {
    pub fn ptr(&self) -> sys::CUdeviceptr {
        self.ptr
    }

    /// The error for an operation that needs `need` bytes of this view.
    pub fn too_small(&self, need: usize, op: &'static str) -> GpuError {
        GpuError::BufferTooSmall { buffer: self.name.to_string(), have: self.bytes, need, op }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn name(&self) -> &'pool str {
        self.name
    }

    /// A sub-range; `offset` need not be aligned (kernels are tested on
    /// unaligned views too).
    pub fn sub(&self, offset: usize, bytes: usize) -> Result<DeviceView<'pool>, GpuError> {
        match offset.checked_add(bytes) {
            Some(end) if end <= self.bytes => Ok(DeviceView { ptr: self.ptr + offset as u64, bytes, ..*self }),
            _ => Err(self.too_small(offset.saturating_add(bytes), "sub-view")),
        }
    }

    /// Number of whole `T` elements that fit.
    pub fn len_of<T>(&self) -> usize {
        self.bytes / std::mem::size_of::<T>()
    }

    /// Fails unless the view holds at least `count` elements of `T` and is aligned for `T`.
    pub fn require<T>(&self, count: usize, op: &'static str) -> Result<(), GpuError> {
        let need = count.saturating_mul(std::mem::size_of::<T>());
        if need > self.bytes {
            return Err(self.too_small(need, op));
        }
        if self.ptr % std::mem::align_of::<T>() as u64 != 0 {
            return Err(GpuError::InvalidLaunch {
                kernel: op,
                reason: format!(
                    "buffer `{}` at {:#x} is not aligned for {}",
                    self.name,
                    self.ptr,
                    std::any::type_name::<T>()
                ),
            });
        }
        Ok(())
    }

    /// Copies `src` into the start of this view and waits for the copy.
    /// For set-up and tests; hot paths never copy frames from the host.
    pub fn upload_blocking<T: bytemuck::Pod>(&self, stream: &CudaStream, src: &[T]) -> Result<(), GpuError> {
        let bytes: &[u8] = bytemuck::cast_slice(src);
        if bytes.len() > self.bytes {
            return Err(self.too_small(bytes.len(), "upload"));
        }
        stream.context().bind_to_thread().check("cuCtxSetCurrent")?;
        // SAFETY: the destination range [ptr, ptr + len) lies inside this view
        // (checked above), which lies inside the live pool; `bytes` stays
        // borrowed until the stream is synchronised below.
        unsafe { cudarc::driver::result::memcpy_htod_async(self.ptr, bytes, stream.cu_stream()) }
            .check_with("cuMemcpyHtoDAsync", || format!("into `{}`", self.name))?;
        stream.synchronize().check("cuStreamSynchronize")
    }

    /// Copies the start of this view into `dst` after the stream's earlier work.
    pub fn download_blocking<T: bytemuck::Pod>(&self, stream: &CudaStream, dst: &mut [T]) -> Result<(), GpuError> {
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(dst);
        if bytes.len() > self.bytes {
            return Err(self.too_small(bytes.len(), "download"));
        }
        stream.context().bind_to_thread().check("cuCtxSetCurrent")?;
        // SAFETY: the source range lies inside this view (checked above); `bytes`
        // is exclusively borrowed until the stream is synchronised below.
        unsafe { cudarc::driver::result::memcpy_dtoh_async(bytes, self.ptr, stream.cu_stream()) }
            .check_with("cuMemcpyDtoHAsync", || format!("from `{}`", self.name))?;
        stream.synchronize().check("cuStreamSynchronize")
    }
}

/// Hands out the slots of one plan entry. `acquire` blocks while every slot
/// is in use (backpressure); a released slot is reused on the GPU only after
/// the work recorded at its release has finished.
pub struct SlotRing<'pool> {
    pool: &'pool VramPool,
    id: SlotsId,
    free_tx: SyncSender<usize>,
    free_rx: Mutex<Receiver<usize>>,
    events: Arc<Vec<CudaEvent>>,
}

impl<'pool> SlotRing<'pool> {
    pub fn capacity(&self) -> usize {
        self.events.len()
    }

    /// Takes a free slot, waiting on the host until one is released, and
    /// makes `stream` wait (on the GPU, not the host) for the slot's last use.
    pub fn acquire(&self, stream: &CudaStream) -> Result<Slot<'_, 'pool>, GpuError> {
        let index = self
            .free_rx
            .lock()
            .expect("slot queue lock poisoned")
            .recv()
            .expect("the ring owns a sender, so the channel cannot close");
        self.hand_out(index, stream)
    }

    /// Like `acquire`, but returns `None` instead of waiting.
    pub fn try_acquire(&self, stream: &CudaStream) -> Result<Option<Slot<'_, 'pool>>, GpuError> {
        let index = match self.free_rx.lock().expect("slot queue lock poisoned").try_recv() {
            Ok(i) => i,
            Err(_) => return Ok(None),
        };
        self.hand_out(index, stream).map(Some)
    }

    /// Orders `stream` after the slot's last recorded use, then hands it out.
    fn hand_out(&self, index: usize, stream: &CudaStream) -> Result<Slot<'_, 'pool>, GpuError> {
        if let Err(e) = stream.wait(&self.events[index]).check("cuStreamWaitEvent") {
            // Back into the queue, so a failed wait cannot leak the slot.
            let _ = self.free_tx.send(index);
            return Err(e);
        }
        Ok(Slot { ring: self, index: Some(index) })
    }
}

/// One slot in use. Give it back with [`Slot::release`] after enqueueing its
/// last use; dropping it without release returns it with no GPU ordering,
/// which is only right once the device is idle (error and shutdown paths).
pub struct Slot<'ring, 'pool> {
    ring: &'ring SlotRing<'pool>,
    index: Option<usize>,
}

impl<'pool> Slot<'_, 'pool> {
    pub fn index(&self) -> usize {
        self.index.expect("slot is held until release")
    }

    pub fn view(&self) -> DeviceView<'pool> {
        self.ring.pool.slot(self.ring.id, self.index())
    }

    /// Returns the slot; its next user waits for everything enqueued on
    /// `last_use` so far.
    pub fn release(mut self, last_use: &CudaStream) -> Result<(), GpuError> {
        let index = self.index.take().expect("slot is held until release");
        let recorded = self.ring.events[index].record(last_use).check("cuEventRecord");
        // The slot goes back even if recording failed, so the ring cannot leak slots.
        let _ = self.ring.free_tx.send(index);
        recorded
    }
}

impl Drop for Slot<'_, '_> {
    fn drop(&mut self) {
        if let Some(index) = self.index.take() {
            let _ = self.ring.free_tx.send(index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_aligns_every_buffer_and_slot_to_256() {
        let mut plan = PoolPlan::new();
        let a = plan.buffer("a", 1);
        let s = plan.slots("frames", 1000, 3);
        let b = plan.buffer("b", 257);
        let layout = plan.layout().unwrap();
        assert_eq!(layout.offsets[a.0], (0, 256));
        assert_eq!(layout.offsets[s.0], (256, 1024));
        assert_eq!(layout.offsets[b.0].0, 256 + 3 * 1024);
        assert_eq!(layout.total_bytes, 256 + 3 * 1024 + 512);
        for (start, stride) in &layout.offsets {
            assert_eq!(start % POOL_ALIGNMENT, 0);
            assert_eq!(stride % POOL_ALIGNMENT, 0);
        }
    }

    #[test]
    fn layout_honours_larger_alignment() {
        let mut plan = PoolPlan::new();
        plan.buffer("small", 10);
        let big = plan.buffer("big", 10);
        plan.align(big, 1 << 21);
        let layout = plan.layout().unwrap();
        assert_eq!(layout.offsets[big.0].0, 1 << 21);
    }

    #[test]
    fn layout_rejects_overflow_and_empty_entries() {
        let mut plan = PoolPlan::new();
        plan.slots("huge", usize::MAX / 2, 3);
        let err = plan.layout().unwrap_err().to_string();
        assert!(err.contains("`huge`") && err.contains("address space"), "{err}");

        let mut plan = PoolPlan::new();
        plan.buffer("nothing", 0);
        assert!(plan.layout().unwrap_err().to_string().contains("`nothing`"));
    }

    #[test]
    fn out_of_memory_message_names_needed_and_free() {
        let err = GpuError::OutOfMemory {
            device: "NVIDIA H100 80GB HBM3 (GPU 0)".into(),
            needed_gib: 3.25,
            pool_gib: 3.0,
            headroom_gib: 0.25,
            free_gib: 1.5,
        };
        let text = err.to_string();
        assert!(text.contains("needs 3.25 GiB"), "{text}");
        assert!(text.contains("1.50 GiB free"), "{text}");
    }
}

//! Grid shapes shared by the op launchers.

use cudarc::driver::LaunchConfig;

use super::context::Gpu;

/// Threads per block for element-wise and grid-stride kernels.
pub const ELEMENTWISE_BLOCK: u32 = 256;

/// A grid-stride launch over `work_items` independent items: enough blocks to
/// fill every SM several times over, and no more (each thread loops).
pub fn grid_stride(gpu: &Gpu, work_items: u64) -> LaunchConfig {
    let blocks_needed = work_items.div_ceil(ELEMENTWISE_BLOCK as u64).max(1);
    let resident = (gpu.properties().multiprocessors.max(1) as u64) * 8;
    LaunchConfig {
        grid_dim: (blocks_needed.min(resident) as u32, 1, 1),
        block_dim: (ELEMENTWISE_BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

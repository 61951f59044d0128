//! Video input and output: demux → [`Chunk`](chunk::Chunk) → NVDEC, and the NVENC probe.

pub mod nvdec;
pub mod nvenc;

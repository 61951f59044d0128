//! NVTX ranges for Nsight Systems. The `nvtx` crate compiles NVIDIA's
//! header-only NVTX v3: with no profiler attached each call is one indirect
//! call into a no-op, so ranges stay in release builds.

use std::ffi::CStr;

/// The stages of a vrseg run, each shown as its own range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Demux,
    Decode,
    Preprocess,
    Inference,
    Postprocess,
    Compose,
    Encode,
    Mux,
    PoolReserve,
    ModuleLoad,
    SelfTest,
}

impl Stage {
    pub fn label(self) -> &'static CStr {
        match self {
            Stage::Demux => c"demux",
            Stage::Decode => c"decode",
            Stage::Preprocess => c"preprocess",
            Stage::Inference => c"inference",
            Stage::Postprocess => c"postprocess",
            Stage::Compose => c"compose",
            Stage::Encode => c"encode",
            Stage::Mux => c"mux",
            Stage::PoolReserve => c"pool-reserve",
            Stage::ModuleLoad => c"module-load",
            Stage::SelfTest => c"selftest",
        }
    }
}

/// A range on the calling thread, closed when the guard drops. No allocation:
/// the label is a static C string.
#[must_use = "the range ends when this guard is dropped"]
pub fn range(stage: Stage) -> nvtx::LocalRange {
    nvtx::LocalRange::new(stage.label())
}

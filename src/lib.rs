//! vrseg: per-eye person mattes for stereoscopic VR video on NVIDIA GPUs.
//!
//! Modules depend downwards only (README.md, "Architecture"):
//! `info`/`selftest` (and later `pipeline`) → `engine` / `video` / `ops` →
//! `gpu` / `codec_sys`.

pub mod bench;
pub mod codec_sys;
pub mod engine;
pub mod gpu;
pub mod info;
pub mod ops;
pub mod pipeline;
pub mod selftest;
pub mod testing;
pub mod video;

//! Video input and output: demux → [`Chunk`](chunk::Chunk) → NVDEC, and the NVENC probe.
//!
//! - [`demux`] turns MP4/MOV, Matroska/WebM and raw Annex-B files into [`chunk::Chunk`]s in
//!   decode order, with [`chunk::StreamInfo`] describing the video track.
//! - [`layout`] decides whether a frame holds two eyes side by side, top/bottom, or one view.
//! - [`probe`] gathers the facts `vrseg probe` prints.
//! - [`parallel`] splits a file at keyframes and decodes it on several NVDEC sessions, frames
//!   still in presentation order.
//! - [`mux`] writes encoded packets and the source's audio into MP4 or Matroska.

pub mod chunk;
pub mod decode;
pub mod demux;
pub mod encode;
pub mod framemd5;
pub mod layout;
pub mod loop_clip;
pub mod mux;
pub mod nvdec;
pub mod nvenc;
pub mod packed_frame;
pub mod parallel;
pub mod probe;
pub mod y4m;

//! Inference engines: the native plan executor and the TensorRT backend
//! behind one `Backend` trait (both arrive with their issues). For now: finding
//! the TensorRT libraries, which `vrseg info` reports, and the CPU reference
//! executor that build-time graphs are checked against.

pub mod build;
pub mod native;
pub mod plan;
pub mod reference;
pub mod tensorrt_probe;

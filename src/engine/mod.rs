//! Inference engines: the native plan executor and the TensorRT backend
//! behind one `Backend` trait (both arrive with their issues). For now: finding
//! the TensorRT libraries, which `vrseg info` reports.

pub mod build;
pub mod plan;
pub mod tensorrt_probe;

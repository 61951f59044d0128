//! Inference engines: the native plan executor and the TensorRT backend
//! behind one [`backend::Backend`] trait. `tensorrt_probe` finds TensorRT's
//! libraries for `vrseg info`; `tensorrt` is the backend itself.

pub mod backend;
pub mod build;
pub mod tensorrt;
pub mod tensorrt_probe;

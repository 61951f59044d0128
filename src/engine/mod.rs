//! Inference engines: the native plan executor and the TensorRT backend
//! behind one [`backend::Backend`] trait. Built so far: `build` (ONNX → the
//! native engine's plan, build time only), `plan` (the plan file and its
//! loader), `reference` (the CPU reference executor that build-time graphs
//! are checked against), `tensorrt` (the TensorRT backend) and
//! `tensorrt_probe` (finding TensorRT's libraries for `vrseg info`). The
//! native engine's GPU executor is not built yet.

pub mod backend;
pub mod build;
pub mod plan;
pub mod reference;
pub mod tensorrt;
pub mod tensorrt_probe;

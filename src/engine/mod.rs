//! Inference engines: the native plan executor and the TensorRT backend.
//! `build` turns ONNX into the native engine's plan (build time only),
//! `plan` is the plan file and its loader, `native` runs a plan on the GPU
//! with vrseg's kernels, `reference` is the CPU executor build-time graphs
//! are checked against. `backend` is the trait the pipeline drives both
//! engines through (the native engine and the TensorRT backend implement
//! it), `tensorrt` the TensorRT backend, and `tensorrt_probe` finds
//! TensorRT's libraries for `vrseg info`.

pub mod backend;
pub mod build;
pub mod native;
pub mod plan;
pub mod reference;
pub mod tensorrt;
pub mod tensorrt_probe;

//! One launcher module per kernel family (`kernels/<family>.cu`). Each launcher
//! validates its arguments, chooses the grid, then enqueues; nothing here
//! synchronises. The CPU reference of each op sits beside its launcher.
//! (`convert` is the exception to one module per family: a public,
//! checked use of the native engine's `tensor_map` from `engine_ops.cu`.)

pub mod attention;
pub mod compose;
pub mod convert;
pub mod letterbox;
pub mod linear;
pub mod memory;
pub mod sam2;
pub mod yolo_seg;

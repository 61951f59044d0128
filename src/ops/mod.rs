//! One launcher module per kernel family (`kernels/<family>.cu`). Each launcher
//! validates its arguments, chooses the grid, then enqueues; nothing here
//! synchronises. The CPU reference of each op sits beside its launcher.

pub mod letterbox;
pub mod memory;
pub mod yolo_seg;

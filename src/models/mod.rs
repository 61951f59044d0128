//! Model contracts above the ops: what a model's stack computes, its weights
//! and its state, built from the kernels in `ops`.

pub mod sam2;

//! Placeholder so the demux worktree compiles; replaced by the GPU branch in the merge.

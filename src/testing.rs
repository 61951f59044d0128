//! Helpers shared by the test harnesses and benches (GPU selection lives in
//! `gpu::gpu_for_tests`).

use std::path::PathBuf;

/// The committed test clips: `$VRSEG_TEST_DATA/clips` when set (the GPU
/// bundle carries the data outside the source tree), else tests/data/clips.
pub fn clips_dir() -> PathBuf {
    match std::env::var_os("VRSEG_TEST_DATA") {
        Some(dir) => PathBuf::from(dir).join("clips"),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/clips"),
    }
}

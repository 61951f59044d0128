//! Helpers shared by the test harnesses and benches (GPU selection lives in
//! `gpu::gpu_for_tests`).

use std::path::PathBuf;

use crate::ops::yolo_seg::YoloSegShape;
use crate::selftest::SplitMix64;

/// The committed test clips: `$VRSEG_TEST_DATA/clips` when set (the GPU
/// bundle carries the data outside the source tree), else tests/data/clips.
pub fn clips_dir() -> PathBuf {
    match std::env::var_os("VRSEG_TEST_DATA") {
        Some(dir) => PathBuf::from(dir).join("clips"),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/clips"),
    }
}

/// The committed model fixtures (`$VRSEG_TEST_DATA/models`, else tests/data/models).
pub fn models_dir() -> PathBuf {
    match std::env::var_os("VRSEG_TEST_DATA") {
        Some(dir) => PathBuf::from(dir).join("models"),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/models"),
    }
}

/// Fills one image's YOLO-seg `output0` (`[4 + classes + coefficients,
/// anchors]`) with background: random boxes (centres in 0..640, 2..200 wide,
/// 2..300 high), every class score below `background`, mask coefficients in
/// [-1, 1). Callers then raise the anchors they want detected.
pub fn fill_background_head(rng: &mut SplitMix64, head: &mut [f32], shape: &YoloSegShape, background: f32) {
    let (a, nc, nm) = (shape.anchors, shape.classes, shape.coefficients);
    for anchor in 0..a {
        head[anchor] = rng.uniform_f32(0.0, 640.0);
        head[a + anchor] = rng.uniform_f32(0.0, 640.0);
        head[2 * a + anchor] = rng.uniform_f32(2.0, 200.0);
        head[3 * a + anchor] = rng.uniform_f32(2.0, 300.0);
        for c in 0..nc {
            head[(4 + c) * a + anchor] = rng.uniform_f32(0.0, background);
        }
        for c in 0..nm {
            head[(4 + nc + c) * a + anchor] = rng.uniform_f32(-1.0, 1.0);
        }
    }
}

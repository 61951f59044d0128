//! Shared by the fuzz targets: the demuxer reads files (lazily, by offset), so each input is
//! written to a per-process scratch file and demuxed to the end. Any panic is a bug; errors
//! are the expected outcome for most inputs.

use std::path::PathBuf;

pub fn demux_bytes(data: &[u8], extension: &str) {
    let path: PathBuf =
        std::env::temp_dir().join(format!("vrseg-fuzz-{}.{extension}", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    if let Ok(mut demuxer) = vrseg::video::demux::Demuxer::open(&path) {
        let _ = demuxer.keyframe_indices();
        while let Ok(Some(_chunk)) = demuxer.next_chunk() {}
    }
    let _ = vrseg::video::probe::probe(&path);
}

//! Device queries: properties, NVDEC capabilities, the NVENC probe.

use crate::gpu_or_skip;

#[test]
fn properties_are_plausible() {
    let gpu = gpu_or_skip!();
    let p = gpu.properties();
    assert!(!p.name.is_empty());
    assert!(p.compute_capability.0 >= 7, "{:?}", p.compute_capability);
    assert!(p.total_memory_bytes > 1 << 30);
    assert!(p.multiprocessors > 0);
    assert!(p.driver_cuda_version.0 >= 12);
    let (free, total) = gpu.memory_info().unwrap();
    assert!(free <= total && total == p.total_memory_bytes);
}

#[test]
fn nvdec_caps_table_is_complete_and_consistent() {
    let gpu = gpu_or_skip!();
    let table = vrseg::video::nvdec::standard_caps_table(&gpu).unwrap();
    let rows: Vec<(&str, u8)> = table.iter().map(|c| (c.codec, c.bit_depth)).collect();
    assert_eq!(rows, [("h264", 8), ("hevc", 8), ("hevc", 10), ("vp9", 8), ("vp9", 10), ("av1", 8), ("av1", 10)]);
    for c in &table {
        eprintln!("{c:?}");
        if c.supported {
            assert!(c.max_width >= c.min_width as u32 && c.min_width > 0, "{c:?}");
            assert!(c.max_height >= c.min_height as u32 && c.min_height > 0, "{c:?}");
            assert!(c.output_formats.contains(&if c.bit_depth == 8 { "nv12" } else { "p016" }), "{c:?}");
            assert!(c.engines >= 1, "{c:?}");
        }
    }
    // Every NVDEC since Maxwell decodes 8-bit H.264 and HEVC.
    assert!(table[0].supported && table[1].supported);
}

#[test]
fn nvenc_probe_gives_an_answer_with_a_reason() {
    let gpu = gpu_or_skip!();
    let probe = vrseg::video::nvenc::probe(&gpu);
    eprintln!("{probe:?}");
    if !probe.session_opens {
        let reason = probe.reason.expect("an unavailable NVENC says why");
        assert!(reason.len() > 10, "{reason}");
    }
}

#[test]
fn info_gathers_every_gpu() {
    gpu_or_skip!();
    let info = vrseg::info::gather(None).unwrap();
    assert_eq!(info.gpus.len(), vrseg::gpu::device_count().unwrap());
    let text = info.to_string();
    assert!(text.contains("NVDEC") && text.contains("NVENC") && text.contains("TensorRT"), "{text}");
    let json = serde_json::to_value(&info).unwrap();
    assert!(json["gpus"][0]["nvdec"]["caps"].is_array());
}

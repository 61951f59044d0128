//! NVDEC against ffmpeg's software decode: for every committed clip with a
//! golden `framemd5/CLIP.framemd5` (made by tools/make-clips.sh from ffmpeg's
//! software decode, packed as NV12 / P010), every decoded frame's packed NV12/P010 bytes
//! must hash the same (bit-exact), in the same order, with the demuxer's pts.

use std::path::PathBuf;

use md5::{Digest, Md5};
use vrseg::gpu::device_allocation_count;
use vrseg::video::decode::{decode_file, DecodeError, HostCopy};
use vrseg::video::demux::Demuxer;
use vrseg::video::framemd5::parse_framemd5;

use crate::gpu_or_skip;

use vrseg::testing::clips_dir;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn nvdec_matches_ffmpeg_bit_exactly_on_every_golden_clip() {
    let gpu = gpu_or_skip!();
    let mut goldens: Vec<PathBuf> = std::fs::read_dir(clips_dir().join("framemd5"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "framemd5"))
        .collect();
    goldens.sort();
    assert!(goldens.len() >= 8, "too few golden clips: {goldens:?}");
    // Every clip is checked before the verdict, so one run shows all mismatches.
    let mut mismatches = Vec::new();
    for golden_path in &goldens {
        let clip = clips_dir().join(golden_path.file_stem().unwrap());
        let name = clip.file_name().unwrap().to_string_lossy().into_owned();
        let golden = parse_framemd5(&std::fs::read_to_string(golden_path).unwrap()).unwrap();
        let mut hashes = Vec::new();
        let mut pts = Vec::new();
        let summary = match decode_file(&gpu, &clip, HostCopy::Packed, &mut |_, frame| {
            hashes.push(hex(&Md5::digest(frame.packed.expect("packed copy requested"))));
            pts.push(frame.pts);
            Ok(())
        }) {
            Ok(summary) => summary,
            Err(e) => {
                mismatches.push(format!("{name}: {e}"));
                continue;
            }
        };
        if hashes.len() != golden.len() {
            mismatches.push(format!("{name}: {} frames, ffmpeg {}", hashes.len(), golden.len()));
        }
        let differing: Vec<usize> =
            hashes.iter().zip(&golden).enumerate().filter(|(_, (a, b))| **a != b.md5).map(|(i, _)| i).collect();
        if !differing.is_empty() {
            mismatches.push(format!("{name}: frames {differing:?} differ from ffmpeg's decode"));
        }
        let mut expected_pts = Demuxer::open(&clip).unwrap().pts_list();
        expected_pts.sort_unstable();
        if pts != expected_pts {
            mismatches.push(format!("{name}: pts {pts:?}, expected {expected_pts:?}"));
        }
        if !(summary.failed.is_empty() && summary.concealed.is_empty()) {
            mismatches.push(format!("{name}: {summary:?}"));
        }
        eprintln!(
            "{name}: {} frames, {} bit-exact ({}x{}, {}-byte samples)",
            summary.frames,
            hashes.len() - differing.len(),
            summary.layout.width,
            summary.layout.height,
            summary.layout.bytes_per_sample
        );
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} clips differ:\n{}",
        mismatches.len(),
        goldens.len(),
        mismatches.join("\n")
    );
}

#[test]
fn decoding_makes_one_pool_allocation_and_none_per_frame() {
    let gpu = gpu_or_skip!();
    let clip = clips_dir().join("h264_bframes_moov_end.mp4");
    let before = device_allocation_count();
    let mut frames = 0;
    decode_file(&gpu, &clip, HostCopy::None, &mut |_, _| {
        frames += 1;
        Ok(())
    })
    .unwrap();
    assert!(frames > 2);
    assert_eq!(device_allocation_count(), before + 1, "{frames} frames");
}

#[test]
fn an_undecodable_codec_stops_with_a_sentence_before_decoding() {
    let gpu = gpu_or_skip!();
    let av1 = vrseg::video::nvdec::query_caps(
        &gpu,
        "av1",
        vrseg::video::nvdec::decoder::nvdec_codec(vrseg::video::chunk::VideoCodec::Av1),
        8,
    )
    .unwrap();
    if av1.supported {
        eprintln!("this GPU decodes AV1; the unsupported-codec path is not reachable here");
        return;
    }
    let before = device_allocation_count();
    let err = decode_file(&gpu, &clips_dir().join("av1.mp4"), HostCopy::None, &mut |_, _| Ok(())).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, DecodeError::Nvdec(_)), "{text}");
    assert!(text.contains("av1.mp4") && text.contains("cannot decode AV1") && text.contains("transcode"), "{text}");
    assert_eq!(device_allocation_count(), before, "nothing is reserved for a stream that cannot decode");
}

#[test]
fn a_corrupt_bitstream_decodes_what_it_can_and_reports() {
    let gpu = gpu_or_skip!();
    let source = std::fs::read(clips_dir().join("hevc_raw.hevc")).unwrap();
    // Overwrite slice data in the middle of the stream with 0xFF bytes: they
    // cannot form a start code, so the access units stay where they were and
    // only the picture data is damaged.
    let mut start = source.len() * 3 / 5;
    while source[start - 4..start + 68].windows(3).any(|w| w == [0, 0, 1]) {
        start += 7;
    }
    let mut damaged = source.clone();
    damaged[start..start + 64].fill(0xff);
    let path = std::env::temp_dir().join(format!("vrseg-corrupt-{}.hevc", std::process::id()));
    std::fs::write(&path, &damaged).unwrap();
    let mut frames = 0u64;
    let result = decode_file(&gpu, &path, HostCopy::None, &mut |_, _| {
        frames += 1;
        Ok(())
    });
    std::fs::remove_file(&path).unwrap();
    match result {
        Ok(summary) => {
            eprintln!(
                "decoded {} frames; concealed {:?}, failed {:?}",
                summary.frames, summary.concealed, summary.failed
            );
            assert_eq!(summary.frames, frames);
        }
        Err(e) => {
            let text = e.to_string();
            eprintln!("{text} (after {frames} frames)");
            assert!(text.contains("vrseg-corrupt-"), "the error names the file: {text}");
        }
    }
}

//! Demux tests: every fixture in tests/data/clips against the golden ffprobe facts beside it,
//! probe reports, bad inputs, truncations, NAL conversion and SPS parsing.
//!
//! Fixtures and goldens come from `tools/make-clips.sh tests/data/clips`; no ffmpeg is needed
//! to run these tests.

use std::path::{Path, PathBuf};

use vrseg::video::chunk::{Chunk, VideoCodec};
use vrseg::video::demux::{DemuxError, Demuxer};

use vrseg::testing::clips_dir;

fn clip(name: &str) -> PathBuf {
    clips_dir().join(name)
}

/// A scratch directory for generated bad inputs.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("demux-tests");
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir.join(name)
}

fn all_chunks(path: &Path) -> Vec<Chunk> {
    let mut d = Demuxer::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut chunks = Vec::new();
    while let Some(c) = d.next_chunk().unwrap_or_else(|e| panic!("{}: {e}", path.display())) {
        chunks.push(c);
    }
    chunks
}

/// Fixtures with goldens (every video clip).
fn video_clips() -> Vec<PathBuf> {
    let mut clips: Vec<PathBuf> = std::fs::read_dir(clips_dir())
        .expect("tests/data/clips exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e != "json" && e != "m4a"))
        .collect();
    clips.sort();
    assert!(clips.len() >= 20, "expected the committed fixtures, found {}", clips.len());
    clips
}

mod golden {
    use super::*;
    use serde_json::Value;

    /// (pts, dts, duration, keyframe); ffprobe's "N/A" is None.
    type Packet = (Option<i64>, Option<i64>, Option<i64>, bool);

    struct Golden {
        codec: String,
        profile: Option<String>,
        width: u32,
        height: u32,
        bit_depth: u8,
        tb_num: i64,
        tb_den: i64,
        /// [pts, dts, duration, keyframe] per packet in decode order.
        packets: Vec<Packet>,
    }

    fn load(path: &Path) -> Golden {
        let mut json_path = path.as_os_str().to_owned();
        json_path.push(".json");
        let text = std::fs::read_to_string(&json_path).expect("golden json");
        let v: Value = serde_json::from_str(&text).expect("golden parses");
        let tb = v["time_base"].as_str().expect("time_base");
        let (num, den) = tb.split_once('/').expect("a/b");
        Golden {
            codec: v["codec"].as_str().expect("codec").to_string(),
            profile: v["profile"].as_str().map(str::to_string),
            width: v["width"].as_u64().expect("width") as u32,
            height: v["height"].as_u64().expect("height") as u32,
            bit_depth: v["bit_depth"].as_u64().expect("bit_depth") as u8,
            tb_num: num.parse().expect("num"),
            tb_den: den.parse().expect("den"),
            packets: v["packets"]
                .as_array()
                .expect("packets")
                .iter()
                .map(|p| (p[0].as_i64(), p[1].as_i64(), p[2].as_i64(), p[3].as_bool().expect("key")))
                .collect(),
        }
    }

    #[test]
    fn every_clip_matches_ffprobe() {
        let mut failures = Vec::new();
        for path in video_clips() {
            if let Err(msg) = check_clip(&path) {
                failures.push(format!("{}: {msg}", path.file_name().unwrap_or_default().to_string_lossy()));
            }
        }
        assert!(failures.is_empty(), "{} clips disagree with ffprobe:\n{}", failures.len(), failures.join("\n"));
    }

    fn check_clip(path: &Path) -> Result<(), String> {
        let g = load(path);
        let demuxer = Demuxer::open(path).map_err(|e| e.to_string())?;
        let info = demuxer.info().clone();
        let container = demuxer.container();
        drop(demuxer);
        let chunks = all_chunks(path);
        let codec = info.codec.name();
        if codec != g.codec {
            return Err(format!("codec {codec} != {}", g.codec));
        }
        if (info.width, info.height) != (g.width, g.height) {
            return Err(format!("size {}x{} != {}x{}", info.width, info.height, g.width, g.height));
        }
        if info.bit_depth != g.bit_depth {
            return Err(format!("bit depth {} != {}", info.bit_depth, g.bit_depth));
        }
        if g.profile.is_some() && info.profile != g.profile {
            return Err(format!("profile {:?} != {:?}", info.profile, g.profile));
        }
        if chunks.len() != g.packets.len() || info.frame_count != g.packets.len() as u64 {
            return Err(format!(
                "{} chunks (info says {}) != {} packets",
                chunks.len(),
                info.frame_count,
                g.packets.len()
            ));
        }
        let keys: Vec<bool> = chunks.iter().map(|c| c.is_keyframe).collect();
        let golden_keys: Vec<bool> = g.packets.iter().map(|p| p.3).collect();
        if keys != golden_keys {
            return Err(format!("keyframes {keys:?} != {golden_keys:?}"));
        }
        // Invariants.
        for (i, c) in chunks.iter().enumerate() {
            if c.index != i as u64 {
                return Err(format!("chunk {i} has index {}", c.index));
            }
            if c.dts > c.pts {
                return Err(format!("chunk {i}: dts {} > pts {}", c.dts, c.pts));
            }
            if i > 0 && c.dts < chunks[i - 1].dts {
                return Err(format!("chunk {i}: dts goes backwards"));
            }
            if c.data.is_empty() {
                return Err(format!("chunk {i} is empty"));
            }
            if matches!(info.codec, VideoCodec::H264 | VideoCodec::Hevc)
                && !c.data.starts_with(&[0, 0, 0, 1])
                && !c.data.starts_with(&[0, 0, 1])
            {
                return Err(format!("chunk {i} is not Annex-B"));
            }
        }
        let timescale = i64::from(info.timescale);
        let same_timebase = g.tb_num == 1 && g.tb_den == timescale;
        match container.name() {
            "mp4" => {
                if !same_timebase {
                    return Err(format!("timescale {timescale} != time base {}/{}", g.tb_num, g.tb_den));
                }
                let ours: Vec<(i64, i64, i64)> = chunks.iter().map(|c| (c.pts, c.dts, c.duration)).collect();
                let theirs: Vec<(i64, i64, i64)> = g
                    .packets
                    .iter()
                    .map(|p| (p.0.unwrap_or(i64::MIN), p.1.unwrap_or(i64::MIN), p.2.unwrap_or(i64::MIN)))
                    .collect();
                // The st3d clip is remuxed from Matroska (millisecond timestamps): its stts
                // durations are uneven and ffprobe reports the average instead; pts/dts agree.
                let remuxed = path.file_name().is_some_and(|n| n == "stereo_meta_st3d.mp4");
                let strip = |v: Vec<(i64, i64, i64)>| {
                    if remuxed {
                        v.into_iter().map(|(p, d, _)| (p, d, 0)).collect()
                    } else {
                        v
                    }
                };
                let (ours, theirs) = (strip(ours), strip(theirs));
                if ours != theirs {
                    return Err(format!("(pts, dts, duration)\n ours   {ours:?}\n ffprobe {theirs:?}"));
                }
            }
            "matroska" => {
                if !same_timebase {
                    return Err(format!("timescale {timescale} != time base {}/{}", g.tb_num, g.tb_den));
                }
                // Matroska stores pts only; ffprobe's dts come from its parser, so compare pts.
                let ours: Vec<i64> = chunks.iter().map(|c| c.pts).collect();
                let theirs: Vec<i64> = g.packets.iter().map(|p| p.0.unwrap_or(i64::MIN)).collect();
                if ours != theirs {
                    return Err(format!("pts\n ours    {ours:?}\n ffprobe {theirs:?}"));
                }
                let durations: Vec<i64> = chunks.iter().map(|c| c.duration).collect();
                let golden_durations: Vec<i64> = g.packets.iter().map(|p| p.2.unwrap_or(0)).collect();
                if durations != golden_durations {
                    return Err(format!("durations {durations:?} != {golden_durations:?}"));
                }
            }
            _ => {
                // Raw streams: ffprobe has no pts; compare frame duration in seconds exactly.
                for (c, p) in chunks.iter().zip(&g.packets) {
                    let d = p.2.ok_or("golden packet without duration")?;
                    if c.duration * g.tb_den != d * g.tb_num * timescale {
                        return Err(format!(
                            "duration {}/{timescale} s != {d}*{}/{} s",
                            c.duration, g.tb_num, g.tb_den
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    #[test]
    fn first_keyframe_of_bframe_mp4_has_pts_zero_and_negative_dts() {
        let chunks = all_chunks(&clip("h264_bframes_moov_end.mp4"));
        assert_eq!((chunks[0].pts, chunks[0].dts), (0, -1024));
        // Presentation order covers 0..12 frames of 512 ticks exactly once.
        let mut pts: Vec<i64> = chunks.iter().map(|c| c.pts).collect();
        pts.sort_unstable();
        assert_eq!(pts, (0..12).map(|i| i * 512).collect::<Vec<_>>());
    }

    #[test]
    fn moov_at_start_and_end_give_identical_chunks() {
        let a = all_chunks(&clip("h264_bframes_moov_end.mp4"));
        let b = all_chunks(&clip("h264_faststart.mp4"));
        assert_eq!(a, b);
    }

    #[test]
    fn negative_cts_offsets_match_the_plain_file() {
        let a = all_chunks(&clip("h264_bframes_moov_end.mp4"));
        let b = all_chunks(&clip("h264_negcts.mp4"));
        let ts = |v: &[Chunk]| v.iter().map(|c| (c.pts, c.dts)).collect::<Vec<_>>();
        assert_eq!(ts(&a), ts(&b));
    }

    #[test]
    fn hvc1_keyframes_get_parameter_sets_and_hev1_keeps_its_own() {
        for name in ["hevc_hvc1.mp4", "hevc_hev1.mp4", "h264_faststart.mp4", "h264.mkv", "hevc.mkv"] {
            let chunks = all_chunks(&clip(name));
            let codec = if name.starts_with("hevc") { VideoCodec::Hevc } else { VideoCodec::H264 };
            for c in chunks.iter().filter(|c| c.is_keyframe) {
                let types: Vec<u8> = vrseg::video::demux::nal::AnnexBNals::new(&c.data)
                    .filter_map(|n| vrseg::video::demux::nal::nal_type(codec, n))
                    .collect();
                let sps = if codec == VideoCodec::Hevc { 33 } else { 7 };
                assert_eq!(
                    types.iter().filter(|&&t| t == sps).count(),
                    1,
                    "{name} chunk {}: NAL types {types:?}",
                    c.index
                );
            }
        }
    }

    #[test]
    fn keyframe_index_and_seek() {
        let mut d = Demuxer::open(clip("h264_frag.mp4")).expect("open");
        assert_eq!(d.keyframe_indices(), vec![0, 6]);
        let at = d.seek_to_keyframe_before(5000);
        assert_eq!(at, 6);
        let c = d.next_chunk().expect("read").expect("a chunk");
        assert!(c.is_keyframe);
        assert_eq!(c.index, 6);
        assert_eq!(d.seek_to_keyframe_before(-10), 0);
    }

    #[test]
    fn a_clone_reads_the_same_samples_from_its_own_position() {
        let mut d = Demuxer::open(clip("hevc_opengop.mp4")).expect("open");
        let keyframes = d.keyframe_indices();
        assert!(keyframes.len() >= 6, "{keyframes:?}");
        let mut other = d.try_clone().expect("clone");
        // Move the original first: the clone's position is its own.
        d.seek_to_index(keyframes[3]);
        let from_original = d.next_chunk().expect("read").expect("a chunk");
        let first = other.next_chunk().expect("read").expect("a chunk");
        assert_eq!(first.index, 0);
        other.seek_to_index(keyframes[3]);
        let from_clone = other.next_chunk().expect("read").expect("a chunk");
        assert_eq!(from_clone, from_original);
        assert!(from_clone.is_keyframe);
        assert_eq!(other.pts_list(), d.pts_list());
        // Past the end: nothing, not an error.
        other.seek_to_index(u64::MAX);
        assert!(other.next_chunk().expect("read").is_none());
    }

    #[test]
    fn raw_streams_use_vui_timing() {
        let d = Demuxer::open(clip("h264_raw.h264")).expect("open");
        assert!((d.info().fps - 30.0).abs() < 1e-9, "fps {}", d.info().fps);
        let d = Demuxer::open(clip("hevc_raw.hevc")).expect("open");
        assert!((d.info().fps - 30.0).abs() < 1e-9, "fps {}", d.info().fps);
    }

    #[test]
    fn raw_annexb_bytes_are_the_file_bytes() {
        let path = clip("h264_raw.h264");
        let whole = std::fs::read(&path).expect("read");
        let joined: Vec<u8> = all_chunks(&path).into_iter().flat_map(|c| c.data).collect();
        assert_eq!(joined, whole);
    }
}

mod probe_report {
    use super::*;
    use vrseg::video::probe::probe;

    #[test]
    fn json_has_the_documented_keys_and_values() {
        let report = probe(&clip("h264_aac.mp4")).expect("probe");
        let v = serde_json::to_value(&report).expect("serialise");
        let obj = v.as_object().expect("one JSON object");
        for key in [
            "path",
            "container",
            "codec",
            "profile",
            "bit_depth",
            "width",
            "height",
            "frames",
            "fps",
            "duration_s",
            "layout",
            "layout_source",
            "audio",
        ] {
            assert!(obj.contains_key(key), "missing key {key}: {v}");
        }
        assert_eq!(v["container"], "mp4");
        assert_eq!(v["codec"], "h264");
        assert_eq!(v["profile"], "High");
        assert_eq!(v["bit_depth"], 8);
        assert_eq!(v["width"], 256);
        assert_eq!(v["height"], 128);
        assert_eq!(v["frames"], 12);
        assert_eq!(v["fps"], 30.0);
        assert_eq!(v["layout"], "sbs");
        assert_eq!(v["layout_source"], "aspect");
        assert_eq!(v["audio"], serde_json::json!([{"codec": "aac", "channels": 2, "sample_rate": 48000}]));
        let text = report.to_string();
        assert!(text.contains("h264 (High), 8-bit, 256x128"), "{text}");
        assert!(text.contains("aac, 2 ch, 48000 Hz"), "{text}");
    }

    #[test]
    fn containers_and_codecs_are_named() {
        let cases = [
            ("vp9_opus.webm", "matroska", "vp9"),
            ("av1.mkv", "matroska", "av1"),
            ("av1.mp4", "mp4", "av1"),
            ("hevc_raw.hevc", "annexb", "hevc"),
            ("h264_raw.h264", "annexb", "h264"),
            ("h264.mov", "mp4", "h264"),
        ];
        for (name, container, codec) in cases {
            let v = serde_json::to_value(probe(&clip(name)).expect("probe")).expect("json");
            assert_eq!((v["container"].as_str(), v["codec"].as_str()), (Some(container), Some(codec)), "{name}");
        }
        let v = serde_json::to_value(probe(&clip("vp9_opus.webm")).expect("probe")).expect("json");
        assert_eq!(v["audio"], serde_json::json!([{"codec": "opus", "channels": 1, "sample_rate": 48000}]));
        let v = serde_json::to_value(probe(&clip("h264_raw.h264")).expect("probe")).expect("json");
        assert_eq!(v["audio"], serde_json::json!([]));
    }

    #[test]
    fn layout_from_metadata_filename_and_aspect() {
        // 2:1 frame, StereoMode says top-bottom: metadata wins.
        let r = probe(&clip("stereo_meta.mkv")).expect("probe");
        assert_eq!((r.layout.name(), r.layout_source.name()), ("tb", "metadata"));
        let r = probe(&clip("stereo_meta_st3d.mp4")).expect("probe");
        assert_eq!((r.layout.name(), r.layout_source.name()), ("sbs", "metadata"));
        // 1918x1078 is not 2:1; the _3dh token decides.
        let r = probe(&clip("h264_1918x1078_3dh.mp4")).expect("probe");
        assert_eq!((r.layout.name(), r.layout_source.name()), ("sbs", "filename"));
        let r = probe(&clip("hevc_10bit_318x158.mp4")).expect("probe");
        assert_eq!((r.layout.name(), r.layout_source.name()), ("mono", "aspect"));
    }
}

mod bad_inputs {
    use super::*;

    fn write(name: &str, bytes: &[u8]) -> PathBuf {
        let p = scratch(name);
        std::fs::write(&p, bytes).expect("write scratch file");
        p
    }

    fn message_names_file(e: &DemuxError, path: &Path) {
        let msg = e.to_string();
        assert!(msg.contains(&path.display().to_string()), "message does not name the file: {msg}");
        assert_eq!(e.path(), path);
        assert!(!msg.contains('\n'), "one sentence: {msg}");
    }

    #[test]
    fn empty_file() {
        let p = write("empty.mp4", &[]);
        let e = Demuxer::open(&p).expect_err("empty");
        assert!(matches!(e, DemuxError::Empty { .. }), "{e:?}");
        message_names_file(&e, &p);
    }

    #[test]
    fn text_file_named_mkv() {
        let p = write("notes.mkv", b"These are not the frames you are looking for.\n");
        let e = Demuxer::open(&p).expect_err("text");
        assert!(matches!(e, DemuxError::UnknownContainer { .. }), "{e:?}");
        message_names_file(&e, &p);
    }

    #[test]
    fn random_bytes() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for ext in ["mp4", "mkv", "h264", "bin"] {
            let bytes: Vec<u8> = (0..4096).map(|_| rng.random()).collect();
            let p = write(&format!("random.{ext}"), &bytes);
            let e = Demuxer::open(&p).expect_err("random");
            assert!(matches!(e, DemuxError::UnknownContainer { .. }), "{ext}: {e:?}");
            message_names_file(&e, &p);
        }
    }

    #[test]
    fn missing_file_is_io_error_with_path() {
        let p = scratch("does-not-exist.mp4");
        let e = Demuxer::open(&p).expect_err("missing");
        assert!(matches!(e, DemuxError::Io { .. }), "{e:?}");
        message_names_file(&e, &p);
    }

    #[test]
    fn audio_only() {
        let p = clip("audio_only.m4a");
        let e = Demuxer::open(&p).expect_err("audio only");
        assert!(matches!(e, DemuxError::NoVideoTrack { .. }), "{e:?}");
        message_names_file(&e, &p);
    }

    #[test]
    fn cut_before_moov() {
        // moov is at the end: keep everything up to it.
        let bytes = std::fs::read(clip("h264_bframes_moov_end.mp4")).expect("read");
        let moov = find(&bytes, b"moov").expect("has moov") - 4;
        let p = write("cut_before_moov.mp4", &bytes[..moov]);
        let e = Demuxer::open(&p).expect_err("no moov");
        assert!(matches!(e, DemuxError::Corrupt { ref element, .. } if element == "moov"), "{e:?}");
        message_names_file(&e, &p);
    }

    #[test]
    fn cut_inside_mdat() {
        let bytes = std::fs::read(clip("h264_faststart.mp4")).expect("read");
        let p = write("cut_in_mdat.mp4", &bytes[..bytes.len() - 1000]);
        let e = Demuxer::open(&p).expect_err("truncated");
        assert!(matches!(e, DemuxError::Truncated { .. }), "{e:?}");
        message_names_file(&e, &p);
        assert!(e.to_string().contains("truncated"), "{e}");
    }

    #[test]
    fn cut_inside_a_sample_names_the_sample() {
        // A sized Segment/Cluster cut in half: the declared size runs past the end.
        let bytes = std::fs::read(clip("h264.mkv")).expect("read");
        let p = write("cut.mkv", &bytes[..bytes.len() / 2]);
        let e = Demuxer::open(&p).expect_err("truncated");
        assert!(matches!(e, DemuxError::Truncated { .. }), "{e:?}");
        // Unknown-size clusters: the cut is only visible in the last block.
        let bytes = std::fs::read(clip("h264_unknown_size.mkv")).expect("read");
        let p = write("cut_unknown.mkv", &bytes[..bytes.len() - 3]);
        assert!(
            bytes.windows(6).any(|w| w == [0x1f, 0x43, 0xb6, 0x75, 0x7f, 0xff]),
            "fixture has unknown-size clusters"
        );
        let e = Demuxer::open(&p).expect_err("truncated");
        assert!(matches!(e, DemuxError::Truncated { ref what, .. } if what.contains("sample")), "{e:?}");
    }

    #[test]
    fn corrupt_stsz_count() {
        let mut bytes = std::fs::read(clip("h264_faststart.mp4")).expect("read");
        let stsz = find(&bytes, b"stsz").expect("has stsz");
        // stsz: type, version/flags, sample_size, sample_count.
        bytes[stsz + 12..stsz + 16].copy_from_slice(&0xFFFF_FFF0u32.to_be_bytes());
        let p = write("corrupt_stsz.mp4", &bytes);
        let e = Demuxer::open(&p).expect_err("corrupt");
        assert!(matches!(e, DemuxError::Corrupt { ref element, .. } if element == "stsz"), "{e:?}");
        message_names_file(&e, &p);
        // A smaller count disagrees with stts.
        bytes[stsz + 12..stsz + 16].copy_from_slice(&5u32.to_be_bytes());
        let p = write("corrupt_stsz_small.mp4", &bytes);
        let e = Demuxer::open(&p).expect_err("corrupt");
        assert!(matches!(e, DemuxError::Corrupt { .. }), "{e:?}");
    }

    #[test]
    fn box_sizes_zero_one_and_huge() {
        let bytes = std::fs::read(clip("h264_faststart.mp4")).expect("read");
        let moov = find(&bytes, b"moov").expect("moov") - 4;
        for size in [0u32, 1, 7, 0xFFFF_FFFF] {
            let mut b = bytes.clone();
            b[moov..moov + 4].copy_from_slice(&size.to_be_bytes());
            let p = write(&format!("moov_size_{size}.mp4"), &b);
            let _ = Demuxer::open(&p); // must return, not panic or hang
        }
        let mut b = bytes.clone();
        let trak = find(&bytes, b"trak").expect("trak") - 4;
        b[trak..trak + 4].copy_from_slice(&0u32.to_be_bytes());
        let _ = Demuxer::open(write("trak_size_0.mp4", &b));
    }

    #[test]
    fn unsupported_codec_is_named() {
        let mut bytes = std::fs::read(clip("h264_faststart.mp4")).expect("read");
        let stsd = find(&bytes, b"stsd").expect("stsd");
        let avc1 = stsd + find(&bytes[stsd..], b"avc1").expect("avc1 sample entry");
        bytes[avc1..avc1 + 4].copy_from_slice(b"mp4v");
        let p = write("mpeg4.mp4", &bytes);
        let e = Demuxer::open(&p).expect_err("unsupported");
        assert!(matches!(e, DemuxError::UnsupportedCodec { ref codec, .. } if codec.contains("mp4v")), "{e:?}");
        message_names_file(&e, &p);
    }

    pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
        hay.windows(needle.len()).position(|w| w == needle)
    }
}

mod truncations {
    use super::*;

    /// Every prefix of every fixture (at a stride) opens to an error or a demuxer whose chunks
    /// all read back: never a panic.
    #[test]
    fn prefixes_never_panic() {
        let mut opened = 0usize;
        let mut failed = 0usize;
        for path in video_clips() {
            let bytes = std::fs::read(&path).expect("read");
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("bin");
            let stride = (bytes.len() / 150).max(1);
            let p = scratch(&format!("prefix.{ext}"));
            let mut len = 0;
            while len < bytes.len() {
                std::fs::write(&p, &bytes[..len]).expect("write");
                match Demuxer::open(&p) {
                    Ok(mut d) => {
                        opened += 1;
                        while let Ok(Some(_)) = d.next_chunk() {}
                    }
                    Err(e) => {
                        failed += 1;
                        assert!(e.to_string().contains(&p.display().to_string()));
                    }
                }
                len += stride;
            }
        }
        assert!(failed > 0 && opened + failed > 1000, "opened {opened}, failed {failed}");
    }

    /// Single-byte corruptions of the header region never panic or hang.
    #[test]
    fn byte_flips_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for path in video_clips() {
            let bytes = std::fs::read(&path).expect("read");
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("bin");
            let p = scratch(&format!("flip.{ext}"));
            for _ in 0..40 {
                let mut b = bytes.clone();
                for _ in 0..4 {
                    let i = rng.random_range(0..b.len());
                    b[i] = rng.random();
                }
                std::fs::write(&p, &b).expect("write");
                if let Ok(mut d) = Demuxer::open(&p) {
                    while let Ok(Some(_)) = d.next_chunk() {}
                }
            }
        }
    }
}

mod nal_units {
    use vrseg::video::chunk::VideoCodec;
    use vrseg::video::demux::nal::{
        length_prefixed_to_annexb, parse_avcc, parse_hvcc, split_length_prefixed, NalConfig,
    };

    const SPS: [u8; 4] = [0x67, 0x64, 0x00, 0x1f];
    const PPS: [u8; 3] = [0x68, 0xee, 0x3c];

    fn avcc(length_size: u8) -> Vec<u8> {
        let mut v = vec![1, 0x64, 0, 0x1f, 0xfc | (length_size - 1), 0xe1];
        v.extend_from_slice(&(SPS.len() as u16).to_be_bytes());
        v.extend_from_slice(&SPS);
        v.push(1);
        v.extend_from_slice(&(PPS.len() as u16).to_be_bytes());
        v.extend_from_slice(&PPS);
        v
    }

    #[test]
    fn avcc_four_byte_lengths_and_parameter_set_insertion() {
        let config = parse_avcc(&avcc(4)).expect("avcC");
        assert_eq!(config.length_size, 4);
        assert_eq!(config.parameter_sets, vec![SPS.to_vec(), PPS.to_vec()]);
        let sample = [0, 0, 0, 3, 0x65, 0xaa, 0xbb, 0, 0, 0, 2, 0x65, 0xcc];
        let key = length_prefixed_to_annexb(&sample, &config, true).expect("convert");
        let mut want = vec![0, 0, 0, 1];
        want.extend_from_slice(&SPS);
        want.extend_from_slice(&[0, 0, 0, 1]);
        want.extend_from_slice(&PPS);
        want.extend_from_slice(&[0, 0, 0, 1, 0x65, 0xaa, 0xbb, 0, 0, 0, 1, 0x65, 0xcc]);
        assert_eq!(key, want);
        let inter = length_prefixed_to_annexb(&sample, &config, false).expect("convert");
        assert_eq!(inter, vec![0, 0, 0, 1, 0x65, 0xaa, 0xbb, 0, 0, 0, 1, 0x65, 0xcc]);
    }

    #[test]
    fn avcc_two_byte_lengths() {
        let config = parse_avcc(&avcc(2)).expect("avcC");
        assert_eq!(config.length_size, 2);
        let sample = [0, 2, 0x41, 0x9a, 0, 1, 0x41];
        assert_eq!(split_length_prefixed(&sample, 2).expect("split"), vec![&[0x41, 0x9a][..], &[0x41][..]]);
        let out = length_prefixed_to_annexb(&sample, &config, false).expect("convert");
        assert_eq!(out, vec![0, 0, 0, 1, 0x41, 0x9a, 0, 0, 0, 1, 0x41]);
    }

    #[test]
    fn length_size_three_is_rejected() {
        assert!(parse_avcc(&avcc(3)).is_err());
    }

    #[test]
    fn parameter_sets_go_after_a_leading_aud_and_not_twice() {
        let config =
            NalConfig { codec: VideoCodec::H264, length_size: 4, parameter_sets: vec![SPS.to_vec(), PPS.to_vec()] };
        let sample = [0, 0, 0, 2, 0x09, 0xf0, 0, 0, 0, 1, 0x65];
        let out = length_prefixed_to_annexb(&sample, &config, true).expect("convert");
        let mut want = vec![0, 0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1];
        want.extend_from_slice(&SPS);
        want.extend_from_slice(&[0, 0, 0, 1]);
        want.extend_from_slice(&PPS);
        want.extend_from_slice(&[0, 0, 0, 1, 0x65]);
        assert_eq!(out, want);
        // A keyframe that carries its own SPS gets nothing inserted.
        let mut own = vec![0, 0, 0, 4];
        own.extend_from_slice(&SPS);
        own.extend_from_slice(&[0, 0, 0, 1, 0x65]);
        let out = length_prefixed_to_annexb(&own, &config, true).expect("convert");
        assert_eq!(out.iter().filter(|&&b| b == 0x67).count(), 1);
    }

    #[test]
    fn nal_length_past_the_sample_is_an_error() {
        assert!(split_length_prefixed(&[0, 0, 0, 9, 0x65], 4).is_err());
        assert!(split_length_prefixed(&[0, 0], 4).is_err());
    }

    #[test]
    fn hvcc_orders_vps_sps_pps() {
        let mut rec = vec![0u8; 21];
        rec.push(0xf0 | 3); // length size 4
        rec.push(3); // arrays
        for (t, nal) in [(34u8, vec![0x44, 0x01, 0xc1]), (32, vec![0x40, 0x01, 0x0c]), (33, vec![0x42, 0x01, 0x01])] {
            rec.push(t);
            rec.extend_from_slice(&1u16.to_be_bytes());
            rec.extend_from_slice(&(nal.len() as u16).to_be_bytes());
            rec.extend_from_slice(&nal);
        }
        let c = parse_hvcc(&rec).expect("hvcC");
        let types: Vec<u8> = c.parameter_sets.iter().map(|n| (n[0] >> 1) & 0x3f).collect();
        assert_eq!(types, vec![32, 33, 34]);
        assert!(parse_hvcc(&rec[..30]).is_err());
    }
}

mod sps {
    use super::*;
    use vrseg::video::demux::nal::{parse_h264_sps, parse_hevc_sps, AnnexBNals};

    fn first_sps(path: &Path, codec: VideoCodec) -> Vec<u8> {
        let bytes = std::fs::read(path).expect("read");
        let t = if codec == VideoCodec::Hevc { 33 } else { 7 };
        AnnexBNals::new(&bytes)
            .find(|n| vrseg::video::demux::nal::nal_type(codec, n) == Some(t))
            .expect("an SPS")
            .to_vec()
    }

    #[test]
    fn raw_stream_sps_matches_ffprobe() {
        let s = parse_h264_sps(&first_sps(&clip("h264_raw.h264"), VideoCodec::H264)).expect("sps");
        assert_eq!((s.width, s.height, s.bit_depth_luma, s.chroma_format), (256, 128, 8, 1));
        assert_eq!(s.profile.as_deref(), Some("High"));
        assert_eq!(s.timing, Some((1, 60)));
        let s = parse_hevc_sps(&first_sps(&clip("hevc_raw.hevc"), VideoCodec::Hevc)).expect("sps");
        assert_eq!((s.width, s.height, s.bit_depth_luma), (288, 144, 8));
        assert_eq!(s.profile.as_deref(), Some("Main"));
    }

    #[test]
    fn cropping_and_ten_bit_from_container_configs() {
        // 1918x1078 (H.264 frame cropping) and 318x158 10-bit (HEVC conformance window).
        let d = Demuxer::open(clip("h264_1918x1078_3dh.mp4")).expect("open");
        assert_eq!((d.info().width, d.info().height, d.info().bit_depth), (1918, 1078, 8));
        let d = Demuxer::open(clip("hevc_10bit_318x158.mp4")).expect("open");
        assert_eq!((d.info().width, d.info().height, d.info().bit_depth), (318, 158, 10));
        assert_eq!(d.info().profile.as_deref(), Some("Main 10"));
    }

    #[test]
    fn garbage_sps_is_an_error_not_a_panic() {
        for len in 0..12 {
            let data: Vec<u8> = (0..len).map(|i| if i == 0 { 0x67 } else { 0xff }).collect();
            let _ = parse_h264_sps(&data);
            let _ = parse_hevc_sps(&data);
        }
        assert!(parse_h264_sps(&[0x67, 100, 0, 0, 0, 0, 0, 0]).is_err());
    }
}

/// Mozilla's mp4parse (Firefox) as a second opinion on our MP4 sample tables.
mod mp4parse_second_opinion {
    use super::*;

    #[test]
    fn sample_tables_agree_with_mp4parse() {
        let mut checked = 0;
        for path in video_clips() {
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            if !matches!(ext, "mp4" | "mov") || path.to_string_lossy().contains("frag") {
                continue; // mp4parse's sample table covers moov-indexed samples only
            }
            let mut file = std::fs::File::open(&path).expect("open");
            let context = mp4parse::read_mp4(&mut file).expect("mp4parse reads the fixture");
            let track =
                context.tracks.iter().find(|t| t.track_type == mp4parse::TrackType::Video).expect("a video track");
            let table = mp4parse::unstable::create_sample_table(track, 0.into()).expect("sample table");
            let theirs: Vec<(bool, i64, i64)> =
                table.iter().map(|s| (s.sync, s.start_composition.0 - s.start_decode.0, s.start_decode.0)).collect();
            let chunks = all_chunks(&path);
            // Compare keyframes, composition offsets (pts - dts) and decode-time steps.
            let d0 = chunks[0].dts;
            let t0 = theirs[0].2;
            let ours: Vec<(bool, i64, i64)> =
                chunks.iter().map(|c| (c.is_keyframe, c.pts - c.dts, c.dts - d0 + t0)).collect();
            if path.to_string_lossy().contains("negcts") {
                assert_eq!(ours.len(), theirs.len(), "{}", path.display());
            } else {
                assert_eq!(ours, theirs, "{}", path.display());
            }
            checked += 1;
        }
        assert!(checked >= 8, "checked {checked} files");
    }
}

/// Audio tracks indexed for copying: sizes and offsets agree with mp4parse (MP4) and every
/// sample lies inside the file; timing follows the video's rules.
mod audio_tracks {
    use super::*;

    #[test]
    fn mp4_audio_samples_agree_with_mp4parse() {
        let path = clip("h264_aac.mp4");
        let d = Demuxer::open(&path).unwrap();
        assert_eq!(d.audio_tracks().len(), 1);
        let track = &d.audio_tracks()[0];
        assert_eq!(track.info.codec, "aac");
        assert_eq!(track.timescale, 48_000);
        let mut file = std::fs::File::open(&path).unwrap();
        let context = mp4parse::read_mp4(&mut file).unwrap();
        let theirs = context.tracks.iter().find(|t| t.track_type == mp4parse::TrackType::Audio).unwrap();
        let table = mp4parse::unstable::create_sample_table(theirs, 0.into()).unwrap();
        let their_samples: Vec<(u64, u64)> =
            table.iter().map(|s| (s.start_offset.0, s.end_offset.0 - s.start_offset.0)).collect();
        let ours: Vec<(u64, u64)> = track.samples.iter().map(|s| (s.offset, u64::from(s.size))).collect();
        assert_eq!(ours, their_samples);
        // ffmpeg's AAC priming: the edit list's media_time 1024 puts the first packet at -1024,
        // as ffprobe prints it; then steps of 1024 (stts; ffprobe's 992 for the last one
        // comes from the edit's end, which the index does not apply).
        let pts: Vec<i64> = track.samples.iter().map(|s| s.pts).collect();
        assert_eq!(pts, [-1024, 0, 1024, 2048, 3072, 4096]);
        assert!(track.samples.iter().all(|s| s.duration == 1024));
        match &track.config {
            vrseg::video::demux::AudioConfig::Mp4 { fourcc, sample_entry } => {
                assert_eq!(fourcc, b"mp4a");
                assert!(sample_entry.windows(4).any(|w| w == b"esds"));
            }
            other => panic!("{other:?}"),
        }
        assert!(d.audio_skipped().is_empty());
    }

    #[test]
    fn matroska_opus_samples_and_codec_private() {
        let path = clip("vp9_opus.webm");
        let mut d = Demuxer::open(&path).unwrap();
        let track = d.audio_tracks()[0].clone();
        assert_eq!(track.info.codec, "opus");
        assert_eq!(track.timescale, d.info().timescale);
        match &track.config {
            vrseg::video::demux::AudioConfig::Matroska { codec_id, codec_private, codec_delay_ns, .. } => {
                assert_eq!(codec_id, "A_OPUS");
                assert!(codec_private.starts_with(b"OpusHead"));
                assert!(codec_delay_ns.is_some());
            }
            other => panic!("{other:?}"),
        }
        // ffprobe: two packets of 89 and 46 bytes, the second with 648 samples of end padding
        // (DiscardPadding 13.5 ms).
        let sizes: Vec<u32> = track.samples.iter().map(|s| s.size).collect();
        assert_eq!(sizes, [89, 46]);
        assert_eq!(track.samples[1].discard_padding_ns, 13_500_000);
        // Sample bytes start with an Opus TOC byte and match the length the index gives.
        for (i, &size) in sizes.iter().enumerate() {
            assert_eq!(d.read_audio_sample(0, i).unwrap().len(), size as usize);
        }
    }

    #[test]
    fn audio_past_the_end_is_skipped_with_a_reason_not_an_error() {
        // Point the audio track's first chunk (the second trak's stco) past the end of the file:
        // the video still opens, the audio is listed as not copyable.
        let mut bytes = std::fs::read(clip("h264_aac.mp4")).unwrap();
        let stcos: Vec<usize> = bytes.windows(4).enumerate().filter(|(_, w)| w == b"stco").map(|(i, _)| i).collect();
        assert_eq!(stcos.len(), 2);
        let first_offset = stcos[1] + 4 + 4 + 4; // type, version/flags, entry count
        bytes[first_offset..first_offset + 4].copy_from_slice(&0x7fff_0000u32.to_be_bytes());
        let path = scratch("audio_past_end.mp4");
        std::fs::write(&path, &bytes).unwrap();
        let d = Demuxer::open(&path).unwrap();
        assert_eq!(d.audio().len(), 1, "still listed for probe");
        assert!(d.audio_tracks().is_empty());
        assert_eq!(d.audio_skipped().len(), 1);
        assert!(d.audio_skipped()[0].contains("past the end of the file"), "{:?}", d.audio_skipped());
        assert_eq!(all_chunks(&path).len(), 12);
    }
}

//! The output side on a GPU: NVENC opens and round-trips frames from pool slots (encode →
//! our muxer → NVDEC decode), or, on a GPU without NVENC (H100, A100), fails with the call
//! and status and lets `open_encoder` fall back or say what to do; frames in device memory
//! reach the host (ffmpeg fallback, PNG masks) byte for byte.

use vrseg::gpu::{PoolPlan, VramPool};
use vrseg::video::chunk::VideoCodec;
use vrseg::video::decode::{decode_file, HostCopy};
use vrseg::video::encode::host::HostFrame;
use vrseg::video::encode::nvenc::NvencEncoder;
use vrseg::video::encode::{
    fill_neutral_chroma, open_encoder, EncodeError, EncoderPreference, EncoderSettings, FrameData, FrameEncoder,
    InputFrame, PixelFormat,
};
use vrseg::video::mux::bitstream::NalFormat;
use vrseg::video::mux::png_sequence::MaskPngWriter;
use vrseg::video::mux::{Muxer, VideoTrackConfig};

use crate::gpu_or_skip;

fn nv12_frame(w: usize, h: usize, pitch: usize, t: usize) -> Vec<u8> {
    let mut f = vec![0u8; pitch * (h + h.div_ceil(2))];
    for y in 0..h {
        for x in 0..w {
            f[y * pitch + x] = (16 + (x * 2 + y + t * 9) % 200) as u8;
        }
    }
    for y in 0..h.div_ceil(2) {
        for x in 0..w.div_ceil(2) {
            f[(h + y) * pitch + 2 * x] = (90 + (x + t) % 60) as u8;
            f[(h + y) * pitch + 2 * x + 1] = (160 - (y % 40)) as u8;
        }
    }
    f
}

#[test]
fn nvenc_encodes_or_fails_with_a_sentence() {
    let gpu = gpu_or_skip!();
    let probe = vrseg::video::nvenc::probe(&gpu);
    let (w, h) = (256usize, 128usize);
    let mut settings = EncoderSettings::new(w as u32, h as u32, PixelFormat::Nv12, (30, 1));
    settings.keyframe_interval = 5;

    // Gray input is refused before any session: NVENC reads NV12.
    let gray = EncoderSettings::new(w as u32, h as u32, PixelFormat::Gray8, (30, 1));
    let e = NvencEncoder::open(&gpu, &gray).unwrap_err();
    assert!(matches!(e, EncodeError::Settings { .. }) && e.to_string().contains("NV12"), "{e}");

    let mut encoder = match NvencEncoder::open(&gpu, &settings) {
        Ok(encoder) => {
            assert!(probe.session_opens, "the encoder opened but the probe said {:?}", probe.reason);
            encoder
        }
        Err(e) => {
            let text = e.to_string();
            eprintln!("NVENC unavailable on {}: {text}", gpu.properties().name);
            assert!(!probe.session_opens, "the probe opened a session but the encoder failed: {text}");
            assert!(matches!(e, EncodeError::NvencUnavailable { .. }), "{text}");
            let reason = probe.reason.expect("the probe says why");
            assert!(text.contains(&reason), "{text} should carry the probe's reason {reason}");
            // With NVENC gone, Auto falls back to ffmpeg when there is one, else says what to do.
            match open_encoder(Some(&gpu), &settings, EncoderPreference::Auto) {
                Ok(fallback) => assert!(fallback.name().starts_with("ffmpeg"), "{}", fallback.name()),
                Err(e) => {
                    let text = e.to_string();
                    assert!(matches!(e, EncodeError::NoEncoder { .. }), "{text}");
                    assert!(text.contains(&reason) && text.contains("--output masks"), "{text}");
                }
            }
            return;
        }
    };

    // A GPU with NVENC: 12 frames from 3 pool slots, through our muxer, back through NVDEC.
    let pitch = 512usize;
    let slot_bytes = pitch * (h + h / 2);
    let mut plan = PoolPlan::new();
    let slots = plan.slots("nvenc input", slot_bytes, 3);
    let pool = VramPool::reserve(&gpu, &plan).unwrap();
    let stream = gpu.new_stream().unwrap();
    let n = 12usize;
    let pts: Vec<i64> = (0..n as i64).map(|i| 3_000 + i * 512).collect();
    let mut packets = Vec::new();
    let mut sent = Vec::new();
    for (t, &frame_pts) in pts.iter().enumerate() {
        let view = pool.slot(slots, t % 3);
        let frame = nv12_frame(w, h, pitch, t);
        view.upload_blocking(&stream, &frame).unwrap();
        encoder
            .encode(
                &InputFrame { data: FrameData::Device { ptr: view.ptr(), pitch, stream: &stream }, pts: frame_pts },
                &mut packets,
            )
            .unwrap();
        sent.push(frame);
    }
    encoder.finish(&mut packets).unwrap();
    assert_eq!(packets.len(), n);
    assert_eq!(packets.iter().map(|p| p.pts).collect::<Vec<_>>(), pts);
    let keys: Vec<usize> = packets.iter().enumerate().filter(|(_, p)| p.keyframe).map(|(i, _)| i).collect();
    assert_eq!(keys, [0, 5, 10]);
    assert!(!encoder.parameter_sets().is_empty(), "nvEncGetSequenceParams gave nothing");

    let out = std::env::temp_dir().join(format!("vrseg-nvenc-{}.mp4", std::process::id()));
    let config = VideoTrackConfig {
        codec: VideoCodec::Hevc,
        width: w as u32,
        height: h as u32,
        timescale: 15_360,
        frame_duration: 512,
        nal_format: NalFormat::AnnexB,
        parameter_sets: encoder.parameter_sets(),
        stereo: None,
        extras: Default::default(),
        colour: Default::default(),
    };
    let mut muxer = Muxer::create(&out, config, None).unwrap();
    for p in &packets {
        muxer.write(p).unwrap();
    }
    muxer.finish().unwrap();
    let mut decoded = Vec::new();
    let summary = decode_file(&gpu, &out, HostCopy::Packed, &mut |_, frame| {
        decoded.push((frame.pts, frame.packed.expect("packed").to_vec()));
        Ok(())
    })
    .unwrap();
    let _ = std::fs::remove_file(&out);
    assert_eq!(summary.frames, n as u64);
    for (t, ((p, bytes), src)) in decoded.iter().zip(&sent).enumerate() {
        assert_eq!(*p, pts[t]);
        let mut sum = 0u64;
        for y in 0..h {
            for x in 0..w {
                sum += u64::from(bytes[y * w + x].abs_diff(src[y * pitch + x]));
            }
        }
        let mean = sum as f64 / (w * h) as f64;
        assert!(mean < 3.0, "frame {t}: luma mean abs error {mean}");
    }
}

/// The device → host copy behind the ffmpeg fallback and the PNG writer, on odd sizes with a
/// wide pitch, against the expected packed bytes (output poisoned first).
#[test]
fn device_frames_reach_the_host_exactly() {
    let gpu = gpu_or_skip!();
    let (w, h, pitch) = (257usize, 131usize, 320usize);
    let rows = h + h.div_ceil(2);
    let mut plan = PoolPlan::new();
    let slot = plan.buffer("frame", pitch * rows);
    let pool = VramPool::reserve(&gpu, &plan).unwrap();
    let stream = gpu.new_stream().unwrap();
    let view = pool.buffer(slot);
    let frame = nv12_frame(w, h, pitch, 3);
    view.upload_blocking(&stream, &frame).unwrap();
    let device = InputFrame { data: FrameData::Device { ptr: view.ptr(), pitch, stream: &stream }, pts: 0 };
    let chroma_row = 2 * w.div_ceil(2);
    let mut expected = Vec::new();
    for y in 0..h {
        expected.extend_from_slice(&frame[y * pitch..y * pitch + w]);
    }
    for y in 0..h.div_ceil(2) {
        expected.extend_from_slice(&frame[(h + y) * pitch..(h + y) * pitch + chroma_row]);
    }
    let mut host = HostFrame::new(w as u32, h as u32, PixelFormat::Nv12);
    // Poison: a first fill from a host frame of 0xEE.
    let poison = vec![0xEEu8; pitch * rows];
    host.fill(&InputFrame { data: FrameData::Host { data: &poison, pitch }, pts: 0 }, 0).unwrap();
    let got = host.fill(&device, 1).unwrap().to_vec();
    assert!(
        got == expected,
        "NV12 device copy differs at byte {:?}",
        got.iter().zip(&expected).position(|(a, b)| a != b)
    );
    assert_eq!(host.bytes_from_device(), expected.len() as u64);

    // The PNG writer from the same device frame: the luma rows, exactly.
    let dir = std::env::temp_dir().join(format!("vrseg-masks-{}", std::process::id()));
    let mut writer = MaskPngWriter::create(&dir, "frame_", w as u32, h as u32, 1).unwrap();
    let path = writer.write(&device).unwrap();
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!((info.width, info.height), (w as u32, h as u32));
    assert!(buf[..w * h] == expected[..w * h], "PNG pixels differ from the device frame's luma");

    // Neutral chroma for a matte slot: every chroma byte becomes 128, luma untouched.
    // SAFETY: `view` holds `rows` rows of `pitch` bytes in the live pool.
    unsafe { fill_neutral_chroma(view.ptr(), pitch, w as u32, h as u32, &stream) }.unwrap();
    let got = host.fill(&device, 2).unwrap();
    assert!(got[..w * h] == expected[..w * h], "luma changed");
    assert!(got[w * h..].iter().all(|&b| b == 128), "chroma is not neutral");
}

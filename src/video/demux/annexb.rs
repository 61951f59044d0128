//! Raw H.264 / HEVC Annex-B elementary streams (`.h264`, `.264`, `.avc`, `.h265`, `.265`,
//! `.hevc`), split into access units.
//!
//! The codec comes from the extension. The file is scanned once at open, 1 MiB at a time,
//! keeping only NAL boundaries, so memory does not grow with the file. Access-unit boundaries
//! (H.264 §7.4.1.2.3, HEVC §7.4.2.4.4): a new access unit starts at an AUD, a parameter set,
//! a prefix SEI or other leading non-VCL NAL unit, or at a slice with `first_mb_in_slice == 0`
//! (H.264) / `first_slice_segment_in_pic_flag == 1` (HEVC), once the current unit already has
//! a slice. Keyframes are access units holding an IDR (H.264) or IRAP (HEVC) picture.
//!
//! Timing: without a container there is no clock. When the SPS carries VUI timing the stream
//! timescale is `time_scale` and each frame lasts `2 × num_units_in_tick` (H.264, field
//! ticks) or `num_units_in_tick` (HEVC); otherwise vrseg assumes 25 fps (timescale 25,
//! duration 1). `pts = dts = index × duration` in decode order; presentation order is not
//! reconstructed from picture order counts.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use super::nal::{self, is_random_access, nal_type};
use super::{fill_timing, Container, Fault, Parsed, Payload, SampleEntry};
use crate::video::chunk::{StreamInfo, VideoCodec};

/// Bytes kept from the start of each NAL unit: enough for any parameter set we parse.
const NAL_HEAD: usize = 4096;

struct Scanner {
    codec: VideoCodec,
    samples: Vec<SampleEntry>,
    /// Current access unit: start offset, end of its last NAL, whether it has a slice / IRAP.
    au: Option<(u64, u64, bool, bool)>,
    parameter_sets: Vec<Vec<u8>>,
    sps: Option<Vec<u8>>,
}

impl Scanner {
    /// Handles one complete NAL unit: `sc_start` is where its start code begins.
    fn nal(&mut self, sc_start: u64, nal_end: u64, head: &[u8]) -> Result<(), Fault> {
        let Some(t) = nal_type(self.codec, head) else {
            return Ok(());
        };
        let (is_vcl, starts_au, first_slice) = match self.codec {
            VideoCodec::H264 => {
                let vcl = matches!(t, 1..=5);
                let first = vcl && head.get(1).is_some_and(|b| b & 0x80 != 0); // ue(v) == 0 is a single 1 bit
                (vcl, matches!(t, 6..=9 | 14..=18), first)
            }
            _ => {
                let vcl = t <= 31;
                let first = vcl && head.get(2).is_some_and(|b| b & 0x80 != 0);
                (vcl, matches!(t, 32..=35 | 39 | 41..=44 | 48..=55), first)
            }
        };
        if matches!((self.codec, t), (VideoCodec::H264, 7 | 8) | (VideoCodec::Hevc, 32..=34)) {
            let kind_seen = self.parameter_sets.iter().any(|p| nal_type(self.codec, p) == Some(t));
            if !kind_seen {
                self.parameter_sets.push(head.to_vec());
            }
            if self.sps.is_none() && matches!((self.codec, t), (VideoCodec::H264, 7) | (VideoCodec::Hevc, 33)) {
                self.sps = Some(head.to_vec());
            }
        }
        let new_au = match self.au {
            None => true,
            Some((_, _, has_vcl, _)) => has_vcl && (starts_au || first_slice),
        };
        if new_au {
            self.flush()?;
            self.au = Some((sc_start, nal_end, false, false));
        }
        if let Some(au) = &mut self.au {
            au.1 = nal_end;
            au.2 |= is_vcl;
            au.3 |= is_random_access(self.codec, t);
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Fault> {
        if let Some((start, end, has_vcl, irap)) = self.au.take() {
            if has_vcl {
                let size = u32::try_from(end - start)
                    .map_err(|_| Fault::corrupt("access unit", format!("at byte {start} is larger than 4 GiB")))?;
                self.samples.push(SampleEntry { offset: start, size, pts: 0, dts: 0, duration: 0, keyframe: irap });
            }
        }
        Ok(())
    }
}

/// Splits the stream into access units and reads the first SPS.
pub(crate) fn parse(file: &mut File, file_len: u64, path: &Path) -> Result<Parsed, Fault> {
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    let codec = match ext.as_deref() {
        Some("h264" | "264" | "avc") => VideoCodec::H264,
        Some("h265" | "265" | "hevc") => VideoCodec::Hevc,
        _ => return Err(Fault::UnknownContainer),
    };
    let mut scanner = Scanner { codec, samples: Vec::new(), au: None, parameter_sets: Vec::new(), sps: None };
    file.seek(SeekFrom::Start(0))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut zeros = 0u64;
    let mut base = 0u64;
    // The NAL being read: where its start code began, and its first bytes.
    let mut current: Option<u64> = None;
    let mut head: Vec<u8> = Vec::with_capacity(NAL_HEAD);
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        for (i, &b) in buf[..n].iter().enumerate() {
            let pos = base + i as u64;
            if b == 1 && zeros >= 2 {
                let sc_start = pos - zeros.min(3);
                if let Some(start) = current {
                    // The zeros before this start code are not part of the previous NAL.
                    let nal_end = pos - zeros;
                    trim_trailing_zeros(&mut head);
                    scanner.nal(start, nal_end, &head)?;
                }
                current = Some(sc_start);
                head.clear();
                zeros = 0;
                continue;
            }
            if current.is_some() && head.len() < NAL_HEAD {
                head.push(b);
            }
            zeros = if b == 0 { zeros + 1 } else { 0 };
        }
        base += n as u64;
    }
    if let Some(start) = current {
        trim_trailing_zeros(&mut head);
        scanner.nal(start, file_len - zeros, &head)?;
    }
    scanner.flush()?;
    if scanner.samples.is_empty() {
        return Err(Fault::corrupt("Annex-B stream", "no coded pictures (slice NAL units) were found"));
    }
    let sps =
        scanner.sps.clone().ok_or_else(|| Fault::corrupt("Annex-B stream", "no sequence parameter set was found"))?;
    let facts = if codec == VideoCodec::H264 { nal::parse_h264_sps(&sps)? } else { nal::parse_hevc_sps(&sps)? };
    let (timescale, duration) = match facts.timing {
        Some((units, scale)) if codec == VideoCodec::H264 => (scale, i64::from(units) * 2),
        Some((units, scale)) => (scale, i64::from(units)),
        None => (25, 1),
    };
    let mut info = StreamInfo {
        codec,
        profile: None,
        bit_depth: 8,
        chroma_format: None,
        width: 0,
        height: 0,
        timescale,
        frame_count: 0,
        fps: 0.0,
        duration_s: 0.0,
        colour: Default::default(),
        codec_private: Vec::new(),
        parameter_sets_annexb: Vec::new(),
    };
    super::apply_sps(&mut info, &facts);
    for ps in &scanner.parameter_sets {
        info.parameter_sets_annexb.extend_from_slice(&nal::START_CODE);
        info.parameter_sets_annexb.extend_from_slice(ps);
    }
    let mut samples = scanner.samples;
    for (i, s) in samples.iter_mut().enumerate() {
        let t =
            (i as i64).checked_mul(duration).ok_or_else(|| Fault::corrupt("Annex-B stream", "timestamps overflow"))?;
        s.pts = t;
        s.dts = t;
        s.duration = duration;
    }
    fill_timing(&mut info, &samples);
    Ok(Parsed {
        container: Container::AnnexB,
        info,
        audio: Vec::new(),
        stereo: None,
        samples,
        payload: Payload::AnnexB { codec, parameter_sets: scanner.parameter_sets },
        audio_tracks: Vec::new(),
        audio_skipped: Vec::new(),
        video_extras: Default::default(),
    })
}

fn trim_trailing_zeros(head: &mut Vec<u8>) {
    while head.last() == Some(&0) {
        head.pop();
    }
}

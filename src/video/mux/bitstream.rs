//! H.264/HEVC access units on their way into a container: NAL splitting (Annex-B or
//! length-prefixed), parameter-set bookkeeping, `avcC` / `hvcC` records built from the stream's
//! own SPS/PPS (ISO/IEC 14496-15 §5.3.3 and §8.3.3), and an Annex-B byte-stream splitter that
//! cuts an encoder's output into access units (H.264 §7.4.1.2.3, HEVC §7.4.2.4.4).

use crate::video::chunk::VideoCodec;
use crate::video::demux::nal::{self, find_start_code, nal_type, rbsp_from_nal, AnnexBNals};

/// How the NAL units of a packet are delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NalFormat {
    /// Start codes (`00 00 01` or `00 00 00 01`), as encoders write elementary streams.
    AnnexB,
    /// Each NAL unit preceded by its length in `length_size` (1, 2 or 4) big-endian bytes.
    LengthPrefixed { length_size: u8 },
}

/// Parameter-set NAL unit kinds, in the order decoders need them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ParamKind {
    Vps,
    Sps,
    Pps,
}

/// The kind of a parameter-set NAL unit, None for every other NAL unit.
pub fn param_kind(codec: VideoCodec, nal: &[u8]) -> Option<ParamKind> {
    match (codec, nal_type(codec, nal)?) {
        (VideoCodec::Hevc, 32) => Some(ParamKind::Vps),
        (VideoCodec::Hevc, 33) | (VideoCodec::H264, 7) => Some(ParamKind::Sps),
        (VideoCodec::Hevc, 34) | (VideoCodec::H264, 8) => Some(ParamKind::Pps),
        _ => None,
    }
}

/// Access unit delimiters carry nothing a container needs.
pub fn is_access_unit_delimiter(codec: VideoCodec, nal: &[u8]) -> bool {
    matches!((codec, nal_type(codec, nal)), (VideoCodec::Hevc, Some(35)) | (VideoCodec::H264, Some(9)))
}

/// Whether a NAL unit is a slice of a picture (VCL).
pub fn is_vcl(codec: VideoCodec, nal: &[u8]) -> bool {
    match (codec, nal_type(codec, nal)) {
        (VideoCodec::Hevc, Some(t)) => t < 32,
        (VideoCodec::H264, Some(t)) => (1..=5).contains(&t),
        _ => false,
    }
}

/// Whether a VCL NAL unit holds the first slice of its picture: HEVC
/// `first_slice_segment_in_pic_flag`, H.264 `first_mb_in_slice == 0` (a ue(v) of 0 is the
/// single bit 1).
fn is_first_slice(codec: VideoCodec, nal: &[u8]) -> bool {
    match codec {
        VideoCodec::Hevc => nal.get(2).is_some_and(|b| b & 0x80 != 0),
        VideoCodec::H264 => nal.get(1).is_some_and(|b| b & 0x80 != 0),
        _ => false,
    }
}

/// Whether a NAL unit, met after a picture's slices, opens the next access unit
/// (parameter sets, AUD, prefix SEI and the reserved types the standards list).
fn starts_access_unit(codec: VideoCodec, nal: &[u8]) -> bool {
    match (codec, nal_type(codec, nal)) {
        (VideoCodec::Hevc, Some(t)) => matches!(t, 32..=35 | 39 | 41..=44 | 48..=55),
        (VideoCodec::H264, Some(t)) => matches!(t, 6..=9 | 14..=18),
        _ => false,
    }
}

/// Splits a packet into NAL units (without start codes or length prefixes).
pub fn split_nals(data: &[u8], format: NalFormat) -> Result<Vec<&[u8]>, String> {
    match format {
        NalFormat::AnnexB => {
            if find_start_code(data, 0).is_none() && !data.is_empty() {
                return Err("no Annex-B start code in the packet".into());
            }
            Ok(AnnexBNals::new(data).filter(|n| !n.is_empty()).collect())
        }
        NalFormat::LengthPrefixed { length_size } => {
            if !matches!(length_size, 1 | 2 | 4) {
                return Err(format!("NAL length size {length_size} is not 1, 2 or 4"));
            }
            nal::split_length_prefixed(data, usize::from(length_size)).map_err(|f| match f {
                crate::video::demux::Fault::Corrupt { reason, .. } => reason,
                other => format!("{other:?}"),
            })
        }
    }
}

/// Whether a packet is a random access point by its NAL types (IDR for H.264, IRAP for HEVC).
pub fn is_random_access_au(codec: VideoCodec, nals: &[&[u8]]) -> bool {
    nals.iter().any(|n| nal_type(codec, n).is_some_and(|t| nal::is_random_access(codec, t)))
}

/// The stream's parameter sets, grouped by kind in arrival order, deduplicated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParameterSets {
    pub vps: Vec<Vec<u8>>,
    pub sps: Vec<Vec<u8>>,
    pub pps: Vec<Vec<u8>>,
}

impl ParameterSets {
    /// Gathers the parameter sets among `nals`.
    pub fn from_nals<'a>(codec: VideoCodec, nals: impl IntoIterator<Item = &'a [u8]>) -> ParameterSets {
        let mut sets = ParameterSets::default();
        for n in nals {
            if let Some(kind) = param_kind(codec, n) {
                sets.add(kind, n);
            }
        }
        sets
    }

    fn list_mut(&mut self, kind: ParamKind) -> &mut Vec<Vec<u8>> {
        match kind {
            ParamKind::Vps => &mut self.vps,
            ParamKind::Sps => &mut self.sps,
            ParamKind::Pps => &mut self.pps,
        }
    }

    fn add(&mut self, kind: ParamKind, nal: &[u8]) {
        let list = self.list_mut(kind);
        if !list.iter().any(|p| p == nal) {
            list.push(nal.to_vec());
        }
    }

    /// Whether this exact NAL unit is one of the sets.
    pub fn contains(&self, kind: ParamKind, nal: &[u8]) -> bool {
        match kind {
            ParamKind::Vps => &self.vps,
            ParamKind::Sps => &self.sps,
            ParamKind::Pps => &self.pps,
        }
        .iter()
        .any(|p| p == nal)
    }

    /// Whether the sets are enough to build a decoder configuration record.
    pub fn is_complete(&self, codec: VideoCodec) -> bool {
        !self.sps.is_empty() && !self.pps.is_empty() && (codec != VideoCodec::Hevc || !self.vps.is_empty())
    }

    /// All sets in VPS, SPS, PPS order.
    pub fn all(&self) -> impl Iterator<Item = &Vec<u8>> {
        self.vps.iter().chain(&self.sps).chain(&self.pps)
    }
}

/// Builds an `AVCDecoderConfigurationRecord` with 4-byte NAL lengths.
pub fn avcc(sets: &ParameterSets) -> Result<Vec<u8>, String> {
    let sps = sets.sps.first().ok_or("no H.264 SPS in the stream")?;
    if sets.pps.is_empty() {
        return Err("no H.264 PPS in the stream".into());
    }
    let rbsp = rbsp_from_nal(sps);
    if rbsp.len() < 4 {
        return Err(format!("H.264 SPS of {} bytes is too short", sps.len()));
    }
    let facts = nal::parse_h264_sps(sps).map_err(|f| format!("H.264 SPS: {f:?}"))?;
    let (profile, compat, level) = (rbsp[1], rbsp[2], rbsp[3]);
    let mut out = vec![1, profile, compat, level, 0xFF, 0xE0 | u8::try_from(sets.sps.len().min(31)).unwrap_or(31)];
    for s in sets.sps.iter().take(31) {
        push_u16_len(&mut out, s)?;
    }
    out.push(u8::try_from(sets.pps.len().min(255)).unwrap_or(255));
    for p in sets.pps.iter().take(255) {
        push_u16_len(&mut out, p)?;
    }
    // The High-profile extension (§5.3.3.1.2): chroma format and bit depths.
    if matches!(profile, 100 | 110 | 122 | 144) {
        out.push(0xFC | (facts.chroma_format & 0x03));
        out.push(0xF8 | (facts.bit_depth_luma.saturating_sub(8) & 0x07));
        out.push(0xF8 | (facts.bit_depth_chroma.saturating_sub(8) & 0x07));
        out.push(0);
    }
    Ok(out)
}

/// Builds an `HEVCDecoderConfigurationRecord` with 4-byte NAL lengths. `complete` sets
/// `array_completeness` (1 for `hvc1`, whose parameter sets are all in the record).
pub fn hvcc(sets: &ParameterSets, complete: bool) -> Result<Vec<u8>, String> {
    let sps = sets.sps.first().ok_or("no HEVC SPS in the stream")?;
    if sets.vps.is_empty() {
        return Err("no HEVC VPS in the stream".into());
    }
    if sets.pps.is_empty() {
        return Err("no HEVC PPS in the stream".into());
    }
    let rbsp = rbsp_from_nal(sps);
    // 2-byte NAL header, then vps_id(4) max_sub_layers_minus1(3) temporal_id_nesting(1), then
    // the 12 bytes of general profile_tier_level.
    let ptl = rbsp.get(2..15).ok_or_else(|| format!("HEVC SPS of {} bytes is too short", sps.len()))?;
    let facts = nal::parse_hevc_sps(sps).map_err(|f| format!("HEVC SPS: {f:?}"))?;
    let max_sub_layers_minus1 = (ptl[0] >> 1) & 0x07;
    let temporal_id_nested = ptl[0] & 0x01;
    let mut out = Vec::with_capacity(64);
    out.push(1);
    out.extend_from_slice(&ptl[1..13]); // profile space/tier/idc, compatibility, constraints, level
    out.extend_from_slice(&[0xF0, 0x00]); // min_spatial_segmentation_idc 0
    out.push(0xFC); // parallelismType 0 (unknown)
    out.push(0xFC | (facts.chroma_format & 0x03));
    out.push(0xF8 | (facts.bit_depth_luma.saturating_sub(8) & 0x07));
    out.push(0xF8 | (facts.bit_depth_chroma.saturating_sub(8) & 0x07));
    out.extend_from_slice(&[0, 0]); // avgFrameRate unspecified
                                    // constantFrameRate 0, numTemporalLayers, temporalIdNested, lengthSizeMinusOne 3.
    out.push(((max_sub_layers_minus1 + 1) << 3) | (temporal_id_nested << 2) | 0x03);
    let arrays: [(u8, &Vec<Vec<u8>>); 3] = [(32, &sets.vps), (33, &sets.sps), (34, &sets.pps)];
    out.push(arrays.len() as u8);
    for (kind, list) in arrays {
        out.push((u8::from(complete) << 7) | kind);
        out.extend_from_slice(&u16::try_from(list.len()).map_err(|_| "too many parameter sets")?.to_be_bytes());
        for n in list {
            push_u16_len(&mut out, n)?;
        }
    }
    Ok(out)
}

fn push_u16_len(out: &mut Vec<u8>, nal: &[u8]) -> Result<(), String> {
    let len = u16::try_from(nal.len()).map_err(|_| format!("a parameter set of {} bytes is too long", nal.len()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(nal);
    Ok(())
}

/// The decoder configuration record for `codec` (`avcC` or `hvcC` payload).
pub fn config_record(codec: VideoCodec, sets: &ParameterSets, complete: bool) -> Result<Vec<u8>, String> {
    match codec {
        VideoCodec::H264 => avcc(sets),
        VideoCodec::Hevc => hvcc(sets, complete),
        other => Err(format!("{other} has no NAL configuration record")),
    }
}

/// Cuts an Annex-B byte stream, fed in arbitrary pieces, into access units.
///
/// A NAL unit is complete once the next start code arrives, and an access unit once the first
/// NAL unit of the next one is complete, so each unit comes out one NAL unit late; `finish`
/// returns the last. Memory is the current access unit plus the unscanned tail.
#[derive(Debug)]
pub struct AccessUnitSplitter {
    codec: VideoCodec,
    /// Bytes not yet split into NAL units (starts at a start code once one was seen).
    pending: Vec<u8>,
    /// Where to resume looking for a start code in `pending`.
    scan_from: usize,
    /// The access unit being gathered, Annex-B with 4-byte start codes.
    current: Vec<u8>,
    current_has_vcl: bool,
    current_is_random_access: bool,
}

/// One access unit from [`AccessUnitSplitter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessUnit {
    /// Annex-B with 4-byte start codes.
    pub data: Vec<u8>,
    /// An IDR (H.264) or IRAP (HEVC) picture.
    pub random_access: bool,
}

impl AccessUnitSplitter {
    pub fn new(codec: VideoCodec) -> AccessUnitSplitter {
        AccessUnitSplitter {
            codec,
            pending: Vec::new(),
            scan_from: 0,
            current: Vec::new(),
            current_has_vcl: false,
            current_is_random_access: false,
        }
    }

    /// Adds bytes; appends every access unit they complete to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<AccessUnit>) {
        self.pending.extend_from_slice(bytes);
        loop {
            let Some((first_sc, first_payload)) = find_start_code(&self.pending, 0) else {
                // Keep the last two bytes: they may begin a start code.
                let keep = self.pending.len().min(3);
                self.pending.drain(..self.pending.len() - keep);
                self.scan_from = 0;
                return;
            };
            if first_sc > 0 {
                // Bytes before the first start code are not part of any NAL unit.
                self.pending.drain(..first_sc);
                self.scan_from = 0;
                continue;
            }
            let from = self.scan_from.max(first_payload);
            match find_start_code(&self.pending, from) {
                Some((next_sc, _)) => {
                    let nal = trim_trailing_zeros(&self.pending[first_payload..next_sc]).to_vec();
                    self.pending.drain(..next_sc);
                    self.scan_from = 0;
                    self.add_nal(&nal, out);
                }
                None => {
                    // Resume a little before the end: a start code may straddle the pieces.
                    self.scan_from = self.pending.len().saturating_sub(3).max(first_payload);
                    return;
                }
            }
        }
    }

    /// Ends the stream: appends the last access unit(s) to `out` and resets the splitter.
    pub fn finish(&mut self, out: &mut Vec<AccessUnit>) {
        if let Some((_, payload)) = find_start_code(&self.pending, 0) {
            let nal = trim_trailing_zeros(&self.pending[payload..]).to_vec();
            self.add_nal(&nal, out);
        }
        self.pending.clear();
        self.scan_from = 0;
        if let Some(au) = self.take_current() {
            out.push(au);
        }
    }

    fn take_current(&mut self) -> Option<AccessUnit> {
        if self.current.is_empty() {
            return None;
        }
        let au = AccessUnit { data: std::mem::take(&mut self.current), random_access: self.current_is_random_access };
        self.current_has_vcl = false;
        self.current_is_random_access = false;
        Some(au)
    }

    fn add_nal(&mut self, nal: &[u8], out: &mut Vec<AccessUnit>) {
        if nal.is_empty() {
            return;
        }
        let vcl = is_vcl(self.codec, nal);
        let opens_next =
            self.current_has_vcl && ((vcl && is_first_slice(self.codec, nal)) || starts_access_unit(self.codec, nal));
        if opens_next {
            if let Some(au) = self.take_current() {
                out.push(au);
            }
        }
        if vcl {
            self.current_has_vcl = true;
            if nal_type(self.codec, nal).is_some_and(|t| nal::is_random_access(self.codec, t)) {
                self.current_is_random_access = true;
            }
        }
        self.current.extend_from_slice(&nal::START_CODE);
        self.current.extend_from_slice(nal);
    }
}

fn trim_trailing_zeros(mut nal: &[u8]) -> &[u8] {
    while let [rest @ .., 0] = nal {
        nal = rest;
    }
    nal
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Minimal HEVC NAL units: (type, first-slice flag) → bytes.
    fn hevc_nal(t: u8, first_slice: bool, payload: &[u8]) -> Vec<u8> {
        let mut n = vec![t << 1, 1];
        if t < 32 {
            n.push(if first_slice { 0x80 } else { 0x00 });
        }
        n.extend_from_slice(payload);
        n
    }

    fn annexb(nals: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, n) in nals.iter().enumerate() {
            // Mix 3- and 4-byte start codes.
            if i % 2 == 0 {
                out.extend_from_slice(&[0, 0, 0, 1]);
            } else {
                out.extend_from_slice(&[0, 0, 1]);
            }
            out.extend_from_slice(n);
        }
        out
    }

    #[test]
    fn splitter_cuts_at_parameter_sets_and_first_slices_in_any_piece_size() {
        let vps = hevc_nal(32, false, &[0x11, 0x22]);
        let sps = hevc_nal(33, false, &[0x33]);
        let pps = hevc_nal(34, false, &[0x44]);
        let idr = hevc_nal(19, true, &[0x55, 0x66]);
        let idr2 = hevc_nal(19, false, &[0x57]); // second slice of the same picture
        let trail = hevc_nal(1, true, &[0x77, 0, 0, 0]); // trailing zeros are dropped
        let suffix_sei = hevc_nal(40, false, &[0x88]);
        let trail2 = hevc_nal(1, true, &[0x99]);
        let stream = annexb(&[
            vps.clone(),
            sps.clone(),
            pps.clone(),
            idr.clone(),
            idr2.clone(),
            trail.clone(),
            suffix_sei.clone(),
            trail2.clone(),
        ]);
        let expected = vec![
            AccessUnit { data: annexb4(&[&vps, &sps, &pps, &idr, &idr2]), random_access: true },
            AccessUnit { data: annexb4(&[&trail[..trail.len() - 3], &suffix_sei]), random_access: false },
            AccessUnit { data: annexb4(&[&trail2]), random_access: false },
        ];
        for piece in [1usize, 2, 3, 5, 7, stream.len()] {
            let mut s = AccessUnitSplitter::new(VideoCodec::Hevc);
            let mut out = Vec::new();
            for chunk in stream.chunks(piece) {
                s.push(chunk, &mut out);
            }
            s.finish(&mut out);
            assert_eq!(out, expected, "piece size {piece}");
        }
    }

    fn annexb4(nals: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for n in nals {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(n);
        }
        out
    }

    #[test]
    fn h264_splits_on_first_mb_zero() {
        let sps = vec![0x67, 0x42, 0x00, 0x1e];
        let pps = vec![0x68, 0xce];
        let idr = vec![0x65, 0x88, 0x80];
        let p1 = vec![0x41, 0x9a, 0x01];
        let p1_slice2 = vec![0x41, 0x40, 0x02]; // first_mb_in_slice != 0
        let p2 = vec![0x41, 0x9b];
        let stream = annexb(&[sps.clone(), pps.clone(), idr.clone(), p1.clone(), p1_slice2.clone(), p2.clone()]);
        let mut s = AccessUnitSplitter::new(VideoCodec::H264);
        let mut out = Vec::new();
        s.push(&stream, &mut out);
        s.finish(&mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].data, annexb4(&[&sps, &pps, &idr]));
        assert!(out[0].random_access);
        assert_eq!(out[1].data, annexb4(&[&p1, &p1_slice2]));
        assert!(!out[1].random_access);
        assert_eq!(out[2].data, annexb4(&[&p2]));
    }

    #[test]
    fn empty_and_garbage_streams_give_nothing() {
        let mut s = AccessUnitSplitter::new(VideoCodec::Hevc);
        let mut out = Vec::new();
        s.push(&[1, 2, 3, 4, 5], &mut out);
        s.finish(&mut out);
        assert!(out.is_empty());
    }
}

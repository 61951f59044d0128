//! NAL unit plumbing for H.264 and HEVC: length-prefixed (MP4/Matroska) → Annex-B conversion,
//! `avcC`/`hvcC` parsing, parameter-set insertion, and SPS parsing (size, bit depth, profile,
//! VUI colour and timing).
//!
//! Quirks handled:
//! - NAL length fields of 1, 2 or 4 bytes (`lengthSizeMinusOne` 0, 1, 3); 3 is invalid.
//! - Parameter sets are inserted in front of a keyframe only when the sample carries no SPS of
//!   its own (`avc3`/`hev1` streams usually do), and after a leading access unit delimiter,
//!   which must stay the first NAL unit of the access unit.
//! - SPS fields are read from the RBSP, i.e. after removing emulation-prevention bytes
//!   (`00 00 03` → `00 00`).
//! - Displayed size applies the H.264 frame cropping / HEVC conformance window in chroma units.

use super::Fault;
use crate::video::chunk::{ColourDescription, VideoCodec};

/// The Annex-B start code the demuxer writes in front of every NAL unit.
pub const START_CODE: [u8; 4] = [0, 0, 0, 1];

fn corrupt(element: &'static str, reason: impl Into<String>) -> Fault {
    Fault::Corrupt { element: element.to_string(), reason: reason.into() }
}

/// Parsed `avcC` / `hvcC`: the NAL length size and the parameter sets in stored order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NalConfig {
    pub codec: VideoCodec,
    /// Bytes in each NAL length prefix: 1, 2 or 4.
    pub length_size: usize,
    /// Parameter set NAL units (without start codes): VPS, SPS, PPS (and SEI arrays of hvcC).
    pub parameter_sets: Vec<Vec<u8>>,
}

impl NalConfig {
    /// The first SPS in the record.
    pub fn sps(&self) -> Option<&[u8]> {
        self.parameter_sets.iter().find(|n| nal_type(self.codec, n) == Some(sps_type(self.codec))).map(|n| n.as_slice())
    }

    /// Parameter sets as one Annex-B byte string.
    pub fn parameter_sets_annexb(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for nal in &self.parameter_sets {
            out.extend_from_slice(&START_CODE);
            out.extend_from_slice(nal);
        }
        out
    }
}

/// Parses an `AVCDecoderConfigurationRecord` (ISO/IEC 14496-15 §5.3.3).
pub fn parse_avcc(record: &[u8]) -> Result<NalConfig, Fault> {
    let mut r = ByteCursor::new(record, "avcC");
    let _version = r.u8()?;
    let _profile = r.u8()?;
    let _compat = r.u8()?;
    let _level = r.u8()?;
    let length_size = usize::from(r.u8()? & 0x03) + 1;
    if length_size == 3 {
        return Err(corrupt("avcC", "NAL length size 3 is not allowed (must be 1, 2 or 4)"));
    }
    let mut parameter_sets = Vec::new();
    let sps_count = r.u8()? & 0x1f;
    for _ in 0..sps_count {
        let len = usize::from(r.u16()?);
        parameter_sets.push(r.bytes(len)?.to_vec());
    }
    let pps_count = r.u8()?;
    for _ in 0..pps_count {
        let len = usize::from(r.u16()?);
        parameter_sets.push(r.bytes(len)?.to_vec());
    }
    Ok(NalConfig { codec: VideoCodec::H264, length_size, parameter_sets })
}

/// Parses an `HEVCDecoderConfigurationRecord` (ISO/IEC 14496-15 §8.3.3).
pub fn parse_hvcc(record: &[u8]) -> Result<NalConfig, Fault> {
    let mut r = ByteCursor::new(record, "hvcC");
    r.bytes(21)?;
    let length_size = usize::from(r.u8()? & 0x03) + 1;
    if length_size == 3 {
        return Err(corrupt("hvcC", "NAL length size 3 is not allowed (must be 1, 2 or 4)"));
    }
    let array_count = r.u8()?;
    let mut parameter_sets = Vec::new();
    for _ in 0..array_count {
        let _type = r.u8()?;
        let count = r.u16()?;
        for _ in 0..count {
            let len = usize::from(r.u16()?);
            parameter_sets.push(r.bytes(len)?.to_vec());
        }
    }
    // Keep VPS, SPS, PPS order whatever order the arrays came in; SEI arrays go last.
    parameter_sets.sort_by_key(|n| nal_type(VideoCodec::Hevc, n).filter(|t| (32..=34).contains(t)).unwrap_or(255));
    Ok(NalConfig { codec: VideoCodec::Hevc, length_size, parameter_sets })
}

/// The NAL unit type of a NAL unit (first header byte(s), no start code).
pub fn nal_type(codec: VideoCodec, nal: &[u8]) -> Option<u8> {
    let first = *nal.first()?;
    match codec {
        VideoCodec::H264 => Some(first & 0x1f),
        VideoCodec::Hevc => Some((first >> 1) & 0x3f),
        VideoCodec::Vp9 | VideoCodec::Av1 => None,
    }
}

fn sps_type(codec: VideoCodec) -> u8 {
    match codec {
        VideoCodec::Hevc => 33,
        _ => 7,
    }
}

fn aud_type(codec: VideoCodec) -> u8 {
    match codec {
        VideoCodec::Hevc => 35,
        _ => 9,
    }
}

/// Whether a NAL unit type marks a random access point: IDR for H.264, IRAP for HEVC.
pub fn is_random_access(codec: VideoCodec, nal_type: u8) -> bool {
    match codec {
        VideoCodec::H264 => nal_type == 5,
        VideoCodec::Hevc => (16..=23).contains(&nal_type),
        VideoCodec::Vp9 | VideoCodec::Av1 => false,
    }
}

/// Splits a length-prefixed sample into its NAL units.
pub fn split_length_prefixed(sample: &[u8], length_size: usize) -> Result<Vec<&[u8]>, Fault> {
    let mut nals = Vec::new();
    let mut pos = 0usize;
    while pos < sample.len() {
        let len_end = pos
            .checked_add(length_size)
            .filter(|&e| e <= sample.len())
            .ok_or_else(|| corrupt("sample", "a NAL length prefix runs past the end of the sample"))?;
        let len = sample[pos..len_end].iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        let end = len_end
            .checked_add(len)
            .filter(|&e| e <= sample.len())
            .ok_or_else(|| corrupt("sample", format!("a NAL unit of {len} bytes runs past the end of the sample")))?;
        nals.push(&sample[len_end..end]);
        pos = end;
    }
    Ok(nals)
}

/// Converts one length-prefixed sample to Annex-B. For keyframes without their own SPS the
/// configuration's parameter sets are inserted (after a leading access unit delimiter).
pub fn length_prefixed_to_annexb(sample: &[u8], config: &NalConfig, is_keyframe: bool) -> Result<Vec<u8>, Fault> {
    let nals = split_length_prefixed(sample, config.length_size)?;
    let codec = config.codec;
    let carries_sps = nals.iter().any(|n| nal_type(codec, n) == Some(sps_type(codec)));
    let insert = is_keyframe && !carries_sps && !config.parameter_sets.is_empty();
    let extra = if insert { config.parameter_sets.iter().map(|p| p.len() + 4).sum() } else { 0 };
    let mut out = Vec::with_capacity(sample.len() + extra + nals.len() * 4);
    let mut inserted = !insert;
    for nal in nals {
        let is_aud = nal_type(codec, nal) == Some(aud_type(codec));
        if !inserted && !is_aud {
            for ps in &config.parameter_sets {
                out.extend_from_slice(&START_CODE);
                out.extend_from_slice(ps);
            }
            inserted = true;
        }
        out.extend_from_slice(&START_CODE);
        out.extend_from_slice(nal);
    }
    if !inserted {
        for ps in &config.parameter_sets {
            out.extend_from_slice(&START_CODE);
            out.extend_from_slice(ps);
        }
    }
    Ok(out)
}

/// Inserts parameter sets into an Annex-B keyframe that lacks an SPS (raw streams normally
/// carry their own; this covers streams cut at a keyframe that relies on earlier ones).
pub fn annexb_with_parameter_sets(au: &[u8], codec: VideoCodec, parameter_sets: &[Vec<u8>]) -> Vec<u8> {
    let nals: Vec<&[u8]> = AnnexBNals::new(au).collect();
    if parameter_sets.is_empty() || nals.iter().any(|n| nal_type(codec, n) == Some(sps_type(codec))) {
        return au.to_vec();
    }
    let mut out = Vec::with_capacity(au.len() + 64);
    let mut inserted = false;
    for nal in nals {
        if !inserted && nal_type(codec, nal) != Some(aud_type(codec)) {
            for ps in parameter_sets {
                out.extend_from_slice(&START_CODE);
                out.extend_from_slice(ps);
            }
            inserted = true;
        }
        out.extend_from_slice(&START_CODE);
        out.extend_from_slice(nal);
    }
    out
}

/// Iterates over the NAL units of an Annex-B byte string (3- or 4-byte start codes), without
/// the start codes. Trailing zero bytes before a start code are dropped.
pub struct AnnexBNals<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> AnnexBNals<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        let pos = find_start_code(data, 0).map_or(data.len(), |(_, payload)| payload);
        AnnexBNals { data, pos }
    }
}

impl<'a> Iterator for AnnexBNals<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.pos >= self.data.len() {
            return None;
        }
        let start = self.pos;
        let (end, next) = match find_start_code(self.data, start) {
            Some((sc, payload)) => (sc, payload),
            None => (self.data.len(), self.data.len()),
        };
        self.pos = next;
        let mut nal = &self.data[start..end];
        while let [rest @ .., 0] = nal {
            nal = rest;
        }
        Some(nal)
    }
}

/// Finds the next `00 00 01` at or after `from`; returns (start of the start code, including a
/// preceding zero when it is a 4-byte code, and the first payload byte).
pub fn find_start_code(data: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    while i.checked_add(2)? < data.len() {
        if data[i + 2] > 1 {
            i += 3;
        } else if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            let start = if i > from && data[i - 1] == 0 { i - 1 } else { i };
            return Some((start, i + 3));
        } else {
            i += 1;
        }
    }
    None
}

/// Removes emulation-prevention bytes: `00 00 03 xx` → `00 00 xx`.
pub fn rbsp_from_nal(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0usize;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// Facts read from a sequence parameter set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpsInfo {
    pub profile_idc: u8,
    pub profile: Option<String>,
    pub chroma_format: u8,
    pub bit_depth_luma: u8,
    pub bit_depth_chroma: u8,
    /// Displayed width after cropping.
    pub width: u32,
    /// Displayed height after cropping.
    pub height: u32,
    pub colour: ColourDescription,
    /// VUI timing: (num_units_in_tick, time_scale) when present and non-zero.
    pub timing: Option<(u32, u32)>,
    /// H.264 only: log2_max_frame_num, used to find slice header fields.
    pub log2_max_frame_num: u32,
    pub frame_mbs_only: bool,
}

/// Parses an H.264 SPS NAL unit (with its one-byte header, without start code).
pub fn parse_h264_sps(nal: &[u8]) -> Result<SpsInfo, Fault> {
    let rbsp = rbsp_from_nal(nal);
    let mut r = BitReader::new(rbsp.get(1..).unwrap_or(&[]), "H.264 SPS");
    let profile_idc = r.bits(8)? as u8;
    let constraints = r.bits(8)? as u8;
    let _level = r.bits(8)?;
    let _sps_id = r.ue()?;
    let mut chroma_format = 1u32;
    let mut separate_colour_plane = false;
    let mut bit_depth_luma = 8u32;
    let mut bit_depth_chroma = 8u32;
    if matches!(profile_idc, 100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135) {
        chroma_format = r.ue()?;
        if chroma_format > 3 {
            return Err(corrupt("H.264 SPS", format!("chroma_format_idc {chroma_format} is out of range")));
        }
        if chroma_format == 3 {
            separate_colour_plane = r.flag()?;
        }
        bit_depth_luma = r
            .ue()?
            .checked_add(8)
            .filter(|&d| d <= 16)
            .ok_or_else(|| corrupt("H.264 SPS", "bit depth out of range"))?;
        bit_depth_chroma = r
            .ue()?
            .checked_add(8)
            .filter(|&d| d <= 16)
            .ok_or_else(|| corrupt("H.264 SPS", "bit depth out of range"))?;
        let _qpprime = r.flag()?;
        if r.flag()? {
            let lists = if chroma_format == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.flag()? {
                    skip_h264_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    let log2_max_frame_num = r
        .ue()?
        .checked_add(4)
        .filter(|&v| v <= 16)
        .ok_or_else(|| corrupt("H.264 SPS", "log2_max_frame_num out of range"))?;
    let poc_type = r.ue()?;
    match poc_type {
        0 => {
            r.ue()?;
        }
        1 => {
            r.flag()?;
            r.se()?;
            r.se()?;
            let cycle = r.ue()?;
            if cycle > 255 {
                return Err(corrupt("H.264 SPS", "num_ref_frames_in_pic_order_cnt_cycle above 255"));
            }
            for _ in 0..cycle {
                r.se()?;
            }
        }
        2 => {}
        _ => return Err(corrupt("H.264 SPS", format!("pic_order_cnt_type {poc_type} is out of range"))),
    }
    let _max_refs = r.ue()?;
    let _gaps = r.flag()?;
    let width_mbs = u64::from(r.ue()?) + 1;
    let height_map_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = r.flag()?;
    if !frame_mbs_only {
        r.flag()?;
    }
    let _direct_8x8 = r.flag()?;
    let (mut crop_l, mut crop_r, mut crop_t, mut crop_b) = (0u64, 0u64, 0u64, 0u64);
    if r.flag()? {
        crop_l = r.ue()?.into();
        crop_r = r.ue()?.into();
        crop_t = r.ue()?.into();
        crop_b = r.ue()?.into();
    }
    let field_factor = if frame_mbs_only { 1 } else { 2 };
    let (sub_w, sub_h) = chroma_subsampling(chroma_format, separate_colour_plane);
    let crop_unit_x = sub_w;
    let crop_unit_y = sub_h * field_factor;
    let coded_w = width_mbs * 16;
    let coded_h = height_map_units * 16 * field_factor;
    let width = coded_w
        .checked_sub((crop_l + crop_r) * crop_unit_x)
        .and_then(|w| u32::try_from(w).ok())
        .ok_or_else(|| corrupt("H.264 SPS", "cropping exceeds the coded width"))?;
    let height = coded_h
        .checked_sub((crop_t + crop_b) * crop_unit_y)
        .and_then(|h| u32::try_from(h).ok())
        .ok_or_else(|| corrupt("H.264 SPS", "cropping exceeds the coded height"))?;
    let mut info = SpsInfo {
        profile_idc,
        profile: h264_profile_name(profile_idc, constraints),
        chroma_format: chroma_format as u8,
        bit_depth_luma: bit_depth_luma as u8,
        bit_depth_chroma: bit_depth_chroma as u8,
        width,
        height,
        log2_max_frame_num,
        frame_mbs_only,
        ..SpsInfo::default()
    };
    // VUI is optional and often cut short by encoders' trailing bits: read what is there.
    if r.flag().unwrap_or(false) {
        let _ = parse_vui_common(&mut r, &mut info, false);
    }
    Ok(info)
}

fn chroma_subsampling(chroma_format: u32, separate_colour_plane: bool) -> (u64, u64) {
    match (chroma_format, separate_colour_plane) {
        (0, _) | (3, true) => (1, 1),
        (1, _) => (2, 2),
        (2, _) => (2, 1),
        _ => (1, 1),
    }
}

fn skip_h264_scaling_list(r: &mut BitReader, size: usize) -> Result<(), Fault> {
    let mut last = 8i64;
    let mut next = 8i64;
    for _ in 0..size {
        if next != 0 {
            let delta = i64::from(r.se()?);
            next = (last + delta + 256).rem_euclid(256);
        }
        if next != 0 {
            last = next;
        }
    }
    Ok(())
}

fn h264_profile_name(profile_idc: u8, constraints: u8) -> Option<String> {
    let constraint_set1 = constraints & 0x40 != 0;
    let constraint_set3 = constraints & 0x10 != 0;
    let name = match profile_idc {
        66 if constraint_set1 => "Constrained Baseline",
        66 => "Baseline",
        77 => "Main",
        88 => "Extended",
        100 => "High",
        110 if constraint_set3 => "High 10 Intra",
        110 => "High 10",
        122 if constraint_set3 => "High 4:2:2 Intra",
        122 => "High 4:2:2",
        244 if constraint_set3 => "High 4:4:4 Intra",
        244 => "High 4:4:4 Predictive",
        44 => "CAVLC 4:4:4",
        _ => return None,
    };
    Some(name.to_string())
}

/// The VUI fields shared by H.264 and HEVC up to the timing info. HEVC has extra fields
/// (`neutral_chroma`, `field_seq`, `frame_field_info`, default display window) before timing.
fn parse_vui_common(r: &mut BitReader, info: &mut SpsInfo, hevc: bool) -> Result<(), Fault> {
    if r.flag()? {
        let idc = r.bits(8)?;
        if idc == 255 {
            r.bits(16)?;
            r.bits(16)?;
        }
    }
    if r.flag()? {
        r.flag()?;
    }
    if r.flag()? {
        let _video_format = r.bits(3)?;
        info.colour.full_range = Some(r.flag()?);
        if r.flag()? {
            info.colour.primaries = Some(r.bits(8)? as u8);
            info.colour.transfer = Some(r.bits(8)? as u8);
            info.colour.matrix = Some(r.bits(8)? as u8);
        }
    }
    if r.flag()? {
        r.ue()?;
        r.ue()?;
    }
    if hevc {
        let _neutral_chroma = r.flag()?;
        let _field_seq = r.flag()?;
        let _frame_field_info = r.flag()?;
        if r.flag()? {
            for _ in 0..4 {
                r.ue()?;
            }
        }
    }
    if r.flag()? {
        let num_units_in_tick = r.bits(32)?;
        let time_scale = r.bits(32)?;
        if num_units_in_tick != 0 && time_scale != 0 {
            info.timing = Some((num_units_in_tick, time_scale));
        }
    }
    Ok(())
}

/// Parses an HEVC SPS NAL unit (with its two-byte header, without start code).
pub fn parse_hevc_sps(nal: &[u8]) -> Result<SpsInfo, Fault> {
    const E: &str = "HEVC SPS";
    let rbsp = rbsp_from_nal(nal);
    let mut r = BitReader::new(rbsp.get(2..).unwrap_or(&[]), E);
    let _vps_id = r.bits(4)?;
    let max_sub_layers_minus1 = r.bits(3)?;
    let _nesting = r.flag()?;
    // profile_tier_level(1, max_sub_layers_minus1)
    let _profile_space = r.bits(2)?;
    let _tier = r.flag()?;
    let profile_idc = r.bits(5)? as u8;
    let compat = r.bits(32)?;
    r.bits(32)?;
    r.bits(16)?; // 48 bits of constraint flags
    let _level = r.bits(8)?;
    let mut sub_profile_present = [false; 8];
    let mut sub_level_present = [false; 8];
    for i in 0..max_sub_layers_minus1 as usize {
        sub_profile_present[i] = r.flag()?;
        sub_level_present[i] = r.flag()?;
    }
    if max_sub_layers_minus1 > 0 {
        for _ in max_sub_layers_minus1..8 {
            r.bits(2)?;
        }
    }
    for i in 0..max_sub_layers_minus1 as usize {
        if sub_profile_present[i] {
            r.bits(32)?;
            r.bits(32)?;
            r.bits(24)?; // 88 bits
        }
        if sub_level_present[i] {
            r.bits(8)?;
        }
    }
    let _sps_id = r.ue()?;
    let chroma_format = r.ue()?;
    if chroma_format > 3 {
        return Err(corrupt(E, format!("chroma_format_idc {chroma_format} is out of range")));
    }
    let separate_colour_plane = if chroma_format == 3 { r.flag()? } else { false };
    let coded_w = u64::from(r.ue()?);
    let coded_h = u64::from(r.ue()?);
    let (mut crop_l, mut crop_r, mut crop_t, mut crop_b) = (0u64, 0u64, 0u64, 0u64);
    if r.flag()? {
        crop_l = r.ue()?.into();
        crop_r = r.ue()?.into();
        crop_t = r.ue()?.into();
        crop_b = r.ue()?.into();
    }
    let (sub_w, sub_h) = chroma_subsampling(chroma_format, separate_colour_plane);
    let width = coded_w
        .checked_sub((crop_l + crop_r) * sub_w)
        .and_then(|w| u32::try_from(w).ok())
        .ok_or_else(|| corrupt(E, "conformance window exceeds the coded width"))?;
    let height = coded_h
        .checked_sub((crop_t + crop_b) * sub_h)
        .and_then(|h| u32::try_from(h).ok())
        .ok_or_else(|| corrupt(E, "conformance window exceeds the coded height"))?;
    let bit_depth_luma =
        r.ue()?.checked_add(8).filter(|&d| d <= 16).ok_or_else(|| corrupt(E, "bit depth out of range"))?;
    let bit_depth_chroma =
        r.ue()?.checked_add(8).filter(|&d| d <= 16).ok_or_else(|| corrupt(E, "bit depth out of range"))?;
    let profile_idc = if profile_idc == 0 {
        // Some encoders only set the compatibility flag.
        (1..32u8).find(|&p| compat & (1u32 << (31 - p)) != 0).unwrap_or(0)
    } else {
        profile_idc
    };
    let profile = match profile_idc {
        1 => Some("Main"),
        2 => Some("Main 10"),
        3 => Some("Main Still Picture"),
        4 => Some("Rext"),
        _ => None,
    }
    .map(str::to_string);
    let mut info = SpsInfo {
        profile_idc,
        profile,
        chroma_format: chroma_format as u8,
        bit_depth_luma: bit_depth_luma as u8,
        bit_depth_chroma: bit_depth_chroma as u8,
        width,
        height,
        frame_mbs_only: true,
        ..SpsInfo::default()
    };
    // Everything below only leads to the VUI; a failure there keeps the facts above.
    let _ = parse_hevc_sps_tail(&mut r, max_sub_layers_minus1, &mut info);
    Ok(info)
}

fn parse_hevc_sps_tail(r: &mut BitReader, max_sub_layers_minus1: u32, info: &mut SpsInfo) -> Result<(), Fault> {
    const E: &str = "HEVC SPS";
    let log2_max_poc_lsb = r.ue()? + 4;
    if log2_max_poc_lsb > 16 {
        return Err(corrupt(E, "log2_max_pic_order_cnt_lsb out of range"));
    }
    let ordering_all = r.flag()?;
    let first = if ordering_all { 0 } else { max_sub_layers_minus1 };
    for _ in first..=max_sub_layers_minus1 {
        r.ue()?;
        r.ue()?;
        r.ue()?;
    }
    for _ in 0..6 {
        r.ue()?; // log2 CB/TB sizes and transform hierarchy depths
    }
    if r.flag()? && r.flag()? {
        // scaling_list_data()
        for size_id in 0..4u32 {
            let step = if size_id == 3 { 3 } else { 1 };
            let mut matrix_id = 0;
            while matrix_id < 6 {
                if !r.flag()? {
                    r.ue()?;
                } else {
                    let coefs = 64.min(1u32 << (4 + (size_id << 1)));
                    if size_id > 1 {
                        r.se()?;
                    }
                    for _ in 0..coefs {
                        r.se()?;
                    }
                }
                matrix_id += step;
            }
        }
    }
    let _amp = r.flag()?;
    let _sao = r.flag()?;
    if r.flag()? {
        r.bits(4)?;
        r.bits(4)?;
        r.ue()?;
        r.ue()?;
        r.flag()?;
    }
    let num_sets = r.ue()?;
    if num_sets > 64 {
        return Err(corrupt(E, "num_short_term_ref_pic_sets above 64"));
    }
    let mut num_delta_pocs: Vec<u32> = Vec::with_capacity(num_sets as usize);
    for idx in 0..num_sets {
        let inter = if idx != 0 { r.flag()? } else { false };
        if inter {
            // Only parsed inside the SPS here, so delta_idx_minus1 is absent (idx < num_sets).
            r.flag()?;
            r.ue()?;
            let ref_idx = idx as usize - 1;
            let ref_count = *num_delta_pocs.get(ref_idx).ok_or_else(|| corrupt(E, "bad short-term RPS reference"))?;
            let mut count = 0;
            for _ in 0..=ref_count {
                let used = r.flag()?;
                let use_delta = if used { true } else { r.flag()? };
                if use_delta {
                    count += 1;
                }
            }
            num_delta_pocs.push(count);
        } else {
            let neg = r.ue()?;
            let pos = r.ue()?;
            if neg > 16 || pos > 16 {
                return Err(corrupt(E, "too many pictures in a short-term RPS"));
            }
            for _ in 0..neg + pos {
                r.ue()?;
                r.flag()?;
            }
            num_delta_pocs.push(neg + pos);
        }
    }
    if r.flag()? {
        let lt = r.ue()?;
        if lt > 32 {
            return Err(corrupt(E, "num_long_term_ref_pics_sps above 32"));
        }
        for _ in 0..lt {
            r.bits(log2_max_poc_lsb)?;
            r.flag()?;
        }
    }
    let _temporal_mvp = r.flag()?;
    let _strong_intra = r.flag()?;
    if r.flag()? {
        parse_vui_common(r, info, true)?;
    }
    Ok(())
}

/// Reads bytes from a slice with bounds checks, naming the structure in errors.
pub struct ByteCursor<'a> {
    data: &'a [u8],
    pos: usize,
    element: &'static str,
}

impl<'a> ByteCursor<'a> {
    pub fn new(data: &'a [u8], element: &'static str) -> Self {
        ByteCursor { data, pos: 0, element }
    }
    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], Fault> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len()).ok_or_else(|| {
            corrupt(self.element, format!("needs {n} more bytes at offset {} but the record ends", self.pos))
        })?;
        let out = &self.data[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    pub fn u8(&mut self) -> Result<u8, Fault> {
        Ok(self.bytes(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16, Fault> {
        let b = self.bytes(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    pub fn u32(&mut self) -> Result<u32, Fault> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn u64(&mut self) -> Result<u64, Fault> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
}

/// MSB-first bit reader over an RBSP with exp-Golomb codes.
pub struct BitReader<'a> {
    data: &'a [u8],
    bit: usize,
    element: &'static str,
}

impl<'a> BitReader<'a> {
    pub fn new(data: &'a [u8], element: &'static str) -> Self {
        BitReader { data, bit: 0, element }
    }

    pub fn flag(&mut self) -> Result<bool, Fault> {
        let byte =
            self.data.get(self.bit / 8).ok_or_else(|| corrupt(self.element, "ends before all its fields were read"))?;
        let v = (byte >> (7 - (self.bit % 8))) & 1;
        self.bit += 1;
        Ok(v == 1)
    }

    /// Reads up to 32 bits.
    pub fn bits(&mut self, n: u32) -> Result<u32, Fault> {
        debug_assert!(n <= 32);
        let mut v = 0u64;
        for _ in 0..n {
            v = (v << 1) | u64::from(self.flag()?);
        }
        Ok(v as u32)
    }

    /// Unsigned exp-Golomb; codes longer than 32 bits are rejected.
    pub fn ue(&mut self) -> Result<u32, Fault> {
        let mut zeros = 0u32;
        while !self.flag()? {
            zeros += 1;
            if zeros > 31 {
                return Err(corrupt(self.element, "an exp-Golomb code is longer than 32 bits"));
            }
        }
        let rest = self.bits(zeros)?;
        Ok(((1u64 << zeros) - 1 + u64::from(rest)).min(u64::from(u32::MAX)) as u32)
    }

    /// Signed exp-Golomb.
    pub fn se(&mut self) -> Result<i32, Fault> {
        let k = i64::from(self.ue()?);
        let v = if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) };
        Ok(v as i32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_golomb_reads_known_codes() {
        // 1 | 010 | 011 | 00100 → ue 0, 1, 2, 3
        let data = [0b1010_0110, 0b0100_0000];
        let mut r = BitReader::new(&data, "test");
        assert_eq!(r.ue().unwrap(), 0);
        assert_eq!(r.ue().unwrap(), 1);
        assert_eq!(r.ue().unwrap(), 2);
        assert_eq!(r.ue().unwrap(), 3);
    }

    #[test]
    fn exp_golomb_rejects_runaway_zeros() {
        let data = [0u8; 8];
        assert!(BitReader::new(&data, "test").ue().is_err());
    }

    #[test]
    fn emulation_prevention_is_removed() {
        assert_eq!(rbsp_from_nal(&[0x67, 0, 0, 3, 1, 0, 0, 3, 0, 3]), vec![0x67, 0, 0, 1, 0, 0, 0, 3]);
    }

    #[test]
    fn annexb_split_handles_3_and_4_byte_start_codes() {
        let data = [0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4];
        let nals: Vec<&[u8]> = AnnexBNals::new(&data).collect();
        assert_eq!(nals, vec![&[0x67, 1, 2][..], &[0x68, 3][..], &[0x65, 4][..]]);
    }
}

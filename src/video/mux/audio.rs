//! Copying source audio tracks into the output: which samples go, at what times, and with
//! what codec configuration.
//!
//! Sample bytes are never touched. Within one container family the configuration is copied
//! verbatim (the MP4 sample entry box; Matroska's CodecID, CodecPrivate, Audio element,
//! CodecDelay and SeekPreRoll). Across families only AAC and Opus are translated (`esds` ↔
//! AudioSpecificConfig, `dOps` ↔ `OpusHead`, as ISO/IEC 14496-3/-14 and the Opus-in-ISOBMFF
//! and Matroska codec mappings define them); other codecs are left out with a warning.
//!
//! Timing: every sample keeps its source presentation time. In MP4 the first copied sample's
//! time becomes an edit list entry (an empty edit when it is late, a `media_time` when it is
//! early, e.g. AAC priming at -1024). In Matroska, times become block timestamps; a negative
//! first time (AAC priming from an MP4 source) becomes the track's `CodecDelay`.

use crate::video::demux::{AudioConfig, AudioSample, AudioTrack};

use super::ContainerKind;

/// How sample durations are found for the output track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DurationRule {
    /// The source's own durations (same timescale).
    Source,
    /// Every frame lasts this many output ticks (AAC: 1024 or 960 samples).
    Fixed(i64),
    /// From each Opus packet's TOC byte (48 kHz ticks).
    OpusToc,
}

/// What the writer needs to declare an audio track.
#[derive(Debug, Clone)]
pub(crate) enum AudioDeclaration {
    Mp4 {
        /// The whole sample entry box (size, fourcc, payload).
        sample_entry_box: Vec<u8>,
        timescale: u32,
    },
    Matroska {
        codec_id: String,
        codec_private: Vec<u8>,
        audio_element: Vec<u8>,
        codec_delay_ns: Option<u64>,
        seek_pre_roll_ns: Option<u64>,
        default_duration_ns: Option<u64>,
    },
}

/// One source audio track on its way into the output.
#[derive(Debug, Clone)]
pub(crate) struct AudioPlan {
    /// Index into the source demuxer's audio tracks.
    pub source_index: usize,
    pub source: AudioTrack,
    pub declaration: AudioDeclaration,
    pub language: Option<String>,
    pub durations: DurationRule,
    /// Output ticks per second of this track's times (MP4: the track timescale; Matroska:
    /// the segment's).
    pub out_timescale: u64,
    /// Subtracted from source times (in source ticks) before rescaling: the source
    /// Matroska CodecDelay when moving to MP4.
    pub source_delay: i64,
    /// Added to rescaled times in Matroska output (the CodecDelay written for it).
    pub block_shift: i64,
    /// Next source sample to consider.
    pub next: usize,
    /// Samples written.
    pub written: u64,
}

/// Ticks `v` of a `from` Hz clock in a `to` Hz clock, rounded to nearest (ties up).
pub fn rescale(v: i64, from: u64, to: u64) -> i64 {
    if from == to {
        return v;
    }
    let num = i128::from(v) * i128::from(to) * 2 + i128::from(from);
    let den = i128::from(from) * 2;
    i64::try_from(num.div_euclid(den)).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

/// Whether time `a` (of an `ta` Hz clock) is before time `b` (of a `tb` Hz clock), exactly.
pub fn earlier(a: i64, ta: u64, b: i64, tb: u64) -> bool {
    i128::from(a) * i128::from(tb) < i128::from(b) * i128::from(ta)
}

impl AudioPlan {
    /// Plans `track` (source index `source_index`) for `target`. `segment_timescale` is the
    /// Matroska output's ticks per second. Err is the warning when the track cannot be copied.
    pub(crate) fn new(
        source_index: usize,
        track: &AudioTrack,
        target: ContainerKind,
        segment_timescale: u64,
    ) -> Result<AudioPlan, String> {
        let label = format!("audio track {} ({})", track.source_id, track.info.codec);
        if track.samples.is_empty() {
            return Err(format!("{label} has no samples"));
        }
        let mut plan = AudioPlan {
            source_index,
            source: track.clone(),
            declaration: AudioDeclaration::Mp4 { sample_entry_box: Vec::new(), timescale: track.timescale },
            language: track.language.clone(),
            durations: DurationRule::Source,
            out_timescale: u64::from(track.timescale),
            source_delay: 0,
            block_shift: 0,
            next: 0,
            written: 0,
        };
        match (&track.config, target) {
            (AudioConfig::Mp4 { fourcc, sample_entry }, ContainerKind::Mp4) => {
                plan.declaration =
                    AudioDeclaration::Mp4 { sample_entry_box: boxed(fourcc, sample_entry), timescale: track.timescale };
            }
            (
                AudioConfig::Matroska {
                    codec_id,
                    codec_private,
                    audio_element,
                    codec_delay_ns,
                    seek_pre_roll_ns,
                    default_duration_ns,
                },
                ContainerKind::Matroska,
            ) => {
                plan.declaration = AudioDeclaration::Matroska {
                    codec_id: codec_id.clone(),
                    codec_private: codec_private.clone(),
                    audio_element: audio_element.clone(),
                    codec_delay_ns: *codec_delay_ns,
                    seek_pre_roll_ns: *seek_pre_roll_ns,
                    default_duration_ns: *default_duration_ns,
                };
                plan.out_timescale = segment_timescale;
            }
            (AudioConfig::Mp4 { fourcc, sample_entry }, ContainerKind::Matroska) => {
                let (sample_rate, channels) = (track.info.sample_rate, track.info.channels);
                let (codec_id, codec_private, codec_delay_ns, seek_pre_roll_ns) = match fourcc {
                    b"mp4a" => {
                        let asc = esds_audio_specific_config(sample_entry)
                            .ok_or_else(|| format!("{label}: no AudioSpecificConfig in its esds box"))?;
                        ("A_AAC".to_string(), asc, None, None)
                    }
                    b"Opus" => {
                        let head = opus_head_from_dops(sample_entry)
                            .ok_or_else(|| format!("{label}: no valid dOps box in its sample entry"))?;
                        let pre_skip = u64::from(u16::from_le_bytes([head[10], head[11]]));
                        ("A_OPUS".to_string(), head, Some(pre_skip * 1_000_000_000 / 48_000), Some(80_000_000))
                    }
                    _ => {
                        return Err(format!(
                            "{label} cannot be carried from MP4 into Matroska by vrseg (only AAC and Opus are translated); write an .mp4 output to keep it"
                        ))
                    }
                };
                if sample_rate == 0 || channels == 0 {
                    return Err(format!("{label}: its sample entry gives no sample rate or channel count"));
                }
                let mut audio_element = Vec::new();
                audio_element.extend(super::matroska::float_element(0xB5, f64::from(sample_rate)));
                audio_element.extend(super::matroska::uint_element(0x9F, u64::from(channels)));
                plan.out_timescale = segment_timescale;
                // A negative first time (AAC priming, Opus pre-skip via the edit list)
                // becomes CodecDelay; Opus always declares its pre-skip there.
                let first = track.samples[0].pts;
                let delay_ns = match codec_delay_ns {
                    Some(ns) => Some(ns),
                    None if first < 0 => Some(rescale(-first, u64::from(track.timescale), 1_000_000_000) as u64),
                    None => None,
                };
                plan.block_shift = delay_ns.map_or(0, |ns| rescale(ns as i64, 1_000_000_000, segment_timescale));
                plan.declaration = AudioDeclaration::Matroska {
                    codec_id,
                    codec_private,
                    audio_element,
                    codec_delay_ns: delay_ns,
                    seek_pre_roll_ns,
                    default_duration_ns: None,
                };
            }
            (AudioConfig::Matroska { codec_id, codec_private, codec_delay_ns, .. }, ContainerKind::Mp4) => {
                if track.samples.iter().any(|s| s.pts < 0) {
                    return Err(format!("{label} has negative block times"));
                }
                let channels = u16::try_from(track.info.channels).ok().filter(|&c| c > 0);
                let sample_rate = track.info.sample_rate;
                let channels = channels.ok_or_else(|| format!("{label}: no channel count"))?;
                let (sample_entry_box, timescale, durations) = match codec_id.as_str() {
                    id if id == "A_AAC" || id.starts_with("A_AAC/") => {
                        let frame = aac_frame_length(codec_private)
                            .ok_or_else(|| format!("{label}: its CodecPrivate is not an AAC-LC AudioSpecificConfig (HE-AAC and old A_AAC/ ids are not translated)"))?;
                        let rate = u16::try_from(sample_rate)
                            .ok()
                            .filter(|&r| r > 0)
                            .ok_or_else(|| format!("{label}: sample rate {sample_rate} does not fit an MP4 audio entry"))?;
                        (mp4a_entry(channels, rate, codec_private), u32::from(rate), DurationRule::Fixed(frame))
                    }
                    "A_OPUS" => {
                        let dops = dops_from_opus_head(codec_private)
                            .ok_or_else(|| format!("{label}: its CodecPrivate is not an OpusHead"))?;
                        (opus_entry(channels, &dops), 48_000, DurationRule::OpusToc)
                    }
                    other => {
                        return Err(format!(
                            "{label} ({other}) cannot be carried from Matroska into MP4 by vrseg (only AAC and Opus are translated); write an .mkv output to keep it"
                        ))
                    }
                };
                plan.declaration = AudioDeclaration::Mp4 { sample_entry_box, timescale };
                plan.out_timescale = u64::from(timescale);
                plan.durations = durations;
                plan.source_delay =
                    codec_delay_ns.map_or(0, |ns| rescale(ns as i64, 1_000_000_000, u64::from(track.timescale)));
            }
        }
        Ok(plan)
    }

    /// Whether the source is in the output's container family (configuration copied verbatim).
    pub(crate) fn same_family(&self) -> bool {
        matches!(
            (&self.source.config, &self.declaration),
            (AudioConfig::Mp4 { .. }, AudioDeclaration::Mp4 { .. })
                | (AudioConfig::Matroska { .. }, AudioDeclaration::Matroska { .. })
        )
    }

    /// A source sample's presentation time in output ticks (before any Matroska block shift).
    pub(crate) fn out_time(&self, sample: &AudioSample) -> i64 {
        rescale(sample.pts - self.source_delay, u64::from(self.source.timescale), self.out_timescale)
    }

    /// A source sample's duration in output ticks; `data` is needed for Opus TOC durations.
    pub(crate) fn out_duration(&self, sample: &AudioSample, data: &[u8]) -> i64 {
        match self.durations {
            DurationRule::Source => rescale(sample.duration, u64::from(self.source.timescale), self.out_timescale),
            DurationRule::Fixed(d) => d,
            DurationRule::OpusToc => opus_packet_samples(data).unwrap_or(960),
        }
    }

    /// The source sample's time in seconds-comparable form: (ticks, ticks per second).
    pub(crate) fn source_time(&self, sample: &AudioSample) -> (i64, u64) {
        (sample.pts - self.source_delay, u64::from(self.source.timescale))
    }
}

fn boxed(fourcc: &[u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&u32::try_from(payload.len() + 8).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(fourcc);
    out.extend_from_slice(payload);
    out
}

/// The child boxes of an MP4 AudioSampleEntry payload (after its 28 bytes of fields; v1/v2
/// QuickTime entries carry 16 or 36 more).
fn sound_entry_children(entry: &[u8]) -> &[u8] {
    let version = entry.get(8..10).map_or(0, |v| u16::from_be_bytes([v[0], v[1]]));
    let skip = match version {
        1 => 28 + 16,
        2 => 28 + 36,
        _ => 28,
    };
    entry.get(skip..).unwrap_or(&[])
}

fn find_child<'a>(mut data: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    while data.len() >= 8 {
        let size = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
        if size < 8 || size > data.len() {
            return None;
        }
        if &data[4..8] == kind {
            return Some(&data[8..size]);
        }
        data = &data[size..];
    }
    None
}

/// An MPEG-4 descriptor: (tag, payload, rest).
fn descriptor(data: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, mut rest) = data.split_first()?;
    let mut len = 0usize;
    for _ in 0..4 {
        let (&b, r) = rest.split_first()?;
        rest = r;
        len = (len << 7) | usize::from(b & 0x7f);
        if b & 0x80 == 0 {
            break;
        }
    }
    (len <= rest.len()).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The AudioSpecificConfig inside an `mp4a` entry's `esds` (ES_Descriptor → DecoderConfig →
/// DecoderSpecificInfo).
pub(crate) fn esds_audio_specific_config(entry: &[u8]) -> Option<Vec<u8>> {
    let esds = find_child(sound_entry_children(entry), b"esds")?;
    let (tag, es, _) = descriptor(esds.get(4..)?)?;
    if tag != 0x03 {
        return None;
    }
    let flags = *es.get(2)?;
    let mut rest = es.get(3..)?;
    if flags & 0x80 != 0 {
        rest = rest.get(2..)?;
    }
    if flags & 0x40 != 0 {
        let url_len = usize::from(*rest.first()?);
        rest = rest.get(1 + url_len..)?;
    }
    if flags & 0x20 != 0 {
        rest = rest.get(2..)?;
    }
    while let Some((tag, payload, next)) = descriptor(rest) {
        if tag == 0x04 {
            let mut inner = payload.get(13..)?;
            while let Some((t, p, n)) = descriptor(inner) {
                if t == 0x05 {
                    return Some(p.to_vec());
                }
                inner = n;
            }
            return None;
        }
        rest = next;
    }
    None
}

/// Samples per AAC frame from an AudioSpecificConfig: 1024, or 960 with frameLengthFlag.
/// None for object types other than AAC Main/LC/SSR/LTP (HE-AAC's SBR changes the clock).
fn aac_frame_length(asc: &[u8]) -> Option<i64> {
    let mut r = crate::video::demux::nal::BitReader::new(asc, "AudioSpecificConfig");
    let object_type = r.bits(5).ok()?;
    if !(1..=4).contains(&object_type) {
        return None;
    }
    let frequency_index = r.bits(4).ok()?;
    if frequency_index == 15 {
        r.bits(24).ok()?;
    }
    let _channels = r.bits(4).ok()?;
    Some(if r.flag().ok()? { 960 } else { 1024 })
}

/// An `mp4a` sample entry box with an `esds` carrying `asc`.
fn mp4a_entry(channels: u16, sample_rate: u16, asc: &[u8]) -> Vec<u8> {
    let descriptor_bytes = |tag: u8, payload: &[u8]| -> Vec<u8> {
        let mut d = vec![tag];
        // Four-byte length form, as most muxers write it.
        let len = payload.len() as u32;
        d.extend_from_slice(&[
            0x80 | ((len >> 21) & 0x7f) as u8,
            0x80 | ((len >> 14) & 0x7f) as u8,
            0x80 | ((len >> 7) & 0x7f) as u8,
            (len & 0x7f) as u8,
        ]);
        d.extend_from_slice(payload);
        d
    };
    let mut dec_config = vec![0x40, 0x15, 0, 0, 0];
    dec_config.extend_from_slice(&0u32.to_be_bytes()); // max bitrate unknown
    dec_config.extend_from_slice(&0u32.to_be_bytes()); // average bitrate unknown
    dec_config.extend(descriptor_bytes(0x05, asc));
    let mut es = vec![0, 0, 0]; // ES_ID 0, no flags
    es.extend(descriptor_bytes(0x04, &dec_config));
    es.extend(descriptor_bytes(0x06, &[0x02]));
    let mut esds = vec![0, 0, 0, 0];
    esds.extend(descriptor_bytes(0x03, &es));
    let mut entry = audio_sample_entry_fields(channels, sample_rate);
    entry.extend(boxed(b"esds", &esds));
    boxed(b"mp4a", &entry)
}

fn opus_entry(channels: u16, dops: &[u8]) -> Vec<u8> {
    let mut entry = audio_sample_entry_fields(channels, 48_000);
    entry.extend(boxed(b"dOps", dops));
    boxed(b"Opus", &entry)
}

/// AudioSampleEntry (version 0) fields: reserved, data reference 1, channels, 16-bit, rate.
fn audio_sample_entry_fields(channels: u16, sample_rate: u16) -> Vec<u8> {
    let mut e = vec![0u8; 6];
    e.extend_from_slice(&1u16.to_be_bytes());
    e.extend_from_slice(&[0u8; 8]);
    e.extend_from_slice(&channels.to_be_bytes());
    e.extend_from_slice(&16u16.to_be_bytes());
    e.extend_from_slice(&[0u8; 4]);
    e.extend_from_slice(&(u32::from(sample_rate) << 16).to_be_bytes());
    e
}

/// `OpusHead` (Matroska CodecPrivate, little-endian) → `dOps` payload (big-endian).
fn dops_from_opus_head(head: &[u8]) -> Option<Vec<u8>> {
    if head.len() < 19 || &head[..8] != b"OpusHead" {
        return None;
    }
    let channels = head[9];
    let family = head[18];
    let mut d = vec![0, channels];
    d.extend_from_slice(&u16::from_le_bytes([head[10], head[11]]).to_be_bytes());
    d.extend_from_slice(&u32::from_le_bytes([head[12], head[13], head[14], head[15]]).to_be_bytes());
    d.extend_from_slice(&i16::from_le_bytes([head[16], head[17]]).to_be_bytes());
    d.push(family);
    if family != 0 {
        let table = head.get(19..21 + usize::from(channels))?;
        d.extend_from_slice(table);
    }
    Some(d)
}

/// An `Opus` entry's `dOps` payload → `OpusHead`.
fn opus_head_from_dops(entry: &[u8]) -> Option<Vec<u8>> {
    let d = find_child(sound_entry_children(entry), b"dOps")?;
    if d.len() < 11 || d[0] != 0 {
        return None;
    }
    let channels = d[1];
    let family = d[10];
    let mut h = b"OpusHead".to_vec();
    h.push(1);
    h.push(channels);
    h.extend_from_slice(&u16::from_be_bytes([d[2], d[3]]).to_le_bytes());
    h.extend_from_slice(&u32::from_be_bytes([d[4], d[5], d[6], d[7]]).to_le_bytes());
    h.extend_from_slice(&i16::from_be_bytes([d[8], d[9]]).to_le_bytes());
    h.push(family);
    if family != 0 {
        h.extend_from_slice(d.get(11..13 + usize::from(channels))?);
    }
    Some(h)
}

/// Samples (at 48 kHz) in an Opus packet, from its TOC byte (RFC 6716 §3.1).
pub(crate) fn opus_packet_samples(packet: &[u8]) -> Option<i64> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    // Frame sizes in 48 kHz samples: SILK 10/20/40/60 ms, hybrid 10/20 ms, CELT 2.5/5/10/20 ms.
    let frame = match config {
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)],
        12..=15 => [480, 960][usize::from(config % 2)],
        _ => [120, 240, 480, 960][usize::from(config % 4)],
    };
    let frames = match toc & 0x03 {
        0 => 1,
        1 | 2 => 2,
        _ => i64::from(*packet.get(1)? & 0x3f),
    };
    Some(frame * frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rescale_rounds_to_nearest_and_handles_negatives() {
        assert_eq!(rescale(1, 3, 3), 1);
        assert_eq!(rescale(512, 15360, 1000), 33); // 33.33 ms
        assert_eq!(rescale(-1024, 48000, 1000), -21); // -21.33 ms
        assert_eq!(rescale(1, 2, 1), 1); // 0.5 rounds up
        assert_eq!(rescale(-1, 2, 1), 0); // -0.5 rounds up
    }

    #[test]
    fn opus_head_and_dops_round_trip() {
        let head = [b"OpusHead".as_slice(), &[1, 2, 0x38, 0x01, 0x80, 0xBB, 0, 0, 0, 0, 0]].concat();
        let dops = dops_from_opus_head(&head).unwrap();
        assert_eq!(dops, [0, 2, 0x01, 0x38, 0, 0, 0xBB, 0x80, 0, 0, 0]);
        let entry = [audio_sample_entry_fields(2, 48000), boxed(b"dOps", &dops)].concat();
        assert_eq!(opus_head_from_dops(&entry).unwrap(), head);
    }

    #[test]
    fn esds_round_trip_and_aac_frame_length() {
        let asc = [0x11, 0x90]; // AAC-LC, 48 kHz, stereo
        let entry = mp4a_entry(2, 48000, &asc);
        assert_eq!(esds_audio_specific_config(&entry[8..]).unwrap(), asc);
        assert_eq!(aac_frame_length(&asc), Some(1024));
        assert_eq!(aac_frame_length(&[0x11, 0x94]), Some(960));
        assert_eq!(aac_frame_length(&[0x2B, 0x92]), None); // HE-AAC (object type 5)
    }

    #[test]
    fn opus_toc_durations() {
        assert_eq!(opus_packet_samples(&[0xFC]), Some(960)); // CELT FB 20 ms, one frame
        assert_eq!(opus_packet_samples(&[0x79]), Some(1920)); // config 15 (hybrid 20 ms), two frames
        assert_eq!(opus_packet_samples(&[0x1B, 0x03]), Some(3 * 2880)); // SILK 60 ms, code 3, 3 frames
        assert_eq!(opus_packet_samples(&[]), None);
    }
}

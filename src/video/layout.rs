//! Stereo layout detection: which part of each frame is which eye.
//!
//! Sources, in order of trust:
//! 1. **Container metadata**: MP4 `st3d` (Spherical Video V2, inside the visual sample entry)
//!    or Matroska `StereoMode`.
//! 2. **Filename tokens**: `_LR`, `_RL`, `_SBS`, `_3dh` (side by side); `_TB`, `_BT`, `_OU`,
//!    `_3dv` (top/bottom); `_MONO`. Any case; a token counts only when delimited by `_ - . space`
//!    or the ends of the file stem, so `WORLD.mp4` does not match `LR`. Tokens next to `180`,
//!    `360`, `fisheye` etc. work because those are separate tokens (`clip_180_LR.mp4`).
//! 3. **Aspect ratio**: exactly 2:1 → side by side, exactly 1:2 → top/bottom, else mono.

use std::path::Path;

use serde::Serialize;

/// How the two eyes are packed into one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StereoLayout {
    /// Side by side: left and right halves.
    Sbs,
    /// Top/bottom (over/under).
    Tb,
    /// One view.
    Mono,
}

impl StereoLayout {
    pub fn name(self) -> &'static str {
        match self {
            StereoLayout::Sbs => "sbs",
            StereoLayout::Tb => "tb",
            StereoLayout::Mono => "mono",
        }
    }
}

/// Where a [`StereoLayout`] decision came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LayoutSource {
    Metadata,
    Filename,
    Aspect,
}

impl LayoutSource {
    pub fn name(self) -> &'static str {
        match self {
            LayoutSource::Metadata => "metadata",
            LayoutSource::Filename => "filename",
            LayoutSource::Aspect => "aspect",
        }
    }
}

/// Stereo packing as the container signals it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum StereoMode {
    Mono,
    SideBySideLeftFirst,
    SideBySideRightFirst,
    TopBottomLeftFirst,
    TopBottomRightFirst,
    /// Another packing (checkerboard, row/column interleaved, anaglyph, ...), by its raw code.
    Other(u64),
}

impl StereoMode {
    /// Maps a Matroska `StereoMode` value (0 mono, 1 side by side left first, 2 top-bottom
    /// right first, 3 top-bottom left first, 11 side by side right first, others exotic).
    pub fn from_matroska(value: u64) -> StereoMode {
        match value {
            0 => StereoMode::Mono,
            1 => StereoMode::SideBySideLeftFirst,
            2 => StereoMode::TopBottomRightFirst,
            3 => StereoMode::TopBottomLeftFirst,
            11 => StereoMode::SideBySideRightFirst,
            other => StereoMode::Other(other),
        }
    }

    /// The layout this mode implies, or None for packings vrseg does not split.
    pub fn layout(self) -> Option<StereoLayout> {
        match self {
            StereoMode::Mono => Some(StereoLayout::Mono),
            StereoMode::SideBySideLeftFirst | StereoMode::SideBySideRightFirst => Some(StereoLayout::Sbs),
            StereoMode::TopBottomLeftFirst | StereoMode::TopBottomRightFirst => Some(StereoLayout::Tb),
            StereoMode::Other(_) => None,
        }
    }

    /// Whether the right eye comes first (left half / top half is the right eye).
    pub fn right_eye_first(self) -> bool {
        matches!(self, StereoMode::SideBySideRightFirst | StereoMode::TopBottomRightFirst)
    }
}

/// The outcome of layout detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DetectedLayout {
    pub layout: StereoLayout,
    pub source: LayoutSource,
    /// True when the first half (left or top) holds the right eye (`_RL`, `_BT`, StereoMode 11).
    pub right_eye_first: bool,
}

/// Decides the layout from metadata, then the file name, then the frame's aspect ratio.
pub fn detect_layout(metadata: Option<StereoMode>, path: &Path, width: u32, height: u32) -> DetectedLayout {
    if let Some(mode) = metadata {
        if let Some(layout) = mode.layout() {
            return DetectedLayout { layout, source: LayoutSource::Metadata, right_eye_first: mode.right_eye_first() };
        }
    }
    if let Some((layout, right_eye_first)) = layout_from_filename(path) {
        return DetectedLayout { layout, source: LayoutSource::Filename, right_eye_first };
    }
    DetectedLayout { layout: layout_from_aspect(width, height), source: LayoutSource::Aspect, right_eye_first: false }
}

/// Layout from tokens in the file name (the stem, without the extension), with the
/// right-eye-first flag. The last recognised token wins (`x_LR_mono` is mono).
pub fn layout_from_filename(path: &Path) -> Option<(StereoLayout, bool)> {
    let stem = path.file_stem()?.to_str()?;
    stem.split(['_', '-', '.', ' '])
        .filter_map(|token| match token.to_ascii_lowercase().as_str() {
            "lr" | "sbs" | "3dh" => Some((StereoLayout::Sbs, false)),
            "rl" => Some((StereoLayout::Sbs, true)),
            "tb" | "ou" | "3dv" => Some((StereoLayout::Tb, false)),
            "bt" => Some((StereoLayout::Tb, true)),
            "mono" => Some((StereoLayout::Mono, false)),
            _ => None,
        })
        .next_back()
}

/// Exactly 2:1 → side by side, exactly 1:2 → top/bottom, anything else → mono.
pub fn layout_from_aspect(width: u32, height: u32) -> StereoLayout {
    let (w, h) = (u64::from(width), u64::from(height));
    if w == 0 || h == 0 {
        StereoLayout::Mono
    } else if w == 2 * h {
        StereoLayout::Sbs
    } else if h == 2 * w {
        StereoLayout::Tb
    } else {
        StereoLayout::Mono
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_name(name: &str) -> Option<StereoLayout> {
        layout_from_filename(Path::new(name)).map(|(l, _)| l)
    }

    #[test]
    fn filename_tokens_any_case_and_delimiter() {
        assert_eq!(from_name("clip_LR.mp4"), Some(StereoLayout::Sbs));
        assert_eq!(from_name("clip_lr.mp4"), Some(StereoLayout::Sbs));
        assert_eq!(from_name("clip-SBS.mkv"), Some(StereoLayout::Sbs));
        assert_eq!(from_name("clip.3dh.mkv"), Some(StereoLayout::Sbs));
        assert_eq!(from_name("x_3dh.mkv"), Some(StereoLayout::Sbs));
        assert_eq!(from_name("my clip TB.mp4"), Some(StereoLayout::Tb));
        assert_eq!(from_name("clip_OU.mp4"), Some(StereoLayout::Tb));
        assert_eq!(from_name("clip_3dv.mp4"), Some(StereoLayout::Tb));
        assert_eq!(from_name("clip_MONO.mp4"), Some(StereoLayout::Mono));
        assert_eq!(from_name("LR.mp4"), Some(StereoLayout::Sbs));
    }

    #[test]
    fn filename_tokens_next_to_projection_tokens() {
        assert_eq!(from_name("clip_180_LR.mp4"), Some(StereoLayout::Sbs));
        assert_eq!(from_name("VR180_SBS.mp4"), Some(StereoLayout::Sbs));
        assert_eq!(from_name("trip_360_TB_fisheye.mp4"), Some(StereoLayout::Tb));
        assert_eq!(from_name("/videos/a-b/fisheye-RL.mov"), Some(StereoLayout::Sbs));
    }

    #[test]
    fn right_eye_first_tokens() {
        assert_eq!(layout_from_filename(Path::new("a_RL.mp4")), Some((StereoLayout::Sbs, true)));
        assert_eq!(layout_from_filename(Path::new("a_BT.mp4")), Some((StereoLayout::Tb, true)));
        assert_eq!(layout_from_filename(Path::new("a_LR.mp4")), Some((StereoLayout::Sbs, false)));
    }

    #[test]
    fn tokens_inside_words_do_not_match() {
        assert_eq!(from_name("WORLD.mp4"), None);
        assert_eq!(from_name("clip_LRX.mp4"), None);
        assert_eq!(from_name("clip_XLR.mp4"), None);
        assert_eq!(from_name("monorail_tbx.mp4"), None);
        assert_eq!(from_name("SBSclip.mp4"), None);
        assert_eq!(from_name("sbs_dir/clip.mp4"), None, "directories do not count");
        // The extension is not a token.
        assert_eq!(from_name("clip.tb"), None);
    }

    #[test]
    fn aspect_fallback_is_exact() {
        assert_eq!(layout_from_aspect(3840, 1920), StereoLayout::Sbs);
        assert_eq!(layout_from_aspect(1920, 3840), StereoLayout::Tb);
        assert_eq!(layout_from_aspect(1920, 1080), StereoLayout::Mono);
        assert_eq!(layout_from_aspect(3840, 1921), StereoLayout::Mono);
        assert_eq!(layout_from_aspect(0, 0), StereoLayout::Mono);
    }

    #[test]
    fn metadata_beats_filename_beats_aspect() {
        let d = detect_layout(Some(StereoMode::TopBottomLeftFirst), Path::new("a_LR.mp4"), 200, 100);
        assert_eq!((d.layout, d.source), (StereoLayout::Tb, LayoutSource::Metadata));
        let d = detect_layout(None, Path::new("a_TB.mp4"), 200, 100);
        assert_eq!((d.layout, d.source), (StereoLayout::Tb, LayoutSource::Filename));
        let d = detect_layout(None, Path::new("a.mp4"), 200, 100);
        assert_eq!((d.layout, d.source), (StereoLayout::Sbs, LayoutSource::Aspect));
        // Unusable metadata (checkerboard) falls through.
        let d = detect_layout(Some(StereoMode::Other(5)), Path::new("a_TB.mp4"), 200, 100);
        assert_eq!((d.layout, d.source), (StereoLayout::Tb, LayoutSource::Filename));
    }

    #[test]
    fn matroska_stereo_mode_values() {
        assert_eq!(StereoMode::from_matroska(1).layout(), Some(StereoLayout::Sbs));
        assert!(StereoMode::from_matroska(11).right_eye_first());
        assert_eq!(StereoMode::from_matroska(11).layout(), Some(StereoLayout::Sbs));
        assert_eq!(StereoMode::from_matroska(2).layout(), Some(StereoLayout::Tb));
        assert!(StereoMode::from_matroska(2).right_eye_first());
        assert_eq!(StereoMode::from_matroska(3).layout(), Some(StereoLayout::Tb));
        assert_eq!(StereoMode::from_matroska(0).layout(), Some(StereoLayout::Mono));
        assert_eq!(StereoMode::from_matroska(4).layout(), None);
    }
}

//! Output-side tests: the MP4 and Matroska muxers (exact pts, keyframes, audio copied byte
//! for byte, stereo metadata, temporary names), the ffmpeg CPU encoder fallback and the PNG
//! mask writer.
//!
//! Tests that need ffmpeg/ffprobe make their sources with it and read the outputs back with
//! it as a second opinion beside our own demuxers. Where ffmpeg is missing they print
//! `skipped: ffmpeg not found` and return, unless VRSEG_REQUIRE_FFMPEG=1 (then they fail).
//! The tests that use only the committed clips in tests/data/clips need nothing.

mod encode;
mod failures;
mod loop_clip;
mod masks;
mod remux;
mod tools;

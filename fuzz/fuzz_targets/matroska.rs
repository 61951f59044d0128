//! `cargo fuzz run matroska`: Matroska/WebM inputs. Seed with tests/data/clips/*.mkv, *.webm.
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    common::demux_bytes(data, "mkv");
});

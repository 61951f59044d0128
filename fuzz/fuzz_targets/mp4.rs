//! `cargo fuzz run mp4`: ISO-BMFF inputs. Seed with tests/data/clips/*.mp4 and *.mov.
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // Force the MP4 path even when the fuzzer mangles the first box type.
    let mut input = Vec::with_capacity(data.len() + 8);
    if data.len() < 8 || &data[4..8] != b"ftyp" {
        input.extend_from_slice(&[0, 0, 0, 8, b'f', b't', b'y', b'p']);
    }
    input.extend_from_slice(data);
    common::demux_bytes(&input, "mp4");
});

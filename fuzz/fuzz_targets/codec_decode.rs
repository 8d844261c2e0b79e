//! The cargo-fuzz target of `fuzz/checks/codec_decode.rs`, which says what it
//! checks and how it reads its input.
#![no_main]

#[path = "../checks/codec_decode.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data));

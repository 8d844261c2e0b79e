//! The cargo-fuzz target of `fuzz/checks/client_message.rs`, which says what it
//! checks and how it reads its input.
#![no_main]

#[path = "../checks/client_message.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data));

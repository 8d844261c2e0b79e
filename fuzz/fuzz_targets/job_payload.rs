//! The cargo-fuzz target of `fuzz/checks/job_payload.rs`, which says what it
//! checks and how it reads its input.
#![no_main]

#[path = "../checks/job_payload.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data));

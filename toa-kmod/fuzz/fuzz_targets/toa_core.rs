//! libFuzzer entry point: every input goes through the same checks the
//! regression test replays (`src/check.rs`).
#![no_main]

#[path = "../src/check.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::one(data));

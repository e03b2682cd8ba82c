//! `json_lines`: arbitrary text as one protocol line, with a round trip
//! (see shared.rs).
#![no_main]

mod shared;

libfuzzer_sys::fuzz_target!(|data: &[u8]| shared::json_lines(data));

//! `gobin`: arbitrary bytes as a Go executable (see shared.rs).
#![no_main]

mod shared;

libfuzzer_sys::fuzz_target!(|data: &[u8]| shared::gobin(data));

#![no_main]
//! Arbitrary bytes over a live segment, then every operation and `check_integrity()`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| cluster_session_store_fuzz::scribble::run(data));

#![no_main]
//! Store operations against a `HashMap` oracle, with clock jumps and abandoned locks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cluster_session_store_fuzz::ops::run(data);
});

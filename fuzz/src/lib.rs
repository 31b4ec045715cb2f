//! The fuzz targets' bodies, shared by the libFuzzer targets in `fuzz_targets/` and by the
//! main crate's tests (`tests/fuzz_corpus.rs` replays the seed corpus in CI,
//! `tests/corrupt_segment.rs` runs `scribble` as a property test). They live in the main
//! crate's `tests/fuzz/`, so that its published tests need nothing outside it.

#[path = "../../tests/fuzz/ops.rs"]
pub mod ops;
#[path = "../../tests/fuzz/scribble.rs"]
pub mod scribble;

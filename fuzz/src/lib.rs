//! The fuzz targets' bodies, shared by the libFuzzer targets in `fuzz_targets/` and by the
//! main crate's tests (`tests/fuzz_corpus.rs` replays the seed corpus in CI,
//! `tests/corrupt_segment.rs` runs `scribble` as a property test), which include these files.

pub mod ops;
pub mod scribble;

//! Stray writes over a live segment, as a property test with a fixed seed: the scenario and
//! its checks are the fuzz target's (`fuzz/src/scribble.rs`, included here). Two shapes of
//! input, 96 cases each; asserts that most cases made the store repair something, so the
//! writes landed where reads look.
mod common;
#[path = "../fuzz/src/scribble.rs"]
#[allow(dead_code)] // `run` serves the fuzz target
mod scribble;

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngAlgorithm, TestRng, TestRunner};

const CASES: u32 = 96;

/// Runs `CASES` cases of `strategy` from a fixed seed; asserts most of them made the store
/// repair something (so the writes landed where reads look).
fn run<S: Strategy<Value = Vec<(u64, Vec<u8>)>>>(strategy: S) {
    let config =
        ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() };
    let rng = TestRng::deterministic_rng(RngAlgorithm::ChaCha);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let repaired = std::cell::Cell::new(0);
    runner
        .run(&strategy, |writes| {
            let _serial = common::serial();
            repaired.set(repaired.get() + u32::from(scribble::scribble(&writes)));
            Ok(())
        })
        .unwrap();
    assert!(
        repaired.get() * 2 > CASES,
        "only {} of {CASES} cases repaired anything",
        repaired.get()
    );
}

/// A few short stray writes.
#[test]
fn short_stray_writes() {
    run(prop::collection::vec((any::<u64>(), prop::collection::vec(any::<u8>(), 1..16)), 1..8));
}

/// One long run of garbage.
#[test]
fn a_long_stray_write() {
    run((any::<u64>(), prop::collection::vec(any::<u8>(), 64..4096)).prop_map(|w| vec![w]));
}

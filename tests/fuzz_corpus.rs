//! The fuzz targets in CI, without libFuzzer: every input of the seed corpus kept in
//! `fuzz/corpus/<target>/`, then 200 inputs per target from a fixed-seed generator, run
//! through the targets' own code (`fuzz/src`, included here). Deterministic and bounded
//! (a few seconds). `cargo fuzz` explores further; see docs/robustness.md.
mod common;
#[path = "fuzz/ops.rs"]
mod ops;
#[path = "fuzz/scribble.rs"]
mod scribble;

use std::path::Path;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty seed corpus in {}", dir.display());
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

/// `n` inputs of 0 to 4 KiB from a fixed xorshift seed.
fn generated(n: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut x = seed;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|_| {
            let len = (next() % 4096) as usize;
            (0..len).map(|_| next() as u8).collect()
        })
        .collect()
}

#[test]
fn ops_seed_corpus_and_generated_inputs() {
    let _serial = common::serial();
    let mut total = ops::Ran::default();
    for input in corpus("ops").into_iter().chain(generated(200, 0x9E37_79B9_7F4A_7C15)) {
        let ran = ops::run(&input);
        total.ops += ran.ops;
        total.clock_jumps += ran.clock_jumps;
        total.abandoned_writes += ran.abandoned_writes;
    }
    println!("{total:?}");
    assert!(
        total.ops > 20_000 && total.clock_jumps > 1000 && total.abandoned_writes > 1000,
        "{total:?}"
    );
}

#[test]
fn scribble_seed_corpus_and_generated_inputs() {
    let _serial = common::serial();
    for input in corpus("scribble").into_iter().chain(generated(200, 0xD1B5_4A32_D192_ED03)) {
        scribble::run(&input);
    }
}

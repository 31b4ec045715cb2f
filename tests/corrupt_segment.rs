//! Stray writes over a live segment, as a property test with a fixed seed: the scenario and
//! its checks are the fuzz target's (`fuzz/src/scribble.rs`, included here). Two shapes of
//! input, 96 cases each; asserts that most cases made the store repair something, so the
//! writes landed where reads look.
mod common;
#[path = "fuzz/scribble.rs"]
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

/// One byte of a stored value flipped in the segment: the read that copies it finds the
/// CRC wrong and returns a miss, the repair drops that record alone, and the store's own
/// check passes. Values of 100 bytes (CRC of the copy after it) and of 1 and 3 KiB (CRC
/// computed during the optimistic copy, on CPUs with VPCLMULQDQ) take both paths.
#[test]
fn a_flipped_value_byte_is_a_miss_and_a_repair_of_that_record_alone() {
    use cluster_session_store::{Backing, ClusterStore, Expiry};
    use std::io::{Seek, SeekFrom, Write};

    let _serial = common::serial();
    for len in [100usize, 1024, 3000] {
        let name = format!("flip-{}-{len}", std::process::id());
        let config = common::config(&name).shards(2).backing(Backing::Named);
        let master = ClusterStore::setup(config).expect("setup");
        let store = master.store();
        let value_of = |i: u8| -> Vec<u8> {
            let mut v = vec![i; len];
            v[..8].copy_from_slice(b"!victim!");
            v[len / 2] = 0xA5;
            v
        };
        let mut victim = value_of(0);
        victim[..8].copy_from_slice(b"!VICTIM!");
        store.set_raw("victim", &victim, Expiry::Default).unwrap();
        for i in 1..=20 {
            store.set_raw(&format!("other-{i}"), &value_of(i), Expiry::Default).unwrap();
        }
        let path = common::shm_path(&name);
        let image = std::fs::read(&path).unwrap();
        let at = image.windows(8).position(|w| w == b"!VICTIM!").expect("the victim's value");
        let flip = at + len / 2;
        assert_eq!(image[flip], 0xA5, "the byte to flip");
        let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.seek(SeekFrom::Start(flip as u64)).unwrap();
        file.write_all(&[0x5A]).unwrap();
        drop(file);

        let read = store.get_raw("victim").unwrap();
        assert!(read.is_none(), "len {len}: a damaged value was read back");
        let stats = store.stats().unwrap();
        assert_eq!(stats.corrupt_dropped, 1, "len {len}: {stats:?}");
        assert!(stats.recoveries >= 1, "len {len}: {stats:?}");
        for i in 1..=20 {
            let got = store.get_raw(&format!("other-{i}")).unwrap();
            assert_eq!(got, Some(value_of(i)), "len {len}: other-{i}");
        }
        let report = store.check_integrity();
        assert!(report.is_ok(), "len {len}: {:?}", report.problems);
    }
}

/// Where shard 0 starts: after the 4096-byte header and the read counters, 256 lines of 64
/// bytes (SAFETY.md, section 2).
const SHARD_0: u64 = 4096 + 256 * 64;

/// A named one-shard store with no sweep (it could repair a stray write before the test
/// looks), and its name.
fn one_named_shard(prefix: &str) -> (cluster_session_store::Master, String) {
    use cluster_session_store::Backing;
    common::setup_with(prefix, |c| {
        c.shards(1).backing(Backing::Named).sweep_interval(common::NO_SWEEP)
    })
}

/// A stray write of `value` over the `u32` at `offset` in shard 0's state of segment `name`.
fn stray_state_write(name: &str, offset: u64, value: u32) {
    use std::io::{Seek, SeekFrom, Write};
    let path = common::shm_path(name);
    let mut file = std::fs::OpenOptions::new().write(true).open(&path).expect("open");
    file.seek(SeekFrom::Start(SHARD_0 + offset)).unwrap();
    file.write_all(&value.to_le_bytes()).unwrap();
}

/// A stray write of a huge `grown` (the shard state's count of index doublings): the sweep's
/// shrink does not count it down (billions of steps under the lock) but reports it, and the
/// repair resizes the index. Every session stays readable, and the shrink then runs from the
/// repaired size.
#[test]
fn a_grown_count_out_of_range_is_repaired_before_a_shrink() {
    use cluster_session_store::Expiry;

    /// `grown` in a shard's state (SAFETY.md, section 2).
    const S_GROWN: u64 = 312;

    let _serial = common::serial();
    let (master, name) = one_named_shard("grown");
    for i in 0..20 {
        master.set_raw(&format!("s{i}"), format!("value {i}").as_bytes(), Expiry::Default).unwrap();
    }
    assert_eq!(master.stats().unwrap().index_slots, 32);
    stray_state_write(&name, S_GROWN, u32::MAX);
    assert!(!master.check_integrity().is_ok(), "the stray write landed elsewhere");
    assert_eq!(master.purge_expired().unwrap(), 0);
    let stats = master.stats().unwrap();
    assert!(stats.recoveries >= 1, "not repaired: {stats}");
    // The repair made the whole array active; 20 records shrink it to 64 slots (at most
    // 3/16 of 128, not of 64).
    assert_eq!(stats.index_slots, 64, "{stats}");
    for i in 0..20 {
        let got = master.get_raw(&format!("s{i}")).unwrap();
        assert_eq!(got, Some(format!("value {i}").into_bytes()), "s{i}");
    }
    let report = master.check_integrity();
    assert!(report.is_ok(), "{report}");
}

/// A stray write that sets the merge marker (the shard state's `merge_start`) of a shard no
/// repair has looked at: `clear` forgets every block, the marker included, and leaves the
/// shard sound. (The property tests above met this: the marker outlived a `clear`.)
#[test]
fn clear_forgets_a_stray_merge_marker() {
    use cluster_session_store::Expiry;

    /// `merge_start` in a shard's state (SAFETY.md, section 2).
    const S_MERGE_START: u64 = 304;

    let _serial = common::serial();
    let (master, name) = one_named_shard("marker");
    master.set_raw("s", b"value", Expiry::Default).unwrap();
    stray_state_write(&name, S_MERGE_START, 7);
    let report = master.check_integrity();
    assert!(report.problems.iter().any(|p| p.description.contains("merge")), "{report}");
    master.clear().unwrap();
    let report = master.check_integrity();
    assert!(report.is_ok(), "{report}");
    master.set_raw("s", b"again", Expiry::Default).unwrap();
    assert_eq!(master.get_raw("s").unwrap().as_deref(), Some(&b"again"[..]));
}

//! Reads take no lock (SAFETY.md, "Optimistic reads"): a `get` copies the record under the
//! shard's seqlock and keeps the copy only if no lock holder ran meanwhile.
//!
//! - On a quiet store every read is optimistic (`stats().locked_reads` stays 0).
//! - Forked readers hammer one shard while forked writers rewrite its sessions with values of
//!   changing sizes (so blocks are freed, reused and merged under the readers): every value
//!   read is one that was written, whole, never a mix of two.
//! - A writer SIGKILLed in the middle of copying a new value leaves the shard's version odd:
//!   the next read goes to the lock, repairs, and returns the old value; reads after that are
//!   optimistic again.
//! - A reader SIGKILLed in the middle of its reads holds no lock and leaves nothing to repair.
//!
//! After each, `check_integrity()` passes.
mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use cluster_session_store::fault::{self, FaultPoint};
use cluster_session_store::{ClusterStore, Expiry, Master};
use common::{serial, spawn, unique_name, Signal1, WAIT};

const KEYS: u64 = 8;

/// One shard: every reader and writer shares one seqlock.
fn one_shard(name: &str) -> Master {
    let config =
        common::config(name).memory_size(512 << 10).shards(1).lock_timeout(Duration::from_secs(20));
    ClusterStore::setup(config).unwrap()
}

/// Generation `gen` of session `k`: its length depends on both, its first 16 bytes say
/// which it is, and every other byte is a function of both, so a mix of two generations, or
/// of a value and a freed block's leftovers, does not pass [`check`].
fn value(k: u64, gen: u64) -> Vec<u8> {
    let len = 16 + ((gen * 389 + k * 97) % 3000) as usize;
    let fill = (k as u8).wrapping_mul(31) ^ (gen as u8);
    let mut v = vec![fill; len];
    v[..8].copy_from_slice(&k.to_le_bytes());
    v[8..16].copy_from_slice(&gen.to_le_bytes());
    v
}

/// Whether `v` is exactly some generation of session `k`.
fn check(k: u64, v: &[u8]) -> bool {
    if v.len() < 16 || v[..8] != k.to_le_bytes() {
        return false;
    }
    let gen = u64::from_le_bytes(v[8..16].try_into().unwrap());
    v == value(k, gen)
}

fn key(k: u64) -> String {
    format!("session-{k}")
}

#[test]
fn reads_on_a_quiet_store_take_no_lock() {
    let _serial = serial();
    let master = one_shard(&unique_name("quiet"));
    for k in 0..KEYS {
        master.set_raw(&key(k), &value(k, 0), Expiry::Default).unwrap();
    }
    for _ in 0..100 {
        for k in 0..KEYS {
            assert!(check(k, &master.get_raw(&key(k)).unwrap().unwrap()));
        }
        assert_eq!(master.get_raw("absent").unwrap(), None);
    }
    let stats = master.stats().unwrap();
    assert_eq!((stats.hits, stats.misses, stats.locked_reads), (800, 100, 0), "{stats}");
}

#[test]
fn readers_see_whole_values_while_writers_rewrite_them() {
    let _serial = serial();
    let name = unique_name("torn");
    let master = one_shard(&name);
    for k in 0..KEYS {
        master.set_raw(&key(k), &value(k, 0), Expiry::Default).unwrap();
    }
    const WRITES: u64 = 20_000;
    const READS: u64 = 40_000;
    let writers: Vec<_> = (0..2u64)
        .map(|w| {
            let name = name.clone();
            spawn(move || {
                let store = ClusterStore::open(&name).unwrap();
                for i in 0..WRITES {
                    let k = (i * 3 + w) % KEYS;
                    // Odd generations from one writer, even from the other: never equal.
                    store.set_raw(&key(k), &value(k, 2 * i + w + 1), Expiry::Default).unwrap();
                }
                0
            })
        })
        .collect();
    let readers: Vec<_> = (0..2u64)
        .map(|r| {
            let name = name.clone();
            spawn(move || {
                let store = ClusterStore::open(&name).unwrap();
                let mut out = Vec::new();
                for i in 0..READS {
                    let k = (i * 5 + r) % KEYS;
                    assert!(store.get_raw_into(&key(k), &mut out).unwrap(), "{k} vanished");
                    if !check(k, &out) {
                        return 1;
                    }
                }
                0
            })
        })
        .collect();
    for (i, mut child) in readers.into_iter().chain(writers).enumerate() {
        assert_eq!(child.wait(WAIT), 0, "child {i} failed (1: a reader saw a torn value)");
    }
    let stats = master.stats().unwrap();
    assert_eq!(stats.hits, 2 * READS, "{stats}");
    assert_eq!(stats.recoveries, 0, "{stats}");
    let report = master.check_integrity();
    assert!(report.is_ok(), "{report}");
    for k in 0..KEYS {
        assert!(check(k, &master.get_raw(&key(k)).unwrap().unwrap()));
    }
}

#[test]
fn a_writer_killed_mid_copy_sends_the_next_read_to_the_lock_and_its_repair() {
    let _serial = serial();
    let name = unique_name("odd");
    let master = one_shard(&name);
    master.set_raw("victim", &value(1, 1), Expiry::Default).unwrap();
    master.set_raw("bystander", &value(2, 1), Expiry::Default).unwrap();

    let parked = Signal1::new();
    common::PARK_FD.store(parked.write_fd(), Ordering::SeqCst);
    let mut writer = spawn(|| {
        let store = ClusterStore::open(&name).unwrap();
        fault::arm(FaultPoint::MidCopy, common::park);
        store.set_raw("victim", &value(1, 2), Expiry::Default).unwrap();
        3 // not reached: the hook parks the writer
    });
    assert!(parked.wait(WAIT), "the writer never reached MidCopy");
    assert_eq!(writer.kill(), 128 + 9);

    let before = master.stats().unwrap();
    assert_eq!(master.get_raw("victim").unwrap(), Some(value(1, 1)), "old value lost");
    let after = master.stats().unwrap();
    assert_eq!(after.locked_reads, before.locked_reads + 1, "the read did not take the lock");
    assert_eq!(after.recoveries, before.recoveries + 1, "the dead writer was not repaired");

    // Repaired: the version is even again, so reads are optimistic once more.
    assert_eq!(master.get_raw("bystander").unwrap(), Some(value(2, 1)));
    assert_eq!(master.get_raw("victim").unwrap(), Some(value(1, 1)));
    assert_eq!(master.stats().unwrap().locked_reads, after.locked_reads);
    let report = master.check_integrity();
    assert!(report.is_ok(), "{report}");
}

#[test]
fn a_reader_killed_mid_read_leaves_nothing_to_repair() {
    let _serial = serial();
    let name = unique_name("reader-kill");
    let master = one_shard(&name);
    for k in 0..KEYS {
        master.set_raw(&key(k), &value(k, 0), Expiry::Default).unwrap();
    }
    let reading = Signal1::new();
    let mut reader = spawn(|| {
        let store = ClusterStore::open(&name).unwrap();
        let mut out = Vec::new();
        for i in 0.. {
            let k = i % KEYS;
            assert!(store.get_raw_into(&key(k), &mut out).unwrap() && check(k, &out));
            if i == 1000 {
                reading.notify();
            }
        }
        0
    });
    assert!(reading.wait(WAIT), "the reader never got going");
    assert_eq!(reader.kill(), 128 + 9);

    for k in 0..KEYS {
        master.set_raw(&key(k), &value(k, 1), Expiry::Default).unwrap();
        assert_eq!(master.get_raw(&key(k)).unwrap(), Some(value(k, 1)));
    }
    let stats = master.stats().unwrap();
    assert_eq!((stats.recoveries, stats.locked_reads), (0, 0), "{stats}");
    let report = master.check_integrity();
    assert!(report.is_ok(), "{report}");
}

//! Fuzz target `scribble` (and `tests/corrupt_segment.rs`): stray writes, arbitrary bytes
//! written over arbitrary parts of a live segment (shard headers, mutexes, index, blocks,
//! records: everything after the segment header), as a buggy process mapping it could. Then
//! every operation runs, and `check_integrity()`. Nothing may panic, hang or read out of
//! bounds: each call returns a value or a typed `StoreError`, and what is found is repaired
//! and counted. A session read back is never another session's value (its CRC covers the
//! key). Each write starts at a byte in use, so it lands on something a read looks at. Lock
//! waits are bounded at 50 ms.

use std::io::{Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use cluster_session_store::{Backing, ClusterStore, Config, Expiry, StoreError};

const HEADER_SIZE: u64 = 4096;
const SIZE: usize = 256 << 10;
const SESSIONS: usize = 60;

/// 20 to 500 bytes: shorter and longer than 64 (`MIN_SIMD_LEN`), so that reads check both
/// the CRC of a copy (short values) and the CRC computed during the copy (longer ones, on
/// CPUs with it).
fn value_of(i: usize) -> Vec<u8> {
    format!("value-of-session-{i}-").repeat(1 + i % 7 * 4).into_bytes()
}

/// Every error a stray write may legitimately cause.
fn allowed(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Corrupted { .. }
            | StoreError::LockTimeout { .. }
            | StoreError::Lock { .. }
            | StoreError::Full { .. }
    )
}

fn ok_or_allowed<T>(r: Result<T, StoreError>, what: &str) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) if allowed(&e) => None,
        Err(e) => panic!("{what}: unexpected error {e:?}"),
    }
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Runs one case: the stray `writes` (offsets are reduced onto the bytes in use); returns
/// whether a repair was counted.
pub fn scribble(writes: &[(u64, Vec<u8>)]) -> bool {
    let name =
        format!("fuzz-scribble-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
    let config = Config::new()
        .name(&name)
        .memory_size(SIZE)
        .shards(2)
        .max_value_size(1024)
        .lock_timeout(Duration::from_millis(50))
        .sweep_interval(Duration::from_secs(3600))
        .backing(Backing::Named);
    let master = ClusterStore::setup(config).expect("setup");
    let store = master.store();
    for i in 0..SESSIONS {
        store.set_raw(&format!("s{i}"), &value_of(i), Expiry::Default).unwrap();
    }
    let path = format!("/dev/shm/cluster-session-store.{name}");
    // Aim at bytes in use (mutexes, counters, index slots, block headers, records): most of
    // a fresh segment is zeros, where a stray write would hit nothing a read looks at.
    let image = std::fs::read(&path).expect("read the segment");
    let used: Vec<u64> =
        (HEADER_SIZE as usize..SIZE).filter(|&i| image[i] != 0).map(|i| i as u64).collect();
    let mut file = std::fs::OpenOptions::new().write(true).open(&path).expect("open");
    for (at, bytes) in writes {
        let offset = used[(*at % used.len() as u64) as usize];
        let len = bytes.len().min((SIZE as u64 - offset) as usize);
        file.seek(SeekFrom::Start(offset)).unwrap();
        file.write_all(&bytes[..len]).unwrap();
    }
    drop(file);

    let _ = store.check_integrity();
    for i in 0..SESSIONS {
        let sid = format!("s{i}");
        if let Some(Some(v)) = ok_or_allowed(store.get_raw(&sid), "get") {
            assert_eq!(v, value_of(i), "{sid} read back another value");
        }
    }
    ok_or_allowed(store.length(), "length");
    if let Some(all) = ok_or_allowed(store.all_raw(), "all") {
        for (sid, v) in all {
            let i: usize = sid[1..].parse().expect("only our ids");
            assert_eq!(v, value_of(i), "all: {sid}");
        }
    }
    for i in 0..SESSIONS {
        let sid = format!("s{i}");
        match i % 4 {
            0 => drop(ok_or_allowed(store.set_raw(&sid, b"new", Expiry::Default), "set")),
            1 => drop(ok_or_allowed(store.destroy(&sid), "destroy")),
            2 => drop(ok_or_allowed(store.touch(&sid, Expiry::Default), "touch")),
            _ => drop(ok_or_allowed(
                store.update_raw(&sid, Expiry::Default, |v| v.map(<[u8]>::to_vec)),
                "update",
            )),
        }
    }
    // Counters live in the segment too and may themselves have been hit: any nonzero count.
    let repaired = store.stats().is_ok_and(|s| s.recoveries > 0);
    let _ = store.memory();
    ok_or_allowed(store.purge_expired(), "purge_expired");
    let _ = store.check_integrity();
    // Whatever was damaged, a clear leaves every shard whose lock still works sound.
    if ok_or_allowed(store.clear(), "clear").is_some() {
        let report = store.check_integrity();
        assert!(report.is_ok(), "after clear: {report:?}");
    }
    repaired
}

/// Runs the stray writes decoded from `data`: at most 16, each at most 4 KiB.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mut writes: Vec<(u64, Vec<u8>)> = Vec::new();
    while !u.is_empty() && writes.len() < 16 {
        let (Ok(offset), Ok(len)) = (u64::arbitrary(&mut u), u.int_in_range(1..=4096usize)) else {
            break;
        };
        match u.bytes(len.min(u.len())) {
            Ok(bytes) if !bytes.is_empty() => writes.push((offset, bytes.to_vec())),
            _ => break,
        }
    }
    if !writes.is_empty() {
        scribble(&writes);
    }
}

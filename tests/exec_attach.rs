//! Workers that are not forked from the master: a process started by `exec` (this test
//! binary, run again with an environment variable naming the segment) attaches to a
//! `Backing::Named` segment with `ClusterStore::attach(name)` and shares sessions with the
//! master. And the seed's leak: a `get` that misses must write nothing into the segment,
//! checked byte for byte on the named segment's file (only the lock words and statistics
//! counters may change).
mod common;

use std::process::Command;

use cluster_session_store::{Backing, ClusterStore, Expiry};
use common::{serial, unique_name, Child, WAIT};

const ATTACH_ENV: &str = "CLUSTER_SESSION_STORE_EXEC_WORKER";

/// The exec'd worker's body. Run normally, it does nothing; run with `ATTACH_ENV` set, it
/// attaches to that segment, checks the master's session, writes its own, and exits.
#[test]
fn exec_worker() {
    let Ok(name) = std::env::var(ATTACH_ENV) else { return };
    let store = ClusterStore::attach(&name).expect("attach by name");
    let seen = store.get_raw("from-master").unwrap();
    assert_eq!(seen.as_deref(), Some(&b"hello worker"[..]));
    store.set_raw("from-exec-worker", b"hello master", Expiry::Default).unwrap();
    std::process::exit(0);
}

#[test]
fn a_worker_started_by_exec_attaches_by_name() {
    let _serial = serial();
    let name = unique_name("exec");
    let master = ClusterStore::setup(common::config(&name).backing(Backing::Named)).unwrap();
    master.set_raw("from-master", b"hello worker", Expiry::Default).unwrap();
    // Reaped below through its pid (`Child::adopt(..).wait`), which has a timeout;
    // `std::process::Child::wait` has none.
    #[allow(clippy::zombie_processes)]
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "exec_worker", "--test-threads=1", "--quiet"])
        .env(ATTACH_ENV, &name)
        .spawn()
        .unwrap();
    assert_eq!(Child::adopt(child.id()).wait(WAIT), 0, "the exec'd worker failed");
    assert_eq!(master.get_raw("from-exec-worker").unwrap().as_deref(), Some(&b"hello master"[..]));
    assert!(master.check_integrity().is_ok());
}

/// The named segment's bytes with the read counters (256 lines of 64 bytes after the 4096-byte
/// header) and every shard's mutex and statistics lines (the first 256 bytes of each shard)
/// blanked: what a read-only operation must leave untouched.
fn contents_without_locks_and_counters(path: &str) -> Vec<u8> {
    const SHARDS_START: usize = 4096 + 256 * 64;
    let mut bytes = std::fs::read(path).unwrap();
    bytes[4096..SHARDS_START].fill(0);
    let shards = u32::from_ne_bytes(bytes[24..28].try_into().unwrap()) as usize;
    let stride = u64::from_ne_bytes(bytes[32..40].try_into().unwrap()) as usize;
    for shard in 0..shards {
        let start = SHARDS_START + shard * stride;
        bytes[start..start + 256].fill(0);
    }
    bytes
}

#[test]
fn a_get_that_misses_writes_nothing_into_the_segment() {
    let _serial = serial();
    let name = unique_name("miss");
    let master = ClusterStore::setup(common::config(&name).backing(Backing::Named)).unwrap();
    for i in 0..50 {
        master.set_raw(&format!("s{i}"), b"session", Expiry::Default).unwrap();
    }
    // A record that is stored, then expires: a get must not clean it up either.
    let expires = std::time::SystemTime::now() + std::time::Duration::from_millis(20);
    master.set_raw("expired", b"old", Expiry::At(expires)).unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while std::time::SystemTime::now() <= expires + std::time::Duration::from_millis(1) {
        assert!(std::time::Instant::now() < deadline, "the clock did not move");
        std::hint::spin_loop();
    }
    assert_eq!(master.stats().unwrap().records, 51, "the expired record is still stored");
    let path = common::shm_path(&name);
    let before = contents_without_locks_and_counters(&path);
    let stats_before = master.stats().unwrap();
    for i in 0..200 {
        assert_eq!(master.get_raw(&format!("absent-{i}")).unwrap(), None);
        assert_eq!(master.get::<String>(&format!("absent-{i}")).unwrap(), None);
    }
    assert_eq!(master.get_raw("expired").unwrap(), None);
    assert!(contents_without_locks_and_counters(&path) == before, "a miss changed the segment");
    assert_eq!(master.stats().unwrap().misses, stats_before.misses + 401);
    assert_eq!(master.length().unwrap(), 50);
    assert!(master.check_integrity().is_ok());
}

//! The master's coordinator: expired sessions are freed without any request touching them;
//! a shard a worker died holding is repaired by `worker_exited` before a request needs it,
//! or by the sweep alone when nobody reports the death; and forking while the coordinator
//! works every millisecond never hands a child a lock it cannot get.
mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use cluster_session_store::fault::{self, FaultPoint};
use cluster_session_store::{ClusterStore, Expiry, Master};
use common::{serial, spawn, unique_name, Signal1, WAIT};

fn setup(name: &str, sweep: Duration) -> Master {
    ClusterStore::setup(common::config(name).sweep_interval(sweep)).unwrap()
}

/// Waits up to WAIT for `done` to hold, checking every millisecond: the coordinator is a
/// background thread with no event to wait on.
fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

#[test]
fn expired_sessions_are_freed_without_any_request() {
    let _serial = serial();
    let master = setup(&unique_name("sweep"), Duration::from_millis(5));
    let expires = SystemTime::now() + Duration::from_millis(50);
    for i in 0..500 {
        master.set_raw(&format!("s{i}"), &[7u8; 300], Expiry::At(expires)).unwrap();
    }
    master.set_raw("keeper", b"stays", Expiry::Default).unwrap();
    let before = master.stats().unwrap();
    let used = before.used_bytes;
    assert!(before.index_slots >= 4 * 128, "the index did not grow: {before}");
    // From here on, only the coordinator touches the store (stats() reads counters). The
    // sweep also shrinks each shard's index back to a fresh shard's 16 slots.
    assert!(
        eventually(|| {
            let stats = master.stats().unwrap();
            stats.records == 1 && stats.index_slots == 4 * 16
        }),
        "expired sessions still held, or the index not shrunk: {}",
        master.stats().unwrap()
    );
    let stats = master.stats().unwrap();
    assert!(stats.sweeps > 0 && stats.expirations >= 500, "{stats}");
    assert!(stats.used_bytes < used / 100, "memory not given back: {stats}");
    assert_eq!(master.get_raw("keeper").unwrap().as_deref(), Some(&b"stays"[..]));
    assert!(master.check_integrity().is_ok());
}

/// Forks a worker that parks holding a shard lock mid-write, then SIGKILLs and reaps it.
fn worker_dies_holding_a_lock(name: &str) -> u32 {
    let parked = Signal1::new();
    common::PARK_FD.store(parked.write_fd(), Ordering::SeqCst);
    let mut worker = spawn(|| {
        let store = ClusterStore::open(name).unwrap();
        fault::arm(FaultPoint::BeforePublish, common::park);
        store.set_raw("victim", b"new", Expiry::Default).unwrap();
        3
    });
    assert!(parked.wait(WAIT));
    let pid = worker.pid.as_raw() as u32;
    assert_eq!(worker.kill(), 128 + 9);
    pid
}

#[test]
fn worker_exited_repairs_the_shard_the_dead_worker_held() {
    let _serial = serial();
    let name = unique_name("exited");
    // A sweep interval of an hour: only worker_exited can do the repair here.
    let master = setup(&name, common::NO_SWEEP);
    master.set_raw("victim", b"old", Expiry::Default).unwrap();
    let pid = worker_dies_holding_a_lock(&name);
    assert_eq!(master.stats().unwrap().recoveries, 0);
    assert_eq!(master.worker_exited(pid), 1, "one shard was held by the dead worker");
    assert_eq!(master.stats().unwrap().recoveries, 1);
    assert_eq!(master.worker_exited(pid), 0, "nothing left to repair");
    assert_eq!(master.get_raw("victim").unwrap().as_deref(), Some(&b"old"[..]));
    assert!(master.check_integrity().is_ok());
}

#[test]
fn the_sweep_repairs_a_dead_holders_shard_that_nobody_reported() {
    let _serial = serial();
    let name = unique_name("unreported");
    let master = setup(&name, Duration::from_millis(5));
    master.set_raw("victim", b"old", Expiry::Default).unwrap();
    worker_dies_holding_a_lock(&name);
    // Nothing here locks a shard (stats() reads atomics only), so only the coordinator's
    // sweep can make this repair.
    assert!(eventually(|| master.stats().unwrap().recoveries >= 1));
    assert_eq!(master.get_raw("victim").unwrap().as_deref(), Some(&b"old"[..]));
    assert!(master.check_integrity().is_ok());
}

#[test]
fn forking_while_the_coordinator_works_never_deadlocks_a_child() {
    let _serial = serial();
    let name = unique_name("forks");
    let master = setup(&name, Duration::from_millis(1));
    for i in 0..200 {
        master.set_raw(&format!("s{i}"), b"v", Expiry::After(Duration::from_millis(2))).unwrap();
    }
    for round in 0..50 {
        let mut child = spawn(|| {
            // Allocating, logging-free work and the store's locks, right after the fork.
            let store = ClusterStore::open(&name).unwrap();
            let text = format!("child {round}");
            store.set_raw(&text, text.as_bytes(), Expiry::After(Duration::from_millis(2))).unwrap();
            0
        });
        assert_eq!(child.wait(WAIT), 0, "child {round}");
    }
    assert!(master.check_integrity().is_ok());
}

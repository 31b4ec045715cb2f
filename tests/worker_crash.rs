//! A worker SIGKILLed while it holds a shard lock, at each point of a write where it can
//! stop (a test-only hook parks it there and tells the parent): the other workers proceed at
//! once, the previous value is intact (or the new one, once published), no other session in
//! the shard is touched, the repair is counted, `check_integrity()` passes and no memory
//! leaks. Also: a repairer killed mid-repair, and a live holder that never lets go (a timeout
//! error, never a hang).
mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cluster_session_store::fault::{self, FaultPoint};
use cluster_session_store::{ClusterStore, Config, Expiry, Master, StoreError};
use common::{serial, spawn, unique_name, Signal1, WAIT};
use nix::sys::signal::{kill, Signal};

/// One shard, so that every key shares the lock and the repair.
fn one_shard(name: &str) -> Master {
    let config = Config::new()
        .name(name)
        .memory_size(256 << 10)
        .shards(1)
        .max_value_size(4096)
        .lock_timeout(Duration::from_secs(20));
    ClusterStore::setup(config).unwrap()
}

/// Sets `n` neighbour sessions and the sentinel the waiting worker reads.
fn neighbours(store: &ClusterStore, n: usize) {
    store.set_raw("sentinel", b"sentinel", Expiry::Default).unwrap();
    for i in 0..n {
        store
            .set_raw(&format!("n{i}"), format!("neighbour {i}").as_bytes(), Expiry::Default)
            .unwrap();
    }
}

fn assert_neighbours(store: &ClusterStore, n: usize) {
    for i in 0..n {
        let got = store.get_raw(&format!("n{i}")).unwrap();
        assert_eq!(got.as_deref(), Some(format!("neighbour {i}").as_bytes()), "neighbour {i}");
    }
}

/// Parks a child at `point` inside `op`, starts a second worker that needs the same lock,
/// SIGKILLs the first, and returns once the second finished.
fn kill_parked(name: &str, point: FaultPoint, op: impl FnOnce(&ClusterStore)) {
    let parked = Signal1::new();
    common::PARK_FD.store(parked.write_fd(), Ordering::SeqCst);
    let mut holder = spawn(|| {
        let store = ClusterStore::open(name).unwrap();
        fault::arm(point, common::park);
        op(&store);
        3 // not reached when the hook fires
    });
    assert!(parked.wait(WAIT), "the worker never reached {point:?}");
    let started = Signal1::new();
    let mut waiter = spawn(|| {
        let store = ClusterStore::open(name).unwrap();
        started.notify();
        // Blocks on the lock the parked worker holds until that worker dies.
        i32::from(store.get_raw("sentinel").unwrap().as_deref() != Some(&b"sentinel"[..]))
    });
    assert!(started.wait(WAIT));
    assert_eq!(holder.kill(), 128 + 9);
    let t = Instant::now();
    assert_eq!(waiter.wait(WAIT), 0, "the waiting worker failed");
    assert!(t.elapsed() < Duration::from_secs(20), "waited as long as the lock timeout");
}

fn assert_sound_and_no_leak(store: &ClusterStore) {
    let report = store.check_integrity();
    assert!(report.is_ok(), "{report}");
    assert!(store.stats().unwrap().recoveries >= 1, "the repair was not counted");
    for (key, _) in store.all_raw().unwrap() {
        store.destroy(&key).unwrap();
    }
    let stats = store.stats().unwrap();
    assert_eq!((stats.records, stats.used_bytes), (0, 0), "memory leaked by the repair");
}

fn replace_killed_at(point: FaultPoint, expect_new: bool) {
    let _serial = serial();
    let name = unique_name("crash");
    let master = one_shard(&name);
    neighbours(&master, 40);
    master.set_raw("victim", &[b'o'; 2000], Expiry::Default).unwrap();
    kill_parked(&name, point, |s| s.set_raw("victim", &[b'n'; 3000], Expiry::Default).unwrap());
    let got = master.get_raw("victim").unwrap().expect("victim lost");
    let want = if expect_new { vec![b'n'; 3000] } else { vec![b'o'; 2000] };
    assert!(got == want, "victim is {} bytes of {:?}", got.len(), got.first());
    assert_neighbours(&master, 40);
    assert_sound_and_no_leak(&master);
}

#[test]
fn killed_holding_the_lock_before_writing() {
    replace_killed_at(FaultPoint::LockHeld, false);
}

#[test]
fn killed_mid_copy_of_the_new_value_leaves_the_old_value() {
    replace_killed_at(FaultPoint::MidCopy, false);
}

#[test]
fn killed_before_publishing_leaves_the_old_value() {
    replace_killed_at(FaultPoint::BeforePublish, false);
}

#[test]
fn killed_after_publishing_leaves_the_new_value_and_frees_the_old_block() {
    replace_killed_at(FaultPoint::AfterPublish, true);
}

#[test]
fn killed_before_publishing_a_new_key_leaves_it_absent() {
    let _serial = serial();
    let name = unique_name("crash-new");
    let master = one_shard(&name);
    neighbours(&master, 40);
    kill_parked(&name, FaultPoint::BeforePublish, |s| {
        s.set_raw("fresh", b"never published", Expiry::Default).unwrap()
    });
    assert_eq!(master.get_raw("fresh").unwrap(), None);
    assert_neighbours(&master, 40);
    assert_sound_and_no_leak(&master);
}

#[test]
fn killed_mid_backward_shift_of_the_index_loses_no_other_session() {
    let _serial = serial();
    let name = unique_name("crash-shift");
    let master = one_shard(&name);
    // Enough keys that index clusters form and a removal shifts slots.
    neighbours(&master, 1200);
    // In insertion order: removing the most recent key never shifts anything, removing an
    // early one shifts the keys that collided with it later.
    kill_parked(&name, FaultPoint::MidShift, |s| {
        for i in 0..1200 {
            s.destroy(&format!("n{i}")).unwrap();
        }
    });
    // Whatever the dead worker destroyed before parking is gone; everything else is intact.
    let mut present = 0;
    for i in 0..1200 {
        match master.get_raw(&format!("n{i}")).unwrap() {
            Some(v) => {
                assert_eq!(v, format!("neighbour {i}").as_bytes());
                present += 1;
            }
            None => assert!(i < 600, "n{i} lost although the worker never reached it"),
        }
    }
    assert!(present >= 1199 - 600, "{present} sessions left");
    assert_sound_and_no_leak(&master);
}

#[test]
fn a_repairer_killed_mid_repair_is_followed_by_a_full_repair() {
    let _serial = serial();
    let name = unique_name("crash-repair");
    let master = one_shard(&name);
    neighbours(&master, 40);
    master.set_raw("victim", b"old", Expiry::Default).unwrap();
    // First death: a writer, holding the lock before publishing.
    let parked = Signal1::new();
    common::PARK_FD.store(parked.write_fd(), Ordering::SeqCst);
    let mut writer = spawn(|| {
        let store = ClusterStore::open(&name).unwrap();
        fault::arm(FaultPoint::BeforePublish, common::park);
        store.set_raw("victim", b"new", Expiry::Default).unwrap();
        3
    });
    assert!(parked.wait(WAIT));
    assert_eq!(writer.kill(), 128 + 9);
    // Second death: the next locker, halfway through repairing.
    let mut repairer = spawn(|| {
        let store = ClusterStore::open(&name).unwrap();
        fault::arm(FaultPoint::MidRepair, common::park);
        let _ = store.get_raw("n0");
        3
    });
    assert!(parked.wait(WAIT), "the second worker did not start a repair");
    assert_eq!(repairer.kill(), 128 + 9);
    assert_eq!(master.get_raw("victim").unwrap().as_deref(), Some(&b"old"[..]));
    assert_neighbours(&master, 40);
    assert_sound_and_no_leak(&master);
}

#[test]
fn killed_mid_merge_of_small_blocks_into_a_large_one() {
    let _serial = serial();
    let name = unique_name("crash-merge");
    let master = one_shard(&name);
    // Carve the whole data area into small blocks (150-byte values fill it before the
    // index), then free most of them: a large value
    // then needs adjacent free blocks merged.
    neighbours(&master, 0);
    let mut n = 0;
    while master.stats().unwrap().evictions == 0 {
        master.set_raw(&format!("s{n}"), &[b's'; 150], Expiry::Default).unwrap();
        n += 1;
    }
    for i in 0..n {
        if i % 10 != 0 {
            master.destroy(&format!("s{i}")).unwrap();
        }
    }
    kill_parked(&name, FaultPoint::MidMerge, |s| {
        s.set_raw("large", &[b'L'; 3000], Expiry::Default).unwrap()
    });
    assert_eq!(master.get_raw("large").unwrap(), None);
    for (key, value) in master.all_raw().unwrap() {
        assert!(key == "sentinel" || value == [b's'; 150], "{key} damaged");
    }
    // The repair re-tiled the half-merged run as free blocks; the next write merges them.
    master.set_raw("large", &[b'L'; 3000], Expiry::Default).unwrap();
    assert_sound_and_no_leak(&master);
}

#[test]
fn a_live_holder_that_never_lets_go_gives_a_timeout_not_a_hang() {
    let _serial = serial();
    let name = unique_name("stuck");
    let config = Config::new()
        .name(&name)
        .memory_size(256 << 10)
        .shards(1)
        .max_value_size(4096)
        .lock_timeout(Duration::from_millis(200));
    let master = ClusterStore::setup(config).unwrap();
    master.set_raw("k", b"v", Expiry::Default).unwrap();
    let parked = Signal1::new();
    common::PARK_FD.store(parked.write_fd(), Ordering::SeqCst);
    let mut holder = spawn(|| {
        let store = ClusterStore::open(&name).unwrap();
        fault::arm(FaultPoint::LockHeld, common::park);
        store.set_raw("k", b"w", Expiry::Default).unwrap();
        3
    });
    assert!(parked.wait(WAIT));
    // Stopped, not dead: the kernel does not release its lock.
    kill(holder.pid, Signal::SIGSTOP).unwrap();
    match master.get_raw("k") {
        Err(StoreError::LockTimeout { shard: 0, waited }) => {
            assert!(waited >= Duration::from_millis(200))
        }
        other => panic!("expected LockTimeout, got {other:?}"),
    }
    assert_eq!(holder.kill(), 128 + 9);
    assert_eq!(master.get_raw("k").unwrap().as_deref(), Some(&b"v"[..]));
    let report = master.check_integrity();
    assert!(report.is_ok(), "{report}");
}

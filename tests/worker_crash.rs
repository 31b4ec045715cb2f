//! A worker SIGKILLed while it holds a shard lock, at each point of a write where it can
//! stop (a test-only hook parks it there and tells the parent): the other workers proceed at
//! once, the previous value is intact (or the new one, once published), no other session in
//! the shard is touched, the repair is counted, `check_integrity()` passes and no memory
//! leaks. Also: a worker killed while the index grows (with its new size stored, and in the
//! middle of moving slots) or shrinks (a slot copied, not yet emptied), or while it rewrites
//! a session of a full `Refuse` shard through the spare block, a repairer killed
//! mid-repair, a live holder that never lets go (a timeout error, never a hang), and the
//! crash-consistency campaign (module `campaign`): hundreds of random kills of workers
//! running mixed operations, every acknowledged write checked.
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cluster_session_store::fault::{self, FaultPoint};
use cluster_session_store::{ClusterStore, Expiry, Master, StoreError};
use common::{serial, spawn, unique_name, Signal1, WAIT};
use nix::sys::signal::{kill, Signal};

/// One shard, so that every key shares the lock and the repair. The coordinator's sweep is
/// kept out of the way (an hour apart): it would shrink a sparse index on its own, and take
/// the lock a test means its workers to take.
fn one_shard(name: &str) -> Master {
    let config = common::config(name)
        .memory_size(256 << 10)
        .shards(1)
        .lock_timeout(Duration::from_secs(20))
        .sweep_interval(common::NO_SWEEP);
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
    kill_parked_by(name, point, common::park, op);
}

/// Which hit of the armed point `park_on_nth_hit` parks at, counting down in the child.
static PARK_ON_HIT: AtomicUsize = AtomicUsize::new(1);

/// A fault hook that parks at the `PARK_ON_HIT`-th hit of its point and lets the earlier
/// ones pass.
fn park_on_nth_hit() {
    if PARK_ON_HIT.fetch_sub(1, Ordering::SeqCst) == 1 {
        common::park();
    }
}

/// [`kill_parked`], with `hook` (which must end in `common::park`) armed at `point`.
fn kill_parked_by(name: &str, point: FaultPoint, hook: fn(), op: impl FnOnce(&ClusterStore)) {
    let parked = Signal1::new();
    common::PARK_FD.store(parked.write_fd(), Ordering::SeqCst);
    let mut holder = spawn(|| {
        let store = ClusterStore::open(name).unwrap();
        fault::arm(point, hook);
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

/// A full `Refuse` shard's rewrite goes through the spare block: killed with the new record
/// published there and not yet copied over the old block, the session has its new value, the
/// repair moves it out of the spare into a block of the data area, and nothing leaks.
#[test]
fn killed_rewriting_a_session_of_a_full_shard_through_the_spare_block() {
    let _serial = serial();
    let name = unique_name("crash-spare");
    let master = ClusterStore::setup(
        common::config(&name)
            .memory_size(256 << 10)
            .shards(1)
            .max_value_size(1024)
            .eviction(cluster_session_store::Eviction::Refuse)
            .lock_timeout(Duration::from_secs(20))
            .sweep_interval(common::NO_SWEEP),
    )
    .unwrap();
    master.set_raw("sentinel", b"sentinel", Expiry::Default).unwrap();
    let filled = (0..)
        .find(|i| master.set_raw(&format!("f{i:04}"), &[b'o'; 1000], Expiry::Default).is_err())
        .unwrap();
    let used_blocks = |store: &ClusterStore| -> u64 {
        store.memory().unwrap().classes.iter().map(|c| c.used_blocks).sum()
    };
    assert_eq!(used_blocks(&master), filled + 1);
    kill_parked(&name, FaultPoint::InSpare, |s| {
        s.set_raw("f0000", &[b'n'; 1000], Expiry::Default).unwrap()
    });
    assert_eq!(master.get_raw("f0000").unwrap(), Some(vec![b'n'; 1000]), "the new value");
    for i in 1..filled {
        assert_eq!(master.get_raw(&format!("f{i:04}")).unwrap(), Some(vec![b'o'; 1000]));
    }
    assert!(master.check_integrity().is_ok(), "{}", master.check_integrity());
    assert_eq!(used_blocks(&master), filled + 1, "the record left the spare for a block");
    // Rewrites go on; new sessions are still refused.
    master.set_raw("f0001", &[b'm'; 1000], Expiry::Default).unwrap();
    assert!(matches!(
        master.set_raw("new", &[b'x'; 1000], Expiry::Default),
        Err(StoreError::Full { .. })
    ));
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

/// A worker inserting new sessions is killed while the index grows, at `point`: every
/// neighbour and every session it inserted before is intact, and the repair leaves an index
/// that holds them all. Returns how many sessions the worker inserted before it was parked.
fn grow_killed_at(point: FaultPoint) -> usize {
    let _serial = serial();
    let name = unique_name("crash-grow");
    let master = one_shard(&name);
    // 41 records: the index has grown to 64 slots, and grows again for the 49th.
    neighbours(&master, 40);
    assert_eq!(master.stats().unwrap().index_slots, 64);
    kill_parked(&name, point, |s| {
        for i in 0..200 {
            s.set_raw(&format!("g{i}"), format!("grown {i}").as_bytes(), Expiry::Default).unwrap();
        }
    });
    assert_neighbours(&master, 40);
    // The worker was parked inside one insert: those before it are intact, it and the rest
    // absent.
    let present: Vec<bool> = (0..200)
        .map(|i| match master.get_raw(&format!("g{i}")).unwrap() {
            Some(v) => {
                assert_eq!(v, format!("grown {i}").as_bytes(), "g{i} damaged");
                true
            }
            None => false,
        })
        .collect();
    let inserted = present.iter().take_while(|&&p| p).count();
    assert!(present[inserted..].iter().all(|&p| !p), "a session after the parked insert exists");
    assert!(master.stats().unwrap().index_slots >= 128);
    assert_sound_and_no_leak(&master);
    inserted
}

#[test]
fn killed_as_the_index_grows_loses_no_session() {
    // Parked with the new size stored and no slot moved yet: the 49th record's insert.
    assert_eq!(grow_killed_at(FaultPoint::MidGrow), 7);
}

#[test]
fn killed_mid_reseat_of_a_growing_index_loses_no_session() {
    // Parked in the first backward shift of the 49th record's growth: one entry in two
    // slots, some moved and some not. Only growth shifts slots in this worker.
    assert_eq!(grow_killed_at(FaultPoint::MidShift), 7);
}

/// A worker is killed while the index shrinks, with its new size stored and the `nth` slot
/// past it copied into the active slots but not yet emptied: that session is then in two
/// slots, one past the active ones, the slots moved before it emptied, those after it not
/// yet moved. Every session survives, the repair leaves a sound index, and the next purge
/// shrinks it.
fn shrink_killed_at_move(nth: usize) {
    let _serial = serial();
    let name = unique_name("crash-shrink");
    let master = one_shard(&name);
    neighbours(&master, 40);
    // 191 records: 256 slots. Without the 150 spikes, 41 records: at most 3/16 of 256, so
    // the index shrinks to 128, and the slots past 128 move.
    for i in 0..150 {
        master.set_raw(&format!("spike{i}"), b"spike", Expiry::Default).unwrap();
    }
    assert_eq!(master.stats().unwrap().index_slots, 256);
    for i in 0..150 {
        assert!(master.destroy(&format!("spike{i}")).unwrap());
    }
    assert_eq!(master.stats().unwrap().index_slots, 256);
    PARK_ON_HIT.store(nth, Ordering::SeqCst);
    kill_parked_by(&name, FaultPoint::MidShrink, park_on_nth_hit, |s| {
        s.purge_expired().unwrap();
    });
    assert_neighbours(&master, 40);
    assert_eq!(master.get_raw("sentinel").unwrap().as_deref(), Some(&b"sentinel"[..]));
    let report = master.check_integrity();
    assert!(report.is_ok(), "{report}");
    assert_eq!(master.stats().unwrap().records, 41);
    master.purge_expired().unwrap();
    assert_eq!(master.stats().unwrap().index_slots, 128);
    assert_neighbours(&master, 40);
    assert_sound_and_no_leak(&master);
}

#[test]
fn killed_as_the_index_shrinks_loses_no_session() {
    shrink_killed_at_move(1);
}

#[test]
fn killed_deep_into_a_shrink_loses_no_session() {
    // About half of the 41 records sit past slot 128 (the hash key is random per segment):
    // fewer than 4 of them there is a layout of about one chance in 200 million.
    shrink_killed_at_move(4);
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
    let config = common::config(&name)
        .memory_size(256 << 10)
        .shards(1)
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

mod campaign {
    //! Crash-consistency campaign: three workers run mixed operations on their own keys with
    //! self-checking values and acknowledge every completed write to the master through a pipe.
    //! The master SIGKILLs a random worker at a random moment, reaps it, checks the store, and
    //! forks a replacement; `CRASH_KILLS` kills (200 by default, at most 10,000). A worker spends
    //! most of its time outside the shard locks, so half of the replacements also arm a fault
    //! point (lock held, mid-copy, before publish) after a random number of operations and park
    //! there: those are killed inside the lock, mid-write. After each kill: `check_integrity()`
    //! passes, every write acknowledged before the kill reads back byte for byte, and at most one key of the dead worker (the one
    //! its in-flight operation touched) differs, and only as that operation would leave it.
    //! Every operation in the workers runs under the lock timeout: a worker that waits past it
    //! fails. At the end every session is destroyed and the free space is back where it began.
    //! The figures are printed: kills, recoveries, writes acknowledged, key states verified,
    //! in-flight writes that landed, acknowledged writes lost (asserted to be 0).
    use std::os::fd::{AsFd, OwnedFd};
    use std::time::Duration;

    use std::sync::atomic::Ordering;

    use super::common::{
        config, sealed, sealed_counter, serial, spawn, unique_name, unsealed_ok, Child, Rng, WAIT,
    };
    use cluster_session_store::fault::{self, FaultPoint};
    use cluster_session_store::{ClusterStore, Expiry};
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

    const WORKERS: usize = 3;
    const KEYS: usize = 32;
    const SET: u8 = 1;
    const DESTROY: u8 = 2;

    /// What the master knows of one key: the counter and length of the last acknowledged
    /// write, and whether that write was a destroy.
    #[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
    struct Acked {
        counter: u32,
        len: u16,
        present: bool,
    }

    /// Bytes of one acknowledgement: `[key, counter (4), len (2), kind]`.
    const ACK: usize = 8;

    fn ack_bytes(k: usize, a: Acked, kind: u8) -> [u8; ACK] {
        let mut b = [0u8; ACK];
        b[0] = k as u8;
        b[1..5].copy_from_slice(&a.counter.to_le_bytes());
        b[5..7].copy_from_slice(&a.len.to_le_bytes());
        b[7] = kind;
        b
    }

    fn key(worker: usize, k: usize) -> String {
        format!("w{worker}-k{k:02}")
    }

    /// Where and when a worker parks itself: the fault point, and after how many operations.
    #[derive(Clone, Copy)]
    struct Park {
        point: FaultPoint,
        after: u64,
    }

    /// In a worker: a line on the process's stderr itself. `eprintln!` would write into the
    /// test harness's capture buffer, which a forked child copies and never shows.
    macro_rules! complain {
        ($($arg:tt)*) => {{
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), $($arg)*);
        }};
    }

    /// A worker: mixed operations on its own keys, forever, acknowledging each completed write
    /// as `ACK` bytes (one `write`, under PIPE_BUF, so never torn).
    fn worker(
        name: &str,
        w: usize,
        mut state: [Acked; KEYS],
        ack: &OwnedFd,
        seed: u64,
        park_at: Option<Park>,
    ) -> i32 {
        let store = ClusterStore::open(name).unwrap();
        let mut rng = Rng(seed | 1);
        for op in 0.. {
            if let Some(p) = park_at.filter(|p| p.after == op) {
                fault::arm(p.point, super::common::park);
            }
            let k = rng.below(KEYS as u64) as usize;
            let sid = key(w, k);
            match rng.below(10) {
                0..=5 => {
                    let counter = state[k].counter + 1;
                    let len = 50 + rng.below(3000) as u16;
                    let value = sealed(w as u8, counter, len as usize);
                    match store.set_raw(&sid, &value, Expiry::Default) {
                        Ok(()) => {}
                        // A full `Refuse` store: nothing written, nothing acknowledged.
                        Err(cluster_session_store::StoreError::Full { .. }) => continue,
                        Err(e) => {
                            complain!("worker {w} set {sid}: {e}");
                            return 10;
                        }
                    }
                    state[k] = Acked { counter, len, present: true };
                    let _ = nix::unistd::write(ack, &ack_bytes(k, state[k], SET));
                }
                6..=8 => match store.get_raw(&sid) {
                    Ok(Some(v))
                        if state[k].present
                            && unsealed_ok(&v)
                            && sealed_counter(&v) == state[k].counter => {}
                    Ok(None) if !state[k].present => {}
                    other => {
                        complain!(
                            "worker {w} get {sid}: state {:?}, got {:?}",
                            state[k],
                            other.map(|o| o.map(|v| (
                                v.len(),
                                unsealed_ok(&v),
                                if v.len() > 5 { sealed_counter(&v) } else { 0 }
                            )))
                        );
                        return 11;
                    }
                },
                _ => {
                    if let Err(e) = store.destroy(&sid) {
                        complain!("worker {w} destroy {sid}: {e}");
                        return 12;
                    }
                    state[k].present = false;
                    let _ = nix::unistd::write(ack, &ack_bytes(k, state[k], DESTROY));
                }
            }
        }
        unreachable!("the loop ends only by a kill or an error return")
    }

    struct Slot {
        child: Child,
        acks: OwnedFd,
        /// Set when the worker will park at a fault point: a byte arrives when it has.
        parked: Option<super::common::Signal1>,
    }

    /// Forks worker `w`; if `may_park`, half the time it will park at a fault point.
    fn start(name: &str, w: usize, state: [Acked; KEYS], rng: &mut Rng, may_park: bool) -> Slot {
        let (read, write) = nix::unistd::pipe().unwrap();
        let seed = rng.next();
        let park_at = (may_park && rng.below(2) == 0).then(|| Park {
            point: [FaultPoint::LockHeld, FaultPoint::MidCopy, FaultPoint::BeforePublish]
                [rng.below(3) as usize],
            after: rng.below(50),
        });
        let parked = park_at.map(|_| super::common::Signal1::new());
        let child = spawn(|| {
            if let Some(signal) = &parked {
                super::common::PARK_FD.store(signal.write_fd(), Ordering::SeqCst);
            }
            worker(name, w, state, &write, seed, park_at)
        });
        drop(write);
        Slot { child, acks: read, parked }
    }

    /// Reads one acknowledgement; `None` at end of file or, when `wait` is false, when
    /// none is pending.
    fn read_ack(fd: &OwnedFd, wait: bool) -> Option<(usize, Acked)> {
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        let timeout = if wait {
            PollTimeout::try_from(WAIT.as_millis() as i32).unwrap()
        } else {
            PollTimeout::ZERO
        };
        if poll(&mut fds, timeout).unwrap_or(0) == 0 {
            assert!(!wait, "no acknowledgement within {WAIT:?}");
            return None;
        }
        let mut buf = [0u8; ACK];
        let n = nix::unistd::read(fd, &mut buf).unwrap_or(0);
        if n == 0 {
            return None;
        }
        assert_eq!(n, ACK, "torn acknowledgement");
        let counter = u32::from_le_bytes(buf[1..5].try_into().unwrap());
        let len = u16::from_le_bytes(buf[5..7].try_into().unwrap());
        Some((buf[0] as usize, Acked { counter, len, present: buf[7] == SET }))
    }

    /// What checking a dead worker's keys found.
    #[derive(Default)]
    struct Checked {
        /// Key states compared with what was acknowledged.
        keys: u64,
        /// Keys whose in-flight write had landed.
        landed: u64,
        /// Acknowledged writes not read back byte for byte (must stay 0).
        lost: u64,
    }

    /// Checks every key of worker `w` against what was acknowledged, byte for byte. A key may
    /// differ only as one in-flight operation would leave it (the next counter's value, written
    /// whole, or a destroy), and at most one key may; anything else counts as lost. Updates
    /// `acked` to what is stored.
    fn verify(store: &ClusterStore, w: usize, acked: &mut [Acked; KEYS], checked: &mut Checked) {
        let mut differing = 0;
        for (k, slot) in acked.iter_mut().enumerate() {
            let stored = store.get_raw(&key(w, k)).unwrap();
            let want = *slot;
            checked.keys += 1;
            let found = match &stored {
                Some(v) if v.len() >= 9 && v[0] == w as u8 => {
                    let counter = sealed_counter(v);
                    let len = (v.len() - 9) as u16;
                    if *v != sealed(w as u8, counter, len as usize) {
                        checked.lost += 1; // damaged bytes
                        continue;
                    }
                    Acked { counter, len, present: true }
                }
                Some(_) => {
                    checked.lost += 1;
                    continue;
                }
                None => Acked { present: false, ..want },
            };
            if found == want || (!found.present && !want.present) {
                continue;
            }
            let in_flight_set = found.present && found.counter == want.counter + 1;
            let in_flight_destroy = !found.present && want.present;
            if in_flight_set || in_flight_destroy {
                differing += 1;
                checked.landed += 1;
            } else {
                checked.lost += 1;
            }
            *slot = found;
        }
        if differing > 1 {
            checked.lost += differing - 1;
        }
    }

    #[test]
    fn random_kills_lose_nothing_acknowledged() {
        campaign("campaign", false);
    }

    /// The same on a `Refuse` store too small for the workers' sessions: new sessions and
    /// growth are refused (`Full`, so not acknowledged), and rewrites of a full shard go
    /// through its spare block, where the kills land too.
    #[test]
    fn random_kills_of_a_full_refuse_store_lose_nothing_acknowledged() {
        campaign("campaign-full", true);
    }

    fn campaign(prefix: &str, full: bool) {
        let _serial = serial();
        let kills: usize =
            std::env::var("CRASH_KILLS").map_or(200, |v| v.parse().unwrap()).min(10_000);
        let name = unique_name(prefix);
        let config = config(&name)
            .memory_size(8 << 20)
            .shards(8)
            .lock_timeout(Duration::from_secs(10))
            .sweep_interval(Duration::from_millis(20));
        let config = if full {
            config
                .memory_size(256 << 10)
                .shards(2)
                .eviction(cluster_session_store::Eviction::Refuse)
        } else {
            config
        };
        let master = ClusterStore::setup(config).unwrap();
        let free_at_start = master.stats().unwrap();
        let memory_at_start = master.memory().unwrap();
        let mut rng = Rng(0x5EED_0FC4_A54E);
        let mut acked = [[Acked::default(); KEYS]; WORKERS];
        let mut slots: Vec<Slot> =
            (0..WORKERS).map(|w| start(&name, w, acked[w], &mut rng, false)).collect();
        let mut writes = 0u64;
        let mut checked = Checked::default();
        for _ in 0..kills {
            // A worker that will park is always the next victim, and there is at most one: a
            // parked worker holds its shard lock until it is killed.
            let w = slots
                .iter()
                .position(|slot| slot.parked.is_some())
                .unwrap_or_else(|| rng.below(WORKERS as u64) as usize);
            if let Some(parked) = &slots[w].parked {
                // It arms its fault point after a few operations and parks at its next write.
                assert!(parked.wait(WAIT), "worker {w} never parked");
            } else {
                // Let the victim (and meanwhile the others) make progress, then kill it at a
                // random moment within its next operations.
                for _ in 0..1 + rng.below(40) {
                    let Some((k, a)) = read_ack(&slots[w].acks, true) else {
                        let code = slots[w].child.wait(WAIT);
                        panic!("worker {w} stopped acknowledging: it exited with {code} (10: a set failed, 11: a read was wrong, 12: a destroy failed; its stderr says why)");
                    };
                    acked[w][k] = a;
                    writes += 1;
                }
                for _ in 0..rng.below(50_000) {
                    std::hint::spin_loop();
                }
            }
            assert_eq!(slots[w].child.kill(), 128 + 9, "worker {w} had already exited");
            while let Some((k, a)) = read_ack(&slots[w].acks, false) {
                acked[w][k] = a;
                writes += 1;
            }
            let report = master.check_integrity();
            assert!(report.is_ok(), "{report}");
            verify(&master, w, &mut acked[w], &mut checked);
            // Keep the other workers' pipes drained so they never block on a full pipe.
            for (o, slot) in slots.iter().enumerate().filter(|(o, _)| *o != w) {
                while let Some((k, a)) = read_ack(&slot.acks, false) {
                    acked[o][k] = a;
                    writes += 1;
                }
            }
            slots[w] = start(&name, w, acked[w], &mut rng, true);
        }
        // Kill every worker before checking any: a worker armed to park may be holding a lock.
        for (w, slot) in slots.iter_mut().enumerate() {
            assert_eq!(slot.child.kill(), 128 + 9, "worker {w} had already exited");
        }
        for (w, slot) in slots.iter().enumerate() {
            fcntl(&slot.acks, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).unwrap();
            while let Some((k, a)) = read_ack(&slot.acks, false) {
                acked[w][k] = a;
                writes += 1;
            }
        }
        let report = master.check_integrity();
        assert!(report.is_ok(), "{report}");
        for (w, state) in acked.iter_mut().enumerate() {
            verify(&master, w, state, &mut checked);
        }
        let stats = master.stats().unwrap();
        assert_eq!(stats.evictions, 0, "the campaign assumes nothing is evicted");
        if full {
            assert!(
                stats.used_bytes * 4 >= stats.data_bytes * 3,
                "the store never filled: {stats}"
            );
        }
        for w in 0..WORKERS {
            for k in 0..KEYS {
                master.destroy(&key(w, k)).unwrap();
            }
        }
        let end = master.stats().unwrap();
        assert_eq!(
            (end.records, end.used_bytes),
            (free_at_start.records, free_at_start.used_bytes)
        );
        assert_eq!(master.memory().unwrap(), memory_at_start, "memory leaked by the repairs");
        let report = master.check_integrity();
        assert!(report.is_ok(), "{report}");
        eprintln!(
            "crash campaign ({prefix}): {kills} kills, {} recoveries, {writes} writes acknowledged, {} key \
             states verified byte for byte, {} in-flight writes landed, {} acknowledged writes lost",
            end.recoveries, checked.keys, checked.landed, checked.lost
        );
        assert_eq!(checked.lost, 0, "acknowledged writes were lost");
    }
}

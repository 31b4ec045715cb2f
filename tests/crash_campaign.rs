//! Crash-consistency campaign: three workers run mixed operations on their own keys with
//! self-checking values and acknowledge every completed write to the master through a pipe.
//! The master SIGKILLs a random worker at a random moment, reaps it, checks the store, and
//! forks a replacement; `CRASH_KILLS` kills (200 by default, at most 10,000). A worker spends
//! most of its time outside the shard locks, so half of the replacements also arm a fault
//! point (lock held, mid-copy, before publish) after a random number of operations and park
//! there: those are killed inside the lock, mid-write. After each kill: `check_integrity()` passes, every write acknowledged
//! before the kill reads back byte for byte, and at most one key of the dead worker (the one
//! its in-flight operation touched) differs, and only as that operation would leave it.
//! Every operation in the workers runs under the lock timeout: a worker that waits past it
//! fails. At the end every session is destroyed and the free space is back where it began.
//! The figures are printed: kills, recoveries, writes checked, in-flight writes that landed.
mod common;

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use std::sync::atomic::Ordering;

use cluster_session_store::fault::{self, FaultPoint};
use cluster_session_store::{ClusterStore, Config, Expiry};
use common::{sealed, sealed_counter, serial, spawn, unique_name, unsealed_ok, Child, Rng, WAIT};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

const WORKERS: usize = 3;
const KEYS: usize = 32;
const SET: u8 = 1;
const DESTROY: u8 = 2;

/// What the master knows of one key: the counter of the last acknowledged write, and
/// whether that write was a destroy.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
struct Acked {
    counter: u32,
    present: bool,
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

/// A worker: mixed operations on its own keys, forever, acknowledging each completed write
/// as 6 bytes `[key, counter (4), kind]` (one `write`, under PIPE_BUF, so never torn).
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
            fault::arm(p.point, common::park);
        }
        let k = rng.below(KEYS as u64) as usize;
        let sid = key(w, k);
        match rng.below(10) {
            0..=5 => {
                let counter = state[k].counter + 1;
                let value = sealed(w as u8, counter, 50 + rng.below(3000) as usize);
                if let Err(e) = store.set_raw(&sid, &value, Expiry::Default) {
                    eprintln!("worker {w} set {sid}: {e}");
                    return 10;
                }
                state[k] = Acked { counter, present: true };
                let _ = nix::unistd::write(
                    ack,
                    &[[k as u8].as_slice(), &counter.to_le_bytes(), &[SET]].concat(),
                );
            }
            6..=8 => match store.get_raw(&sid) {
                Ok(Some(v))
                    if state[k].present
                        && unsealed_ok(&v)
                        && sealed_counter(&v) == state[k].counter => {}
                Ok(None) if !state[k].present => {}
                other => {
                    eprintln!(
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
                    eprintln!("worker {w} destroy {sid}: {e}");
                    return 12;
                }
                state[k].present = false;
                let counter = state[k].counter;
                let _ = nix::unistd::write(
                    ack,
                    &[[k as u8].as_slice(), &counter.to_le_bytes(), &[DESTROY]].concat(),
                );
            }
        }
    }
    unreachable!("the loop ends only by a kill or an error return")
}

struct Slot {
    child: Child,
    acks: OwnedFd,
    /// Set when the worker will park at a fault point: a byte arrives when it has.
    parked: Option<common::Signal1>,
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
    let parked = park_at.map(|_| common::Signal1::new());
    let child = spawn(|| {
        if let Some(signal) = &parked {
            common::PARK_FD.store(signal.write_fd(), Ordering::SeqCst);
        }
        worker(name, w, state, &write, seed, park_at)
    });
    drop(write);
    Slot { child, acks: read, parked }
}

/// Reads one 6-byte acknowledgement; `None` at end of file or, when `wait` is false, when
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
    let mut buf = [0u8; 6];
    let n = nix::unistd::read(fd.as_raw_fd(), &mut buf).unwrap_or(0);
    if n == 0 {
        return None;
    }
    assert_eq!(n, 6, "torn acknowledgement");
    let counter = u32::from_le_bytes(buf[1..5].try_into().unwrap());
    Some((buf[0] as usize, Acked { counter, present: buf[5] == SET }))
}

/// Checks every key of worker `w` against what was acknowledged. A key may differ only as
/// one in-flight operation would leave it (a set of the next counter, or a destroy), and at
/// most one key may. Updates `acked` to what is stored; returns whether an in-flight write
/// landed.
fn verify(store: &ClusterStore, w: usize, acked: &mut [Acked; KEYS]) -> bool {
    let mut differing = 0;
    for (k, slot) in acked.iter_mut().enumerate() {
        let stored = store.get_raw(&key(w, k)).unwrap();
        let want = *slot;
        let found = match &stored {
            Some(v) => {
                assert!(unsealed_ok(v) && v[0] == w as u8, "{}: damaged value", key(w, k));
                Acked { counter: sealed_counter(v), present: true }
            }
            None => Acked { counter: want.counter, present: false },
        };
        if found == want {
            continue;
        }
        let in_flight_set = found.present && found.counter == want.counter + 1;
        let in_flight_destroy = !found.present && want.present;
        assert!(
            in_flight_set || in_flight_destroy,
            "{}: acked {want:?}, stored {found:?}",
            key(w, k)
        );
        differing += 1;
        *slot = found;
    }
    assert!(differing <= 1, "worker {w}: {differing} keys differ from what was acknowledged");
    differing == 1
}

#[test]
fn random_kills_lose_nothing_acknowledged() {
    let _serial = serial();
    let kills: usize = std::env::var("CRASH_KILLS").map_or(200, |v| v.parse().unwrap()).min(10_000);
    let name = unique_name("campaign");
    let config = Config::new()
        .name(&name)
        .memory_size(8 << 20)
        .shards(8)
        .max_value_size(4096)
        .lock_timeout(Duration::from_secs(10))
        .sweep_interval(Duration::from_millis(20));
    let master = ClusterStore::setup(config).unwrap();
    let free_at_start = master.stats().unwrap();
    let mut rng = Rng(0x5EED_0FC4_A54E);
    let mut acked = [[Acked::default(); KEYS]; WORKERS];
    let mut slots: Vec<Slot> =
        (0..WORKERS).map(|w| start(&name, w, acked[w], &mut rng, false)).collect();
    let (mut writes, mut landed) = (0u64, 0u64);
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
                let (k, a) =
                    read_ack(&slots[w].acks, true).expect("a worker stopped acknowledging");
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
        landed += u64::from(verify(&master, w, &mut acked[w]));
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
        fcntl(slot.acks.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).unwrap();
        while let Some((k, a)) = read_ack(&slot.acks, false) {
            acked[w][k] = a;
            writes += 1;
        }
    }
    let report = master.check_integrity();
    assert!(report.is_ok(), "{report}");
    for (w, state) in acked.iter_mut().enumerate() {
        landed += u64::from(verify(&master, w, state));
    }
    let stats = master.stats().unwrap();
    assert_eq!(stats.evictions, 0, "the campaign assumes nothing is evicted");
    for w in 0..WORKERS {
        for k in 0..KEYS {
            master.destroy(&key(w, k)).unwrap();
        }
    }
    let end = master.stats().unwrap();
    assert_eq!((end.records, end.used_bytes), (free_at_start.records, free_at_start.used_bytes));
    let report = master.check_integrity();
    assert!(report.is_ok(), "{report}");
    eprintln!(
        "crash campaign: {kills} kills, {} recoveries, {writes} acknowledged writes checked, \
         {landed} in-flight writes landed, 0 acknowledged writes lost",
        end.recoveries
    );
}

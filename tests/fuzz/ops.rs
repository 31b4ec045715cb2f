//! Fuzz target `ops`: a sequence of store operations, decoded from the input with
//! `arbitrary`, checked against a `HashMap` oracle, with faults injected: the store's clock
//! jumping forward and back by whole hours, and a writer (a forked child) that exits in the
//! middle of a write while it holds the shard lock. After the fault, and at the end, the
//! store's own `check_integrity()` must pass. Any error other than the one bad input can
//! cause (`ValueTooLarge`) is a failure.
//!
//! Time: every TTL is a whole number of hours plus 30 minutes and every jump a whole number
//! of hours, so no deadline is ever within 30 minutes of the store's clock: whether a session
//! is live never depends on how long the run itself takes. An expired session that no
//! operation has freed yet may come back when the clock jumps back (expiry is lazy); the
//! oracle allows exactly that, and nothing else. The oracle forgets a key only when the store
//! has certainly dropped it, so that `purge_expired` can be held to what may still be there.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arbitrary::{Arbitrary, Unstructured};
use cluster_session_store::fault::{self, FaultPoint};
use cluster_session_store::{ClusterStore, Config, Eviction, Expiry, StoreError};

const KEYS: u8 = 16;
const MAX_VALUE: usize = 512;
const HOUR_MS: i64 = 3_600_000;

/// One operation; sizes above `MAX_VALUE` are bad input.
#[derive(Arbitrary, Debug)]
pub enum Op {
    Set { key: u8, len: u16, byte: u8, ttl: u8 },
    SetPast { key: u8 },
    Get { key: u8 },
    Destroy { key: u8 },
    Touch { key: u8, ttl: u8 },
    Update { key: u8, byte: u8, ttl: u8 },
    Add { key: u8, len: u16, byte: u8, ttl: u8 },
    Replace { key: u8, len: u16, byte: u8, ttl: u8 },
    Length,
    All,
    Clear,
    Purge,
    ClockJump { hours: i8 },
    AbandonMidWrite { key: u8, len: u16, byte: u8, point: u8 },
    Integrity,
}

/// What the oracle knows of a key.
struct Entry {
    value: Vec<u8>,
    /// Deadline on the store's clock, unix ms.
    deadline: i64,
    /// It was expired at some moment since written: the store may have freed it.
    maybe_freed: bool,
}

struct Model {
    store: ClusterStore,
    oracle: HashMap<String, Entry>,
    /// The store's clock offset we set, ms.
    offset: i64,
}

fn key(k: u8) -> String {
    format!("k{}", k % KEYS)
}

fn ttl(t: u8) -> (Expiry, i64) {
    let ms = i64::from(1 + t % 48) * HOUR_MS + HOUR_MS / 2;
    (Expiry::After(Duration::from_millis(ms as u64)), ms)
}

fn value(len: u16, byte: u8) -> Vec<u8> {
    vec![byte; usize::from(len) % (MAX_VALUE + 100)]
}

impl Model {
    fn now(&self) -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64 + self.offset
    }

    /// `Some(certain)` if the key is live: `certain` false when the store may have freed it.
    fn live(&self, k: &str) -> Option<bool> {
        let now = self.now();
        self.oracle.get(k).filter(|e| e.deadline > now).map(|e| !e.maybe_freed)
    }

    fn write(&mut self, k: &str, value: Vec<u8>, ttl_ms: i64) {
        let deadline = self.now() + ttl_ms;
        self.oracle.insert(k.to_owned(), Entry { value, deadline, maybe_freed: false });
    }

    /// Checks a read of `k`; an uncertain key that reads as absent is forgotten.
    fn check_read(&mut self, k: &str, got: Option<Vec<u8>>) {
        match (self.live(k), got) {
            (Some(_), Some(v)) => assert_eq!(v, self.oracle[k].value, "{k}: wrong value"),
            (Some(true), None) => panic!("{k}: live session missing"),
            (Some(false), None) => drop(self.oracle.remove(k)),
            (None, None) => {}
            (None, Some(v)) => {
                panic!("{k}: expired or absent session read back: {} bytes", v.len())
            }
        }
    }

    /// Checks "was a live session there", answered by the store.
    fn check_was_live(&mut self, k: &str, was: bool) {
        match (self.live(k), was) {
            (Some(true), false) => panic!("{k}: live session not found"),
            (None, true) => panic!("{k}: found a session that is not live"),
            _ => {}
        }
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Set { key: k, len, byte, ttl: t } => {
                let (k, v, (e, ms)) = (key(k), value(len, byte), ttl(t));
                match self.store.set_raw(&k, &v, e) {
                    Err(StoreError::ValueTooLarge { .. }) => assert!(v.len() > MAX_VALUE),
                    r => {
                        r.unwrap();
                        self.write(&k, v, ms);
                    }
                }
            }
            Op::SetPast { key: k } => {
                let k = key(k);
                self.store.set_raw(&k, b"x", Expiry::At(UNIX_EPOCH)).unwrap();
                self.oracle.remove(&k);
            }
            Op::Get { key: k } => {
                let k = key(k);
                let got = self.store.get_raw(&k).unwrap();
                self.check_read(&k, got);
            }
            Op::Destroy { key: k } => {
                let k = key(k);
                let was = self.store.destroy(&k).unwrap();
                self.check_was_live(&k, was);
                self.oracle.remove(&k);
            }
            Op::Touch { key: k, ttl: t } => {
                let (k, (e, ms)) = (key(k), ttl(t));
                let was = self.store.touch(&k, e).unwrap();
                self.check_was_live(&k, was);
                if was {
                    let deadline = self.now() + ms;
                    let entry = self.oracle.get_mut(&k).unwrap();
                    (entry.deadline, entry.maybe_freed) = (deadline, false);
                } else if self.live(&k).is_some() {
                    self.oracle.remove(&k); // it had been freed
                }
            }
            Op::Update { key: k, byte, ttl: t } => {
                let (k, (e, ms)) = (key(k), ttl(t));
                let stored = self
                    .store
                    .update_raw(&k, e, |old| {
                        old.filter(|v| v.len() < MAX_VALUE).map(|v| [v, &[byte]].concat())
                    })
                    .unwrap();
                match stored {
                    Some(v) => {
                        let old = self.oracle.get(&k).filter(|_| self.live(&k).is_some());
                        assert_eq!(Some(&v[..v.len() - 1]), old.map(|e| &e.value[..]), "{k}");
                        self.write(&k, v, ms);
                    }
                    None => {
                        // Live and full length: the closure returned None, which removed it;
                        // uncertain: it had been freed. Not live: an expired record the store
                        // may still hold stays, as it does in the store.
                        if let Some(certain) = self.live(&k) {
                            let full = self.oracle[&k].value.len() >= MAX_VALUE;
                            assert!(full || !certain, "{k}: update found no live session");
                            self.oracle.remove(&k);
                        }
                    }
                }
            }
            Op::Add { key: k, len, byte, ttl: t } => {
                let (k, v, (e, ms)) = (key(k), value(len, byte), ttl(t));
                match self.store.add_raw(&k, &v, e) {
                    Err(StoreError::ValueTooLarge { .. }) => assert!(v.len() > MAX_VALUE),
                    r => {
                        let added = r.unwrap();
                        self.check_was_live(&k, !added);
                        if added {
                            self.write(&k, v, ms);
                        }
                    }
                }
            }
            Op::Replace { key: k, len, byte, ttl: t } => {
                let (k, v, (e, ms)) = (key(k), value(len, byte), ttl(t));
                match self.store.replace_raw(&k, &v, e) {
                    Err(StoreError::ValueTooLarge { .. }) => assert!(v.len() > MAX_VALUE),
                    r => {
                        let replaced = r.unwrap();
                        self.check_was_live(&k, replaced);
                        if replaced {
                            self.write(&k, v, ms);
                        } else if self.live(&k).is_some() {
                            self.oracle.remove(&k); // uncertain, and it had been freed
                        }
                    }
                }
            }
            Op::Length => {
                let n = self.store.length().unwrap();
                let keys: Vec<String> = self.oracle.keys().cloned().collect();
                let certain = keys.iter().filter(|k| self.live(k) == Some(true)).count();
                let possible = keys.iter().filter(|k| self.live(k).is_some()).count();
                assert!(
                    (certain..=possible).contains(&n),
                    "length {n}, expected {certain}..={possible}"
                );
            }
            Op::All => {
                let all: HashMap<String, Vec<u8>> =
                    self.store.all_raw().unwrap().into_iter().collect();
                let keys: Vec<String> = self.oracle.keys().cloned().collect();
                for k in keys {
                    let got = all.get(&k).cloned();
                    self.check_read(&k, got);
                }
                for k in all.keys() {
                    assert!(self.oracle.contains_key(k), "all: unknown session {k}");
                }
            }
            Op::Clear => {
                self.store.clear().unwrap();
                self.oracle.clear();
            }
            Op::Purge => {
                let freed = self.store.purge_expired().unwrap();
                let now = self.now();
                let expired = self.oracle.values().filter(|e| e.deadline <= now).count() as u64;
                assert!(freed <= expired, "purged {freed}, at most {expired} were expired");
                self.oracle.retain(|_, e| e.deadline > now);
            }
            Op::ClockJump { hours } => {
                let delta = i64::from(hours % 72) * HOUR_MS;
                fault::shift_clock(delta);
                self.offset += delta;
                let now = self.now();
                for e in self.oracle.values_mut().filter(|e| e.deadline <= now) {
                    e.maybe_freed = true;
                }
            }
            Op::AbandonMidWrite { key: k, len, byte, point } => {
                self.abandon(key(k), len, byte, point)
            }
            Op::Integrity => {
                let report = self.store.check_integrity();
                assert!(report.is_ok(), "{report:?}");
            }
        }
    }

    /// A forked writer stops for good at a fault point while it holds the shard lock; the
    /// write it was making may or may not have landed. The next locker repairs the shard.
    fn abandon(&mut self, k: String, len: u16, byte: u8, point: u8) {
        const POINTS: [FaultPoint; 5] = [
            FaultPoint::LockHeld,
            FaultPoint::MidCopy,
            FaultPoint::BeforePublish,
            FaultPoint::AfterPublish,
            FaultPoint::InSpare,
        ];
        let v = value(len, byte);
        // Rewriting the value a live key already has would leave the outcome unreadable:
        // a write abandoned before publishing keeps the old deadline, one after it the new.
        let same = self.oracle.get(&k).is_some_and(|e| e.value == v);
        if v.len() > MAX_VALUE || same {
            return;
        }
        let (e, ms) = ttl(byte);
        let point = POINTS[usize::from(point) % POINTS.len()];
        fn exit_holding_the_lock() {
            // SAFETY: ends the forked child at once, its shard lock still held.
            unsafe { libc::_exit(0) }
        }
        // SAFETY: the child only writes and exits; the store's fork gate parks its
        // coordinator thread across the fork.
        match unsafe { libc::fork() } {
            0 => {
                fault::arm(point, exit_holding_the_lock);
                let _ = self.store.set_raw(&k, &v, e);
                // SAFETY: as above; reached when the write never passed `point`.
                unsafe { libc::_exit(0) }
            }
            -1 => panic!("fork: {}", std::io::Error::last_os_error()),
            child => {
                let mut status = 0;
                // SAFETY: waits for the child just forked.
                assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
            }
        }
        let report = self.store.check_integrity();
        assert!(report.is_ok(), "after an abandoned write: {report:?}");
        // Old or new value: whichever the store now has.
        let got = self.store.get_raw(&k).unwrap();
        if got.as_ref() == Some(&v) {
            self.write(&k, v, ms);
        } else {
            self.check_read(&k, got);
        }
    }
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// What one run did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ran {
    pub ops: usize,
    pub clock_jumps: usize,
    pub abandoned_writes: usize,
}

/// Runs the operations decoded from `data` on a fresh store.
pub fn run(data: &[u8]) -> Ran {
    let mut u = Unstructured::new(data);
    let mut ran = Ran::default();
    // Operations until the input runs out (at most 256), not a length-prefixed Vec, which
    // random input mostly ends after one element.
    let mut ops = Vec::new();
    while !u.is_empty() && ops.len() < 256 {
        match Op::arbitrary(&mut u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    let name = format!("fuzz-ops-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
    let master = ClusterStore::setup(
        Config::new()
            .name(&name)
            .memory_size(512 << 10)
            .shards(4)
            .max_value_size(MAX_VALUE)
            .eviction(Eviction::Refuse)
            .sweep_interval(Duration::from_secs(3600)),
    )
    .expect("setup");
    /// Puts the store's clock back however the run ends (a failing run panics).
    struct ClockReset;
    impl Drop for ClockReset {
        fn drop(&mut self) {
            fault::reset_clock();
        }
    }
    fault::reset_clock();
    let _reset = ClockReset;
    let mut model = Model { store: master.store(), oracle: HashMap::new(), offset: 0 };
    for op in ops {
        ran.ops += 1;
        ran.clock_jumps += usize::from(matches!(op, Op::ClockJump { .. }));
        ran.abandoned_writes += usize::from(matches!(op, Op::AbandonMidWrite { .. }));
        model.apply(op);
    }
    fault::reset_clock();
    let report = model.store.check_integrity();
    assert!(report.is_ok(), "{report:?}");
    ran
}

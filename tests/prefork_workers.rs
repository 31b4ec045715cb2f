//! Sessions shared between real forked workers: the master sets up before forking, each
//! worker attaches with no arguments, and every operation made in one worker is seen by the
//! others. Includes the seed's own two cases, 4 workers incrementing one counter through
//! `update`, and 4 workers running mixed random operations on overlapping keys.
mod common;

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use cluster_session_store::{ClusterStore, Config, Expiry};
use common::{sealed, serial, spawn, unique_name, unsealed_ok, Rng, Signal1, WAIT};
use serde::{Deserialize, Serialize};

fn small(name: &str) -> Config {
    Config::new().name(name).memory_size(8 << 20).shards(16).max_value_size(2048)
}

/// Runs `body` in a forked worker and asserts it exited 0.
fn in_worker(body: impl FnOnce() -> i32) {
    assert_eq!(spawn(body).wait(WAIT), 0, "worker failed");
}

fn check(ok: bool, code: i32) -> Result<(), i32> {
    if ok {
        Ok(())
    } else {
        Err(code)
    }
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Session {
    visited: bool,
    user: String,
}

#[test]
fn every_operation_made_in_one_worker_is_seen_in_another() {
    let _serial = serial();
    let master = ClusterStore::setup(small(cluster_session_store::DEFAULT_NAME)).unwrap();
    let near = SystemTime::now() + Duration::from_millis(30);

    in_worker(|| {
        let store = ClusterStore::new().unwrap();
        store.set_raw("raw", b"bytes", Expiry::Default).unwrap();
        let s = Session { visited: true, user: "ada".into() };
        store.set("typed", &s, Expiry::Default).unwrap();
        store.set_raw("short", b"x", Expiry::Default).unwrap();
        0
    });
    in_worker(move || {
        let run = || -> Result<(), i32> {
            let store = ClusterStore::new().map_err(|_| 2)?;
            check(store.get_raw("raw").map_err(|_| 3)?.as_deref() == Some(&b"bytes"[..]), 4)?;
            let s: Option<Session> = store.get("typed").map_err(|_| 5)?;
            check(s == Some(Session { visited: true, user: "ada".into() }), 6)?;
            check(store.touch("short", Expiry::At(near)).map_err(|_| 7)?, 8)?;
            check(store.destroy("typed").map_err(|_| 9)?, 10)?;
            let n =
                store.update("counter", Expiry::Default, |n: Option<u64>| Some(n.unwrap_or(0) + 1));
            check(n.map_err(|_| 11)? == Some(1), 12)
        };
        run().err().unwrap_or(0)
    });
    in_worker(move || {
        let run = || -> Result<(), i32> {
            let store = ClusterStore::new().map_err(|_| 2)?;
            check(store.get_raw("typed").map_err(|_| 3)?.is_none(), 4)?;
            check(store.get::<u64>("counter").map_err(|_| 5)? == Some(1), 6)?;
            // The touch made in the other worker shortened the session's life.
            while SystemTime::now() <= near {
                std::hint::spin_loop();
            }
            check(store.get_raw("short").map_err(|_| 7)?.is_none(), 8)?;
            check(store.length().map_err(|_| 9)? == 2, 10)?;
            let mut keys: Vec<String> =
                store.all_raw().map_err(|_| 11)?.into_iter().map(|(k, _)| k).collect();
            keys.sort();
            check(keys == ["counter", "raw"], 12)?;
            store.clear().map_err(|_| 13)
        };
        run().err().unwrap_or(0)
    });
    assert_eq!(master.length().unwrap(), 0);
    let report = master.check_integrity();
    assert!(report.is_ok(), "{report}");
}

/// The seed's test: a session created by one worker is found by another.
#[test]
fn sessions_are_shared_between_workers() {
    let _serial = serial();
    let name = unique_name("seed-shared");
    let master = ClusterStore::setup(small(&name)).unwrap();
    in_worker(|| {
        let store = ClusterStore::open(&name).unwrap();
        store.set("sid", &Session { visited: true, user: "w1".into() }, Expiry::Default).unwrap();
        0
    });
    in_worker(|| {
        let store = ClusterStore::open(&name).unwrap();
        let s: Option<Session> = store.get("sid").unwrap();
        i32::from(s.is_none_or(|s| !s.visited || s.user != "w1"))
    });
    assert!(master.check_integrity().is_ok());
}

/// The seed's test: a session destroyed in one worker is gone in the others, including a
/// worker that read it before the destroy and is still running.
#[test]
fn a_session_destroyed_in_one_worker_is_gone_in_the_others() {
    let _serial = serial();
    let name = unique_name("seed-destroy");
    let master = ClusterStore::setup(small(&name)).unwrap();
    master.set_raw("sid", b"session", Expiry::Default).unwrap();
    let (read_done, go_on) = (Signal1::new(), Signal1::new());
    let mut reader = spawn(|| {
        let store = ClusterStore::open(&name).unwrap();
        let before = store.get_raw("sid").unwrap().is_some();
        read_done.notify();
        if !go_on.wait(WAIT) {
            return 2;
        }
        let after = store.get_raw("sid").unwrap().is_none();
        i32::from(!(before && after))
    });
    assert!(read_done.wait(WAIT));
    in_worker(|| i32::from(!ClusterStore::open(&name).unwrap().destroy("sid").unwrap()));
    go_on.notify();
    assert_eq!(reader.wait(WAIT), 0);
    assert!(master.check_integrity().is_ok());
}

#[test]
fn four_workers_times_a_thousand_updates_end_at_exactly_4000() {
    let _serial = serial();
    let name = unique_name("counter");
    let master = ClusterStore::setup(small(&name)).unwrap();
    let mut workers: Vec<_> = (0..4)
        .map(|_| {
            spawn(|| {
                let store = ClusterStore::open(&name).unwrap();
                for _ in 0..1000 {
                    store
                        .update("count", Expiry::Default, |n: Option<u64>| Some(n.unwrap_or(0) + 1))
                        .unwrap();
                }
                0
            })
        })
        .collect();
    for w in &mut workers {
        assert_eq!(w.wait(WAIT), 0);
    }
    assert_eq!(master.get::<u64>("count").unwrap(), Some(4000));
    assert!(master.check_integrity().is_ok());
}

const OPS: u32 = 3000;
const COUNTERS: usize = 4;

/// One worker's share of the mixed test. Keys `w<id>-<k>` are this worker's alone and are
/// checked exactly against a local map; `shared-<k>` are written by all with sealed values
/// and must always read back sealed; `counter-<k>` are incremented by all through `update`.
/// Returns 0 or the number of the failed check.
fn mixed_worker(name: &str, id: u8) -> i32 {
    let store = ClusterStore::open(name).unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ u64::from(id + 1));
    let mut oracle: HashMap<String, Vec<u8>> = HashMap::new();
    let mut increments = [0u64; COUNTERS];
    for n in 0..OPS {
        let own = format!("w{id}-{}", rng.below(32));
        let shared = format!("shared-{}", rng.below(8));
        let result = match rng.below(9) {
            0 | 1 => {
                let v = sealed(id, n, rng.below(1500) as usize);
                store.set_raw(&own, &v, Expiry::Default).unwrap();
                oracle.insert(own, v);
                true
            }
            2 | 3 => store.get_raw(&own).unwrap() == oracle.get(&own).cloned(),
            4 => store.destroy(&own).unwrap() == oracle.remove(&own).is_some(),
            5 => store.touch(&own, Expiry::Default).unwrap() == oracle.contains_key(&own),
            6 => {
                store
                    .set_raw(&shared, &sealed(id, n, rng.below(1000) as usize), Expiry::Default)
                    .unwrap();
                true
            }
            7 => store.get_raw(&shared).unwrap().is_none_or(|v| unsealed_ok(&v)),
            _ => {
                let c = rng.below(COUNTERS as u64) as usize;
                increments[c] += 1;
                let key = format!("counter-{c}");
                store
                    .update(&key, Expiry::Default, |v: Option<u64>| Some(v.unwrap_or(0) + 1))
                    .unwrap()
                    .is_some()
            }
        };
        if !result {
            return 10 + id as i32;
        }
    }
    for (key, value) in &oracle {
        if store.get_raw(key).unwrap().as_ref() != Some(value) {
            return 20 + id as i32;
        }
    }
    store.set(&format!("done-{id}"), &increments.to_vec(), Expiry::Default).unwrap();
    0
}

#[test]
fn four_workers_mixed_random_operations_on_overlapping_keys() {
    let _serial = serial();
    let name = unique_name("mixed");
    let master = ClusterStore::setup(small(&name)).unwrap();
    let mut workers: Vec<_> = (0..4u8).map(|id| spawn(|| mixed_worker(&name, id))).collect();
    for w in &mut workers {
        assert_eq!(w.wait(WAIT), 0, "a worker saw a wrong result");
    }
    let mut expected = [0u64; COUNTERS];
    for id in 0..4 {
        let done: Vec<u64> = master.get(&format!("done-{id}")).unwrap().expect("worker finished");
        for (e, d) in expected.iter_mut().zip(done) {
            *e += d;
        }
    }
    for (c, want) in expected.iter().enumerate() {
        let got = master.get::<u64>(&format!("counter-{c}")).unwrap().unwrap_or(0);
        assert_eq!(got, *want, "counter-{c}");
    }
    let stats = master.stats().unwrap();
    assert_eq!(stats.evictions, 0, "the test assumes nothing is evicted");
    let report = master.check_integrity();
    assert!(report.is_ok(), "{report}");
}

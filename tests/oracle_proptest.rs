//! Random operation sequences checked against a `HashMap` oracle, in one process.
//!
//! `store_matches_a_hash_map`: on a store large enough that nothing is ever evicted, every
//! operation (`set_raw`, `set_raw` with an expiry already past, `set_raw` of a spike of new
//! ids, `get_raw`, `destroy` of one id or of many, `touch`, `touch` with an expiry already
//! past, `update_raw` appending a byte or deleting, `length`, `all_raw`, `clear`,
//! `purge_expired`, which shrinks the index its records no longer fill) over 24 session ids
//! and up to 23 spike ids, in four shards, gives exactly the oracle's answer.
//! `one_shard_matches_a_hash_map_as_its_index_grows_and_shrinks`: the same in one shard,
//! whose index these ids grow past its first 16 slots; some purges must shrink it.
//!
//! `tiny_lru_store_never_returns_a_wrong_value`: on a tiny single-shard LRU store that evicts
//! all the time, the check is weakened to what eviction allows: a session is either the
//! oracle's value or absent (and then stays absent until written again), never another value;
//! `length` and `all_raw` never show more than the oracle. Both check `check_integrity` after
//! every case; each case runs on a fresh store that is dropped at its end.
mod common;

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use cluster_session_store::{ClusterStore, Config, Eviction, Expiry, Master, StoreError};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRng, TestRunner};

const MAX_VALUE: usize = 512;
const LONG: Expiry = Expiry::After(common::LONG);

fn past() -> Expiry {
    Expiry::At(UNIX_EPOCH + Duration::from_secs(1))
}

#[derive(Clone, Debug)]
enum Op {
    Set(usize, Vec<u8>),
    SetPast(usize),
    Get(usize),
    Destroy(usize),
    /// Sets ids `from..to`, past the ones other operations pick: a spike of sessions.
    Spike(usize, usize),
    /// Destroys ids `0..n`, spike ids included: many sessions leaving at once.
    Drain(usize),
    Touch(usize),
    TouchPast(usize),
    Append(usize, u8),
    Delete(usize),
    Length,
    All,
    Clear,
    /// `purge_expired`, which also shrinks an index its records no longer fill.
    Purge,
}

fn ops(keys: usize, max_ops: usize, clear: bool) -> impl Strategy<Value = Vec<Op>> {
    let key = 0..keys;
    let op = prop_oneof![
        8 => (key.clone(), prop::collection::vec(any::<u8>(), 0..=MAX_VALUE))
            .prop_map(|(k, v)| Op::Set(k, v)),
        1 => key.clone().prop_map(Op::SetPast),
        8 => key.clone().prop_map(Op::Get),
        3 => key.clone().prop_map(Op::Destroy),
        1 => key.clone().prop_map(move |n| Op::Spike(keys, keys + n)),
        1 => (0..2 * keys).prop_map(Op::Drain),
        3 => key.clone().prop_map(Op::Touch),
        1 => key.clone().prop_map(Op::TouchPast),
        4 => (key.clone(), any::<u8>()).prop_map(|(k, b)| Op::Append(k, b)),
        2 => key.prop_map(Op::Delete),
        2 => Just(Op::Length),
        2 => Just(Op::All),
        1 => Just(Op::Clear),
        1 => Just(Op::Purge),
    ];
    let op = op.prop_filter("no clear", move |op| clear || !matches!(op, Op::Clear));
    prop::collection::vec(op, 1..max_ops)
}

/// Session ids of several lengths, up to the 256-byte limit.
fn sid(k: usize) -> String {
    match k % 4 {
        0 => format!("{k}"),
        1 => format!("sid-{k:04}"),
        2 => format!("{k:0>64}"),
        _ => format!("{k:x>256}"),
    }
}

/// A runner with a fixed seed, so every run tries the same sequences.
fn runner(cases: u32) -> TestRunner {
    let config = ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() };
    let rng = TestRng::deterministic_rng(config.rng_algorithm);
    TestRunner::new_with_rng(config, rng)
}

/// A fresh store with values up to `MAX_VALUE`, its size and shards set by `config`.
fn fresh(prefix: &str, config: impl FnOnce(Config) -> Config) -> Master {
    common::setup_with(prefix, |c| config(c.max_value_size(MAX_VALUE))).0
}

/// What an `update_raw` closure saw, and what the call returned.
type Updated = (Option<Vec<u8>>, Result<Option<Vec<u8>>, StoreError>);

/// Runs `update_raw` appending `byte`; returns what the closure saw and the result.
fn append(store: &ClusterStore, sid: &str, byte: u8) -> Updated {
    let mut seen = None;
    let result = store.update_raw(sid, LONG, |old| {
        seen = Some(old.map(<[u8]>::to_vec));
        let mut next = old.unwrap_or_default().to_vec();
        next.push(byte);
        Some(next)
    });
    (seen.expect("the closure ran"), result)
}

/// Runs `update_raw` deleting; returns what the closure saw and the result.
fn delete(store: &ClusterStore, sid: &str) -> Updated {
    let mut seen = None;
    let result = store.update_raw(sid, LONG, |old| {
        seen = Some(old.map(<[u8]>::to_vec));
        None
    });
    (seen.expect("the closure ran"), result)
}

fn sorted(mut pairs: Vec<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
    pairs.sort();
    pairs
}

/// Applies `ops` to a store with no eviction and to the oracle; every answer must agree.
/// Counts in `shrinks` the purges that shrank the index.
fn check_exact(store: &ClusterStore, ops: &[Op], shrinks: &mut u64) {
    let mut oracle: HashMap<String, Vec<u8>> = HashMap::new();
    for (step, op) in ops.iter().enumerate() {
        let at = format!("step {step}: {op:?}");
        match op {
            Op::Set(k, v) => {
                store.set_raw(&sid(*k), v, LONG).unwrap_or_else(|e| panic!("{at}: {e}"));
                oracle.insert(sid(*k), v.clone());
            }
            Op::SetPast(k) => {
                store.set_raw(&sid(*k), b"gone", past()).unwrap();
                oracle.remove(&sid(*k));
            }
            Op::Get(k) => {
                assert_eq!(store.get_raw(&sid(*k)).unwrap(), oracle.get(&sid(*k)).cloned(), "{at}")
            }
            Op::Destroy(k) => {
                assert_eq!(
                    store.destroy(&sid(*k)).unwrap(),
                    oracle.remove(&sid(*k)).is_some(),
                    "{at}"
                )
            }
            Op::Spike(from, to) => {
                for k in *from..*to {
                    let v = vec![k as u8; 8];
                    store.set_raw(&sid(k), &v, LONG).unwrap_or_else(|e| panic!("{at}: {e}"));
                    oracle.insert(sid(k), v);
                }
            }
            Op::Drain(n) => {
                for k in 0..*n {
                    let destroyed = store.destroy(&sid(k)).unwrap();
                    assert_eq!(destroyed, oracle.remove(&sid(k)).is_some(), "{at}: {k}");
                }
            }
            Op::Touch(k) => {
                assert_eq!(
                    store.touch(&sid(*k), LONG).unwrap(),
                    oracle.contains_key(&sid(*k)),
                    "{at}"
                )
            }
            Op::TouchPast(k) => assert_eq!(
                store.touch(&sid(*k), past()).unwrap(),
                oracle.remove(&sid(*k)).is_some(),
                "{at}"
            ),
            Op::Append(k, byte) => {
                let (seen, result) = append(store, &sid(*k), *byte);
                let old = oracle.get(&sid(*k)).cloned();
                assert_eq!(seen, old, "{at}: update_raw saw");
                let mut next = old.unwrap_or_default();
                next.push(*byte);
                if next.len() > MAX_VALUE {
                    assert!(
                        matches!(result, Err(StoreError::ValueTooLarge { len, max: MAX_VALUE }) if len == next.len()),
                        "{at}: {result:?}"
                    );
                } else {
                    assert_eq!(result.unwrap(), Some(next.clone()), "{at}");
                    oracle.insert(sid(*k), next);
                }
            }
            Op::Delete(k) => {
                let (seen, result) = delete(store, &sid(*k));
                assert_eq!(seen, oracle.remove(&sid(*k)), "{at}: update_raw saw");
                assert_eq!(result.unwrap(), None, "{at}");
            }
            Op::Length => assert_eq!(store.length().unwrap(), oracle.len(), "{at}"),
            Op::All => assert_eq!(
                sorted(store.all_raw().unwrap()),
                sorted(oracle.clone().into_iter().collect()),
                "{at}"
            ),
            Op::Clear => {
                store.clear().unwrap();
                oracle.clear();
            }
            Op::Purge => {
                let before = store.stats().unwrap().index_slots;
                store.purge_expired().unwrap();
                *shrinks += u64::from(store.stats().unwrap().index_slots < before);
                assert!(store.check_integrity().is_ok(), "{at}: {}", store.check_integrity());
            }
        }
    }
    assert_eq!(store.length().unwrap(), oracle.len());
    assert_eq!(sorted(store.all_raw().unwrap()), sorted(oracle.into_iter().collect()));
    assert_eq!(store.stats().unwrap().evictions, 0, "the large store evicted");
    assert!(store.check_integrity().is_ok(), "{}", store.check_integrity());
}

/// What the tiny store may answer for a session: the oracle's value, or nothing if it was
/// evicted (then the oracle forgets it too, so it cannot come back unwritten).
fn check_weak(oracle: &mut HashMap<String, Vec<u8>>, sid: &str, got: Option<Vec<u8>>, at: &str) {
    match got {
        None => {
            oracle.remove(sid);
        }
        Some(v) => assert_eq!(Some(&v), oracle.get(sid), "{at}: {sid} holds a value never written"),
    }
}

/// Counts of outcomes over all cases of the tiny-store property.
#[derive(Default)]
struct Tally {
    evictions: u64,
    full: u64,
}

/// Applies `ops` to an evicting store; every answer must be one eviction allows.
fn check_weak_ops(store: &ClusterStore, ops: &[Op], tally: &mut Tally) {
    let mut oracle: HashMap<String, Vec<u8>> = HashMap::new();
    for (step, op) in ops.iter().enumerate() {
        let at = format!("step {step}: {op:?}");
        match op {
            Op::Set(k, v) => match store.set_raw(&sid(*k), v, LONG) {
                Ok(()) => {
                    oracle.insert(sid(*k), v.clone());
                }
                // Refused: the previous value, if it survived, is unchanged. LRU refuses only
                // when no run of blocks that avoids the key's own old record is large enough
                // (a 16 KiB store holds few large values); counted.
                Err(StoreError::Full { .. }) => {
                    tally.full += 1;
                    check_weak(&mut oracle, &sid(*k), store.get_raw(&sid(*k)).unwrap(), &at);
                }
                Err(e) => panic!("{at}: {e}"),
            },
            Op::SetPast(k) => {
                store.set_raw(&sid(*k), b"gone", past()).unwrap();
                oracle.remove(&sid(*k));
            }
            Op::Get(k) => check_weak(&mut oracle, &sid(*k), store.get_raw(&sid(*k)).unwrap(), &at),
            Op::Destroy(k) => {
                let destroyed = store.destroy(&sid(*k)).unwrap();
                let was = oracle.remove(&sid(*k)).is_some();
                assert!(was || !destroyed, "{at}: destroyed a ghost");
            }
            Op::Spike(from, to) => {
                for k in *from..*to {
                    let v = vec![k as u8; 8];
                    match store.set_raw(&sid(k), &v, LONG) {
                        Ok(()) => {
                            oracle.insert(sid(k), v);
                        }
                        Err(StoreError::Full { .. }) => {
                            tally.full += 1;
                            check_weak(&mut oracle, &sid(k), store.get_raw(&sid(k)).unwrap(), &at);
                        }
                        Err(e) => panic!("{at}: {e}"),
                    }
                }
            }
            Op::Drain(n) => {
                for k in 0..*n {
                    let destroyed = store.destroy(&sid(k)).unwrap();
                    let was = oracle.remove(&sid(k)).is_some();
                    assert!(was || !destroyed, "{at}: destroyed a ghost {k}");
                }
            }
            Op::Touch(k) => {
                if store.touch(&sid(*k), LONG).unwrap() {
                    assert!(oracle.contains_key(&sid(*k)), "{at}: touched a ghost");
                } else {
                    oracle.remove(&sid(*k));
                }
            }
            Op::TouchPast(k) => {
                let touched = store.touch(&sid(*k), past()).unwrap();
                let was = oracle.remove(&sid(*k)).is_some();
                assert!(was || !touched, "{at}: touched a ghost");
            }
            Op::Append(k, byte) => {
                let (seen, result) = append(store, &sid(*k), *byte);
                check_weak(&mut oracle, &sid(*k), seen.clone(), &format!("{at}: update_raw saw"));
                let mut next = seen.unwrap_or_default();
                next.push(*byte);
                match result {
                    Ok(stored) => {
                        assert_eq!(stored.as_ref(), Some(&next), "{at}");
                        oracle.insert(sid(*k), next);
                    }
                    Err(StoreError::ValueTooLarge { .. }) if next.len() > MAX_VALUE => {}
                    Err(StoreError::Full { .. }) => {
                        tally.full += 1;
                        check_weak(&mut oracle, &sid(*k), store.get_raw(&sid(*k)).unwrap(), &at);
                    }
                    Err(e) => panic!("{at}: {e}"),
                }
            }
            Op::Delete(k) => {
                let (seen, result) = delete(store, &sid(*k));
                check_weak(&mut oracle, &sid(*k), seen, &format!("{at}: update_raw saw"));
                assert_eq!(result.unwrap(), None, "{at}");
                oracle.remove(&sid(*k));
            }
            Op::Length => {
                let length = store.length().unwrap();
                assert!(length <= oracle.len(), "{at}: {length} > {}", oracle.len());
            }
            Op::All => {
                let all = store.all_raw().unwrap();
                for (k, v) in &all {
                    assert_eq!(Some(v), oracle.get(k), "{at}: {k} holds a value never written");
                }
                oracle = all.into_iter().collect();
            }
            Op::Clear => {
                store.clear().unwrap();
                oracle.clear();
            }
            Op::Purge => {
                store.purge_expired().unwrap();
                assert!(store.check_integrity().is_ok(), "{at}: {}", store.check_integrity());
            }
        }
    }
    tally.evictions += store.stats().unwrap().evictions;
    assert!(store.check_integrity().is_ok(), "{}", store.check_integrity());
}

#[test]
fn store_matches_a_hash_map() {
    let _serial = common::serial();
    runner(64)
        .run(&ops(24, 200, true), |ops| {
            let master = fresh("oracle", |c| c.memory_size(4 << 20).shards(4));
            check_exact(&master, &ops, &mut 0);
            drop(master);
            Ok(())
        })
        .unwrap();
}

/// The same over one shard, so that the ids grow its index past 16 slots and drains let
/// purges shrink it; some must.
#[test]
fn one_shard_matches_a_hash_map_as_its_index_grows_and_shrinks() {
    let _serial = common::serial();
    let shrinks = RefCell::new(0);
    runner(64)
        .run(&ops(24, 200, true), |ops| {
            let master = fresh("oracle-one", |c| c.memory_size(4 << 20).shards(1));
            check_exact(&master, &ops, &mut shrinks.borrow_mut());
            drop(master);
            Ok(())
        })
        .unwrap();
    let shrinks = shrinks.into_inner();
    eprintln!("one shard: {shrinks} purges shrank the index");
    assert!(shrinks > 0, "no purge shrank the index: the shrink went untested");
}

#[test]
fn tiny_lru_store_never_returns_a_wrong_value() {
    let _serial = common::serial();
    let tally = RefCell::new(Tally::default());
    runner(64)
        .run(&ops(64, 300, false), |ops| {
            let master =
                fresh("oracle-tiny", |c| c.memory_size(32 << 10).shards(1).eviction(Eviction::Lru));
            check_weak_ops(&master, &ops, &mut tally.borrow_mut());
            drop(master);
            Ok(())
        })
        .unwrap();
    let tally = tally.into_inner();
    eprintln!("tiny store: {} evictions, {} writes refused as Full", tally.evictions, tally.full);
    assert!(tally.evictions > 0, "the tiny store never evicted: the property tested nothing");
}

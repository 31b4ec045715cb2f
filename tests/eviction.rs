//! A full store, under both policies, on a tiny single-shard segment.
//!
//! `Eviction::Lru` (the default): every write succeeds; room is made by evicting sampled
//! least-recently-used sessions (counted in `stats().evictions`), so a session read before
//! every write is never the victim while old untouched ones go; expired records are freed
//! before any live one is evicted.
//!
//! `Eviction::Refuse`: a new session that needs room fails with `StoreError::Full` and changes
//! nothing: the length and every stored value stay as they were. An existing session can
//! always be rewritten with a value that fits its record's size class, however full the
//! shard (through `set`, `replace`, `update`, again and again, smaller and back); one that
//! grows past it and does not fit is `Full` and leaves the old value readable. Neither
//! policy ever wipes the store.
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use cluster_session_store::{ClusterStore, Eviction, Expiry, Master, StoreError};
use common::{snapshot, wait_past, LONG};

/// 256 KiB, one shard, values up to 1 KiB: room for a couple of hundred 1 KiB sessions.
fn tiny(prefix: &str, policy: Eviction) -> Master {
    let (master, _) = common::setup_with(prefix, |c| {
        c.memory_size(256 << 10)
            .shards(1)
            .max_value_size(1024)
            .eviction(policy)
            // No sweep during a test: it would shrink a sparse index on its own.
            .sweep_interval(common::NO_SWEEP)
    });
    master
}

/// Fixed-width keys, so every record of one value size falls in the same size class.
fn key(prefix: &str, i: usize) -> String {
    format!("{prefix}-{i:06}")
}

/// A value of `len` bytes that tells which session it belongs to.
fn value(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i.wrapping_mul(31).wrapping_add(j) % 251) as u8).collect()
}

/// Writes `prefix-000000`, `prefix-000001`, ... with `len`-byte values until the store
/// answers `Full`; returns how many were written. Only for `Eviction::Refuse` stores.
fn fill_until_full(store: &ClusterStore, prefix: &str, len: usize) -> usize {
    for i in 0.. {
        match store.set_raw(&key(prefix, i), &value(i, len), Expiry::After(LONG)) {
            Ok(()) => assert!(i < 100_000, "the store never filled up"),
            Err(StoreError::Full { .. }) => return i,
            Err(e) => panic!("unexpected error while filling: {e}"),
        }
    }
    unreachable!()
}

#[test]
fn lru_store_accepts_every_write_and_keeps_a_hot_session() {
    let _serial = common::serial();
    let store = tiny("lru-hot", Eviction::Lru);
    let hot = value(999_999, 1000);
    store.set_raw("hot", &hot, Expiry::After(LONG)).unwrap();

    // Three times what fits: the shard is full for most of the run.
    let total = 600;
    for i in 0..total {
        // Read before every write: the most recently used record is never the victim.
        assert_eq!(
            store.get_raw("hot").unwrap().as_deref(),
            Some(&hot[..]),
            "hot session lost before write {i}"
        );
        store
            .set_raw(&key("s", i), &value(i, 1000), Expiry::After(LONG))
            .unwrap_or_else(|e| panic!("write {i} failed under LRU: {e}"));
    }
    let stats = store.stats().unwrap();
    assert!(stats.evictions > 0, "{stats}");
    let length = store.length().unwrap();
    assert!(length < total, "{length} sessions of {total} kept: no eviction happened");
    assert_eq!(stats.evictions as usize, total + 1 - length, "{stats}");

    // What is left holds its own values; the oldest untouched sessions went first.
    let all = snapshot(&store);
    assert_eq!(all.len(), length);
    assert_eq!(all.get("hot"), Some(&hot));
    for (k, v) in &all {
        if k != "hot" {
            let i: usize = k[2..].parse().unwrap();
            assert_eq!(v, &value(i, 1000), "{k}");
        }
    }
    let kept =
        |range: std::ops::Range<usize>| range.filter(|&i| all.contains_key(&key("s", i))).count();
    let (oldest, newest) = (kept(0..100), kept(total - 100..total));
    assert!(oldest < newest, "kept {oldest} of the oldest 100 and {newest} of the newest 100");
    assert!(all.contains_key(&key("s", total - 1)), "the last write was evicted");
    assert!(store.check_integrity().is_ok(), "{}", store.check_integrity());
}

#[test]
fn lru_frees_expired_records_before_evicting_live_ones() {
    let _serial = common::serial();
    let store = tiny("lru-expired-first", Eviction::Lru);
    // Small values: the index fills before the data area, so the shard is densely packed.
    let len = 40;
    let mut written = 0;
    while store.stats().unwrap().evictions == 0 {
        store.set_raw(&key("s", written), &value(written, len), Expiry::After(LONG)).unwrap();
        written += 1;
        assert!(written < 100_000, "the store never filled up");
    }
    // Full now. Every other session gets a short life (touch allocates nothing).
    let before = snapshot(&store);
    let deadline = SystemTime::now() + Duration::from_millis(100);
    let mut expiring = 0;
    for (i, k) in before.keys().enumerate() {
        if i % 2 == 1 {
            store.touch(k, Expiry::At(deadline)).unwrap();
            expiring += 1;
        }
    }
    wait_past(deadline);
    let live: BTreeMap<_, _> =
        before.iter().enumerate().filter(|(i, _)| i % 2 == 0).map(|(_, kv)| kv).collect();
    assert_eq!(store.length().unwrap(), live.len());
    let stats_before = store.stats().unwrap();

    // Fewer new sessions than expired records: no live one needs to go.
    let fresh = expiring / 2;
    for i in 0..fresh {
        store.set_raw(&key("new", i), &value(i, len), Expiry::After(LONG)).unwrap();
    }
    let stats = store.stats().unwrap();
    assert_eq!(stats.evictions, stats_before.evictions, "a live session was evicted");
    assert!(stats.expirations > stats_before.expirations, "{stats}");
    for (k, v) in &live {
        assert_eq!(store.get_raw(k).unwrap().as_ref(), Some(*v), "live session {k} lost");
    }
    assert_eq!(store.length().unwrap(), live.len() + fresh);
    assert!(store.check_integrity().is_ok(), "{}", store.check_integrity());
}

/// Makes the session in the middle of the store expire, and waits until it has. Returns
/// every session as it was before, and the one that expired.
fn expire_one(store: &ClusterStore) -> (BTreeMap<String, Vec<u8>>, String) {
    let all = snapshot(store);
    let victim = all.keys().nth(all.len() / 2).unwrap().clone();
    let deadline = SystemTime::now() + Duration::from_millis(20);
    assert!(store.touch(&victim, Expiry::At(deadline)).unwrap());
    wait_past(deadline);
    (all, victim)
}

#[test]
fn lru_frees_an_expired_record_anywhere_in_the_shard_before_evicting() {
    let _serial = common::serial();
    let store = tiny("lru-sparse-expired", Eviction::Lru);
    // 1000-byte values: the data area fills while the index is sparse (~190 of 2048 slots).
    for i in 0..400 {
        store.set_raw(&key("s", i), &value(i, 1000), Expiry::After(LONG)).unwrap();
    }
    // Five rounds: one session expires, then one new session needs its room.
    for round in 0..5 {
        let (all, victim) = expire_one(&store);
        let before = store.stats().unwrap();
        store.set_raw(&key("new", round), &value(round, 1000), Expiry::After(LONG)).unwrap();
        let after = store.stats().unwrap();
        assert_eq!(
            after.evictions, before.evictions,
            "round {round}: a live session was evicted while {victim} lay expired"
        );
        for (k, v) in all.iter().filter(|(k, _)| **k != victim) {
            assert_eq!(store.get_raw(k).unwrap().as_ref(), Some(v), "round {round}: {k} lost");
        }
    }
    assert!(store.check_integrity().is_ok(), "{}", store.check_integrity());
}

#[test]
fn refuse_store_frees_an_expired_record_anywhere_before_refusing() {
    let _serial = common::serial();
    let store = tiny("refuse-sparse-expired", Eviction::Refuse);
    let filled = fill_until_full(&store, "s", 1000);
    for round in 0..5 {
        let (_, victim) = expire_one(&store);
        store
            .set_raw(&key("new", round), &value(round, 1000), Expiry::After(LONG))
            .unwrap_or_else(|e| panic!("round {round}: {e} while {victim} lay expired"));
    }
    assert_eq!(store.length().unwrap(), filled);
    assert!(store.check_integrity().is_ok(), "{}", store.check_integrity());
}

#[test]
fn lru_store_accepts_a_larger_session_after_filling_with_small_ones() {
    let _serial = common::serial();
    let store = tiny("lru-grow", Eviction::Lru);
    // Small sessions carve the whole data area into small blocks, and more.
    for i in 0..3000 {
        store.set_raw(&key("small", i), &value(i, 100), Expiry::After(LONG)).unwrap();
    }
    assert!(store.stats().unwrap().evictions > 0);
    // A session that grew, and new large ones: LRU must make room for them.
    for i in 0..20 {
        store
            .set_raw(&key("large", i), &value(i, 1000), Expiry::After(LONG))
            .unwrap_or_else(|e| panic!("large session {i}: {e}"));
        assert_eq!(store.get_raw(&key("large", i)).unwrap(), Some(value(i, 1000)));
    }
    assert!(store.length().unwrap() > 20, "the store was wiped to make room");
    assert!(store.check_integrity().is_ok(), "{}", store.check_integrity());
}

#[test]
fn refuse_store_answers_full_and_changes_nothing() {
    let _serial = common::serial();
    let store = tiny("refuse-full", Eviction::Refuse);
    let filled = fill_until_full(&store, "s", 1000);
    assert!(filled > 10, "only {filled} sessions fit");
    let before = snapshot(&store);
    assert_eq!(before.len(), filled);
    let stats_before = store.stats().unwrap();

    // New sessions of the size that filled it, raw and typed: all refused, nothing changes.
    // (A much smaller one could still fit in what is left of the data area.)
    for (i, len) in [(0, 1000), (1, 990), (2, 1024)] {
        match store.set_raw(&key("extra", i), &value(i, len), Expiry::After(LONG)) {
            Err(StoreError::Full { shard: 0, needed }) => assert!(needed >= len, "{needed}"),
            other => panic!("extra session of {len} bytes: expected Full, got {other:?}"),
        }
        assert_eq!(store.get_raw(&key("extra", i)).unwrap(), None);
    }
    let typed = store.set("typed", &"x".repeat(1000), Expiry::Default);
    assert!(matches!(typed, Err(StoreError::Full { .. })), "{typed:?}");
    assert_eq!(store.get_raw("typed").unwrap(), None);

    assert_eq!(store.length().unwrap(), filled);
    assert_eq!(snapshot(&store), before, "a refused write changed the store");
    let stats = store.stats().unwrap();
    assert_eq!((stats.evictions, stats.records), (0, stats_before.records));
    assert!(store.check_integrity().is_ok(), "{}", store.check_integrity());
}

#[test]
fn refuse_store_keeps_the_old_value_when_a_replacement_does_not_fit() {
    let _serial = common::serial();
    let store = tiny("refuse-replace", Eviction::Refuse);
    let filled = fill_until_full(&store, "s", 100);
    let before = snapshot(&store);

    // The sessions grew past what the full shard can hold: each replacement is refused
    // and the previous value stays readable.
    for i in [0, filled / 2, filled - 1] {
        let sid = key("s", i);
        match store.set_raw(&sid, &value(i, 1000), Expiry::After(LONG)) {
            Err(StoreError::Full { .. }) => {}
            other => panic!("replacement of {sid}: expected Full, got {other:?}"),
        }
        assert_eq!(store.get_raw(&sid).unwrap(), Some(value(i, 100)), "{sid}");
    }
    // The same through `update_raw` and the typed `set`.
    let sid = key("s", 3);
    let grown = store.update_raw(&sid, Expiry::After(LONG), |old| {
        let mut v = old.expect("the session is live").to_vec();
        v.resize(1000, 7);
        Some(v)
    });
    assert!(matches!(grown, Err(StoreError::Full { .. })), "{grown:?}");
    assert_eq!(store.get_raw(&sid).unwrap(), Some(value(3, 100)));
    let typed = store.set(&sid, &"y".repeat(1000), Expiry::After(LONG));
    assert!(matches!(typed, Err(StoreError::Full { .. })), "{typed:?}");
    assert_eq!(store.get_raw(&sid).unwrap(), Some(value(3, 100)));
    assert_eq!(store.length().unwrap(), filled);
    assert_eq!(snapshot(&store), before);

    // Destroying one session makes room for a replacement of the same size.
    let sid = key("s", 0);
    let same_size = value(7, 100);
    assert!(store.destroy(&key("s", 1)).unwrap());
    store.set_raw(&sid, &same_size, Expiry::After(LONG)).unwrap();
    assert_eq!(store.get_raw(&sid).unwrap(), Some(same_size));
    assert_eq!(store.length().unwrap(), filled - 1);
    assert!(store.check_integrity().is_ok(), "{}", store.check_integrity());
}

#[test]
fn refuse_store_rewrites_existing_sessions_however_full() {
    let _serial = common::serial();
    let store = tiny("refuse-rewrite", Eviction::Refuse);
    let filled = fill_until_full(&store, "s", 1000);
    let mut want = snapshot(&store);
    let expect_full = |what: &str, result: Result<(), StoreError>| {
        assert!(matches!(result, Err(StoreError::Full { .. })), "{what}: {result:?}");
    };
    expect_full("a new session", store.set_raw("new", &value(0, 1000), Expiry::After(LONG)));

    // Same-size rewrites of every session, three rounds, each through another call.
    for round in 1..=3 {
        for i in 0..filled {
            let sid = key("s", i);
            let v = value(i + 1000 * round, 1000);
            match round {
                1 => store.set_raw(&sid, &v, Expiry::After(LONG)).unwrap(),
                2 => assert!(store.replace_raw(&sid, &v, Expiry::After(LONG)).unwrap()),
                _ => {
                    let stored = store.update_raw(&sid, Expiry::After(LONG), |old| {
                        assert_eq!(old, want.get(&sid).map(Vec::as_slice));
                        Some(v.clone())
                    });
                    assert_eq!(stored.unwrap(), Some(v.clone()));
                }
            }
            want.insert(sid, v);
        }
        assert_eq!(snapshot(&store), want, "round {round}");
    }
    // Smaller, then back to the size it had: it still fits the record's class.
    for (i, len) in [(0, 10), (1, 500), (2, 999)] {
        let sid = key("s", i);
        store.set_raw(&sid, &value(i, len), Expiry::After(LONG)).unwrap();
        store.set_raw(&sid, &value(i + 7, 1000), Expiry::After(LONG)).unwrap();
        want.insert(sid, value(i + 7, 1000));
    }
    // Typed: a session of the same encoded size.
    store.set(&key("s", 3), &"t".repeat(990), Expiry::After(LONG)).unwrap();
    want.insert(key("s", 3), store.get_raw(&key("s", 3)).unwrap().unwrap());
    assert_eq!(store.get::<String>(&key("s", 3)).unwrap(), Some("t".repeat(990)));

    // Still full for new sessions (growth past the class: the test above).
    expect_full("a new session", store.set_raw("new", &value(0, 1000), Expiry::After(LONG)));
    assert_eq!(store.length().unwrap(), filled);
    assert_eq!(snapshot(&store), want);
    let stats = store.stats().unwrap();
    assert_eq!(stats.evictions, 0, "{stats}");
    assert!(store.check_integrity().is_ok(), "{}", store.check_integrity());
}

#[test]
fn refuse_store_frees_expired_records_before_refusing() {
    let _serial = common::serial();
    let store = tiny("refuse-expired", Eviction::Refuse);
    // Small values: a densely packed index, so the cleanup of a full shard finds them.
    let filled = fill_until_full(&store, "s", 40);
    let before = snapshot(&store);
    let deadline = SystemTime::now() + Duration::from_millis(100);
    let mut expiring = Vec::new();
    for (i, k) in before.keys().enumerate() {
        if i % 2 == 1 {
            store.touch(k, Expiry::At(deadline)).unwrap();
            expiring.push(k.clone());
        }
    }
    wait_past(deadline);
    // Fewer new sessions than expired records.
    let fresh = expiring.len() / 2;
    for i in 0..fresh {
        store
            .set_raw(&key("new", i), &value(i, 40), Expiry::After(LONG))
            .unwrap_or_else(|e| panic!("new session {i}: {e}"));
    }
    for (k, v) in before.iter().enumerate().filter(|(i, _)| i % 2 == 0).map(|(_, kv)| kv) {
        assert_eq!(store.get_raw(k).unwrap().as_ref(), Some(v), "{k}");
    }
    for k in &expiring {
        assert_eq!(store.get_raw(k).unwrap(), None, "{k}");
    }
    assert_eq!(store.length().unwrap(), filled - expiring.len() + fresh);
    let stats = store.stats().unwrap();
    assert!(stats.expirations > 0 && stats.evictions == 0, "{stats}");
    assert!(store.check_integrity().is_ok(), "{}", store.check_integrity());
}

/// A `Refuse` store of 1 MiB and one shard, its index sized by `typical` (none: the default).
fn sized(prefix: &str, typical: Option<usize>) -> Master {
    let (master, _) = common::setup_with(prefix, |c| {
        let config = c.shards(1).max_value_size(1024).eviction(Eviction::Refuse);
        match typical {
            Some(bytes) => config.typical_value_size(bytes),
            None => config,
        }
    });
    master
}

/// `typical_value_size` trades index slots for data area: 1 KiB sessions fill more of the
/// same memory; sessions far smaller than the hint meet the index's load limit first, and
/// the store refuses them cleanly, every stored one intact, while the default index would
/// have taken more.
#[test]
fn an_index_sized_for_typical_sessions_holds_more_of_them_and_refuses_small_ones_cleanly() {
    let _serial = common::serial();
    let default = sized("typical-default", None);
    let hinted = sized("typical-1k", Some(1024));
    let n_default = fill_until_full(&default, "k", 1024);
    let n_hinted = fill_until_full(&hinted, "k", 1024);
    assert!(n_hinted > n_default, "hinted {n_hinted} <= default {n_default}");

    let small_default = sized("typical-small-default", None);
    let small_hinted = sized("typical-small-1k", Some(1024));
    let m_default = fill_until_full(&small_default, "s", 16);
    let m_hinted = fill_until_full(&small_hinted, "s", 16);
    assert!(m_hinted < m_default, "hinted {m_hinted} >= default {m_default}");
    // Refused with data area left: the index, not the memory, was full.
    let stats = small_hinted.stats().unwrap();
    assert!(stats.used_bytes * 2 < stats.data_bytes, "{stats}");
    for store in [&default, &hinted, &small_default, &small_hinted] {
        assert!(store.check_integrity().is_ok(), "{}", store.check_integrity());
    }
    let all = snapshot(&small_hinted);
    assert_eq!(all.len(), m_hinted);
    for (i, (k, v)) in all.iter().enumerate() {
        assert_eq!((k, v), (&key("s", i), &value(i, 16)), "session {k} damaged");
    }
}

/// The index grows with its records: a fresh shard uses 16 slots and doubles them whenever
/// a new record would fill more than three quarters, never past its capacity; every session
/// stays readable through each growth, the integrity check passes. Removals alone leave it
/// as it is; `purge_expired` (as the coordinator's sweep) halves it while at most 3/16 of it
/// is used, and `clear` starts over.
#[test]
fn the_index_grows_with_its_records_and_shrinks_after_they_go() {
    let master = tiny("grow", Eviction::Refuse);
    let fresh = master.stats().unwrap();
    assert_eq!(fresh.index_slots, 16);
    let capacity = fresh.index_capacity;
    assert!(capacity >= 256, "{fresh}");
    let mut expected = 16;
    for i in 0..150 {
        master.set_raw(&key("g", i), &value(i, 40), Expiry::After(LONG)).unwrap();
        let records = i as u64 + 1;
        while records > expected / 4 * 3 && expected < capacity {
            expected *= 2;
        }
        assert_eq!(master.stats().unwrap().index_slots, expected, "after {records} records");
        if expected > 16 && records.is_multiple_of(7) {
            let report = master.check_integrity();
            assert!(report.is_ok(), "after {records} records: {report}");
        }
    }
    assert_eq!(expected, 256);
    for i in 0..150 {
        let got = master.get_raw(&key("g", i)).unwrap();
        assert_eq!(got, Some(value(i, 40)), "session {i}");
    }
    // Removals do not shrink it (a write never pays for moving slots back); the sweep does,
    // to 32 slots: 10 records are at most 3/16 of 64, but not of 32.
    for i in 0..140 {
        assert!(master.destroy(&key("g", i)).unwrap());
    }
    assert_eq!(master.stats().unwrap().index_slots, 256);
    assert_eq!(master.purge_expired().unwrap(), 0);
    assert_eq!(master.stats().unwrap().index_slots, 32);
    let report = master.check_integrity();
    assert!(report.is_ok(), "after shrinking: {report}");
    for i in 140..150 {
        let got = master.get_raw(&key("g", i)).unwrap();
        assert_eq!(got, Some(value(i, 40)), "session {i} after shrinking");
    }
    // It grows again as sessions come back, every one readable.
    for i in 0..140 {
        master.set_raw(&key("g", i), &value(i, 40), Expiry::After(LONG)).unwrap();
    }
    assert_eq!(master.stats().unwrap().index_slots, 256);
    for i in 0..150 {
        assert_eq!(master.get_raw(&key("g", i)).unwrap(), Some(value(i, 40)), "session {i}");
    }
    master.clear().unwrap();
    assert_eq!(master.stats().unwrap().index_slots, 16);
    let report = master.check_integrity();
    assert!(report.is_ok(), "{report}");
}

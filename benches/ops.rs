//! Latency of each store operation in one process: `get`, `set`, `touch`, `destroy` and
//! `update`, for 128 B, 1 KiB and 8 KiB sessions over 10,000 keys read in shuffled order,
//! as raw bytes and typed (a serde struct encoded as MessagePack, its payload sized so the
//! encoding is about the session size). Side by side, at each size: an in-process
//! `Mutex<HashMap<String, Vec<u8>>>` (get = lookup and copy into a buffer reused across
//! calls, as `get_raw_into` does; set = insert of an owned key and value),
//! the ceiling for one process, which is not shared between processes at all.
//!
//! `destroy` is timed alone: each iteration's session is written in criterion's untimed
//! batch setup; it runs last in each section, since it leaves the sessions absent. Every
//! timed call asserts it did what the bench names (a `get` found its session, an `update`
//! stored, a `touch` and a `destroy` found a live one). The summary (also `target/bench-summary-ops.md`) gives the map's
//! median time as a ratio to the store's for `get` and `set` at each size.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Mutex;
use std::time::Duration;

mod common;

use cluster_session_store::{ClusterStore, Config, Expiry};
use common::summary::Summary;
use criterion::{BatchSize, Criterion};
use serde::{Deserialize, Serialize};

const KEYS: usize = 10_000;
/// Rounds of the interleaved get and set measurement.
const ROUNDS: usize = 21;

#[derive(Serialize, Deserialize, Clone)]
struct Session {
    user: String,
    visits: u32,
    data: String,
}

fn session(size: usize) -> Session {
    // Field names, the user and the counter take about 30 bytes of the encoding.
    Session { user: "ada".into(), visits: 1, data: "x".repeat(size.saturating_sub(30)) }
}

fn bench_size(c: &mut Criterion, summary: &mut Summary, label: &str, size: usize) {
    let keys = common::shuffled_keys(KEYS);
    let value = vec![0xAB_u8; size];
    let typed = session(size);
    let master = ClusterStore::setup(
        Config::new()
            .name(&format!("bench-ops-{size}"))
            .memory_size(256 << 20)
            .shards(64)
            .max_value_size(16 << 10)
            // The index sized for this session size, as a deployment of them would set it.
            .typical_value_size(size),
    )
    .expect("setup");
    let store = master.store();
    let map: Mutex<HashMap<String, Vec<u8>>> = Mutex::new(HashMap::new());
    let mut in_order = keys.clone();
    in_order.sort();
    for k in &in_order {
        store.set_raw(k, &value, Expiry::Default).unwrap();
        map.lock().unwrap().insert(k.clone(), value.clone());
    }

    let group_name = format!("ops/{label}");
    let mut group = c.benchmark_group(&group_name);
    let mut i = 0;
    let mut next = || {
        i = (i + 1) % KEYS;
        &keys[i]
    };
    let mut out = Vec::with_capacity(size);
    group.bench_function("get raw (get_raw_into)", |b| {
        b.iter(|| assert!(store.get_raw_into(next(), &mut out).unwrap()))
    });
    let mut map_out = Vec::with_capacity(size);
    group.bench_function("Mutex<HashMap> get into a buffer", |b| {
        b.iter(|| {
            common::map_get_into(&map, next(), &mut map_out);
            black_box(&map_out);
        })
    });
    group.bench_function("set raw", |b| {
        b.iter(|| store.set_raw(next(), &value, Expiry::Default).unwrap())
    });
    group.bench_function("Mutex<HashMap> insert", |b| {
        b.iter(|| black_box(map.lock().unwrap().insert(next().clone(), value.clone())))
    });
    // The get and set rows again, interleaved with the map's (`common::interleave`).
    let batch = (200_000 * 1024 / size).clamp(20_000, 200_000);
    let note = format!(
        "Interleaved: {ROUNDS} rounds, each one batch of this store's operations and one of \
         the map's, in alternating order (200,000 per batch at 128 B and 1 KiB, 25,000 at \
         8 KiB); the medians of the batches' ns per operation and of the per-round ratios."
    );
    common::versus_map(summary, label, &store, &map, &keys, &value, (ROUNDS, batch), &note);
    group.bench_function("touch", |b| {
        b.iter(|| assert!(store.touch(next(), Expiry::Default).unwrap()))
    });
    group.bench_function("update raw (read, then compare-and-swap write)", |b| {
        b.iter(|| {
            let stored = store.update_raw(next(), Expiry::Default, |old| old.map(<[u8]>::to_vec));
            black_box(stored.unwrap().expect("update found the session"))
        })
    });
    group.bench_function("destroy raw", |b| {
        b.iter_batched(
            || {
                let k = next();
                store.set_raw(k, &value, Expiry::Default).unwrap();
                k
            },
            |k| assert!(store.destroy(k).unwrap()),
            // Batches of distinct keys: each is set once, then destroyed once.
            BatchSize::NumIterations(KEYS as u64 / 2),
        )
    });
    // Typed: the same operations through serde (MessagePack); `destroy` left every key absent.
    for k in &in_order {
        store.set(k, &typed, Expiry::Default).unwrap();
    }
    group.bench_function("get typed", |b| {
        b.iter(|| black_box(store.get::<Session>(next()).unwrap().expect("a hit")))
    });
    group.bench_function("set typed", |b| {
        b.iter(|| store.set(next(), &typed, Expiry::Default).unwrap())
    });
    group.bench_function("update typed", |b| {
        b.iter(|| {
            let stored = store.update(next(), Expiry::Default, |s: Option<Session>| {
                s.map(|mut s| {
                    s.visits += 1;
                    s
                })
            });
            black_box(stored.unwrap().expect("update found the session"))
        })
    });
    group.bench_function("destroy typed", |b| {
        b.iter_batched(
            || {
                let k = next();
                store.set(k, &typed, Expiry::Default).unwrap();
                k
            },
            |k| assert!(store.destroy(k).unwrap()),
            // Batches of distinct keys: each is set once, then destroyed once.
            BatchSize::NumIterations(KEYS as u64 / 2),
        )
    });
    group.finish();
    assert!(store.check_integrity().is_ok());

    let id = |f: &str| format!("{group_name}/{f}");
    summary.compare(
        &format!("get {label}"),
        &id("get raw (get_raw_into)"),
        &[(
            "Mutex<HashMap> get, copied into a reused buffer, one process",
            &id("Mutex<HashMap> get into a buffer"),
        )],
    );
    summary.compare(
        &format!("set {label}"),
        &id("set raw"),
        &[("Mutex<HashMap> insert, one process", &id("Mutex<HashMap> insert"))],
    );
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let mut summary = Summary::new("ops");
    for (label, size) in [("128B", 128), ("1KiB", 1024), ("8KiB", 8192)] {
        bench_size(&mut c, &mut summary, label, size);
    }
    c.final_summary();
    summary.finish(
        "Ratio: the map's median time over this store's, from the same run. The map is \
         private to one process; the store is shared by every process that maps it.",
    );
}

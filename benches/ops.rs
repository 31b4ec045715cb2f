//! Latency of the store's raw-bytes `get` and `set` for a 1 KiB session over 10,000 keys,
//! side by side with an in-process `Mutex<HashMap<String, Vec<u8>>>` (get = lookup + clone,
//! set = insert of a fresh copy): the ceiling for one process, which is not shared between
//! processes at all. Single process; the multi-process and peer benches are separate files.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Mutex;

mod common;

use cluster_session_store::{ClusterStore, Config, Expiry};
use criterion::{criterion_group, criterion_main, Criterion};

const KEYS: usize = 10_000;
const VALUE: usize = 1024;

fn get_set_1k(c: &mut Criterion) {
    let keys = common::shuffled_keys(KEYS);
    let value = vec![0xAB_u8; VALUE];
    let master = ClusterStore::setup(
        Config::new().name("bench-ops").memory_size(64 << 20).shards(64).max_value_size(4096),
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

    let mut group = c.benchmark_group("1KiB");
    let mut i = 0;
    group.bench_function("store get_raw_into", |b| {
        let mut out = Vec::with_capacity(VALUE);
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(store.get_raw_into(&keys[i], &mut out).unwrap());
        })
    });
    group.bench_function("store get_raw", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(store.get_raw(&keys[i]).unwrap());
        })
    });
    group.bench_function("Mutex<HashMap> get+clone", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(map.lock().unwrap().get(&keys[i]).cloned());
        })
    });
    group.bench_function("store set_raw", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            store.set_raw(&keys[i], &value, Expiry::Default).unwrap();
        })
    });
    group.bench_function("Mutex<HashMap> insert", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(map.lock().unwrap().insert(keys[i].clone(), value.clone()));
        })
    });
    group.finish();
    assert!(store.check_integrity().is_ok());
}

criterion_group!(benches, get_set_1k);
criterion_main!(benches);

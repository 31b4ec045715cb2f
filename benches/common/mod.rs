//! Helpers shared by the benches.
#![allow(dead_code)] // each bench uses its own part

pub mod redis_server;
pub mod summary;

/// `0..n` in a fixed shuffled order (xorshift Fisher-Yates, the same every run).
pub fn shuffled_indexes(n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut x = 0x9E37_79B9_7F4A_7C15_u64;
    for i in (1..order.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    order
}

/// `n` session ids in a shuffled order: requests arrive for random sessions, and walking
/// keys in insertion order would let a map's heap allocations be read sequentially.
pub fn shuffled_keys(n: usize) -> Vec<String> {
    shuffled_indexes(n).into_iter().map(|i| format!("{i:032x}")).collect()
}

/// Whether criterion was asked to measure, by its own reading of the arguments: `--bench`
/// (which `cargo bench` passes) without `--test`, `--list` or `--profile-time`. When it only
/// lists the benchmarks or runs each once to check it works (`cargo test --benches`, `cargo
/// bench -- --test`), the rounds timed outside criterion are skipped too.
pub fn measuring() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag || a.starts_with(&format!("{flag}=")));
    has("--bench") && !has("--test") && !has("--list") && !has("--profile-time")
}

/// Runs `ours` and `theirs` in alternating batches of `batch` operations, `rounds` times,
/// starting with a different one each round: (median ns per operation of ours, of theirs,
/// median of the per-round ratios theirs/ours). On a shared, noisy machine, the two sides
/// of one round see the same neighbours, which criterion's benchmarks, minutes apart, do not.
pub fn interleave(
    rounds: usize,
    batch: usize,
    mut ours: impl FnMut(),
    mut theirs: impl FnMut(),
) -> (f64, f64, f64) {
    let time = |f: &mut dyn FnMut()| {
        let start = std::time::Instant::now();
        for _ in 0..batch {
            f();
        }
        start.elapsed().as_nanos() as f64 / batch as f64
    };
    let (mut a, mut b, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let (x, y) = if round % 2 == 0 {
            let x = time(&mut ours);
            (x, time(&mut theirs))
        } else {
            let y = time(&mut theirs);
            (time(&mut ours), y)
        };
        a.push(x);
        b.push(y);
        ratios.push(y / x);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (median(a), median(b), median(ratios))
}

/// `get_raw_into` and `set_raw` of this store against the map's get (copying into a reused
/// buffer) and insert, each pair [`interleave`]d over `keys` (every key present in both,
/// holding `value`), added to
/// the summary's interleaved table as `get <size>` and `set <size>`.
#[allow(clippy::too_many_arguments)]
pub fn versus_map(
    summary: &mut summary::Summary,
    size: &str,
    store: &cluster_session_store::ClusterStore,
    map: &std::sync::Mutex<std::collections::HashMap<String, Vec<u8>>>,
    keys: &[String],
    value: &[u8],
    (rounds, batch): (usize, usize),
    note: &str,
) {
    use cluster_session_store::Expiry;
    use std::hint::black_box;
    if !measuring() {
        println!("interleaved rounds skipped: criterion is not measuring (--test or --list)");
        return;
    }
    // Each side walks the keys with its own cursor.
    let cursor = || {
        let mut j = 0;
        move || {
            j = (j + 1) % keys.len();
            &keys[j]
        }
    };
    let (mut a, mut b) = (cursor(), cursor());
    let mut out = Vec::with_capacity(value.len());
    let mut map_out = Vec::with_capacity(value.len());
    // Both sides copy the value into a buffer they reuse.
    let get = interleave(
        rounds,
        batch,
        || assert!(store.get_raw_into(a(), &mut out).unwrap(), "a get missed"),
        || {
            map_get_into(map, b(), &mut map_out);
            black_box(&map_out);
        },
    );
    let map_get = "Mutex<HashMap> get, copied into a reused buffer, one process";
    summary.interleaved(&format!("get {size}"), map_get, get, note);
    let set = interleave(
        rounds,
        batch,
        || store.set_raw(a(), value, Expiry::Default).unwrap(),
        || {
            black_box(map.lock().unwrap().insert(b().clone(), value.to_vec()));
        },
    );
    summary.interleaved(&format!("set {size}"), "Mutex<HashMap> insert, one process", set, note);
}

/// The map's `get_raw_into`: the value copied into `out` (cleared first), a buffer the caller
/// reuses, under the map's lock.
pub fn map_get_into(
    map: &std::sync::Mutex<std::collections::HashMap<String, Vec<u8>>>,
    key: &str,
    out: &mut Vec<u8>,
) {
    let map = map.lock().unwrap();
    let value = map.get(key).expect("a map get missed");
    out.clear();
    out.extend_from_slice(value);
}

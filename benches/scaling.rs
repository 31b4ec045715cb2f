//! Total throughput of N forked worker processes sharing one store, for 1 KiB sessions over
//! 10,000 keys: 90/10 and 50/50 get/set mixes, uniform and Zipf-skewed (s = 0.99) keys.
//! Criterion's `iter_custom` times `iters` operations split among the workers, from the
//! moment they are released (all forked, ready and waiting on a pipe) until the last one
//! reports its operations done (before it exits: tearing a process down is not timed); the
//! reported time per element is the aggregate cost of one operation, its inverse the total
//! throughput. `SCALING_WORKERS` (default `1,2,4,8`) chooses the worker counts. The summary
//! (also `target/bench-summary-scaling.md`) gives each count's speed-up over one worker, from
//! the same run.
//!
//! The speed-ups on 90/10 uniform and Zipf and 50/50 Zipf (the targets' figures) are also
//! measured in alternation,
//! outside criterion: [`ROUNDS`] rounds, each running the same operations with one worker and
//! with N, each first in every other round; the summary's second table gives the medians and
//! the median of the per-round speed-ups. Criterion measures one worker count seconds before
//! or after the other, and on a shared machine the neighbours change in between; the two
//! halves of one round see the same ones. A control runs in the same rounds: the same mix on
//! a `HashMap` private to each worker, as a per-process store would hold sessions. Its
//! speed-up is what the machine gives this memory-bound load without sharing (its cores may
//! share a last-level cache, memory bandwidth or a physical core; and N workers hold N copies
//! of the data, where the store's workers share one); the summary gives the median over the
//! rounds of the store's speed-up divided by the control's in the same round.

use std::collections::HashMap;
use std::hint::black_box;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use cluster_session_store::{ClusterStore, Config, Expiry};
use common::summary::Summary;
use criterion::{BenchmarkId, Criterion, Throughput};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, pipe, ForkResult};

mod common;

const KEYS: usize = 10_000;
const VALUE: usize = 1024;
const SAMPLES: usize = 1 << 16;
/// Rounds of the alternating measurement, and the operations of each run in it (split among
/// the workers).
const ROUNDS: usize = 11;
const ROUND_OPS: u64 = 500_000;

fn worker_counts() -> Vec<usize> {
    std::env::var("SCALING_WORKERS")
        .unwrap_or_else(|_| "1,2,4,8".into())
        .split(',')
        .map(|n| n.trim().parse().expect("SCALING_WORKERS: comma-separated counts"))
        .collect()
}

/// Key indexes drawn from a Zipf distribution (s = 0.99) by inverting its CDF, or uniform.
fn key_samples(zipf: bool) -> Vec<u32> {
    let mut x = 0x2545_F491_4F6C_DD1D_u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    if !zipf {
        return (0..SAMPLES).map(|_| (next() % KEYS as u64) as u32).collect();
    }
    let weights: Vec<f64> = (1..=KEYS).map(|k| 1.0 / (k as f64).powf(0.99)).collect();
    let total: f64 = weights.iter().sum();
    let mut cdf = Vec::with_capacity(KEYS);
    let mut acc = 0.0;
    for w in weights {
        acc += w / total;
        cdf.push(acc);
    }
    (0..SAMPLES)
        .map(|_| {
            let u = (next() >> 11) as f64 / (1u64 << 53) as f64;
            cdf.partition_point(|&c| c < u).min(KEYS - 1) as u32
        })
        .collect()
}

/// What the workers operate on.
#[derive(Clone, Copy)]
enum Over<'a> {
    /// The shared store.
    Store(&'a ClusterStore),
    /// A `HashMap` of every key, built by each worker for itself before it is released:
    /// nothing shared (the control).
    PrivateMap,
}

/// Forks `workers` processes that each run `ops / workers` operations once released, and
/// returns the time from release until the last reports them done. Each worker reports ready
/// (its control map built) before the release and done before it exits, so that neither
/// setting up nor tearing down is timed.
fn run(
    over: Over<'_>,
    keys: &[String],
    samples: &[u32],
    workers: usize,
    set_pct: u64,
    ops: u64,
) -> Duration {
    let (go_read, go_write) = pipe().expect("pipe");
    let (ready_read, ready_write) = pipe().expect("pipe");
    let (done_read, done_write) = pipe().expect("pipe");
    let per_worker = ops.div_ceil(workers as u64);
    let mut pids = Vec::new();
    for w in 0..workers {
        // SAFETY: the bench is single-threaded here; the child only runs the loop and exits.
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                drop(go_write);
                let value = vec![w as u8; VALUE];
                let mut map: HashMap<String, Vec<u8>> = match over {
                    Over::Store(_) => HashMap::new(),
                    Over::PrivateMap => keys.iter().map(|k| (k.clone(), value.clone())).collect(),
                };
                let _ = nix::unistd::write(&ready_write, &[1]);
                drop(ready_write);
                let mut byte = [0u8; 1];
                let _ = nix::unistd::read(&go_read, &mut byte);
                let mut out = Vec::with_capacity(VALUE);
                let mut i = w * 7919;
                for n in 0..per_worker {
                    i = (i + 1) % samples.len();
                    let key = &keys[samples[i] as usize];
                    match (over, n % 100 < set_pct) {
                        (Over::Store(store), true) => {
                            store.set_raw(key, &value, Expiry::Default).expect("set")
                        }
                        (Over::Store(store), false) => {
                            store.get_raw_into(key, &mut out).expect("get");
                        }
                        (Over::PrivateMap, true) => {
                            map.insert(key.clone(), value.clone());
                        }
                        (Over::PrivateMap, false) => {
                            // As `get_raw_into`: copied into a buffer reused across calls.
                            out.clear();
                            out.extend_from_slice(map.get(key).expect("get"));
                            black_box(&out);
                        }
                    }
                }
                let _ = nix::unistd::write(&done_write, &[1]);
                // SAFETY: ends the child at once, running nothing of the bench harness.
                unsafe { libc::_exit(0) };
            }
            ForkResult::Parent { child } => pids.push(child),
        }
    }
    drop(go_read);
    drop(ready_write);
    drop(done_write);
    await_bytes(&ready_read, workers, "ready");
    let start = Instant::now();
    drop(go_write); // EOF releases every worker at once
    await_bytes(&done_read, workers, "done");
    let elapsed = start.elapsed();
    for pid in pids {
        waitpid(pid, None).expect("waitpid");
    }
    elapsed
}

/// Reads one byte from each of `workers` workers on `pipe`, whose write ends this process has
/// closed: end of file first means a worker died before it reported `what` (each child's
/// write end closes when it exits).
fn await_bytes(pipe: &OwnedFd, workers: usize, what: &str) {
    let mut got = 0;
    while got < workers {
        let mut bytes = [0u8; 64];
        match nix::unistd::read(pipe, &mut bytes) {
            Ok(0) => panic!("a worker exited before it was {what}"),
            Ok(n) => got += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => panic!("reading the workers' {what} pipe: {e}"),
        }
    }
}

fn scaling(c: &mut Criterion, summary: &mut Summary) {
    let master = ClusterStore::setup(
        // The index sized for 1 KiB sessions, as a deployment of them would set it.
        Config::new()
            .name("bench-scaling")
            .memory_size(64 << 20)
            .shards(64)
            .max_value_size(4096)
            .typical_value_size(VALUE),
    )
    .expect("setup");
    let keys: Vec<String> = (0..KEYS).map(|i| format!("{i:032x}")).collect();
    for k in &keys {
        master.set_raw(k, &vec![0u8; VALUE], Expiry::Default).unwrap();
    }
    for (mix, set_pct) in [("90-10", 10), ("50-50", 50)] {
        for (dist, zipf) in [("uniform", false), ("zipf", true)] {
            let samples = key_samples(zipf);
            let mut group = c.benchmark_group(format!("scaling/{mix}/{dist}"));
            group.throughput(Throughput::Elements(1));
            group.sample_size(10).measurement_time(Duration::from_secs(3));
            for workers in worker_counts() {
                group.bench_function(BenchmarkId::from_parameter(workers), |b| {
                    b.iter_custom(|ops| {
                        run(Over::Store(&master), &keys, &samples, workers, set_pct, ops)
                    })
                });
            }
            group.finish();
            let one = format!("scaling/{mix}/{dist}/1");
            for workers in worker_counts().into_iter().filter(|&w| w > 1) {
                summary.compare(
                    &format!("{mix} {dist}, {workers} workers"),
                    &format!("scaling/{mix}/{dist}/{workers}"),
                    &[("1 worker", &one)],
                );
            }
        }
    }
    interleaved(&master, &keys, summary);
    assert!(master.check_integrity().is_ok());
}

/// The speed-up of each worker count over one on 90/10 (uniform and Zipf) and 50/50 (Zipf),
/// in alternation (see the module docs),
/// for the store and for the control (a private map in each worker), all four runs of a
/// round back to back: each count, and each of store and control, first in every other
/// round.
fn interleaved(master: &ClusterStore, keys: &[String], summary: &mut Summary) {
    if !common::measuring() {
        println!("interleaved rounds skipped: criterion is not measuring (--test or --list)");
        return;
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut rows = Vec::new();
    let mut control = Vec::new();
    let mixes =
        [("90-10", 10, "uniform", false), ("90-10", 10, "zipf", true), ("50-50", 50, "zipf", true)];
    for (mix, set_pct, dist, zipf) in mixes {
        let samples = key_samples(zipf);
        for workers in worker_counts().into_iter().filter(|&w| w > 1) {
            // Per round: ns per operation of the store with N workers (0) and with one (1),
            // of the control with N (2) and with one (3). N goes first in even rounds, and the
            // store every other pair of rounds, so that no run is always first.
            let mut t: [Vec<f64>; 4] = Default::default();
            for round in 0..ROUNDS {
                let pair = |first: usize| {
                    if round % 2 == 0 {
                        [first, first + 1]
                    } else {
                        [first + 1, first]
                    }
                };
                let (a, b) =
                    if round / 2 % 2 == 0 { (pair(0), pair(2)) } else { (pair(2), pair(0)) };
                for which in a.into_iter().chain(b) {
                    let over = if which < 2 { Over::Store(master) } else { Over::PrivateMap };
                    let n = if which % 2 == 0 { workers } else { 1 };
                    let d = run(over, keys, &samples, n, set_pct, ROUND_OPS);
                    t[which].push(d.as_nanos() as f64 / ROUND_OPS as f64);
                }
            }
            let speedup = |many: &[f64], one: &[f64]| -> Vec<f64> {
                one.iter().zip(many).map(|(o, m)| o / m).collect()
            };
            let store = speedup(&t[0], &t[1]);
            let map = speedup(&t[2], &t[3]);
            let relative = store.iter().zip(&map).map(|(s, m)| s / m).collect();
            let figure = format!("{mix} {dist}, {workers} workers");
            control.push(format!(
                "{figure}: the map {:.2}×, this store's speed-up ÷ the map's {:.2}",
                median(map),
                median(relative)
            ));
            rows.push((figure, (median(t[0].clone()), median(t[1].clone()), median(store))));
        }
    }
    let note = format!(
        "Interleaved: {ROUNDS} rounds, each {ROUND_OPS} operations of the mix (90/10 uniform \
         and Zipf, 50/50 Zipf) run by one worker and by N (split among them), and the same for \
         the control, the four runs of a \
         round back to back, N first in every other round; aggregate time per operation \
         (medians), and the median of the per-round speed-ups.\n\nControl: the same mix on a \
         HashMap private to each worker (get copying into a reused buffer, insert; nothing \
         shared, N copies of the \
         data), its speed-up, and the median over the rounds of this store's speed-up over the \
         map's in the same round (1.00: the store scales as well as per-process maps): {}.",
        control.join("; ")
    );
    for (figure, figures) in rows {
        summary.interleaved(&figure, "1 worker", figures, &note);
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let mut summary = Summary::new("scaling");
    scaling(&mut c, &mut summary);
    c.final_summary();
    summary.finish(
        "Times are aggregate time per operation (total time over total operations), so the \
         ratio to 1 worker is the speed-up of total throughput.",
    );
}

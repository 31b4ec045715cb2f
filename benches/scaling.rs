//! Total throughput of N forked worker processes sharing one store, for 1 KiB sessions over
//! 10,000 keys: 90/10 and 50/50 get/set mixes, uniform and Zipf-skewed (s = 0.99) keys.
//! Criterion's `iter_custom` times `iters` operations split among the workers, from the
//! moment they are released (all forked and waiting on a pipe) to the last one's exit; the
//! reported time per element is the aggregate cost of one operation, its inverse the total
//! throughput. `SCALING_WORKERS` (default `1,2,4,8`) chooses the worker counts. The summary
//! (also `target/bench-summary-scaling.md`) gives each count's speed-up over one worker, from
//! the same run.

use std::os::fd::AsRawFd;
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

/// Forks `workers` processes that each run `ops / workers` operations once released, and
/// returns the time from release to the last exit.
fn run(
    store: &ClusterStore,
    keys: &[String],
    samples: &[u32],
    workers: usize,
    set_pct: u64,
    ops: u64,
) -> Duration {
    let (go_read, go_write) = pipe().expect("pipe");
    let per_worker = ops.div_ceil(workers as u64);
    let mut pids = Vec::new();
    for w in 0..workers {
        // SAFETY: the bench is single-threaded here; the child only runs the loop and exits.
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                drop(go_write);
                let mut byte = [0u8; 1];
                let _ = nix::unistd::read(go_read.as_raw_fd(), &mut byte);
                let value = vec![w as u8; VALUE];
                let mut out = Vec::with_capacity(VALUE);
                let mut i = w * 7919;
                for n in 0..per_worker {
                    i = (i + 1) % samples.len();
                    let key = &keys[samples[i] as usize];
                    if n % 100 < set_pct {
                        store.set_raw(key, &value, Expiry::Default).expect("set");
                    } else {
                        store.get_raw_into(key, &mut out).expect("get");
                    }
                }
                // SAFETY: ends the child at once, running nothing of the bench harness.
                unsafe { libc::_exit(0) };
            }
            ForkResult::Parent { child } => pids.push(child),
        }
    }
    drop(go_read);
    let start = Instant::now();
    drop(go_write); // EOF releases every worker at once
    for pid in pids {
        waitpid(pid, None).expect("waitpid");
    }
    start.elapsed()
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
                    b.iter_custom(|ops| run(&master, &keys, &samples, workers, set_pct, ops))
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
    assert!(master.check_integrity().is_ok());
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

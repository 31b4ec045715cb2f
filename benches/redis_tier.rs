//! The Redis tier (feature `redis`) read path, 1 KiB sessions over 10,000 keys, side by side
//! in one criterion group:
//! - (a) a cache hit: `RedisStore::get_raw_into` answered from the host's segment, no call
//!   to Redis (the bench checks with Redis's own `INFO commandstats` that the hit benchmark
//!   made no `GET`, and prints how many it made);
//! - (b) a plain `ClusterStore::get_raw_into` on a store of the same geometry without Redis,
//!   the single-host store (goal: the hit within 1.2× of it);
//! - (c) a Redis `GET` of the same key (`session:<sid>`) through the `redis` crate on one
//!   connection, the protocol a miss uses (goal: the hit at least 100× faster);
//! - (d) a miss: the session is in Redis but its local copy was removed (in criterion's
//!   untimed batch setup), so the read pipelines `GET` and `PTTL` and fills the segment.
//!
//! The bench starts its own `redis-server` on a free port of 127.0.0.1 with persistence off;
//! without one on PATH it prints one line and measures nothing. The master's tracker thread
//! (RESP3 broadcast tracking) runs in this process, as the master of one host.
//! The summary (also `target/bench-summary-redis_tier.md`) gives each figure as a ratio to the
//! hit's time, then the hit against the plain get and against the Redis `GET` in interleaved
//! rounds (`common::interleave`), which a shared, noisy machine disturbs less.

use std::hint::black_box;
use std::time::{Duration, Instant};

mod common;

use cluster_session_store::{ClusterStore, Config, Expiry, RedisConfig, RedisStore};
use common::redis_server::RedisServer;
use common::summary::Summary;
use criterion::{BatchSize, Criterion};

const KEYS: usize = 10_000;
const VALUE: usize = 1024;
const NAME: &str = "bench-redis-tier";
const PLAIN_NAME: &str = "bench-redis-tier-plain";

const GROUP: &str = "redis_tier/get 1KiB";
const HIT: &str = "redis_tier/get 1KiB/RedisStore hit (segment)";
const PLAIN: &str = "redis_tier/get 1KiB/ClusterStore get, no Redis";
const REDIS_GET: &str = "redis_tier/get 1KiB/Redis GET on one connection";
const MISS: &str = "redis_tier/get 1KiB/RedisStore miss (GET+PTTL, fill)";

/// Interleaved rounds: the hit against the plain get (batches of `BATCH`), and against the
/// Redis `GET` (batches of `REDIS_BATCH`, about 30 µs each).
const ROUNDS: usize = 21;
const BATCH: usize = 200_000;
const REDIS_BATCH: usize = 2_000;

/// The function part of a `group/function` id.
fn function(id: &str) -> &str {
    id.rsplit('/').next().unwrap()
}

/// Both stores' geometry, as a deployment of 1 KiB sessions would set it.
fn geometry(name: &str) -> Config {
    Config::new()
        .name(name)
        .memory_size(64 << 20)
        .shards(64)
        .max_value_size(4096)
        .typical_value_size(VALUE)
}

/// Bounded polling: `done` within `limit`, or a panic naming `what`.
fn until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        // Waiting for the tracker thread, bounded by the deadline above.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads every key through the tier until one pass makes no `GET` (every write's
/// invalidation echo has come back and the reads since have filled the segment).
fn warm(tier: &RedisStore, keys: &[String], conn: &mut redis::Connection) {
    let mut out = Vec::with_capacity(VALUE + 8);
    until(Duration::from_secs(30), "a pass of reads all served from the segment", || {
        let gets = RedisServer::calls(conn, "get");
        for k in keys {
            assert!(tier.get_raw_into(k, &mut out).unwrap(), "{k} is gone");
        }
        RedisServer::calls(conn, "get") == gets
    });
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let dir = std::env::temp_dir().join(format!("css-redis-tier-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let Some(server) = RedisServer::start(&dir) else {
        let _ = std::fs::remove_dir_all(&dir);
        return;
    };
    let mut summary = Summary::new("redis_tier");
    let keys = common::shuffled_keys(KEYS);
    let value = vec![0xAB_u8; VALUE];

    // One host: its master (the tracker thread) and a worker's handle, in this process.
    let config = RedisConfig::new(&server.url()).expect("Redis URL");
    let master = ClusterStore::setup(geometry(NAME).redis(config.clone())).expect("setup");
    let tier = RedisStore::new(ClusterStore::open(NAME).expect("open"), config);
    until(Duration::from_secs(10), "the tracker armed", || tier.trusted());
    // The single-host store of the same geometry.
    let plain_master = ClusterStore::setup(geometry(PLAIN_NAME)).expect("setup (plain)");
    let plain = plain_master.store();
    let mut conn = server.connect();

    let mut in_order = keys.clone();
    in_order.sort();
    for k in &in_order {
        tier.set_raw(k, &value, Expiry::Default).unwrap();
        plain.set_raw(k, &value, Expiry::Default).unwrap();
    }
    warm(&tier, &keys, &mut conn);

    let redis_keys: Vec<String> = keys.iter().map(|k| format!("session:{k}")).collect();
    let mut out = Vec::with_capacity(VALUE + 8);
    let mut i = 0;
    let mut next = || {
        i = (i + 1) % KEYS;
        i
    };
    let mut group = c.benchmark_group(GROUP);
    let gets = RedisServer::calls(&mut conn, "get");
    group.bench_function(function(HIT), |b| {
        b.iter(|| assert!(tier.get_raw_into(&keys[next()], &mut out).unwrap()))
    });
    let hit_gets = RedisServer::calls(&mut conn, "get") - gets;
    println!("{GROUP}: the hit benchmark made {hit_gets} GET calls to Redis (0: every read a hit)");
    group.bench_function(function(PLAIN), |b| {
        b.iter(|| assert!(plain.get_raw_into(&keys[next()], &mut out).unwrap()))
    });
    group.bench_function(function(REDIS_GET), |b| {
        b.iter(|| {
            let v: Option<Vec<u8>> =
                redis::cmd("GET").arg(&redis_keys[next()]).query(&mut conn).expect("GET");
            assert_eq!(black_box(v).map(|v| v.len()), Some(VALUE));
        })
    });
    group.bench_function(function(MISS), |b| {
        b.iter_batched(
            || {
                let k = &keys[next()];
                tier.local().destroy(k).unwrap();
                k
            },
            |k| assert!(tier.get_raw_into(k, &mut out).unwrap()),
            BatchSize::SmallInput,
        )
    });
    group.finish();

    if common::measuring() {
        // The misses refilled the segment; a pass of hits again before the rounds.
        warm(&tier, &keys, &mut conn);
        let note = format!(
            "Interleaved: {ROUNDS} rounds, each one batch of the hit and one of the peer, in \
             alternating order, over the same shuffled keys ({BATCH} operations a batch \
             against the plain get, {REDIS_BATCH} against the Redis GET); the medians of the \
             batches' ns per operation and of the per-round ratios."
        );
        let cursor = || {
            let mut j = 0;
            move || {
                j = (j + 1) % KEYS;
                j
            }
        };
        let (mut a, mut b) = (cursor(), cursor());
        let mut theirs = Vec::with_capacity(VALUE);
        let gets = RedisServer::calls(&mut conn, "get");
        let versus_plain = common::interleave(
            ROUNDS,
            BATCH,
            || assert!(tier.get_raw_into(&keys[a()], &mut out).unwrap(), "a hit missed"),
            || assert!(plain.get_raw_into(&keys[b()], &mut theirs).unwrap(), "a get missed"),
        );
        let hit_gets = RedisServer::calls(&mut conn, "get") - gets;
        println!("interleaved: the hits made {hit_gets} GET calls to Redis (0: every read a hit)");
        summary.interleaved(
            "get 1 KiB, hit",
            "ClusterStore get_raw_into, no Redis",
            versus_plain,
            &note,
        );
        let versus_redis = common::interleave(
            ROUNDS,
            REDIS_BATCH,
            || assert!(tier.get_raw_into(&keys[a()], &mut out).unwrap(), "a hit missed"),
            || {
                let v: Option<Vec<u8>> =
                    redis::cmd("GET").arg(&redis_keys[b()]).query(&mut conn).expect("GET");
                assert_eq!(black_box(v).map(|v| v.len()), Some(VALUE));
            },
        );
        summary.interleaved("get 1 KiB, hit", "Redis GET on one connection", versus_redis, &note);
    } else {
        println!("interleaved rounds skipped: criterion is not measuring (--test or --list)");
    }
    assert!(tier.local().check_integrity().is_ok());
    drop((tier, master, plain, plain_master, conn, server));
    let _ = std::fs::remove_dir_all(&dir);

    summary.compare(
        "get 1 KiB, hit",
        HIT,
        &[
            ("ClusterStore get_raw_into, no Redis (same geometry)", PLAIN),
            ("Redis GET on one connection (`redis` crate)", REDIS_GET),
            ("RedisStore miss: GET+PTTL pipelined, then the fill", MISS),
        ],
    );
    c.final_summary();
    summary.finish(
        "Ratio: the peer's median time over the hit's, from the same run; `slower` means the \
         hit takes that much longer than the peer. Goals: the hit within 1.2× of the plain \
         get, at least 100× faster than the Redis GET.",
    );
}

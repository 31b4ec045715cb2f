//! `get` and `set` of a 1 KiB session, in one run, for this store and its peers:
//! - (a) an in-process `Mutex<HashMap>`: the ceiling for one process, not shared;
//! - (b) tower-sessions' `MemoryStore`, what axum users use today (not shared), against
//!   this store through the same `SessionStore` trait, both driven by `block_on` on a
//!   current-thread Tokio runtime;
//! - (c) the seed's architecture: a master process holding the sessions in a `HashMap` and
//!   answering a worker over a Unix domain socket, one request in flight (forked here);
//! - (d) Redis on 127.0.0.1 through the `redis` crate, one request in flight, when
//!   `redis-server` is on PATH: the bench starts its own on a free port with persistence off
//!   and stops it; without it, one line says so and the peer is skipped;
//! - (e) LMDB through `heed`: a read transaction and a copy for `get`, a write transaction
//!   committed without fsync (`NO_SYNC`: sessions need no durability) for `set`.
//!
//! Every store holds the same 10,000 sessions, written in sorted order, then read and written
//! in one shuffled order.
//! The summary at the end (also written to `target/bench-summary-peers.md`) gives each
//! peer's median time as a ratio to this store's, then this store against the map in
//! alternating batches: over the 64 MiB segment of the benchmarks above, and over a 16 MiB
//! one sized for the 10,000 sessions (its index as full as the map's table).

use std::collections::HashMap;
use std::hint::black_box;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Mutex;

mod common;

use cluster_session_store::{ClusterStore, Config, Expiry};
use common::redis_server::RedisServer;
use common::summary::Summary;
use criterion::Criterion;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult, Pid};
use tower_sessions::session::{Id, Record};
use tower_sessions::{MemoryStore, SessionStore};

const KEYS: usize = 10_000;
const VALUE: usize = 1024;
const GET: u8 = 1;
const SET: u8 = 2;

/// The seed's master: a `HashMap` behind a Unix socket. Request: op, key length (u16), value
/// length (u32), key, value. Reply: found (u8), value length (u32), value.
fn serve(listener: UnixListener) -> ! {
    let mut map: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let (mut conn, _) = listener.accept().expect("accept");
    let mut head = [0u8; 7];
    let mut key = Vec::new();
    loop {
        if conn.read_exact(&mut head).is_err() {
            // SAFETY: ends the forked server at once, running nothing of the bench harness.
            unsafe { libc::_exit(0) };
        }
        let klen = u16::from_le_bytes([head[1], head[2]]) as usize;
        let vlen = u32::from_le_bytes([head[3], head[4], head[5], head[6]]) as usize;
        key.resize(klen, 0);
        conn.read_exact(&mut key).expect("key");
        let mut value = vec![0u8; vlen];
        conn.read_exact(&mut value).expect("value");
        let reply = match head[0] {
            SET => {
                map.insert(key.clone(), value);
                vec![1, 0, 0, 0, 0]
            }
            _ => match map.get(&key) {
                Some(v) => {
                    let mut r = vec![1];
                    r.extend_from_slice(&(v.len() as u32).to_le_bytes());
                    r.extend_from_slice(v);
                    r
                }
                None => vec![0, 0, 0, 0, 0],
            },
        };
        conn.write_all(&reply).expect("reply");
    }
}

/// A worker's connection to the seed-style master.
struct SocketMaster {
    conn: UnixStream,
    pid: Pid,
}

impl SocketMaster {
    fn start(path: &std::path::Path) -> Self {
        let listener = UnixListener::bind(path).expect("bind");
        // SAFETY: single-threaded here; the child only serves and exits.
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => serve(listener),
            ForkResult::Parent { child } => {
                drop(listener);
                SocketMaster { conn: UnixStream::connect(path).expect("connect"), pid: child }
            }
        }
    }

    fn request(&mut self, op: u8, key: &[u8], value: &[u8], out: &mut Vec<u8>) -> bool {
        let mut msg = Vec::with_capacity(7 + key.len() + value.len());
        msg.push(op);
        msg.extend_from_slice(&(key.len() as u16).to_le_bytes());
        msg.extend_from_slice(&(value.len() as u32).to_le_bytes());
        msg.extend_from_slice(key);
        msg.extend_from_slice(value);
        self.conn.write_all(&msg).expect("send");
        let mut head = [0u8; 5];
        self.conn.read_exact(&mut head).expect("reply");
        out.resize(u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize, 0);
        self.conn.read_exact(out).expect("value");
        head[0] == 1
    }
}

impl Drop for SocketMaster {
    fn drop(&mut self) {
        let _ = kill(self.pid, Signal::SIGKILL);
        let _ = waitpid(self.pid, None);
    }
}

/// The Redis peer: a `redis-server` of the bench's own (`common::redis_server`) and one
/// connection to it.
struct Redis {
    conn: redis::Connection,
    _server: RedisServer,
}

impl Redis {
    /// `None` (after saying why) when `redis-server` is not on PATH or does not start.
    fn start(dir: &std::path::Path) -> Option<Redis> {
        let server = RedisServer::start(dir)?;
        Some(Redis { conn: server.connect(), _server: server })
    }

    fn get(&mut self, key: &str, out: &mut Vec<u8>) -> bool {
        let v: Option<Vec<u8>> = redis::cmd("GET").arg(key).query(&mut self.conn).expect("GET");
        *out = v.unwrap_or_default();
        !out.is_empty()
    }

    fn set(&mut self, key: &str, value: &[u8]) {
        let () = redis::cmd("SET").arg(key).arg(value).query(&mut self.conn).expect("SET");
    }
}

/// LMDB through heed, one unnamed database of byte keys and values.
struct Lmdb {
    env: heed::Env,
    db: heed::Database<heed::types::Bytes, heed::types::Bytes>,
}

impl Lmdb {
    fn open(dir: &std::path::Path) -> Lmdb {
        let dir = dir.join("lmdb");
        std::fs::create_dir_all(&dir).expect("lmdb dir");
        let mut options = heed::EnvOpenOptions::new();
        options.map_size(1 << 30);
        // SAFETY: sessions need no durability; NO_SYNC only skips the fsync at commit.
        unsafe { options.flags(heed::EnvFlags::NO_SYNC | heed::EnvFlags::NO_META_SYNC) };
        // SAFETY: the directory is this run's own; nothing else opens it.
        let env = unsafe { options.open(&dir) }.expect("open LMDB");
        let mut txn = env.write_txn().expect("write txn");
        let db = env.create_database(&mut txn, None).expect("database");
        txn.commit().expect("commit");
        Lmdb { env, db }
    }

    fn get(&self, key: &str, out: &mut Vec<u8>) -> bool {
        let txn = self.env.read_txn().expect("read txn");
        out.clear();
        let found =
            self.db.get(&txn, key.as_bytes()).expect("get").map(|v| out.extend_from_slice(v));
        found.is_some()
    }

    fn set(&self, key: &str, value: &[u8]) {
        let mut txn = self.env.write_txn().expect("write txn");
        self.db.put(&mut txn, key.as_bytes(), value).expect("put");
        txn.commit().expect("commit");
    }
}

/// A tower-sessions record of about 1 KiB.
fn record(id: Id) -> Record {
    let data = [("blob".to_owned(), serde_json::Value::String("x".repeat(VALUE - 16)))];
    let expiry_date = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    Record { id, data: data.into_iter().collect(), expiry_date }
}

const OURS_GET: &str = "peers/get 1KiB/cluster-session-store get_raw_into";
const OURS_SET: &str = "peers/set 1KiB/cluster-session-store set_raw";
const MAP_GET: &str = "peers/get 1KiB/Mutex<HashMap> get into a buffer (one process)";
const MAP_SET: &str = "peers/set 1KiB/Mutex<HashMap> insert (one process)";
const SOCKET_GET: &str = "peers/get 1KiB/seed: master over a Unix socket";
const SOCKET_SET: &str = "peers/set 1KiB/seed: master over a Unix socket";
const REDIS_GET: &str = "peers/get 1KiB/Redis on 127.0.0.1";
const REDIS_SET: &str = "peers/set 1KiB/Redis on 127.0.0.1";
const LMDB_GET: &str = "peers/get 1KiB/LMDB (heed)";
const LMDB_SET: &str = "peers/set 1KiB/LMDB (heed)";
const TOWER_OURS_LOAD: &str = "peers/tower-sessions load 1KiB/cluster-session-store";
const TOWER_MEM_LOAD: &str = "peers/tower-sessions load 1KiB/MemoryStore (one process)";
const TOWER_OURS_SAVE: &str = "peers/tower-sessions save 1KiB/cluster-session-store";
const TOWER_MEM_SAVE: &str = "peers/tower-sessions save 1KiB/MemoryStore (one process)";

/// Rounds of the interleaved measurement, and operations per batch.
const ROUNDS: usize = 21;
const BATCH: usize = 200_000;

/// The function part of a `group/function` id.
fn function(id: &str) -> &str {
    id.rsplit('/').next().unwrap()
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let mut summary = Summary::new("peers");
    let keys = common::shuffled_keys(KEYS);
    let value = vec![0xAB_u8; VALUE];
    let master = ClusterStore::setup(
        // Sized as a deployment of 1 KiB sessions would be: the index for 1 KiB records.
        Config::new()
            .name("bench-peers")
            .memory_size(64 << 20)
            .shards(64)
            .max_value_size(4096)
            .typical_value_size(VALUE),
    )
    .expect("setup");
    let store = master.store();
    let map: Mutex<HashMap<String, Vec<u8>>> = Mutex::new(HashMap::new());
    let dir = std::env::temp_dir().join(format!("css-peers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut socket = SocketMaster::start(&dir.join("master.sock"));
    let mut redis = Redis::start(&dir);
    let lmdb = Lmdb::open(&dir);
    let mut out = Vec::with_capacity(VALUE);
    // Written in sorted order, read in shuffled order: no store gets to read its memory
    // in the order it was allocated.
    let mut in_order = keys.clone();
    in_order.sort();
    for k in &in_order {
        store.set_raw(k, &value, Expiry::Default).unwrap();
        map.lock().unwrap().insert(k.clone(), value.clone());
        socket.request(SET, k.as_bytes(), &value, &mut out);
        if let Some(redis) = redis.as_mut() {
            redis.set(k, &value);
        }
        lmdb.set(k, &value);
    }

    let mut i = 0;
    let mut next = || {
        i = (i + 1) % KEYS;
        i
    };
    let mut group = c.benchmark_group("peers/get 1KiB");
    group.bench_function(function(OURS_GET), |b| {
        b.iter(|| black_box(store.get_raw_into(&keys[next()], &mut out).unwrap()))
    });
    let mut map_out = Vec::with_capacity(VALUE);
    group.bench_function(function(MAP_GET), |b| {
        b.iter(|| {
            common::map_get_into(&map, &keys[next()], &mut map_out);
            black_box(&map_out);
        })
    });
    group.bench_function(function(SOCKET_GET), |b| {
        b.iter(|| black_box(socket.request(GET, keys[next()].as_bytes(), &[], &mut out)))
    });
    if let Some(redis) = redis.as_mut() {
        group.bench_function(function(REDIS_GET), |b| {
            b.iter(|| black_box(redis.get(&keys[next()], &mut out)))
        });
    }
    group.bench_function(function(LMDB_GET), |b| {
        b.iter(|| black_box(lmdb.get(&keys[next()], &mut out)))
    });
    group.finish();

    let mut group = c.benchmark_group("peers/set 1KiB");
    group.bench_function(function(OURS_SET), |b| {
        b.iter(|| store.set_raw(&keys[next()], &value, Expiry::Default).unwrap())
    });
    group.bench_function(function(MAP_SET), |b| {
        b.iter(|| black_box(map.lock().unwrap().insert(keys[next()].clone(), value.clone())))
    });
    group.bench_function(function(SOCKET_SET), |b| {
        b.iter(|| black_box(socket.request(SET, keys[next()].as_bytes(), &value, &mut out)))
    });
    if let Some(redis) = redis.as_mut() {
        group.bench_function(function(REDIS_SET), |b| b.iter(|| redis.set(&keys[next()], &value)));
    }
    group.bench_function(function(LMDB_SET), |b| b.iter(|| lmdb.set(&keys[next()], &value)));
    group.finish();
    drop((socket, redis, lmdb));

    // The targets' pair again, in alternation (`common::interleave`).
    let note = format!(
        "Interleaved: {ROUNDS} rounds, each one batch of {BATCH} operations of this store and \
         one of the map, in alternating order, over the same shuffled keys; the medians of \
         the batches' ns per operation and of the per-round ratios."
    );
    common::versus_map(
        &mut summary,
        "1 KiB (raw bytes)",
        &store,
        &map,
        &keys,
        &value,
        (ROUNDS, BATCH),
        &note,
    );
    // The same pair over a segment sized for these sessions: 16 MiB gives 16,384 index slots,
    // as many as the map's table has buckets for 10,000 entries, both 61 % full. The 64 MiB
    // segment above has four times the slots, 15 % full, and each lookup's slot line comes
    // from a larger, sparser array.
    let sized_master = ClusterStore::setup(
        Config::new()
            .name("bench-peers-sized")
            .memory_size(16 << 20)
            .shards(64)
            .max_value_size(4096)
            .typical_value_size(VALUE),
    )
    .expect("setup of the sized segment");
    let sized = sized_master.store();
    for k in &in_order {
        sized.set_raw(k, &value, Expiry::Default).unwrap();
    }
    let held = sized.stats().expect("stats");
    assert!(
        held.evictions == 0 && held.records == KEYS as u64,
        "the 16 MiB segment must hold every session: {held}"
    );
    common::versus_map(
        &mut summary,
        "1 KiB (raw bytes), 16 MiB segment",
        &sized,
        &map,
        &keys,
        &value,
        (ROUNDS, BATCH),
        &note,
    );
    drop(sized_master);

    // tower-sessions: this store and MemoryStore through the same trait.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let memory = MemoryStore::default();
    // Made with `create`, as the middleware makes them: `save` only replaces a live record.
    let mut records: Vec<Record> = (0..KEYS).map(|_| record(Id::default())).collect();
    for r in &mut records {
        let id = r.id;
        rt.block_on(store.create(r)).unwrap();
        rt.block_on(memory.create(r)).unwrap();
        assert_eq!(r.id, id, "a fresh random id is free in both stores");
    }
    // Read in shuffled order, not the order they were saved in.
    let order = common::shuffled_indexes(KEYS);
    let mut next = || order[next()];
    let mut group = c.benchmark_group("peers/tower-sessions load 1KiB");
    group.bench_function(function(TOWER_OURS_LOAD), |b| {
        b.iter(|| black_box(rt.block_on(store.load(&records[next()].id)).unwrap()))
    });
    group.bench_function(function(TOWER_MEM_LOAD), |b| {
        b.iter(|| black_box(rt.block_on(memory.load(&records[next()].id)).unwrap()))
    });
    group.finish();
    let mut group = c.benchmark_group("peers/tower-sessions save 1KiB");
    group.bench_function(function(TOWER_OURS_SAVE), |b| {
        b.iter(|| rt.block_on(store.save(&records[next()])).unwrap())
    });
    group.bench_function(function(TOWER_MEM_SAVE), |b| {
        b.iter(|| rt.block_on(memory.save(&records[next()])).unwrap())
    });
    group.finish();
    // The same pairs in alternation: criterion's groups run seconds apart, on a machine whose
    // speed moves by more than the difference.
    if common::measuring() {
        let (records, order) = (&records, &order);
        let cursor = || {
            let mut j = 0;
            move || {
                j = (j + 1) % KEYS;
                &records[order[j]]
            }
        };
        let (mut a, mut b) = (cursor(), cursor());
        let load = common::interleave(
            ROUNDS,
            BATCH,
            || assert!(rt.block_on(store.load(&a().id)).unwrap().is_some()),
            || assert!(rt.block_on(memory.load(&b().id)).unwrap().is_some()),
        );
        let label = "tower-sessions MemoryStore, one process";
        summary.interleaved("tower-sessions load 1 KiB", label, load, &note);
        let (mut a, mut b) = (cursor(), cursor());
        let save = common::interleave(
            ROUNDS,
            BATCH,
            || rt.block_on(store.save(a())).unwrap(),
            || rt.block_on(memory.save(b())).unwrap(),
        );
        summary.interleaved("tower-sessions save 1 KiB", label, save, &note);
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(store.check_integrity().is_ok());

    summary.compare(
        "get 1 KiB (raw bytes)",
        OURS_GET,
        &[
            ("Mutex<HashMap> get, copied into a reused buffer, one process", MAP_GET),
            ("seed's master over a Unix socket", SOCKET_GET),
            ("Redis on 127.0.0.1", REDIS_GET),
            ("LMDB (heed)", LMDB_GET),
        ],
    );
    summary.compare(
        "set 1 KiB (raw bytes)",
        OURS_SET,
        &[
            ("Mutex<HashMap> insert, one process", MAP_SET),
            ("seed's master over a Unix socket", SOCKET_SET),
            ("Redis on 127.0.0.1", REDIS_SET),
            ("LMDB (heed)", LMDB_SET),
        ],
    );
    summary.compare(
        "tower-sessions load 1 KiB",
        TOWER_OURS_LOAD,
        &[("tower-sessions MemoryStore, one process", TOWER_MEM_LOAD)],
    );
    summary.compare(
        "tower-sessions save 1 KiB",
        TOWER_OURS_SAVE,
        &[("tower-sessions MemoryStore, one process", TOWER_MEM_SAVE)],
    );
    c.final_summary();
    summary.finish(
        "Ratio: the peer's median time over this store's, from the same run. The in-process \
         map and MemoryStore are private to one process; every other peer is shared.",
    );
}

//! `get` and `set` of a 1 KiB session, in one run, for this store and its peers:
//! - the in-process `Mutex<HashMap>`: the ceiling for one process, not shared;
//! - the seed's architecture: a master process holding the sessions in a `HashMap` and
//!   answering a worker over a Unix domain socket, one request in flight (forked here).
//!
//! The other peers of issue 6 (tower-sessions' memory store, Redis, LMDB) are not added yet.

use std::collections::HashMap;
use std::hint::black_box;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Mutex;

mod common;

use cluster_session_store::{ClusterStore, Config, Expiry};
use criterion::{criterion_group, criterion_main, Criterion};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult, Pid};

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

fn peers(c: &mut Criterion) {
    let keys = common::shuffled_keys(KEYS);
    let value = vec![0xAB_u8; VALUE];
    let master = ClusterStore::setup(
        Config::new().name("bench-peers").memory_size(64 << 20).shards(64).max_value_size(4096),
    )
    .expect("setup");
    let store = master.store();
    let map: Mutex<HashMap<String, Vec<u8>>> = Mutex::new(HashMap::new());
    let dir = std::env::temp_dir().join(format!("css-peers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut socket = SocketMaster::start(&dir.join("master.sock"));
    let mut out = Vec::with_capacity(VALUE);
    for k in &keys {
        store.set_raw(k, &value, Expiry::Default).unwrap();
        map.lock().unwrap().insert(k.clone(), value.clone());
        socket.request(SET, k.as_bytes(), &value, &mut out);
    }

    let mut i = 0;
    let mut next = || {
        i = (i + 1) % KEYS;
        i
    };
    let mut group = c.benchmark_group("peers/get 1KiB");
    group.bench_function("cluster-session-store get_raw_into", |b| {
        b.iter(|| black_box(store.get_raw_into(&keys[next()], &mut out).unwrap()))
    });
    group.bench_function("Mutex<HashMap> get+clone (one process)", |b| {
        b.iter(|| black_box(map.lock().unwrap().get(&keys[next()]).cloned()))
    });
    group.bench_function("seed: master over a Unix socket", |b| {
        b.iter(|| black_box(socket.request(GET, keys[next()].as_bytes(), &[], &mut out)))
    });
    group.finish();

    let mut group = c.benchmark_group("peers/set 1KiB");
    group.bench_function("cluster-session-store set_raw", |b| {
        b.iter(|| store.set_raw(&keys[next()], &value, Expiry::Default).unwrap())
    });
    group.bench_function("Mutex<HashMap> insert (one process)", |b| {
        b.iter(|| black_box(map.lock().unwrap().insert(keys[next()].clone(), value.clone())))
    });
    group.bench_function("seed: master over a Unix socket", |b| {
        b.iter(|| black_box(socket.request(SET, keys[next()].as_bytes(), &value, &mut out)))
    });
    group.finish();
    drop(socket);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(store.check_integrity().is_ok());
}

criterion_group!(benches, peers);
criterion_main!(benches);

//! Snapshot and restore of 1 million 1 KiB sessions, against the disk's sequential speed
//! measured in the same run: a plain buffered write of the same number of bytes to the same
//! directory, synced (what the snapshot cannot beat), and a plain read of the snapshot file
//! (what the restore cannot beat). Rounds alternate the two, and the summary gives each
//! round's ratio and their median. `SNAPSHOT_SESSIONS` changes the count, `SNAPSHOT_DIR` the
//! directory (default: the target directory, on the disk the build uses).
//!
//! `cargo bench --bench snapshot`. Skipped (beyond a check of a few sessions) when cargo only
//! tests or lists the benches.

mod common;

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cluster_session_store::{ClusterStore, Config, Expiry};

const ROUNDS: usize = 3;

fn plain_write(path: &Path, bytes: u64) -> Duration {
    let block = vec![0x5au8; 1 << 20];
    let t = Instant::now();
    let file = File::create(path).unwrap();
    let mut out = BufWriter::with_capacity(1 << 20, &file);
    let mut left = bytes;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        out.write_all(&block[..n]).unwrap();
        left -= n as u64;
    }
    out.flush().unwrap();
    drop(out);
    file.sync_all().unwrap();
    let elapsed = t.elapsed();
    std::fs::remove_file(path).unwrap();
    elapsed
}

fn plain_read(path: &Path) -> Duration {
    let mut buf = vec![0u8; 1 << 20];
    let t = Instant::now();
    let mut file = File::open(path).unwrap();
    while file.read(&mut buf).unwrap() > 0 {}
    t.elapsed()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let measuring = common::measuring();
    let sessions: usize = match std::env::var("SNAPSHOT_SESSIONS") {
        Ok(n) => n.parse().expect("SNAPSHOT_SESSIONS: a count"),
        Err(_) if measuring => 1_000_000,
        Err(_) => 1_000,
    };
    let dir = std::env::var_os("SNAPSHOT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/snapshot-bench"));
    std::fs::create_dir_all(&dir).unwrap();
    let snapshot = dir.join("sessions.snapshot");
    let plain = dir.join("plain.bytes");

    let per_session = 1024 + 48 + 32 + 64;
    let config = Config::new()
        .name("bench-snapshot")
        .memory_size((sessions * per_session * 2).max(64 << 20))
        .shards(64)
        .max_value_size(4096)
        .typical_value_size(1024);
    let from = ClusterStore::setup(config.clone()).unwrap();
    let value = vec![0xa5u8; 1024];
    for i in 0..sessions {
        from.set_raw(&format!("{i:032x}"), &value, Expiry::Default).unwrap();
    }
    let to = ClusterStore::setup(config.name("bench-restore")).unwrap();

    let (mut write_ratios, mut read_ratios) = (Vec::new(), Vec::new());
    println!("snapshot of {sessions} sessions of 1 KiB to {}", dir.display());
    println!("round  snapshot  plain write  ratio   restore  plain read  ratio");
    for round in 0..if measuring { ROUNDS } else { 1 } {
        let t = Instant::now();
        let written = from.snapshot(&snapshot).unwrap();
        let snap = t.elapsed();
        assert_eq!(written.sessions, sessions as u64);
        let plain_w = plain_write(&plain, written.bytes);
        to.clear().unwrap();
        let t = Instant::now();
        let restored = to.restore(&snapshot).unwrap();
        let restore = t.elapsed();
        assert_eq!(restored.sessions, sessions as u64);
        let plain_r = plain_read(&snapshot);
        let (w, r) = (
            snap.as_secs_f64() / plain_w.as_secs_f64(),
            restore.as_secs_f64() / plain_r.as_secs_f64(),
        );
        println!(
            "{round:>5}  {snap:>8.2?}  {plain_w:>11.2?}  {w:>5.2}×  {restore:>8.2?}  {plain_r:>10.2?}  {r:>5.2}×"
        );
        write_ratios.push(w);
        read_ratios.push(r);
    }
    let mb = std::fs::metadata(&snapshot).unwrap().len() as f64 / 1e6;
    println!(
        "median: snapshot {:.2}× the plain write's time, restore {:.2}× the plain read's ({mb:.0} MB file)",
        median(write_ratios),
        median(read_ratios)
    );
    let _ = std::fs::remove_file(&snapshot);
}

//! Memory: bytes of segment per live session, for 128 B, 1 KiB and 8 KiB sessions.
//!
//! A 64 MiB segment (64 shards, `Eviction::Refuse`) is filled with sessions of one size under
//! distinct 32-character ids until every shard refuses (`StoreError::Full` for 1,024 writes in
//! a row): once with the default index (one slot per 128 bytes of data area), once with the
//! index sized for the session (`Config::typical_value_size`). Reported: the sessions it
//! holds, segment bytes per session (everything: header, locks, index, block headers,
//! size-class rounding, unused space), record bytes per session (the blocks the records
//! occupy), and each as a multiple of the session's own size. No timing: this bench measures
//! space, and is deterministic. The table is printed and written
//! to `target/bench-summary-memory.md`.

use std::fmt::Write as _;

use cluster_session_store::{ClusterStore, Config, Eviction, Expiry, StoreError};

const SEGMENT: usize = 64 << 20;
const FULL_STREAK: usize = 1024;

fn fill(size: usize, typical: bool) -> (usize, u64) {
    let mut config = Config::new()
        .name(&format!("bench-memory-{size}"))
        .memory_size(SEGMENT)
        .shards(64)
        .max_value_size(16 << 10)
        .eviction(Eviction::Refuse);
    if typical {
        config = config.typical_value_size(size);
    }
    let master = ClusterStore::setup(config).expect("setup");
    let value = vec![0x5A_u8; size];
    let (mut i, mut streak) = (0u64, 0);
    while streak < FULL_STREAK {
        match master.set_raw(&format!("{i:032x}"), &value, Expiry::Default) {
            Ok(()) => streak = 0,
            Err(StoreError::Full { .. }) => streak += 1,
            Err(e) => panic!("set: {e}"),
        }
        i += 1;
    }
    assert!(master.check_integrity().is_ok());
    let stats = master.stats().expect("stats");
    (master.length().expect("length"), stats.used_bytes)
}

fn main() {
    let mut table = String::from(
        "| session | index | sessions in 64 MiB | segment bytes per session | ×size | record bytes per session | ×size |\n|---|---|---|---|---|---|---|\n",
    );
    let runs = [("128 B", 128), ("1 KiB", 1024), ("8 KiB", 8192)]
        .into_iter()
        .flat_map(|(label, size)| [(label, size, false), (label, size, true)]);
    for (label, size, typical) in runs {
        let (live, used) = fill(size, typical);
        let index = if typical { "`typical_value_size`" } else { "default" };
        let per = SEGMENT as f64 / live as f64;
        let record = used as f64 / live as f64;
        let _ = writeln!(
            table,
            "| {label} | {index} | {live} | {per:.0} | {:.2} | {record:.0} | {:.2} |",
            per / size as f64,
            record / size as f64
        );
    }
    println!("\n== memory per live session (ids of 32 bytes)\n{table}");
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-summary-memory.md");
    match std::fs::write(&path, &table) {
        Ok(()) => println!("written to {}", path.display()),
        Err(e) => println!("could not write {}: {e}", path.display()),
    }
}

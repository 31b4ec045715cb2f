//! `Stats` and `IntegrityReport`: what a store reports about itself.
#![forbid(unsafe_code)]

use std::fmt;
use std::time::Duration;

/// Counters and occupancy of a store, summed over its shards. Readable from any process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Records in the index, including expired ones not yet cleaned up.
    pub records: u64,
    /// Bytes of blocks holding records.
    pub used_bytes: u64,
    /// Bytes of data area in all shards.
    pub data_bytes: u64,
    /// Index slots in use: each shard's index starts at 16 slots and doubles while its
    /// records would fill more than three quarters of them, up to the shard's share of
    /// `index_capacity`. Read without the locks.
    pub index_slots: u64,
    /// Index slots the segment has room for: one per record the data area can hold.
    pub index_capacity: u64,
    /// `get` calls that found a live session.
    pub hits: u64,
    /// `get` calls that found none.
    pub misses: u64,
    /// Reads (`get`, and `update`'s read) that took the shard lock instead of reading
    /// optimistically: a writer kept the shard busy through every attempt, or a repair was
    /// owed. Near zero unless one shard is written very often.
    pub locked_reads: u64,
    /// Records written (`set`, `update`).
    pub sets: u64,
    /// Live sessions removed by `destroy` or `update`.
    pub destroys: u64,
    /// Live sessions evicted to make room (LRU).
    pub evictions: u64,
    /// Expired sessions freed.
    pub expirations: u64,
    /// Shards repaired after a lock holder died or corruption was found.
    pub recoveries: u64,
    /// Records dropped by repairs because they were damaged.
    pub corrupt_dropped: u64,
    /// Time spent waiting for shard locks held by others.
    pub lock_wait: Duration,
    /// Coordinator sweep passes (one per shard per tick).
    pub sweeps: u64,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pct = if self.data_bytes == 0 {
            0.0
        } else {
            100.0 * self.used_bytes as f64 / self.data_bytes as f64
        };
        writeln!(
            f,
            "records      {} ({} of {} bytes used, {pct:.1} %)",
            self.records, self.used_bytes, self.data_bytes
        )?;
        writeln!(
            f,
            "gets         {} hits, {} misses, {} took the lock",
            self.hits, self.misses, self.locked_reads
        )?;
        writeln!(f, "index        {} of {} slots active", self.index_slots, self.index_capacity)?;
        writeln!(f, "writes       {} sets, {} destroys", self.sets, self.destroys)?;
        writeln!(f, "freed        {} expired, {} evicted", self.expirations, self.evictions)?;
        writeln!(
            f,
            "recoveries   {} ({} damaged records dropped)",
            self.recoveries, self.corrupt_dropped
        )?;
        write!(f, "lock wait    {:?}", self.lock_wait)
    }
}

/// Blocks of one size class, summed over the shards.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClassUsage {
    /// Bytes per block of this class.
    pub block_size: usize,
    /// Blocks holding a record.
    pub used_blocks: u64,
    /// Blocks free for reuse.
    pub free_blocks: u64,
}

/// How the data area is used: per size class, and what is not carved into blocks yet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryUsage {
    /// Every size class, smallest first.
    pub classes: Vec<ClassUsage>,
    /// Bytes not yet carved into blocks (plus filler padding), free for any class.
    pub uncarved_bytes: u64,
}

impl fmt::Display for MemoryUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:>10} {:>12} {:>12} {:>14} {:>14}",
            "block", "used", "free", "used bytes", "free bytes"
        )?;
        for c in self.classes.iter().filter(|c| c.used_blocks + c.free_blocks > 0) {
            let size = c.block_size as u64;
            writeln!(
                f,
                "{:>10} {:>12} {:>12} {:>14} {:>14}",
                c.block_size,
                c.used_blocks,
                c.free_blocks,
                c.used_blocks * size,
                c.free_blocks * size
            )?;
        }
        write!(f, "uncarved {} bytes", self.uncarved_bytes)
    }
}

/// One inconsistency found by [`ClusterStore::check_integrity`](crate::ClusterStore::check_integrity).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntegrityProblem {
    /// The shard it was found in; `None` for the segment header.
    pub shard: Option<usize>,
    /// What is wrong.
    pub description: String,
}

/// The result of walking the whole segment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IntegrityReport {
    /// Every inconsistency found; empty when the segment is sound.
    pub problems: Vec<IntegrityProblem>,
    /// Shards walked.
    pub shards_checked: usize,
    /// Records indexed (live or expired).
    pub records: usize,
}

impl IntegrityReport {
    /// Whether no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for IntegrityReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} shards, {} records: ", self.shards_checked, self.records)?;
        if self.is_ok() {
            return write!(f, "no problem found");
        }
        write!(f, "{} problems", self.problems.len())?;
        for p in &self.problems {
            match p.shard {
                Some(s) => write!(f, "\n  shard {s}: {}", p.description)?,
                None => write!(f, "\n  header: {}", p.description)?,
            }
        }
        Ok(())
    }
}

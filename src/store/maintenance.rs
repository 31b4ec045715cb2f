//! What the master's coordinator and monitoring call, beside the request path: freeing
//! expired sessions (`purge_expired` and the coordinator's incremental sweep), eager repair
//! (`recover`), `check_integrity`, `memory` and lock-free `stats`.
#![forbid(unsafe_code)]

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::clock::now_ms;
use crate::format::header::{self};
use crate::format::layout::*;
use crate::shard::audit::{self};
use crate::shard::{self, Corrupt};
use crate::stats::{ClassUsage, IntegrityProblem, IntegrityReport, MemoryUsage, Stats};
use crate::Result;

use super::ClusterStore;

/// What one sweep tick did.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Swept {
    pub expired: u64,
    pub repaired: usize,
}

/// Index-slot rounds a sweep may spend on one shard per tick.
const SWEEP_ROUNDS: usize = 4;
/// How long the coordinator waits for a shard lock before skipping the shard this time: it
/// holds the fork gate, so it must not wait long. A dead holder's lock comes back at once
/// (`EOWNERDEAD`); only a live holder makes it wait.
const COORDINATOR_LOCK_WAIT: Duration = Duration::from_millis(10);

impl ClusterStore {
    /// Frees every expired session now, shard by shard, and returns how many. The
    /// coordinator already does this incrementally every `Config::sweep_interval`, and a
    /// full shard does it before evicting; this is for callers that want it done at once
    /// (tower-sessions' `ExpiredDeletion`). Each shard is locked for one pass over its index,
    /// skipped when its earliest expiry is still ahead; then, as the sweep does, an index its
    /// sessions fill at most 3/16 of is halved (while that holds).
    pub fn purge_expired(&self) -> Result<u64> {
        let shared = &self.shared;
        let mut total = 0;
        for shard in 0..shared.geo.shard_count {
            let now = now_ms();
            // Summed across a retry: a shrink that finds damage after the expiry pass makes
            // the shard repaired and the pass run again, finding nothing more.
            shared.with_shard_mut(shard, |g| {
                let removed = shard::expire_all(g, now)?;
                shared.count(g, STAT_EXPIRATIONS, removed);
                total += removed;
                shard::shrink_index(g).map(drop)
            })?;
        }
        Ok(total)
    }

    /// Walks the whole segment (header, then each shard under its lock) and reports every
    /// inconsistency found. A shard whose last lock holder died is repaired when its lock is
    /// taken, before it is checked.
    pub fn check_integrity(&self) -> IntegrityReport {
        let shared = &self.shared;
        let mut report = IntegrityReport::default();
        match header::decode(&shared.segment.read_header(), shared.segment.len()) {
            Ok((geo, _)) if geo == shared.geo => {}
            Ok(_) => report.problems.push(IntegrityProblem {
                shard: None,
                description: "the header's geometry changed since attach".into(),
            }),
            Err(e) => report
                .problems
                .push(IntegrityProblem { shard: None, description: format!("header: {e:?}") }),
        }
        for shard in 0..shared.geo.shard_count {
            let mut found = Vec::new();
            match shared.lock(shard) {
                Ok((g, repaired)) => {
                    report.records += audit::check(&g, shard, &mut found);
                    drop(g);
                    shared.report(shard, repaired);
                }
                Err(e) => found.push(e.to_string()),
            }
            report.shards_checked += 1;
            report.problems.extend(
                found
                    .into_iter()
                    .map(|description| IntegrityProblem { shard: Some(shard), description }),
            );
        }
        report
    }

    /// One incremental expiry sweep over every shard, as the coordinator runs it: each shard
    /// is locked in turn (which repairs it if its holder died), `budget` index slots are
    /// examined from its cursor, and up to `SWEEP_ROUNDS` rounds follow while more than a
    /// quarter of the records seen had expired (Redis's active expiry cycle). The lock is
    /// released between rounds.
    pub(crate) fn sweep(&self, budget: usize) -> Swept {
        let shared = &self.shared;
        let mut swept = Swept::default();
        for shard in 0..shared.geo.shard_count {
            for round in 0..SWEEP_ROUNDS {
                let Ok((mut g, repaired)) = shared.lock_within(shard, COORDINATOR_LOCK_WAIT) else {
                    break;
                };
                swept.repaired += usize::from(repaired.is_some());
                let now = now_ms();
                // The expiry pass, then the shrink; damage found by either is repaired here,
                // and the records the pass freed before it are counted all the same.
                let (scanned, done) = match shard::expire_scan(&mut g, now, budget) {
                    Ok(scanned) => (scanned, shard::shrink_index(&mut g).map(drop)),
                    Err(corrupt) => (shard::Scanned::default(), Err(corrupt)),
                };
                shared.count(&g, STAT_EXPIRATIONS, scanned.removed);
                swept.expired += scanned.removed;
                if let Err(Corrupt(what)) = done {
                    let fixed = shared.repair(&mut g, shard, what);
                    drop(g);
                    shared.report(shard, repaired);
                    shared.report(shard, Some(fixed));
                    break;
                }
                shared.count(&g, STAT_SWEEPS, u64::from(round == 0));
                shared.mirror(&g);
                drop(g);
                shared.report(shard, repaired);
                if scanned.removed * 4 <= scanned.seen || scanned.seen == 0 {
                    break;
                }
            }
        }
        swept
    }

    /// Locks every shard in turn, waiting up to the lock timeout, and rebuilds it whatever
    /// its state (`shard::audit::rebuild`): a master adopting a segment trusts nothing that a
    /// process of the earlier one may have left half done. Returns the records kept. Each
    /// rebuild counts as a recovery; none is logged but the ones a dead holder made owed.
    pub(crate) fn repair_all(&self, cause: &'static str) -> Result<usize> {
        let shared = &self.shared;
        let mut kept = 0;
        for shard in 0..shared.geo.shard_count {
            let (mut guard, owed) = shared.lock(shard)?;
            kept += shared.repair(&mut guard, shard, cause).kept;
            drop(guard);
            shared.report(shard, owed);
        }
        Ok(kept)
    }

    /// Locks every shard once, so that any shard whose lock holder died is repaired now.
    /// Returns how many were. A shard a live process holds for more than a few milliseconds
    /// is skipped: its holder is not dead.
    pub(crate) fn recover(&self) -> usize {
        let shared = &self.shared;
        let mut repaired = 0;
        for shard in 0..shared.geo.shard_count {
            if let Ok((g, fixed)) = shared.lock_within(shard, COORDINATOR_LOCK_WAIT) {
                drop(g);
                repaired += usize::from(fixed.is_some());
                shared.report(shard, fixed);
            }
        }
        repaired
    }

    /// Used and free blocks of every size class, and the bytes not carved yet, summed over
    /// the shards. Walks each shard's blocks under its lock, one shard at a time: for
    /// monitoring, not for the request path.
    pub fn memory(&self) -> Result<MemoryUsage> {
        let geo = &self.shared.geo;
        let mut usage = MemoryUsage {
            classes: geo
                .class_sizes
                .iter()
                .map(|&size| ClassUsage { block_size: size as usize, ..ClassUsage::default() })
                .collect(),
            uncarved_bytes: 0,
        };
        for shard in 0..geo.shard_count {
            let (uncarved, per_class) = self.shared.with_shard(shard, |g| {
                let walk = crate::shard::alloc::walk(g);
                let mut per_class = vec![(0u64, 0u64); geo.class_sizes.len()];
                let mut fillers = 0;
                for b in &walk.blocks {
                    match per_class.get_mut(b.class as usize) {
                        Some((used, _)) if b.used => *used += 1,
                        Some((_, free)) => *free += 1,
                        None => fillers += b.size,
                    }
                }
                Ok(((geo.data_bytes - walk.end + fillers) as u64, per_class))
            })?;
            usage.uncarved_bytes += uncarved;
            for (c, (used, free)) in usage.classes.iter_mut().zip(per_class) {
                c.used_blocks += used;
                c.free_blocks += free;
            }
        }
        Ok(usage)
    }

    /// Counters and occupancy, summed over the shards. Reads only atomics: takes no lock,
    /// so it neither waits for nor repairs anything.
    pub fn stats(&self) -> Result<Stats> {
        let shared = &self.shared;
        let mut stats = Stats::default();
        let mut lock_wait_ns = 0;
        for shard in 0..shared.geo.shard_count {
            let read = |which| shared.segment.stat(&shared.geo, shard, which).load(Relaxed);
            stats.sets += read(STAT_SETS);
            stats.destroys += read(STAT_DESTROYS);
            stats.evictions += read(STAT_EVICTIONS);
            stats.expirations += read(STAT_EXPIRATIONS);
            stats.recoveries += read(STAT_RECOVERIES);
            stats.corrupt_dropped += read(STAT_CORRUPT_DROPPED);
            stats.sweeps += read(STAT_SWEEPS);
            stats.records += read(STAT_RECORDS);
            stats.used_bytes += read(STAT_USED_BYTES);
            stats.data_bytes += shared.geo.data_bytes as u64;
            let grown =
                shared.segment.hint_u32(shared.geo.shard_offset(shard) + SHARD_STATE + S_GROWN);
            stats.index_slots += crate::shard::index::active_of(grown, &shared.geo) as u64;
            stats.index_capacity += shared.geo.slots as u64;
            lock_wait_ns += read(STAT_LOCK_WAIT_NS);
        }
        stats.lock_wait = Duration::from_nanos(lock_wait_ns);
        for line in 0..CPU_LINES {
            let read = |which| shared.segment.read_counter(line, which).load(Relaxed);
            stats.hits += read(RC_HITS);
            stats.misses += read(RC_MISSES);
            stats.locked_reads += read(RC_LOCKED_READS);
        }
        Ok(stats)
    }
}

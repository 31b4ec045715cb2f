//! The locked-operation plumbing under every store operation: taking a shard's lock, the
//! repair a lock may owe first (`shard::audit::rebuild`), running an operation and retrying
//! it once after a repair, the counters kept under the lock, and reporting repairs once the
//! lock is released.
#![forbid(unsafe_code)]

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::error::StoreError;
use crate::format::header::Settings;
use crate::format::layout::*;
use crate::lock::{LockFailure, ShardGuard};
use crate::segment::Segment;
use crate::shard::audit::{self};
use crate::shard::{Corrupt, Freed};
use crate::Result;

/// A repair made while a lock was held, reported once the lock is released. Boxed: repairs
/// are rare, and `lock` returns it beside the guard on every write, where a smaller return
/// value is cheaper to move.
#[derive(Clone, Copy, Debug)]
pub(super) struct Repaired {
    cause: &'static str,
    pub(super) kept: usize,
    dropped: usize,
}

/// Everything a handle needs: the mapping and what its header says.
pub(crate) struct Shared {
    pub segment: Segment,
    pub geo: Geometry,
    pub settings: Settings,
}

impl Shared {
    /// Read counter `which` (`RC_*`) of the line of the CPU this thread runs on: a read adds
    /// to it with `fetch_add`, which keeps the line in that CPU's cache while the thread
    /// stays there (two threads on one CPU, or one moved meanwhile, share a line correctly,
    /// only more slowly).
    #[inline]
    pub(crate) fn read_counter(&self, which: usize) -> &std::sync::atomic::AtomicU64 {
        let cpu = nix::sched::sched_getcpu().unwrap_or(0);
        self.segment.read_counter(cpu % CPU_LINES, which)
    }

    /// Adds `n` to counter `which` of the shard whose lock `held` proves is held. The lock
    /// serialises every writer of these counters, so a plain load and store (no locked
    /// instruction) is exact, and readers without the lock still see whole values.
    pub(super) fn count(&self, held: &ShardGuard<'_>, which: usize, n: u64) {
        if n > 0 {
            let counter = self.segment.stat(&self.geo, held.shard(), which);
            counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
        }
    }

    /// Copies the shard's record count and used bytes into its stats line, so that `stats()`
    /// reads them without locking. Called at the end of every locked operation that may
    /// change them.
    pub(super) fn mirror(&self, held: &ShardGuard<'_>) {
        let set =
            |which, value| self.segment.stat(&self.geo, held.shard(), which).store(value, Relaxed);
        set(STAT_RECORDS, u64::from(held.u32_at(S_LIVE)));
        set(STAT_USED_BYTES, held.u64_at(S_USED_BYTES));
    }

    pub(super) fn count_freed(&self, held: &ShardGuard<'_>, freed: Freed) {
        self.count(held, STAT_EXPIRATIONS, freed.expired);
        self.count(held, STAT_EVICTIONS, freed.evicted);
    }

    /// Locks a shard, repairing it first if its last holder died or a repair is pending.
    #[inline]
    pub(super) fn lock(&self, shard: usize) -> Result<(ShardGuard<'_>, Option<Box<Repaired>>)> {
        self.lock_within(shard, Duration::from_millis(self.settings.lock_timeout_ms))
    }

    /// `lock` with its own timeout.
    #[inline]
    pub(super) fn lock_within(
        &self,
        shard: usize,
        timeout: Duration,
    ) -> Result<(ShardGuard<'_>, Option<Box<Repaired>>)> {
        let (mut g, acquired) = ShardGuard::lock(&self.segment, &self.geo, shard, timeout)
            .map_err(|failure| match failure {
                LockFailure::Timeout(waited) => StoreError::LockTimeout { shard, waited },
                LockFailure::Errno(errno) => StoreError::Lock { shard, errno },
            })?;
        self.count(&g, STAT_LOCK_WAIT_NS, acquired.waited_ns);
        let repaired = if acquired.owner_died {
            Some(self.repair(&mut g, shard, "a process died holding the shard lock"))
        } else if acquired.kind_restored {
            Some(self.repair(&mut g, shard, "a stray write changed the shard mutex's kind"))
        } else if g.u32_at(S_DIRTY) != 0 {
            Some(self.repair(&mut g, shard, "a previous repair or write did not finish"))
        } else {
            None
        };
        g.mark_consistent();
        Ok((g, repaired))
    }

    /// Rebuilds a locked shard. The dirty word stays set until the rebuild is complete, so
    /// a repairer that dies is followed by another repair.
    #[cold]
    #[inline(never)]
    pub(super) fn repair(
        &self,
        guard: &mut ShardGuard<'_>,
        shard: usize,
        cause: &'static str,
    ) -> Box<Repaired> {
        guard.set_u32(S_DIRTY, 1);
        let rebuilt = audit::rebuild(guard, shard);
        guard.set_u32(S_DIRTY, 0);
        self.mirror(guard);
        self.count(guard, STAT_RECOVERIES, 1);
        self.count(guard, STAT_CORRUPT_DROPPED, rebuilt.dropped as u64);
        Box::new(Repaired { cause, kept: rebuilt.kept, dropped: rebuilt.dropped })
    }

    /// Reports a repair; called with no lock held, since a tracing subscriber is user code.
    pub(super) fn report(&self, shard: usize, repaired: Option<Box<Repaired>>) {
        if let Some(r) = repaired {
            tracing::warn!(
                namespace = %self.settings.name,
                shard,
                kept = r.kept,
                dropped = r.dropped,
                cause = r.cause,
                "shard repaired"
            );
        }
    }

    /// Runs `op`, which may add or remove records, on a locked shard, then mirrors the
    /// shard's occupancy into its stats line; see [`with_shard`](Self::with_shard).
    pub(super) fn with_shard_mut<R>(
        &self,
        shard: usize,
        op: impl FnMut(&mut ShardGuard<'_>) -> Result<R, Corrupt>,
    ) -> Result<R> {
        self.run_locked(shard, true, op)
    }

    /// Runs `op` on a locked shard. Corruption found by `op` is repaired and `op` retried
    /// once; if the retry finds corruption too, the shard is repaired again and the call
    /// fails with `Corrupted`.
    pub(super) fn with_shard<R>(
        &self,
        shard: usize,
        op: impl FnMut(&mut ShardGuard<'_>) -> Result<R, Corrupt>,
    ) -> Result<R> {
        self.run_locked(shard, false, op)
    }

    pub(super) fn run_locked<R>(
        &self,
        shard: usize,
        mirror: bool,
        mut op: impl FnMut(&mut ShardGuard<'_>) -> Result<R, Corrupt>,
    ) -> Result<R> {
        let (mut g, mut repaired) = self.lock(shard)?;
        let result = op(&mut g).or_else(|Corrupt(what)| {
            repaired = Some(self.repair(&mut g, shard, what));
            op(&mut g).map_err(|Corrupt(what)| {
                repaired = Some(self.repair(&mut g, shard, what));
                StoreError::Corrupted { shard, what }
            })
        });
        if mirror {
            self.mirror(&g);
        }
        drop(g);
        self.report(shard, repaired);
        result
    }

    /// Repairs a shard in which a copied-out record failed its CRC. A `get` that copied it
    /// (`was_hit`) is recounted as the miss it became.
    pub(super) fn repair_damaged(&self, shard: usize, was_hit: bool) -> Result<()> {
        let (mut g, first) = self.lock(shard)?;
        let repaired = self.repair(&mut g, shard, "a record failed its CRC");
        if was_hit {
            let hits = self.read_counter(RC_HITS);
            let _ = hits.fetch_update(Relaxed, Relaxed, |h| Some(h.saturating_sub(1)));
            self.read_counter(RC_MISSES).fetch_add(1, Relaxed);
        }
        drop(g);
        self.report(shard, first);
        self.report(shard, Some(repaired));
        Ok(())
    }
}

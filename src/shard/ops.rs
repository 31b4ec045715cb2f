//! The store operations on one locked shard: lookup, read, publish-last write, removal,
//! touch, expiry cleanup and eviction. Every function takes the `ShardGuard` as proof that
//! the lock is held, and does only memory work: no syscall, no serialization, and no
//! allocation beyond the caller's output buffer except on the rare merge path (a block walk).
//!
//! Offsets read from shared memory are validated (`record::view`, `alloc::pop`) before use;
//! anything out of place comes back as [`Corrupt`], on which the store layer repairs the shard
//! (`audit::rebuild`) and retries, so corruption is a counted repair, never a panic.
#![forbid(unsafe_code)]

use crate::clock::Clock;
use crate::config::Eviction;
use crate::fault::{self, FaultPoint};
use crate::format::layout::*;
use crate::lock::{OptimisticRead, ShardGuard, ShardView};
use crate::shard::index::{self, Probe, Slot};
use crate::shard::record::{self, NewRecord, Rec};
use crate::shard::{alloc, Corrupt};

/// Index slots probed per write for opportunistic expiry cleanup.
const CLEANUP_PER_WRITE: usize = 2;
/// Records sampled per LRU eviction (Redis's approximated LRU uses 5 by default).
const LRU_SAMPLES: usize = 8;

/// Records freed by an operation, for the statistics.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Freed {
    pub expired: u64,
    pub evicted: u64,
}

/// A value copied out by [`get`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Hit {
    /// The CRC stored in the record.
    pub crc: u32,
    /// The CRC of the record as copied, if the copy computed it (an optimistic read on the
    /// SIMD path); otherwise the caller computes it from the copy.
    pub computed: Option<u32>,
    pub seq: u64,
}

/// The condition a write is made under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expect {
    /// Unconditional upsert.
    Any,
    /// Only if no live record has this key.
    Absent,
    /// Only if a live record has this key.
    Present,
    /// Only if the live record has this sequence number.
    Seq(u64),
}

/// What became of a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Written {
    Done,
    /// No room, even after cleanup (and eviction, under `Eviction::Lru`).
    Full {
        needed: usize,
    },
    /// The `Expect` condition did not hold; nothing was written.
    Conflict,
}

fn live(guard: &ShardGuard<'_>) -> usize {
    guard.u32_at(S_LIVE) as usize
}

fn max_live(geo: &Geometry) -> usize {
    geo.slots / MAX_LOAD_DEN * MAX_LOAD_NUM
}

/// The stamp of a new write: the shard clock, advanced. Reads do not advance it: a read
/// stamps its slot with the clock as it is, as recent as the latest write.
fn next_stamp(guard: &mut ShardGuard<'_>) -> u32 {
    let clock = guard.u32_at(S_CLOCK).wrapping_add(1);
    guard.set_u32(S_CLOCK, clock);
    clock
}

fn next_seq(guard: &mut ShardGuard<'_>) -> u64 {
    let seq = guard.u64_at(S_NEXT_SEQ).wrapping_add(1);
    guard.set_u64(S_NEXT_SEQ, seq);
    seq
}

#[inline]
fn rec_at(view: &impl ShardView, block: u32) -> Result<Rec, Corrupt> {
    record::view(view, block).ok_or(Corrupt("an index slot refers to no valid record"))
}

/// Where a key is in the index.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Lookup {
    /// In slot `index`, whose record (validated) and expiry are given.
    Found { index: usize, rec: Rec, expires_ms: u64 },
    /// Absent; this empty slot ends its probe sequence.
    Vacant(usize),
}

impl Lookup {
    /// The record, if the key is present and has not expired.
    pub(crate) fn live(self, now: Clock) -> Option<Rec> {
        match self {
            Lookup::Found { rec, expires_ms, .. } if now.live(expires_ms) => Some(rec),
            _ => None,
        }
    }
}

/// Finds `key` in the index, handing back the record validated on the way.
#[inline]
pub(crate) fn find(view: &impl ShardView, hash: u64, key: &[u8]) -> Result<Lookup, Corrupt> {
    let mut matched = None;
    let probe = index::probe(view, hash, |view, block| {
        let rec = rec_at(view, block)?;
        let is = rec.is(view, hash, key);
        if is {
            matched = Some(rec);
        }
        Ok(is)
    })?;
    Ok(match (probe, matched) {
        (Probe::Found(index), Some(rec)) => {
            Lookup::Found { index, rec, expires_ms: index::read(view, index).expires_ms }
        }
        (Probe::Vacant(index), _) => Lookup::Vacant(index),
        // The probe reports Found only when the closure matched, which sets `matched`.
        (Probe::Found(_), None) => return Err(Corrupt("the probe matched no record")),
    })
}

/// A live record found and its value copied out: what [`get`] and [`peek`] share.
struct Copied {
    hit: Hit,
    /// Its index slot.
    index: usize,
    /// The shard clock, and whether the slot's stamp is owed it ([`stale_stamp`]).
    clock: u32,
    restamp: bool,
}

/// Whether a read of a record stamped `stamp` stores the clock in its slot: only once the
/// stamp has fallen more than an eighth of the shard's records behind the clock. A record
/// read often is then stamped at most once per that many writes to its shard, so reads of
/// hot records store next to nothing; eviction, which picks the oldest stamp among its
/// samples, tells apart only records that many writes apart.
#[inline]
fn stale_stamp(view: &impl ShardView, stamp: u32, clock: u32) -> bool {
    clock.wrapping_sub(stamp) > view.u32_at(S_LIVE) / 8
}

/// Finds the live record of `key` and appends its value to `out`. Stores nothing.
#[inline]
fn copy_live(
    view: &impl ShardView,
    hash: u64,
    key: &[u8],
    now: Clock,
    out: &mut Vec<u8>,
) -> Result<Option<Copied>, Corrupt> {
    let Lookup::Found { index, rec, expires_ms } = find(view, hash, key)? else {
        return Ok(None);
    };
    if !now.live(expires_ms) {
        return Ok(None);
    }
    rec.prefetch_value(view);
    let clock = view.u32_at(S_CLOCK);
    let restamp = stale_stamp(view, index::stamp(view, index), clock);
    let computed = rec.append_value(view, out, || record::checksum_head(hash, key, rec.value_len));
    let hit = Hit { crc: rec.crc(view), computed, seq: rec.seq(view) };
    Ok(Some(Copied { hit, index, clock, restamp }))
}

/// Appends the live value of `key` to `out`, stamping its slot as recently used. A miss
/// (absent or expired) writes nothing.
pub(crate) fn get(
    guard: &mut ShardGuard<'_>,
    hash: u64,
    key: &[u8],
    now: Clock,
    out: &mut Vec<u8>,
) -> Result<Option<Hit>, Corrupt> {
    let Some(c) = copy_live(guard, hash, key, now, out)? else { return Ok(None) };
    if c.restamp {
        index::set_stamp(guard, c.index, c.clock);
    }
    Ok(Some(c.hit))
}

/// A stamp an optimistic read owes its slot once validated: `stamp` at guard offset `at`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Restamp {
    pub at: usize,
    pub stamp: u32,
}

/// [`get`] for an optimistic reader: the same lookup over a snapshot that may be torn, so
/// nothing it returns counts until the caller has validated the read. Writes nothing; the
/// slot's new stamp, if it needs one, is handed back for the caller to store after
/// validating. A shard owed a repair is reported as `Corrupt`, which sends the caller to the
/// lock (and the repair).
#[inline]
pub(crate) fn peek(
    reader: &OptimisticRead<'_>,
    hash: u64,
    key: &[u8],
    now: Clock,
    out: &mut Vec<u8>,
) -> Result<Option<(Hit, Option<Restamp>)>, Corrupt> {
    let geo = reader.geo();
    if reader.u32_at(S_DIRTY) != 0 {
        return Err(Corrupt("a repair is owed"));
    }
    Ok(copy_live(reader, hash, key, now, out)?.map(|c| {
        let restamp =
            c.restamp.then(|| Restamp { at: index::stamp_at(geo, c.index), stamp: c.clock });
        (c.hit, restamp)
    }))
}

/// Writes `new` publish-last: into a fresh block, then the index slot is switched to it,
/// then the old block is freed.
pub(crate) fn put(
    guard: &mut ShardGuard<'_>,
    new: &NewRecord<'_>,
    expect: Expect,
    policy: Eviction,
    now: Clock,
    freed: &mut Freed,
) -> Result<Written, Corrupt> {
    let geo = guard.geo();
    fault::hit(FaultPoint::LockHeld);
    let mut lookup = find(guard, new.hash, new.key)?;
    let conflict = match (expect, lookup.live(now)) {
        (Expect::Any, _) => false,
        (Expect::Absent, current) => current.is_some(),
        (Expect::Present, current) => current.is_none(),
        (Expect::Seq(seq), Some(rec)) => rec.seq(guard) != seq,
        (Expect::Seq(_), None) => true,
    };
    if conflict {
        return Ok(Written::Conflict);
    }
    let class = new.class;
    let protect = match lookup {
        Lookup::Found { rec, .. } => Some(block_ref(rec.off)),
        Lookup::Vacant(_) => None,
    };
    let Some((off, moved)) = make_room(guard, class, protect, policy, now, freed)? else {
        return rewrite_through_spare(guard, new);
    };
    // A new key: grow the index first if it would be loaded past its limit.
    let grew = protect.is_none() && index::grow(guard, live(guard) + 1);
    if moved || grew {
        lookup = find(guard, new.hash, new.key)?;
    }
    let seq = next_seq(guard);
    let stamp = next_stamp(guard);
    lower_min_expires(guard, new.expires_ms);
    record::write(guard, off, new, seq);
    fault::hit(FaultPoint::BeforePublish);
    let block = block_ref(off);
    match lookup {
        Lookup::Found { index, rec: old, .. } => {
            index::set_stamp(guard, index, stamp);
            index::replace(guard, index, block, new.expires_ms);
            fault::hit(FaultPoint::AfterPublish);
            add_used(guard, -(old.size(geo) as i64));
            alloc::free(guard, old.off);
        }
        Lookup::Vacant(i) => {
            let slot = Slot { block, tag: index::tag_of(new.hash), expires_ms: new.expires_ms };
            index::insert(guard, i, slot, stamp);
            guard.set_u32(S_LIVE, live(guard) as u32 + 1);
        }
    }
    add_used(guard, record::block_size(guard, off) as i64);
    // The write is published: corruption found by the cleanup must not make the caller
    // retry it. The shard is marked for repair by its next locker instead.
    match expire_scan(guard, now.floor(), CLEANUP_PER_WRITE) {
        Ok(scanned) => freed.expired += scanned.removed,
        Err(_) => guard.set_u32(S_DIRTY, 1),
    }
    Ok(Written::Done)
}

/// A write that found no block (a full shard): a rewrite whose record fits the old record's
/// block still succeeds. The new record is written into the spare block and published there,
/// then copied over the old block and published again, and the spare given back; a process
/// killed in between leaves the new record whole in the spare, and the repair moves it out
/// (`audit::rebuild`). A new key, or a record grown past its block, is `Full`.
fn rewrite_through_spare(
    guard: &mut ShardGuard<'_>,
    new: &NewRecord<'_>,
) -> Result<Written, Corrupt> {
    let geo = guard.geo();
    let full = Written::Full { needed: geo.class_sizes[new.class] as usize };
    // Looked up again: making room may have moved slots, or freed the key's expired record.
    let Lookup::Found { index, rec: old, .. } = find(guard, new.hash, new.key)? else {
        return Ok(full);
    };
    if new.class > old.class {
        return Ok(full);
    }
    let Some(spare) = alloc::lend_spare(guard) else { return Ok(full) };
    let seq = next_seq(guard);
    let stamp = next_stamp(guard);
    lower_min_expires(guard, new.expires_ms);
    record::write(guard, spare, new, seq);
    index::set_stamp(guard, index, stamp);
    index::replace(guard, index, block_ref(spare), new.expires_ms);
    fault::hit(FaultPoint::InSpare);
    record::write(guard, old.off, new, seq);
    index::replace(guard, index, block_ref(old.off), new.expires_ms);
    alloc::free(guard, spare);
    Ok(Written::Done)
}

fn add_used(guard: &mut ShardGuard<'_>, delta: i64) {
    let used = guard.u64_at(S_USED_BYTES).wrapping_add_signed(delta);
    guard.set_u64(S_USED_BYTES, used);
}

/// Finds a block for class `class` and, when `protect` is `None` (a new key), an index slot
/// under the load limit. In order: free every expired record of the shard (skipped while
/// `min_expires` shows none can be); under LRU, evict sampled least-recently-used records
/// whose blocks are large enough; then merge a run of adjacent blocks into one of the
/// right class, evicting the fewest records (under Refuse, only runs of free blocks). Never
/// frees the `protect`ed block. Returns the block and whether any slot moved.
fn make_room(
    guard: &mut ShardGuard<'_>,
    class: usize,
    protect: Option<u32>,
    policy: Eviction,
    now: Clock,
    freed: &mut Freed,
) -> Result<Option<(usize, bool)>, Corrupt> {
    let geo = guard.geo();
    let mut moved = false;
    let mut expired_done = false;
    loop {
        let slot_free = protect.is_some() || live(guard) < max_live(geo);
        if slot_free {
            if let Some(off) = alloc::alloc(guard, class)? {
                return Ok(Some((off, moved)));
            }
        }
        if !expired_done {
            expired_done = true;
            let expired = expire_all(guard, now.precise())?;
            freed.expired += expired;
            if expired > 0 {
                moved = true;
                continue;
            }
        }
        let lru = policy == Eviction::Lru;
        let min_class = if slot_free { class } else { 0 };
        if lru {
            if let Some(victim) = lru_victim(guard, min_class, protect)? {
                remove_slot(guard, victim)?;
                freed.evicted += 1;
                moved = true;
                continue;
            }
        }
        if !slot_free {
            return Ok(None);
        }
        let protect_off = protect.and_then(block_offset);
        let mut evicted = 0;
        let merged = alloc::merge(guard, class, lru, protect_off, |guard, off| {
            evict_block(guard, off)?;
            evicted += 1;
            Ok(())
        })?;
        freed.evicted += evicted;
        return Ok(merged.map(|off| (off, moved || evicted > 0)));
    }
}

/// Removes the record in the used block at `off` from the index and frees the block.
fn evict_block(guard: &mut ShardGuard<'_>, off: usize) -> Result<(), Corrupt> {
    let target = block_ref(off);
    let hash = rec_at(guard, target)?.hash(guard);
    match index::probe(guard, hash, |_, block| Ok(block == target))? {
        Probe::Found(i) => remove_slot(guard, i),
        Probe::Vacant(_) => Err(Corrupt("a used block is not in the index")),
    }
}

/// Samples used slots from a pseudo-random start and returns the least recently used one
/// whose block is of class `min_class` or larger, other than `protect`.
fn lru_victim(
    guard: &ShardGuard<'_>,
    min_class: usize,
    protect: Option<u32>,
) -> Result<Option<usize>, Corrupt> {
    let slots = index::active(guard);
    let mask = slots - 1;
    let clock = guard.u32_at(S_CLOCK);
    let start = clock.wrapping_mul(0x9E37_79B9) as usize & mask;
    let mut best: Option<(u32, usize)> = None;
    let mut sampled = 0;
    for step in 0..slots {
        let i = (start + step) & mask;
        let slot = index::read(guard, i);
        if slot.block == 0 || Some(slot.block) == protect {
            continue;
        }
        let rec = rec_at(guard, slot.block)?;
        if rec.class < min_class {
            continue;
        }
        let age = clock.wrapping_sub(index::stamp(guard, i));
        if best.is_none_or(|(oldest, _)| age > oldest) {
            best = Some((age, i));
        }
        sampled += 1;
        if sampled == LRU_SAMPLES {
            break;
        }
    }
    Ok(best.map(|(_, i)| i))
}

/// Removes the record in used slot `pos` and frees its block.
fn remove_slot(guard: &mut ShardGuard<'_>, pos: usize) -> Result<(), Corrupt> {
    let geo = guard.geo();
    let rec = rec_at(guard, index::read(guard, pos).block)?;
    index::remove(guard, pos);
    let remaining = live(guard).saturating_sub(1);
    guard.set_u32(S_LIVE, remaining as u32);
    if remaining == 0 {
        alloc::reset(guard);
        guard.set_u64(S_MIN_EXPIRES, u64::MAX);
    } else {
        add_used(guard, -(rec.size(geo) as i64));
        alloc::free(guard, rec.off);
    }
    Ok(())
}

/// What an incremental expiry scan saw.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Scanned {
    /// Expired records freed.
    pub removed: u64,
    /// Records looked at (expired or not).
    pub seen: u64,
}

/// Examines up to `budget` slots from the shard's cleanup cursor, freeing expired records;
/// none while `min_expires` (a lower bound of every expiry in the shard) is still ahead.
pub(crate) fn expire_scan(
    guard: &mut ShardGuard<'_>,
    now: u64,
    budget: usize,
) -> Result<Scanned, Corrupt> {
    let mut scanned = Scanned::default();
    if now < guard.u64_at(S_MIN_EXPIRES) {
        return Ok(scanned);
    }
    let mask = index::active(guard) - 1;
    let mut cursor = guard.u32_at(S_CURSOR) as usize & mask;
    for _ in 0..budget {
        let slot = index::read(guard, cursor);
        if slot.block != 0 {
            scanned.seen += 1;
        }
        if slot.block != 0 && slot.expires_ms <= now {
            // The backward shift may move a later slot into `cursor`: look at it again.
            remove_slot(guard, cursor)?;
            scanned.removed += 1;
        } else {
            cursor = (cursor + 1) & mask;
        }
    }
    guard.set_u32(S_CURSOR, cursor as u32);
    Ok(scanned)
}

/// Frees every expired record of the shard, unless `min_expires` shows there is none, and
/// records the earliest expiry left. One pass from an empty slot: a removal shifts only
/// later slots back into the position just examined, which is examined again.
pub(crate) fn expire_all(guard: &mut ShardGuard<'_>, now: u64) -> Result<u64, Corrupt> {
    if now < guard.u64_at(S_MIN_EXPIRES) {
        return Ok(0);
    }
    let slots = index::active(guard);
    let mask = slots - 1;
    let Some(empty) = (0..slots).find(|&i| index::read(guard, i).block == 0) else {
        return Err(Corrupt("index has no empty slot"));
    };
    let (mut i, mut examined, mut removed, mut earliest) = ((empty + 1) & mask, 0, 0, u64::MAX);
    while examined < slots {
        let slot = index::read(guard, i);
        if slot.block != 0 && slot.expires_ms <= now {
            remove_slot(guard, i)?;
            removed += 1;
            continue;
        }
        if slot.block != 0 {
            earliest = earliest.min(slot.expires_ms);
        }
        i = (i + 1) & mask;
        examined += 1;
    }
    guard.set_u64(S_MIN_EXPIRES, earliest);
    Ok(removed)
}

/// Halves the shard's active index slots while its records would fill at most
/// `SHRINK_LOAD_NUM / SHRINK_LOAD_DEN` of them (`index::shrink`); the expiry sweep and
/// `purge_expired` call it after freeing records. Returns whether it shrank.
pub(crate) fn shrink_index(guard: &mut ShardGuard<'_>) -> Result<bool, Corrupt> {
    index::shrink(guard, live(guard))
}

/// Keeps `min_expires` a lower bound of every expiry in the shard as a record expiring at
/// `expires_ms` is written: lowers it to that, or sets it to that when the shard holds no
/// record yet, so that a fresh shard's 0 ("unknown") does not keep every write scanning for
/// expired records until the first sweep.
fn lower_min_expires(guard: &mut ShardGuard<'_>, expires_ms: u64) {
    if live(guard) == 0 || expires_ms < guard.u64_at(S_MIN_EXPIRES) {
        guard.set_u64(S_MIN_EXPIRES, expires_ms);
    }
}

/// What became of a removal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Removed {
    /// A live record was removed.
    Live,
    /// No live record had the key (an expired one is removed, and counted in `freed`).
    NotLive,
    /// The `Expect` condition did not hold; nothing was removed.
    Conflict,
}

/// Removes `key` if `expect` holds.
pub(crate) fn remove(
    guard: &mut ShardGuard<'_>,
    hash: u64,
    key: &[u8],
    expect: Expect,
    now: Clock,
    freed: &mut Freed,
) -> Result<Removed, Corrupt> {
    let Lookup::Found { index: i, rec, expires_ms } = find(guard, hash, key)? else {
        return Ok(if matches!(expect, Expect::Seq(_)) {
            Removed::Conflict
        } else {
            Removed::NotLive
        });
    };
    let was_live = now.live(expires_ms);
    let holds = match expect {
        Expect::Any => true,
        Expect::Absent => !was_live,
        Expect::Present => was_live,
        Expect::Seq(seq) => was_live && rec.seq(guard) == seq,
    };
    if !holds {
        return Ok(Removed::Conflict);
    }
    remove_slot(guard, i)?;
    if was_live {
        Ok(Removed::Live)
    } else {
        freed.expired += 1;
        Ok(Removed::NotLive)
    }
}

/// Sets a live record's expiry; its data is unchanged. Returns whether it was live.
pub(crate) fn touch(
    guard: &mut ShardGuard<'_>,
    hash: u64,
    key: &[u8],
    now: Clock,
    expires_ms: u64,
) -> Result<bool, Corrupt> {
    let Lookup::Found { index: i, rec, expires_ms: old } = find(guard, hash, key)? else {
        return Ok(false);
    };
    if !now.live(old) {
        return Ok(false);
    }
    lower_min_expires(guard, expires_ms);
    rec.set_expires(guard, expires_ms);
    index::set_expires(guard, i, expires_ms);
    let stamp = next_stamp(guard);
    index::set_stamp(guard, i, stamp);
    Ok(true)
}

/// Calls `each` with every live record of the shard.
pub(crate) fn for_each_live(
    guard: &ShardGuard<'_>,
    now: u64,
    mut each: impl FnMut(&ShardGuard<'_>, Rec),
) -> Result<(), Corrupt> {
    for i in 0..index::active(guard) {
        let slot = index::read(guard, i);
        if slot.block != 0 && slot.expires_ms > now {
            each(guard, rec_at(guard, slot.block)?);
        }
    }
    Ok(())
}

/// Number of live records: an index scan, no record is read.
pub(crate) fn count_live(guard: &ShardGuard<'_>, now: u64) -> usize {
    (0..index::active(guard))
        .map(|i| index::read(guard, i))
        .filter(|s| s.block != 0 && s.expires_ms > now)
        .count()
}

/// Removes every record.
pub(crate) fn clear(guard: &mut ShardGuard<'_>) {
    index::clear(guard);
    alloc::reset(guard);
    guard.set_u32(S_LIVE, 0);
    guard.set_u32(S_CURSOR, 0);
    guard.set_u64(S_MIN_EXPIRES, u64::MAX);
}

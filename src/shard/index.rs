//! The open-addressing index of a shard: linear probing over a power-of-two array of slots,
//! with backward-shift deletion (no tombstones, so lookups never slow down with churn).
//!
//! A shard uses the first [`active`] slots of its array, which grow with its records (see
//! [`grow`]) and shrink again once the expiry sweep finds them sparse (see [`shrink`]). A
//! slot's home is `tag & (active - 1)`, the tag being the low 32 bits of the key
//! hash (the shard is chosen by the high bits). Invariants: every used slot is reachable from
//! its home without crossing an empty slot, and every slot past `active` is empty. An empty
//! slot has `block == 0`; its other fields are meaningless. Knuth, TAOCP vol. 3, 6.4,
//! Algorithm R, is the deletion algorithm.
//!
//! Each slot has a recency stamp in the parallel stamp array, which moves with the slot. It
//! lives outside the slot because optimistic readers store to it without the lock (see
//! `lock::optimistic`); a stamp is advisory, and no invariant depends on it.
//!
//! Lookups ([`read`], [`probe`]) take any [`ShardView`]: under the lock, or optimistic.
#![forbid(unsafe_code)]

use crate::fault::{self, FaultPoint};
use crate::format::layout::*;
use crate::lock::{ShardGuard, ShardView};
use crate::shard::Corrupt;

/// One index slot, copied out.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Slot {
    pub block: u32,
    pub tag: u32,
    pub expires_ms: u64,
}

/// Result of a probe.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Probe {
    /// The key is in this slot.
    Found(usize),
    /// The key is absent; this empty slot ends its probe sequence.
    Vacant(usize),
}

#[inline]
pub(crate) fn slot_at(geo: &Geometry, pos: usize) -> usize {
    debug_assert!(pos < geo.slots);
    geo.index_start() + pos * SLOT_SIZE
}

/// Guard offset of slot `pos`'s recency stamp.
#[inline]
pub(crate) fn stamp_at(geo: &Geometry, pos: usize) -> usize {
    debug_assert!(pos < geo.slots);
    geo.stamps_start() + pos * STAMP_SIZE
}

/// Slot `pos`'s recency stamp.
#[inline]
pub(crate) fn stamp(view: &impl ShardView, pos: usize) -> u32 {
    let geo = view.geo();
    view.stamp_at(stamp_at(geo, pos))
}

#[inline]
pub(crate) fn set_stamp(guard: &mut ShardGuard<'_>, pos: usize, stamp: u32) {
    let geo = guard.geo();
    guard.set_stamp(stamp_at(geo, pos), stamp);
}

#[inline]
pub(crate) fn read(view: &impl ShardView, pos: usize) -> Slot {
    let geo = view.geo();
    let at = slot_at(geo, pos);
    Slot {
        block: view.u32_at(at + SLOT_BLOCK),
        tag: view.u32_at(at + SLOT_TAG),
        expires_ms: view.u64_at(at + SLOT_EXPIRES),
    }
}

#[inline]
pub(crate) fn tag_of(hash: u64) -> u32 {
    hash as u32
}

/// Slots in use of the shard's index array: the first [`MIN_ACTIVE_SLOTS`] doubled `grown`
/// (the state's `S_GROWN`) times, never more than the array holds.
#[inline]
pub(crate) fn active(view: &impl ShardView) -> usize {
    let geo = view.geo();
    active_of(view.u32_at(S_GROWN), geo)
}

/// [`active`] for the stored `grown`. One too large (only damage or a torn optimistic read
/// makes one) reads as the whole array: the audit reports it, and a repair resizes it.
#[inline]
pub(crate) fn active_of(grown: u32, geo: &Geometry) -> usize {
    if grown >= 32 {
        return geo.slots;
    }
    ((MIN_ACTIVE_SLOTS as u64) << grown).min(geo.slots as u64) as usize
}

/// Whether `grown` is a size the index can have: no more slots than the array holds.
pub(crate) fn grown_valid(grown: u32, geo: &Geometry) -> bool {
    grown < 32 && (MIN_ACTIVE_SLOTS as u64) << grown <= geo.slots as u64
}

/// Home slot of `tag` among `active` slots (a power of two).
#[inline]
pub(crate) fn home(active: usize, tag: u32) -> usize {
    tag as usize & (active - 1)
}

/// Walks the probe sequence of `hash`, asking `matches` about each slot with its tag.
#[inline]
pub(crate) fn probe<V: ShardView>(
    view: &V,
    hash: u64,
    mut matches: impl FnMut(&V, u32) -> Result<bool, Corrupt>,
) -> Result<Probe, Corrupt> {
    let tag = tag_of(hash);
    let slots = active(view);
    let mask = slots - 1;
    let start = home(slots, tag);
    for step in 0..slots {
        let i = (start + step) & mask;
        let slot = read(view, i);
        if slot.block == 0 {
            return Ok(Probe::Vacant(i));
        }
        if slot.tag == tag && matches(view, slot.block)? {
            return Ok(Probe::Found(i));
        }
    }
    Err(Corrupt("index has no empty slot"))
}

/// Fills the empty slot `pos`; the block reference is stored last, as the publish point.
pub(crate) fn insert(guard: &mut ShardGuard<'_>, pos: usize, slot: Slot, stamp: u32) {
    let geo = guard.geo();
    set_stamp(guard, pos, stamp);
    let at = slot_at(geo, pos);
    guard.set_u32(at + SLOT_TAG, slot.tag);
    guard.set_u64(at + SLOT_EXPIRES, slot.expires_ms);
    guard.publish_u32(at + SLOT_BLOCK, slot.block);
}

/// Points used slot `pos` at another block: the publish point of a replacing write.
pub(crate) fn replace(guard: &mut ShardGuard<'_>, pos: usize, block: u32, expires: u64) {
    let geo = guard.geo();
    let at = slot_at(geo, pos);
    guard.set_u64(at + SLOT_EXPIRES, expires);
    guard.publish_u32(at + SLOT_BLOCK, block);
}

pub(crate) fn set_expires(guard: &mut ShardGuard<'_>, pos: usize, expires: u64) {
    let geo = guard.geo();
    guard.publish_u64(slot_at(geo, pos) + SLOT_EXPIRES, expires);
}

/// Empties slot `hole`, shifting later members of its cluster back so that every remaining
/// slot stays reachable from its home.
pub(crate) fn remove(guard: &mut ShardGuard<'_>, mut hole: usize) {
    let geo = guard.geo();
    let slots = active(guard);
    let mask = slots - 1;
    let mut j = hole;
    loop {
        j = (j + 1) & mask;
        let slot = read(guard, j);
        if slot.block == 0 || j == hole {
            break;
        }
        let k = home(slots, slot.tag);
        // Move j into the hole unless its home lies cyclically in (hole, j].
        if (j.wrapping_sub(k) & mask) >= (j.wrapping_sub(hole) & mask) {
            let moved = stamp(guard, j);
            set_stamp(guard, hole, moved);
            guard.copy_within(slot_at(geo, j), slot_at(geo, hole), SLOT_SIZE);
            fault::hit(FaultPoint::MidShift);
            hole = j;
        }
    }
    guard.publish_u32(slot_at(geo, hole) + SLOT_BLOCK, 0);
}

/// Empties every slot of the array, and shrinks the active slots back to a fresh shard's.
pub(crate) fn clear(guard: &mut ShardGuard<'_>) {
    let geo = guard.geo();
    guard.bytes_mut(geo.index_start(), geo.slots * SLOT_SIZE).fill(0);
    for i in 0..geo.slots {
        set_stamp(guard, i, 0);
    }
    guard.set_u32(S_GROWN, 0);
}

/// Grows the active slots, by doubling, until `records` fill at most
/// `GROW_LOAD_NUM / GROW_LOAD_DEN` of them or they are the whole array, then re-seats the
/// slots the wider mask left away from their homes. Returns whether it grew. The new size is
/// stored first: a holder killed at any point leaves every record in the active slots,
/// perhaps unreachable or twice, and the repair re-seats and deduplicates them, as after
/// damage.
pub(crate) fn grow(guard: &mut ShardGuard<'_>, records: usize) -> bool {
    let geo = guard.geo();
    let was = guard.u32_at(S_GROWN);
    let mut grown = was;
    while active_of(grown, geo) < geo.slots
        && records > active_of(grown, geo) / GROW_LOAD_DEN * GROW_LOAD_NUM
    {
        grown += 1;
    }
    if grown == was {
        return false;
    }
    guard.set_u32(S_GROWN, grown);
    fault::hit(FaultPoint::MidGrow);
    reseat(guard);
    true
}

/// Halves the active slots while `records` would fill at most
/// `SHRINK_LOAD_NUM / SHRINK_LOAD_DEN` of them (the expiry sweep calls it, so that an index
/// spread out by a spike of sessions is dense again once they have gone), then re-seats the
/// slots the narrower mask left away from their homes. Returns whether it shrank. The new
/// size is stored first, then each used slot past it is copied into the active slots before
/// it is emptied: a holder killed at any point leaves every record in some slot, perhaps
/// past the active ones, unreachable or twice, and the repair widens the active slots to
/// cover the last used one, re-seats and deduplicates, as after a killed growth.
pub(crate) fn shrink(guard: &mut ShardGuard<'_>, records: usize) -> Result<bool, Corrupt> {
    let geo = guard.geo();
    let was = guard.u32_at(S_GROWN);
    if !grown_valid(was, geo) {
        // Only damage makes one; counting down from it could take billions of steps.
        return Err(Corrupt("the index's grown count is out of range"));
    }
    let mut grown = was;
    while grown > 0 && records <= active_of(grown, geo) / SHRINK_LOAD_DEN * SHRINK_LOAD_NUM {
        grown -= 1;
    }
    if grown == was {
        return Ok(false);
    }
    let (old_active, new_active) = (active_of(was, geo), active_of(grown, geo));
    guard.set_u32(S_GROWN, grown);
    for i in new_active..old_active {
        let slot = read(guard, i);
        if slot.block == 0 {
            continue;
        }
        insert_new(guard, slot, stamp(guard, i))?;
        fault::hit(FaultPoint::MidShrink);
        guard.publish_u32(slot_at(geo, i) + SLOT_BLOCK, 0);
    }
    reseat(guard);
    Ok(true)
}

/// Moves every used slot that is not reachable from its home (after the active slots grew,
/// or damage) to the first empty slot of its probe sequence: the copy is inserted before the
/// original is removed, so a holder killed in between leaves a duplicate, which the repair
/// drops. Passes until one moves nothing (a removal's backward shift may carry a slot not
/// yet examined behind the pass); each slot moves at most once, since moving one never makes
/// another unreachable. Returns the number moved.
pub(crate) fn reseat(guard: &mut ShardGuard<'_>) -> usize {
    let slots = active(guard);
    let mut reseated = 0;
    loop {
        let before = reseated;
        let mut i = 0;
        while i < slots {
            let slot = read(guard, i);
            if slot.block != 0
                && !reachable(guard, i)
                && reseated < slots
                && insert_new(guard, slot, stamp(guard, i)).is_ok()
            {
                remove(guard, i);
                reseated += 1;
                continue; // the backward shift may have moved a later slot into `i`
            }
            i += 1;
        }
        if reseated == before || reseated >= slots {
            return reseated;
        }
    }
}

/// Inserts into the first empty slot of `tag`'s probe sequence without comparing keys
/// (the caller knows the key is absent: the repair, rebuilding from distinct records).
pub(crate) fn insert_new(
    guard: &mut ShardGuard<'_>,
    slot: Slot,
    stamp: u32,
) -> Result<(), Corrupt> {
    let slots = active(guard);
    let mask = slots - 1;
    let start = home(slots, slot.tag);
    for step in 0..slots {
        let i = (start + step) & mask;
        if read(guard, i).block == 0 {
            insert(guard, i, slot, stamp);
            return Ok(());
        }
    }
    Err(Corrupt("index has no empty slot"))
}

/// Whether used slot `pos` is reachable from its home without crossing an empty slot.
pub(crate) fn reachable(guard: &ShardGuard<'_>, pos: usize) -> bool {
    let slots = active(guard);
    let mask = slots - 1;
    let mut p = home(slots, read(guard, pos).tag);
    for _ in 0..slots {
        if p == pos {
            return true;
        }
        if read(guard, p).block == 0 {
            return false;
        }
        p = (p + 1) & mask;
    }
    false
}

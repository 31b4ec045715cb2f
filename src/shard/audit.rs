//! Checking and repairing a shard.
//!
//! [`rebuild`] runs under the lock after a holder died (or corruption was found): it walks the
//! blocks of the data area, keeps every record that an index slot refers to and whose CRC,
//! lengths and hash agree, and rebuilds the index, the free lists and the counters from them.
//! Because writes publish last, whatever a dead writer left unpublished is simply not
//! referenced and goes back to the free lists; the previous value stays.
//!
//! [`check`] verifies every invariant of SAFETY.md without changing anything and reports
//! each violation.
#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};

use crate::fault::{self, FaultPoint};
use crate::format::layout::*;
use crate::lock::ShardGuard;
use crate::shard::alloc::{self, Walk};
use crate::shard::index::{self, Slot};
use crate::shard::record::{self, at, NewRecord, Rec};

/// The record slot `slot` refers to, if it is a sound record of this shard whose hash
/// agrees with the slot's tag.
fn sound_record(
    guard: &ShardGuard<'_>,
    shard: usize,
    walk: &Walk,
    slot: Slot,
) -> Result<Rec, &'static str> {
    let geo = guard.geo();
    let off = block_offset(slot.block).ok_or("empty")?;
    if Some(off) != geo.spare() && walk.find(off).is_none_or(|b| !b.used) {
        return Err("refers to no used block");
    }
    let rec = record::view(guard, slot.block).ok_or("refers to a record with bad lengths")?;
    let hash = rec.hash(guard);
    if index::tag_of(hash) != slot.tag || shard_of(hash, geo.shard_bits) != shard {
        return Err("tag or shard does not match the record's hash");
    }
    if !rec.crc_ok(guard) {
        return Err("record fails its CRC");
    }
    Ok(rec)
}

/// Shard a key hash belongs to: its high bits.
pub(crate) fn shard_of(hash: u64, shard_bits: u32) -> usize {
    if shard_bits == 0 {
        0
    } else {
        (hash >> (64 - shard_bits)) as usize
    }
}

/// What a rebuild did.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Rebuilt {
    /// Records kept.
    pub kept: usize,
    /// Index slots dropped because their record was unsound or duplicated.
    pub dropped: usize,
}

/// Repairs the shard in place: drops index slots whose record is unsound or duplicated,
/// then rebuilds the free lists and counters from a walk of the blocks.
///
/// The index is only ever changed by backward-shift removals (and, for a slot found
/// unreachable, a removal and re-insertion), each of which keeps every other entry present
/// and reachable, so a repairer killed at any point leaves an index from which the next
/// repair recovers the same records. Everything else is recomputed from the index and the
/// block walk.
pub(crate) fn rebuild(guard: &mut ShardGuard<'_>, shard: usize) -> Rebuilt {
    let geo = guard.geo();
    alloc::finish_merge(guard);
    let walk = alloc::walk(guard);
    // The active slots, made to cover every used slot: only damage leaves one past them.
    let mut grown = guard.u32_at(S_GROWN);
    if !index::grown_valid(grown, geo) {
        grown = (geo.slots / MIN_ACTIVE_SLOTS).trailing_zeros();
    }
    let last_used = (0..geo.slots).rev().find(|&i| index::read(guard, i).block != 0);
    while last_used.is_some_and(|i| i >= index::active_of(grown, geo)) {
        grown += 1;
    }
    guard.set_u32(S_GROWN, grown);
    let slots = index::active(guard);
    // The block each key keeps: its sound record with the highest sequence number.
    let mut best: HashMap<Vec<u8>, (usize, u64)> = HashMap::new();
    for i in 0..slots {
        let slot = index::read(guard, i);
        if let Ok(rec) = sound_record(guard, shard, &walk, slot) {
            let seq = rec.seq(guard);
            let entry = best.entry(rec.key(guard).to_vec()).or_insert((rec.off, seq));
            if seq > entry.1 {
                *entry = (rec.off, seq);
            }
        }
    }
    let keep: HashSet<usize> = best.values().map(|&(off, _)| off).collect();
    // Drop every slot whose block is not kept, or is kept by an earlier slot. One pass,
    // starting after an empty slot: a removal shifts only later slots of the same cluster
    // back into the position just examined, which is examined again.
    let mask = slots - 1;
    let start = (0..slots).find(|&i| index::read(guard, i).block == 0).unwrap_or(mask);
    let mut seen = HashSet::new();
    let mut dropped = 0;
    let (mut i, mut examined) = ((start + 1) & mask, 0);
    while examined < slots {
        let block = index::read(guard, i).block;
        if block_offset(block).is_some_and(|off| !keep.contains(&off) || !seen.insert(off)) {
            index::remove(guard, i);
            dropped += 1;
            continue;
        }
        i = (i + 1) & mask;
        examined += 1;
    }
    // Every remaining slot refers to a kept record. Align slot expiries with their records
    // (a writer may have died between the two stores), then re-seat every unreachable slot
    // (left by a writer killed while the index grew, or by stray writes; `index::reseat`).
    for i in 0..slots {
        let slot = index::read(guard, i);
        if let Some(rec) = record::view(guard, slot.block) {
            let expires = rec.expires(guard);
            if slot.expires_ms != expires {
                index::set_expires(guard, i, expires);
            }
        }
    }
    index::reseat(guard);
    let unkept: Vec<usize> = walk
        .blocks
        .iter()
        .filter(|b| b.class != FILLER && !keep.contains(&b.off))
        .map(|b| b.off)
        .collect();
    let (first, second) = unkept.split_at(unkept.len() / 2);
    alloc::relist(guard, second);
    fault::hit(FaultPoint::MidRepair);
    for &off in first.iter().rev() {
        alloc::free(guard, off);
    }
    guard.publish_u64(S_BUMP, walk.end as u64);
    vacate_spare(guard);
    let mut used_bytes = 0;
    let mut max_seq = guard.u64_at(S_NEXT_SEQ);
    let mut live = 0;
    let mut earliest = u64::MAX;
    for i in 0..slots {
        if let Some(rec) = record::view(guard, index::read(guard, i).block) {
            max_seq = max_seq.max(rec.seq(guard));
            earliest = earliest.min(rec.expires(guard));
            used_bytes += rec.size(geo);
            live += 1;
        }
    }
    guard.set_u32(S_LIVE, live as u32);
    guard.set_u64(S_USED_BYTES, used_bytes as u64);
    guard.set_u64(S_NEXT_SEQ, max_seq);
    guard.set_u64(S_MIN_EXPIRES, earliest);
    guard.set_u32(S_CURSOR, 0);
    // Damage may have left more records than the active slots should hold.
    index::grow(guard, live);
    Rebuilt { kept: live, dropped }
}

/// Moves a record left in the spare block (its writer died between the two publishes of a
/// full shard's rewrite, `shard::rewrite_through_spare`) into a block of its own: the block
/// its old value had is free again by now. Marks the spare free. Should no block be free
/// (only damage could cause that), the record stays in the spare, whole and indexed, and the
/// spare stays used until the record is rewritten or removed.
fn vacate_spare(guard: &mut ShardGuard<'_>) {
    let geo = guard.geo();
    let Some(spare) = geo.spare() else { return };
    let Some(i) =
        (0..index::active(guard)).find(|&i| index::read(guard, i).block == block_ref(spare))
    else {
        alloc::free(guard, spare);
        return;
    };
    // The slot was kept: its record is sound.
    let Some(rec) = record::view(guard, block_ref(spare)) else { return };
    let Some(class) = geo.class_for(record_len(rec.key_len, rec.value_len)) else { return };
    let Ok(Some(off)) = alloc::alloc(guard, class) else { return };
    let (key, value) = (rec.key(guard).to_vec(), rec.value(guard).to_vec());
    let moved = NewRecord {
        hash: rec.hash(guard),
        key: &key,
        value: &value,
        crc: rec.crc(guard),
        expires_ms: rec.expires(guard),
        class,
    };
    record::write(guard, off, &moved, rec.seq(guard));
    index::replace(guard, i, block_ref(off), moved.expires_ms);
    alloc::free(guard, spare);
}

/// Checks every invariant of the shard, appending a description of each violation.
/// Returns the number of records indexed.
pub(crate) fn check(guard: &ShardGuard<'_>, shard: usize, problems: &mut Vec<String>) -> usize {
    let geo = guard.geo();
    let walk = alloc::walk(guard);
    if let Some(b) = &walk.broken {
        problems.push(b.clone());
    }
    if guard.u32_at(S_DIRTY) != 0 {
        problems.push("a repair is pending (dirty)".into());
    }
    if guard.u32_at(S_MERGE_START) != 0 {
        problems.push("a merge of free blocks is unfinished".into());
    }
    let mut referenced: HashMap<usize, usize> = HashMap::new();
    let mut keys: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut used_bytes = 0;
    let mut records = 0;
    let grown = guard.u32_at(S_GROWN);
    if !index::grown_valid(grown, geo) {
        problems.push(format!("the index's grown count {grown} is out of range"));
    }
    let slots = index::active(guard);
    for i in 0..geo.slots {
        let slot = index::read(guard, i);
        if slot.block == 0 {
            continue;
        }
        records += 1;
        if i >= slots {
            problems.push(format!("slot {i} is used, past the {slots} active slots"));
            continue;
        }
        let rec = match sound_record(guard, shard, &walk, slot) {
            Ok(rec) => rec,
            Err(why) => {
                problems.push(format!("slot {i} {why}"));
                continue;
            }
        };
        if rec.expires(guard) != slot.expires_ms {
            problems.push(format!("slot {i} expiry differs from its record's"));
        }
        if rec.expires(guard) < guard.u64_at(S_MIN_EXPIRES) {
            problems.push(format!("slot {i} expires before the shard's min_expires"));
        }
        if !index::reachable(guard, i) {
            problems.push(format!("slot {i} is not reachable from its home slot"));
        }
        if let Some(other) = referenced.insert(rec.off, i) {
            problems.push(format!("slots {other} and {i} refer to one block"));
        }
        if let Some(other) = keys.insert(rec.key(guard).to_vec(), i) {
            problems.push(format!("slots {other} and {i} hold the same key"));
        }
        used_bytes += rec.size(geo);
    }
    if records != guard.u32_at(S_LIVE) as usize {
        problems.push(format!("live count {} but {records} slots used", guard.u32_at(S_LIVE)));
    }
    let limit = if slots < geo.slots {
        slots / GROW_LOAD_DEN * GROW_LOAD_NUM
    } else {
        geo.slots / MAX_LOAD_DEN * MAX_LOAD_NUM
    };
    if records > limit {
        problems.push(format!("{records} slots used, over the load limit of {slots} slots"));
    }
    if used_bytes != guard.u64_at(S_USED_BYTES) as usize {
        problems.push(format!(
            "used_bytes {} but records use {used_bytes}",
            guard.u64_at(S_USED_BYTES)
        ));
    }
    let mut listed: HashMap<usize, usize> = HashMap::new();
    for class in 0..FREE_HEADS {
        let mut next = guard.u32_at(S_FREE_HEADS + 4 * class);
        if class >= geo.class_sizes.len() && next != 0 {
            problems.push(format!("free list of unused class {class} is not empty"));
            continue;
        }
        let mut steps = 0;
        while let Some(off) = block_offset(next) {
            steps += 1;
            let ok = walk.find(off).is_some_and(|b| !b.used && b.class as usize == class);
            if !ok {
                problems.push(format!(
                    "free list {class} holds data offset {off}, not a free block of its class"
                ));
                break;
            }
            if listed.insert(off, class).is_some() || steps > walk.blocks.len() {
                problems.push(format!("free list {class} revisits data offset {off}"));
                break;
            }
            next = guard.u32_at(at(geo, off) + B_LINK);
        }
    }
    // A record in the spare is checked with the others; the spare holds none otherwise.
    let spare_in_use = |spare| guard.u8_at(at(geo, spare) + B_STATE) == BLOCK_USED;
    if geo.spare().is_some_and(|spare| spare_in_use(spare) && !referenced.contains_key(&spare)) {
        problems.push("the spare block is marked used, but no slot refers to it".into());
    }
    for block in walk.blocks.iter().filter(|b| b.class != FILLER) {
        match (block.used, referenced.contains_key(&block.off), listed.contains_key(&block.off)) {
            (true, true, false) | (false, false, true) => {}
            (true, false, _) => {
                problems.push(format!("used block at {} is not indexed (leaked)", block.off))
            }
            (false, false, false) => {
                problems.push(format!("free block at {} is on no free list (leaked)", block.off))
            }
            _ => problems.push(format!("block at {} is both indexed and free", block.off)),
        }
    }
    records
}

//! Blocks of the data area: carving them from the bump region, per-class free lists, and
//! merging runs of adjacent blocks when the classes a shard was carved into no longer fit.
//!
//! Invariants (checked by `audit::check`):
//! - `[0, bump)` of the data area is a sequence of blocks, each the size of its class, so it
//!   can be walked from offset 0; each block is used (referenced by exactly one index slot),
//!   free (on exactly one free list: its own class's), or a free FILLER (16 bytes, on no
//!   list, padding the end of a merged run);
//! - a record may sit in a block of a larger class than it needs when its own class has none
//!   free.
//!
//! Past the data area of an `Eviction::Refuse` shard lies the spare block, of the largest
//! class, on no list and outside the walk: [`lend_spare`] hands it to a rewrite that finds no free block (a full shard), which
//! publishes the new record there, copies it over the old record's block (which it fits),
//! publishes that, and gives the spare back ([`free`]). It is marked used exactly while an
//! index slot refers to it (only between those two publishes, or after a repair that found
//! no block for a record left in it).
//!
//! A block taken from a list or carved, and not yet published, is referenced by nothing: a
//! process killed then leaks it only until the repair, which rebuilds the free lists from a
//! walk of the blocks. A merge rewrites block headers inside a run of free blocks, which
//! would break the walk if interrupted, so the run is recorded in `merge_start`/`merge_len`
//! first and the repair re-tiles it ([`finish_merge`]) before walking.
#![forbid(unsafe_code)]

use crate::fault::{self, FaultPoint};
use crate::format::layout::*;
use crate::lock::ShardGuard;
use crate::shard::record::at;
use crate::shard::Corrupt;

/// Offset of `class`'s free-list head in the shard state.
pub(crate) fn head_at(class: usize) -> usize {
    S_FREE_HEADS + 4 * class
}

fn bump(guard: &ShardGuard<'_>) -> u64 {
    guard.u64_at(S_BUMP)
}

/// Takes a block that holds a record of class `class`: from that class's free list, else
/// the bump region, else the free list of the smallest larger class that has one.
pub(crate) fn alloc(guard: &mut ShardGuard<'_>, class: usize) -> Result<Option<usize>, Corrupt> {
    let geo = guard.geo();
    if let Some(off) = pop(guard, class)? {
        return Ok(Some(off));
    }
    let size = geo.class_sizes[class] as usize;
    let bump = usize::try_from(bump(guard)).unwrap_or(usize::MAX);
    if bump > geo.data_bytes || bump % BLOCK_ALIGN != 0 {
        return Err(Corrupt("bump is not an aligned offset in the data area"));
    }
    if bump + size <= geo.data_bytes {
        // The block header goes first, then the bump: a crash in between leaves the bytes
        // past the bump, which nothing reads.
        write_header(guard, bump, class as u8);
        guard.publish_u64(S_BUMP, (bump + size) as u64);
        return Ok(Some(bump));
    }
    for larger in class + 1..geo.class_sizes.len() {
        if let Some(off) = pop(guard, larger)? {
            return Ok(Some(off));
        }
    }
    Ok(None)
}

fn write_header(guard: &mut ShardGuard<'_>, off: usize, class: u8) {
    let geo = guard.geo();
    guard.set_u8(at(geo, off) + B_STATE, BLOCK_FREE);
    guard.set_u8(at(geo, off) + B_CLASS, class);
}

/// Pops the head of `class`'s free list, checking it is a free block of that class.
fn pop(guard: &mut ShardGuard<'_>, class: usize) -> Result<Option<usize>, Corrupt> {
    let geo = guard.geo();
    let head = guard.u32_at(head_at(class));
    let Some(off) = block_offset(head) else { return Ok(None) };
    let size = geo.class_sizes[class] as usize;
    let bump = usize::try_from(bump(guard)).unwrap_or(usize::MAX).min(geo.data_bytes);
    if off.checked_add(size).is_none_or(|end| end > bump)
        || guard.u8_at(at(geo, off) + B_STATE) != BLOCK_FREE
        || guard.u8_at(at(geo, off) + B_CLASS) as usize != class
    {
        return Err(Corrupt("free list head is not a free block of its class"));
    }
    let next = guard.u32_at(at(geo, off) + B_LINK);
    guard.set_u32(head_at(class), next);
    Ok(Some(off))
}

/// The spare block, marked free and of the largest class, unless a record rests in it.
pub(crate) fn lend_spare(guard: &mut ShardGuard<'_>) -> Option<usize> {
    let geo = guard.geo();
    let off = geo.spare()?;
    if guard.u8_at(at(geo, off) + B_STATE) == BLOCK_USED {
        return None;
    }
    write_header(guard, off, (geo.class_sizes.len() - 1) as u8);
    Some(off)
}

/// Returns the (validated, unreferenced, not FILLER) block at `off` to its class's list; the
/// spare block is marked free instead.
pub(crate) fn free(guard: &mut ShardGuard<'_>, off: usize) {
    let geo = guard.geo();
    if Some(off) == geo.spare() {
        guard.set_u8(at(geo, off) + B_STATE, BLOCK_FREE);
        return;
    }
    let class = guard.u8_at(at(geo, off) + B_CLASS) as usize;
    debug_assert!(class < geo.class_sizes.len());
    let head = guard.u32_at(head_at(class));
    guard.set_u8(at(geo, off) + B_STATE, BLOCK_FREE);
    guard.set_u32(at(geo, off) + B_LINK, head);
    guard.set_u32(head_at(class), block_ref(off));
}

/// Forgets every block: the shard holds no record (its index is empty).
pub(crate) fn reset(guard: &mut ShardGuard<'_>) {
    let geo = guard.geo();
    if let Some(spare) = geo.spare() {
        guard.set_u8(at(geo, spare) + B_STATE, BLOCK_FREE);
    }
    guard.publish_u64(S_BUMP, 0);
    guard.set_u64(S_USED_BYTES, 0);
    guard.bytes_mut(S_FREE_HEADS, 4 * FREE_HEADS).fill(0);
    // No merge can be pending over blocks that no longer exist (a dead merger's shard is
    // repaired when locked, before this; only a stray write leaves a marker here).
    guard.set_u32(S_MERGE_START, 0);
    guard.set_u32(S_MERGE_LEN, 0);
}

/// One block found by walking the data area.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Block {
    pub off: usize,
    pub size: usize,
    pub class: u8,
    pub used: bool,
}

/// The blocks of `[0, bump)` in order, and where the walk had to stop if a block header
/// was not valid (nothing from there on can be used).
pub(crate) struct Walk {
    pub blocks: Vec<Block>,
    pub end: usize,
    pub broken: Option<String>,
}

impl Walk {
    pub fn find(&self, off: usize) -> Option<&Block> {
        self.blocks.binary_search_by_key(&off, |b| b.off).ok().map(|i| &self.blocks[i])
    }
}

/// Walks the blocks of the data area from offset 0 to the bump.
pub(crate) fn walk(guard: &ShardGuard<'_>) -> Walk {
    let geo = guard.geo();
    let raw_bump = bump(guard);
    let mut broken = None;
    let mut limit = usize::try_from(raw_bump).unwrap_or(usize::MAX);
    if limit > geo.data_bytes || limit % BLOCK_ALIGN != 0 {
        broken = Some(format!("bump {raw_bump} is not an aligned offset in the data area"));
        limit = limit.min(geo.data_bytes) / BLOCK_ALIGN * BLOCK_ALIGN;
    }
    let mut blocks = Vec::new();
    let mut off = 0;
    while off < limit {
        let state = guard.u8_at(at(geo, off) + B_STATE);
        let class = guard.u8_at(at(geo, off) + B_CLASS);
        let size = geo.block_size(class).unwrap_or(usize::MAX);
        let state_ok = state == BLOCK_FREE || (state == BLOCK_USED && class != FILLER);
        if !state_ok || off.saturating_add(size) > limit {
            broken.get_or_insert(format!("invalid block header at data offset {off}"));
            break;
        }
        blocks.push(Block { off, size, class, used: state == BLOCK_USED });
        off += size;
    }
    Walk { blocks, end: off, broken }
}

/// Empties every free list, then puts the blocks at `offs` (free or to be freed, never
/// FILLER) on their lists.
pub(crate) fn relist(guard: &mut ShardGuard<'_>, offs: &[usize]) {
    guard.bytes_mut(S_FREE_HEADS, 4 * FREE_HEADS).fill(0);
    for &off in offs.iter().rev() {
        free(guard, off);
    }
}

/// Lays free blocks over `[start, start + len)`: one of class `first` if given, then the
/// largest classes that fit, then FILLERs.
fn tile(guard: &mut ShardGuard<'_>, start: usize, len: usize, first: Option<usize>) {
    let geo = guard.geo();
    let end = start + len;
    let mut off = start;
    if let Some(class) = first {
        write_header(guard, off, class as u8);
        off += geo.class_sizes[class] as usize;
        fault::hit(FaultPoint::MidMerge);
    }
    while let Some(class) = geo.class_sizes.iter().rposition(|&s| s as usize <= end - off) {
        write_header(guard, off, class as u8);
        off += geo.class_sizes[class] as usize;
    }
    while off < end {
        write_header(guard, off, FILLER);
        off += BLOCK_ALIGN;
    }
}

/// Completes a merge a dead process left half done: re-tiles its run with free blocks.
/// Returns whether there was one. The run held only free blocks when it was recorded.
pub(crate) fn finish_merge(guard: &mut ShardGuard<'_>) -> bool {
    let geo = guard.geo();
    let Some(start) = block_offset(guard.u32_at(S_MERGE_START)) else { return false };
    let len = guard.u32_at(S_MERGE_LEN) as usize * BLOCK_ALIGN;
    let end = start.checked_add(len);
    let in_range =
        end.is_some_and(|end| len > 0 && end as u64 <= bump(guard) && end <= geo.data_bytes);
    // Only a run that starts on a block boundary can be one a merge recorded (the blocks
    // before it are untouched by the merge): anything else is a stray value, left alone.
    if in_range && starts_a_block(guard, start) {
        tile(guard, start, len, None);
    }
    guard.publish_u32(S_MERGE_START, 0);
    true
}

/// Whether walking the blocks from offset 0 lands exactly on `start`.
fn starts_a_block(guard: &ShardGuard<'_>, start: usize) -> bool {
    let geo = guard.geo();
    let mut off = 0;
    while off < start {
        let class = guard.u8_at(at(geo, off) + B_CLASS);
        match geo.block_size(class) {
            Some(size) => off += size,
            None => return false,
        }
    }
    off == start
}

/// Makes one free block of class `class` out of the run of adjacent blocks that needs the
/// fewest used blocks freed: `evict` is called on each used block of the run and must
/// unindex and free it. Used blocks are allowed only when `allow_used`; the block at
/// `protect` never is. The new block is free and on no list; the caller uses it at once.
pub(crate) fn merge(
    guard: &mut ShardGuard<'_>,
    class: usize,
    allow_used: bool,
    protect: Option<usize>,
    mut evict: impl FnMut(&mut ShardGuard<'_>, usize) -> Result<(), Corrupt>,
) -> Result<Option<usize>, Corrupt> {
    let geo = guard.geo();
    let walk = walk(guard);
    if walk.broken.is_some() {
        return Err(Corrupt("the blocks do not tile the data area"));
    }
    let need = geo.class_sizes[class] as usize;
    // Sliding window over the blocks: the shortest run from each start whose size reaches
    // `need`, keeping the one with the fewest used blocks.
    let mut best: Option<(usize, usize, usize)> = None;
    let (mut from, mut size, mut used) = (0, 0, 0);
    for (i, b) in walk.blocks.iter().enumerate() {
        if Some(b.off) == protect || (b.used && !allow_used) {
            (from, size, used) = (i + 1, 0, 0);
            continue;
        }
        size += b.size;
        used += usize::from(b.used);
        while size - walk.blocks[from].size >= need {
            size -= walk.blocks[from].size;
            used -= usize::from(walk.blocks[from].used);
            from += 1;
        }
        if size >= need && best.is_none_or(|(cost, _, _)| used < cost) {
            best = Some((used, from, i + 1));
            if used == 0 {
                break;
            }
        }
    }
    let Some((_, first, last)) = best else { return Ok(None) };
    let run = &walk.blocks[first..last];
    for b in run.iter().filter(|b| b.used) {
        evict(guard, b.off)?;
    }
    let start = run[0].off;
    let end = run[run.len() - 1].off + run[run.len() - 1].size;
    if bump(guard) < end as u64 {
        // The evictions emptied the shard, which reset the bump: carve from it instead.
        return alloc(guard, class);
    }
    guard.set_u32(S_MERGE_LEN, ((end - start) / BLOCK_ALIGN) as u32);
    guard.publish_u32(S_MERGE_START, block_ref(start));
    tile(guard, start, end - start, Some(class));
    guard.publish_u32(S_MERGE_START, 0);
    let listed: Vec<usize> = self::walk(guard)
        .blocks
        .iter()
        .filter(|b| !b.used && b.class != FILLER && b.off != start)
        .map(|b| b.off)
        .collect();
    relist(guard, &listed);
    Ok(Some(start))
}

//! Blocks of the data area: carving them from the bump region, per-class free lists.
//!
//! Invariants (checked by `audit::check`):
//! - `[0, bump)` of the data area is a sequence of blocks, each `class_sizes[class]` bytes,
//!   each either used (referenced by exactly one index slot) or free (on exactly one free
//!   list: the list of its own class);
//! - a block keeps its class for life, so the sequence stays walkable; a record may sit in a
//!   block of a larger class than it needs when its own class has none free.
//!
//! A block taken from a list or carved, and not yet published, is referenced by nothing: a
//! process killed then leaks it only until the repair, which rebuilds the free lists from a
//! walk of the blocks.
#![forbid(unsafe_code)]

use crate::layout::*;
use crate::lock::ShardGuard;
use crate::record::at;
use crate::shard::Corrupt;

fn head_at(class: usize) -> usize {
    S_FREE_HEADS + 4 * class
}

/// Takes a block that holds a record of class `class`: from that class's free list, else
/// the bump region, else the free list of the smallest larger class that has one.
pub(crate) fn alloc(
    g: &mut ShardGuard<'_>,
    geo: &Geometry,
    class: usize,
) -> Result<Option<usize>, Corrupt> {
    if let Some(off) = pop(g, geo, class)? {
        return Ok(Some(off));
    }
    let size = geo.class_sizes[class] as usize;
    let bump = g.u64_at(S_BUMP) as usize;
    if bump > geo.data_bytes {
        return Err(Corrupt("bump beyond the data area"));
    }
    if bump + size <= geo.data_bytes {
        // The block header goes first, then the bump: a crash in between leaves the bytes
        // past the bump, which nothing reads.
        g.set_u8(at(geo, bump) + B_STATE, BLOCK_FREE);
        g.set_u8(at(geo, bump) + B_CLASS, class as u8);
        g.set_u64(S_BUMP, (bump + size) as u64);
        return Ok(Some(bump));
    }
    for larger in class + 1..geo.class_sizes.len() {
        if let Some(off) = pop(g, geo, larger)? {
            return Ok(Some(off));
        }
    }
    Ok(None)
}

/// Pops the head of `class`'s free list, checking it is a free block of that class.
fn pop(g: &mut ShardGuard<'_>, geo: &Geometry, class: usize) -> Result<Option<usize>, Corrupt> {
    let head = g.u32_at(head_at(class));
    let Some(off) = block_offset(head) else { return Ok(None) };
    let size = geo.class_sizes[class] as usize;
    let bump = (g.u64_at(S_BUMP) as usize).min(geo.data_bytes);
    if off.checked_add(size).is_none_or(|end| end > bump)
        || g.u8_at(at(geo, off) + B_STATE) != BLOCK_FREE
        || g.u8_at(at(geo, off) + B_CLASS) as usize != class
    {
        return Err(Corrupt("free list head is not a free block of its class"));
    }
    let next = g.u32_at(at(geo, off) + B_LINK);
    g.set_u32(head_at(class), next);
    Ok(Some(off))
}

/// Returns the (validated, unreferenced) block at `off` to its class's free list.
pub(crate) fn free(g: &mut ShardGuard<'_>, geo: &Geometry, off: usize) {
    let class = g.u8_at(at(geo, off) + B_CLASS) as usize;
    let head = g.u32_at(head_at(class));
    g.set_u8(at(geo, off) + B_STATE, BLOCK_FREE);
    g.set_u32(at(geo, off) + B_LINK, head);
    g.set_u32(head_at(class), block_ref(off));
}

/// Forgets every block: the shard holds no record (its index is empty).
pub(crate) fn reset(g: &mut ShardGuard<'_>) {
    g.set_u64(S_BUMP, 0);
    g.set_u64(S_USED_BYTES, 0);
    g.bytes_mut(S_FREE_HEADS, 4 * FREE_HEADS).fill(0);
}

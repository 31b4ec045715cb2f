//! Records in data-area blocks: validating a block reference read from shared memory,
//! writing a record, reading its fields, and its CRC.
//!
//! A record's CRC covers the key hash, both lengths, the key and the value: everything that
//! never changes after the record is written. The expiry and sequence number are excluded
//! because `touch` rewrites the expiry in place with one aligned 8-byte store, which a crash
//! cannot tear. CRCs are computed outside the shard lock: by the writer before locking, by
//! the reader over its copy after unlocking.
#![forbid(unsafe_code)]

use crate::fault::{self, FaultPoint};
use crate::format::layout::*;
use crate::lock::{ShardGuard, ShardView};

/// A record whose block header and lengths were checked against the shard's geometry.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rec {
    /// Offset of the block in the data area.
    pub off: usize,
    pub class: usize,
    pub key_len: usize,
    pub value_len: usize,
}

/// Guard offset of data-area offset `off`.
#[inline]
pub(crate) fn at(geo: &Geometry, off: usize) -> usize {
    geo.data_start() + off
}

/// Checks that `block` refers to a used block wholly inside the carved part of the data
/// area, or to the spare block, whose lengths fit its class; `None` if anything is out of
/// place (corruption, or a concurrent write seen by an optimistic reader).
#[inline]
pub(crate) fn view(view: &impl ShardView, block: u32) -> Option<Rec> {
    let geo = view.geo();
    let off = block_offset(block)?;
    let bump = usize::try_from(view.u64_at(S_BUMP)).ok()?.min(geo.data_bytes);
    let end = if off.checked_add(RECORD_HEADER)? <= bump {
        bump
    } else if Some(off) == geo.spare() {
        off + geo.largest_class_size()
    } else {
        return None;
    };
    let base = at(geo, off);
    let class = view.u8_at(base + B_CLASS) as usize;
    let size = *geo.class_sizes.get(class)? as usize; // FILLER is never a record
    if view.u8_at(base + B_STATE) != BLOCK_USED || off + size > end {
        return None;
    }
    let key_len = view.u32_at(base + R_KEY_LEN) as usize;
    let value_len = view.u32_at(base + R_VALUE_LEN) as usize;
    if key_len == 0 || key_len > MAX_KEY_LEN || value_len > geo.max_value_len {
        return None;
    }
    (record_len(key_len, value_len) <= size).then_some(Rec { off, class, key_len, value_len })
}

impl Rec {
    pub fn key<'g>(&self, guard: &'g ShardGuard<'_>) -> &'g [u8] {
        let geo = guard.geo();
        guard.bytes(at(geo, self.off) + RECORD_HEADER, self.key_len)
    }
    pub fn value<'g>(&self, guard: &'g ShardGuard<'_>) -> &'g [u8] {
        let geo = guard.geo();
        guard.bytes(at(geo, self.off) + RECORD_HEADER + self.key_len, self.value_len)
    }
    /// Starts loading the value's cache lines, so that they arrive together instead of one
    /// miss after another as the copy reaches them.
    #[inline]
    pub fn prefetch_value(&self, view: &impl ShardView) {
        let geo = view.geo();
        view.prefetch(at(geo, self.off) + RECORD_HEADER + self.key_len, self.value_len);
    }
    /// Appends the value to `out`; returns the record's CRC if the copy computed it (see
    /// `ShardView::append_to`), given `head`, the [`checksum_head`] of this record.
    pub fn append_value(
        &self,
        view: &impl ShardView,
        out: &mut Vec<u8>,
        head: impl FnOnce() -> u32,
    ) -> Option<u32> {
        let geo = view.geo();
        view.append_to(at(geo, self.off) + RECORD_HEADER + self.key_len, self.value_len, out, head)
    }
    pub fn hash(&self, view: &impl ShardView) -> u64 {
        let geo = view.geo();
        view.u64_at(at(geo, self.off) + R_HASH)
    }
    pub fn crc(&self, view: &impl ShardView) -> u32 {
        let geo = view.geo();
        view.u32_at(at(geo, self.off) + R_CRC)
    }
    pub fn seq(&self, view: &impl ShardView) -> u64 {
        let geo = view.geo();
        view.u64_at(at(geo, self.off) + R_SEQ)
    }
    pub fn expires(&self, view: &impl ShardView) -> u64 {
        let geo = view.geo();
        view.u64_at(at(geo, self.off) + R_EXPIRES)
    }
    /// Rewrites the expiry in place with one 8-byte store, which a kill cannot tear.
    pub fn set_expires(&self, guard: &mut ShardGuard<'_>, expires_ms: u64) {
        let geo = guard.geo();
        guard.publish_u64(at(geo, self.off) + R_EXPIRES, expires_ms);
    }
    pub fn size(&self, geo: &Geometry) -> usize {
        geo.class_sizes[self.class] as usize
    }
    /// Whether this record's key is `key` with hash `hash`.
    #[inline]
    pub fn is(&self, view: &impl ShardView, hash: u64, key: &[u8]) -> bool {
        let geo = view.geo();
        self.key_len == key.len()
            && self.hash(view) == hash
            && view.bytes_eq(at(geo, self.off) + RECORD_HEADER, key)
    }
    /// Whether the stored CRC matches the stored bytes.
    pub fn crc_ok(&self, guard: &ShardGuard<'_>) -> bool {
        checksum(self.hash(guard), self.key(guard), self.value(guard)) == self.crc(guard)
    }
}

/// CRC-32 of the fields a record never changes: hash, key length, value length (native
/// byte order), key, value.
pub(crate) fn checksum(hash: u64, key: &[u8], value: &[u8]) -> u32 {
    crate::crc::crc32(checksum_head(hash, key, value.len()), value)
}

/// [`checksum`] of everything before the value, which the value's CRC continues. The
/// hash and the two lengths make the first 16 bytes, handed over as words (see
/// `crc::crc32_after`).
pub(crate) fn checksum_head(hash: u64, key: &[u8], value_len: usize) -> u32 {
    let (k, v) = (u64::from(key.len() as u32), u64::from(value_len as u32));
    // The key length's 4 bytes, then the value length's, as one native word, computed in a
    // register (bytes stored and reloaded as a word would stall the load).
    let lens = if cfg!(target_endian = "little") { k | v << 32 } else { k << 32 | v };
    crate::crc::crc32_after(0, [hash, lens], key)
}

/// A record to write, its CRC already computed.
pub(crate) struct NewRecord<'a> {
    pub hash: u64,
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub crc: u32,
    pub expires_ms: u64,
    /// The size class of its block (`Geometry::class_for` of its record length).
    pub class: usize,
}

/// Writes `rec` into the block at `off` (allocated, not referenced by the index yet) and
/// marks it used. Nothing refers to the block until the caller publishes it.
pub(crate) fn write(guard: &mut ShardGuard<'_>, off: usize, rec: &NewRecord<'_>, seq: u64) {
    let geo = guard.geo();
    let base = at(geo, off);
    debug_assert!(record_len(rec.key.len(), rec.value.len()) <= block_size(guard, off));
    guard.set_u8(base + B_STATE, BLOCK_USED);
    guard.set_u32(base + B_LINK, 0);
    guard.set_u64(base + R_HASH, rec.hash);
    guard.set_u64(base + R_EXPIRES, rec.expires_ms);
    guard.set_u64(base + R_SEQ, seq);
    guard.set_u32(base + R_KEY_LEN, rec.key.len() as u32);
    guard.set_u32(base + R_VALUE_LEN, rec.value.len() as u32);
    guard.set_u32(base + R_CRC, rec.crc);
    let key_at = base + RECORD_HEADER;
    guard.bytes_mut(key_at, rec.key.len()).copy_from_slice(rec.key);
    let value_at = key_at + rec.key.len();
    let half = rec.value.len() / 2;
    guard.bytes_mut(value_at, half).copy_from_slice(&rec.value[..half]);
    fault::hit(FaultPoint::MidCopy);
    guard.bytes_mut(value_at + half, rec.value.len() - half).copy_from_slice(&rec.value[half..]);
}

/// Size of the block at `off`, from its class byte (the block was validated by the caller).
pub(crate) fn block_size(guard: &ShardGuard<'_>, off: usize) -> usize {
    let geo = guard.geo();
    geo.block_size(guard.u8_at(at(geo, off) + B_CLASS)).expect("a validated block")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checksum is the CRC-32 of hash, lengths, key and value laid end to end, however it
    /// is fed (values of 64 bytes or more go through a wide VPCLMULQDQ kernel of
    /// `crc::crc32` where the CPU has one): records written by any version of the feeding
    /// code, on any CPU, check the same.
    #[test]
    fn checksum_is_the_crc_of_the_concatenation() {
        let lengths = [1, 32, MAX_KEY_LEN, MAX_KEY_LEN + 1, 1000];
        for (key_len, value_len) in
            lengths.into_iter().flat_map(|k| [0, 100, 256, 1500].map(|v| (k, v)))
        {
            let key = vec![b'k'; key_len];
            let value: Vec<u8> = (0..value_len as u32).map(|i| i as u8).collect();
            let hash = 0x0123_4567_89AB_CDEF_u64;
            let mut all = hash.to_ne_bytes().to_vec();
            all.extend_from_slice(&(key.len() as u32).to_ne_bytes());
            all.extend_from_slice(&(value.len() as u32).to_ne_bytes());
            all.extend_from_slice(&key);
            all.extend_from_slice(&value);
            let want = crc32fast::hash(&all);
            assert_eq!(checksum(hash, &key, &value), want, "key {key_len}, value {value_len}");
        }
    }
}

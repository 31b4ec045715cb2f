//! Offsets and sizes of the shared-memory format: pure arithmetic, no memory access.
//!
//! The format is an ABI shared by every process attached to a segment, possibly built from
//! different binaries, so every field is a fixed-width little-endian-on-this-host integer at
//! a constant offset, and every layout parameter is stored in the segment header.
//!
//! SAFETY.md, section 2, is the one home of the byte tables (segment header, shard, shard
//! state, index slot, stamp array, block and record); the constants below follow them in
//! order, each offset named as in those tables (`H_*` header, `SHARD_*` shard, `STAT_*`
//! stats line, `S_*` guarded state, `SLOT_*` slot, `B_*`/`R_*` block and record).

/// Identifies a segment of this crate.
pub const MAGIC: [u8; 8] = *b"CSSTORE\0";
/// Version of the format (SAFETY.md, section 2); bumped on any change to it. Version 2 added the
/// seqlock version word and the stamp array (optimistic reads); a version-1 writer would not
/// bump the version word, so the two must never share a segment. Version 4 added the spare
/// block past the data area, which a version-3 writer would carve blocks over.
pub const FORMAT_VERSION: u32 = 5;
/// Bytes of the segment header (one page).
pub const HEADER_SIZE: usize = 4096;

pub const H_MAGIC: usize = 0;
pub const H_VERSION: usize = 8;
pub const H_HEADER_SIZE: usize = 12;
pub const H_TOTAL_SIZE: usize = 16;
pub const H_SHARD_COUNT: usize = 24;
pub const H_SHARD_BITS: usize = 28;
pub const H_SHARD_STRIDE: usize = 32;
pub const H_SLOTS: usize = 40;
pub const H_CLASS_COUNT: usize = 44;
pub const H_DATA_BYTES: usize = 48;
pub const H_MAX_KEY_LEN: usize = 56;
pub const H_MAX_VALUE_LEN: usize = 60;
pub const H_EVICTION: usize = 80;
pub const H_HASH_KEY: usize = 96;
pub const H_CREATED_MS: usize = 112;
pub const H_NAME_LEN: usize = 120;
pub const H_NAME: usize = 128;
pub const H_CLASS_SIZES: usize = 192;
pub const H_CRC: usize = H_CLASS_SIZES + 4 * MAX_CLASSES;
const _: () = assert!(H_CRC == 448);
/// The live words, past the CRC: what a master adopting the segment changes
/// (`Config::keep_segment`). Each is an `AtomicU64`, only ever loaded and stored atomically,
/// by `setup()` before it publishes the magic and by an adopting master (the pid last).
pub const H_OWNER_PID: usize = 456;
pub const H_GENERATION: usize = 464;
pub const H_DEFAULT_TTL_MS: usize = 472;
pub const H_LOCK_TIMEOUT_MS: usize = 480;
pub const LIVE_WORDS: [usize; 4] = [H_OWNER_PID, H_GENERATION, H_DEFAULT_TTL_MS, H_LOCK_TIMEOUT_MS];
const _: () = assert!(H_CRC + 4 <= H_OWNER_PID && H_LOCK_TIMEOUT_MS + 8 <= HEADER_SIZE);
/// The cache words: the state of the host's Redis tier (feature `redis`), changed by the
/// master's tracker and read by every worker; zero in a segment no tracker has used. Like the
/// live words, `AtomicU64`s outside the CRC. The epoch is odd while a tracker is armed; the
/// invalidations count what it applied; the beat and the loss are unix ms.
pub const H_CACHE_EPOCH: usize = 512;
pub const H_CACHE_INVALIDATIONS: usize = 520;
pub const H_CACHE_BEAT_MS: usize = 528;
pub const H_CACHE_LOST_MS: usize = 536;
/// The header words that change after setup, live and cache: only ever accessed atomically.
pub const ATOMIC_WORDS: [usize; 8] = [
    H_OWNER_PID,
    H_GENERATION,
    H_DEFAULT_TTL_MS,
    H_LOCK_TIMEOUT_MS,
    H_CACHE_EPOCH,
    H_CACHE_INVALIDATIONS,
    H_CACHE_BEAT_MS,
    H_CACHE_LOST_MS,
];
const _: () = assert!(H_LOCK_TIMEOUT_MS + 8 <= H_CACHE_EPOCH && H_CACHE_LOST_MS + 8 <= HEADER_SIZE);

/// Namespace and segment names: 1 to 64 characters from `A-Z a-z 0-9 . _ -`, not `.` or `..`.
pub(crate) fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Longest namespace name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Longest session id accepted, in bytes. Express session ids are 32 characters, signed
/// cookies' ids under 100; 256 leaves room for prefixes.
pub const MAX_KEY_LEN: usize = 256;
/// Most size classes a segment may have.
pub const MAX_CLASSES: usize = 64;
/// Free-list heads stored per shard; classes beyond this share nothing and are refused.
pub const FREE_HEADS: usize = 48;
/// Smallest block: a record header plus a few bytes.
pub const MIN_BLOCK: usize = 64;
/// Alignment and granularity of blocks in the data area.
pub const BLOCK_ALIGN: usize = 16;

pub const SHARD_MUTEX: usize = 0;
/// The shard's seqlock version word (`AtomicU64`), in the 64-byte line after the mutex's:
/// every lock holder writes both, while optimistic readers load only this one.
pub const SHARD_VERSION: usize = 64;
pub const SHARD_STATS: usize = 128;
pub const SHARD_STATE: usize = 256;
pub const SHARD_INDEX: usize = 512;
/// Size of the mutex area; `pthread_mutex_t` must fit (checked in the lock module).
pub const MUTEX_AREA: usize = 64;
const _: () = assert!(SHARD_MUTEX + MUTEX_AREA <= SHARD_VERSION);

/// The read counters, after the header: one 64-byte line per CPU (`sched_getcpu` modulo
/// `CPU_LINES`), so that a read adds to a line its own CPU holds instead of to a line every
/// reader of its shard shares. Each counter an `AtomicU64`, added to with `fetch_add`.
pub const READ_COUNTERS: usize = HEADER_SIZE;
pub const CPU_LINES: usize = 256;
pub const CPU_LINE: usize = 64;
pub const RC_HITS: usize = 0;
pub const RC_MISSES: usize = 8;
/// Reads that fell back to the lock.
pub const RC_LOCKED_READS: usize = 16;
/// Where the shards begin.
pub const SHARDS_START: usize = READ_COUNTERS + CPU_LINES * CPU_LINE;

/// Offsets of the stats counters within the stats line, each an `AtomicU64`, written only
/// under the shard's lock. Bytes 0..16 and 96..128 are unused (zero).
pub const STAT_SETS: usize = 16;
pub const STAT_EVICTIONS: usize = 24;
pub const STAT_EXPIRATIONS: usize = 32;
pub const STAT_RECOVERIES: usize = 40;
pub const STAT_LOCK_WAIT_NS: usize = 48;
pub const STAT_CORRUPT_DROPPED: usize = 56;
pub const STAT_DESTROYS: usize = 64;
pub const STAT_SWEEPS: usize = 72;
/// Mirrors of the state's `live` and `used_bytes`, stored at the end of each locked operation.
pub const STAT_RECORDS: usize = 80;
pub const STAT_USED_BYTES: usize = 88;
const _: () = assert!(STAT_USED_BYTES + 8 <= SHARD_STATE - SHARD_STATS);

/// Offsets within the guarded state, relative to the guard's start (the shard's STATE).
pub const S_BUMP: usize = 0;
pub const S_LIVE: usize = 8;
pub const S_DIRTY: usize = 12;
pub const S_NEXT_SEQ: usize = 16;
pub const S_CLOCK: usize = 24;
pub const S_CURSOR: usize = 28;
pub const S_USED_BYTES: usize = 32;
pub const S_MIN_EXPIRES: usize = 40;
pub const S_MERGE_START: usize = 48;
pub const S_MERGE_LEN: usize = 52;
pub const S_GROWN: usize = 56;
pub const S_FREE_HEADS: usize = 64;
const _: () = assert!(S_FREE_HEADS + 4 * FREE_HEADS == SHARD_INDEX - SHARD_STATE);

/// Index slot fields.
pub const SLOT_SIZE: usize = 16;
pub const SLOT_BLOCK: usize = 0;
pub const SLOT_TAG: usize = 4;
pub const SLOT_EXPIRES: usize = 8;
/// Bytes of one slot's recency stamp in the stamp array.
pub const STAMP_SIZE: usize = 4;

/// Block and record header fields.
pub const B_STATE: usize = 0;
pub const B_CLASS: usize = 1;
pub const B_LINK: usize = 4;
pub const R_HASH: usize = 8;
pub const R_EXPIRES: usize = 16;
pub const R_SEQ: usize = 24;
pub const R_KEY_LEN: usize = 32;
pub const R_VALUE_LEN: usize = 36;
pub const R_CRC: usize = 40;
/// Largest data area of one shard: block references are 32-bit counts of BLOCK_ALIGN units.
pub const MAX_DATA_BYTES: usize = (u32::MAX as usize - 1) * BLOCK_ALIGN;

/// Bytes of block and record header before the key.
pub const RECORD_HEADER: usize = 48;

pub const BLOCK_USED: u8 = 0xA5;
pub const BLOCK_FREE: u8 = 0x5F;
/// Class byte of a filler block: BLOCK_ALIGN bytes, always free, on no list.
pub const FILLER: u8 = 0xFF;

/// Largest `max_value_len` whose record fits the largest class `FREE_HEADS` classes reach.
pub fn max_value_limit() -> usize {
    let mut size = MIN_BLOCK;
    for _ in 1..FREE_HEADS {
        size = ((size + size / 4).div_ceil(BLOCK_ALIGN) * BLOCK_ALIGN).max(size + BLOCK_ALIGN);
    }
    size - RECORD_HEADER - MAX_KEY_LEN
}

/// Most index slots that may be used, as a fraction of `slots`: linear probing degrades past it.
pub const MAX_LOAD_NUM: usize = 7;
pub const MAX_LOAD_DEN: usize = 8;

/// Active index slots of a fresh shard. A shard uses the first `active` slots of its index
/// (`index::active`), doubling them while a new record would fill more than
/// `GROW_LOAD_NUM / GROW_LOAD_DEN` of them, up to `slots`: an index as large as the data area
/// could need, but only as spread out as the records it holds, so that a lookup's slot is
/// more often in cache. Slots past `active` are empty. The expiry sweep halves them again
/// while the records fill at most `SHRINK_LOAD_NUM / SHRINK_LOAD_DEN` (`index::shrink`), so
/// an index spread out by a spike of sessions is dense again once they are gone; the gap
/// between the two bounds (a grown index is over 3/8 full, a shrunk one at most 3/8) keeps
/// a shard from growing and shrinking in turn.
pub const MIN_ACTIVE_SLOTS: usize = 16;
pub const GROW_LOAD_NUM: usize = 3;
pub const GROW_LOAD_DEN: usize = 4;
pub const SHRINK_LOAD_NUM: usize = 3;
pub const SHRINK_LOAD_DEN: usize = 16;

/// Bytes of data area per index slot unless the configuration gives a typical session size
/// (`Config::typical_value_size`): at least this many, so that records of 128 bytes or more
/// fill the data area before the index.
pub const BYTES_PER_SLOT: usize = 128;

/// Key length assumed when a typical session size sizes the index: the 32 characters of
/// express-session's and many frameworks' ids (tower-sessions' are 22).
pub const TYPICAL_KEY_LEN: usize = 32;

/// Bytes of data area per index slot for sessions of typically `typical_value` bytes (none
/// given: [`BYTES_PER_SLOT`]): one slot per such record, and never more slots than the
/// default gives.
pub fn bytes_per_slot(typical_value: Option<usize>) -> usize {
    typical_value.map_or(BYTES_PER_SLOT, |v| record_len(TYPICAL_KEY_LEN, v).max(BYTES_PER_SLOT))
}

/// Every derived size of a segment, computed once from the configuration at setup and read
/// back from the header at attach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub total_size: usize,
    pub shard_count: usize,
    pub shard_bits: u32,
    pub shard_stride: usize,
    pub slots: usize,
    pub data_bytes: usize,
    pub max_value_len: usize,
    pub class_sizes: Vec<u32>,
    /// Whether each shard has a spare block after its data area (`Eviction::Refuse`).
    pub spare: bool,
}

impl Geometry {
    /// Splits `memory_size` among `shard_count` shards, with one index slot per
    /// `bytes_per_slot` bytes of data area (rounded up to a power of two, at most a quarter
    /// of the shard), and a spare block after the data area if `spare`. Returns `None` when a
    /// shard would be too small to hold its fixed parts and two of the largest records.
    pub fn compute(
        memory_size: usize,
        shard_count: usize,
        max_value_len: usize,
        bytes_per_slot: usize,
        spare: bool,
    ) -> Option<Self> {
        debug_assert!(shard_count.is_power_of_two());
        let per_shard = memory_size.checked_sub(SHARDS_START)? / shard_count / 128 * 128;
        let after_fixed = per_shard.checked_sub(SHARD_INDEX)?;
        let per_slot = SLOT_SIZE + STAMP_SIZE;
        let mut slots = (after_fixed / (bytes_per_slot + per_slot)).max(16).next_power_of_two();
        while slots > 16 && slots * per_slot > after_fixed / 4 {
            slots /= 2;
        }
        let class_sizes = class_sizes(RECORD_HEADER + MAX_KEY_LEN + max_value_len)?;
        let largest = *class_sizes.last()? as usize;
        let spare_bytes = if spare { largest } else { 0 };
        let data_bytes =
            after_fixed.checked_sub(slots * per_slot + spare_bytes)? / BLOCK_ALIGN * BLOCK_ALIGN;
        if data_bytes > MAX_DATA_BYTES {
            return None;
        }
        if data_bytes < 2 * largest || slots > u32::MAX as usize {
            return None;
        }
        Some(Geometry {
            total_size: SHARDS_START + per_shard * shard_count,
            shard_count,
            shard_bits: shard_count.trailing_zeros(),
            shard_stride: per_shard,
            slots,
            data_bytes,
            max_value_len,
            class_sizes,
            spare,
        })
    }

    /// Size of a block of class byte `class`, `None` for a class this geometry lacks.
    pub fn block_size(&self, class: u8) -> Option<usize> {
        if class == FILLER {
            return Some(BLOCK_ALIGN);
        }
        self.class_sizes.get(class as usize).map(|&s| s as usize)
    }

    /// Byte offset of shard `i` from the segment base.
    pub fn shard_offset(&self, i: usize) -> usize {
        debug_assert!(i < self.shard_count);
        SHARDS_START + i * self.shard_stride
    }

    /// Bytes covered by a shard's lock guard: state, index and data area.
    pub fn guarded_len(&self) -> usize {
        self.shard_stride - SHARD_STATE
    }

    /// Offset of the index within the guarded range.
    pub fn index_start(&self) -> usize {
        SHARD_INDEX - SHARD_STATE
    }

    /// Offset of the stamp array within the guarded range.
    pub fn stamps_start(&self) -> usize {
        self.index_start() + self.slots * SLOT_SIZE
    }

    /// Offset of the data area within the guarded range.
    pub fn data_start(&self) -> usize {
        self.stamps_start() + self.slots * STAMP_SIZE
    }

    /// Data-area offset of the spare block, right after the blocks' area, if there is one.
    pub fn spare(&self) -> Option<usize> {
        self.spare.then_some(self.data_bytes)
    }

    /// Size of the largest class's blocks, and of the spare block.
    pub fn largest_class_size(&self) -> usize {
        *self.class_sizes.last().expect("a geometry has classes") as usize
    }

    /// Smallest class whose blocks hold `record_len` bytes.
    pub fn class_for(&self, record_len: usize) -> Option<usize> {
        self.class_sizes.iter().position(|&c| c as usize >= record_len)
    }
}

/// Block sizes about 1.25x apart (memcached's growth factor), from MIN_BLOCK up to the
/// first class that holds `largest_record`, each a multiple of BLOCK_ALIGN.
pub fn class_sizes(largest_record: usize) -> Option<Vec<u32>> {
    let mut sizes = vec![MIN_BLOCK as u32];
    let mut size = MIN_BLOCK;
    while size < largest_record {
        let grown = (size + size / 4).div_ceil(BLOCK_ALIGN) * BLOCK_ALIGN;
        size = grown.max(size + BLOCK_ALIGN);
        sizes.push(u32::try_from(size).ok()?);
        if sizes.len() > FREE_HEADS {
            return None;
        }
    }
    Some(sizes)
}

/// Bytes a record with these lengths occupies before rounding to its class.
pub fn record_len(key_len: usize, value_len: usize) -> usize {
    RECORD_HEADER + key_len + value_len
}

/// Converts a data-area offset into the `u32` reference stored in slots and free lists.
pub fn block_ref(offset: usize) -> u32 {
    debug_assert!(offset.is_multiple_of(BLOCK_ALIGN));
    (offset / BLOCK_ALIGN + 1) as u32
}

/// Inverse of [`block_ref`]; `None` for the empty reference 0.
pub fn block_offset(reference: u32) -> Option<usize> {
    (reference as usize).checked_sub(1).map(|r| r * BLOCK_ALIGN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_grow_by_a_quarter_and_cover_the_largest_record() {
        let sizes = class_sizes(RECORD_HEADER + MAX_KEY_LEN + 65536).unwrap();
        assert_eq!(sizes[0] as usize, MIN_BLOCK);
        for pair in sizes.windows(2) {
            assert!(pair[1] > pair[0]);
            assert!(pair[1] as usize <= (pair[0] as usize * 5 / 4).div_ceil(16) * 16 + 16);
            assert_eq!(pair[1] as usize % BLOCK_ALIGN, 0);
        }
        assert!(*sizes.last().unwrap() as usize >= RECORD_HEADER + MAX_KEY_LEN + 65536);
    }

    #[test]
    fn geometry_fits_in_the_memory_given() {
        for &(mem, shards, max) in
            &[(1 << 20, 4, 4096), (64 << 20, 64, 65536), (256 << 10, 1, 1024)]
        {
            for spare in [false, true] {
                let g = Geometry::compute(mem, shards, max, BYTES_PER_SLOT, spare).unwrap();
                assert!(g.total_size <= mem);
                assert_eq!(g.shard_stride % 128, 0);
                assert!(g.slots.is_power_of_two());
                let spare_bytes = if spare { g.largest_class_size() } else { 0 };
                assert!(g.data_start() + g.data_bytes + spare_bytes <= g.guarded_len());
                assert_eq!(g.spare(), spare.then_some(g.data_bytes));
                assert!(g.data_bytes >= 2 * *g.class_sizes.last().unwrap() as usize);
            }
        }
    }

    #[test]
    fn too_little_memory_is_refused() {
        assert!(Geometry::compute(64 << 10, 64, 65536, BYTES_PER_SLOT, false).is_none());
        assert!(Geometry::compute(100, 1, 16, BYTES_PER_SLOT, false).is_none());
    }

    #[test]
    fn a_typical_session_size_sizes_the_index_for_its_records() {
        assert_eq!(bytes_per_slot(None), BYTES_PER_SLOT);
        assert_eq!(bytes_per_slot(Some(1)), BYTES_PER_SLOT, "never more slots than the default");
        let per = bytes_per_slot(Some(1024));
        assert_eq!(per, record_len(TYPICAL_KEY_LEN, 1024));
        let default = Geometry::compute(64 << 20, 64, 4096, BYTES_PER_SLOT, false).unwrap();
        let sized = Geometry::compute(64 << 20, 64, 4096, per, false).unwrap();
        assert!(sized.slots < default.slots);
        assert!(sized.data_bytes > default.data_bytes);
        // Enough slots, under the load limit, for the data area full of such records.
        let records = sized.data_bytes / per;
        assert!(sized.slots / MAX_LOAD_DEN * MAX_LOAD_NUM >= records * 7 / 8, "{sized:?}");
    }

    #[test]
    fn the_value_limit_is_exactly_what_the_classes_allow() {
        let limit = max_value_limit();
        assert!(class_sizes(record_len(MAX_KEY_LEN, limit)).is_some());
        assert!(class_sizes(record_len(MAX_KEY_LEN, limit + 1)).is_none());
    }

    #[test]
    fn block_refs_round_trip_and_zero_is_empty() {
        assert_eq!(block_offset(0), None);
        for off in [0, 16, 4096, 1 << 30] {
            assert_eq!(block_offset(block_ref(off)), Some(off));
        }
    }
}

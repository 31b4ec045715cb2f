//! Optimistic reads: the reader side of each shard's seqlock, and [`ShardView`], the read
//! access that the lookup code shares between a lock holder and an optimistic reader.
//!
//! The protocol is the seqlock of crossbeam-utils (`atomic/seq_lock.rs`) and of the Linux
//! kernel's `seqcount_t`, over a version word in shared memory (`SHARD_VERSION`):
//!
//! | version | meaning                                                                    |
//! |---------|----------------------------------------------------------------------------|
//! | even    | no lock holder is writing: the guarded bytes are a consistent snapshot     |
//! | odd     | a lock holder is writing, or died while holding the lock (until repaired)  |
//!
//! Writer (every `ShardGuard`, holding the mutex): `version += 1` (odd; `+= 2` if a dead
//! holder left it odd), `fence(Release)`, plain stores, then `version += 1` (even) with
//! `Release` just before unlocking. A guard dropped by a panic leaves it odd.
//!
//! Reader ([`OptimisticRead`]): load the version with `Acquire` and give up if odd; read with
//! volatile loads, treating every value as untrusted (the lookup validates offsets exactly as
//! it does against corruption, and every access is bounds-checked); `fence(Acquire)`; load the
//! version again. Equal means no writer ran in between, so what was read is a consistent
//! snapshot; different means it may be torn, and is discarded.
//!
//! A reader writes one thing: the recency stamp of the index slot it found, an `AtomicU32` in
//! the stamp array, which no other word shares and nothing but the LRU sampling reads. A stamp
//! stored after a concurrent writer moved the slot lands on another slot's stamp, or on an
//! empty slot's: a recency misattributed, never a structure damaged.
//!
//! Memory model: the writer's plain stores race with the reader's volatile loads, as in
//! crossbeam's `AtomicCell` fallback. The loaded values are used only after validation, or to
//! compute offsets that are bounds-checked first, so a torn value can make a read wrong
//! (discarded) but never make it leave the mapping. The stamp array is accessed only through
//! atomics, by both sides, and no Rust reference ever covers it.

use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use crate::format::layout::{Geometry, SHARD_STATE};
use crate::segment::Segment;

/// Read access to a shard's guarded bytes, by a lock holder or an optimistic reader.
/// Offsets are relative to the guarded range (the shard's state), as for `ShardGuard`.
pub(crate) trait ShardView {
    /// The geometry of the segment the shard is in.
    fn geo(&self) -> &Geometry;
    fn u8_at(&self, offset: usize) -> u8;
    fn u32_at(&self, offset: usize) -> u32;
    fn u64_at(&self, offset: usize) -> u64;
    /// Whether the `expected.len()` bytes at `offset` equal `expected`.
    fn bytes_eq(&self, offset: usize, expected: &[u8]) -> bool;
    /// Appends the `len` bytes at `offset` to `out`. A view that computes their CRC-32 in
    /// the same pass (an optimistic reader where `crc::copy_crc32` takes `len`) returns it,
    /// continued from `crc()`; a lock holder returns `None`, and the CRC is computed after
    /// unlocking.
    fn append_to(
        &self,
        offset: usize,
        len: usize,
        out: &mut Vec<u8>,
        crc: impl FnOnce() -> u32,
    ) -> Option<u32>;
    /// The `AtomicU32` stamp at the 4-aligned `offset` in the stamp array.
    fn stamp_at(&self, offset: usize) -> u32;
    /// Starts loading the cache lines of `[offset, offset + len)` (clamped to the guarded
    /// range), for a read of them that follows; reads nothing the program sees.
    fn prefetch(&self, offset: usize, len: usize);
}

/// An optimistic reader of one shard: a snapshot of the version and the guarded range.
pub(crate) struct OptimisticRead<'a> {
    version: &'a AtomicU64,
    seen: u64,
    range: Guarded<'a>,
}

impl<'a> OptimisticRead<'a> {
    /// Starts a read of shard `shard`; `None` while the version is odd (a writer at work, or
    /// a dead one not yet repaired: the caller takes the lock instead).
    #[inline]
    pub fn begin(segment: &'a Segment, geo: &'a Geometry, shard: usize) -> Option<Self> {
        let version = segment.version(geo, shard);
        let seen = version.load(Ordering::Acquire);
        if seen % 2 == 1 {
            return None;
        }
        Some(OptimisticRead { version, seen, range: Guarded::new(segment, geo, shard) })
    }

    /// Whether no writer ran since [`begin`](Self::begin): everything read is a consistent
    /// snapshot. May be called more than once.
    #[inline]
    pub fn validate(&self) -> bool {
        fence(Ordering::Acquire);
        self.version.load(Ordering::Relaxed) == self.seen
    }

    /// Stores `stamp` into the stamp at the 4-aligned `offset` (a relaxed atomic store).
    #[inline]
    pub fn set_stamp(&self, offset: usize, stamp: u32) {
        self.range.stamp(offset).store(stamp, Ordering::Relaxed);
    }

    /// The start of `[offset, offset + len)` in memory, once checked inside the range.
    #[inline]
    fn at(&self, offset: usize, len: usize) -> *const u8 {
        self.range.check(offset, len);
        self.range.base.wrapping_add(offset)
    }

    /// The integer at `offset`, by [`volatile_load`].
    #[inline]
    fn load<T: Copy, const N: usize>(&self, offset: usize, from: fn([u8; N]) -> T) -> T {
        let src = self.at(offset, N);
        // SAFETY: in bounds (checked) inside the mapping, which outlives 'a.
        unsafe { volatile_load(src, from) }
    }
}

/// The `N`-byte integer `T` at `src`, by one volatile load of `T` where `src` is aligned for
/// it (every field of the format is), else by one of `[u8; N]` (byte loads) turned into `T`
/// by `from`. The bytes may be concurrently written: the caller validates the value before
/// trusting it.
///
/// # Safety
/// `src..src + N` is readable memory inside a live mapping, and `T` is an `N`-byte plain
/// integer (valid for any bytes).
#[inline]
unsafe fn volatile_load<T: Copy, const N: usize>(src: *const u8, from: fn([u8; N]) -> T) -> T {
    debug_assert_eq!(std::mem::size_of::<T>(), N);
    if src.cast::<T>().is_aligned() {
        // SAFETY: readable (caller) and aligned for `T` (tested); any bytes are a valid `T`.
        unsafe { src.cast::<T>().read_volatile() }
    } else {
        // SAFETY: readable (caller); `[u8; N]` has alignment 1.
        from(unsafe { src.cast::<[u8; N]>().read_volatile() })
    }
}

/// A shard's guarded range (state, index and data area) in the mapping: what a lock holder
/// and an optimistic reader both address, with the bounds check, the stamp access and the
/// prefetch they share. Invariant: `base..base + len` is the range at mapping offset `start`,
/// obtained from `segment`, whose `'a` borrow keeps it mapped.
#[derive(Clone, Copy)]
pub(super) struct Guarded<'a> {
    segment: &'a Segment,
    /// The geometry the shard's offsets are computed with.
    pub geo: &'a Geometry,
    start: usize,
    pub base: *mut u8,
    pub len: usize,
}

impl<'a> Guarded<'a> {
    pub fn new(segment: &'a Segment, geo: &'a Geometry, shard: usize) -> Self {
        let start = geo.shard_offset(shard) + SHARD_STATE;
        let len = geo.guarded_len();
        Guarded { segment, geo, start, base: segment.raw_range(start, len), len }
    }

    /// Panics unless `[offset, offset + len)` lies inside the range: offsets come from this
    /// crate's own validated arithmetic, so a failure is a bug, never corrupt input.
    #[inline]
    pub fn check(&self, offset: usize, len: usize) {
        assert!(
            offset.checked_add(len).is_some_and(|end| end <= self.len),
            "guarded access [{offset}, +{len}) outside {}",
            self.len
        );
    }

    /// The stamp at the 4-aligned `offset`, as an atomic: the one way lock holders and
    /// optimistic readers reach the stamp array. Panics if the word is out of range or
    /// misaligned.
    #[inline]
    pub fn stamp(&self, offset: usize) -> &'a AtomicU32 {
        self.check(offset, 4);
        let ptr = self.base.wrapping_add(offset);
        assert!((ptr as usize).is_multiple_of(4), "stamp at unaligned offset {offset}");
        // SAFETY: in bounds and aligned (asserted) inside the mapping, which the `'a` borrow
        // of the segment keeps mapped (type invariant); the stamp array is accessed only
        // through atomics by every process and never covered by a slice (module docs), so
        // this reference aliases no non-atomic access.
        unsafe { &*ptr.cast::<AtomicU32>() }
    }

    /// Starts loading the cache lines of `[offset, offset + len)`, clamped to the range.
    #[inline]
    pub fn prefetch(&self, offset: usize, len: usize) {
        let offset = offset.min(self.len);
        self.segment.prefetch_read(self.start + offset, len.min(self.len - offset));
    }
}

#[cfg(target_arch = "x86_64")]
type Word = std::arch::x86_64::__m128i;
#[cfg(not(target_arch = "x86_64"))]
type Word = u64;
/// Width of one volatile load: volatile loads are never merged or widened, so this is the
/// copy's width (16 bytes, an SSE2 load, on x86_64).
const W: usize = std::mem::size_of::<Word>();
/// Words copied per round of the unrolled loop.
const UNROLL: usize = 4;

/// Copies `len` bytes from `src` to `dst` with volatile loads: single bytes up to a `Word`
/// boundary of `src`, then aligned `Word`s, four per round, then single bytes.
///
/// # Safety
/// - `src..src + len` is readable memory inside a live mapping.
/// - `dst..dst + len` is writable and overlaps no other live reference.
#[inline]
unsafe fn volatile_copy(src: *const u8, dst: *mut u8, len: usize) {
    let head = src.align_offset(W).min(len);
    for i in 0..head {
        // SAFETY: `i < len`: inside both ranges.
        unsafe { dst.add(i).write(src.add(i).read_volatile()) };
    }
    let mut at = head;
    while at + UNROLL * W <= len {
        // SAFETY: `at + UNROLL * W <= len`: inside both ranges; `src + at` is `W`-aligned
        // (`head` aligned it and every step is a multiple of `W`), as `read_volatile`
        // requires; the stores are unaligned.
        unsafe {
            let s = src.add(at).cast::<Word>();
            let d = dst.add(at).cast::<Word>();
            let words = [
                s.read_volatile(),
                s.add(1).read_volatile(),
                s.add(2).read_volatile(),
                s.add(3).read_volatile(),
            ];
            for (k, word) in words.into_iter().enumerate() {
                d.add(k).write_unaligned(word);
            }
        }
        at += UNROLL * W;
    }
    while at + W <= len {
        // SAFETY: as above, for one word.
        unsafe {
            dst.add(at).cast::<Word>().write_unaligned(src.add(at).cast::<Word>().read_volatile())
        };
        at += W;
    }
    for i in at..len {
        // SAFETY: `i < len`: inside both ranges.
        unsafe { dst.add(i).write(src.add(i).read_volatile()) };
    }
}

/// Whether the `expected.len()` bytes at `src` equal `expected`, compared in place: volatile
/// loads of single bytes up to a `Word` boundary of `src`, then aligned `Word`s against
/// unaligned loads of `expected`, then single bytes. Stops at the first difference.
///
/// # Safety
/// `src..src + expected.len()` is readable memory inside a live mapping.
#[inline]
unsafe fn volatile_eq(src: *const u8, expected: &[u8]) -> bool {
    let len = expected.len();
    // SAFETY: every caller below passes `at < len`: inside the range.
    let byte_eq = |at: usize| unsafe { src.add(at).read_volatile() } == expected[at];
    let head = src.align_offset(W).min(len);
    if !(0..head).all(byte_eq) {
        return false;
    }
    let mut at = head;
    while at + W <= len {
        // SAFETY: `at + W <= len`: inside the range, and `src + at` is `W`-aligned (`head`
        // aligned it; every step is `W`), as `read_volatile` requires. `expected[at..at + W]`
        // is in bounds, read unaligned. A `Word` is plain bytes, valid for any contents.
        let (stored, wanted): ([u8; W], [u8; W]) = unsafe {
            (
                std::mem::transmute::<Word, [u8; W]>(src.add(at).cast::<Word>().read_volatile()),
                expected.as_ptr().add(at).cast::<[u8; W]>().read_unaligned(),
            )
        };
        if stored != wanted {
            return false;
        }
        at += W;
    }
    (at..len).all(byte_eq)
}

impl ShardView for OptimisticRead<'_> {
    fn geo(&self) -> &Geometry {
        self.range.geo
    }

    #[inline]
    fn u8_at(&self, offset: usize) -> u8 {
        self.load(offset, |[b]: [u8; 1]| b)
    }

    #[inline]
    fn u32_at(&self, offset: usize) -> u32 {
        self.load(offset, u32::from_ne_bytes)
    }

    #[inline]
    fn u64_at(&self, offset: usize) -> u64 {
        self.load(offset, u64::from_ne_bytes)
    }

    #[inline]
    fn bytes_eq(&self, offset: usize, expected: &[u8]) -> bool {
        let src = self.at(offset, expected.len());
        // SAFETY: the source range is in bounds (checked) inside the mapping, which outlives
        // 'a; `expected` is an ordinary slice of the same length.
        unsafe { volatile_eq(src, expected) }
    }

    #[inline]
    fn append_to(
        &self,
        offset: usize,
        len: usize,
        out: &mut Vec<u8>,
        crc: impl FnOnce() -> u32,
    ) -> Option<u32> {
        let src = self.at(offset, len);
        out.reserve(len);
        let start = out.len();
        // SAFETY: the source range is in bounds (checked) inside the mapping, which outlives
        // 'a; `reserve` made room for `len` more bytes after `start`, which `copy_crc32` or
        // `volatile_copy` initialises before `set_len`.
        unsafe {
            let dst = out.as_mut_ptr().add(start);
            let fused = crate::crc::copy_crc32(src, dst, len, crc);
            if fused.is_none() {
                volatile_copy(src, dst, len);
            }
            out.set_len(start + len);
            fused
        }
    }

    #[inline]
    fn stamp_at(&self, offset: usize) -> u32 {
        self.range.stamp(offset).load(Ordering::Relaxed)
    }

    #[inline]
    fn prefetch(&self, offset: usize, len: usize) {
        self.range.prefetch(offset, len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volatile_load_reads_aligned_and_unaligned_integers() {
        let bytes: Vec<u8> = (1..=40).collect();
        for at in 0..=bytes.len() - 8 {
            let want = u64::from_ne_bytes(bytes[at..at + 8].try_into().unwrap());
            // SAFETY: `at + 8 <= bytes.len()`: readable.
            let got = unsafe { volatile_load(bytes.as_ptr().add(at), u64::from_ne_bytes) };
            assert_eq!(got, want, "u64 at {at}");
            let want = u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap());
            // SAFETY: as above, 4 bytes.
            let got = unsafe { volatile_load(bytes.as_ptr().add(at), u32::from_ne_bytes) };
            assert_eq!(got, want, "u32 at {at}");
        }
    }

    #[test]
    fn volatile_eq_finds_every_single_difference_at_every_alignment() {
        let stored: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for skew in [0, 1, 5, 15, 16, 17] {
            for len in [0, 1, 15, 16, 17, 31, 32, 33, 47, 64, 255, 256] {
                let src = &stored[skew..skew + len];
                // SAFETY: `src` is `len` readable bytes.
                assert!(unsafe { volatile_eq(src.as_ptr(), src) }, "skew {skew} len {len}");
                for flip in 0..len {
                    let mut expected = src.to_vec();
                    expected[flip] ^= 0x40;
                    // SAFETY: as above.
                    let eq = unsafe { volatile_eq(src.as_ptr(), &expected) };
                    assert!(!eq, "skew {skew} len {len} flip {flip}");
                }
            }
        }
    }
}

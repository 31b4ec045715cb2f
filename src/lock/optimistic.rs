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

use std::mem::MaybeUninit;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use crate::layout::{Geometry, MAX_KEY_LEN, SHARD_STATE};
use crate::segment::Segment;

/// Read access to a shard's guarded bytes, by a lock holder or an optimistic reader.
/// Offsets are relative to the guarded range (the shard's state), as for `ShardGuard`.
pub(crate) trait ShardView {
    fn u8_at(&self, offset: usize) -> u8;
    fn u32_at(&self, offset: usize) -> u32;
    fn u64_at(&self, offset: usize) -> u64;
    /// Whether the `expected.len()` bytes at `offset` equal `expected`.
    fn bytes_eq(&self, offset: usize, expected: &[u8]) -> bool;
    /// Appends the `len` bytes at `offset` to `out`. A view that computes their CRC-32 in
    /// the same pass (an optimistic reader where `simd::fuses(len)`) returns it, continued
    /// from `crc()`; a lock holder returns `None`, and the CRC is computed after unlocking.
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
    base: *const u8,
    len: usize,
    /// The mapping, and the offset of the guarded range in it (for prefetches).
    segment: &'a Segment,
    start: usize,
}

impl<'a> OptimisticRead<'a> {
    /// Starts a read of shard `shard`; `None` while the version is odd (a writer at work, or
    /// a dead one not yet repaired: the caller takes the lock instead).
    #[inline]
    pub fn begin(segment: &'a Segment, geo: &Geometry, shard: usize) -> Option<Self> {
        let version = segment.version(geo, shard);
        let seen = version.load(Ordering::Acquire);
        if seen % 2 == 1 {
            return None;
        }
        let len = geo.guarded_len();
        let start = geo.shard_offset(shard) + SHARD_STATE;
        let base = segment.raw_range(start, len);
        Some(OptimisticRead { version, seen, base, len, segment, start })
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
        self.atomic_u32(offset).store(stamp, Ordering::Relaxed);
    }

    #[inline]
    fn check(&self, offset: usize, len: usize) {
        assert!(
            offset.checked_add(len).is_some_and(|end| end <= self.len),
            "optimistic read [{offset}, +{len}) outside {}",
            self.len
        );
    }

    #[inline]
    fn atomic_u32(&self, offset: usize) -> &AtomicU32 {
        // SAFETY: `base..base + len` is the shard's guarded range inside the mapping, which
        // the `'a` borrow of the segment keeps alive for as long as `self`.
        unsafe { stamp_word(self.base, self.len, offset) }
    }

    /// Copies `dst.len()` bytes at `offset` with volatile loads, 64 bytes at a time.
    #[inline]
    fn copy_out(&self, offset: usize, dst: &mut [u8]) {
        self.check(offset, dst.len());
        // SAFETY: the source range is in bounds (checked) inside the mapping, which outlives
        // 'a, and `dst` is a distinct, writable local buffer.
        unsafe { volatile_copy(self.base.add(offset), dst.as_mut_ptr(), dst.len()) }
    }

    #[inline]
    fn load<const N: usize>(&self, offset: usize) -> [u8; N] {
        self.check(offset, N);
        // SAFETY: in bounds (checked) inside the mapping; `[u8; N]` has alignment 1. The
        // bytes may be concurrently written; the value is validated before it is trusted.
        unsafe { self.base.add(offset).cast::<[u8; N]>().read_volatile() }
    }
}

/// The stamp at the 4-aligned `offset` of a guarded range `base..base + len`, as an atomic:
/// the one way lock holders and optimistic readers reach the stamp array. Panics if the word
/// is out of range or misaligned.
///
/// # Safety
/// - `base..base + len` lies inside a mapping that stays mapped for `'a`.
#[inline]
pub(super) unsafe fn stamp_word<'a>(base: *const u8, len: usize, offset: usize) -> &'a AtomicU32 {
    assert!(
        offset.checked_add(4).is_some_and(|end| end <= len),
        "stamp [{offset}, +4) outside {len}"
    );
    let ptr = base.wrapping_add(offset);
    assert!((ptr as usize).is_multiple_of(4), "stamp at unaligned offset {offset}");
    // SAFETY: in bounds and aligned (asserted) inside a mapping live for 'a (caller); the
    // stamp array is accessed only through atomics by every process and never covered by a
    // slice (module docs), so this reference aliases no non-atomic access.
    unsafe { &*ptr.cast::<AtomicU32>() }
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

impl ShardView for OptimisticRead<'_> {
    #[inline]
    fn u8_at(&self, offset: usize) -> u8 {
        self.load::<1>(offset)[0]
    }

    #[inline]
    fn u32_at(&self, offset: usize) -> u32 {
        u32::from_ne_bytes(self.load(offset))
    }

    #[inline]
    fn u64_at(&self, offset: usize) -> u64 {
        u64::from_ne_bytes(self.load(offset))
    }

    #[inline]
    fn bytes_eq(&self, offset: usize, expected: &[u8]) -> bool {
        let mut buf = [MaybeUninit::<u8>::uninit(); MAX_KEY_LEN];
        let Some(room) = buf.get_mut(..expected.len()) else {
            let mut copy = vec![0u8; expected.len()];
            self.copy_out(offset, &mut copy);
            return copy == expected;
        };
        self.check(offset, room.len());
        // SAFETY: the source range is in bounds (checked); `room` is a local buffer of
        // exactly that length, all of which `volatile_copy` initialises.
        let copy = unsafe {
            volatile_copy(self.base.add(offset), room.as_mut_ptr().cast(), room.len());
            &*(room as *const [MaybeUninit<u8>] as *const [u8])
        };
        copy == expected
    }

    #[inline]
    fn append_to(
        &self,
        offset: usize,
        len: usize,
        out: &mut Vec<u8>,
        crc: impl FnOnce() -> u32,
    ) -> Option<u32> {
        self.check(offset, len);
        out.reserve(len);
        let start = out.len();
        let head = crate::simd::fuses(len).then(crc);
        // SAFETY: the source range is in bounds (checked) inside the mapping, which outlives
        // 'a; `reserve` made room for `len` more bytes after `start`, which `copy_crc32` or
        // `volatile_copy` initialises before `set_len`.
        unsafe {
            let (src, dst) = (self.base.add(offset), out.as_mut_ptr().add(start));
            let fused = head.and_then(|head| crate::simd::copy_crc32(src, dst, len, head));
            if fused.is_none() {
                volatile_copy(src, dst, len);
            }
            out.set_len(start + len);
            fused
        }
    }

    #[inline]
    fn stamp_at(&self, offset: usize) -> u32 {
        self.atomic_u32(offset).load(Ordering::Relaxed)
    }

    #[inline]
    fn prefetch(&self, offset: usize, len: usize) {
        prefetch_guarded(self.segment, self.start..self.start + self.len, offset, len);
    }
}

/// Prefetches `[offset, offset + len)` of the guarded range `range` (offsets in the
/// segment), clamped to it: `ShardView::prefetch` of both views.
#[inline]
pub(super) fn prefetch_guarded(
    segment: &Segment,
    range: std::ops::Range<usize>,
    offset: usize,
    len: usize,
) {
    let offset = offset.min(range.len());
    segment.prefetch_read(range.start + offset, len.min(range.len() - offset));
}

//! `ShardGuard`: proof that this thread holds a shard's lock, and the only accessor of the
//! bytes that lock protects (the shard's state, index and data area).
//!
//! Soundness rests on the lock protocol (SAFETY.md): every process writes a shard's guarded
//! range only while holding its mutex, so while a guard lives no other process or thread
//! writes those bytes, and slices over them behave like ordinary owned memory. Within the
//! process, reads borrow the guard shared and writes borrow it exclusively, so the borrow
//! checker keeps them apart. Every access is bounds-checked against the guarded range; the
//! layers above validate offsets read from shared memory before using them, so a failed
//! check here is a bug in this crate, not corrupt input.
//!
//! A guard is also the writer side of the shard's seqlock (`optimistic.rs`): it makes the
//! version odd once locked and even again just before unlocking, so optimistic readers
//! discard whatever they read meanwhile. Optimistic readers only read the guarded bytes,
//! except the stamp array, which they store to atomically; so the guard never lends a slice
//! over the stamp array, only atomic loads and stores of it.

use std::ops::Range;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use super::mutex::{Acquired, LockFailure, RobustMutex};
use super::optimistic::{Guarded, ShardView};
use crate::format::layout::{Geometry, MUTEX_AREA, SHARD_MUTEX, STAMP_SIZE, S_DIRTY};
use crate::segment::Segment;

/// Exclusive access to one shard's guarded bytes while its lock is held.
pub(crate) struct ShardGuard<'a> {
    shard: usize,
    mutex: RobustMutex,
    range: Guarded<'a>,
    /// The stamp array, which no slice may cover.
    stamps: Range<usize>,
    consistent_owed: bool,
    /// The shard's seqlock version word and the odd value this guard set.
    version: &'a AtomicU64,
    writing: u64,
}

impl<'a> ShardGuard<'a> {
    /// The geometry of the segment the shard is in, for as long as the mapping: held apart
    /// from the guard's borrow, so that it stays at hand while the guard writes.
    #[inline]
    pub fn geo(&self) -> &'a Geometry {
        self.range.geo
    }

    /// Locks shard `shard` of a segment with geometry `geo` and guards its state, index and
    /// data area.
    #[inline]
    pub fn lock(
        segment: &'a Segment,
        geo: &'a Geometry,
        shard: usize,
        timeout: Duration,
    ) -> Result<(Self, Acquired), LockFailure> {
        assert!(shard < geo.shard_count, "shard {shard} out of range");
        let mutex_ptr = segment.raw_range(geo.shard_offset(shard) + SHARD_MUTEX, MUTEX_AREA);
        let range = Guarded::new(segment, geo, shard);
        // SAFETY: `geo` is the geometry the segment was set up with (setup() computed it, or
        // attach decoded and checked it against the mapping's length), under which a mutex
        // initialised by setup() lies at every shard's SHARD_MUTEX; the mapping outlives 'a.
        let mutex = unsafe { RobustMutex::new(mutex_ptr) };
        let acquired = mutex.lock(timeout)?;
        // Odd from here on. A holder that died (or panicked) left it odd already; moving it
        // on by two keeps it odd and still tells a reader that began before that it changed.
        let version = segment.version(geo, shard);
        let seen = version.load(Ordering::Relaxed);
        let writing = seen + 1 + seen % 2;
        version.store(writing, Ordering::Relaxed);
        fence(Ordering::Release);
        let stamps = geo.stamps_start()..geo.stamps_start() + geo.slots * STAMP_SIZE;
        let guard = ShardGuard {
            shard,
            mutex,
            range,
            stamps,
            consistent_owed: acquired.owner_died,
            version,
            writing,
        };
        Ok((guard, acquired))
    }

    /// The shard this guard holds.
    pub fn shard(&self) -> usize {
        self.shard
    }

    /// Declares the shard repaired after the previous holder died.
    pub fn mark_consistent(&mut self) {
        if std::mem::take(&mut self.consistent_owed) {
            // SAFETY: we hold the lock, acquired with EOWNERDEAD (consistent_owed was set).
            unsafe { self.mutex.make_consistent() };
        }
    }

    #[inline]
    fn check(&self, offset: usize, len: usize) {
        self.range.check(offset, len);
    }

    /// `check`, for a slice: it must also stay clear of the stamp array.
    #[inline]
    fn check_slice(&self, offset: usize, len: usize) {
        self.check(offset, len);
        debug_assert!(
            offset + len <= self.stamps.start || offset >= self.stamps.end,
            "a slice [{offset}, +{len}) over the stamp array"
        );
    }

    /// Stores the stamp at the 4-aligned `offset` in the stamp array (relaxed atomic, since
    /// optimistic readers store to it too).
    #[inline]
    pub fn set_stamp(&mut self, offset: usize, stamp: u32) {
        self.range.stamp(offset).store(stamp, Ordering::Relaxed);
    }

    /// The guarded bytes `[offset, offset + len)`.
    #[inline]
    pub fn bytes(&self, offset: usize, len: usize) -> &[u8] {
        self.check_slice(offset, len);
        // SAFETY: in bounds (checked); the lock excludes writers in other processes and the
        // shared borrow of `self` excludes writers through this guard.
        unsafe { std::slice::from_raw_parts(self.range.base.add(offset), len) }
    }

    /// The guarded bytes `[offset, offset + len)`, writable.
    #[inline]
    pub fn bytes_mut(&mut self, offset: usize, len: usize) -> &mut [u8] {
        self.check_slice(offset, len);
        // SAFETY: in bounds (checked); the lock excludes every other accessor in other
        // processes and the exclusive borrow of `self` every other one in this process.
        unsafe { std::slice::from_raw_parts_mut(self.range.base.add(offset), len) }
    }

    #[inline]
    pub fn u8_at(&self, offset: usize) -> u8 {
        self.bytes(offset, 1)[0]
    }

    #[inline]
    pub fn u32_at(&self, offset: usize) -> u32 {
        u32::from_ne_bytes(self.bytes(offset, 4).try_into().expect("4 bytes"))
    }

    #[inline]
    pub fn u64_at(&self, offset: usize) -> u64 {
        u64::from_ne_bytes(self.bytes(offset, 8).try_into().expect("8 bytes"))
    }

    #[inline]
    pub fn set_u8(&mut self, offset: usize, value: u8) {
        self.bytes_mut(offset, 1)[0] = value;
    }

    #[inline]
    pub fn set_u32(&mut self, offset: usize, value: u32) {
        self.bytes_mut(offset, 4).copy_from_slice(&value.to_ne_bytes());
    }

    #[inline]
    pub fn set_u64(&mut self, offset: usize, value: u64) {
        self.bytes_mut(offset, 8).copy_from_slice(&value.to_ne_bytes());
    }

    /// Stores `value` at the 4-aligned `offset` in one instruction: the publish point of a
    /// write. A process killed around it leaves either the old or the new word, never a mix.
    #[inline]
    pub fn publish_u32(&mut self, offset: usize, value: u32) {
        self.check(offset, 4);
        let ptr = self.range.base.wrapping_add(offset);
        assert!((ptr as usize).is_multiple_of(4), "publish at unaligned offset {offset}");
        // SAFETY: in bounds and aligned (checked); `&mut self` and the lock exclude every
        // other accessor, so this atomic store races with nothing.
        unsafe { (*ptr.cast::<AtomicU32>()).store(value, Ordering::Release) };
    }

    /// Stores `value` at the 8-aligned `offset` in one instruction, so that a process killed
    /// around it leaves the old or the new value: in-place updates (expiry, bump).
    #[inline]
    pub fn publish_u64(&mut self, offset: usize, value: u64) {
        self.check(offset, 8);
        let ptr = self.range.base.wrapping_add(offset);
        assert!((ptr as usize).is_multiple_of(8), "publish at unaligned offset {offset}");
        // SAFETY: in bounds and aligned (checked); exclusive access as in `publish_u32`.
        unsafe { (*ptr.cast::<AtomicU64>()).store(value, Ordering::Release) };
    }

    /// Copies `len` bytes from `src` to `dst` within the guarded range (ranges may overlap).
    #[inline]
    pub fn copy_within(&mut self, src: usize, dst: usize, len: usize) {
        self.check_slice(src, len);
        self.check_slice(dst, len);
        // SAFETY: both ranges in bounds (checked); `ptr::copy` allows overlap; exclusive
        // access as in `bytes_mut`.
        unsafe { std::ptr::copy(self.range.base.add(src), self.range.base.add(dst), len) };
    }
}

impl Drop for ShardGuard<'_> {
    fn drop(&mut self) {
        // A stray write over the mutex's kind word while this guard held it: written back
        // (here, before glibc's unlock reads it), and the next locker repairs the shard.
        if self.mutex.restore_kind() {
            self.set_u32(S_DIRTY, 1);
        }
        // A panic under the lock (a bug) may have left the shard half-written: make the next
        // locker repair it.
        // The version stays odd then, so optimistic readers take the lock and repair too.
        if std::thread::panicking() {
            self.set_u32(S_DIRTY, 1);
        } else {
            self.version.store(self.writing + 1, Ordering::Release);
        }
        // A guard dropped with the repair unfinished (a panic) still marks the mutex
        // consistent: the shard's dirty word, set before repairing, makes the next locker
        // repair again, and the mutex never becomes ENOTRECOVERABLE.
        self.mark_consistent();
        // SAFETY: a guard exists only while this thread holds the lock (constructed by
        // `lock` on success), and `ShardGuard` is !Send, so this is the locking thread.
        unsafe { self.mutex.unlock() };
    }
}

impl ShardView for ShardGuard<'_> {
    fn geo(&self) -> &Geometry {
        self.range.geo
    }

    #[inline]
    fn u8_at(&self, offset: usize) -> u8 {
        ShardGuard::u8_at(self, offset)
    }

    #[inline]
    fn u32_at(&self, offset: usize) -> u32 {
        ShardGuard::u32_at(self, offset)
    }

    #[inline]
    fn u64_at(&self, offset: usize) -> u64 {
        ShardGuard::u64_at(self, offset)
    }

    #[inline]
    fn bytes_eq(&self, offset: usize, expected: &[u8]) -> bool {
        self.bytes(offset, expected.len()) == expected
    }

    #[inline]
    fn append_to(
        &self,
        offset: usize,
        len: usize,
        out: &mut Vec<u8>,
        _crc: impl FnOnce() -> u32,
    ) -> Option<u32> {
        out.extend_from_slice(self.bytes(offset, len));
        None
    }

    #[inline]
    fn prefetch(&self, offset: usize, len: usize) {
        self.range.prefetch(offset, len);
    }

    #[inline]
    fn stamp_at(&self, offset: usize) -> u32 {
        self.range.stamp(offset).load(Ordering::Relaxed)
    }
}

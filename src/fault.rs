//! Fault injection for tests (feature `fault-injection`): a hook called at a chosen point of
//! a write while the shard lock is held, so a test can SIGKILL the process exactly there;
//! and an offset added to the store's clock in this process, so a test or fuzzer can make
//! the wall clock jump forward and back. Without the feature, [`hit`] is an empty inline
//! function and the offset is a constant 0.
#![forbid(unsafe_code)]

/// Where a write stops to call the armed hook. All are inside the shard lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FaultPoint {
    /// Right after the lock is acquired, before anything is written.
    LockHeld = 1,
    /// Halfway through copying the new value into its fresh block.
    MidCopy = 2,
    /// New record complete, index not yet switched to it.
    BeforePublish = 3,
    /// Index switched to the new record, old block not yet freed (replacing writes only).
    AfterPublish = 4,
    /// After the first slot copy of a backward-shift removal from the index.
    MidShift = 5,
    /// Halfway through a repair's rebuilding of the free lists.
    MidRepair = 6,
    /// While merging adjacent free blocks: the first new block header is written, the rest
    /// of the run still has the old ones.
    MidMerge = 7,
    /// While the index grows: its new size is stored, no slot has moved yet.
    MidGrow = 8,
    /// While the index shrinks: its new size is stored, and a slot past it has been copied
    /// into the active slots but not yet emptied.
    MidShrink = 9,
    /// A full shard's rewrite: the new record is published in the spare block, and not yet
    /// copied over the old record's block.
    InSpare = 10,
    /// Writing a snapshot: the first shard's sessions are written to the temporary file, the
    /// rest not yet (no shard lock held).
    MidSnapshot = 11,
}

#[cfg(feature = "fault-injection")]
mod armed {
    use super::FaultPoint;
    use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

    static POINT: AtomicU8 = AtomicU8::new(0);
    static HOOK: AtomicUsize = AtomicUsize::new(0);
    static HOOKS: std::sync::Mutex<Vec<fn()>> = std::sync::Mutex::new(Vec::new());

    /// Calls `hook` the next times a write in this process reaches `point`.
    pub fn arm(point: FaultPoint, hook: fn()) {
        let mut hooks = HOOKS.lock().unwrap_or_else(|e| e.into_inner());
        hooks.push(hook);
        HOOK.store(hooks.len(), Ordering::SeqCst);
        POINT.store(point as u8, Ordering::SeqCst);
    }

    /// Stops calling the hook.
    pub fn disarm() {
        POINT.store(0, Ordering::SeqCst);
    }

    static CLOCK_OFFSET_MS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

    /// Moves the store's clock in this process by `delta_ms` (negative: back in time), as
    /// a wall-clock jump would. Cumulative; `reset_clock` undoes it.
    pub fn shift_clock(delta_ms: i64) {
        CLOCK_OFFSET_MS.fetch_add(delta_ms, Ordering::SeqCst);
    }

    /// Puts the store's clock back to the wall clock.
    pub fn reset_clock() {
        CLOCK_OFFSET_MS.store(0, Ordering::SeqCst);
    }

    #[inline]
    pub(crate) fn clock_offset_ms() -> i64 {
        CLOCK_OFFSET_MS.load(Ordering::Relaxed)
    }

    /// One relaxed load and compare where nothing is armed (the benches are built with this
    /// feature too); the call to the hook is kept out of line.
    #[inline]
    pub(crate) fn hit(point: FaultPoint) {
        if POINT.load(Ordering::Relaxed) == point as u8 {
            fire();
        }
    }

    #[cold]
    #[inline(never)]
    fn fire() {
        let index = HOOK.load(Ordering::SeqCst);
        let hook = HOOKS.lock().unwrap_or_else(|e| e.into_inner())[index - 1];
        hook();
    }
}

#[cfg(feature = "fault-injection")]
pub use armed::{arm, disarm, reset_clock, shift_clock};
#[cfg(feature = "fault-injection")]
pub(crate) use armed::{clock_offset_ms, hit};

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn hit(_point: FaultPoint) {}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn clock_offset_ms() -> i64 {
    0
}

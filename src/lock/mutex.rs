//! A robust, process-shared, error-checking pthread mutex living in the segment.
//!
//! The state word belongs to glibc (its `__lock` futex word: owner TID, `FUTEX_WAITERS`,
//! `FUTEX_OWNER_DIED`); what this module relies on is its contract:
//!
//! | locker sees            | meaning                                  | we do                       |
//! |------------------------|------------------------------------------|-----------------------------|
//! | `0`                    | acquired, previous holder unlocked       | proceed                     |
//! | `EOWNERDEAD`           | acquired, previous holder died holding it| repair, `make_consistent`   |
//! | `EBUSY` (trylock)      | held by a live thread                    | spin, yield, then sleep     |
//! | `ETIMEDOUT`            | still held at the deadline               | `LockFailure::Timeout`      |
//! | `EDEADLK`              | this thread already holds it             | `LockFailure::Errno`        |
//! | `ENOTRECOVERABLE`      | a holder unlocked without consistent     | never produced (see guard)  |
//!
//! The mutex's kind word (glibc's `__kind`: type, robust, process-shared and priority
//! protocol bits) never changes after `init_mutex`, and glibc trusts it: a stray write that
//! sets its priority-protect bits makes the next lock abort the process in an assertion
//! (`__pthread_tpp_change_priority`). So every lock and unlock first compares it with the
//! word a fresh mutex with these attributes has, and writes that word back if it differs
//! ([`Acquired::kind_restored`]: the shard is then repaired, as after other damage). Where
//! the word is found is learnt at run time, by initialising two local mutexes, one with these
//! attributes and one with the defaults, and finding the one 32-bit word that differs; if
//! that is not exactly one word (another C library), the check is off.
//!
//! The fast path is one `pthread_mutex_trylock` (a compare-and-swap in glibc). The slow path
//! spins briefly, because a cross-CPU futex wakeup costs tens of microseconds while critical
//! sections are well under one, then sleeps in `pthread_mutex_clocklock` on
//! `CLOCK_MONOTONIC`, so a wall-clock jump cannot stretch or cut the deadline.

use std::io;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use libc::{c_int, clockid_t, pthread_mutex_t, timespec};

use crate::format::layout::MUTEX_AREA;
use crate::segment::FreshSegment;

const _: () = assert!(std::mem::size_of::<pthread_mutex_t>() <= MUTEX_AREA);
const _: () = assert!(std::mem::align_of::<pthread_mutex_t>() <= 128);

extern "C" {
    // glibc 2.30 and later; not yet declared by the libc crate.
    fn pthread_mutex_clocklock(
        mutex: *mut pthread_mutex_t,
        clock: clockid_t,
        abstime: *const timespec,
    ) -> c_int;
}

/// Trylock attempts with a spin hint between them before yielding.
const SPINS: u32 = 100;
/// `sched_yield` rounds before sleeping on the futex.
const YIELDS: u32 = 4;

/// A lock acquired.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Acquired {
    /// The previous holder died holding the lock: the protected state may be half-written.
    pub owner_died: bool,
    /// Nanoseconds spent waiting (0 on the fast path).
    pub waited_ns: u64,
    /// The mutex's kind word had been overwritten, and was written back before locking: a
    /// stray write hit the shard, which wants a repair.
    pub kind_restored: bool,
}

/// A lock not acquired.
#[derive(Clone, Copy, Debug)]
pub(crate) enum LockFailure {
    /// Still held by a live process at the deadline.
    Timeout(Duration),
    /// Another error from pthreads.
    Errno(i32),
}

/// Handle to a mutex inside a mapped segment.
pub(crate) struct RobustMutex {
    ptr: *mut pthread_mutex_t,
}

/// Initialises the robust mutex at byte `offset` of a segment not yet shared.
pub(crate) fn init_shard_mutex(fresh: &mut FreshSegment, offset: usize) -> io::Result<()> {
    assert!(offset.is_multiple_of(128), "mutex at unaligned offset {offset}");
    let ptr = fresh.raw_range_unshared(offset, MUTEX_AREA);
    // SAFETY: the range is inside the mapping (`raw_range` checks), 128-aligned (asserted,
    // the mapping being page-aligned), and a FreshSegment is used by no other thread or
    // process, so no one uses these bytes as a mutex yet.
    unsafe { init_mutex(ptr) }
}

/// Initialises a robust, process-shared, error-checking mutex in place.
///
/// # Safety
/// - `ptr` points to at least `MUTEX_AREA` writable bytes inside a live shared mapping,
///   aligned to 128;
/// - no thread of any process is using those bytes as a mutex yet (setup, before the segment
///   is shared).
unsafe fn init_mutex(ptr: *mut u8) -> io::Result<()> {
    // SAFETY: the caller's contract is `init_with`'s.
    unsafe { init_with(ptr, true) }
}

/// `init_mutex` with this module's attributes (`ours`) or the defaults.
///
/// # Safety
/// As [`init_mutex`], except that the bytes need not be shared.
unsafe fn init_with(ptr: *mut u8, ours: bool) -> io::Result<()> {
    let check = |rc: c_int| if rc == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(rc)) };
    let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
    // SAFETY: `attr` is a local that pthread_mutexattr_init initialises before any other use,
    // and `ptr` satisfies this function's preconditions for pthread_mutex_init.
    unsafe {
        check(libc::pthread_mutexattr_init(attr.as_mut_ptr()))?;
        let attr = attr.as_mut_ptr();
        let result = (|| {
            if ours {
                check(libc::pthread_mutexattr_setpshared(attr, libc::PTHREAD_PROCESS_SHARED))?;
                check(libc::pthread_mutexattr_setrobust(attr, libc::PTHREAD_MUTEX_ROBUST))?;
                check(libc::pthread_mutexattr_settype(attr, libc::PTHREAD_MUTEX_ERRORCHECK))?;
            }
            check(libc::pthread_mutex_init(ptr.cast::<pthread_mutex_t>(), attr))
        })();
        libc::pthread_mutexattr_destroy(attr);
        result
    }
}

/// Where the kind word lies in a mutex and the value it has in one made by [`init_mutex`]:
/// the only aligned 32-bit word in which a fresh mutex with this module's attributes and a
/// fresh default one differ. `None` (the check off) unless there is exactly one.
///
/// Computed at the first call in each process and kept in an atomic, not a `OnceLock`: two
/// threads may both compute it (the same answer), but none ever waits for another, so a
/// child forked while a thread of its parent was computing it does not block forever.
fn kind_word() -> Option<(usize, i32)> {
    /// 0: not computed; else bit 63, then bit 62 if there is a word, its offset in bits 32
    /// to 39 and its value in the low 32 bits.
    static KIND: AtomicU64 = AtomicU64::new(0);
    const KNOWN: u64 = 1 << 63;
    const FOUND: u64 = 1 << 62;
    let mut known = KIND.load(Ordering::Relaxed);
    if known == 0 {
        known = KNOWN
            | find_kind_word()
                .map_or(0, |(at, kind)| FOUND | (at as u64) << 32 | u64::from(kind as u32));
        KIND.store(known, Ordering::Relaxed);
    }
    (known & FOUND != 0).then_some(((known >> 32 & 0xFF) as usize, known as u32 as i32))
}

/// A local home for a mutex, aligned as a shard's is.
#[repr(C, align(128))]
struct Area([u8; MUTEX_AREA]);

fn find_kind_word() -> Option<(usize, i32)> {
    let (mut ours, mut plain) = (Area([0; MUTEX_AREA]), Area([0; MUTEX_AREA]));
    // SAFETY: both are local, writable, aligned to 128 and MUTEX_AREA bytes long, and no
    // thread uses them as mutexes (they are only read below, never locked).
    let made = unsafe {
        init_with(ours.0.as_mut_ptr(), true).is_ok()
            && init_with(plain.0.as_mut_ptr(), false).is_ok()
    };
    let size = std::mem::size_of::<pthread_mutex_t>();
    let word = |a: &Area, at: usize| i32::from_ne_bytes(a.0[at..at + 4].try_into().unwrap());
    let mut differ = (0..size / 4).map(|i| i * 4).filter(|&at| word(&ours, at) != word(&plain, at));
    match (made, differ.next(), differ.next()) {
        (true, Some(at), None) => Some((at, word(&ours, at))),
        _ => None,
    }
}

impl RobustMutex {
    /// # Safety
    /// - `ptr` points to a mutex initialised by [`init_mutex`] in a mapping that outlives the
    ///   returned value.
    pub unsafe fn new(ptr: *mut u8) -> Self {
        RobustMutex { ptr: ptr.cast() }
    }

    /// Writes the kind word back if a stray write changed it; returns whether it had to.
    /// One relaxed load and compare when it is intact.
    #[inline]
    pub fn restore_kind(&self) -> bool {
        let Some((at, kind)) = kind_word() else { return false };
        // SAFETY: `at + 4 <= size_of::<pthread_mutex_t>()` and `at` is 4-aligned (kind_word),
        // inside the mutex the constructor's contract guarantees, in a live shared mapping;
        // glibc only loads the word after `pthread_mutex_init` (relaxed atomic loads in
        // current versions; only `pthread_mutex_destroy`, never called here, stores to it),
        // and every process stores only `kind` there, the value it always had.
        let word = unsafe { AtomicI32::from_ptr(self.ptr.cast::<u8>().add(at).cast::<i32>()) };
        if word.load(Ordering::Relaxed) == kind {
            return false;
        }
        word.store(kind, Ordering::Relaxed);
        true
    }

    /// Acquires the mutex, waiting at most `timeout` for a live holder.
    #[inline]
    pub fn lock(&self, timeout: Duration) -> Result<Acquired, LockFailure> {
        let kind_restored = self.restore_kind();
        // SAFETY: `self.ptr` is an initialised mutex in a live mapping (constructor contract).
        match unsafe { libc::pthread_mutex_trylock(self.ptr) } {
            0 => Ok(Acquired { owner_died: false, waited_ns: 0, kind_restored }),
            libc::EOWNERDEAD => Ok(Acquired { owner_died: true, waited_ns: 0, kind_restored }),
            libc::EBUSY => self.lock_slow(timeout, kind_restored),
            e => Err(LockFailure::Errno(e)),
        }
    }

    #[cold]
    fn lock_slow(&self, timeout: Duration, restored: bool) -> Result<Acquired, LockFailure> {
        let start = Instant::now();
        // The kind word is checked again before each call into glibc: a stray write may land
        // while this thread waits.
        let mut restored = restored;
        let done = |owner_died, kind_restored| {
            Ok(Acquired { owner_died, waited_ns: elapsed_ns(start), kind_restored })
        };
        for round in 0..SPINS + YIELDS {
            if round < SPINS {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
            restored |= self.restore_kind();
            // SAFETY: as in `lock`.
            match unsafe { libc::pthread_mutex_trylock(self.ptr) } {
                0 => return done(false, restored),
                libc::EOWNERDEAD => return done(true, restored),
                libc::EBUSY => {}
                e => return Err(LockFailure::Errno(e)),
            }
        }
        let deadline = monotonic_deadline(timeout.saturating_sub(start.elapsed()));
        loop {
            restored |= self.restore_kind();
            // SAFETY: as in `lock`; `deadline` is a valid timespec on the stack.
            match unsafe { pthread_mutex_clocklock(self.ptr, libc::CLOCK_MONOTONIC, &deadline) } {
                0 => return done(false, restored),
                libc::EOWNERDEAD => return done(true, restored),
                libc::ETIMEDOUT => return Err(LockFailure::Timeout(start.elapsed())),
                libc::EINTR | libc::EAGAIN => continue,
                e => return Err(LockFailure::Errno(e)),
            }
        }
    }

    /// Releases the mutex.
    ///
    /// # Safety
    /// - the calling thread holds this mutex.
    pub unsafe fn unlock(&self) {
        // A stray write while we held it must not reach glibc's unlock either.
        let _ = self.restore_kind();
        // SAFETY: the caller holds the lock (precondition); the mutex is initialised.
        let rc = unsafe { libc::pthread_mutex_unlock(self.ptr) };
        debug_assert_eq!(rc, 0, "pthread_mutex_unlock failed");
    }

    /// Marks the state protected by a mutex acquired with `owner_died` as consistent again.
    ///
    /// # Safety
    /// - the calling thread holds this mutex, acquired with `owner_died == true`.
    pub unsafe fn make_consistent(&self) {
        let _ = self.restore_kind();
        // SAFETY: the caller holds the lock after EOWNERDEAD (precondition).
        let rc = unsafe { libc::pthread_mutex_consistent(self.ptr) };
        debug_assert_eq!(rc, 0, "pthread_mutex_consistent failed");
    }
}

fn elapsed_ns(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

fn monotonic_deadline(after: Duration) -> timespec {
    let mut now = timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid out-pointer; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let nanos = now.tv_nsec as u64 + u64::from(after.subsec_nanos());
    timespec {
        tv_sec: now
            .tv_sec
            .saturating_add(after.as_secs().min(i64::MAX as u64 / 2) as i64)
            .saturating_add((nanos / 1_000_000_000) as i64),
        tv_nsec: (nanos % 1_000_000_000) as i64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kind_word_is_found() {
        let (at, kind) = kind_word().expect("one word tells these attributes from the defaults");
        assert!(at + 4 <= std::mem::size_of::<pthread_mutex_t>() && at % 4 == 0);
        assert_ne!(kind, 0);
    }

    /// A stray write that sets the priority-protect bits (and a ceiling) in the kind word
    /// would make glibc abort the process on the next lock; the lock writes the word back
    /// first and says so, and the mutex keeps working.
    #[test]
    fn an_overwritten_kind_word_is_restored_before_glibc_sees_it() {
        let (at, kind) = kind_word().unwrap();
        let mut area = Area([0; MUTEX_AREA]);
        let ptr = area.0.as_mut_ptr();
        // SAFETY: `at + 4` lies within the local area (kind_word), 4-aligned; only this thread
        // uses it.
        let poke = |v: i32| unsafe { ptr.add(at).cast::<i32>().write_volatile(v) };
        // SAFETY: as `poke`.
        let peek = || unsafe { ptr.add(at).cast::<i32>().read_volatile() };
        // SAFETY: local, aligned, MUTEX_AREA bytes, used by this thread alone.
        unsafe { init_mutex(ptr).unwrap() };
        // SAFETY: as above; `area` outlives `mutex`.
        let mutex = unsafe { RobustMutex::new(ptr) };
        for stray in [kind | 0x40 | 0x7FF << 19, 0x40, -1, 0] {
            poke(stray);
            let acquired = mutex.lock(Duration::from_secs(1)).unwrap();
            assert!(acquired.kind_restored && !acquired.owner_died, "stray {stray:#x}");
            // SAFETY: this thread holds it.
            unsafe { mutex.unlock() };
            let acquired = mutex.lock(Duration::from_secs(1)).unwrap();
            assert!(!acquired.kind_restored);
            // Overwritten while held: the unlock restores it too.
            poke(stray);
            // SAFETY: this thread holds it.
            unsafe { mutex.unlock() };
            assert_eq!(peek(), kind);
        }
    }
}

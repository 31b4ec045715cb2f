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
//! The fast path is one `pthread_mutex_trylock` (a compare-and-swap in glibc). The slow path
//! spins briefly, because a cross-CPU futex wakeup costs tens of microseconds while critical
//! sections are well under one, then sleeps in `pthread_mutex_clocklock` on
//! `CLOCK_MONOTONIC`, so a wall-clock jump cannot stretch or cut the deadline.

use std::io;
use std::time::{Duration, Instant};

use libc::{c_int, clockid_t, pthread_mutex_t, timespec};

use crate::layout::MUTEX_AREA;

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

/// Initialises a robust, process-shared, error-checking mutex in place.
///
/// # Safety
/// - `ptr` points to at least `MUTEX_AREA` writable bytes inside a live shared mapping,
///   aligned to 128;
/// - no thread of any process is using those bytes as a mutex yet (setup, before the segment
///   is shared).
pub(crate) unsafe fn init_mutex(ptr: *mut u8) -> io::Result<()> {
    let check = |rc: c_int| if rc == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(rc)) };
    let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
    // SAFETY: `attr` is a local that pthread_mutexattr_init initialises before any other use,
    // and `ptr` satisfies this function's preconditions for pthread_mutex_init.
    unsafe {
        check(libc::pthread_mutexattr_init(attr.as_mut_ptr()))?;
        let attr = attr.as_mut_ptr();
        let result = (|| {
            check(libc::pthread_mutexattr_setpshared(attr, libc::PTHREAD_PROCESS_SHARED))?;
            check(libc::pthread_mutexattr_setrobust(attr, libc::PTHREAD_MUTEX_ROBUST))?;
            check(libc::pthread_mutexattr_settype(attr, libc::PTHREAD_MUTEX_ERRORCHECK))?;
            check(libc::pthread_mutex_init(ptr.cast::<pthread_mutex_t>(), attr))
        })();
        libc::pthread_mutexattr_destroy(attr);
        result
    }
}

impl RobustMutex {
    /// # Safety
    /// - `ptr` points to a mutex initialised by [`init_mutex`] in a mapping that outlives the
    ///   returned value.
    pub unsafe fn new(ptr: *mut u8) -> Self {
        RobustMutex { ptr: ptr.cast() }
    }

    /// Acquires the mutex, waiting at most `timeout` for a live holder.
    #[inline]
    pub fn lock(&self, timeout: Duration) -> Result<Acquired, LockFailure> {
        // SAFETY: `self.ptr` is an initialised mutex in a live mapping (constructor contract).
        match unsafe { libc::pthread_mutex_trylock(self.ptr) } {
            0 => Ok(Acquired { owner_died: false, waited_ns: 0 }),
            libc::EOWNERDEAD => Ok(Acquired { owner_died: true, waited_ns: 0 }),
            libc::EBUSY => self.lock_slow(timeout),
            e => Err(LockFailure::Errno(e)),
        }
    }

    #[cold]
    fn lock_slow(&self, timeout: Duration) -> Result<Acquired, LockFailure> {
        let start = Instant::now();
        let done = |owner_died| Ok(Acquired { owner_died, waited_ns: elapsed_ns(start) });
        for round in 0..SPINS + YIELDS {
            if round < SPINS {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
            // SAFETY: as in `lock`.
            match unsafe { libc::pthread_mutex_trylock(self.ptr) } {
                0 => return done(false),
                libc::EOWNERDEAD => return done(true),
                libc::EBUSY => {}
                e => return Err(LockFailure::Errno(e)),
            }
        }
        let deadline = monotonic_deadline(timeout.saturating_sub(start.elapsed()));
        loop {
            // SAFETY: as in `lock`; `deadline` is a valid timespec on the stack.
            match unsafe { pthread_mutex_clocklock(self.ptr, libc::CLOCK_MONOTONIC, &deadline) } {
                0 => return done(false),
                libc::EOWNERDEAD => return done(true),
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
        // SAFETY: the caller holds the lock (precondition); the mutex is initialised.
        let rc = unsafe { libc::pthread_mutex_unlock(self.ptr) };
        debug_assert_eq!(rc, 0, "pthread_mutex_unlock failed");
    }

    /// Marks the state protected by a mutex acquired with `owner_died` as consistent again.
    ///
    /// # Safety
    /// - the calling thread holds this mutex, acquired with `owner_died == true`.
    pub unsafe fn make_consistent(&self) {
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

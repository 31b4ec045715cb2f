//! The fork gate: a process-local mutex that the master's coordinator thread holds while it
//! works (locking shards, sweeping, logging), and that `fork()` takes too, through a
//! `pthread_atfork` prepare handler. So a fork never happens while the coordinator is in the
//! middle of anything: the child never inherits a process-local lock (a logger's, stdout's)
//! held by a thread it does not have, and the coordinator holds no shard lock at that instant.
//!
//! The handlers run in the forking thread: prepare locks the gate and parks the guard in a
//! thread-local; the parent and child handlers, in that same thread (the child's only
//! thread is a copy of it), take the guard back and drop it, unlocking each process's copy.
//! The child handler also gives the signals back their default actions
//! (`segment::signals::reset_in_child`), and closes the descriptors marked [`parent_only`]:
//! the Redis tracker's connection, which a worker would otherwise keep open after its master
//! has closed it, or has died.

use std::cell::RefCell;
use std::sync::atomic::{AtomicI32, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, Once};

static GATE: Mutex<()> = Mutex::new(());
static REGISTER: Once = Once::new();
/// Descriptors a forked child closes at once, each slot one or -1. Changed only under the
/// gate, so a fork finds them as they are.
static PARENT_ONLY: [AtomicI32; 4] = [const { AtomicI32::new(-1) }; 4];

thread_local! {
    static HELD: RefCell<Option<MutexGuard<'static, ()>>> = const { RefCell::new(None) };
}

extern "C" fn prepare() {
    let guard = GATE.lock().unwrap_or_else(|e| e.into_inner());
    HELD.with(|held| *held.borrow_mut() = Some(guard));
}

extern "C" fn release() {
    HELD.with(|held| drop(held.borrow_mut().take()));
}

extern "C" fn release_in_child() {
    for slot in &PARENT_ONLY {
        let fd = slot.swap(-1, Relaxed);
        if fd >= 0 {
            // SAFETY: `fd` was open in the parent at the fork (marked under the gate, which
            // the fork held, and unmarked before it is closed), so it names the same open
            // file here; nothing in the child uses it (its owner, a thread of the parent, does
            // not exist here), and `close` is async-signal-safe.
            unsafe { libc::close(fd) };
        }
    }
    release();
    crate::segment::signals::reset_in_child();
}

/// Registers the atfork handlers (once per process).
pub(crate) fn install() {
    REGISTER.call_once(|| {
        // SAFETY: the three handlers are `extern "C" fn()` with no preconditions; prepare
        // and release only touch a static mutex and a thread-local, and a thread cannot be
        // forking twice at once, so prepare's guard is always taken back by the release
        // that follows in the parent and in the child.
        let rc =
            unsafe { libc::pthread_atfork(Some(prepare), Some(release), Some(release_in_child)) };
        debug_assert_eq!(rc, 0, "pthread_atfork failed");
    });
}

/// Marks `fd`, a connection of a thread of this process, as not to be kept by a child forked
/// from now on. Returns false (and the children keep it) if every slot is taken.
#[cfg(feature = "redis")]
pub(crate) fn parent_only(fd: std::os::fd::RawFd) -> bool {
    let _gate = hold();
    PARENT_ONLY.iter().any(|slot| slot.compare_exchange(-1, fd, Relaxed, Relaxed).is_ok())
}

/// Unmarks `fd`; call it before closing `fd`, so that no child forked after the close can
/// take the number for a descriptor it names by then.
#[cfg(feature = "redis")]
pub(crate) fn unmark(fd: std::os::fd::RawFd) {
    let _gate = hold();
    for slot in &PARENT_ONLY {
        let _ = slot.compare_exchange(fd, -1, Relaxed, Relaxed);
    }
}

/// Holds the gate: no fork can start until the guard is dropped.
pub(crate) fn hold() -> MutexGuard<'static, ()> {
    GATE.lock().unwrap_or_else(|e| e.into_inner())
}

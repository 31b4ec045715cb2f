//! Removing named segments when the master dies of SIGTERM or SIGINT.
//!
//! `setup()` of a named segment records its path and the master's pid in a fixed table and,
//! for each of the two signals still at its default action, installs a handler. The handler
//! does only async-signal-safe things: it reads the table (atomics) and calls `unlink(2)` for
//! the entries whose pid is its own. Then, if it is still the installed handler, it restores
//! the default action and re-raises the signal, so the process dies of it as it would have;
//! if another handler was installed later and called it (signal-hook and tokio chain to the
//! previous handler), it returns and leaves the process to that handler's graceful shutdown:
//! the open mappings stay valid, only new attaches by name fail. A signal with a handler of
//! the application's at setup is left alone: that application exits normally and dropping
//! the `Master` removes the segment. Forked children get the default actions back
//! ([`reset_in_child`], from the fork gate's child handler): a worker never removes anything.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};

const ENTRIES: usize = 16;
const PATH_MAX: usize = 128;

struct Entry {
    pid: AtomicU32,
    path: [AtomicU8; PATH_MAX],
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Entry = Entry { pid: AtomicU32::new(0), path: [const { AtomicU8::new(0) }; PATH_MAX] };
static TABLE: [Entry; ENTRIES] = [EMPTY; ENTRIES];
static INSTALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(signal: libc::c_int) {
    // SAFETY: getpid is async-signal-safe and has no preconditions.
    let me = unsafe { libc::getpid() } as u32;
    for entry in &TABLE {
        if entry.pid.load(Ordering::Acquire) != me {
            continue;
        }
        let mut path = [0u8; PATH_MAX];
        for (byte, stored) in path.iter_mut().zip(&entry.path) {
            *byte = stored.load(Ordering::Relaxed);
        }
        path[PATH_MAX - 1] = 0;
        // SAFETY: `path` is a NUL-terminated buffer on this stack frame; unlink is
        // async-signal-safe.
        unsafe { libc::unlink(path.as_ptr().cast()) };
        // Removed: the Master's drop, if the process lives on, must not remove the name again
        // (a new master may own it by then).
        entry.pid.store(0, Ordering::Release);
    }
    if is_ours(signal) {
        // SAFETY: signal and raise are async-signal-safe; restoring the default action and
        // re-raising ends the process as the signal would have.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
    }
}

fn handler_address() -> usize {
    on_signal as extern "C" fn(libc::c_int) as usize
}

/// Whether `on_signal` is the installed handler of `signal` (async-signal-safe).
fn is_ours(signal: libc::c_int) -> bool {
    // SAFETY: a zeroed sigaction is a valid output buffer; a null new action only reads.
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &mut current) == 0
            && current.sa_sigaction == handler_address()
    }
}

/// In a forked child: gives SIGTERM and SIGINT their default actions back where the handler
/// is ours, and empties the table, so a worker never removes its master's segment and can
/// install handlers (and set up stores) of its own.
pub(crate) fn reset_in_child() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        if is_ours(signal) {
            // SAFETY: restoring the default action of a signal has no preconditions.
            unsafe { libc::signal(signal, libc::SIG_DFL) };
        }
    }
    for entry in &TABLE {
        entry.pid.store(0, Ordering::Release);
    }
    INSTALLED.store(false, Ordering::Release);
}

/// Records `path` for removal if this process dies of SIGTERM or SIGINT, and installs the
/// handler where those signals still have their default action. Returns the entry's index.
pub(crate) fn register(path: &str) -> Option<usize> {
    if path.len() >= PATH_MAX {
        return None;
    }
    let me = std::process::id();
    let index = TABLE.iter().position(|e| {
        e.pid.compare_exchange(0, u32::MAX, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    })?;
    let entry = &TABLE[index];
    for (i, stored) in entry.path.iter().enumerate() {
        stored.store(path.as_bytes().get(i).copied().unwrap_or(0), Ordering::Relaxed);
    }
    entry.pid.store(me, Ordering::Release);
    if !INSTALLED.swap(true, Ordering::AcqRel) {
        for signal in [libc::SIGTERM, libc::SIGINT] {
            install_if_default(signal);
        }
    }
    Some(index)
}

/// Forgets entry `index` as the `Master` is dropped. Returns false if the signal handler
/// already removed the segment (and the name may belong to another master by now).
pub(crate) fn unregister(index: usize) -> bool {
    let me = std::process::id();
    TABLE[index].pid.compare_exchange(me, 0, Ordering::AcqRel, Ordering::Acquire).is_ok()
}

fn install_if_default(signal: libc::c_int) {
    // SAFETY: zeroed sigaction structs are valid inputs and outputs; sigaction with a null
    // new action only reads the current one.
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(signal, std::ptr::null(), &mut current) != 0
            || current.sa_sigaction != libc::SIG_DFL
        {
            return;
        }
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler_address();
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(signal, &action, std::ptr::null_mut());
    }
}

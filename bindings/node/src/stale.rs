//! Segments that earlier primaries left behind, and the lock that tells them from live ones.
//!
//! A primary removes its segment when it exits, calls `process.exit()`, or ends of SIGINT or
//! SIGTERM (`index.js`). Any other end leaves it: SIGKILL, SIGHUP, SIGQUIT and the other
//! signals whose default action ends the process, a crash of native code, an abort. Such a
//! segment would hold its `memorySize` of `/dev/shm` until reboot, so `setup()` first
//! removes the leftovers of this package (`cluster-session-store.node-<pid>-<hex>`, the
//! names `index.js` makes) that belong to this user.
//!
//! What decides that a segment is left over is a lock, not a pid: the primary holds
//! `flock(LOCK_SH)` on its segment file from `setup()` to `shutdown()` ([`SegmentLock`]),
//! and the kernel drops that lock when the process ends, however it ends. Cleanup removes a
//! file only while it holds `flock(LOCK_EX | LOCK_NB)` on it, which it gets only where no
//! primary holds its lock. So a live primary's segment is never removed, even where its pid
//! means nothing here: containers of one pod share `/dev/shm` but not their pid namespace
//! (often with one uid), and a system without `/proc` shows no pid at all. A pid that is
//! visible in `/proc` still keeps its segment (a cheap first filter, and the protection of
//! segments made by earlier versions of this package, which held no lock).
//!
//! Workers hold no lock: a segment whose primary has died is removed even while workers of
//! that primary still run. That costs them nothing: removing the file removes its name,
//! not their mappings, and they serve on until they exit (Node's workers exit when the
//! primary's IPC channel closes); the memory is freed when the last of them unmaps it. No
//! one could attach to it anymore in any case, as only the primary forks workers.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Where the crate creates named segments, and the prefix of their file names.
const SHM_DIR: &str = "/dev/shm";
const FILE_PREFIX: &str = "cluster-session-store.";
const PREFIX: &str = "cluster-session-store.node-";

/// The file of named segment `name`.
fn segment_path(name: &str) -> String {
    format!("{SHM_DIR}/{FILE_PREFIX}{name}")
}

/// Opens a segment file for its lock only: read-only, never through a symbolic link.
fn open_for_lock(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
}

/// Whether `file` (open) is still the file at `path`: neither removed nor replaced since.
fn still_at(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(open), Ok(named)) => open.dev() == named.dev() && open.ino() == named.ino(),
        _ => false,
    }
}

/// The primary's shared lock on its segment file, held until dropped (or the process ends):
/// while it is held, no `setup()` of another primary removes the segment.
#[derive(Debug)]
pub struct SegmentLock {
    _file: File,
}

impl SegmentLock {
    /// Takes the shared lock on the file of segment `name`, which this process just created.
    /// Fails if the file is gone or was replaced before the lock was taken (another
    /// primary's cleanup got there first: it saw the file before this lock existed).
    pub fn acquire(name: &str) -> std::io::Result<SegmentLock> {
        let path = segment_path(name);
        let path = Path::new(&path);
        let file = open_for_lock(path)?;
        // Blocks only while a cleanup holds its exclusive lock, for the length of an unlink.
        file.lock_shared()?;
        if !still_at(&file, path) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{} was removed as it was being created", path.display()),
            ));
        }
        Ok(SegmentLock { _file: file })
    }
}

/// The primary pid in a segment file name this package made, if it is one.
fn primary_pid(file_name: &str) -> Option<u32> {
    let rest = file_name.strip_prefix(PREFIX)?;
    let (pid, suffix) = rest.split_once('-')?;
    if suffix.is_empty() || !suffix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    pid.parse().ok()
}

/// Removes the file at `path` if it is a regular file of user `me` and no process holds a
/// lock on it (its primary has ended). Returns whether it removed it.
fn remove_if_unlocked(path: &Path, me: u32) -> bool {
    let Ok(file) = open_for_lock(path) else { return false };
    if !file.metadata().is_ok_and(|m| m.is_file() && m.uid() == me) {
        return false;
    }
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock | TryLockError::Error(_)) => return false,
    }
    // Held exclusively: no primary holds its lock, and none can take it before the unlink.
    // The name must still be this file (not one renamed or made in its place since).
    let removed = still_at(&file, path) && std::fs::remove_file(path).is_ok();
    drop(file); // releases the lock, after the unlink
    removed
}

/// Removes the segments of this package, of this user, that no live primary holds. Returns
/// how many. A failure is ignored: that segment stays, someone else's concern.
pub fn remove_stale_segments() -> usize {
    let Ok(entries) = std::fs::read_dir(SHM_DIR) else { return 0 };
    let me = nix::unistd::geteuid().as_raw();
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(primary_pid) else { continue };
        // A first filter: a primary visible here as running keeps its segment. Where pids
        // mean nothing (another pid namespace, no /proc), the lock decides.
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if remove_if_unlocked(&entry.path(), me) {
            removed += 1;
        }
    }
    removed
}

//! Segments that earlier primaries left behind. A primary removes its segment when it exits
//! or dies of SIGINT or SIGTERM; one that was SIGKILLed cannot, and its segment would hold
//! its `memorySize` of `/dev/shm` until reboot. The package names each segment
//! `node-<pid>-<random>` (`index.js`), so `setup()` removes those whose primary no longer
//! runs. Only files of this user are touched (and only those can be removed where `/dev/shm`
//! is sticky, as it is); a failure is ignored, as the segment is then someone else's concern.
//!
//! A pid is taken to run if `/proc/<pid>` exists: a pid reused since keeps a stale segment
//! until a later setup, never the reverse. Primaries in other pid namespaces that share this
//! `/dev/shm` are not told apart: give each its own `/dev/shm` (as containers do by default).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Where the crate creates named segments, and the prefix of their file names.
const SHM_DIR: &str = "/dev/shm";
const PREFIX: &str = "cluster-session-store.node-";

/// The primary pid in a segment file name this package made, if it is one.
fn primary_pid(file_name: &str) -> Option<u32> {
    let rest = file_name.strip_prefix(PREFIX)?;
    let (pid, suffix) = rest.split_once('-')?;
    if suffix.is_empty() || !suffix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    pid.parse().ok()
}

/// Removes the segments of this package whose primary no longer runs. Returns how many.
pub fn remove_stale_segments() -> usize {
    let Ok(entries) = std::fs::read_dir(SHM_DIR) else { return 0 };
    let me = nix::unistd::geteuid().as_raw();
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(primary_pid) else { continue };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if !entry.metadata().is_ok_and(|m| m.uid() == me) {
            continue;
        }
        if std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

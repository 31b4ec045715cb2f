//! The Node.js addon of cluster-session-store: what the npm package beside this crate
//! (`index.js`) loads as `index.node`. It is a thin layer over the Rust crate, which knows
//! nothing of Node.
//!
//! - In the cluster primary, [`setup`] creates a named segment (`Backing::Named`, mode 0600)
//!   and keeps its [`Master`], with a shared `flock` on the segment file that marks it as
//!   live (`stale.rs`), in a process-wide slot until [`shutdown`] (the package calls it on
//!   the process's `exit` and on SIGINT/SIGTERM); [`worker_exited`] repairs what a dead
//!   worker held. Node's workers are new processes started by exec, so they attach by name:
//!   the package passes the name through the environment.
//! - In every process, [`Store`] (`store.rs`) is one attached handle with the store's
//!   operations on JSON text, called synchronously from JavaScript: each is a memory
//!   operation of well under a microsecond.
//!
//! Errors become JavaScript `Error`s with a `code` (`error.rs`). Nothing here is `unsafe`;
//! the napi macros generate the FFI glue. Built with the test-only feature `fault-injection`,
//! the addon also exports the crate's fault hooks (`fault.rs`); the installed addon is not.

mod error;
#[cfg(feature = "fault-injection")]
mod fault;
mod options;
mod stale;
mod store;

use std::sync::{Mutex, MutexGuard};

use cluster_session_store::{Backing, ClusterStore, Master};
use napi_derive::napi;

use crate::error::{setup_error, Code, Result};
use crate::options::SetupOptions;

/// The primary's store and the lock that marks its segment as live.
struct Primary {
    /// Dropping it stops the coordinator thread and removes the named segment.
    master: Master,
    /// Released after the segment is removed (fields drop in order).
    _lock: stale::SegmentLock,
}

/// The primary's store, from `setup` to `shutdown`.
static MASTER: Mutex<Option<Primary>> = Mutex::new(None);

fn master() -> MutexGuard<'static, Option<Primary>> {
    // A panic while holding the lock leaves the `Option` itself intact.
    MASTER.lock().unwrap_or_else(|e| e.into_inner())
}

/// Creates the store in the cluster primary, under segment name `name`, before any worker
/// is forked. First removes segments that earlier primaries of this user left in `/dev/shm`
/// when they ended without removing them (SIGKILL, a crash: `stale.rs`); then holds a shared
/// lock on its own segment's file until `shutdown`, so no other primary's `setup()` takes it
/// for one of those.
#[napi]
pub fn setup(name: String, options: Option<SetupOptions>) -> Result<()> {
    let mut slot = master();
    if let Some(running) = slot.as_ref() {
        return Err(napi::Error::new(
            Code::AlreadySetUp,
            format!(
                "setup() was already called in this process (store {:?}): call it once, in \
                 the cluster primary, before cluster.fork()",
                running.master.name()
            ),
        ));
    }
    stale::remove_stale_segments();
    let config = options.unwrap_or_default().config()?.name(&name).backing(Backing::Named);
    let master = ClusterStore::setup(config).map_err(setup_error)?;
    let lock = stale::SegmentLock::acquire(&name).map_err(|e| {
        napi::Error::new(
            Code::Setup,
            format!("could not lock the session store's segment {name:?}: {e}; call setup() again"),
        )
    })?;
    *slot = Some(Primary { master, _lock: lock });
    Ok(())
}

/// Drops the primary's store: stops its coordinator and removes the named segment. Workers
/// already attached keep their mappings; new ones can no longer attach. Returns whether there
/// was a store to drop.
#[napi]
pub fn shutdown() -> bool {
    let master = master().take();
    master.is_some()
}

/// Tells the primary's store that worker `pid` exited: every shard is locked once, so one the
/// worker died holding is repaired now. Returns the number of shards repaired (0 where this
/// process set up no store).
#[napi]
pub fn worker_exited(pid: u32) -> u32 {
    master().as_ref().map_or(0, |p| u32::try_from(p.master.worker_exited(pid)).unwrap_or(u32::MAX))
}

//! How a process finds a segment: the per-process registry through which forked workers find
//! their master's segments, and attaching by name for workers started by exec.
//!
//! The registry is a process-global list of set-up stores. `fork()` copies it into every
//! child together with the `MAP_SHARED` mappings it points to, so `ClusterStore::new()` in a
//! forked worker finds its master's segment with no argument and no syscall.
#![forbid(unsafe_code)]

use std::sync::{Arc, Mutex, MutexGuard};

use crate::config::{valid_name, DEFAULT_NAME};
use crate::error::AttachError;
use crate::format::header::{self, HeaderError};
use crate::format::layout::FORMAT_VERSION;
use crate::segment::{effective_uid, OpenError, Segment};
use crate::store::{ClusterStore, Shared};

static REGISTRY: Mutex<Vec<(String, Arc<Shared>)>> = Mutex::new(Vec::new());

pub(crate) fn registry() -> MutexGuard<'static, Vec<(String, Arc<Shared>)>> {
    // A panic while holding this lock leaves the list itself intact.
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

impl ClusterStore {
    /// The store of namespace `"default"` that the master set up before forking this
    /// worker. The seed's `new ClusterStore()`.
    ///
    /// # Errors
    /// [`AttachError::NotSetUp`] at once if no master called `setup()` for it.
    pub fn new() -> Result<Self, AttachError> {
        Self::open(DEFAULT_NAME)
    }

    /// The store of namespace `name` that the master set up before forking this worker.
    pub fn open(name: &str) -> Result<Self, AttachError> {
        registry()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, shared)| ClusterStore { shared: Arc::clone(shared) })
            .ok_or_else(|| AttachError::NotSetUp { namespace: name.to_owned() })
    }

    /// Attaches to the named segment a master created with `Backing::Named`: for workers
    /// started by exec rather than fork.
    ///
    /// # Errors
    /// [`AttachError::NotFound`] if there is none, [`AttachError::PermissionDenied`] if it
    /// belongs to another user, [`AttachError::UntrustedSegment`] if it opened but is not
    /// this user's alone (owned by another user, or open to group or others: another user
    /// could have planted it), [`AttachError::VersionMismatch`] or
    /// [`AttachError::NotASegment`] if it is not a segment this build can use.
    pub fn attach(name: &str) -> Result<Self, AttachError> {
        if !valid_name(name) {
            return Err(AttachError::InvalidName { name: name.to_owned() });
        }
        let segment = Segment::open_named(name).map_err(|e| match e {
            OpenError::NotFound => AttachError::NotFound { name: name.to_owned() },
            OpenError::PermissionDenied(owner) => AttachError::PermissionDenied {
                name: name.to_owned(),
                path: Segment::named_path(name),
                owner_uid: owner.uid,
            },
            OpenError::Untrusted(owner) => AttachError::UntrustedSegment {
                name: name.to_owned(),
                path: Segment::named_path(name),
                owner_uid: owner.uid,
                mode: owner.mode,
                user_uid: effective_uid(),
            },
            OpenError::TooSmall(len) => AttachError::NotASegment {
                name: name.to_owned(),
                reason: format!("{len} bytes, smaller than a header"),
            },
            OpenError::Os(action, source) => AttachError::Os { action, source },
        })?;
        let not_ours = |reason: String| AttachError::NotASegment { name: name.to_owned(), reason };
        let (geo, settings) =
            header::decode(&segment.read_header(), segment.len()).map_err(|e| match e {
                HeaderError::Magic => {
                    not_ours("no magic number: not ours, or still being set up".into())
                }
                HeaderError::Version(found) => {
                    AttachError::VersionMismatch { found, expected: FORMAT_VERSION }
                }
                HeaderError::Checksum => not_ours("header checksum mismatch".into()),
                HeaderError::Field(field) => not_ours(format!("header field {field} is not valid")),
            })?;
        if settings.name != name {
            return Err(not_ours(format!("header names it {:?}", settings.name)));
        }
        Ok(ClusterStore { shared: Arc::new(Shared { segment, geo, settings }) })
    }
}

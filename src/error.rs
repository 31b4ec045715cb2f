//! Typed errors, one enum per family of operations: setting up a segment in the master,
//! attaching to one in a worker, and the store operations. Every `Display` says what to do.
#![forbid(unsafe_code)]

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Why [`ClusterStore::setup`](crate::ClusterStore::setup) refused to create a segment.
#[derive(Debug)]
#[non_exhaustive]
pub enum SetupError {
    /// A configuration field is outside the range that can work.
    InvalidConfig {
        /// The `Config` field at fault.
        field: &'static str,
        /// The value given, as text.
        value: String,
        /// What is allowed.
        allowed: String,
    },
    /// This process already set up a store under this namespace.
    AlreadySetUp {
        /// The namespace.
        namespace: String,
    },
    /// `setup()` was called in a worker: the master set this namespace up before it forked
    /// this process. Workers call [`ClusterStore::new`](crate::ClusterStore::new) or
    /// [`ClusterStore::open`](crate::ClusterStore::open).
    SetUpByMaster {
        /// The namespace.
        namespace: String,
        /// Pid of the master that set it up.
        master_pid: u32,
    },
    /// A named segment with this name exists and is not this user's alone: it belongs to
    /// another user, or grants access to group or others. It is neither used nor removed.
    UntrustedSegment {
        /// The segment's name.
        name: String,
        /// Where the operating system shows it.
        path: String,
        /// Its owner's uid.
        owner_uid: u32,
        /// Its permission bits.
        mode: u32,
        /// This process's effective uid, the owner a segment must have.
        user_uid: u32,
    },
    /// A named segment with this name exists already (a running master, or one that crashed).
    SegmentExists {
        /// The segment's name.
        name: String,
        /// Where the operating system shows it.
        path: String,
    },
    /// A named segment with this name was left by a master that is no longer running.
    StaleSegment {
        /// The segment's name.
        name: String,
        /// Where the operating system shows it.
        path: String,
        /// Pid of the master that created it, if its header could be read.
        owner_pid: Option<u32>,
    },
    /// `Config::keep_segment`: the named segment left by an earlier master cannot be adopted
    /// (another format version, a damaged header, or a shard that stayed locked). It is left
    /// as it was.
    CannotAdopt {
        /// The segment's name.
        name: String,
        /// Where the operating system shows it.
        path: String,
        /// What stands in the way.
        reason: String,
    },
    /// `Config::snapshot`: the snapshot could not be restored into the new store.
    Snapshot(SnapshotError),
    /// The operating system refused to create or map the segment.
    Os {
        /// What was being done.
        action: &'static str,
        /// The error reported.
        source: std::io::Error,
    },
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupError::InvalidConfig { field, value, allowed } => {
                write!(f, "invalid Config.{field} = {value}: allowed {allowed}")
            }
            SetupError::AlreadySetUp { namespace } => write!(
                f,
                "this process already set up the store {namespace:?} (setup() runs once per \
                 namespace, in the master, before it forks); a second store needs another \
                 name (Config::name)"
            ),
            SetupError::SetUpByMaster { namespace, master_pid } => write!(
                f,
                "the master (pid {master_pid}) already set up the store {namespace:?} before \
                 it forked this process: a worker calls ClusterStore::new() (or \
                 ClusterStore::open({namespace:?})), not setup()"
            ),
            SetupError::UntrustedSegment { name, path, owner_uid, mode, user_uid } => {
                untrusted(f, name, path, *owner_uid, *mode, *user_uid)?;
                if owner_uid != user_uid {
                    write!(
                        f,
                        "; pick another Config::name, or have uid {owner_uid} or root remove it"
                    )
                } else {
                    write!(f, "; remove it (rm {path}) and call setup() again")
                }
            }
            SetupError::SegmentExists { name, path } => write!(
                f,
                "a shared-memory segment named {name:?} already exists ({path}); if no master \
                 is running with that name, remove it (rm {path}) and call setup() again"
            ),
            SetupError::StaleSegment { name, path, owner_pid } => {
                write!(f, "a shared-memory segment named {name:?} ({path}) was left by ")?;
                match owner_pid {
                    Some(pid) => write!(f, "master pid {pid}, which is no longer running")?,
                    None => write!(f, "a master that crashed while setting it up")?,
                }
                write!(f, ": remove it (rm {path}) or set Config::reclaim_stale(true)")
            }
            SetupError::CannotAdopt { name, path, reason } => write!(
                f,
                "cannot adopt the segment {name:?} ({path}) that an earlier master left: \
                 {reason}; it is left as it was: start the build that made it to keep its \
                 sessions, or remove it (rm {path}; its sessions are lost) or set \
                 Config::reclaim_stale(true) to start with an empty one"
            ),
            SetupError::Snapshot(e) => write!(
                f,
                "{e}; the store was not set up: move the file away to start with no sessions"
            ),
            SetupError::Os { action, source } => write!(f, "could not {action}: {source}"),
        }
    }
}

impl std::error::Error for SetupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SetupError::Snapshot(e) => Some(e),
            SetupError::Os { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Why a worker could not attach to its master's segment.
#[derive(Debug)]
#[non_exhaustive]
pub enum AttachError {
    /// No master called `setup()` for this namespace before this process was forked.
    NotSetUp {
        /// The namespace looked up.
        namespace: String,
    },
    /// No named segment exists with this name.
    NotFound {
        /// The name looked up.
        name: String,
    },
    /// The named segment exists but belongs to another user: it is created with mode 0600,
    /// so only the master's user (and root) can open it.
    PermissionDenied {
        /// The name attached to.
        name: String,
        /// Its path, e.g. `/dev/shm/cluster-session-store.<name>`.
        path: String,
        /// Its owner's uid.
        owner_uid: u32,
    },
    /// The named segment opened, but it is not this user's alone: it belongs to another user
    /// (possible for root), or grants access to group or others. Another user could have
    /// planted it, or could read and forge its sessions, so it is not used.
    UntrustedSegment {
        /// The name attached to.
        name: String,
        /// Its path.
        path: String,
        /// Its owner's uid.
        owner_uid: u32,
        /// Its permission bits.
        mode: u32,
        /// This process's effective uid, the owner a segment must have.
        user_uid: u32,
    },
    /// The name is not a valid segment name.
    InvalidName {
        /// The name given.
        name: String,
    },
    /// The segment is not one of ours (bad magic, header checksum, or size).
    NotASegment {
        /// The name attached to.
        name: String,
        /// What did not match.
        reason: String,
    },
    /// The segment was written by another format version of this crate.
    VersionMismatch {
        /// Version found in the segment.
        found: u32,
        /// Version this build reads and writes.
        expected: u32,
    },
    /// The operating system refused to open or map the segment.
    Os {
        /// What was being done.
        action: &'static str,
        /// The error reported.
        source: std::io::Error,
    },
}

impl fmt::Display for AttachError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttachError::NotSetUp { namespace } => write!(
                f,
                "no session store {namespace:?} in this process: the master must call \
                 ClusterStore::setup() before it forks its workers (workers started by exec \
                 use ClusterStore::attach(name) with a Backing::Named segment)"
            ),
            AttachError::NotFound { name } => write!(
                f,
                "no shared-memory segment named {name:?}: start the master first, with \
                 Config::name({name:?}) and Backing::Named"
            ),
            AttachError::PermissionDenied { name, path, owner_uid } => write!(
                f,
                "the segment {name:?} ({path}) belongs to another user (uid {owner_uid}): it \
                 is created with mode 0600, so run this worker as the user that ran the master"
            ),
            AttachError::UntrustedSegment { name, path, owner_uid, mode, user_uid } => {
                untrusted(f, name, path, *owner_uid, *mode, *user_uid)?;
                write!(
                    f,
                    "; if no master of this user runs under that name, remove it (as uid \
                     {owner_uid} or root) and start the master first, or pick another name"
                )
            }
            AttachError::InvalidName { name } => write!(
                f,
                "invalid segment name {name:?}: use 1 to 64 characters from A-Z a-z 0-9 . _ -"
            ),
            AttachError::NotASegment { name, reason } => write!(
                f,
                "{name:?} is not a cluster-session-store segment ({reason}); check the name"
            ),
            AttachError::VersionMismatch { found, expected } => write!(
                f,
                "the segment has format version {found} but this build uses version \
                 {expected}: run the master and the workers from the same release"
            ),
            AttachError::Os { action, source } => write!(f, "could not {action}: {source}"),
        }
    }
}

impl std::error::Error for AttachError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AttachError::Os { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Why a snapshot could not be written or read ([`ClusterStore::snapshot`],
/// [`ClusterStore::restore`](crate::ClusterStore::restore)).
///
/// [`ClusterStore::snapshot`]: crate::ClusterStore::snapshot
#[derive(Debug)]
#[non_exhaustive]
pub enum SnapshotError {
    /// A file operation failed.
    Io {
        /// The file (or directory).
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The error reported.
        source: std::io::Error,
    },
    /// The file is not the user's alone (another owner, or a group or other permission bit):
    /// another user could have written it. Nothing was read.
    Untrusted {
        /// The file.
        path: PathBuf,
        /// Its owner's uid.
        owner_uid: u32,
        /// Its permission bits.
        mode: u32,
        /// This process's effective uid.
        user_uid: u32,
    },
    /// The file is not a snapshot of this crate.
    NotASnapshot {
        /// The file.
        path: PathBuf,
    },
    /// The file is a snapshot of another format version.
    Version {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u32,
        /// The version this build reads and writes.
        expected: u32,
    },
    /// The file ends before its end marker (a copy cut short). The sessions before the cut
    /// were restored.
    Truncated {
        /// The file.
        path: PathBuf,
        /// Sessions restored before the cut.
        restored: u64,
    },
    /// The file is damaged at `offset`. The sessions before the damage were restored.
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Byte offset of the damaged record.
        offset: u64,
        /// What was found.
        what: &'static str,
        /// Sessions restored before the damage.
        restored: u64,
    },
    /// The store failed while reading or writing sessions.
    Store(StoreError),
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::Io { path, action, source } => {
                write!(f, "could not {action} ({}): {source}", path.display())
            }
            SnapshotError::Untrusted { path, owner_uid, mode, user_uid } => write!(
                f,
                "the snapshot {} belongs to uid {owner_uid} with mode {mode:04o}: only a file \
                 of this user (uid {user_uid}) that grants nothing to group or others is read \
                 (chown and chmod 600 it if it is yours)",
                path.display()
            ),
            SnapshotError::NotASnapshot { path } => {
                write!(f, "{} is not a cluster-session-store snapshot", path.display())
            }
            SnapshotError::Version { path, found, expected } => write!(
                f,
                "the snapshot {} has version {found}; this build reads version {expected}",
                path.display()
            ),
            SnapshotError::Truncated { path, restored } => write!(
                f,
                "the snapshot {} is cut short: the {restored} sessions before the cut were \
                 restored",
                path.display()
            ),
            SnapshotError::Corrupt { path, offset, what, restored } => write!(
                f,
                "the snapshot {} is damaged at byte {offset} ({what}): the {restored} sessions \
                 before it were restored",
                path.display()
            ),
            SnapshotError::Store(e) => write!(f, "the store failed during a snapshot: {e}"),
        }
    }
}

impl std::error::Error for SnapshotError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SnapshotError::Io { source, .. } => Some(source),
            SnapshotError::Store(e) => Some(e),
            _ => None,
        }
    }
}

impl From<StoreError> for SnapshotError {
    fn from(e: StoreError) -> Self {
        SnapshotError::Store(e)
    }
}

/// The first clause of both `UntrustedSegment` errors: whose the segment is and why that
/// rules it out.
fn untrusted(
    f: &mut fmt::Formatter<'_>,
    name: &str,
    path: &str,
    owner_uid: u32,
    mode: u32,
    user_uid: u32,
) -> fmt::Result {
    write!(f, "the shared-memory segment {name:?} ({path}) ")?;
    if owner_uid != user_uid {
        write!(
            f,
            "belongs to uid {owner_uid} (mode {mode:04o}), not to this user (uid {user_uid})"
        )?;
    } else {
        write!(f, "grants access to group or others (mode {mode:04o})")?;
    }
    write!(f, ": another user could read or forge the sessions in it, so it is not used")
}

/// Why a store operation failed. The store is unchanged by a failed operation.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// The session id is empty.
    EmptyKey,
    /// The session id is longer than [`MAX_KEY_LEN`](crate::MAX_KEY_LEN).
    KeyTooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The encoded session is larger than `Config::max_value_size`.
    ValueTooLarge {
        /// Its length in bytes.
        len: usize,
        /// The limit set at setup.
        max: usize,
    },
    /// The shard has no room and the policy is `Eviction::Refuse` (or nothing evictable fits).
    Full {
        /// The shard that is full.
        shard: usize,
        /// Bytes the record needed.
        needed: usize,
    },
    /// A shard lock was not acquired within `Config::lock_timeout`: a live process holds it.
    LockTimeout {
        /// The shard.
        shard: usize,
        /// How long this call waited.
        waited: Duration,
    },
    /// The operating system reported an error from a shard lock.
    Lock {
        /// The shard.
        shard: usize,
        /// The errno reported.
        errno: i32,
    },
    /// The session could not be serialized.
    Encode(String),
    /// The stored bytes could not be deserialized into the requested type.
    Decode {
        /// The session id.
        key: String,
        /// The decoder's message.
        message: String,
    },
    /// The shard was found damaged during the operation and has been repaired; the
    /// operation was not applied.
    Corrupted {
        /// The shard.
        shard: usize,
        /// What was found.
        what: &'static str,
    },
    /// `update` lost the race to other writers too many times in a row.
    Contended {
        /// Attempts made.
        attempts: u32,
    },
    /// Redis or Valkey did not answer within the timeout, could not be reached, or refused
    /// the command (feature `redis`). Nothing is cached from a failed call; the next call
    /// connects again.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    Redis {
        /// The command that failed (`GET`, `SET`, `DEL`, …).
        op: &'static str,
        /// Whether it ran out of time (`RedisConfig::timeout`) rather than failed outright.
        timed_out: bool,
        /// The timeout it had.
        timeout: Duration,
        /// What the client reported.
        message: String,
    },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::EmptyKey => write!(f, "the session id is empty"),
            StoreError::KeyTooLong { len, max } => {
                write!(f, "the session id is {len} bytes; the limit is {max}")
            }
            StoreError::ValueTooLarge { len, max } => write!(
                f,
                "the session is {len} bytes; the limit is {max}: raise Config::max_value_size"
            ),
            StoreError::Full { shard, needed } => write!(
                f,
                "shard {shard} has no room for a {needed}-byte record after freeing expired \
                 sessions (and, under Eviction::Lru, evicting): raise Config::memory_size"
            ),
            StoreError::LockTimeout { shard, waited } => write!(
                f,
                "shard {shard} stayed locked for {waited:?} by a live process (stopped or \
                 stuck?); raise Config::lock_timeout if that is expected"
            ),
            StoreError::Lock { shard, errno } => write!(
                f,
                "the lock of shard {shard} failed: {}",
                std::io::Error::from_raw_os_error(*errno)
            ),
            StoreError::Encode(m) => write!(f, "could not serialize the session: {m}"),
            StoreError::Decode { key, message } => {
                write!(f, "session {key:?} does not deserialize into the requested type: {message}")
            }
            StoreError::Corrupted { shard, what } => write!(
                f,
                "shard {shard} was damaged ({what}) and has been repaired; the operation was \
                 not applied: retry it"
            ),
            StoreError::Contended { attempts } => {
                write!(f, "update gave up after {attempts} attempts lost to concurrent writers")
            }
            #[cfg(feature = "redis")]
            StoreError::Redis { op, timed_out: true, timeout, message } => write!(
                f,
                "Redis {op} got no answer within {timeout:?} ({message}): is the server up and \
                 reachable? Raise RedisConfig::timeout if it is only slow"
            ),
            #[cfg(feature = "redis")]
            StoreError::Redis { op, message, .. } => write!(
                f,
                "Redis {op} failed: {message}; check the server and RedisConfig's URL (the next \
                 call connects again)"
            ),
        }
    }
}

impl std::error::Error for StoreError {}

//! The master's side: `setup()` before fork, the per-process registry through which forked
//! workers find their master's segments, attaching by name for exec'd workers, and the
//! `Master` handle that owns the segment's life.
//!
//! The registry is a process-global list of set-up stores. `fork()` copies it into every
//! child together with the `MAP_SHARED` mappings it points to, so `ClusterStore::new()` in a
//! forked worker finds its master's segment with no argument and no syscall.
#![forbid(unsafe_code)]

use std::sync::{Arc, Mutex, MutexGuard};

use crate::config::{valid_name, Backing, Config, DEFAULT_NAME};
use crate::error::{AttachError, SetupError};
use crate::header::{self, HeaderError, Settings};
use crate::layout::{FORMAT_VERSION, SHARD_MUTEX};
use crate::segment::{CreateError, FreshSegment, OpenError, Segment};
use crate::store::{now_ms, ClusterStore, Shared};

static REGISTRY: Mutex<Vec<(String, Arc<Shared>)>> = Mutex::new(Vec::new());

fn registry() -> MutexGuard<'static, Vec<(String, Arc<Shared>)>> {
    // A panic while holding this lock leaves the list itself intact.
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// The master's handle to a store it set up. Dereferences to [`ClusterStore`].
///
/// Dropping it in the process that called `setup()` removes the store from this process's
/// registry and unlinks a named segment; handles already open stay valid. Dropped in a
/// forked child (which inherits a copy), it does nothing to the segment.
pub struct Master {
    store: ClusterStore,
    pid: u32,
}

impl Master {
    /// A handle for the store's operations.
    pub fn store(&self) -> ClusterStore {
        self.store.clone()
    }

    /// Pid of the process that called `setup()`.
    pub fn pid(&self) -> u32 {
        self.pid
    }
}

impl std::ops::Deref for Master {
    type Target = ClusterStore;
    fn deref(&self) -> &ClusterStore {
        &self.store
    }
}

impl std::fmt::Debug for Master {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Master").field("store", &self.store).field("pid", &self.pid).finish()
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        if std::process::id() != self.pid {
            return;
        }
        let name = self.store.name().to_owned();
        registry().retain(|(n, _)| *n != name);
        if self.store.shared.settings.backing == Backing::Named {
            if let Err(e) = Segment::unlink_named(&name) {
                tracing::warn!(name, error = %e, "could not unlink the named segment");
            }
        }
    }
}

fn random_u64s<const N: usize>() -> Result<[u64; N], SetupError> {
    let mut bytes = vec![0u8; 8 * N];
    getrandom::getrandom(&mut bytes).map_err(|e| SetupError::Os {
        action: "read random bytes for the hash key",
        source: std::io::Error::other(e),
    })?;
    let mut out = [0u64; N];
    for (o, chunk) in out.iter_mut().zip(bytes.chunks_exact(8)) {
        *o = u64::from_ne_bytes(chunk.try_into().expect("8 bytes"));
    }
    Ok(out)
}

impl ClusterStore {
    /// Creates the shared-memory segment; the master calls it **before forking** its
    /// workers. The seed's `ClusterStore.setup()`.
    ///
    /// # Errors
    /// [`SetupError::InvalidConfig`] names a field that cannot work and its allowed range;
    /// [`SetupError::AlreadySetUp`] if this process set up the namespace already;
    /// [`SetupError::SegmentExists`] if a named segment of that name exists.
    ///
    /// # Examples
    /// ```
    /// use cluster_session_store::{ClusterStore, Config};
    /// let master = ClusterStore::setup(Config::new().name("doc-setup").memory_size(1 << 20).shards(4).max_value_size(4096)).unwrap();
    /// // fork the workers here; each calls ClusterStore::open("doc-setup")
    /// assert_eq!(master.length().unwrap(), 0);
    /// ```
    pub fn setup(config: Config) -> Result<Master, SetupError> {
        let geo = config.validate()?;
        let mut registry = registry();
        if registry.iter().any(|(n, _)| *n == config.name) {
            return Err(SetupError::AlreadySetUp { namespace: config.name.clone() });
        }
        let created = match config.backing {
            Backing::Memfd => FreshSegment::create_memfd(&config.name, geo.total_size),
            Backing::Named => FreshSegment::create_named(&config.name, geo.total_size),
        };
        let mut fresh = created.map_err(|e| match e {
            CreateError::Exists => SetupError::SegmentExists {
                name: config.name.clone(),
                path: Segment::named_path(&config.name),
            },
            CreateError::Os(action, source) => SetupError::Os { action, source },
        })?;
        let pid = std::process::id();
        let [generation, k0, k1] = random_u64s::<3>()?;
        let settings = Settings {
            name: config.name.clone(),
            default_ttl_ms: u64::try_from(config.default_ttl.as_millis()).unwrap_or(u64::MAX),
            lock_timeout_ms: u64::try_from(config.lock_timeout.as_millis()).unwrap_or(u64::MAX),
            eviction: config.eviction,
            backing: config.backing,
            owner_pid: pid,
            generation,
            hash_key: [k0, k1],
            created_ms: now_ms(),
        };
        for shard in 0..geo.shard_count {
            fresh
                .init_mutex(geo.shard_offset(shard) + SHARD_MUTEX)
                .map_err(|source| SetupError::Os { action: "initialise a shard mutex", source })?;
        }
        fresh.write_header(&header::encode(&geo, &settings));
        let shared = Arc::new(Shared { segment: fresh.into_segment(), geo, settings });
        registry.push((config.name.clone(), Arc::clone(&shared)));
        tracing::debug!(name = %config.name, bytes = shared.geo.total_size, "store set up");
        Ok(Master { store: ClusterStore { shared }, pid })
    }

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
    /// [`AttachError::NotFound`] if there is none, [`AttachError::VersionMismatch`] or
    /// [`AttachError::NotASegment`] if it is not a segment this build can use.
    pub fn attach(name: &str) -> Result<Self, AttachError> {
        if !valid_name(name) {
            return Err(AttachError::InvalidName { name: name.to_owned() });
        }
        let segment = Segment::open_named(name).map_err(|e| match e {
            OpenError::NotFound => AttachError::NotFound { name: name.to_owned() },
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

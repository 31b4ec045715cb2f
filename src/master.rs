//! The master's side: `setup()` before fork, and the `Master` handle that owns the
//! segment's life and its coordinator thread.
//!
//! `setup()` creates the segment, initialises it while it is still private to this process,
//! and pushes it into the registry (`store::open`) through which forked workers find it.
//!
//! The coordinator thread sweeps expired sessions every `sweep_interval` and, by locking
//! every shard, repairs any shard whose holder died. Forked children never have it (fork
//! copies only the calling thread). It works only while holding the fork gate
//! (`lock::fork_gate`), so a fork never catches it holding a shard lock or a logger's lock.
#![forbid(unsafe_code)]

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::clock::now_ms;
use crate::config::{Backing, Config};
use crate::error::SetupError;
use crate::format::header::{self, Settings};
use crate::format::layout::SHARD_MUTEX;
use crate::lock::{fork_gate, init_shard_mutex};
use crate::segment::{
    effective_uid, signals, CreateError, FreshSegment, OpenError, Owner, Segment,
};
use crate::store::{registry, ClusterStore, Shared};

/// The master's handle to a store it set up. Dereferences to [`ClusterStore`].
///
/// Dropping it in the process that called `setup()` removes the store from this process's
/// registry and unlinks a named segment; handles already open stay valid. Dropped in a
/// forked child (which inherits a copy), it does nothing to the segment.
pub struct Master {
    store: ClusterStore,
    pid: u32,
    coordinator: Option<Coordinator>,
    /// Entry in the signal-time removal table, for a named segment.
    on_signal: Option<usize>,
}

/// The coordinator thread and the means to stop it.
struct Coordinator {
    control: Arc<(Mutex<bool>, Condvar)>,
    thread: JoinHandle<()>,
}

impl Coordinator {
    fn start(store: ClusterStore, interval: Duration, budget: usize) -> std::io::Result<Self> {
        fork_gate::install();
        let control = Arc::new((Mutex::new(false), Condvar::new()));
        let stop = Arc::clone(&control);
        let thread = std::thread::Builder::new()
            .name(format!("css-coordinator-{}", store.name()))
            .spawn(move || loop {
                let (stopped, wake) = &*stop;
                let guard = stopped.lock().unwrap_or_else(|e| e.into_inner());
                let (guard, _) = wake
                    .wait_timeout_while(guard, interval, |stopped| !*stopped)
                    .unwrap_or_else(|e| e.into_inner());
                if *guard {
                    return;
                }
                drop(guard);
                let _gate = fork_gate::hold();
                let swept = store.sweep(budget);
                if swept.expired > 0 || swept.repaired > 0 {
                    tracing::debug!(
                        namespace = store.name(),
                        expired = swept.expired,
                        repaired = swept.repaired,
                        "sweep"
                    );
                }
            })?;
        Ok(Coordinator { control, thread })
    }

    fn stop(self) {
        let (stopped, wake) = &*self.control;
        *stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        wake.notify_all();
        let _ = self.thread.join();
    }
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

    /// Tells the store that worker `pid` has exited (call it from the master's `waitpid`
    /// loop). Every shard is locked once, here and now, so a shard the worker died holding
    /// is repaired before any request needs it. Returns the number of shards repaired. The
    /// coordinator's sweep does the same every `sweep_interval` for deaths nobody reports.
    ///
    /// # Examples
    /// ```
    /// # use cluster_session_store::{ClusterStore, Config};
    /// # let master = ClusterStore::setup(Config::new().name("doc-exited").memory_size(1 << 20).shards(4).max_value_size(4096)).unwrap();
    /// // in the master, after waitpid() reported that worker `pid` exited:
    /// # let pid = 12345;
    /// let repaired = master.worker_exited(pid);
    /// assert_eq!(repaired, 0); // it held no lock
    /// ```
    pub fn worker_exited(&self, pid: u32) -> usize {
        let _gate = fork_gate::hold();
        let repaired = self.store.recover();
        tracing::info!(namespace = self.store.name(), pid, repaired, "worker exited");
        repaired
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
            // A forked child's copy: the thread does not exist here, and the segment is
            // the master's to remove.
            std::mem::forget(self.coordinator.take());
            return;
        }
        if let Some(coordinator) = self.coordinator.take() {
            coordinator.stop();
        }
        let name = self.store.name().to_owned();
        registry().retain(|(n, _)| *n != name);
        let removed_by_signal =
            self.on_signal.take().is_some_and(|entry| !signals::unregister(entry));
        if self.store.shared.settings.backing == Backing::Named && !removed_by_signal {
            if let Err(e) = Segment::unlink_named(&name) {
                tracing::warn!(name, error = %e, "could not unlink the named segment");
            }
        }
    }
}

/// A named segment found in the way of `setup()` that it neither uses nor removes.
enum InTheWay {
    /// Its master is gone (`owner_pid`, if its header could be read).
    Stale { owner_pid: Option<u32> },
    /// It is not this user's alone (`segment::Owner::trusted`).
    Untrusted(Owner),
}

impl InTheWay {
    fn into_error(self, name: &str) -> SetupError {
        let path = Segment::named_path(name);
        match self {
            InTheWay::Stale { owner_pid } => {
                SetupError::StaleSegment { name: name.to_owned(), path, owner_pid }
            }
            InTheWay::Untrusted(owner) => SetupError::UntrustedSegment {
                name: name.to_owned(),
                path,
                owner_uid: owner.uid,
                mode: owner.mode,
                user_uid: effective_uid(),
            },
        }
    }
}

/// Creates the named segment. If one exists: one that is not this user's alone is
/// `Untrusted`, whatever it holds; a live master's is `Exists`; one whose master is gone (its
/// pid no longer runs, or its header was never completed) is removed and created afresh when
/// the config allows it, else reported as `Stale`. A pid reused by an unrelated process makes
/// a stale segment look live: the error names the path either way.
fn create_named_reclaiming(
    config: &Config,
    len: usize,
) -> Result<Result<FreshSegment, InTheWay>, CreateError> {
    match FreshSegment::create_named(&config.name, len) {
        Err(CreateError::Exists) => {}
        other => return other.map(Ok),
    }
    let owner_pid = match Segment::open_named(&config.name) {
        Ok(existing) => match header::decode(&existing.read_header(), existing.len()) {
            Ok((_, settings)) => Some(settings.owner_pid),
            Err(_) => None,
        },
        Err(OpenError::Untrusted(owner) | OpenError::PermissionDenied(owner)) => {
            return Ok(Err(InTheWay::Untrusted(owner)))
        }
        Err(_) => None,
    };
    let alive = owner_pid.is_some_and(|pid| {
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        !matches!(nix::sys::signal::kill(pid, None), Err(nix::errno::Errno::ESRCH))
    });
    if alive {
        return Err(CreateError::Exists);
    }
    if !config.reclaim_stale {
        return Ok(Err(InTheWay::Stale { owner_pid }));
    }
    tracing::warn!(name = %config.name, ?owner_pid, "removing a stale named segment");
    let _ = Segment::unlink_named(&config.name);
    FreshSegment::create_named(&config.name, len).map(Ok)
}

fn random_u64s<const N: usize>() -> Result<[u64; N], SetupError> {
    let mut bytes = vec![0u8; 8 * N];
    getrandom::fill(&mut bytes).map_err(|e| SetupError::Os {
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
    /// [`SetupError::AlreadySetUp`] if this process set up the namespace already, and
    /// [`SetupError::SetUpByMaster`] if called in a worker its master forked after setting it
    /// up; [`SetupError::SegmentExists`] if a named segment of that name exists and its master
    /// runs, [`SetupError::StaleSegment`] if its master is gone, and
    /// [`SetupError::UntrustedSegment`] if it is another user's or open to group or others.
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
        if let Some((_, shared)) = registry.iter().find(|(n, _)| *n == config.name) {
            let namespace = config.name.clone();
            let master_pid = shared.settings.owner_pid;
            return Err(if master_pid == std::process::id() {
                SetupError::AlreadySetUp { namespace }
            } else {
                SetupError::SetUpByMaster { namespace, master_pid }
            });
        }
        let mut fresh = match config.backing {
            Backing::Memfd => FreshSegment::create_memfd(&config.name, geo.total_size).map(Ok),
            Backing::Named => create_named_reclaiming(&config, geo.total_size),
        }
        .map_err(|e| match e {
            CreateError::Exists => SetupError::SegmentExists {
                name: config.name.clone(),
                path: Segment::named_path(&config.name),
            },
            CreateError::Os(action, source) => SetupError::Os { action, source },
        })
        .and_then(|fresh| fresh.map_err(|in_the_way| in_the_way.into_error(&config.name)))?;
        let pid = std::process::id();
        let started = (|| {
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
                init_shard_mutex(&mut fresh, geo.shard_offset(shard) + SHARD_MUTEX).map_err(
                    |source| SetupError::Os { action: "initialise a shard mutex", source },
                )?;
            }
            fresh.write_header(&header::encode(&geo, &settings));
            let shared = Arc::new(Shared { segment: fresh.into_segment(), geo, settings });
            let store = ClusterStore { shared };
            let coordinator =
                Coordinator::start(store.clone(), config.sweep_interval, config.sweep_budget)
                    .map_err(|source| SetupError::Os {
                        action: "start the coordinator thread",
                        source,
                    })?;
            Ok((store, coordinator))
        })();
        let (store, coordinator) = match started {
            Ok(started) => started,
            Err(e) => {
                // Nothing may be left behind by a setup that failed.
                if config.backing == Backing::Named {
                    let _ = Segment::unlink_named(&config.name);
                }
                return Err(e);
            }
        };
        registry.push((config.name.clone(), Arc::clone(&store.shared)));
        drop(registry);
        tracing::debug!(name = %config.name, bytes = store.shared.geo.total_size, "store set up");
        let on_signal = match config.backing {
            Backing::Named => signals::register(&Segment::named_path(&config.name)),
            Backing::Memfd => None,
        };
        Ok(Master { store, pid, coordinator: Some(coordinator), on_signal })
    }
}

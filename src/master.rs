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

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, UNIX_EPOCH};

use crate::clock::now_ms;
use crate::config::{Backing, Config};
use crate::error::{SetupError, SnapshotError};
use crate::format::header::{self, HeaderError, Settings};
use crate::format::layout::{Geometry, FORMAT_VERSION, LIVE_WORDS, SHARD_MUTEX};
use crate::lock::{fork_gate, init_shard_mutex};
use crate::segment::{
    effective_uid, running, signals, CreateError, FreshSegment, OpenError, Owner, Segment,
};
use crate::store::{registry, ClusterStore, Expiry, Restored, Shared, Snapshot};

/// The master's handle to a store it set up. Dereferences to [`ClusterStore`].
///
/// Dropping it in the process that called `setup()` removes the store from this process's
/// registry and unlinks a named segment (unless [`Config::keep_segment`]); handles already
/// open stay valid. Dropped in a
/// forked child (which inherits a copy), it does nothing to the segment.
pub struct Master {
    store: ClusterStore,
    pid: u32,
    coordinator: Option<Coordinator>,
    /// Entry in the signal-time removal table, for a named segment.
    on_signal: Option<usize>,
    /// `Config::keep_segment`: the named segment outlives this master.
    keep_segment: bool,
    /// What `setup()` took over from an earlier master, if it did.
    adoption: Option<Adoption>,
    /// What `setup()` restored from `Config::snapshot`, if it did.
    restored: Option<Restored>,
    /// `Config::snapshot`, written when this master is dropped.
    snapshot: Option<PathBuf>,
}

/// What `setup()` took over from an earlier master's segment ([`Config::keep_segment`]):
/// [`Master::adoption`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Adoption {
    /// Live sessions carried over.
    pub sessions: usize,
    /// Live sessions that did not fit a segment of the new geometry (a value over the new
    /// `max_value_size`, or no room left): each is named in a warning event (`tracing`).
    pub dropped: usize,
    /// Whether the segment was of another geometry, its sessions copied into a new one.
    pub resized: bool,
}

/// The master's background threads, and the means to stop them: the coordinator, and the
/// Redis tracker under `Config::redis`.
struct Coordinator {
    control: Arc<(Mutex<bool>, Condvar)>,
    thread: JoinHandle<()>,
    #[cfg(feature = "redis")]
    tracker: Option<crate::redis_tier::Tracker>,
}

impl Coordinator {
    fn start(store: ClusterStore, config: &Config) -> std::io::Result<Self> {
        let (interval, budget) = (config.sweep_interval, config.sweep_budget);
        let snapshot = config.snapshot.clone().zip(config.snapshot_interval);
        #[cfg(feature = "redis")]
        let redis = config.redis.clone().map(|redis| (store.clone(), redis));
        fork_gate::install();
        let control = Arc::new((Mutex::new(false), Condvar::new()));
        let stop = Arc::clone(&control);
        let thread = std::thread::Builder::new()
            .name(format!("css-coordinator-{}", store.name()))
            .spawn(move || {
                let mut next_snapshot = snapshot.as_ref().map(|(_, every)| Instant::now() + *every);
                loop {
                    let (stopped, wake) = &*stop;
                    let guard = stopped.lock().unwrap_or_else(|e| e.into_inner());
                    let (guard, _) = wake
                        .wait_timeout_while(guard, interval, |stopped| !*stopped)
                        .unwrap_or_else(|e| e.into_inner());
                    if *guard {
                        return;
                    }
                    drop(guard);
                    let gate = fork_gate::hold();
                    let swept = store.sweep(budget);
                    if swept.expired > 0 || swept.repaired > 0 {
                        tracing::debug!(
                            namespace = store.name(),
                            expired = swept.expired,
                            repaired = swept.repaired,
                            "sweep"
                        );
                    }
                    drop(gate);
                    if let (Some((path, every)), Some(due)) = (&snapshot, next_snapshot) {
                        if Instant::now() >= due {
                            // The fork gate is held one shard at a time (its copy and the
                            // writing of its records), never across the whole file.
                            let written = store.write_snapshot(path, true);
                            let _gate = fork_gate::hold();
                            report_snapshot(&store, path, written);
                            next_snapshot = Some(Instant::now() + *every);
                        }
                    }
                }
            })?;
        #[cfg(feature = "redis")]
        if let Some((store, redis)) = redis {
            return match crate::redis_tier::Tracker::start(store, redis) {
                Ok(tracker) => Ok(Coordinator { control, thread, tracker: Some(tracker) }),
                Err(e) => {
                    Coordinator { control, thread, tracker: None }.stop();
                    Err(e)
                }
            };
        }
        Ok(Coordinator {
            control,
            thread,
            #[cfg(feature = "redis")]
            tracker: None,
        })
    }

    fn stop(self) {
        #[cfg(feature = "redis")]
        if let Some(tracker) = self.tracker {
            tracker.stop();
        }
        let (stopped, wake) = &*self.control;
        *stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        wake.notify_all();
        let _ = self.thread.join();
    }
}

/// Logs how a snapshot went; a failed one leaves the previous file in place.
fn report_snapshot(store: &ClusterStore, path: &Path, written: Result<Snapshot, SnapshotError>) {
    match written {
        Ok(s) => {
            tracing::debug!(namespace = store.name(), path = %path.display(), sessions = s.sessions, bytes = s.bytes, "snapshot written")
        }
        Err(e) => tracing::warn!(namespace = store.name(), error = %e, "snapshot failed"),
    }
}

impl Master {
    /// A handle for the store's operations.
    pub fn store(&self) -> ClusterStore {
        self.store.clone()
    }

    /// What `setup()` took over from an earlier master ([`Config::keep_segment`]): `None` if
    /// it created the segment.
    pub fn adoption(&self) -> Option<Adoption> {
        self.adoption
    }

    /// What `setup()` restored from [`Config::snapshot`]: `None` if there was no file, or
    /// the store was adopted.
    pub fn restored(&self) -> Option<Restored> {
        self.restored
    }

    /// Writes the [`Config::snapshot`] file now; see [`ClusterStore::snapshot`]. `None` if the
    /// configuration names no snapshot file.
    pub fn write_snapshot(&self) -> Option<Result<Snapshot, SnapshotError>> {
        let path = self.snapshot.as_ref()?;
        Some(self.store.write_snapshot(path, false))
    }

    /// The descriptor of a memfd segment (close-on-exec), to pass to the master that takes
    /// over from this one: start it with the descriptor's close-on-exec flag cleared, and
    /// with [`Backing::Inherited`] and [`Config::take_over`]. `None` for a named segment,
    /// which the next master opens by name.
    pub fn memfd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.store.shared.segment.memfd()
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
        if let Some(path) = self.snapshot.take() {
            report_snapshot(&self.store, &path, self.store.write_snapshot(&path, false));
        }
        let name = self.store.name().to_owned();
        registry().retain(|(n, _)| *n != name);
        let removed_by_signal =
            self.on_signal.take().is_some_and(|entry| !signals::unregister(entry));
        let named = self.store.shared.settings.backing == Backing::Named;
        if named && !self.keep_segment && !removed_by_signal {
            if let Err(e) = Segment::unlink_named(&name) {
                tracing::warn!(name, error = %e, "could not unlink the named segment");
            }
        }
    }
}

/// What `setup()` starts from.
enum Start {
    /// A segment it just created, private to it until set up.
    Fresh(FreshSegment),
    /// A named segment an earlier master left (`Config::keep_segment`), with its geometry and
    /// the settings its header holds.
    Adopt(Segment, Geometry, Settings),
    /// The same, made with another geometry: its sessions are copied into a new segment.
    Resize(Segment, Geometry, Settings),
}

/// A named segment found in the way of `setup()` that it neither uses nor removes.
enum InTheWay {
    /// Its master is gone (`owner_pid`, if its header could be read).
    Stale { owner_pid: Option<u32> },
    /// It is not this user's alone (`segment::Owner::trusted`).
    Untrusted(Owner),
    /// `Config::keep_segment`, and it cannot be adopted, for the reason given.
    CannotAdopt(String),
}

impl InTheWay {
    fn into_error(self, name: &str) -> SetupError {
        let path = Segment::named_path(name);
        let name = name.to_owned();
        match self {
            InTheWay::Stale { owner_pid } => SetupError::StaleSegment { name, path, owner_pid },
            InTheWay::Untrusted(owner) => SetupError::UntrustedSegment {
                name,
                path,
                owner_uid: owner.uid,
                mode: owner.mode,
                user_uid: effective_uid(),
            },
            InTheWay::CannotAdopt(reason) => SetupError::CannotAdopt { name, path, reason },
        }
    }
}

/// Why a handover (`Config::take_over`) cannot change the geometry: the running master's
/// workers would go on writing to the old segment.
const RUNNING_RESIZE: &str =
    "a running master's segment cannot change its geometry: stop that master, then start this one";

/// How a segment whose header decoded as `found` fits a configuration that gives `geo` for
/// `name`.
enum Fit {
    Same,
    /// Another geometry: its sessions move to a new segment.
    OtherGeometry,
    /// Made for another name (a damaged or foreign header): not to be adopted, for the
    /// reason given.
    OtherName(String),
}

fn fit((old, settings): &(Geometry, Settings), geo: &Geometry, name: &str) -> Fit {
    if settings.name != name {
        Fit::OtherName(format!("its header names it {:?}", settings.name))
    } else if old == geo {
        Fit::Same
    } else {
        Fit::OtherGeometry
    }
}

/// Creates the named segment. If one exists: one that is not this user's alone is
/// `Untrusted`, whatever it holds; a live master's is `Exists`. One whose master is gone (its
/// pid no longer runs, or its header was never completed) is adopted under
/// `Config::keep_segment` if it can be (else `CannotAdopt`, saying why); otherwise, or if it
/// cannot be adopted, it is removed and created afresh when the config allows it, else
/// reported as `Stale`. A pid reused by an unrelated process makes a stale segment look live:
/// the error names the path either way.
fn create_or_adopt(
    config: &Config,
    geo: &Geometry,
) -> Result<Result<Start, InTheWay>, CreateError> {
    match FreshSegment::create_named(&config.name, geo.total_size) {
        Err(CreateError::Exists) => {}
        other => return other.map(|fresh| Ok(Start::Fresh(fresh))),
    }
    let (existing, decoded) = match Segment::open_named(&config.name) {
        Ok(existing) => {
            let decoded = header::decode(&existing.read_header(), existing.len());
            (Some(existing), Some(decoded))
        }
        Err(OpenError::Untrusted(owner) | OpenError::PermissionDenied(owner)) => {
            return Ok(Err(InTheWay::Untrusted(owner)))
        }
        Err(_) => (None, None),
    };
    let owner_pid = match &decoded {
        Some(Ok((_, settings))) => Some(settings.owner_pid),
        _ => None,
    };
    // This process's own pid is a master of it no longer: a running one is in the registry,
    // which `setup()` looked in first (a kept segment outlives its `Master`).
    // So is the master this one takes over from (`Config::take_over`).
    let alive = owner_pid.is_some_and(|pid| {
        pid != std::process::id() && Some(pid) != config.take_over && running(pid)
    });
    if alive {
        return Err(CreateError::Exists);
    }
    // A header never completed holds no session: nothing to adopt, and nothing lost below.
    let refused = match decoded {
        Some(Ok(found)) if config.keep_segment => match fit(&found, geo, &config.name) {
            Fit::OtherName(reason) => Some(reason),
            Fit::OtherGeometry if config.take_over.is_some() => Some(RUNNING_RESIZE.into()),
            how => {
                let (old_geo, settings) = found;
                let segment = existing.expect("decoded from it");
                return Ok(Ok(match how {
                    Fit::Same => Start::Adopt(segment, old_geo, settings),
                    _ => Start::Resize(segment, old_geo, settings),
                }));
            }
        },
        Some(Err(HeaderError::Version(found))) if config.keep_segment => Some(format!(
            "it has format version {found}, and this build reads version {FORMAT_VERSION} only"
        )),
        Some(Err(HeaderError::Checksum)) if config.keep_segment => {
            Some("its header fails its checksum (damaged)".into())
        }
        Some(Err(HeaderError::Field(field))) if config.keep_segment => {
            Some(format!("its header field {field} is not valid"))
        }
        _ => None,
    };
    if !config.reclaim_stale {
        return Ok(Err(match refused {
            Some(reason) => InTheWay::CannotAdopt(reason),
            None => InTheWay::Stale { owner_pid },
        }));
    }
    tracing::warn!(
        name = %config.name,
        ?owner_pid,
        cannot_adopt = refused.as_deref().unwrap_or(""),
        "removing a stale named segment"
    );
    let _ = Segment::unlink_named(&config.name);
    FreshSegment::create_named(&config.name, geo.total_size).map(|fresh| Ok(Start::Fresh(fresh)))
}

/// Takes over a segment an earlier master left: every shard repaired (a process of the
/// earlier master may have died holding its lock, mid-write; from a master still `running`,
/// a handover, only the shards owed a repair), then the header's live words
/// set from this master's `settings` (its pid, a new generation, this configuration's expiry
/// and lock timeout); the hash key and geometry stay those the records were made with. A
/// shard that stays locked by a live process leaves the header untouched.
fn adopt(
    segment: Segment,
    geo: Geometry,
    settings: Settings,
    running: bool,
) -> Result<(ClusterStore, Adoption), SetupError> {
    let store = ClusterStore { shared: Arc::new(Shared { segment, geo, settings }) };
    let shared = &store.shared;
    let cannot = |e: crate::StoreError| SetupError::CannotAdopt {
        name: shared.settings.name.clone(),
        path: Segment::named_path(&shared.settings.name),
        reason: e.to_string(),
    };
    // Taken over from a running master, whose workers are serving: only what is owed.
    let kept = if running {
        store.recover();
        store.length().map_err(cannot)?
    } else {
        store.repair_all("adopted from an earlier master").map_err(cannot)?
    };
    // The live words, the owner last: a master killed before it stores its pid leaves the
    // segment to the next one as it found it.
    let words = header::live_words(&shared.settings);
    for (at, word) in LIVE_WORDS.into_iter().zip(words).rev() {
        shared.segment.live_word(at).store(word, Ordering::Release);
    }
    tracing::info!(name = %shared.settings.name, sessions = kept, "adopted the segment an earlier master left");
    Ok((store, Adoption { sessions: kept, dropped: 0, resized: false }))
}

/// Initialises a segment just created, not yet shared with any process: the shard mutexes,
/// then the header, its magic last.
fn set_up(
    mut fresh: FreshSegment,
    geo: Geometry,
    settings: Settings,
) -> Result<ClusterStore, SetupError> {
    for shard in 0..geo.shard_count {
        init_shard_mutex(&mut fresh, geo.shard_offset(shard) + SHARD_MUTEX)
            .map_err(|source| SetupError::Os { action: "initialise a shard mutex", source })?;
    }
    fresh.write_header(&header::encode(&geo, &settings));
    Ok(ClusterStore { shared: Arc::new(Shared { segment: fresh.into_segment(), geo, settings }) })
}

/// Carries the sessions of a segment an earlier master left, made with `old_geo`, into a
/// new one of `geo` under the same name: the new segment is made under a temporary name, the
/// old one's shards are all repaired (as for an adoption) and every live session copied with
/// its expiry (those that do not fit are counted and named in warnings), then the new
/// segment takes the name in one `rename`, replacing the old one. Until then the old segment
/// is untouched: a failure, or a kill, leaves it for the next start (a kill also leaves the
/// temporary `<name>.resize-<pid>` behind, which the next resize of the name removes).
fn resize(
    old: Segment,
    old_geo: Geometry,
    found: Settings,
    geo: Geometry,
    settings: Settings,
) -> Result<(ClusterStore, Adoption), SetupError> {
    let name = settings.name.clone();
    Segment::remove_leftovers(&name, "resize");
    let temporary = format!("{name}.resize-{}", settings.owner_pid);
    let cannot = |reason: String| SetupError::CannotAdopt {
        name: name.clone(),
        path: Segment::named_path(&name),
        reason,
    };
    let fresh = FreshSegment::create_named(&temporary, geo.total_size).map_err(|e| match e {
        CreateError::Exists => cannot(format!("{} exists", Segment::named_path(&temporary))),
        CreateError::Os(action, source) => SetupError::Os { action, source },
    })?;
    let copied = (|| {
        let lock_timeout_ms = settings.lock_timeout_ms;
        let new = set_up(fresh, geo, settings)?;
        let old =
            Shared { segment: old, geo: old_geo, settings: Settings { lock_timeout_ms, ..found } };
        let old = ClusterStore { shared: Arc::new(old) };
        old.repair_all("adopted from an earlier master").map_err(|e| cannot(e.to_string()))?;
        let (mut sessions, mut dropped) = (0, 0);
        old.each_live(|sid, value, expires_ms| {
            let expiry = Expiry::At(UNIX_EPOCH + Duration::from_millis(expires_ms));
            match new.set_raw(&sid, &value, expiry) {
                Ok(()) => sessions += 1,
                Err(e) => {
                    dropped += 1;
                    tracing::warn!(name = %new.name(), sid, error = %e, "session dropped: it does not fit the new segment");
                }
            }
        })
        .map_err(|e| cannot(e.to_string()))?;
        Segment::rename_named(&temporary, &name)
            .map_err(|source| SetupError::Os { action: "rename the resized segment", source })?;
        Ok((new, Adoption { sessions, dropped, resized: true }))
    })();
    if copied.is_err() {
        let _ = Segment::unlink_named(&temporary);
    }
    let (new, adoption) = copied?;
    tracing::info!(name = %name, sessions = adoption.sessions, dropped = adoption.dropped, "carried the sessions of an earlier master's segment into one of the new geometry");
    Ok((new, adoption))
}

/// The memfd segment a master handing over passed by descriptor (`Backing::Inherited`), to
/// be adopted: a memfd of this user's, with an intact header made for this name and this
/// configuration's geometry.
fn inherit(fd: std::os::fd::RawFd, config: &Config, geo: &Geometry) -> Result<Start, InTheWay> {
    let segment = match Segment::open_inherited(fd) {
        Ok(segment) => segment,
        Err(OpenError::Untrusted(owner) | OpenError::PermissionDenied(owner)) => {
            return Err(InTheWay::Untrusted(owner))
        }
        Err(OpenError::TooSmall(len)) => {
            return Err(InTheWay::CannotAdopt(format!("{len} bytes, smaller than a header")))
        }
        Err(OpenError::Os(action, e)) => {
            return Err(InTheWay::CannotAdopt(format!("could not {action}: {e}")))
        }
        Err(OpenError::NotFound) => return Err(InTheWay::CannotAdopt("no such descriptor".into())),
    };
    match header::decode(&segment.read_header(), segment.len()) {
        Ok(found) => match fit(&found, geo, &config.name) {
            Fit::Same => {
                let (old_geo, settings) = found;
                Ok(Start::Adopt(segment, old_geo, settings))
            }
            Fit::OtherName(reason) => Err(InTheWay::CannotAdopt(reason)),
            Fit::OtherGeometry => Err(InTheWay::CannotAdopt(RUNNING_RESIZE.into())),
        },
        Err(e) => Err(InTheWay::CannotAdopt(format!("its header does not decode: {e:?}"))),
    }
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
    /// [`SetupError::UntrustedSegment`] if it is another user's or open to group or others;
    /// under [`Config::keep_segment`], a segment left by a master no longer running (or by
    /// the one of [`Config::take_over`]) is adopted with its sessions, or refused with
    /// [`SetupError::CannotAdopt`] saying why; [`SetupError::Snapshot`] if the
    /// [`Config::snapshot`] file exists and cannot be restored.
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
        let start = match config.backing {
            Backing::Memfd => FreshSegment::create_memfd(&config.name, geo.total_size)
                .map(|fresh| Ok(Start::Fresh(fresh))),
            Backing::Named => create_or_adopt(&config, &geo),
            Backing::Inherited(fd) => Ok(inherit(fd, &config, &geo)),
        }
        .map_err(|e| match e {
            CreateError::Exists => SetupError::SegmentExists {
                name: config.name.clone(),
                path: Segment::named_path(&config.name),
            },
            CreateError::Os(action, source) => SetupError::Os { action, source },
        })
        .and_then(|start| start.map_err(|in_the_way| in_the_way.into_error(&config.name)))?;
        let pid = std::process::id();
        // A segment found under the name stays as it was if setup fails.
        let adopting = !matches!(start, Start::Fresh(_));
        let started = (|| {
            let [generation, k0, k1] = random_u64s::<3>()?;
            let mut settings = Settings {
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
            let (store, adoption) = match start {
                Start::Fresh(fresh) => (set_up(fresh, geo, settings)?, None),
                Start::Adopt(segment, geo, found) => {
                    // The records were hashed with this key; the segment was made then.
                    settings.hash_key = found.hash_key;
                    settings.created_ms = found.created_ms;
                    let running = config.take_over.is_some();
                    let (store, adoption) = adopt(segment, geo, settings, running)?;
                    (store, Some(adoption))
                }
                Start::Resize(segment, old_geo, found) => {
                    let (store, adoption) = resize(segment, old_geo, found, geo, settings)?;
                    (store, Some(adoption))
                }
            };
            let restored = match (&config.snapshot, adoption) {
                (Some(path), None) => match store.restore(path) {
                    Ok(restored) => Some(restored),
                    Err(SnapshotError::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound =>
                    {
                        None
                    }
                    Err(e) => return Err(SetupError::Snapshot(e)),
                },
                _ => None,
            };
            let coordinator = Coordinator::start(store.clone(), &config).map_err(|source| {
                SetupError::Os { action: "start the coordinator and tracker threads", source }
            })?;
            Ok((store, coordinator, adoption, restored))
        })();
        let (store, coordinator, adoption, restored) = match started {
            Ok(started) => started,
            Err(e) => {
                // Nothing may be left behind by a setup that failed, but a segment adopted
                // stays as it was found, with its sessions.
                if config.backing == Backing::Named && !adopting {
                    let _ = Segment::unlink_named(&config.name);
                }
                return Err(e);
            }
        };
        registry.push((config.name.clone(), Arc::clone(&store.shared)));
        drop(registry);
        tracing::debug!(name = %config.name, bytes = store.shared.geo.total_size, "store set up");
        // A kept segment outlives the master: no removal on SIGTERM or SIGINT.
        let on_signal = match config.backing {
            Backing::Named if !config.keep_segment => {
                signals::register(&Segment::named_path(&config.name))
            }
            _ => None,
        };
        let keep_segment = config.keep_segment;
        let snapshot = config.snapshot;
        Ok(Master {
            store,
            pid,
            coordinator: Some(coordinator),
            on_signal,
            keep_segment,
            adoption,
            restored,
            snapshot,
        })
    }
}

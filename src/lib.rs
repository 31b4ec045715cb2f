//! # cluster-session-store
//!
//! A shared-memory session store for servers that pre-fork worker processes (the model of
//! Node's `cluster`, nginx, Apache prefork, gunicorn): a Rust take on the Node package
//! strong-cluster-express-store.
//!
//! The master calls [`ClusterStore::setup`] **before it forks**: that maps one segment
//! holding a sharded hash table. Each worker calls [`ClusterStore::new`] (or
//! [`ClusterStore::open`] for another namespace, [`ClusterStore::attach`] if started by
//! exec) and then reads and writes sessions directly in that memory: writes under per-shard
//! robust cross-process locks, reads under a per-shard seqlock that takes no lock. No round
//! trip to the master, no server to run. A process killed while it holds a lock blocks no one:
//! the next locker repairs the shard and carries on.
//!
//! The operations are express-session's: [`get`](ClusterStore::get),
//! [`set`](ClusterStore::set), [`destroy`](ClusterStore::destroy),
//! [`touch`](ClusterStore::touch), [`all`](ClusterStore::all),
//! [`length`](ClusterStore::length), [`clear`](ClusterStore::clear), plus the atomic
//! [`update`](ClusterStore::update), for serde types (MessagePack) and raw bytes (`*_raw`).
//!
//! ```
//! use cluster_session_store::{ClusterStore, Config, Expiry};
//! use std::time::Duration;
//!
//! // In the master, before forking:
//! let master = ClusterStore::setup(
//!     Config::new().name("lib-doc").memory_size(1 << 20).shards(4).max_value_size(4096),
//! )?;
//! // In each worker (here the same process, for the example):
//! let store = ClusterStore::open("lib-doc")?;
//! store.set("sid", &vec!["cart", "item"], Expiry::After(Duration::from_secs(60)))?;
//! assert_eq!(store.get::<Vec<String>>("sid")?.unwrap(), ["cart", "item"]);
//! assert_eq!(store.length()?, 1);
//! assert!(store.check_integrity().is_ok());
//! # drop(master);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Framework adapters, behind cargo features: `tower-sessions` makes `ClusterStore` a
//! tower-sessions `SessionStore` for axum (`integrations::tower_sessions`), `actix-session`
//! an actix-session `SessionStore` for actix-web (`integrations::actix_session`). Errors come
//! in one enum per family, [`SetupError`], [`AttachError`] and [`StoreError`], whose messages
//! say what to do. The segment format, where `unsafe` lives, the lock protocol, the invariants
//! and the crash model are in SAFETY.md, beside this crate's README.
//!
//! # Semantics and limits
//!
//! ## Keys and values
//!
//! Session ids are 1 to [`MAX_KEY_LEN`] (256) bytes: an empty one is
//! [`StoreError::EmptyKey`], a longer one [`StoreError::KeyTooLong`]. A value may be up to
//! [`Config::max_value_size`] bytes once encoded (64 KiB by default, at most about 2.9 MiB),
//! else [`StoreError::ValueTooLarge`]. Each of these errors leaves the store unchanged. Typed
//! calls encode MessagePack with named fields, which is self-describing (a
//! `serde_json::Value` round-trips); bytes that do not decode as the requested type are
//! [`StoreError::Decode`].
//!
//! ## Conditional writes and `update`
//!
//! [`add_raw`](ClusterStore::add_raw) (typed: [`add`](ClusterStore::add)) stores only if no
//! live session has the id, for minting ids without ever overwriting another client's
//! session; [`replace_raw`](ClusterStore::replace_raw) only if one does, for an update that
//! must not bring back a session that expired or was destroyed meanwhile. An expired session
//! counts as absent to both. [`update`](ClusterStore::update) reads the session, runs its
//! closure with no lock held, and stores the result only if no other write reached the
//! session in between, else runs the closure again on the newer value (so it may run more
//! than once); after 1,000 attempts it gives up with [`StoreError::Contended`].
//!
//! ## Expiry
//!
//! [`Expiry::Default`] is the config's [`default_ttl`](Config::default_ttl) (one day by
//! default); [`Expiry::After`] and [`Expiry::At`] give a duration or an instant. A session
//! whose expiry has passed is absent from `get`, `all` and `length`, and is absent to every
//! worker at once. `set`, `touch` or `update` with an expiry already past removes the
//! session. Expiry is lazy, as in Redis: a session expired but not yet freed is live again if
//! the wall clock goes back past its expiry.
//!
//! Operations read the coarse real-time clock (about 4 ns), and the precise one only for a
//! session within a second of its expiry, so the answer is the precise clock's unless the
//! coarse clock lags it by more than a second (as it can for a tick after a virtual machine
//! resumes). Deadlines count from the coarse clock: a session may expire a tick, a few
//! milliseconds, before its full time to live.
//!
//! An expired session's memory comes back four ways: the master's coordinator sweeps (below);
//! each write frees the expired records among two index slots of its shard; a full shard frees
//! all of its expired records before it evicts; and [`purge_expired`](ClusterStore::purge_expired)
//! frees every one at once.
//!
//! ## Reads
//!
//! A `get` that misses writes nothing into the segment but its shard's miss counter. A hit adds
//! to the hit counter and may refresh its index slot's recency stamp (a word beside the index,
//! never inside a record). [`all`](ClusterStore::all) and [`length`](ClusterStore::length)
//! take each shard's lock in turn: each shard is a consistent snapshot, the whole is not one
//! instant.
//!
//! ## A full shard
//!
//! A shard is full when no free block of the size class a write needs is left, or, for a new
//! session, when its index would be more than 7/8 used. It frees every expired record first.
//! Then, under [`Eviction::Lru`] (the default), it evicts the least recently used of a sample
//! of records (recency counts writes: a read makes a session as recent as the shard's latest
//! write), and merges runs of adjacent blocks into one of the size needed, evicting the fewest
//! records it can.
//!
//! Under [`Eviction::Refuse`] only expired records are freed and only runs of free blocks
//! merged. A **new** session is then [`StoreError::Full`], and so is a session grown past the
//! size class of its block (its old value stays). A rewrite whose record fits the class of the
//! block the session has always succeeds: each shard keeps a spare block of the largest class
//! (about `max_value_size` + 304 bytes, not counted in [`Stats::data_bytes`]) to write it
//! through.
//!
//! ## Memory
//!
//! The segment is [`Config::memory_size`] bytes, fixed at setup. Its pages are reserved with
//! `posix_fallocate`, so a `/dev/shm` too small fails `setup`, not a write later with SIGBUS. It
//! is split into [`shards`](Config::shards) (a power of two; 64 by default), each with its own
//! lock, index and data area of size classes about 1.25× apart.
//!
//! Each shard's index array has room for one slot per 128 bytes of data area, or per record of
//! [`Config::typical_value_size`] bytes with a 32-byte id where that is larger, and is never
//! more than 7/8 full. A shard uses 16 of its slots at first and doubles them before a new
//! session would fill more than three quarters; the coordinator's sweep (and `purge_expired`)
//! halves them again while the sessions fill at most 3/16, so an index spread out by a spike of
//! sessions is dense again once they have gone ([`Stats::index_slots`]). Size the segment for
//! the sessions expected at peak, with room to spare.
//!
//! ## Who can read sessions
//!
//! The default segment ([`Backing::Memfd`]) is an anonymous memfd: only the master and the
//! processes it forks can map it (and, as for any process memory, root or a process allowed
//! to ptrace the master can read it); nothing is left in `/dev/shm`. [`Backing::Named`]
//! creates `/dev/shm/cluster-session-store.<name>` exclusively with mode 0600, for workers
//! started by exec. Another user's attach gets [`AttachError::PermissionDenied`]; `attach` and
//! `setup` use a named segment only if it is the caller's alone (owned by the caller's
//! effective uid, no group or other permission bits), else
//! [`AttachError::UntrustedSegment`] or [`SetupError::UntrustedSegment`], so a segment another
//! user planted under the name is never read or written. Every process attached to a store can
//! read and write all of its sessions.
//!
//! # The master's coordinator
//!
//! `setup` starts a coordinator thread in the master. Forked workers never have it: `fork()`
//! copies only the calling thread.
//!
//! - **Expiry without traffic.** Every [`Config::sweep_interval`] (1 s by default) it visits
//!   each shard under its lock, examines [`Config::sweep_budget`] (256) index slots from the
//!   shard's cursor and frees the expired records, for up to four rounds while more than a
//!   quarter of the records it saw had expired (Redis's active expiry cycle), releasing the
//!   lock between rounds. It never scans a whole shard for expiry under one lock hold, and
//!   waits at most 10 ms for a busy shard before skipping it until the next sweep. After each
//!   round it halves the shard's index while the sessions fill at most 3/16 of it (one pass
//!   over the index per halving).
//! - **Recovery after a worker dies.** Call [`Master::worker_exited`] from the master's
//!   `waitpid` loop: it locks every shard once, so a shard the dead worker held is repaired
//!   there and then, before a request needs it, and returns how many were. The sweep does the
//!   same for deaths nobody reports.
//! - **Fork safety.** The coordinator (and `worker_exited`) works only while holding a fork
//!   gate that `fork()` also takes (`pthread_atfork`), so a child is never forked while it
//!   holds a shard lock or a logger's lock.
//! - **When the master dies**, workers keep serving from the segment they map; expired
//!   sessions are then freed only by writes, full shards and `purge_expired`. The crate does
//!   not kill workers (`PR_SET_PDEATHSIG` is the application's choice);
//!   [`master_alive`](ClusterStore::master_alive) tells them.
//! - **Segment lifecycle.** A memfd segment leaves nothing behind. A named segment is removed
//!   when the [`Master`] is dropped in the process that called `setup` (never in a worker), or
//!   when that process dies of SIGTERM or SIGINT (a handler is installed where the signal still
//!   has its default action), unless [`Config::keep_segment`] keeps it (below). One left by a
//!   master that was SIGKILLed is found by the next `setup`: refused with
//!   [`SetupError::StaleSegment`], which names the file, or replaced when
//!   [`Config::reclaim_stale`] allows it. A live master's is [`SetupError::SegmentExists`].
//! - **Stats, from any process.** [`stats`](ClusterStore::stats) reads counters without
//!   locking: records, bytes used, index slots, hits, misses, reads that had to take the lock,
//!   sets, destroys, evictions, expirations, repairs, corrupt records dropped, lock wait and
//!   sweeps. [`memory`](ClusterStore::memory) walks the blocks of each size class under each
//!   shard's lock, and [`check_integrity`](ClusterStore::check_integrity) the whole segment.
//!   Each has a readable `Display`. Repairs, evictions, stale segments, worker exits and sweeps
//!   are `tracing` events; the library never prints.
//!
//! # Restarts, deploys and reboots
//!
//! - **Restarts.** With [`Config::keep_segment`] (and [`Backing::Named`]), the segment outlives
//!   its master, however it ends, and the next `setup` of that name adopts it with every
//!   session: it repairs every shard, then records itself as the owner
//!   ([`Master::adoption`] says what it took over). A new geometry copies the sessions into a
//!   new segment; another format version or a damaged header is
//!   [`SetupError::CannotAdopt`], the segment left as it was.
//! - **Deploys with no downtime.** A running master starts its successor, which sets up with
//!   [`Config::take_over`] (and, for the default memfd, [`Backing::Inherited`] with the
//!   descriptor of [`Master::memfd`]): it adopts the segment while the old master's workers
//!   still serve, and the old master stops once the new workers run. The examples do this on
//!   SIGUSR2, passing the listening sockets too.
//! - **Reboots and format upgrades.** [`ClusterStore::snapshot`] writes every live session to
//!   a file (atomically, mode 0600) and [`ClusterStore::restore`] reads it back;
//!   [`Config::snapshot`] does both at setup and shutdown, and every
//!   [`Config::snapshot_interval`].
//!
//! # Many hosts
//!
//! With the `redis` feature, Redis or Valkey holds the sessions and each host's segment is
//! the cache in front of it: `Config::redis` in the master (its tracker applies Redis's
//! invalidations to the segment), `RedisStore` in each worker (hits from the segment with no
//! network call; misses and writes go to Redis). `RedisStore`'s documentation states the
//! semantics, the consistency, and what happens when Redis is down.
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod clock;
mod config;
mod crc;
mod error;
mod format;
#[cfg(any(feature = "tower-sessions", feature = "actix-session"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "tower-sessions", feature = "actix-session"))))]
pub mod integrations;
mod lock;
mod master;
#[cfg(feature = "redis")]
mod redis_tier;
mod segment;
mod shard;
mod stats;
mod store;

/// Test-only fault injection (feature `fault-injection`).
#[cfg(feature = "fault-injection")]
pub mod fault;
#[cfg(not(feature = "fault-injection"))]
mod fault;

pub use config::{Backing, Config, Eviction, DEFAULT_NAME};
pub use error::{AttachError, SetupError, SnapshotError, StoreError};
pub use format::layout::MAX_KEY_LEN;
pub use master::{Adoption, Master};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis_tier::{RedisConfig, RedisStore};
pub use stats::{ClassUsage, IntegrityProblem, IntegrityReport, MemoryUsage, Stats};
pub use store::{ClusterStore, Expiry, Restored, Snapshot, SNAPSHOT_VERSION};

/// The README's examples run as doctests.
/// (They use both adapters.)
#[cfg(all(doctest, feature = "tower-sessions", feature = "actix-session", feature = "redis"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// Result of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

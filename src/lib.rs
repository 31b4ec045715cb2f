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
//! an actix-session `SessionStore` for actix-web (`integrations::actix_session`).
//!
//! Layers, bottom up (only the first two contain `unsafe`): `segment` (mapping), `lock`
//! (robust mutex and the guard through which all shard memory is accessed), `layout` and
//! `header` (the format), `record`, `alloc`, `table` (records, blocks, index), `shard`
//! (operations on a locked shard), `audit` (check and repair), `store` and `coordinator`
//! (the public API). The format, lock protocol and crash model are in SAFETY.md.
#![warn(missing_docs)]

mod clock;
mod config;
mod crc;
mod error;
mod format;
#[cfg(any(feature = "tower-sessions", feature = "actix-session"))]
pub mod integrations;
mod lock;
mod master;
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
pub use error::{AttachError, SetupError, StoreError};
pub use format::layout::MAX_KEY_LEN;
pub use master::Master;
pub use stats::{ClassUsage, IntegrityProblem, IntegrityReport, MemoryUsage, Stats};
pub use store::{ClusterStore, Expiry};

/// The README's examples run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// Result of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

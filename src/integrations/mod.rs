//! Session-middleware adapters: `ClusterStore` (and, with the `redis` feature, `RedisStore`)
//! as the store behind tower-sessions (axum) and actix-session (actix-web), each behind the
//! cargo feature of the same name.
//!
//! Both adapters call the store inline on the async task. A `ClusterStore` call does memory
//! work under one shard lock, never I/O, and any lock wait ends within
//! `Config::lock_timeout`; moving it to a blocking pool would cost a thread hop
//! (microseconds) to save a call that takes about one. The exception is a shard lock held by
//! a process that is stopped (not dead): the call then blocks its executor thread for up to
//! `Config::lock_timeout`. A `RedisStore` call that misses the cache, and every write, waits
//! for Redis on the executor thread: a round trip, at most `RedisConfig::timeout`.
#![forbid(unsafe_code)]

#[cfg(feature = "actix-session")]
#[cfg_attr(docsrs, doc(cfg(feature = "actix-session")))]
pub mod actix_session;
#[cfg(feature = "tower-sessions")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower-sessions")))]
pub mod tower_sessions;

/// Attempts at minting an unused session id before giving up. Ids carry 128 bits or more
/// from the OS CSPRNG, so a second attempt is already astronomically rare.
#[cfg(any(feature = "tower-sessions", feature = "actix-session"))]
const MINT_ATTEMPTS: usize = 16;

//! Session-middleware adapters: `ClusterStore` (and, with the `redis` feature, `RedisStore`)
//! as the store behind tower-sessions (axum) and actix-session (actix-web), each behind the
//! cargo feature of the same name.
//!
//! Both adapters call the store inline on the async task. A `ClusterStore` call does memory
//! work under one shard lock, never I/O, and any lock wait ends within
//! `Config::lock_timeout`; moving it to a blocking pool would cost a thread hop
//! (microseconds) to save a call that takes about one. The exception is a shard lock held by
//! a process that is stopped (not dead): the call then blocks its executor thread for up to
//! `Config::lock_timeout`. A `RedisStore` cache hit is answered inline too; a miss, and every
//! write, waits for Redis, so it runs on Tokio's blocking pool: the executor
//! thread serves other requests meanwhile.
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

/// A store behind the adapters.
#[cfg(any(feature = "tower-sessions", feature = "actix-session"))]
pub(crate) trait Store: Clone + Send + Sync + 'static {
    /// Whether a call may wait for the network.
    #[cfg(feature = "redis")]
    const REMOTE: bool;

    /// `get_raw`, if it can be answered without the network: always for `ClusterStore`, for
    /// a `RedisStore` only from a trusted copy in the segment.
    fn get_local(&self, sid: &str) -> Option<crate::Result<Option<Vec<u8>>>>;
}

#[cfg(any(feature = "tower-sessions", feature = "actix-session"))]
impl Store for crate::ClusterStore {
    #[cfg(feature = "redis")]
    const REMOTE: bool = false;

    fn get_local(&self, sid: &str) -> Option<crate::Result<Option<Vec<u8>>>> {
        Some(self.get_raw(sid))
    }
}

#[cfg(all(feature = "redis", any(feature = "tower-sessions", feature = "actix-session")))]
impl Store for crate::RedisStore {
    const REMOTE: bool = true;

    fn get_local(&self, sid: &str) -> Option<crate::Result<Option<Vec<u8>>>> {
        self.cached(sid).map(|hit| Ok(Some(hit)))
    }
}

/// Runs `op` on `store` and the session id `sid`: inline, borrowing `sid`, or, for a store
/// whose calls may wait for the network, on Tokio's blocking pool (both frameworks run on
/// Tokio) with a copy of it. `Err` only if `op` panicked there.
#[cfg(any(feature = "tower-sessions", feature = "actix-session"))]
pub(crate) async fn call<S: Store, T: Send + 'static>(
    store: &S,
    sid: &str,
    op: impl FnOnce(&S, &str) -> T + Send + 'static,
) -> Result<T, String> {
    // Outside a Tokio runtime there is no blocking pool: the call runs inline. A call sent
    // to the pool runs to its end even if the request that made it is dropped.
    #[cfg(feature = "redis")]
    if let (true, Ok(runtime)) = (S::REMOTE, tokio::runtime::Handle::try_current()) {
        let (store, sid) = (store.clone(), sid.to_owned());
        return runtime
            .spawn_blocking(move || op(&store, &sid))
            .await
            .map_err(|e| format!("the session store call failed on the blocking pool: {e}"));
    }
    Ok(op(store, sid))
}

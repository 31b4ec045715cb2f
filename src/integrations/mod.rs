//! Session-middleware adapters: `ClusterStore` (and, with the `redis` feature, `RedisStore`)
//! as the store behind tower-sessions (axum) and actix-session (actix-web), each behind the
//! cargo feature of the same name.
//!
//! Both adapters call a `ClusterStore` inline on the async task. A call does memory work
//! under one shard lock, never I/O, and any lock wait ends within `Config::lock_timeout`;
//! moving it to a blocking pool would cost a thread hop (microseconds) to save a call that
//! takes about one. The exception is a shard lock held by a process that is stopped (not
//! dead): the call then blocks its executor thread for up to `Config::lock_timeout`. A
//! `RedisStore` cache hit is answered inline too; a miss, and every write, awaits Redis on
//! a multiplexed connection of the request's runtime, so the executor thread serves other requests
//! meanwhile (outside a Tokio runtime, the call waits on the calling thread).
#![forbid(unsafe_code)]

#[cfg(any(feature = "tower-sessions", feature = "actix-session"))]
use std::future::{ready, Future};

#[cfg(all(feature = "redis", any(feature = "tower-sessions", feature = "actix-session")))]
use crate::redis_tier::{Link, SetIf};
#[cfg(any(feature = "tower-sessions", feature = "actix-session"))]
use crate::{Expiry, Result};

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

/// A store behind the adapters: the operations they use, as futures that borrow their
/// arguments. Named apart from the stores' own methods, which they call.
#[cfg(any(feature = "tower-sessions", feature = "actix-session"))]
pub(crate) trait Store: Send + Sync {
    /// `get_raw`.
    fn fetch(&self, sid: &str) -> impl Future<Output = Result<Option<Vec<u8>>>> + Send;
    /// `add_raw`.
    fn insert(
        &self,
        sid: &str,
        value: &[u8],
        expiry: Expiry,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// `replace_raw`.
    fn overwrite(
        &self,
        sid: &str,
        value: &[u8],
        expiry: Expiry,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// `touch` (only actix-session asks for it).
    #[cfg(feature = "actix-session")]
    fn retime(&self, sid: &str, expiry: Expiry) -> impl Future<Output = Result<bool>> + Send;
    /// `destroy`.
    fn remove(&self, sid: &str) -> impl Future<Output = Result<bool>> + Send;
}

#[cfg(any(feature = "tower-sessions", feature = "actix-session"))]
impl Store for crate::ClusterStore {
    fn fetch(&self, sid: &str) -> impl Future<Output = Result<Option<Vec<u8>>>> + Send {
        ready(self.get_raw(sid))
    }

    fn insert(
        &self,
        sid: &str,
        value: &[u8],
        expiry: Expiry,
    ) -> impl Future<Output = Result<bool>> + Send {
        ready(self.add_raw(sid, value, expiry))
    }

    fn overwrite(
        &self,
        sid: &str,
        value: &[u8],
        expiry: Expiry,
    ) -> impl Future<Output = Result<bool>> + Send {
        ready(self.replace_raw(sid, value, expiry))
    }

    #[cfg(feature = "actix-session")]
    fn retime(&self, sid: &str, expiry: Expiry) -> impl Future<Output = Result<bool>> + Send {
        ready(self.touch(sid, expiry))
    }

    fn remove(&self, sid: &str) -> impl Future<Output = Result<bool>> + Send {
        ready(self.destroy(sid))
    }
}

#[cfg(all(feature = "redis", any(feature = "tower-sessions", feature = "actix-session")))]
impl Store for crate::RedisStore {
    async fn fetch(&self, sid: &str) -> Result<Option<Vec<u8>>> {
        let mut out = Vec::new();
        Ok(self.get_over(link(), sid, &mut out).await?.then_some(out))
    }

    async fn insert(&self, sid: &str, value: &[u8], expiry: Expiry) -> Result<bool> {
        self.write_over(link(), sid, value, expiry, SetIf::Absent).await
    }

    async fn overwrite(&self, sid: &str, value: &[u8], expiry: Expiry) -> Result<bool> {
        self.write_over(link(), sid, value, expiry, SetIf::Present).await
    }

    #[cfg(feature = "actix-session")]
    async fn retime(&self, sid: &str, expiry: Expiry) -> Result<bool> {
        self.touch_over(link(), sid, expiry).await
    }

    async fn remove(&self, sid: &str) -> Result<bool> {
        self.destroy_over(link(), sid).await
    }
}

/// The multiplexed connection inside a Tokio runtime (both frameworks run on one); outside
/// one, the calling thread waits.
#[cfg(all(feature = "redis", any(feature = "tower-sessions", feature = "actix-session")))]
fn link() -> Link {
    match tokio::runtime::Handle::try_current() {
        Ok(_) => Link::Async,
        Err(_) => Link::Blocking,
    }
}

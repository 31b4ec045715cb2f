//! `ClusterStore` as an actix-session store (feature `actix-session`, for actix-session
//! 0.11): pass it to `SessionMiddleware::new` in every worker.
//!
//! The session state (actix-session's map of JSON strings) is stored as MessagePack under a
//! session key this adapter mints: 64 hex characters, 256 bits from the OS CSPRNG, stored
//! only if unused ([`ClusterStore::add_raw`]). The TTL actix-session passes becomes the
//! record's expiry, so an expired session is absent to `load` in every process.
//!
//! As in actix-session's Redis store, `update` writes only over a live session
//! ([`ClusterStore::replace_raw`]); if it expired or was deleted meanwhile, the state is
//! saved under a new key instead, never resurrected under the old one. A TTL of zero or less
//! ends the session. A key that cannot be in the store (empty or longer than
//! [`MAX_KEY_LEN`](crate::MAX_KEY_LEN)) loads as no session.
//!
//! `ClusterStore` has an inherent `update` (an atomic read-modify-write), which method
//! syntax picks first; the middleware calls the trait's, and so must code that calls it
//! directly: `SessionStore::update(&store, key, state, &ttl)`.
//!
//! # Examples
//! ```
//! use actix_session::{storage::SessionStore, SessionMiddleware};
//! use actix_web::cookie::{time::Duration, Key};
//! use cluster_session_store::{ClusterStore, Config};
//! use std::collections::HashMap;
//!
//! // The master, before forking; the cookie key must be the same in every worker, so the
//! // master makes it before the fork too:
//! let master = ClusterStore::setup(Config::new().name("doc-actix").memory_size(1 << 20).shards(2))?;
//! let key = Key::generate();
//! // Each worker: `App::new().wrap(SessionMiddleware::new(store, key.clone()))`. Directly:
//! let store = ClusterStore::open("doc-actix")?;
//! let _middleware = SessionMiddleware::new(store.clone(), key);
//! let state = HashMap::from([("user".to_owned(), "\"ada\"".to_owned())]);
//! let session_key = actix_web::rt::System::new().block_on(async {
//!     let session_key = store.save(state.clone(), &Duration::minutes(5)).await?;
//!     assert_eq!(store.load(&session_key).await?, Some(state));
//!     Ok::<_, Box<dyn std::error::Error>>(session_key)
//! })?;
//! assert_eq!(session_key.as_ref().len(), 64);
//! # drop(master);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

use std::collections::HashMap;

use actix_session::storage::{LoadError, SaveError, SessionKey, SessionStore, UpdateError};
use actix_web::cookie::time::Duration;

use super::{Store, MINT_ATTEMPTS};
use crate::store::{decode, encode};
use crate::{ClusterStore, Expiry, StoreError};

/// actix-session's session state.
type State = HashMap<String, String>;

/// Whether the store refused the key itself, so no session can be stored under it.
fn bad_key(e: &StoreError) -> bool {
    matches!(e, StoreError::EmptyKey | StoreError::KeyTooLong { .. })
}

/// A TTL as a store expiry; zero or negative ends the session.
fn expiry(ttl: &Duration) -> Expiry {
    Expiry::After(std::time::Duration::try_from(*ttl).unwrap_or_default())
}

/// 256 bits from the OS CSPRNG as 64 hex characters.
fn new_key() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut key = String::with_capacity(2 * bytes.len());
    for b in bytes {
        key.push(char::from(HEX[usize::from(b >> 4)]));
        key.push(char::from(HEX[usize::from(b & 15)]));
    }
    Ok(key)
}

/// The adapter for `$store`: `ClusterStore`, and `RedisStore` under the `redis` feature,
/// whose methods of the same names keep the same contracts, called through [`Store`].
macro_rules! adapter {
    ($store:ty) => {
        impl SessionStore for $store {
            async fn load(&self, key: &SessionKey) -> Result<Option<State>, LoadError> {
                let state = self.fetch(key.as_ref()).await.and_then(|bytes| {
                    bytes.map(|bytes| decode::<State>(key.as_ref(), &bytes)).transpose()
                });
                match state {
                    Ok(state) => Ok(state),
                    Err(e @ StoreError::Decode { .. }) => Err(LoadError::Deserialization(e.into())),
                    Err(e) if bad_key(&e) => Ok(None),
                    Err(e) => Err(LoadError::Other(e.into())),
                }
            }

            /// Stores the state under a newly minted key.
            async fn save(&self, state: State, ttl: &Duration) -> Result<SessionKey, SaveError> {
                let bytes = encode(&state).map_err(|e| SaveError::Serialization(e.into()))?;
                let at = expiry(ttl);
                for _ in 0..MINT_ATTEMPTS {
                    let key = new_key().map_err(|e| SaveError::Other(anyhow::Error::new(e)))?;
                    if self.insert(&key, &bytes, at).await.map_err(|e| SaveError::Other(e.into()))? {
                        return SessionKey::try_from(key).map_err(|e| SaveError::Other(e.into()));
                    }
                }
                Err(SaveError::Other(anyhow::anyhow!(
                    "no unused session key after {MINT_ATTEMPTS} random draws: the OS random source is broken"
                )))
            }

            /// Replaces the state of a live session; saves it under a new key if the session
            /// expired or was deleted meanwhile.
            async fn update(
                &self,
                key: SessionKey,
                state: State,
                ttl: &Duration,
            ) -> Result<SessionKey, UpdateError> {
                let bytes = encode(&state).map_err(|e| UpdateError::Serialization(e.into()))?;
                let at = expiry(ttl);
                match self.overwrite(key.as_ref(), &bytes, at).await {
                    Ok(true) => Ok(key),
                    Err(e) if !bad_key(&e) => Err(UpdateError::Other(e.into())),
                    Ok(false) | Err(_) => self.save(state, ttl).await.map_err(|e| match e {
                        SaveError::Serialization(e) => UpdateError::Serialization(e),
                        SaveError::Other(e) => UpdateError::Other(e),
                    }),
                }
            }

            async fn update_ttl(&self, key: &SessionKey, ttl: &Duration) -> Result<(), anyhow::Error> {
                let at = expiry(ttl);
                match self.retime(key.as_ref(), at).await {
                    Err(e) if !bad_key(&e) => Err(e.into()),
                    _ => Ok(()),
                }
            }

            async fn delete(&self, key: &SessionKey) -> Result<(), anyhow::Error> {
                match self.remove(key.as_ref()).await {
                    Err(e) if !bad_key(&e) => Err(e.into()),
                    _ => Ok(()),
                }
            }
        }
    };
}

adapter!(ClusterStore);
#[cfg(feature = "redis")]
adapter!(crate::RedisStore);

//! `ClusterStore` as a tower-sessions store (feature `tower-sessions`, for
//! `tower_sessions_core` 0.15): pass it to `SessionManagerLayer::new` in every worker.
//!
//! A record is stored under its id's text form (22 URL-safe base64 characters, 128 bits) as
//! MessagePack of its data and expiry date, and the store's own expiry is set to the
//! record's `expiry_date`: an expired session is absent to `load` in every process, and its
//! memory comes back through the coordinator's sweep. [`ExpiredDeletion::delete_expired`]
//! frees every expired record at once ([`ClusterStore::purge_expired`]).
//!
//! `create` never overwrites a session: it stores the record only if its id is unused
//! ([`ClusterStore::add_raw`]) and draws a new id otherwise, as tower-sessions asks. It is the
//! only way a record comes in: `save` writes only over a live record
//! ([`ClusterStore::replace_raw`], Redis's `SET … XX`), so a request that ran alongside a
//! logout (`delete`) or a `cycle_id` never writes the old, logged-in record back; its
//! changes to a session that has ended are dropped.
//!
//! # Examples
//! ```
//! use axum::{routing::get, Router};
//! use cluster_session_store::{ClusterStore, Config};
//! use tower_sessions::{Session, SessionManagerLayer};
//!
//! // The master, before forking:
//! let master = ClusterStore::setup(Config::new().name("doc-tower").memory_size(1 << 20).shards(2))?;
//! // Each worker, after the fork, builds its app on its own handle:
//! let store = ClusterStore::open("doc-tower")?;
//! let app: Router = Router::new()
//!     .route("/", get(|session: Session| async move {
//!         let visits: u32 = session.get("visits").await.unwrap().unwrap_or(0);
//!         session.insert("visits", visits + 1).await.unwrap();
//!         format!("visit {}", visits + 1)
//!     }))
//!     .layer(SessionManagerLayer::new(store));
//! # drop(master);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

use std::time::SystemTime;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tower_sessions_core::session::{Id, Record};
use tower_sessions_core::session_store::{self, ExpiredDeletion, SessionStore};

use super::{Store, MINT_ATTEMPTS};
use crate::{ClusterStore, Expiry, StoreError};

/// What is stored for a record: its id is the key.
#[derive(Serialize, Deserialize)]
struct Stored<D> {
    data: D,
    /// `expiry_date` as unix seconds and nanoseconds (UTC).
    expires_s: i64,
    expires_ns: u32,
}

fn encode(record: &Record) -> session_store::Result<Vec<u8>> {
    let expiry = record.expiry_date;
    let stored = Stored {
        data: &record.data,
        expires_s: expiry.unix_timestamp(),
        expires_ns: expiry.nanosecond(),
    };
    crate::store::encode(&stored).map_err(store_error)
}

/// The key a record is stored under: `id`'s text form exactly as its `Display` writes it
/// (URL-safe base64 of its 16 little-endian bytes, unpadded: 22 characters), built on the
/// stack instead of in a `String` through the formatting machinery, once per call.
struct Key([u8; 22]);

impl Key {
    fn of(id: &Id) -> Key {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        // The 16 bytes as one big-endian number, so that its top six bits are the first
        // character's; the 22nd character takes the last two bits and four zero bits.
        let bits = u128::from_be_bytes(id.0.to_le_bytes());
        let mut text = [0u8; 22];
        for (i, c) in text.iter_mut().enumerate() {
            let six = match 122usize.checked_sub(6 * i) {
                Some(shift) => bits >> shift,
                None => bits << 4,
            };
            *c = ALPHABET[(six & 63) as usize];
        }
        Key(text)
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("base64 is ASCII")
    }
}

fn decode(id: Id, bytes: &[u8]) -> session_store::Result<Record> {
    let bad = |what: String| session_store::Error::Decode(format!("session {id}: {what}"));
    let stored: Stored<_> = rmp_serde::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    let expiry_date = OffsetDateTime::from_unix_timestamp(stored.expires_s)
        .and_then(|t| t.replace_nanosecond(stored.expires_ns))
        .map_err(|e| bad(e.to_string()))?;
    Ok(Record { id, data: stored.data, expiry_date })
}

fn expiry(record: &Record) -> Expiry {
    Expiry::At(SystemTime::from(record.expiry_date))
}

/// tower-sessions' error for a store error: encoding and decoding keep their kind, the rest
/// (a full shard, a lock timeout, corruption) are the backend's, with the store's message.
fn store_error(e: StoreError) -> session_store::Error {
    match e {
        StoreError::Encode(m) => session_store::Error::Encode(m),
        e @ StoreError::Decode { .. } => session_store::Error::Decode(e.to_string()),
        e => session_store::Error::Backend(e.to_string()),
    }
}

/// The adapter for `$store`: `ClusterStore`, and `RedisStore` under the `redis` feature,
/// whose methods of the same names keep the same contracts, called through [`Store`].
macro_rules! adapter {
    ($store:ty) => {
        #[async_trait]
        impl SessionStore for $store {
            /// Stores a new record under an unused id, drawing a new id while the current one is
            /// taken by a live session.
            async fn create(&self, record: &mut Record) -> session_store::Result<()> {
                let (bytes, at) = (encode(record)?, expiry(record));
                for _ in 0..MINT_ATTEMPTS {
                    let key = Key::of(&record.id);
                    if self.insert(key.as_str(), &bytes, at).await.map_err(store_error)? {
                        return Ok(());
                    }
                    record.id = Id::default();
                }
                Err(session_store::Error::Backend(format!(
                    "no unused session id after {MINT_ATTEMPTS} random draws: the id generator is broken"
                )))
            }

            /// Replaces the record if it is live; does nothing if it expired or was deleted (or its
            /// id cycled) meanwhile. A past expiry date removes it.
            async fn save(&self, record: &Record) -> session_store::Result<()> {
                let (key, bytes, at) = (Key::of(&record.id), encode(record)?, expiry(record));
                self.overwrite(key.as_str(), &bytes, at).await.map(drop).map_err(store_error)
            }

            /// The record, or `None` if it is absent or expired.
            async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
                match self.fetch(Key::of(id).as_str()).await.map_err(store_error)? {
                    Some(bytes) => decode(*id, &bytes).map(Some),
                    None => Ok(None),
                }
            }

            async fn delete(&self, id: &Id) -> session_store::Result<()> {
                self.remove(Key::of(id).as_str()).await.map(drop).map_err(store_error)
            }
        }

        #[async_trait]
        impl ExpiredDeletion for $store {
            /// Frees every expired record now. Not needed for correctness (an expired record is
            /// already absent to `load`) nor for memory (the master's coordinator sweeps every
            /// `Config::sweep_interval`); here for code written against the trait.
            async fn delete_expired(&self) -> session_store::Result<()> {
                self.purge_expired().map(drop).map_err(store_error)
            }
        }
    };
}

adapter!(ClusterStore);
#[cfg(feature = "redis")]
adapter!(crate::RedisStore);

#[cfg(test)]
mod tests {
    use super::*;

    /// The key is `Id`'s `Display` form, for the ids at the edges and 10,000 others.
    #[test]
    fn the_key_is_the_ids_text_form() {
        let mut x = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let edges = [0, 1, -1, i128::MIN, i128::MAX, 0xFF, 0xFF << 120];
        let random = (0..10_000).map(|_| (i128::from(next()) << 64) | i128::from(next()));
        for raw in edges.into_iter().chain(random) {
            let id = Id(raw);
            assert_eq!(Key::of(&id).as_str(), id.to_string(), "id {raw:#x}");
        }
    }
}

//! `Store`: one process's handle to the segment, with express-session's operations on JSON
//! text. The package's `ClusterStore` (`index.js`) turns sessions into JSON and calls these
//! synchronously; each is a memory operation under a shard lock of well under a microsecond.
//!
//! Expiry is an instant in unix milliseconds (the session cookie's `expires`), or `undefined`
//! for the store's default time to live. An instant already past removes the session.

use std::time::{Duration, UNIX_EPOCH};

use cluster_session_store::{ClusterStore, Expiry};
use napi_derive::napi;

use crate::error::{attach_error, not_text, store_error, Result};

/// Latest instant accepted as an expiry: the end of year 9999, in unix milliseconds. Later
/// ones (and `Infinity`) mean that instant.
const MAX_EXPIRES_MS: f64 = 253_402_300_799_999.0;

/// The crate's `Expiry` for an instant in unix milliseconds: `None` and `NaN` (an invalid
/// `Date`) give the default time to live.
fn expiry(expires_ms: Option<f64>) -> Expiry {
    match expires_ms {
        Some(ms) if !ms.is_nan() => {
            let ms = ms.clamp(0.0, MAX_EXPIRES_MS) as u64;
            Expiry::At(UNIX_EPOCH + Duration::from_millis(ms))
        }
        _ => Expiry::Default,
    }
}

/// A live session, as `all()` returns it.
#[napi(object)]
pub struct Entry {
    /// The session id.
    pub id: String,
    /// The session as JSON text.
    pub json: String,
}

/// What `checkIntegrity()` found.
#[napi(object)]
pub struct Integrity {
    /// Whether nothing is wrong.
    pub ok: bool,
    /// Shards walked.
    pub shards_checked: u32,
    /// Records found.
    pub records: f64,
    /// One line per problem found.
    pub problems: Vec<String>,
}

/// Counters of the whole store, summed over its shards (`stats()`).
#[napi(object)]
pub struct Stats {
    /// Live and expired records held.
    pub records: f64,
    /// Bytes of blocks in use.
    pub used_bytes: f64,
    /// Reads that found a session.
    pub hits: f64,
    /// Reads that found none.
    pub misses: f64,
    /// Writes.
    pub sets: f64,
    /// Sessions destroyed.
    pub destroys: f64,
    /// Sessions evicted to make room.
    pub evictions: f64,
    /// Expired sessions freed.
    pub expirations: f64,
    /// Shards repaired after a process died holding their lock.
    pub recoveries: f64,
    /// Damaged records dropped.
    pub corrupt_dropped: f64,
    /// Sweeps the primary ran.
    pub sweeps: f64,
}

/// A process's handle to the store the cluster primary set up.
#[napi]
pub struct Store {
    store: ClusterStore,
}

#[napi]
impl Store {
    /// Attaches to the segment named `name`: the one this process set up, or the primary's.
    #[napi(factory)]
    pub fn attach(name: String) -> Result<Store> {
        let store = match ClusterStore::open(&name) {
            Ok(own) => own,
            Err(_) => ClusterStore::attach(&name).map_err(attach_error)?,
        };
        Ok(Store { store })
    }

    /// The segment's name.
    #[napi(getter)]
    pub fn name(&self) -> String {
        self.store.name().to_owned()
    }

    /// Largest session accepted, in bytes of JSON.
    #[napi(getter)]
    pub fn max_value_size(&self) -> u32 {
        u32::try_from(self.store.max_value_size()).unwrap_or(u32::MAX)
    }

    /// Whether the primary that set the store up still runs.
    #[napi]
    pub fn primary_alive(&self) -> bool {
        self.store.master_alive()
    }

    /// The session's JSON, or `null` if it is absent or expired.
    #[napi]
    pub fn get(&self, sid: String) -> Result<Option<String>> {
        match self.store.get_raw(&sid).map_err(store_error)? {
            Some(bytes) => String::from_utf8(bytes).map(Some).map_err(|_| not_text(&sid)),
            None => Ok(None),
        }
    }

    /// Stores the session's JSON (upsert), to expire at `expires` (unix ms).
    #[napi]
    pub fn set(&self, sid: String, json: String, expires: Option<f64>) -> Result<()> {
        self.store.set_raw(&sid, json.as_bytes(), expiry(expires)).map_err(store_error)
    }

    /// Removes the session; returns whether a live one was there.
    #[napi]
    pub fn destroy(&self, sid: String) -> Result<bool> {
        self.store.destroy(&sid).map_err(store_error)
    }

    /// Gives a live session a new expiry, its data unchanged; returns whether it was live.
    #[napi]
    pub fn touch(&self, sid: String, expires: Option<f64>) -> Result<bool> {
        self.store.touch(&sid, expiry(expires)).map_err(store_error)
    }

    /// Every live session (each shard a consistent snapshot; the whole is not one instant).
    #[napi]
    pub fn all(&self) -> Result<Vec<Entry>> {
        self.store
            .all_raw()
            .map_err(store_error)?
            .into_iter()
            .map(|(id, bytes)| match String::from_utf8(bytes) {
                Ok(json) => Ok(Entry { id, json }),
                Err(_) => Err(not_text(&id)),
            })
            .collect()
    }

    /// Number of live sessions.
    #[napi]
    pub fn length(&self) -> Result<u32> {
        let n = self.store.length().map_err(store_error)?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// Removes every session.
    #[napi]
    pub fn clear(&self) -> Result<()> {
        self.store.clear().map_err(store_error)
    }

    /// Frees every expired session now; returns how many.
    #[napi]
    pub fn purge_expired(&self) -> Result<f64> {
        Ok(self.store.purge_expired().map_err(store_error)? as f64)
    }

    /// Walks the whole segment and reports what is wrong, if anything.
    #[napi]
    pub fn check_integrity(&self) -> Integrity {
        let report = self.store.check_integrity();
        Integrity {
            ok: report.is_ok(),
            shards_checked: u32::try_from(report.shards_checked).unwrap_or(u32::MAX),
            records: report.records as f64,
            problems: report
                .problems
                .iter()
                .map(|p| match p.shard {
                    Some(shard) => format!("shard {shard}: {}", p.description),
                    None => p.description.clone(),
                })
                .collect(),
        }
    }

    /// The store's counters, read without locking.
    #[napi]
    pub fn stats(&self) -> Result<Stats> {
        let s = self.store.stats().map_err(store_error)?;
        Ok(Stats {
            records: s.records as f64,
            used_bytes: s.used_bytes as f64,
            hits: s.hits as f64,
            misses: s.misses as f64,
            sets: s.sets as f64,
            destroys: s.destroys as f64,
            evictions: s.evictions as f64,
            expirations: s.expirations as f64,
            recoveries: s.recoveries as f64,
            corrupt_dropped: s.corrupt_dropped as f64,
            sweeps: s.sweeps as f64,
        })
    }
}

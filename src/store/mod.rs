//! `ClusterStore`: the store operations used by workers (and the master), with
//! express-session's semantics, for raw bytes and for serde types (MessagePack).
//!
//! Each call validates its input, hashes the key and computes the CRC before locking, does
//! only memory work under the shard lock (`locked`), and verifies or decodes after unlocking
//! (`codec`). A read first tries without the lock (`lock::optimistic`), and takes it only if
//! a writer keeps the shard busy or a repair is owed. `open` finds or attaches to a segment;
//! `maintenance` holds what the master and monitoring call: expiry, integrity, statistics.
#![forbid(unsafe_code)]

mod codec;
mod locked;
mod maintenance;
mod open;
mod snapshot;

pub(crate) use codec::{decode, encode};
pub(crate) use locked::Shared;
pub(crate) use open::registry;
pub use snapshot::{Restored, Snapshot, SNAPSHOT_VERSION};

use std::hash::Hasher;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::clock::{now_ms, Clock};
use crate::error::StoreError;
use crate::format::layout::*;
use crate::lock::OptimisticRead;
use crate::shard::audit::shard_of;
use crate::shard::record::{self, NewRecord};
use crate::shard::{self, Expect, Freed, Removed, Written};
use crate::Result;

/// Attempts `update` makes before [`StoreError::Contended`].
const UPDATE_ATTEMPTS: u32 = 1000;
/// Optimistic snapshots a read tries before it takes the shard lock. A writer holds the lock
/// for well under a microsecond, so a few spins usually outlast it; a dead writer's odd
/// version never changes, and the lock (with its repair) is the way past it.
const OPTIMISTIC_ATTEMPTS: u32 = 4;

/// When a session expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Expiry {
    /// After the store's `Config::default_ttl`.
    #[default]
    Default,
    /// After this long from now.
    After(Duration),
    /// At this instant (express-session's `cookie.expires`).
    At(SystemTime),
}

impl Expiry {
    /// The expiry as unix milliseconds.
    pub(crate) fn deadline(self, now_ms: u64, default_ttl_ms: u64) -> u64 {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        match self {
            Expiry::Default => now_ms.saturating_add(default_ttl_ms),
            Expiry::After(ttl) => now_ms.saturating_add(ms(ttl)),
            Expiry::At(at) => at.duration_since(UNIX_EPOCH).map_or(0, ms),
        }
    }
}

/// A handle to a shared-memory session store. Cheap to clone; `Send` and `Sync`.
///
/// The master gets one from [`ClusterStore::setup`] (through [`Master`](crate::Master)),
/// forked workers from [`ClusterStore::new`] or [`ClusterStore::open`], workers started by
/// exec from [`ClusterStore::attach`].
///
/// # Examples
/// ```
/// use cluster_session_store::{ClusterStore, Config, Expiry};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let master = ClusterStore::setup(Config::new().name("doc-store").memory_size(1 << 20).shards(4).max_value_size(4096))?;
/// // ... fork workers here; each calls ClusterStore::open("doc-store") ...
/// let store = ClusterStore::open("doc-store")?;
/// store.set("sid-1", &serde_json::json!({"visited": true}), Expiry::Default)?;
/// let session: Option<serde_json::Value> = store.get("sid-1")?;
/// assert_eq!(session.unwrap()["visited"], true);
/// assert!(store.destroy("sid-1")?);
/// # drop(master); Ok(()) }
/// ```
#[derive(Clone)]
pub struct ClusterStore {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for ClusterStore {
    fn fmt(&self, each: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        each.debug_struct("ClusterStore")
            .field("name", &self.shared.settings.name)
            .field("shards", &self.shared.geo.shard_count)
            .field("bytes", &self.shared.geo.total_size)
            .finish()
    }
}

/// The session id's bytes, or why no store operation accepts it.
pub(crate) fn key_bytes(sid: &str) -> Result<&[u8]> {
    match sid.len() {
        0 => Err(StoreError::EmptyKey),
        len if len > MAX_KEY_LEN => Err(StoreError::KeyTooLong { len, max: MAX_KEY_LEN }),
        _ => Ok(sid.as_bytes()),
    }
}

impl ClusterStore {
    /// The store's namespace.
    pub fn name(&self) -> &str {
        &self.shared.settings.name
    }

    /// Whether the master of the store is running: the process that called `setup()`, or the
    /// one that adopted the segment since (`Config::keep_segment`). Workers keep serving when
    /// it is not (the segment lives as long as any process maps it); what they do about it is
    /// the application's choice. A pid reused by an unrelated process reads as alive.
    pub fn master_alive(&self) -> bool {
        // The header's owner, read now: a master that adopted the segment since this
        // process attached is the one asked about.
        crate::segment::running(self.shared.segment.live_word(H_OWNER_PID).load(Relaxed) as u32)
    }

    /// Largest value accepted, in bytes (`Config::max_value_size`).
    pub fn max_value_size(&self) -> usize {
        self.shared.geo.max_value_len
    }

    fn hash(&self, key: &[u8]) -> u64 {
        let [k0, k1] = self.shared.settings.hash_key;
        let mut h = siphasher::sip::SipHasher13::new_with_keys(k0, k1);
        h.write(key);
        h.finish()
    }

    fn shard(&self, hash: u64) -> usize {
        shard_of(hash, self.shared.geo.shard_bits)
    }

    /// Starts loading the key's home index slot and its recency stamp, so that the cache
    /// misses overlap taking the shard lock (or beginning an optimistic read) instead of
    /// following it.
    #[inline]
    fn prefetch_slot(&self, shard: usize, hash: u64) {
        let geo = &self.shared.geo;
        let state = geo.shard_offset(shard) + SHARD_STATE;
        // The index's size, read without the lock (a hint: the lookup reads it again).
        let active =
            crate::shard::index::active_of(self.shared.segment.hint_u32(state + S_GROWN), geo);
        let home = crate::shard::index::home(active, crate::shard::index::tag_of(hash));
        self.shared.segment.prefetch(state + crate::shard::index::slot_at(geo, home));
        self.shared.segment.prefetch(state + crate::shard::index::stamp_at(geo, home));
    }

    /// Starts loading, with intent to write, the block the write will most likely take: the
    /// head of its class's free list, read without the lock (a hint; `put` takes the lock
    /// and pops whatever the head is then). Computing the CRC then overlaps the misses.
    #[inline]
    fn prefetch_free_block(&self, shard: usize, class: usize, record_len: usize) {
        let geo = &self.shared.geo;
        let state = geo.shard_offset(shard) + SHARD_STATE;
        let head = self.shared.segment.hint_u32(state + crate::shard::alloc::head_at(class));
        if let Some(off) = block_offset(head).filter(|&off| off < geo.data_bytes) {
            self.shared.segment.prefetch_write(state + geo.data_start() + off, record_len);
        }
    }

    /// The clock of a write and the deadline `expiry` gives it, counted from the clock's
    /// floor; `None` for a deadline already past, which removes instead of writing.
    fn deadline(&self, expiry: Expiry) -> (Clock, Option<u64>) {
        let now = Clock::new();
        let expires = expiry.deadline(now.floor(), self.shared.settings.default_ttl_ms);
        (now, now.live(expires).then_some(expires))
    }

    fn check_value(&self, value: &[u8]) -> Result<()> {
        let max = self.shared.geo.max_value_len;
        if value.len() > max {
            return Err(StoreError::ValueTooLarge { len: value.len(), max });
        }
        Ok(())
    }

    /// Copies the live value of `key` into `out` (cleared first). Returns its sequence number.
    /// Tries an optimistic read first, then takes the lock.
    fn read(&self, key: &[u8], hash: u64, out: &mut Vec<u8>) -> Result<Option<u64>> {
        let shard = self.shard(hash);
        self.prefetch_slot(shard, hash);
        let now = Clock::new();
        let shared = &self.shared;
        let hit = match self.read_optimistic(shard, key, hash, now, out) {
            Some(hit) => hit,
            None => {
                shared.read_counter(RC_LOCKED_READS).fetch_add(1, Relaxed);
                shared.with_shard(shard, |g| {
                    out.clear();
                    shard::get(g, hash, key, now, out)
                })?
            }
        };
        shared.read_counter(if hit.is_some() { RC_HITS } else { RC_MISSES }).fetch_add(1, Relaxed);
        match hit {
            Some(hit)
                if hit.computed.unwrap_or_else(|| record::checksum(hash, key, out)) == hit.crc =>
            {
                Ok(Some(hit.seq))
            }
            Some(_) => {
                out.clear();
                shared.repair_damaged(shard, true)?;
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// A read without the lock (`lock::optimistic`): `None` when it could not get a
    /// consistent snapshot in [`OPTIMISTIC_ATTEMPTS`] tries, or found the shard owed a repair
    /// or corrupt; the caller then takes the lock, which repairs.
    #[inline]
    fn read_optimistic(
        &self,
        shard: usize,
        key: &[u8],
        hash: u64,
        now: Clock,
        out: &mut Vec<u8>,
    ) -> Option<Option<shard::Hit>> {
        let shared = &self.shared;
        for _ in 0..OPTIMISTIC_ATTEMPTS {
            let Some(r) = OptimisticRead::begin(&shared.segment, &shared.geo, shard) else {
                std::hint::spin_loop();
                continue;
            };
            out.clear();
            let peeked = shard::peek(&r, hash, key, now, out);
            if !r.validate() {
                continue;
            }
            return match peeked {
                Ok(Some((hit, restamp))) => {
                    if let Some(restamp) = restamp {
                        r.set_stamp(restamp.at, restamp.stamp);
                    }
                    Some(Some(hit))
                }
                Ok(None) => Some(None),
                Err(_) => None,
            };
        }
        None
    }

    /// Writes a record under `expect`, and only if `still()` holds under the shard lock
    /// (`Written::Conflict` otherwise): the Redis tier's fills check there that no
    /// invalidation came in meanwhile.
    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        key: &[u8],
        hash: u64,
        value: &[u8],
        expires_ms: u64,
        expect: Expect,
        now: Clock,
        still: impl Fn() -> bool,
    ) -> Result<Written> {
        let shard = self.shard(hash);
        self.prefetch_slot(shard, hash);
        let len = record_len(key.len(), value.len());
        let class = self.shared.geo.class_for(len).expect("check_value refused values of no class");
        self.prefetch_free_block(shard, class, len);
        let crc = record::checksum(hash, key, value);
        let new = NewRecord { hash, key, value, crc, expires_ms, class };
        let policy = self.shared.settings.eviction;
        let shared = &self.shared;
        let mut evicted = 0;
        let written = shared.with_shard_mut(shard, |g| {
            if !still() {
                return Ok(Written::Conflict);
            }
            let mut freed = Freed::default();
            let written = shard::put(g, &new, expect, policy, now, &mut freed)?;
            shared.count_freed(g, freed);
            shared.count(g, STAT_SETS, u64::from(written == Written::Done));
            evicted += freed.evicted;
            Ok(written)
        })?;
        if evicted > 0 {
            tracing::debug!(namespace = %shared.settings.name, shard, evicted, "evicted to make room");
        }
        match written {
            Written::Full { needed } => Err(StoreError::Full { shard, needed }),
            written => Ok(written),
        }
    }

    /// Removes a record under `expect`.
    fn remove(&self, key: &[u8], hash: u64, expect: Expect) -> Result<Removed> {
        let shard = self.shard(hash);
        let now = Clock::new();
        let shared = &self.shared;
        shared.with_shard_mut(shard, |g| {
            let mut freed = Freed::default();
            let removed = shard::remove(g, hash, key, expect, now, &mut freed)?;
            shared.count_freed(g, freed);
            shared.count(g, STAT_DESTROYS, u64::from(removed == Removed::Live));
            Ok(removed)
        })
    }

    /// Copies the session's bytes into `out` (cleared first); returns whether it was found.
    /// Allocates nothing when `out` has the capacity.
    pub fn get_raw_into(&self, sid: &str, out: &mut Vec<u8>) -> Result<bool> {
        let key = key_bytes(sid)?;
        Ok(self.read(key, self.hash(key), out)?.is_some())
    }

    /// The session's bytes, or `None` if it is absent or expired. A miss writes nothing.
    pub fn get_raw(&self, sid: &str) -> Result<Option<Vec<u8>>> {
        let mut out = Vec::new();
        Ok(self.get_raw_into(sid, &mut out)?.then_some(out))
    }

    /// The session decoded from MessagePack, or `None` if it is absent or expired.
    pub fn get<T: DeserializeOwned>(&self, sid: &str) -> Result<Option<T>> {
        self.get_raw(sid)?.map(|bytes| decode(sid, &bytes)).transpose()
    }

    /// Stores the session's bytes (upsert). An expiry already past removes the session.
    /// If there is no room, the previous value stays and [`StoreError::Full`] is returned.
    pub fn set_raw(&self, sid: &str, value: &[u8], expiry: Expiry) -> Result<()> {
        let key = key_bytes(sid)?;
        self.check_value(value)?;
        let (now, expires) = self.deadline(expiry);
        let hash = self.hash(key);
        match expires {
            Some(expires) => {
                self.write(key, hash, value, expires, Expect::Any, now, || true).map(drop)
            }
            None => self.remove(key, hash, Expect::Any).map(drop),
        }
    }

    /// [`set_raw`](Self::set_raw) if `still()` holds under the shard lock: returns whether
    /// it held (with an expiry already past, nothing is written or removed). For the Redis
    /// tier, whose fills must lose to an invalidation that came in while they were fetched.
    #[cfg(feature = "redis")]
    pub(crate) fn set_raw_if(
        &self,
        sid: &str,
        value: &[u8],
        expiry: Expiry,
        still: impl Fn() -> bool,
    ) -> Result<bool> {
        let key = key_bytes(sid)?;
        self.check_value(value)?;
        let (now, Some(expires)) = self.deadline(expiry) else { return Ok(false) };
        let hash = self.hash(key);
        Ok(self.write(key, hash, value, expires, Expect::Any, now, still)? == Written::Done)
    }

    /// The expiry `Expiry::Default` gives, in ms (`Config::default_ttl`).
    #[cfg(feature = "redis")]
    pub(crate) fn default_ttl_ms(&self) -> u64 {
        self.shared.settings.default_ttl_ms
    }

    /// Header word `at` (one of the `H_CACHE_*` cache words).
    #[cfg(feature = "redis")]
    pub(crate) fn cache_word(&self, at: usize) -> &std::sync::atomic::AtomicU64 {
        self.shared.segment.live_word(at)
    }

    /// Stores the session encoded as MessagePack (upsert); see [`set_raw`](Self::set_raw).
    pub fn set<T: Serialize + ?Sized>(&self, sid: &str, value: &T, expiry: Expiry) -> Result<()> {
        key_bytes(sid)?;
        self.set_raw(sid, &encode(value)?, expiry)
    }

    /// Stores the session's bytes only if no live session has this id (memcached's `add`):
    /// for minting a new session id without ever overwriting another client's session.
    /// Returns whether the id was free. With an expiry already past nothing is stored, and
    /// the result still says whether the id was free.
    ///
    /// # Examples
    /// ```
    /// # use cluster_session_store::{ClusterStore, Config, Expiry};
    /// # let master = ClusterStore::setup(Config::new().name("doc-add").memory_size(1 << 20).shards(2).max_value_size(1024)).unwrap();
    /// let store = ClusterStore::open("doc-add").unwrap();
    /// assert!(store.add_raw("sid", b"first", Expiry::Default).unwrap());
    /// assert!(!store.add_raw("sid", b"second", Expiry::Default).unwrap()); // taken
    /// assert_eq!(store.get_raw("sid").unwrap().unwrap(), b"first");
    /// ```
    pub fn add_raw(&self, sid: &str, value: &[u8], expiry: Expiry) -> Result<bool> {
        self.conditional_write(sid, value, expiry, Expect::Absent)
    }

    /// Stores the session's bytes only if a live session has this id (memcached's
    /// `replace`): an update that must not resurrect a session that expired or was destroyed
    /// meanwhile. Returns whether one was live (and so was replaced; with an expiry already
    /// past, removed).
    pub fn replace_raw(&self, sid: &str, value: &[u8], expiry: Expiry) -> Result<bool> {
        self.conditional_write(sid, value, expiry, Expect::Present)
    }

    /// `add_raw` and `replace_raw`: a write under `expect`; returns whether `expect` held.
    fn conditional_write(
        &self,
        sid: &str,
        value: &[u8],
        expiry: Expiry,
        expect: Expect,
    ) -> Result<bool> {
        let key = key_bytes(sid)?;
        self.check_value(value)?;
        let (now, expires) = self.deadline(expiry);
        let hash = self.hash(key);
        if let Some(expires) = expires {
            return Ok(
                self.write(key, hash, value, expires, expect, now, || true)? == Written::Done
            );
        }
        Ok(match expect {
            Expect::Present => self.remove(key, hash, Expect::Any)? == Removed::Live,
            _ => !self.is_live(key, hash, now)?,
        })
    }

    /// Whether a live record has `key`: a probe only (no copy, no recency stamp, no hit or
    /// miss counted).
    fn is_live(&self, key: &[u8], hash: u64, now: Clock) -> Result<bool> {
        self.shared
            .with_shard(self.shard(hash), |g| Ok(shard::find(g, hash, key)?.live(now).is_some()))
    }

    /// Stores the session encoded as MessagePack only if no live session has this id; see
    /// [`add_raw`](Self::add_raw).
    pub fn add<T: Serialize + ?Sized>(&self, sid: &str, value: &T, expiry: Expiry) -> Result<bool> {
        key_bytes(sid)?;
        self.add_raw(sid, &encode(value)?, expiry)
    }

    /// Stores the session encoded as MessagePack only if a live session has this id; see
    /// [`replace_raw`](Self::replace_raw).
    pub fn replace<T: Serialize + ?Sized>(
        &self,
        sid: &str,
        value: &T,
        expiry: Expiry,
    ) -> Result<bool> {
        key_bytes(sid)?;
        self.replace_raw(sid, &encode(value)?, expiry)
    }

    /// Removes the session. Returns whether a live one was there; a missing session is not
    /// an error.
    pub fn destroy(&self, sid: &str) -> Result<bool> {
        let key = key_bytes(sid)?;
        Ok(self.remove(key, self.hash(key), Expect::Any)? == Removed::Live)
    }

    /// Gives a live session a new expiry, its data unchanged. Returns whether it was live; a
    /// missing session is not an error. An expiry already past removes the session.
    pub fn touch(&self, sid: &str, expiry: Expiry) -> Result<bool> {
        let key = key_bytes(sid)?;
        let hash = self.hash(key);
        let (now, Some(expires)) = self.deadline(expiry) else {
            return Ok(self.remove(key, hash, Expect::Any)? == Removed::Live);
        };
        self.shared.with_shard(self.shard(hash), |g| shard::touch(g, hash, key, now, expires))
    }

    /// Atomic read-modify-write of one session's bytes. `f` gets the current value (`None`
    /// if absent or expired) and returns the new one (`None` removes the session); the result
    /// is stored with `expiry` only if no other write to the session happened in between,
    /// otherwise `f` runs again on the newer value. `f` never runs under a lock, so it may
    /// take its time; it may run more than once. Returns what was stored.
    pub fn update_raw(
        &self,
        sid: &str,
        expiry: Expiry,
        mut each: impl FnMut(Option<&[u8]>) -> Option<Vec<u8>>,
    ) -> Result<Option<Vec<u8>>> {
        self.update_with(sid, expiry, |old| Ok(each(old)))
    }

    /// The compare-and-swap loop behind `update` and `update_raw`; an error from `f` ends it
    /// with nothing written.
    fn update_with(
        &self,
        sid: &str,
        expiry: Expiry,
        mut each: impl FnMut(Option<&[u8]>) -> Result<Option<Vec<u8>>>,
    ) -> Result<Option<Vec<u8>>> {
        let key = key_bytes(sid)?;
        let hash = self.hash(key);
        let mut current = Vec::new();
        for _ in 0..UPDATE_ATTEMPTS {
            let seq = self.read(key, hash, &mut current)?;
            let expect = seq.map_or(Expect::Absent, Expect::Seq);
            let next = each(seq.map(|_| current.as_slice()))?;
            let (now, expires) = self.deadline(expiry);
            match (next, expires) {
                (Some(value), Some(expires)) => {
                    self.check_value(&value)?;
                    if self.write(key, hash, &value, expires, expect, now, || true)?
                        == Written::Done
                    {
                        return Ok(Some(value));
                    }
                }
                _ if seq.is_none() => return Ok(None),
                _ => {
                    if self.remove(key, hash, expect)? != Removed::Conflict {
                        return Ok(None);
                    }
                }
            }
            std::thread::yield_now();
        }
        Err(StoreError::Contended { attempts: UPDATE_ATTEMPTS })
    }

    /// Atomic read-modify-write of one typed session; see [`update_raw`](Self::update_raw).
    /// Two workers incrementing a counter this way never lose an increment.
    ///
    /// # Examples
    /// ```
    /// # use cluster_session_store::{ClusterStore, Config, Expiry};
    /// # let master = ClusterStore::setup(Config::new().name("doc-update").memory_size(1 << 20).shards(2).max_value_size(1024)).unwrap();
    /// let store = ClusterStore::open("doc-update").unwrap();
    /// for _ in 0..3 {
    ///     store.update("cart", Expiry::Default, |n: Option<u32>| Some(n.unwrap_or(0) + 1)).unwrap();
    /// }
    /// assert_eq!(store.get::<u32>("cart").unwrap(), Some(3));
    /// ```
    pub fn update<T: Serialize + DeserializeOwned>(
        &self,
        sid: &str,
        expiry: Expiry,
        mut each: impl FnMut(Option<T>) -> Option<T>,
    ) -> Result<Option<T>> {
        let mut result = None;
        self.update_with(sid, expiry, |old| {
            let old = old.map(|bytes| decode::<T>(sid, bytes)).transpose()?;
            result = each(old);
            result.as_ref().map(encode).transpose()
        })?;
        Ok(result)
    }

    /// Every live session's bytes, shard by shard (each shard is a consistent snapshot;
    /// the whole is not one instant).
    pub fn all_raw(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let mut all = Vec::new();
        self.each_live(|sid, value, _| all.push((sid, value)))?;
        Ok(all)
    }

    /// Calls `each` with every live session (its id, bytes and expiry in unix milliseconds),
    /// shard by shard, each shard's copied under its lock and checked against their CRCs after
    /// it: a record that fails its CRC (or whose id is not UTF-8) is left out, and its shard
    /// repaired.
    pub(crate) fn each_live(&self, mut each: impl FnMut(String, Vec<u8>, u64)) -> Result<()> {
        for shard in 0..self.shared.geo.shard_count {
            self.each_live_in(shard, &mut each)?;
        }
        Ok(())
    }

    /// [`each_live`](Self::each_live) for one shard.
    pub(crate) fn each_live_in(
        &self,
        shard: usize,
        mut each: impl FnMut(String, Vec<u8>, u64),
    ) -> Result<()> {
        let mut batch = Vec::new();
        let now = now_ms();
        self.shared.with_shard(shard, |g| {
            batch.clear();
            shard::for_each_live(g, now, |g, rec| {
                let copy = (rec.key(g).to_vec(), rec.value(g).to_vec(), rec.expires(g));
                batch.push((copy, rec.hash(g), rec.crc(g)));
            })
        })?;
        let mut damaged = false;
        for ((key, value, expires), hash, crc) in batch {
            match String::from_utf8(key) {
                Ok(sid) if record::checksum(hash, sid.as_bytes(), &value) == crc => {
                    each(sid, value, expires)
                }
                _ => damaged = true,
            }
        }
        if damaged {
            self.shared.repair_damaged(shard, false)?;
        }
        Ok(())
    }

    /// Every live session decoded; fails on the first that does not decode as `T`.
    pub fn all<T: DeserializeOwned>(&self) -> Result<Vec<(String, T)>> {
        self.all_raw()?
            .into_iter()
            .map(|(sid, bytes)| decode(&sid, &bytes).map(|v| (sid, v)))
            .collect()
    }

    /// Number of live sessions.
    pub fn length(&self) -> Result<usize> {
        let mut total = 0;
        for shard in 0..self.shared.geo.shard_count {
            let now = now_ms();
            total += self.shared.with_shard(shard, |g| Ok(shard::count_live(g, now)))?;
        }
        Ok(total)
    }

    /// Removes every session.
    pub fn clear(&self) -> Result<()> {
        for shard in 0..self.shared.geo.shard_count {
            self.shared.with_shard_mut(shard, |g| {
                shard::clear(g);
                Ok(())
            })?;
        }
        Ok(())
    }
}

//! Many hosts: Redis or Valkey holds the sessions, and each host's segment is the cache in
//! front of it (feature `redis`). [`RedisStore`] documents the semantics; SAFETY.md, section
//! 10, the protocol.
#![forbid(unsafe_code)]

mod link;
mod tracker;

use std::sync::atomic::Ordering::{Acquire, SeqCst};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use redis::Value;

use crate::clock::{now_ms, Clock};
use crate::format::layout::{
    H_CACHE_BEAT_MS, H_CACHE_EPOCH, H_CACHE_INVALIDATIONS, H_CACHE_LOST_MS,
};
use crate::{ClusterStore, Expiry, Result, SetupError, StoreError};

pub(crate) use link::Link;
use link::{run_blocking, Connections};
pub(crate) use tracker::Tracker;

/// Bytes a cached copy adds after the session's: the epoch it was filled in.
const TAG: usize = 8;
/// Keys a `SCAN` step asks for.
const SCAN_COUNT: usize = 1000;

/// Whether `epoch` is one a tracker armed (odd).
fn armed(epoch: u64) -> bool {
    epoch % 2 == 1
}

/// Where Redis is and how the tier uses it: the same in the master and in every worker.
/// Its `Debug` and its errors never show the URL's password.
#[derive(Clone)]
pub struct RedisConfig {
    client: redis::Client,
    url: String,
    prefix: String,
    timeout: Duration,
    serve_stale: Duration,
}

impl RedisConfig {
    /// Redis or Valkey at `url` (`redis://[user:password@]host:port[/db]` or
    /// `redis+unix:///path`), with the key prefix `"session:"`, a timeout of 500 ms and no
    /// stale hits. `InvalidConfig` if the URL does not parse or asks for TLS (not supported
    /// yet).
    pub fn new(url: &str) -> Result<RedisConfig, SetupError> {
        let invalid = |allowed: &str| SetupError::InvalidConfig {
            field: "redis",
            value: redacted(url),
            allowed: allowed.to_owned(),
        };
        let parsed = redis::IntoConnectionInfo::into_connection_info(url)
            .map_err(|e| invalid(&format!("a redis:// or redis+unix:// URL ({e})")))?;
        // No `CLIENT SETINFO` when a connection opens: one command, one wait, per call.
        let settings = parsed.redis_settings().clone().set_skip_set_lib_name();
        let client = redis::Client::open(parsed.set_redis_settings(settings))
            .map_err(|e| invalid(&format!("a redis:// or redis+unix:// URL ({e})")))?;
        if !matches!(
            client.get_connection_info().addr(),
            redis::ConnectionAddr::Tcp(..) | redis::ConnectionAddr::Unix(_)
        ) {
            return Err(invalid("redis:// or redis+unix:// (TLS is not supported yet)"));
        }
        Ok(RedisConfig {
            client,
            url: url.to_owned(),
            prefix: "session:".to_owned(),
            timeout: Duration::from_millis(500),
            serve_stale: Duration::ZERO,
        })
    }

    /// The prefix of every key the tier stores, watches and (`RedisStore::clear`) deletes:
    /// not empty, so that the tier never touches keys that are not its own.
    pub fn prefix(mut self, prefix: &str) -> Result<RedisConfig, SetupError> {
        if prefix.is_empty() {
            return Err(SetupError::InvalidConfig {
                field: "redis prefix",
                value: String::new(),
                allowed: "a non-empty prefix, such as \"session:\"".into(),
            });
        }
        prefix.clone_into(&mut self.prefix);
        Ok(self)
    }

    /// How long a call waits to connect and for each reply, and how long the tracker waits
    /// for a `PING`'s answer. From 10 ms to 1 minute (clamped). A host name's lookup counts
    /// within the timeout to connect.
    pub fn timeout(mut self, timeout: Duration) -> RedisConfig {
        self.timeout = timeout.clamp(Duration::from_millis(10), Duration::from_secs(60));
        self
    }

    /// Keeps serving cache hits for `grace` after the tracker lost Redis (zero, the default,
    /// serves none): a logout on another host may go unseen for that long.
    pub fn serve_stale_for(mut self, grace: Duration) -> RedisConfig {
        self.serve_stale = grace;
        self
    }

    /// The URL it was made from, its password (if any) replaced by `***`.
    pub fn url(&self) -> String {
        redacted(&self.url)
    }

    fn key(&self, sid: &str) -> String {
        format!("{}{sid}", self.prefix)
    }

    fn ms(d: Duration) -> u64 {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
    }
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.url())
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("serve_stale", &self.serve_stale)
            .finish()
    }
}

/// `url` with the password of its user information (`scheme://user:password@host`), and
/// its query, replaced by `***`.
fn redacted(url: &str) -> String {
    // A unix socket's URL carries its password in the query (`?pass=`): none is shown.
    let url = match url.split_once('?') {
        Some((base, _)) => return format!("{}?***", redacted(base)),
        None => url,
    };
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let Some((userinfo, host)) = rest.rsplit_once('@') else { return url.to_owned() };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => format!("{scheme}://***@{host}"),
    }
}

/// The tier's state as a read or write found it in the header, before its network call.
#[derive(Clone, Copy, Debug)]
struct View {
    epoch: u64,
    invalidations: u64,
    beat_ms: u64,
    lost_ms: u64,
}

impl View {
    /// Whether a copy filled in `epoch` may answer now (`now_ms`, the coarse clock): filled
    /// under the current armed epoch, with the tracker's heartbeat at most `timeout` old;
    /// or, with `grace`, within `grace` of the moment that trust ended.
    fn hit(&self, tag: u64, now_ms: u64, timeout: u64, grace: u64) -> bool {
        let armed = armed(self.epoch);
        let (trusted, ended) = if armed {
            (self.epoch, self.beat_ms.saturating_add(timeout))
        } else {
            (self.epoch.wrapping_sub(1), self.lost_ms)
        };
        self.epoch != 0
            && tag == trusted
            && (armed || grace > 0)
            && now_ms < ended.saturating_add(grace)
    }

    /// The epoch whose copies [`hit`](Self::hit) may accept.
    fn trusted_tag(&self) -> u64 {
        if armed(self.epoch) {
            self.epoch
        } else {
            self.epoch.wrapping_sub(1)
        }
    }
}

/// A worker's handle to the tier: its host's [`ClusterStore`] as the cache, Redis as the
/// store. Cheap to clone; `Send` and `Sync`. Its methods wait for Redis on the calling
/// thread, on connections pooled per process (a forked child opens its own; up to 16 idle
/// ones are kept) and made on first use. Through the adapters, a call that waits for Redis is
/// awaited on the request's Tokio runtime instead, over a multiplexed connection that
/// pipelines the calls of every task: one per thread running a current-thread runtime, one
/// for a multi-thread runtime, made on first use. A connection that failed is dropped and the
/// next call connects again.
///
/// The master is set up with [`Config::redis`](crate::Config::redis): it holds one RESP3
/// connection with broadcast client tracking on the key prefix (`CLIENT TRACKING ON BCAST
/// PREFIX …`) and applies every `invalidate` push to the segment, so every worker of the host
/// sees it; a flush empties the segment. Each worker wraps its store in a [`RedisStore`] with
/// the same [`RedisConfig`]:
///
/// - a read answers from the segment, with no network call, when the copy there was made
///   while the tracker was armed and still is; otherwise it reads Redis (`GET` and `PTTL`)
///   and fills the segment, unless an invalidation came in meanwhile;
/// - `add_raw` is `SET … NX PX`, `replace_raw` `SET … XX PX` (a logout on another host is
///   never undone), `set_raw` `SET … PX`, `destroy` `DEL`, `touch` `PEXPIRE`, each followed by
///   the removal of the local copy (the next read fetches the new value). Redis's TTL is the
///   session's expiry.
///
/// **Consistency.** A host reads its own writes (the write goes to Redis first, and the local
/// copy, and any fill begun before it, are dropped before the call returns). Another host's
/// write reaches this host's cache after one invalidation hop: the push from Redis to this
/// host's master, then its removal from the segment; until then a hit may return the
/// previous value.
///
/// **Trust.** The segment's header holds the tracker's epoch (odd while armed), a count of
/// the invalidations applied and the tracker's heartbeat. A cached copy carries the epoch it
/// was filled in; a hit needs that epoch to be the current, armed one and a heartbeat within
/// [`RedisConfig::timeout`]. A lost tracking connection (closed, or a `PING` unanswered for
/// the timeout), a stopped master and a master that stopped beating all end the trust: reads
/// then go to Redis until a tracker is armed again, under a new epoch.
///
/// **Redis down.** Every call to Redis has [`RedisConfig::timeout`] for connecting and for
/// each reply; past it the call fails with [`StoreError::Redis`]. Reads fail the same way once
/// the tracker has noticed (within about 1.75 times the timeout of the last frame), unless
/// [`RedisConfig::serve_stale_for`] lets hits be served that much longer: a logout on another
/// host may then go unseen for that long. A failed connection is dropped; the next call
/// connects again, and the master's tracker reconnects on its own.
///
/// # Examples
/// ```no_run
/// use cluster_session_store::{ClusterStore, Config, Expiry, RedisConfig, RedisStore};
///
/// let redis = RedisConfig::new("redis://127.0.0.1:6379")?;
/// // The master, before forking: its tracker keeps the segment in step with Redis.
/// let master = ClusterStore::setup(Config::new().name("doc-redis").redis(redis.clone()))?;
/// // Each worker, after the fork:
/// let store = RedisStore::new(ClusterStore::open("doc-redis")?, redis);
/// assert!(store.add_raw("sid", b"state", Expiry::Default)?);
/// assert_eq!(store.get_raw("sid")?.as_deref(), Some(&b"state"[..]));
/// # drop(master);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    local: ClusterStore,
    config: RedisConfig,
    links: Connections,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("local", &self.inner.local)
            .field("config", &self.inner.config)
            .finish()
    }
}

/// What a `SET` stores under.
#[derive(Clone, Copy)]
pub(crate) enum SetIf {
    Always,
    Absent,
    Present,
}

impl RedisStore {
    /// The tier over `local`, this host's store (set up by a master with
    /// [`Config::redis`](crate::Config::redis) and the same `config`).
    pub fn new(local: ClusterStore, config: RedisConfig) -> RedisStore {
        let links = Connections::new(config.client.clone(), config.timeout);
        RedisStore { inner: Arc::new(Inner { local, config, links }) }
    }

    /// This host's store, the cache.
    pub fn local(&self) -> &ClusterStore {
        &self.inner.local
    }

    /// Whether a cache hit may answer now: a tracker is armed and beating (or the
    /// [`serve_stale_for`](RedisConfig::serve_stale_for) grace runs). Monitoring; a read
    /// checks it itself.
    pub fn trusted(&self) -> bool {
        let view = self.view();
        let (timeout, grace) = self.limits();
        view.hit(view.trusted_tag(), Clock::new().floor(), timeout, grace)
    }

    /// The tracker's epoch: odd while one is armed; each arming and each loss moves it on.
    pub fn epoch(&self) -> u64 {
        self.view().epoch
    }

    fn view(&self) -> View {
        let word = |at| self.inner.local.cache_word(at).load(Acquire);
        // The beat before the epoch: a tracker taking over moves the epoch before it beats
        // (tracker.rs), so a fresh beat is never paired with the epoch it ended.
        let beat_ms = word(H_CACHE_BEAT_MS);
        let epoch = word(H_CACHE_EPOCH);
        View {
            epoch,
            invalidations: word(H_CACHE_INVALIDATIONS),
            beat_ms,
            lost_ms: word(H_CACHE_LOST_MS),
        }
    }

    fn limits(&self) -> (u64, u64) {
        let c = &self.inner.config;
        (RedisConfig::ms(c.timeout), RedisConfig::ms(c.serve_stale))
    }

    fn check(&self, sid: &str, value: Option<&[u8]>) -> Result<()> {
        crate::store::key_bytes(sid)?;
        let max = self.inner.local.max_value_size().saturating_sub(TAG);
        match value {
            Some(value) if value.len() > max => {
                Err(StoreError::ValueTooLarge { len: value.len(), max })
            }
            _ => Ok(()),
        }
    }

    /// Puts `value` in the segment as filled under `view`, if no invalidation (the tracker's,
    /// or this host's own write: [`forget`](Self::forget)) and no change of epoch came in
    /// since `view` was read (checked under the shard lock, which the removals also take): a
    /// copy that might be older than a change is never kept. Only under an armed epoch; a
    /// full shard keeps no copy.
    fn fill(&self, sid: &str, value: &[u8], expires_ms: u64, view: View) -> Result<bool> {
        if !armed(view.epoch) {
            return Ok(false);
        }
        let mut tagged = Vec::with_capacity(value.len() + TAG);
        tagged.extend_from_slice(value);
        tagged.extend_from_slice(&view.epoch.to_le_bytes());
        let local = &self.inner.local;
        let still = || {
            local.cache_word(H_CACHE_INVALIDATIONS).load(SeqCst) == view.invalidations
                && local.cache_word(H_CACHE_EPOCH).load(SeqCst) == view.epoch
        };
        let at = Expiry::At(UNIX_EPOCH + Duration::from_millis(expires_ms));
        match local.set_raw_if(sid, &tagged, at, still) {
            // No room, or a value another writer made larger than this host's segment
            // takes: served from Redis, not cached.
            Err(StoreError::Full { .. } | StoreError::ValueTooLarge { .. }) => Ok(false),
            filled => filled,
        }
    }

    /// The session's bytes, from the segment if its copy may answer, else from Redis.
    pub fn get_raw(&self, sid: &str) -> Result<Option<Vec<u8>>> {
        let mut out = Vec::new();
        Ok(self.get_raw_into(sid, &mut out)?.then_some(out))
    }

    /// Copies the session into `out` if the segment holds a copy that may answer under
    /// `view`; otherwise leaves `out` empty and returns false.
    fn hit_into(&self, sid: &str, out: &mut Vec<u8>, view: View) -> Result<bool> {
        let (timeout, grace) = self.limits();
        if view.epoch != 0 && self.inner.local.get_raw_into(sid, out)? && out.len() >= TAG {
            let at = out.len() - TAG;
            let tag = u64::from_le_bytes(out[at..].try_into().expect("8 bytes"));
            if view.hit(tag, Clock::new().floor(), timeout, grace) {
                out.truncate(at);
                return Ok(true);
            }
        }
        out.clear();
        Ok(false)
    }

    /// [`get_raw`](Self::get_raw) into `out` (cleared first); returns whether it was found.
    pub fn get_raw_into(&self, sid: &str, out: &mut Vec<u8>) -> Result<bool> {
        run_blocking(self.get_over(Link::Blocking, sid, out))
    }

    /// [`get_raw_into`](Self::get_raw_into) over `link`.
    pub(crate) async fn get_over(&self, link: Link, sid: &str, out: &mut Vec<u8>) -> Result<bool> {
        self.check(sid, None)?;
        let view = self.view();
        if self.hit_into(sid, out, view)? {
            return Ok(true);
        }
        let key = self.inner.config.key(sid);
        let (value, pttl): (Option<Vec<u8>>, i64) =
            self.inner.links.query(link, "GET", redis::pipe().get(&key).pttl(&key)).await?;
        let Some(value) = value else { return Ok(false) };
        // A key with no expiry (-1) was not written by this tier: served, not cached.
        if let Ok(ttl) = u64::try_from(pttl) {
            self.fill(sid, &value, now_ms().saturating_add(ttl), view)?;
        }
        *out = value;
        Ok(true)
    }

    /// The session decoded from MessagePack, or `None`.
    pub fn get<T: serde::de::DeserializeOwned>(&self, sid: &str) -> Result<Option<T>> {
        self.get_raw(sid)?.map(|bytes| crate::store::decode(sid, &bytes)).transpose()
    }

    /// `SET` under `cond` with `expiry` over `link`; then the local copy dropped. An expiry
    /// already past deletes instead (`DEL`), as in the single-host store. Returns whether
    /// `cond` held.
    pub(crate) async fn write_over(
        &self,
        link: Link,
        sid: &str,
        value: &[u8],
        expiry: Expiry,
        cond: SetIf,
    ) -> Result<bool> {
        self.check(sid, Some(value))?;
        let now = now_ms();
        let expires_ms = expiry.deadline(now, self.inner.local.default_ttl_ms());
        let key = self.inner.config.key(sid);
        if expires_ms <= now {
            let (existed,): (i64,) = match cond {
                SetIf::Absent => {
                    self.change(link, "EXISTS", sid, redis::pipe().exists(&key)).await?
                }
                _ => self.change(link, "DEL", sid, redis::pipe().del(&key)).await?,
            };
            return Ok(match cond {
                SetIf::Absent => existed == 0,
                SetIf::Present => existed > 0,
                SetIf::Always => true,
            });
        }
        let mut set = redis::cmd("SET");
        set.arg(&key).arg(value).arg("PX").arg(expires_ms - now);
        match cond {
            SetIf::Always => {}
            SetIf::Absent => drop(set.arg("NX")),
            SetIf::Present => drop(set.arg("XX")),
        }
        let mut pipe = redis::pipe();
        pipe.add_command(set);
        let (reply,): (Value,) = self.change(link, "SET", sid, &pipe).await?;
        Ok(!matches!(reply, Value::Nil))
    }

    /// Sends `pipe`, a change of `sid`, over `link`, then [`forget`](Self::forget)s the local
    /// copy: after the reply, or when the call fails or its future is dropped midway (a
    /// request cancelled while it waited), since Redis may have applied the change all the
    /// same. So no outcome of a write leaves this host answering with the copy it replaced.
    async fn change<T: redis::FromRedisValue>(
        &self,
        link: Link,
        what: &'static str,
        sid: &str,
        pipe: &redis::Pipeline,
    ) -> Result<T> {
        let pending = Forget { store: self, sid, armed: true };
        let reply = self.inner.links.query(link, what, pipe).await;
        let forgotten = pending.done();
        let reply = reply?;
        forgotten.map(|()| reply)
    }

    /// After a change in Redis: the invalidation count moves on, then the local copy is
    /// removed, so that neither a copy made before the change nor a fill that began before it
    /// (and checks the count under the shard lock) outlives this call: the next read fetches
    /// the new value. The host reads its own writes without waiting for the tracker.
    fn forget(&self, sid: &str) -> Result<()> {
        self.inner.local.cache_word(H_CACHE_INVALIDATIONS).fetch_add(1, SeqCst);
        self.inner.local.destroy(sid).map(drop)
    }

    /// Stores the session's bytes (upsert).
    pub fn set_raw(&self, sid: &str, value: &[u8], expiry: Expiry) -> Result<()> {
        run_blocking(self.write_over(Link::Blocking, sid, value, expiry, SetIf::Always)).map(drop)
    }

    /// Stores the session's bytes only under an unused id (`SET … NX`); returns whether the
    /// id was free.
    pub fn add_raw(&self, sid: &str, value: &[u8], expiry: Expiry) -> Result<bool> {
        run_blocking(self.write_over(Link::Blocking, sid, value, expiry, SetIf::Absent))
    }

    /// Stores the session's bytes only over a live session (`SET … XX`): a session destroyed
    /// on any host is never written back. Returns whether one was live.
    pub fn replace_raw(&self, sid: &str, value: &[u8], expiry: Expiry) -> Result<bool> {
        run_blocking(self.write_over(Link::Blocking, sid, value, expiry, SetIf::Present))
    }

    /// Stores the session encoded as MessagePack (upsert).
    pub fn set<T: serde::Serialize + ?Sized>(
        &self,
        sid: &str,
        value: &T,
        expiry: Expiry,
    ) -> Result<()> {
        self.set_raw(sid, &crate::store::encode(value)?, expiry)
    }

    /// Stores the session encoded as MessagePack only under an unused id.
    pub fn add<T: serde::Serialize + ?Sized>(
        &self,
        sid: &str,
        value: &T,
        expiry: Expiry,
    ) -> Result<bool> {
        self.add_raw(sid, &crate::store::encode(value)?, expiry)
    }

    /// Stores the session encoded as MessagePack only over a live session.
    pub fn replace<T: serde::Serialize + ?Sized>(
        &self,
        sid: &str,
        value: &T,
        expiry: Expiry,
    ) -> Result<bool> {
        self.replace_raw(sid, &crate::store::encode(value)?, expiry)
    }

    /// Removes the session (`DEL`, then the local copy). Returns whether Redis had it.
    pub fn destroy(&self, sid: &str) -> Result<bool> {
        run_blocking(self.destroy_over(Link::Blocking, sid))
    }

    /// [`destroy`](Self::destroy) over `link`.
    pub(crate) async fn destroy_over(&self, link: Link, sid: &str) -> Result<bool> {
        self.check(sid, None)?;
        let key = self.inner.config.key(sid);
        let (removed,): (i64,) = self.change(link, "DEL", sid, redis::pipe().del(&key)).await?;
        Ok(removed > 0)
    }

    /// Gives a live session a new expiry (`PEXPIRE`, then the local copy's). Returns whether
    /// it was live; an expiry already past removes it.
    pub fn touch(&self, sid: &str, expiry: Expiry) -> Result<bool> {
        run_blocking(self.touch_over(Link::Blocking, sid, expiry))
    }

    /// [`touch`](Self::touch) over `link`.
    pub(crate) async fn touch_over(&self, link: Link, sid: &str, expiry: Expiry) -> Result<bool> {
        self.check(sid, None)?;
        let now = now_ms();
        let expires_ms = expiry.deadline(now, self.inner.local.default_ttl_ms());
        if expires_ms <= now {
            return self.destroy_over(link, sid).await;
        }
        let key = self.inner.config.key(sid);
        let ttl = i64::try_from(expires_ms - now).unwrap_or(i64::MAX);
        let (live,): (i64,) =
            self.change(link, "PEXPIRE", sid, redis::pipe().pexpire(&key, ttl)).await?;
        Ok(live > 0)
    }

    /// Frees the expired copies in the segment now; Redis expires its keys itself.
    pub fn purge_expired(&self) -> Result<u64> {
        self.inner.local.purge_expired()
    }

    /// Every key under the prefix, by `SCAN` (a key written meanwhile may be missed).
    fn keys(&self) -> Result<Vec<String>> {
        let pattern = format!("{}*", glob_escape(&self.inner.config.prefix));
        let mut keys = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<String>) = self.inner.links.blocking("SCAN", |c| {
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(SCAN_COUNT)
                    .query(c)
            })?;
            keys.extend(batch);
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }

    /// Every live session's bytes, from Redis.
    pub fn all_raw(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let mut all = Vec::new();
        let prefix = self.inner.config.prefix.len();
        for chunk in self.keys()?.chunks(SCAN_COUNT) {
            let values: Vec<Option<Vec<u8>>> =
                self.inner.links.blocking("MGET", |c| redis::cmd("MGET").arg(chunk).query(c))?;
            for (key, value) in chunk.iter().zip(values) {
                if let Some(value) = value {
                    all.push((key[prefix..].to_owned(), value));
                }
            }
        }
        Ok(all)
    }

    /// How many sessions Redis holds under the prefix.
    pub fn length(&self) -> Result<usize> {
        Ok(self.keys()?.len())
    }

    /// Removes every session under the prefix from Redis, then empties the segment.
    pub fn clear(&self) -> Result<()> {
        for chunk in self.keys()?.chunks(SCAN_COUNT) {
            let _: i64 =
                self.inner.links.blocking("DEL", |c| redis::cmd("DEL").arg(chunk).query(c))?;
        }
        self.inner.local.clear()
    }
}

/// A pending [`RedisStore::forget`] of `sid`: done by [`done`](Forget::done), or, if the
/// future holding it is dropped first, when it is dropped (its error then has nowhere to go:
/// a copy a failed removal left is still removed by the tracker's invalidation).
struct Forget<'a> {
    store: &'a RedisStore,
    sid: &'a str,
    armed: bool,
}

impl Forget<'_> {
    fn done(mut self) -> Result<()> {
        self.armed = false;
        self.store.forget(self.sid)
    }
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.store.forget(self.sid);
        }
    }
}

/// `prefix` with the glob characters `SCAN … MATCH` gives meaning to escaped.
fn glob_escape(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(epoch: u64, beat_ms: u64, lost_ms: u64) -> View {
        View { epoch, invalidations: 0, beat_ms, lost_ms }
    }

    #[test]
    fn a_copy_answers_only_under_the_armed_epoch_and_a_fresh_beat() {
        let armed = view(3, 1_000, 0);
        assert!(armed.hit(3, 1_200, 500, 0));
        assert!(!armed.hit(1, 1_200, 500, 0), "an older epoch");
        assert!(!armed.hit(3, 1_500, 500, 0), "the beat is a timeout old");
        assert!(armed.hit(3, 1_700, 500, 300), "within the grace after the beat stopped");
        assert!(!armed.hit(3, 1_800, 500, 300));
        let lost = view(4, 1_000, 2_000);
        assert!(!lost.hit(3, 2_001, 500, 0), "lost: no hit without a grace");
        assert!(lost.hit(3, 2_100, 500, 300), "lost: the last armed epoch within the grace");
        assert!(!lost.hit(3, 2_300, 500, 300));
        assert!(!lost.hit(4, 2_100, 500, 300), "an epoch never armed");
        assert!(!view(0, 0, 0).hit(0, 1, 500, 300), "never armed at all");
    }

    #[test]
    fn a_password_is_never_shown() {
        assert_eq!(redacted("redis://u:secret@h:1/2"), "redis://u:***@h:1/2");
        assert_eq!(redacted("redis://:secret@h:1"), "redis://:***@h:1");
        assert_eq!(redacted("redis://secret@h"), "redis://***@h");
        assert_eq!(redacted("redis://h:1"), "redis://h:1");
        assert_eq!(
            redacted("redis+unix:///run/r.sock?db=1&pass=secret"),
            "redis+unix:///run/r.sock?***"
        );
        let config = RedisConfig::new("redis://u:secret@127.0.0.1:1/").unwrap();
        assert!(!format!("{config:?}").contains("secret"));
        let error = RedisConfig::new("redis://u:secret@[bad/").unwrap_err().to_string();
        assert!(!error.contains("secret"), "{error}");
    }

    #[test]
    fn the_scan_pattern_matches_the_prefix_literally() {
        assert_eq!(glob_escape("session:"), "session:");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}

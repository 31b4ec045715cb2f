//! `Config`: every setting of a segment, and its validation at setup.
#![forbid(unsafe_code)]

use std::time::Duration;

use crate::error::SetupError;
pub use crate::format::header::{Backing, Eviction};
pub(crate) use crate::format::layout::valid_name;
use crate::format::layout::{bytes_per_slot, max_value_limit, Geometry, MAX_NAME_LEN};

/// Settings for [`ClusterStore::setup`](crate::ClusterStore::setup). Built with chained
/// setters; checked at setup.
///
/// # Examples
/// ```
/// use cluster_session_store::{Config, Eviction};
/// use std::time::Duration;
/// let config = Config::new()
///     .memory_size(16 << 20)
///     .shards(16)
///     .max_value_size(8 << 10)
///     .default_ttl(Duration::from_secs(3600))
///     .eviction(Eviction::Refuse)
///     .name("carts");
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    pub(crate) memory_size: usize,
    pub(crate) shards: usize,
    pub(crate) max_value_size: usize,
    pub(crate) typical_value_size: Option<usize>,
    pub(crate) default_ttl: Duration,
    pub(crate) lock_timeout: Duration,
    pub(crate) eviction: Eviction,
    pub(crate) name: String,
    pub(crate) backing: Backing,
    pub(crate) sweep_interval: Duration,
    pub(crate) sweep_budget: usize,
    pub(crate) reclaim_stale: bool,
    pub(crate) keep_segment: bool,
    pub(crate) take_over: Option<u32>,
    pub(crate) snapshot: Option<std::path::PathBuf>,
    pub(crate) snapshot_interval: Option<Duration>,
    #[cfg(feature = "redis")]
    pub(crate) redis: Option<crate::RedisConfig>,
}

/// The namespace used by [`ClusterStore::new`](crate::ClusterStore::new).
pub const DEFAULT_NAME: &str = "default";

impl Default for Config {
    fn default() -> Self {
        Config {
            memory_size: 64 << 20,
            shards: 64,
            max_value_size: 64 << 10,
            typical_value_size: None,
            default_ttl: Duration::from_secs(86_400),
            lock_timeout: Duration::from_secs(5),
            eviction: Eviction::Lru,
            name: DEFAULT_NAME.to_owned(),
            backing: Backing::Memfd,
            sweep_interval: Duration::from_secs(1),
            sweep_budget: 256,
            reclaim_stale: false,
            keep_segment: false,
            take_over: None,
            snapshot: None,
            snapshot_interval: None,
            #[cfg(feature = "redis")]
            redis: None,
        }
    }
}

impl Config {
    /// The defaults: 64 MiB, 64 shards, values up to 64 KiB, one day TTL, 5 s lock timeout,
    /// LRU eviction, namespace `"default"` in a memfd.
    pub fn new() -> Self {
        Self::default()
    }

    /// Total bytes of the segment (header, shards, index and data). Size it for the sessions
    /// expected at peak, with room to spare, rather than many times that: each shard's index
    /// array has a slot for every record the segment can hold; a shard uses only as many of
    /// them as its records need (growing and shrinking with them), but a segment sized far
    /// beyond its sessions still spreads them over more memory, and more reads miss the
    /// caches (BENCHMARKS.md). A full shard evicts, or refuses under [`Eviction::Refuse`].
    pub fn memory_size(mut self, bytes: usize) -> Self {
        self.memory_size = bytes;
        self
    }

    /// Number of shards, each with its own lock: a power of two from 1 to 65536.
    pub fn shards(mut self, count: usize) -> Self {
        self.shards = count;
        self
    }

    /// Largest encoded session accepted, in bytes.
    pub fn max_value_size(mut self, bytes: usize) -> Self {
        self.max_value_size = bytes;
        self
    }

    /// The size of a typical encoded session, in bytes (1 to `max_value_size`), to size each
    /// shard's index by: one slot (20 bytes) per record of that size with a 32-byte id,
    /// instead of one per 128 bytes of data area. Sessions of a kilobyte or more then leave
    /// fewer slots unused, and the same `memory_size` holds more of them (17 to 18 % more
    /// 1 KiB and 8 KiB sessions in `cargo bench --bench memory`, BENCHMARKS.md). Sessions much smaller than this fill
    /// the index before the data area: the shard then evicts (or refuses, under
    /// `Eviction::Refuse`) with data room left. Sizes under about 50 bytes change nothing.
    ///
    /// # Examples
    /// ```
    /// # use cluster_session_store::{ClusterStore, Config};
    /// let master = ClusterStore::setup(
    ///     Config::new().name("doc-typical").memory_size(16 << 20).typical_value_size(1024),
    /// )
    /// .unwrap();
    /// ```
    pub fn typical_value_size(mut self, bytes: usize) -> Self {
        self.typical_value_size = Some(bytes);
        self
    }

    /// Lifetime of a session written with [`Expiry::Default`](crate::Expiry::Default).
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// Longest wait for a shard lock held by a live process before
    /// [`StoreError::LockTimeout`](crate::StoreError::LockTimeout).
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// What a full shard does. `Eviction::Refuse` reserves one block of the largest size
    /// class per shard (about `max_value_size` + 304 bytes; `Stats::data_bytes` excludes
    /// it), so that a session can always be rewritten when its shard is full.
    pub fn eviction(mut self, policy: Eviction) -> Self {
        self.eviction = policy;
        self
    }

    /// The store's namespace: 1 to 64 characters from `A-Z a-z 0-9 . _ -`. Stores with
    /// different names are independent; workers find them with
    /// [`ClusterStore::open`](crate::ClusterStore::open).
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.to_owned();
        self
    }

    /// How the segment is shared with workers.
    pub fn backing(mut self, backing: Backing) -> Self {
        self.backing = backing;
        self
    }

    /// How often the master's coordinator thread sweeps expired sessions (1 ms to 1 hour;
    /// 1 s by default). The sweep also shrinks a shard's index once its sessions fill at most
    /// 3/16 of it (`Stats::index_slots`), so a long interval leaves an index spread out by a
    /// spike of sessions for longer.
    pub fn sweep_interval(mut self, interval: Duration) -> Self {
        self.sweep_interval = interval;
        self
    }

    /// Index slots the sweep examines per shard and round (16 to 65536; 256 by default). A
    /// shard gets up to four rounds per tick while more than a quarter of the records seen
    /// were expired, so the lock is never held for a whole-shard scan.
    pub fn sweep_budget(mut self, slots: usize) -> Self {
        self.sweep_budget = slots;
        self
    }

    /// Whether `setup()` may remove a named segment left by a master that is no longer
    /// running and create a new one (default: refuse, naming the segment). A segment is
    /// stale when the pid in its header no longer runs, or its header never became valid;
    /// two masters of one name starting at the same instant can mistake each other's
    /// half-made segment for a stale one, so start one master per name.
    pub fn reclaim_stale(mut self, reclaim: bool) -> Self {
        self.reclaim_stale = reclaim;
        self
    }

    /// Keeps the named segment, with every session in it, when the master exits (its
    /// `Master` dropped, or SIGTERM or SIGINT), and lets `setup()` **adopt** a segment of this
    /// name that a master no longer running left behind, whether it stopped or crashed: a
    /// restart or a deploy then logs nobody out. Needs [`Backing::Named`]. Default: off.
    ///
    /// Adoption takes only a segment that is this user's alone (as `attach` does), of this
    /// build's format version, with an intact header made for this name; anything else is
    /// [`SetupError::CannotAdopt`](crate::SetupError::CannotAdopt), saying why, unless
    /// [`reclaim_stale`](Self::reclaim_stale) allows replacing it with an empty one. It
    /// repairs every shard (a process may have died holding a lock, mid-write), then writes
    /// this master's pid, a new generation and this configuration's `default_ttl` and
    /// `lock_timeout` into the header; the sessions keep their expiry. If this configuration
    /// gives another geometry (`memory_size`, `shards`, `max_value_size`,
    /// `typical_value_size`, `eviction`), the sessions are copied into a new segment of that
    /// geometry, which then replaces the old one; those that do not fit are counted
    /// ([`Master::adoption`](crate::Master::adoption)) and named in warnings, never silently
    /// dropped.
    ///
    /// A segment kept this way stays in `/dev/shm` until a master adopts it or someone
    /// removes it (`rm /dev/shm/cluster-session-store.<name>`).
    pub fn keep_segment(mut self, keep: bool) -> Self {
        self.keep_segment = keep;
        self
    }

    /// A zero-downtime handover: this master replaces the master `pid`, which is still
    /// running (it started this one, typically by re-executing itself on SIGUSR2, and will
    /// stop its workers once this one's run). `setup()` then adopts the segment although its
    /// master runs, as long as that master is `pid`; shards owed a repair are repaired, the
    /// others left to the workers serving them. Needs [`keep_segment`](Self::keep_segment).
    pub fn take_over(mut self, pid: u32) -> Self {
        self.take_over = Some(pid);
        self
    }

    /// A snapshot file (format: `ClusterStore::snapshot`) for sessions that outlive a
    /// reboot or a change of the segment's format: `setup()` restores it into a store it
    /// creates (not into one it adopts, which has its sessions already) if the file exists,
    /// and the master writes it when its `Master` is dropped (a master killed, or ended by a
    /// signal it does not handle, writes none) and every
    /// [`snapshot_interval`](Self::snapshot_interval). Written to a temporary file and
    /// renamed, mode 0600; read only if it is the user's alone. A file that cannot be
    /// restored (damaged, cut short, another user's) fails `setup()` with
    /// [`SetupError::Snapshot`](crate::SetupError::Snapshot).
    pub fn snapshot(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.snapshot = Some(path.into());
        self
    }

    /// How often the master's coordinator writes the [`snapshot`](Self::snapshot) (1 s to
    /// 1 week; default: only when the master stops). Each shard is copied under its lock in
    /// turn, and written with no lock held.
    pub fn snapshot_interval(mut self, interval: Duration) -> Self {
        self.snapshot_interval = Some(interval);
        self
    }

    /// Makes the segment the cache in front of Redis or Valkey (feature `redis`): the
    /// master runs a tracker that applies Redis's invalidations to it, and each worker
    /// wraps its store in a [`RedisStore`](crate::RedisStore) with the same `config`. The
    /// segment then holds copies only: size it for the sessions in use, with
    /// `Eviction::Lru` (the default).
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis(mut self, config: crate::RedisConfig) -> Self {
        self.redis = Some(config);
        self
    }

    /// Checks every field and derives the segment's geometry.
    pub(crate) fn validate(&self) -> Result<Geometry, SetupError> {
        let invalid = |field, value: String, allowed: String| {
            Err(SetupError::InvalidConfig { field, value, allowed })
        };
        if let Some(interval) = self.snapshot_interval {
            let allowed = Duration::from_secs(1)..=Duration::from_secs(7 * 86_400);
            if self.snapshot.is_none() || !allowed.contains(&interval) {
                return invalid(
                    "snapshot_interval",
                    format!("{interval:?}"),
                    "1 s to 1 week, with Config::snapshot set".into(),
                );
            }
        }
        let inherited = matches!(self.backing, Backing::Inherited(_));
        if let Some(pid) = self.take_over.filter(|_| !self.keep_segment && !inherited) {
            return invalid(
                "take_over",
                pid.to_string(),
                "only with keep_segment(true), or Backing::Inherited".into(),
            );
        }
        if inherited && self.take_over.is_none() {
            return invalid(
                "backing",
                format!("{:?}", self.backing),
                "Backing::Inherited only with Config::take_over".into(),
            );
        }
        if self.keep_segment && self.backing != Backing::Named {
            return invalid(
                "keep_segment",
                "true".into(),
                "only with Backing::Named (a memfd ends with the last process that maps it)".into(),
            );
        }
        if !valid_name(&self.name) {
            return invalid(
                "name",
                format!("{:?}", self.name),
                format!("1 to {MAX_NAME_LEN} characters from A-Z a-z 0-9 . _ -"),
            );
        }
        if !self.shards.is_power_of_two() || self.shards > 65_536 {
            return invalid("shards", self.shards.to_string(), "a power of two, 1 to 65536".into());
        }
        let value_limit = max_value_limit();
        if self.max_value_size == 0 || self.max_value_size > value_limit {
            return invalid(
                "max_value_size",
                self.max_value_size.to_string(),
                format!("1 to {value_limit} bytes"),
            );
        }
        if let Some(typical) = self.typical_value_size {
            if typical == 0 || typical > self.max_value_size {
                return invalid(
                    "typical_value_size",
                    typical.to_string(),
                    format!("1 to max_value_size ({} bytes)", self.max_value_size),
                );
            }
        }
        let per_slot = bytes_per_slot(self.typical_value_size);
        const MAX_MEMORY: usize = 1 << 40;
        if self.memory_size == 0 || self.memory_size > MAX_MEMORY {
            return invalid("memory_size", self.memory_size.to_string(), "1 byte to 1 TiB".into());
        }
        if self.default_ttl.is_zero() || self.default_ttl > Duration::from_secs(100 * 365 * 86_400)
        {
            return invalid(
                "default_ttl",
                format!("{:?}", self.default_ttl),
                "1 ms to 100 years".into(),
            );
        }
        if self.lock_timeout < Duration::from_millis(1)
            || self.lock_timeout > Duration::from_secs(3600)
        {
            return invalid(
                "lock_timeout",
                format!("{:?}", self.lock_timeout),
                "1 ms to 1 hour".into(),
            );
        }
        if self.sweep_interval < Duration::from_millis(1)
            || self.sweep_interval > Duration::from_secs(3600)
        {
            return invalid(
                "sweep_interval",
                format!("{:?}", self.sweep_interval),
                "1 ms to 1 hour".into(),
            );
        }
        if !(16..=65_536).contains(&self.sweep_budget) {
            return invalid("sweep_budget", self.sweep_budget.to_string(), "16 to 65536".into());
        }
        let per_shard = self.memory_size / self.shards;
        if per_shard > crate::format::layout::MAX_DATA_BYTES {
            let needed = self
                .memory_size
                .div_ceil(crate::format::layout::MAX_DATA_BYTES)
                .next_power_of_two();
            return invalid(
                "shards",
                self.shards.to_string(),
                format!(
                    "at least {needed} for memory_size {} (64 GiB per shard at most)",
                    self.memory_size
                ),
            );
        }
        let spare = self.eviction == Eviction::Refuse;
        let compute =
            |memory| Geometry::compute(memory, self.shards, self.max_value_size, per_slot, spare);
        match compute(self.memory_size) {
            Some(g) => Ok(g),
            None => {
                // Every other input is in range, so only memory can be short.
                let needed = minimum_memory(compute);
                invalid(
                    "memory_size",
                    self.memory_size.to_string(),
                    format!(
                        "at least {needed} bytes for {} shards that each hold two \
                         {}-byte values (or lower shards / max_value_size)",
                        self.shards, self.max_value_size
                    ),
                )
            }
        }
    }
}

/// Smallest `memory_size` that `Geometry::compute` accepts for these settings, found by
/// doubling then bisecting (the geometry is monotonic in memory).
fn minimum_memory(compute: impl Fn(usize) -> Option<Geometry>) -> usize {
    let mut hi = 1usize << 16;
    while compute(hi).is_none() {
        if hi >= 1 << 44 {
            return hi;
        }
        hi *= 2;
    }
    let mut lo = hi / 2;
    while hi - lo > 4096 {
        let mid = lo + (hi - lo) / 2;
        if compute(mid).is_some() {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(c: Config) -> &'static str {
        match c.validate() {
            Err(SetupError::InvalidConfig { field, .. }) => field,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_valid() {
        Config::new().validate().unwrap();
    }

    #[test]
    fn each_bad_field_is_named() {
        assert_eq!(field_of(Config::new().shards(3)), "shards");
        assert_eq!(field_of(Config::new().shards(0)), "shards");
        assert_eq!(field_of(Config::new().memory_size(0)), "memory_size");
        assert_eq!(field_of(Config::new().memory_size(1 << 20).shards(64)), "memory_size");
        assert_eq!(field_of(Config::new().max_value_size(0)), "max_value_size");
        assert_eq!(field_of(Config::new().default_ttl(Duration::ZERO)), "default_ttl");
        assert_eq!(field_of(Config::new().lock_timeout(Duration::ZERO)), "lock_timeout");
        assert_eq!(field_of(Config::new().name("")), "name");
        assert_eq!(field_of(Config::new().name("a/b")), "name");
        assert_eq!(field_of(Config::new().name("..")), "name");
        assert_eq!(field_of(Config::new().sweep_interval(Duration::ZERO)), "sweep_interval");
        assert_eq!(field_of(Config::new().sweep_budget(1)), "sweep_budget");
        assert_eq!(field_of(Config::new().typical_value_size(0)), "typical_value_size");
        let over = Config::new().max_value_size(1024).typical_value_size(1025);
        assert_eq!(field_of(over), "typical_value_size");
    }

    #[test]
    fn minimum_memory_is_accepted_and_the_message_names_it() {
        let compute =
            |m| Geometry::compute(m, 8, 4096, crate::format::layout::BYTES_PER_SLOT, false);
        let need = minimum_memory(compute);
        assert!(compute(need).is_some());
        let err = Config::new().shards(8).max_value_size(4096).memory_size(need / 2);
        let text = err.validate().unwrap_err().to_string();
        assert!(text.contains("memory_size") && text.contains(&need.to_string()), "{text}");
    }
}

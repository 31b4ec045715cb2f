//! `Config`: every setting of a segment, and its validation at setup.
#![forbid(unsafe_code)]

use std::time::Duration;

use crate::error::SetupError;
use crate::layout::{max_value_limit, Geometry, MAX_NAME_LEN};

/// What a full shard does with a write that needs room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eviction {
    /// Free expired records, then the least recently used ones in that shard (sampled).
    Lru,
    /// Free expired records; if that is not enough, fail with [`StoreError::Full`](crate::StoreError::Full).
    Refuse,
}

/// How the segment is shared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    /// An anonymous memfd: only the master and processes it forks can map it; nothing is left
    /// behind in `/dev/shm`. The default.
    Memfd,
    /// A POSIX shared-memory object `/dev/shm/cluster-session-store.<name>`, mode 0600,
    /// created exclusively, for workers started by exec: they call
    /// [`ClusterStore::attach`](crate::ClusterStore::attach).
    Named,
}

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
    pub(crate) default_ttl: Duration,
    pub(crate) lock_timeout: Duration,
    pub(crate) eviction: Eviction,
    pub(crate) name: String,
    pub(crate) backing: Backing,
}

/// The namespace used by [`ClusterStore::new`](crate::ClusterStore::new).
pub const DEFAULT_NAME: &str = "default";

impl Default for Config {
    fn default() -> Self {
        Config {
            memory_size: 64 << 20,
            shards: 64,
            max_value_size: 64 << 10,
            default_ttl: Duration::from_secs(86_400),
            lock_timeout: Duration::from_secs(5),
            eviction: Eviction::Lru,
            name: DEFAULT_NAME.to_owned(),
            backing: Backing::Memfd,
        }
    }
}

impl Config {
    /// The defaults: 64 MiB, 64 shards, values up to 64 KiB, one day TTL, 5 s lock timeout,
    /// LRU eviction, namespace `"default"` in a memfd.
    pub fn new() -> Self {
        Self::default()
    }

    /// Total bytes of the segment (header, shards, index and data).
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

    /// What a full shard does.
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

    /// Checks every field and derives the segment's geometry.
    pub(crate) fn validate(&self) -> Result<Geometry, SetupError> {
        let invalid = |field, value: String, allowed: String| {
            Err(SetupError::InvalidConfig { field, value, allowed })
        };
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
        match Geometry::compute(self.memory_size, self.shards, self.max_value_size) {
            Some(g) => Ok(g),
            None => {
                // Every other input is in range, so only memory can be short.
                let needed = minimum_memory(self.shards, self.max_value_size);
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
fn minimum_memory(shards: usize, max_value: usize) -> usize {
    let mut hi = 1usize << 16;
    while Geometry::compute(hi, shards, max_value).is_none() {
        if hi >= 1 << 44 {
            return hi;
        }
        hi *= 2;
    }
    let mut lo = hi / 2;
    while hi - lo > 4096 {
        let mid = lo + (hi - lo) / 2;
        if Geometry::compute(mid, shards, max_value).is_some() {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

/// Namespace and segment names: 1 to 64 characters from `A-Z a-z 0-9 . _ -`, not `.` or `..`.
pub(crate) fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
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
    }

    #[test]
    fn minimum_memory_is_accepted_and_the_message_names_it() {
        let need = minimum_memory(8, 4096);
        assert!(Geometry::compute(need, 8, 4096).is_some());
        let err = Config::new().shards(8).max_value_size(4096).memory_size(need / 2);
        let text = err.validate().unwrap_err().to_string();
        assert!(text.contains("memory_size") && text.contains(&need.to_string()), "{text}");
    }
}

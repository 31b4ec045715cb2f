//! `setup()`'s options as JavaScript passes them, checked and turned into a `Config`. The
//! package checks their types first (`index.js`); here each is checked for range, and the
//! crate checks the rest at setup.

use std::time::Duration;

use cluster_session_store::{Config, Eviction};
use napi_derive::napi;

use crate::error::{Code, Result};

/// `setup()`'s options. Every one is optional; the crate's defaults apply to those left out.
#[napi(object)]
#[derive(Default)]
pub struct SetupOptions {
    /// Size of the segment in bytes (default 64 MiB), fixed for the life of the primary.
    pub memory_size: Option<f64>,
    /// Number of shards, a power of two (default 64).
    pub shards: Option<f64>,
    /// Largest session accepted, in bytes of JSON (default 64 KiB).
    pub max_value_size: Option<f64>,
    /// Time to live, in seconds, of a session whose cookie has no `expires` (default 86400).
    pub ttl: Option<f64>,
    /// Longest wait for a shard lock held by a live process, in milliseconds (default 5000).
    pub lock_timeout: Option<f64>,
    /// What a full shard does: `"lru"` evicts the least recently used sessions (default),
    /// `"refuse"` refuses new sessions.
    pub eviction: Option<String>,
    /// How often the primary sweeps expired sessions, in milliseconds (default 1000).
    pub sweep_interval: Option<f64>,
}

fn invalid(option: &str, value: impl std::fmt::Display, allowed: &str) -> napi::Error<Code> {
    napi::Error::new(
        Code::InvalidOption,
        format!("invalid option {option} = {value} of setup(): allowed {allowed}"),
    )
}

/// A count of bytes or shards: a whole number from 1 up to 2^53.
fn whole(option: &str, value: f64) -> Result<usize> {
    const MAX_SAFE: f64 = 9_007_199_254_740_991.0;
    if value.is_finite() && value >= 1.0 && value.fract() == 0.0 && value <= MAX_SAFE {
        usize::try_from(value as u64).map_err(|_| invalid(option, value, "a smaller number"))
    } else {
        Err(invalid(option, value, "a whole number, 1 or more"))
    }
}

/// A duration given in `unit_secs` seconds per unit: finite and above zero.
fn duration(option: &str, value: f64, unit_secs: f64) -> Result<Duration> {
    match Duration::try_from_secs_f64(value * unit_secs) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(invalid(option, value, "a finite number above 0")),
    }
}

impl SetupOptions {
    /// The `Config` these options describe (its name and backing are the caller's to set).
    pub fn config(&self) -> Result<Config> {
        let mut config = Config::new();
        if let Some(v) = self.memory_size {
            config = config.memory_size(whole("memorySize", v)?);
        }
        if let Some(v) = self.shards {
            config = config.shards(whole("shards", v)?);
        }
        if let Some(v) = self.max_value_size {
            config = config.max_value_size(whole("maxValueSize", v)?);
        }
        if let Some(v) = self.ttl {
            config = config.default_ttl(duration("ttl", v, 1.0)?);
        }
        if let Some(v) = self.lock_timeout {
            config = config.lock_timeout(duration("lockTimeout", v, 1e-3)?);
        }
        if let Some(v) = self.sweep_interval {
            config = config.sweep_interval(duration("sweepInterval", v, 1e-3)?);
        }
        match self.eviction.as_deref() {
            None | Some("lru") => {}
            Some("refuse") => config = config.eviction(Eviction::Refuse),
            Some(other) => {
                return Err(invalid("eviction", format!("{other:?}"), "\"lru\" or \"refuse\""))
            }
        }
        Ok(config)
    }
}

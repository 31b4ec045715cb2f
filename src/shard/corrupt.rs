//! The error every layer of the shard returns for shared memory found inconsistent.
#![forbid(unsafe_code)]

/// Shared memory is inconsistent; the message says what was found. The store layer repairs
/// the shard on it (`shard::audit::rebuild`) and retries, so corruption is a counted repair,
/// never a panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Corrupt(pub &'static str);

//! The JavaScript face of the crate's errors: each becomes an `Error` whose `message` says
//! what to do, in terms of the package's options (`maxValueSize`, not `Config::max_value_size`),
//! and whose `code` names the case, for programs that branch on it.

use cluster_session_store::{AttachError, SetupError, StoreError};

/// The `code` of an `Error` thrown by the addon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// A setup option is out of range.
    InvalidOption,
    /// `setup()` ran twice in one process.
    AlreadySetUp,
    /// The segment could not be created.
    Setup,
    /// A worker could not attach to the primary's segment.
    Attach,
    /// The session id is empty or too long.
    InvalidSid,
    /// The session's JSON is over `maxValueSize`.
    ValueTooLarge,
    /// No room in the segment.
    Full,
    /// A shard stayed locked past `lockTimeout`.
    LockTimeout,
    /// Damage was found and repaired; the operation was not applied.
    Corrupted,
    /// Stored bytes are not UTF-8 text.
    NotText,
    /// Any other store error.
    Store,
}

impl AsRef<str> for Code {
    fn as_ref(&self) -> &str {
        match self {
            Code::InvalidOption => "ERR_CLUSTER_STORE_INVALID_OPTION",
            Code::AlreadySetUp => "ERR_CLUSTER_STORE_ALREADY_SET_UP",
            Code::Setup => "ERR_CLUSTER_STORE_SETUP",
            Code::Attach => "ERR_CLUSTER_STORE_ATTACH",
            Code::InvalidSid => "ERR_CLUSTER_STORE_INVALID_SID",
            Code::ValueTooLarge => "ERR_CLUSTER_STORE_VALUE_TOO_LARGE",
            Code::Full => "ERR_CLUSTER_STORE_FULL",
            Code::LockTimeout => "ERR_CLUSTER_STORE_LOCK_TIMEOUT",
            Code::Corrupted => "ERR_CLUSTER_STORE_CORRUPTED",
            Code::NotText => "ERR_CLUSTER_STORE_NOT_TEXT",
            Code::Store => "ERR_CLUSTER_STORE",
        }
    }
}

/// What the addon's functions return: an error becomes a thrown `Error` with its `code`.
/// Named `Result` because napi-derive recognises a fallible function by that name.
pub type Result<T> = napi::Result<T, Code>;

fn error(code: Code, message: impl ToString) -> napi::Error<Code> {
    napi::Error::new(code, message)
}

/// A `Config` field's name as the package's option spells it.
fn option_name(field: &str) -> &str {
    match field {
        "memory_size" => "memorySize",
        "max_value_size" => "maxValueSize",
        "default_ttl" => "ttl",
        "lock_timeout" => "lockTimeout",
        "sweep_interval" => "sweepInterval",
        other => other,
    }
}

pub fn setup_error(e: SetupError) -> napi::Error<Code> {
    match e {
        SetupError::InvalidConfig { field, value, allowed } => error(
            Code::InvalidOption,
            format!(
                "invalid option {} = {value} of setup(): allowed {allowed}",
                option_name(field)
            ),
        ),
        other => error(Code::Setup, format!("could not set up the session store: {other}")),
    }
}

pub fn attach_error(e: AttachError) -> napi::Error<Code> {
    let message = match e {
        AttachError::NotFound { name } => format!(
            "no session store named {name:?}: the cluster primary that set it up has exited \
             (or this process was not started by it); workers attach to the store of the \
             primary that forked them, which calls setup() before cluster.fork()"
        ),
        other => format!(
            "could not attach to the session store that the cluster primary set up: {other}"
        ),
    };
    error(Code::Attach, message)
}

pub fn store_error(e: StoreError) -> napi::Error<Code> {
    match e {
        StoreError::ValueTooLarge { len, max } => error(
            Code::ValueTooLarge,
            format!(
                "the session is {len} bytes as JSON; the limit is {max}: keep less in the \
                 session, or raise the maxValueSize option of setup()"
            ),
        ),
        StoreError::Full { .. } => error(
            Code::Full,
            format!("{e}")
                .replace("raise Config::memory_size", "raise the memorySize option of setup()"),
        ),
        StoreError::LockTimeout { .. } => error(
            Code::LockTimeout,
            format!("{e}").replace("Config::lock_timeout", "the lockTimeout option of setup()"),
        ),
        StoreError::EmptyKey | StoreError::KeyTooLong { .. } => error(Code::InvalidSid, e),
        StoreError::Corrupted { .. } => error(Code::Corrupted, e),
        other => error(Code::Store, other),
    }
}

pub fn not_text(sid: &str) -> napi::Error<Code> {
    error(
        Code::NotText,
        format!(
            "session {sid:?} holds bytes that are not UTF-8 text: something other than this \
             package wrote it; destroy it"
        ),
    )
}

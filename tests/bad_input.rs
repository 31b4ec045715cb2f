//! Bad input gets a typed error and changes nothing.
//!
//! Store operations: an empty session id (`EmptyKey`), one over 256 bytes (`KeyTooLong`) and
//! a value over `max_value_size` (`ValueTooLarge`, measured on the encoded bytes for typed
//! calls) are refused by every operation, raw and typed, and leave the store as it was; the
//! limits themselves are accepted. Bytes that do not decode as the requested type give
//! `Decode` naming the session.
//!
//! Setup: each invalid `Config` field gives `InvalidConfig` naming that field, in the message
//! too; a named segment that exists already gives `SegmentExists` with its /dev/shm path.
//!
//! Attach: `open` and `new` of a namespace never set up give `NotSetUp` at once (this file
//! never sets up `"default"`, so a forked child finds none); `attach` gives `NotFound`,
//! `InvalidName`, `NotASegment` for a foreign file or a damaged header, and `VersionMismatch`
//! for another format version. Dropping the `Master` unlinks its named segment; a forked
//! child can `attach` to a named segment. Every file this test makes in /dev/shm is removed
//! by a drop guard, even when an assertion fails.
mod common;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cluster_session_store::{
    AttachError, Backing, ClusterStore, Config, Expiry, Master, SetupError, StoreError, MAX_KEY_LEN,
};
use common::{config, snapshot, LONG};

/// The stores' `max_value_size` (`common::config`'s).
const MAX_VALUE: usize = common::MAX_VALUE_SIZE;

/// A store holding three sessions.
fn populated(prefix: &str) -> Master {
    let (master, _) = common::setup(prefix);
    master.set_raw("a", b"alpha", Expiry::After(LONG)).unwrap();
    master.set("b", &vec![1u32, 2, 3], Expiry::After(LONG)).unwrap();
    master.set_raw("c", &[0xc1; 300], Expiry::After(LONG)).unwrap();
    master
}

fn assert_unchanged(store: &ClusterStore, before: &BTreeMap<String, Vec<u8>>, what: &str) {
    assert_eq!(store.length().unwrap(), before.len(), "{what}: length changed");
    assert_eq!(&snapshot(store), before, "{what}: contents changed");
    for (k, v) in before {
        assert_eq!(store.get_raw(k).unwrap().as_ref(), Some(v), "{what}: {k}");
    }
    assert!(store.check_integrity().is_ok(), "{what}: {}", store.check_integrity());
}

/// Each operation's name and outcome.
type Outcomes = Vec<(&'static str, Result<(), StoreError>)>;

/// Runs every keyed operation with `sid`; returns each one's name and outcome, and whether
/// an `update` closure was called.
fn every_keyed_operation(store: &ClusterStore, sid: &str) -> (Outcomes, bool) {
    let called = Cell::new(false);
    let mut out = Vec::new();
    let mut buf = Vec::new();
    out.push(("get_raw", store.get_raw(sid).map(drop)));
    out.push(("get_raw_into", store.get_raw_into(sid, &mut buf).map(drop)));
    out.push(("get", store.get::<String>(sid).map(drop)));
    out.push(("set_raw", store.set_raw(sid, b"v", Expiry::After(LONG))));
    out.push(("set", store.set(sid, &"v", Expiry::After(LONG))));
    out.push(("touch", store.touch(sid, Expiry::After(LONG)).map(drop)));
    out.push(("destroy", store.destroy(sid).map(drop)));
    let update_raw = store.update_raw(sid, Expiry::After(LONG), |_| {
        called.set(true);
        Some(b"v".to_vec())
    });
    out.push(("update_raw", update_raw.map(drop)));
    let update = store.update(sid, Expiry::After(LONG), |_: Option<String>| {
        called.set(true);
        Some("v".to_owned())
    });
    out.push(("update", update.map(drop)));
    (out, called.get())
}

/// A file in /dev/shm, removed when the guard drops (also when a test panics).
struct ShmFile(PathBuf);

impl ShmFile {
    fn of(name: &str) -> Self {
        ShmFile(PathBuf::from(common::shm_path(name)))
    }
    fn path(&self) -> &Path {
        &self.0
    }
    /// Writes the file as this user's alone (mode 0600), as a segment of its own would be:
    /// anything else is refused before its contents are looked at.
    fn write(&self, contents: &[u8]) {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&self.0)
            .expect("create");
        f.write_all(contents).unwrap();
    }
}

impl Drop for ShmFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Overwrites bytes of a file in place.
fn poke(path: &Path, offset: u64, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(path).expect("open");
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
}

fn read_at(path: &Path, offset: usize, len: usize) -> Vec<u8> {
    std::fs::read(path).expect("read")[offset..offset + len].to_vec()
}

#[test]
fn an_empty_session_id_is_refused_by_every_operation() {
    let _serial = common::serial();
    let store = populated("bad-empty");
    let before = snapshot(&store);
    let (results, called) = every_keyed_operation(&store, "");
    for (op, result) in results {
        assert!(matches!(result, Err(StoreError::EmptyKey)), "{op}: {result:?}");
    }
    assert!(!called, "an update closure ran for an empty key");
    assert_unchanged(&store, &before, "empty key");
}

#[test]
fn a_session_id_over_256_bytes_is_refused_by_every_operation() {
    let _serial = common::serial();
    assert_eq!(MAX_KEY_LEN, 256);
    let store = populated("bad-long");
    let before = snapshot(&store);
    for sid in [common::too_long_key(), "é".repeat(200)] {
        let (results, called) = every_keyed_operation(&store, &sid);
        for (op, result) in results {
            match result {
                Err(StoreError::KeyTooLong { len, max: 256 }) => assert_eq!(len, sid.len(), "{op}"),
                other => panic!("{op} with a {}-byte key: {other:?}", sid.len()),
            }
        }
        assert!(!called, "an update closure ran for a {}-byte key", sid.len());
    }
    let err = store.set_raw(&common::too_long_key(), b"v", Expiry::Default).unwrap_err();
    assert!(matches!(err, StoreError::KeyTooLong { len: 257, max: 256 }), "{err:?}");
    assert!(err.to_string().contains("257") && err.to_string().contains("256"), "{err}");
    assert_unchanged(&store, &before, "long key");
}

#[test]
fn a_session_id_of_exactly_256_bytes_works_everywhere() {
    let _serial = common::serial();
    let store = populated("bad-256");
    let sid = "k".repeat(256);
    store.set_raw(&sid, b"raw", Expiry::After(LONG)).unwrap();
    assert_eq!(store.get_raw(&sid).unwrap().as_deref(), Some(&b"raw"[..]));
    store.set(&sid, &"typed", Expiry::After(LONG)).unwrap();
    assert_eq!(store.get::<String>(&sid).unwrap().as_deref(), Some("typed"));
    assert!(store.touch(&sid, Expiry::After(LONG)).unwrap());
    let updated = store.update(&sid, Expiry::After(LONG), |old: Option<String>| {
        Some(format!("{}+", old.unwrap_or_default()))
    });
    assert_eq!(updated.unwrap().as_deref(), Some("typed+"));
    assert!(store.all_raw().unwrap().iter().any(|(k, _)| *k == sid));
    // With the largest value too: the largest record fits.
    store.set_raw(&sid, &[9; MAX_VALUE], Expiry::After(LONG)).unwrap();
    assert_eq!(store.get_raw(&sid).unwrap(), Some(vec![9; MAX_VALUE]));
    assert_eq!(store.length().unwrap(), 4);
    assert!(store.destroy(&sid).unwrap());
    assert_eq!(store.length().unwrap(), 3);
    assert!(store.check_integrity().is_ok(), "{}", store.check_integrity());
}

#[test]
fn a_value_over_max_value_size_is_refused_and_the_limit_is_accepted() {
    let _serial = common::serial();
    let store = populated("bad-value");
    assert_eq!(store.max_value_size(), MAX_VALUE);
    let before = snapshot(&store);

    // Raw: the limit is on the bytes given. A refused replacement keeps the old value.
    for sid in ["new", "a"] {
        match store.set_raw(sid, &[1; MAX_VALUE + 1], Expiry::After(LONG)) {
            Err(StoreError::ValueTooLarge { len, max }) => {
                assert_eq!((len, max), (MAX_VALUE + 1, MAX_VALUE))
            }
            other => panic!("set_raw {sid}: {other:?}"),
        }
    }
    let grown = store.update_raw("a", Expiry::After(LONG), |_| Some(vec![2; MAX_VALUE + 1]));
    assert!(
        matches!(grown, Err(StoreError::ValueTooLarge { len, max }) if len == MAX_VALUE + 1 && max == MAX_VALUE),
        "{grown:?}"
    );
    // Typed: the limit is on the encoded bytes. A MessagePack string of 256 to 65535 bytes
    // has a 3-byte header, so 4093 characters encode to exactly 4096 bytes.
    let err = store.set("new", &"x".repeat(MAX_VALUE - 2), Expiry::After(LONG)).unwrap_err();
    assert!(
        matches!(err, StoreError::ValueTooLarge { len, max } if len == MAX_VALUE + 1 && max == MAX_VALUE),
        "{err:?}"
    );
    assert!(err.to_string().contains("max_value_size"), "{err}");
    let err = store
        .update("b", Expiry::After(LONG), |_: Option<Vec<u32>>| Some(vec![u32::MAX; MAX_VALUE]))
        .unwrap_err();
    assert!(matches!(err, StoreError::ValueTooLarge { .. }), "{err:?}");
    assert_unchanged(&store, &before, "oversized values");

    // Exactly the limit is accepted, raw and typed.
    store.set_raw("raw-max", &[3; MAX_VALUE], Expiry::After(LONG)).unwrap();
    assert_eq!(store.get_raw("raw-max").unwrap(), Some(vec![3; MAX_VALUE]));
    let text = "x".repeat(MAX_VALUE - 3);
    store.set("typed-max", &text, Expiry::After(LONG)).unwrap();
    assert_eq!(store.get_raw("typed-max").unwrap().map(|v| v.len()), Some(MAX_VALUE));
    assert_eq!(store.get::<String>("typed-max").unwrap(), Some(text));
    // An empty value is a value.
    store.set_raw("empty", b"", Expiry::After(LONG)).unwrap();
    assert_eq!(store.get_raw("empty").unwrap(), Some(Vec::new()));
    assert_eq!(store.length().unwrap(), before.len() + 3);
    assert!(store.check_integrity().is_ok(), "{}", store.check_integrity());
}

#[test]
fn bytes_that_do_not_decode_give_a_decode_error_naming_the_session() {
    let _serial = common::serial();
    let store = populated("bad-decode");
    // 0xc1 is never used in MessagePack; a string is not a number.
    store.set_raw("garbage", &[0xc1, 0xc1], Expiry::After(LONG)).unwrap();
    store.set("text", &"not a number", Expiry::After(LONG)).unwrap();
    let before = snapshot(&store);
    for sid in ["garbage", "text"] {
        match store.get::<u64>(sid) {
            Err(StoreError::Decode { key, message }) => {
                assert_eq!(key, sid);
                assert!(!message.is_empty());
            }
            other => panic!("get::<u64>({sid}): {other:?}"),
        }
        let err = store.get::<u64>(sid).unwrap_err();
        assert!(err.to_string().contains(&format!("{sid:?}")), "{err}");
        // `update` fails the same way and writes nothing.
        let called = Cell::new(false);
        let err = store
            .update(sid, Expiry::After(LONG), |_: Option<u64>| {
                called.set(true);
                Some(1)
            })
            .unwrap_err();
        assert!(matches!(&err, StoreError::Decode { key, .. } if key == sid), "{err:?}");
        assert!(!called.get(), "the update closure ran on undecodable bytes");
    }
    // `all::<T>` fails on the first session that does not decode.
    assert!(matches!(store.all::<u64>(), Err(StoreError::Decode { .. })));
    // The raw bytes are still there.
    assert_eq!(store.get_raw("garbage").unwrap(), Some(vec![0xc1, 0xc1]));
    assert_unchanged(&store, &before, "decode errors");
}

#[test]
fn each_invalid_config_field_is_named() {
    let _serial = common::serial();
    let name = common::unique_name("bad-config");
    let base = || config(&name);
    let cases: Vec<(&str, Config)> = vec![
        ("shards", base().shards(3)),
        ("shards", base().shards(0)),
        ("shards", base().shards(12)),
        ("memory_size", base().memory_size(0)),
        ("memory_size", base().memory_size(1 << 20).shards(64).max_value_size(65536)),
        ("max_value_size", base().max_value_size(0)),
        ("typical_value_size", base().typical_value_size(0)),
        ("typical_value_size", base().typical_value_size(MAX_VALUE + 1)),
        ("default_ttl", base().default_ttl(Duration::ZERO)),
        ("lock_timeout", base().lock_timeout(Duration::ZERO)),
        ("name", base().name("a/b")),
        ("name", base().name("")),
        ("name", base().name("..")),
        ("name", base().name(&"n".repeat(65))),
    ];
    for (expected, config) in cases {
        let shown = format!("{config:?}");
        match ClusterStore::setup(config) {
            Err(err @ SetupError::InvalidConfig { .. }) => {
                let SetupError::InvalidConfig { field, .. } = &err else { unreachable!() };
                assert_eq!(*field, expected, "{shown}");
                let text = err.to_string();
                assert!(text.contains(expected), "message does not name {expected}: {text}");
            }
            Err(other) => panic!("{shown}: expected InvalidConfig {{ {expected} }}, got {other}"),
            Ok(_) => panic!("{shown}: expected InvalidConfig {{ {expected} }}, got a store"),
        }
    }
    // None of them was set up: the name is still free.
    assert!(matches!(ClusterStore::open(&name), Err(AttachError::NotSetUp { .. })));
    let master = ClusterStore::setup(base()).expect("the valid config");
    assert!(master.check_integrity().is_ok(), "{}", master.check_integrity());
}

#[test]
fn open_of_a_namespace_never_set_up_fails_at_once() {
    let _serial = common::serial();
    let started = Instant::now();
    match ClusterStore::open("never-set-up-xyz") {
        Err(AttachError::NotSetUp { namespace }) => assert_eq!(namespace, "never-set-up-xyz"),
        other => panic!("{other:?}"),
    }
    let err = ClusterStore::open("never-set-up-xyz").unwrap_err();
    assert!(err.to_string().contains("setup()"), "the message says what to do: {err}");
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
}

#[test]
fn new_in_a_forked_child_of_a_master_that_set_up_nothing_is_not_set_up() {
    let _serial = common::serial();
    // This file never sets up "default"; another store set up here must not be found either.
    let other = ClusterStore::setup(config(&common::unique_name("bad-not-default"))).unwrap();
    let mut child = common::spawn(|| {
        let started = Instant::now();
        let result = ClusterStore::new();
        let fast = started.elapsed() < Duration::from_secs(1);
        match result {
            Err(AttachError::NotSetUp { namespace }) if namespace == "default" && fast => 0,
            Err(AttachError::NotSetUp { .. }) => 2,
            Err(_) => 3,
            Ok(_) => 4,
        }
    });
    assert_eq!(child.wait(common::WAIT), 0, "2: wrong namespace or slow, 3: other error, 4: found");
    assert!(other.check_integrity().is_ok(), "{}", other.check_integrity());
}

#[test]
fn attach_to_a_missing_segment_or_a_bad_name() {
    let _serial = common::serial();
    match ClusterStore::attach("no-such-segment-xyz") {
        Err(AttachError::NotFound { name }) => assert_eq!(name, "no-such-segment-xyz"),
        other => panic!("{other:?}"),
    }
    for bad in ["bad/name", "", "..", "sp ace", &"n".repeat(65)] {
        match ClusterStore::attach(bad) {
            Err(AttachError::InvalidName { name }) => assert_eq!(name, bad),
            other => panic!("attach({bad:?}): {other:?}"),
        }
    }
    // A store set up with a memfd has no name in /dev/shm.
    let name = common::unique_name("bad-memfd");
    let master = ClusterStore::setup(config(&name)).unwrap();
    assert!(matches!(ClusterStore::attach(&name), Err(AttachError::NotFound { .. })));
    assert!(master.check_integrity().is_ok(), "{}", master.check_integrity());
}

#[test]
fn attach_to_a_foreign_file_is_not_a_segment() {
    let _serial = common::serial();
    let name = common::unique_name("bad-foreign");
    let file = ShmFile::of(&name);
    let garbage: Vec<u8> =
        (0..8192u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    file.write(&garbage);
    match ClusterStore::attach(&name) {
        Err(AttachError::NotASegment { name: n, reason }) => {
            assert_eq!(n, name);
            assert!(!reason.is_empty());
        }
        other => panic!("{other:?}"),
    }
    // Smaller than a header.
    file.write(b"tiny");
    assert!(matches!(ClusterStore::attach(&name), Err(AttachError::NotASegment { .. })));
    // Empty.
    file.write(b"");
    assert!(matches!(ClusterStore::attach(&name), Err(AttachError::NotASegment { .. })));
    // The foreign file is left alone.
    assert!(file.path().exists());
}

#[test]
fn attach_to_another_format_version_or_a_damaged_header_is_refused() {
    let _serial = common::serial();
    let name = common::unique_name("bad-version");
    let file = ShmFile::of(&name);
    let master = ClusterStore::setup(config(&name).backing(Backing::Named)).unwrap();
    master.set_raw("sid", b"kept", Expiry::After(LONG)).unwrap();
    let path = file.path();
    assert!(path.exists());
    assert!(ClusterStore::attach(&name).is_ok());

    let version = read_at(path, 8, 4);
    assert_eq!(version, 5u32.to_ne_bytes());
    // Format 4 had the shards right after the header, where the read counters are now.
    poke(path, 8, &4u32.to_ne_bytes());
    match ClusterStore::attach(&name) {
        Err(AttachError::VersionMismatch { found: 4, expected: 5 }) => {}
        other => panic!("{other:?}"),
    }
    // Format 3 had no spare block: its writers would carve blocks over it.
    poke(path, 8, &3u32.to_ne_bytes());
    match ClusterStore::attach(&name) {
        Err(AttachError::VersionMismatch { found: 3, expected: 5 }) => {}
        other => panic!("{other:?}"),
    }
    // Format 2 had no growing index: its writers would leave records past the active slots.
    poke(path, 8, &2u32.to_ne_bytes());
    match ClusterStore::attach(&name) {
        Err(AttachError::VersionMismatch { found: 2, expected: 5 }) => {}
        other => panic!("{other:?}"),
    }
    // Format 1 had no seqlock: its writers would not warn this build's optimistic readers.
    poke(path, 8, &1u32.to_ne_bytes());
    match ClusterStore::attach(&name) {
        Err(AttachError::VersionMismatch { found: 1, expected: 5 }) => {}
        other => panic!("{other:?}"),
    }
    poke(path, 8, &99u32.to_ne_bytes());
    match ClusterStore::attach(&name) {
        Err(AttachError::VersionMismatch { found: 99, expected: 5 }) => {}
        other => panic!("{other:?}"),
    }
    let text = ClusterStore::attach(&name).unwrap_err().to_string();
    assert!(text.contains("99") && text.contains('5'), "{text}");
    poke(path, 8, &version);

    // One byte of the name flipped: the header checksum no longer matches.
    let byte = read_at(path, 128, 1)[0];
    poke(path, 128, &[byte ^ 0x20]);
    assert!(matches!(ClusterStore::attach(&name), Err(AttachError::NotASegment { .. })));
    poke(path, 128, &[byte]);

    // Restored: attach works again and the data never moved.
    let worker = ClusterStore::attach(&name).expect("attach after restoring the header");
    assert_eq!(worker.get_raw("sid").unwrap().as_deref(), Some(&b"kept"[..]));
    assert!(worker.check_integrity().is_ok(), "{}", worker.check_integrity());
    assert!(master.check_integrity().is_ok(), "{}", master.check_integrity());
}

#[test]
fn a_leftover_named_segment_makes_setup_fail_with_its_path() {
    let _serial = common::serial();
    let name = common::unique_name("bad-leftover");
    let file = ShmFile::of(&name);
    // What a master that crashed while setting up leaves behind: no valid header.
    file.write(&[0u8; 8192]);
    match ClusterStore::setup(config(&name).backing(Backing::Named)) {
        Err(err @ SetupError::StaleSegment { owner_pid: None, .. }) => {
            let expected = file.path().to_str().unwrap();
            let SetupError::StaleSegment { name: n, path, .. } = &err else { unreachable!() };
            assert_eq!((n.as_str(), path.as_str()), (name.as_str(), expected));
            let text = err.to_string();
            assert!(text.contains(expected) && text.contains("reclaim_stale"), "{text}");
        }
        other => panic!("{other:?}"),
    }
    // The refused setup left the file alone and registered nothing.
    assert_eq!(std::fs::read(file.path()).unwrap(), [0u8; 8192]);
    assert!(matches!(ClusterStore::open(&name), Err(AttachError::NotSetUp { .. })));
}

#[test]
fn a_segment_left_by_a_killed_master_is_stale_and_can_be_reclaimed() {
    let _serial = common::serial();
    let name = common::unique_name("bad-stale");
    let file = ShmFile::of(&name);
    let ready = common::Signal1::new();
    let mut dead_master = common::spawn(|| {
        let master = ClusterStore::setup(config(&name).backing(Backing::Named)).unwrap();
        master.set_raw("old", b"session", Expiry::After(LONG)).unwrap();
        ready.notify();
        std::mem::forget(master);
        loop {
            std::thread::park();
        }
    });
    assert!(ready.wait(common::WAIT));
    let pid = dead_master.pid.as_raw() as u32;
    assert_eq!(dead_master.kill(), 128 + 9);
    assert!(file.path().exists(), "SIGKILL runs no destructor: the segment is left");
    match ClusterStore::setup(config(&name).backing(Backing::Named)) {
        Err(SetupError::StaleSegment { owner_pid, .. }) => assert_eq!(owner_pid, Some(pid)),
        other => panic!("{other:?}"),
    }
    let master = ClusterStore::setup(config(&name).backing(Backing::Named).reclaim_stale(true))
        .expect("reclaimed");
    assert_eq!(master.get_raw("old").unwrap(), None, "a fresh segment");
    assert_eq!(master.pid(), std::process::id());
    assert!(master.check_integrity().is_ok());
}

#[test]
fn a_named_segment_of_a_running_master_elsewhere_makes_setup_fail() {
    let _serial = common::serial();
    let name = common::unique_name("bad-twice");
    let file = ShmFile::of(&name);
    let ready = common::Signal1::new();
    let done = common::Signal1::new();
    let child_name = name.clone();
    let mut child = common::spawn(|| {
        let Ok(master) = ClusterStore::setup(config(&child_name).backing(Backing::Named)) else {
            return 2;
        };
        if master.set_raw("owner", b"child", Expiry::After(LONG)).is_err() {
            return 3;
        }
        ready.notify();
        if !done.wait(common::WAIT) {
            return 4;
        }
        drop(master);
        0
    });
    assert!(ready.wait(common::WAIT), "the child did not set up its store");
    match ClusterStore::setup(config(&name).backing(Backing::Named)) {
        Err(err @ SetupError::SegmentExists { .. }) => {
            let path = file.path().to_str().unwrap();
            assert!(err.to_string().contains(path), "{err}");
        }
        other => panic!("{other:?}"),
    }
    // The refused setup did not touch the running master's segment.
    let worker = ClusterStore::attach(&name).expect("attach to the child's segment");
    assert_eq!(worker.get_raw("owner").unwrap().as_deref(), Some(&b"child"[..]));
    assert!(worker.check_integrity().is_ok(), "{}", worker.check_integrity());
    done.notify();
    assert_eq!(child.wait(common::WAIT), 0);
    // The child's Master unlinked it on drop; the name is free again.
    assert!(!file.path().exists());
    let master = ClusterStore::setup(config(&name).backing(Backing::Named)).unwrap();
    assert!(master.check_integrity().is_ok(), "{}", master.check_integrity());
}

#[test]
fn dropping_the_master_removes_its_named_segment() {
    let _serial = common::serial();
    let name = common::unique_name("bad-unlink");
    let file = ShmFile::of(&name);
    let master = ClusterStore::setup(config(&name).backing(Backing::Named)).unwrap();
    assert!(file.path().exists());
    let worker = ClusterStore::attach(&name).unwrap();
    master.set_raw("sid", b"v", Expiry::After(LONG)).unwrap();
    drop(master);
    assert!(!file.path().exists(), "{} is still there", file.path().display());
    assert!(matches!(ClusterStore::attach(&name), Err(AttachError::NotFound { .. })));
    // A handle attached before stays usable: the mapping outlives the name.
    assert_eq!(worker.get_raw("sid").unwrap().as_deref(), Some(&b"v"[..]));
    assert!(worker.check_integrity().is_ok(), "{}", worker.check_integrity());
}

#[test]
fn a_forked_child_attaches_to_a_named_segment() {
    let _serial = common::serial();
    let name = common::unique_name("bad-attach-child");
    let _file = ShmFile::of(&name);
    let master = ClusterStore::setup(config(&name).backing(Backing::Named)).unwrap();
    master.set("from-parent", &"p", Expiry::After(LONG)).unwrap();
    let child_name = name.clone();
    let mut child = common::spawn(move || {
        let Ok(store) = ClusterStore::attach(&child_name) else { return 2 };
        if store.get::<String>("from-parent").ok().flatten().as_deref() != Some("p") {
            return 3;
        }
        if store.set("from-child", &"c", Expiry::After(LONG)).is_err() {
            return 4;
        }
        0
    });
    assert_eq!(child.wait(common::WAIT), 0, "2: attach, 3: read, 4: write failed");
    assert_eq!(master.get::<String>("from-child").unwrap().as_deref(), Some("c"));
    assert_eq!(master.length().unwrap(), 2);
    assert!(master.check_integrity().is_ok(), "{}", master.check_integrity());
}

//! Snapshots for reboots and format upgrades: every live session written to a file with its
//! expiry and read back into another store (expired ones skipped and counted); the master
//! restores one at setup and writes one when dropped (`Config::snapshot`), and periodically.
//! The file is mode 0600 and replaced in one rename: a writer SIGKILLed mid-snapshot leaves
//! the previous file as it was. A file cut short or damaged gives a typed error, the sessions
//! before the damage kept; a file another user could have written (another owner, or group or
//! other bits) is not read; neither is a file of another kind or version.
mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use cluster_session_store::{ClusterStore, Expiry, Master, SetupError, SnapshotError};
use common::{serial, unique_name, LONG, WAIT};

const SESSIONS: usize = 300;

/// A fresh directory for a test's snapshot files, removed at the end.
struct Dir(PathBuf);

impl Dir {
    fn new(prefix: &str) -> Dir {
        let dir = std::env::temp_dir().join(unique_name(prefix));
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }
    fn file(&self) -> PathBuf {
        self.0.join("sessions.snapshot")
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn value(i: usize) -> Vec<u8> {
    (0..100 + i % 200).map(|j| (i * 7 + j) as u8).collect()
}

fn fill(store: &ClusterStore) {
    for i in 0..SESSIONS {
        store.set_raw(&format!("sid-{i}"), &value(i), Expiry::After(LONG)).unwrap();
    }
}

fn assert_all(store: &ClusterStore, n: usize) {
    for i in 0..n {
        assert_eq!(store.get_raw(&format!("sid-{i}")).unwrap(), Some(value(i)), "sid-{i}");
    }
}

fn master(prefix: &str) -> Master {
    common::setup(prefix).0
}

#[test]
fn a_snapshot_round_trips_every_live_session_with_its_expiry() {
    let _serial = serial();
    let dir = Dir::new("snap-trip");
    let from = master("snap-from");
    fill(&from);
    let soon = SystemTime::now() + Duration::from_millis(200);
    from.set_raw("short", b"expires soon", Expiry::At(soon)).unwrap();
    let written = from.snapshot(dir.file()).unwrap();
    assert_eq!(written.sessions, SESSIONS as u64 + 1);
    let meta = std::fs::metadata(dir.file()).unwrap();
    assert_eq!((meta.len(), meta.permissions().mode() & 0o777), (written.bytes, 0o600));

    let to = master("snap-to");
    let restored = to.restore(dir.file()).unwrap();
    assert_eq!(
        (restored.sessions, restored.expired, restored.dropped),
        (SESSIONS as u64 + 1, 0, 0)
    );
    assert_all(&to, SESSIONS);
    assert_eq!(to.get_raw("short").unwrap().as_deref(), Some(&b"expires soon"[..]));
    common::wait_past(soon);
    assert_eq!(to.get_raw("short").unwrap(), None, "the expiry came along");
    // Restored again after it expired: skipped and counted.
    let later = master("snap-later");
    let restored = later.restore(dir.file()).unwrap();
    assert_eq!((restored.sessions, restored.expired), (SESSIONS as u64, 1));
    assert_eq!(later.length().unwrap(), SESSIONS);
    assert!(later.check_integrity().is_ok());
}

#[test]
fn the_master_restores_at_setup_and_writes_when_dropped() {
    let _serial = serial();
    let dir = Dir::new("snap-master");
    let name = unique_name("snap-cfg");
    let config = || common::config(&name).snapshot(dir.file());
    let first = ClusterStore::setup(config()).unwrap();
    assert_eq!(first.restored(), None, "no file yet");
    fill(&first);
    drop(first);
    let second = ClusterStore::setup(config()).unwrap();
    assert_eq!(second.restored().map(|r| r.sessions), Some(SESSIONS as u64));
    assert_all(&second, SESSIONS);
    second.destroy("sid-0").unwrap();
    let written = second.write_snapshot().expect("a snapshot file is configured").unwrap();
    assert_eq!(written.sessions, SESSIONS as u64 - 1);
}

#[test]
fn the_coordinator_writes_a_snapshot_every_interval() {
    let _serial = serial();
    let dir = Dir::new("snap-periodic");
    let name = unique_name("snap-every");
    let config = common::config(&name)
        .snapshot(dir.file())
        .snapshot_interval(Duration::from_secs(1))
        .sweep_interval(Duration::from_millis(20));
    let master = ClusterStore::setup(config).unwrap();
    fill(&master);
    // Watched, not slept for: the file appears within the interval and a sweep tick.
    let deadline = std::time::Instant::now() + WAIT;
    let written = loop {
        if let Ok(meta) = std::fs::metadata(dir.file()) {
            break meta;
        }
        assert!(std::time::Instant::now() < deadline, "no snapshot within {WAIT:?}");
        std::thread::yield_now();
    };
    assert_eq!(written.permissions().mode() & 0o777, 0o600);
    let copy = master_restoring(&dir.file());
    assert_eq!(copy.length().unwrap(), SESSIONS, "written after the sessions were");
}

fn master_restoring(path: &Path) -> Master {
    let m = master("snap-check");
    m.restore(path).unwrap();
    m
}

#[test]
fn a_damaged_or_cut_snapshot_is_a_typed_error_keeping_what_came_before() {
    let _serial = serial();
    let dir = Dir::new("snap-damage");
    let from = master("snap-damage-from");
    fill(&from);
    from.snapshot(dir.file()).unwrap();
    let bytes = std::fs::read(dir.file()).unwrap();
    let write = |contents: &[u8]| {
        std::fs::write(dir.file(), contents).unwrap();
        std::fs::set_permissions(dir.file(), std::fs::Permissions::from_mode(0o600)).unwrap();
    };

    // Cut in the middle.
    write(&bytes[..bytes.len() / 2]);
    let to = master("snap-cut");
    match to.restore(dir.file()) {
        Err(e @ SnapshotError::Truncated { restored, .. }) => {
            assert!(restored > 0 && restored < SESSIONS as u64, "{e}");
            assert_eq!(
                to.length().unwrap() as u64,
                restored,
                "the sessions before the cut are kept"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(to.check_integrity().is_ok());

    // One byte flipped in a record past the first quarter.
    let mut damaged = bytes.clone();
    damaged[bytes.len() / 4] ^= 0x01;
    write(&damaged);
    let to = master("snap-flip");
    match to.restore(dir.file()) {
        Err(e @ SnapshotError::Corrupt { restored, offset, .. }) => {
            assert!(restored < SESSIONS as u64 && offset > 0, "{e}");
            assert_eq!(to.length().unwrap() as u64, restored);
            assert!(e.to_string().contains("damaged"), "{e}");
        }
        other => panic!("{other:?}"),
    }

    // Not a snapshot, another version, empty.
    write(b"not a snapshot at all, but long enough to have a header");
    assert!(matches!(to.restore(dir.file()), Err(SnapshotError::NotASnapshot { .. })));
    let mut other_version = bytes.clone();
    other_version[8] = 9;
    write(&other_version);
    assert!(matches!(to.restore(dir.file()), Err(SnapshotError::Version { found: 9, .. })));
    write(b"");
    assert!(matches!(to.restore(dir.file()), Err(SnapshotError::NotASnapshot { .. })));

    // At setup: the store is not set up, and says what to do.
    write(&damaged);
    let config = common::config(&unique_name("snap-setup")).snapshot(dir.file());
    match ClusterStore::setup(config) {
        Err(e @ SetupError::Snapshot(SnapshotError::Corrupt { .. })) => {
            assert!(e.to_string().contains("move the file away"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_snapshot_another_user_could_have_written_is_not_read() {
    let _serial = serial();
    let dir = Dir::new("snap-perm");
    let from = master("snap-perm-from");
    fill(&from);
    from.snapshot(dir.file()).unwrap();
    let to = master("snap-perm-to");
    for mode in [0o644, 0o660, 0o602] {
        std::fs::set_permissions(dir.file(), std::fs::Permissions::from_mode(mode)).unwrap();
        match to.restore(dir.file()) {
            Err(SnapshotError::Untrusted { mode: m, .. }) => assert_eq!(m, mode),
            other => panic!("mode {mode:o}: {other:?}"),
        }
    }
    std::fs::set_permissions(dir.file(), std::fs::Permissions::from_mode(0o600)).unwrap();
    if nix::unistd::Uid::effective().is_root() {
        // Another owner, even with mode 0600.
        nix::unistd::chown(&dir.file(), Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        match to.restore(dir.file()) {
            Err(SnapshotError::Untrusted { owner_uid: 65534, .. }) => {}
            other => panic!("{other:?}"),
        }
        nix::unistd::chown(&dir.file(), Some(nix::unistd::Uid::effective()), None).unwrap();
    }
    assert_eq!(
        std::fs::metadata(dir.file()).unwrap().uid(),
        nix::unistd::Uid::effective().as_raw()
    );
    // Positive control.
    assert_eq!(to.length().unwrap(), 0, "nothing was read");
    assert_eq!(to.restore(dir.file()).unwrap().sessions, SESSIONS as u64);
}

/// A process SIGKILLed while it writes a snapshot (parked after the first shard's sessions)
/// leaves the previous snapshot whole, and the next snapshot writes over its leftovers.
#[cfg(feature = "fault-injection")]
#[test]
fn a_writer_killed_mid_snapshot_leaves_the_previous_one() {
    use cluster_session_store::fault::{self, FaultPoint};
    use std::sync::atomic::Ordering;

    let _serial = serial();
    let dir = Dir::new("snap-kill");
    let (store, name) = common::setup("snap-kill");
    fill(&store);
    store.snapshot(dir.file()).unwrap();
    let before = std::fs::read(dir.file()).unwrap();
    let parked = common::Signal1::new();
    common::PARK_FD.store(parked.write_fd(), Ordering::SeqCst);
    let file = dir.file();
    let mut writer = common::spawn(|| {
        let store = ClusterStore::open(&name).unwrap();
        store.destroy("sid-1").unwrap();
        fault::arm(FaultPoint::MidSnapshot, common::park);
        let _ = store.snapshot(&file);
        3
    });
    assert!(parked.wait(WAIT), "the writer never reached the fault point");
    assert_eq!(writer.kill(), 128 + 9);
    assert_eq!(std::fs::read(dir.file()).unwrap(), before, "the previous snapshot changed");
    assert!(store.check_integrity().is_ok());
    let leftover = dir.0.join(format!("sessions.snapshot.{}.tmp", writer.pid));
    assert!(leftover.exists(), "the killed writer's temporary file");
    let written = store.snapshot(dir.file()).unwrap();
    assert_eq!(written.sessions, SESSIONS as u64 - 1);
    let files: Vec<_> =
        std::fs::read_dir(&dir.0).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(files, ["sessions.snapshot"], "temporary files left");
}

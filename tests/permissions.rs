//! Who can read the sessions. A named segment is created with mode 0600, owned by the
//! master's user, and another user's attach is refused with `AttachError::PermissionDenied`
//! naming its path. The default memfd segment has no name anywhere; its only other door,
//! `/proc/<master>/map_files/<range>` (the master keeps no descriptor of it once mapped), is
//! closed to another user. The second-user cases fork a child
//! that switches to `nobody` (uid and gid 65534), so they need root; run as another user
//! they say they are skipped, and the mode check still runs.
mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use cluster_session_store::{AttachError, Backing, ClusterStore, Config};
use nix::unistd::{Gid, Uid};

const NOBODY: u32 = 65534;

fn config(name: &str) -> Config {
    Config::new().name(name).memory_size(1 << 20).shards(2).max_value_size(1024)
}

/// In a forked child: drops to `nobody` for good, or exits with 90 (setup failure).
fn become_nobody() {
    let ok = nix::unistd::setgroups(&[]).is_ok()
        && nix::unistd::setgid(Gid::from_raw(NOBODY)).is_ok()
        && nix::unistd::setuid(Uid::from_raw(NOBODY)).is_ok();
    if !ok {
        // SAFETY: ends the forked child at once.
        unsafe { libc::_exit(90) };
    }
}

fn root() -> bool {
    if Uid::effective().is_root() {
        return true;
    }
    println!("skipped: switching to a second user needs root");
    false
}

#[test]
fn a_named_segment_is_mode_0600_and_owned_by_the_masters_user() {
    let _serial = common::serial();
    let name = common::unique_name("perm-mode");
    let master = ClusterStore::setup(config(&name).backing(Backing::Named)).expect("setup");
    let path = format!("/dev/shm/cluster-session-store.{name}");
    let meta = std::fs::metadata(&path).expect("the named segment exists");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{path}");
    assert_eq!(meta.uid(), Uid::effective().as_raw());
    drop(master);
    assert!(std::fs::metadata(&path).is_err(), "dropping the master removes {path}");
}

#[test]
fn another_user_cannot_attach_to_a_named_segment() {
    let _serial = common::serial();
    if !root() {
        return;
    }
    let name = common::unique_name("perm-user");
    let master = ClusterStore::setup(config(&name).backing(Backing::Named)).expect("setup");
    master.set_raw("secret", b"login state", cluster_session_store::Expiry::Default).unwrap();
    let mut child = common::spawn(|| {
        become_nobody();
        match ClusterStore::attach(&name) {
            Err(AttachError::PermissionDenied { path, .. })
                if path.ends_with(&format!("cluster-session-store.{name}")) =>
            {
                0
            }
            Err(e) => {
                eprintln!("unexpected error: {e}");
                1
            }
            Ok(_) => 2,
        }
    });
    assert_eq!(child.wait(common::WAIT), 0, "1: another error, 2: attached, 90: setuid failed");
    // The owner can.
    let store = ClusterStore::attach(&name).expect("the owner attaches");
    assert_eq!(store.get_raw("secret").unwrap().unwrap(), b"login state");
    assert!(master.check_integrity().is_ok());
}

#[test]
fn another_user_cannot_open_the_masters_memfd_mapping_through_proc() {
    let _serial = common::serial();
    if !root() {
        return;
    }
    let name = common::unique_name("perm-memfd");
    let master = ClusterStore::setup(config(&name)).expect("setup");
    // The master keeps no descriptor of its memfd once mapped; the mapping's entry under
    // /proc/<pid>/map_files is the one way in from outside.
    let label = format!("/memfd:cluster-session-store.{name}");
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let range = maps
        .lines()
        .find(|l| l.contains(&label))
        .and_then(|l| l.split_whitespace().next())
        .expect("the master maps its memfd")
        .to_owned();
    let door = format!("/proc/{}/map_files/{range}", std::process::id());
    // Root can open it...
    assert!(std::fs::File::open(&door).is_ok(), "{door}");
    // ...another user cannot.
    let mut child = common::spawn(|| {
        become_nobody();
        match std::fs::File::open(&door) {
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => 0,
            Err(e) => {
                eprintln!("unexpected error: {e}");
                1
            }
            Ok(_) => 2,
        }
    });
    assert_eq!(child.wait(common::WAIT), 0, "1: another error, 2: opened, 90: setuid failed");
    assert!(master.check_integrity().is_ok());
}

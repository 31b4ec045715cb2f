//! Who can read the sessions. A named segment is created with mode 0600, owned by the
//! master's user, and another user's attach is refused with `AttachError::PermissionDenied`
//! naming its path. Nothing is trusted that is not the user's alone: a segment another user
//! planted under the name (a valid one, even open to all) is refused by `attach` and by
//! `setup()` with `UntrustedSegment` naming its owner and mode, and so is one of the user's
//! own that grants group or others access; `setup()` facing another user's segment says whose
//! it is. The default memfd segment has no name anywhere; its other doors,
//! `/proc/<master>/map_files/<range>` and `/proc/<master>/fd/<n>` (the descriptor the master
//! keeps for a handover), are closed to another user. The second-user cases fork a child
//! that switches to `nobody` (uid and gid 65534), so they need root; run as another user
//! they say they are skipped, and the mode check still runs.
mod common;

use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};

use cluster_session_store::{AttachError, Backing, ClusterStore, Expiry, SetupError};
use common::{config, shm_path};
use nix::unistd::{Gid, Uid};

const NOBODY: u32 = 65534;

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
    let path = shm_path(&name);
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
    master.set_raw("secret", b"login state", Expiry::Default).unwrap();
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
    // From outside, the memfd is reached through the mapping's entry under
    // /proc/<pid>/map_files, or the descriptor the master keeps for a handover under
    // /proc/<pid>/fd.
    let label = format!("/memfd:cluster-session-store.{name}");
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let range = maps
        .lines()
        .find(|l| l.contains(&label))
        .and_then(|l| l.split_whitespace().next())
        .expect("the master maps its memfd")
        .to_owned();
    let door = format!("/proc/{}/map_files/{range}", std::process::id());
    let fd = std::os::fd::AsRawFd::as_raw_fd(&master.memfd().expect("a memfd segment"));
    let other_door = format!("/proc/{}/fd/{fd}", std::process::id());
    // Root can open them...
    assert!(std::fs::File::open(&door).is_ok(), "{door}");
    assert!(std::fs::File::open(&other_door).is_ok(), "{other_door}");
    // ...another user cannot.
    let mut child = common::spawn(|| {
        become_nobody();
        for door in [&door, &other_door] {
            match std::fs::File::open(door) {
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {}
                Err(e) => {
                    eprintln!("unexpected error: {e}");
                    return 1;
                }
                Ok(_) => return 2,
            }
        }
        0
    });
    assert_eq!(child.wait(common::WAIT), 0, "1: another error, 2: opened, 90: setuid failed");
    assert!(master.check_integrity().is_ok());
}

fn set_mode(path: &str, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Another user (`nobody`) sets up a valid store under the name first, plants a forged
/// session and opens the segment to everyone (or leaves it 0600): root's workers must not
/// attach to it, and root's master must not take it for a running or stale master's.
#[test]
fn a_segment_planted_by_another_user_is_refused_by_attach_and_setup() {
    let _serial = common::serial();
    if !root() {
        return;
    }
    for mode in [0o666, 0o600] {
        let name = common::unique_name("perm-planted");
        let path = shm_path(&name);
        let (planted, go) = (common::Signal1::new(), common::Signal1::new());
        let mut attacker = common::spawn(|| {
            become_nobody();
            let Ok(master) = ClusterStore::setup(config(&name).backing(Backing::Named)) else {
                return 3;
            };
            master.set_raw("victim-sid", b"forged login", Expiry::Default).unwrap();
            set_mode(&path, mode);
            planted.notify();
            // Holds the segment until the parent is done; dropping the master removes it.
            i32::from(!go.wait(common::WAIT))
        });
        assert!(planted.wait(common::WAIT), "the attacker set up its segment");
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.permissions().mode() & 0o777), (NOBODY, mode));

        match ClusterStore::attach(&name) {
            Err(AttachError::UntrustedSegment {
                path: p, owner_uid, mode: m, user_uid, ..
            }) => {
                assert_eq!((p.as_str(), owner_uid, m, user_uid), (path.as_str(), NOBODY, mode, 0));
            }
            Err(e) => panic!("mode {mode:o}: unexpected attach error: {e}"),
            Ok(store) => panic!("mode {mode:o}: attached to another user's segment: {store:?}"),
        }
        match ClusterStore::setup(config(&name).backing(Backing::Named).reclaim_stale(true)) {
            Err(e @ SetupError::UntrustedSegment { owner_uid: NOBODY, .. }) => {
                let text = e.to_string();
                assert!(text.contains(&format!("uid {NOBODY}")) && text.contains(&path), "{text}");
            }
            Err(e) => panic!("mode {mode:o}: unexpected setup error: {e}"),
            Ok(_) => panic!("mode {mode:o}: setup took over another user's segment"),
        }
        let meta = std::fs::metadata(&path).expect("setup left the segment where it was");
        assert_eq!(meta.uid(), NOBODY);

        go.notify();
        assert_eq!(attacker.wait(common::WAIT), 0, "3: the attacker's setup failed");
        // Positive control: once the name is free, root's own master and workers use it.
        let master = ClusterStore::setup(config(&name).backing(Backing::Named)).expect("setup");
        let store = ClusterStore::attach(&name).expect("the owner attaches");
        assert_eq!(store.get_raw("victim-sid").unwrap(), None);
        assert!(master.check_integrity().is_ok());
    }
}

/// A non-root master whose name is held by another user's 0600 segment (which it cannot
/// even open) is told whose it is, not to remove a file it could not remove.
#[test]
fn setup_over_another_users_segment_names_its_owner() {
    let _serial = common::serial();
    if !root() {
        return;
    }
    let name = common::unique_name("perm-held");
    // Root's segment, made by hand: a master set up in this process would be in the registry
    // the child inherits, and the child's setup() would stop there.
    let path = shm_path(&name);
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).unwrap();
    let mut child =
        common::spawn(|| {
            become_nobody();
            match ClusterStore::setup(config(&name).backing(Backing::Named).reclaim_stale(true)) {
                Err(SetupError::UntrustedSegment {
                    owner_uid: 0, mode: 0o600, user_uid, ..
                }) if user_uid == NOBODY => 0,
                Err(e) => {
                    eprintln!("unexpected error: {e}");
                    1
                }
                Ok(_) => 2,
            }
        });
    let code = child.wait(common::WAIT);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(code, 0, "1: another error, 2: set up, 90: setuid failed");
}

/// The user's own segment is refused once it grants group or others anything, and used
/// again once it does not (runs as any user).
#[test]
fn a_segment_open_to_group_or_others_is_refused() {
    let _serial = common::serial();
    let name = common::unique_name("perm-open");
    let path = shm_path(&name);
    let master = ClusterStore::setup(config(&name).backing(Backing::Named)).expect("setup");
    let me = Uid::effective().as_raw();
    for mode in [0o640, 0o604, 0o660, 0o606] {
        set_mode(&path, mode);
        match ClusterStore::attach(&name) {
            Err(e @ AttachError::UntrustedSegment { .. }) => {
                let AttachError::UntrustedSegment { owner_uid, mode: m, user_uid, .. } = e else {
                    unreachable!()
                };
                assert_eq!((owner_uid, m, user_uid), (me, mode, me));
                assert!(e.to_string().contains("group or others"), "{e}");
            }
            other => panic!("mode {mode:o}: {other:?}"),
        }
    }
    set_mode(&path, 0o600);
    ClusterStore::attach(&name).expect("0600 again: attaches");
    assert!(master.check_integrity().is_ok());
}

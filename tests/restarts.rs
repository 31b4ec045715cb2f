//! Sessions survive a restart of the master (`Config::keep_segment`): a master that stops
//! (its `Master` dropped, or SIGTERM) or is SIGKILLed in the middle of a write leaves its
//! named segment, and the next master's `setup()` adopts it: every session is there with its
//! expiry, the shard the dead master held is repaired, `check_integrity()` passes, and the
//! header names the new master. A segment made with another geometry has its sessions
//! copied into a new one, those that do not fit counted; one with a damaged header is
//! refused with `CannotAdopt` and left as it was (`reclaim_stale` replaces it with an empty
//! one). A master
//! still running is never adopted from, and `keep_segment` needs a named segment.
mod common;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use cluster_session_store::{Backing, ClusterStore, Config, Expiry, SetupError};
use common::{serial, spawn, unique_name, Signal1, WAIT};
use nix::sys::signal::{kill, Signal};

const SESSIONS: usize = 200;

/// A kept named segment; the sweep kept out of the way, so that only what a test does
/// expires sessions.
fn kept(name: &str) -> Config {
    common::config(name).backing(Backing::Named).keep_segment(true).sweep_interval(common::NO_SWEEP)
}

/// The kept segment's file, removed when the test ends however it ends.
fn kept_file(name: &str) -> common::RemovedAtEnd {
    common::RemovedAtEnd(PathBuf::from(common::shm_path(name)))
}

fn value(i: usize) -> Vec<u8> {
    format!("session {i}, logged in").into_bytes()
}

/// What a master writes before it goes: `SESSIONS` sessions for an hour, and one that
/// expires at `soon`.
fn write_sessions(store: &ClusterStore, soon: SystemTime) {
    for i in 0..SESSIONS {
        store
            .set_raw(&format!("sid-{i}"), &value(i), Expiry::After(Duration::from_secs(3600)))
            .unwrap();
    }
    store.set_raw("short", b"expires soon", Expiry::At(soon)).unwrap();
}

/// Adopts the segment `name` in this process and checks every session is there.
fn adopt_and_check(name: &str, soon: SystemTime) -> cluster_session_store::Master {
    let master = ClusterStore::setup(kept(name)).expect("the next master adopts the segment");
    let adoption = master.adoption().expect("an adoption");
    assert_eq!((adoption.sessions, adoption.dropped, adoption.resized), (SESSIONS + 1, 0, false));
    for i in 0..SESSIONS {
        assert_eq!(master.get_raw(&format!("sid-{i}")).unwrap(), Some(value(i)), "sid-{i}");
    }
    assert_eq!(master.length().unwrap(), SESSIONS + 1);
    let report = master.check_integrity();
    assert!(report.is_ok(), "{report}");
    // Every shard was rebuilt on adoption.
    assert!(master.stats().unwrap().recoveries >= 4);
    // The header names the new master: a worker attaching now sees it alive.
    let worker = ClusterStore::attach(name).expect("attach");
    assert!(worker.master_alive());
    // The session's expiry came along.
    assert_eq!(worker.get_raw("short").unwrap().as_deref(), Some(&b"expires soon"[..]));
    common::wait_past(soon);
    assert_eq!(worker.get_raw("short").unwrap(), None);
    master
}

#[test]
fn a_stopped_masters_sessions_are_adopted_by_the_next() {
    let _serial = serial();
    let name = unique_name("keep-drop");
    let file = kept_file(&name);
    let soon = SystemTime::now() + Duration::from_millis(300);
    let mut first = spawn(|| {
        let master = ClusterStore::setup(kept(&name)).unwrap();
        write_sessions(&master, soon);
        drop(master); // keeps the segment
        0
    });
    assert_eq!(first.wait(WAIT), 0);
    assert!(file.0.exists(), "the segment was removed");
    // A worker attached meanwhile sees the master gone, then the one that adopted it.
    let early = ClusterStore::attach(&name).expect("attach to the kept segment");
    assert!(!early.master_alive());
    let master = adopt_and_check(&name, soon);
    assert!(early.master_alive(), "the adopting master is not seen");
    assert_eq!(early.get_raw("sid-3").unwrap(), Some(value(3)));
    drop(master);
    assert!(file.0.exists(), "the adopting master removed the segment");
    // This process, its master dropped, adopts it again.
    let again = ClusterStore::setup(kept(&name)).expect("adopted again in the same process");
    assert_eq!(again.length().unwrap(), SESSIONS);
}

#[test]
fn a_master_stopped_by_sigterm_leaves_its_sessions_to_the_next() {
    let _serial = serial();
    let name = unique_name("keep-term");
    let _file = kept_file(&name);
    let soon = SystemTime::now() + Duration::from_millis(300);
    let ready = Signal1::new();
    let mut first = spawn(|| {
        // SIGTERM at its default action, as a server starts (a test run may inherit it
        // ignored).
        // SAFETY: restoring the default action installs no handler.
        unsafe { nix::sys::signal::signal(Signal::SIGTERM, nix::sys::signal::SigHandler::SigDfl) }
            .unwrap();
        let master = ClusterStore::setup(kept(&name)).unwrap();
        write_sessions(&master, soon);
        ready.notify();
        common::park();
        drop(master);
        1
    });
    assert!(ready.wait(WAIT));
    kill(first.pid, Signal::SIGTERM).unwrap();
    assert_eq!(first.wait(WAIT), 128 + Signal::SIGTERM as i32);
    adopt_and_check(&name, soon);
}

/// The master itself is SIGKILLed while it holds a shard lock, halfway through copying a
/// new value: the next master repairs that shard on adoption, and the session keeps its old
/// value.
#[cfg(feature = "fault-injection")]
#[test]
fn a_master_killed_mid_write_leaves_its_sessions_to_the_next() {
    use cluster_session_store::fault::{self, FaultPoint};
    use std::sync::atomic::Ordering;

    let _serial = serial();
    let name = unique_name("keep-kill");
    let _file = kept_file(&name);
    let soon = SystemTime::now() + Duration::from_millis(300);
    let parked = Signal1::new();
    common::PARK_FD.store(parked.write_fd(), Ordering::SeqCst);
    let mut first = spawn(|| {
        let master = ClusterStore::setup(kept(&name)).unwrap();
        write_sessions(&master, soon);
        fault::arm(FaultPoint::MidCopy, common::park);
        let _ = master.set_raw("sid-7", &[b'x'; 900], Expiry::Default);
        3 // not reached: parked inside the write
    });
    assert!(parked.wait(WAIT), "the master never reached the fault point");
    assert_eq!(first.kill(), 128 + 9);
    let master = adopt_and_check(&name, soon);
    assert_eq!(master.get_raw("sid-7").unwrap(), Some(value(7)), "the old value stays");
}

/// A new configuration with twice the shards, twice the memory and a lower value limit: the
/// sessions move to a new segment of that geometry, with their expiry; the one whose value
/// is over the new limit is counted as dropped; nothing is left under a temporary name.
#[test]
fn a_segment_of_another_geometry_is_resized_with_its_sessions() {
    let _serial = serial();
    let name = unique_name("keep-geo");
    let _file = kept_file(&name);
    let soon = SystemTime::now() + Duration::from_millis(300);
    let mut first = spawn(|| {
        let master = ClusterStore::setup(kept(&name)).unwrap();
        write_sessions(&master, soon);
        master.set_raw("big", &[7; 2000], Expiry::After(common::LONG)).unwrap();
        0
    });
    assert_eq!(first.wait(WAIT), 0);
    // What a master killed mid-resize leaves: its temporary segment, removed by the next.
    let mut dead = spawn(|| 0);
    assert_eq!(dead.wait(WAIT), 0);
    let leftover = common::shm_path(&format!("{name}.resize-{}", dead.pid));
    std::fs::write(&leftover, [0u8; 4096]).unwrap();
    let resized = kept(&name).shards(8).memory_size(2 << 20).max_value_size(1024);
    let master = ClusterStore::setup(resized).expect("resized");
    let adoption = master.adoption().expect("an adoption");
    assert!(adoption.resized);
    assert_eq!((adoption.sessions, adoption.dropped), (SESSIONS + 1, 1));
    assert_eq!(master.get_raw("big").unwrap(), None);
    for i in 0..SESSIONS {
        assert_eq!(master.get_raw(&format!("sid-{i}")).unwrap(), Some(value(i)), "sid-{i}");
    }
    assert!(master.check_integrity().is_ok());
    assert_eq!(master.stats().unwrap().data_bytes, {
        let fresh = ClusterStore::setup(
            common::config(&unique_name("keep-geo-ref"))
                .shards(8)
                .memory_size(2 << 20)
                .max_value_size(1024),
        )
        .unwrap();
        fresh.stats().unwrap().data_bytes
    });
    common::wait_past(soon);
    assert_eq!(master.get_raw("short").unwrap(), None, "the expiry came along");
    let leftovers: Vec<_> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(&format!("{name}.resize")))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A segment whose header no longer passes its checksum is not adopted: `CannotAdopt`, and the
/// file is left byte for byte as it was (its sessions may still be recovered by hand);
/// `reclaim_stale` replaces it with an empty one.
#[test]
fn a_damaged_segment_is_left_as_it_was() {
    let _serial = serial();
    let name = unique_name("keep-damaged");
    let file = kept_file(&name);
    let mut first = spawn(|| {
        write_sessions(&ClusterStore::setup(kept(&name)).unwrap(), SystemTime::now());
        0
    });
    assert_eq!(first.wait(WAIT), 0);
    let mut bytes = std::fs::read(&file.0).unwrap();
    bytes[130] ^= 0x20; // a byte of the name, under the header's CRC
    std::fs::write(&file.0, &bytes).unwrap();
    match ClusterStore::setup(kept(&name)) {
        Err(e @ SetupError::CannotAdopt { .. }) => {
            let text = e.to_string();
            assert!(text.contains("checksum") && text.contains(&name), "{text}");
        }
        other => panic!("{other:?}"),
    }
    assert!(std::fs::read(&file.0).unwrap() == bytes, "the refused segment was changed");
    let fresh = ClusterStore::setup(kept(&name).reclaim_stale(true)).unwrap();
    assert_eq!(fresh.length().unwrap(), 0);
    assert_eq!(fresh.adoption(), None);
}

#[test]
fn a_running_masters_segment_is_not_adopted() {
    let _serial = serial();
    let name = unique_name("keep-live");
    let _file = kept_file(&name);
    let ready = Signal1::new();
    let mut first = spawn(|| {
        let _master = ClusterStore::setup(kept(&name)).unwrap();
        ready.notify();
        common::park();
        1
    });
    assert!(ready.wait(WAIT));
    let second = ClusterStore::setup(kept(&name));
    assert!(matches!(second, Err(SetupError::SegmentExists { .. })), "{second:?}");
    assert_eq!(first.kill(), 128 + 9);
}

/// `Backing::Inherited` takes only a memfd of this user's, and only in a handover.
#[test]
fn an_inherited_descriptor_must_be_a_memfd_in_a_handover() {
    use std::os::fd::IntoRawFd;
    let _serial = serial();
    let name = unique_name("inherit");
    let inherited = |fd| common::config(&name).backing(Backing::Inherited(fd));
    match ClusterStore::setup(inherited(0)) {
        Err(SetupError::InvalidConfig { field: "backing", .. }) => {}
        other => panic!("{other:?}"),
    }
    // A regular file of this user's: not a memfd. The store takes the descriptor over.
    let path = std::env::temp_dir().join(unique_name("not-a-memfd"));
    std::fs::write(&path, [0u8; 8192]).unwrap();
    let fd = std::fs::File::open(&path).unwrap().into_raw_fd();
    let refused = ClusterStore::setup(inherited(fd).take_over(std::process::id()));
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(refused, Err(SetupError::UntrustedSegment { .. })), "{refused:?}");
}

#[test]
fn keep_segment_needs_a_named_segment() {
    let config = kept("keep-memfd").backing(Backing::Memfd);
    match ClusterStore::setup(config) {
        Err(SetupError::InvalidConfig { field: "keep_segment", .. }) => {}
        other => panic!("{other:?}"),
    }
}

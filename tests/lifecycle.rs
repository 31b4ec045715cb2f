//! The segment's life: a master that dies of SIGTERM or SIGINT removes its named segment; a
//! worker killed by SIGTERM never does; and when the master dies, its workers keep serving
//! `get` and `set` from the segment they map, and can tell that the master is gone.
mod common;

use std::path::Path;

use cluster_session_store::{Backing, ClusterStore, Config, Expiry};
use common::{serial, shm_path, spawn, unique_name, Child, Signal1, WAIT};
use nix::sys::signal::{kill, Signal};

fn named(name: &str) -> Config {
    common::config(name).backing(Backing::Named)
}

fn master_dies_of(signal: Signal) {
    let _serial = serial();
    let name = unique_name("sig");
    let ready = Signal1::new();
    let mut master = spawn(|| {
        // A master with the signal at its default action, as a server starts: a test run
        // launched in the background by a non-interactive shell inherits SIGINT ignored, and
        // setup() rightly leaves an ignored signal alone.
        // SAFETY: restoring the default action installs no handler.
        unsafe { nix::sys::signal::signal(signal, nix::sys::signal::SigHandler::SigDfl) }.unwrap();
        let master = ClusterStore::setup(named(&name)).unwrap();
        master.set_raw("sid", b"session", Expiry::Default).unwrap();
        ready.notify();
        loop {
            std::thread::park();
        }
    });
    assert!(ready.wait(WAIT));
    assert!(Path::new(&shm_path(&name)).exists());
    kill(master.pid, signal).unwrap();
    assert_eq!(master.wait(WAIT), 128 + signal as i32, "the master did not die of {signal}");
    assert!(!Path::new(&shm_path(&name)).exists(), "{signal} left the named segment behind");
}

#[test]
fn sigterm_to_the_master_removes_its_named_segment() {
    master_dies_of(Signal::SIGTERM);
}

#[test]
fn sigint_to_the_master_removes_its_named_segment() {
    master_dies_of(Signal::SIGINT);
}

#[test]
fn a_worker_killed_by_sigterm_never_removes_the_segment() {
    let _serial = serial();
    let name = unique_name("worker-term");
    let master = ClusterStore::setup(named(&name)).unwrap();
    master.set_raw("sid", b"session", Expiry::Default).unwrap();
    let ready = Signal1::new();
    let mut worker = spawn(|| {
        let store = ClusterStore::open(&name).unwrap();
        let ok = store.get_raw("sid").unwrap().is_some();
        ready.notify();
        loop {
            std::thread::park();
            if !ok {
                return 1;
            }
        }
    });
    assert!(ready.wait(WAIT));
    kill(worker.pid, Signal::SIGTERM).unwrap();
    assert_eq!(worker.wait(WAIT), 128 + Signal::SIGTERM as i32);
    assert!(Path::new(&shm_path(&name)).exists(), "a worker removed the segment");
    assert_eq!(master.get_raw("sid").unwrap().as_deref(), Some(&b"session"[..]));
    drop(master);
    assert!(!Path::new(&shm_path(&name)).exists(), "dropping the Master removes it");
}

#[test]
fn workers_keep_serving_after_the_master_dies() {
    let _serial = serial();
    // Orphaned workers are re-parented to this process, which can then reap them.
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer flag and no pointers.
    assert_eq!(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }, 0);
    let name = unique_name("orphans");
    let (worker_ready, master_gone) = (Signal1::new(), Signal1::new());
    let (pid_read, pid_write) = nix::unistd::pipe().unwrap();
    let mut master = spawn(|| {
        let master = ClusterStore::setup(common::config(&name)).unwrap();
        master.set_raw("before", b"set by the master", Expiry::Default).unwrap();
        let worker = spawn(|| {
            let store = ClusterStore::open(&name).unwrap();
            let alive_before = store.master_alive();
            worker_ready.notify();
            if !master_gone.wait(WAIT) {
                return 2;
            }
            let ok = alive_before
                && !store.master_alive()
                && store.get_raw("before").unwrap().as_deref() == Some(&b"set by the master"[..])
                && store.set_raw("after", b"set by an orphan", Expiry::Default).is_ok()
                && store.get_raw("after").unwrap().as_deref() == Some(&b"set by an orphan"[..])
                && store.check_integrity().is_ok();
            i32::from(!ok)
        });
        let _ = nix::unistd::write(&pid_write, &(worker.pid.as_raw() as u32).to_le_bytes());
        std::mem::forget(worker);
        loop {
            std::thread::park();
        }
    });
    let mut pid = [0u8; 4];
    assert_eq!(nix::unistd::read(&pid_read, &mut pid).unwrap(), 4);
    let mut worker = Child::adopt(u32::from_le_bytes(pid));
    assert!(worker_ready.wait(WAIT));
    assert_eq!(master.kill(), 128 + 9);
    master_gone.notify();
    assert_eq!(worker.wait(WAIT), 0, "the orphaned worker could not serve");
}

//! What the test files share. The store fixtures: a small `Config` each test adjusts, a store
//! set up under a fresh name, a snapshot of a store's contents, a session id one byte too
//! long, and a named segment's path in /dev/shm. For tests that fork real worker processes:
//! fork a closure, wait with a timeout (pidfd + poll, no sleeping), signal the parent through
//! a pipe, and a guard that SIGKILLs and reaps any child a failing test leaves behind.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cluster_session_store::{ClusterStore, Config, Master, MAX_KEY_LEN};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, pipe, ForkResult, Pid};

/// Upper bound for any wait in these tests.
pub const WAIT: Duration = Duration::from_secs(60);

/// A lifetime no test outlives.
pub const LONG: Duration = Duration::from_secs(3600);

/// A sweep interval no test outlives: the master's coordinator never sweeps during the test
/// (each test that sets it says why it must not).
pub const NO_SWEEP: Duration = Duration::from_secs(3600);

/// The largest value [`config`] accepts.
pub const MAX_VALUE_SIZE: usize = 4096;

/// The small store most tests use, named `name`: 1 MiB in four shards, values up to
/// [`MAX_VALUE_SIZE`], the other settings the defaults. A test adjusts it with its own
/// builder calls (`.shards(1)`, `.eviction(..)`, `.backing(..)`, `.sweep_interval(..)`).
pub fn config(name: &str) -> Config {
    Config::new().name(name).memory_size(1 << 20).shards(4).max_value_size(MAX_VALUE_SIZE)
}

/// Sets up [`config`] under a fresh name made from `prefix`; returns the master and the name.
pub fn setup(prefix: &str) -> (Master, String) {
    setup_with(prefix, |config| config)
}

/// [`setup`] with [`config`] adjusted by `tweak`.
pub fn setup_with(prefix: &str, tweak: impl FnOnce(Config) -> Config) -> (Master, String) {
    let name = unique_name(prefix);
    (ClusterStore::setup(tweak(config(&name))).expect("setup"), name)
}

/// Every session of `store` (expired ones excluded), by id.
pub fn snapshot(store: &ClusterStore) -> BTreeMap<String, Vec<u8>> {
    store.all_raw().unwrap().into_iter().collect()
}

/// A session id one byte over `MAX_KEY_LEN`: every operation refuses it with `KeyTooLong`.
pub fn too_long_key() -> String {
    "k".repeat(MAX_KEY_LEN + 1)
}

/// Where the named segment (`Backing::Named`) of store `name` lives.
pub fn shm_path(name: &str) -> String {
    format!("/dev/shm/cluster-session-store.{name}")
}

/// A file a test leaves behind (a kept segment, a snapshot), removed when the test ends
/// however it ends.
pub struct RemovedAtEnd(pub std::path::PathBuf);

impl Drop for RemovedAtEnd {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

static SERIAL: Mutex<()> = Mutex::new(());

/// Tests of one file that fork run one at a time: a fork while another test thread holds a
/// lock (the registry's, stdout's, the allocator's) could leave the child waiting forever.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A forked child, SIGKILLed and reaped on drop unless already reaped.
pub struct Child {
    pub pid: Pid,
    reaped: bool,
}

/// Forks; the child runs `body` and exits with its return value (101 if it panics), without
/// returning into the test harness or running its destructors.
pub fn spawn(body: impl FnOnce() -> i32) -> Child {
    // SAFETY: the child only runs `body` and then `_exit`s.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or(101);
            // SAFETY: _exit ends the process at once; nothing of the harness runs in the child.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => Child { pid: child, reaped: false },
    }
}

impl Child {
    /// Takes charge of a child started otherwise (e.g. by `std::process::Command`).
    pub fn adopt(pid: u32) -> Child {
        Child { pid: Pid::from_raw(pid as i32), reaped: false }
    }

    /// Waits up to `timeout` for the child to exit; returns its exit code (128 + signal
    /// if killed). Panics on timeout (the drop then kills it).
    pub fn wait(&mut self, timeout: Duration) -> i32 {
        let fd = pidfd(self.pid);
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ms = PollTimeout::try_from(left.as_millis().min(60_000) as i32).unwrap();
            match poll(&mut fds, ms) {
                Ok(0) if left.is_zero() => {
                    panic!("child {} still running after {timeout:?}", self.pid)
                }
                Ok(0) => continue,
                Ok(_) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => panic!("poll: {e}"),
            }
        }
        self.reaped = true;
        match waitpid(self.pid, None).expect("waitpid") {
            WaitStatus::Exited(_, code) => code,
            WaitStatus::Signaled(_, sig, _) => 128 + sig as i32,
            other => panic!("unexpected wait status {other:?}"),
        }
    }

    /// SIGKILLs the child and reaps it; returns 128 + 9 if the kill was what ended it.
    pub fn kill(&mut self) -> i32 {
        let _ = kill(self.pid, Signal::SIGKILL);
        self.wait(WAIT)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = kill(self.pid, Signal::SIGKILL);
            let _ = waitpid(self.pid, None);
        }
    }
}

fn pidfd(pid: Pid) -> OwnedFd {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    assert!(fd >= 0, "pidfd_open: {}", std::io::Error::last_os_error());
    // SAFETY: fd is a fresh descriptor owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// A one-way pipe for a child to tell the parent it reached a point.
pub struct Signal1 {
    read: OwnedFd,
    write: OwnedFd,
}

impl Signal1 {
    pub fn new() -> Self {
        let (read, write) = pipe().expect("pipe");
        Signal1 { read, write }
    }

    /// In the child: writes one byte.
    pub fn notify(&self) {
        let _ = nix::unistd::write(&self.write, &[1]);
    }

    /// Raw write end, for hooks that are plain `fn()`s.
    pub fn write_fd(&self) -> i32 {
        self.write.as_raw_fd()
    }

    /// In the parent: waits up to `timeout` for one byte; false on timeout.
    pub fn wait(&self, timeout: Duration) -> bool {
        let mut fds = [PollFd::new(self.read.as_fd(), PollFlags::POLLIN)];
        let ms = PollTimeout::try_from(timeout.as_millis().min(i32::MAX as u128) as i32).unwrap();
        if poll(&mut fds, ms).unwrap_or(0) == 0 {
            return false;
        }
        let mut byte = [0u8; 1];
        nix::unistd::read(&self.read, &mut byte).unwrap_or(0) == 1
    }
}

/// Waits until the wall clock is strictly past `instant` (by at least one millisecond, the
/// store's resolution): time passes by watching the clock, never by a guessed sleep. Panics
/// after 10 s.
pub fn wait_past(instant: std::time::SystemTime) {
    let target = instant + Duration::from_millis(1);
    let limit = Instant::now() + Duration::from_secs(10);
    while std::time::SystemTime::now() < target {
        assert!(Instant::now() < limit, "the clock did not reach {target:?} within 10 s");
        std::thread::yield_now();
    }
}

/// The store's clock moved forward in this test process (feature `fault-injection`), put
/// back when dropped: time passes for expiry without waiting, whatever the machine's load.
/// The offset is process-wide, so take `serial()` first and keep every test of the file under
/// it.
#[cfg(feature = "fault-injection")]
pub struct ClockJump;

#[cfg(feature = "fault-injection")]
impl ClockJump {
    pub fn forward(by: Duration) -> ClockJump {
        cluster_session_store::fault::shift_clock(by.as_millis() as i64);
        ClockJump
    }
}

#[cfg(feature = "fault-injection")]
impl Drop for ClockJump {
    fn drop(&mut self) {
        cluster_session_store::fault::reset_clock();
    }
}

/// A unique store name for this test process.
pub fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A value that proves its own integrity: writer, counter, payload, then a CRC of all that.
pub fn sealed(writer: u8, n: u32, len: usize) -> Vec<u8> {
    let mut v = vec![writer];
    v.extend_from_slice(&n.to_le_bytes());
    v.extend((0..len).map(|i| (i as u8).wrapping_mul(writer).wrapping_add(n as u8)));
    let crc = crc32(&v);
    v.extend_from_slice(&crc.to_le_bytes());
    v
}

/// Whether `v` is a sealed value written by one of the first 64 writers, intact.
pub fn unsealed_ok(v: &[u8]) -> bool {
    v.len() >= 9 && crc32(&v[..v.len() - 4]).to_le_bytes() == v[v.len() - 4..] && v[0] < 64
}

/// The counter a sealed value carries.
pub fn sealed_counter(v: &[u8]) -> u32 {
    u32::from_le_bytes(v[1..5].try_into().unwrap())
}

/// CRC-32 (IEEE) of the test's own values (crc32fast: quick enough that workers spend their
/// time in the store, not in sealing).
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// A small deterministic generator (xorshift64*), so a run can be replayed from its seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Where [`park`] reports: the write end of a pipe, set in the child before arming the hook.
pub static PARK_FD: AtomicI32 = AtomicI32::new(-1);

/// A fault hook: tell the parent through `PARK_FD` that this process is parked (inside a
/// shard lock, at the armed fault point), then wait to be killed.
pub fn park() {
    let fd = PARK_FD.load(Ordering::SeqCst);
    // SAFETY: writes one byte from a valid buffer to a pipe fd this process owns.
    unsafe { libc::write(fd, [1u8].as_ptr().cast(), 1) };
    loop {
        // SAFETY: pause has no preconditions; it returns only on a signal.
        unsafe { libc::pause() };
    }
}

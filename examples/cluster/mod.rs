//! The master half of the examples, shared by every framework: it is what the seed's
//! `cluster.isMaster` branch does.
//!
//! 1. `ClusterStore::setup()`, before any fork and before any async runtime: workers find the
//!    store through memory `fork()` copies, and a runtime's threads would not survive the fork.
//! 2. One listening socket per worker slot, bound here on one port with `SO_REUSEPORT` (every
//!    slot binds the port) and `SO_REUSEADDR` (the connections it leaves in TIME_WAIT do not
//!    keep the next server off the port). The kernel spreads new connections over the slots'
//!    sockets (so one client's requests reach several workers, which is what shows the
//!    sessions are shared), and a slot's socket belongs to the master: connections that reach
//!    it while its worker is being replaced wait in its queue for the new worker.
//! 3. Forks one worker per CPU (`WORKERS` overrides), logs each online and each exit, tells
//!    the store a worker exited (a shard it died holding is repaired at once), and starts
//!    another in its slot:
//!    - at once, keeping the slot's socket and its queue, when the worker was stopped or
//!      killed from outside: exit status 0 (our workers exit 0 after a SIGTERM or SIGINT) or
//!      a signal that is not a crash (SIGKILL from an operator or the OOM killer, SIGTERM);
//!    - when the worker failed on its own (a non-zero exit status, or SIGSEGV, SIGBUS, SIGILL,
//!      SIGFPE, SIGABRT, SIGSYS, SIGTRAP) within 10 s of starting, the first such failure in a
//!      row is restarted at once and each further one after twice the last delay, from
//!      100 ms (`RESTART_DELAY_MS`) up to 10 s. While it waits, the slot's socket is closed,
//!      so that the kernel sends new connections to the other slots only (connections queued
//!      on it then are reset), and a new one is bound when the worker starts;
//!    - never, when a worker exits with a non-zero status within 1 s of starting and no
//!      worker of its slot has run longer (a configuration error: it would only fail again);
//!      the master exits with an error when that happens to every slot.
//! 4. On SIGTERM or SIGINT it closes its copies of the sockets, sends the workers SIGTERM
//!    (each stops accepting, finishes the requests it has begun and exits), gives them 10 s
//!    (`SHUTDOWN_GRACE_MS` overrides), SIGKILLs any left, and drops the store.
//!
//! `STORE_NAME=<name>` keeps the sessions across restarts: the store is the named segment
//! `/dev/shm/cluster-session-store.<name>` (`Backing::Named`), kept when the master stops or
//! dies (`Config::keep_segment`) and adopted by the next master started with that name, with
//! every session. Without it, the store is an anonymous memfd that ends with the master.
//!
//! SIGUSR2 hands the service over to a new master with no downtime (a new build, say: the
//! master re-executes its own executable file). The new master gets the listening sockets as
//! inherited descriptors (`LISTEN_FDS`), the store's memfd too unless it is named
//! (`STORE_FD`), and the old master's pid (`HANDOVER_FROM`), adopts the store while the old
//! one still runs (`Config::take_over`),
//! starts its workers on the same sockets, and then sends the old master SIGTERM: the old
//! workers stop accepting, finish their requests and exit, and the old master with them.
//! Connections keep queueing on the same sockets throughout, so none is refused.
//!
//! `SNAPSHOT=<path>` keeps them across reboots too: the master restores the snapshot file at
//! start (if it exists) and writes it when it stops (`Config::snapshot`), and every minute.
//!
//! `REDIS_URL=redis://host:port` makes the service one host of many: Redis or Valkey holds
//! the sessions, and this host's store is the cache in front of it (`Config::redis` in the
//! master, whose tracker applies Redis's invalidations; `RedisStore` in every worker).
//!
//! `PORT` picks the port (default 8080; 0 lets the kernel choose, and the log says which).
//! `MAX_SESSION_BYTES` sets the largest session the store accepts (`Config::max_value_size`,
//! default 64 KiB); a request whose session would be larger is answered 500.

use std::error::Error;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use cluster_session_store::{
    Backing, ClusterStore, Config, Expiry, RedisConfig, RedisStore, StoreError,
};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use socket2::{Domain, Socket, Type};

/// What a worker runs, in the forked child: it owns its slot's listener. It should return
/// `Ok` (exit status 0) after a SIGTERM or SIGINT, once its requests in flight are answered.
/// It starts with those two blocked (see `stop_signals`).
pub type Worker<'a> = &'a dyn Fn(usize, TcpListener) -> Result<(), Box<dyn Error>>;

/// SIGTERM and SIGINT, which stop a worker. A worker starts with them blocked, so that one
/// sent while it starts stays pending instead of killing it: it unblocks them once it
/// handles them (or reads them from a signalfd, blocked).
pub fn stop_signals() -> SigSet {
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals
}

/// A slot whose workers have all run less than this is retired when one exits with a
/// non-zero status.
const FAILED_AT_START: Duration = Duration::from_secs(1);
/// A worker that fails on its own sooner than this after it started is a quick failure. The
/// first in a row is restarted at once; each further one waits twice as long as the last,
/// from `RESTART_DELAY_MS` (default `RESTART_DELAY_MIN`) up to `RESTART_DELAY_MAX`, so that
/// a worker that crashes at every start does not spin the master.
const STABLE: Duration = Duration::from_secs(10);
const RESTART_DELAY_MIN: Duration = Duration::from_millis(100);
const RESTART_DELAY_MAX: Duration = Duration::from_secs(10);
/// How long a slot waits before trying again when its worker could not be started (no
/// socket, or `fork` failed).
const START_RETRY: Duration = Duration::from_secs(1);
/// How long workers get to exit after SIGTERM before the master sends SIGKILL, unless
/// `SHUTDOWN_GRACE_MS` says otherwise.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How a worker ended, as far as restarting it goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    /// Exit status 0, or a signal that is not a crash: stopped or killed from outside.
    Stopped,
    /// A non-zero exit status.
    Failed,
    /// A crash signal.
    Crashed,
}

impl End {
    fn of(signal: Signal) -> End {
        use Signal::*;
        match signal {
            SIGSEGV | SIGBUS | SIGILL | SIGFPE | SIGABRT | SIGSYS | SIGTRAP => End::Crashed,
            _ => End::Stopped,
        }
    }
}

struct Slot {
    id: usize,
    /// The running worker; `None` while its start waits for `due`.
    pid: Option<Pid>,
    started: Instant,
    due: Option<Instant>,
    /// Quick failures in a row (see `STABLE`).
    quick_failures: u32,
    /// A worker of this slot ran for `FAILED_AT_START` or longer.
    proven: bool,
    /// `None` while the slot waits out a restart delay, and once the master is stopping.
    listener: Option<TcpListener>,
}

impl Slot {
    /// Forks this slot's worker. `all`: the descriptors the child closes (see `spawn`).
    fn start(
        &mut self,
        all: &[RawFd],
        signals: &SigSet,
        worker: Worker<'_>,
    ) -> Result<(), Box<dyn Error>> {
        let listener = self.listener.as_ref().ok_or("the slot has no socket")?;
        self.pid = Some(spawn(self.id, listener, all, signals, worker)?);
        self.started = Instant::now();
        self.due = None;
        Ok(())
    }

    /// After its worker ended having run `lived`: how long to wait before starting another;
    /// `None` if the slot is to be retired.
    fn restart_delay(&mut self, end: End, lived: Duration, first: Duration) -> Option<Duration> {
        let proven = self.proven;
        self.proven |= lived >= FAILED_AT_START;
        if lived >= STABLE {
            self.quick_failures = 0;
        }
        match end {
            End::Stopped => return Some(Duration::ZERO),
            End::Failed if !proven && lived < FAILED_AT_START => return None,
            End::Failed | End::Crashed => {}
        }
        if lived < STABLE {
            self.quick_failures = self.quick_failures.saturating_add(1);
        }
        Some(match self.quick_failures {
            0 | 1 => Duration::ZERO,
            n => first.saturating_mul(1 << (n - 2).min(16)).min(RESTART_DELAY_MAX.max(first)),
        })
    }
}

/// `name`'s value parsed, or `default` if it is not set.
fn setting<T: FromStr>(name: &str, default: T) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(value) => value.parse().map_err(|e| format!("{name}={value}: {e}")),
        Err(_) => Ok(default),
    }
}

/// The store's namespace: `STORE_NAME`, or the default one.
fn store_name() -> String {
    std::env::var("STORE_NAME").unwrap_or_else(|_| cluster_session_store::DEFAULT_NAME.into())
}

/// In a worker: the store its master set up.
pub fn store() -> Result<ClusterStore, cluster_session_store::AttachError> {
    ClusterStore::open(&store_name())
}

/// The Redis tier `REDIS_URL` asks for, if it does.
pub fn redis() -> Result<Option<RedisConfig>, Box<dyn Error>> {
    match std::env::var("REDIS_URL") {
        Ok(url) => Ok(Some(RedisConfig::new(&url)?)),
        Err(_) => Ok(None),
    }
}

/// The worker's store: the Redis tier over this host's store with `REDIS_URL`, the store
/// alone without. The frameworks' adapters take either; `prefork` calls these methods.
#[derive(Clone)]
pub enum Sessions {
    Local(ClusterStore),
    Redis(RedisStore),
}

// Used by `prefork`; each example compiles this module on its own.
#[allow(dead_code)]
impl Sessions {
    pub fn get<T: serde::de::DeserializeOwned>(&self, sid: &str) -> Result<Option<T>, StoreError> {
        match self {
            Sessions::Local(store) => store.get(sid),
            Sessions::Redis(store) => store.get(sid),
        }
    }

    pub fn add<T: serde::Serialize>(&self, sid: &str, value: &T) -> Result<bool, StoreError> {
        match self {
            Sessions::Local(store) => store.add(sid, value, Expiry::Default),
            Sessions::Redis(store) => store.add(sid, value, Expiry::Default),
        }
    }

    pub fn replace<T: serde::Serialize>(&self, sid: &str, value: &T) -> Result<bool, StoreError> {
        match self {
            Sessions::Local(store) => store.replace(sid, value, Expiry::Default),
            Sessions::Redis(store) => store.replace(sid, value, Expiry::Default),
        }
    }

    pub fn destroy(&self, sid: &str) -> Result<bool, StoreError> {
        match self {
            Sessions::Local(store) => store.destroy(sid),
            Sessions::Redis(store) => store.destroy(sid),
        }
    }
}

/// In a worker: [`Sessions`] as `REDIS_URL` says.
pub fn sessions() -> Result<Sessions, Box<dyn Error>> {
    Ok(match redis()? {
        Some(config) => Sessions::Redis(RedisStore::new(store()?, config)),
        None => Sessions::Local(store()?),
    })
}

/// Runs the master until SIGTERM or SIGINT.
pub fn run(worker: Worker<'_>) -> Result<(), Box<dyn Error>> {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let workers: usize = setting("WORKERS", cpus)?;
    if workers == 0 {
        return Err("WORKERS=0: at least one worker is needed to serve".into());
    }
    let port: u16 = setting("PORT", 8080)?;
    let ms = |d: Duration| d.as_millis() as u64;
    let grace = Duration::from_millis(setting("SHUTDOWN_GRACE_MS", ms(SHUTDOWN_GRACE))?);
    let first_delay = Duration::from_millis(setting("RESTART_DELAY_MS", ms(RESTART_DELAY_MIN))?);
    let mut config = Config::new().default_ttl(Duration::from_secs(3600));
    let named = std::env::var_os("STORE_NAME").is_some();
    if named {
        config = config.name(&store_name()).backing(Backing::Named).keep_segment(true);
    }
    let handover_from: Option<u32> = match std::env::var("HANDOVER_FROM") {
        Ok(pid) => Some(pid.parse().map_err(|e| format!("HANDOVER_FROM={pid}: {e}"))?),
        Err(_) => None,
    };
    if let Some(pid) = handover_from {
        config = config.take_over(pid);
        if !named {
            let fd = std::env::var("STORE_FD").map_err(|_| "HANDOVER_FROM needs STORE_FD")?;
            let fd = fd.parse().map_err(|e| format!("STORE_FD={fd}: {e}"))?;
            config = config.backing(Backing::Inherited(fd));
        }
    }
    if let Some(path) = std::env::var_os("SNAPSHOT") {
        config = config.snapshot(path).snapshot_interval(Duration::from_secs(60));
    }
    if let Some(redis) = redis()? {
        config = config.redis(redis);
    }
    if let Ok(bytes) = std::env::var("MAX_SESSION_BYTES") {
        let bytes = bytes.parse().map_err(|e| format!("MAX_SESSION_BYTES={bytes}: {e}"))?;
        config = config.max_value_size(bytes);
    }

    // Blocked so that they are read from `signal_fd` below (each child unblocks them), and
    // blocked before `setup()` starts the coordinator thread, which inherits the mask: a
    // thread with them unblocked would take SIGTERM's default action and end the master.
    let mut signals = SigSet::empty();
    for s in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT, Signal::SIGUSR2] {
        signals.add(s);
    }
    signals.thread_block()?;
    let signal_fd = SignalFd::with_flags(&signals, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;

    let master = ClusterStore::setup(config)?;
    let mut listeners = inherited_listeners()?;
    if listeners.is_empty() {
        listeners.push(listen(SocketAddr::from(([127, 0, 0, 1], port)))?);
    }
    let addr = listeners[0].local_addr()?;
    while listeners.len() < workers {
        listeners.push(listen(addr)?);
    }
    if let Some(restored) = master.restored() {
        let pid = std::process::id();
        println!("master {pid}: {} sessions restored from the snapshot", restored.sessions);
    }
    if master.name() != cluster_session_store::DEFAULT_NAME {
        let sessions = master.length()?;
        let pid = std::process::id();
        println!("master {pid}: store {} kept across restarts, {sessions} sessions", master.name());
    }
    println!("master {}: listening on http://{addr}/hello", std::process::id());

    let mut slots: Vec<Slot> = (1..)
        .zip(listeners)
        .map(|(id, listener)| Slot {
            id,
            pid: None,
            started: Instant::now(),
            due: Some(Instant::now()),
            quick_failures: 0,
            proven: false,
            listener: Some(listener),
        })
        .collect();
    // When the master began stopping the workers, and when it stops waiting for them.
    let mut stopping: Option<Instant> = None;
    // The master this one takes over from, until its workers run; the one it hands over to.
    let mut predecessor = handover_from.map(|pid| Pid::from_raw(pid as i32));
    let mut successor: Option<Pid> = None;
    loop {
        let now = Instant::now();
        if stopping.is_none() {
            let due = |s: &Slot| s.due.is_some_and(|due| due <= now);
            // Sockets first, so that every child forked below closes all of them.
            for slot in slots.iter_mut().filter(|s| due(s) && s.listener.is_none()) {
                match listen(addr) {
                    Ok(listener) => slot.listener = Some(listener),
                    Err(e) => {
                        println!(
                            "worker {}: cannot listen ({e}); trying in {START_RETRY:?}",
                            slot.id
                        );
                        slot.due = Some(now + START_RETRY);
                    }
                }
            }
            let mut all: Vec<RawFd> =
                slots.iter().filter_map(|s| s.listener.as_ref().map(|l| l.as_raw_fd())).collect();
            all.push(signal_fd.as_raw_fd());
            for slot in slots.iter_mut().filter(|s| due(s)) {
                if let Err(e) = slot.start(&all, &signals, worker) {
                    println!("worker {}: cannot start ({e}); trying in {START_RETRY:?}", slot.id);
                    slot.due = Some(now + START_RETRY);
                }
            }
            if slots.is_empty() {
                return Err("every worker failed at start".into());
            }
            if let Some(old) = predecessor.take() {
                // This master's workers accept on the same sockets now: the old ones may go.
                println!("master {}: took over from master {old}", std::process::id());
                let _ = kill(old, Signal::SIGTERM);
            }
        } else if slots.iter().all(|s| s.pid.is_none()) {
            println!("{}", master.stats()?);
            drop(master);
            println!("master: workers stopped, store released");
            return Ok(());
        }
        let wake = match stopping {
            Some(deadline) => Some(deadline),
            None => slots.iter().filter_map(|s| s.due).min(),
        };
        match next_signal(&signal_fd, wake.map(|at| at.saturating_duration_since(now)))? {
            Some(Signal::SIGCHLD) => loop {
                let (pid, how, end) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(pid, code)) => {
                        let end = if code == 0 { End::Stopped } else { End::Failed };
                        (pid, format!("exited with status {code}"), end)
                    }
                    Ok(WaitStatus::Signaled(pid, sig, _)) => {
                        (pid, format!("was killed by {sig:?}"), End::of(sig))
                    }
                    Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                    Ok(_) => continue,
                    Err(e) => return Err(e.into()),
                };
                if successor == Some(pid) {
                    successor = None;
                    println!("master: the new master (pid {pid}) {how}; this one serves on");
                    continue;
                }
                let Some(at) = slots.iter().position(|s| s.pid == Some(pid)) else { continue };
                // Repairs at once any shard the worker died holding.
                let repaired = master.worker_exited(pid.as_raw() as u32);
                let slot = &mut slots[at];
                slot.pid = None;
                println!("worker {} (pid {pid}) {how}; {repaired} shards repaired", slot.id);
                if stopping.is_some() {
                    continue;
                }
                let Some(delay) = slot.restart_delay(end, slot.started.elapsed(), first_delay)
                else {
                    println!("worker {} failed at start; not restarting it", slot.id);
                    slots.remove(at);
                    continue;
                };
                if !delay.is_zero() {
                    // Nobody would accept the connections the kernel queued on it meanwhile.
                    slot.listener = None;
                    println!(
                        "worker {}: {} quick failures in a row; restarting it in {delay:?}, \
                         its socket closed meanwhile",
                        slot.id, slot.quick_failures
                    );
                }
                slot.due = Some(Instant::now() + delay);
            },
            Some(Signal::SIGUSR2) if stopping.is_none() && successor.is_none() => {
                let sockets: Vec<RawFd> = slots
                    .iter()
                    .filter_map(|s| s.listener.as_ref().map(|l| l.as_raw_fd()))
                    .collect();
                let memfd = master.memfd().map(|fd| fd.as_raw_fd());
                match hand_over(&sockets, memfd) {
                    Ok(pid) => {
                        println!("master: SIGUSR2, handing over to a new master (pid {pid})");
                        successor = Some(pid);
                    }
                    Err(e) => println!("master: SIGUSR2, but no new master could start: {e}"),
                }
            }
            Some(Signal::SIGUSR2) => {}
            Some(signal) if stopping.is_none() => {
                println!("master: {signal:?}, stopping the workers");
                for slot in &mut slots {
                    // The workers' own copies keep each socket open until they stop accepting.
                    slot.listener = None;
                    slot.due = None;
                    if let Some(pid) = slot.pid {
                        let _ = kill(pid, Signal::SIGTERM);
                    }
                }
                stopping = Some(Instant::now() + grace);
            }
            // A second SIGTERM or SIGINT while stopping changes nothing.
            Some(_) => {}
            None => {
                if stopping.is_some_and(|deadline| Instant::now() >= deadline) {
                    for slot in &mut slots {
                        let Some(pid) = slot.pid.take() else { continue };
                        println!(
                            "worker {} (pid {pid}) still running after {grace:?}: SIGKILL",
                            slot.id
                        );
                        let _ = kill(pid, Signal::SIGKILL);
                        // SIGKILL cannot be caught: this wait ends once the kernel has
                        // torn the process down.
                        let _ = waitpid(pid, None);
                        master.worker_exited(pid.as_raw() as u32);
                    }
                }
            }
        }
    }
}

/// Starts a new master from this one's executable file, with this one's arguments and
/// environment, the listening `sockets` inherited (`LISTEN_FDS`), the store's `memfd` too if
/// it is one (`STORE_FD`), and `HANDOVER_FROM` naming this master. Its output goes where this
/// one's does.
fn hand_over(sockets: &[RawFd], memfd: Option<RawFd>) -> std::io::Result<Pid> {
    let list: Vec<String> = sockets.iter().map(|fd| fd.to_string()).collect();
    let mut command = std::process::Command::new(std::env::current_exe()?);
    command
        .args(std::env::args_os().skip(1))
        .env("HANDOVER_FROM", std::process::id().to_string())
        .env("LISTEN_FDS", list.join(","));
    if let Some(fd) = memfd {
        command.env("STORE_FD", fd.to_string());
    }
    let inherit: Vec<RawFd> = sockets.iter().copied().chain(memfd).collect();
    // SAFETY: runs in the forked child before exec, and only calls fcntl, which is
    // async-signal-safe, on descriptors the child has (copies of this process's).
    unsafe {
        command.pre_exec(move || {
            for &fd in &inherit {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = command.spawn()?;
    Ok(Pid::from_raw(child.id() as i32))
}

/// The listening sockets a master handing over passed in `LISTEN_FDS`, each marked
/// close-on-exec again.
fn inherited_listeners() -> Result<Vec<TcpListener>, Box<dyn Error>> {
    let Ok(list) = std::env::var("LISTEN_FDS") else { return Ok(Vec::new()) };
    let mut listeners = Vec::new();
    for fd in list.split(',').filter(|f| !f.is_empty()) {
        let fd: RawFd = fd.parse().map_err(|e| format!("LISTEN_FDS={list}: {e}"))?;
        // SAFETY: the master that started this process left these descriptors open for it
        // (and nothing else here owns them): each is a listening socket, owned from now on
        // by the `TcpListener`.
        let listener = unsafe { <TcpListener as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        nix::fcntl::fcntl(
            &listener,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// The next of the blocked signals, waiting up to `timeout` (for ever if `None`); `None` if
/// none came in time.
fn next_signal(signal_fd: &SignalFd, timeout: Option<Duration>) -> nix::Result<Option<Signal>> {
    let mut info = signal_fd.read_signal()?;
    if info.is_none() {
        // Rounded up to the next millisecond, so that a wait for a deadline ends after it.
        let timeout = match timeout {
            Some(t) => {
                PollTimeout::try_from(t + Duration::from_millis(1)).unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };
        match poll(&mut [PollFd::new(signal_fd.as_fd(), PollFlags::POLLIN)], timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
        info = signal_fd.read_signal()?;
    }
    Ok(info.and_then(|info| Signal::try_from(info.ssi_signo as i32).ok()))
}

/// A listening socket with `SO_REUSEPORT`, so that every slot can bind the same port, and
/// `SO_REUSEADDR`, so that the connections it accepted, which stay in TIME_WAIT for a minute
/// after they close, do not keep the next server from binding the port once the master is
/// gone (the kernel lets a bind share a port with TIME_WAIT connections only if both the new
/// socket and the listener that accepted them have the option).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Forks a worker that serves `listener`. The child closes its copies of every slot's
/// socket and of the master's signalfd (`all`), keeping its own socket through `listener`:
/// a slot's socket must be open only in the master and that slot's worker, or a socket the
/// master closes (a slot retired, or waiting out a restart delay) would stay in the
/// `SO_REUSEPORT` group, held open by other workers, and keep receiving connections nobody
/// accepts.
fn spawn(
    id: usize,
    listener: &TcpListener,
    all: &[RawFd],
    signals: &SigSet,
    worker: Worker<'_>,
) -> Result<Pid, Box<dyn Error>> {
    let listener = listener.try_clone()?;
    let master = nix::unistd::getpid();
    // SAFETY: the child runs only `child` and exits; the store's coordinator thread is
    // parked at fork by the store's fork gate, so no lock it holds is copied held.
    match unsafe { fork() }? {
        ForkResult::Parent { child } => {
            println!("worker {id} (pid {child}) is online");
            Ok(child)
        }
        ForkResult::Child => {
            for &fd in all {
                // Our own slot's socket is served through `listener`, a separate descriptor.
                let _ = nix::unistd::close(fd);
            }
            // SIGCHLD only: the worker unblocks `stop_signals()` once it handles them.
            let mut unblock = *signals;
            for s in stop_signals().iter() {
                unblock.remove(s);
            }
            let _ =
                nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&unblock), None);
            // A worker must not outlive its master: it would hold the port and the store.
            let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
            if nix::unistd::getppid() != master {
                std::process::exit(1);
            }
            let code = match worker(id, listener) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("worker {id}: {e}");
                    1
                }
            };
            std::process::exit(code)
        }
    }
}

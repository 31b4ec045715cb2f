//! The master half of the examples, shared by every framework: it is what the seed's
//! `cluster.isMaster` branch does.
//!
//! 1. `ClusterStore::setup()`, before any fork and before any async runtime: workers find the
//!    store through memory `fork()` copies, and a runtime's threads would not survive the fork.
//! 2. One listening socket per worker slot, bound here with `SO_REUSEPORT` on one port. The
//!    kernel spreads new connections over them (so one client's requests reach several
//!    workers, which is what shows the sessions are shared), and a slot's socket belongs to
//!    the master: connections that reach it while its worker is being replaced wait in its
//!    queue for the new worker instead of being refused.
//! 3. Forks one worker per CPU (`WORKERS` overrides), logs each online and each exit, tells
//!    the store a worker exited (a shard it died holding is repaired at once), and starts a
//!    new one in its slot: at once, or after a growing delay when workers of that slot keep
//!    dying within seconds of starting. On SIGTERM or SIGINT it sends the workers SIGTERM,
//!    gives them 10 s to exit (`SHUTDOWN_GRACE_MS` overrides), SIGKILLs any left, and drops
//!    the store.
//!
//! `PORT` picks the port (default 8080; 0 lets the kernel choose, and the log says which).

use std::error::Error;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::{Duration, Instant};

use cluster_session_store::{ClusterStore, Config};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use socket2::{Domain, Socket, Type};

/// What a worker runs, in the forked child: it owns its slot's listener.
pub type Worker<'a> = &'a dyn Fn(usize, TcpListener) -> Result<(), Box<dyn Error>>;

/// A worker that fails this soon after starting is not restarted (it would only fail again).
const FAILED_AT_START: Duration = Duration::from_secs(1);
/// A worker that dies sooner than this after it started counts as a quick death. The first
/// is restarted at once; each further one in a row waits twice as long as the last, from
/// `RESTART_DELAY_MIN` up to `RESTART_DELAY_MAX`, so that a worker killed at every start
/// (out of memory, a crashing request retried by a client) does not spin the master.
const STABLE: Duration = Duration::from_secs(10);
const RESTART_DELAY_MIN: Duration = Duration::from_millis(100);
const RESTART_DELAY_MAX: Duration = Duration::from_secs(10);
/// How long workers get to exit after SIGTERM before the master sends SIGKILL, unless
/// `SHUTDOWN_GRACE_MS` says otherwise.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

struct Slot {
    id: usize,
    /// The running worker; `None` while its restart waits for `due`.
    pid: Option<Pid>,
    started: Instant,
    due: Option<Instant>,
    /// Quick deaths in a row (see `STABLE`).
    quick_deaths: u32,
    listener: TcpListener,
}

impl Slot {
    /// Forks this slot's worker. `all`: the descriptors the child closes (see `spawn`).
    fn start(
        &mut self,
        all: &[RawFd],
        signals: &SigSet,
        worker: Worker<'_>,
    ) -> Result<(), Box<dyn Error>> {
        self.pid = Some(spawn(self.id, &self.listener, all, signals, worker)?);
        self.started = Instant::now();
        self.due = None;
        Ok(())
    }

    /// After the worker died having run `lived`: how long to wait before starting another.
    fn restart_delay(&mut self, lived: Duration) -> Duration {
        self.quick_deaths = if lived < STABLE { self.quick_deaths.saturating_add(1) } else { 0 };
        match self.quick_deaths {
            0 | 1 => Duration::ZERO,
            n => RESTART_DELAY_MIN.saturating_mul(1 << (n - 2).min(16)).min(RESTART_DELAY_MAX),
        }
    }
}

/// Runs the master until SIGTERM or SIGINT.
pub fn run(worker: Worker<'_>) -> Result<(), Box<dyn Error>> {
    let workers: usize = match std::env::var("WORKERS") {
        Ok(n) => n.parse().map_err(|e| format!("WORKERS={n}: {e}"))?,
        Err(_) => std::thread::available_parallelism().map_or(2, |n| n.get()),
    };
    if workers == 0 {
        return Err("WORKERS=0: at least one worker is needed to serve".into());
    }
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p.parse().map_err(|e| format!("PORT={p}: {e}"))?,
        Err(_) => 8080,
    };
    let grace = match std::env::var("SHUTDOWN_GRACE_MS") {
        Ok(ms) => {
            Duration::from_millis(ms.parse().map_err(|e| format!("SHUTDOWN_GRACE_MS={ms}: {e}"))?)
        }
        Err(_) => SHUTDOWN_GRACE,
    };

    // Blocked so that they are read from `signal_fd` below (each child unblocks them), and
    // blocked before `setup()` starts the coordinator thread, which inherits the mask: a
    // thread with them unblocked would take SIGTERM's default action and end the master.
    let mut signals = SigSet::empty();
    for s in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
        signals.add(s);
    }
    signals.thread_block()?;
    let signal_fd = SignalFd::with_flags(&signals, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;

    let master = ClusterStore::setup(Config::new().default_ttl(Duration::from_secs(3600)))?;
    let first = listen(SocketAddr::from(([127, 0, 0, 1], port)))?;
    let addr = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..workers {
        listeners.push(listen(addr)?);
    }
    println!("master {}: listening on http://{addr}/hello", std::process::id());

    let mut slots: Vec<Slot> = (1..)
        .zip(listeners)
        .map(|(id, listener)| Slot {
            id,
            pid: None,
            started: Instant::now(),
            due: Some(Instant::now()),
            quick_deaths: 0,
            listener,
        })
        .collect();
    // When the master began stopping the workers, and when it stops waiting for them.
    let mut stopping: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if stopping.is_none() {
            let mut all: Vec<RawFd> = slots.iter().map(|s| s.listener.as_raw_fd()).collect();
            all.push(signal_fd.as_raw_fd());
            for slot in slots.iter_mut().filter(|s| s.due.is_some_and(|due| due <= now)) {
                slot.start(&all, &signals, worker)?;
            }
            if slots.is_empty() {
                return Err("every worker failed at start".into());
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
                let (pid, how, by_signal) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(pid, code)) => {
                        (pid, format!("exited with status {code}"), false)
                    }
                    Ok(WaitStatus::Signaled(pid, sig, _)) => {
                        (pid, format!("was killed by {sig:?}"), true)
                    }
                    Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                    Ok(_) => continue,
                    Err(e) => return Err(e.into()),
                };
                let Some(at) = slots.iter().position(|s| s.pid == Some(pid)) else { continue };
                // Repairs at once any shard the worker died holding.
                let repaired = master.worker_exited(pid.as_raw() as u32);
                let slot = &mut slots[at];
                slot.pid = None;
                println!("worker {} (pid {pid}) {how}; {repaired} shards repaired", slot.id);
                let lived = slot.started.elapsed();
                if stopping.is_some() {
                    continue;
                }
                if !by_signal && lived < FAILED_AT_START {
                    println!("worker {} failed at start; not restarting it", slot.id);
                    slots.remove(at);
                    continue;
                }
                let delay = slot.restart_delay(lived);
                if !delay.is_zero() {
                    println!(
                        "worker {}: {} quick deaths in a row; restarting it in {delay:?}",
                        slot.id, slot.quick_deaths
                    );
                }
                slot.due = Some(Instant::now() + delay);
            },
            Some(signal) if stopping.is_none() => {
                println!("master: {signal:?}, stopping the workers");
                for slot in &mut slots {
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

/// A listening socket with `SO_REUSEPORT`, so that every slot can bind the same port.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Forks a worker that serves `listener`. The child closes its copies of every slot's
/// socket and of the master's signalfd (`all`), keeping its own socket through `listener`:
/// a slot's socket must be open only in the master and that slot's worker, or a slot the
/// master retires would stay in the `SO_REUSEPORT` group, held open by other workers, and
/// keep receiving connections nobody accepts.
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
            let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(signals), None);
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

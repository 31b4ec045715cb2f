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
//!    new one in its slot. On SIGTERM or SIGINT it stops the workers and drops the store.
//!
//! `PORT` picks the port (default 8080; 0 lets the kernel choose, and the log says which).

use std::error::Error;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use cluster_session_store::{ClusterStore, Config};
use nix::errno::Errno;
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use socket2::{Domain, Socket, Type};

/// What a worker runs, in the forked child: it owns its slot's listener.
pub type Worker<'a> = &'a dyn Fn(usize, TcpListener) -> Result<(), Box<dyn Error>>;

/// A worker that fails this soon after starting is not restarted (it would only fail again).
const FAILED_AT_START: Duration = Duration::from_secs(1);

struct Slot {
    id: usize,
    pid: Pid,
    started: Instant,
    listener: TcpListener,
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

    // Blocked so that they queue for `wait` below (each child unblocks them), and blocked
    // before `setup()` starts the coordinator thread, which inherits the mask: a thread with
    // them unblocked would take SIGTERM's default action and end the master at once.
    let mut signals = SigSet::empty();
    for s in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
        signals.add(s);
    }
    signals.thread_block()?;

    let master = ClusterStore::setup(Config::new().default_ttl(Duration::from_secs(3600)))?;
    let first = listen(SocketAddr::from(([127, 0, 0, 1], port)))?;
    let addr = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..workers {
        listeners.push(listen(addr)?);
    }
    println!("master {}: listening on http://{addr}/hello", std::process::id());

    let all: Vec<RawFd> = listeners.iter().map(AsRawFd::as_raw_fd).collect();
    let mut slots = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let pid = spawn(i + 1, &listener, &all, &signals, worker)?;
        slots.push(Slot { id: i + 1, pid, started: Instant::now(), listener });
    }
    while !slots.is_empty() {
        match signals.wait()? {
            Signal::SIGCHLD => loop {
                let (pid, how) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(pid, code)) => {
                        (pid, format!("exited with status {code}"))
                    }
                    Ok(WaitStatus::Signaled(pid, sig, _)) => {
                        (pid, format!("was killed by {sig:?}"))
                    }
                    Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                    Ok(_) => continue,
                    Err(e) => return Err(e.into()),
                };
                let Some(at) = slots.iter().position(|s| s.pid == pid) else { continue };
                let all: Vec<RawFd> = slots.iter().map(|s| s.listener.as_raw_fd()).collect();
                // Repairs at once any shard the worker died holding.
                let repaired = master.worker_exited(pid.as_raw() as u32);
                let slot = &mut slots[at];
                println!("worker {} (pid {pid}) {how}; {repaired} shards repaired", slot.id);
                if how.starts_with("exited") && slot.started.elapsed() < FAILED_AT_START {
                    println!("worker {} failed at start; not restarting it", slot.id);
                    slots.remove(at);
                    continue;
                }
                slot.pid = spawn(slot.id, &slot.listener, &all, &signals, worker)?;
                slot.started = Instant::now();
            },
            signal => {
                println!("master: {signal:?}, stopping the workers");
                for slot in &slots {
                    let _ = kill(slot.pid, Signal::SIGTERM);
                }
                for slot in &slots {
                    let _ = waitpid(slot.pid, None);
                }
                println!("{}", master.stats()?);
                drop(master);
                println!("master: workers stopped, store released");
                return Ok(());
            }
        }
    }
    Err("every worker failed at start".into())
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
/// socket (`all`) but its own: a slot's socket must be open only in the master and that
/// slot's worker, or a slot the master retires would stay in the `SO_REUSEPORT` group,
/// held open by other workers, and keep receiving connections nobody accepts.
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

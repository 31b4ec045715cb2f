//! The seed's example in Rust, with no web framework: the master sets up the store and
//! binds the port, then forks one worker per CPU (`WORKERS` overrides); every worker accepts
//! on the shared listener and answers `GET /hello` with
//! `{"msg":"Hello from worker N"}` on a session's first visit and
//! `{"msg":"Hello again from worker N"}` after, whichever worker served the first visit.
//! The master logs workers coming online and exiting, tells the store when one exits (so a
//! shard it died holding is repaired at once), respawns it, and on SIGTERM or SIGINT stops
//! the workers and exits (the store goes with it).
//!
//! Run: `cargo run --release --example prefork` then
//! `curl -c jar -b jar http://127.0.0.1:8080/hello` a few times.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use cluster_session_store::{ClusterStore, Config, Expiry};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Default)]
struct Session {
    visited: bool,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let workers: usize = match std::env::var("WORKERS") {
        Ok(n) => n.parse()?,
        Err(_) => std::thread::available_parallelism().map_or(2, |n| n.get()),
    };
    let port: u16 = std::env::var("PORT").map_or(Ok(8080), |p| p.parse())?;

    // The master: set up the store and bind the port before forking, as the seed's
    // README says, and before any thread or async runtime exists.
    let master = ClusterStore::setup(Config::new().default_ttl(Duration::from_secs(3600)))?;
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    println!("master {}: listening on http://127.0.0.1:{port}/hello", std::process::id());

    // Signals the master waits for; blocked so they queue until `wait`.
    let mut signals = SigSet::empty();
    for s in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
        signals.add(s);
    }
    signals.thread_block()?;

    let mut children: Vec<(usize, Pid)> = Vec::new();
    for id in 1..=workers {
        children.push((id, spawn_worker(id, &listener, &signals)?));
    }
    loop {
        match signals.wait()? {
            Signal::SIGCHLD => {
                while let WaitStatus::Exited(pid, _) | WaitStatus::Signaled(pid, _, _) =
                    waitpid(None, Some(WaitPidFlag::WNOHANG))?
                {
                    let Some(slot) = children.iter_mut().find(|(_, p)| *p == pid) else {
                        continue;
                    };
                    // Repairs at once any shard the worker died holding.
                    let repaired = master.worker_exited(pid.as_raw() as u32);
                    println!(
                        "worker {} died ({repaired} shards repaired); starting a new one",
                        slot.0
                    );
                    slot.1 = spawn_worker(slot.0, &listener, &signals)?;
                }
            }
            signal => {
                println!("master: {signal:?}, stopping the workers");
                for (_, pid) in &children {
                    let _ = nix::sys::signal::kill(*pid, Signal::SIGTERM);
                }
                for (_, pid) in &children {
                    let _ = waitpid(*pid, None);
                }
                println!("{}", master.stats()?);
                return Ok(());
            }
        }
    }
}

fn spawn_worker(id: usize, listener: &TcpListener, signals: &SigSet) -> nix::Result<Pid> {
    // SAFETY: the master is single-threaded here; the child only runs `worker` and exits.
    match unsafe { fork() }? {
        ForkResult::Parent { child } => {
            println!("worker {id} (pid {child}) is online");
            Ok(child)
        }
        ForkResult::Child => {
            let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(signals), None);
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

/// A worker: attach to the master's store with no argument, then serve.
fn worker(id: usize, listener: &TcpListener) -> Result<(), Box<dyn std::error::Error>> {
    let store = ClusterStore::new()?;
    for stream in listener.incoming() {
        if let Err(e) = serve(id, &store, stream?) {
            eprintln!("worker {id}: {e}");
        }
    }
    Ok(())
}

/// One request per connection (`Connection: close`), so the kernel spreads the requests of
/// one client over the workers.
fn serve(
    id: usize,
    store: &ClusterStore,
    stream: TcpStream,
) -> Result<(), Box<dyn std::error::Error>> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(&stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut sid = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some(cookies) = line.strip_prefix("Cookie:").or_else(|| line.strip_prefix("cookie:"))
        {
            sid = cookies.split(';').find_map(|c| c.trim().strip_prefix("sid=")).map(str::to_owned);
        }
    }
    let mut out = &stream;
    if !request_line.starts_with("GET /hello ") {
        out.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")?;
        return Ok(());
    }
    let sid = match sid.filter(|s| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())) {
        Some(sid) => sid,
        None => new_session_id()?,
    };
    let session: Session = store.get(&sid)?.unwrap_or_default();
    let msg = if session.visited { "Hello again from worker" } else { "Hello from worker" };
    store.set(&sid, &Session { visited: true }, Expiry::Default)?;
    let body = format!("{{\"msg\":\"{msg} {id}\"}}");
    write!(
        out,
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         set-cookie: sid={sid}; Path=/; HttpOnly; SameSite=Lax\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    Ok(())
}

/// 128 random bits from the operating system's CSPRNG, as hex.
fn new_session_id() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

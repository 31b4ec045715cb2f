//! The seed's example in Rust with no web framework (std only, HTTP by hand): the same master
//! as `hello_cluster` (`cluster/mod.rs`), and workers that answer `GET /hello` with
//! `{"msg":"Hello from worker N"}` on a session's first visit and
//! `{"msg":"Hello again from worker N"}` after, whichever worker served the first visit.
//! `GET /logout` ends the session and answers `{"msg":"Bye from worker N"}`.
//! `POST /echo` answers its body (up to 64 KiB): a request whose body comes late is one in
//! flight, which is how the tests hold one open across a shutdown.
//!
//! Each worker serves every connection on its own thread (up to 256 at once; past that a new
//! connection is answered 503), one request per connection (`Connection: close`, so the
//! kernel spreads one client's requests over the workers), and gives a client 10 s to send
//! its request and take the answer, so idle or slow clients hold only their own thread. The
//! request head (request line and headers) may be 8 KiB at most (past that: 431). It is
//! read as bytes and decoded lossily: a header that is not UTF-8 (a cookie) cannot be a
//! session id, so it counts as no session and the request is answered all the same.
//!
//! On SIGTERM or SIGINT a worker stops accepting, leaves the connections it accepted last a
//! moment (`DRAIN`) to send their requests, closes those that have still not begun one,
//! answers the requests it has begun, and exits with status 0. A store error
//! is answered 500 `internal error`; the error goes to the worker's stderr.
//!
//! Run: `cargo run --release --example prefork` then
//! `curl -c jar -b jar http://127.0.0.1:8080/hello` a few times.

mod cluster;

use std::error::Error;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use cluster::Sessions;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use serde::{Deserialize, Serialize};

/// Most bytes of a request head (request line and headers).
const MAX_HEAD: usize = 8 << 10;
/// Most bytes of a request body.
const MAX_BODY: usize = 64 << 10;
/// How long a client has to send its request, and then to take the answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Most connections a worker serves at once.
const MAX_CONNECTIONS: usize = 256;

#[derive(Serialize, Deserialize, Default)]
struct Session {
    visited: bool,
}

fn main() -> Result<(), Box<dyn Error>> {
    cluster::run(&worker)
}

/// The connections being served, and a signal for when none is left.
#[derive(Default)]
struct Live {
    count: Mutex<usize>,
    none: Condvar,
}

/// One connection counted in `Live` for as long as this lives (its thread's life).
struct Counted(Arc<Live>);

impl Counted {
    /// `None` if `MAX_CONNECTIONS` are being served.
    fn new(live: &Arc<Live>) -> Option<Counted> {
        let mut count = live.count.lock().unwrap_or_else(|e| e.into_inner());
        if *count >= MAX_CONNECTIONS {
            return None;
        }
        *count += 1;
        Some(Counted(Arc::clone(live)))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut count = self.0.count.lock().unwrap_or_else(|e| e.into_inner());
        *count -= 1;
        if *count == 0 {
            self.0.none.notify_all();
        }
    }
}

/// A worker: attach to the master's store, then accept until SIGTERM or SIGINT, then wait
/// for the connections being served.
fn worker(id: usize, listener: TcpListener) -> Result<(), Box<dyn Error>> {
    // Read from a signalfd. They are blocked from the fork on, and every thread started
    // here inherits the mask, so none takes their default action.
    let signal_fd = SignalFd::with_flags(&cluster::stop_signals(), SfdFlags::SFD_CLOEXEC)?;
    let store = cluster::sessions()?;
    listener.set_nonblocking(true)?;
    // Closing the write end tells every connection thread that the worker is stopping.
    let (stopping, stop) = nix::unistd::pipe()?;
    let stopping = Arc::new(stopping);
    let live = Arc::new(Live::default());
    loop {
        let mut fds = [
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(signal_fd.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        if fds[1].any() == Some(true) {
            break;
        }
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                continue
            }
            Err(e) if e.kind() == ErrorKind::ConnectionAborted => continue,
            Err(e) => {
                // Out of descriptors or memory: a pause rather than a busy loop.
                eprintln!("worker {id}: accept: {e}");
                let mut fds = [PollFd::new(signal_fd.as_fd(), PollFlags::POLLIN)];
                let _ = poll(&mut fds, PollTimeout::from(100u8));
                continue;
            }
        };
        let Some(counted) = Counted::new(&live) else {
            // Best effort: the socket's buffer is empty, so this write does not wait.
            let _ = stream.set_nonblocking(true);
            let _ = respond(&stream, "503 Service Unavailable", "", b"busy\n");
            continue;
        };
        let (store, stopping) = (store.clone(), Arc::clone(&stopping));
        let spawned = std::thread::Builder::new().spawn(move || {
            let _counted = counted;
            if let Err(e) = serve(id, &store, &stream, &stopping) {
                eprintln!("worker {id}: {e}");
            }
        });
        if let Err(e) = spawned {
            eprintln!("worker {id}: no thread for a connection: {e}");
        }
    }
    drop(listener);
    // The connections accepted last get a moment to send their requests (or to finish)
    // before those still idle are closed; then every request begun is answered.
    let count = live.count.lock().unwrap_or_else(|e| e.into_inner());
    let (count, _) =
        live.none.wait_timeout_while(count, DRAIN, |n| *n > 0).unwrap_or_else(|e| e.into_inner());
    drop(stop);
    let mut count = count;
    while *count > 0 {
        count = live.none.wait(count).unwrap_or_else(|e| e.into_inner());
    }
    Ok(())
}

/// How long a stopping worker, no longer accepting, leaves the connections it accepted last
/// to send their requests before it closes those still idle.
const DRAIN: Duration = Duration::from_millis(250);

/// Serves one request on `stream`. `stopping` becomes readable when the worker stops: a
/// connection that has sent nothing by then is closed.
fn serve(
    id: usize,
    store: &Sessions,
    stream: &TcpStream,
    stopping: &OwnedFd,
) -> Result<(), Box<dyn Error>> {
    let mut input = stream;
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut buf = Vec::with_capacity(1024);
    let head_len = loop {
        let within = &buf[..buf.len().min(MAX_HEAD)];
        if let Some(end) = within.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if buf.len() >= MAX_HEAD {
            respond(stream, "431 Request Header Fields Too Large", "", b"")?;
            drain(stream);
            return Ok(());
        }
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return Ok(());
        };
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        let mut fds = [
            PollFd::new(stream.as_fd(), PollFlags::POLLIN),
            PollFd::new(stopping.as_fd(), PollFlags::POLLIN),
        ];
        // Until the first byte, the connection is idle: the worker's stop closes it.
        let watched = if buf.is_empty() { 2 } else { 1 };
        match poll(&mut fds[..watched], timeout) {
            Ok(0) => return Ok(()),
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        if buf.is_empty() && fds[0].any() != Some(true) && fds[1].any() == Some(true) {
            return Ok(());
        }
        let mut chunk = [0u8; 4096];
        match input.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
            Err(e) => return Err(e.into()),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_len]);
    let request_line = head.split("\r\n").next().unwrap_or_default();
    let header = |name: &str| {
        head.split("\r\n").skip(1).find_map(|line| {
            let (n, value) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| value.trim())
        })
    };
    let mut request = request_line.split(' ');
    match (request.next(), request.next()) {
        (Some("GET"), Some("/hello")) => hello(id, store, stream, header("cookie")),
        (Some("GET"), Some("/logout")) => logout(id, store, stream, header("cookie")),
        (Some("POST"), Some("/echo")) => {
            let Some(len) = header("content-length").map_or(Some(0), |l| l.parse().ok()) else {
                respond(stream, "400 Bad Request", "", b"")?;
                drain(stream);
                return Ok(());
            };
            if len > MAX_BODY {
                respond(stream, "413 Content Too Large", "", b"")?;
                drain(stream);
                return Ok(());
            }
            if header("expect").is_some_and(|e| e.eq_ignore_ascii_case("100-continue")) {
                input.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
            }
            let mut body = buf.split_off(head_len);
            while body.len() < len {
                let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                    return Ok(());
                };
                stream.set_read_timeout(Some(left))?;
                let mut chunk = [0u8; 4096];
                match input.read(&mut chunk) {
                    Ok(0) => return Ok(()),
                    Ok(n) => body.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            }
            body.truncate(len);
            Ok(respond(stream, "200 OK", "content-type: application/octet-stream\r\n", &body)?)
        }
        _ => Ok(respond(stream, "404 Not Found", "", b"")?),
    }
}

/// `GET /hello`. A store error is answered 500 with a generic body, and logged.
fn hello(
    id: usize,
    store: &Sessions,
    stream: &TcpStream,
    cookie: Option<&str>,
) -> Result<(), Box<dyn Error>> {
    let (sid, visited) = match visit(store, session_id(cookie)) {
        Ok(visit) => visit,
        Err(e) => {
            eprintln!("worker {id}: session store: {e}");
            respond(stream, "500 Internal Server Error", "", b"internal error")?;
            return Ok(());
        }
    };
    let msg = if visited { "Hello again from worker" } else { "Hello from worker" };
    let body = format!("{{\"msg\":\"{msg} {id}\"}}");
    let headers = format!(
        "content-type: application/json\r\nset-cookie: sid={sid}; Path=/; HttpOnly; SameSite=Lax\r\n"
    );
    respond(stream, "200 OK", &headers, body.as_bytes())?;
    Ok(())
}

/// The session id in a `cookie` header, if it has the form this server gives them.
fn session_id(cookie: Option<&str>) -> Option<&str> {
    let sid = cookie?.split(';').find_map(|c| c.trim().strip_prefix("sid="))?;
    (sid.len() == 32 && sid.bytes().all(|b| b.is_ascii_hexdigit())).then_some(sid)
}

/// Records a visit of session `sid`; returns the session's id and whether it was visited
/// before. A cookie is honoured only if its session is live in the store: an id the client
/// made up (or one that expired) is never adopted (no session fixation); a new session gets
/// an id from the OS CSPRNG, stored only if unused. The visit is written only over the live
/// session, so a logout meanwhile (on any host) stands: the client then starts a new one.
fn visit(store: &Sessions, sid: Option<&str>) -> Result<(String, bool), Box<dyn Error>> {
    if let Some(sid) = sid {
        if let Some(session) = store.get::<Session>(sid)? {
            if store.replace(sid, &Session { visited: true })? {
                return Ok((sid.to_owned(), session.visited));
            }
        }
    }
    loop {
        let sid = new_session_id().map_err(|e| format!("no random session id: {e}"))?;
        if store.add(&sid, &Session { visited: true })? {
            return Ok((sid, false));
        }
    }
}

/// `GET /logout`: ends the session (on every host, with `REDIS_URL`) and clears the cookie.
fn logout(
    id: usize,
    store: &Sessions,
    stream: &TcpStream,
    cookie: Option<&str>,
) -> Result<(), Box<dyn Error>> {
    if let Err(e) = session_id(cookie).map_or(Ok(false), |sid| store.destroy(sid)) {
        eprintln!("worker {id}: session store: {e}");
        respond(stream, "500 Internal Server Error", "", b"internal error")?;
        return Ok(());
    }
    let body = format!("{{\"msg\":\"Bye from worker {id}\"}}");
    let headers = "content-type: application/json\r\nset-cookie: sid=; Path=/; Max-Age=0\r\n";
    respond(stream, "200 OK", headers, body.as_bytes())?;
    Ok(())
}

/// Writes a whole answer; the connection closes after it.
fn respond(stream: &TcpStream, status: &str, headers: &str, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let mut out = stream;
    out.write_all(head.as_bytes())?;
    out.write_all(body)
}

/// After an answer sent before the whole request was read: reads and drops what the client
/// still sends (up to 64 KiB, for up to a second) after a half close, so that closing with
/// unread bytes does not reset the connection before the client has read the answer.
fn drain(stream: &TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let (mut input, mut sink, mut read) = (stream, [0u8; 4096], 0);
    while read < 64 << 10 {
        match input.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => read += n,
        }
    }
}

/// 128 random bits from the operating system's CSPRNG, as hex.
fn new_session_id() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

//! The seed's example in Rust with no web framework (std only, HTTP by hand): the same master
//! as `hello_cluster` (`cluster/mod.rs`), and workers that answer `GET /hello` with
//! `{"msg":"Hello from worker N"}` on a session's first visit and
//! `{"msg":"Hello again from worker N"}` after, whichever worker served the first visit.
//!
//! Run: `cargo run --release --example prefork` then
//! `curl -c jar -b jar http://127.0.0.1:8080/hello` a few times.

mod cluster;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use cluster_session_store::{ClusterStore, Expiry};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Default)]
struct Session {
    visited: bool,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    cluster::run(&|id, listener| worker(id, &listener))
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
    // A cookie is honoured only if its session is live in the store: an id the client made
    // up (or one that expired) is never adopted (no session fixation); a new session gets an
    // id from the OS CSPRNG, stored only if unused.
    let live = match sid.filter(|s| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())) {
        Some(sid) => store.get::<Session>(&sid)?.map(|session| (sid, session)),
        None => None,
    };
    let (sid, visited) = match live {
        Some((sid, session)) => {
            store.set(&sid, &Session { visited: true }, Expiry::Default)?;
            (sid, session.visited)
        }
        None => loop {
            let sid = new_session_id()?;
            if store.add(&sid, &Session { visited: true }, Expiry::Default)? {
                break (sid, false);
            }
        },
    };
    let msg = if visited { "Hello again from worker" } else { "Hello from worker" };
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

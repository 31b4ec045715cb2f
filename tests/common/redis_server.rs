//! A `redis-server` of a test's own: on a free port of 127.0.0.1, persistence off, in a
//! temporary directory; killed and reaped when dropped. `.ci/test` installs redis-server
//! when it is missing.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long a server may take to accept connections.
const START: Duration = Duration::from_secs(20);

pub struct RedisServer {
    child: Child,
    pub port: u16,
    dir: PathBuf,
    conn: redis::Connection,
}

impl RedisServer {
    /// Starts one; panics (saying how to install it) if `redis-server` is not on PATH.
    pub fn start() -> RedisServer {
        let mut last = String::new();
        // A port found free may be taken before the server binds it: then another.
        for attempt in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let dir = std::env::temp_dir()
                .join(format!("css-redis-{}-{port}-{attempt}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("a directory for redis-server");
            let mut child = Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args(["--save", "", "--appendonly", "no", "--protected-mode", "yes"])
                .arg("--dir")
                .arg(&dir)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server on PATH (`bash .ci/test` installs it: apt-get install redis-server)");
            // Its log says when it accepts connections, or why it exits (the port taken).
            let (tx, lines) = std::sync::mpsc::channel();
            let stdout = child.stdout.take().expect("stdout");
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            let deadline = Instant::now() + START;
            let ready = loop {
                match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(line) if line.contains("Ready to accept connections") => break true,
                    Ok(line) => last = line,
                    Err(_) => break false,
                }
            };
            if ready {
                let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
                let conn = client.get_connection_with_timeout(START).expect("connect");
                conn.set_read_timeout(Some(START)).unwrap();
                return RedisServer { child, port, dir, conn };
            }
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&dir);
        }
        panic!("redis-server did not start: {last}");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Runs a command on the test's own connection.
    pub fn cmd<T: redis::FromRedisValue>(&mut self, args: &[&str]) -> T {
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query(&mut self.conn).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    /// How many times the server ran `command` (lower case), from `INFO commandstats`.
    pub fn calls(&mut self, command: &str) -> u64 {
        let info: String = self.cmd(&["INFO", "commandstats"]);
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse().expect("a call count"))
    }

    /// The client id of the connection named `name` (`CLIENT SETNAME`).
    pub fn client_id(&mut self, name: &str) -> Option<String> {
        let list: String = self.cmd(&["CLIENT", "LIST"]);
        let field = format!(" name={name} ");
        list.lines()
            .find(|l| l.contains(&field))
            .and_then(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")).map(str::to_owned))
    }

    /// Stops the server (SIGSTOP): it keeps its connections and answers nothing.
    pub fn pause(&self) {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGSTOP).expect("SIGSTOP");
    }

    /// Lets a paused server go on (SIGCONT).
    pub fn resume(&self) {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGCONT).expect("SIGCONT");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls `done` until it holds; panics with `what` after `limit`. For what another thread or
/// process does at its own pace (a push applied, a tracker re-armed).
pub fn until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::yield_now();
    }
    start.elapsed()
}

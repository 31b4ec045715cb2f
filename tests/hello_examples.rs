//! The seed's example end to end, for each of `hello_cluster` (axum + tower-sessions),
//! `hello_actix` (actix-web + actix-session) and `prefork` (no framework): the example runs
//! as a real process tree (a master and 2 forked workers) on a port the kernel picked, and
//! a real HTTP client drives it, opening a new connection for every request, so the kernel
//! spreads one client's requests over the workers (the seed's own test used keep-alive and
//! could not tell a shared store from a per-worker one).
//!
//! Asserted: the first answer is "Hello from worker N"; every later one is "Hello again";
//! answers came from both workers; after a worker is SIGKILLed, requests keep succeeding and
//! the session is still there, the master logs the death and a new worker in that slot, and
//! the new worker serves the same session; SIGTERM stops the master cleanly (status 0).
//! And for the master itself: a slot whose workers keep dying is restarted after a growing
//! delay, and a worker that does not exit on SIGTERM is SIGKILLed after the grace period.
//!
//! Every wait has a deadline; the master runs in its own process group, which the guard
//! SIGKILLs and reaps if the test fails.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// Longest wait for any one log line or request.
const WAIT: Duration = Duration::from_secs(30);
/// Most requests made while waiting for an answer from a particular worker: with 2 workers
/// and the kernel hashing each new connection's port, each answers about half.
const ATTEMPTS: usize = 200;

/// Longest wait for building an example (run alone, the test builds it from scratch).
const BUILD_WAIT: Duration = Duration::from_secs(20 * 60);

/// The example binary, built or confirmed up to date once per test binary: run alone
/// (`cargo test --test hello_examples`), cargo builds no examples, and a binary left by an
/// earlier build would be stale. Under `cargo test` the examples were built with the same
/// features (the dev-dependency on this crate enables them all), so the build finds nothing
/// to do. The path is the one cargo reports, whatever the target directory or target.
// The build is reaped through `common::Child` (pidfd wait, or SIGKILL and reap on drop).
#[allow(clippy::zombie_processes)]
fn example(name: &str) -> PathBuf {
    static BUILT: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = built.get(name) {
        return path.clone();
    }
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("profile dir");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    // Cargo's messages go to a file, not a pipe, so that a full pipe cannot stall the build
    // while this waits for it; its progress and "waiting for file lock" go to stderr.
    let messages =
        std::env::temp_dir().join(format!("hello-build-{}-{name}.json", std::process::id()));
    let build = Command::new(env!("CARGO"))
        .args(["build", "--all-features", "--message-format=json-render-diagnostics"])
        .args(["--example", name, "--profile", profile])
        .stdout(std::fs::File::create(&messages).expect("create the build's message file"))
        .spawn()
        .expect("cargo build");
    let code = common::Child::adopt(build.id()).wait(BUILD_WAIT);
    let json = std::fs::read_to_string(&messages).expect("read the build's messages");
    let _ = std::fs::remove_file(&messages);
    assert_eq!(code, 0, "could not build the example {name}");
    let path = json
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == name)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo reported no executable for the example {name}"));
    built.insert(name.to_owned(), path.clone());
    path
}

/// The example's master, its log, and its process group.
struct Server {
    master: common::Child,
    lines: Receiver<String>,
    log: Vec<String>,
    port: u16,
    /// The master exited and was reaped: its pid (and group id) may belong to another now.
    stopped: bool,
}

impl Server {
    // The master is reaped through `common::Child` (pidfd wait, or SIGKILL and reap on drop).
    #[allow(clippy::zombie_processes)]
    fn start(name: &str) -> Server {
        Server::start_with(name, &[])
    }

    #[allow(clippy::zombie_processes)]
    fn start_with(name: &str, env: &[(&str, &str)]) -> Server {
        let mut child = Command::new(example(name))
            .envs(env.iter().copied())
            .env("WORKERS", "2")
            .env("PORT", "0")
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the example");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let master = common::Child::adopt(child.id());
        let mut server = Server { master, lines, log: Vec::new(), port: 0, stopped: false };
        let line = server.expect(|l| l.contains("listening on http://127.0.0.1:"));
        let port = line.rsplit(':').next().and_then(|p| p.strip_suffix("/hello"));
        server.port = port.and_then(|p| p.parse().ok()).expect("port in the log line");
        server
    }

    /// Waits for the next log line matching `want`; panics with the log after `WAIT`.
    fn expect(&mut self, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if want(&line) {
                        return line;
                    }
                }
                Err(e) => {
                    panic!("no expected log line ({e}); log so far:\n{}", self.log.join("\n"))
                }
            }
        }
    }

    /// Waits for "worker {id} (pid P) is online" and returns P.
    fn online(&mut self, id: usize) -> Pid {
        let prefix = format!("worker {id} (pid ");
        let line = self.expect(|l| l.starts_with(&prefix) && l.ends_with("is online"));
        let pid = line[prefix.len()..].split(')').next().and_then(|p| p.parse().ok());
        Pid::from_raw(pid.expect("pid in the log line"))
    }

    /// SIGTERM; returns the master's exit code (within `WAIT`) and reads the rest of its log.
    fn stop(&mut self) -> i32 {
        kill(self.master.pid, Signal::SIGTERM).expect("SIGTERM");
        let code = self.master.wait(WAIT);
        self.stopped = true;
        // The master has exited: its stdout is closed, so this ends at the log's end.
        while let Ok(line) = self.lines.recv_timeout(WAIT) {
            self.log.push(line);
        }
        code
    }
}

impl Drop for Server {
    /// Kills the whole tree (the master's process group) if the test failed; the master is
    /// then reaped by `common::Child`.
    fn drop(&mut self) {
        if !self.stopped {
            let _ = killpg(self.master.pid, Signal::SIGKILL);
        }
    }
}

/// A client with a cookie jar; every request on a new connection.
struct Client {
    agent: ureq::Agent,
    url: String,
    jar: BTreeMap<String, String>,
}

impl Client {
    fn new(port: u16) -> Client {
        let agent = ureq::Agent::config_builder()
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            .timeout_global(Some(WAIT))
            .build()
            .into();
        Client { agent, url: format!("http://127.0.0.1:{port}/hello"), jar: BTreeMap::new() }
    }

    /// GET /hello; returns the message and the worker that answered.
    fn hello(&mut self) -> (String, usize) {
        let mut request = self.agent.get(&self.url).header("connection", "close");
        if !self.jar.is_empty() {
            let cookies: Vec<String> = self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
            request = request.header("cookie", cookies.join("; "));
        }
        let mut response = request.call().expect("GET /hello");
        for header in response.headers().get_all("set-cookie") {
            let pair = header.to_str().unwrap().split(';').next().unwrap();
            let (name, value) = pair.split_once('=').expect("cookie name=value");
            self.jar.insert(name.trim().to_owned(), value.trim().to_owned());
        }
        let body = response.body_mut().read_to_string().expect("body");
        let json: serde_json::Value = serde_json::from_str(&body).expect("JSON body");
        let msg = json["msg"].as_str().expect("msg").to_owned();
        let worker = msg.rsplit(' ').next().and_then(|n| n.parse().ok()).expect("worker id");
        (msg, worker)
    }

    /// A request that must find the session.
    fn again(&mut self) -> usize {
        let (msg, worker) = self.hello();
        assert!(msg.starts_with("Hello again from worker "), "session lost: {msg:?}");
        worker
    }
}

fn one_session_across_workers_survives_a_killed_worker(name: &str) {
    let mut server = Server::start(name);
    let pids = [server.online(1), server.online(2)];
    let mut client = Client::new(server.port);

    let (first, _) = client.hello();
    assert!(first.starts_with("Hello from worker "), "first visit: {first:?}");
    assert!(!client.jar.is_empty(), "no session cookie set");
    let mut answered = BTreeSet::new();
    for i in 0..ATTEMPTS {
        answered.insert(client.again());
        if answered.len() == 2 && i >= 10 {
            break;
        }
    }
    assert_eq!(answered.len(), 2, "answers came from only {answered:?} in {ATTEMPTS} requests");

    // Kill worker 1; requests go on at once, while the master replaces it.
    kill(pids[0], Signal::SIGKILL).expect("SIGKILL worker 1");
    for _ in 0..10 {
        client.again();
    }
    server.expect(|l| l.starts_with(&format!("worker 1 (pid {}) was killed by SIGKILL", pids[0])));
    let replaced = server.online(1);
    assert_ne!(replaced, pids[0]);
    // The new worker 1 serves the same session.
    assert!(
        (0..ATTEMPTS).any(|_| client.again() == 1),
        "the new worker 1 answered none of {ATTEMPTS} requests"
    );

    let code = server.stop();
    eprintln!("{name}:\n{}", server.log.join("\n"));
    assert_eq!(code, 0, "master exit status; log:\n{}", server.log.join("\n"));
    assert!(server.log.iter().any(|l| l.contains("store released")), "{}", server.log.join("\n"));
}

#[test]
fn hello_cluster_axum_tower_sessions() {
    one_session_across_workers_survives_a_killed_worker("hello_cluster");
}

#[test]
fn hello_actix_actix_session() {
    one_session_across_workers_survives_a_killed_worker("hello_actix");
}

#[test]
fn prefork_no_framework() {
    one_session_across_workers_survives_a_killed_worker("prefork");
}

/// Waits until process `pid` is in the stopped state ('T' in `/proc/<pid>/stat`), for at
/// most `WAIT`.
fn wait_until_stopped(pid: Pid) {
    let deadline = Instant::now() + WAIT;
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the worker's stat");
        // The state follows the command name, which is in parentheses and may hold spaces.
        let state = stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next());
        if state == Some('T') {
            return;
        }
        assert!(Instant::now() < deadline, "worker {pid} not stopped within {WAIT:?}: {stat}");
        std::thread::yield_now();
    }
}

/// The master's restart backoff and shutdown deadline, with the `prefork` example: worker 1
/// is SIGKILLed twice within seconds of starting (the first death is restarted at once, the
/// second after a delay); worker 2 is stopped with SIGSTOP, so it cannot act on the master's
/// SIGTERM, and must be SIGKILLed when the grace period ends.
#[test]
fn master_backs_off_restarts_and_kills_a_worker_that_will_not_stop() {
    let mut server = Server::start_with("prefork", &[("SHUTDOWN_GRACE_MS", "200")]);
    let mut pid = server.online(1);
    let stuck = server.online(2);
    for deaths in 1..=2 {
        kill(pid, Signal::SIGKILL).expect("SIGKILL worker 1");
        server.expect(|l| l.starts_with(&format!("worker 1 (pid {pid}) was killed by SIGKILL")));
        if deaths == 2 {
            server.expect(|l| l == "worker 1: 2 quick deaths in a row; restarting it in 100ms");
        }
        let replaced = server.online(1);
        assert_ne!(replaced, pid);
        pid = replaced;
    }
    let mut client = Client::new(server.port);
    let (first, _) = client.hello();
    assert!(first.starts_with("Hello from worker "), "after the restarts: {first:?}");

    kill(stuck, Signal::SIGSTOP).expect("SIGSTOP worker 2");
    // SIGSTOP takes effect when the worker next runs; a SIGTERM that reached it before then
    // would still be fatal. Only a worker already stopped keeps its SIGTERM pending.
    wait_until_stopped(stuck);
    let code = server.stop();
    let log = server.log.join("\n");
    eprintln!("prefork (backoff, grace):\n{log}");
    assert_eq!(code, 0, "master exit status; log:\n{log}");
    let killed = format!("worker 2 (pid {stuck}) still running after 200ms: SIGKILL");
    assert!(server.log.contains(&killed), "no {killed:?} in the log:\n{log}");
    assert!(log.contains("store released"), "{log}");
}

//! The seed's example end to end, for each of `hello_cluster` (axum + tower-sessions),
//! `hello_actix` (actix-web + actix-session) and `prefork` (no framework): the example runs
//! as a real process tree (a master and 2 forked workers) on a port the kernel picked, and
//! a real HTTP client drives it, opening a new connection for every request, so the kernel
//! spreads one client's requests over the workers (the seed's own test used keep-alive and
//! could not tell a shared store from a per-worker one).
//!
//! Asserted, for each example: the first answer is "Hello from worker N"; every later one is
//! "Hello again"; answers came from both workers; after a worker is SIGKILLed, requests keep
//! succeeding and the session is still there, the master logs the death and a new worker in
//! that slot, and the new worker serves the same session; SIGTERM stops the master cleanly
//! (status 0). On SIGTERM a request in flight (its body not yet sent) is answered after every
//! worker has stopped accepting, and the workers exit 0. A store error is answered 500 with
//! a generic body, and the worker logs the error.
//!
//! For the master (with `prefork`): a worker SIGKILLed from outside is replaced at once
//! however often it happens; a slot whose workers crash soon after starting is restarted
//! after a delay, its socket closed meanwhile so that every request reaches the other worker;
//! a worker that does not exit on SIGTERM is SIGKILLed after the grace period; the
//! connections it leaves in TIME_WAIT do not keep a new server off the port. For `prefork`'s
//! hand-written HTTP: a request head past 8 KiB is answered 431, a cookie that is not UTF-8
//! gets an answer, and idle connections do not hold up a request.
//!
//! Every wait has a deadline; the master runs in its own process group, which the guard
//! SIGKILLs and reaps if the test fails. The log read is the master's and the workers' stdout
//! and stderr.

mod common;
#[path = "common/redis_server.rs"]
mod redis_server;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use redis_server::RedisServer;

/// Longest wait for any one log line or request.
const WAIT: Duration = Duration::from_secs(30);
/// Most requests made while waiting for an answer from a particular worker: with 2 workers
/// and the kernel hashing each new connection's port, each answers about half.
const ATTEMPTS: usize = 200;

/// Longest wait for building an example (run alone, the test builds it from scratch).
const BUILD_WAIT: Duration = Duration::from_secs(20 * 60);

/// The example binary, built or confirmed up to date once per test binary, as a user builds
/// it (the `examples` package, without the test-only hooks): a binary left by an earlier
/// build would be stale. The path is the one cargo reports, whatever the target directory or
/// target.
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
        .args(["build", "-p", "examples", "--message-format=json-render-diagnostics"])
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
        let mut command = Command::new(example(name));
        command
            .envs(env.iter().copied())
            .env("WORKERS", "2")
            .env("PORT", "0")
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: setrlimit is async-signal-safe and touches only the child. No core files
        // from the workers the tests crash with SIGABRT.
        unsafe {
            command.pre_exec(|| {
                let none = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
                if libc::setrlimit(libc::RLIMIT_CORE, &none) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().expect("start the example");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        // Both end at the end of the log: when the master and every worker have exited.
        for output in [Box::new(stdout) as Box<dyn Read + Send>, Box::new(stderr)] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(output).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
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
        self.finish()
    }

    /// After a SIGTERM: returns the master's exit code (within `WAIT`) and reads the rest of
    /// its log.
    fn finish(&mut self) -> i32 {
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
        Client::with_timeout(port, WAIT)
    }

    /// A client whose requests fail if not answered within `timeout`.
    fn with_timeout(port: u16, timeout: Duration) -> Client {
        let agent = ureq::Agent::config_builder()
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            .timeout_global(Some(timeout))
            .build()
            .into();
        Client { agent, url: format!("http://127.0.0.1:{port}/hello"), jar: BTreeMap::new() }
    }

    /// GET /hello; returns the message and the worker that answered.
    fn hello(&mut self) -> (String, usize) {
        self.get(&self.url.clone())
    }

    /// GET /logout on the same server: the session ends.
    fn logout(&mut self) {
        let url = self.url.replace("/hello", "/logout");
        let (msg, _) = self.get(&url);
        assert!(msg.starts_with("Bye from worker "), "{msg:?}");
    }

    /// GET `url` with the jar's cookies, keeping those it sets; returns the message and the
    /// worker that answered.
    fn get(&mut self, url: &str) -> (String, usize) {
        let mut request = self.agent.get(url).header("connection", "close");
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

    /// GET /hello with the jar's cookies, never panicking: the message, or what went wrong.
    fn try_hello(&self) -> Result<String, String> {
        let mut request = self.agent.get(&self.url).header("connection", "close");
        let cookies: Vec<String> = self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
        request = request.header("cookie", cookies.join("; "));
        let mut response = request.call().map_err(|e| e.to_string())?;
        let body = response.body_mut().read_to_string().map_err(|e| e.to_string())?;
        let json: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        json["msg"].as_str().map(str::to_owned).ok_or(body)
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

/// With `STORE_NAME` (and, for actix's signed cookies, `SESSION_KEY`), a session outlives
/// its master: stopped with SIGTERM, then SIGKILLed
/// with its whole process group, each time started again on the kept segment, the master's
/// workers answer the session "Hello again" (each start on a new port; the client keeps its
/// cookie).
fn sessions_survive_restarts_with_store_name(name: &str) {
    let store = format!("hello-restart-{}-{name}", std::process::id());
    let segment = PathBuf::from(common::shm_path(&store));
    let _remove = common::RemovedAtEnd(segment.clone());
    // hello_actix signs its cookies with this key, which must outlive the master too.
    let key = "5e".repeat(64);
    let env = [("STORE_NAME", store.as_str()), ("SESSION_KEY", key.as_str())];
    let mut server = Server::start_with(name, &env);
    let mut client = Client::new(server.port);
    let (first, _) = client.hello();
    assert!(first.starts_with("Hello from worker "), "{first:?}");
    client.again();
    assert_eq!(server.stop(), 0, "log:\n{}", server.log.join("\n"));
    assert!(segment.exists(), "the master removed the kept segment");

    let mut server = Server::start_with(name, &env);
    assert!(server.log.iter().any(|l| l.ends_with("kept across restarts, 1 sessions")));
    client.url = format!("http://127.0.0.1:{}/hello", server.port);
    client.again();
    let _ = killpg(server.master.pid, Signal::SIGKILL);
    assert_eq!(server.master.wait(WAIT), 128 + 9);
    server.stopped = true;

    let mut server = Server::start_with(name, &env);
    client.url = format!("http://127.0.0.1:{}/hello", server.port);
    client.again();
    assert_eq!(server.stop(), 0, "log:\n{}", server.log.join("\n"));
}

/// With `SNAPSHOT`, a session outlives its master and its memory (the default memfd
/// segment): the master writes the file when SIGTERM stops it and restores it at the next
/// start.
fn sessions_survive_a_restart_through_a_snapshot(name: &str) {
    let file = std::env::temp_dir().join(format!("hello-snapshot-{}-{name}", std::process::id()));
    let _remove = common::RemovedAtEnd(file.clone());
    let key = "5e".repeat(64);
    let path = file.to_str().expect("a UTF-8 temporary path");
    let env = [("SNAPSHOT", path), ("SESSION_KEY", key.as_str())];
    let mut server = Server::start_with(name, &env);
    let mut client = Client::new(server.port);
    let (first, _) = client.hello();
    assert!(first.starts_with("Hello from worker "), "{first:?}");
    assert_eq!(server.stop(), 0, "log:\n{}", server.log.join("\n"));
    assert!(file.exists(), "no snapshot written at stop");

    let mut server = Server::start_with(name, &env);
    assert!(server.log.iter().any(|l| l.ends_with("1 sessions restored from the snapshot")));
    client.url = format!("http://127.0.0.1:{}/hello", server.port);
    client.again();
    assert_eq!(server.stop(), 0, "log:\n{}", server.log.join("\n"));
}

#[test]
fn hello_cluster_sessions_survive_through_a_snapshot() {
    sessions_survive_a_restart_through_a_snapshot("hello_cluster");
}

#[test]
fn hello_actix_sessions_survive_through_a_snapshot() {
    sessions_survive_a_restart_through_a_snapshot("hello_actix");
}

#[test]
fn prefork_sessions_survive_through_a_snapshot() {
    sessions_survive_a_restart_through_a_snapshot("prefork");
}

/// SIGUSR2 hands the service over to a new master with no downtime (with `STORE_NAME`, or
/// the default memfd store, whose descriptor the new master inherits): a
/// client opening a new connection for every request, all along the handover, gets every
/// answer, each "Hello again"; the old master exits 0 once the new one's workers run, the new
/// one (another pid) announces the same address, and the client goes on with it alone.
fn hands_over_to_a_new_master_under_load(name: &str, named: bool) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    // The memfd variant names no segment: it must not remove the named variant's.
    let store = format!("hello-handover-{}-{name}", std::process::id());
    let _remove = named.then(|| common::RemovedAtEnd(PathBuf::from(common::shm_path(&store))));
    let key = "5e".repeat(64);
    let mut env = vec![("SESSION_KEY", key.as_str())];
    if named {
        env.push(("STORE_NAME", store.as_str()));
    }
    let mut server = Server::start_with(name, &env);
    let old = server.master.pid;
    let mut client = Client::new(server.port);
    client.hello();
    client.again();

    let (stop, answered) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let load = std::thread::spawn({
        let (stop, answered) = (Arc::clone(&stop), Arc::clone(&answered));
        let mut load = Client::new(server.port);
        load.jar = client.jar.clone();
        move || {
            let mut failures = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                match load.try_hello() {
                    Ok(msg) if msg.starts_with("Hello again from worker ") => {}
                    other => failures.push(format!("{other:?}")),
                }
                answered.fetch_add(1, Ordering::SeqCst);
            }
            failures
        }
    });
    let wait_for_answers = |n: usize| {
        let from = answered.load(Ordering::SeqCst);
        let deadline = Instant::now() + WAIT;
        while answered.load(Ordering::SeqCst) < from + n {
            assert!(Instant::now() < deadline, "the load made no progress");
            std::thread::yield_now();
        }
    };
    wait_for_answers(20);
    kill(old, Signal::SIGUSR2).expect("SIGUSR2");
    // The two masters write to one log, in no set order but each its own.
    server.expect(|l| l.ends_with(&format!("took over from master {old}")));
    server.expect(|l| l == "master: workers stopped, store released");
    assert_eq!(server.master.wait(WAIT), 0, "the old master's exit");
    assert!(server.log.iter().any(|l| l.starts_with("master: SIGUSR2, handing over to a new")));
    let listening = |l: &&String| l.contains(": listening on http://127.0.0.1:");
    let line = server.log.iter().filter(listening).nth(1).expect("the new master's address");
    let new: i32 = line
        .strip_prefix("master ")
        .and_then(|l| l.split(':').next())
        .and_then(|p| p.parse().ok())
        .expect("pid in the log line");
    assert_ne!(new, old.as_raw(), "the same master announced itself again");
    assert!(line.ends_with(&format!(":{}/hello", server.port)), "another address: {line}");
    // The new master's workers alone now.
    wait_for_answers(20);
    stop.store(true, Ordering::SeqCst);
    let failures = load.join().expect("the load thread");
    assert!(failures.is_empty(), "{} failed requests: {failures:?}", failures.len());
    assert!(answered.load(Ordering::SeqCst) >= 40);
    client.again();

    kill(Pid::from_raw(new), Signal::SIGTERM).expect("SIGTERM to the new master");
    server.expect(|l| l == "master: workers stopped, store released");
    server.stopped = true;
}

#[test]
fn hello_cluster_hands_over_under_load() {
    hands_over_to_a_new_master_under_load("hello_cluster", true);
}

#[test]
fn hello_actix_hands_over_under_load() {
    hands_over_to_a_new_master_under_load("hello_actix", true);
}

#[test]
fn prefork_hands_over_under_load() {
    hands_over_to_a_new_master_under_load("prefork", true);
}

/// The default store, a memfd: the new master inherits its descriptor.
#[test]
fn hello_cluster_hands_over_its_memfd_under_load() {
    hands_over_to_a_new_master_under_load("hello_cluster", false);
}

#[test]
fn prefork_hands_over_its_memfd_under_load() {
    hands_over_to_a_new_master_under_load("prefork", false);
}

#[test]
fn hello_cluster_sessions_survive_restarts() {
    sessions_survive_restarts_with_store_name("hello_cluster");
}

#[test]
fn hello_actix_sessions_survive_restarts() {
    sessions_survive_restarts_with_store_name("hello_actix");
}

#[test]
fn prefork_sessions_survive_restarts() {
    sessions_survive_restarts_with_store_name("prefork");
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

/// The pid in a "worker N (pid P) ..." log line.
fn pid_in(line: &str) -> Pid {
    let pid = line.split("(pid ").nth(1).and_then(|rest| rest.split(')').next());
    Pid::from_raw(pid.and_then(|p| p.parse().ok()).expect("pid in the log line"))
}

/// The master's restart policy and shutdown deadline, with the `prefork` example (the master
/// is the same for every example). Worker 1 is SIGKILLed five times within seconds of
/// starting: each time it is replaced at once. Then it is crashed with SIGABRT twice: the
/// first crash is restarted at once, the second after the delay (60 s here), and meanwhile
/// its slot's socket is closed: every request, each on a new connection, reaches worker 2
/// within `WAIT`, none waits in a queue nobody serves until the delay ends. Worker 2 is then stopped with SIGSTOP,
/// so it cannot act on the master's SIGTERM, and must be SIGKILLed when the grace period
/// ends.
#[test]
fn master_replaces_killed_workers_at_once_and_backs_off_crashing_ones() {
    let env = [("SHUTDOWN_GRACE_MS", "200"), ("RESTART_DELAY_MS", "60000")];
    let mut server = Server::start_with("prefork", &env);
    let mut pid = server.online(1);
    let stuck = server.online(2);
    let mut client = Client::new(server.port);
    let (first, _) = client.hello();
    assert!(first.starts_with("Hello from worker "), "first visit: {first:?}");

    let next_of_worker_1 = |server: &mut Server| {
        server.expect(|l| {
            l.starts_with("worker 1 (pid ") && l.ends_with("is online")
                || l.starts_with("worker 1: ")
        })
    };
    for _ in 0..5 {
        kill(pid, Signal::SIGKILL).expect("SIGKILL worker 1");
        server.expect(|l| l.starts_with(&format!("worker 1 (pid {pid}) was killed by SIGKILL")));
        let next = next_of_worker_1(&mut server);
        assert!(next.ends_with("is online"), "a killed worker not replaced at once: {next}");
        assert_ne!(pid_in(&next), pid);
        pid = pid_in(&next);
        client.again();
    }

    kill(pid, Signal::SIGABRT).expect("SIGABRT worker 1");
    server.expect(|l| l.starts_with(&format!("worker 1 (pid {pid}) was killed by SIGABRT")));
    let next = next_of_worker_1(&mut server);
    assert!(next.ends_with("is online"), "a first crash not restarted at once: {next}");
    pid = pid_in(&next);
    kill(pid, Signal::SIGABRT).expect("SIGABRT worker 1");
    server.expect(|l| l.starts_with(&format!("worker 1 (pid {pid}) was killed by SIGABRT")));
    let next = next_of_worker_1(&mut server);
    assert_eq!(
        next,
        "worker 1: 2 quick failures in a row; restarting it in 60s, its socket closed meanwhile"
    );
    for _ in 0..20 {
        assert_eq!(client.again(), 2, "answered by the slot waiting to restart");
    }

    kill(stuck, Signal::SIGSTOP).expect("SIGSTOP worker 2");
    // SIGSTOP takes effect when the worker next runs; a SIGTERM that reached it before then
    // would still be acted on. Only a worker already stopped keeps its SIGTERM pending.
    wait_until_stopped(stuck);
    let code = server.stop();
    let log = server.log.join("\n");
    eprintln!("prefork (restarts, grace):\n{log}");
    assert_eq!(code, 0, "master exit status; log:\n{log}");
    let killed = format!("worker 2 (pid {stuck}) still running after 200ms: SIGKILL");
    assert!(server.log.contains(&killed), "no {killed:?} in the log:\n{log}");
    assert!(log.contains("store released"), "{log}");
}

/// Sends `request` on a new connection and reads the answer until the server closes the
/// connection (so the server closes first). Bytes read before a reset are kept.
fn raw_request(port: u16, request: &[u8]) -> Vec<u8> {
    let mut stream = connect(port).expect("connect");
    stream.write_all(request).expect("send the request");
    read_all(&mut stream)
}

fn connect(port: u16) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), WAIT)?;
    stream.set_read_timeout(Some(WAIT))?;
    stream.set_write_timeout(Some(WAIT))?;
    Ok(stream)
}

/// Reads until end of stream (or a reset); panics after `WAIT`.
fn read_all(stream: &mut TcpStream) -> Vec<u8> {
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return answer,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return answer,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("reading the answer: {e}; read so far: {:?}", text(&answer)),
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// An answer's status line and body.
fn status_and_body(answer: &[u8]) -> (String, String) {
    let answer = text(answer);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    (head.lines().next().unwrap_or_default().to_owned(), body.to_owned())
}

/// On SIGTERM, a request in flight is answered: its head is sent and acknowledged
/// (`Expect: 100-continue`), then the master gets SIGTERM; once the port refuses connections
/// (every worker has stopped accepting), the body is sent and the answer must come back.
/// Both workers exit 0, none is SIGKILLed.
fn graceful_shutdown_answers_the_request_in_flight(name: &str) {
    let mut server = Server::start(name);
    let pids = [server.online(1), server.online(2)];
    let mut held = connect(server.port).expect("connect");
    held.write_all(
        b"POST /echo HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 5\r\n\
          expect: 100-continue\r\nconnection: close\r\n\r\n",
    )
    .expect("send the head");
    let mut interim = Vec::new();
    while !interim.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        assert_eq!(held.read(&mut byte).expect("read 100 Continue"), 1, "{:?}", text(&interim));
        interim.push(byte[0]);
    }
    assert!(interim.starts_with(b"HTTP/1.1 100 "), "interim answer: {:?}", text(&interim));

    kill(server.master.pid, Signal::SIGTERM).expect("SIGTERM");
    server.expect(|l| l == "master: SIGTERM, stopping the workers");
    let deadline = Instant::now() + WAIT;
    loop {
        match connect(server.port) {
            Ok(probe) => drop(probe),
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => break,
            // A probe queued on a socket that a worker closed as it arrived is reset.
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => panic!("connect: {e}"),
        }
        assert!(Instant::now() < deadline, "{name}: the port still accepts {WAIT:?} after SIGTERM");
        std::thread::yield_now();
    }
    held.write_all(b"hello").expect("send the body");
    let answer = read_all(&mut held);
    let (status, body) = status_and_body(&answer);
    assert!(status.starts_with("HTTP/1.1 200"), "{name}: answer {:?}", text(&answer));
    assert_eq!(body, "hello");

    let code = server.finish();
    let log = server.log.join("\n");
    eprintln!("{name} (graceful shutdown):\n{log}");
    assert_eq!(code, 0, "master exit status; log:\n{log}");
    for (id, pid) in (1..).zip(pids) {
        let exited = format!("worker {id} (pid {pid}) exited with status 0;");
        assert!(log.contains(&exited), "no {exited:?} in the log:\n{log}");
    }
    assert!(!log.contains("SIGKILL"), "{log}");
}

#[test]
fn hello_cluster_graceful_shutdown() {
    graceful_shutdown_answers_the_request_in_flight("hello_cluster");
}

#[test]
fn hello_actix_graceful_shutdown() {
    graceful_shutdown_answers_the_request_in_flight("hello_actix");
}

#[test]
fn prefork_graceful_shutdown() {
    graceful_shutdown_answers_the_request_in_flight("prefork");
}

/// A store error (here every session is larger than the store accepts) is answered 500 with
/// the body "internal error", and the worker logs what failed.
fn a_store_error_is_a_generic_500(name: &str) {
    let mut server = Server::start_with(name, &[("MAX_SESSION_BYTES", "1")]);
    server.online(1);
    server.online(2);
    let answer = raw_request(
        server.port,
        b"GET /hello HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n",
    );
    let (status, body) = status_and_body(&answer);
    assert!(status.starts_with("HTTP/1.1 500"), "{name}: answer {:?}", text(&answer));
    assert_eq!(body, "internal error", "{name}");

    let code = server.stop();
    let log = server.log.join("\n");
    eprintln!("{name} (store error):\n{log}");
    assert_eq!(code, 0, "master exit status; log:\n{log}");
    assert!(
        server.log.iter().any(|l| l.starts_with("worker ") && l.contains(": session store: ")),
        "no store error in the log:\n{log}"
    );
}

#[test]
fn hello_cluster_store_error() {
    a_store_error_is_a_generic_500("hello_cluster");
}

#[test]
fn hello_actix_store_error() {
    a_store_error_is_a_generic_500("hello_actix");
}

#[test]
fn prefork_store_error() {
    a_store_error_is_a_generic_500("prefork");
}

/// With `REDIS_URL`, two masters of one example (each with its forked workers) stand for two
/// hosts of one service: a session begun on host A is "Hello again" on host B; `GET
/// /logout` on B ends it, and within an invalidation hop (bounded polling, 100 ms) host A
/// answers the old cookie as a new visitor.
fn two_hosts_share_sessions_through_redis(name: &str) {
    let redis = RedisServer::start();
    let url = redis.url();
    let key = "5e".repeat(64);
    let env = [("REDIS_URL", url.as_str()), ("SESSION_KEY", key.as_str())];
    let mut a = Server::start_with(name, &env);
    let mut b = Server::start_with(name, &env);
    let mut client = Client::new(a.port);
    let (first, _) = client.hello();
    assert!(first.starts_with("Hello from worker "), "{first:?}");
    client.again();
    let on = |server: &Server| format!("http://127.0.0.1:{}/hello", server.port);
    client.url = on(&b);
    client.again();
    client.again();
    client.logout();
    client.url = on(&a);
    redis_server::until(Duration::from_millis(100), "host A ends the session", || {
        client.try_hello().is_ok_and(|msg| msg.starts_with("Hello from worker "))
    });
    for server in [&mut a, &mut b] {
        assert_eq!(server.stop(), 0, "log:\n{}", server.log.join("\n"));
    }
}

#[test]
fn hello_cluster_two_hosts_share_sessions_through_redis() {
    two_hosts_share_sessions_through_redis("hello_cluster");
}

#[test]
fn hello_actix_two_hosts_share_sessions_through_redis() {
    two_hosts_share_sessions_through_redis("hello_actix");
}

#[test]
fn prefork_two_hosts_share_sessions_through_redis() {
    two_hosts_share_sessions_through_redis("prefork");
}

/// Two `prefork` hosts (real masters, forked workers, named stores) through faults of Redis
/// and of the tracking connection, observed over HTTP and through a handle attached to host
/// A's segment: `CLIENT KILL` of A's tracker is followed by a re-arm under a new epoch, with
/// requests answered throughout; `FLUSHALL` ends the session on both hosts and empties A's
/// segment; a stopped Redis (SIGSTOP) makes requests fail with a 500 within the timeout,
/// and after SIGCONT both hosts serve sessions again. A's segment passes its integrity check.
#[test]
fn prefork_hosts_through_redis_faults() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let names = [0, 1].map(|i| format!("hello-redis-{}-{i}", std::process::id()));
    let _remove = names.each_ref().map(|n| common::RemovedAtEnd(common::shm_path(n).into()));
    let host = |name: &str| {
        Server::start_with("prefork", &[("REDIS_URL", url.as_str()), ("STORE_NAME", name)])
    };
    let (mut a, mut b) = (host(&names[0]), host(&names[1]));
    let on = |server: &Server| format!("http://127.0.0.1:{}/hello", server.port);
    let config = cluster_session_store::RedisConfig::new(&url).unwrap();
    let local = cluster_session_store::ClusterStore::attach(&names[0]).unwrap();
    let handle = cluster_session_store::RedisStore::new(local, config);
    redis_server::until(WAIT, "A's tracker armed", || handle.trusted());

    let mut client = Client::new(a.port);
    client.hello();
    client.url = on(&b);
    client.again();

    let epoch = handle.epoch();
    let id = redis.client_id(&format!("css-tracker-{}", names[0])).expect("A's tracker");
    let killed: i64 = redis.cmd(&["CLIENT", "KILL", "ID", &id]);
    assert_eq!(killed, 1);
    client.url = on(&a);
    client.again();
    redis_server::until(WAIT, "A re-armed", || handle.trusted() && handle.epoch() > epoch + 1);
    client.again();

    let () = redis.cmd(&["FLUSHALL"]);
    redis_server::until(WAIT, "A's segment emptied", || handle.local().length().unwrap() == 0);
    for server in [&a, &b] {
        client.url = on(server);
        let msg = client.try_hello().expect("an answer");
        assert!(msg.starts_with("Hello from worker "), "{msg:?}");
    }

    redis.pause();
    let started = Instant::now();
    let failed = client.try_hello();
    assert!(failed.as_ref().is_err_and(|e| e.contains("500")), "{failed:?}");
    // The tier's timeout is 500 ms: nothing waits much past it (a bound, not a speed target).
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    redis.resume();
    for server in [&a, &b] {
        client.url = on(server);
        redis_server::until(WAIT, "served again after SIGCONT", || client.try_hello().is_ok());
    }
    let (first, _) = client.hello();
    assert!(first.starts_with("Hello from worker "), "{first:?}");
    client.url = on(&a);
    client.again();
    assert!(handle.local().check_integrity().is_ok());
    for server in [&mut a, &mut b] {
        assert_eq!(server.stop(), 0, "log:\n{}", server.log.join("\n"));
    }
}

/// `GET /logout` ends the session on one host too: the next visit is a first one.
fn logout_ends_the_session(name: &str) {
    let mut server = Server::start(name);
    let mut client = Client::new(server.port);
    client.hello();
    client.again();
    client.logout();
    let (msg, _) = client.hello();
    assert!(msg.starts_with("Hello from worker "), "{msg:?}");
    client.again();
    assert_eq!(server.stop(), 0, "log:\n{}", server.log.join("\n"));
}

#[test]
fn hello_cluster_logout() {
    logout_ends_the_session("hello_cluster");
}

#[test]
fn hello_actix_logout() {
    logout_ends_the_session("hello_actix");
}

#[test]
fn prefork_logout() {
    logout_ends_the_session("prefork");
}

/// Connections on 127.0.0.1 to `port` in TIME_WAIT, from `/proc/net/tcp`.
fn time_wait_on(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"06")
        })
        .count()
}

/// The master's sockets have `SO_REUSEADDR`: the connections its workers closed first stay
/// in TIME_WAIT on the port after the master is gone, and a server binding the port the
/// usual way (std's `TcpListener::bind`, which sets `SO_REUSEADDR`, not `SO_REUSEPORT`) can
/// bind it only if the listener that accepted them had the option too.
#[test]
fn a_new_server_binds_the_port_right_after_the_master_stops() {
    let mut server = Server::start("prefork");
    server.online(1);
    server.online(2);
    for _ in 0..4 {
        let answer = raw_request(
            server.port,
            b"GET /hello HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n",
        );
        let (status, _) = status_and_body(&answer);
        assert!(status.starts_with("HTTP/1.1 200"), "answer {:?}", text(&answer));
    }
    assert!(time_wait_on(server.port) > 0, "no connection in TIME_WAIT on the port");
    let code = server.stop();
    assert_eq!(code, 0, "master exit status; log:\n{}", server.log.join("\n"));
    assert!(time_wait_on(server.port) > 0, "no connection left in TIME_WAIT on the port");
    if let Err(e) = TcpListener::bind(("127.0.0.1", server.port)) {
        panic!("binding port {} after the master stopped: {e}", server.port);
    }
}

/// `prefork` answers a request head past 8 KiB with 431 and serves one just under it.
#[test]
fn prefork_bounds_request_heads() {
    let mut server = Server::start("prefork");
    server.online(1);
    server.online(2);
    let request = |pad: usize| {
        let mut request = b"GET /hello HTTP/1.1\r\nhost: 127.0.0.1\r\nx-pad: ".to_vec();
        request.extend(std::iter::repeat_n(b'a', pad));
        request.extend_from_slice(b"\r\nconnection: close\r\n\r\n");
        request
    };
    let answer = raw_request(server.port, &request(16 << 10));
    let (status, _) = status_and_body(&answer);
    assert!(status.starts_with("HTTP/1.1 431"), "oversized head: {:?}", text(&answer));
    let answer = raw_request(server.port, &request(6 << 10));
    let (status, _) = status_and_body(&answer);
    assert!(status.starts_with("HTTP/1.1 200"), "6 KiB head: {:?}", text(&answer));
    assert_eq!(server.stop(), 0, "master exit status; log:\n{}", server.log.join("\n"));
}

/// `prefork` answers a request whose cookie header is not UTF-8: a session id that is not
/// UTF-8 is no session (a new one is made), and the other cookies of the header still count.
#[test]
fn prefork_answers_a_cookie_that_is_not_utf8() {
    let mut server = Server::start("prefork");
    server.online(1);
    server.online(2);
    let mut client = Client::new(server.port);
    client.hello();
    let sid = client.jar.get("sid").expect("a session cookie").clone();

    let answer = raw_request(
        server.port,
        b"GET /hello HTTP/1.1\r\nhost: 127.0.0.1\r\ncookie: sid=\xff\xfe\x80\r\n\r\n",
    );
    let (status, body) = status_and_body(&answer);
    assert!(status.starts_with("HTTP/1.1 200"), "answer {:?}", text(&answer));
    assert!(body.contains("\"Hello from worker "), "a new session: {body}");
    assert!(text(&answer).contains("set-cookie: sid="), "{:?}", text(&answer));

    let mut request =
        b"GET /hello HTTP/1.1\r\nhost: 127.0.0.1\r\ncookie: theme=\xff\xfe; sid=".to_vec();
    request.extend_from_slice(sid.as_bytes());
    request.extend_from_slice(b"\r\n\r\n");
    let answer = raw_request(server.port, &request);
    let (status, body) = status_and_body(&answer);
    assert!(status.starts_with("HTTP/1.1 200"), "answer {:?}", text(&answer));
    assert!(body.contains("\"Hello again from worker "), "the session kept: {body}");
    assert_eq!(server.stop(), 0, "master exit status; log:\n{}", server.log.join("\n"));
}

/// `prefork` serves requests while 8 connections that send nothing are open: each request
/// must be answered within 5 s (each idle connection may be held for 10 s). On SIGTERM the
/// idle connections are closed: the workers exit within the grace period (5 s here, less
/// than the 10 s an idle connection could otherwise hold a worker).
#[test]
fn prefork_serves_while_connections_idle() {
    let mut server = Server::start_with("prefork", &[("SHUTDOWN_GRACE_MS", "5000")]);
    server.online(1);
    server.online(2);
    let idle: Vec<TcpStream> = (0..8).map(|_| connect(server.port).expect("connect")).collect();
    let mut client = Client::with_timeout(server.port, Duration::from_secs(5));
    client.hello();
    for _ in 0..10 {
        client.again();
    }
    let code = server.stop();
    let log = server.log.join("\n");
    assert_eq!(code, 0, "master exit status; log:\n{log}");
    assert!(!log.contains("SIGKILL"), "{log}");
    drop(idle);
}

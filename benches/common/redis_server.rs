//! A `redis-server` of the bench's own on 127.0.0.1: a free port, persistence off, killed
//! and reaped on drop. Benches that need one skip their Redis part, with one printed line,
//! when `redis-server` is not on PATH.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Child,
    dir: std::path::PathBuf,
    port: u16,
}

impl RedisServer {
    /// `None` (after saying why) when `redis-server` is not on PATH or does not start.
    pub fn start(dir: &std::path::Path) -> Option<RedisServer> {
        let port = TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let dir = dir.join(format!("redis-{port}"));
        std::fs::create_dir_all(&dir).ok()?;
        let spawned = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", ""])
            .args(["--appendonly", "no", "--dir"])
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn();
        let Ok(child) = spawned else {
            println!(
                "redis-server is not on PATH: the Redis benchmarks are skipped (apt-get install redis-server)"
            );
            return None;
        };
        let server = RedisServer { child, dir, port };
        let client = redis::Client::open(server.url()).ok()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while client.get_connection().is_err() {
            if Instant::now() > deadline {
                println!("redis-server did not accept connections within 10 s: skipped");
                return None;
            }
            // Waiting for the server to listen, bounded by the deadline above.
            std::thread::sleep(Duration::from_millis(10));
        }
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A new connection of its own (RESP2), for the bench's direct commands.
    pub fn connect(&self) -> redis::Connection {
        redis::Client::open(self.url()).expect("URL").get_connection().expect("connect")
    }

    /// How many times `command` (lower case) has run, from `INFO commandstats`.
    pub fn calls(conn: &mut redis::Connection, command: &str) -> u64 {
        let info: String = redis::cmd("INFO").arg("commandstats").query(conn).expect("INFO");
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

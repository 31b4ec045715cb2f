//! How the tier's commands travel to Redis, and the connections they travel on.
//!
//! - [`Link::Blocking`]: a connection from the process's pool, the calling thread waiting for
//!   the reply (the public methods). [`run_blocking`] runs a call on it to its end.
//! - [`Link::Async`]: a multiplexed connection (the adapters), whose replies the caller's task
//!   awaits. Its driver task runs on the Tokio runtime that opened it, so each thread that
//!   runs a current-thread runtime (the examples' workers, actix-web's worker threads) opens
//!   its own, and a multi-thread runtime shares one among its threads.
//!
//! A runtime dropped and replaced on the same thread leaves that thread's connection without
//! its driver: its next call fails, and the one after connects again.
//!
//! Every connection is made within the timeout, a host name's lookup included ([`lookup`]:
//! the multiplexed ones' by redis-rs itself).
//!
//! A connection that failed, whatever the failure (a timeout, a closed socket, or an error
//! reply such as `READONLY` from a replica after a failover), is dropped: the next call
//! connects again. Connections inherited through `fork()` belong to the parent: the child
//! never uses them and drops them without running their destructors (a multiplexed one's
//! would wake the parent's runtime, copied into the child mid-flight).
#![forbid(unsafe_code)]

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Connection, ConnectionAddr, FromRedisValue, Pipeline, RedisError,
};
use tokio::runtime::{Handle, RuntimeFlavor};

use crate::{Result, StoreError};

/// Idle connections a process keeps for later blocking calls; more, opened while many calls
/// ran at once, are closed when their call ends.
const MAX_IDLE: usize = 16;
/// Multiplexed connections kept, one per thread with a current-thread runtime (and one for
/// multi-thread runtimes); past it, the oldest is dropped (its thread, if still there, opens
/// another).
const MAX_MULTIPLEXED: usize = 64;

/// How a call's commands travel to Redis.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Link {
    /// On a pooled connection, the calling thread waiting for the reply.
    Blocking,
    /// On a multiplexed connection of the caller's runtime: its thread serves other tasks
    /// meanwhile. Only the adapters make calls on it.
    #[cfg_attr(not(any(feature = "tower-sessions", feature = "actix-session")), allow(dead_code))]
    Async,
}

/// The output of `call`, a future that runs on [`Link::Blocking`] and so never waits for a
/// wake-up: it is ready at its first poll.
pub(super) fn run_blocking<T>(call: impl Future<Output = T>) -> T {
    match pin!(call).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => unreachable!("a call on Link::Blocking awaits nothing"),
    }
}

/// The addresses of `host` (an IP address as it is, a name looked up on a thread of its
/// own) within `timeout`: past it, `TimedOut`, and the lookup is left to end on its own, so
/// that a resolver that hangs holds no caller past the timeout.
pub(super) fn lookup(host: &str, port: u16, timeout: Duration) -> io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let (found, answer) = mpsc::channel();
    let name = (host.to_owned(), port);
    std::thread::Builder::new().name("css-redis-lookup".into()).spawn(move || {
        let _ = found.send(name.to_socket_addrs().map(Vec::from_iter));
    })?;
    let addrs = answer.recv_timeout(timeout).map_err(|_| {
        io::Error::new(io::ErrorKind::TimedOut, format!("looking up {host} took over {timeout:?}"))
    })??;
    if addrs.is_empty() {
        return Err(io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address")));
    }
    Ok(addrs)
}

/// A multiplexed connection and whose it is.
struct Multiplexed {
    /// The process that opened it.
    pid: u32,
    /// The thread whose current-thread runtime drives it; `None` for a multi-thread runtime.
    thread: Option<ThreadId>,
    /// Tells it apart from a later connection of the same owner.
    generation: u64,
    /// Always `Some` until dropped.
    conn: Option<MultiplexedConnection>,
}

impl Drop for Multiplexed {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if self.pid != std::process::id() {
                std::mem::forget(conn);
            }
        }
    }
}

/// One process's connections to one Redis, for both links.
pub(super) struct Connections {
    client: redis::Client,
    timeout: Duration,
    /// Idle blocking connections, and the process they were opened in.
    pool: Mutex<(u32, Vec<Connection>)>,
    multiplexed: Mutex<Vec<Multiplexed>>,
    generations: AtomicU64,
}

/// The owner a multiplexed connection opened now would have: this thread if it runs a
/// current-thread runtime, else the multi-thread runtime's threads together.
fn owner() -> Option<ThreadId> {
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::CurrentThread) => Some(std::thread::current().id()),
        _ => None,
    }
}

impl Connections {
    pub fn new(client: redis::Client, timeout: Duration) -> Connections {
        Connections {
            client,
            timeout,
            pool: Mutex::new((std::process::id(), Vec::new())),
            multiplexed: Mutex::new(Vec::new()),
            generations: AtomicU64::new(0),
        }
    }

    /// The store's error for `e`, met in the call `what`.
    fn failed(&self, what: &'static str, e: RedisError) -> StoreError {
        StoreError::Redis {
            op: what,
            timed_out: e.is_timeout(),
            timeout: self.timeout,
            message: e.to_string(),
        }
    }

    /// Sends `pipe` over `link` and reads its replies as `T` (a tuple, one element per
    /// command). `what` names the call in its error.
    pub async fn query<T: FromRedisValue>(
        &self,
        link: Link,
        what: &'static str,
        pipe: &Pipeline,
    ) -> Result<T> {
        match link {
            Link::Blocking => self.blocking(what, |c| pipe.query(c)),
            Link::Async => {
                let (generation, mut conn) =
                    self.multiplexed().await.map_err(|e| self.failed(what, e))?;
                let replies = pipe.query_async(&mut conn).await;
                if replies.is_err() {
                    self.slots().retain(|m| m.generation != generation);
                }
                replies.map_err(|e| self.failed(what, e))
            }
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Vec<Multiplexed>> {
        self.multiplexed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The caller's multiplexed connection and its generation, opened if it has none.
    /// Concurrent first calls of one owner may each open one: the first kept serves the
    /// later calls, the others only their own.
    async fn multiplexed(&self) -> redis::RedisResult<(u64, MultiplexedConnection)> {
        let (pid, thread) = (std::process::id(), owner());
        let kept = |slots: &mut Vec<Multiplexed>| {
            // Inherited ones go (without their destructors' effects: `Multiplexed::drop`).
            slots.retain(|m| m.pid == pid);
            let found = slots.iter().find(|m| m.thread == thread);
            found.and_then(|m| Some((m.generation, m.conn.clone()?)))
        };
        if let Some(found) = kept(&mut self.slots()) {
            return Ok(found);
        }
        let timeout = Some(self.timeout);
        let settings = AsyncConnectionConfig::new()
            .set_connection_timeout(timeout)
            .set_response_timeout(timeout);
        let conn = self.client.get_multiplexed_async_connection_with_config(&settings).await?;
        let mut slots = self.slots();
        if let Some(found) = kept(&mut slots) {
            return Ok(found);
        }
        if slots.len() >= MAX_MULTIPLEXED {
            slots.remove(0);
        }
        let generation = self.generations.fetch_add(1, Relaxed);
        slots.push(Multiplexed { pid, thread, generation, conn: Some(conn.clone()) });
        Ok((generation, conn))
    }

    /// A new blocking connection, made within the timeout: a host name is looked up first
    /// ([`lookup`]), then its addresses tried in turn while time is left.
    fn connect(&self) -> redis::RedisResult<Connection> {
        let info = self.client.get_connection_info();
        let ConnectionAddr::Tcp(host, port) = info.addr() else {
            return self.client.get_connection_with_timeout(self.timeout);
        };
        let deadline = Instant::now() + self.timeout;
        let mut last = None;
        for addr in lookup(host, *port, self.timeout)? {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let at = ConnectionAddr::Tcp(addr.ip().to_string(), addr.port());
            match redis::Client::open(info.clone().set_addr(at))
                .and_then(|client| client.get_connection_with_timeout(left))
            {
                Ok(conn) => return Ok(conn),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no connection within {:?}", self.timeout),
            )
            .into()
        }))
    }

    /// Runs `op` on a pooled connection (opened if none is idle); a connection that failed
    /// is dropped, not pooled.
    pub fn blocking<T>(
        &self,
        what: &'static str,
        op: impl FnOnce(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<T> {
        let fail = |e: RedisError| self.failed(what, e);
        let idle = {
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            let pid = std::process::id();
            if pool.0 != pid {
                // The parent's connections, inherited by a fork: closing this process's copies
                // of their sockets leaves the parent's open (a `Connection` sends nothing when
                // dropped).
                pool.1.clear();
                pool.0 = pid;
            }
            pool.1.pop()
        };
        let mut conn = match idle {
            Some(conn) => conn,
            None => {
                let conn = self.connect().map_err(fail)?;
                conn.set_read_timeout(Some(self.timeout)).map_err(fail)?;
                conn.set_write_timeout(Some(self.timeout)).map_err(fail)?;
                conn
            }
        };
        let result = op(&mut conn).map_err(fail)?;
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if pool.0 == std::process::id() && pool.1.len() < MAX_IDLE {
            pool.1.push(conn);
        }
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ip_address_needs_no_lookup_and_a_name_is_looked_up() {
        let at = |host| lookup(host, 6379, Duration::from_secs(5)).unwrap();
        assert_eq!(at("127.0.0.1"), [SocketAddr::from(([127, 0, 0, 1], 6379))]);
        assert_eq!(at("::1"), [SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 6379))]);
        assert!(at("localhost").iter().all(|a| a.ip().is_loopback() && a.port() == 6379));
    }
}

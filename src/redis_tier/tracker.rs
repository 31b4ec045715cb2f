//! The master's tracker: one RESP3 connection to Redis with broadcast client tracking on
//! the tier's prefix, whose `invalidate` pushes it applies to the segment, and the cache
//! words it keeps (the epoch, the invalidation count, the heartbeat, the moment of a loss).
//!
//! The connection is its own socket: `poll(2)` waits for bytes, frames are cut whole from
//! the tracker's own buffer ([`frame_len`]) and parsed by `redis::parse_redis_value`, so a
//! wait for pushes never times out in the middle of one, and no frame already received waits
//! in a parser's buffer while the tracker polls. It is silent
//! between pushes; after a quarter of the timeout without a byte the tracker sends `PING`, and
//! a `PING` unanswered for the whole timeout is a lost connection. The poll also watches one
//! end of a socket pair, which [`Tracker::stop`] writes to: a master's drop ends the wait at
//! once, whatever the timeout.
//!
//! **Epoch.** Odd while a tracker is armed, moved on only by compare-and-swap from a value
//! the mover saw: arming takes an even epoch to the next odd one; a loss, or the tracker
//! stopping, takes its own odd epoch to the next even one (and stores the moment in the loss
//! word). So two trackers at once (the old and the new master of a handover) cannot undo each
//! other: the one that did not arm applies invalidations too but moves nothing, and arms when
//! the other lets go, or when the other's heartbeat is a timeout old (a master killed with
//! SIGKILL) by moving the odd epoch two on.
#![forbid(unsafe_code)]

use std::io::Write;
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use redis::{ConnectionAddr, PushKind, Value};

use super::{armed, RedisConfig};
use crate::clock::now_ms;
use crate::format::layout::{
    H_CACHE_BEAT_MS, H_CACHE_EPOCH, H_CACHE_INVALIDATIONS, H_CACHE_LOST_MS,
};
use crate::lock::fork_gate;
use crate::ClusterStore;

/// The longest wait between two attempts to connect.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The tracker thread of a master; stopped (and its epoch let go) by [`Tracker::stop`].
pub(crate) struct Tracker {
    stopped: Arc<AtomicBool>,
    /// A byte written here wakes the thread from its wait for frames.
    wake: UnixStream,
    thread: JoinHandle<()>,
    /// Disconnected when the thread ends.
    ended: std::sync::mpsc::Receiver<()>,
    timeout: Duration,
}

impl Tracker {
    pub fn start(store: ClusterStore, config: RedisConfig) -> std::io::Result<Tracker> {
        let stopped = Arc::new(AtomicBool::new(false));
        let (ending, ended) = std::sync::mpsc::channel::<()>();
        let (wake, woken) = UnixStream::pair()?;
        let timeout = config.timeout;
        let thread = std::thread::Builder::new().name("css-redis-tracker".into()).spawn({
            let stopped = Arc::clone(&stopped);
            move || {
                let _ending = ending;
                Tracking::new(store, config, woken).run(&stopped)
            }
        })?;
        Ok(Tracker { stopped, wake, thread, ended, timeout })
    }

    /// Stops the thread, which lets its epoch go, and waits for it for twice the timeout:
    /// past that (a unix socket that does not accept) the thread is left to end on its own,
    /// and the master's drop goes on.
    pub fn stop(self) {
        self.stopped.store(true, SeqCst);
        // Wakes it whether it waits for frames (poll) or to connect again (park).
        let _ = (&self.wake).write_all(&[1]);
        self.thread.thread().unpark();
        match self.ended.recv_timeout(self.timeout * 2) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                tracing::warn!("the Redis tracker did not stop in time; left to end on its own")
            }
            _ => drop(self.thread.join()),
        }
    }
}

/// Why a connection ended.
type Lost = String;

struct Tracking {
    store: ClusterStore,
    config: RedisConfig,
    /// Readable once [`Tracker::stop`] has run.
    woken: UnixStream,
    /// The odd epoch this tracker armed, while it holds it.
    armed: Option<u64>,
}

/// The socket, either kind.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn set_timeouts(&self, timeout: Duration) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => {
                s.set_read_timeout(Some(timeout)).and(s.set_write_timeout(Some(timeout)))
            }
            Stream::Unix(s) => {
                s.set_read_timeout(Some(timeout)).and(s.set_write_timeout(Some(timeout)))
            }
        }
    }
}

/// Ends the connection for every process that holds it, not only this one: a worker forked
/// before it was marked [`fork_gate::parent_only`] (or past the marks' slots) holds a copy of
/// the socket, which would otherwise keep Redis's tracking client alive, and its unread
/// pushes piling up in Redis's memory, until it exits. Then unmarks it, before it closes.
impl Drop for Stream {
    fn drop(&mut self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Both),
        };
        fork_gate::unmark(self.as_fd().as_raw_fd());
    }
}

impl std::io::Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
        }
    }
}

/// One tracking connection: the socket, and the bytes read from it that no frame has taken
/// yet. Frames are cut from that buffer here ([`frame_len`]) and only whole ones are given to
/// `redis::parse_redis_value`, so no byte ever waits in a parser while `poll` waits on the
/// socket.
struct Conn {
    stream: Stream,
    /// The tracker's wake-up socket (a duplicate): readable once it is to stop.
    woken: UnixStream,
    buf: Vec<u8>,
    /// How long the rest of a frame may take once its first byte is here.
    timeout: Duration,
}

impl Conn {
    /// Sends a command, its arguments as RESP bulk strings.
    fn send(&mut self, args: &[&[u8]]) -> Result<(), Lost> {
        let mut packed = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            packed.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            packed.extend_from_slice(arg);
            packed.extend_from_slice(b"\r\n");
        }
        self.stream.write_all(&packed).map_err(|e| format!("send: {e}"))
    }

    /// The next frame, waiting at most `wait` for one to begin (`None` if none did), and at
    /// most the timeout for the rest of one begun; "stopped" at once if the tracker is to
    /// stop.
    fn next(&mut self, wait: Duration) -> Result<Option<Value>, Lost> {
        let idle = Instant::now() + wait;
        let mut rest: Option<Instant> = None;
        loop {
            if let Some(len) = frame_len(&self.buf)? {
                let value = redis::parse_redis_value(&self.buf[..len])
                    .map_err(|e| format!("a frame that does not parse: {e}"))?;
                self.buf.drain(..len);
                return Ok(Some(value));
            }
            let until = match self.buf.is_empty() {
                true => idle,
                false => *rest.get_or_insert_with(|| Instant::now() + self.timeout),
            };
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return match self.buf.is_empty() {
                    true => Ok(None),
                    false => Err(format!("a frame cut short for {:?}", self.timeout)),
                };
            }
            let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
            let mut fds = [
                PollFd::new(self.stream.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.woken.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                Ok(_) if fds[1].any().unwrap_or(true) => return Err("stopped".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("poll: {e}")),
            }
            let mut chunk = [0u8; 4096];
            match std::io::Read::read(&mut self.stream, &mut chunk) {
                Ok(0) => return Err("the server closed the connection".into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }

    /// A command's reply, applying the pushes that come before it.
    fn call(
        &mut self,
        tracking: &mut Tracking,
        args: &[&[u8]],
        timeout: Duration,
    ) -> Result<Value, Lost> {
        self.send(args)?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left)? {
                Some(Value::Push { kind, data }) => tracking.apply_or_let_go(&kind, &data),
                Some(Value::ServerError(e)) => {
                    return Err(format!("{} refused: {e:?}", String::from_utf8_lossy(args[0])))
                }
                Some(reply) => return Ok(reply),
                None if left.is_zero() => return Err("no reply within the timeout".into()),
                None => {}
            }
        }
    }
}

impl Tracking {
    fn new(store: ClusterStore, config: RedisConfig, woken: UnixStream) -> Tracking {
        Tracking { store, config, woken, armed: None }
    }

    fn word(&self, at: usize) -> &AtomicU64 {
        self.store.cache_word(at)
    }

    fn run(mut self, stopped: &AtomicBool) {
        let mut backoff = Duration::from_millis(10);
        while !stopped.load(SeqCst) {
            let lost = match self.connect() {
                Ok(mut conn) => {
                    backoff = Duration::from_millis(10);
                    self.serve(&mut conn, stopped)
                }
                Err(e) => e,
            };
            self.let_go();
            if stopped.load(SeqCst) {
                break;
            }
            tracing::warn!(namespace = self.store.name(), reason = %lost, "Redis tracking lost; cache hits stop until it is armed again");
            std::thread::park_timeout(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        self.let_go();
    }

    /// Connects, says `HELLO 3` (with the URL's credentials), selects the URL's database,
    /// names itself and turns tracking on.
    fn connect(&mut self) -> Result<Conn, Lost> {
        let timeout = self.config.timeout;
        let info = self.config.client.get_connection_info().clone();
        let stream = match info.addr() {
            ConnectionAddr::Tcp(host, port) => {
                let addrs =
                    super::link::lookup(host, *port, timeout).map_err(|e| format!("{e}"))?;
                let mut last = format!("{host}:{port} resolves to no address");
                let mut stream = None;
                for addr in addrs {
                    match TcpStream::connect_timeout(&addr, timeout) {
                        Ok(s) => {
                            let _ = s.set_nodelay(true);
                            stream = Some(Stream::Tcp(s));
                            break;
                        }
                        Err(e) => last = format!("connect to {addr}: {e}"),
                    }
                }
                stream.ok_or(last)?
            }
            ConnectionAddr::Unix(path) => Stream::Unix(
                UnixStream::connect(path).map_err(|e| format!("connect to {path:?}: {e}"))?,
            ),
            _ => return Err("TLS is not supported".into()),
        };
        // The master's alone: a worker forked from now on closes its copy at once, so the
        // connection ends when the master leaves it or dies.
        fork_gate::parent_only(stream.as_fd().as_raw_fd());
        stream.set_timeouts(timeout).map_err(|e| format!("socket timeouts: {e}"))?;
        let woken = self.woken.try_clone().map_err(|e| format!("wake-up socket: {e}"))?;
        let mut conn = Conn { stream, woken, buf: Vec::new(), timeout };
        let redis = info.redis_settings();
        let mut hello: Vec<&[u8]> = vec![b"HELLO", b"3"];
        if let Some(password) = redis.password() {
            hello.extend([&b"AUTH"[..], redis.username().unwrap_or("default").as_bytes()]);
            hello.push(password.as_bytes());
        }
        conn.call(self, &hello, timeout)?;
        let db = redis.db().to_string();
        if redis.db() != 0 {
            conn.call(self, &[b"SELECT", db.as_bytes()], timeout)?;
        }
        let name = format!("css-tracker-{}", self.store.name());
        conn.call(self, &[b"CLIENT", b"SETNAME", name.as_bytes()], timeout)?;
        let prefix = self.config.prefix.clone();
        let tracking: [&[u8]; 6] =
            [b"CLIENT", b"TRACKING", b"ON", b"BCAST", b"PREFIX", prefix.as_bytes()];
        conn.call(self, &tracking, timeout)?;
        Ok(conn)
    }

    /// Applies pushes until the connection is lost or the tracker stops; pings when idle,
    /// beats and arms on every wake.
    fn serve(&mut self, conn: &mut Conn, stopped: &AtomicBool) -> Lost {
        let timeout = self.config.timeout;
        let tick = timeout / 4;
        let mut ping: Option<Instant> = None;
        let mut heard = Instant::now();
        loop {
            if stopped.load(SeqCst) {
                return "stopped".into();
            }
            self.tick();
            match conn.next(tick) {
                Ok(Some(Value::Push { kind, data })) => {
                    heard = Instant::now();
                    self.apply_or_let_go(&kind, &data);
                }
                Ok(Some(_)) => {
                    heard = Instant::now();
                    ping = None;
                }
                Ok(None) => {}
                Err(e) => return e,
            }
            match ping {
                Some(sent) if sent.elapsed() >= timeout => {
                    return format!("PING unanswered for {timeout:?}");
                }
                None if heard.elapsed() >= tick => {
                    if let Err(e) = conn.send(&[b"PING"]) {
                        return e;
                    }
                    ping = Some(Instant::now());
                }
                _ => {}
            }
        }
    }

    /// Beats while armed; arms when the epoch is free (even), or held by a tracker whose
    /// heartbeat is a timeout old.
    fn tick(&mut self) {
        let epoch = self.word(H_CACHE_EPOCH).load(SeqCst);
        let now = now_ms();
        if self.armed == Some(epoch) {
            self.word(H_CACHE_BEAT_MS).store(now, SeqCst);
            return;
        }
        self.armed = None;
        let timeout = RedisConfig::ms(self.config.timeout);
        let trusted_until = self.word(H_CACHE_BEAT_MS).load(SeqCst).saturating_add(timeout);
        let stale = trusted_until < now;
        let cas = |from: u64, to: u64| {
            self.word(H_CACHE_EPOCH).compare_exchange(from, to, SeqCst, SeqCst).is_ok()
        };
        // The epoch moves before the beat does (workers load the beat first): a worker
        // that sees the new beat sees an epoch under which no old copy answers.
        let next = match (armed(epoch), stale) {
            (false, _) if cas(epoch, epoch + 1) => epoch + 1,
            // A dead or stuck tracker's epoch: ended first, as a loss would end it, at the
            // moment its heartbeat stopped counting.
            (true, true) if cas(epoch, epoch + 1) => {
                self.word(H_CACHE_LOST_MS).store(trusted_until, SeqCst);
                self.word(H_CACHE_BEAT_MS).store(now, SeqCst);
                if !cas(epoch + 1, epoch + 2) {
                    return;
                }
                epoch + 2
            }
            _ => return,
        };
        self.word(H_CACHE_BEAT_MS).store(now, SeqCst);
        self.armed = Some(next);
        tracing::info!(namespace = self.store.name(), epoch = next, "Redis tracking armed");
    }

    /// Ends this tracker's trust: its epoch, if it still holds it, moves on to even.
    fn let_go(&mut self) {
        if let Some(armed) = self.armed.take() {
            self.word(H_CACHE_LOST_MS).store(now_ms(), SeqCst);
            let _ = self.word(H_CACHE_EPOCH).compare_exchange(armed, armed + 1, SeqCst, SeqCst);
        }
    }

    /// An `invalidate` push: its keys removed from the segment, or everything for a flush
    /// (a nil), each after the invalidation count moves on (so a fill that began before it
    /// cannot store what it fetched). Other pushes are ignored.
    fn apply(&self, kind: &PushKind, data: &[Value]) -> crate::Result<()> {
        if *kind != PushKind::Invalidate {
            return Ok(());
        }
        let prefix = self.config.prefix.as_bytes();
        let counter = self.word(H_CACHE_INVALIDATIONS);
        match data.first() {
            Some(Value::Array(keys)) => keys.iter().try_for_each(|key| {
                let Value::BulkString(key) = key else { return Ok(()) };
                let sid = key.strip_prefix(prefix).and_then(|s| std::str::from_utf8(s).ok());
                counter.fetch_add(1, SeqCst);
                // A key the segment cannot hold (empty, too long, not UTF-8) has no copy.
                match sid.filter(|sid| crate::store::key_bytes(sid).is_ok()) {
                    Some(sid) => self.store.destroy(sid).map(drop),
                    None => Ok(()),
                }
            }),
            _ => {
                counter.fetch_add(1, SeqCst);
                self.store.clear()
            }
        }
    }

    /// [`apply`](Self::apply); one that fails (a shard lock timed out) may have left a stale
    /// copy, so this tracker lets its epoch go and arms again under a new one.
    fn apply_or_let_go(&mut self, kind: &PushKind, data: &[Value]) {
        if let Err(e) = self.apply(kind, data) {
            tracing::warn!(namespace = self.store.name(), error = %e, "an invalidation could not be applied; the cached copies are dropped from trust");
            self.let_go();
        }
    }
}

/// The length of the RESP2/RESP3 frame at the start of `buf`, `None` if it is not all there
/// yet; an error for a byte that begins no frame.
fn frame_len(buf: &[u8]) -> Result<Option<usize>, Lost> {
    let Some(&kind) = buf.first() else { return Ok(None) };
    let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else { return Ok(None) };
    let head = eol + 2;
    let number = || -> Result<i64, Lost> {
        std::str::from_utf8(&buf[1..eol])
            .ok()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("a frame header that is not a length: {:?}", &buf[..eol]))
    };
    match kind {
        // A line: simple string, error, integer, null, boolean, double, big number.
        b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => Ok(Some(head)),
        // A blob: string, error, verbatim string; -1 is RESP2's null.
        b'$' | b'!' | b'=' => match number()? {
            n if n < 0 => Ok(Some(head)),
            n => {
                let end = head + n as usize + 2;
                Ok((buf.len() >= end).then_some(end))
            }
        },
        // An aggregate: array, set, push, map and attribute (two frames an entry). An
        // attribute is followed by the frame it annotates.
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let count = number()?;
            let frames = if matches!(kind, b'%' | b'|') { count * 2 } else { count };
            let mut at = head;
            for _ in 0..frames.max(0) {
                match frame_len(&buf[at..])? {
                    Some(len) => at += len,
                    None => return Ok(None),
                }
            }
            if kind == b'|' {
                return Ok(frame_len(&buf[at..])?.map(|len| at + len));
            }
            Ok(Some(at))
        }
        other => Err(format!("a frame of unknown type {:?}", other as char)),
    }
}

#[cfg(test)]
mod tests {
    use super::frame_len;

    #[test]
    fn frames_are_cut_whole_and_only_whole() {
        let frames: [&[u8]; 8] = [
            b"+OK\r\n",
            b"$5\r\nhello\r\n",
            b"$-1\r\n",
            b"_\r\n",
            b">2\r\n$10\r\ninvalidate\r\n*1\r\n$3\r\nk:1\r\n",
            b">2\r\n$10\r\ninvalidate\r\n_\r\n",
            b"%1\r\n+server\r\n+redis\r\n",
            b"|1\r\n+a\r\n:1\r\n+OK\r\n",
        ];
        for frame in frames {
            assert_eq!(frame_len(frame).unwrap(), Some(frame.len()), "{frame:?}");
            for cut in 0..frame.len() {
                assert_eq!(frame_len(&frame[..cut]).unwrap(), None, "{frame:?} cut at {cut}");
            }
            let mut two = frame.to_vec();
            two.extend_from_slice(b"+PONG\r\n");
            assert_eq!(frame_len(&two).unwrap(), Some(frame.len()));
        }
        assert!(frame_len(b"?what\r\n").is_err());
    }
}

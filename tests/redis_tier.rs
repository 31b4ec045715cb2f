//! The Redis tier against a real `redis-server` of the test's own: two stores of one process,
//! each with its master's tracker, stand for two hosts (`tests/hello_examples.rs` runs two
//! example masters with forked workers), and a master in a forked process is killed with
//! SIGKILL. Every wait for what the trackers do is bounded polling. The tests run one at a
//! time (`common::serial`): one of them forks.

mod common;
#[path = "common/redis_server.rs"]
mod redis_server;

use std::time::{Duration, Instant};

use cluster_session_store::{
    Backing, ClusterStore, Config, Expiry, Master, RedisConfig, RedisStore, StoreError,
};
use redis_server::{until, RedisServer};

/// How long a push may take to reach a host; the bound for a logout.
const HOP: Duration = Duration::from_millis(100);
/// The tier's timeout in the tests of what a timeout ends: a stopped Redis, a dead master.
const TIMEOUT: Duration = Duration::from_millis(300);
/// The tier's timeout elsewhere: long enough that a heartbeat delayed by a loaded machine's
/// scheduling never ends the trust that a test's hits rely on.
const TRUST: Duration = Duration::from_secs(5);

struct Host {
    _master: Master,
    store: RedisStore,
    name: String,
}

/// Every test ends with each host's segment passing its integrity check.
impl Drop for Host {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let report = self.store.local().check_integrity();
            assert!(report.is_ok(), "{}: {:?}", self.name, report.problems);
        }
    }
}

fn host(redis: &RedisServer, tweak: impl FnOnce(RedisConfig) -> RedisConfig) -> Host {
    let name = common::unique_name("redis");
    let config = tweak(RedisConfig::new(&redis.url()).unwrap().timeout(TIMEOUT));
    let master = ClusterStore::setup(common::config(&name).redis(config.clone())).unwrap();
    let store = RedisStore::new(ClusterStore::open(&name).unwrap(), config);
    until(common::WAIT, "the tracker armed", || store.trusted());
    Host { _master: master, store, name }
}

fn two_hosts() -> (RedisServer, Host, Host) {
    let redis = RedisServer::start();
    let (a, b) = (host(&redis, |c| c.timeout(TRUST)), host(&redis, |c| c.timeout(TRUST)));
    (redis, a, b)
}

/// Waits until the host's copy of `sid` answers (a read that calls no `GET`): the
/// invalidations of the writes before it have come back and a read has filled the segment
/// since.
fn cached(redis: &mut RedisServer, host: &Host, sid: &str) {
    cached_in(redis, &host.store, sid);
}

fn cached_in(redis: &mut RedisServer, store: &RedisStore, sid: &str) {
    until(common::WAIT, &format!("{} serves {sid} from its segment", store.local().name()), || {
        let gets = redis.calls("get");
        assert!(store.get_raw(sid).unwrap().is_some(), "{sid} is gone");
        redis.calls("get") == gets
    });
}

/// The session as this host reads it, waiting out the invalidation hop for `want`.
fn reads_within_a_hop(host: &Host, sid: &str, want: Option<&[u8]>) -> Duration {
    until(HOP, &format!("{} reads {want:?}", host.name), || {
        host.store.get_raw(sid).unwrap().as_deref() == want
    })
}

#[test]
fn a_session_written_on_one_host_is_read_on_the_other_and_a_hit_calls_nothing() {
    let _serial = common::serial();
    let (mut redis, a, b) = two_hosts();
    assert!(a.store.add_raw("s1", b"from a", Expiry::After(common::LONG)).unwrap());
    assert_eq!(b.store.get_raw("s1").unwrap().as_deref(), Some(&b"from a"[..]));
    // A read fills B's segment: the next reads are hits, with no call to Redis.
    cached(&mut redis, &b, "s1");
    let gets = redis.calls("get");
    for _ in 0..10 {
        assert_eq!(b.store.get_raw("s1").unwrap().as_deref(), Some(&b"from a"[..]));
    }
    assert_eq!(redis.calls("get"), gets, "a hit called Redis");
    // Redis's TTL is the session's expiry.
    let ttl: i64 = redis.cmd(&["PTTL", "session:s1"]);
    assert!(ttl > 3_000_000 && ttl <= 3_600_000, "{ttl}");
    // An id in use stays the other session's.
    assert!(!b.store.add_raw("s1", b"from b", Expiry::Default).unwrap());
    assert_eq!(a.store.get_raw("s1").unwrap().as_deref(), Some(&b"from a"[..]));
}

#[test]
fn another_hosts_write_reaches_this_hosts_cache_within_a_hop() {
    let _serial = common::serial();
    let (_redis, a, b) = two_hosts();
    a.store.set_raw("s2", b"one", Expiry::Default).unwrap();
    assert_eq!(b.store.get_raw("s2").unwrap().as_deref(), Some(&b"one"[..]));
    assert!(a.store.replace_raw("s2", b"two", Expiry::Default).unwrap());
    reads_within_a_hop(&b, "s2", Some(b"two"));
    // Read-your-writes on a host.
    assert!(b.store.replace_raw("s2", b"three", Expiry::Default).unwrap());
    assert_eq!(b.store.get_raw("s2").unwrap().as_deref(), Some(&b"three"[..]));
    reads_within_a_hop(&a, "s2", Some(b"three"));
}

#[test]
fn a_logout_on_one_host_ends_the_session_on_the_other_and_a_late_save_does_not_restore_it() {
    let _serial = common::serial();
    let (mut redis, a, b) = two_hosts();
    assert!(a.store.add_raw("s3", b"logged in", Expiry::Default).unwrap());
    // Both hosts hold a copy.
    cached(&mut redis, &a, "s3");
    cached(&mut redis, &b, "s3");
    assert!(b.store.destroy("s3").unwrap());
    reads_within_a_hop(&a, "s3", None);
    // A request on A that loaded the session before the logout saves it after: nothing.
    assert!(!a.store.replace_raw("s3", b"logged in, changed", Expiry::Default).unwrap());
    assert_eq!(a.store.get_raw("s3").unwrap(), None);
    assert_eq!(b.store.get_raw("s3").unwrap(), None);
    assert!(!a.store.touch("s3", Expiry::Default).unwrap());
}

#[test]
fn a_killed_tracking_connection_stops_the_hits_until_it_is_armed_again() {
    let _serial = common::serial();
    let (mut redis, a, _b) = two_hosts();
    a.store.set_raw("s4", b"cached", Expiry::Default).unwrap();
    cached(&mut redis, &a, "s4");
    let epoch = a.store.epoch();
    let id = redis.client_id(&format!("css-tracker-{}", a.name)).expect("A's tracker");
    let killed: i64 = redis.cmd(&["CLIENT", "KILL", "ID", &id]);
    assert_eq!(killed, 1);
    // Re-armed under a new epoch: the copy made under the old one no longer answers.
    until(common::WAIT, "A re-armed", || a.store.trusted() && a.store.epoch() > epoch + 1);
    let gets = redis.calls("get");
    assert!(a.store.get_raw("s4").unwrap().is_some());
    assert_eq!(redis.calls("get"), gets + 1, "the old copy answered");
    assert!(a.store.get_raw("s4").unwrap().is_some());
    assert_eq!(redis.calls("get"), gets + 1, "the new copy does not answer");
}

#[test]
fn a_flush_empties_every_hosts_segment() {
    let _serial = common::serial();
    let (mut redis, a, b) = two_hosts();
    for host in [&a, &b] {
        host.store.set_raw(&format!("s5-{}", host.name), b"x", Expiry::Default).unwrap();
    }
    for host in [&a, &b] {
        for other in [&a, &b] {
            cached(&mut redis, host, &format!("s5-{}", other.name));
        }
        assert_eq!(host.store.local().length().unwrap(), 2);
    }
    let () = redis.cmd(&["FLUSHALL"]);
    for host in [&a, &b] {
        until(HOP, "the segment emptied", || host.store.local().length().unwrap() == 0);
        assert_eq!(host.store.get_raw(&format!("s5-{}", a.name)).unwrap(), None);
    }
    assert_eq!(a.store.length().unwrap(), 0);
}

#[test]
fn a_stopped_redis_gives_typed_errors_within_the_timeout_and_both_hosts_recover() {
    let _serial = common::serial();
    let mut redis = RedisServer::start();
    let (a, b) = (host(&redis, |c| c), host(&redis, |c| c));
    let stale = host(&redis, |c| c.serve_stale_for(common::LONG));
    a.store.set_raw("s6", b"before", Expiry::Default).unwrap();
    for host in [&a, &stale] {
        cached(&mut redis, host, "s6");
    }
    redis.pause();
    let timed_out = |result: Result<_, StoreError>| match result {
        Err(StoreError::Redis { timed_out: true, timeout, .. }) => assert_eq!(timeout, TIMEOUT),
        other => panic!("not a Redis timeout: {other:?}"),
    };
    let start = Instant::now();
    timed_out(b.store.set_raw("s6", b"during", Expiry::Default));
    // A first call (it connects) waits once, for the timeout (a bound with a margin for the
    // scheduler, not a speed target).
    assert!(start.elapsed() < TIMEOUT * 2, "{:?}", start.elapsed());
    // Once A's tracker notices, its copy no longer answers: reads fail too.
    until(common::WAIT, "A distrusts its copies", || !a.store.trusted());
    timed_out(a.store.get_raw("s6").map(drop));
    // The opt-in host serves its copy meanwhile.
    until(common::WAIT, "the stale host lost tracking", || stale.store.epoch() % 2 == 0);
    assert_eq!(stale.store.get_raw("s6").unwrap().as_deref(), Some(&b"before"[..]));

    redis.resume();
    for host in [&a, &b] {
        until(common::WAIT, "re-armed after SIGCONT", || host.store.trusted());
        host.store.set_raw("s6", b"after", Expiry::Default).unwrap();
    }
    for host in [&a, &b, &stale] {
        reads_within_a_hop(host, "s6", Some(b"after"));
    }
}

#[test]
fn a_config_that_cannot_work_is_refused_at_once() {
    let _serial = common::serial();
    for url in ["not a url", "rediss://127.0.0.1:6379/"] {
        let error = RedisConfig::new(url).unwrap_err().to_string();
        assert!(error.contains("redis"), "{url}: {error}");
    }
    let prefix = RedisConfig::new("redis://127.0.0.1:1/").unwrap().prefix("");
    assert!(matches!(prefix, Err(cluster_session_store::SetupError::InvalidConfig { .. })));
    // Values must leave room for the cached copy's epoch.
    let redis = RedisServer::start();
    let a = host(&redis, |c| c);
    let max = a.store.local().max_value_size() - 8;
    assert!(a.store.set_raw("big", &vec![7; max], Expiry::Default).is_ok());
    match a.store.set_raw("big", &vec![7; max + 1], Expiry::Default) {
        Err(StoreError::ValueTooLarge { max: m, .. }) => assert_eq!(m, max),
        other => panic!("{other:?}"),
    }
    assert_eq!(a.store.get_raw("big").unwrap().map(|v| v.len()), Some(max));
}

#[test]
fn a_config_without_a_tracker_never_serves_a_hit() {
    let _serial = common::serial();
    let mut redis = RedisServer::start();
    let name = common::unique_name("redis-untracked");
    let _master = ClusterStore::setup(common::config(&name)).unwrap();
    let config = RedisConfig::new(&redis.url()).unwrap();
    let store = RedisStore::new(ClusterStore::open(&name).unwrap(), config);
    store.set_raw("s7", b"x", Expiry::Default).unwrap();
    let gets = redis.calls("get");
    for _ in 0..3 {
        assert!(store.get_raw("s7").unwrap().is_some());
    }
    assert_eq!(redis.calls("get"), gets + 3);
    assert!(!store.trusted());
    let _ = Config::new();
}

/// A master killed with SIGKILL leaves its tracker's epoch armed but its heartbeat still:
/// within the timeout the host's copies stop answering (reads go to Redis), the segment
/// passes its integrity check, and the next master adopts it and arms under an epoch two on,
/// so that no copy of the dead tracker's time answers again.
#[test]
fn a_master_killed_with_sigkill_leaves_no_copy_trusted() {
    let _serial = common::serial();
    let mut redis = RedisServer::start();
    let name = common::unique_name("redis-kill");
    let _file = common::RemovedAtEnd(common::shm_path(&name).into());
    let config = RedisConfig::new(&redis.url()).unwrap().timeout(TIMEOUT);
    let setup = || {
        let kept = common::config(&name).backing(Backing::Named).keep_segment(true);
        ClusterStore::setup(kept.redis(config.clone())).unwrap()
    };
    let armed = common::Signal1::new();
    let mut master = common::spawn(|| {
        let _master = setup();
        let store = RedisStore::new(ClusterStore::open(&name).unwrap(), config.clone());
        // The parent's wait for the signal bounds this one.
        while !store.trusted() {
            std::thread::yield_now();
        }
        armed.notify();
        loop {
            std::thread::park();
        }
    });
    assert!(armed.wait(common::WAIT), "the child's tracker did not arm");
    let worker = RedisStore::new(ClusterStore::attach(&name).unwrap(), config.clone());
    let epoch = worker.epoch();
    worker.set_raw("s8", b"x", Expiry::Default).unwrap();
    cached_in(&mut redis, &worker, "s8");
    assert_eq!(master.kill(), 128 + 9);

    until(common::WAIT, "the copies stop answering", || !worker.trusted());
    let gets = redis.calls("get");
    assert!(worker.get_raw("s8").unwrap().is_some());
    assert_eq!(redis.calls("get"), gets + 1, "a copy of the dead tracker's epoch answered");
    assert!(worker.local().check_integrity().is_ok());

    let _next = setup();
    until(common::WAIT, "the next master armed", || worker.trusted());
    assert_eq!(worker.epoch(), epoch + 2);
    cached_in(&mut redis, &worker, "s8");
    assert!(worker.local().check_integrity().is_ok());
}

/// An invalidation of a key under the prefix that the segment cannot hold (an id longer than
/// `MAX_KEY_LEN`, written by another client) has no copy to remove: the tracker keeps its
/// epoch, and the invalidations after it are applied.
#[test]
fn an_invalidation_of_a_key_the_segment_cannot_hold_keeps_the_epoch() {
    let _serial = common::serial();
    let (mut redis, a, _b) = two_hosts();
    a.store.set_raw("s9", b"x", Expiry::Default).unwrap();
    cached(&mut redis, &a, "s9");
    let epoch = a.store.epoch();
    let long = format!("session:{}", common::too_long_key());
    let () = redis.cmd(&["SET", &long, "x"]);
    // Pushed after the long key's invalidation, on the same connection: once A reads the new
    // value, the long key's invalidation has been applied.
    let () = redis.cmd(&["SET", "session:s9", "y"]);
    reads_within_a_hop(&a, "s9", Some(b"y"));
    assert_eq!(a.store.epoch(), epoch, "the tracker let its epoch go");
}

/// Through the adapters a call that waits for Redis awaits it on the request's runtime: on
/// one current-thread runtime, a hit answers while a save waits for a stopped Redis; the save
/// and a miss fail with the tier's timeout, and after SIGCONT the same runtime's calls
/// connect again.
#[cfg(feature = "tower-sessions")]
#[test]
fn through_the_adapter_a_call_waiting_for_redis_leaves_the_runtime_serving() {
    use std::sync::{Arc, Mutex};
    use tower_sessions::session::{Id, Record};
    use tower_sessions::session_store::Error;
    use tower_sessions::SessionStore;

    let _serial = common::serial();
    let mut redis = RedisServer::start();
    let a = host(&redis, |c| c);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let store = a.store.clone();
    let mut first = visits(1);
    runtime.block_on(store.create(&mut first)).unwrap();
    cached(&mut redis, &a, &first.id.to_string());

    redis.pause();
    let timed_out = |result: Result<(), Error>| match result {
        Err(Error::Backend(message)) => assert!(message.contains("no answer within"), "{message}"),
        other => panic!("not a Redis timeout: {other:?}"),
    };
    runtime.block_on(async {
        let order = Arc::new(Mutex::new(Vec::new()));
        let start = Instant::now();
        let saver = tokio::spawn({
            let (store, order, second) = (store.clone(), Arc::clone(&order), visits(2));
            async move {
                let saved = store.save(&Record { id: first.id, ..second }).await;
                order.lock().unwrap().push("save");
                saved
            }
        });
        // The saver runs up to its wait for Redis; then the hit, on the same thread.
        tokio::task::yield_now().await;
        let hit = store.load(&first.id).await.unwrap().expect("the cached session");
        order.lock().unwrap().push("hit");
        assert_eq!(hit.data["visits"], 1);
        timed_out(saver.await.unwrap());
        assert_eq!(*order.lock().unwrap(), ["hit", "save"]);
        timed_out(store.load(&Id::default()).await.map(drop));
        // Two waits of the timeout (the save's, the miss's), with a margin for the scheduler:
        // a bound, not a speed target.
        assert!(start.elapsed() < TIMEOUT * 6, "{:?}", start.elapsed());
    });

    redis.resume();
    until(common::WAIT, "re-armed after SIGCONT", || a.store.trusted());
    runtime.block_on(async {
        let second = Record { id: first.id, ..visits(3) };
        store.save(&second).await.unwrap();
        let read = store.load(&first.id).await.unwrap().expect("the saved session");
        assert_eq!(read.data["visits"], 3);
    });
}

/// A write through the adapter whose future is dropped while it waits for Redis (a request
/// cancelled, here by a timeout around it) still removes this host's copy: Redis may apply
/// the write, and the host must not go on answering with the value it replaced.
#[cfg(feature = "tower-sessions")]
#[test]
fn a_write_cancelled_while_it_waits_for_redis_drops_the_hosts_copy() {
    use tower_sessions::session::Record;
    use tower_sessions::SessionStore;

    let _serial = common::serial();
    let mut redis = RedisServer::start();
    let a = host(&redis, |c| c);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut record = visits(1);
    runtime.block_on(a.store.create(&mut record)).unwrap();
    let sid = record.id.to_string();
    cached(&mut redis, &a, &sid);
    assert!(a.store.local().get_raw(&sid).unwrap().is_some(), "the host holds a copy");

    redis.pause();
    let newer = Record { id: record.id, ..visits(2) };
    let save = a.store.save(&newer);
    let cancelled = runtime.block_on(async { tokio::time::timeout(TIMEOUT / 6, save).await });
    assert!(cancelled.is_err(), "the save was still waiting for Redis: {cancelled:?}");
    assert_eq!(a.store.local().get_raw(&sid).unwrap(), None, "the replaced copy is gone");

    redis.resume();
    until(common::WAIT, "re-armed after SIGCONT", || a.store.trusted());
    // Whether Redis applied the save or not, the host reads what Redis holds.
    let held: Vec<u8> = redis.cmd(&["GET", &format!("session:{sid}")]);
    assert_eq!(a.store.get_raw(&sid).unwrap(), Some(held));
}

/// A tower-sessions record of `visits`, for an hour.
#[cfg(feature = "tower-sessions")]
fn visits(visits: u32) -> tower_sessions::session::Record {
    tower_sessions::session::Record {
        id: tower_sessions::session::Id::default(),
        data: [("visits".to_owned(), visits.into())].into(),
        expiry_date: time::OffsetDateTime::now_utc() + time::Duration::hours(1),
    }
}

/// Each thread running a current-thread runtime has its own multiplexed connection, driven by
/// its own runtime: a runtime that ends (its thread gone) takes only its own connection with
/// it, and another thread's calls go on.
#[cfg(feature = "tower-sessions")]
#[test]
fn a_runtime_that_ends_leaves_other_threads_connections_working() {
    use tower_sessions::SessionStore;

    let _serial = common::serial();
    let redis = RedisServer::start();
    let a = host(&redis, |c| c);
    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }
    // The first thread opens a connection on its runtime, then ends with it.
    let store = a.store.clone();
    let first = std::thread::spawn(move || {
        let mut made = visits(1);
        runtime().block_on(store.create(&mut made)).unwrap();
        made.id
    });
    let first = first.join().unwrap();
    // A second thread, after it, writes and reads on a connection of its own.
    let store = a.store.clone();
    let second = std::thread::spawn(move || {
        let rt = runtime();
        let mut made = visits(2);
        rt.block_on(store.create(&mut made)).unwrap();
        let own = rt.block_on(store.load(&made.id)).unwrap().expect("its own session");
        let other = rt.block_on(store.load(&first)).unwrap().expect("the first's session");
        (own.data["visits"].clone(), other.data["visits"].clone())
    });
    assert_eq!(second.join().unwrap(), (2.into(), 1.into()));
}

/// A master's drop stops its tracker at once, whatever the timeout: the tracker's wait for
/// frames (a quarter of the timeout between pings, here 15 s) is woken, and the epoch is let
/// go, so that no copy answers after the master has gone.
#[test]
fn a_masters_drop_stops_its_tracker_at_once() {
    let _serial = common::serial();
    let redis = RedisServer::start();
    let name = common::unique_name("redis-drop");
    let config = RedisConfig::new(&redis.url()).unwrap().timeout(Duration::from_secs(60));
    let master = ClusterStore::setup(common::config(&name).redis(config.clone())).unwrap();
    let store = RedisStore::new(ClusterStore::open(&name).unwrap(), config);
    until(common::WAIT, "the tracker armed", || store.trusted());
    let start = Instant::now();
    drop(master);
    // A bound far under the 15 s wait it would otherwise finish, with a margin for the
    // scheduler; not a speed target.
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
    assert!(!store.trusted());
    assert_eq!(store.epoch() % 2, 0, "the epoch was let go");
}

/// A host name in the URL is looked up by the tracker's connection and the workers' alike
/// (within the timeout; `localhost` may give `::1` first, where this Redis does not listen,
/// and the next address is tried).
#[test]
fn a_host_name_in_the_url_is_looked_up() {
    let _serial = common::serial();
    let mut redis = RedisServer::start();
    let url = redis.url().replace("127.0.0.1", "localhost");
    let name = common::unique_name("redis-name");
    let config = RedisConfig::new(&url).unwrap().timeout(TRUST);
    let _master = ClusterStore::setup(common::config(&name).redis(config.clone())).unwrap();
    let store = RedisStore::new(ClusterStore::open(&name).unwrap(), config);
    until(common::WAIT, "the tracker armed", || store.trusted());
    store.set_raw("s10", b"by name", Expiry::Default).unwrap();
    cached_in(&mut redis, &store, "s10");
    assert_eq!(store.get_raw("s10").unwrap().as_deref(), Some(&b"by name"[..]));
}

/// A tracker's connection belongs to its master alone: workers forked while it was open do
/// not keep it open after the tracker has left it. Otherwise Redis would keep a tracking
/// client that nobody reads, whose pushes pile up in its memory with every write.
#[test]
fn a_tracker_connection_left_behind_is_closed_though_workers_were_forked_with_it() {
    let _serial = common::serial();
    let mut redis = RedisServer::start();
    let a = host(&redis, |c| c);
    let tracker = format!("css-tracker-{}", a.name);
    // A worker forked while the first connection is open; it outlives that connection.
    let mut worker = common::spawn(|| loop {
        std::thread::park();
    });
    // Lost (a PING unanswered while Redis is stopped), then armed on a new connection.
    let epoch = a.store.epoch();
    redis.pause();
    until(common::WAIT, "A's tracker lost Redis", || a.store.epoch() != epoch);
    redis.resume();
    until(common::WAIT, "A re-armed", || a.store.trusted());
    let trackers = |redis: &mut RedisServer| {
        let list: String = redis.cmd(&["CLIENT", "LIST"]);
        list.lines().filter(|l| l.contains(&format!(" name={tracker} "))).count()
    };
    until(common::WAIT, "only the new tracking connection left", || trackers(&mut redis) == 1);
    assert_eq!(worker.kill(), 128 + 9);
}

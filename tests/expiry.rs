//! Expiry, with express-session's semantics: a session whose expiry has passed is absent to
//! `get`, `get_raw`, `all`, `all_raw` and `length`; `touch` extends a live session's life but
//! cannot revive an expired one; `destroy` of an expired session reports nothing removed;
//! `set` with an expiry already past removes the session; `Expiry::Default` lasts
//! `Config::default_ttl`. The memory of expired records comes back: a full store accepts new
//! sessions once the old ones expired, counted in `stats().expirations`. One scenario runs
//! across a fork: a child writes a short-lived session and the parent sees it expire.
//!
//! Time passes by waiting for the wall clock to reach an instant (bounded by a deadline),
//! never by sleeping a guessed amount; checks that a session is still live before its expiry
//! are made only when the clock, read after the check, proves it was.
mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cluster_session_store::{ClusterStore, Eviction, Expiry, StoreError};
use common::{wait_past, LONG};

/// Whether the clock has not yet reached `instant` (read after the check it guards).
fn before(instant: SystemTime) -> bool {
    SystemTime::now() < instant
}

fn sorted_keys(store: &ClusterStore) -> Vec<String> {
    let mut keys: Vec<String> = store.all_raw().unwrap().into_iter().map(|(k, _)| k).collect();
    keys.sort();
    keys
}

#[test]
fn an_expired_session_is_absent_to_every_read() {
    let _serial = common::serial();
    let (store, _) = common::setup("exp-absent");
    let deadline = SystemTime::now() + Duration::from_millis(100);
    store.set("short", &"soon gone", Expiry::At(deadline)).unwrap();
    store.set("long", &"stays", Expiry::After(LONG)).unwrap();

    let seen = store.get::<String>("short").unwrap();
    let length = store.length().unwrap();
    if before(deadline) {
        assert_eq!(seen.as_deref(), Some("soon gone"));
        assert_eq!(length, 2);
    }

    wait_past(deadline);
    assert_eq!(store.get::<String>("short").unwrap(), None);
    assert_eq!(store.get_raw("short").unwrap(), None);
    let mut buf = b"untouched".to_vec();
    assert!(!store.get_raw_into("short", &mut buf).unwrap());
    assert_eq!(store.length().unwrap(), 1);
    assert_eq!(sorted_keys(&store), ["long"]);
    let all: Vec<(String, String)> = store.all().unwrap();
    assert_eq!(all, [("long".to_owned(), "stays".to_owned())]);
    assert_eq!(store.get::<String>("long").unwrap().as_deref(), Some("stays"));
    assert!(store.check_integrity().is_ok(), "{}", store.check_integrity());
}

#[test]
fn expiry_after_a_duration_counts_from_the_write() {
    let _serial = common::serial();
    let (store, _) = common::setup("exp-after");
    let ttl = Duration::from_millis(60);
    let before_set = SystemTime::now();
    store.set_raw("sid", b"v", Expiry::After(ttl)).unwrap();
    let after_set = SystemTime::now();

    let seen = store.get_raw("sid").unwrap();
    if before(before_set + ttl) {
        assert_eq!(seen.as_deref(), Some(&b"v"[..]));
    }
    wait_past(after_set + ttl);
    assert_eq!(store.get_raw("sid").unwrap(), None);
    assert_eq!(store.length().unwrap(), 0);
    assert!(store.all_raw().unwrap().is_empty());
    assert!(store.check_integrity().is_ok(), "{}", store.check_integrity());
}

#[test]
fn set_with_an_expiry_already_past_removes_the_session() {
    let _serial = common::serial();
    let (store, _) = common::setup("exp-past-set");
    let past = SystemTime::now() - Duration::from_secs(1);

    // A new session written already expired is never visible.
    store.set_raw("new", b"x", Expiry::At(past)).unwrap();
    assert_eq!(store.get_raw("new").unwrap(), None);
    assert_eq!(store.length().unwrap(), 0);

    // Writing an existing session with a past expiry removes it (express-session's way
    // of ending a session through `set`), as does a zero lifetime and the epoch.
    for (sid, expiry) in [
        ("a", Expiry::At(past)),
        ("b", Expiry::After(Duration::ZERO)),
        ("c", Expiry::At(UNIX_EPOCH)),
    ] {
        store.set_raw(sid, b"live", Expiry::After(LONG)).unwrap();
        assert_eq!(store.get_raw(sid).unwrap().as_deref(), Some(&b"live"[..]));
        store.set_raw(sid, b"replaced", expiry).unwrap();
        assert_eq!(store.get_raw(sid).unwrap(), None, "{sid} with {expiry:?}");
    }
    // The typed `set` does the same.
    store.set("typed", &7u32, Expiry::After(LONG)).unwrap();
    store.set("typed", &8u32, Expiry::At(past)).unwrap();
    assert_eq!(store.get::<u32>("typed").unwrap(), None);

    assert_eq!(store.length().unwrap(), 0);
    assert!(store.all_raw().unwrap().is_empty());
    assert!(store.check_integrity().is_ok(), "{}", store.check_integrity());
}

#[test]
fn touch_extends_a_live_session_past_its_original_expiry() {
    let _serial = common::serial();
    let (store, _) = common::setup("exp-touch");
    let original = SystemTime::now() + Duration::from_millis(80);
    store.set("sid", &vec![1u8, 2, 3], Expiry::At(original)).unwrap();
    let touched = store.touch("sid", Expiry::After(LONG)).unwrap();
    if before(original) {
        assert!(touched, "touch of a live session returns true");
    }
    // Only on a clock that ran past `original` before the touch can it have found nothing.
    if touched {
        wait_past(original);
        assert_eq!(store.get::<Vec<u8>>("sid").unwrap(), Some(vec![1, 2, 3]));
        assert_eq!(store.length().unwrap(), 1);
        assert_eq!(sorted_keys(&store), ["sid"]);
    }
    // Touching with an instant moves the expiry there, earlier as well as later.
    let sooner = SystemTime::now() + Duration::from_millis(40);
    assert_eq!(store.touch("sid", Expiry::At(sooner)).unwrap(), touched);
    wait_past(sooner);
    assert_eq!(store.get_raw("sid").unwrap(), None);
    assert_eq!(store.length().unwrap(), 0);
    assert!(store.check_integrity().is_ok(), "{}", store.check_integrity());
}

#[test]
fn touch_of_an_expired_session_returns_false_and_does_not_revive_it() {
    let _serial = common::serial();
    let (store, _) = common::setup("exp-touch-dead");
    let deadline = SystemTime::now() + Duration::from_millis(30);
    store.set_raw("sid", b"old", Expiry::At(deadline)).unwrap();
    wait_past(deadline);
    assert!(!store.touch("sid", Expiry::After(LONG)).unwrap());
    assert!(!store.touch("sid", Expiry::Default).unwrap());
    assert_eq!(store.get_raw("sid").unwrap(), None);
    assert_eq!(store.length().unwrap(), 0);
    assert!(store.all_raw().unwrap().is_empty());
    // A session never written cannot be touched into life either.
    assert!(!store.touch("never", Expiry::After(LONG)).unwrap());
    assert_eq!(store.get_raw("never").unwrap(), None);
    assert!(store.check_integrity().is_ok(), "{}", store.check_integrity());
}

#[test]
fn destroy_of_an_expired_session_returns_false() {
    let _serial = common::serial();
    let (store, _) = common::setup("exp-destroy");
    let deadline = SystemTime::now() + Duration::from_millis(30);
    store.set_raw("dead", b"x", Expiry::At(deadline)).unwrap();
    store.set_raw("live", b"y", Expiry::After(LONG)).unwrap();
    wait_past(deadline);
    assert!(!store.destroy("dead").unwrap());
    assert!(!store.destroy("dead").unwrap(), "a second destroy finds nothing either");
    assert!(store.destroy("live").unwrap());
    assert_eq!(store.length().unwrap(), 0);
    assert!(store.check_integrity().is_ok(), "{}", store.check_integrity());
}

#[test]
fn expiry_default_lasts_the_configured_default_ttl() {
    let _serial = common::serial();
    let ttl = Duration::from_millis(200);
    let (store, _) = common::setup_with("exp-default", |c| c.default_ttl(ttl));
    let before_set = SystemTime::now();
    store.set("sid", &"value", Expiry::Default).unwrap();
    let after_set = SystemTime::now();

    // Still live shortly before the default TTL is over: it is not a shorter lifetime.
    wait_past(before_set + ttl * 3 / 4);
    let seen = store.get::<String>("sid").unwrap();
    if before(before_set + ttl) {
        assert_eq!(seen.as_deref(), Some("value"));
    }
    // Gone once it is over: it is not a longer one.
    wait_past(after_set + ttl);
    assert_eq!(store.get::<String>("sid").unwrap(), None);
    assert_eq!(store.length().unwrap(), 0);

    // `touch` with `Expiry::Default` gives the same lifetime again.
    store.set("again", &1u8, Expiry::After(Duration::from_millis(50))).unwrap();
    let before_touch = SystemTime::now();
    let touched = store.touch("again", Expiry::Default).unwrap();
    let after_touch = SystemTime::now();
    if touched {
        wait_past(before_touch + ttl * 3 / 4);
        let seen = store.get::<u8>("again").unwrap();
        if before(before_touch + ttl) {
            assert_eq!(seen, Some(1));
        }
    }
    wait_past(after_touch + ttl);
    assert_eq!(store.get::<u8>("again").unwrap(), None);
    assert!(store.check_integrity().is_ok(), "{}", store.check_integrity());
}

#[test]
fn expired_records_give_their_memory_back_to_new_sessions() {
    let _serial = common::serial();
    // Refuse rather than evict: a write into a full store succeeds only if expired records
    // were freed. Small values make the index the limit, so the store is densely filled.
    let (store, _) = common::setup_with("exp-reclaim", |c| {
        c.memory_size(256 << 10).shards(1).max_value_size(1024).eviction(Eviction::Refuse)
    });
    let value = [0x5a; 40];
    let mut filled = 0;
    loop {
        match store.set_raw(&format!("old-{filled:06}"), &value, Expiry::After(LONG)) {
            Ok(()) => filled += 1,
            Err(StoreError::Full { .. }) => break,
            Err(e) => panic!("unexpected error while filling: {e}"),
        }
        assert!(filled < 100_000, "the store never filled up");
    }
    assert!(filled > 100, "only {filled} sessions fit");
    assert!(matches!(
        store.set_raw("one-more", &value, Expiry::After(LONG)),
        Err(StoreError::Full { .. })
    ));

    // Give every session a short life (touch allocates nothing), and let it pass.
    let deadline = SystemTime::now() + Duration::from_millis(200);
    for i in 0..filled {
        store.touch(&format!("old-{i:06}"), Expiry::At(deadline)).unwrap();
    }
    wait_past(deadline);
    assert_eq!(store.length().unwrap(), 0);
    let expirations_before = store.stats().unwrap().expirations;

    for i in 0..filled {
        store
            .set_raw(&format!("new-{i:06}"), &value, Expiry::After(LONG))
            .unwrap_or_else(|e| panic!("new session {i} of {filled}: {e}"));
    }
    let stats = store.stats().unwrap();
    assert!(
        stats.expirations > expirations_before,
        "expirations {} -> {}",
        expirations_before,
        stats.expirations
    );
    assert_eq!(stats.evictions, 0);
    assert_eq!(store.length().unwrap(), filled);
    assert_eq!(store.get_raw("old-000000").unwrap(), None);
    assert_eq!(store.get_raw("new-000000").unwrap().as_deref(), Some(&value[..]));
    assert!(store.check_integrity().is_ok(), "{}", store.check_integrity());
}

#[test]
fn a_session_written_by_a_forked_child_expires_for_the_parent() {
    let _serial = common::serial();
    let (master, _) = common::setup("exp-fork");
    let name = master.name().to_owned();
    let deadline = SystemTime::now() + Duration::from_millis(300);
    let mut child = common::spawn(move || {
        let store = ClusterStore::open(&name).expect("open in the child");
        store.set_raw("from-child", b"short", Expiry::At(deadline)).expect("set in the child");
        store.set_raw("kept", b"long", Expiry::After(LONG)).expect("set in the child");
        0
    });
    assert_eq!(child.wait(common::WAIT), 0);

    let seen = master.get_raw("from-child").unwrap();
    if before(deadline) {
        assert_eq!(seen.as_deref(), Some(&b"short"[..]));
    }
    wait_past(deadline);
    assert_eq!(master.get_raw("from-child").unwrap(), None);
    assert_eq!(master.length().unwrap(), 1);
    assert_eq!(sorted_keys(&master), ["kept"]);
    assert!(master.check_integrity().is_ok(), "{}", master.check_integrity());
}

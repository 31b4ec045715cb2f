//! `add_raw` (store only if no live session has the id), `replace_raw` (store only if one
//! does) and `purge_expired`: the primitives the framework adapters mint ids and update
//! sessions with. An expired session counts as absent to both; neither resurrects one; bad
//! input leaves the store unchanged. Four forked workers racing `add_raw` on the same ids:
//! each id goes to exactly one of them, and every worker's count of wins matches the values
//! left in the store.
mod common;

use std::time::{Duration, SystemTime};

use common::wait_past;

use cluster_session_store::{ClusterStore, Expiry, Master, StoreError};

const LONG: Expiry = Expiry::After(common::LONG);

/// Values up to 512 bytes (`bad_input_leaves_the_store_unchanged` writes 513), and no sweep
/// during a test: what frees expired records is what the test calls.
fn setup(prefix: &str) -> (Master, ClusterStore) {
    let (master, name) =
        common::setup_with(prefix, |c| c.max_value_size(512).sweep_interval(common::NO_SWEEP));
    let store = ClusterStore::open(&name).unwrap();
    (master, store)
}

#[test]
fn add_stores_only_under_a_free_id() {
    let _serial = common::serial();
    let (master, store) = setup("add");
    assert!(store.add_raw("a", b"1", LONG).unwrap());
    assert!(!store.add_raw("a", b"2", LONG).unwrap());
    assert_eq!(store.get_raw("a").unwrap().unwrap(), b"1");

    // An expiry already past: nothing stored, the result says whether the id was free.
    assert!(!store.add_raw("a", b"3", Expiry::After(Duration::ZERO)).unwrap());
    assert_eq!(store.get_raw("a").unwrap().unwrap(), b"1");
    assert!(store.add_raw("b", b"3", Expiry::After(Duration::ZERO)).unwrap());
    assert_eq!(store.get_raw("b").unwrap(), None);

    // An expired session does not hold its id.
    let soon = SystemTime::now() + Duration::from_millis(10);
    store.set_raw("c", b"old", Expiry::At(soon)).unwrap();
    wait_past(soon);
    assert!(store.add_raw("c", b"new", LONG).unwrap());
    assert_eq!(store.get_raw("c").unwrap().unwrap(), b"new");
    assert_eq!(store.length().unwrap(), 2);
    assert!(master.check_integrity().is_ok());
}

#[test]
fn replace_writes_only_over_a_live_session() {
    let _serial = common::serial();
    let (master, store) = setup("replace");
    assert!(!store.replace_raw("a", b"1", LONG).unwrap());
    assert_eq!(store.get_raw("a").unwrap(), None, "replace created a session");

    store.set_raw("a", b"1", LONG).unwrap();
    assert!(store.replace_raw("a", b"2", LONG).unwrap());
    assert_eq!(store.get_raw("a").unwrap().unwrap(), b"2");

    // Expired meanwhile: not resurrected.
    let soon = SystemTime::now() + Duration::from_millis(10);
    store.set_raw("b", b"1", Expiry::At(soon)).unwrap();
    wait_past(soon);
    assert!(!store.replace_raw("b", b"2", LONG).unwrap());
    assert_eq!(store.get_raw("b").unwrap(), None);

    // An expiry already past removes a live session, and says it was live.
    assert!(store.replace_raw("a", b"3", Expiry::After(Duration::ZERO)).unwrap());
    assert_eq!(store.get_raw("a").unwrap(), None);
    assert!(!store.replace_raw("a", b"3", Expiry::After(Duration::ZERO)).unwrap());
    assert_eq!(store.length().unwrap(), 0);
    assert!(master.check_integrity().is_ok());
}

#[test]
fn bad_input_leaves_the_store_unchanged() {
    let _serial = common::serial();
    let (master, store) = setup("cond-bad");
    store.set_raw("a", b"1", LONG).unwrap();
    let too_big = vec![0u8; 513];
    for result in [store.add_raw("", b"x", LONG), store.replace_raw("", b"x", LONG)] {
        assert!(matches!(result, Err(StoreError::EmptyKey)), "{result:?}");
    }
    let long = common::too_long_key();
    assert!(matches!(store.add_raw(&long, b"x", LONG), Err(StoreError::KeyTooLong { .. })));
    assert!(matches!(store.add_raw("b", &too_big, LONG), Err(StoreError::ValueTooLarge { .. })));
    assert!(matches!(
        store.replace_raw("a", &too_big, LONG),
        Err(StoreError::ValueTooLarge { .. })
    ));
    assert_eq!(store.get_raw("a").unwrap().unwrap(), b"1");
    assert_eq!(store.length().unwrap(), 1);
    assert!(master.check_integrity().is_ok());
}

#[test]
fn purge_expired_frees_every_expired_session_now() {
    let _serial = common::serial();
    let (master, store) = setup("purge");
    for i in 0..100 {
        store.set_raw(&format!("short-{i}"), b"x", Expiry::After(Duration::from_secs(60))).unwrap();
    }
    for i in 0..10 {
        store.set_raw(&format!("long-{i}"), b"y", LONG).unwrap();
    }
    let _later = common::ClockJump::forward(Duration::from_secs(120));
    assert_eq!(master.stats().unwrap().records, 110, "nothing has freed them yet");
    assert_eq!(store.purge_expired().unwrap(), 100);
    let stats = master.stats().unwrap();
    assert_eq!((stats.records, stats.expirations), (10, 100));
    assert_eq!(store.purge_expired().unwrap(), 0);
    assert_eq!(store.length().unwrap(), 10);
    assert!(master.check_integrity().is_ok());
}

#[test]
fn forked_workers_racing_add_each_id_goes_to_exactly_one() {
    let _serial = common::serial();
    let (master, store) = setup("add-race");
    const IDS: usize = 200;
    const WORKERS: u8 = 4;
    let start = common::Signal1::new();
    let mut children: Vec<_> = (1..=WORKERS)
        .map(|w| {
            let (store, start) = (store.clone(), &start);
            common::spawn(move || {
                assert!(start.wait(common::WAIT), "no start signal");
                (0..IDS).filter(|i| store.add_raw(&format!("sid-{i}"), &[w], LONG).unwrap()).count()
                    as i32
            })
        })
        .collect();
    for _ in 0..WORKERS {
        start.notify();
    }
    let wins: Vec<i32> = children.iter_mut().map(|c| c.wait(common::WAIT)).collect();
    assert_eq!(wins.iter().sum::<i32>(), IDS as i32, "wins per worker: {wins:?}");
    for (w, won) in (1..=WORKERS).zip(&wins) {
        let held = (0..IDS)
            .filter(|i| store.get_raw(&format!("sid-{i}")).unwrap().unwrap() == [w])
            .count();
        assert_eq!(held as i32, *won, "worker {w}");
    }
    assert_eq!(store.length().unwrap(), IDS);
    assert!(master.check_integrity().is_ok());
}

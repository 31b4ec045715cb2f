//! Namespaces: one master sets up two stores under different names. They are independent (the
//! same session id holds different values in each; `clear` and `length` of one do not see the
//! other), and forked workers find both with `ClusterStore::open(name)`. A name set up twice
//! in one process is refused with `AlreadySetUp`, and in a forked worker with `SetUpByMaster`,
//! which tells the worker to call `new()`; once its `Master` is dropped, `open(name)`
//! answers `NotSetUp` (handles opened before stay usable) and the name can be set up again.
mod common;

use cluster_session_store::{AttachError, ClusterStore, Expiry, Master, SetupError};
use common::{config, LONG};

fn setup(name: &str) -> Master {
    ClusterStore::setup(config(name)).expect("setup")
}

fn sorted(store: &ClusterStore) -> Vec<(String, Vec<u8>)> {
    let mut all = store.all_raw().unwrap();
    all.sort();
    all
}

#[test]
fn two_namespaces_in_one_master_are_independent() {
    let _serial = common::serial();
    let (carts_name, users_name) = (common::unique_name("carts"), common::unique_name("users"));
    let carts = setup(&carts_name);
    let users = setup(&users_name);
    assert_eq!((carts.name(), users.name()), (carts_name.as_str(), users_name.as_str()));

    carts.set_raw("sid", b"cart", Expiry::After(LONG)).unwrap();
    users.set_raw("sid", b"user", Expiry::After(LONG)).unwrap();
    users.set_raw("only-users", b"u", Expiry::After(LONG)).unwrap();
    assert_eq!(carts.get_raw("sid").unwrap().as_deref(), Some(&b"cart"[..]));
    assert_eq!(users.get_raw("sid").unwrap().as_deref(), Some(&b"user"[..]));
    assert_eq!(carts.get_raw("only-users").unwrap(), None);
    assert_eq!((carts.length().unwrap(), users.length().unwrap()), (1, 2));

    // Every write to one leaves the other as it was.
    carts.update_raw("sid", Expiry::After(LONG), |v| Some([v.unwrap(), b"!"].concat())).unwrap();
    assert!(!carts.destroy("only-users").unwrap());
    assert!(!carts.touch("only-users", Expiry::After(LONG)).unwrap());
    assert_eq!(sorted(&carts), [("sid".to_owned(), b"cart!".to_vec())]);
    assert_eq!(
        sorted(&users),
        [("only-users".to_owned(), b"u".to_vec()), ("sid".to_owned(), b"user".to_vec())]
    );

    // `clear` of one leaves the other.
    users.clear().unwrap();
    assert_eq!(users.length().unwrap(), 0);
    assert_eq!(users.get_raw("sid").unwrap(), None);
    assert_eq!(carts.length().unwrap(), 1);
    assert_eq!(carts.get_raw("sid").unwrap().as_deref(), Some(&b"cart!"[..]));

    assert!(carts.check_integrity().is_ok(), "{}", carts.check_integrity());
    assert!(users.check_integrity().is_ok(), "{}", users.check_integrity());
}

#[test]
fn forked_workers_open_both_namespaces_by_name() {
    let _serial = common::serial();
    let (a_name, b_name) = (common::unique_name("ns-a"), common::unique_name("ns-b"));
    let a = setup(&a_name);
    let b = setup(&b_name);
    a.set_raw("sid", b"in a", Expiry::After(LONG)).unwrap();
    b.set_raw("sid", b"in b", Expiry::After(LONG)).unwrap();

    let mut children: Vec<_> = (0..2)
        .map(|worker| {
            let (a_name, b_name) = (a_name.clone(), b_name.clone());
            common::spawn(move || {
                let (Ok(a), Ok(b)) = (ClusterStore::open(&a_name), ClusterStore::open(&b_name))
                else {
                    return 2;
                };
                if a.get_raw("sid").ok().flatten().as_deref() != Some(&b"in a"[..])
                    || b.get_raw("sid").ok().flatten().as_deref() != Some(&b"in b"[..])
                {
                    return 3;
                }
                let key = format!("worker-{worker}");
                let wrote = a.set_raw(&key, b"a", Expiry::After(LONG)).is_ok()
                    && b.set_raw(&key, b"b", Expiry::After(LONG)).is_ok();
                if wrote {
                    0
                } else {
                    4
                }
            })
        })
        .collect();
    for child in &mut children {
        assert_eq!(child.wait(common::WAIT), 0, "2: open, 3: read, 4: write failed");
    }
    for worker in 0..2 {
        let key = format!("worker-{worker}");
        assert_eq!(a.get_raw(&key).unwrap().as_deref(), Some(&b"a"[..]));
        assert_eq!(b.get_raw(&key).unwrap().as_deref(), Some(&b"b"[..]));
    }
    assert_eq!((a.length().unwrap(), b.length().unwrap()), (3, 3));
    assert!(a.check_integrity().is_ok(), "{}", a.check_integrity());
    assert!(b.check_integrity().is_ok(), "{}", b.check_integrity());
}

#[test]
fn a_namespace_set_up_twice_in_one_process_is_refused() {
    let _serial = common::serial();
    let name = common::unique_name("twice");
    let first = setup(&name);
    first.set_raw("sid", b"first", Expiry::After(LONG)).unwrap();
    match ClusterStore::setup(config(&name).memory_size(2 << 20)) {
        Err(err @ SetupError::AlreadySetUp { .. }) => {
            let SetupError::AlreadySetUp { namespace } = &err else { unreachable!() };
            assert_eq!(namespace, &name);
            let text = err.to_string();
            assert!(text.contains(&name) && text.contains("this process already"), "{text}");
            assert!(!text.contains("worker"), "the master is told nothing about workers: {text}");
        }
        other => panic!("{other:?}"),
    }
    // The first store is untouched and still the one `open` finds.
    let opened = ClusterStore::open(&name).unwrap();
    assert_eq!(opened.get_raw("sid").unwrap().as_deref(), Some(&b"first"[..]));
    assert_eq!(opened.length().unwrap(), 1);
    assert!(first.check_integrity().is_ok(), "{}", first.check_integrity());
}

#[test]
fn setup_in_a_worker_says_the_master_did_it_and_workers_call_new() {
    let _serial = common::serial();
    let name = common::unique_name("in-worker");
    let master = setup(&name);
    let master_pid = std::process::id();
    let mut worker = common::spawn(|| match ClusterStore::setup(config(&name)) {
        Err(err @ SetupError::SetUpByMaster { .. }) => {
            let SetupError::SetUpByMaster { namespace, master_pid: pid } = &err else {
                unreachable!()
            };
            let text = err.to_string();
            let says = text.contains(&format!("master (pid {master_pid})"))
                && text.contains("ClusterStore::new()");
            if namespace != &name || *pid != master_pid || !says {
                eprintln!("wrong error: {err:?}: {text}");
                return 1;
            }
            // The store the worker should use is there.
            i32::from(ClusterStore::open(&name).is_err()) * 3
        }
        other => {
            eprintln!("{other:?}");
            2
        }
    });
    assert_eq!(worker.wait(common::WAIT), 0, "1: wrong text, 2: another result, 3: no store");
    assert!(master.check_integrity().is_ok(), "{}", master.check_integrity());
}

#[test]
fn after_the_master_is_dropped_the_name_is_free_again() {
    let _serial = common::serial();
    let name = common::unique_name("reuse");
    let master = setup(&name);
    master.set_raw("sid", b"old", Expiry::After(LONG)).unwrap();
    let held = ClusterStore::open(&name).unwrap();
    drop(master);

    match ClusterStore::open(&name) {
        Err(AttachError::NotSetUp { namespace }) => assert_eq!(namespace, name),
        other => panic!("{other:?}"),
    }
    // A handle opened before the drop keeps working on the old segment.
    assert_eq!(held.get_raw("sid").unwrap().as_deref(), Some(&b"old"[..]));
    held.set_raw("late", b"write", Expiry::After(LONG)).unwrap();
    assert!(held.check_integrity().is_ok(), "{}", held.check_integrity());

    // Set up again: a fresh, empty store, independent of the old handle.
    let again = setup(&name);
    assert_eq!(again.length().unwrap(), 0);
    assert_eq!(again.get_raw("sid").unwrap(), None);
    again.set_raw("sid", b"new", Expiry::After(LONG)).unwrap();
    let reopened = ClusterStore::open(&name).unwrap();
    assert_eq!(reopened.get_raw("sid").unwrap().as_deref(), Some(&b"new"[..]));
    assert_eq!(held.get_raw("sid").unwrap().as_deref(), Some(&b"old"[..]));
    assert_eq!(held.length().unwrap(), 2);
    assert!(again.check_integrity().is_ok(), "{}", again.check_integrity());
}

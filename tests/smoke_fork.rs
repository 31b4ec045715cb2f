//! Smoke: setup in the parent, `ClusterStore::new()` in a forked child sees the value.
mod common;
use cluster_session_store::{ClusterStore, Config, Expiry};

#[test]
fn child_reads_what_parent_wrote() {
    let _serial = common::serial();
    let master = ClusterStore::setup(Config::new().memory_size(4 << 20).shards(8)).unwrap();
    master.set_raw("sid", b"hello", Expiry::Default).unwrap();
    let mut child = common::spawn(|| {
        let store = ClusterStore::new().unwrap();
        let ok = store.get_raw("sid").unwrap().as_deref() == Some(&b"hello"[..]);
        store.set_raw("from-child", b"hi", Expiry::Default).unwrap();
        if ok {
            0
        } else {
            1
        }
    });
    assert_eq!(child.wait(common::WAIT), 0);
    assert_eq!(master.get_raw("from-child").unwrap().as_deref(), Some(&b"hi"[..]));
    assert!(master.check_integrity().is_ok());
}

//! The tower-sessions adapter (feature `tower-sessions`), tested through tower-sessions'
//! `SessionManagerLayer` in an axum app, and through the trait where the middleware cannot
//! reach a case: a visit counter whose session continues in a forked worker process with its
//! own app and runtime; a logout that deletes the session; a request in flight across a
//! logout or a `cycle_id` that never brings the old session back (concurrent requests, held
//! at a chosen point); `save` never creating a record; `create` drawing a new id when the
//! id is taken and never overwriting; an expired record loading as `None`;
//! `delete_expired` freeing memory; a value that is not a tower-sessions record giving a
//! `Decode` error, not a panic.
mod common;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::routing::get;
use axum::Router;
use cluster_session_store::{ClusterStore, Expiry, Master};
use http_body_util::BodyExt;
use std::sync::Arc;
use time::{Duration, OffsetDateTime};
use tower::ServiceExt;
use tower_sessions::session::{Id, Record};
use tower_sessions::{ExpiredDeletion, Session, SessionManagerLayer, SessionStore};

/// Every test takes the serial lock: one of them forks (see `common::serial`).
fn setup(prefix: &str) -> (Master, String) {
    // No sweep during a test: what frees expired records is what the test calls.
    common::setup_with(prefix, |c| c.sweep_interval(common::NO_SWEEP))
}

/// `/visit` counts visits in the session; `/logout` deletes it.
fn app(store: ClusterStore) -> Router {
    async fn visit(session: Session) -> String {
        let n: u32 = session.get("n").await.unwrap().unwrap_or(0);
        session.insert("n", n + 1).await.unwrap();
        n.to_string()
    }
    async fn logout(session: Session) -> &'static str {
        session.flush().await.unwrap();
        "bye"
    }
    Router::new()
        .route("/visit", get(visit))
        .route("/logout", get(logout))
        .layer(SessionManagerLayer::new(store).with_secure(false))
}

/// One request through the app; returns the body and the `id` cookie it set, if any.
async fn call(app: &Router, path: &str, cookie: Option<&str>) -> (String, Option<String>) {
    let mut request = Request::get(path);
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    let response = app.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let set = response.headers().get(header::SET_COOKIE).map(|v| {
        v.to_str().unwrap().split(';').next().unwrap().to_owned() // "id=..."
    });
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (String::from_utf8(body.to_vec()).unwrap(), set)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn a_session_made_by_one_process_continues_in_another() {
    let _serial = common::serial();
    let (master, name) = setup("tower-fork");
    let rt = runtime();
    let app = app(ClusterStore::open(&name).unwrap());
    let cookie = rt.block_on(async {
        let (body, cookie) = call(&app, "/visit", None).await;
        assert_eq!(body, "0");
        let cookie = cookie.expect("the first visit sets the session cookie");
        assert_eq!(call(&app, "/visit", Some(&cookie)).await.0, "1");
        cookie
    });

    // A worker forked now builds its own app and runtime on its own handle.
    let mut child = common::spawn(|| {
        let app = self::app(ClusterStore::open(&name).unwrap());
        let body = runtime().block_on(async { call(&app, "/visit", Some(&cookie)).await.0 });
        if body == "2" {
            0
        } else {
            1
        }
    });
    assert_eq!(child.wait(common::WAIT), 0, "the forked worker did not see visit 2");

    rt.block_on(async {
        assert_eq!(call(&app, "/visit", Some(&cookie)).await.0, "3");
        assert_eq!(call(&app, "/logout", Some(&cookie)).await.0, "bye");
        assert_eq!(call(&app, "/visit", Some(&cookie)).await.0, "0", "logout kept the session");
    });
    assert_eq!(master.length().unwrap(), 1, "only the session made after logout is left");
    assert!(master.check_integrity().is_ok());
}

fn record(id: Id, key: &str, value: i64, expiry_date: OffsetDateTime) -> Record {
    let data = [(key.to_owned(), serde_json::json!(value))].into_iter().collect();
    Record { id, data, expiry_date }
}

#[test]
fn create_draws_a_new_id_when_the_id_is_taken() {
    let _serial = common::serial();
    let (master, name) = setup("tower-create");
    let store = ClusterStore::open(&name).unwrap();
    let later = OffsetDateTime::now_utc() + Duration::hours(1);
    runtime().block_on(async {
        let mut taken = record(Id::default(), "owner", 1, later);
        store.create(&mut taken).await.unwrap();
        let mut newcomer = record(taken.id, "owner", 2, later);
        store.create(&mut newcomer).await.unwrap();
        assert_ne!(newcomer.id, taken.id, "create reused a live session's id");
        assert_eq!(store.load(&taken.id).await.unwrap(), Some(taken.clone()));
        assert_eq!(store.load(&newcomer.id).await.unwrap(), Some(newcomer.clone()));

        let mut fresh = record(Id::default(), "k", 3, later);
        let id = fresh.id;
        store.create(&mut fresh).await.unwrap();
        assert_eq!(fresh.id, id, "a free id is kept");
    });
    assert_eq!(master.length().unwrap(), 3);
    assert!(master.check_integrity().is_ok());
}

/// `save` writes only over a live record: on an id with no record, or whose record was
/// deleted or expired, it stores nothing.
#[test]
fn save_never_creates_a_record() {
    let _serial = common::serial();
    let (master, name) = setup("tower-save");
    let store = ClusterStore::open(&name).unwrap();
    let later = OffsetDateTime::now_utc() + Duration::hours(1);
    runtime().block_on(async {
        let never_created = record(Id::default(), "k", 1, later);
        store.save(&never_created).await.unwrap();
        assert_eq!(store.load(&never_created.id).await.unwrap(), None);

        let mut deleted = record(Id::default(), "k", 2, later);
        store.create(&mut deleted).await.unwrap();
        store.delete(&deleted.id).await.unwrap();
        store.save(&deleted).await.unwrap();
        assert_eq!(store.load(&deleted.id).await.unwrap(), None);
    });
    assert_eq!(master.length().unwrap(), 0);
    assert!(master.check_integrity().is_ok());
}

/// Where the slow request stands: it signals `entered` once it has loaded its session, and
/// finishes (changing the session, so the middleware saves it) once `release` is signalled.
#[derive(Default)]
struct Gate {
    entered: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

/// `/login` puts a user in the session, `/whoami` reads it, `/slow` reads it and then waits
/// at the gate before it counts a visit, `/logout` deletes the session and `/cycle` gives
/// it a new id.
fn login_app(store: ClusterStore, gate: Arc<Gate>) -> Router {
    async fn user(session: &Session) -> String {
        session.get::<String>("user").await.unwrap().unwrap_or_else(|| "anonymous".into())
    }
    Router::new()
        .route(
            "/login",
            get(|session: Session| async move {
                session.insert("user", "alice").await.unwrap();
                "logged in"
            }),
        )
        .route("/whoami", get(|session: Session| async move { user(&session).await }))
        .route(
            "/slow",
            get(|session: Session| async move {
                let who = user(&session).await;
                gate.entered.notify_one();
                gate.release.notified().await;
                session.insert("visits", 1).await.unwrap();
                who
            }),
        )
        .route(
            "/logout",
            get(|session: Session| async move {
                session.delete().await.unwrap();
                "bye"
            }),
        )
        .route(
            "/cycle",
            get(|session: Session| async move {
                session.cycle_id().await.unwrap();
                "cycled"
            }),
        )
        .layer(SessionManagerLayer::new(store).with_secure(false))
}

/// Logs in, then runs `/slow` with the session and, while it is held after loading the
/// session, the request `path` with the same cookie; then lets `/slow` finish and save.
/// Returns the login cookie and the cookie `path` set, if any.
fn race_against(path: &str, store: ClusterStore) -> (String, Option<String>) {
    let gate = Arc::new(Gate::default());
    let app = login_app(store, Arc::clone(&gate));
    runtime().block_on(async {
        let (_, cookie) = call(&app, "/login", None).await;
        let cookie = cookie.expect("the login sets the session cookie");
        let slow = tokio::spawn({
            let (app, cookie) = (app.clone(), cookie.clone());
            async move { call(&app, "/slow", Some(&cookie)).await.0 }
        });
        tokio::time::timeout(common::WAIT, gate.entered.notified()).await.expect("/slow entered");
        let (_, set) = call(&app, path, Some(&cookie)).await;
        gate.release.notify_one();
        let slow = tokio::time::timeout(common::WAIT, slow).await.expect("/slow ends").unwrap();
        assert_eq!(slow, "alice", "/slow ran logged in");
        assert_eq!(call(&app, "/whoami", Some(&cookie)).await.0, "anonymous");
        (cookie, set)
    })
}

#[test]
fn a_request_in_flight_across_a_logout_does_not_log_the_user_back_in() {
    let _serial = common::serial();
    let (master, name) = setup("tower-race-logout");
    race_against("/logout", ClusterStore::open(&name).unwrap());
    assert_eq!(master.length().unwrap(), 0, "the deleted session was written back");
    assert!(master.check_integrity().is_ok());
}

#[test]
fn a_request_in_flight_across_a_cycle_id_does_not_bring_the_old_id_back() {
    let _serial = common::serial();
    let (master, name) = setup("tower-race-cycle");
    let store = ClusterStore::open(&name).unwrap();
    let (old, new) = race_against("/cycle", store.clone());
    let new = new.expect("cycle_id sets a new cookie");
    assert_ne!(old, new);
    let app = login_app(store, Arc::default());
    let who = runtime().block_on(async { call(&app, "/whoami", Some(&new)).await.0 });
    assert_eq!(who, "alice", "the new id carries the session");
    assert_eq!(master.length().unwrap(), 1, "the old id's session was written back");
    assert!(master.check_integrity().is_ok());
}

#[test]
fn save_load_delete_round_trip_with_the_expiry_date() {
    let _serial = common::serial();
    let (master, name) = setup("tower-roundtrip");
    let store = ClusterStore::open(&name).unwrap();
    // Nanoseconds are kept.
    let expiry = OffsetDateTime::now_utc() + Duration::minutes(5) + Duration::nanoseconds(123);
    runtime().block_on(async {
        let mut rec = record(Id::default(), "user", 7, expiry);
        rec.data.insert("nested".into(), serde_json::json!({"a": [1, 2.5, null, "x"]}));
        store.create(&mut rec).await.unwrap();
        assert_eq!(store.load(&rec.id).await.unwrap(), Some(rec.clone()));
        rec.data.insert("user".into(), serde_json::json!(8));
        store.save(&rec).await.unwrap();
        assert_eq!(store.load(&rec.id).await.unwrap(), Some(rec.clone()));
        store.delete(&rec.id).await.unwrap();
        assert_eq!(store.load(&rec.id).await.unwrap(), None);
        store.delete(&rec.id).await.unwrap(); // deleting a missing session is not an error
        assert_eq!(store.load(&Id::default()).await.unwrap(), None);
    });
    assert!(master.check_integrity().is_ok());
}

#[test]
fn an_expired_record_loads_as_none() {
    let _serial = common::serial();
    let (master, name) = setup("tower-expired");
    let store = ClusterStore::open(&name).unwrap();
    let now = OffsetDateTime::now_utc();
    runtime().block_on(async {
        let mut live = record(Id::default(), "k", 1, now + Duration::hours(1));
        store.create(&mut live).await.unwrap();
        // The middleware saves a session with a past expiry date when it expires it.
        let expired = record(live.id, "k", 2, now - Duration::seconds(1));
        store.save(&expired).await.unwrap();
        assert_eq!(store.load(&live.id).await.unwrap(), None);
        let mut born_expired = record(Id::default(), "k", 3, now - Duration::hours(1));
        store.create(&mut born_expired).await.unwrap();
        assert_eq!(store.load(&born_expired.id).await.unwrap(), None);
    });
    assert_eq!(master.length().unwrap(), 0);
    assert!(master.check_integrity().is_ok());
}

#[test]
fn delete_expired_frees_expired_records() {
    let _serial = common::serial();
    let (master, name) = setup("tower-purge");
    let store = ClusterStore::open(&name).unwrap();
    runtime().block_on(async {
        let soon = OffsetDateTime::now_utc() + Duration::minutes(1);
        for i in 0..10 {
            store.create(&mut record(Id::default(), "i", i, soon)).await.unwrap();
        }
        let mut live = record(Id::default(), "i", 99, soon + Duration::hours(3));
        store.create(&mut live).await.unwrap();
        assert_eq!(master.stats().unwrap().records, 11);
        let _later = common::ClockJump::forward(std::time::Duration::from_secs(2 * 3600));
        assert_eq!(master.stats().unwrap().records, 11, "nothing frees them but the call");
        store.delete_expired().await.unwrap();
        let stats = master.stats().unwrap();
        assert_eq!((stats.records, stats.expirations), (1, 10));
        assert_eq!(store.load(&live.id).await.unwrap(), Some(live));
    });
    assert!(master.check_integrity().is_ok());
}

#[test]
fn a_session_idle_past_its_expiry_starts_over_through_the_middleware() {
    let _serial = common::serial();
    let (master, name) = setup("tower-idle");
    let idle = tower_sessions::Expiry::OnInactivity(Duration::minutes(1));
    let app = Router::new()
        .route(
            "/visit",
            get(|session: Session| async move {
                let n: u32 = session.get("n").await.unwrap().unwrap_or(0);
                session.insert("n", n + 1).await.unwrap();
                n.to_string()
            }),
        )
        .layer(SessionManagerLayer::new(ClusterStore::open(&name).unwrap()).with_expiry(idle));
    runtime().block_on(async {
        let (_, cookie) = call(&app, "/visit", None).await;
        let cookie = cookie.expect("session cookie");
        assert_eq!(call(&app, "/visit", Some(&cookie)).await.0, "1");
        let _later = common::ClockJump::forward(std::time::Duration::from_secs(120));
        // The store expired the record: load gives None, and the visit starts a new session.
        assert_eq!(call(&app, "/visit", Some(&cookie)).await.0, "0");
    });
    assert!(master.check_integrity().is_ok());
}

#[test]
fn a_value_that_is_not_a_record_is_a_decode_error() {
    let _serial = common::serial();
    let (master, name) = setup("tower-foreign");
    let store = ClusterStore::open(&name).unwrap();
    let id = Id::default();
    store.set_raw(&id.to_string(), b"\xc1 not msgpack", Expiry::Default).unwrap();
    let loaded = runtime().block_on(store.load(&id));
    assert!(matches!(loaded, Err(tower_sessions::session_store::Error::Decode(_))), "{loaded:?}");
    assert!(master.check_integrity().is_ok());
}

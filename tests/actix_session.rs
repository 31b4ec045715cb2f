//! The actix-session adapter (feature `actix-session`), tested through actix-session's
//! `SessionMiddleware` in an actix-web app, and through the trait for actix-session's TTL
//! semantics: `save` mints a new 256-bit key and never overwrites; `update` keeps the key of
//! a live session and falls back to `save` (a new key) when the session expired or was
//! deleted meanwhile; `update_ttl` with zero ends the session; a TTL that runs out makes the
//! session absent; keys the store cannot hold load as no session; undecodable bytes give
//! `LoadError::Deserialization`. The same app across forked workers is tested end to end
//! in `hello_examples.rs` (`hello_actix`).
mod common;

use std::collections::HashMap;

use actix_session::storage::{LoadError, SessionKey, SessionStore};
use actix_session::{Session, SessionMiddleware};
use actix_web::cookie::{time::Duration, Cookie, Key};
use actix_web::{test, web, App};
use cluster_session_store::{ClusterStore, Expiry};
use common::setup;

fn state(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn key(s: &str) -> SessionKey {
    SessionKey::try_from(s.to_owned()).unwrap()
}

async fn visit(session: Session) -> actix_web::Result<String> {
    let n: u32 = session.get("n")?.unwrap_or(0);
    session.insert("n", n + 1)?;
    Ok(n.to_string())
}

async fn logout(session: Session) -> &'static str {
    session.purge();
    "bye"
}

/// One request; returns the body and the session cookie it set, if any.
async fn call<S>(
    app: &S,
    path: &str,
    cookie: Option<&Cookie<'static>>,
) -> (String, Option<Cookie<'static>>)
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
    >,
{
    let mut request = test::TestRequest::get().uri(path);
    if let Some(cookie) = cookie {
        request = request.cookie(cookie.clone());
    }
    let response = test::call_service(app, request.to_request()).await;
    assert!(response.status().is_success(), "{}", response.status());
    let set = response.response().cookies().next().map(|c| c.into_owned());
    let body = test::read_body(response).await;
    (String::from_utf8(body.to_vec()).unwrap(), set)
}

#[actix_web::test]
async fn one_session_across_two_apps_through_the_middleware() {
    let (master, name) = setup("actix-mw");
    let signing = Key::generate();
    // Two app instances, as two workers would have, each on its own store handle.
    let make = || {
        let store = ClusterStore::open(&name).unwrap();
        App::new()
            .wrap(SessionMiddleware::builder(store, signing.clone()).cookie_secure(false).build())
            .route("/visit", web::get().to(visit))
            .route("/logout", web::get().to(logout))
    };
    let one = test::init_service(make()).await;
    let two = test::init_service(make()).await;

    let (body, cookie) = call(&one, "/visit", None).await;
    assert_eq!(body, "0");
    let cookie = cookie.expect("the first visit sets the session cookie");
    assert_eq!(call(&two, "/visit", Some(&cookie)).await.0, "1");
    assert_eq!(call(&one, "/visit", Some(&cookie)).await.0, "2");
    assert_eq!(master.length().unwrap(), 1);

    // A cookie whose signature does not verify starts a new session.
    let forged = Cookie::new(cookie.name().to_owned(), "forged-session-key");
    assert_eq!(call(&two, "/visit", Some(&forged)).await.0, "0");
    assert_eq!(master.length().unwrap(), 2);

    // Logout deletes the session from the store.
    assert_eq!(call(&two, "/logout", Some(&cookie)).await.0, "bye");
    assert_eq!(master.length().unwrap(), 1);
    assert_eq!(call(&one, "/visit", Some(&cookie)).await.0, "0", "logout kept the session");
    assert!(master.check_integrity().is_ok());
}

#[actix_web::test]
async fn save_update_update_ttl_delete() {
    let (master, name) = setup("actix-ttl");
    let store = ClusterStore::open(&name).unwrap();
    let ttl = Duration::minutes(5);

    let first = store.save(state(&[("user", "\"ada\"")]), &ttl).await.unwrap();
    let second = store.save(state(&[("user", "\"bob\"")]), &ttl).await.unwrap();
    assert_eq!(first.as_ref().len(), 64);
    assert!(
        first.as_ref().bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "lowercase hex"
    );
    assert_ne!(first.as_ref(), second.as_ref());
    assert_eq!(store.load(&first).await.unwrap(), Some(state(&[("user", "\"ada\"")])));

    // A live session keeps its key.
    let updated =
        SessionStore::update(&store, first, state(&[("user", "\"eve\"")]), &ttl).await.unwrap();
    assert_eq!(store.load(&updated).await.unwrap(), Some(state(&[("user", "\"eve\"")])));

    // A TTL of zero ends the session; an update after that is saved under a new key.
    store.update_ttl(&updated, &Duration::ZERO).await.unwrap();
    assert_eq!(store.load(&updated).await.unwrap(), None);
    let old = updated.as_ref().to_owned();
    let moved =
        SessionStore::update(&store, updated, state(&[("cart", "[1]")]), &ttl).await.unwrap();
    assert_ne!(moved.as_ref(), old, "an ended session was resurrected under its old key");
    assert_eq!(store.load(&key(&old)).await.unwrap(), None);
    assert_eq!(store.load(&moved).await.unwrap(), Some(state(&[("cart", "[1]")])));

    // Deleted, it is gone; deleting again is no error; a deleted session is not updated.
    store.delete(&second).await.unwrap();
    store.delete(&second).await.unwrap();
    assert_eq!(store.load(&second).await.unwrap(), None);
    let after_delete =
        SessionStore::update(&store, key(second.as_ref()), state(&[]), &ttl).await.unwrap();
    assert_ne!(after_delete.as_ref(), second.as_ref());

    // A negative TTL stores nothing that loads.
    let born_dead = store.save(state(&[("a", "1")]), &Duration::seconds(-1)).await.unwrap();
    assert_eq!(store.load(&born_dead).await.unwrap(), None);
    assert_eq!(master.length().unwrap(), 2); // `moved` and `after_delete`
    assert!(master.check_integrity().is_ok());
}

#[actix_web::test]
async fn a_session_whose_ttl_ran_out_is_absent_and_not_updated() {
    let (master, name) = setup("actix-expire");
    let store = ClusterStore::open(&name).unwrap();
    let short = Duration::milliseconds(20);
    let k = store.save(state(&[("a", "1")]), &short).await.unwrap();
    // The deadline was set inside `save`, before this clock read.
    let saved = std::time::SystemTime::now();
    common::wait_past(saved + std::time::Duration::from_millis(20));
    assert_eq!(store.load(&k).await.unwrap(), None);
    let old = k.as_ref().to_owned();
    let renewed =
        SessionStore::update(&store, k, state(&[("a", "2")]), &Duration::minutes(1)).await.unwrap();
    assert_ne!(renewed.as_ref(), old);
    assert_eq!(store.load(&key(&old)).await.unwrap(), None);
    assert_eq!(store.load(&renewed).await.unwrap(), Some(state(&[("a", "2")])));
    assert!(master.check_integrity().is_ok());
}

#[actix_web::test]
async fn keys_the_store_cannot_hold_and_undecodable_bytes() {
    let (master, name) = setup("actix-bad");
    let store = ClusterStore::open(&name).unwrap();
    let long = key(&"k".repeat(300));
    assert_eq!(store.load(&long).await.unwrap(), None);
    store.update_ttl(&long, &Duration::minutes(1)).await.unwrap();
    store.delete(&long).await.unwrap();
    let saved = SessionStore::update(&store, long, state(&[("a", "1")]), &Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!(saved.as_ref().len(), 64, "an update of an unstorable key saves under a new one");
    assert_eq!(store.load(&key("")).await.unwrap(), None);

    store.set_raw("garbage", b"\xc1\xc1", Expiry::Default).unwrap();
    let loaded = store.load(&key("garbage")).await;
    assert!(matches!(loaded, Err(LoadError::Deserialization(_))), "{loaded:?}");
    assert!(master.check_integrity().is_ok());
}

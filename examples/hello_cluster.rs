//! The seed's example in Rust, with axum and tower-sessions over this store: one master,
//! a worker per CPU on one port, one session shared by all of them.
//!
//! `GET /hello` answers `{"msg":"Hello from worker N"}` on a session's first visit and
//! `{"msg":"Hello again from worker N"}` after, whichever worker served the first visit.
//! The master (`cluster/mod.rs`) sets up the store and binds the port, forks the workers,
//! logs them coming online and exiting, starts a new one when one dies, and on SIGTERM or
//! SIGINT stops them and releases the store.
//!
//! Forking comes first: the master never starts an async runtime; each worker builds its own
//! Tokio runtime after the fork, then serves.
//!
//! `STORE=memory` swaps in tower-sessions' `MemoryStore`, one per worker process: sessions
//! are then not shared (a client sent to another worker starts over). It exists only so that
//! `benches/http.sh` can measure the same server with a per-process store.
//!
//! ```sh
//! cargo run --release --features tower-sessions --example hello_cluster
//! curl -c jar -b jar http://127.0.0.1:8080/hello   # a few times
//! ```

mod cluster;

use std::net::TcpListener;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use cluster_session_store::ClusterStore;
use serde_json::{json, Value};
use tower_sessions::{Expiry, MemoryStore, Session, SessionManagerLayer, SessionStore};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    cluster::run(&worker)
}

/// A worker, after the fork: attach to the store, then serve.
fn worker(id: usize, listener: TcpListener) -> Result<(), Box<dyn std::error::Error>> {
    match std::env::var("STORE").as_deref() {
        Ok("memory") => serve(id, listener, MemoryStore::default()),
        _ => serve(id, listener, ClusterStore::new()?),
    }
}

/// Starts a Tokio runtime (only now, after the fork) and serves the app.
fn serve(
    id: usize,
    listener: TcpListener,
    store: impl SessionStore + Clone,
) -> Result<(), Box<dyn std::error::Error>> {
    let sessions = SessionManagerLayer::new(store)
        // Plain HTTP on 127.0.0.1 for the example; keep the default (Secure) behind TLS.
        .with_secure(false)
        // Save on every request, so that the expiry below counts from the last visit.
        .with_always_save(true)
        .with_expiry(Expiry::OnInactivity(tower_sessions::cookie::time::Duration::hours(1)));
    let app = Router::new().route("/hello", get(hello)).layer(sessions).with_state(id);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        listener.set_nonblocking(true)?;
        axum::serve(tokio::net::TcpListener::from_std(listener)?, app).await
    })?;
    Ok(())
}

async fn hello(
    State(id): State<usize>,
    session: Session,
) -> Result<Json<Value>, (StatusCode, String)> {
    let error =
        |e: tower_sessions::session::Error| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    let visited: Option<String> = session.get("visited").await.map_err(error)?;
    session.insert("visited", "1").await.map_err(error)?;
    let msg = match visited {
        Some(_) => format!("Hello again from worker {id}"),
        None => format!("Hello from worker {id}"),
    };
    Ok(Json(json!({ "msg": msg })))
}

//! The seed's example in Rust, with axum and tower-sessions over this store: one master,
//! a worker per CPU on one port, one session shared by all of them.
//!
//! `GET /hello` answers `{"msg":"Hello from worker N"}` on a session's first visit and
//! `{"msg":"Hello again from worker N"}` after, whichever worker served the first visit.
//! `GET /logout` ends the session and answers `{"msg":"Bye from worker N"}`.
//! `POST /echo` answers its body: a request whose body comes late is one in flight, which is
//! how the tests hold one open across a shutdown. The master (`cluster/mod.rs`) sets up the
//! store and binds the port, forks the workers, logs them coming online and exiting, starts
//! a new one when one dies, and on SIGTERM or SIGINT stops them and releases the store.
//!
//! Forking comes first: the master never starts an async runtime; each worker builds its own
//! Tokio runtime after the fork, then serves until SIGTERM or SIGINT: it then stops
//! accepting (closes its copy of the socket), leaves the connections it accepted last a
//! moment to send their requests, answers the requests it has begun (axum's graceful
//! shutdown) and exits.
//!
//! A store error is logged to the worker's stderr and answered 500 `internal error`, as is
//! every other server error: the details stay in the log.
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

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::map_response;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::signal::unix::{signal, SignalKind};
use tower_sessions::session::{Id, Record};
use tower_sessions::{
    session_store, Expiry, MemoryStore, Session, SessionManagerLayer, SessionStore,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    cluster::run(&worker)
}

/// A worker, after the fork: attach to the store, then serve.
fn worker(id: usize, listener: TcpListener) -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var("STORE").as_deref() == Ok("memory") {
        return serve(id, listener, MemoryStore::default());
    }
    match cluster::sessions()? {
        cluster::Sessions::Local(store) => serve(id, listener, store),
        cluster::Sessions::Redis(store) => serve(id, listener, store),
    }
}

/// Starts a Tokio runtime (only now, after the fork) and serves the app until SIGTERM or
/// SIGINT.
fn serve(
    id: usize,
    listener: TcpListener,
    store: impl SessionStore + Clone,
) -> Result<(), Box<dyn std::error::Error>> {
    let sessions = SessionManagerLayer::new(Logged { id, store })
        // Plain HTTP on 127.0.0.1 for the example; keep the default (Secure) behind TLS.
        .with_secure(false)
        // Save on every request, so that the expiry below counts from the last visit.
        .with_always_save(true)
        .with_expiry(Expiry::OnInactivity(tower_sessions::cookie::time::Duration::hours(1)));
    let app = Router::new()
        .route("/hello", get(hello))
        .route("/logout", get(logout))
        .route("/echo", post(echo))
        .layer(sessions)
        // Outside the session layer, which answers a failed save with an empty 500.
        .layer(map_response(generic_server_errors))
        .with_state(id);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        // Handled from here on: one that came while the worker started is delivered now.
        cluster::stop_signals().thread_unblock()?;
        listener.set_nonblocking(true)?;
        let (closing, closed) = tokio::sync::watch::channel(false);
        let listener =
            Closing { listener: Some(tokio::net::TcpListener::from_std(listener)?), closed };
        // On the signal: stop accepting at once; a moment later, have the connections finish
        // their requests and close (axum's graceful shutdown); then wait for them.
        let stop = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            let _ = closing.send(true);
            tokio::time::sleep(DRAIN).await;
        };
        axum::serve(listener, app).with_graceful_shutdown(stop).await
    })?;
    Ok(())
}

/// How long a stopping worker, no longer accepting, leaves the connections it accepted last
/// to send their requests before the graceful shutdown closes those that are idle (hyper
/// closes a connection whose first request has not arrived yet as an idle one).
const DRAIN: std::time::Duration = std::time::Duration::from_millis(250);

/// The worker's listening socket, closed (its copy) as soon as the worker stops: from then
/// on the kernel queues new connections for the other processes accepting on the socket (a
/// new master's workers, in a handover) or refuses them.
struct Closing {
    listener: Option<tokio::net::TcpListener>,
    closed: tokio::sync::watch::Receiver<bool>,
}

impl axum::serve::Listener for Closing {
    type Io = tokio::net::TcpStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Some(listener) = &self.listener else {
                return std::future::pending().await;
            };
            tokio::select! {
                _ = self.closed.changed() => self.listener = None,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => return accepted,
                    // A connection reset before it was accepted, or out of descriptors for
                    // a moment: the next one.
                    Err(_) => tokio::task::yield_now().await,
                },
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        match &self.listener {
            Some(listener) => listener.local_addr(),
            None => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }
}

async fn hello(State(id): State<usize>, session: Session) -> Result<Json<Value>, StatusCode> {
    let error = |e: tower_sessions::session::Error| {
        eprintln!("worker {id}: GET /hello: {e}");
        StatusCode::INTERNAL_SERVER_ERROR
    };
    let visited: Option<String> = session.get("visited").await.map_err(error)?;
    session.insert("visited", "1").await.map_err(error)?;
    let msg = match visited {
        Some(_) => format!("Hello again from worker {id}"),
        None => format!("Hello from worker {id}"),
    };
    Ok(Json(json!({ "msg": msg })))
}

/// Ends the session: removed from the store (on every host, with `REDIS_URL`).
async fn logout(State(id): State<usize>, session: Session) -> Result<Json<Value>, StatusCode> {
    session.flush().await.map_err(|e| {
        eprintln!("worker {id}: GET /logout: {e}");
        StatusCode::INTERNAL_SERVER_ERROR
    })?;
    Ok(Json(json!({ "msg": format!("Bye from worker {id}") })))
}

async fn echo(body: String) -> String {
    body
}

/// Every 5xx answer gets the body `internal error`: what went wrong is in the log only.
async fn generic_server_errors(response: Response) -> Response {
    if !response.status().is_server_error() {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Response::from_parts(parts, Body::from("internal error"))
}

/// The session store, with every error it returns logged to stderr: tower-sessions answers
/// a failed save with a bare 500 and reports the error only through `tracing`.
#[derive(Clone, Debug)]
struct Logged<S> {
    id: usize,
    store: S,
}

impl<S> Logged<S> {
    fn log<T>(&self, result: session_store::Result<T>) -> session_store::Result<T> {
        if let Err(e) = &result {
            eprintln!("worker {}: session store: {e}", self.id);
        }
        result
    }
}

#[async_trait]
impl<S: SessionStore + Clone> SessionStore for Logged<S> {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        self.log(self.store.create(record).await)
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        self.log(self.store.save(record).await)
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        self.log(self.store.load(id).await)
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        self.log(self.store.delete(id).await)
    }
}

//! The seed's example with actix-web and actix-session over this store: one master, a
//! worker per CPU on one port, one session shared by all of them. Same routes (`GET /hello`,
//! `GET /logout`, `POST /echo`), answers and master as `hello_cluster` (`cluster/mod.rs`).
//!
//! The cookie signing key must be the same in every worker, so the master makes it before
//! forking: from `SESSION_KEY` (128 hex characters, 64 bytes) if set, so that cookies stay
//! valid across restarts (with `STORE_NAME`, the sessions do too), else a new random one.
//! Each worker then starts its own single-threaded actix system and serves until SIGTERM or
//! SIGINT: it then stops accepting, leaves the connections it accepted last a moment
//! (`DRAIN`) to send their requests, answers the requests begun (actix's graceful stop; the
//! master's grace period bounds it) and exits.
//!
//! A store error is logged to the worker's stderr and answered 500 `internal error`, as is
//! every other server error: the details stay in the log.
//!
//! ```sh
//! cargo run --release --example hello_actix
//! curl -c jar -b jar http://127.0.0.1:8080/hello   # a few times
//! ```

mod cluster;

use std::collections::HashMap;
use std::error::Error;
use std::net::TcpListener;

use actix_session::config::PersistentSession;
use actix_session::storage::{LoadError, SaveError, SessionKey, SessionStore, UpdateError};
use actix_session::{Session, SessionMiddleware};
use actix_web::cookie::{time::Duration, Key};
use actix_web::dev::Service;
use actix_web::error::ErrorInternalServerError;
use actix_web::{get, post, web, App, HttpResponse, HttpServer};
use serde_json::json;
use tokio::signal::unix::{signal, SignalKind};

fn main() -> Result<(), Box<dyn Error>> {
    let key = match std::env::var("SESSION_KEY") {
        Ok(hex) => signing_key(&hex).map_err(|e| format!("SESSION_KEY: {e}"))?,
        Err(_) => Key::generate(),
    };
    cluster::run(&|id, listener| worker(id, listener, key.clone()))
}

/// The cookie signing key written as hex: 64 bytes or more.
fn signing_key(hex: &str) -> Result<Key, Box<dyn Error>> {
    let digit = |c: u8| (c as char).to_digit(16).ok_or("not a hex digit");
    let bytes = hex
        .as_bytes()
        .chunks(2)
        .map(|pair| match pair {
            [high, low] => Ok((digit(*high)? * 16 + digit(*low)?) as u8),
            _ => Err("an odd number of hex digits"),
        })
        .collect::<Result<Vec<u8>, _>>()?;
    Ok(Key::try_from(bytes.as_slice())?)
}

/// A worker, after the fork: attach to the store, start an actix system, serve until SIGTERM
/// or SIGINT.
fn worker(id: usize, listener: TcpListener, key: Key) -> Result<(), Box<dyn Error>> {
    match cluster::sessions()? {
        cluster::Sessions::Local(store) => serve(id, listener, key, store),
        cluster::Sessions::Redis(store) => serve(id, listener, key, store),
    }
}

fn serve<S: SessionStore + Clone + Send + 'static>(
    id: usize,
    listener: TcpListener,
    key: Key,
    store: S,
) -> Result<(), Box<dyn Error>> {
    let store = Logged { id, store };
    actix_web::rt::System::new().block_on(async move {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        // Handled from here on: one that came while the worker started is delivered now.
        cluster::stop_signals().thread_unblock()?;
        let server = HttpServer::new(move || {
            let sessions = SessionMiddleware::builder(store.clone(), key.clone())
                // Plain HTTP on 127.0.0.1 for the example; keep the default (Secure) behind TLS.
                .cookie_secure(false)
                .session_lifecycle(PersistentSession::default().session_ttl(Duration::hours(1)))
                .build();
            App::new()
                .app_data(web::Data::new(id))
                .wrap(sessions)
                // Outside the session middleware, which fails a request whose session could
                // not be loaded or saved with an empty 500.
                .wrap_fn(|request, app| {
                    let answer = app.call(request);
                    async move {
                        match answer.await {
                            Ok(response) if response.status().is_server_error() => {
                                Ok(response.into_response(internal_error()))
                            }
                            Ok(response) => Ok(response.map_into_boxed_body()),
                            // Answered with the error's own response: 500, its text as body.
                            Err(_) => Err(ErrorInternalServerError("internal error")),
                        }
                    }
                })
                .service(hello)
                .service(logout)
                .service(echo)
        })
        .workers(1)
        .disable_signals()
        .listen(listener)?
        .run();
        // On the signal: stop accepting at once; a moment later, stop gracefully (the
        // requests begun are answered, idle connections closed).
        let handle = server.handle();
        actix_web::rt::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            handle.pause().await;
            actix_web::rt::time::sleep(DRAIN).await;
            handle.stop(true).await;
        });
        server.await
    })?;
    Ok(())
}

/// How long a stopping worker, no longer accepting, leaves the connections it accepted last
/// to send their requests before its graceful stop closes those that are idle.
const DRAIN: std::time::Duration = std::time::Duration::from_millis(250);

/// The answer to every server error: what went wrong is in the log only.
fn internal_error() -> HttpResponse {
    HttpResponse::InternalServerError().content_type("text/plain").body("internal error")
}

#[get("/hello")]
async fn hello(id: web::Data<usize>, session: Session) -> actix_web::Result<HttpResponse> {
    let id = **id;
    let error = |e: &dyn Error| eprintln!("worker {id}: GET /hello: {e}");
    let visited: Option<String> = session.get("visited").inspect_err(|e| error(e))?;
    session.insert("visited", "1").inspect_err(|e| error(e))?;
    let msg = match visited {
        Some(_) => format!("Hello again from worker {id}"),
        None => format!("Hello from worker {id}"),
    };
    Ok(HttpResponse::Ok().json(json!({ "msg": msg })))
}

/// Ends the session: removed from the store (on every host, with `REDIS_URL`) when the
/// response goes out.
#[get("/logout")]
async fn logout(id: web::Data<usize>, session: Session) -> HttpResponse {
    session.purge();
    HttpResponse::Ok().json(json!({ "msg": format!("Bye from worker {}", **id) }))
}

#[post("/echo")]
async fn echo(body: web::Bytes) -> HttpResponse {
    HttpResponse::Ok().body(body)
}

/// The session store, with every error it returns logged to stderr: actix-session answers a
/// failed load or save with a bare 500 and does not report the error.
#[derive(Clone)]
struct Logged<S> {
    id: usize,
    store: S,
}

impl<S> Logged<S> {
    fn log<T, E: Error + 'static>(&self, result: Result<T, E>) -> Result<T, E> {
        if let Err(e) = &result {
            eprintln!("worker {}: session store: {}", self.id, causes(e));
        }
        result
    }
}

/// `e` and its sources, `: `-separated (actix-session's errors say what failed, their
/// sources why).
fn causes(e: &(dyn Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

type State = HashMap<String, String>;

impl<S: SessionStore> SessionStore for Logged<S> {
    async fn load(&self, key: &SessionKey) -> Result<Option<State>, LoadError> {
        self.log(SessionStore::load(&self.store, key).await)
    }

    async fn save(&self, state: State, ttl: &Duration) -> Result<SessionKey, SaveError> {
        self.log(SessionStore::save(&self.store, state, ttl).await)
    }

    async fn update(
        &self,
        key: SessionKey,
        state: State,
        ttl: &Duration,
    ) -> Result<SessionKey, UpdateError> {
        self.log(SessionStore::update(&self.store, key, state, ttl).await)
    }

    async fn update_ttl(&self, key: &SessionKey, ttl: &Duration) -> anyhow::Result<()> {
        let result = SessionStore::update_ttl(&self.store, key, ttl).await;
        if let Err(e) = &result {
            eprintln!("worker {}: session store: {e:#}", self.id);
        }
        result
    }

    async fn delete(&self, key: &SessionKey) -> anyhow::Result<()> {
        let result = SessionStore::delete(&self.store, key).await;
        if let Err(e) = &result {
            eprintln!("worker {}: session store: {e:#}", self.id);
        }
        result
    }
}

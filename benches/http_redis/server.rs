//! The server of `benches/http_redis.sh`: one "host" of a service whose sessions live in
//! Redis, the examples' prefork master (`examples/cluster/mod.rs`: workers forked on one
//! port, `SO_REUSEPORT`, each with its own current-thread Tokio runtime) serving axum with
//! tower-sessions, over one of two stores (`MODE`):
//!
//! - `ours` (default): this crate's `RedisStore`, this host's shared-memory store in front
//!   of Redis (`REDIS_URL`, which the master passes to `Config::redis`), through the crate's
//!   tower-sessions 0.15 adapter;
//! - `peer`: tower-sessions-redis-store 0.16 (a fred pool of `PEER_POOL` connections per
//!   worker) on the Redis at `PEER_REDIS_URL`, through tower-sessions 0.14, the version it
//!   implements. The pool's default is 1 connection, not the 6 of its documentation: on the
//!   2-vCPU VM of BENCHMARKS.md one worker with one connection (fred pipelines on it) served
//!   1.19× the requests/s on `/read` and 1.41× on `/hello` of one with 6. The master runs as in `ours` but without
//!   `REDIS_URL`, so it sets up a local segment that no worker uses.
//!
//! Two routes, the same in both modes, with the examples' expiry (one hour of inactivity):
//!
//! - `GET /read`, read-mostly: reads `visited` from the session and inserts it if absent,
//!   so the session is written on its first request only;
//! - `GET /hello`, the examples' route: reads `visited` and inserts it on every request,
//!   saved on every request (`with_always_save(true)`).
//!
//! Both answer 200 with a short text body, 500 on a store error (logged to stderr).
//!
//! ```sh
//! cargo build --release -p benches --example http_redis_server
//! MODE=ours REDIS_URL=redis://127.0.0.1:6379 WORKERS=1 PORT=0 \
//!   target/release/examples/http_redis_server
//! ```

#[path = "../../examples/cluster/mod.rs"]
mod cluster;

use std::error::Error;
use std::future::Future;
use std::net::TcpListener;

use axum::http::StatusCode;
use axum::Router;
use tokio::signal::unix::{signal, SignalKind};

fn main() -> Result<(), Box<dyn Error>> {
    cluster::run(&worker)
}

/// A worker, after the fork: its store, then the app until SIGTERM or SIGINT.
fn worker(_id: usize, listener: TcpListener) -> Result<(), Box<dyn Error>> {
    match std::env::var("MODE").as_deref() {
        Ok("peer") => {
            let url =
                std::env::var("PEER_REDIS_URL").map_err(|_| "MODE=peer needs PEER_REDIS_URL")?;
            let size: usize = match std::env::var("PEER_POOL") {
                Ok(n) => n.parse().map_err(|e| format!("PEER_POOL={n}: {e}"))?,
                Err(_) => 1,
            };
            serve(listener, || async move {
                use tower_sessions_redis_store::fred::prelude::{ClientLike, Config, Pool};
                let pool = Pool::new(Config::from_url(&url)?, None, None, None, size)?;
                pool.init().await?;
                Ok(peer::app(tower_sessions_redis_store::RedisStore::new(pool)))
            })
        }
        Ok("ours") | Err(_) => match cluster::sessions()? {
            cluster::Sessions::Redis(store) => serve(listener, || async { Ok(ours::app(store)) }),
            cluster::Sessions::Local(_) => Err("MODE=ours needs REDIS_URL".into()),
        },
        Ok(other) => Err(format!("MODE={other}: ours or peer").into()),
    }
}

/// Starts a current-thread Tokio runtime (only now, after the fork), builds the app in it
/// (the peer's pool connects from the runtime) and serves until SIGTERM or SIGINT.
fn serve<F, A>(listener: TcpListener, app: F) -> Result<(), Box<dyn Error>>
where
    F: FnOnce() -> A,
    A: Future<Output = Result<Router, Box<dyn Error>>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let app = app().await?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        // Handled from here on: one that came while the worker started is delivered now.
        cluster::stop_signals().thread_unblock()?;
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let stop = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        axum::serve(listener, app).with_graceful_shutdown(stop).await?;
        Ok(())
    })
}

/// The two routes over one tower-sessions version (`$ts`): the same code for both stores.
macro_rules! app {
    ($ts:ident) => {
        use super::StatusCode;
        use $ts::{Expiry, Session, SessionManagerLayer, SessionStore};

        /// `/read` saves only a modified session, `/hello` every one; both with the same
        /// store and cookie.
        pub fn app(store: impl SessionStore + Clone) -> axum::Router {
            let layer = |always_save| {
                SessionManagerLayer::new(store.clone())
                    // Plain HTTP on 127.0.0.1.
                    .with_secure(false)
                    .with_always_save(always_save)
                    .with_expiry(Expiry::OnInactivity($ts::cookie::time::Duration::hours(1)))
            };
            axum::Router::new()
                .route("/read", axum::routing::get(read).layer(layer(false)))
                .route("/hello", axum::routing::get(hello).layer(layer(true)))
        }

        fn failed(e: $ts::session::Error) -> StatusCode {
            eprintln!("worker {}: {e}", std::process::id());
            StatusCode::INTERNAL_SERVER_ERROR
        }

        /// Written on a session's first request only.
        async fn read(session: Session) -> Result<&'static str, StatusCode> {
            let visited: Option<String> = session.get("visited").await.map_err(failed)?;
            if visited.is_some() {
                return Ok("again");
            }
            session.insert("visited", "1").await.map_err(failed)?;
            Ok("new")
        }

        /// Written on every request, as the examples' `/hello`.
        async fn hello(session: Session) -> Result<&'static str, StatusCode> {
            let visited: Option<String> = session.get("visited").await.map_err(failed)?;
            session.insert("visited", "1").await.map_err(failed)?;
            Ok(if visited.is_some() { "Hello again" } else { "Hello" })
        }
    };
}

/// This crate's `RedisStore`, through tower-sessions 0.15.
mod ours {
    app!(tower_sessions);
}

/// tower-sessions-redis-store, through tower-sessions 0.14.
mod peer {
    app!(tower_sessions_014);
}

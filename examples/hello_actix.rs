//! The seed's example with actix-web and actix-session over this store: one master, a
//! worker per CPU on one port, one session shared by all of them. Same routes, answers and
//! master as `hello_cluster` (`cluster/mod.rs`).
//!
//! The cookie signing key must be the same in every worker, so the master makes it before
//! forking. Each worker then starts its own single-threaded actix system.
//!
//! ```sh
//! cargo run --release --features actix-session --example hello_actix
//! curl -c jar -b jar http://127.0.0.1:8080/hello   # a few times
//! ```

mod cluster;

use std::net::TcpListener;

use actix_session::config::PersistentSession;
use actix_session::{Session, SessionMiddleware};
use actix_web::cookie::{time::Duration, Key};
use actix_web::{get, web, App, HttpResponse, HttpServer};
use cluster_session_store::ClusterStore;
use serde_json::json;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let key = Key::generate();
    cluster::run(&|id, listener| worker(id, listener, key.clone()))
}

/// A worker, after the fork: attach to the store, start an actix system, serve.
fn worker(id: usize, listener: TcpListener, key: Key) -> Result<(), Box<dyn std::error::Error>> {
    let store = ClusterStore::new()?;
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(move || {
            let sessions = SessionMiddleware::builder(store.clone(), key.clone())
                // Plain HTTP on 127.0.0.1 for the example; keep the default (Secure) behind TLS.
                .cookie_secure(false)
                .session_lifecycle(PersistentSession::default().session_ttl(Duration::hours(1)))
                .build();
            App::new().app_data(web::Data::new(id)).wrap(sessions).service(hello)
        })
        .workers(1)
        .disable_signals()
        .listen(listener)?
        .run()
        .await
    })?;
    Ok(())
}

#[get("/hello")]
async fn hello(id: web::Data<usize>, session: Session) -> actix_web::Result<HttpResponse> {
    let id = **id;
    let visited: Option<String> = session.get("visited")?;
    session.insert("visited", "1")?;
    let msg = match visited {
        Some(_) => format!("Hello again from worker {id}"),
        None => format!("Hello from worker {id}"),
    };
    Ok(HttpResponse::Ok().json(json!({ "msg": msg })))
}

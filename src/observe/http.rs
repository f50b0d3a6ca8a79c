//! The observability HTTP listener: `GET /metrics` (Prometheus text format
//! 0.0.4), `GET /healthz` and `GET /readyz` (200 or 503 with a small JSON body).
//!
//! Invariants: handlers only read in-memory state ([`Metrics`], [`Health`]),
//! so a scrape or probe never waits on Redis; the listener binds a loopback
//! address unless `daemon.listen_public` allows otherwise ([`check_listen`]);
//! [`serve`] returns once `shutdown` is cancelled and open requests finish.
//! Called by the daemon's supervisor, which binds the listener itself so that
//! a busy port is reported at start.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{Health, Metrics};

/// `Content-Type` of `/metrics`.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

/// The routes, for serving on a listener of the caller's choosing.
pub fn router(metrics: Arc<Metrics>, health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz_handler))
        .route("/readyz", get(readyz_handler))
        .with_state(AppState { metrics, health })
}

/// Serves the routes on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    axum::serve(listener, router(metrics, health))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn metrics_handler(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        s.metrics.render(),
    )
}

async fn healthz_handler(State(s): State<AppState>) -> (StatusCode, Json<Value>) {
    probe(s.health.healthz())
}

async fn readyz_handler(State(s): State<AppState>) -> (StatusCode, Json<Value>) {
    probe(s.health.readyz())
}

fn probe((ok, body): (bool, Value)) -> (StatusCode, Json<Value>) {
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

/// Parses `daemon.listen` and refuses a non-loopback address (including
/// `0.0.0.0` and `[::]`) unless `public_ok` (`daemon.listen_public`) is set.
pub fn check_listen(addr: &str, public_ok: bool) -> Result<SocketAddr, String> {
    let parsed: SocketAddr = addr.trim().parse().map_err(|_| {
        format!("daemon.listen = {addr:?} is not an address:port such as \"127.0.0.1:9464\"")
    })?;
    if !public_ok && !parsed.ip().to_canonical().is_loopback() {
        return Err(format!(
            "daemon.listen = {addr:?} is not a loopback address; set daemon.listen_public = true \
             to serve metrics and health beyond this host"
        ));
    }
    Ok(parsed)
}

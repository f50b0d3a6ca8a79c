//! `redq dashboard`: a web UI over Redis for operators. Server-rendered HTML
//! (readable without JavaScript, actions as POST forms); a small script
//! refreshes the numbers from `/api/summary`. Every asset is in the binary.
//!
//! Layout: [`pages`] (overview, live summary), [`queue`], [`job`], [`views`] (daemons, cron,
//! usage), [`actions`] (the POST routes), [`chart`] (SVG), [`html`]
//! (escaping, layout), [`query`] (lenient query and form parsing),
//! [`guard`] (access token, CSRF).
//!
//! Invariants: GET never writes to Redis; every POST carries the process's
//! CSRF token and, when the browser sends one, an `Origin` of this host;
//! every value read from Redis is escaped; a bad queue name, id or query
//! string is a 400 page, never a panic. All reads go through the store
//! ([`crate::inspect`], [`crate::store::Store`]) in bounded pipelines.

mod actions;
mod chart;
mod guard;
mod html;
mod job;
mod pages;
mod query;
mod queue;
mod views;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::config::CronConfig;
use crate::error::{Error, Result};
use crate::store::Store;

/// Default `--listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9465";
/// Largest payload shown on a job page, in bytes of pretty-printed JSON.
pub const PAYLOAD_CAP: usize = 64 * 1024;
/// Dead jobs per page on a queue page.
pub const PAGE_SIZE: usize = 50;

/// What the dashboard serves and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// Queues named in the config file, shown even before they are registered.
    pub configured_queues: Vec<String>,
    /// The `[[cron]]` entries of the config file, or why they could not be read.
    pub cron: std::result::Result<Vec<CronConfig>, String>,
    /// Required (HTTP Basic password, or `Authorization: Bearer`) when set.
    pub token: Option<String>,
    /// Hide job payloads and results (they may hold personal data).
    pub redact_payloads: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            configured_queues: Vec::new(),
            cron: Ok(Vec::new()),
            token: None,
            redact_payloads: false,
        }
    }
}

/// The state every handler shares.
pub(crate) struct App {
    pub client: crate::Client,
    pub opts: Options,
    /// The per-process CSRF token every form carries.
    pub csrf: String,
}

/// Checks `--listen`: an address:port, and loopback unless `public` (and
/// then a token is required).
pub fn check_listen(addr: &str, public: bool, token: Option<&str>) -> Result<SocketAddr> {
    let parsed: SocketAddr = addr.trim().parse().map_err(|_| {
        Error::Config(format!(
            "--listen {addr:?} is not an address:port such as \"{DEFAULT_LISTEN}\""
        ))
    })?;
    if parsed.ip().to_canonical().is_loopback() {
        return Ok(parsed);
    }
    if !public {
        return Err(Error::Config(format!(
            "--listen {addr:?} is not a loopback address; pass --listen-public (with --token) \
             to serve the dashboard beyond this host, or put it behind a reverse proxy"
        )));
    }
    match token {
        Some(t) if t.len() >= 16 => Ok(parsed),
        _ => Err(Error::Config(
            "--listen-public needs an access token of at least 16 characters: \
             --token or REDQ_DASHBOARD_TOKEN"
                .into(),
        )),
    }
}

/// The dashboard's routes over `store`.
pub fn router(store: Store, opts: Options) -> Router {
    let app = Arc::new(App {
        client: crate::Client::from_store(store),
        opts,
        csrf: guard::new_token(),
    });
    Router::new()
        .route("/", get(pages::overview))
        .route("/api/summary", get(pages::summary))
        .route("/charts/rates.svg", get(pages::rates_svg))
        .route("/lookup", get(queue::lookup))
        .route("/queues/{queue}", get(queue::page))
        .route("/queues/{queue}/jobs", get(queue::jobs_by_state))
        .route("/queues/{queue}/jobs/{id}", get(job::page))
        .route(
            "/queues/{queue}/jobs/{id}/{action}",
            post(actions::job_action),
        )
        .route("/queues/{queue}/pause", post(actions::pause))
        .route("/queues/{queue}/resume", post(actions::resume))
        .route("/queues/{queue}/dead/retry", post(actions::retry))
        .route("/queues/{queue}/dead/purge", post(actions::purge))
        .route("/daemons", get(views::daemons))
        .route("/cron", get(views::cron))
        .route("/usage", get(views::usage))
        .route("/assets/app.css", get(css))
        .route("/assets/app.js", get(js))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            guard::check,
        ))
        .with_state(app)
}

/// Serves the dashboard on `listener` until `stop`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Store,
    opts: Options,
    stop: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(store, opts))
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", include_str!("assets/app.css"))
}

async fn js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    )
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}

async fn not_found() -> Response {
    error_page(StatusCode::NOT_FOUND, "No such page.")
}

/// A page saying what went wrong (the message escaped).
pub(crate) fn error_page(code: StatusCode, message: &str) -> Response {
    let body = format!(
        "<p class=\"error\">{}</p><p><a href=\"/\">Back to the overview</a></p>",
        html::esc(message)
    );
    (code, html_response(&html::page("Error", &body))).into_response()
}

/// A redq error as a page: 400 for bad input, 502 when Redis failed.
pub(crate) fn fail(e: Error) -> Response {
    let code = match e {
        Error::InvalidName(_) | Error::InvalidJob(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::BAD_GATEWAY,
    };
    error_page(code, &e.to_string())
}

pub(crate) fn html_response(body: &str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.to_owned(),
    )
        .into_response()
}

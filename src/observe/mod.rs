//! Observability: Prometheus metrics, health and readiness, and the HTTP
//! listener that serves them. A self-contained library module: the daemon
//! records into [`Metrics`] and [`Health`] and runs [`http::serve`].
//!
//! Layout:
//! - [`metrics`]: [`Metrics`] (recording), [`JobOutcome`], [`QueueDepths`].
//! - `histogram`: lock-free histograms (Prometheus buckets, and a reset-on-read
//!   window for the summary log's p50/p99).
//! - `render`: [`Metrics::render`], the `/metrics` body.
//! - `text`: the text exposition format and its escaping.
//! - [`health`]: [`Health`], behind `/healthz` and `/readyz`.
//! - [`http`]: the axum routes, [`http::serve`] and [`http::check_listen`].
//!
//! Invariants: recording is cheap enough for the job hot path and never
//! allocates after a queue's first use; labels are bounded (queue names from
//! the config, fixed enums; never job ids or tenants); serving a request
//! reads memory only, never Redis.

pub mod health;
mod histogram;
pub mod http;
pub mod metrics;
mod render;
mod text;

pub use health::Health;
pub use http::{check_listen, serve};
pub use metrics::{JobOutcome, Metrics, QueueDepths, Reload, Start};

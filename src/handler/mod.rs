//! Handlers: what a job runs.
//!
//! A [`Handler`] receives a [`JobContext`] and returns an [`Outcome`]. The
//! worker turns the outcome into a Redis transition (complete, retry, dead).
//! Three kinds exist: [`command`] (an external program), [`http`] (a POST to
//! an endpoint) and library handlers (any Rust type implementing [`Handler`]).
//!
//! Handlers never touch Redis and never see redq's credentials. They must
//! return promptly once `ctx.cancel` fires (time-out, lost lease, shutdown):
//! the worker stops waiting at that point anyway, so a handler that ignores
//! cancellation only leaks work, never blocks the daemon.

pub mod command;
pub mod http;

use std::time::Duration;

use async_trait::async_trait;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

/// Everything a handler may know about the job it runs.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// The job's id (UUIDv7 unless the producer chose one).
    pub id: String,
    /// The queue the job was claimed from.
    pub queue: String,
    /// 1 for the first attempt, 2 for the first retry, …
    pub attempt: u32,
    /// The tenant the producer named, if any.
    pub tenant: Option<String>,
    /// The fencing token of this claim; increases with every claim of the queue.
    pub fence: u64,
    /// The payload exactly as the producer sent it (raw JSON text).
    pub payload: Box<RawValue>,
    /// How long the handler may run before it is stopped.
    pub timeout: Duration,
    /// Fires when the handler must stop: time-out, lost lease or shutdown deadline.
    pub cancel: CancellationToken,
}

/// What a handler says about one attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Success; `result` (capped by the handler) is kept per the queue's retention.
    Done { result: Option<String> },
    /// The attempt failed; retry with the queue's backoff while attempts remain.
    Fail { error: String },
    /// The attempt failed; retry no earlier than `after` (e.g. `Retry-After`)
    /// while attempts remain.
    Retry { after: Duration, error: String },
    /// Never retry: the job goes straight to the dead set with `error`.
    Dead { error: String },
}

/// Usage figures a handler reported (for example tokens or cost), by name.
pub type Usage = std::collections::BTreeMap<String, f64>;

/// A job handler. Implement this for library (Rust) handlers.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    async fn handle(&self, ctx: JobContext) -> Outcome;
}

/// Any `Fn(JobContext) -> Future<Output = Outcome>` closure is a handler.
#[async_trait]
impl<F, Fut> Handler for F
where
    F: Fn(JobContext) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Outcome> + Send + 'static,
{
    async fn handle(&self, ctx: JobContext) -> Outcome {
        (self)(ctx).await
    }
}

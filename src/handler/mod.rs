//! Handlers: what a job runs.
//!
//! A [`Handler`] receives a [`JobContext`] and returns an [`Outcome`]; the
//! daemon calls [`Handler::run`], which also returns the [`Usage`] the handler
//! reported and, for command handlers, the [`Resources`] the program used.
//! The worker turns the outcome into a Redis transition (complete, retry, dead).
//! Three kinds exist: [`command`] (an external program), [`http`] (a POST to
//! an endpoint) and library handlers (any Rust type implementing [`Handler`]).
//! The private `guard` module kills the command handlers' process groups when
//! the daemon dies, however it dies.
//!
//! Handlers never touch Redis and never see redq's credentials. They must
//! return promptly once `ctx.cancel` fires (time-out, lost lease, shutdown):
//! the worker stops waiting at that point anyway, so a handler that ignores
//! cancellation only leaks work, never blocks the daemon.

pub mod command;
pub(crate) mod guard;
pub mod http;

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

/// Everything a handler may know about the job it runs.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// The job's id (26 base32 characters, see [`crate::job::new_id`], unless the producer chose one).
    pub id: String,
    /// The queue the job was claimed from.
    pub queue: String,
    /// 1 for the first attempt, 2 for the first retry, …
    pub attempt: u32,
    /// The tenant the producer named, if any.
    pub tenant: Option<String>,
    /// The fence of this claim; increases with every claim of the queue.
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

/// What one run of a program cost (command handlers), as kept on the job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// Wall-clock time from spawn to exit.
    pub wall_seconds: f64,
    pub user_cpu_seconds: f64,
    pub sys_cpu_seconds: f64,
    /// Peak resident set size of the program, KiB.
    pub max_rss_kib: u64,
    /// Exit code if the program exited; `None` if killed by a signal or never started.
    pub exit_code: Option<i32>,
    /// The signal that killed the program, if one did.
    pub signal: Option<i32>,
    /// Bytes written to stdout / stderr, including those dropped by the cap.
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
}

/// Everything a handler says about one attempt: the outcome, the usage it
/// reported and, when it ran a program, the resources that program used.
#[derive(Debug, Clone, PartialEq)]
pub struct RunReport {
    pub outcome: Outcome,
    pub usage: Usage,
    pub resources: Option<Resources>,
}

impl From<Outcome> for RunReport {
    fn from(outcome: Outcome) -> RunReport {
        RunReport {
            outcome,
            usage: Usage::new(),
            resources: None,
        }
    }
}

/// A job handler. Implement this for library (Rust) handlers.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    async fn handle(&self, ctx: JobContext) -> Outcome;

    /// Runs one attempt and reports its outcome with usage and resources.
    /// The daemon calls this; the default reports [`Handler::handle`]'s
    /// outcome with no usage, so a library handler that reports usage
    /// overrides this instead.
    async fn run(&self, ctx: JobContext) -> RunReport {
        self.handle(ctx).await.into()
    }
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

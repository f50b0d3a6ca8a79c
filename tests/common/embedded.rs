//! The daemon embedded as a library (`WorkerBuilder`, configured from TOML
//! text) against the test's private redis-server, and the helpers the
//! in-process tests share: launching and stopping daemons (also one that can
//! be crashed), bounded waits on counters and jobs, and a recording handler.
//!
//! A handler's channel is the test's signal that a job ran; [`Counters`]
//! (written after Redis answered) and job states have no signal, so the
//! helpers here poll them with [`eventually`].

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use redq::config::{self, Config};
use redq::daemon::{Counters, DaemonHandle, WorkerBuilder};
use redq::inspect::{JobInfo, JobState};
use redq::{Client, JobContext, Outcome};
use tokio::sync::mpsc;

use super::server::RedisServer;
use super::wait::{eventually, within, WAIT};

pub fn init_tracing() {
    // RUST_LOG=redq=debug shows the daemon's logs of a failing test.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

pub const DAEMON_DEFAULTS: &[(&str, &str)] = &[
    // Tests run side by side: each daemon's metrics listener takes a free port.
    ("listen", "\"127.0.0.1:0\""),
    ("reap_interval", "\"100ms\""),
    ("inbox_poll", "\"100ms\""),
    ("shutdown_timeout", "\"10s\""),
];

pub const QUEUE_DEFAULTS: &[(&str, &str)] = &[
    ("lease", "\"1s\""),
    ("lease_renew", "\"200ms\""),
    ("max_attempts", "3"),
    ("keep_completed", "1000"),
    ("backoff", "{ base = \"10ms\", max = \"50ms\" }"),
];

/// `extra` (TOML lines) plus every default it does not set itself.
pub fn with_defaults(extra: &str, defaults: &[(&str, &str)]) -> String {
    let mut out = format!("{}\n", extra.trim());
    for (key, value) in defaults {
        if !extra.contains(&format!("{key} =")) {
            out.push_str(&format!("{key} = {value}\n"));
        }
    }
    out
}

/// A `[queues.<name>]` table with no `handler`: a library handler serves it.
pub fn queue(name: &str, extra: &str) -> String {
    format!(
        "\n[queues.{name}]\n{}",
        with_defaults(extra, QUEUE_DEFAULTS)
    )
}

/// The whole config: the private Redis, `[daemon]` with short intervals, `rest`.
pub fn config(redis: &RedisServer, daemon: &str, rest: &str) -> Config {
    let text = format!(
        "[redis]\nurl = \"{}\"\n\n[daemon]\n{}{rest}",
        redis.url(),
        with_defaults(daemon, DAEMON_DEFAULTS)
    );
    config::read_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// A started daemon whose `run()` goes on in a task.
pub struct Running {
    pub handle: DaemonHandle,
    pub counters: Arc<Counters>,
    pub task: tokio::task::JoinHandle<redq::Result<()>>,
    /// Where its `/metrics`, `/healthz` and `/readyz` are served.
    pub http: SocketAddr,
}

/// Starts the daemon (bounded) and runs it in a task.
pub async fn launch(builder: WorkerBuilder) -> Running {
    init_tracing();
    let daemon = within(10, builder.start()).await.expect("daemon starts");
    // `run` consumes the daemon: take what the test needs first.
    let (handle, counters, http) = (daemon.handle(), daemon.counters(), daemon.http_addr());
    Running {
        handle,
        counters,
        task: tokio::spawn(daemon.run()),
        http,
    }
}

impl Running {
    /// `http://<addr><path>` of its HTTP listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// Shuts it down and waits (bounded) for `run` to return `Ok`.
    pub async fn stop(self) {
        self.handle.shutdown();
        within(20, self.task)
            .await
            .expect("daemon task")
            .expect("daemon run");
    }
}

/// Shuts every daemon down at once, then waits for each (no daemon goes on
/// alone while the others stop one by one).
pub async fn stop_all(daemons: Vec<Running>) {
    for d in &daemons {
        d.handle.shutdown();
    }
    for d in daemons {
        within(20, d.task)
            .await
            .expect("daemon task")
            .expect("daemon run");
    }
}

/// A daemon on a runtime of its own, so a test can kill it like a crashed
/// process: shutting the runtime down drops every task at once, with no
/// step-down and nothing written to Redis (its locks and leases expire).
pub struct Crashable {
    rt: Option<tokio::runtime::Runtime>,
    pub daemon: Running,
}

impl Crashable {
    pub async fn launch(builder: WorkerBuilder) -> Crashable {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let daemon = within(20, rt.spawn(launch(builder))).await.unwrap();
        Crashable {
            rt: Some(rt),
            daemon,
        }
    }

    /// Kills the daemon abruptly.
    pub fn crash(mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }

    /// Shuts the daemon down gracefully (bounded).
    pub async fn stop(mut self) {
        self.daemon.handle.shutdown();
        within(20, &mut self.daemon.task).await.unwrap().unwrap();
    }
}

impl Drop for Crashable {
    fn drop(&mut self) {
        // Dropping a runtime inside another one panics; this does not block.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Waits until `counter`, one of `counters`, reaches `n` (no more): woken
/// by each change of the daemon's counters, not by polling.
pub async fn counter_reaches(what: &str, counters: &Counters, counter: &AtomicU64, n: u64) {
    let reached = counters.until(|_| Counters::get(counter) >= n);
    if tokio::time::timeout(WAIT, reached).await.is_err() {
        panic!(
            "timed out after {WAIT:?} waiting for {what} to reach {n} (at {})",
            Counters::get(counter)
        );
    }
    assert_eq!(Counters::get(counter), n, "{what}");
}

/// Waits until `counters` (one per daemon, say) add up to at least `n`.
pub async fn counters_at_least(what: &str, counters: &[&AtomicU64], n: u64) {
    let sum = || counters.iter().map(|c| Counters::get(c)).sum::<u64>();
    eventually(&format!("{what} to reach {n}"), WAIT, || async {
        let now = sum();
        if now >= n {
            Ok(())
        } else {
            Err(format!("{what} at {now}"))
        }
    })
    .await;
}

/// Waits until `done` holds for one job; returns what was seen.
pub async fn job_when(
    client: &Client,
    queue: &str,
    id: &str,
    done: impl Fn(&JobInfo) -> bool,
) -> JobInfo {
    eventually(&format!("job {queue}/{id} to get there"), WAIT, || async {
        match client.job(queue, id).await.expect("job lookup") {
            Some(info) if done(&info) => Ok(info),
            seen => Err(format!("{seen:?}")),
        }
    })
    .await
}

pub async fn succeeded(client: &Client, queue: &str, id: &str) -> JobInfo {
    job_when(client, queue, id, |j| j.state == JobState::Succeeded).await
}

/// The next message from a handler (bounded).
pub async fn recv<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    within(10, rx.recv()).await.expect("handler channel closed")
}

pub fn payload_n(ctx: &JobContext) -> i64 {
    ctx.payload.get().parse().expect("payload is an integer")
}

/// A handler that reports each job's payload and succeeds.
pub fn recording() -> (
    impl Fn(JobContext) -> std::future::Ready<Outcome> + Clone + Send + Sync + 'static,
    mpsc::UnboundedReceiver<i64>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handler = move |ctx: JobContext| {
        let _ = tx.send(payload_n(&ctx));
        std::future::ready(Outcome::Done { result: None })
    };
    (handler, rx)
}

//! The daemon embedded as a library (`WorkerBuilder`, configured from TOML
//! text) against the test's private redis-server, and the helpers the
//! in-process tests share: bounded waits on counters, jobs and conditions,
//! and a recording handler.

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use redq::config::{self, Config};
use redq::daemon::{Counters, DaemonHandle, WorkerBuilder};
use redq::inspect::{JobInfo, JobState};
use redq::{Client, JobContext, NewJob, Outcome};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{within, RedisServer};

/// The longest any single wait in these tests may take before it fails.
pub const WAIT: Duration = Duration::from_secs(10);
/// How often polled Redis state is read again.
pub const POLL: Duration = Duration::from_millis(10);

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
}

pub async fn launch(builder: WorkerBuilder) -> Running {
    init_tracing();
    let daemon = within(10, builder.start()).await.expect("daemon starts");
    // `run` consumes the daemon: take the handle and counters first.
    let (handle, counters) = (daemon.handle(), daemon.counters());
    Running {
        handle,
        counters,
        task: tokio::spawn(daemon.run()),
    }
}

impl Running {
    pub async fn stop(self) {
        self.handle.shutdown();
        within(20, self.task)
            .await
            .expect("daemon task")
            .expect("daemon run");
    }
}

/// Waits until `counter` reaches `n` (counters are written after Redis answers).
pub async fn counter_reaches(what: &str, counter: &AtomicU64, n: u64) {
    let deadline = Instant::now() + WAIT;
    while Counters::get(counter) < n {
        assert!(
            Instant::now() < deadline,
            "{what} stayed at {} (want {n})",
            Counters::get(counter)
        );
        tokio::time::sleep(POLL).await;
    }
    assert_eq!(Counters::get(counter), n, "{what}");
}

/// Polls `check` until it holds, for at most [`WAIT`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// Polls one job until `done` holds for it; returns what was seen.
pub async fn job_when(
    client: &Client,
    queue: &str,
    id: &str,
    done: impl Fn(&JobInfo) -> bool,
) -> JobInfo {
    let deadline = Instant::now() + WAIT;
    loop {
        let info = client.job(queue, id).await.expect("job lookup");
        match info {
            Some(info) if done(&info) => return info,
            _ if Instant::now() >= deadline => panic!("job {queue}/{id} never got there: {info:?}"),
            _ => tokio::time::sleep(POLL).await,
        }
    }
}

pub async fn succeeded(client: &Client, queue: &str, id: &str) -> JobInfo {
    job_when(client, queue, id, |j| j.state == JobState::Succeeded).await
}

pub async fn recv<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    within(10, rx.recv()).await.expect("handler channel closed")
}

pub fn job(n: i64) -> NewJob {
    NewJob::new(&n).unwrap()
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

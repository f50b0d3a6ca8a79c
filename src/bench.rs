//! `redq bench`: measures the queue through the real daemon on a private
//! `redis-server` it starts itself (never the Redis on 6379).
//!
//! Scenarios so far: batch enqueue (1000 jobs per round trip) and processing
//! pre-enqueued jobs with the built-in no-op handler at a given concurrency.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::{self, Config};
use crate::daemon::WorkerBuilder;
use crate::error::{Error, Result};
use crate::{Client, NewJob};

/// One scenario's outcome.
#[derive(Debug, Serialize)]
pub struct BenchResult {
    pub scenario: String,
    pub jobs: u64,
    pub seconds: f64,
    pub jobs_per_sec: f64,
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis(dir: &std::path::Path) -> Result<(Server, String)> {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| Error::Config(format!("no free port: {e}")))?
        .port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| Error::Config(format!("cannot start redis-server (is it installed?): {e}")))?;
    Ok((Server(child), format!("redis://127.0.0.1:{port}")))
}

async fn wait_ready(client: &Client) -> Result<()> {
    for _ in 0..200 {
        if client.queues().await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err(Error::Config(
        "the benchmark's redis-server did not come up".into(),
    ))
}

async fn enqueue_batches(client: &Client, queue: &str, jobs: u64) -> Result<BenchResult> {
    let started = Instant::now();
    let mut left = jobs;
    while left > 0 {
        let n = left.min(1000);
        let batch = (0..n)
            .map(|i| NewJob::new(&i).map(|j| j.priority((i % 7) as i64)))
            .collect::<Result<Vec<_>>>()?;
        client.enqueue_many(queue, batch).await?;
        left -= n;
    }
    Ok(result("enqueue, batches of 1000", jobs, started.elapsed()))
}

fn result(scenario: &str, jobs: u64, took: Duration) -> BenchResult {
    let seconds = took.as_secs_f64();
    BenchResult {
        scenario: scenario.into(),
        jobs,
        seconds,
        jobs_per_sec: jobs as f64 / seconds.max(1e-9),
    }
}

async fn process(url: &str, queue: &str, jobs: u64, concurrency: u32) -> Result<BenchResult> {
    let toml = format!(
        "[redis]\nurl = \"{url}\"\n[daemon]\nlisten = \"127.0.0.1:0\"\n[queues.{queue}]\nconcurrency = {concurrency}\nhandler = {{ builtin = \"noop\" }}\n"
    );
    let cfg: Config = config::load_from_str(&toml)?;
    let client = Client::connect(url, &cfg.redis.key_prefix).await?;
    let started = Instant::now();
    let daemon = WorkerBuilder::new(cfg).start().await?;
    let handle = daemon.handle();
    let counters = daemon.counters();
    let run = tokio::spawn(daemon.run());
    loop {
        let s = client.stats(&[queue.to_owned()]).await?;
        if s.first()
            .map(|s| s.pending + s.active + s.scheduled)
            .unwrap_or(0)
            == 0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = started.elapsed();
    handle.shutdown();
    let _ = run.await;
    let done = crate::daemon::Counters::get(&counters.succeeded);
    if done != jobs {
        return Err(Error::Config(format!(
            "benchmark lost track: {done} of {jobs} jobs succeeded"
        )));
    }
    Ok(result(
        &format!("process, concurrency {concurrency}, no-op handler"),
        jobs,
        took,
    ))
}

/// Runs the scenarios and returns their results.
pub async fn run(jobs: u64, concurrency: &[u32]) -> Result<Vec<BenchResult>> {
    let dir = std::env::temp_dir().join(format!("redq-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::Config(format!("{}: {e}", dir.display())))?;
    let (_server, url) = start_redis(&dir)?;
    let client = Client::connect(&url, "redq").await?;
    wait_ready(&client).await?;
    let mut out = Vec::new();
    for &c in concurrency {
        let queue = format!("bench{c}");
        out.push(enqueue_batches(&client, &queue, jobs).await?);
        out.push(process(&url, &queue, jobs, c).await?);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(out)
}

//! The producer examples in `examples/` (Python with redis-py, Node.js
//! with ioredis), run against a private server, with a daemon (in the test
//! process) serving the queue `reports` whose job's outcome they wait for:
//! what the docs show works.
//!
//! Their client libraries come from the folders `.ci/run` installs them
//! into (`.ci/pydeps`, `.ci/node/node_modules`; git-ignored), or from the
//! system. When one is missing, its test says how to install it and skips.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use common::embedded::{config, launch, queue, Running};
use common::process::{run_async, Out};
use common::server::RedisServer;
use common::wait::secs;
use redq::daemon::WorkerBuilder;
use redq::{JobContext, Outcome};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `dir` joined to what `var` already holds.
fn path_with(var: &str, dir: PathBuf) -> String {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => format!("{}:{v}", dir.display()),
        _ => dir.display().to_string(),
    }
}

fn python() -> Command {
    let mut c = Command::new("python3");
    c.env(
        "PYTHONPATH",
        path_with("PYTHONPATH", repo().join(".ci/pydeps")),
    );
    c
}

fn node() -> Command {
    let mut c = Command::new("node");
    c.env(
        "NODE_PATH",
        path_with("NODE_PATH", repo().join(".ci/node/node_modules")),
    );
    c
}

/// Whether `cmd` runs and exits 0 (the library imports).
fn works(mut cmd: Command) -> bool {
    cmd.output().is_ok_and(|o| o.status.success())
}

/// The steps an example printed, by name.
fn steps(o: &Out) -> std::collections::HashMap<String, Value> {
    assert_eq!(
        o.code,
        Some(0),
        "the example failed:\n{}\n{}",
        o.stdout,
        o.stderr
    );
    o.stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .map(|v| {
            (
                v["step"].as_str().unwrap_or("").to_owned(),
                v["value"].clone(),
            )
        })
        .collect()
}

/// What both examples must have done.
fn check(steps: &std::collections::HashMap<String, Value>) {
    let id = steps["enqueued"].as_str().expect("an id");
    assert_eq!(id.len(), 26, "{id}");
    let refused = steps["refused"].as_str().unwrap();
    assert!(
        refused.contains("invalid job: field \"priority\""),
        "{refused}"
    );
    assert_eq!(steps["status"]["state"], "pending");
    assert_eq!(steps["status"]["id"], id);
    assert_eq!(steps["status"]["last_error"], Value::Null);
    assert_eq!(steps["cancelled"], "scheduled");
    assert_eq!(steps["status after cancel"]["state"], "unknown");
    let outcome = &steps["outcome"];
    assert_eq!(outcome["state"], "succeeded", "{outcome}");
    // The handler's result: its payload as the example's JSON library wrote it.
    let result = outcome["result"]
        .as_str()
        .unwrap_or_default()
        .replace(' ', "");
    assert_eq!(result, "report{\"report\":7}", "{outcome}");
    assert_eq!(outcome["last_error"], Value::Null, "{outcome}");
}

/// The private server, with the libraries loaded, and a daemon serving the
/// queue `reports` (its handler's result: "report <payload>").
async fn server() -> (RedisServer, Running) {
    let redis = RedisServer::start();
    let store = redq::store::Store::connect(&redis.url(), "redq")
        .await
        .unwrap();
    store.ensure_library().await.unwrap();
    let handler = |ctx: JobContext| {
        std::future::ready(Outcome::Done {
            result: Some(format!("report {}", ctx.payload.get())),
        })
    };
    let cfg = config(&redis, "", &queue("reports", "keep_completed = 0"));
    let daemon = launch(WorkerBuilder::new(cfg).handler("reports", handler)).await;
    (redis, daemon)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_enqueues_reads_status_cancels_and_waits() {
    let mut probe = python();
    probe.args(["-c", "import redis"]);
    if !works(probe) {
        eprintln!(
            "SKIPPED: the Python example needs python3 and redis-py: \
             python3 -m pip install --target .ci/pydeps redis (.ci/run does)"
        );
        return;
    }
    let (redis, daemon) = server().await;
    let mut cmd = python();
    cmd.arg(repo().join("examples/python/producer.py"))
        .args([&redis.url(), "emails", "reports"]);
    check(&steps(&run_async(cmd, secs(30)).await));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_example_enqueues_reads_status_cancels_and_waits() {
    let mut probe = node();
    probe.args(["-e", "require('ioredis')"]);
    if !works(probe) {
        eprintln!(
            "SKIPPED: the Node.js example needs node and ioredis: \
             npm install --prefix .ci/node ioredis (.ci/run does)"
        );
        return;
    }
    let (redis, daemon) = server().await;
    let mut cmd = node();
    cmd.arg(repo().join("examples/node/producer.cjs"))
        .args([&redis.url(), "emails", "reports"]);
    check(&steps(&run_async(cmd, secs(30)).await));
    daemon.stop().await;
}

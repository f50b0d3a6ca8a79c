//! The producer examples in `examples/` (Python with redis-py, Node.js
//! with ioredis), run against a private server: what the docs show works.
//!
//! Their client libraries come from the folders `.ci/run` installs them
//! into (`.ci/pydeps`, `.ci/node/node_modules`; git-ignored), or from the
//! system. When one is missing, its test says how to install it and skips.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use common::process::{run_bounded, Out};
use common::server::RedisServer;
use common::wait::secs;

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
}

async fn server() -> RedisServer {
    let redis = RedisServer::start();
    let store = redq::store::Store::connect(&redis.url(), "redq")
        .await
        .unwrap();
    store.ensure_library().await.unwrap();
    redis
}

#[tokio::test]
async fn the_python_example_enqueues_reads_status_and_cancels() {
    let mut probe = python();
    probe.args(["-c", "import redis"]);
    if !works(probe) {
        eprintln!(
            "SKIPPED: the Python example needs python3 and redis-py: \
             python3 -m pip install --target .ci/pydeps redis (.ci/run does)"
        );
        return;
    }
    let redis = server().await;
    let mut cmd = python();
    cmd.arg(repo().join("examples/python/producer.py"))
        .args([&redis.url(), "emails"]);
    check(&steps(&run_bounded(&mut cmd, secs(30))));
}

#[tokio::test]
async fn the_node_example_enqueues_reads_status_and_cancels() {
    let mut probe = node();
    probe.args(["-e", "require('ioredis')"]);
    if !works(probe) {
        eprintln!(
            "SKIPPED: the Node.js example needs node and ioredis: \
             npm install --prefix .ci/node ioredis (.ci/run does)"
        );
        return;
    }
    let redis = server().await;
    let mut cmd = node();
    cmd.arg(repo().join("examples/node/producer.cjs"))
        .args([&redis.url(), "emails"]);
    check(&steps(&run_bounded(&mut cmd, secs(30))));
}

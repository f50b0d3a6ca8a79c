//! Usage accounting end to end: an embedded daemon runs a few hundred jobs
//! through a command handler (usage written to `$REDQ_USAGE_FILE`), an HTTP
//! handler (a `usage` object in the reply) and a library closure (no usage);
//! the per-tenant totals add up exactly, a bad usage file does not fail its
//! job, and a command job keeps its resources.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use axum::routing::post;
use axum::{Json, Router};
use common::embedded::launch;
use common::process::{redq, run_bounded};
use common::server::RedisServer;
use common::wait::{eventually, secs};
use redq::daemon::WorkerBuilder;
use redq::inspect::JobState;
use redq::inspect::{self, UsageTotals};
use redq::usage::{self, Day};
use redq::{JobContext, NewJob, Outcome};

/// Reads the payload (a JSON number n): n >= 0 reports n tokens; -1 writes a
/// file that is not JSON; -2 a non-number entry next to a number.
const SCRIPT: &str = r#"#!/bin/sh
n=$(cat)
case "$n" in
  -1) printf 'not json {' > "$REDQ_USAGE_FILE" ;;
  -2) printf '{"tokens": "many", "pages": 2}' > "$REDQ_USAGE_FILE" ;;
  *) printf '{"tokens": %s, "cost_usd": 0.001}' "$n" > "$REDQ_USAGE_FILE" ;;
esac
echo done
"#;

fn config(url: &str, script: &Path, web: &str) -> redq::config::Config {
    redq::config::read_str(&format!(
        r#"
[redis]
url = "{url}"
[daemon]
listen = "127.0.0.1:0"
reap_interval = "100ms"
inbox_poll = "100ms"
[queues.cmd]
concurrency = 16
keep_completed = 1000
handler = {{ command = ["{script}"] }}
[queues.web]
concurrency = 16
handler = {{ http = "{web}" }}
[queues.lib]
concurrency = 4
"#,
        script = script.display()
    ))
    .unwrap()
}

/// An endpoint that reports the payload (a number) as tokens.
async fn web_server() -> String {
    async fn job(Json(body): Json<serde_json::Value>) -> Json<serde_json::Value> {
        let n = body["payload"].as_i64().unwrap_or(0);
        Json(serde_json::json!({"ok": true, "usage": {"tokens": n, "cost_usd": 0.002}}))
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/job", post(job));
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/job")
}

/// Job `i` of a queue with `n` tenant slots: acme, (globex,) none.
fn tenant_of(i: usize, n: usize) -> Option<&'static str> {
    match i % n {
        0 => Some("acme"),
        1 if n > 2 => Some("globex"),
        _ => None,
    }
}

/// (queue, tenant) -> (tokens, jobs) as the test enqueued them.
type Expected = BTreeMap<(String, String), (f64, f64)>;

fn expect(e: &mut Expected, queue: &str, tenant: Option<&str>, tokens: f64) {
    let slot = e
        .entry((queue.into(), tenant.unwrap_or(usage::NO_TENANT).into()))
        .or_default();
    slot.0 += tokens;
    slot.1 += 1.0;
}

fn got(totals: &[UsageTotals]) -> Expected {
    totals
        .iter()
        .map(|t| {
            let n = |name: &str| t.usage.get(name).copied().unwrap_or(0.0);
            (
                (t.queue.clone(), t.tenant.clone()),
                (n("tokens"), n(usage::JOBS)),
            )
        })
        .collect()
}

/// `redq --redis-url <url> <args>` run in `dir`: what it printed, as JSON.
fn redq_cli(dir: &Path, url: &str, args: &[&str]) -> serde_json::Value {
    let out = run_bounded(
        redq()
            .current_dir(dir)
            .arg("--redis-url")
            .arg(url)
            .args(args),
        secs(30),
    );
    assert!(out.code == Some(0), "redq {args:?}: {}", out.stderr);
    serde_json::from_str(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn usage_adds_up_per_tenant_from_both_handler_kinds() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("handler.sh");
    std::fs::write(&script, SCRIPT).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let web = web_server().await;
    let lib = |_ctx: JobContext| async { Outcome::Done { result: None } };
    let daemon =
        launch(WorkerBuilder::new(config(&redis.url(), &script, &web)).handler("lib", lib)).await;

    let mut expected = Expected::new();
    let mut cmd_jobs = Vec::new();
    for i in 0..200usize {
        let tenant = tenant_of(i, 3);
        let tokens = (i % 10 + 1) as i64;
        let mut job = NewJob::new(&tokens).unwrap();
        if let Some(t) = tenant {
            job = job.tenant(t);
        }
        cmd_jobs.push(job);
        expect(&mut expected, "cmd", tenant, tokens as f64);
    }
    let mut bad_jobs = Vec::new();
    for payload in [-1i64, -2] {
        bad_jobs.push(NewJob::new(&payload).unwrap().tenant("bad"));
        expect(&mut expected, "cmd", Some("bad"), 0.0);
    }
    let mut web_jobs = Vec::new();
    for i in 0..150usize {
        let tenant = tenant_of(i, 2);
        let mut job = NewJob::new(&(i as i64)).unwrap();
        if let Some(t) = tenant {
            job = job.tenant(t);
        }
        web_jobs.push(job);
        expect(&mut expected, "web", tenant, i as f64);
    }
    let mut lib_jobs = Vec::new();
    for i in 0..20usize {
        lib_jobs.push(NewJob::new(&i).unwrap().tenant("acme"));
        expect(&mut expected, "lib", Some("acme"), 0.0);
    }
    let cmd_ids = client.enqueue_many("cmd", cmd_jobs).await.unwrap();
    let bad_ids = client.enqueue_many("cmd", bad_jobs).await.unwrap();
    client.enqueue_many("web", web_jobs).await.unwrap();
    client.enqueue_many("lib", lib_jobs).await.unwrap();

    let total_jobs: f64 = expected.values().map(|(_, jobs)| jobs).sum();
    let queues: Vec<String> = ["cmd", "web", "lib"].map(String::from).to_vec();
    // Around midnight UTC the daemon may count on either side of it.
    let (since, until) = (Day::today().plus(-1), Day::today().plus(1));
    let totals = eventually("every job counted", secs(60), || async {
        let t = inspect::totals(client.store(), &queues, None, since, until)
            .await
            .unwrap();
        let jobs: f64 = t.iter().filter_map(|t| t.usage.get(usage::JOBS)).sum();
        assert!(jobs <= total_jobs, "more jobs counted than run: {t:?}");
        if jobs == total_jobs {
            Ok(t)
        } else {
            Err(format!("{jobs} of {total_jobs} jobs"))
        }
    })
    .await;
    assert_eq!(got(&totals), expected);
    for t in &totals {
        assert!(t.usage[usage::RUN_SECONDS] > 0.0, "{t:?}");
        match (t.queue.as_str(), t.tenant.as_str()) {
            ("cmd", "bad") => {
                // The invalid file counted nothing; of the other, the number counted.
                assert_eq!(t.usage.get("pages"), Some(&2.0), "{t:?}");
                assert!(!t.usage.contains_key("cost_usd"), "{t:?}");
            }
            ("lib", _) => assert_eq!(t.usage.len(), 2, "jobs and run time only: {t:?}"),
            (q, _) => {
                let per_job = if q == "cmd" { 0.001 } else { 0.002 };
                let cost = t.usage["cost_usd"];
                let want = per_job * t.usage[usage::JOBS];
                assert!((cost - want).abs() < 1e-9, "{t:?}");
            }
        }
    }
    // One tenant only, and the same numbers through the CLI.
    let acme = inspect::totals(client.store(), &queues, Some("acme"), since, until)
        .await
        .unwrap();
    assert!(acme.iter().all(|t| t.tenant == "acme"));
    assert_eq!(acme.len(), 3);
    let since_text = since.to_string();
    let json = redq_cli(
        dir.path(),
        &redis.url(),
        &["usage", "--since", &since_text, "--json"],
    );
    let cli: Vec<UsageTotals> = json["totals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| UsageTotals {
            queue: t["queue"].as_str().unwrap().into(),
            tenant: t["tenant"].as_str().unwrap().into(),
            usage: serde_json::from_value(t["usage"].clone()).unwrap(),
        })
        .collect();
    assert_eq!(got(&cli), expected);

    // A bad usage file never fails its job.
    for e in &bad_ids {
        let info = client.job("cmd", &e.id).await.unwrap().unwrap();
        assert_eq!(info.state, JobState::Succeeded, "{info:?}");
        assert_eq!(info.attempts, 1);
    }
    // A command job keeps what its run used, shown by `redq job --json`.
    let id = &cmd_ids[0].id;
    let job = redq_cli(dir.path(), &redis.url(), &["job", "cmd", id, "--json"]);
    let res = &job["resources"];
    assert_eq!(res["exit_code"], 0, "{job}");
    assert!(res["wall_seconds"].as_f64().unwrap() > 0.0, "{job}");
    assert_eq!(res["stdout_bytes"], 5, "{job}");
    assert!(res["signal"].is_null(), "{job}");
    // Usage hashes expire (default retention: 90 days after their day).
    let mut con = redis.con().await;
    let mut ttls = Vec::new();
    for day in since.0..=until.0 {
        let key = format!("redq:{{cmd}}:usage:{}", Day(day));
        let ttl: i64 = redis::cmd("TTL")
            .arg(&key)
            .query_async(&mut con)
            .await
            .unwrap();
        ttls.push(ttl);
    }
    assert!(
        ttls.iter().any(|t| *t > 89 * 86_400 && *t <= 92 * 86_400),
        "ttls {ttls:?}"
    );
    assert!(ttls.iter().all(|t| *t == -2 || *t > 0), "ttls {ttls:?}");

    daemon.stop().await;
}

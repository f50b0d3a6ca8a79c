//! `redq health`: 1 with no daemon, 0 while an embedded daemon beats (and it
//! is listed), 1 again once it has shut down, 69 when Redis is unreachable.

mod common;

use std::time::Duration;

use common::embedded::launch;
use common::process::{redq, run_async, Out};
use common::server::RedisServer;
use common::wait::{eventually, secs};
use redq::daemon::WorkerBuilder;

fn config(url: &str) -> redq::config::Config {
    redq::config::load_from_str(&format!(
        r#"
[redis]
url = "{url}"
[daemon]
listen = "127.0.0.1:0"
[queues.mail]
handler = {{ builtin = "noop" }}
[queues.reports]
handler = {{ builtin = "noop" }}
"#
    ))
    .unwrap()
}

/// How `redq health` ended: its exit code (-1 for a signal) and output.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `redq --redis-url <url> health <args>` off the async runtime.
async fn health(url: &str, args: &[&str]) -> Run {
    let mut c = redq();
    c.args(["--redis-url", url, "health"]).args(args);
    let Out {
        code,
        stdout,
        stderr,
    } = run_async(c, secs(30)).await;
    Run {
        code: code.unwrap_or(-1),
        stdout,
        stderr,
    }
}

/// Runs `redq health` until it exits with `code`, within a bound.
async fn health_until(url: &str, args: &[&str], code: i32) -> Run {
    eventually(&format!("redq health to exit {code}"), secs(20), || async {
        let r = health(url, args).await;
        if r.code == code {
            Ok(r)
        } else {
            Err(format!("{} {} {}", r.code, r.stdout, r.stderr))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn health_follows_daemon_heartbeats() {
    let redis = RedisServer::start();
    let url = redis.url();

    let r = health(&url, &[]).await;
    assert_eq!(r.code, 1, "{} {}", r.stdout, r.stderr);
    assert!(r.stdout.contains("redis: ok"), "{}", r.stdout);
    assert!(
        r.stderr.contains("no daemon heartbeat"),
        "the reason is given: {}",
        r.stderr
    );

    let daemon = launch(WorkerBuilder::new(config(&url))).await;

    let r = health_until(&url, &[], 0).await;
    assert!(r.stdout.contains("healthy: 1 daemon"), "{}", r.stdout);
    assert!(r.stdout.contains("mail,reports"), "{}", r.stdout);
    let r = health(&url, &["--json"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["healthy"], true);
    assert_eq!(v["redis"], true);
    assert_eq!(v["fresh"], 1);
    let d = &v["daemons"][0];
    assert_eq!(d["pid"], std::process::id());
    assert_eq!(d["fresh"], true);
    assert_eq!(d["queues"], serde_json::json!(["mail", "reports"]));
    assert_eq!(d["version"], env!("CARGO_PKG_VERSION"));
    let id = d["id"].as_str().unwrap().to_owned();
    assert!(
        id.contains(&format!(":{}:", std::process::id())),
        "id is host:pid:random: {id}"
    );
    assert!(r.stdout.contains("\"running\""), "{}", r.stdout);
    // An age limit shorter than any beat's age cannot be met.
    let r = health(&url, &["--max-age", "0s"]).await;
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(
        r.stdout.contains(&id) && r.stdout.contains("stale"),
        "{}",
        r.stdout
    );
    assert!(
        r.stderr.contains("no daemon heartbeat younger than"),
        "{}",
        r.stderr
    );

    // The heartbeat loop is covered by /healthz.
    let body = reqwest::get(daemon.url("/healthz"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("\"heartbeat\""), "{body}");

    daemon.stop().await;
    // A clean stop removes the entry at once, without waiting for expiry.
    let r = health(&url, &[]).await;
    assert_eq!(r.code, 1, "{} {}", r.stdout, r.stderr);
    assert!(!r.stdout.contains(&id), "{}", r.stdout);
    let mut con = redis.con().await;
    let left: Vec<String> = redis::cmd("KEYS")
        .arg("redq:daemon*")
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn health_reports_an_unreachable_redis() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    redis.kill();
    let r = health(&url, &[]).await;
    assert_eq!(r.code, 69, "{} {}", r.stdout, r.stderr);
    assert!(r.stderr.contains("Redis unreachable"), "{}", r.stderr);
    let r = health(&url, &["--json"]).await;
    assert_eq!(r.code, 69, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["healthy"], false);
    assert_eq!(v["redis"], false);
}

/// `redq stats` shows what daemons finished over the last minute.
#[tokio::test(flavor = "multi_thread")]
async fn stats_show_rates_over_the_last_minute() {
    let redis = RedisServer::start();
    let url = redis.url();
    let cfg = redq::config::load_from_str(&format!(
        r#"
[redis]
url = "{url}"
[daemon]
listen = "127.0.0.1:0"
[queues.ok]
handler = {{ builtin = "noop" }}
[queues.bad]
max_attempts = 1
handler = {{ builtin = "fail" }}
"#
    ))
    .unwrap();
    let daemon = launch(WorkerBuilder::new(cfg)).await;
    let client = redis.client().await;
    let job = |n: u32| redq::NewJob::new(&n).unwrap();
    client
        .enqueue_many("ok", (0..30).map(job).collect())
        .await
        .unwrap();
    client
        .enqueue_many("bad", (0..3).map(job).collect())
        .await
        .unwrap();

    // The per-minute buckets of the last two minutes add up exactly.
    let mut con = redis.con().await;
    let q = |name: &str| redq::keys::QueueKeys::new("redq", name).unwrap();
    let (ok, bad) = (q("ok"), q("bad"));
    eventually("the buckets to add up", secs(20), || {
        let mut con = con.clone();
        let (ok, bad) = (ok.clone(), bad.clone());
        async move {
            let counts = (
                last_two_minutes(&mut con, &ok, "succeeded").await,
                last_two_minutes(&mut con, &bad, "failed").await,
                last_two_minutes(&mut con, &ok, "failed").await,
            );
            if counts == (30, 3, 0) {
                Ok(())
            } else {
                Err(format!("{counts:?}"))
            }
        }
    })
    .await;
    let (secs, _): (i64, i64) = redis::cmd("TIME").query_async(&mut con).await.unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg(ok.rate(secs / 60))
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(ttl <= 180, "buckets expire by themselves: {ttl}");

    let mut stats = redq();
    stats.args(["--redis-url", &url, "stats", "--json"]);
    let out = run_async(stats, Duration::from_secs(30)).await;
    assert_eq!(out.code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let row = |name: &str| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|r| r["queue"] == name)
            .unwrap()["last_minute"]
            .clone()
    };
    let ok_rate = row("ok")["succeeded_per_sec"].as_f64().unwrap();
    assert!(ok_rate > 0.0 && ok_rate <= 0.5 + 1e-9, "{ok_rate}");
    let bad_rate = row("bad")["failed_per_sec"].as_f64().unwrap();
    assert!(bad_rate > 0.0 && bad_rate <= 0.05 + 1e-9, "{bad_rate}");
    assert_eq!(row("bad")["succeeded_per_sec"], 0.0);
    // Run-time percentiles come from the same buckets: no-op runs take well
    // under a second.
    let p50 = row("ok")["run_p50_ms"]
        .as_f64()
        .expect("a p50 for a queue that ran");
    let p99 = row("ok")["run_p99_ms"].as_f64().unwrap();
    assert!(p50 <= p99 && p99 <= 1000.0, "{p50} {p99}");
    // So do queue-wait percentiles: the jobs started well within a second
    // of their enqueue.
    let w50 = row("ok")["wait_p50_ms"]
        .as_f64()
        .expect("a wait p50 for a queue that ran");
    let w99 = row("ok")["wait_p99_ms"].as_f64().unwrap();
    assert!(w50 <= w99 && w99 <= 1000.0, "{w50} {w99}");

    daemon.stop().await;
}

/// `field` of the queue's rate buckets of this minute and the one before.
async fn last_two_minutes(
    con: &mut redis::aio::MultiplexedConnection,
    q: &redq::keys::QueueKeys,
    field: &str,
) -> u64 {
    let (secs, _): (i64, i64) = redis::cmd("TIME").query_async(con).await.unwrap();
    let mut n = 0;
    for minute in [secs / 60, secs / 60 - 1] {
        let v: Option<u64> = redis::cmd("HGET")
            .arg(q.rate(minute))
            .arg(field)
            .query_async(con)
            .await
            .unwrap();
        n += v.unwrap_or(0);
    }
    n
}

/// When Redis answers but the settings do not fit it, `redq health` names
/// the cause and exits 78: credentials refused, a Cluster node redirecting.
#[tokio::test(flavor = "multi_thread")]
async fn health_names_refused_credentials_and_cluster_redirects_and_exits_78() {
    let redis = RedisServer::start();
    redis
        .cli(&["CONFIG", "SET", "requirepass", "s3cret"])
        .unwrap();
    let port = redis.url().rsplit(':').next().unwrap().to_owned();
    for url in [
        format!("redis://127.0.0.1:{port}"),
        format!("redis://:wrong@127.0.0.1:{port}"),
    ] {
        let r = health(&url, &[]).await;
        assert_eq!(r.code, 78, "{url}: {} {}", r.stdout, r.stderr);
        assert!(
            r.stderr.contains("Redis refused the credentials") && r.stderr.contains("redis.url"),
            "{url}: {}",
            r.stderr
        );
        assert!(!r.stderr.contains("PING"), "{}", r.stderr);
    }
    let r = health(&format!("redis://:s3cret@127.0.0.1:{port}"), &[]).await;
    assert_eq!(r.code, 1, "right password, no daemon: {}", r.stderr);

    // Two cluster nodes; the slot of redq's heartbeat key is on the other one.
    let a = RedisServer::start_with(&[
        "--cluster-enabled",
        "yes",
        "--cluster-require-full-coverage",
        "no",
    ]);
    let b = RedisServer::start_with(&[
        "--cluster-enabled",
        "yes",
        "--cluster-require-full-coverage",
        "no",
    ]);
    let b_port = b.url().rsplit(':').next().unwrap().to_owned();
    a.cli(&["CLUSTER", "MEET", "127.0.0.1", &b_port]).unwrap();
    let slot = a
        .cli(&["CLUSTER", "KEYSLOT", &redq::keys::daemons("redq")])
        .unwrap();
    b.cli(&["CLUSTER", "ADDSLOTS", slot.trim()]).unwrap();
    let r = health_until(&a.url(), &[], 78).await;
    assert!(
        r.stderr.contains("Cluster redirect") && r.stderr.contains("Moved: "),
        "{}",
        r.stderr
    );
}

//! The daemon's own view of itself: /metrics counters move as jobs succeed
//! and fail, and /healthz and /readyz follow Redis going away and coming back.

mod common;

use std::time::Duration;

use common::{within, RedisServer};
use redq::daemon::WorkerBuilder;
use redq::NewJob;

fn config(url: &str) -> redq::config::Config {
    redq::config::load_from_str(&format!(
        r#"
[redis]
url = "{url}"
connect_timeout = "500ms"
command_timeout = "1s"
[daemon]
listen = "127.0.0.1:0"
reap_interval = "100ms"
inbox_poll = "100ms"
[queues.ok]
handler = {{ builtin = "noop" }}
[queues.bad]
max_attempts = 1
handler = {{ builtin = "fail" }}
"#
    ))
    .unwrap()
}

async fn get(url: &str) -> (u16, String) {
    match reqwest::get(url).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// Polls `url` until `check` holds on (status, body), within a bound.
async fn wait_for(url: &str, check: impl Fn(u16, &str) -> bool) -> (u16, String) {
    within(20, async {
        loop {
            let (code, body) = get(url).await;
            if check(code, &body) {
                return (code, body);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test]
async fn metrics_count_outcomes_and_health_follows_redis() {
    let mut redis = RedisServer::start_with(&["--appendonly", "yes"]);
    let client = redis.client().await;
    let daemon = WorkerBuilder::new(config(&redis.url()))
        .start()
        .await
        .unwrap();
    let base = format!("http://{}", daemon.http_addr());
    let handle = daemon.handle();
    let run = tokio::spawn(daemon.run());

    client
        .enqueue_many("ok", (0..20).map(|n| NewJob::new(&n).unwrap()).collect())
        .await
        .unwrap();
    client
        .enqueue_many("bad", (0..3).map(|n| NewJob::new(&n).unwrap()).collect())
        .await
        .unwrap();
    let metrics = format!("{base}/metrics");
    let (_, body) = wait_for(&metrics, |_, b| {
        sample(b, r#"redq_jobs_total{queue="ok",outcome="succeeded"}"#) == Some(20.0)
            && sample(b, r#"redq_jobs_total{queue="bad",outcome="dead"}"#) == Some(3.0)
    })
    .await;
    assert_eq!(
        sample(&body, r#"redq_job_run_seconds_count{queue="ok"}"#),
        Some(20.0)
    );
    assert_eq!(
        sample(&body, r#"redq_jobs_total{queue="ok",outcome="dead"}"#),
        Some(0.0)
    );
    // Each started once, by its own claim or by a hand-off from the enqueue.
    let started = |via: &str| {
        let name = format!(r#"redq_jobs_started_total{{queue="ok",via="{via}"}}"#);
        sample(&body, &name).expect("a sample per way")
    };
    assert_eq!(started("claim") + started("handoff"), 20.0);
    // Depth gauges come from the poller, a few seconds at most behind.
    let (_, body) = wait_for(&metrics, |_, b| {
        sample(b, r#"redq_queue_jobs{queue="bad",state="dead"}"#) == Some(3.0)
    })
    .await;
    assert_eq!(sample(&body, "redq_redis_up"), Some(1.0));
    assert!(body.contains("redq_build_info{version=\""));

    let ready = format!("{base}/readyz");
    assert_eq!(get(&format!("{base}/healthz")).await.0, 200);
    assert_eq!(get(&ready).await.0, 200);
    redis.kill();
    let (code, body) = wait_for(&ready, |c, _| c == 503).await;
    assert_eq!(code, 503);
    assert!(body.contains("\"redis\":false"), "{body}");
    assert_eq!(
        get(&format!("{base}/healthz")).await.0,
        200,
        "the process itself is alive"
    );
    redis.restart();
    wait_for(&ready, |c, _| c == 200).await;
    // And it still works: a job enqueued after the restart runs.
    let client = redis.client().await;
    client
        .enqueue("ok", NewJob::new(&"after").unwrap())
        .await
        .unwrap();
    wait_for(&metrics, |_, b| {
        sample(b, r#"redq_jobs_total{queue="ok",outcome="succeeded"}"#) == Some(21.0)
    })
    .await;
    handle.shutdown();
    within(20, run).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_lost_function_library_is_loaded_again() {
    let redis = RedisServer::start();
    let daemon = WorkerBuilder::new(config(&redis.url()))
        .start()
        .await
        .unwrap();
    let handle = daemon.handle();
    let run = tokio::spawn(daemon.run());
    // As after a restart of a Redis without persistence.
    redis.cli(&["FUNCTION", "DELETE", "redq"]).unwrap();
    let id = within(20, async {
        loop {
            let out = redis
                .cli(&[
                    "FCALL",
                    "redq_enqueue",
                    "1",
                    "redq:{ok}",
                    r#"{"payload":1}"#,
                ])
                .unwrap();
            if !out.contains("ERR") {
                return out;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(id.trim().len(), 26, "{id}");
    handle.shutdown();
    within(20, run).await.unwrap().unwrap();
}

#[tokio::test]
async fn command_handler_resources_are_summed_in_metrics() {
    let redis = RedisServer::start();
    let cfg = redq::config::load_from_str(&format!(
        "[redis]\nurl = \"{}\"\n[daemon]\nlisten = \"127.0.0.1:0\"\n[queues.cmd]\nhandler = {{ command = [\"cat\"] }}\n",
        redis.url()
    ))
    .unwrap();
    let daemon = WorkerBuilder::new(cfg).start().await.unwrap();
    let metrics = format!("http://{}/metrics", daemon.http_addr());
    let handle = daemon.handle();
    let run = tokio::spawn(daemon.run());
    let client = redis.client().await;
    client
        .enqueue_many("cmd", (0..3).map(|n| NewJob::new(&n).unwrap()).collect())
        .await
        .unwrap();
    let (_, body) = wait_for(&metrics, |_, b| {
        sample(b, r#"redq_command_runs_total{queue="cmd"}"#) == Some(3.0)
    })
    .await;
    // `cat` echoes each one-byte payload.
    assert_eq!(
        sample(&body, r#"redq_command_output_bytes_total{queue="cmd"}"#),
        Some(3.0)
    );
    assert!(sample(&body, r#"redq_command_max_rss_bytes{queue="cmd"}"#).unwrap() > 0.0);
    assert!(sample(&body, r#"redq_command_cpu_seconds_total{queue="cmd"}"#).is_some());
    handle.shutdown();
    within(20, run).await.unwrap().unwrap();
}

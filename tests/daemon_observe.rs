//! The daemon's own view of itself: /metrics counters move as jobs succeed
//! and fail, and /healthz and /readyz follow Redis going away and coming back.

mod common;

use common::embedded::launch;
use common::http::{get, sample};
use common::producers::fcall_reply;
use common::server::RedisServer;
use common::wait::{eventually, secs};
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

/// Polls `url` until `check` holds on (status, body), within a bound.
async fn get_until(url: &str, check: impl Fn(u16, &str) -> bool) -> (u16, String) {
    eventually(
        &format!("{url} to answer as expected"),
        secs(20),
        || async {
            let (code, body) = get(url).await;
            if check(code, &body) {
                Ok((code, body))
            } else {
                Err(format!("{code} {body}"))
            }
        },
    )
    .await
}

#[tokio::test]
async fn metrics_count_outcomes_and_health_follows_redis() {
    let mut redis = RedisServer::start_with(&["--appendonly", "yes"]);
    let client = redis.client().await;
    let daemon = launch(WorkerBuilder::new(config(&redis.url()))).await;
    let base = daemon.url("");

    client
        .enqueue_many("ok", (0..20).map(|n| NewJob::new(&n).unwrap()).collect())
        .await
        .unwrap();
    client
        .enqueue_many("bad", (0..3).map(|n| NewJob::new(&n).unwrap()).collect())
        .await
        .unwrap();
    let metrics = format!("{base}/metrics");
    let (_, body) = get_until(&metrics, |_, b| {
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
    let (_, body) = get_until(&metrics, |_, b| {
        sample(b, r#"redq_queue_jobs{queue="bad",state="dead"}"#) == Some(3.0)
    })
    .await;
    assert_eq!(sample(&body, "redq_redis_up"), Some(1.0));
    assert!(body.contains("redq_build_info{version=\""));

    let ready = format!("{base}/readyz");
    assert_eq!(get(&format!("{base}/healthz")).await.0, 200);
    assert_eq!(get(&ready).await.0, 200);
    redis.kill();
    let (code, body) = get_until(&ready, |c, _| c == 503).await;
    assert_eq!(code, 503);
    assert!(body.contains("\"redis\":false"), "{body}");
    assert_eq!(
        get(&format!("{base}/healthz")).await.0,
        200,
        "the process itself is alive"
    );
    redis.restart();
    get_until(&ready, |c, _| c == 200).await;
    // And it still works: a job enqueued after the restart runs.
    let client = redis.client().await;
    client
        .enqueue("ok", NewJob::new(&"after").unwrap())
        .await
        .unwrap();
    get_until(&metrics, |_, b| {
        sample(b, r#"redq_jobs_total{queue="ok",outcome="succeeded"}"#) == Some(21.0)
    })
    .await;
    daemon.stop().await;
}

#[tokio::test]
async fn a_lost_function_library_is_loaded_again() {
    let redis = RedisServer::start();
    let daemon = launch(WorkerBuilder::new(config(&redis.url()))).await;
    // As after a restart of a Redis without persistence.
    redis.cli(&["FUNCTION", "DELETE", "redq"]).unwrap();
    let id = eventually("the library to be loaded again", secs(20), || async {
        let out = fcall_reply(&redis, "ok", r#"{"payload":1}"#);
        if !out.contains("ERR") {
            Ok(out)
        } else {
            Err(out)
        }
    })
    .await;
    assert_eq!(id.trim().len(), 26, "{id}");
    daemon.stop().await;
}

/// Redis lost its functions (FUNCTION FLUSH, a restart without
/// persistence): the daemon's next transition finds its function gone and
/// loads both libraries then, so producers' FCALL works again well before
/// the 30 s check of the `redq` library (whose first round is 5 s after start).
#[tokio::test]
async fn lost_functions_are_loaded_again_at_the_next_transition() {
    let redis = RedisServer::start();
    let daemon = launch(WorkerBuilder::new(config(&redis.url()))).await;
    let started = std::time::Instant::now();
    redis.cli(&["FUNCTION", "FLUSH"]).unwrap();
    // The next transition: draining an inbox document (an idle daemon
    // whose start-up transitions are over may run none for a while).
    redis
        .cli(&["LPUSH", "redq:{ok}:inbox", r#"{"payload":0}"#])
        .unwrap();
    let id = eventually("FCALL redq_enqueue to work again", secs(3), || async {
        let out = fcall_reply(&redis, "ok", r#"{"payload":1}"#);
        if !out.contains("ERR") {
            Ok(out)
        } else {
            Err(out)
        }
    })
    .await;
    assert_eq!(id.trim().len(), 26, "{id}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "restored by the periodic check, not the transition: {:?}",
        started.elapsed()
    );
    let listed = redis.cli(&["FUNCTION", "LIST"]).unwrap();
    assert!(
        listed.contains(redq::scripts::internal_library_name()),
        "{listed}"
    );
    daemon.stop().await;
}

#[tokio::test]
async fn command_handler_resources_are_summed_in_metrics() {
    let redis = RedisServer::start();
    let cfg = redq::config::load_from_str(&format!(
        "[redis]\nurl = \"{}\"\n[daemon]\nlisten = \"127.0.0.1:0\"\n[queues.cmd]\nhandler = {{ command = [\"cat\"] }}\n",
        redis.url()
    ))
    .unwrap();
    let daemon = launch(WorkerBuilder::new(cfg)).await;
    let metrics = daemon.url("/metrics");
    let client = redis.client().await;
    client
        .enqueue_many("cmd", (0..3).map(|n| NewJob::new(&n).unwrap()).collect())
        .await
        .unwrap();
    let (_, body) = get_until(&metrics, |_, b| {
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
    daemon.stop().await;
}

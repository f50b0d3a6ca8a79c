//! The observability module end to end: `serve` on 127.0.0.1:0, scraped with
//! reqwest. No Redis needed. Time-dependent health uses a manual clock, never
//! sleeps.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redq::observe::metrics::MAX_QUEUES;
use redq::observe::{check_listen, serve, Health, JobOutcome, Metrics, QueueDepths};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A running listener; `stop` cancels it and checks it exited cleanly.
struct Server {
    base: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(metrics: Arc<Metrics>, health: Arc<Health>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(listener, metrics, health, shutdown.clone()));
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        Server {
            base,
            http,
            shutdown,
            task,
        }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        let url = format!("{}{path}", self.base);
        self.http.get(url).send().await.expect("request")
    }

    async fn probe(&self, path: &str) -> (u16, Value) {
        let resp = self.get(path).await;
        let code = resp.status().as_u16();
        (code, resp.json().await.expect("json body"))
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("serve stops after cancel")
            .expect("serve task");
        result.expect("serve returns Ok");
    }
}

/// A clock the test moves by hand.
fn manual_clock() -> (Arc<Mutex<Instant>>, Health) {
    let now = Arc::new(Mutex::new(Instant::now()));
    let read = now.clone();
    let health = Health::with_clock(move || *read.lock().expect("clock"));
    (now, health)
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

#[tokio::test]
async fn metrics_scrape_shows_exact_counters_and_histograms() {
    let metrics = Metrics::new("1.2.3");
    metrics.register_queue("idle");
    metrics.job_outcome("emails", JobOutcome::Succeeded, 3);
    metrics.job_outcome("emails", JobOutcome::Failed, 1);
    metrics.job_outcome("emails", JobOutcome::StaleRefused, 2);
    let ms = Duration::from_millis;
    metrics.observe_job("emails", Some(ms(2)), ms(40), Some(ms(45)));
    metrics.observe_job("emails", None, ms(700), None);
    metrics.set_in_flight("emails", 4);
    let depths = QueueDepths {
        pending: 7,
        dead: 1,
        oldest_pending_age: Some(Duration::from_millis(1500)),
        cancelled_total: 3,
        ..QueueDepths::default()
    };
    metrics.set_queue_depths("emails", &depths);
    metrics.set_redis(true, Some(Duration::from_micros(250)));
    let server = Server::start(metrics.clone(), Arc::new(Health::new())).await;

    let resp = server.get("/metrics").await;
    assert_eq!(resp.status().as_u16(), 200);
    let ctype = resp.headers()["content-type"].to_str().expect("ascii");
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    let body = resp.text().await.expect("body");
    let got = lines(&body);
    for want in [
        "# HELP redq_jobs_total Job attempts finished, by queue and outcome (released: given back at shutdown).",
        "# TYPE redq_jobs_total counter",
        r#"redq_jobs_total{queue="emails",outcome="succeeded"} 3"#,
        r#"redq_jobs_total{queue="emails",outcome="failed"} 1"#,
        r#"redq_jobs_total{queue="emails",outcome="dead"} 0"#,
        r#"redq_jobs_total{queue="emails",outcome="stale_refused"} 2"#,
        r#"redq_jobs_total{queue="idle",outcome="succeeded"} 0"#,
        "# TYPE redq_job_run_seconds histogram",
        r#"redq_job_run_seconds_count{queue="emails"} 2"#,
        r#"redq_job_run_seconds_bucket{queue="emails",le="0.05"} 1"#,
        r#"redq_job_run_seconds_bucket{queue="emails",le="0.5"} 1"#,
        r#"redq_job_run_seconds_bucket{queue="emails",le="1"} 2"#,
        r#"redq_job_run_seconds_bucket{queue="emails",le="+Inf"} 2"#,
        r#"redq_job_run_seconds_sum{queue="emails"} 0.74"#,
        r#"redq_job_wait_seconds_count{queue="emails"} 1"#,
        r#"redq_job_end_to_end_seconds_count{queue="emails"} 1"#,
        r#"redq_job_run_seconds_count{queue="idle"} 0"#,
        r#"redq_queue_jobs{queue="emails",state="pending"} 7"#,
        r#"redq_queue_jobs{queue="emails",state="dead"} 1"#,
        r#"redq_queue_jobs{queue="emails",state="inbox"} 0"#,
        r#"redq_queue_oldest_pending_age_seconds{queue="emails"} 1.5"#,
        r#"redq_queue_cancelled_total{queue="emails"} 3"#,
        r#"redq_jobs_in_flight{queue="emails"} 4"#,
        r#"redq_jobs_in_flight{queue="idle"} 0"#,
        "redq_redis_rtt_seconds 0.00025",
        "redq_redis_up 1",
        r#"redq_build_info{version="1.2.3"} 1"#,
        "redq_metrics_dropped_total 0",
    ] {
        assert!(got.contains(&want), "missing line {want:?} in:\n{body}");
    }
    // Depth gauges appear only for queues whose depths were read.
    assert!(!body.contains(r#"redq_queue_jobs{queue="idle""#), "{body}");
    assert!(got.iter().any(|l| l.starts_with("redq_uptime_seconds ")));

    // Counters move between scrapes.
    metrics.job_outcome("emails", JobOutcome::Succeeded, 1);
    metrics.set_redis(false, None);
    let body = server.get("/metrics").await.text().await.expect("body");
    let got = lines(&body);
    assert!(got.contains(&r#"redq_jobs_total{queue="emails",outcome="succeeded"} 4"#));
    assert!(got.contains(&"redq_redis_up 0"));
    assert!(
        got.contains(&"redq_redis_rtt_seconds 0.00025"),
        "last rtt is kept"
    );
    assert_eq!(metrics.jobs_total("emails", JobOutcome::Succeeded), 4);
    server.stop().await;
}

#[tokio::test]
async fn healthz_fails_when_a_loop_stops_beating() {
    let (now, health) = manual_clock();
    let health = Arc::new(health);
    health.register_loop("claim", Duration::from_millis(50));
    let server = Server::start(Metrics::new("t"), health.clone()).await;

    let (code, body) = server.probe("/healthz").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["loops"]["claim"]["ok"], true);

    *now.lock().unwrap() += Duration::from_millis(51);
    let (code, body) = server.probe("/healthz").await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["loops"]["claim"]["ok"], false);
    assert_eq!(body["loops"]["claim"]["since_beat_ms"], 51);
    assert_eq!(body["loops"]["claim"]["max_staleness_ms"], 50);

    health.beat("claim");
    assert_eq!(server.probe("/healthz").await.0, 200);

    // Unregistering a stopped loop makes the process healthy again.
    *now.lock().unwrap() += Duration::from_secs(1);
    assert_eq!(server.probe("/healthz").await.0, 503);
    health.unregister_loop("claim");
    assert_eq!(server.probe("/healthz").await.0, 200);
    server.stop().await;
}

#[tokio::test]
async fn readyz_follows_redis_scripts_and_draining() {
    let health = Arc::new(Health::new());
    let server = Server::start(Metrics::new("t"), health.clone()).await;

    let (code, body) = server.probe("/readyz").await;
    assert_eq!(
        (code, &body["redis"]),
        (503, &Value::Bool(false)),
        "starts not ready"
    );

    health.set_redis_ok(true);
    health.set_scripts_loaded(true);
    let (code, body) = server.probe("/readyz").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "ok");

    health.set_redis_ok(false);
    let (code, body) = server.probe("/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["redis"], false);
    // The cause, when the daemon knows it (a TLS failure, say).
    health.set_redis_error(Some(
        "TLS to rediss://db:6380 failed: set redis.tls.ca_file".into(),
    ));
    let (_, body) = server.probe("/readyz").await;
    assert!(
        body["redis_error"].as_str().unwrap().contains("ca_file"),
        "{body}"
    );

    health.set_redis_ok(true);
    assert!(server.probe("/readyz").await.1.get("redis_error").is_none());
    assert_eq!(server.probe("/readyz").await.0, 200);

    // Redis answers but takes no writes (paused, a replica): not ready.
    health.set_writes_ok(false);
    let (code, body) = server.probe("/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(
        (&body["redis"], &body["writes"]),
        (&Value::Bool(true), &Value::Bool(false))
    );
    health.set_writes_ok(true);
    assert_eq!(server.probe("/readyz").await.0, 200);

    health.set_draining(true);
    let (code, body) = server.probe("/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["draining"], true);
    // Draining is not a liveness failure.
    assert_eq!(server.probe("/healthz").await.0, 200);
    server.stop().await;
}

#[test]
fn label_values_are_escaped() {
    let metrics = Metrics::new("v\"1\\");
    metrics.job_outcome("a\"b\\c\nd", JobOutcome::Dead, 1);
    let body = metrics.render();
    let want = r#"redq_jobs_total{queue="a\"b\\c\nd",outcome="dead"} 1"#;
    assert!(lines(&body).contains(&want), "{body}");
    assert!(lines(&body).contains(&r#"redq_build_info{version="v\"1\\"} 1"#));
    // Every non-comment line is one well-formed sample: no raw line feed leaked.
    for line in lines(&body).iter().filter(|l| !l.starts_with('#')) {
        assert!(line.starts_with("redq_"), "bad line {line:?}");
    }
}

#[test]
fn queue_labels_are_capped() {
    let metrics = Metrics::new("t");
    for i in 0..MAX_QUEUES + 5 {
        metrics.job_outcome(&format!("q{i}"), JobOutcome::Succeeded, 1);
    }
    let body = metrics.render();
    assert!(lines(&body).contains(&"redq_metrics_dropped_total 5"));
    assert!(!body.contains(&format!("queue=\"q{MAX_QUEUES}\"")));
    assert_eq!(
        metrics.jobs_total(&format!("q{MAX_QUEUES}"), JobOutcome::Succeeded),
        0
    );
}

#[test]
fn run_time_quantiles_reset_on_read() {
    let metrics = Metrics::new("t");
    assert_eq!(metrics.run_time_quantiles("emails"), None);
    for ms in 1..=100 {
        metrics.observe_job("emails", None, Duration::from_millis(ms * 10), None);
    }
    let (p50, p99) = metrics.run_time_quantiles("emails").expect("runs");
    let near = |d: Duration, want: f64| (d.as_secs_f64() / want - 1.0).abs() < 0.25;
    assert!(near(p50, 0.5), "p50 {p50:?}");
    assert!(near(p99, 0.99), "p99 {p99:?}");
    assert_eq!(metrics.run_time_quantiles("emails"), None, "window resets");
    // The cumulative histogram does not reset.
    let body = metrics.render();
    assert!(lines(&body).contains(&r#"redq_job_run_seconds_count{queue="emails"} 100"#));
}

#[test]
fn check_listen_refuses_public_addresses_unless_allowed() {
    assert_eq!(
        check_listen("127.0.0.1:9464", false),
        Ok("127.0.0.1:9464".parse().unwrap())
    );
    assert!(check_listen("[::1]:9464", false).is_ok());
    assert!(check_listen("[::ffff:127.0.0.1]:9464", false).is_ok());
    for public in ["0.0.0.0:9464", "[::]:9464", "10.1.2.3:80"] {
        let err = check_listen(public, false).expect_err(public);
        assert!(
            err.contains("daemon.listen ") && err.contains("daemon.listen_public"),
            "{err}"
        );
        assert!(
            check_listen(public, true).is_ok(),
            "{public} allowed when public"
        );
    }
    for bad in ["", "localhost", "127.0.0.1", "127.0.0.1:99999", "\u{0}:1"] {
        let err = check_listen(bad, true).expect_err(bad);
        assert!(err.contains("daemon.listen"), "{err}");
    }
}

#[tokio::test]
async fn unknown_paths_are_404() {
    let server = Server::start(Metrics::new("t"), Arc::new(Health::new())).await;
    assert_eq!(server.get("/nope").await.status().as_u16(), 404);
    server.stop().await;
}

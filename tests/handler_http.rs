//! The HTTP handler against a real local axum server: request shape, status mapping,
//! `Retry-After`, caps, usage, time-out, cancellation and configuration checks.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use redq::handler::http::{parse_retry_after, HttpHandler, HttpRun, HttpSpec};
use redq::{JobContext, Outcome};
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const BOUND: Duration = Duration::from_secs(30);
const PAYLOAD: &str = r#"{"b": 1,  "a":[1, 2.50, "ü"]}"#;

type Seen = mpsc::UnboundedSender<(HeaderMap, Bytes)>;

/// Records the request, then answers `done!`.
async fn capture(State(seen): State<Seen>, headers: HeaderMap, body: Bytes) -> &'static str {
    let _ = seen.send((headers, body));
    "done!"
}

/// Records the request, then never answers.
async fn hang(State(seen): State<Seen>, headers: HeaderMap, body: Bytes) -> &'static str {
    let _ = seen.send((headers, body));
    std::future::pending().await
}

/// Starts a server on a free port; returns its address and the requests it records.
async fn server() -> (SocketAddr, mpsc::UnboundedReceiver<(HeaderMap, Bytes)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Router::new()
        .route("/ok", post(capture))
        .route("/hang", post(hang))
        .route("/empty", post(|| async { StatusCode::NO_CONTENT }))
        .route(
            "/429",
            post(|| async {
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after", "7")],
                    "slow down",
                )
            }),
        )
        .route(
            "/503",
            post(|| async { (StatusCode::SERVICE_UNAVAILABLE, "busy") }),
        )
        .route(
            "/404",
            post(|| async { (StatusCode::NOT_FOUND, "no such endpoint") }),
        )
        .route(
            "/500",
            post(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        )
        .route(
            "/moved",
            post(|| async { (StatusCode::MOVED_PERMANENTLY, [("location", "/ok")]) }),
        )
        .route("/big", post(|| async { "x".repeat(100_000) }))
        .route(
            "/usage",
            post(|| async {
                r#"{"answer": 42, "usage": {"tokens": 1234, "cost_usd": 0.25, "note": "n/a"}}"#
            }),
        )
        .with_state(tx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, rx)
}

fn ctx() -> JobContext {
    JobContext {
        id: "job-7".into(),
        queue: "emails".into(),
        attempt: 3,
        tenant: Some("acme".into()),
        fence: 9,
        payload: RawValue::from_string(PAYLOAD.into()).unwrap(),
        timeout: Duration::from_secs(20),
        cancel: CancellationToken::new(),
    }
}

fn handler(url: String) -> HttpHandler {
    HttpHandler::new(HttpSpec {
        url,
        ..Default::default()
    })
    .expect("valid spec")
}

async fn call(handler: &HttpHandler, ctx: JobContext) -> HttpRun {
    tokio::time::timeout(BOUND, handler.run(ctx))
        .await
        .expect("run ended within the bound")
}

async fn call_path(addr: SocketAddr, path: &str) -> HttpRun {
    call(&handler(format!("http://{addr}{path}")), ctx()).await
}

#[tokio::test]
async fn posts_the_job_as_json_with_idempotency_key_and_headers() {
    let (addr, mut seen) = server().await;
    let spec = HttpSpec {
        url: format!("http://{addr}/ok"),
        headers: BTreeMap::from([
            ("Authorization".into(), "Bearer t0ken".into()),
            ("X-Extra".into(), "1".into()),
        ]),
        ..Default::default()
    };
    let run = call(&HttpHandler::new(spec).unwrap(), ctx()).await;
    assert_eq!(
        run.outcome,
        Outcome::Done {
            result: Some("done!".into())
        }
    );
    assert_eq!(run.status, Some(200));

    let (headers, body) = seen.recv().await.unwrap();
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["idempotency-key"], "job-7");
    assert_eq!(headers["authorization"], "Bearer t0ken");
    assert_eq!(headers["x-extra"], "1");
    let text = std::str::from_utf8(&body).unwrap();
    assert!(
        text.contains(&format!(r#""payload":{PAYLOAD}"#)),
        "payload not embedded verbatim: {text}"
    );
    let doc: serde_json::Value = serde_json::from_str(text).unwrap();
    assert_eq!(doc["id"], "job-7");
    assert_eq!(doc["queue"], "emails");
    assert_eq!(doc["attempt"], 3);
    assert_eq!(doc["tenant"], "acme");

    let mut no_tenant = ctx();
    no_tenant.tenant = None;
    call(&handler(format!("http://{addr}/ok")), no_tenant).await;
    let (_, body) = seen.recv().await.unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["tenant"],
        serde_json::Value::Null
    );
}

#[tokio::test]
async fn statuses_map_to_outcomes() {
    let (addr, _seen) = server().await;
    assert_eq!(
        call_path(addr, "/empty").await.outcome,
        Outcome::Done { result: None }
    );

    let too_many = call_path(addr, "/429").await;
    let Outcome::Retry { after, error } = &too_many.outcome else {
        panic!("{too_many:?}")
    };
    assert_eq!(*after, Duration::from_secs(7));
    assert!(
        error.contains("429 Too Many Requests") && error.contains("slow down"),
        "{error}"
    );

    let busy = call_path(addr, "/503").await;
    assert!(
        matches!(&busy.outcome, Outcome::Retry { after, .. } if after.is_zero()),
        "{busy:?}"
    );

    let missing = call_path(addr, "/404").await;
    let Outcome::Dead { error } = &missing.outcome else {
        panic!("{missing:?}")
    };
    assert!(
        error.contains("404 Not Found") && error.contains("no such endpoint"),
        "{error}"
    );
    assert_eq!(missing.status, Some(404));

    let broken = call_path(addr, "/500").await;
    assert!(
        matches!(&broken.outcome, Outcome::Fail { error } if error.contains("500") && error.contains("boom"))
    );

    let moved = call_path(addr, "/moved").await;
    assert!(
        matches!(&moved.outcome, Outcome::Fail { error } if error.contains("redirects are not followed"))
    );
}

#[tokio::test]
async fn body_is_capped_and_usage_parsed() {
    let (addr, _seen) = server().await;
    let spec = HttpSpec {
        url: format!("http://{addr}/big"),
        max_response_bytes: 1000,
        ..Default::default()
    };
    let big = call(&HttpHandler::new(spec).unwrap(), ctx()).await;
    let expected = format!("{}…[truncated 99000 bytes]", "x".repeat(1000));
    assert_eq!(
        big.outcome,
        Outcome::Done {
            result: Some(expected)
        }
    );

    let usage = call_path(addr, "/usage").await;
    assert!(
        matches!(&usage.outcome, Outcome::Done { result: Some(body) } if body.contains("\"answer\""))
    );
    let expected = BTreeMap::from([
        ("cost_usd".to_string(), 0.25),
        ("tokens".to_string(), 1234.0),
    ]);
    assert_eq!(usage.usage, expected);
    assert!(call_path(addr, "/ok").await.usage.is_empty());
}

#[tokio::test]
async fn network_errors_time_outs_and_cancellation_fail_the_attempt() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = free.local_addr().unwrap();
    drop(free);
    let refused = call(&handler(format!("http://{closed}/x?token=secret")), ctx()).await;
    let Outcome::Fail { error } = &refused.outcome else {
        panic!("{refused:?}")
    };
    assert!(
        error.contains(&format!("POST http://{closed}/x failed")),
        "{error}"
    );
    assert!(
        error.to_lowercase().contains("refused") && !error.contains("secret"),
        "{error}"
    );
    assert_eq!(refused.status, None);

    let (addr, mut seen) = server().await;
    let mut slow = ctx();
    slow.timeout = Duration::from_millis(300);
    let timed_out = call(&handler(format!("http://{addr}/hang")), slow).await;
    assert!(
        matches!(&timed_out.outcome, Outcome::Fail { error } if error.starts_with("timed out after 300ms"))
    );

    let job = ctx();
    let cancel = job.cancel.clone();
    let hang = handler(format!("http://{addr}/hang"));
    let task = tokio::spawn(async move { call(&hang, job).await });
    seen.recv().await.unwrap(); // the timed-out request
    seen.recv().await.unwrap(); // this one: it is in flight now
    cancel.cancel();
    let cancelled = task.await.unwrap();
    assert!(
        matches!(&cancelled.outcome, Outcome::Fail { error } if error.starts_with("cancelled: "))
    );
}

#[tokio::test]
async fn job_ids_become_the_idempotency_key_verbatim() {
    let (addr, mut seen) = server().await;
    let mut job = ctx();
    job.id = "order-ü-42".into();
    call(&handler(format!("http://{addr}/ok")), job).await;
    let (headers, _) = seen.recv().await.unwrap();
    assert_eq!(
        headers["idempotency-key"].as_bytes(),
        "order-ü-42".as_bytes()
    );

    let mut bad = ctx();
    bad.id = "line\nbreak".into();
    let run = call(&handler(format!("http://{addr}/ok")), bad).await;
    assert!(matches!(run.outcome, Outcome::Dead { .. }), "{run:?}");
}

#[test]
fn configuration_errors_say_what_is_wrong() {
    let new = |url: &str, headers: &[(&str, &str)]| {
        let headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        HttpHandler::new(HttpSpec {
            url: url.into(),
            headers,
            ..Default::default()
        })
    };
    assert!(new("https://example.com/hook", &[("Authorization", "Bearer x")]).is_ok());
    assert!(new("not a url", &[])
        .unwrap_err()
        .contains("not a valid URL"));
    assert!(new("ftp://example.com/", &[])
        .unwrap_err()
        .contains("scheme `ftp`"));
    assert!(new("http://", &[]).is_err());
    assert!(new("http://h/", &[("Bad Name", "x")])
        .unwrap_err()
        .contains("`Bad Name`"));
    let err = new("http://h/", &[("X-Token", "secret\nInjected: 1")]).unwrap_err();
    assert!(
        err.contains("`X-Token`") && !err.contains("secret"),
        "{err}"
    );
    assert!(new("http://h/", &[("Content-Type", "text/plain")])
        .unwrap_err()
        .contains("set by redq"));
    let spec = HttpSpec {
        url: "http://h/".into(),
        connect_timeout: Duration::ZERO,
        ..Default::default()
    };
    assert!(HttpHandler::new(spec)
        .unwrap_err()
        .contains("connect_timeout"));
}

#[test]
fn retry_after_reads_seconds_and_http_dates() {
    let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
    assert_eq!(parse_retry_after(" 120 ", now), Duration::from_secs(120));
    assert_eq!(
        parse_retry_after("Sun, 06 Nov 1994 08:51:37 GMT", now),
        Duration::from_secs(120)
    );
    assert_eq!(
        parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", now),
        Duration::ZERO
    );
    assert_eq!(
        parse_retry_after(
            "Tue, 29 Feb 2000 00:00:00 GMT",
            UNIX_EPOCH + Duration::from_secs(951_782_390)
        ),
        Duration::from_secs(10)
    );
    assert_eq!(
        parse_retry_after("99999999999999999999999", now),
        Duration::from_secs(86_400)
    );
    assert_eq!(
        parse_retry_after("Mon, 01 Jan 2ü00 00:00:00 GMT", now),
        Duration::ZERO
    );
    for junk in [
        "",
        "-5",
        "1.5",
        "soon",
        "Sunday, 06-Nov-94 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1994",
    ] {
        assert_eq!(parse_retry_after(junk, now), Duration::ZERO, "{junk:?}");
    }
}

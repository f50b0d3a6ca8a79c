//! Scheduled jobs start at their due time: delayed jobs (FCALL, the Rust
//! client), retries after their backoff, jobs already due when a daemon
//! starts, on idle, partly busy and fully busy daemons, across several
//! daemons and queues, and many jobs due at one instant.
//!
//! Daemons run in-process against the test's private redis-server; Redis and
//! the handlers read the same host clock, so a job's start (Unix ms, taken in
//! the handler) is compared with its due time as Redis stored it (the
//! `scheduled` score). A job counts as on time when it starts no earlier
//! than due and at most [`LATE`] after; the promoter aims at a few ms, the
//! bound leaves room for a loaded CI machine (before the promoter, such jobs
//! waited for an unrelated wake-up: many seconds, or for ever).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::embedded::*;
use common::producers::fcall_async;
use common::server::RedisServer;
use common::snapshot::registrations;
use common::wait::{eventually, now_ms, sleep_past_ms, within, WAIT};
use redq::daemon::WorkerBuilder;
use redq::keys::QueueKeys;
use redq::{JobContext, NewJob, Outcome};
use tokio::sync::{mpsc, Semaphore};

/// How late a due job may start in these tests.
const LATE: i64 = 500;

/// One start of a job, as its handler saw it.
#[derive(Debug, Clone)]
struct Start {
    n: i64,
    attempt: u32,
    at_ms: i64,
    daemon: &'static str,
}

/// A handler that reports each start; payloads below zero fail their first
/// attempt, and payload 0 blocks until `hold` gives it a permit.
fn starts(
    daemon: &'static str,
    tx: mpsc::UnboundedSender<Start>,
    hold: std::sync::Arc<Semaphore>,
) -> impl redq::Handler {
    move |ctx: JobContext| {
        let (tx, hold) = (tx.clone(), hold.clone());
        async move {
            let n: i64 = ctx.payload.get().parse().expect("payload is an integer");
            let _ = tx.send(Start {
                n,
                attempt: ctx.attempt,
                at_ms: now_ms(),
                daemon,
            });
            if n == 0 {
                let _ = hold.acquire().await.map(|p| p.forget());
            }
            if n < 0 && ctx.attempt == 1 {
                return Outcome::Fail {
                    error: "first attempt fails".into(),
                };
            }
            Outcome::Done { result: None }
        }
    }
}

/// When job `id` of `q` is due, as Redis keeps it (its `scheduled` score),
/// once it is scheduled.
async fn due_ms(redis: &RedisServer, q: &QueueKeys, id: &str) -> i64 {
    let con = redis.con().await;
    eventually(&format!("{id} to be scheduled"), WAIT, || {
        let mut con = con.clone();
        async move {
            let score: Option<f64> = redis::cmd("ZSCORE")
                .arg(q.scheduled())
                .arg(id)
                .query_async(&mut con)
                .await
                .unwrap();
            score.map(|s| s as i64)
        }
    })
    .await
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Start>) -> Start {
    within(15, rx.recv()).await.expect("handler channel closed")
}

#[track_caller]
fn on_time(start: &Start, due: i64) {
    let late = start.at_ms - due;
    assert!(
        (0..=LATE).contains(&late),
        "job {} (attempt {}) started {late} ms after its due time (want 0..={LATE})",
        start.n,
        start.attempt
    );
}

/// Waits until the daemon's pool of `q` is registered for hand-off: idle,
/// blocked on its lists, with nothing else to wake it.
async fn registered(redis: &RedisServer, q: &QueueKeys) {
    eventually("a hand-off registration", WAIT, || async {
        !registrations(redis, q).await.is_empty()
    })
    .await;
}

fn one_queue(redis: &RedisServer, concurrency: u32) -> redq::config::Config {
    config(
        redis,
        "",
        &queue(
            "q",
            &format!(
                "concurrency = {concurrency}\n\
                 backoff = {{ base = \"1s\", max = \"1s\", jitter = 0.0 }}"
            ),
        ),
    )
}

/// One daemon serving queue `q` at `concurrency` with the [`starts`]
/// handler: its starts, the permits that free its held jobs, and `q`'s keys.
struct OneQueue {
    d: Running,
    rx: mpsc::UnboundedReceiver<Start>,
    hold: std::sync::Arc<Semaphore>,
    q: QueueKeys,
}

async fn one_queue_daemon(redis: &RedisServer, concurrency: u32) -> OneQueue {
    let (tx, rx) = mpsc::unbounded_channel();
    let hold = std::sync::Arc::new(Semaphore::new(0));
    let builder = WorkerBuilder::new(one_queue(redis, concurrency))
        .handler("q", starts("a", tx, hold.clone()));
    OneQueue {
        d: launch(builder).await,
        rx,
        hold,
        q: QueueKeys::new("redq", "q").unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_job_starts_at_its_due_time_on_an_idle_daemon() {
    let redis = RedisServer::start();
    let OneQueue { d, mut rx, q, .. } = one_queue_daemon(&redis, 4).await;
    registered(&redis, &q).await;

    // Through FCALL, as any producer; then through the Rust client.
    let id = fcall_async(&redis, "q", r#"{"payload":1,"delay_ms":700}"#).await;
    let due = due_ms(&redis, &q, &id).await;
    on_time(&next(&mut rx).await, due);
    registered(&redis, &q).await;
    let client = redis.client().await;
    let id = client
        .enqueue(
            "q",
            NewJob::new(&2).unwrap().delay(Duration::from_millis(700)),
        )
        .await
        .unwrap()
        .id;
    let due = due_ms(&redis, &q, &id).await;
    on_time(&next(&mut rx).await, due);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_earlier_job_re_arms_the_wait() {
    let redis = RedisServer::start();
    let OneQueue { d, mut rx, q, .. } = one_queue_daemon(&redis, 4).await;
    registered(&redis, &q).await;
    let client = redis.client().await;
    let later = NewJob::new(&1).unwrap().delay(Duration::from_secs(4));
    let later = client.enqueue("q", later).await.unwrap().id;
    let sooner = NewJob::new(&2).unwrap().delay(Duration::from_millis(600));
    let sooner = client.enqueue("q", sooner).await.unwrap().id;
    let (due_sooner, due_later) = (
        due_ms(&redis, &q, &sooner).await,
        due_ms(&redis, &q, &later).await,
    );
    let first = next(&mut rx).await;
    assert_eq!(first.n, 2, "the sooner job runs first");
    on_time(&first, due_sooner);
    let second = next(&mut rx).await;
    assert_eq!(second.n, 1);
    on_time(&second, due_later);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_starts_when_its_backoff_ends() {
    let redis = RedisServer::start();
    let OneQueue { d, mut rx, q, .. } = one_queue_daemon(&redis, 4).await;
    registered(&redis, &q).await;
    let client = redis.client().await;
    let id = client
        .enqueue("q", NewJob::new(&-1).unwrap())
        .await
        .unwrap()
        .id;
    assert_eq!(next(&mut rx).await.attempt, 1);
    // Backoff 1s: the retry is scheduled, then starts on time.
    let due = due_ms(&redis, &q, &id).await;
    let retry = next(&mut rx).await;
    assert_eq!(retry.attempt, 2);
    on_time(&retry, due);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_already_due_when_a_daemon_starts_run_at_once() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let q = QueueKeys::new("redq", "q").unwrap();
    let mut ids = Vec::new();
    for n in 1..=3 {
        let j = NewJob::new(&n).unwrap().delay(Duration::from_millis(200));
        ids.push(client.enqueue("q", j).await.unwrap().id);
    }
    let last_due = due_ms(&redis, &q, &ids[2]).await;
    sleep_past_ms(last_due).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let hold = std::sync::Arc::new(Semaphore::new(0));
    let started = now_ms();
    let d =
        launch(WorkerBuilder::new(one_queue(&redis, 4)).handler("q", starts("a", tx, hold))).await;
    for _ in 0..3 {
        let s = next(&mut rx).await;
        assert!(
            s.at_ms - started <= 2 * LATE,
            "job {} started {} ms after the daemon",
            s.n,
            s.at_ms - started
        );
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partly_busy_daemon_starts_due_jobs_on_time() {
    let redis = RedisServer::start();
    let OneQueue {
        d, mut rx, hold, q, ..
    } = one_queue_daemon(&redis, 4).await;
    let client = redis.client().await;
    // Two of four slots busy until the end of the test.
    for _ in 0..2 {
        client.enqueue("q", NewJob::new(&0).unwrap()).await.unwrap();
        assert_eq!(next(&mut rx).await.n, 0);
    }
    registered(&redis, &q).await;
    for n in 1..=2 {
        let j = NewJob::new(&n).unwrap().delay(Duration::from_millis(500));
        let id = client.enqueue("q", j).await.unwrap().id;
        let due = due_ms(&redis, &q, &id).await;
        let s = next(&mut rx).await;
        assert_eq!(s.n, n);
        on_time(&s, due);
    }
    hold.add_permits(2);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_daemons_start_the_due_jobs_of_several_queues_on_time_each_once() {
    let redis = RedisServer::start();
    let cfg = || {
        config(
            &redis,
            "",
            &format!(
                "{}{}",
                queue("q1", "concurrency = 1"),
                queue("q2", "concurrency = 2")
            ),
        )
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let hold = std::sync::Arc::new(Semaphore::new(0));
    let mut daemons = Vec::new();
    for name in ["a", "b"] {
        let b = WorkerBuilder::new(cfg())
            .handler("q1", starts(name, tx.clone(), hold.clone()))
            .handler("q2", starts(name, tx.clone(), hold.clone()));
        daemons.push(launch(b).await);
    }
    // Daemon a's q1 slot is busy for the whole test: q1's due jobs must
    // reach daemon b.
    let client = redis.client().await;
    client
        .enqueue("q1", NewJob::new(&0).unwrap())
        .await
        .unwrap();
    let busy = next(&mut rx).await;
    let (q1, q2) = (
        QueueKeys::new("redq", "q1").unwrap(),
        QueueKeys::new("redq", "q2").unwrap(),
    );
    let mut due = HashMap::new();
    for n in 1..=8i64 {
        let (queue, keys) = if n % 2 == 0 { ("q2", &q2) } else { ("q1", &q1) };
        let delay = Duration::from_millis(300 + 150 * (n as u64 % 4));
        let id = client
            .enqueue(queue, NewJob::new(&n).unwrap().delay(delay))
            .await
            .unwrap()
            .id;
        due.insert(n, due_ms(&redis, keys, &id).await);
    }
    let mut seen = HashMap::new();
    while seen.len() < due.len() {
        let s = next(&mut rx).await;
        on_time(&s, due[&s.n]);
        if s.n % 2 == 1 {
            assert_ne!(
                s.daemon, busy.daemon,
                "q1's only slot on that daemon is busy"
            );
        }
        assert!(seen.insert(s.n, s).is_none(), "a job started twice");
    }
    hold.add_permits(1);
    for d in daemons {
        d.stop().await;
    }
    assert!(rx.try_recv().is_err(), "no job started twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_jobs_due_at_one_instant_all_run_starting_on_time() {
    const N: i64 = 20_000;
    let redis = RedisServer::start();
    let client = redis.client().await;
    let q = QueueKeys::new("redq", "q").unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let hold = std::sync::Arc::new(Semaphore::new(0));
    let d =
        launch(WorkerBuilder::new(one_queue(&redis, 50)).handler("q", starts("a", tx, hold))).await;
    registered(&redis, &q).await;
    // Room for 20 batch enqueues on a loaded machine (a debug build, other
    // tests running): all must be in before the instant they are due at.
    let at = now_ms() + 6_000;
    for chunk in (1..=N).collect::<Vec<_>>().chunks(1000) {
        let jobs = chunk
            .iter()
            .map(|n| NewJob::new(n).unwrap().run_at_ms(at))
            .collect();
        client.enqueue_many("q", jobs).await.unwrap();
    }
    assert!(now_ms() < at, "enqueueing took longer than the delay");
    let first = next(&mut rx).await;
    on_time(&first, at);
    let mut ran = 1;
    while ran < N {
        within(60, rx.recv()).await.expect("handler channel closed");
        ran += 1;
    }
    d.stop().await;
}

//! The daemon embedded as a library: `WorkerBuilder` with Rust handlers,
//! configured from TOML text, against a private redis-server per test.
//!
//! Tests look at jobs mid-run through channels and semaphores the handlers
//! hold, and wait for Redis state and counters by polling them under a
//! deadline (no signal says "written to Redis"); no test sleeps to let
//! something happen (the idle test's 3s is a measuring window, and the drain
//! test gives the daemon 300ms to do what it must not).
//! Leases, intervals and backoffs are short so the whole file runs in seconds.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::embedded::*;
use common::producers::job;
use common::server::RedisServer;
use common::snapshot::registrations;
use common::wait::{eventually, secs, within, WAIT};
use redq::daemon::{Counters, WorkerBuilder};
use redq::inspect::JobState;
use redq::store::HandoffOffer;
use redq::{JobContext, Outcome};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

/// Lets panics whose message contains `marker` pass without the default
/// hook. That hook prints the message and, with `RUST_BACKTRACE` set,
/// symbolizes a backtrace on the panicking thread, a runtime worker here:
/// in a debug build under load that stalls the worker for more than a
/// lease (1s), and the reaper then takes the job over mid-test.
fn quiet_panics(marker: &'static str) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let msg = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or_default();
            if !msg.contains(marker) {
                default(info);
            }
        }));
    });
}

/// Whether this version's internal function library is in `redis`.
async fn internal_library_loaded(redis: &RedisServer) -> bool {
    let listed: redis::Value = redis::cmd("FUNCTION")
        .arg("LIST")
        .arg("LIBRARYNAME")
        .arg(redq::scripts::internal_library_name())
        .query_async(&mut redis.con().await)
        .await
        .unwrap();
    !matches!(listed, redis::Value::Array(ref libs) if libs.is_empty())
}

// ------------------------------------------------------------------ tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_library_handler_runs_jobs_and_its_results_are_kept() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let (tx, mut seen) = mpsc::unbounded_channel::<JobContext>();
    let handler = move |ctx: JobContext| {
        let tx = tx.clone();
        async move {
            let result = format!("done {}", ctx.payload.get());
            let _ = tx.send(ctx);
            Outcome::Done {
                result: Some(result),
            }
        }
    };
    let cfg = config(&redis, "", &queue("q", "timeout = \"7s\""));
    let d = launch(WorkerBuilder::new(cfg).handler("q", handler)).await;

    let mut ids = Vec::new();
    for n in 0..5 {
        let e = client.enqueue("q", job(n).tenant("acme")).await.unwrap();
        ids.push(e.id);
    }
    for _ in 0..5 {
        let ctx = recv(&mut seen).await;
        assert!(ids.contains(&ctx.id), "{ctx:?}");
        assert_eq!(ctx.queue, "q");
        assert_eq!(ctx.attempt, 1);
        assert_eq!(ctx.tenant.as_deref(), Some("acme"));
        assert_eq!(ctx.timeout, Duration::from_secs(7));
        assert!(ctx.fence > 0);
        assert!(!ctx.cancel.is_cancelled());
    }
    for (n, id) in ids.iter().enumerate() {
        let info = succeeded(&client, "q", id).await;
        assert_eq!(info.result, Some(format!("done {n}")));
        assert_eq!(info.last_error, None);
    }
    counter_reaches("succeeded", &d.counters, &d.counters.succeeded, 5).await;
    assert_eq!(Counters::get(&d.counters.retried), 0);
    assert_eq!(Counters::get(&d.counters.dead), 0);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_fails_the_attempt_is_retried_with_backoff_then_dead() {
    quiet_panics("boom on attempt");
    let redis = RedisServer::start();
    let client = redis.client().await;
    let (tx, mut attempts) = mpsc::unbounded_channel::<(u32, Instant)>();
    let handler = move |ctx: JobContext| {
        let tx = tx.clone();
        async move {
            let _ = tx.send((ctx.attempt, Instant::now()));
            if ctx.attempt > 0 {
                panic!("boom on attempt {}", ctx.attempt);
            }
            Outcome::Done { result: None }
        }
    };
    // No jitter: retry n waits exactly 10ms · 2^(n-1).
    let q = queue(
        "q",
        "max_attempts = 3\nbackoff = { base = \"10ms\", max = \"50ms\", jitter = 0.0 }",
    );
    let d = launch(WorkerBuilder::new(config(&redis, "", &q)).handler("q", handler)).await;
    let id = client.enqueue("q", job(1)).await.unwrap().id;

    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(recv(&mut attempts).await);
    }
    let numbers: Vec<u32> = seen.iter().map(|(a, _)| *a).collect();
    assert_eq!(numbers, [1, 2, 3]);
    // Redis's clock has millisecond steps: allow 1ms.
    for (i, want_ms) in [(1, 10), (2, 20)] {
        let gap = seen[i].1 - seen[i - 1].1;
        assert!(
            gap >= Duration::from_millis(want_ms - 1),
            "retry {i} came after {gap:?}, before its {want_ms}ms backoff"
        );
    }
    let info = job_when(&client, "q", &id, |j| j.state == JobState::Dead).await;
    assert_eq!(info.attempts, 3);
    assert_eq!(
        info.last_error.as_deref(),
        Some("attempt 3 of 3: handler panicked: boom on attempt 3")
    );
    counter_reaches("retried", &d.counters, &d.counters.retried, 2).await;
    counter_reaches("dead", &d.counters, &d.counters.dead, 1).await;
    assert!(attempts.try_recv().is_err(), "a dead job ran again");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcome_dead_buries_the_job_after_one_attempt() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let handler = move |_ctx: JobContext| {
        c.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Outcome::Dead {
            error: "payload refused: no recipient".into(),
        })
    };
    let q = queue("q", "max_attempts = 5");
    let d = launch(WorkerBuilder::new(config(&redis, "", &q)).handler("q", handler)).await;
    let id = client.enqueue("q", job(1)).await.unwrap().id;

    let info = job_when(&client, "q", &id, |j| j.state == JobState::Dead).await;
    assert_eq!(info.attempts, 1);
    assert_eq!(
        info.last_error.as_deref(),
        Some("payload refused: no recipient")
    );
    counter_reaches("dead", &d.counters, &d.counters.dead, 1).await;
    assert_eq!(Counters::get(&d.counters.retried), 0);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcome_retry_waits_its_backoff_or_the_delay_it_asks_for() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let (tx, mut runs) = mpsc::unbounded_channel::<(String, u32, Instant)>();
    let handler = move |ctx: JobContext| {
        let _ = tx.send((ctx.queue.clone(), ctx.attempt, Instant::now()));
        // `after: 0` means "use the queue's backoff"; `later` asks for 400ms.
        let after = match ctx.queue.as_str() {
            "later" => Duration::from_millis(400),
            _ => Duration::ZERO,
        };
        std::future::ready(if ctx.attempt == 1 {
            Outcome::Retry {
                after,
                error: "not yet".into(),
            }
        } else {
            Outcome::Done { result: None }
        })
    };
    let queues = queue(
        "zero",
        "backoff = { base = \"150ms\", max = \"150ms\", jitter = 0.0 }",
    ) + &queue("later", "");
    let builder = WorkerBuilder::new(config(&redis, "", &queues))
        .handler("zero", handler.clone())
        .handler("later", handler);
    let d = launch(builder).await;
    let zero = client.enqueue("zero", job(1)).await.unwrap().id;
    let later = client.enqueue("later", job(2)).await.unwrap().id;

    let mut first = std::collections::HashMap::new();
    let mut gaps = std::collections::HashMap::new();
    while gaps.len() < 2 {
        let (q, attempt, at) = recv(&mut runs).await;
        match attempt {
            1 => {
                first.insert(q, at);
            }
            2 => {
                gaps.insert(q.clone(), at - first[&q]);
            }
            n => panic!("{q}: unexpected attempt {n}"),
        }
    }
    assert!(
        gaps["zero"] >= Duration::from_millis(149),
        "Retry {{ after: 0 }} ran again after {:?}, before the 150ms backoff",
        gaps["zero"]
    );
    assert!(
        gaps["later"] >= Duration::from_millis(399),
        "Retry {{ after: 400ms }} ran again after {:?}",
        gaps["later"]
    );
    succeeded(&client, "zero", &zero).await;
    succeeded(&client, "later", &later).await;
    counter_reaches("retried", &d.counters, &d.counters.retried, 2).await;
    counter_reaches("succeeded", &d.counters, &d.counters.succeeded, 2).await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_record_cannot_be_read_goes_dead_with_the_reason_and_the_daemon_goes_on() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let bad = [
        ("garbage", "job record has no header"),
        ("0;0;1;{not json", "job document:"),
    ];
    let mut ids = Vec::new();
    for (record, _) in bad {
        let id = client.enqueue("q", job(0)).await.unwrap().id;
        // A foreign writer (or a bug) spoils the stored record of a pending job.
        let out = redis.cli(&["HSET", "redq:{q}:jobs", &id, record]).unwrap();
        assert_eq!(out.trim(), "0", "the record was overwritten");
        ids.push(id);
    }
    let (handler, mut ran) = recording();
    let d =
        launch(WorkerBuilder::new(config(&redis, "", &queue("q", ""))).handler("q", handler)).await;

    counter_reaches("dead", &d.counters, &d.counters.dead, 2).await;
    let dead = client.dead_list("q", 0, 10).await.unwrap();
    for (id, (_, reason)) in ids.iter().zip(bad) {
        let entry = dead
            .iter()
            .find(|e| &e.id == id)
            .unwrap_or_else(|| panic!("{id} is not dead: {dead:?}"));
        let error = entry.last_error.as_deref().unwrap_or_default();
        assert!(
            error.starts_with("job record cannot be read: ") && error.contains(reason),
            "{id}: {error}"
        );
    }
    // The daemon goes on: a good job after them runs.
    let good = client.enqueue("q", job(7)).await.unwrap().id;
    assert_eq!(recv(&mut ran).await, 7, "the handler saw a spoiled job");
    succeeded(&client, "q", &good).await;
    assert!(!d.task.is_finished());
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_daemon_takes_jobs_in_priority_order() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let (handler, mut ran) = recording();
    let q = queue("q", "concurrency = 1");
    let d = launch(WorkerBuilder::new(config(&redis, "", &q)).handler("q", handler)).await;

    client.pause("q").await.unwrap();
    let prios = [0, 5, 0, 5, -3, 10, 0];
    for (n, p) in prios.iter().enumerate() {
        client
            .enqueue("q", job(n as i64).priority(*p))
            .await
            .unwrap();
    }
    client.resume("q").await.unwrap();
    let mut order = Vec::new();
    for _ in 0..prios.len() {
        order.push(recv(&mut ran).await);
    }
    assert_eq!(order, [5, 1, 3, 0, 2, 6, 4]);
    counter_reaches("succeeded", &d.counters, &d.counters.succeeded, 7).await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_more_jobs_run_at_once_than_the_concurrency() {
    const JOBS: usize = 20;
    const LIMIT: usize = 3;
    let redis = RedisServer::start();
    let client = redis.client().await;
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let (tx, mut started) = mpsc::unbounded_channel::<()>();
    let handler = {
        let (running, most, gate) = (running.clone(), most.clone(), gate.clone());
        move |_ctx: JobContext| {
            let (running, most, gate, tx) =
                (running.clone(), most.clone(), gate.clone(), tx.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                let _ = tx.send(());
                gate.acquire().await.expect("gate").forget();
                running.fetch_sub(1, Ordering::SeqCst);
                Outcome::Done { result: None }
            }
        }
    };
    let q = queue("q", &format!("concurrency = {LIMIT}"));
    let d = launch(WorkerBuilder::new(config(&redis, "", &q)).handler("q", handler)).await;
    client
        .enqueue_many("q", (0..JOBS as i64).map(job).collect())
        .await
        .unwrap();

    // Once the limit is reached, let one job finish per job that starts.
    let mut released = 0;
    for n in 1..=JOBS {
        recv(&mut started).await;
        if n >= LIMIT {
            assert_eq!(running.load(Ordering::SeqCst), LIMIT);
            gate.add_permits(1);
            released += 1;
        }
    }
    gate.add_permits(JOBS - released);
    counter_reaches("succeeded", &d.counters, &d.counters.succeeded, JOBS as u64).await;
    assert_eq!(most.load(Ordering::SeqCst), LIMIT);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_keeps_runs_and_active_in_constant_time_encodings_and_counts_no_pin() {
    // Below 128 entries Redis keeps hashes and sorted sets as listpacks,
    // searched linearly on every access; a busy daemon touches `runs` and
    // `active` once per job. The daemon pins both out of that encoding, and
    // nothing that counts or reaps running jobs may see the pins.
    let redis = RedisServer::start();
    let client = redis.client().await;
    let gate = Arc::new(Semaphore::new(0));
    let (tx, mut started) = mpsc::unbounded_channel::<()>();
    let handler = {
        let gate = gate.clone();
        move |_ctx: JobContext| {
            let (gate, tx) = (gate.clone(), tx.clone());
            async move {
                let _ = tx.send(());
                gate.acquire().await.expect("gate").forget();
                Outcome::Done { result: None }
            }
        }
    };
    let q = queue("q", "concurrency = 4");
    let d = launch(WorkerBuilder::new(config(&redis, "", &q)).handler("q", handler)).await;
    let keys = client.store().queue("q").unwrap();
    let mut con = redis.con().await;
    let encoding_con = con.clone();
    let encoding = move |key: String| {
        let mut con = encoding_con.clone();
        async move {
            redis::cmd("OBJECT")
                .arg("ENCODING")
                .arg(key)
                .query_async::<String>(&mut con)
                .await
                .unwrap()
        }
    };
    assert_eq!(encoding(keys.runs().to_owned()).await, "hashtable");
    assert_eq!(encoding(keys.active().to_owned()).await, "skiplist");

    client
        .enqueue_many("q", (0..6).map(job).collect())
        .await
        .unwrap();
    for _ in 0..4 {
        recv(&mut started).await;
    }
    let stats = client.stats(&["q".to_owned()]).await.unwrap();
    assert_eq!((stats[0].active, stats[0].pending), (4, 2), "{stats:?}");
    gate.add_permits(6);
    counter_reaches("succeeded", &d.counters, &d.counters.succeeded, 6).await;
    let stats = client.stats(&["q".to_owned()]).await.unwrap();
    assert_eq!((stats[0].active, stats[0].pending), (0, 0), "{stats:?}");
    // The reaper ran meanwhile (every 100ms here) and left the pin alone.
    let pin: Option<f64> = redis::cmd("ZSCORE")
        .arg(keys.active())
        .arg(redq::store::ACTIVE_PIN_MEMBER)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(pin, Some(f64::INFINITY));
    assert_eq!(encoding(keys.active().to_owned()).await, "skiplist");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strict_pool_empties_its_first_queue_before_the_next() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    // Queued before the daemon starts, so both queues have work from its first claim.
    for n in 0..8 {
        client.enqueue("b", job(100 + n)).await.unwrap();
        client.enqueue("a", job(n)).await.unwrap();
    }
    let (handler, mut ran) = recording();
    let cfg = config(
        &redis,
        "",
        &(queue("a", "")
            + &queue("b", "")
            + "\n[pools.p]\nconcurrency = 1\nqueues = [\"a\", \"b\"]\norder = \"strict\"\n"),
    );
    let builder = WorkerBuilder::new(cfg)
        .handler("a", handler.clone())
        .handler("b", handler);
    let d = launch(builder).await;
    let mut order = Vec::new();
    for _ in 0..16 {
        order.push(recv(&mut ran).await);
    }
    let want: Vec<i64> = (0..8).chain(100..108).collect();
    assert_eq!(order, want);
    counter_reaches("succeeded", &d.counters, &d.counters.succeeded, 16).await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weighted_pool_serves_every_queue_in_proportion() {
    const EACH: i64 = 80;
    let redis = RedisServer::start();
    let client = redis.client().await;
    client
        .enqueue_many("a", (0..EACH).map(job).collect())
        .await
        .unwrap();
    client
        .enqueue_many("b", (0..EACH).map(|n| job(1000 + n)).collect())
        .await
        .unwrap();
    let (handler, mut ran) = recording();
    let cfg = config(
        &redis,
        "",
        &(queue("a", "weight = 3")
            + &queue("b", "weight = 1")
            + "\n[pools.p]\nconcurrency = 1\nqueues = [\"a\", \"b\"]\norder = \"weighted\"\n"),
    );
    let builder = WorkerBuilder::new(cfg)
        .handler("a", handler.clone())
        .handler("b", handler);
    let d = launch(builder).await;
    let mut order = Vec::new();
    for _ in 0..2 * EACH {
        order.push(recv(&mut ran).await);
    }
    let is_a = |n: &i64| *n < 1000;
    let last_a = order.iter().rposition(is_a).unwrap();
    let first_b = order.iter().position(|n| !is_a(n)).unwrap();
    // b is not starved while a has work ((3/4)^80 odds of a false alarm) ...
    assert!(first_b < last_a, "b waited for a to empty: {order:?}");
    // ... and a gets the larger share (mean 60 of the first 80, sd ≈ 3.9).
    let a_early = order[..EACH as usize].iter().filter(|n| is_a(n)).count();
    assert!(
        a_early > 40,
        "a ran {a_early} of the first {EACH}: {order:?}"
    );
    // Each queue keeps its own FIFO order.
    let a_order: Vec<i64> = order.iter().copied().filter(is_a).collect();
    assert_eq!(a_order, (0..EACH).collect::<Vec<_>>());
    counter_reaches(
        "succeeded",
        &d.counters,
        &d.counters.succeeded,
        2 * EACH as u64,
    )
    .await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_cancels_the_handler_and_its_outcome_is_not_written() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let (tx, mut events) = mpsc::unbounded_channel::<(&'static str, u32)>();
    let handler = move |ctx: JobContext| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(("started", ctx.attempt));
            if ctx.attempt == 1 {
                ctx.cancel.cancelled().await;
                let _ = tx.send(("cancelled", ctx.attempt));
            }
            Outcome::Done {
                result: Some(format!("attempt {}", ctx.attempt)),
            }
        }
    };
    let q = queue("q", "max_attempts = 3");
    let d = launch(WorkerBuilder::new(config(&redis, "", &q)).handler("q", handler)).await;
    let id = client.enqueue("q", job(1)).await.unwrap().id;
    assert_eq!(recv(&mut events).await, ("started", 1));

    // Another worker took the job over: its current fence is no longer ours.
    let runs = "redq:{q}:runs";
    let out = redis.cli(&["HSET", runs, &id, "1,999999,0"]).unwrap();
    assert_eq!(out.trim(), "0");
    let noticed = Instant::now();
    assert_eq!(recv(&mut events).await, ("cancelled", 1));
    assert!(
        noticed.elapsed() < Duration::from_secs(1),
        "the lease keeper took {:?} to notice (renewal every 200ms)",
        noticed.elapsed()
    );
    counter_reaches("lease_lost", &d.counters, &d.counters.lease_lost, 1).await;
    // The handler's Done was not written: no completion, not even a refused one.
    assert_eq!(Counters::get(&d.counters.succeeded), 0);
    assert_eq!(Counters::get(&d.counters.stale_refused), 0);
    let info = client.job("q", &id).await.unwrap().unwrap();
    assert_eq!(info.state, JobState::Active);
    assert_eq!(info.result, None);
    assert_eq!(
        redis.cli(&["HGET", runs, &id]).unwrap().trim(),
        "1,999999,0"
    );

    // The "other worker" never finishes: once the lease expires the reaper
    // puts the job back and it runs again, this time to the end.
    assert_eq!(recv(&mut events).await, ("started", 2));
    let info = succeeded(&client, "q", &id).await;
    assert_eq!(info.result.as_deref(), Some("attempt 2"));
    counter_reaches("succeeded", &d.counters, &d.counters.succeeded, 1).await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_running_jobs_finish_and_claims_nothing_new() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let gate = Arc::new(Semaphore::new(0));
    let (tx, mut started) = mpsc::unbounded_channel::<i64>();
    let handler = {
        let gate = gate.clone();
        move |ctx: JobContext| {
            let (gate, tx) = (gate.clone(), tx.clone());
            async move {
                let _ = tx.send(payload_n(&ctx));
                gate.acquire().await.expect("gate").forget();
                Outcome::Done { result: None }
            }
        }
    };
    let q = queue("q", "concurrency = 1");
    let d = launch(WorkerBuilder::new(config(&redis, "", &q)).handler("q", handler)).await;
    let first = client.enqueue("q", job(1)).await.unwrap().id;
    assert_eq!(recv(&mut started).await, 1);
    // Waits for the only worker slot.
    let second = client.enqueue("q", job(2)).await.unwrap().id;

    let Running {
        handle,
        counters,
        mut task,
        ..
    } = d;
    handle.shutdown();
    // A bounded look for something that must not happen: the daemon does not
    // return while a job runs (shutdown_timeout is 10s).
    let early = tokio::time::timeout(Duration::from_millis(300), &mut task).await;
    assert!(early.is_err(), "the daemon stopped with a job running");
    gate.add_permits(1);
    within(10, task).await.unwrap().unwrap();

    succeeded(&client, "q", &first).await;
    assert_eq!(Counters::get(&counters.succeeded), 1);
    assert_eq!(Counters::get(&counters.released), 0);
    let info = client.job("q", &second).await.unwrap().unwrap();
    assert_eq!((info.state, info.attempts), (JobState::Pending, 0));
    assert!(
        started.try_recv().is_err(),
        "a job was claimed after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_past_its_timeout_cancels_jobs_and_gives_them_back_unspent() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let (tx, mut events) = mpsc::unbounded_channel::<&'static str>();
    let handler = move |ctx: JobContext| {
        let tx = tx.clone();
        async move {
            let _ = tx.send("started");
            ctx.cancel.cancelled().await;
            let _ = tx.send("cancelled");
            Outcome::Fail {
                error: "stopped".into(),
            }
        }
    };
    let cfg = config(
        &redis,
        "shutdown_timeout = \"300ms\"",
        &queue("q", "max_attempts = 1"),
    );
    let d = launch(WorkerBuilder::new(cfg).handler("q", handler)).await;
    let id = client.enqueue("q", job(1)).await.unwrap().id;
    assert_eq!(recv(&mut events).await, "started");

    let counters = d.counters.clone();
    d.stop().await;
    assert_eq!(recv(&mut events).await, "cancelled");
    // Back to pending with no attempt spent: not failed, not dead (max_attempts = 1).
    let info = client.job("q", &id).await.unwrap().unwrap();
    assert_eq!((info.state, info.attempts), (JobState::Pending, 0));
    assert_eq!(info.last_error, None);
    assert_eq!(Counters::get(&counters.released), 1);
    assert_eq!(Counters::get(&counters.dead), 0);
    assert_eq!(Counters::get(&counters.retried), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_reconnects_after_a_redis_restart() {
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let (handler, mut ran) = recording();
    let d =
        launch(WorkerBuilder::new(config(&redis, "", &queue("q", ""))).handler("q", handler)).await;
    let before = {
        let client = redis.client().await;
        let id = client.enqueue("q", job(1)).await.unwrap().id;
        assert_eq!(recv(&mut ran).await, 1);
        succeeded(&client, "q", &id).await;
        id
    };

    tokio::task::block_in_place(|| redis.kill());
    // Stand in for Redis on its port until the daemon tries to reconnect:
    // then it has surely seen the outage.
    let port = redis.port;
    let stand_in = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the port is free again");
    let (socket, _) = within(10, stand_in.accept()).await.unwrap();
    drop((socket, stand_in));
    tokio::task::block_in_place(|| redis.restart());

    // The data survived (AOF); the script cache did not.
    let client = redis.client().await;
    let info = client.job("q", &before).await.unwrap().expect("kept");
    assert_eq!(info.state, JobState::Succeeded);
    let after = client.enqueue("q", job(2)).await.unwrap().id;
    assert_eq!(recv(&mut ran).await, 2);
    succeeded(&client, "q", &after).await;
    // Counters are not asserted here: a write in flight when Redis died may
    // have been applied with its reply lost; its retry is then refused as
    // stale (safely) and counted as such, not as a success.
    // Only the daemon completes: it reconnected, and its functions are in
    // the new server (loaded again, or kept by the AOF). (The job itself may
    // not have been claimed: the daemon's hand-off registration survived in
    // the AOF, so the enqueue could lease the job to it directly.)
    assert!(internal_library_loaded(&redis).await);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_daemon_does_not_poll_redis() {
    let redis = RedisServer::start();
    let (handler, _ran) = recording();
    let cfg = config(
        &redis,
        "inbox_poll = \"1s\"\nreap_interval = \"1s\"",
        &queue("q", ""),
    );
    let d = launch(WorkerBuilder::new(cfg).handler("q", handler)).await;
    let measure = || async {
        let total: u64 = redis.info("stats").await["total_commands_processed"]
            .parse()
            .unwrap();
        (total, redis.script_calls().await)
    };
    // Start once the first claim is done: a claim that finds nothing
    // registers the pool for hand-offs.
    let q = redq::keys::QueueKeys::new("redq", "q").unwrap();
    eventually("the first claim", WAIT, || async {
        !registrations(&redis, &q).await.is_empty()
    })
    .await;
    let window = Duration::from_secs(3);
    let (total_from, scripts_from) = measure().await;
    // A measured window, not a synchronisation: the bounds are on calls made in it.
    tokio::time::sleep(window).await;
    let (total_to, scripts_to) = measure().await;
    // With nothing to do, no script runs at all: the fetcher looks with
    // LLEN and ZCARD, the reaper with the head of `active`. A fetcher that
    // spins would make hundreds.
    let scripts = scripts_to - scripts_from;
    assert!(
        scripts <= 1,
        "an idle daemon ran {scripts} scripts in {window:?}"
    );
    // Every command. Idle work per second: LLEN + ZCARD, TIME + ZRANGE,
    // half a BLPOP, and every 5 s the depth poll and the heartbeat: about
    // 6/s for one queue.
    let per_sec = (total_to - total_from) as f64 / window.as_secs_f64();
    assert!(
        per_sec < 15.0,
        "an idle daemon sent {} commands in {window:?} ({per_sec:.1}/s)",
        total_to - total_from
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enqueue_wakes_an_idle_daemon_at_once() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let (handler, mut ran) = recording();
    // Nothing but the wake-up can start a job within 30s.
    let cfg = config(
        &redis,
        "inbox_poll = \"30s\"\nreap_interval = \"30s\"",
        &queue("q", ""),
    );
    let d = launch(WorkerBuilder::new(cfg).handler("q", handler)).await;
    // Idle: the pool made its first claim (the only script call so far) and
    // the waker is blocked on the wake list.
    eventually("the daemon to go idle", WAIT, || async {
        let claimed = redis.script_calls().await > 0;
        let clients = redis.info("clients").await;
        claimed && clients["blocked_clients"] != "0"
    })
    .await;

    let sent = Instant::now();
    client.enqueue("q", job(1)).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(2), ran.recv())
        .await
        .expect("the job did not start within 2s of its enqueue");
    assert_eq!(n, Some(1));
    tracing::info!(elapsed = ?sent.elapsed(), "woken");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_daemon_is_handed_jobs_directly_and_unregisters_when_it_stops() {
    let redis = RedisServer::start();
    let (handler, mut ran) = recording();
    let cfg = config(&redis, "", &queue("q", "concurrency = 4"));
    let d = launch(WorkerBuilder::new(cfg).handler("q", handler)).await;
    let client = redis.client().await;
    let q = client.store().queue("q").unwrap();
    let registered = || async { registrations(&redis, &q).await.len() };
    // Its first claim found nothing: it waits for a hand-off.
    eventually("the idle daemon to register", WAIT, || async {
        registered().await == 1
    })
    .await;
    for n in 1..=3 {
        let id = client.enqueue("q", job(n)).await.unwrap().id;
        assert_eq!(recv(&mut ran).await, n);
        succeeded(&client, "q", &id).await;
    }
    // Each came leased in its enqueue's reply to the daemon's blocking pop,
    // not through a wake-up and a claim.
    assert_eq!(Counters::get(&d.counters.handed_off), 3);
    d.stop().await;
    // Stopped: no registration left for enqueues to hand jobs to, nothing
    // left in its list, and a new job stays pending.
    assert_eq!(registered().await, 0);
    let id = client.enqueue("q", job(4)).await.unwrap().id;
    let info = client.job("q", &id).await.unwrap().unwrap();
    assert_eq!(info.state, JobState::Pending);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_daemon_renews_its_hand_off_registration_without_a_script() {
    let redis = RedisServer::start();
    let (handler, _ran) = recording();
    let cfg = config(&redis, "inbox_poll = \"100ms\"", &queue("q", ""));
    let d = launch(WorkerBuilder::new(cfg).handler("q", handler)).await;
    let q = redis.client().await.store().queue("q").unwrap();
    let entry = || async {
        registrations(&redis, &q)
            .await
            .into_iter()
            .next()
            .map(|(_, v)| v)
    };
    let expires = |v: &str| -> i64 { v.rsplit(',').next().unwrap().parse().unwrap() };
    let first = eventually("the idle daemon to register", WAIT, entry).await;
    let scripts = redis.script_calls().await;
    // Half way to its expiry (10 s at least) the registration is renewed.
    let renewed = eventually("the registration to be renewed", secs(15), || async {
        let now = entry().await.expect("still registered");
        if expires(&now) > expires(&first) {
            Ok(now)
        } else {
            Err(now)
        }
    })
    .await;
    // Same free slots, by one HSET in the idle look, not by a claim.
    assert_eq!(renewed.split(',').next(), first.split(',').next());
    assert_eq!(redis.script_calls().await, scripts);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_daemon_costs_redis_the_same_however_many_queues_it_serves() {
    let redis = RedisServer::start();
    // 200 empty queues, looked at every 100 ms (inbox_poll, reap_interval):
    // a look per queue would be thousands of commands a second.
    let queues: String = (0..200)
        .map(|i| queue(&format!("q{i}"), "handler = { builtin = \"noop\" }"))
        .collect();
    let d = launch(WorkerBuilder::new(config(&redis, "", &queues))).await;
    let processed = || async {
        redis.info("stats").await["total_commands_processed"]
            .parse::<u64>()
            .unwrap()
    };
    // Settled: the first reads of every queue are done. The hand-off
    // registrations are first renewed 5 s after start, after the window.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (before, t0) = (processed().await, Instant::now());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let per_sec = (processed().await - before) as f64 / t0.elapsed().as_secs_f64();
    // Per 100 ms: one EXISTS (idle look), one ZUNION (reaper); per 5 s the
    // depth poll's two; the waker's BLPOP; heartbeats.
    assert!(
        per_sec < 60.0,
        "{per_sec:.0} commands/s with 200 idle queues"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_handed_to_idle_daemons_run_once_each() {
    let redis = RedisServer::start();
    let (handler, mut ran) = recording();
    let mut daemons = Vec::new();
    for _ in 0..3 {
        let cfg = config(&redis, "", &queue("q", "concurrency = 4"));
        daemons.push(launch(WorkerBuilder::new(cfg).handler("q", handler.clone())).await);
    }
    let client = Arc::new(redis.client().await);
    let q = client.store().queue("q").unwrap();
    eventually("three idle daemons to register", WAIT, || async {
        registrations(&redis, &q).await.len() == 3
    })
    .await;
    // Eight producers, single enqueues: hand-offs, wake-ups and claims mix,
    // and hand-offs can cross claims (the daemon then releases the extra).
    let n = 400;
    let producers: Vec<_> = (0..8)
        .map(|p| {
            let client = client.clone();
            tokio::spawn(async move {
                for i in (p..n).step_by(8) {
                    client.enqueue("q", job(i)).await.unwrap();
                }
            })
        })
        .collect();
    for p in producers {
        within(20, p).await.unwrap();
    }
    let mut seen = std::collections::HashSet::new();
    while seen.len() < n as usize {
        let got = recv(&mut ran).await;
        assert!(seen.insert(got), "job {got} ran twice");
    }
    let handed: u64 = daemons
        .iter()
        .map(|d| Counters::get(&d.counters.handed_off))
        .sum();
    assert!(handed > 0, "no job came by hand-off");
    for d in daemons {
        d.stop().await;
    }
    // Nothing ran twice after the last one either, and nothing is left.
    assert!(ran.try_recv().is_err());
    let stats = client.stats(&["q".to_owned()]).await.unwrap();
    assert_eq!((stats[0].pending, stats[0].active), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_handed_to_a_daemon_that_died_come_back_when_their_lease_expires() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let store = client.store();
    let q = store.queue("q").unwrap();
    // A daemon registered, then died (it never reads its hand-off list).
    store
        .claim_as(
            &q,
            4,
            Duration::from_secs(1),
            0,
            0,
            Some(HandoffOffer {
                name: "ghost",
                ttl: Duration::from_secs(60),
            }),
        )
        .await
        .unwrap();
    let id = client.enqueue("q", job(7)).await.unwrap().id;
    let info = client.job("q", &id).await.unwrap().unwrap();
    assert_eq!(info.state, JobState::Active);
    // A live daemon's reaper takes it back after the lease, and it runs.
    let (handler, mut ran) = recording();
    let d =
        launch(WorkerBuilder::new(config(&redis, "", &queue("q", ""))).handler("q", handler)).await;
    assert_eq!(recv(&mut ran).await, 7);
    let info = succeeded(&client, "q", &id).await;
    assert_eq!(info.attempts, 2);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_handed_over_beyond_the_free_slots_go_back_unstarted_and_unspent_and_run_later() {
    let redis = RedisServer::start();
    let (tx, mut ran) = mpsc::unbounded_channel();
    // The first job started holds the one slot until the test lets it go,
    // so no other job of the hand-off can take the slot it frees.
    let hold = Arc::new(Semaphore::new(0));
    let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let h = hold.clone();
    let handler = move |ctx: JobContext| {
        let _ = tx.send((payload_n(&ctx), ctx.attempt));
        let (hold, first) = (h.clone(), first.clone());
        async move {
            if first.swap(false, Ordering::SeqCst) {
                let _ = hold.acquire().await.map(|p| p.forget());
            }
            Outcome::Done { result: None }
        }
    };
    let cfg = config(&redis, "", &queue("q", "concurrency = 1"));
    let d = launch(WorkerBuilder::new(cfg).handler("q", handler)).await;
    let client = redis.client().await;
    let q = client.store().queue("q").unwrap();
    let mut con = redis.con().await;
    eventually("the idle daemon to register", WAIT, || async {
        !registrations(&redis, &q).await.is_empty()
    })
    .await;
    let daemon = &registrations(&redis, &q).await[0].0;
    // As if a registration and a claim had crossed: it offers five slots,
    // the daemon has one.
    let _: () = redis::cmd("HSET")
        .arg(q.idle())
        .arg(daemon)
        .arg(format!("5,1000,{}", i64::MAX / 2))
        .query_async(&mut con)
        .await
        .unwrap();
    client
        .enqueue_many("q", (1..=5).map(job).collect())
        .await
        .unwrap();
    counter_reaches(
        "returned unstarted",
        &d.counters,
        &d.counters.returned_unstarted,
        4,
    )
    .await;
    hold.add_permits(1);
    let mut seen = std::collections::BTreeMap::new();
    while seen.len() < 5 {
        let (n, attempt) = recv(&mut ran).await;
        assert!(seen.insert(n, attempt).is_none(), "job {n} ran twice");
    }
    // One started at once; the other four went back unspent and ran later.
    assert!(seen.values().all(|a| *a == 1), "{seen:?}");
    assert_eq!(Counters::get(&d.counters.returned_unstarted), 4);
    // `released` is only for jobs given back at shutdown.
    assert_eq!(Counters::get(&d.counters.released), 0);
    let body = reqwest::get(d.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        body.contains("redq_jobs_returned_unstarted_total{queue=\"q\"} 4")
            && body.contains("redq_jobs_total{queue=\"q\",outcome=\"released\"} 0"),
        "{body}"
    );
    d.stop().await;
}

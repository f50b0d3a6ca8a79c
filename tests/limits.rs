//! Limits across daemons: the queue rate limit (a sliding window), per-tenant
//! rate limits and group concurrency, enforced by the claim script. First their contracts through
//! the store, then two and three embedded daemons at once against one
//! private Redis, with library handlers keeping their own records.
//!
//! No test sleeps to let something happen: tests wait on channels, counters
//! and semaphores under bounded time-outs. (A rate-limited run takes as long
//! as its windows do: that is what it measures.)

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::embedded::{self, counters_at_least, launch, payload_n, recv};
use common::producers::job;
use common::server::RedisServer;
use common::snapshot::pending_ids;
use common::store::{completions, done, ids, DEAD, KEEP_NONE, LEASE};
use common::wait::within;
use redq::config::{self, Config};
use redq::daemon::{Counters, WorkerBuilder};
use redq::store::TenantLimits;
use redq::{JobContext, NewJob, Outcome};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

async fn zcard(redis: &RedisServer, key: &str) -> u64 {
    redis::cmd("ZCARD")
        .arg(key)
        .query_async(&mut redis.con().await)
        .await
        .unwrap()
}

// ------------------------------------------------- contracts of the script

#[tokio::test]
async fn a_rate_limited_claim_hands_out_the_room_left_and_says_when_room_returns() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let store = client.store();
    let q = store.queue("q").unwrap();
    store
        .set_limits(&q, Some((3, Duration::from_secs(60))), None)
        .await
        .unwrap();
    let jobs = (0..5).map(job).collect();
    client.enqueue_many("q", jobs).await.unwrap();

    let first = store.claim(&q, 10, LEASE, 0, 0).await.unwrap();
    assert_eq!(first.jobs.len(), 3, "the room of the window");
    assert!(first.throttled);
    assert_eq!(first.next_due_ms, Some(first.now_ms + 60_000));

    // Full window: nothing more, the same answer, and the rest wait unspent.
    let second = store.claim(&q, 10, LEASE, 0, 0).await.unwrap();
    assert!(second.jobs.is_empty());
    assert!(second.throttled);
    assert_eq!(second.next_due_ms, Some(first.now_ms + 60_000));
    assert_eq!(pending_ids(&mut redis.con().await, &q).await.len(), 2);
    assert_eq!(zcard(&redis, q.active()).await, 3);

    // Completing does not give room back: the window counts claims.
    store
        .complete(&q, &completions(&first.jobs), KEEP_NONE)
        .await
        .unwrap();
    assert!(store
        .claim(&q, 10, LEASE, 0, 0)
        .await
        .unwrap()
        .jobs
        .is_empty());

    // Lifting the limit lets the waiting jobs run, each on its first attempt.
    store.set_limits(&q, None, None).await.unwrap();
    let rest = store.claim(&q, 10, LEASE, 0, 0).await.unwrap();
    assert_eq!(rest.jobs.len(), 2);
    assert!(!rest.throttled);
    assert!(rest.jobs.iter().all(|j| j.attempt == 1));
}

#[tokio::test]
async fn the_rate_window_slides_room_returns_when_the_oldest_claim_leaves_it() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let store = client.store();
    let q = store.queue("q").unwrap();
    let per = Duration::from_millis(300);
    store.set_limits(&q, Some((2, per)), None).await.unwrap();
    client
        .enqueue_many("q", (0..4).map(job).collect())
        .await
        .unwrap();

    let a = store.claim(&q, 1, LEASE, 0, 0).await.unwrap();
    assert_eq!(a.jobs.len(), 1);
    assert!(!a.throttled, "room was left for the rest of the want");
    let later = redis_clock_at(store, &q, a.now_ms + 100).await;
    let b = store.claim(&q, 5, LEASE, 0, 0).await.unwrap();
    assert!(b.now_ms >= later);
    assert_eq!(b.jobs.len(), 1);
    assert!(b.throttled);
    // Room returns when the first claim leaves the window, not the second.
    let due = b.next_due_ms.unwrap();
    assert_eq!(due, a.now_ms + 300);
    let just_before = store.claim(&q, 5, LEASE, 0, 0).await.unwrap();
    if just_before.now_ms < due {
        assert!(just_before.jobs.is_empty());
    }
    redis_clock_at(store, &q, due).await;
    let c = store.claim(&q, 5, LEASE, 0, 0).await.unwrap();
    assert!(c.now_ms < b.now_ms + 300, "the test was too slow to tell");
    assert_eq!(c.jobs.len(), 1, "one claim left the window, one job fits");
    assert!(c.throttled);
    assert_eq!(c.next_due_ms, Some(b.now_ms + 300));
}

/// Waits until Redis's clock reaches `t` (reading it with claims of nothing).
async fn redis_clock_at(store: &redq::store::Store, q: &redq::keys::QueueKeys, t: i64) -> i64 {
    within(5, async {
        loop {
            let now = store.claim(q, 0, LEASE, 0, 0).await.unwrap().now_ms;
            if now >= t {
                return now;
            }
        }
    })
    .await
}

#[tokio::test]
async fn a_full_group_parks_its_jobs_and_others_run_past_them() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let store = client.store();
    let q = store.queue("q").unwrap();
    store.set_limits(&q, None, Some(1)).await.unwrap();
    let jobs = vec![
        job(1).group("a").id("a1"),
        job(2).group("a").id("a2"),
        job(3).group("a").id("a3"),
        job(4).group("b").id("b1"),
        job(5).id("free"),
    ];
    client.enqueue_many("q", jobs).await.unwrap();

    let got = store.claim(&q, 10, LEASE, 0, 0).await.unwrap();
    let ids: Vec<&str> = got.jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, ["a1", "b1", "free"]);
    assert_eq!(zcard(&redis, q.parked()).await, 2);
    assert!(pending_ids(&mut redis.con().await, &q).await.is_empty());
    // A parked job is pending to its readers (`redq job`, export).
    let parked = client.job("q", "a3").await.unwrap().unwrap();
    assert_eq!(parked.state, redq::inspect::JobState::Pending);
    assert_eq!(parked.attempts, 0);

    // a1 completes: one parked job of `a` goes back to pending, in order.
    let a1 = &got.jobs[0];
    store.complete(&q, &[done(a1)], KEEP_NONE).await.unwrap();
    let next = store.claim(&q, 10, LEASE, 0, 0).await.unwrap();
    let ids: Vec<&str> = next.jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, ["a2"]);
    assert_eq!(next.jobs[0].attempt, 1, "parking spends no attempt");

    // a2's holder dies: when its lease expires the slot returns with it.
    let reaped = store.queue("q").unwrap();
    redis::cmd("ZADD")
        .arg(reaped.active())
        .arg("XX")
        .arg(0)
        .arg("a2")
        .query_async::<()>(&mut redis.con().await)
        .await
        .unwrap();
    assert_eq!(
        store.reap(&q, 10, 5, DEAD, Duration::ZERO).await.unwrap(),
        (1, 0)
    );
    let after = store.claim(&q, 10, LEASE, 0, 0).await.unwrap();
    let mut ids: Vec<&str> = after.jobs.iter().map(|j| j.id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["a2"], "a2 is back first pending, a3 stays parked");
    assert_eq!(after.jobs[0].attempt, 2);
    assert_eq!(zcard(&redis, q.parked()).await, 1);

    // Lifting the limit lets the parked job run.
    store.set_limits(&q, None, None).await.unwrap();
    let last = store.claim(&q, 10, LEASE, 0, 0).await.unwrap();
    let ids: Vec<&str> = last.jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, ["a3"]);
    assert_eq!(zcard(&redis, q.parked()).await, 0);
}

#[tokio::test]
async fn a_tenant_over_its_limit_is_parked_and_other_tenants_run_past_it() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let store = client.store();
    let q = store.queue("q").unwrap();
    // Only `a` is limited: 2 per minute; `b` is not.
    let limits = TenantLimits {
        default: None,
        overrides: vec![("a".to_owned(), (2, Duration::from_secs(60)))],
    };
    store.set_tenant_limits(&q, Some(&limits)).await.unwrap();
    let mut jobs: Vec<NewJob> = (0..10)
        .map(|n| job(n).tenant("a").id(format!("a{n}")))
        .collect();
    jobs.extend((0..10).map(|n| job(100 + n).tenant("b").id(format!("b{n}"))));
    client.enqueue_many("q", jobs).await.unwrap();

    // a's ten are first pending: two fit its window, eight are parked, and
    // the claim pops on to fill its slots with b's.
    let got = store.claim(&q, 10, LEASE, 0, 0).await.unwrap();
    assert_eq!(
        ids(&got.jobs),
        ["a0", "a1", "b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7"]
    );
    assert!(got.jobs.iter().all(|j| j.attempt == 1));
    assert!(!got.throttled, "the queue itself is not rate limited");
    assert_eq!(
        got.next_due_ms,
        Some(got.now_ms + 60_000),
        "a's room returns"
    );
    assert_eq!(zcard(&redis, q.tenant_parked()).await, 8);
    assert_eq!(pending_ids(&mut redis.con().await, &q).await.len(), 2);
    // A parked job is waiting to its readers, with no attempt spent.
    let a5 = client.job("q", "a5").await.unwrap().unwrap();
    assert_eq!(a5.state, redq::inspect::JobState::Pending);
    assert_eq!(a5.attempts, 0);
    let stats = client.stats(&["q".to_owned()]).await.unwrap();
    assert_eq!(stats[0].pending, 10, "parked jobs count as waiting");

    // b's last two; a stays parked and the answer says when it has room.
    let next = store.claim(&q, 10, LEASE, 0, 0).await.unwrap();
    assert_eq!(ids(&next.jobs), ["b8", "b9"]);
    assert_eq!(next.next_due_ms, Some(got.now_ms + 60_000));
    let empty = store.claim(&q, 10, LEASE, 0, 0).await.unwrap();
    assert!(empty.jobs.is_empty());
    assert_eq!(empty.next_due_ms, Some(got.now_ms + 60_000));

    // Lifting the limits: a's parked jobs run at once, in order, first attempt.
    store.set_tenant_limits(&q, None).await.unwrap();
    let rest = store.claim(&q, 10, LEASE, 0, 0).await.unwrap();
    assert_eq!(
        ids(&rest.jobs),
        ["a2", "a3", "a4", "a5", "a6", "a7", "a8", "a9"]
    );
    assert!(rest.jobs.iter().all(|j| j.attempt == 1));
    assert_eq!(rest.next_due_ms, None);
    assert_eq!(zcard(&redis, q.tenant_parked()).await, 0);
    assert_eq!(zcard(&redis, q.tenant_due()).await, 0);
}

#[tokio::test]
async fn a_tenant_override_beats_the_default_and_untenanted_jobs_are_free() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let store = client.store();
    let q = store.queue("q").unwrap();
    let per = Duration::from_secs(60);
    let limits = TenantLimits {
        default: Some((1, per)),
        overrides: vec![("acme".to_owned(), (3, per))],
    };
    store.set_tenant_limits(&q, Some(&limits)).await.unwrap();
    let mut jobs: Vec<NewJob> = (0..5)
        .map(|n| job(n).tenant("acme").id(format!("acme{n}")))
        .collect();
    jobs.extend((0..5).map(|n| job(10 + n).tenant("zed").id(format!("zed{n}"))));
    jobs.extend((0..2).map(|n| job(20 + n).id(format!("free{n}"))));
    client.enqueue_many("q", jobs).await.unwrap();

    let got = store.claim(&q, 20, LEASE, 0, 0).await.unwrap();
    assert_eq!(
        ids(&got.jobs),
        ["acme0", "acme1", "acme2", "zed0", "free0", "free1"]
    );
    assert_eq!(zcard(&redis, q.tenant_parked()).await, 6);
    assert_eq!(got.next_due_ms, Some(got.now_ms + 60_000));

    // An override alone limits only its tenant.
    let limits = TenantLimits {
        default: None,
        overrides: vec![("acme".to_owned(), (3, per))],
    };
    store.set_tenant_limits(&q, Some(&limits)).await.unwrap();
    client
        .enqueue_many(
            "q",
            (0..3)
                .map(|n| job(30 + n).tenant("new").id(format!("new{n}")))
                .collect(),
        )
        .await
        .unwrap();
    let more = store.claim(&q, 20, LEASE, 0, 0).await.unwrap();
    assert_eq!(ids(&more.jobs), ["new0", "new1", "new2"]);
}

#[tokio::test]
async fn a_tenants_room_returns_when_its_oldest_claim_leaves_the_window() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let store = client.store();
    let q = store.queue("q").unwrap();
    let limits = TenantLimits {
        default: Some((2, Duration::from_millis(300))),
        overrides: vec![],
    };
    store.set_tenant_limits(&q, Some(&limits)).await.unwrap();
    client
        .enqueue_many(
            "q",
            (0..5)
                .map(|n| job(n).tenant("t").id(format!("t{n}")))
                .collect(),
        )
        .await
        .unwrap();
    let a = store.claim(&q, 1, LEASE, 0, 0).await.unwrap();
    assert_eq!(ids(&a.jobs), ["t0"]);
    redis_clock_at(store, &q, a.now_ms + 100).await;
    let b = store.claim(&q, 5, LEASE, 0, 0).await.unwrap();
    assert_eq!(ids(&b.jobs), ["t1"]);
    let due = b.next_due_ms.expect("a due time");
    assert_eq!(due, a.now_ms + 300, "the first claim leaves first");
    redis_clock_at(store, &q, due).await;
    let c = store.claim(&q, 5, LEASE, 0, 0).await.unwrap();
    assert!(c.now_ms < b.now_ms + 300, "the test was too slow to tell");
    assert_eq!(
        ids(&c.jobs),
        ["t2"],
        "one claim left the window, one job fits"
    );
    assert_eq!(c.next_due_ms, Some(b.now_ms + 300));
    assert_eq!(c.jobs[0].attempt, 1);
}

// ---------------------------------------------------------- many daemons

/// The daemons' config: queue `q` with 2s leases renewed every 300ms and
/// `queue` (TOML lines), `[daemon]` with `daemon` and short intervals.
fn config(redis: &RedisServer, daemon: &str, queue: &str) -> Config {
    let q = format!(
        "\n[queues.q]\nlease = \"2s\"\nlease_renew = \"300ms\"\nmax_attempts = 3\n{queue}\n"
    );
    embedded::config(redis, daemon, &q)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_daemons_never_start_more_than_the_rate_limit_in_any_window() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let (jobs, per) = (4usize, Duration::from_millis(500));
    // An idle look every 30s: only the claim's own "room again at" can keep
    // the jobs moving within the test's time.
    let cfg = || {
        config(
            &redis,
            "inbox_poll = \"30s\"\n",
            "concurrency = 2\nrate_limit = { jobs = 4, per = \"500ms\" }\n",
        )
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, i64, u32, usize)>();
    let mut daemons = Vec::new();
    for d in 0..3 {
        let tx = tx.clone();
        let handler = move |ctx: JobContext| {
            let _ = tx.send((Instant::now(), payload_n(&ctx), ctx.attempt, d));
            std::future::ready(Outcome::Done { result: None })
        };
        daemons.push(launch(WorkerBuilder::new(cfg()).handler("q", handler)).await);
    }
    let total = 14;
    let began = Instant::now();
    client
        .enqueue_many("q", (0..total).map(job).collect())
        .await
        .unwrap();
    let mut starts = Vec::new();
    for _ in 0..total {
        starts.push(recv(&mut rx).await);
    }
    let took = began.elapsed();

    starts.sort_by_key(|s| s.0);
    let mut ns: Vec<i64> = starts.iter().map(|s| s.1).collect();
    ns.sort_unstable();
    assert_eq!(ns, (0..total).collect::<Vec<_>>(), "each job ran once");
    assert!(
        starts.iter().all(|s| s.2 == 1),
        "held-back jobs spend no attempt: {starts:?}"
    );
    // Every window of `per`, from each start on, holds at most `jobs` starts.
    // The handlers' clock lags Redis's by the hand-over time, which varies a
    // little from job to job: the window is shortened by that margin.
    let window = per - Duration::from_millis(60);
    for (i, s) in starts.iter().enumerate() {
        let inside = starts[i..]
            .iter()
            .take_while(|t| t.0 - s.0 < window)
            .count();
        assert!(
            inside <= jobs,
            "{inside} starts within {window:?} of start {i}: {starts:?}"
        );
    }
    // 14 jobs at 4 per 500ms need three full windows after the first: ~1.5s.
    assert!(took >= Duration::from_millis(1400), "{took:?}");
    assert!(
        took < Duration::from_secs(5),
        "the fetchers waited for a poll, not for room: {took:?}"
    );
    let by = |d: usize| starts.iter().filter(|s| s.3 == d).count();
    assert!(
        (0..3).filter(|d| by(*d) > 0).count() >= 2,
        "several daemons took part: {starts:?}"
    );
    for d in &daemons {
        assert_eq!(Counters::get(&d.counters.retried), 0);
        assert_eq!(Counters::get(&d.counters.dead), 0);
    }
    for d in daemons {
        d.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_concurrency_holds_across_daemons_and_other_groups_run_meanwhile() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let limit = 2;
    // Jobs of group `g` hold their slot until the test lets them go.
    let gate = Arc::new(Semaphore::new(0));
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (started_tx, mut started) = mpsc::unbounded_channel::<(String, i64, u32)>();
    let seen_running = Arc::new(Mutex::new(Vec::new()));
    let mut daemons = Vec::new();
    for _ in 0..3 {
        let (gate, running, most, tx, seen) = (
            gate.clone(),
            running.clone(),
            most.clone(),
            started_tx.clone(),
            seen_running.clone(),
        );
        let handler = move |ctx: JobContext| {
            let (gate, running, most, tx, seen) = (
                gate.clone(),
                running.clone(),
                most.clone(),
                tx.clone(),
                seen.clone(),
            );
            async move {
                let n = payload_n(&ctx);
                if n < 100 {
                    // Group `g`.
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    let _ = tx.send(("g".into(), n, ctx.attempt));
                    gate.acquire().await.expect("gate").forget();
                    running.fetch_sub(1, Ordering::SeqCst);
                } else {
                    // Group `h`: notes how many `g` jobs run as it does.
                    seen.lock().unwrap().push(running.load(Ordering::SeqCst));
                    let _ = tx.send(("h".into(), n, ctx.attempt));
                }
                Outcome::Done { result: None }
            }
        };
        let cfg = config(
            &redis,
            "inbox_poll = \"100ms\"\n",
            "concurrency = 4\ngroup_concurrency = 2\n",
        );
        daemons.push(launch(WorkerBuilder::new(cfg).handler("q", handler)).await);
    }
    // Six `g` jobs first pending, then two `h` jobs behind them.
    let mut jobs: Vec<NewJob> = (0..6).map(|n| job(n).group("g")).collect();
    jobs.extend((100..102).map(|n| job(n).group("h")));
    client.enqueue_many("q", jobs).await.unwrap();

    let mut g_started = 0;
    let mut h_done = 0;
    while g_started < limit || h_done < 2 {
        let (group, _, attempt) = recv(&mut started).await;
        assert_eq!(attempt, 1);
        if group == "g" {
            g_started += 1;
        } else {
            h_done += 1;
        }
    }
    // `h` ran while `g` held its slots and four `g` jobs waited: no
    // head-of-line blocking, and no third `g` job started.
    assert_eq!(g_started, limit);
    assert_eq!(running.load(Ordering::SeqCst), limit);
    assert!(seen_running.lock().unwrap().iter().all(|n| *n <= limit));
    let q = client.store().queue("q").unwrap();
    assert_eq!(zcard(&redis, q.parked()).await, 4);

    // Let the `g` jobs go; each that ends frees its slot for a parked one.
    for _ in 0..6 {
        gate.add_permits(1);
    }
    while g_started < 6 {
        let (group, _, attempt) = recv(&mut started).await;
        assert_eq!((group.as_str(), attempt), ("g", 1));
        g_started += 1;
    }
    let succeeded: Vec<_> = daemons.iter().map(|d| &d.counters.succeeded).collect();
    counters_at_least("succeeded", &succeeded, 8).await;
    assert!(
        most.load(Ordering::SeqCst) <= limit,
        "more than {limit} `g` jobs ran at once"
    );
    assert_eq!(zcard(&redis, q.parked()).await, 0);
    let groups: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(q.groups())
        .query_async(&mut redis.con().await)
        .await
        .unwrap();
    assert!(groups.is_empty(), "every slot was given back: {groups:?}");
    for d in daemons {
        d.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_daemons_keep_each_tenant_within_its_limit_and_others_are_not_held_back() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let (jobs, per) = (2usize, Duration::from_millis(500));
    // Only `slow` is limited (an override without a default). An idle look
    // every 30s: only the claims' own "room again at" keeps `slow` moving.
    let cfg = || {
        config(
            &redis,
            "inbox_poll = \"30s\"\n",
            "concurrency = 2\n[queues.q.tenant_rate_limits]\nslow = { jobs = 2, per = \"500ms\" }\n",
        )
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, String, u32, usize)>();
    let mut daemons = Vec::new();
    for d in 0..3 {
        let tx = tx.clone();
        let handler = move |ctx: JobContext| {
            let tenant = ctx.tenant.clone().unwrap_or_default();
            let _ = tx.send((Instant::now(), tenant, ctx.attempt, d));
            std::future::ready(Outcome::Done { result: None })
        };
        daemons.push(launch(WorkerBuilder::new(cfg()).handler("q", handler)).await);
    }
    // `slow`'s jobs are first pending, `fast`'s behind them.
    let (n_slow, n_fast) = (8, 12);
    let mut batch: Vec<NewJob> = (0..n_slow).map(|n| job(n).tenant("slow")).collect();
    batch.extend((0..n_fast).map(|n| job(100 + n).tenant("fast")));
    let began = Instant::now();
    client.enqueue_many("q", batch).await.unwrap();
    let mut starts = Vec::new();
    for _ in 0..n_slow + n_fast {
        starts.push(recv(&mut rx).await);
    }
    let took = began.elapsed();
    starts.sort_by_key(|s| s.0);
    assert!(
        starts.iter().all(|s| s.2 == 1),
        "parked jobs spend no attempt: {starts:?}"
    );
    let slow: Vec<Instant> = starts
        .iter()
        .filter(|s| s.1 == "slow")
        .map(|s| s.0)
        .collect();
    let fast: Vec<Instant> = starts
        .iter()
        .filter(|s| s.1 == "fast")
        .map(|s| s.0)
        .collect();
    assert_eq!((slow.len(), fast.len()), (8, 12), "each job ran once");
    // Every window of `per`, from each `slow` start on, holds at most `jobs`
    // of its starts (shortened by the hand-over margin, as above).
    let window = per - Duration::from_millis(60);
    for (i, s) in slow.iter().enumerate() {
        let inside = slow[i..].iter().take_while(|t| **t - *s < window).count();
        assert!(
            inside <= jobs,
            "{inside} `slow` starts within {window:?} of its start {i}: {starts:?}"
        );
    }
    // `fast` was not held back behind `slow`'s parked jobs: all of it ran
    // before `slow` had room for its third job, one window in.
    let fast_last = *fast.last().unwrap();
    assert!(fast_last < slow[2], "{starts:?}");
    assert!(fast_last - began < Duration::from_millis(400), "{starts:?}");
    // 8 `slow` jobs at 2 per 500ms need three windows after the first: ~1.5s.
    assert!(took >= Duration::from_millis(1400), "{took:?}");
    assert!(
        took < Duration::from_secs(5),
        "the fetchers waited for a poll, not for room: {took:?}"
    );
    let by = |d: usize| starts.iter().filter(|s| s.3 == d).count();
    assert!(
        (0..3).filter(|d| by(*d) > 0).count() >= 2,
        "several daemons took part: {starts:?}"
    );
    let q = client.store().queue("q").unwrap();
    assert_eq!(zcard(&redis, q.tenant_parked()).await, 0);
    for d in daemons {
        d.stop().await;
    }
}

#[test]
fn tenant_limit_mistakes_name_the_key_path() {
    let base = "[queues.q]\nhandler = { builtin = \"noop\" }\n";
    let err = |extra: &str| {
        config::load_from_str(&format!("{base}{extra}"))
            .expect_err("config should be refused")
            .to_string()
    };
    let e = err("tenant_rate_limit = { jobs = 0, per = \"1s\" }\n");
    assert!(
        e.contains("queues.q.tenant_rate_limit.jobs: must be at least 1"),
        "{e}"
    );
    let e = err("tenant_rate_limit = { jobs = 5, per = \"0s\" }\n");
    assert!(
        e.contains("queues.q.tenant_rate_limit.per: must be at least 1ms"),
        "{e}"
    );
    let e = err("[queues.q.tenant_rate_limits]\nacme = { jobs = 0, per = \"1s\" }\n");
    assert!(
        e.contains("queues.q.tenant_rate_limits.acme.jobs: must be at least 1"),
        "{e}"
    );
    let e = err("[queues.q.tenant_rate_limits]\n\"\" = { jobs = 1, per = \"1s\" }\n");
    assert!(
        e.contains("queues.q.tenant_rate_limits.\"\": a tenant name must be 1-512 bytes"),
        "{e}"
    );
    let long = "x".repeat(513);
    let e = err(&format!(
        "[queues.q.tenant_rate_limits]\n{long} = {{ jobs = 1, per = \"1s\" }}\n"
    ));
    assert!(
        e.contains(&format!(
            "queues.q.tenant_rate_limits.{long}: a tenant name"
        )),
        "{e}"
    );
    let e = err("[queues.q.tenant_rate_limits]\nacme = { jobs = 1, per = \"1s\", burst = 2 }\n");
    assert!(e.contains("queues.q.tenant_rate_limits.acme"), "{e}");
    let ok = config::load_from_str(&format!(
        "{base}tenant_rate_limit = {{ jobs = 10, per = \"1s\" }}\n[queues.q.tenant_rate_limits]\n\"acme corp\" = {{ jobs = 50, per = \"1m\" }}\n"
    ))
    .unwrap();
    let t = ok.queues["q"].tenant_limits().unwrap();
    assert_eq!(t.default, Some((10, Duration::from_secs(1))));
    assert_eq!(
        t.overrides,
        [("acme corp".to_owned(), (50, Duration::from_secs(60)))]
    );
}

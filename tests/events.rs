//! Job lifecycle events: the opt-in, capped Redis Stream `<prefix>:{<queue>}:events`
//! written by the transition scripts, and `redq watch` following it.
//!
//! Events are switched on by the meta field `events` (the stream's cap), as a
//! daemon with `events = true` writes it; most tests set it directly.

mod common;

use std::time::Duration;

use common::embedded::launch;
use common::producers::fcall;
use common::server::RedisServer;
use common::snapshot::snapshot;
use common::store::{claim, done, failure, DEAD, KEEP_NONE, LEASE};
use common::wait::{wait_for, within, WAIT};
use common::watch::Watch;
use redq::config;
use redq::daemon::WorkerBuilder;
use redq::keys::{QueueKeys, PARTS};
use redq::store::FailResult;
use redq::NewJob;
use serde_json::json;

/// One stream entry: its id and its fields in order.
type Entry = (String, Vec<(String, String)>);

async fn stream(redis: &RedisServer, q: &QueueKeys) -> Vec<Entry> {
    let raw: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg(q.events())
        .arg("-")
        .arg("+")
        .query_async(&mut redis.con().await)
        .await
        .unwrap();
    raw.into_iter()
        .map(|(id, kv)| {
            let fields = kv.chunks(2).map(|c| (c[0].clone(), c[1].clone())).collect();
            (id, fields)
        })
        .collect()
}

fn field<'a>(e: &'a Entry, name: &str) -> Option<&'a str> {
    e.1.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// (event, id, attempt) of each entry.
fn summary(entries: &[Entry]) -> Vec<(String, String, String)> {
    entries
        .iter()
        .map(|e| {
            (
                field(e, "event").unwrap_or("").to_owned(),
                field(e, "id").unwrap_or("").to_owned(),
                field(e, "attempt").unwrap_or("").to_owned(),
            )
        })
        .collect()
}

fn triples(list: &[(&str, &str, u32)]) -> Vec<(String, String, String)> {
    list.iter()
        .map(|(e, id, a)| ((*e).to_owned(), (*id).to_owned(), a.to_string()))
        .collect()
}

fn enable(redis: &RedisServer, q: &QueueKeys, cap: u64) {
    redis
        .cli(&["HSET", q.meta(), "events", &cap.to_string()])
        .unwrap();
}

/// Runs every transition once over a queue: enqueue (client, FCALL, inbox,
/// scheduled), claim, complete, fail (retry and dead), dead retry, release,
/// reap (back to pending, then dead).
async fn lifecycle(redis: &RedisServer, client: &redq::Client, queue: &str) {
    let store = client.store();
    let q = store.queue(queue).unwrap();
    client
        .enqueue(queue, NewJob::new(&json!({"n": 1})).unwrap().id("a"))
        .await
        .unwrap();
    assert_eq!(fcall(redis, queue, r#"{"payload":2,"id":"b"}"#), "b");
    client
        .enqueue(
            queue,
            NewJob::new(&json!({"n": 4}))
                .unwrap()
                .id("d")
                .priority(5)
                .delay(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    // An id that exists is a no-op: no event.
    client
        .enqueue(queue, NewJob::new(&json!({"n": 1})).unwrap().id("a"))
        .await
        .unwrap();
    redis
        .cli(&["LPUSH", q.inbox(), r#"{"payload":3,"id":"c"}"#])
        .unwrap();

    let jobs = claim(store, queue, 10).await.jobs;
    let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c"]);
    let (a, b, c) = (&jobs[0], &jobs[1], &jobs[2]);
    assert_eq!(
        store.complete(&q, &[done(a)], KEEP_NONE).await.unwrap(),
        vec![true]
    );
    let f = [
        failure(b, Some(Duration::from_secs(60)), "boom"),
        failure(c, None, "gone for good"),
    ];
    assert_eq!(
        store.fail(&q, &f, DEAD).await.unwrap(),
        vec![FailResult::Retrying, FailResult::Dead]
    );
    assert_eq!(
        store.dead_retry(&q, &["c".to_owned()]).await.unwrap(),
        vec![redq::store::DeadRetry::Requeued]
    );
    let c = claim(store, queue, 1).await.jobs.remove(0);
    assert_eq!(
        store.release(&q, &[(&c.id, c.fence)]).await.unwrap(),
        vec![true]
    );
    let c = claim(store, queue, 1).await.jobs.remove(0);
    store
        .extend(&q, &[(&c.id, c.fence)], Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        store.reap(&q, 10, 5, DEAD, Duration::ZERO).await.unwrap(),
        (1, 0)
    );
    let c = claim(store, queue, 1).await.jobs.remove(0);
    assert_eq!(c.attempt, 2);
    store
        .extend(&q, &[(&c.id, c.fence)], Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        store.reap(&q, 10, 2, DEAD, Duration::ZERO).await.unwrap(),
        (0, 1)
    );
}

/// lib/keys.lua's `QUEUE_PARTS`, from which every script and the Function
/// derive a queue's keys, names the same parts in the same order as
/// `keys::PARTS`.
#[test]
fn the_lua_key_list_follows_keys_parts() {
    let keys_lua = include_str!("../src/lua/lib/keys.lua");
    let list = keys_lua
        .split("local QUEUE_PARTS = {")
        .nth(1)
        .and_then(|s| s.split('}').next())
        .unwrap();
    let parts: Vec<&str> = list
        .split(',')
        .map(|p| p.trim().trim_matches('\''))
        .filter(|p| !p.is_empty())
        .collect();
    assert_eq!(parts, PARTS, "lib/keys.lua QUEUE_PARTS");
    assert!(include_str!("../src/lua/functions.lua").contains("queue_keys({ base })"));
}

#[tokio::test]
async fn every_transition_emits_its_events_in_order() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    client.ensure_library().await.unwrap();
    let q = client.store().queue("ev").unwrap();
    enable(&redis, &q, 1000);
    lifecycle(&redis, &client, "ev").await;

    let entries = stream(&redis, &q).await;
    assert_eq!(
        summary(&entries),
        triples(&[
            ("enqueued", "a", 0),
            ("enqueued", "b", 0),
            ("enqueued", "d", 0),
            ("enqueued", "c", 0),
            ("started", "a", 1),
            ("started", "b", 1),
            ("started", "c", 1),
            ("succeeded", "a", 1),
            ("failed", "b", 1),
            ("dead", "c", 1),
            ("enqueued", "c", 0),
            ("started", "c", 1),
            ("released", "c", 1),
            ("started", "c", 1),
            ("lease_expired", "c", 1),
            ("started", "c", 2),
            ("dead", "c", 2),
        ])
    );
    let at = |i: usize, name: &str| field(&entries[i], name).map(str::to_owned);
    // How each job came in; the FCALL found the stream by the keys it derives.
    assert_eq!(at(0, "via").as_deref(), Some("enqueue"));
    assert_eq!(at(1, "via").as_deref(), Some("fcall"));
    assert_eq!(at(2, "priority").as_deref(), Some("5"));
    assert_eq!(at(3, "via").as_deref(), Some("inbox"));
    assert_eq!(at(10, "via").as_deref(), Some("dead_retry"));
    let time = |i: usize| -> i64 { entries[i].0.split('-').next().unwrap().parse().unwrap() };
    let due: i64 = at(2, "due_ms").unwrap().parse().unwrap();
    assert!(due >= time(2) + 3_599_000, "scheduled an hour ahead: {due}");
    assert!(at(0, "due_ms").is_none(), "due now: no due_ms");
    assert!(at(4, "lease_until_ms").unwrap().parse::<i64>().unwrap() >= time(4) + 29_000);
    assert!(at(7, "run_ms").unwrap().parse::<i64>().unwrap() >= 0);
    assert_eq!(at(8, "error").as_deref(), Some("boom"));
    let retry_at: i64 = at(8, "retry_at_ms").unwrap().parse().unwrap();
    assert!(retry_at >= time(8) + 59_000, "{retry_at}");
    assert_eq!(at(9, "error").as_deref(), Some("gone for good"));
    assert!(at(14, "error")
        .unwrap()
        .contains("lease expired on attempt 1"));
    assert!(at(16, "error")
        .unwrap()
        .contains("lease expired on attempt 2 of 2"));
    // Stream ids only grow: the stream is the order things happened in.
    let order = |s: &str| {
        let (ms, seq) = s.split_once('-').unwrap();
        (ms.parse::<u64>().unwrap(), seq.parse::<u64>().unwrap())
    };
    assert!(entries.windows(2).all(|w| order(&w[0].0) < order(&w[1].0)));
}

#[tokio::test]
async fn with_events_off_no_stream_is_written() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    client.ensure_library().await.unwrap();
    let q = client.store().queue("quiet").unwrap();
    lifecycle(&redis, &client, "quiet").await;
    assert_eq!(redis.cli(&["EXISTS", q.events()]).unwrap().trim(), "0");
    assert_eq!(
        redis.cli(&["HEXISTS", q.meta(), "events"]).unwrap().trim(),
        "0"
    );
    // A cap of 0 is off too.
    redis.cli(&["HSET", q.meta(), "events", "0"]).unwrap();
    fcall(&redis, "quiet", r#"{"payload":1}"#);
    assert_eq!(redis.cli(&["EXISTS", q.events()]).unwrap().trim(), "0");
}

#[tokio::test]
async fn the_stream_is_capped() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let q = client.store().queue("capped").unwrap();
    enable(&redis, &q, 10);
    for chunk in 0..5 {
        let jobs = (0..100)
            .map(|n| NewJob::new(&(chunk * 100 + n)).unwrap())
            .collect();
        client.enqueue_many("capped", jobs).await.unwrap();
    }
    let len: u64 = redis
        .cli(&["XLEN", q.events()])
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // MAXLEN ~ trims whole nodes (100 entries by default), never below the cap.
    assert!((10..=200).contains(&len), "XLEN {len}");
}

/// The OOM contract of tests/queue_core.rs with events on: enqueue is refused
/// whole, and the transitions that free memory still run and emit.
#[tokio::test]
async fn at_maxmemory_with_events_on_freeing_transitions_still_work_and_emit() {
    let redis =
        RedisServer::start_with(&["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"]);
    let client = redis.client().await;
    let store = client.store();
    let q = store.queue("q").unwrap();
    enable(&redis, &q, 100_000);
    let big = "x".repeat(100_000);
    let mut oom = None;
    for _ in 0..200 {
        if let Err(e) = client.enqueue("q", NewJob::new(&big).unwrap()).await {
            oom = Some(e.to_string());
            break;
        }
    }
    let oom = oom.expect("Redis never filled up");
    assert!(oom.contains("OOM"), "{oom}");
    let mut con = redis.con().await;
    let before = snapshot(&mut con, &q).await;
    assert!(!before.lists["events"].is_empty());
    assert!(client
        .enqueue("q", NewJob::new(&big).unwrap())
        .await
        .unwrap_err()
        .to_string()
        .contains("OOM"));
    assert_eq!(
        snapshot(&mut con, &q).await,
        before,
        "a refused enqueue writes nothing, not even an event"
    );
    let events_before = stream(&redis, &q).await.len();

    let got = within(10, store.claim(&q, 4, LEASE, 10, 10)).await.unwrap();
    assert_eq!(got.jobs.len(), 4);
    let [a, b, c, d] = &got.jobs[..] else {
        unreachable!()
    };
    assert_eq!(
        store.release(&q, &[(&a.id, a.fence)]).await.unwrap(),
        vec![true]
    );
    assert_eq!(
        store
            .fail(&q, &[failure(b, None, "x")], DEAD)
            .await
            .unwrap(),
        vec![FailResult::Dead]
    );
    store
        .extend(&q, &[(&c.id, c.fence)], Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        store.reap(&q, 10, 5, DEAD, Duration::ZERO).await.unwrap(),
        (1, 0)
    );
    assert_eq!(
        store.complete(&q, &[done(d)], KEEP_NONE).await.unwrap(),
        vec![true]
    );
    let entries = stream(&redis, &q).await;
    let new: Vec<(String, String, String)> = summary(&entries[events_before..]);
    assert_eq!(
        new,
        triples(&[
            ("started", &a.id, 1),
            ("started", &b.id, 1),
            ("started", &c.id, 1),
            ("started", &d.id, 1),
            ("released", &a.id, 1),
            ("dead", &b.id, 1),
            ("lease_expired", &c.id, 1),
            ("succeeded", &d.id, 1),
        ])
    );
}

// ---------------------------------------------------------------- redq watch

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redq_watch_sees_the_events_of_a_job_and_stops_on_sigint() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let store = client.store();
    let q = store.queue("w").unwrap();
    enable(&redis, &q, 1000);
    // An event from before the watch started is not shown.
    client
        .enqueue("w", NewJob::new(&0).unwrap().id("old"))
        .await
        .unwrap();
    let mut watch = Watch::start(&["--redis-url", &redis.url()], "w", &[]);

    client
        .enqueue("w", NewJob::new(&1).unwrap().id("job-1"))
        .await
        .unwrap();
    let jobs = claim(store, "w", 2).await.jobs;
    let job = jobs.iter().find(|j| j.id == "job-1").unwrap();
    store.complete(&q, &[done(job)], KEEP_NONE).await.unwrap();

    let seen = watch.stdout_until(|l| l.contains(" succeeded ") && l.contains(" job-1 "));
    let mine: Vec<&String> = seen.iter().filter(|l| l.contains(" job-1 ")).collect();
    assert_eq!(mine.len(), 3, "{seen:#?}");
    assert!(mine[0].contains(" enqueued ") && mine[0].contains("attempt=0 via=enqueue"));
    assert!(mine[1].contains(" started ") && mine[1].contains("attempt=1"));
    assert!(mine[2].contains(" succeeded ") && mine[2].contains("attempt=1 run_ms="));
    assert!(
        !seen
            .iter()
            .any(|l| l.contains(" enqueued ") && l.contains(" old ")),
        "{seen:#?}"
    );
    // Each line starts with the time of the event (RFC 3339, UTC).
    assert!(
        mine[0].split(' ').next().unwrap().ends_with('Z'),
        "{}",
        mine[0]
    );

    watch.signal(libc::SIGINT);
    assert!(watch.wait_exit().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redq_watch_json_says_when_events_are_off_keeps_watching_and_ends_on_a_closed_pipe() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    client.ensure_library().await.unwrap();
    let q = client.store().queue("j").unwrap();
    // Events off: said on stderr, and the watch goes on.
    let mut watch = Watch::spawn(
        &["--redis-url", &redis.url()],
        "j",
        &["--json", "--from-start"],
    );
    let said = watch.stderr_until(|l| l.contains("redq: watching"));
    assert!(
        said.iter()
            .any(|l| l.contains("events are off for queue j")),
        "{said:#?}"
    );
    assert!(watch.child.try_wait().unwrap().is_none(), "still watching");

    // A daemon switches events on: the watch shows them.
    enable(&redis, &q, 1000);
    assert_eq!(
        fcall(&redis, "j", r#"{"payload":1,"id":"f1","priority":2}"#),
        "f1"
    );
    let seen = watch.stdout_until(|l| l.contains("\"f1\""));
    let v: serde_json::Value = serde_json::from_str(seen.last().unwrap()).unwrap();
    assert_eq!(v["event"], "enqueued");
    assert_eq!(v["id"], "f1");
    assert_eq!(v["attempt"], 0);
    assert_eq!(v["priority"], 2);
    assert_eq!(v["via"], "fcall");
    assert!(v["time_ms"].as_i64().unwrap() > 1_600_000_000_000);
    assert!(v["stream_id"].as_str().unwrap().contains('-'));
    assert!(v["time"].as_str().unwrap().ends_with('Z'));

    // Standard output closes (a reader like `head` is gone): the next event ends it cleanly.
    drop(watch.stdout.take());
    let status = wait_for("redq watch to exit on a closed pipe", WAIT, || {
        fcall(&redis, "j", r#"{"payload":2}"#);
        watch.child.try_wait().unwrap()
    });
    assert!(status.success(), "{status:?}");
}

/// A daemon with `events = true` writes the cap to meta, and a job it runs
/// shows up in `redq watch --from-start`; with `events = false` it clears it.
/// (Multi-threaded: the test blocks reading the watch's output while the
/// daemon's tasks run.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_with_events_on_is_watched_end_to_end() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let q = client.store().queue("live").unwrap();
    let off = client.store().queue("off").unwrap();
    redis.cli(&["HSET", off.meta(), "events", "5"]).unwrap();
    let text = format!(
        "[redis]\nurl = \"{}\"\n\n[daemon]\nlisten = \"127.0.0.1:0\"\ninbox_poll = \"100ms\"\n\n\
         [queues.live]\nhandler = {{ builtin = \"noop\" }}\nevents = true\nevents_maxlen = 500\n\n\
         [queues.off]\nhandler = {{ builtin = \"noop\" }}\n",
        redis.url()
    );
    let cfg = config::load_from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let daemon = launch(WorkerBuilder::new(cfg)).await;
    assert_eq!(
        redis.cli(&["HGET", q.meta(), "events"]).unwrap().trim(),
        "500"
    );
    assert_eq!(
        redis
            .cli(&["HEXISTS", off.meta(), "events"])
            .unwrap()
            .trim(),
        "0"
    );

    let mut watch = Watch::start(&["--redis-url", &redis.url()], "live", &["--from-start"]);
    let id = client
        .enqueue("live", NewJob::new(&json!({"hello": "world"})).unwrap())
        .await
        .unwrap()
        .id;
    let seen = watch.stdout_until(|l| l.contains(" succeeded ") && l.contains(&id));
    let events: Vec<&str> = seen
        .iter()
        .filter(|l| l.contains(&id))
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(events, ["enqueued", "started", "succeeded"], "{seen:#?}");
    watch.signal(libc::SIGTERM);
    assert!(watch.wait_exit().success());

    daemon.stop().await;
    assert_eq!(redis.cli(&["EXISTS", off.events()]).unwrap().trim(), "0");
}

#[test]
fn events_settings_default_off_and_a_bad_cap_is_refused_naming_the_key() {
    let ok = config::load_from_str("[queues.x]\nhandler = { builtin = \"noop\" }\n").unwrap();
    assert!(!ok.queues["x"].events);
    assert_eq!(ok.queues["x"].events_maxlen, 10_000);
    let e = config::load_from_str(
        "[queues.x]\nhandler = { builtin = \"noop\" }\nevents = true\nevents_maxlen = 0\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("queues.x.events_maxlen"), "{e}");
}

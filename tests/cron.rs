//! `[[cron]]`: several daemons against one Redis enqueue each tick exactly
//! once; a hand-over (graceful or a crash) loses no tick; after downtime
//! longer than `daemon.cron_catch_up` only the latest missed tick runs; a new
//! entry does not backfill; bad schedules and time zones are refused with
//! their key.
//!
//! Only the daemon holding the cron leader lease evaluates the entries; the
//! compare-and-set in Redis keeps ticks exactly-once whoever offers them. When
//! the leader shuts down or dies, another daemon takes the duty over and runs
//! the ticks missed meanwhile.
//!
//! One-second schedules and a short leader lease keep the waits short. Tests
//! poll Redis and the daemons' `/metrics` under a deadline (no signal says
//! "a tick was enqueued" or "this daemon leads"); the only waiting on the
//! clock is for ticks to pass.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::embedded::{launch, stop_all, Crashable, Running};
use common::http::{get, sample};
use common::server::{redis_ms, RedisServer};
use common::wait::{eventually, secs, TICK};
use redq::config::Config;
use redq::daemon::WorkerBuilder;
use redq::keys::QueueKeys;
use redq::scripts::SCRIPTS;
use redq::{JobContext, Outcome};

fn config(redis: &RedisServer, cron: &str) -> Config {
    // Not validated here: `gone` has a library handler, which the builder checks.
    redq::config::read_str(&format!(
        r#"
[redis]
url = "{}"
[daemon]
listen = "127.0.0.1:0"
shutdown_timeout = "5s"
leader_ttl = "1500ms"
[queues.kept]
keep_completed = 100000
handler = {{ builtin = "noop" }}
[queues.gone]
keep_completed = 0
{cron}
"#,
        redis.url()
    ))
    .unwrap()
}

type Runs = Arc<Mutex<Vec<String>>>;

/// A daemon whose library handler on `gone` records the ids it runs.
fn daemon(config: Config, runs: &Runs) -> WorkerBuilder {
    let runs = runs.clone();
    WorkerBuilder::new(config).handler("gone", move |ctx: JobContext| {
        let runs = runs.clone();
        async move {
            runs.lock().unwrap().push(ctx.id);
            Outcome::Done { result: None }
        }
    })
}

/// Starts [`daemon`].
async fn start(config: Config, runs: &Runs) -> Running {
    launch(daemon(config, runs)).await
}

/// Whether the daemon says it holds the cron lease (`redq_leader{duty="cron"}`).
async fn leads(d: &Running) -> bool {
    let (code, body) = get(&d.url("/metrics")).await;
    assert_eq!(code, 200, "{body}");
    sample(&body, r#"redq_leader{duty="cron"}"#) == Some(1.0)
}

/// Waits (bounded) until exactly one of `daemons` leads cron; returns its index.
async fn the_leader(daemons: &[Running]) -> usize {
    the_leader_of(&daemons.iter().collect::<Vec<_>>()).await
}

async fn the_leader_of(daemons: &[&Running]) -> usize {
    eventually("exactly one daemon to lead cron", secs(10), || async {
        let mut leading = Vec::new();
        for (i, d) in daemons.iter().enumerate() {
            if leads(d).await {
                leading.push(i);
            }
        }
        match leading[..] {
            [one] => Ok(one),
            _ => Err(format!("leading: {leading:?}")),
        }
    })
    .await
}

/// The ids of a queue's `enqueued` events, in order, repeats included (the
/// queue needs `events = true`): a tick enqueued twice shows twice, even when
/// its job completed and was deleted in between.
async fn enqueued(con: &mut redis::aio::MultiplexedConnection, queue: &str) -> Vec<String> {
    let keys = QueueKeys::new("redq", queue).unwrap();
    let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg(keys.events())
        .arg("-")
        .arg("+")
        .query_async(con)
        .await
        .unwrap();
    entries
        .into_iter()
        .filter_map(|(_, kv)| {
            let field = |name: &str| {
                kv.chunks(2)
                    .find(|c| c[0] == name)
                    .map(|c| c.get(1).cloned().unwrap_or_default())
            };
            (field("event").as_deref() == Some("enqueued"))
                .then(|| field("id"))
                .flatten()
        })
        .collect()
}

/// The ticks of `entry` among `ids` (all of them of that entry or not),
/// asserting that none repeats.
fn ticks_once(ids: &[String], entry: &str) -> Vec<i64> {
    let prefix = format!("cron:{entry}:");
    let mine: Vec<String> = ids
        .iter()
        .filter(|id| id.starts_with(&prefix))
        .cloned()
        .collect();
    let out = ticks(&mine, entry);
    let unique: BTreeSet<i64> = out.iter().copied().collect();
    assert_eq!(
        unique.len(),
        out.len(),
        "{entry}: a tick was enqueued twice: {out:?}"
    );
    out
}

async fn job_ids(con: &mut redis::aio::MultiplexedConnection, queue: &str) -> Vec<String> {
    let keys = QueueKeys::new("redq", queue).unwrap();
    redis::cmd("HKEYS")
        .arg(keys.jobs())
        .query_async(con)
        .await
        .unwrap()
}

/// The ticks (Unix ms) in ids `cron:<entry>:<tick>`; panics on any other id.
fn ticks(ids: &[String], entry: &str) -> Vec<i64> {
    let prefix = format!("cron:{entry}:");
    let mut out: Vec<i64> = ids
        .iter()
        .map(|id| {
            id.strip_prefix(&prefix)
                .and_then(|t| t.parse().ok())
                .unwrap_or_else(|| panic!("unexpected job id {id:?}"))
        })
        .collect();
    out.sort();
    out
}

fn assert_consecutive_seconds(ticks: &[i64], what: &str) {
    for pair in ticks.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            1000,
            "{what}: a tick is missing: {ticks:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_daemons_enqueue_each_tick_once() {
    let redis = RedisServer::start();
    let mut con = redis.con().await;
    let cron = r#"
[[cron]]
name = "kept-tick"
schedule = "*/1 * * * * *"
queue = "kept"
payload = { n = 1 }
[[cron]]
schedule = "* * * * * *"
queue = "gone"
priority = 5
"#;
    let runs: Runs = Arc::default();
    let before = redis_ms(&mut con).await;
    let mut daemons = Vec::new();
    for _ in 0..3 {
        daemons.push(start(config(&redis, cron), &runs).await);
    }
    let started = redis_ms(&mut con).await;
    // Wait for at least five ticks of each entry, as seen in Redis and by the handler.
    eventually("five ticks of each entry", secs(30), || {
        let mut con = con.clone();
        let runs = runs.clone();
        async move {
            let kept = job_ids(&mut con, "kept").await.len();
            let ran = runs.lock().unwrap().len();
            kept >= 5 && ran >= 5
        }
    })
    .await;
    // One daemon runs the entries; the others wait for its lease.
    the_leader(&daemons).await;
    let stopped = redis_ms(&mut con).await;
    stop_all(daemons).await;

    // Ticks whole seconds after every daemon ran, and at most those after the first started.
    let at_least = (stopped / 1000 - started / 1000 - 1) as usize;
    let at_most = (stopped / 1000 - before / 1000 + 1) as usize;

    let kept = ticks(&job_ids(&mut con, "kept").await, "kept-tick");
    assert_consecutive_seconds(&kept, "kept");
    assert!(
        (at_least..=at_most).contains(&kept.len()),
        "{} jobs for {at_least}..={at_most} ticks: {kept:?}",
        kept.len()
    );
    // The record of the last tick follows the jobs.
    let last: i64 = redis::cmd("HGET")
        .arg(QueueKeys::new("redq", "kept").unwrap().cron())
        .arg("kept-tick")
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(kept.last().is_some_and(|&t| t <= last && last - t <= 1000));

    // `gone` keeps no completed job: the handler's record shows each tick ran once.
    let ran = runs.lock().unwrap().clone();
    let unique: BTreeSet<&String> = ran.iter().collect();
    assert_eq!(unique.len(), ran.len(), "a tick ran twice: {ran:?}");
    let key = ran[0].split(':').nth(1).unwrap().to_owned();
    assert!(
        key.starts_with('h'),
        "an unnamed entry's key is a hash: {key}"
    );
    let gone = ticks(&ran, &key);
    assert_consecutive_seconds(&gone, "gone");
    assert!(
        (at_least..=at_most).contains(&gone.len()),
        "{} runs for {at_least}..={at_most} ticks: {gone:?}",
        gone.len()
    );
    assert!(job_ids(&mut con, "gone").await.is_empty());

    // A late daemon offering a tick whose job ran and was deleted adds
    // nothing (through the same Lua as an EVAL script, as a Redis < 7 runs it).
    let q = QueueKeys::new("redq", "gone").unwrap();
    let mut inv = SCRIPTS.cron_enqueue.script().prepare_invoke();
    inv.key(q.base());
    inv.key(q.cron());
    let old = gone[0];
    inv.arg(&key)
        .arg(old)
        .arg(format!("cron:{key}:{old}"))
        .arg(r#"{"payload":{}}"#)
        .arg(0);
    let (status, _): (String, i64) = inv.invoke_async(&mut con).await.unwrap();
    assert_eq!(status, "seen");
    assert!(job_ids(&mut con, "gone").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cron_moves_to_another_daemon_when_the_leader_shuts_down() {
    let redis = RedisServer::start();
    let mut con = redis.con().await;
    let cron = r#"
[[cron]]
name = "beat"
schedule = "* * * * * *"
queue = "kept"
"#;
    let runs: Runs = Arc::default();
    let mut daemons = Vec::new();
    for _ in 0..3 {
        daemons.push(start(config(&redis, cron), &runs).await);
    }
    let count = {
        let con = con.clone();
        move || {
            let mut con = con.clone();
            async move { job_ids(&mut con, "kept").await.len() }
        }
    };
    // Twice: the leader shuts down, another daemon takes over and ticks go on.
    for _ in 0..2 {
        eventually("two ticks", secs(10), || async { count().await >= 2 }).await;
        let old = daemons.remove(the_leader(&daemons).await);
        old.stop().await;
        let before = count().await;
        let next = the_leader(&daemons).await;
        eventually("two ticks after the hand-over", secs(10), || async {
            count().await >= before + 2
        })
        .await;
        assert!(leads(&daemons[next]).await, "the new leader still leads");
    }
    stop_all(daemons).await;
    // Each tick once, none skipped across both hand-overs.
    let beat = ticks(&job_ids(&mut con, "kept").await, "beat");
    assert!(beat.len() >= 6, "{beat:?}");
    assert_consecutive_seconds(&beat, "beat");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crashed_leader_loses_no_tick() {
    let redis = RedisServer::start();
    let mut con = redis.con().await;
    // `beat` deletes completed jobs and records every enqueue as an event.
    let cron = r#"
[queues.beat]
handler = { builtin = "noop" }
events = true
[[cron]]
name = "pulse"
schedule = "* * * * * *"
queue = "beat"
"#;
    let mut config = config(&redis, cron);
    // A crashed leader holds the duty for up to the TTL: several ticks.
    config.daemon.leader_ttl = Duration::from_secs(3);
    let runs: Runs = Arc::default();
    let mut daemons = Vec::new();
    for _ in 0..3 {
        daemons.push(Crashable::launch(daemon(config.clone(), &runs)).await);
    }
    let count = {
        let con = con.clone();
        move || {
            let mut con = con.clone();
            async move { enqueued(&mut con, "beat").await.len() }
        }
    };
    eventually("two ticks", secs(15), || async { count().await >= 2 }).await;
    let running: Vec<&Running> = daemons.iter().map(|p| &p.daemon).collect();
    let old = the_leader_of(&running).await;
    let crashed_at = redis_ms(&mut con).await;
    daemons.remove(old).crash();

    // Another daemon leads once the lock expires and ticks go on.
    let running: Vec<&Running> = daemons.iter().map(|p| &p.daemon).collect();
    let next = the_leader_of(&running).await;
    let before = count().await;
    eventually("two ticks after the take-over", secs(15), || async {
        count().await >= before + 2
    })
    .await;
    let took_over_at = redis_ms(&mut con).await;
    assert!(leads(running[next]).await, "the new leader still leads");
    for d in daemons {
        d.stop().await;
    }

    let pulse = ticks_once(&enqueued(&mut con, "beat").await, "pulse");
    assert_consecutive_seconds(&pulse, "pulse");
    // The ticks span the hand-over, which took longer than a tick.
    assert!(
        pulse.first().is_some_and(|&t| t < crashed_at)
            && pulse.last().is_some_and(|&t| t > crashed_at + 2000),
        "crashed at {crashed_at}, took over by {took_over_at}: {pulse:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn downtime_longer_than_the_catch_up_window_runs_only_the_latest_tick() {
    let redis = RedisServer::start();
    let mut con = redis.con().await;
    let cron = r#"
[queues.beat]
handler = { builtin = "noop" }
events = true
[[cron]]
name = "near"
schedule = "* * * * * *"
queue = "beat"
[[cron]]
name = "far"
schedule = "* * * * * *"
queue = "beat"
"#;
    let mut config = config(&redis, cron);
    config.daemon.cron_catch_up = Some(Duration::from_secs(10));
    config
        .validate_with(&["gone".to_owned()].into())
        .expect("the window is at least 2 × leader_ttl");
    // Daemons stopped 3s ago for `near` (within the window: every tick runs)
    // and a minute ago for `far` (downtime: only the latest runs).
    let now = redis_ms(&mut con).await / 1000 * 1000;
    let record = QueueKeys::new("redq", "beat").unwrap().cron();
    let _: () = redis::cmd("HSET")
        .arg(&record)
        .arg("near")
        .arg(now - 3000)
        .arg("far")
        .arg(now - 60_000)
        .query_async(&mut con)
        .await
        .unwrap();

    let runs: Runs = Arc::default();
    let mut daemons = Vec::new();
    for _ in 0..2 {
        daemons.push(start(config.clone(), &runs).await);
    }
    let started = redis_ms(&mut con).await;
    eventually("three ticks of `far`", secs(15), || {
        let mut con = con.clone();
        async move {
            let ids = enqueued(&mut con, "beat").await;
            ids.iter().filter(|i| i.starts_with("cron:far:")).count() >= 3
        }
    })
    .await;
    stop_all(daemons).await;

    let ids = enqueued(&mut con, "beat").await;
    let near = ticks_once(&ids, "near");
    assert_consecutive_seconds(&near, "near");
    assert_eq!(
        near.first(),
        Some(&(now - 2000)),
        "near catches up: {near:?}"
    );
    let far = ticks_once(&ids, "far");
    assert_consecutive_seconds(&far, "far");
    // The first tick run is the latest at the leader's first round; none of
    // the minute before the daemons started.
    let started_tick = started / 1000 * 1000;
    assert!(
        far.first()
            .is_some_and(|&t| t >= now && t <= started_tick + 2000),
        "far skips the downtime and runs its latest tick (daemons started at {started}): {far:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_downtime_only_the_latest_tick_runs_and_new_entries_do_not_backfill() {
    let redis = RedisServer::start();
    let mut con = redis.con().await;
    // Every 1 January at 00:00:00 UTC: always in the past, never during the test.
    let cron = r#"
[[cron]]
name = "yearly"
schedule = "0 0 0 1 1 *"
queue = "kept"
[[cron]]
name = "fresh"
schedule = "0 0 0 1 1 *"
queue = "kept"
"#;
    let now = redis_ms(&mut con).await;
    let now = chrono::DateTime::from_timestamp_millis(now).unwrap();
    use chrono::Datelike;
    let this_year = chrono::NaiveDate::from_ymd_opt(now.year(), 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_millis();
    let record = QueueKeys::new("redq", "kept").unwrap().cron();
    // Daemons were down since 1 January 2000: many ticks were missed.
    let long_ago = 946_684_800_000_i64;
    let _: () = redis::cmd("HSET")
        .arg(&record)
        .arg("yearly")
        .arg(long_ago)
        .query_async(&mut con)
        .await
        .unwrap();

    let runs: Runs = Arc::default();
    let mut daemons = Vec::new();
    for _ in 0..2 {
        daemons.push(start(config(&redis, cron), &runs).await);
    }
    let expected = format!("cron:yearly:{this_year}");
    eventually("this year's tick and a record of `fresh`", secs(20), || {
        let (mut con, record, expected) = (con.clone(), record.clone(), expected.clone());
        async move {
            let fresh: Option<i64> = redis::cmd("HGET")
                .arg(&record)
                .arg("fresh")
                .query_async(&mut con)
                .await
                .unwrap();
            job_ids(&mut con, "kept").await.contains(&expected) && fresh.is_some()
        }
    })
    .await;
    // Let both daemons run a few more rounds (each checks at least once a
    // second); the state must stay exactly this (a bounded look at what must
    // not change, not a wait).
    let until = tokio::time::Instant::now() + Duration::from_millis(2500);
    while tokio::time::Instant::now() < until {
        assert_eq!(job_ids(&mut con, "kept").await, vec![expected.clone()]);
        tokio::time::sleep(TICK).await;
    }
    stop_all(daemons).await;
    let recorded: Vec<(String, i64)> = redis::cmd("HGETALL")
        .arg(&record)
        .query_async(&mut con)
        .await
        .unwrap();
    let mut recorded = recorded;
    recorded.sort();
    assert_eq!(
        recorded,
        vec![("fresh".into(), this_year), ("yearly".into(), this_year)],
        "the new entry starts from its latest tick without running it"
    );
}

#[test]
fn bad_schedules_and_time_zones_are_refused_with_their_key() {
    let e = redq::config::load_from_str(
        r#"
[queues.q]
handler = { builtin = "noop" }
[[cron]]
schedule = "61 * * * * *"
queue = "q"
[[cron]]
schedule = "* * * * *"
queue = "q"
timezone = "Mars/Olympus_Mons"
[[cron]]
schedule = "0 0 30 2 *"
queue = "q"
name = "bad name"
priority = 5000
"#,
    )
    .unwrap_err()
    .to_string();
    for expected in [
        "cron[0].schedule: \"61 * * * * *\" is not a cron expression",
        "cron[1].timezone: \"Mars/Olympus_Mons\" is not an IANA time zone",
        "cron[2].schedule: \"0 0 30 2 *\" never comes due",
        "cron[2].name: \"bad name\" must be",
        "cron[2].priority: 5000 is out of range",
    ] {
        assert!(
            e.lines().any(|l| l.starts_with(expected)),
            "no line starts with {expected:?} in:\n{e}"
        );
    }

    // Two entries may not share a name; a payload must pass the job rules.
    let config = redq::config::load_from_str(
        r#"
[daemon]
max_payload_bytes = 100
[queues.q]
handler = { builtin = "noop" }
[[cron]]
name = "a"
schedule = "* * * * *"
queue = "q"
[[cron]]
name = "a"
schedule = "0 * * * *"
queue = "q"
payload = { text = "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789" }
"#,
    )
    .unwrap();
    let e = redq::daemon::check_runnable(&config)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cron[1].name: \"a\" is also the name of cron[0]"),
        "{e}"
    );
    assert!(e.contains("cron[1].payload: "), "{e}");
}

//! Heartbeats: every [`EVERY`] a daemon records itself in Redis, so
//! `redq health` can tell whether any daemon is alive, and publishes how many
//! jobs each of its queues finished since its last beat, for the per-minute
//! rates `redq stats` shows.
//!
//! Keys (built in [`crate::keys`]), none of which needs SCAN or KEYS to find
//! and all of which expire by themselves:
//! - `<prefix>:daemons`: ZSET, member = daemon id, score = Redis ms of its
//!   last beat; entries older than [`KEEP`] are trimmed on every beat, and
//!   the set expires [`KEEP`] after the last beat of any daemon.
//! - `<prefix>:daemon:<id>`: HASH (hostname, pid, version, started_at_ms,
//!   beat_ms, queues, running), expiring [`KEEP`] after the last beat.
//! - `<prefix>:{<queue>}:rate:<minute>`: HASH (`succeeded`, `failed`) of jobs
//!   finished in that Unix minute, summed over daemons; expires after
//!   [`RATE_TTL`].
//!
//! A daemon id is `hostname:pid:random`. On a clean stop the daemon removes
//! its entry; after a crash the entry ages out.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::supervisor::Shared;
use crate::error::Result;
use crate::keys;
use crate::observe::JobOutcome;
use crate::store::Store;

/// The heartbeat loop's name in `/healthz`.
pub const LOOP: &str = "heartbeat";
/// How often a daemon beats.
pub const EVERY: Duration = Duration::from_secs(5);
/// How long a daemon's entry outlives its last beat.
pub const KEEP: Duration = Duration::from_secs(60);
/// How long a per-minute rate bucket is kept.
pub const RATE_TTL: Duration = Duration::from_secs(180);

/// One daemon as its heartbeat describes it.
#[derive(Debug, Clone, Serialize)]
pub struct DaemonInfo {
    pub id: String,
    /// Time since its last beat, on Redis's clock.
    pub age_ms: i64,
    pub hostname: Option<String>,
    pub pid: Option<u32>,
    pub version: Option<String>,
    pub started_at_ms: Option<i64>,
    pub queues: Vec<String>,
    /// Jobs running in it at its last beat.
    pub running: Option<i64>,
}

/// `hostname:pid:random`, with characters outside `A-Z a-z 0-9 _ . -` in the
/// host name replaced by `_`.
pub fn daemon_id() -> String {
    let host: String = hostname()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    let host = if host.is_empty() {
        "unknown".into()
    } else {
        host
    };
    format!(
        "{host}:{}:{:06x}",
        std::process::id(),
        rand::random::<u32>() & 0xff_ffff
    )
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that much.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Redis's clock, in ms.
pub(crate) async fn redis_now_ms(store: &Store) -> Result<i64> {
    let (secs, micros): (i64, i64) = redis::cmd("TIME")
        .query_async(&mut store.connection())
        .await?;
    Ok(secs * 1000 + micros / 1000)
}

/// Per-queue (succeeded, failed) totals already published.
/// Per queue: succeeded, failed, and run-time bucket counts already published.
type Published = HashMap<Arc<str>, (u64, u64, Vec<u64>)>;

/// The heartbeat loop: beats now and every [`EVERY`] until `stop`, then
/// publishes the last counts and removes the daemon's entry.
pub(crate) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let id = shared.id.clone();
    let started = unix_ms();
    let mut published = Published::new();
    tracing::info!(daemon = %id, "heartbeat started");
    loop {
        if let Err(e) = beat(&shared, &id, started, &mut published).await {
            tracing::debug!(error = %e, "heartbeat failed");
        }
        shared.health.beat(LOOP);
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
    let last = async {
        let now = redis_now_ms(&shared.store).await?;
        publish_rates(&shared, now, &mut published).await?;
        remove(&shared.store, &id).await
    };
    match tokio::time::timeout(Duration::from_secs(3), last).await {
        Ok(Ok(())) => tracing::debug!(daemon = %id, "heartbeat entry removed"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not remove the heartbeat entry; it expires by itself")
        }
        Err(_) => tracing::warn!("removing the heartbeat entry timed out; it expires by itself"),
    }
}

async fn beat(shared: &Shared, id: &str, started: i64, published: &mut Published) -> Result<()> {
    let store = &shared.store;
    let now = redis_now_ms(store).await?;
    let zset = keys::daemons(store.prefix());
    let hash = keys::daemon(store.prefix(), id);
    let queues: Vec<String> = shared.queues().iter().map(|q| q.name.to_string()).collect();
    let running = shared.counters.running.load(Ordering::Relaxed);
    let fields: [(&str, String); 7] = [
        ("hostname", hostname()),
        ("pid", std::process::id().to_string()),
        ("version", env!("CARGO_PKG_VERSION").to_owned()),
        ("started_at_ms", started.to_string()),
        ("beat_ms", now.to_string()),
        ("queues", queues.join(",")),
        ("running", running.to_string()),
    ];
    let mut pipe = redis::pipe();
    pipe.cmd("ZADD")
        .arg(&zset)
        .arg(now)
        .arg(id)
        .ignore()
        .cmd("ZREMRANGEBYSCORE")
        .arg(&zset)
        .arg("-inf")
        .arg(format!("({}", now - ms(KEEP)))
        .ignore()
        .cmd("PEXPIRE")
        .arg(&zset)
        .arg(ms(KEEP))
        .ignore()
        .cmd("HSET")
        .arg(&hash)
        .arg(&fields[..])
        .ignore()
        .cmd("PEXPIRE")
        .arg(&hash)
        .arg(ms(KEEP))
        .ignore();
    pipe.query_async::<()>(&mut store.connection()).await?;
    publish_rates(shared, now, published).await
}

/// Adds what each queue finished since the last publication to the bucket of
/// the current minute. O(1) per queue with something to add.
async fn publish_rates(shared: &Shared, now_ms: i64, published: &mut Published) -> Result<()> {
    let minute = now_ms / 60_000;
    let m = &shared.metrics;
    let mut pipe = redis::pipe();
    let mut next = Vec::new();
    for q in shared.queues() {
        let ok = m.jobs_total(&q.name, JobOutcome::Succeeded);
        let failed =
            m.jobs_total(&q.name, JobOutcome::Failed) + m.jobs_total(&q.name, JobOutcome::Dead);
        let runs = m.run_time_buckets(&q.name).unwrap_or_default();
        let (ok0, failed0, runs0) = published.get(&q.name).cloned().unwrap_or_default();
        let (d_ok, d_failed) = (ok.saturating_sub(ok0), failed.saturating_sub(failed0));
        let d_runs: Vec<u64> = runs
            .iter()
            .enumerate()
            .map(|(i, n)| n.saturating_sub(runs0.get(i).copied().unwrap_or(0)))
            .collect();
        if d_ok == 0 && d_failed == 0 && d_runs.iter().all(|n| *n == 0) {
            continue;
        }
        let key = q.keys.rate(minute);
        // Run times by histogram bucket (fields r0, r1, ...), for the
        // percentiles `redq stats` shows.
        for (i, n) in d_runs.iter().enumerate().filter(|(_, n)| **n > 0) {
            pipe.cmd("HINCRBY")
                .arg(&key)
                .arg(format!("r{i}"))
                .arg(*n)
                .ignore();
        }
        pipe.cmd("HINCRBY")
            .arg(&key)
            .arg("succeeded")
            .arg(d_ok)
            .ignore()
            .cmd("HINCRBY")
            .arg(&key)
            .arg("failed")
            .arg(d_failed)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(ms(RATE_TTL))
            .ignore();
        next.push((q.name.clone(), (ok, failed, runs)));
    }
    if next.is_empty() {
        return Ok(());
    }
    pipe.query_async::<()>(&mut shared.store.connection())
        .await?;
    published.extend(next);
    Ok(())
}

async fn remove(store: &Store, id: &str) -> Result<()> {
    redis::pipe()
        .cmd("ZREM")
        .arg(keys::daemons(store.prefix()))
        .arg(id)
        .ignore()
        .cmd("DEL")
        .arg(keys::daemon(store.prefix(), id))
        .ignore()
        .query_async::<()>(&mut store.connection())
        .await?;
    Ok(())
}

/// Every daemon that beat within [`KEEP`], most recent beat first, with the
/// time since its beat on Redis's clock. One round trip for the set, one for
/// the descriptions.
pub async fn list(store: &Store) -> Result<Vec<DaemonInfo>> {
    let mut con = store.connection();
    let ((secs, micros), entries): ((i64, i64), Vec<(String, f64)>) = redis::pipe()
        .cmd("TIME")
        .cmd("ZRANGE")
        .arg(keys::daemons(store.prefix()))
        .arg(0)
        .arg(-1)
        .arg("REV")
        .arg("WITHSCORES")
        .query_async(&mut con)
        .await?;
    let now = secs * 1000 + micros / 1000;
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for (id, _) in &entries {
        pipe.cmd("HGETALL").arg(keys::daemon(store.prefix(), id));
    }
    let hashes: Vec<HashMap<String, String>> = pipe.query_async(&mut con).await?;
    let mut out = Vec::with_capacity(entries.len());
    for ((id, beat), h) in entries.into_iter().zip(hashes) {
        let age_ms = (now - beat as i64).max(0);
        if age_ms > ms(KEEP) {
            continue;
        }
        let num = |k: &str| h.get(k).and_then(|v| v.parse::<i64>().ok());
        out.push(DaemonInfo {
            id,
            age_ms,
            hostname: h.get("hostname").cloned(),
            pid: num("pid").and_then(|p| u32::try_from(p).ok()),
            version: h.get("version").cloned(),
            started_at_ms: num("started_at_ms"),
            queues: h
                .get("queues")
                .map(|q| {
                    q.split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            running: num("running"),
        });
    }
    Ok(out)
}

//! Heartbeats: every [`EVERY`] a daemon records itself in Redis, so
//! `redq health` can tell whether any daemon is alive, and publishes how many
//! jobs each of its queues finished since its last beat, for the per-minute
//! rates `redq stats` shows. What is written, and where, is
//! [`crate::store::heartbeat`]'s.
//!
//! A daemon id is `hostname:pid:random`. On a clean stop the daemon removes
//! its entry; after a crash the entry ages out.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::error::Result;
use crate::observe::JobOutcome;
use crate::store::{Beat, RateDelta};

/// The heartbeat loop's name in `/healthz`.
pub const LOOP: &str = "heartbeat";
/// How often a daemon beats.
pub const EVERY: Duration = Duration::from_secs(5);
/// How long a daemon's entry outlives its last beat.
pub const KEEP: Duration = Duration::from_secs(60);
/// How long a per-minute rate bucket is kept.
pub const RATE_TTL: Duration = Duration::from_secs(180);

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

/// Per-queue (succeeded, failed) totals already published.
/// Per queue: succeeded, failed, and run-time bucket counts already published.
/// Per queue: succeeded, failed, run-time and queue-wait buckets, as last published.
type Published = HashMap<Arc<str>, (u64, u64, Vec<u64>, Vec<u64>)>;

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
        let now = shared.store.time_ms().await?;
        publish_rates(&shared, now, &mut published).await?;
        shared.store.remove_daemon(&id).await
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
    let queues: Vec<String> = shared.queues().iter().map(|q| q.name.to_string()).collect();
    let now = shared
        .store
        .beat(&Beat {
            id,
            hostname: &hostname(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION"),
            started_at_ms: started,
            queues: &queues,
            running: shared.counters.running.load(Ordering::Relaxed),
            keep: KEEP,
        })
        .await?;
    publish_rates(shared, now, published).await
}

/// Adds what each queue finished since the last publication to the bucket of
/// the current minute. O(1) per queue with something to add.
async fn publish_rates(shared: &Shared, now_ms: i64, published: &mut Published) -> Result<()> {
    let m = &shared.metrics;
    let queues = shared.queues();
    let mut next = Vec::new();
    let mut deltas = Vec::new();
    for q in &queues {
        let ok = m.jobs_total(&q.name, JobOutcome::Succeeded);
        let failed =
            m.jobs_total(&q.name, JobOutcome::Failed) + m.jobs_total(&q.name, JobOutcome::Dead);
        let runs = m.run_time_buckets(&q.name).unwrap_or_default();
        let waits = m.wait_time_buckets(&q.name).unwrap_or_default();
        let (ok0, failed0, runs0, waits0) = published.get(&q.name).cloned().unwrap_or_default();
        let (d_ok, d_failed) = (ok.saturating_sub(ok0), failed.saturating_sub(failed0));
        let since = |now: &[u64], then: &[u64]| -> Vec<u64> {
            now.iter()
                .enumerate()
                .map(|(i, n)| n.saturating_sub(then.get(i).copied().unwrap_or(0)))
                .collect()
        };
        let (d_runs, d_waits) = (since(&runs, &runs0), since(&waits, &waits0));
        if d_ok == 0 && d_failed == 0 && d_runs.iter().chain(&d_waits).all(|n| *n == 0) {
            continue;
        }
        deltas.push((q, d_ok, d_failed, d_runs, d_waits));
        next.push((q.name.clone(), (ok, failed, runs, waits)));
    }
    let deltas: Vec<RateDelta> = deltas
        .iter()
        .map(|(q, ok, failed, runs, waits)| RateDelta {
            keys: &q.keys,
            succeeded: *ok,
            failed: *failed,
            runs,
            waits,
        })
        .collect();
    shared.store.add_rates(now_ms, &deltas, RATE_TTL).await?;
    published.extend(next);
    Ok(())
}

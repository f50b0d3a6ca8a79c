//! Queue-level reads: depths (`redq stats`, the daemon's gauges), the
//! per-minute rates, the age of each queue's next job, and the registry of
//! queue names.

use serde::Serialize;

use super::super::heartbeat::{
    rate_bucket_field, wait_bucket_field, RATE_FAILED, RATE_SUCCEEDED, TOTAL_CANCELLED,
    TOTAL_FAILED, TOTAL_SUCCEEDED,
};
use super::super::{split_time, with_time, Store};
use crate::error::{Error, Result};
use crate::job::StoredJob;
use crate::keys::{self, QueueKeys};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct QueueStats {
    pub queue: String,
    /// Ready to run: in `pending`, or parked behind a full group or a
    /// tenant's rate limit.
    pub pending: u64,
    pub scheduled: u64,
    pub active: u64,
    pub dead: u64,
    /// Completed jobs kept by retention (`keep_completed`; none by default).
    pub succeeded: u64,
    /// Jobs that ever succeeded, counted by the daemons (published with
    /// their heartbeats, so up to 5 s behind), whatever retention deleted.
    pub succeeded_total: u64,
    /// Attempts that ever failed (retried or dead), counted the same way.
    pub failed_total: u64,
    /// Jobs ever cancelled by hand (pending, scheduled or running), over
    /// every daemon and client.
    pub cancelled_total: u64,
    /// Documents in the inbox not yet turned into jobs.
    pub inbox: u64,
    pub rejected: u64,
    pub paused: bool,
    /// Rates over the last minute, when read (see [`last_minute`]).
    pub last_minute: Option<Rates>,
}

/// Jobs a queue finished per second over the last minute, across daemons.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Default)]
pub struct Rates {
    pub succeeded_per_sec: f64,
    /// Attempts that failed (retried or dead).
    pub failed_per_sec: f64,
    /// Run-time percentiles over the current and previous minute, in ms: the
    /// upper bound of the histogram bucket holding the percentile (None when
    /// nothing ran).
    pub run_p50_ms: Option<f64>,
    pub run_p99_ms: Option<f64>,
    /// Queue-wait percentiles (enqueue, or due time, to start), the same way.
    pub wait_p50_ms: Option<f64>,
    pub wait_p99_ms: Option<f64>,
}

/// The upper bound (ms) of the bucket where the cumulative count reaches `q`.
fn bucket_percentile(counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let want = (total as f64 * q).ceil().max(1.0) as u64;
    let bounds = crate::observe::Metrics::run_bucket_bounds();
    let mut seen = 0;
    for (i, n) in counts.iter().enumerate() {
        seen += n;
        if seen >= want {
            return Some(bounds.get(i).map_or(f64::INFINITY, |b| b * 1000.0));
        }
    }
    None
}

/// A job in the dead set.
/// The priorities with jobs pending, per queue, highest first.
async fn pending_levels(store: &Store, queues: &[QueueKeys]) -> Result<Vec<Vec<String>>> {
    let mut pipe = redis::pipe();
    for q in queues {
        pipe.zrange(q.pending(), 0, -1);
    }
    Ok(pipe.query_async(&mut store.connection()).await?)
}

/// Depths of each queue: two pipelines, O(1) per queue and priority pending.
pub async fn stats(store: &Store, queues: &[QueueKeys]) -> Result<Vec<QueueStats>> {
    let levels = pending_levels(store, queues).await?;
    let mut pipe = redis::pipe();
    for (q, levels) in queues.iter().zip(&levels) {
        for level in levels {
            pipe.llen(q.pending_list(level));
        }
        pipe.zcard(q.parked())
            .zcard(q.tenant_parked())
            .zcard(q.scheduled())
            // Running jobs: every member but the skiplist pin (score +inf).
            .zcount(q.active(), "-inf", "(+inf")
            .zcard(q.dead())
            .zcard(q.done())
            .llen(q.inbox())
            .llen(q.rejected())
            .hexists(q.meta(), "paused")
            .hget(q.meta(), TOTAL_SUCCEEDED)
            .hget(q.meta(), TOTAL_FAILED)
            .hget(q.meta(), TOTAL_CANCELLED);
    }
    let counts: Vec<Option<u64>> = pipe.query_async(&mut store.connection()).await?;
    let mut rest = counts.as_slice();
    Ok(queues
        .iter()
        .zip(&levels)
        .map(|(q, levels)| {
            let (line, after) = rest.split_at(levels.len().min(rest.len()));
            let (c, after) = after.split_at(12.min(after.len()));
            rest = after;
            let n = |i: usize| c.get(i).copied().flatten().unwrap_or(0);
            QueueStats {
                queue: q.queue().to_owned(),
                // Parked jobs (full group, tenant over its limit) wait too.
                pending: line.iter().flatten().sum::<u64>() + n(0) + n(1),
                scheduled: n(2),
                active: n(3),
                dead: n(4),
                succeeded: n(5),
                inbox: n(6),
                rejected: n(7),
                paused: n(8) == 1,
                succeeded_total: n(9),
                failed_total: n(10),
                cancelled_total: n(11),
                last_minute: None,
            }
        })
        .collect())
}

/// Each queue's rates over the last minute: O(1) per queue, two round trips.
///
/// Daemons add what they finish to per-minute buckets ([`QueueKeys::rate`],
/// by Redis's clock); the estimate is the current minute's count plus the
/// previous minute's, weighted by how much of it lies in the last 60 seconds.
pub async fn last_minute(store: &Store, queues: &[QueueKeys]) -> Result<Vec<Rates>> {
    let mut con = store.connection();
    let now_ms = store.time_ms().await?;
    let minute = now_ms / 60_000;
    let mut pipe = redis::pipe();
    for q in queues {
        for m in [minute, minute - 1] {
            pipe.cmd("HMGET")
                .arg(q.rate(m))
                .arg(RATE_SUCCEEDED)
                .arg(RATE_FAILED);
            for b in 0..=crate::observe::Metrics::run_bucket_bounds().len() {
                pipe.arg(rate_bucket_field(b));
            }
            for b in 0..=crate::observe::Metrics::run_bucket_bounds().len() {
                pipe.arg(wait_bucket_field(b));
            }
        }
    }
    let buckets: Vec<Vec<Option<u64>>> = pipe.query_async(&mut con).await?;
    let prev_weight = 1.0 - (now_ms % 60_000) as f64 / 60_000.0;
    let count = |b: Option<&Vec<Option<u64>>>, i: usize| {
        b.and_then(|b| b.get(i).copied().flatten()).unwrap_or(0) as f64
    };
    Ok(queues
        .iter()
        .enumerate()
        .map(|(i, _)| {
            let (cur, prev) = (buckets.get(2 * i), buckets.get(2 * i + 1));
            let rate = |f: usize| (count(cur, f) + count(prev, f) * prev_weight) / 60.0;
            let nb = crate::observe::Metrics::run_bucket_bounds().len() + 1;
            let hist = |first: usize| -> Vec<u64> {
                (0..nb)
                    .map(|b| (count(cur, first + b) + count(prev, first + b)) as u64)
                    .collect()
            };
            let (runs, waits) = (hist(2), hist(2 + nb));
            Rates {
                succeeded_per_sec: rate(0),
                failed_per_sec: rate(1),
                run_p50_ms: bucket_percentile(&runs, 0.50),
                run_p99_ms: bucket_percentile(&runs, 0.99),
                wait_p50_ms: bucket_percentile(&waits, 0.50),
                wait_p99_ms: bucket_percentile(&waits, 0.99),
            }
        })
        .collect())
}

/// The queues recorded in the registry (by enqueueing clients and daemons).
pub async fn registered_queues(store: &Store) -> Result<Vec<String>> {
    let mut names: Vec<String> = redis::cmd("SMEMBERS")
        .arg(keys::registry(store.prefix()))
        .query_async(&mut store.connection())
        .await?;
    names.retain(|n| keys::is_valid_name(n));
    names.sort();
    Ok(names)
}

/// Adds queues to the registry.
pub async fn register(store: &Store, queues: &[&str]) -> Result<()> {
    if queues.is_empty() {
        return Ok(());
    }
    redis::cmd("SADD")
        .arg(keys::registry(store.prefix()))
        .arg(queues)
        .query_async::<()>(&mut store.connection())
        .await?;
    Ok(())
}

/// How long the next job to run of each queue (the head of its pending jobs) has
/// waited since it was enqueued, on Redis's clock; `None` when empty.
pub async fn head_ages(
    store: &Store,
    queues: &[QueueKeys],
) -> Result<Vec<Option<std::time::Duration>>> {
    let mut con = store.connection();
    let mut pipe = redis::pipe();
    with_time(&mut pipe);
    for q in queues {
        pipe.zrange(q.pending(), 0, 0);
    }
    let reply: Vec<redis::Value> = pipe.query_async(&mut con).await?;
    let (now_ms, rest) = split_time(reply, "head ages")?;
    let tops: Vec<Vec<String>> = rest
        .into_iter()
        .map(|v| {
            redis::from_redis_value(v).map_err(|e| Error::protocol("head ages", e.to_string()))
        })
        .collect::<Result<_>>()?;
    let mut pipe = redis::pipe();
    for (q, top) in queues.iter().zip(&tops) {
        // No priority pending: the list of a name no priority has, empty.
        pipe.lindex(
            q.pending_list(top.first().map_or("none", String::as_str)),
            0,
        );
    }
    let heads: Vec<Option<String>> = pipe.query_async(&mut con).await?;
    let mut pipe = redis::pipe();
    for (q, head) in queues.iter().zip(&heads) {
        pipe.cmd("HGET")
            .arg(q.jobs())
            .arg(head.as_deref().unwrap_or(""));
    }
    let records: Vec<Option<String>> = pipe.query_async(&mut con).await?;
    Ok(records
        .iter()
        .map(|r| {
            let enqueued = StoredJob::parse(r.as_deref()?).ok()?.enqueued_ms;
            Some(std::time::Duration::from_millis(
                u64::try_from(now_ms - enqueued).unwrap_or(0),
            ))
        })
        .collect())
}

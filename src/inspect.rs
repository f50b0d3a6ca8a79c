//! Read-only views of queues and jobs: `redq job`, `redq stats`, `redq dead list`.
//!
//! Every read here is O(1) per queue or per job (no SCAN, no KEYS) and runs
//! as one atomic pipeline, so a job is never seen in two states at once.

use serde::Serialize;
use serde_json::value::RawValue;

use crate::error::{Error, Result};
use crate::job::StoredJob;
use crate::keys::{self, QueueKeys};
use crate::store::Store;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for its due time (delayed, first attempt still to come).
    Scheduled,
    /// Ready; waiting for a free worker.
    Pending,
    /// Claimed by a worker, under a lease.
    Active,
    /// Failed at least once; waiting for its retry time.
    Retrying,
    /// Finished successfully (shown only while retention keeps it).
    Succeeded,
    /// Out of attempts, or refused for good; kept for inspection and `redq dead retry`.
    Dead,
}

/// One job, as `redq job --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct JobInfo {
    pub id: String,
    pub queue: String,
    pub state: JobState,
    pub priority: i64,
    pub attempts: u32,
    pub max_attempts: Option<u32>,
    pub payload: Box<RawValue>,
    pub last_error: Option<String>,
    pub result: Option<String>,
    pub enqueued_at_ms: i64,
    /// Start of the latest attempt.
    pub started_at_ms: Option<i64>,
    /// Completion or death.
    pub finished_at_ms: Option<i64>,
    /// Due time while scheduled or retrying.
    pub run_at_ms: Option<i64>,
    /// Lease deadline while active.
    pub lease_deadline_ms: Option<i64>,
    pub timeout_ms: Option<u64>,
    pub unique_key: Option<String>,
    pub tenant: Option<String>,
    pub group: Option<String>,
    /// What the latest command run used (command handlers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<crate::handler::Resources>,
}

/// Depth of one queue by state, and its rates over the last minute.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct QueueStats {
    pub queue: String,
    /// Ready to run: in `pending`, or parked behind a full group or a
    /// tenant's rate limit.
    pub pending: u64,
    pub scheduled: u64,
    pub active: u64,
    pub dead: u64,
    /// Completed jobs kept by retention.
    pub succeeded: u64,
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
#[derive(Debug, Clone, Serialize)]
pub struct DeadJob {
    pub id: String,
    pub died_at_ms: i64,
    pub attempts: u32,
    pub last_error: Option<String>,
}

/// Looks up one job; `None` when the queue does not know the id (never
/// enqueued, or completed and removed by retention).
pub async fn job(store: &Store, q: &QueueKeys, id: &str) -> Result<Option<JobInfo>> {
    keys::check_job_id(id)?;
    let mut found = jobs(store, q, &[id.to_owned()]).await?;
    Ok(found.pop().flatten().map(|(info, _)| info))
}

/// Looks up many jobs in one atomic round trip (HMGET and ZMSCORE over the
/// queue's hashes and sets), so no job is seen in two states. Each entry is
/// the job and its raw stored record, or `None` if the id is unknown.
pub async fn jobs(
    store: &Store,
    q: &QueueKeys,
    ids: &[String],
) -> Result<Vec<Option<(JobInfo, String)>>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    pipe.atomic();
    for hash in [q.jobs(), q.runs(), q.errors(), q.results(), q.resources()] {
        pipe.cmd("HMGET").arg(hash).arg(ids);
    }
    for set in [q.scheduled(), q.active(), q.dead(), q.done()] {
        pipe.cmd("ZMSCORE").arg(set).arg(ids);
    }
    type Texts = Vec<Option<String>>;
    type Scores = Vec<Option<f64>>;
    #[allow(clippy::type_complexity)]
    let (records, runs, errors, results, resources, scheduled, active, dead, done): (
        Texts,
        Texts,
        Texts,
        Texts,
        Texts,
        Scores,
        Scores,
        Scores,
        Scores,
    ) = pipe.query_async(&mut store.connection()).await?;
    let at = |v: &Scores, i: usize| v.get(i).copied().flatten();
    let text = |v: &Texts, i: usize| v.get(i).cloned().flatten();
    let mut out = Vec::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        let Some(record) = text(&records, i) else {
            out.push(None);
            continue;
        };
        let stored = StoredJob::parse(&record)
            .map_err(|e| Error::protocol("job record", format!("job {id}: {e}")))?;
        let (attempts, started) = parse_run(text(&runs, i).as_deref());
        let (s, a, d, f) = (
            at(&scheduled, i),
            at(&active, i),
            at(&dead, i),
            at(&done, i),
        );
        let state = match (a, s, d, f) {
            (Some(_), ..) => JobState::Active,
            (_, Some(_), ..) if attempts > 0 => JobState::Retrying,
            (_, Some(_), ..) => JobState::Scheduled,
            (_, _, Some(_), _) => JobState::Dead,
            (.., Some(_)) => JobState::Succeeded,
            // Pending (in a list, not indexed by id), or parked: popped while its
            // group was at `group_concurrency` or its tenant at its rate
            // limit, it waits in `parked` or `tenant_parked` to go back to pending.
            _ => JobState::Pending,
        };
        let doc = stored.doc;
        let info = JobInfo {
            id: id.to_owned(),
            queue: q.queue().to_owned(),
            state,
            priority: stored.priority,
            attempts,
            max_attempts: (stored.max_attempts > 0).then_some(stored.max_attempts),
            payload: doc.payload,
            last_error: text(&errors, i),
            result: text(&results, i),
            enqueued_at_ms: stored.enqueued_ms,
            started_at_ms: started,
            finished_at_ms: d.or(f).map(|s| s as i64),
            run_at_ms: s.map(|s| s as i64),
            lease_deadline_ms: a.map(|s| s as i64),
            timeout_ms: doc.timeout_ms,
            unique_key: doc.unique_key,
            tenant: doc.tenant,
            group: doc.group,
            resources: text(&resources, i).and_then(|r| serde_json::from_str(&r).ok()),
        };
        out.push(Some((info, record)));
    }
    Ok(out)
}

fn parse_run(run: Option<&str>) -> (u32, Option<i64>) {
    let Some(run) = run else { return (0, None) };
    let mut parts = run.split(',');
    let attempts = parts.next().and_then(|a| a.parse().ok()).unwrap_or(0);
    let started = parts.nth(1).and_then(|s| s.parse().ok());
    (attempts, started)
}

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
            .hexists(q.meta(), "paused");
    }
    let counts: Vec<u64> = pipe.query_async(&mut store.connection()).await?;
    let mut rest = counts.as_slice();
    Ok(queues
        .iter()
        .zip(&levels)
        .map(|(q, levels)| {
            let (line, after) = rest.split_at(levels.len().min(rest.len()));
            let (c, after) = after.split_at(9.min(after.len()));
            rest = after;
            let n = |i: usize| c.get(i).copied().unwrap_or(0);
            QueueStats {
                queue: q.queue().to_owned(),
                // Parked jobs (full group, tenant over its limit) wait too.
                pending: line.iter().sum::<u64>() + n(0) + n(1),
                scheduled: n(2),
                active: n(3),
                dead: n(4),
                succeeded: n(5),
                inbox: n(6),
                rejected: n(7),
                paused: n(8) == 1,
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
    let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(&mut con).await?;
    let now_ms = secs * 1000 + micros / 1000;
    let minute = now_ms / 60_000;
    let mut pipe = redis::pipe();
    for q in queues {
        for m in [minute, minute - 1] {
            pipe.cmd("HMGET")
                .arg(q.rate(m))
                .arg("succeeded")
                .arg("failed");
            for b in 0..=crate::observe::Metrics::run_bucket_bounds().len() {
                pipe.arg(format!("r{b}"));
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
            let runs: Vec<u64> = (0..nb)
                .map(|b| (count(cur, 2 + b) + count(prev, 2 + b)) as u64)
                .collect();
            Rates {
                succeeded_per_sec: rate(0),
                failed_per_sec: rate(1),
                run_p50_ms: bucket_percentile(&runs, 0.50),
                run_p99_ms: bucket_percentile(&runs, 0.99),
            }
        })
        .collect())
}

/// Dead jobs, newest first, `limit` from `offset`.
pub async fn dead_list(
    store: &Store,
    q: &QueueKeys,
    offset: usize,
    limit: usize,
) -> Result<Vec<DeadJob>> {
    let mut con = store.connection();
    let entries: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg(q.dead())
        .arg(offset)
        .arg(offset + limit.max(1) - 1)
        .arg("REV")
        .arg("WITHSCORES")
        .query_async(&mut con)
        .await?;
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&String> = entries.iter().map(|(id, _)| id).collect();
    let (runs, errors): (Vec<Option<String>>, Vec<Option<String>>) = redis::pipe()
        .cmd("HMGET")
        .arg(q.runs())
        .arg(&ids)
        .cmd("HMGET")
        .arg(q.errors())
        .arg(&ids)
        .query_async(&mut con)
        .await?;
    Ok(entries
        .iter()
        .enumerate()
        .map(|(i, (id, died))| DeadJob {
            id: id.clone(),
            died_at_ms: *died as i64,
            attempts: parse_run(runs.get(i).and_then(|r| r.as_deref())).0,
            last_error: errors.get(i).cloned().flatten(),
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
    pipe.cmd("TIME");
    for q in queues {
        pipe.zrange(q.pending(), 0, 0);
    }
    let reply: Vec<redis::Value> = pipe.query_async(&mut con).await?;
    let (now_ms, rest) = crate::store::split_time(reply, "head ages")?;
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

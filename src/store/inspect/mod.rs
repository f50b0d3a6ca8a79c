//! Read-only views of queues and jobs: `redq job`, `redq jobs`, `redq stats`, `redq dead list`.
//!
//! Every read here is O(1) per queue or per job (no SCAN, no KEYS) and runs
//! as one atomic pipeline, so a job is never seen in two states at once.

use serde::Serialize;
use serde_json::value::RawValue;

use super::Store;
use crate::error::{Error, Result};
use crate::job::{Record, StoredJob};
use crate::keys::{self, QueueKeys};

mod dead;
mod list;
mod stats;
mod usage;

pub use dead::{dead_list, DeadJob};
pub use list::{list_jobs, ListQuery, ListState, Order, Page, MAX_PAGE};
pub use stats::{head_ages, last_minute, register, registered_queues, stats, QueueStats, Rates};
pub use usage::{totals, UsageTotals};

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

impl JobState {
    /// The name `redq job` and `redq_status` use.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Pending => "pending",
            JobState::Active => "active",
            JobState::Retrying => "retrying",
            JobState::Succeeded => "succeeded",
            JobState::Dead => "dead",
        }
    }
}

/// A failed attempt of a job, as its history keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct PastAttempt {
    pub attempt: u32,
    pub started_ms: i64,
    pub ended_ms: i64,
    /// The attempt's error (its first 1000 bytes).
    pub error: String,
    /// What it used (command handlers only).
    #[serde(default)]
    pub resources: Option<crate::handler::Resources>,
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
    /// How long the job's outcome is kept after it ends, when the job
    /// asked (its `outcome_ttl_ms`; the queue's `outcome_ttl` is not shown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome_ttl_ms: Option<u64>,
    /// Its latest failed attempts before the current one, oldest first (at
    /// most 5): when each ran, its error and what it used.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<PastAttempt>,
    /// What the latest command run used (command handlers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<crate::handler::Resources>,
}

impl JobInfo {
    /// The time that matters in its state, Unix ms: when it is due
    /// (scheduled, retrying), its lease ends (active), it finished (dead,
    /// succeeded), else when it was enqueued (pending).
    pub fn when_ms(&self) -> i64 {
        self.run_at_ms
            .or(self.lease_deadline_ms)
            .or(self.finished_at_ms)
            .unwrap_or(self.enqueued_at_ms)
    }
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
    for hash in [
        q.jobs(),
        q.runs(),
        q.errors(),
        q.results(),
        q.resources(),
        q.history(),
        q.payloads(),
    ] {
        pipe.cmd("HMGET").arg(hash).arg(ids);
    }
    for set in [q.scheduled(), q.active(), q.dead(), q.done()] {
        pipe.cmd("ZMSCORE").arg(set).arg(ids);
    }
    type Texts = Vec<Option<String>>;
    type Scores = Vec<Option<f64>>;
    #[allow(clippy::type_complexity)]
    let (
        records,
        runs,
        errors,
        results,
        resources,
        history,
        payloads,
        scheduled,
        active,
        dead,
        done,
    ): (
        Texts,
        Texts,
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
        let bad = |e: String| Error::protocol("job record", format!("job {id}: {e}"));
        let mut stored = StoredJob::parse(&record).map_err(bad)?;
        // A payload kept apart is put back: readers get the record whole.
        let record = if stored.payload_apart {
            let p = text(&payloads, i).ok_or_else(|| {
                bad("its payload, kept apart in the queue's `payloads` hash, is missing".into())
            })?;
            stored.set_payload(p).map_err(bad)?;
            let doc = serde_json::to_string(&stored.doc).map_err(|e| bad(e.to_string()))?;
            Record {
                priority: stored.priority,
                max_attempts: stored.max_attempts,
                enqueued_ms: stored.enqueued_ms,
                doc: &doc,
            }
            .encode()
        } else {
            record
        };
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
            outcome_ttl_ms: doc.outcome_ttl_ms,
            resources: text(&resources, i).and_then(|r| serde_json::from_str(&r).ok()),
            history: text(&history, i)
                .and_then(|h| serde_json::from_str(&h).ok())
                .unwrap_or_default(),
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

//! `redq export` / `redq import`: every job of a queue as JSON lines, for
//! backups and moves between Redis servers.
//!
//! One line per job: [`ExportedJob`]. A round trip keeps ids, priorities,
//! due times, attempts, errors and results. Export reads the queue in pages
//! (HSCAN over the job records); jobs that change state while it runs may be
//! seen in either state, so pause the queue first for an exact copy. Import
//! is idempotent: ids the queue knows already are skipped.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::{Error, Result};
use crate::inspect::{self, JobState};
use crate::job::{check_doc, JobDoc, Record, StoredJob};
use crate::keys::{self, QueueKeys};
use crate::store::{ImportJob, Store};

/// Jobs read per page of an export (a hint to HSCAN).
const EXPORT_PAGE: usize = 500;

/// One exported job.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedJob {
    pub id: String,
    pub state: JobState,
    pub priority: i64,
    /// 0 means the queue's setting.
    pub max_attempts: u32,
    pub attempts: u32,
    pub enqueued_at_ms: i64,
    /// Due time (scheduled, retrying), or time of death or completion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// The job document as the producer sent it.
    pub document: Box<RawValue>,
}

/// Writes every job of the queue to `out`, one JSON line each; returns the count.
pub async fn export(store: &Store, q: &QueueKeys, out: &mut impl std::io::Write) -> Result<u64> {
    let mut cursor: u64 = 0;
    let mut count = 0;
    loop {
        let (next, ids) = store.job_ids_page(q, cursor, EXPORT_PAGE).await?;
        for (id, found) in ids.iter().zip(inspect::jobs(store, q, &ids).await?) {
            let Some((info, record)) = found else {
                continue;
            };
            // Checked whole, as any reader of it would (a damaged record
            // stops the export, naming the job).
            let bad = |e: String| Error::protocol("export", format!("job {id}: {e}"));
            StoredJob::parse(&record).map_err(bad)?;
            let stored = Record::split(&record).map_err(bad)?;
            let doc = stored.doc;
            let line = ExportedJob {
                id: id.clone(),
                state: info.state,
                priority: stored.priority,
                max_attempts: stored.max_attempts,
                attempts: info.attempts,
                enqueued_at_ms: stored.enqueued_ms,
                at_ms: info.run_at_ms.or(info.finished_at_ms),
                last_error: info.last_error,
                result: info.result,
                document: RawValue::from_string(doc.to_owned())
                    .map_err(|e| Error::protocol("export", format!("job {id}: {e}")))?,
            };
            let text = serde_json::to_string(&line)
                .map_err(|e| Error::protocol("export", e.to_string()))?;
            writeln!(out, "{text}")
                .map_err(|e| Error::protocol("export", format!("cannot write: {e}")))?;
            count += 1;
        }
        cursor = next;
        if cursor == 0 {
            return Ok(count);
        }
    }
}

/// Checks one exported line; the error names the field.
pub fn parse_line(line: &str) -> Result<(ExportedJob, JobDoc)> {
    let job: ExportedJob =
        serde_json::from_str(line).map_err(|e| Error::InvalidJob(e.to_string()))?;
    keys::check_job_id(&job.id)?;
    let doc: JobDoc = serde_json::from_str(job.document.get())
        .map_err(|e| Error::InvalidJob(format!("field \"document\": {e}")))?;
    check_doc(&doc)?;
    if !(crate::job::PRIORITY_MIN..=crate::job::PRIORITY_MAX).contains(&job.priority) {
        return Err(Error::InvalidJob(
            "field \"priority\": must be an integer from -1000 to 1000".into(),
        ));
    }
    Ok((job, doc))
}

/// Imports checked jobs in one round trip; returns (imported, skipped).
pub async fn import(
    store: &Store,
    q: &QueueKeys,
    jobs: &[(ExportedJob, JobDoc)],
) -> Result<(u64, u64)> {
    if jobs.is_empty() {
        return Ok((0, 0));
    }
    let jobs: Vec<ImportJob> = jobs
        .iter()
        .map(|(j, doc)| ImportJob {
            id: &j.id,
            record: Record {
                priority: j.priority,
                max_attempts: j.max_attempts,
                enqueued_ms: j.enqueued_at_ms,
                doc: j.document.get(),
            },
            state: j.state,
            at_ms: j.at_ms,
            attempts: j.attempts,
            last_error: j.last_error.as_deref(),
            result: j.result.as_deref(),
            unique_key: doc.unique_key.as_deref(),
        })
        .collect();
    let done = store.import(q, &jobs).await?;
    let imported = done.iter().filter(|d| **d).count() as u64;
    Ok((imported, done.len() as u64 - imported))
}

//! Adding jobs: the Rust client's batches (enqueue.lua), restored exports
//! (import.lua) and cron ticks (cron_enqueue.lua).

use super::{array, flags, text, Store};
use crate::error::{Error, Result};
use crate::inspect::JobState;
use crate::job::{PreparedJob, Record};
use crate::keys::QueueKeys;
use crate::scripts::SCRIPTS;

/// One exported job to restore ([`Store::import`]).
#[derive(Debug, Clone)]
pub struct ImportJob<'a> {
    pub id: &'a str,
    pub record: Record<'a>,
    /// An active job comes back pending (its lease cannot be restored).
    pub state: JobState,
    /// Due time (scheduled, retrying), or time of death or completion.
    pub at_ms: Option<i64>,
    pub attempts: u32,
    pub last_error: Option<&'a str>,
    pub result: Option<&'a str>,
    pub unique_key: Option<&'a str>,
}

/// What happened to one enqueued job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnqueueStatus {
    /// A new job was added.
    Created,
    /// A job with this id already existed; nothing changed.
    Exists,
    /// A live job holds the unique key; the id returned is that job's.
    Duplicate,
}

/// The result of enqueueing one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    pub id: String,
    pub status: EnqueueStatus,
}

impl Store {
    /// Adds checked jobs to one queue in one round trip.
    pub async fn enqueue(&self, q: &QueueKeys, jobs: &[PreparedJob]) -> Result<Vec<Enqueued>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = Vec::with_capacity(jobs.len() * 7);
        for j in jobs {
            args.extend([
                j.id.clone(),
                j.doc.clone(),
                j.priority.to_string(),
                j.max_attempts.to_string(),
                j.delay_ms.to_string(),
                j.run_at_ms.to_string(),
                j.unique_key.clone(),
            ]);
        }
        // Payloads kept apart are staged with HSETNX in the same MULTI/EXEC
        // as the enqueue call, which drops what it staged for a job it did
        // not create (see lib/record.lua): no script handles them.
        let mut staged = redis::pipe();
        for j in jobs {
            if let Some(p) = &j.payload_apart {
                staged.hset_nx(q.payloads(), &j.id, p).ignore();
            }
        }
        let first = (!staged.is_empty()).then_some(&staged);
        let written_on = self.before_write().await?;
        let reply = array(
            self.call_after(first, &SCRIPTS.enqueue, &[q.base()], args)
                .await?,
            "enqueue",
        )?;
        self.replicated("enqueue", written_on).await?;
        reply
            .chunks(2)
            .map(|pair| {
                let status = match text(pair.first(), "enqueue")?.as_str() {
                    "created" => EnqueueStatus::Created,
                    "exists" => EnqueueStatus::Exists,
                    "duplicate" => EnqueueStatus::Duplicate,
                    other => {
                        return Err(Error::protocol(
                            "enqueue",
                            format!("unknown status {other:?}"),
                        ))
                    }
                };
                Ok(Enqueued {
                    id: text(pair.get(1), "enqueue")?,
                    status,
                })
            })
            .collect()
    }

    /// Restores exported jobs, each in its state (import.lua), in one
    /// round trip; per job, whether it was imported (false: its id exists).
    pub async fn import(&self, q: &QueueKeys, jobs: &[ImportJob<'_>]) -> Result<Vec<bool>> {
        let mut args = Vec::with_capacity(jobs.len() * 8);
        for j in jobs {
            let state = match j.state {
                JobState::Pending => "pending",
                JobState::Scheduled => "scheduled",
                JobState::Retrying => "retrying",
                JobState::Active => "active",
                JobState::Dead => "dead",
                JobState::Succeeded => "succeeded",
            };
            args.extend([
                j.id.to_owned(),
                j.record.encode(),
                state.to_owned(),
                j.at_ms.unwrap_or(0).to_string(),
                j.attempts.to_string(),
                j.last_error.unwrap_or_default().to_owned(),
                j.result.unwrap_or_default().to_owned(),
                j.unique_key.unwrap_or_default().to_owned(),
            ]);
        }
        flags(self.run(|s| &s.import, q, args).await?, "import")
    }

    /// One page of a queue's job ids (HSCAN over its records, `count` a
    /// hint), and the cursor of the next page (0: done). Jobs that change
    /// state meanwhile may be seen in either state, or twice.
    pub async fn job_ids_page(
        &self,
        q: &QueueKeys,
        cursor: u64,
        count: usize,
    ) -> Result<(u64, Vec<String>)> {
        let (next, page): (u64, Vec<String>) = redis::cmd("HSCAN")
            .arg(q.jobs())
            .arg(cursor)
            .arg("COUNT")
            .arg(count)
            .query_async(&mut self.connection())
            .await?;
        // HSCAN pages alternate field, value.
        let ids = page.chunks(2).filter_map(|p| p.first().cloned()).collect();
        Ok((next, ids))
    }
}

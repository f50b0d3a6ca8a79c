//! Finished jobs' outcomes, kept for their producers (`src/lua/lib/outcome.lua`
//! writes them): reading one, and waiting for one on a connection of its own.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Store;
use crate::error::{Error, Result};
use crate::keys::{self, QueueKeys};

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndState {
    Succeeded,
    /// In the dead set: failed on its last attempt, failed for good, or its
    /// record could not be run.
    Dead,
    /// Cancelled by hand (`redq cancel`, `FCALL redq_cancel`).
    Cancelled,
}

impl EndState {
    pub fn as_str(self) -> &'static str {
        match self {
            EndState::Succeeded => "succeeded",
            EndState::Dead => "dead",
            EndState::Cancelled => "cancelled",
        }
    }
}

/// A finished job's outcome: what `<prefix>:{<queue>}:outcome:<id>` holds,
/// and what `FCALL_RO redq_status` answers for a removed job that kept one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobOutcome {
    pub id: String,
    pub state: EndState,
    pub attempts: u32,
    /// The handler's result (a command's stdout), when it gave one.
    pub result: Option<String>,
    pub last_error: Option<String>,
    /// When it ended, Unix ms on Redis's clock.
    pub finished_ms: i64,
}

impl JobOutcome {
    /// Parses the stored JSON; the error names the job.
    pub fn parse(id: &str, text: &str) -> Result<JobOutcome> {
        serde_json::from_str(text)
            .map_err(|e| Error::protocol("outcome", format!("job {id}: {e}: {text:.200}")))
    }
}

/// Extra time the blocking connection waits for Redis's answer beyond the
/// block itself (a reply that never comes is a lost connection).
const ANSWER_SLACK: Duration = Duration::from_secs(5);

impl Store {
    /// Job `id`'s kept outcome, if it ended and keeps one.
    pub async fn outcome(&self, q: &QueueKeys, id: &str) -> Result<Option<JobOutcome>> {
        keys::check_job_id(id)?;
        let text: Option<String> = redis::cmd("LINDEX")
            .arg(q.outcome(id))
            .arg(0)
            .query_async(&mut self.connection())
            .await?;
        text.map(|t| JobOutcome::parse(id, &t)).transpose()
    }

    /// The queue's `outcome_ttl` as its daemons wrote it (meta
    /// `outcome_ttl_ms`); `None` when no daemon set one.
    pub async fn queue_outcome_ttl(&self, q: &QueueKeys) -> Result<Option<Duration>> {
        let ms: Option<u64> = redis::cmd("HGET")
            .arg(q.meta())
            .arg("outcome_ttl_ms")
            .query_async(&mut self.connection())
            .await?;
        Ok(ms.filter(|&m| m > 0).map(Duration::from_millis))
    }

    /// Blocks up to `timeout` (at least 1 ms) for job `id`'s outcome, on a
    /// connection of its own (on a cluster, to the node of the queue's
    /// slot): `BLMOVE <key> <key> RIGHT RIGHT`, which answers at once when
    /// the outcome is there and otherwise when the job's end writes it,
    /// leaving it in place for other waiters (see lib/outcome.lua). `None`:
    /// not within `timeout`.
    pub async fn wait_outcome(
        &self,
        q: &QueueKeys,
        id: &str,
        timeout: Duration,
    ) -> Result<Option<JobOutcome>> {
        keys::check_job_id(id)?;
        let key = q.outcome(id);
        let block = timeout.max(Duration::from_millis(1));
        let mut con = self.blocking_for(&key, block + ANSWER_SLACK).await?;
        let text: Option<String> = redis::cmd("BLMOVE")
            .arg(&key)
            .arg(&key)
            .arg("RIGHT")
            .arg("RIGHT")
            .arg(format!("{:.3}", block.as_secs_f64()))
            .query_async(&mut con)
            .await?;
        text.map(|t| JobOutcome::parse(id, &t)).transpose()
    }
}

//! Ending jobs by hand: cancel a live job, delete a finished one
//! (`cancel.lua`, one atomic call for a batch of ids).

use super::{array, text, Store};
use crate::error::Result;
use crate::keys::{self, QueueKeys};

/// Where a job was when it was cancelled or deleted (or why nothing
/// happened): the states of `redq job`, plus `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WasIn {
    /// No such job (never enqueued, or removed already).
    Unknown,
    Pending,
    Scheduled,
    Retrying,
    Active,
    Dead,
    Succeeded,
}

impl WasIn {
    fn parse(s: &str) -> WasIn {
        match s {
            "pending" => WasIn::Pending,
            "scheduled" => WasIn::Scheduled,
            "retrying" => WasIn::Retrying,
            "active" => WasIn::Active,
            "dead" => WasIn::Dead,
            "succeeded" => WasIn::Succeeded,
            _ => WasIn::Unknown,
        }
    }

    /// A live job: cancel acts on it, delete does not.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            WasIn::Pending | WasIn::Scheduled | WasIn::Retrying | WasIn::Active
        )
    }

    /// The state's name as `redq job` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            WasIn::Unknown => "unknown",
            WasIn::Pending => "pending",
            WasIn::Scheduled => "scheduled",
            WasIn::Retrying => "retrying",
            WasIn::Active => "active",
            WasIn::Dead => "dead",
            WasIn::Succeeded => "succeeded",
        }
    }
}

impl Store {
    /// Cancels live jobs (pending, scheduled, retrying or running): each is
    /// removed with its record and unique key; a running one's daemon
    /// stops its handler at its next lease renewal and writes nothing.
    /// Returns the state each was in (a finished or unknown job is left as
    /// it is).
    pub async fn cancel(&self, q: &QueueKeys, ids: &[String]) -> Result<Vec<WasIn>> {
        self.end_by_hand(q, "cancel", ids).await
    }

    /// Deletes finished jobs (dead, or kept after success) for good;
    /// returns the state each was in (a live or unknown job is left as it
    /// is).
    pub async fn delete(&self, q: &QueueKeys, ids: &[String]) -> Result<Vec<WasIn>> {
        self.end_by_hand(q, "delete", ids).await
    }

    /// Runs scheduled or retrying jobs now: each goes to the tail of its
    /// priority's pending jobs (a daemon is woken), its attempts unchanged;
    /// returns the state each was in (other jobs are left as they are).
    pub async fn run_now(&self, q: &QueueKeys, ids: &[String]) -> Result<Vec<WasIn>> {
        self.end_by_hand(q, "promote", ids).await
    }

    async fn end_by_hand(&self, q: &QueueKeys, mode: &str, ids: &[String]) -> Result<Vec<WasIn>> {
        let mut out = Vec::with_capacity(ids.len());
        for part in ids.chunks(super::MAX_CALL_JOBS) {
            for id in part {
                keys::check_job_id(id)?;
            }
            let mut args = vec![mode.to_owned()];
            args.extend(part.iter().cloned());
            let reply = array(self.run(|s| &s.cancel, q, args).await?, "cancel")?;
            for v in &reply {
                out.push(WasIn::parse(&text(Some(v), "cancel")?));
            }
        }
        Ok(out)
    }
}

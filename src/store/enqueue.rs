//! Adding jobs: the Rust client's batches (enqueue.lua), restored exports
//! (import.lua) and cron ticks (cron_enqueue.lua).

use redis::Value;

use super::{array, text, Store};
use crate::error::{Error, Result};
use crate::job::PreparedJob;
use crate::keys::QueueKeys;

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
        let reply = array(self.run(|s| &s.enqueue, q, args).await?, "enqueue")?;
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

    /// Runs `import.lua` (see [`crate::transfer::import`]): 8 arguments per job.
    pub(crate) async fn import(&self, q: &QueueKeys, args: Vec<String>) -> Result<Value> {
        self.run(|s| &s.import, q, args).await
    }
}

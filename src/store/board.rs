//! Reads only the dashboard (`redq dashboard`, [`crate::dashboard`]) needs
//! beyond [`crate::inspect`]: each queue's settings hash (paused, limits)
//! and the per-minute rate buckets of the last hour.
//!
//! Both are bounded pipelines: one `HGETALL` per queue, and one `HMGET` per
//! queue and minute (60 per queue for the hour chart, read on page loads
//! only, never by the live refresh).

use std::collections::BTreeMap;

use super::heartbeat::{RATE_FAILED, RATE_SUCCEEDED};
use super::Store;
use crate::error::Result;
use crate::keys::QueueKeys;

/// Jobs one queue finished in one Unix minute, across daemons.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct MinuteCount {
    /// Unix minute (ms / 60 000).
    pub minute: i64,
    pub succeeded: u64,
    /// Attempts that failed (retried or dead).
    pub failed: u64,
}

impl Store {
    /// Each queue's `meta` hash: `paused`, `rate_jobs`, `rate_per_ms`,
    /// `group_limit`, `tenant_rate`, `max_doc_bytes`, `events`.
    pub async fn queue_meta(&self, queues: &[QueueKeys]) -> Result<Vec<BTreeMap<String, String>>> {
        if queues.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for q in queues {
            pipe.hgetall(q.meta());
        }
        Ok(pipe.query_async(&mut self.connection()).await?)
    }

    /// The rate buckets of the last `minutes` minutes (the current one
    /// last) of each queue, on Redis's clock. Buckets live as long as the
    /// daemons' `rate` TTL, so older minutes read as zero.
    pub async fn rate_history(
        &self,
        queues: &[QueueKeys],
        minutes: i64,
    ) -> Result<Vec<Vec<MinuteCount>>> {
        let minutes = minutes.clamp(1, 24 * 60);
        if queues.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.time_ms().await? / 60_000;
        let first = now - minutes + 1;
        let mut pipe = redis::pipe();
        for q in queues {
            for m in first..=now {
                pipe.cmd("HMGET")
                    .arg(q.rate(m))
                    .arg(RATE_SUCCEEDED)
                    .arg(RATE_FAILED);
            }
        }
        let reply: Vec<(Option<u64>, Option<u64>)> =
            pipe.query_async(&mut self.connection()).await?;
        Ok(reply
            .chunks(minutes as usize)
            .map(|chunk| {
                chunk
                    .iter()
                    .zip(first..)
                    .map(|((s, f), minute)| MinuteCount {
                        minute,
                        succeeded: s.unwrap_or(0),
                        failed: f.unwrap_or(0),
                    })
                    .collect()
            })
            .collect())
    }
}

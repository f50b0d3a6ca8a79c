//! Cron state in Redis: per queue, the `cron` hash of the last tick handled
//! by each `[[cron]]` entry (Unix ms, Redis's clock), and the transition
//! that enqueues a tick at most once (cron_enqueue.lua, a compare-and-set
//! on that record).

use super::{array, int, text, Store};
use crate::error::{Error, Result};
use crate::keys::QueueKeys;

/// One tick offered for enqueueing.
#[derive(Debug, Clone)]
pub struct CronTick<'a> {
    /// The entry's key in the `cron` hash.
    pub entry: &'a str,
    /// The tick, Unix ms.
    pub tick_ms: i64,
    /// The job's id (deterministic per entry and tick).
    pub id: &'a str,
    /// The job document, already checked.
    pub doc: &'a str,
    pub priority: i64,
}

/// What the script did with one tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CronOutcome {
    /// The tick's job was added.
    Created,
    /// The job id already existed (e.g. the record of the last tick was lost).
    Exists,
    /// First sight of the entry: the tick was recorded, nothing enqueued.
    Started,
    /// A tick at or after this one was handled already.
    Seen,
    /// The tick is after Redis's clock: refused.
    Future,
}

impl Store {
    /// Offers one tick to cron_enqueue.lua; returns what it did and the
    /// entry's last tick handled afterwards (Redis's clock for `Future`).
    pub async fn offer_cron_tick(
        &self,
        q: &QueueKeys,
        t: &CronTick<'_>,
    ) -> Result<(CronOutcome, i64)> {
        let args = vec![
            t.entry.to_owned(),
            t.tick_ms.to_string(),
            t.id.to_owned(),
            t.doc.to_owned(),
            t.priority.to_string(),
        ];
        let reply = array(
            self.run_with(|s| &s.cron_enqueue, q, Some(&q.cron()), args)
                .await?,
            "cron_enqueue",
        )?;
        let outcome = match text(reply.first(), "cron_enqueue")?.as_str() {
            "created" => CronOutcome::Created,
            "exists" => CronOutcome::Exists,
            "started" => CronOutcome::Started,
            "seen" => CronOutcome::Seen,
            "future" => CronOutcome::Future,
            other => {
                return Err(Error::protocol(
                    "cron_enqueue",
                    format!("unknown status {other:?}"),
                ))
            }
        };
        Ok((outcome, int(reply.get(1), "cron_enqueue")?))
    }

    /// The last tick `entry` of queue `q` handled; `None` without a record.
    pub async fn last_cron_tick(&self, q: &QueueKeys, entry: &str) -> Result<Option<i64>> {
        Ok(redis::cmd("HGET")
            .arg(q.cron())
            .arg(entry)
            .query_async(&mut self.connection())
            .await?)
    }
}

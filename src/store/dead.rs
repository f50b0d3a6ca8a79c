//! The dead set: retry and purge; and pausing a queue.

use std::time::Duration;

use super::{array, int, ms, Store};
use crate::error::{Error, Result};
use crate::keys::QueueKeys;

/// What a dead-set retry did to one id ([`Store::dead_retry`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadRetry {
    /// Back to pending, with fresh attempts.
    Requeued,
    /// Not in the dead set (unknown id, or not dead); nothing changed.
    NotDead,
    /// It stays dead: a live job holds its unique key.
    UniqueKeyTaken,
}

impl Store {
    /// Puts dead jobs back to pending, with fresh attempts; what happened to each id.
    pub async fn dead_retry(&self, q: &QueueKeys, ids: &[String]) -> Result<Vec<DeadRetry>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let reply = array(
            self.run(|s| &s.dead_retry, q, ids.to_vec()).await?,
            "dead_retry",
        )?;
        reply
            .iter()
            .map(|v| match int(Some(v), "dead_retry")? {
                1 => Ok(DeadRetry::Requeued),
                0 => Ok(DeadRetry::NotDead),
                2 => Ok(DeadRetry::UniqueKeyTaken),
                n => Err(Error::protocol("dead_retry", format!("unknown code {n}"))),
            })
            .collect()
    }

    /// Deletes the given dead jobs; returns how many were deleted.
    pub async fn dead_purge_ids(&self, q: &QueueKeys, ids: &[String]) -> Result<u64> {
        let mut args = vec!["ids".to_owned(), "0".to_owned()];
        args.extend(ids.iter().cloned());
        let (n, _) = self.dead_purge(q, args).await?;
        Ok(n)
    }

    /// Deletes dead jobs that died at least `older_than` ago (all when zero).
    /// One call deletes a bounded batch (dead_purge.lua's `PURGE_BATCH`) and
    /// says whether it stopped there; this calls again until it did not.
    pub async fn dead_purge_older(&self, q: &QueueKeys, older_than: Duration) -> Result<u64> {
        let mut total = 0;
        loop {
            let args = vec!["age".to_owned(), ms(older_than).to_string()];
            let (n, more) = self.dead_purge(q, args).await?;
            total += n;
            if !more {
                return Ok(total);
            }
        }
    }

    /// Runs `dead_purge.lua`: how many jobs it deleted, and whether more may
    /// be due (it stopped at its batch).
    async fn dead_purge(&self, q: &QueueKeys, args: Vec<String>) -> Result<(u64, bool)> {
        let reply = array(self.run(|s| &s.dead_purge, q, args).await?, "dead_purge")?;
        let n = int(reply.first(), "dead_purge")?;
        let more = int(reply.get(1), "dead_purge")?;
        Ok((u64::try_from(n).unwrap_or(0), more == 1))
    }

    /// Stops every daemon from claiming jobs of this queue; enqueues still work.
    pub async fn pause(&self, q: &QueueKeys) -> Result<()> {
        redis::cmd("HSET")
            .arg(q.meta())
            .arg("paused")
            .arg("1")
            .query_async::<()>(&mut self.con.clone())
            .await?;
        Ok(())
    }

    /// Lets daemons claim again, and wakes idle ones.
    pub async fn resume(&self, q: &QueueKeys) -> Result<()> {
        redis::pipe()
            .atomic()
            .hdel(q.meta(), "paused")
            .ignore()
            .lpush(q.wake(), "1")
            .ignore()
            .ltrim(q.wake(), 0, 0)
            .ignore()
            .query_async::<()>(&mut self.con.clone())
            .await?;
        Ok(())
    }
}

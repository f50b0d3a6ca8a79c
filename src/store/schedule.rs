//! Scheduled jobs: moving the due ones into pending (promote.lua) and
//! reading when each queue's next one is due.

use redis::Value;

use super::{array, int, split_time, with_time, Store, MAX_CALL_JOBS};
use crate::error::{Error, Result};
use crate::keys::QueueKeys;

/// The reply of one promote call ([`Store::promote`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Promoted {
    /// Redis's clock when it ran (ms).
    pub now_ms: i64,
    /// Jobs moved into pending.
    pub moved: u64,
    /// When the earliest job still scheduled is due (Redis ms); at or before
    /// `now_ms` when more were due than one call moves.
    pub next_due_ms: Option<i64>,
}

impl Store {
    /// Moves up to `limit` due scheduled jobs of `q` into pending (delayed
    /// jobs, retries), hands them to idle daemons or wakes one (promote.lua).
    pub async fn promote(&self, q: &QueueKeys, limit: usize) -> Result<Promoted> {
        let args = vec![limit.min(MAX_CALL_JOBS).to_string()];
        let reply = array(self.run(|s| &s.promote, q, args).await?, "promote")?;
        let next = int(reply.get(2), "promote")?;
        Ok(Promoted {
            now_ms: int(reply.first(), "promote")?,
            moved: u64::try_from(int(reply.get(1), "promote")?).unwrap_or(0),
            next_due_ms: (next >= 0).then_some(next),
        })
    }

    /// Redis's clock (ms) and, per queue, when its earliest scheduled job is
    /// due (`None`: nothing scheduled), in one pipeline.
    pub async fn scheduled_heads(&self, queues: &[&QueueKeys]) -> Result<(i64, Vec<Option<i64>>)> {
        let (now, heads) = self.heads(queues, QueueKeys::scheduled, true).await?;
        Ok((now.unwrap_or(0), heads))
    }

    /// Per queue, the deadline of the lease that expires first (`None`:
    /// nothing running), and Redis's clock (ms) when `with_clock`; one
    /// pipeline. The reaper calls the reap script only where one has passed.
    pub async fn first_lease_deadlines(
        &self,
        queues: &[&QueueKeys],
        with_clock: bool,
    ) -> Result<(Option<i64>, Vec<Option<i64>>)> {
        self.heads(queues, QueueKeys::active, with_clock).await
    }

    /// The lowest score of one sorted set per queue (`set` picks it), with
    /// Redis's clock first when `with_clock`. Scores here are whole ms, well
    /// inside f64's exact range; `+inf` (the `active` pin alone) reads as
    /// none.
    async fn heads(
        &self,
        queues: &[&QueueKeys],
        set: fn(&QueueKeys) -> &str,
        with_clock: bool,
    ) -> Result<(Option<i64>, Vec<Option<i64>>)> {
        let mut pipe = redis::pipe();
        if with_clock {
            with_time(&mut pipe);
        }
        for q in queues {
            pipe.cmd("ZRANGE")
                .arg(set(q))
                .arg(0)
                .arg(0)
                .arg("WITHSCORES");
        }
        let reply: Vec<Value> = pipe.query_async(&mut self.connection()).await?;
        let (now, heads) = if with_clock {
            let (now, rest) = split_time(reply, "heads")?;
            (Some(now), rest)
        } else {
            (None, reply)
        };
        let heads = heads
            .into_iter()
            .map(|v| {
                let head: Vec<(String, f64)> = redis::from_redis_value(v)
                    .map_err(|e| Error::protocol("heads", e.to_string()))?;
                Ok(head
                    .first()
                    .filter(|(_, s)| s.is_finite())
                    .map(|(_, s)| *s as i64))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((now, heads))
    }
}

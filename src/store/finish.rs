//! Ending attempts: completion, failure (retry or dead), lease renewal,
//! release and the reaping of expired leases, each in batches, each
//! refused for a job whose fence is no longer the caller's.

use std::time::Duration;

use super::{array, flags, int, ms, Store, MAX_CALL_JOBS};
use crate::error::Result;
use crate::keys::QueueKeys;
use crate::usage::Tally;

/// How many finished jobs a queue keeps, and for how long (0 = no age limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub keep: u64,
    pub max_age: Duration,
}

/// A successful attempt to record.
#[derive(Debug, Clone)]
pub struct Completion<'a> {
    pub id: &'a str,
    pub fence: u64,
    pub unique_key: Option<&'a str>,
    pub result: Option<&'a str>,
    /// Keep the job's outcome this long (the job's `outcome_ttl_ms`, else
    /// the queue's `outcome_ttl`); `None`: no outcome kept.
    pub outcome_ttl: Option<Duration>,
}

/// A failed attempt to record.
#[derive(Debug, Clone)]
pub struct Failure<'a> {
    pub id: &'a str,
    pub fence: u64,
    /// `Some(delay)`: retry after the delay; `None`: dead now.
    pub retry_in: Option<Duration>,
    pub error: &'a str,
    pub unique_key: Option<&'a str>,
    /// As in [`Completion`]: a job that dies keeps its `dead` outcome this long.
    pub outcome_ttl: Option<Duration>,
}

/// What a fail call did to one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailResult {
    Retrying,
    Dead,
    /// The fence was not the job's current one; nothing changed.
    Stale,
}

/// What a lease renewal did for one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    Renewed,
    /// The fence is stale: the lease expired and the job was rescued.
    TakenOver,
    /// The job is gone: cancelled (or deleted) while it ran.
    Gone,
}

impl Store {
    /// Records successes; returns per job whether it completed (false: stale fence).
    pub async fn complete(
        &self,
        q: &QueueKeys,
        done: &[Completion<'_>],
        keep: Retention,
    ) -> Result<Vec<bool>> {
        self.complete_with(q, done, keep, &[], None, Duration::ZERO)
            .await
    }

    /// [`Store::complete`], also keeping each job's resources JSON (`resources[i]`
    /// for `done[i]`; missing or `None`: none) while the job is kept, and
    /// adding the batch's `usage` in the same atomic step (not when every
    /// job of the batch is stale, as on a resend after a lost reply).
    pub async fn complete_with(
        &self,
        q: &QueueKeys,
        done: &[Completion<'_>],
        keep: Retention,
        resources: &[Option<&str>],
        usage: Option<&Tally>,
        usage_retention: Duration,
    ) -> Result<Vec<bool>> {
        if done.is_empty() {
            return Ok(Vec::new());
        }
        let keep_result = keep.keep > 0;
        // complete.lua's layout: id and fence per job, then extras only for
        // the jobs that have any (see the script's header).
        let mut args = Vec::with_capacity(5 + 2 * done.len());
        args.extend([
            keep.keep.to_string(),
            ms(keep.max_age).to_string(),
            done.len().to_string(),
        ]);
        let usage_key = usage_args(&mut args, q, usage, usage_retention);
        for c in done {
            args.extend([c.id.to_owned(), c.fence.to_string()]);
        }
        for (i, c) in done.iter().enumerate() {
            let unique = c.unique_key.unwrap_or_default();
            let outcome = c.outcome_ttl.map_or(0, |d| ms(d).max(1));
            // The result goes to Redis only when something keeps it: the
            // kept job, or its outcome.
            let result = if keep_result || outcome > 0 {
                c.result.unwrap_or_default()
            } else {
                ""
            };
            let res = resources.get(i).copied().flatten().unwrap_or("");
            if !(unique.is_empty() && result.is_empty() && res.is_empty() && outcome == 0) {
                args.extend([
                    (i + 1).to_string(),
                    unique.to_owned(),
                    result.to_owned(),
                    res.to_owned(),
                    outcome.to_string(),
                ]);
            }
        }
        let written_on = self.before_write().await?;
        let done = flags(
            self.run_with(|s| &s.complete, q, usage_key.as_deref(), args)
                .await?,
            "complete",
        )?;
        self.replicated("completion", written_on).await?;
        Ok(done)
    }

    /// Records failures: each job is scheduled for a retry or moved to the dead set.
    pub async fn fail(
        &self,
        q: &QueueKeys,
        failed: &[Failure<'_>],
        dead: Retention,
    ) -> Result<Vec<FailResult>> {
        self.fail_with(q, failed, dead, &[], None, Duration::ZERO)
            .await
    }

    /// [`Store::fail`], also keeping each job's resources JSON (`resources[i]` for
    /// `failed[i]`; missing or `None`: none), and adding `usage` as
    /// [`Store::complete_with`] does.
    pub async fn fail_with(
        &self,
        q: &QueueKeys,
        failed: &[Failure<'_>],
        dead: Retention,
        resources: &[Option<&str>],
        usage: Option<&Tally>,
        usage_retention: Duration,
    ) -> Result<Vec<FailResult>> {
        if failed.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = vec![dead.keep.to_string(), ms(dead.max_age).to_string()];
        let usage_key = usage_args(&mut args, q, usage, usage_retention);
        for (i, f) in failed.iter().enumerate() {
            args.extend([
                f.id.to_owned(),
                f.fence.to_string(),
                f.retry_in.map_or("-1".to_owned(), |d| ms(d).to_string()),
                f.error.to_owned(),
                f.unique_key.unwrap_or_default().to_owned(),
                resources.get(i).copied().flatten().unwrap_or("").to_owned(),
                f.outcome_ttl.map_or(0, |d| ms(d).max(1)).to_string(),
            ]);
        }
        let reply = array(
            self.run_with(|s| &s.fail, q, usage_key.as_deref(), args)
                .await?,
            "fail",
        )?;
        reply
            .iter()
            .map(|v| match int(Some(v), "fail")? {
                1 => Ok(FailResult::Retrying),
                2 => Ok(FailResult::Dead),
                _ => Ok(FailResult::Stale),
            })
            .collect()
    }

    /// Renews leases; returns Redis's clock and per job whether it was renewed.
    pub async fn extend(
        &self,
        q: &QueueKeys,
        held: &[(&str, u64)],
        lease: Duration,
    ) -> Result<(i64, Vec<bool>)> {
        let (now, renewed) = self.renew(q, held, lease).await?;
        Ok((
            now,
            renewed.into_iter().map(|r| r == Renewal::Renewed).collect(),
        ))
    }

    /// [`Store::extend`], saying of each job not renewed whether it was
    /// taken over or is gone (cancelled or deleted).
    pub async fn renew(
        &self,
        q: &QueueKeys,
        held: &[(&str, u64)],
        lease: Duration,
    ) -> Result<(i64, Vec<Renewal>)> {
        let mut first_now = None;
        let mut ok = Vec::with_capacity(held.len());
        // At most MAX_CALL_JOBS per call; `now` is the first call's (the
        // earliest, so deadlines computed from it are never late).
        for part in held.chunks(MAX_CALL_JOBS) {
            let mut args = vec![ms(lease).to_string()];
            for (id, fence) in part {
                args.extend([(*id).to_owned(), fence.to_string()]);
            }
            let reply = array(self.run(|s| &s.extend, q, args).await?, "extend")?;
            first_now.get_or_insert(int(reply.first(), "extend")?);
            for v in reply.iter().skip(1) {
                ok.push(match int(Some(v), "extend")? {
                    1 => Renewal::Renewed,
                    2 => Renewal::Gone,
                    _ => Renewal::TakenOver,
                });
            }
        }
        Ok((first_now.unwrap_or(0), ok))
    }

    /// Gives jobs back without spending an attempt; per job whether it was released.
    pub async fn release(&self, q: &QueueKeys, held: &[(&str, u64)]) -> Result<Vec<bool>> {
        // At most MAX_CALL_JOBS per call, the last ones first: each call puts
        // its jobs at the head of the pending jobs, so the first ones end up first.
        let mut parts: Vec<Vec<bool>> = Vec::new();
        for part in held.rchunks(MAX_CALL_JOBS) {
            let args = part
                .iter()
                .flat_map(|(id, t)| [(*id).to_owned(), t.to_string()])
                .collect();
            parts.push(flags(self.run(|s| &s.release, q, args).await?, "release")?);
        }
        Ok(parts.into_iter().rev().flatten().collect())
    }

    /// Rescues up to `limit` jobs whose lease expired at least `grace` ago
    /// (the daemon passes [`TAKEOVER_GRACE`]); returns (requeued, dead).
    pub async fn reap(
        &self,
        q: &QueueKeys,
        limit: usize,
        default_max_attempts: u32,
        dead: Retention,
        grace: Duration,
    ) -> Result<(u64, u64)> {
        let args = vec![
            limit.to_string(),
            default_max_attempts.to_string(),
            dead.keep.to_string(),
            ms(dead.max_age).to_string(),
            ms(grace).to_string(),
        ];
        let reply = array(self.run(|s| &s.reap, q, args).await?, "reap")?;
        let n = |i| int(reply.get(i), "reap").map(|v| u64::try_from(v).unwrap_or(0));
        Ok((n(0)?, n(1)?))
    }
}

/// Appends the usage section of complete.lua / fail.lua (field count, expiry,
/// then field and amount pairs; "0", "0" for none) and returns the day hash
/// to pass as the extra key.
fn usage_args(
    args: &mut Vec<String>,
    q: &QueueKeys,
    usage: Option<&Tally>,
    retention: Duration,
) -> Option<String> {
    match usage.filter(|t| !t.is_empty()) {
        Some(t) => {
            let (key, more) = t.script_args(q, retention);
            args.extend(more);
            Some(key)
        }
        None => {
            args.extend(["0".to_owned(), "0".to_owned()]);
            None
        }
    }
}

//! A worker pool: `concurrency` slots fed by one fetcher over one or more queues.
//!
//! The fetcher claims as many jobs as it has free slots, in one call per
//! queue, and starts a task per job. With several queues, `strict` order asks
//! them in list order; `weighted` draws the order by weight each round, so
//! every queue gets its share and none starves. When nothing is ready the
//! fetcher sleeps until a wake-up (enqueue, retry, resume), the next
//! scheduled job's due time, or `inbox_poll` — never a busy loop. A queue
//! whose rate limit holds back ready jobs says when it has room again
//! (`next_due_ms` with `throttled`): the fetcher sleeps exactly until then,
//! and its idle look does not count that queue's waiting jobs as work.
//! Jobs parked by a per-tenant rate limit are not in `pending`: the claim's
//! `next_due_ms` includes when a tenant has room again, and the idle look of
//! a queue with tenant limits counts tenants waiting for room (`tenant_due`),
//! so parked jobs move on even if the daemon that parked them is gone.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::leases::Leases;
use super::{runner, Counters, QueueRt};
use crate::config::Order;
use crate::store::Store;

/// Due scheduled jobs promoted, and inbox documents taken, per claim.
const PROMOTE_BATCH: usize = 200;
const INBOX_BATCH: usize = 100;
/// How long a saturated pool waits for more free slots before claiming.
const GATHER: Duration = Duration::from_millis(2);

pub struct Pool {
    pub name: String,
    pub queues: Vec<Arc<QueueRt>>,
    pub order: Order,
    pub slots: Arc<Semaphore>,
    pub concurrency: usize,
    /// Notified by the waker when one of the pool's queues gets work.
    pub wake: Arc<Notify>,
    /// Cancelled to stop claiming (quiet); running jobs go on.
    pub quiet: CancellationToken,
}

pub struct PoolCtx {
    pub store: Store,
    pub leases: Leases,
    pub counters: Arc<Counters>,
    pub inbox_poll: Duration,
    pub health: Arc<crate::observe::Health>,
}

impl Pool {
    /// Waits until every running job of this pool has finished.
    pub async fn drained(&self) {
        // Taking every permit means every job has given its own back.
        let n = u32::try_from(self.concurrency).unwrap_or(u32::MAX);
        if let Ok(all) = self.slots.acquire_many(n).await {
            drop(all);
        }
    }

    fn round_order(&self) -> Vec<Arc<QueueRt>> {
        match self.order {
            Order::Strict => self.queues.clone(),
            Order::Weighted => {
                let mut left = self.queues.clone();
                let mut out = Vec::with_capacity(left.len());
                while !left.is_empty() {
                    let total: u64 = left.iter().map(|q| u64::from(q.cfg.weight.max(1))).sum();
                    let mut pick = rand::random_range(0..total.max(1));
                    let i = left
                        .iter()
                        .position(|q| {
                            let w = u64::from(q.cfg.weight.max(1));
                            if pick < w {
                                true
                            } else {
                                pick -= w;
                                false
                            }
                        })
                        .unwrap_or(0);
                    out.push(left.remove(i));
                }
                out
            }
        }
    }

    /// The fetcher loop; returns when `quiet` is cancelled.
    pub async fn fetch(self: Arc<Self>, ctx: Arc<PoolCtx>) {
        let mut error_pause = Duration::from_millis(100);
        loop {
            if self.quiet.is_cancelled() {
                return;
            }
            if self.slots.available_permits() == 0 {
                // Saturated: wait for a slot, then briefly for more, so one
                // claim serves several slots instead of one claim per
                // finished job. Only a busy pool waits, at most GATHER.
                tokio::select! {
                    _ = self.quiet.cancelled() => return,
                    permit = self.slots.acquire() => drop(permit),
                }
                let more = u32::try_from(self.concurrency / 4)
                    .unwrap_or(u32::MAX)
                    .max(1);
                if let Ok(Ok(permits)) =
                    tokio::time::timeout(GATHER, self.slots.acquire_many(more)).await
                {
                    drop(permits);
                }
                continue;
            }
            // When the next scheduled job is due, if any (Redis's clock, as a wait).
            let mut due_in: Option<Duration> = None;
            // Queues whose rate limit holds back ready jobs until `due_in` or later.
            let mut throttled: Vec<Arc<str>> = Vec::new();
            let mut filled = false;
            let mut failed = false;
            for q in self.round_order() {
                let free = self.slots.available_permits();
                if free == 0 {
                    filled = true;
                    break;
                }
                let sent = Instant::now();
                match ctx
                    .store
                    .claim(&q.keys, free, q.cfg.lease, PROMOTE_BATCH, INBOX_BATCH)
                    .await
                {
                    Ok(c) => {
                        if let Some(due) = c.next_due_ms {
                            let wait =
                                Duration::from_millis(u64::try_from(due - c.now_ms).unwrap_or(0));
                            due_in = Some(due_in.map_or(wait, |d| d.min(wait)));
                        }
                        if c.throttled {
                            throttled.push(q.name.clone());
                        }
                        // A queue that filled every free slot ends the round, so
                        // in strict order a later queue never gets a slot while
                        // an earlier one still has work.
                        let full = c.jobs.len() == free;
                        for job in c.jobs {
                            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                                // Cannot happen: only this loop takes permits. Give the
                                // job back to the lease keeper's rescue rather than lose it.
                                tracing::error!(job = %job.id, "no free slot for a claimed job");
                                continue;
                            };
                            let (rt, leases, counters) =
                                (q.clone(), ctx.leases.clone(), ctx.counters.clone());
                            let deadline = sent + q.cfg.lease;
                            let claimed_ms = c.now_ms;
                            tokio::spawn(async move {
                                runner::run(rt, job, claimed_ms, deadline, leases, counters).await;
                                drop(permit);
                            });
                        }
                        if full {
                            filled = true;
                            break;
                        }
                    }
                    Err(e) => {
                        failed = true;
                        tracing::warn!(pool = %self.name, queue = %q.name, error = %e, "claim failed");
                    }
                }
            }
            ctx.health.set_redis_ok(!failed);
            if failed {
                tokio::select! {
                    _ = self.quiet.cancelled() => return,
                    _ = tokio::time::sleep(error_pause) => {}
                }
                error_pause = (error_pause * 2).min(Duration::from_secs(5));
                continue;
            }
            error_pause = Duration::from_millis(100);
            if filled {
                continue;
            }
            if !self.idle_until_work(&ctx, due_in, &throttled).await {
                return;
            }
        }
    }

    /// Sleeps until there may be work: a wake-up, the next due time, or an
    /// `inbox_poll` tick at which a cheap look (LLEN inbox, ZCARD pending:
    /// two commands per queue) finds something. The look catches what no
    /// wake-up announced: inbox documents pushed by foreign producers, and
    /// jobs whose wake-up another, busy daemon consumed. The pending jobs of
    /// a `throttled` queue are not work until the due time. Returns false
    /// when the pool is told to stop.
    async fn idle_until_work(
        &self,
        ctx: &PoolCtx,
        due_in: Option<Duration>,
        throttled: &[Arc<str>],
    ) -> bool {
        let due_at = due_in.map(|d| Instant::now() + d);
        loop {
            let tick = Instant::now() + ctx.inbox_poll;
            let until = due_at.map_or(tick, |d| d.min(tick));
            tokio::select! {
                _ = self.quiet.cancelled() => return false,
                _ = self.wake.notified() => return true,
                _ = tokio::time::sleep_until(until) => {}
            }
            if due_at.is_some_and(|d| Instant::now() >= d) {
                return true;
            }
            let mut pipe = redis::pipe();
            for q in &self.queues {
                pipe.llen(q.keys.inbox());
                if !throttled.contains(&q.name) {
                    pipe.zcard(q.keys.pending());
                }
                if q.cfg.has_tenant_limits() {
                    pipe.zcard(q.keys.tenant_due());
                }
            }
            let counts: redis::RedisResult<Vec<u64>> =
                pipe.query_async(&mut ctx.store.connection()).await;
            match counts {
                Ok(c) if c.iter().all(|n| *n == 0) => continue,
                _ => return true,
            }
        }
    }
}

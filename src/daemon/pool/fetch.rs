//! The pool's fetcher: claims as many jobs as it has free slots, in rounds
//! over its queues, and sleeps when there is nothing to claim until a
//! wake-up, the next due time, or the daemon's idle look finds work.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{
    registration_ttl, Offered, Pool, PoolCtx, GATHER, INBOX_BATCH, PROMOTE_BATCH, RENEW_FOR,
};
use crate::observe::Start;
use crate::store::{self, HandoffOffer};

/// The pause after a failed claim, doubling with each failure after it.
const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause between failed claims. A second, not more: the shared
/// connection spaces its own reconnections (at most one a second while
/// Redis cannot be reached), so a retry costs no connection attempt, and
/// claims resume within a second of a primary coming back (a failover)
/// instead of up to five.
const MAX_PAUSE: Duration = Duration::from_secs(1);

impl Pool {
    pub(super) async fn claim_loop(&self, ctx: &PoolCtx) {
        let ttl = registration_ttl(ctx.inbox_poll);
        let mut error_pause = FIRST_PAUSE;
        // The last round filled every free slot: the queues have more.
        let mut busy = false;
        let gather = self.concurrency * 3 / 4;
        loop {
            if self.quiet.is_cancelled() {
                return;
            }
            let free = self.slots.available_permits();
            if free == 0 || (busy && free < gather) {
                // Saturated: wait for a slot, then up to GATHER for three
                // quarters of the pool, so each claim carries a batch. A
                // busy pool of short jobs would otherwise claim only what
                // finished during the previous claim's round trip (about
                // half the pool, in two alternating halves), paying each
                // call's fixed cost twice as often. Only a busy pool waits,
                // at most GATHER, then claims what is free.
                if free == 0 {
                    tokio::select! {
                        _ = self.quiet.cancelled() => return,
                        permit = self.slots.acquire() => drop(permit),
                    }
                }
                let more = u32::try_from(gather).unwrap_or(u32::MAX).max(1);
                if let Ok(Ok(permits)) =
                    tokio::time::timeout(GATHER, self.slots.acquire_many(more)).await
                {
                    drop(permits);
                }
                if self.quiet.is_cancelled() {
                    return;
                }
            }
            // When the next scheduled job is due, if any (Redis's clock, as a wait).
            let mut due_in: Option<Duration> = None;
            // Queues whose rate limit holds back ready jobs until `due_in` or later.
            let mut throttled: Vec<Arc<str>> = Vec::new();
            let mut filled = false;
            let mut failed = false;
            let mut asked: Vec<Arc<str>> = Vec::new();
            let round_sent = Instant::now();
            for q in self.round_order() {
                // A claim takes at most MAX_CALL_JOBS; a bigger pool's
                // round claims that many and goes round again (filled).
                let free = self.slots.available_permits().min(store::MAX_CALL_JOBS);
                if free == 0 {
                    filled = true;
                    break;
                }
                // A turn among the daemon's claims in flight (see
                // `CLAIMS_IN_FLIGHT`); the semaphore is never closed.
                let turn = tokio::select! {
                    _ = self.quiet.cancelled() => return,
                    turn = ctx.claims.acquire() => turn.ok(),
                };
                let sent = Instant::now();
                asked.push(q.name.clone());
                // Boxed: the call's state lives on the heap only while it
                // runs, so an idle pool's task stays small.
                let claim = Box::pin(ctx.store.claim_as(
                    &q.keys,
                    free,
                    q.cfg.lease,
                    PROMOTE_BATCH,
                    INBOX_BATCH,
                    self.listened().then_some(HandoffOffer {
                        name: &self.handoff_name,
                        ttl,
                    }),
                ));
                let claimed = claim.await;
                drop(turn);
                match claimed {
                    Ok(c) => {
                        if let Ok(mut clock) = self.clock.lock() {
                            *clock = Some((sent, c.now_ms));
                        }
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
                        let deadline = sent + q.cfg.lease;
                        self.start_jobs(ctx, &q, c.jobs, c.now_ms, deadline, Start::Claim);
                        if full {
                            filled = true;
                            break;
                        }
                    }
                    Err(e) => {
                        failed = true;
                        // Once per outage at warn (the first failure after
                        // a success); the retries, up to one a second, at debug.
                        if error_pause == FIRST_PAUSE {
                            tracing::warn!(pool = %self.name, queue = %q.name, error = %e, "claim failed; retrying");
                        } else {
                            tracing::debug!(pool = %self.name, queue = %q.name, error = %e, "claim failed");
                        }
                        ctx.health.set_redis_error(Some(e.to_string()));
                    }
                }
            }
            ctx.health.set_redis_ok(!failed);
            if failed {
                tokio::select! {
                    _ = self.quiet.cancelled() => return,
                    _ = tokio::time::sleep(error_pause) => {}
                }
                error_pause = (error_pause * 2).min(MAX_PAUSE);
                continue;
            }
            error_pause = FIRST_PAUSE;
            busy = filled;
            if filled {
                // Busy: the queues claimed this round ended their
                // registrations; end those of the queues not reached.
                Box::pin(self.unregister_others(ctx, &asked)).await;
                continue;
            }
            if let Ok(mut r) = self.registration.lock() {
                *r = Offered {
                    at: Some(round_sent),
                    slots: self.slots.available_permits(),
                    received: 0,
                };
            }
            if !self.idle_until_work(ctx, due_in, &throttled, ttl).await {
                return;
            }
        }
    }

    /// Sleeps until there may be work: a wake-up, the next due time, or
    /// the daemon's idle look ([`crate::daemon::looker`]) finding some in
    /// one of this pool's queues. The look catches what no wake-up
    /// announced: inbox documents pushed by foreign producers, and jobs
    /// whose wake-up another, busy daemon consumed. The pending jobs of a
    /// `throttled` queue are not work until the due time. Returns false
    /// when the pool is told to stop.
    pub(super) async fn idle_until_work(
        &self,
        ctx: &PoolCtx,
        due_in: Option<Duration>,
        throttled: &[Arc<str>],
        ttl: Duration,
    ) -> bool {
        let groups = self
            .queues
            .iter()
            .map(|q| {
                let mut keys = vec![q.keys.inbox().to_owned()];
                if !throttled.contains(&q.name) {
                    keys.push(q.keys.pending().to_owned());
                }
                if q.cfg.has_tenant_limits() {
                    keys.push(q.keys.tenant_due().to_owned());
                }
                keys
            })
            .collect();
        ctx.looker.watch(&self.handoff_name, &self.wake, groups);
        let woken = self.sleep_until_work(ctx, due_in, ttl).await;
        ctx.looker.unwatch(&self.handoff_name);
        woken
    }

    async fn sleep_until_work(
        &self,
        ctx: &PoolCtx,
        due_in: Option<Duration>,
        ttl: Duration,
    ) -> bool {
        let due_at = due_in.map(|d| Instant::now() + d);
        // Half way to the registration's expiry it is renewed (no claim:
        // one HSET per queue), while the pool had work lately: a pool idle
        // for longer lets it lapse, so a long-idle daemon writes nothing,
        // however many queues it serves; its next job comes by wake-up and
        // claim, which registers again.
        let mut renew_at = self
            .registration
            .lock()
            .ok()
            .and_then(|r| r.at)
            .map(|at| at + ttl / 2);
        loop {
            let wait_until = match (due_at, renew_at) {
                (Some(d), Some(r)) => Some(d.min(r)),
                (d, r) => d.or(r),
            };
            let sleep = async {
                match wait_until {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.quiet.cancelled() => return false,
                _ = self.wake.notified() => return true,
                _ = self.renew.notified() => return true,
                _ = sleep => {}
            }
            let now = Instant::now();
            if due_at.is_some_and(|d| now >= d) {
                return true;
            }
            if renew_at.is_some_and(|r| now >= r) {
                if !self.worked_within(now, RENEW_FOR) {
                    renew_at = None;
                    continue;
                }
                let Some(renew) = self.renewals(now, ttl) else {
                    return true;
                };
                renew_at = Some(now + ttl / 2);
                let renewed = Box::pin(ctx.store.renew_registrations(&self.handoff_name, &renew));
                if let Err(e) = renewed.await {
                    tracing::debug!(pool = %self.name, error = %e, "renewing the hand-off registration failed");
                    return true;
                }
            }
        }
    }
}

//! The pool's side of the direct hand-off: its registration (made by its
//! claims, renewed while idle, ended when busy or stopping), and the jobs
//! enqueues lease to it, which the waker passes to [`Pool::take_handoff`].

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Offered, Pool, PoolCtx};
use crate::daemon::writer::{Release, Report};
use crate::daemon::QueueRt;
use crate::error::Result;
use crate::keys::QueueKeys;
use crate::observe::Start;
use crate::store::{Claimed, Registration};

impl Pool {
    /// Called by the waker before a blocking pop that includes this pool's
    /// hand-off lists. The first time, the pool claims again so that it
    /// registers.
    pub fn listened_to(&self) {
        if !self
            .listening
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            self.renew.notify_one();
        }
    }

    pub(super) fn listened(&self) -> bool {
        self.listening.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Starts the jobs of one element of this daemon's hand-off list of
    /// `q`, as the waker received and read it (called on the waker's task:
    /// no hop between receiving and starting). Once the pool has stopped
    /// claiming, they are released instead.
    pub fn take_handoff(&self, q: &Arc<QueueRt>, element: Result<Claimed>, received: Instant) {
        let ctx = &*self.ctx;
        let claimed = match element {
            Ok(c) => c,
            Err(e) => {
                // Its jobs come back when their leases expire.
                tracing::warn!(queue = %q.name, error = %e, "unreadable hand-off; its jobs return when their leases expire");
                return;
            }
        };
        if self.quiet.is_cancelled() {
            for job in claimed.jobs {
                q.writer.send(Report::Release {
                    id: job.id,
                    fence: job.fence,
                    why: Release::Shutdown,
                });
            }
            return;
        }
        // The lease runs from Redis's `now_ms` of the enqueue. Mapped onto
        // our clock through the latest claim (whose reply came after it was
        // sent, so Redis's clock then read at most its now_ms), the estimate
        // is never later than the real deadline, and never later than a
        // lease from now.
        let lease = q.cfg.lease;
        let latest = received + lease;
        let deadline = self
            .clock
            .lock()
            .ok()
            .and_then(|c| *c)
            .and_then(|(sent, redis_ms)| {
                let ahead = claimed.now_ms - redis_ms;
                let at = if ahead >= 0 {
                    sent.checked_add(Duration::from_millis(ahead.unsigned_abs()))
                } else {
                    sent.checked_sub(Duration::from_millis(ahead.unsigned_abs()))
                };
                at.and_then(|a| a.checked_add(lease))
            })
            .map_or(latest, |d| d.min(latest));
        let n = claimed.jobs.len();
        ctx.counters.add(&ctx.counters.handed_off, n as u64);
        self.start_jobs(
            ctx,
            q,
            claimed.jobs,
            claimed.now_ms,
            deadline,
            Start::Handoff,
        );
        let low = self.registration.lock().is_ok_and(|mut r| {
            r.received += n;
            r.at.is_some() && r.received * 2 >= r.slots
        });
        if low {
            self.renew.notify_one();
        }
    }

    /// Ends this daemon's hand-off registrations and releases what was
    /// handed over but not yet received (the pool is stopping).
    pub(super) async fn end_handoffs(&self, ctx: &PoolCtx) {
        for q in &self.queues {
            // A turn among the daemon's calls in flight, as a claim takes
            // (`CLAIMS_IN_FLIGHT`): 1000 pools stopping together would
            // otherwise send 1000 calls at once (massif showed the heap
            // ~8 MB higher at such a shutdown, issue 19). The semaphore is
            // never closed, and a turn is held for one call only.
            let turn = ctx.claims.acquire().await.ok();
            let ended = ctx.store.end_handoff(&q.keys, &self.handoff_name).await;
            drop(turn);
            match ended {
                Ok(taken) => {
                    for element in taken {
                        self.take_handoff(q, element, Instant::now());
                    }
                }
                Err(e) => {
                    tracing::warn!(queue = %q.name, error = %e, "cannot end the hand-off registration; it expires by itself")
                }
            }
        }
    }

    /// This idle pool's renewed hand-off registrations, for the look's
    /// round trip (each queue without a limit: its claims register, limited
    /// ones do not), offering the slots free now until `ttl` from now on
    /// Redis's clock, as the latest claim saw it. `None` when there is no
    /// such reading yet (the caller claims instead).
    pub(super) fn renewals(
        &self,
        now: Instant,
        ttl: Duration,
    ) -> Option<Vec<(&QueueKeys, Registration)>> {
        let (sent, redis_ms) = self.clock.lock().ok().and_then(|c| *c)?;
        if !self.listened() {
            return Some(Vec::new());
        }
        let elapsed = i64::try_from(now.saturating_duration_since(sent).as_millis()).unwrap_or(0);
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let expires_ms = redis_ms.saturating_add(elapsed).saturating_add(ttl_ms);
        let free = self.slots.available_permits();
        let renewals = self
            .queues
            .iter()
            .filter(|q| !q.cfg.is_limited())
            .map(|q| {
                let r = Registration {
                    slots: free,
                    lease: q.cfg.lease,
                    expires_ms,
                };
                (&q.keys, r)
            })
            .collect();
        if let Ok(mut r) = self.registration.lock() {
            *r = Offered {
                at: Some(now),
                slots: free,
                received: 0,
            };
        }
        Some(renewals)
    }

    /// After a round that filled every slot: ends the hand-off registrations
    /// of the queues that round did not ask (a claim ends its own), so
    /// enqueues stop handing this busy pool jobs. Only on the change from
    /// registered to busy, so a pool that stays busy pays nothing.
    pub(super) async fn unregister_others(&self, ctx: &PoolCtx, asked: &[Arc<str>]) {
        let was = self
            .registration
            .lock()
            .ok()
            .and_then(|mut r| r.at.take())
            .is_some();
        let others: Vec<&Arc<QueueRt>> = self
            .queues
            .iter()
            .filter(|q| !asked.contains(&q.name))
            .collect();
        if !was || others.is_empty() {
            return;
        }
        let keys: Vec<&QueueKeys> = others.iter().map(|q| &q.keys).collect();
        if let Err(e) = ctx.store.end_registrations(&keys, &self.handoff_name).await {
            tracing::debug!(pool = %self.name, error = %e, "cannot end hand-off registrations; they expire by themselves");
        }
    }
}

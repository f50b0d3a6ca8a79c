//! A worker pool: `concurrency` slots fed by one fetcher over one or more queues.
//!
//! The fetcher claims as many jobs as it has free slots, in one call per
//! queue, and starts a task per job. A busy pool (its last round filled
//! every free slot) first waits up to [`GATHER`] for three quarters of its
//! slots, so claims carry batches. With several queues, `strict` order asks
//! them in list order; `weighted` draws the order by weight each round, so
//! every queue gets its share and none starves. When nothing is ready the
//! fetcher sleeps until a wake-up (enqueue, retry, resume), the next
//! scheduled job's due time, or the daemon's idle look (every
//! `inbox_poll`, one look for all idle pools: [`crate::daemon::looker`])
//! finds work — never a busy loop. A queue
//! whose rate limit holds back ready jobs says when it has room again
//! (`next_due_ms` with `throttled`): the fetcher sleeps exactly until then,
//! and its idle look does not count that queue's waiting jobs as work.
//! Jobs parked by a per-tenant rate limit are not in `pending`: the claim's
//! `next_due_ms` includes when a tenant has room again, and the idle look of
//! a queue with tenant limits counts tenants waiting for room (`tenant_due`),
//! so parked jobs move on even if the daemon that parked them is gone.
//!
//! Direct hand-off: a claim that leaves the pool with free slots registers
//! this daemon in the queue's `idle` hash with that many slots, and the
//! enqueues that follow lease their jobs to it inside the enqueue script and
//! push them onto this daemon's hand-off list, where the waker's BLPOP
//! receives them and [`Pool::take_handoff`] starts them: one hop from enqueue to
//! handler instead of wake marker → BLPOP → claim. A registration counts
//! down the slots it offered; the pool claims again (renewing it) when half
//! are used, and an idle pool renews it half way to its expiry with one
//! HSET per queue while it had work within [`RENEW_FOR`]; after that it
//! lets the registration lapse (so a long-idle daemon writes nothing) and
//! its next job comes by wake-up and claim, which registers again. Jobs
//! that arrive when every slot
//! is taken (a registration and a claim crossed) are released back to the
//! head of the pending jobs, no attempt spent.
//!
//! Files: this one holds the pool and starts jobs; [`fetch`] is the claim
//! loop and the idle wait; [`handoff`] the registration and the jobs handed
//! over.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod fetch;
mod handoff;

use super::leases::Leases;
use super::writer::{Release, Report};
use super::{runner, Counters, QueueRt};
use crate::config::Order;
use crate::observe::Start;
use crate::store::{ClaimedJob, Store};

/// Due scheduled jobs promoted, and inbox documents taken, per claim.
const PROMOTE_BATCH: usize = 200;
const INBOX_BATCH: usize = 100;
/// How long a saturated pool waits for more free slots before claiming.
const GATHER: Duration = Duration::from_millis(2);
/// Shortest life of a hand-off registration (see [`registration_ttl`]).
const MIN_REGISTRATION: Duration = Duration::from_secs(10);
/// An idle pool renews its hand-off registration while it started a job
/// (or started) this recently; then lets it lapse.
const RENEW_FOR: Duration = Duration::from_secs(30);

/// How long a hand-off registration lasts: long enough that an idle pool
/// renews it at most every few seconds, short enough that a daemon that
/// died stops being handed jobs soon.
fn registration_ttl(inbox_poll: Duration) -> Duration {
    (inbox_poll * 3).max(MIN_REGISTRATION)
}

/// The pool's hand-off registration, as far as it knows.
#[derive(Default)]
struct Offered {
    /// When the claim that made it was sent (`None`: not registered).
    at: Option<Instant>,
    /// Slots it offered, and jobs received through it since.
    slots: usize,
    received: usize,
}

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
    /// This pool's name in the queues' `idle` hashes and hand-off lists:
    /// the daemon's id and the pool's number in it.
    pub handoff_name: Arc<str>,
    registration: Mutex<Offered>,
    /// Redis's clock against ours, from the latest claim: (sent, Redis ms).
    clock: Mutex<Option<(Instant, i64)>>,
    /// Notified when the registration runs low: claim again to renew it.
    renew: Notify,
    /// Set once the waker's blocking pop includes this pool's hand-off
    /// lists: only then does the pool register for hand-off, so a pool
    /// started by a reload is not handed jobs that would wait for the
    /// waker's next pop.
    listening: std::sync::atomic::AtomicBool,
    /// When the pool last started a job (or started itself).
    worked: Mutex<Instant>,
    ctx: Arc<PoolCtx>,
}

pub struct PoolCtx {
    pub store: Store,
    pub leases: Leases,
    pub counters: Arc<Counters>,
    pub inbox_poll: Duration,
    pub health: Arc<crate::observe::Health>,
    /// The daemon's idle look, shared by its pools.
    pub looker: Arc<super::looker::Looker>,
    /// Turns for claims (and hand-off endings) in flight, shared by the
    /// daemon's pools ([`super::CLAIMS_IN_FLIGHT`]).
    pub claims: Arc<Semaphore>,
}

impl Pool {
    pub fn new(
        name: String,
        queues: Vec<Arc<QueueRt>>,
        order: Order,
        concurrency: usize,
        handoff_name: Arc<str>,
        ctx: Arc<PoolCtx>,
    ) -> Arc<Pool> {
        Arc::new(Pool {
            name,
            queues,
            order,
            slots: Arc::new(Semaphore::new(concurrency)),
            concurrency,
            wake: Arc::new(Notify::new()),
            quiet: CancellationToken::new(),
            handoff_name,
            registration: Mutex::new(Offered::default()),
            clock: Mutex::new(None),
            renew: Notify::new(),
            listening: std::sync::atomic::AtomicBool::new(false),
            worked: Mutex::new(Instant::now()),
            ctx,
        })
    }

    /// Starts claimed jobs, one slot each. Jobs beyond the free slots (a
    /// hand-off and a claim crossed) are released: back to the head of the
    /// pending jobs, no attempt spent.
    fn start_jobs(
        &self,
        ctx: &PoolCtx,
        q: &Arc<QueueRt>,
        jobs: Vec<ClaimedJob>,
        claimed_ms: i64,
        deadline: Instant,
        via: Start,
    ) {
        let n = jobs.len();
        let mut released = 0;
        for job in jobs {
            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                tracing::debug!(job = %job.id, queue = %q.name, "no free slot; releasing the job");
                q.writer.send(Report::Release {
                    id: job.id,
                    fence: job.fence,
                    why: Release::NoFreeSlot,
                });
                released += 1;
                continue;
            };
            let (rt, leases, counters) = (q.clone(), ctx.leases.clone(), ctx.counters.clone());
            // Only a job whose payload is kept apart reads Redis itself.
            let store = job
                .record
                .as_ref()
                .is_ok_and(|r| r.payload_apart)
                .then(|| ctx.store.clone());
            tokio::spawn(async move {
                runner::run(rt, store, job, claimed_ms, deadline, leases, counters).await;
                drop(permit);
            });
        }
        q.metrics.jobs_started(&q.name, via, (n - released) as u64);
        if n > released {
            if let Ok(mut w) = self.worked.lock() {
                *w = Instant::now();
            }
        }
    }

    /// Whether the pool started a job (or started) within `span` of `now`.
    fn worked_within(&self, now: Instant, span: Duration) -> bool {
        self.worked
            .lock()
            .map_or(true, |w| now.saturating_duration_since(*w) < span)
    }

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
    pub async fn fetch(self: Arc<Self>) {
        let ctx = self.ctx.clone();
        self.claim_loop(&ctx).await;
        Box::pin(self.end_handoffs(&ctx)).await;
    }
}

//! A worker pool: `concurrency` slots fed by one fetcher over one or more queues.
//!
//! The fetcher claims as many jobs as it has free slots, in one call per
//! queue, and starts a task per job. A busy pool (its last round filled
//! every free slot) first waits up to [`GATHER`] for three quarters of its
//! slots, so claims carry batches. With several queues, `strict` order asks
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
//!
//! Direct hand-off: a claim that leaves the pool with free slots registers
//! this daemon in the queue's `idle` hash with that many slots, and the
//! enqueues that follow lease their jobs to it inside the enqueue script and
//! push them onto this daemon's hand-off list, where the waker's BLPOP
//! receives them and [`Pool::take_handoff`] starts them: one hop from enqueue to
//! handler instead of wake marker → BLPOP → claim. A registration counts
//! down the slots it offered; the pool claims again (renewing it) when half
//! are used, and an idle pool renews it half way to its expiry with one
//! HSET in its idle look. Jobs that arrive when every slot
//! is taken (a registration and a claim crossed) are released back to the
//! head of the pending jobs, no attempt spent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::leases::Leases;
use super::writer::Report;
use super::{runner, Counters, QueueRt};
use crate::config::Order;
use crate::observe::Start;
use crate::store::{self, ClaimedJob, HandoffOffer, Store};

/// Due scheduled jobs promoted, and inbox documents taken, per claim.
const PROMOTE_BATCH: usize = 200;
const INBOX_BATCH: usize = 100;
/// How long a saturated pool waits for more free slots before claiming.
const GATHER: Duration = Duration::from_millis(2);
/// Shortest life of a hand-off registration (see [`registration_ttl`]).
const MIN_REGISTRATION: Duration = Duration::from_secs(10);

/// How long a hand-off registration lasts: long enough that an idle pool
/// renews it at most every few seconds, short enough that a daemon that
/// died stops being handed jobs soon.
fn registration_ttl(inbox_poll: Duration) -> Duration {
    (inbox_poll * 3).max(MIN_REGISTRATION)
}

/// The pool's hand-off registration, as far as it knows.
#[derive(Default)]
struct Registration {
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
    registration: Mutex<Registration>,
    /// Redis's clock against ours, from the latest claim: (sent, Redis ms).
    clock: Mutex<Option<(Instant, i64)>>,
    /// Notified when the registration runs low: claim again to renew it.
    renew: Notify,
    /// Set once the waker's blocking pop includes this pool's hand-off
    /// lists: only then does the pool register for hand-off, so a pool
    /// started by a reload is not handed jobs that would wait for the
    /// waker's next pop.
    listening: std::sync::atomic::AtomicBool,
    ctx: Arc<PoolCtx>,
}

pub struct PoolCtx {
    pub store: Store,
    pub leases: Leases,
    pub counters: Arc<Counters>,
    pub inbox_poll: Duration,
    pub health: Arc<crate::observe::Health>,
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
            registration: Mutex::new(Registration::default()),
            clock: Mutex::new(None),
            renew: Notify::new(),
            listening: std::sync::atomic::AtomicBool::new(false),
            ctx,
        })
    }

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

    fn listened(&self) -> bool {
        self.listening.load(std::sync::atomic::Ordering::Acquire)
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
                });
                released += 1;
                continue;
            };
            let (rt, leases, counters) = (q.clone(), ctx.leases.clone(), ctx.counters.clone());
            tokio::spawn(async move {
                runner::run(rt, job, claimed_ms, deadline, leases, counters).await;
                drop(permit);
            });
        }
        q.metrics.jobs_started(&q.name, via, (n - released) as u64);
    }

    /// Starts the jobs of one element of this daemon's hand-off list of
    /// `q`, as the waker received it (called on the waker's task: no hop
    /// between receiving and starting). Once the pool has stopped claiming,
    /// they are released instead.
    pub fn take_handoff(&self, q: &Arc<QueueRt>, payload: &str, received: Instant) {
        let ctx = &*self.ctx;
        let claimed = match store::parse_handoff(payload) {
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
        Counters::add(&ctx.counters.handed_off, n as u64);
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
    async fn end_handoffs(&self, ctx: &PoolCtx) {
        for q in &self.queues {
            match ctx.store.end_handoff(&q.keys, &self.handoff_name).await {
                Ok(taken) => {
                    for payload in taken {
                        self.take_handoff(q, &payload, Instant::now());
                    }
                }
                Err(e) => {
                    tracing::warn!(queue = %q.name, error = %e, "cannot end the hand-off registration; it expires by itself")
                }
            }
        }
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
        self.end_handoffs(&ctx).await;
    }

    async fn claim_loop(&self, ctx: &PoolCtx) {
        let ttl = registration_ttl(ctx.inbox_poll);
        let mut error_pause = Duration::from_millis(100);
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
                let sent = Instant::now();
                asked.push(q.name.clone());
                match ctx
                    .store
                    .claim_as(
                        &q.keys,
                        free,
                        q.cfg.lease,
                        PROMOTE_BATCH,
                        INBOX_BATCH,
                        self.listened().then_some(HandoffOffer {
                            name: &self.handoff_name,
                            ttl,
                        }),
                    )
                    .await
                {
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
            busy = filled;
            if filled {
                // Busy: the queues claimed this round ended their
                // registrations; end those of the queues not reached.
                self.unregister_others(ctx, &asked).await;
                continue;
            }
            if let Ok(mut r) = self.registration.lock() {
                *r = Registration {
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

    /// Adds to `pipe` the renewal of this idle pool's hand-off registrations
    /// (each queue without a limit: its claims register, limited ones do
    /// not), offering the slots free now until `ttl` from now on Redis's
    /// clock, as the latest claim saw it. False when there is no such
    /// reading yet (the caller claims instead).
    fn renew_into(&self, pipe: &mut redis::Pipeline, now: Instant, ttl: Duration) -> bool {
        let Some((sent, redis_ms)) = self.clock.lock().ok().and_then(|c| *c) else {
            return false;
        };
        if !self.listened() {
            return true;
        }
        let elapsed = i64::try_from(now.saturating_duration_since(sent).as_millis()).unwrap_or(0);
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let expires = redis_ms.saturating_add(elapsed).saturating_add(ttl_ms);
        let free = self.slots.available_permits();
        for q in &self.queues {
            let limited = q.cfg.rate_limit.is_some()
                || q.cfg.group_concurrency.is_some()
                || q.cfg.has_tenant_limits();
            if !limited {
                let value = format!("{free},{},{expires}", q.cfg.lease.as_millis());
                pipe.hset(q.keys.idle(), &*self.handoff_name, value)
                    .ignore();
            }
        }
        if let Ok(mut r) = self.registration.lock() {
            *r = Registration {
                at: Some(now),
                slots: free,
                received: 0,
            };
        }
        true
    }

    /// After a round that filled every slot: ends the hand-off registrations
    /// of the queues that round did not ask (a claim ends its own), so
    /// enqueues stop handing this busy pool jobs. Only on the change from
    /// registered to busy, so a pool that stays busy pays nothing.
    async fn unregister_others(&self, ctx: &PoolCtx, asked: &[Arc<str>]) {
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
        let mut pipe = redis::pipe();
        for q in others {
            pipe.hdel(q.keys.idle(), &*self.handoff_name).ignore();
        }
        if let Err(e) = pipe.query_async::<()>(&mut ctx.store.connection()).await {
            tracing::debug!(pool = %self.name, error = %e, "cannot end hand-off registrations; they expire by themselves");
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
        ttl: Duration,
    ) -> bool {
        let due_at = due_in.map(|d| Instant::now() + d);
        // Half way to the registration's expiry it is renewed, in the same
        // pipeline as the look below (no claim: one HSET per queue).
        let mut renew_at = self
            .registration
            .lock()
            .ok()
            .and_then(|r| r.at)
            .map(|at| at + ttl / 2);
        loop {
            let tick = Instant::now() + ctx.inbox_poll;
            let until = due_at.map_or(tick, |d| d.min(tick));
            tokio::select! {
                _ = self.quiet.cancelled() => return false,
                _ = self.wake.notified() => return true,
                _ = self.renew.notified() => return true,
                _ = tokio::time::sleep_until(until) => {}
            }
            let now = Instant::now();
            if due_at.is_some_and(|d| now >= d) {
                return true;
            }
            let mut pipe = redis::pipe();
            if renew_at.is_some_and(|r| now >= r) {
                if !self.renew_into(&mut pipe, now, ttl) {
                    return true;
                }
                renew_at = Some(now + ttl / 2);
            }
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

//! The result writer: one per queue, started at the queue's first report,
//! it writes outcomes in batches.
//!
//! Workers hand over reports and move on. The writer takes the first report
//! as soon as it arrives plus whatever else is already queued (up to
//! [`MAX_BATCH`]) and writes them with at most three calls (complete, fail,
//! release), so under load one round trip serves many jobs and when idle a
//! result waits for no timer. Stale fences are counted, never retried.
//!
//! Each finished attempt also carries what it [`Spent`]: its resources go to
//! the job (in the same complete/fail call) and its usage, with a count and
//! the run time, is added to the queue's per-tenant, per-day usage totals in
//! one more pipeline that runs alongside ([`crate::usage`]). Usage counts every
//! attempt that reached the writer, including one whose write was refused as
//! stale: that attempt ran and spent what it reported.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::leases::Leases;
use super::Counters;
use crate::handler::{Resources, Usage};
use crate::keys::QueueKeys;
use crate::observe::JobOutcome;
use crate::store::{Completion, FailResult, Failure, Retention, Store};
use crate::usage::{Day, Tally};

/// Most reports written in one batch.
pub const MAX_BATCH: usize = 512;

/// What one attempt used, reported with its outcome.
#[derive(Debug, Default)]
pub struct Spent {
    /// The job's tenant (usage is counted per tenant).
    pub tenant: Option<String>,
    /// How long the handler ran.
    pub run: Duration,
    /// What the handler reported, already checked ([`crate::usage::sanitize`]).
    pub usage: Usage,
    /// What the program used (command handlers).
    pub resources: Option<Resources>,
}

/// What a worker reports about one job.
#[derive(Debug)]
pub enum Report {
    Complete {
        id: String,
        fence: u64,
        unique: Option<String>,
        result: Option<String>,
        /// How long its outcome is kept (`None`: not kept).
        outcome_ttl: Option<Duration>,
        spent: Spent,
    },
    /// `retry_in: None` means dead now. `spent: None`: the handler never ran.
    Fail {
        id: String,
        fence: u64,
        retry_in: Option<Duration>,
        error: String,
        unique: Option<String>,
        /// How long its outcome is kept if it dies (`None`: not kept).
        outcome_ttl: Option<Duration>,
        spent: Option<Spent>,
    },
    /// Give the job back to pending, no attempt spent.
    Release {
        id: String,
        fence: u64,
        why: Release,
    },
}

/// Why a job is given back unstarted or stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// The daemon is shutting down: counted as `redq_jobs_total{outcome="released"}`.
    Shutdown,
    /// It came beyond the free slots (a direct hand-off and the daemon's
    /// own claim crossed), or its payload kept apart could not be read
    /// (Redis unreachable), and it never started: counted as
    /// `redq_jobs_returned_unstarted_total`.
    NoFreeSlot,
}

impl Report {
    fn id(&self) -> &str {
        match self {
            Report::Complete { id, .. } | Report::Fail { id, .. } | Report::Release { id, .. } => {
                id
            }
        }
    }
}

/// The sending side, held by the queue's runtime.
///
/// The writer starts at its queue's first report, not with the queue: a
/// daemon serving 1000 quiet queues would otherwise hold 1000 idle tasks
/// and channels (about 1.5 KB each, issue 19) for queues that may never
/// run a job. Reports travel boxed: tokio's channel allocates its first
/// block of 32 slots with the channel, and 32 reports of 240 bytes made
/// that 7.7 KB per queue; 32 boxes are 256 bytes.
pub struct WriterHandle {
    ctx: Arc<WriterCtx>,
    shared: Arc<Writers>,
    /// Set by the first report, when the writer starts.
    tx: OnceLock<mpsc::UnboundedSender<Box<Report>>>,
}

impl WriterHandle {
    /// A handle whose writer starts at the first [`WriterHandle::send`].
    pub fn new(ctx: WriterCtx, shared: Arc<Writers>) -> WriterHandle {
        WriterHandle {
            ctx: Arc::new(ctx),
            shared,
            tx: OnceLock::new(),
        }
    }

    pub fn send(&self, r: Report) {
        // After the first report this is one atomic load. The writer
        // outlives every worker of its queue (it ends when this handle
        // drops), so the send cannot fail while a worker runs; a report
        // sent after the shutdown flush finds no writer and its job comes
        // back when its lease expires, as before.
        let tx = self.tx.get_or_init(|| self.shared.start(self.ctx.clone()));
        let _ = tx.send(Box::new(r));
    }
}

/// What every writer of a daemon shares, and the writers started so far.
pub struct Writers {
    store: Store,
    leases: Leases,
    counters: Arc<Counters>,
    /// Cancelled at shutdown, after every worker has reported.
    stop: CancellationToken,
    /// Where writers start: reports may come from any thread.
    runtime: tokio::runtime::Handle,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Writers {
    /// Must be called within the daemon's runtime.
    pub fn new(store: Store, leases: Leases, counters: Arc<Counters>) -> Writers {
        Writers {
            store,
            leases,
            counters,
            stop: CancellationToken::new(),
            runtime: tokio::runtime::Handle::current(),
            tasks: Mutex::new(Vec::new()),
        }
    }

    /// Tells every writer to write what it holds and end, and waits for
    /// each up to `flush`. Writers started meanwhile (a late report) are
    /// waited for too.
    pub async fn flush(&self, flush: Duration) {
        self.stop.cancel();
        loop {
            let tasks = self
                .tasks
                .lock()
                .map(|mut t| std::mem::take(&mut *t))
                .unwrap_or_default();
            if tasks.is_empty() {
                return;
            }
            for t in tasks {
                let _ = tokio::time::timeout(flush, t).await;
            }
        }
    }

    /// Starts a writer. It ends when its handle is dropped, or when `stop`
    /// is cancelled once it has written what is queued.
    fn start(&self, ctx: Arc<WriterCtx>) -> mpsc::UnboundedSender<Box<Report>> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Box<Report>>();
        let (store, leases, counters, stop) = (
            self.store.clone(),
            self.leases.clone(),
            self.counters.clone(),
            self.stop.clone(),
        );
        let task = self.runtime.spawn(async move {
            // Grows with the first batches and keeps its room: not MAX_BATCH
            // reports' worth up front.
            let mut batch = Vec::new();
            loop {
                let first = tokio::select! {
                    biased;
                    r = rx.recv() => r,
                    _ = stop.cancelled() => rx.try_recv().ok(),
                };
                let Some(first) = first else { return };
                batch.push(first);
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(r) => batch.push(r),
                        Err(_) => break,
                    }
                }
                let ids: Vec<&str> = batch.iter().map(|r| r.id()).collect();
                leases.mark_reported(&ctx.name, &ids);
                // Boxed: the write's state lives on the heap only while it
                // runs, so an idle writer's task stays small.
                Box::pin(write(&ctx, &store, &batch, &counters)).await;
                leases.remove(&ctx.name, &ids);
                batch.clear();
            }
        });
        if let Ok(mut tasks) = self.tasks.lock() {
            // Writers of queues removed by a reload have ended.
            tasks.retain(|t| !t.is_finished());
            tasks.push(task);
        }
        tx
    }
}

/// What the writer needs to know about its queue.
pub struct WriterCtx {
    pub name: Arc<str>,
    pub keys: QueueKeys,
    pub keep: Retention,
    pub dead: Retention,
    /// How long to keep retrying a write while Redis is unreachable: past the
    /// lease, the job has been or will be rescued and the write would be stale.
    pub give_up_after: Duration,
    pub metrics: Arc<crate::observe::Metrics>,
    /// How long per-day usage totals are kept after their day (`daemon.usage_retention`).
    pub usage_retention: Duration,
}

async fn write(ctx: &WriterCtx, store: &Store, batch: &[Box<Report>], counters: &Counters) {
    let mut done = Vec::new();
    let mut failed = Vec::new();
    let mut released = Vec::new();
    let (mut done_res, mut failed_res) = (Vec::new(), Vec::new());
    // Usage goes with the results it belongs to, in the same script call.
    let today = Day::today();
    let (mut done_usage, mut failed_usage) = (Tally::new(today), Tally::new(today));
    let count = |tally: &mut Tally, spent: &Spent| {
        tally.add(spent.tenant.as_deref(), spent.run, &spent.usage);
        spent
            .resources
            .as_ref()
            .and_then(|r| serde_json::to_string(r).ok())
    };
    for r in batch {
        match &**r {
            Report::Complete {
                id,
                fence,
                unique,
                result,
                outcome_ttl,
                spent,
            } => {
                done.push(Completion {
                    id,
                    fence: *fence,
                    unique_key: unique.as_deref(),
                    result: result.as_deref(),
                    outcome_ttl: *outcome_ttl,
                });
                done_res.push(count(&mut done_usage, spent));
            }
            Report::Fail {
                id,
                fence,
                retry_in,
                error,
                unique,
                outcome_ttl,
                spent,
            } => {
                failed.push(Failure {
                    id,
                    fence: *fence,
                    retry_in: *retry_in,
                    error,
                    unique_key: unique.as_deref(),
                    outcome_ttl: *outcome_ttl,
                });
                failed_res.push(spent.as_ref().and_then(|s| count(&mut failed_usage, s)));
            }
            Report::Release { id, fence, why } => released.push((id.as_str(), *fence, *why)),
        }
    }
    let released_jobs: Vec<(&str, u64)> = released.iter().map(|(id, f, _)| (*id, *f)).collect();
    let done_res: Vec<Option<&str>> = done_res.iter().map(Option::as_deref).collect();
    let failed_res: Vec<Option<&str>> = failed_res.iter().map(Option::as_deref).collect();
    let (c, f, r) = tokio::join!(
        with_retry(ctx, || store.complete_with(
            &ctx.keys,
            &done,
            ctx.keep,
            &done_res,
            Some(&done_usage),
            ctx.usage_retention
        )),
        with_retry(ctx, || store.fail_with(
            &ctx.keys,
            &failed,
            ctx.dead,
            &failed_res,
            Some(&failed_usage),
            ctx.usage_retention
        )),
        with_retry(ctx, || store.release(&ctx.keys, &released_jobs)),
    );
    let (c, f, r) = (
        c.unwrap_or_default(),
        f.unwrap_or_default(),
        r.unwrap_or_default(),
    );
    let ok = |v: &Vec<bool>| v.iter().filter(|x| **x).count() as u64;
    let fails = |want: FailResult| f.iter().filter(|x| **x == want).count() as u64;
    let stale = (c.len() + r.len()) as u64 - ok(&c) - ok(&r) + fails(FailResult::Stale);
    let given_back = |why: Release| {
        r.iter()
            .zip(&released)
            .filter(|(ok, (_, _, w))| **ok && *w == why)
            .count() as u64
    };
    let unstarted = given_back(Release::NoFreeSlot);
    counters.add(&counters.returned_unstarted, unstarted);
    ctx.metrics.returned_unstarted(&ctx.name, unstarted);
    if ok(&c) > 0 && ctx.metrics.jobs_total(&ctx.name, JobOutcome::Succeeded) == 0 {
        // The first minutes are not silent; later successes are counted
        // (the summary line, /metrics, `redq stats`), not logged one by one.
        let id = batch.iter().find_map(|r| match &**r {
            Report::Complete { id, .. } => Some(id.as_str()),
            _ => None,
        });
        tracing::info!(
            queue = %ctx.name,
            id = id.unwrap_or_default(),
            "first job of queue {} succeeded; later successes are counted, not logged: see the summary line, /metrics and `redq stats`",
            ctx.name
        );
    }
    for (outcome, n, counter) in [
        (JobOutcome::Succeeded, ok(&c), &counters.succeeded),
        (
            JobOutcome::Failed,
            fails(FailResult::Retrying),
            &counters.retried,
        ),
        (JobOutcome::Dead, fails(FailResult::Dead), &counters.dead),
        (
            JobOutcome::Released,
            given_back(Release::Shutdown),
            &counters.released,
        ),
        (JobOutcome::StaleRefused, stale, &counters.stale_refused),
    ] {
        counters.add(counter, n);
        ctx.metrics.job_outcome(&ctx.name, outcome, n);
    }
    if stale > 0 {
        tracing::warn!(queue = %ctx.name, stale, "results refused: the jobs' leases had been taken over");
    }
}

/// Retries one write while Redis is unreachable, up to `give_up_after`.
/// Safe: a script applied twice for the same fence refuses the second as stale.
async fn with_retry<T, F, Fut>(ctx: &WriterCtx, mut call: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = crate::Result<T>>,
{
    let started = Instant::now();
    let first = Duration::from_millis(50);
    let mut pause = first;
    loop {
        match call().await {
            Ok(v) => return Some(v),
            Err(e) if e.is_transient() && started.elapsed() < ctx.give_up_after => {
                // At warn once per batch; the retries at debug.
                if pause == first {
                    tracing::warn!(queue = %ctx.name, error = %e, "writing results failed; retrying");
                } else {
                    tracing::debug!(queue = %ctx.name, error = %e, "writing results failed again");
                }
                tokio::time::sleep(pause).await;
                // At most a second apart, so results held through a
                // failover are written within a second of the new primary
                // (the shared connection spaces its reconnections itself).
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            Err(e) => {
                tracing::error!(queue = %ctx.name, error = %e,
                    "gave up writing results; the jobs will be rescued when their leases expire");
                return None;
            }
        }
    }
}

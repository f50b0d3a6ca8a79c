//! The producer API for Rust programs (and the CLI): enqueue, inspect, steer.
//!
//! ```no_run
//! # async fn demo() -> redq::Result<()> {
//! let client = redq::Client::connect("redis://127.0.0.1:6379", "redq").await?;
//! let job = redq::NewJob::new(&serde_json::json!({"to": "a@example.com"}))?.priority(5);
//! let id = client.enqueue("emails", job).await?.id;
//! # Ok(()) }
//! ```

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::inspect::{self, DeadJob, JobInfo, JobState, QueueStats};
use crate::job::{NewJob, PreparedJob, DEFAULT_MAX_DOC_BYTES};
use crate::keys::QueueKeys;
use crate::scripts::LibraryStatus;
use crate::store::{DeadRetry, EndState, Enqueued, JobOutcome, Store, WasIn};

/// A producer's handle on redq. Cheap to share behind an `Arc`.
pub struct Client {
    store: Store,
    max_doc_bytes: usize,
    /// Queues this client has put in the registry already (one SADD per queue per process).
    registered: Mutex<HashSet<String>>,
    /// Single enqueues on their way to Redis (see [`Client::enqueue`]);
    /// started by the first one.
    singles: OnceLock<mpsc::UnboundedSender<Single>>,
    /// Single-enqueue calls in flight (sent directly or by the coalescing task).
    in_flight: Arc<AtomicUsize>,
}

/// Counts one call in flight until dropped (also when the caller's future
/// is dropped mid-call).
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One single enqueue waiting for its batch.
struct Single {
    /// The queue's name, checked (its keys are built once per batch).
    queue: String,
    job: PreparedJob,
    reply: oneshot::Sender<Result<Enqueued>>,
}

/// Most single enqueues sent in one script call.
const COALESCE_MAX: usize = 1000;

/// Sends single enqueues to Redis one batch at a time: whatever arrived
/// while the previous batch was in flight goes in the next call (grouped by
/// queue, in arrival order). It never waits for more, so a lone enqueue
/// costs what it did alone; many producers sharing a client share round
/// trips and script calls instead of queueing behind each other's.
async fn coalesce(
    store: Store,
    mut rx: mpsc::UnboundedReceiver<Single>,
    in_flight: Arc<AtomicUsize>,
) {
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < COALESCE_MAX {
            match rx.try_recv() {
                Ok(s) => batch.push(s),
                Err(_) => break,
            }
        }
        while !batch.is_empty() {
            // The first waiting job's queue, and every job for it, in order.
            let queue = batch[0].queue.clone();
            let (mine, rest): (Vec<Single>, Vec<Single>) =
                batch.drain(..).partition(|s| s.queue == queue);
            batch = rest;
            let (jobs, replies): (Vec<PreparedJob>, Vec<_>) =
                mine.into_iter().map(|s| (s.job, s.reply)).unzip();
            in_flight.fetch_add(1, Ordering::AcqRel);
            let call = InFlight(in_flight.clone());
            let sent = match store.queue(&queue) {
                Ok(q) => store.enqueue(&q, &jobs).await,
                Err(e) => Err(e),
            };
            drop(call);
            match sent {
                Ok(out) if out.len() == replies.len() => {
                    for (reply, e) in replies.into_iter().zip(out) {
                        let _ = reply.send(Ok(e));
                    }
                }
                Ok(out) => {
                    let detail = format!("{} replies for {} jobs", out.len(), replies.len());
                    for reply in replies {
                        let _ = reply.send(Err(crate::Error::protocol("enqueue", detail.clone())));
                    }
                }
                Err(e) => {
                    // The first caller gets the error itself, the others copies.
                    let mut replies = replies.into_iter();
                    let first = replies.next();
                    for reply in replies {
                        let _ = reply.send(Err(e.shared()));
                    }
                    if let Some(first) = first {
                        let _ = first.send(Err(e));
                    }
                }
            }
        }
    }
}

impl Client {
    /// Connects to Redis at `url` with key prefix `prefix` (usually "redq"),
    /// and loads the public `redq` function library when it is missing (or
    /// another version) and this user may, so that producers calling `FCALL
    /// redq_enqueue` can start before any daemon. A user that may not load
    /// functions connects all the same: `redq setup` loads them.
    /// A `rediss://` URL trusts the bundled Mozilla roots; for a private CA,
    /// a client certificate or a server name use [`Client::open`].
    pub async fn connect(url: &str, prefix: &str) -> Result<Client> {
        Client::with_library(Store::connect(url, prefix).await?).await
    }

    /// Connects as a `[redis]` table says: URL, key prefix, time-outs,
    /// `[redis.tls]` (CA file, client certificate, server name),
    /// `[redis.sentinel]` and `wait_replicas`; loads the `redq` library as
    /// [`Client::connect`] does.
    pub async fn open(redis: &crate::config::RedisConfig) -> Result<Client> {
        Client::with_library(Store::open(redis).await?).await
    }

    /// A client on `store`, after loading the public library when it is
    /// missing and allowed (a refusal is not an error: `redq setup` loads it).
    async fn with_library(store: Store) -> Result<Client> {
        if let Err(e) = store.ensure_library().await {
            if e.is_transient() {
                return Err(e);
            }
            tracing::debug!(error = %e, "not loading the `redq` function library");
        }
        Ok(Client::from_store(store))
    }

    /// A client on an existing store connection.
    pub fn from_store(store: Store) -> Client {
        Client {
            store,
            max_doc_bytes: DEFAULT_MAX_DOC_BYTES,
            registered: Mutex::new(HashSet::new()),
            singles: OnceLock::new(),
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Refuse job documents larger than this (default 1 MiB).
    pub fn with_max_doc_bytes(mut self, bytes: usize) -> Client {
        self.max_doc_bytes = bytes;
        self
    }

    /// The underlying store (for the worker side and tests).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Loads the `redq` Redis Function library (for `FCALL redq_enqueue`) unless current.
    pub async fn ensure_library(&self) -> Result<LibraryStatus> {
        self.store.ensure_library().await
    }

    async fn register(&self, queue: &str) -> Result<()> {
        let known = self
            .registered
            .lock()
            .map(|set| set.contains(queue))
            .unwrap_or(false);
        if !known {
            inspect::register(&self.store, &[queue]).await?;
            if let Ok(mut set) = self.registered.lock() {
                set.insert(queue.to_owned());
            }
        }
        Ok(())
    }

    /// Enqueues one job. Single enqueues issued at the same time through one
    /// client (many tasks sharing it) travel together in one script call;
    /// each still gets its own answer, and a lone one is sent at once, from
    /// the caller's own task.
    pub async fn enqueue(&self, queue: &str, job: NewJob) -> Result<Enqueued> {
        crate::keys::check_queue_name(queue)?;
        let job = job.prepare(self.max_doc_bytes)?;
        self.register(queue).await?;
        if self
            .in_flight
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            // Nothing in flight: no batch to join, so no hop through the
            // coalescing task. Calls that start while this one is out queue
            // there and go together.
            let _call = InFlight(self.in_flight.clone());
            let q = self.store.queue(queue)?;
            let mut out = self.store.enqueue(&q, std::slice::from_ref(&job)).await?;
            return match (out.pop(), out.is_empty()) {
                (Some(e), true) => Ok(e),
                _ => Err(crate::Error::protocol("enqueue", "expected one reply")),
            };
        }
        let tx = self.singles.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(coalesce(self.store.clone(), rx, self.in_flight.clone()));
            tx
        });
        let (reply, answer) = oneshot::channel();
        tx.send(Single {
            queue: queue.to_owned(),
            job,
            reply,
        })
        .map_err(|_| crate::Error::protocol("enqueue", "the enqueue task has stopped"))?;
        answer
            .await
            .map_err(|_| crate::Error::protocol("enqueue", "the enqueue task has stopped"))?
    }

    /// Enqueues many jobs into one queue in one round trip. Every job is checked
    /// first; if any is invalid, none is sent.
    pub async fn enqueue_many(&self, queue: &str, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>> {
        let q = self.store.queue(queue)?;
        let prepared = jobs
            .into_iter()
            .enumerate()
            .map(|(i, j)| {
                j.prepare(self.max_doc_bytes).map_err(|e| match e {
                    crate::Error::InvalidJob(m) if i > 0 => {
                        crate::Error::InvalidJob(format!("job #{i}: {m}"))
                    }
                    e => e,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        self.register(queue).await?;
        self.store.enqueue(&q, &prepared).await
    }

    /// One job, or `None` if the queue does not know the id.
    pub async fn job(&self, queue: &str, id: &str) -> Result<Option<JobInfo>> {
        inspect::job(&self.store, &self.store.queue(queue)?, id).await
    }

    /// Job `id`'s kept outcome (see [`NewJob::outcome_ttl`]), if it ended
    /// and keeps one.
    pub async fn outcome(&self, queue: &str, id: &str) -> Result<Option<JobOutcome>> {
        self.store.outcome(&self.store.queue(queue)?, id).await
    }

    /// Waits up to `timeout` for job `id` of `queue` to end, and returns how
    /// it ended; `Ok(None)` when it is still running or waiting after
    /// `timeout`. Answers at once for a job that already ended and keeps its
    /// outcome, or is kept as a finished job (`keep_completed`, the dead
    /// set). Blocks on a connection of its own, without polling (see
    /// [`Store::wait_outcome`]); survives a lost connection within
    /// `timeout`.
    ///
    /// A job can be waited for when it keeps an outcome: enqueued with
    /// [`NewJob::outcome_ttl`] (`outcome_ttl_ms`), or in a queue with
    /// `outcome_ttl`. Otherwise, or for an id the queue does not know
    /// (never enqueued, removed, outcome expired), the error is
    /// [`Error::NoOutcome`], saying which.
    pub async fn wait(
        &self,
        queue: &str,
        id: &str,
        timeout: Duration,
    ) -> Result<Option<JobOutcome>> {
        let q = self.store.queue(queue)?;
        if let Some(o) = self.store.outcome(&q, id).await? {
            return Ok(Some(o));
        }
        match inspect::job(&self.store, &q, id).await? {
            None => {
                // It may have ended (and its record gone) since the first look.
                if let Some(o) = self.store.outcome(&q, id).await? {
                    return Ok(Some(o));
                }
                return Err(Error::NoOutcome(format!(
                    "job {id} not found in queue {queue}, and no outcome of it is kept: never enqueued there, \
                     or it ended and was removed without keeping an outcome (or its outcome expired); \
                     to wait for a job, enqueue it with outcome_ttl_ms (redq enqueue --outcome-ttl) \
                     or set queues.{queue}.outcome_ttl"
                )));
            }
            Some(info) if matches!(info.state, JobState::Succeeded | JobState::Dead) => {
                // Kept as a finished job (keep_completed, the dead set).
                return Ok(Some(JobOutcome {
                    id: info.id,
                    state: if info.state == JobState::Dead {
                        EndState::Dead
                    } else {
                        EndState::Succeeded
                    },
                    attempts: info.attempts,
                    result: info.result,
                    last_error: info.last_error,
                    finished_ms: info.finished_at_ms.unwrap_or_default(),
                }));
            }
            Some(info) => {
                if info.outcome_ttl_ms.is_none()
                    && self.store.queue_outcome_ttl(&q).await?.is_none()
                {
                    return Err(Error::NoOutcome(format!(
                        "job {id} of queue {queue} is {} and keeps no outcome, so its end leaves nothing to wait for: \
                         it was enqueued without outcome_ttl_ms and the queue sets no outcome_ttl; \
                         enqueue with outcome_ttl_ms (redq enqueue --outcome-ttl) or set queues.{queue}.outcome_ttl",
                        info.state.as_str()
                    )));
                }
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pause = Duration::from_millis(100);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.store.wait_outcome(&q, id, left).await {
                Ok(o) => return Ok(o),
                // A lost connection (a failover, a restart) within the time:
                // wait again on a new one.
                Err(e) if e.is_transient() && left > pause => {
                    tracing::debug!(error = %e, "waiting for an outcome: connection lost; waiting again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Depths by state for each queue, and rates over the last minute.
    pub async fn stats(&self, queues: &[String]) -> Result<Vec<QueueStats>> {
        let keys = queues
            .iter()
            .map(|q| self.store.queue(q))
            .collect::<Result<Vec<QueueKeys>>>()?;
        let mut stats = inspect::stats(&self.store, &keys).await?;
        let rates = inspect::last_minute(&self.store, &keys).await?;
        for (s, r) in stats.iter_mut().zip(rates) {
            s.last_minute = Some(r);
        }
        Ok(stats)
    }

    /// Queues in the registry.
    pub async fn queues(&self) -> Result<Vec<String>> {
        inspect::registered_queues(&self.store).await
    }

    pub async fn pause(&self, queue: &str) -> Result<()> {
        self.store.pause(&self.store.queue(queue)?).await
    }

    pub async fn resume(&self, queue: &str) -> Result<()> {
        self.store.resume(&self.store.queue(queue)?).await
    }

    /// One page of `queue`'s jobs in `state` (see [`inspect::list_jobs`]).
    pub async fn list_jobs(
        &self,
        queue: &str,
        state: inspect::ListState,
        query: &inspect::ListQuery,
    ) -> Result<inspect::Page> {
        inspect::list_jobs(&self.store, &self.store.queue(queue)?, state, query).await
    }

    /// Cancels live jobs of `queue` (see [`Store::cancel`]); the state each
    /// was in.
    pub async fn cancel(&self, queue: &str, ids: &[String]) -> Result<Vec<WasIn>> {
        self.store.cancel(&self.store.queue(queue)?, ids).await
    }

    /// Runs scheduled or retrying jobs of `queue` now (see
    /// [`Store::run_now`]); the state each was in.
    pub async fn promote(&self, queue: &str, ids: &[String]) -> Result<Vec<WasIn>> {
        self.store.run_now(&self.store.queue(queue)?, ids).await
    }

    /// Deletes finished jobs of `queue` (see [`Store::delete`]); the state
    /// each was in.
    pub async fn delete(&self, queue: &str, ids: &[String]) -> Result<Vec<WasIn>> {
        self.store.delete(&self.store.queue(queue)?, ids).await
    }

    /// Dead jobs, newest first.
    pub async fn dead_list(
        &self,
        queue: &str,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<DeadJob>> {
        inspect::dead_list(&self.store, &self.store.queue(queue)?, offset, limit).await
    }

    /// Requeues dead jobs by id; what happened to each.
    pub async fn dead_retry(&self, queue: &str, ids: &[String]) -> Result<Vec<DeadRetry>> {
        self.store.dead_retry(&self.store.queue(queue)?, ids).await
    }

    /// Requeues every dead job (in batches); returns how many were requeued.
    pub async fn dead_retry_all(&self, queue: &str) -> Result<u64> {
        let q = self.store.queue(queue)?;
        let mut total = 0;
        let mut skip = 0;
        loop {
            let page = inspect::dead_list(&self.store, &q, skip, 500).await?;
            if page.is_empty() {
                return Ok(total);
            }
            let ids: Vec<String> = page.into_iter().map(|d| d.id).collect();
            let done = self.store.dead_retry(&q, &ids).await?;
            let requeued = done.iter().filter(|r| **r == DeadRetry::Requeued).count();
            // Jobs that stayed (unique key taken) keep their place: skip them.
            skip += ids.len() - requeued;
            total += requeued as u64;
        }
    }

    /// Deletes dead jobs by id; returns how many were deleted.
    pub async fn dead_purge(&self, queue: &str, ids: &[String]) -> Result<u64> {
        self.store
            .dead_purge_ids(&self.store.queue(queue)?, ids)
            .await
    }

    /// Deletes dead jobs that died at least `older_than` ago (all when zero).
    pub async fn dead_purge_older(&self, queue: &str, older_than: Duration) -> Result<u64> {
        self.store
            .dead_purge_older(&self.store.queue(queue)?, older_than)
            .await
    }
}

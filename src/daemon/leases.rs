//! The lease keeper: renews every in-flight lease in one batched call per
//! queue, on its own task, independent of handlers.
//!
//! A job whose renewal is refused (its fence is stale: the lease expired and
//! the job was rescued) is stopped with [`StopReason::LeaseLost`], and its
//! outcome is never written.
//!
//! Self-fencing: each running job also watches its own lease deadline
//! ([`Leases::insert`] hands the runner a receiver), which is the time the
//! last successful renewal (or the claim) was *sent* plus the lease,
//! measured on the monotonic clock: never later than the deadline Redis
//! holds, which starts when the call runs there. The runner stops the job
//! [`self_fence_margin`] before it, whatever a renewal call is doing (one
//! that hangs on a partitioned connection included), and drops the handler
//! at once (a command handler's process group gets SIGKILL). Another daemon
//! takes the job over only [`crate::store::TAKEOVER_GRACE`] after Redis's
//! deadline, so the old run has stopped by then with margin + grace to
//! spare. Each renewal call gives up after [`renew_call_timeout`], well
//! inside a renewal interval, so a slow call does not hold up the next.
use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::QueueRt;
use crate::store::{Renewal, Store};

/// Why a running job was told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum StopReason {
    None = 0,
    /// The lease is gone: another worker may run the job; write nothing.
    LeaseLost = 1,
    /// The daemon is stopping: give the job back without spending an attempt.
    Shutdown = 2,
    /// The handler ran past its time-out.
    Timeout = 3,
    /// The job was cancelled in Redis while it ran: stop, write nothing.
    Cancelled = 4,
}

/// Stop signal for one running job: the first reason set wins.
#[derive(Clone, Default)]
pub struct Stop {
    pub cancel: CancellationToken,
    reason: Arc<AtomicU8>,
}

impl Stop {
    pub fn stop(&self, why: StopReason) {
        let _ = self
            .reason
            .compare_exchange(0, why as u8, Ordering::AcqRel, Ordering::Acquire);
        self.cancel.cancel();
    }
    pub fn reason(&self) -> StopReason {
        match self.reason.load(Ordering::Acquire) {
            1 => StopReason::LeaseLost,
            2 => StopReason::Shutdown,
            3 => StopReason::Timeout,
            4 => StopReason::Cancelled,
            _ => StopReason::None,
        }
    }
}

/// How long before its local lease deadline a job is stopped: room for a
/// late timer and the kill itself. A tenth of the lease, at most 500 ms, so
/// it stays below [`crate::store::TAKEOVER_GRACE`].
pub fn self_fence_margin(lease: Duration) -> Duration {
    (lease / 10).min(Duration::from_millis(500))
}

/// How long one renewal call may take before the keeper gives up on it:
/// half the renewal interval (so at most a sixth of the lease), and never
/// more than Redis's `command_timeout`.
pub fn renew_call_timeout(renew_every: Duration, command_timeout: Duration) -> Duration {
    (renew_every / 2).min(command_timeout)
}

struct Held {
    rt: Arc<QueueRt>,
    fence: u64,
    /// The local lease deadline; the runner watches it.
    deadline: watch::Sender<Instant>,
    stop: Stop,
    /// The outcome is with the writer: a refused renewal then means the
    /// write got there first, not a lost lease (a stale write is logged there).
    reported: bool,
}

type Key = (Arc<str>, String);
/// Per queue: its runtime and the (id, fence) pairs held.
type ByQueue = HashMap<Arc<str>, (Arc<QueueRt>, Vec<(String, u64)>)>;

/// Every job this daemon holds a lease on.
#[derive(Clone, Default)]
pub struct Leases {
    held: Arc<Mutex<HashMap<Key, Held>>>,
}

impl Leases {
    /// Holds `id` under `fence` until `deadline` (local, monotonic); the
    /// receiver follows the deadline as renewals move it.
    pub fn insert(
        &self,
        rt: &Arc<QueueRt>,
        id: &str,
        fence: u64,
        deadline: Instant,
        stop: Stop,
    ) -> watch::Receiver<Instant> {
        let (tx, rx) = watch::channel(deadline);
        if let Ok(mut m) = self.held.lock() {
            let held = Held {
                rt: rt.clone(),
                fence,
                deadline: tx,
                stop,
                reported: false,
            };
            m.insert((rt.name.clone(), id.to_owned()), held);
        }
        rx
    }

    pub fn remove(&self, queue: &Arc<str>, ids: &[&str]) {
        if let Ok(mut m) = self.held.lock() {
            for id in ids {
                m.remove(&(queue.clone(), (*id).to_owned()));
            }
        }
    }

    /// Marks jobs whose outcome is about to be written; they stay held (and
    /// renewed) until [`Leases::remove`].
    pub fn mark_reported(&self, queue: &Arc<str>, ids: &[&str]) {
        if let Ok(mut m) = self.held.lock() {
            for id in ids {
                if let Some(h) = m.get_mut(&(queue.clone(), (*id).to_owned())) {
                    h.reported = true;
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.held.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// A running job of the queue with base key `base` was cancelled (a
    /// message from cancel.lua): stops it if this daemon holds it under
    /// `fence` and has not written its outcome yet. True when it did.
    pub fn cancelled(&self, base: &str, id: &str, fence: u64) -> bool {
        let Ok(m) = self.held.lock() else {
            return false;
        };
        let held = m.iter().find(|((_, held_id), h)| {
            held_id == id && h.fence == fence && h.rt.keys.base() == base
        });
        match held {
            Some(((queue, _), h)) if !h.reported => {
                tracing::info!(queue = %queue, job = %id, "the job was cancelled; stopping its handler");
                h.stop.stop(StopReason::Cancelled);
                true
            }
            _ => false,
        }
    }

    /// Tells every running job to stop for `why`.
    pub fn stop_all(&self, why: StopReason) {
        if let Ok(m) = self.held.lock() {
            for h in m.values() {
                h.stop.stop(why);
            }
        }
    }

    /// Renews every lease once, one call per queue, all queues at once;
    /// stops jobs whose lease is lost. Each call gives up after
    /// [`renew_call_timeout`] (the jobs' own deadlines stop them if
    /// renewals keep failing).
    pub async fn renew_all(&self, store: &Store, command_timeout: Duration) {
        let mut by_queue: ByQueue = HashMap::new();
        if let Ok(m) = self.held.lock() {
            for ((q, id), h) in m.iter() {
                let entry = by_queue
                    .entry(q.clone())
                    .or_insert_with(|| (h.rt.clone(), Vec::new()));
                entry.1.push((id.clone(), h.fence));
            }
        }
        let calls = by_queue.into_iter().map(|(queue, (rt, jobs))| async move {
            let sent = Instant::now();
            let pairs: Vec<(&str, u64)> = jobs.iter().map(|(id, t)| (id.as_str(), *t)).collect();
            let limit = renew_call_timeout(rt.cfg.effective_lease_renew(), command_timeout);
            match tokio::time::timeout(limit, store.renew(&rt.keys, &pairs, rt.cfg.lease)).await {
                Ok(Ok((_, renewed))) => self.renewed(&queue, &rt, &jobs, &renewed, sent),
                Ok(Err(e)) => {
                    tracing::warn!(queue = %queue, error = %e, "could not renew {} leases", pairs.len())
                }
                Err(_) => tracing::warn!(
                    queue = %queue,
                    "could not renew {} leases: no answer within {limit:?}",
                    pairs.len()
                ),
            }
        });
        futures::future::join_all(calls).await;
    }

    /// Applies one queue's renewal reply: moves the deadlines of the jobs
    /// renewed (from when the call was `sent`), stops those refused.
    fn renewed(
        &self,
        queue: &Arc<str>,
        rt: &QueueRt,
        jobs: &[(String, u64)],
        renewed: &[Renewal],
        sent: Instant,
    ) {
        let Ok(m) = self.held.lock() else {
            return;
        };
        for ((id, fence), ok) in jobs.iter().zip(renewed) {
            let Some(h) = m.get(&(queue.clone(), id.clone())) else {
                continue;
            };
            if h.fence != *fence {
                continue;
            }
            if *ok == Renewal::Renewed {
                h.deadline.send_replace(sent + rt.cfg.lease);
            } else if h.reported {
                tracing::debug!(queue = %queue, job = %id, "renewal refused: the job's outcome was written first");
            } else if *ok == Renewal::Gone {
                tracing::info!(queue = %queue, job = %id, "the job was cancelled; stopping its handler");
                h.stop.stop(StopReason::Cancelled);
            } else {
                tracing::warn!(queue = %queue, job = %id, "lease lost: the job was taken over; its result will not be written");
                h.stop.stop(StopReason::LeaseLost);
            }
        }
    }

    /// The renewal interval: the shortest `lease_renew` of the jobs held.
    pub fn interval(&self, default: Duration) -> Duration {
        let m = match self.held.lock() {
            Ok(m) => m,
            Err(_) => return default,
        };
        m.values()
            .map(|h| h.rt.cfg.effective_lease_renew())
            .min()
            .unwrap_or(default)
            .max(Duration::from_millis(20))
    }
}

/// The keeper's name in `/healthz`.
pub const LOOP: &str = "lease keeper";

/// The keeper loop: renew, sleep, repeat until `stop`.
pub async fn keep(
    leases: Leases,
    store: Store,
    command_timeout: Duration,
    stop: CancellationToken,
    health: Arc<crate::observe::Health>,
) {
    loop {
        let wait = leases.interval(Duration::from_millis(500));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        leases.renew_all(&store, command_timeout).await;
        health.beat(LOOP);
    }
}

/// Resolves once the lease deadline `rx` follows is within `margin` and
/// was not moved meanwhile (or the keeper dropped the job's entry).
pub async fn lease_ends(mut rx: watch::Receiver<Instant>, margin: Duration) {
    loop {
        let deadline = *rx.borrow_and_update();
        let stop_at = deadline.checked_sub(margin).unwrap_or(deadline);
        tokio::select! {
            _ = tokio::time::sleep_until(stop_at) => {
                if !rx.has_changed().unwrap_or(false) {
                    return;
                }
            }
            changed = rx.changed() => {
                if changed.is_err() {
                    // The entry is gone: the job's outcome is with the writer.
                    std::future::pending::<()>().await;
                }
            }
        }
    }
}

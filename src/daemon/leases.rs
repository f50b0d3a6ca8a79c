//! The lease keeper: renews every in-flight lease in one batched call per
//! queue, on its own task, independent of handlers.
//!
//! A job whose renewal is refused (its token is stale: the lease expired and
//! the job was rescued) is stopped with [`StopReason::LeaseLost`], and its
//! outcome is never written. So is a job whose lease may already have
//! expired on Redis because renewals could not get through: the local
//! deadline is the time the last successful renewal was *sent* plus the
//! lease, measured on the monotonic clock, which is never later than Redis's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::QueueRt;
use crate::store::Store;

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
}

/// Stop signal for one running job: the first reason set wins.
#[derive(Clone, Default)]
pub struct Stop {
    pub token: CancellationToken,
    reason: Arc<AtomicU8>,
}

impl Stop {
    pub fn stop(&self, why: StopReason) {
        let _ = self
            .reason
            .compare_exchange(0, why as u8, Ordering::AcqRel, Ordering::Acquire);
        self.token.cancel();
    }
    pub fn reason(&self) -> StopReason {
        match self.reason.load(Ordering::Acquire) {
            1 => StopReason::LeaseLost,
            2 => StopReason::Shutdown,
            3 => StopReason::Timeout,
            _ => StopReason::None,
        }
    }
}

struct Held {
    rt: Arc<QueueRt>,
    token: u64,
    deadline: Instant,
    stop: Stop,
    /// The outcome is with the writer: a refused renewal then means the
    /// write got there first, not a lost lease (a stale write is logged there).
    reported: bool,
}

type Key = (Arc<str>, String);
/// Per queue: its runtime and the (id, token) pairs held.
type ByQueue = HashMap<Arc<str>, (Arc<QueueRt>, Vec<(String, u64)>)>;

/// Every job this daemon holds a lease on.
#[derive(Clone, Default)]
pub struct Leases {
    held: Arc<Mutex<HashMap<Key, Held>>>,
}

impl Leases {
    pub fn insert(&self, rt: &Arc<QueueRt>, id: &str, token: u64, deadline: Instant, stop: Stop) {
        if let Ok(mut m) = self.held.lock() {
            let held = Held {
                rt: rt.clone(),
                token,
                deadline,
                stop,
                reported: false,
            };
            m.insert((rt.name.clone(), id.to_owned()), held);
        }
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

    /// Tells every running job to stop for `why`.
    pub fn stop_all(&self, why: StopReason) {
        if let Ok(m) = self.held.lock() {
            for h in m.values() {
                h.stop.stop(why);
            }
        }
    }

    /// Renews every lease once; stops jobs whose lease is lost or may be.
    pub async fn renew_all(&self, store: &Store) {
        let mut by_queue: ByQueue = HashMap::new();
        if let Ok(m) = self.held.lock() {
            for ((q, id), h) in m.iter() {
                let entry = by_queue
                    .entry(q.clone())
                    .or_insert_with(|| (h.rt.clone(), Vec::new()));
                entry.1.push((id.clone(), h.token));
            }
        }
        for (queue, (rt, jobs)) in by_queue {
            let sent = Instant::now();
            let pairs: Vec<(&str, u64)> = jobs.iter().map(|(id, t)| (id.as_str(), *t)).collect();
            match store.extend(&rt.keys, &pairs, rt.cfg.lease).await {
                Ok((_, renewed)) => {
                    if let Ok(mut m) = self.held.lock() {
                        for ((id, token), ok) in jobs.iter().zip(renewed) {
                            let Some(h) = m.get_mut(&(queue.clone(), id.clone())) else {
                                continue;
                            };
                            if h.token != *token {
                                continue;
                            }
                            if ok {
                                h.deadline = sent + rt.cfg.lease;
                            } else if h.reported {
                                tracing::debug!(queue = %queue, job = %id, "renewal refused: the job's outcome was written first");
                            } else {
                                tracing::warn!(queue = %queue, job = %id, "lease lost: the job was taken over; its result will not be written");
                                h.stop.stop(StopReason::LeaseLost);
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(queue = %queue, error = %e, "could not renew {} leases", pairs.len())
                }
            }
        }
        self.expire_overdue();
    }

    /// Stops jobs whose lease may have expired on Redis by now.
    fn expire_overdue(&self) {
        let now = Instant::now();
        if let Ok(m) = self.held.lock() {
            for ((q, id), h) in m.iter() {
                // A small margin: stop before the lease can lapse, not after.
                let margin = (h.rt.cfg.lease / 10).min(Duration::from_secs(1));
                if now + margin >= h.deadline && h.stop.reason() == StopReason::None && !h.reported
                {
                    tracing::warn!(queue = %q, job = %id, "lease may have expired (renewals failed); stopping the job");
                    h.stop.stop(StopReason::LeaseLost);
                }
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
    stop: CancellationToken,
    health: Arc<crate::observe::Health>,
) {
    loop {
        let wait = leases.interval(Duration::from_millis(500));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        leases.renew_all(&store).await;
        health.beat(LOOP);
    }
}

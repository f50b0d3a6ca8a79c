//! The worker daemon (`redq run`), also embeddable as a library.
//!
//! Shape: a [`supervisor`] builds one [`pool`] per queue (or per
//! `[pools.<name>]`), each a fetcher that claims as many jobs as it has free
//! worker slots in one call and runs each in its own task ([`runner`]).
//! Results go through a per-queue [`writer`] that batches them. Background
//! duties are small components, each one loop over its tick and a stop
//! signal: the [`leases`] keeper, the [`reaper`], the [`waker`] (blocks on a
//! dedicated connection so idle daemons do not poll), the [`looker`] (one
//! look for work no wake-up announced, for all idle pools), the [`promoter`]
//! (starts scheduled jobs at their due time, told of new ones by Pub/Sub),
//! and [`notify`] (systemd). [`signals`] maps signals to actions.
//!
//! Leader-only duties run under a [`crate::leader::Leader`] lease: today
//! [`cron`], whose loop runs on every daemon but evaluates the entries only
//! while this daemon holds the lease. The others (reaper, promotion, retention
//! in the writers, heartbeat, depth poller) stay on every daemon: each works
//! on the queues that daemon serves, or reports about that daemon.
//!
//! Start order: Redis checks → function library → pools (each queue's
//! writer starts at its first report) → cron and its lease → lease keeper →
//! reaper → waker → looker → promoter → READY. Stop order:
//! cron stops and releases its lease → pools stop claiming → running jobs
//! drain to `shutdown_timeout` → the rest are stopped and released → writers
//! flush → keeper, reaper, waker, looker, promoter stop → exit. The promoter runs on
//! through the drain: what falls due then is handed to other daemons.

mod backoff;
mod cron;
mod handlers;
pub mod heartbeat;
mod leases;
mod looker;
mod notify;
mod observer;
mod pool;
mod probe;
mod promoter;
mod reaper;
mod runner;
mod signals;
mod supervisor;
mod trim;
mod waker;
mod writer;

pub use handlers::{check_runnable, runnable_problems};
pub use supervisor::{Daemon, DaemonHandle, WorkerBuilder};

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::sync::Mutex;

use crate::config::QueueConfig;
use crate::error::Result;
use crate::handler::Handler;
use crate::inspect;
use crate::keys::QueueKeys;
use crate::observe::{Health, Metrics};
use crate::store::{QueueSettings, Retention, Store};
use leases::Leases;
use pool::Pool;
use promoter::Promoter;

/// At most this many claims of a daemon's pools are in flight at once
/// (and, as pools stop, the calls that end their hand-off registrations).
/// On one Redis they all share one connection, where Redis answers them
/// one after the other anyway, so the bound costs no throughput (on a
/// Cluster, 32 calls spread over its nodes still keep them busy); without
/// it a daemon serving 1000 queues starts with 1000 claims at once, ~8 KB
/// of call state each, and glibc keeps the heap they spread over (issue
/// 19). A pool claims its queues one at a time, so only a daemon with more
/// pools than this claiming together ever waits for a turn.
pub(crate) const CLAIMS_IN_FLIGHT: usize = 32;

/// State every component shares.
pub struct Shared {
    pub(crate) store: Store,
    pub(crate) leases: Leases,
    pub(crate) counters: Arc<Counters>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) health: Arc<Health>,
    /// This daemon's id (`hostname:pid:random`): its heartbeat entry, and
    /// the start of its pools' names in the queues' hand-off registrations.
    pub(crate) id: Arc<str>,
    /// The pools serving now (set by the supervisor at start and on reload).
    pub(crate) pools: Mutex<Vec<Arc<Pool>>>,
    /// Told the queues served, at start and on reload.
    pub(crate) promoter: Arc<Promoter>,
    /// The idle look of all idle pools at once.
    pub(crate) looker: Arc<looker::Looker>,
    /// Turns for the pools' claims in flight ([`CLAIMS_IN_FLIGHT`]).
    pub(crate) claims: Arc<tokio::sync::Semaphore>,
    /// Each configured queue's settings as written to Redis (at start, on
    /// reload, and again when Redis is found to have lost them).
    pub(crate) settings: Mutex<Vec<(QueueKeys, QueueSettings)>>,
    /// Why the last reload did not apply, until one does: systemd's STATUS
    /// leads with it.
    pub(crate) reload_error: Mutex<Option<String>>,
}

impl Shared {
    /// Writes every configured queue's settings to Redis and lists the
    /// queues in the registry. At maxmemory the registry is left out (it only
    /// lists queues for `redq stats`); the settings are written all the same.
    pub(crate) async fn set_up_queues(&self) -> Result<()> {
        let settings = self.settings.lock().map(|s| s.clone()).unwrap_or_default();
        let names: Vec<&str> = settings.iter().map(|(k, _)| k.queue()).collect();
        match inspect::register(&self.store, &names).await {
            Err(e) if e.is_oom() => tracing::warn!(
                "Redis is at maxmemory: the queues were not added to the registry `redq stats` lists; \
                 they are served all the same"
            ),
            other => other?,
        }
        // One atomic call per queue (it works at maxmemory): a claim sees
        // each queue's old settings or its new ones.
        for (keys, s) in &settings {
            self.store.set_up_queue(keys, s).await?;
        }
        Ok(())
    }

    /// Every queue served now.
    pub(crate) fn queues(&self) -> Vec<Arc<QueueRt>> {
        self.pools
            .lock()
            .map(|p| p.iter().flat_map(|pool| pool.queues.clone()).collect())
            .unwrap_or_default()
    }
}

/// One queue as the daemon runs it: settings, keys, handler, result writer.
pub(crate) struct QueueRt {
    pub name: Arc<str>,
    pub keys: QueueKeys,
    /// Shared with the spec of the pool that runs the queue.
    pub cfg: Arc<QueueConfig>,
    pub handler: Arc<dyn Handler>,
    /// How long a stopped handler gets to return before it is abandoned.
    pub grace: Duration,
    pub writer: writer::WriterHandle,
    pub metrics: Arc<crate::observe::Metrics>,
    /// Jobs of this queue running in this daemon.
    pub in_flight: AtomicU64,
}

/// How many completed jobs a queue keeps, and for how long.
pub(crate) fn retention(cfg: &QueueConfig) -> Retention {
    Retention {
        keep: cfg.keep_completed,
        max_age: cfg.keep_completed_for,
    }
}

/// How many dead jobs a queue keeps, and for how long.
pub(crate) fn dead_retention(cfg: &QueueConfig) -> Retention {
    Retention {
        keep: cfg.dead_max,
        max_age: cfg.dead_ttl,
    }
}

/// Counters since start, for STATUS lines and summary logs; and a signal
/// for whoever waits on them (an embedding program, a test): each change
/// wakes [`Counters::until`].
#[derive(Default)]
pub struct Counters {
    pub succeeded: AtomicU64,
    pub retried: AtomicU64,
    pub dead: AtomicU64,
    /// Jobs given back at shutdown (stopped, or handed to a stopping daemon).
    pub released: AtomicU64,
    /// Jobs that came beyond the free slots (a hand-off and a claim
    /// crossed) and went back to pending unstarted.
    pub returned_unstarted: AtomicU64,
    /// Jobs received by direct hand-off from an enqueue (not claimed).
    pub handed_off: AtomicU64,
    pub lease_lost: AtomicU64,
    pub stale_refused: AtomicU64,
    pub running: AtomicI64,
    changed: tokio::sync::Notify,
}

impl Counters {
    /// Adds `n` to `c`, one of this value's counters, and wakes the waiters.
    pub fn add(&self, c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
        self.changed.notify_waiters();
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    /// Waits until `holds` is true of the counters: checked now and after
    /// every change, never by polling. Bound it with a time-out.
    pub async fn until(&self, holds: impl Fn(&Counters) -> bool) {
        loop {
            let changed = self.changed.notified();
            let mut changed = std::pin::pin!(changed);
            // Registered before the check, so a change in between wakes it.
            changed.as_mut().enable();
            if holds(self) {
                return;
            }
            changed.await;
        }
    }
}

//! The worker daemon (`redq run`), also embeddable as a library.
//!
//! Shape: a [`supervisor`] builds one [`pool`] per queue (or per
//! `[pools.<name>]`), each a fetcher that claims as many jobs as it has free
//! worker slots in one call and runs each in its own task ([`runner`]).
//! Results go through a per-queue [`writer`] that batches them. Background
//! duties are small components, each one loop over its tick and a stop
//! signal: the [`leases`] keeper, the [`reaper`], the [`waker`] (blocks on a
//! dedicated connection so idle daemons do not poll), the [`promoter`]
//! (starts scheduled jobs at their due time, told of new ones by Pub/Sub),
//! and [`notify`] (systemd). [`signals`] maps signals to actions.
//!
//! Leader-only duties run under a [`crate::leader::Leader`] lease: today
//! [`cron`], whose loop runs on every daemon but evaluates the entries only
//! while this daemon holds the lease. The others (reaper, promotion, retention
//! in the writers, heartbeat, depth poller) stay on every daemon: each works
//! on the queues that daemon serves, or reports about that daemon.
//!
//! Start order: Redis checks → function library → writers → pools → cron and
//! its lease → lease keeper → reaper → waker → promoter → READY. Stop order:
//! cron stops and releases its lease → pools stop claiming → running jobs
//! drain to `shutdown_timeout` → the rest are stopped and released → writers
//! flush → keeper, reaper, waker, promoter stop → exit. The promoter runs on
//! through the drain: what falls due then is handed to other daemons.

mod backoff;
mod cron;
mod handlers;
pub mod heartbeat;
mod leases;
mod notify;
mod observer;
mod pool;
mod probe;
mod promoter;
mod reaper;
mod runner;
mod signals;
mod supervisor;
mod waker;
mod writer;

pub use handlers::check_runnable;
pub use supervisor::{Daemon, DaemonHandle, WorkerBuilder};

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::QueueConfig;
use crate::handler::Handler;
use crate::keys::QueueKeys;
use crate::store::Retention;

/// One queue as the daemon runs it: settings, keys, handler, result writer.
pub(crate) struct QueueRt {
    pub name: Arc<str>,
    pub keys: QueueKeys,
    pub cfg: QueueConfig,
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

/// Counters since start, for STATUS lines and summary logs.
#[derive(Default)]
pub struct Counters {
    pub succeeded: AtomicU64,
    pub retried: AtomicU64,
    pub dead: AtomicU64,
    pub released: AtomicU64,
    /// Jobs received by direct hand-off from an enqueue (not claimed).
    pub handed_off: AtomicU64,
    pub lease_lost: AtomicU64,
    pub stale_refused: AtomicU64,
    pub running: AtomicI64,
}

impl Counters {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

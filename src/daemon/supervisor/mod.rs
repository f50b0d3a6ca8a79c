//! The supervisor: starts every component in order ([`start`]), turns
//! signals into actions, reloads ([`reconcile`]), and stops everything in
//! the reverse order (here).
//!
//! Reload builds new pools only for pools whose settings changed; an old
//! pool stops claiming and its running jobs finish under the old settings,
//! so nothing running is dropped.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

mod reconcile;
mod start;

pub use start::WorkerBuilder;

use self::reconcile::PoolSpec;
use super::handlers::Library;
use super::leases::StopReason;
use super::pool::Pool;
use super::signals::Action;
use super::waker::Routes;
use super::writer::Writers;
use super::{notify, Counters, Shared};
use crate::config::{Config, Overrides};
use crate::error::Result;
use crate::leader::Leader;

/// Beyond the longest handler grace, how long stopped jobs get to hand
/// their release to the writers before the daemon gives up on them (their
/// leases then return them).
const STOP_SLACK: Duration = Duration::from_secs(1);
/// How long each writer may take to flush what it holds at shutdown: its
/// calls retry with backoff while Redis is away, and what is not written
/// comes back through lease expiry.
const WRITER_FLUSH: Duration = Duration::from_secs(30);

/// A running daemon. [`Daemon::run`] returns after a shutdown.
pub struct Daemon {
    shared: Arc<Shared>,
    config: Config,
    reload: Option<(Option<PathBuf>, Overrides)>,
    library: Library,
    stop: CancellationToken,
    routes: Routes,
    tasks: Vec<JoinHandle<()>>,
    fetchers: Vec<JoinHandle<()>>,
    /// The queues' result writers (each starts at its queue's first report).
    writers: Arc<Writers>,
    draining: Vec<Arc<Pool>>,
    /// The pools serving now, with the spec each was built from.
    specs: Vec<(PoolSpec, Arc<Pool>)>,
    /// The running cron loop and its leader lease (a new loop starts on each reload).
    cron: Option<CronDuty>,
    tx: mpsc::UnboundedSender<Action>,
    rx: mpsc::UnboundedReceiver<Action>,
    http_addr: std::net::SocketAddr,
    /// Pools started so far (numbers each pool's hand-off name).
    pools_started: u64,
}

/// The cron loop's stop token and the leader lease it runs under (`None`
/// without entries: such a daemon does not contend).
struct CronDuty {
    stop: CancellationToken,
    leader: Option<Leader>,
    ttl: Duration,
}

impl CronDuty {
    /// Stops the loop and releases the lease, so another daemon leads at once.
    async fn step_down(self) {
        self.stop.cancel();
        if let Some(leader) = self.leader {
            leader.step_down().await;
        }
    }
}

/// Asks a running daemon to reload or shut down (what the signals do).
#[derive(Clone)]
pub struct DaemonHandle {
    tx: mpsc::UnboundedSender<Action>,
}

impl DaemonHandle {
    pub fn shutdown(&self) {
        let _ = self.tx.send(Action::Shutdown);
    }
    pub fn reload(&self) {
        let _ = self.tx.send(Action::Reload);
    }
}

impl Daemon {
    pub fn handle(&self) -> DaemonHandle {
        DaemonHandle {
            tx: self.tx.clone(),
        }
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are served (useful with port 0).
    pub fn http_addr(&self) -> std::net::SocketAddr {
        self.http_addr
    }

    /// Counters since start.
    pub fn counters(&self) -> Arc<Counters> {
        self.shared.counters.clone()
    }

    /// Runs until a shutdown is asked for, then stops in order and returns.
    pub async fn run(mut self) -> Result<()> {
        while let Some(Action::Reload) = self.rx.recv().await {
            self.reload().await;
        }
        self.shutdown().await;
        Ok(())
    }

    async fn shutdown(mut self) {
        notify::stopping();
        self.shared.health.set_draining(true);
        // Leader-only duties first: releasing the lease lets another daemon
        // take them at once instead of waiting out the drain or the TTL.
        if let Some(cron) = self.cron.take() {
            cron.step_down().await;
        }
        let pools: Vec<Arc<Pool>> = self
            .specs
            .drain(..)
            .map(|(_, pool)| pool)
            .chain(self.draining.drain(..))
            .collect();
        tracing::info!(
            running = self.shared.leases.len(),
            "shutting down: no new claims; draining running jobs"
        );
        for p in &pools {
            p.quiet.cancel();
        }
        for f in self.fetchers.drain(..) {
            let _ = f.await;
        }
        let drain = async {
            for p in &pools {
                p.drained().await;
            }
        };
        let deadline = self.config.daemon.shutdown_timeout;
        let drained = tokio::select! {
            _ = drain => true,
            _ = tokio::time::sleep(deadline) => false,
            _ = wait_for_shutdown(&mut self.rx) => false,
        };
        if !drained {
            let left = self.shared.leases.len();
            tracing::warn!(
                left,
                "stopping the jobs still running and giving them back to the queue"
            );
            self.shared.leases.stop_all(StopReason::Shutdown);
            let grace = pools
                .iter()
                .flat_map(|p| p.queues.iter().map(|q| q.grace))
                .max()
                .unwrap_or_default();
            let drain = async {
                for p in &pools {
                    p.drained().await;
                }
            };
            if tokio::time::timeout(grace + STOP_SLACK, drain)
                .await
                .is_err()
            {
                tracing::error!("some handlers did not stop; their jobs return to the queue when their leases expire");
            }
        }
        self.writers.flush(WRITER_FLUSH).await;
        self.stop.cancel();
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        let c = &self.shared.counters;
        tracing::info!(
            succeeded = Counters::get(&c.succeeded),
            released = Counters::get(&c.released),
            "redq daemon stopped"
        );
    }
}

async fn wait_for_shutdown(rx: &mut mpsc::UnboundedReceiver<Action>) {
    loop {
        match rx.recv().await {
            Some(Action::Shutdown) | None => return,
            Some(Action::Reload) => tracing::warn!("reload ignored: shutting down"),
        }
    }
}

//! Starting a daemon: check the configuration and Redis, load the function
//! libraries, then start every component in the order [`crate::daemon`]
//! writes down.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Daemon;
use crate::config::{Config, Overrides};
use crate::daemon::handlers::{self, Library};
use crate::daemon::leases::{self, Leases};
use crate::daemon::promoter::{self, Promoter};
use crate::daemon::signals;
use crate::daemon::waker::{self, Routes};
use crate::daemon::writer::Writers;
use crate::daemon::{heartbeat, looker, notify, observer, reaper, Counters, Shared};
use crate::error::{Error, Result};
use crate::handler::Handler;
use crate::observe::{Health, Metrics};
use crate::store::Store;

/// `/healthz` calls a loop stuck when it has missed this many beats in a
/// row: enough that a Redis outage of a minute or two (each round then
/// waits for its time-outs) is not a liveness failure that makes systemd
/// restart a daemon that would recover by itself.
const MISSED_BEATS: u32 = 15;
/// The least time without a beat counted as stuck, whatever the interval.
const MIN_STALE: Duration = Duration::from_secs(30);
/// The lease keeper beats after every renewal round (at most every
/// `lease_renew`, which can be long): a minute without one is stuck.
const LEASE_KEEPER_STALE: Duration = Duration::from_secs(60);

/// Builds a daemon: configuration plus library (Rust) handlers.
pub struct WorkerBuilder {
    config: Config,
    reload: Option<(Option<PathBuf>, Overrides)>,
    library: Library,
    signals: bool,
}

impl WorkerBuilder {
    pub fn new(config: Config) -> WorkerBuilder {
        WorkerBuilder {
            config,
            reload: None,
            library: BTreeMap::new(),
            signals: false,
        }
    }

    /// Runs `handler` for jobs of `queue` (a queue with no `handler` in the config).
    pub fn handler(mut self, queue: impl Into<String>, handler: impl Handler) -> WorkerBuilder {
        self.library.insert(queue.into(), Arc::new(handler));
        self
    }

    /// On reload (SIGHUP or [`DaemonHandle::reload`]), re-read this file
    /// (`None`: no file, the environment and overrides only) with these overrides.
    pub fn reload_from(mut self, path: Option<PathBuf>, overrides: Overrides) -> WorkerBuilder {
        self.reload = Some((path, overrides));
        self
    }

    /// Listen to SIGTERM, SIGINT (shutdown) and SIGHUP (reload).
    pub fn with_signals(mut self) -> WorkerBuilder {
        self.signals = true;
        self
    }

    fn library_queues(&self) -> BTreeSet<String> {
        self.library.keys().cloned().collect()
    }

    /// Checks the configuration, connects, checks Redis, and starts every component.
    pub async fn start(self) -> Result<Daemon> {
        self.config.validate_with(&self.library_queues())?;
        handlers::check_runnable(&self.config)?;
        let r = &self.config.redis;
        let store = Store::open(r).await?;
        // Refuses a Redis without functions; warns about eviction and persistence.
        store.check_server().await?;
        // The function libraries, loaded when missing and this user may
        // (`redq setup` loads them for users that may not: the transitions
        // then run as EVALSHA scripts, and producers' FCALL waits for it).
        // At maxmemory Redis refuses to load them; the daemon drains
        // without, and loads them once Redis has room.
        store.prepare_libraries().await?;
        let health = Arc::new(Health::new());
        health.set_redis_ok(true);
        health.set_scripts_loaded(true);
        let d = &self.config.daemon;
        health.register_loop(leases::LOOP, LEASE_KEEPER_STALE);
        health.register_loop(
            reaper::LOOP,
            (d.reap_interval * MISSED_BEATS).max(MIN_STALE),
        );
        health.register_loop(observer::LOOP, observer::POLL * MISSED_BEATS);
        health.register_loop(heartbeat::LOOP, heartbeat::EVERY * MISSED_BEATS);
        let shared = Arc::new(Shared {
            store: store.clone(),
            leases: Leases::default(),
            counters: Arc::new(Counters::default()),
            metrics: Metrics::new(env!("CARGO_PKG_VERSION")),
            health,
            id: Arc::from(heartbeat::daemon_id()),
            pools: Mutex::new(Vec::new()),
            promoter: Arc::new(Promoter::default()),
            looker: Arc::default(),
            claims: Arc::new(tokio::sync::Semaphore::new(crate::daemon::CLAIMS_IN_FLIGHT)),
            settings: Mutex::new(Vec::new()),
            reload_error: Mutex::new(None),
        });
        let stop = CancellationToken::new();
        let routes: Routes = Arc::new(RwLock::new(HashMap::new()));
        let (tx, rx) = mpsc::unbounded_channel();
        if self.signals {
            signals::listen(tx.clone())
                .map_err(|e| Error::Config(format!("cannot install signal handlers: {e}")))?;
        }
        let (http, http_addr) = observer::start_http(d, &shared, stop.clone()).await?;
        let mut daemon = Daemon {
            shared: shared.clone(),
            config: self.config.clone(),
            reload: self.reload,
            library: self.library,
            stop: stop.clone(),
            routes: routes.clone(),
            tasks: vec![http],
            http_addr,
            fetchers: Vec::new(),
            writers: Arc::new(Writers::new(
                store.clone(),
                shared.leases.clone(),
                shared.counters.clone(),
            )),
            draining: Vec::new(),
            specs: Vec::new(),
            cron: None,
            tx,
            rx,
            pools_started: 0,
        };
        daemon.apply(self.config).await?;
        let keeper = leases::keep(
            shared.leases.clone(),
            store.clone(),
            daemon.config.redis.command_timeout,
            stop.clone(),
            shared.health.clone(),
        );
        daemon.tasks.push(tokio::spawn(keeper));
        let every = daemon.config.daemon.reap_interval;
        daemon.tasks.push(tokio::spawn(reaper::run(
            shared.clone(),
            every,
            stop.clone(),
        )));
        daemon.tasks.push(tokio::spawn(waker::run(
            store.clone(),
            routes,
            stop.clone(),
        )));
        daemon.tasks.push(tokio::spawn(looker::run(
            store.clone(),
            shared.looker.clone(),
            daemon.config.daemon.inbox_poll,
            stop.clone(),
        )));
        daemon.tasks.push(tokio::spawn(promoter::run(
            store.clone(),
            shared.promoter.clone(),
            stop.clone(),
        )));
        daemon.tasks.push(tokio::spawn(promoter::listen(
            store.clone(),
            shared.promoter.clone(),
            shared.leases.clone(),
            stop.clone(),
        )));
        let stats_interval = daemon.config.daemon.stats_interval;
        daemon.tasks.push(tokio::spawn(observer::run(
            shared.clone(),
            stats_interval,
            stop.clone(),
        )));
        daemon
            .tasks
            .push(tokio::spawn(heartbeat::run(shared.clone(), stop.clone())));
        // Depths and Redis's round trip before READY, so the first scrape is complete.
        observer::prime(&shared).await;
        notify::ready(&observer::status_line(&shared));
        let names: Vec<String> = shared.queues().iter().map(|q| q.name.to_string()).collect();
        if names.is_empty() {
            tracing::warn!(
                "no queues are configured: this daemon runs nothing; add a [queues.<name>] \
                 table with a handler and reload (systemctl reload redq)"
            );
        }
        tracing::info!(
            queues = names.len(),
            "redq daemon ready, serving {}; the first summary follows in {}",
            if names.is_empty() {
                "no queue".to_owned()
            } else {
                names.join(", ")
            },
            crate::config::duration::format(observer::first_summary_after(stats_interval))
        );
        Ok(daemon)
    }
}

//! The supervisor: starts every component in order, turns signals into
//! actions (reload, shutdown), and stops everything in the reverse order.
//!
//! Reload builds new pools only for pools whose settings changed; an old
//! pool stops claiming and its running jobs finish under the old settings,
//! so nothing running is dropped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::handlers::{self, Library};
use super::heartbeat;
use super::leases::{self, Leases, StopReason};
use super::pool::{Pool, PoolCtx};
use super::promoter::{self, Promoter};
use super::signals::{self, Action};
use super::waker::{self, Route, Routes};
use super::writer::{self, WriterCtx};
use super::{cron, dead_retention, notify, observer, reaper, retention, Counters, QueueRt};
use crate::config::{self, Config, Order, Overrides, QueueConfig};
use crate::error::{Error, Result};
use crate::handler::Handler;
use crate::inspect;
use crate::keys::QueueKeys;
use crate::leader::Leader;
use crate::observe::{Health, Metrics};
use crate::store::{QueueSettings, Store};

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
    pools: Mutex<Vec<(PoolSpec, Arc<Pool>)>>,
    /// Told the queues served, at start and on reload.
    promoter: Arc<Promoter>,
    /// Each configured queue's settings as written to Redis (at start, on
    /// reload, and again when Redis is found to have lost them).
    settings: Mutex<Vec<(QueueKeys, QueueSettings)>>,
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
            .map(|p| p.iter().flat_map(|(_, pool)| pool.queues.clone()).collect())
            .unwrap_or_default()
    }
}

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

    /// On reload (SIGHUP or [`DaemonHandle::reload`]), re-read this file with these overrides.
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
        let store =
            Store::connect_with(&r.url, &r.key_prefix, r.connect_timeout, r.command_timeout)
                .await?;
        store.check_server().await?;
        // The producers' library: at maxmemory Redis refuses to load it;
        // the daemon drains without it, and loads it once Redis has room
        // (the observer checks it every poll).
        match store.ensure_library().await {
            Err(e) if e.is_oom() => tracing::warn!(
                "Redis is at maxmemory and refused to load the `redq` function library: \
                 FCALL redq_enqueue is unavailable until it has room (the daemon loads it then)"
            ),
            other => {
                other?;
            }
        }
        // The transitions' library now rather than at the first claim; a
        // Redis at maxmemory refuses it, and the transitions then run as
        // EVAL scripts until it loads.
        if !store.load_internal_library().await? {
            tracing::warn!("Redis is at maxmemory: the transitions run as EVAL scripts until their library loads");
        }
        let health = Arc::new(Health::new());
        health.set_redis_ok(true);
        health.set_scripts_loaded(true);
        let d = &self.config.daemon;
        let lease_keeper_staleness = Duration::from_secs(60);
        health.register_loop(leases::LOOP, lease_keeper_staleness);
        health.register_loop(
            reaper::LOOP,
            (d.reap_interval * 3).max(Duration::from_secs(30)),
        );
        health.register_loop(observer::LOOP, observer::POLL * 15);
        health.register_loop(heartbeat::LOOP, heartbeat::EVERY * 15);
        let shared = Arc::new(Shared {
            store: store.clone(),
            leases: Leases::default(),
            counters: Arc::new(Counters::default()),
            metrics: Metrics::new(env!("CARGO_PKG_VERSION")),
            health,
            id: Arc::from(heartbeat::daemon_id()),
            pools: Mutex::new(Vec::new()),
            promoter: Arc::new(Promoter::default()),
            settings: Mutex::new(Vec::new()),
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
            writers_stop: CancellationToken::new(),
            routes: routes.clone(),
            tasks: vec![http],
            http_addr,
            fetchers: Vec::new(),
            writers: Vec::new(),
            draining: Vec::new(),
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
        daemon.tasks.push(tokio::spawn(promoter::run(
            store.clone(),
            shared.promoter.clone(),
            stop.clone(),
        )));
        daemon.tasks.push(tokio::spawn(promoter::listen(
            store.clone(),
            shared.promoter.clone(),
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
        notify::ready(&observer::status_line(&shared));
        tracing::info!(queues = shared.queues().len(), "redq daemon ready");
        Ok(daemon)
    }
}

/// What makes a pool; a pool is rebuilt on reload only when this changes.
#[derive(Clone, PartialEq)]
struct PoolSpec {
    name: String,
    concurrency: usize,
    order: Order,
    queues: Vec<(String, QueueConfig)>,
}

fn pool_specs(config: &Config) -> Vec<PoolSpec> {
    let mut specs = Vec::new();
    for (name, pool) in &config.pools {
        let queues = config
            .pool_queues(name)
            .into_iter()
            .filter_map(|q| config.queues.get(q).map(|c| (q.to_owned(), c.clone())))
            .collect();
        specs.push(PoolSpec {
            name: format!("pool:{name}"),
            concurrency: pool.concurrency as usize,
            order: pool.order,
            queues,
        });
    }
    for (name, q) in &config.queues {
        if config.pool_of(name).is_none() {
            specs.push(PoolSpec {
                name: format!("queue:{name}"),
                concurrency: q.concurrency as usize,
                order: Order::Strict,
                queues: vec![(name.clone(), q.clone())],
            });
        }
    }
    specs
}

/// A running daemon. [`Daemon::run`] returns after a shutdown.
pub struct Daemon {
    shared: Arc<Shared>,
    config: Config,
    reload: Option<(Option<PathBuf>, Overrides)>,
    library: Library,
    stop: CancellationToken,
    writers_stop: CancellationToken,
    routes: Routes,
    tasks: Vec<JoinHandle<()>>,
    fetchers: Vec<JoinHandle<()>>,
    writers: Vec<JoinHandle<()>>,
    draining: Vec<Arc<Pool>>,
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

    /// Makes the running pools match `config`: keeps unchanged pools, starts
    /// new or changed ones, and quiets removed or changed ones (their running
    /// jobs finish).
    async fn apply(&mut self, config: Config) -> Result<()> {
        let cron_entries = cron::entries(&config).map_err(|p| Error::Config(p.join("\n")))?;
        let store = &self.shared.store;
        let mut settings = Vec::new();
        for (name, queue) in &config.queues {
            let s = QueueSettings {
                max_doc_bytes: config.daemon.max_payload_bytes,
                events_cap: queue.events.then_some(queue.events_maxlen),
                rate: queue.rate_limit.as_ref().map(|r| (r.jobs, r.per)),
                group: queue.group_concurrency,
                tenants: queue.tenant_limits(),
            };
            settings.push((store.queue(name)?, s));
        }
        if let Ok(mut s) = self.shared.settings.lock() {
            *s = settings;
        }
        self.shared.set_up_queues().await?;

        let wanted = pool_specs(&config);
        let current: Vec<(PoolSpec, Arc<Pool>)> = self
            .shared
            .pools
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default();
        // Start every new or changed pool first; if one cannot start, stop
        // those just started and leave the running pools as they were.
        let mut started = Vec::new();
        for spec in wanted
            .iter()
            .filter(|w| !current.iter().any(|(s, _)| s == *w))
        {
            match self.start_pool(spec) {
                Ok(pool) => started.push((spec.clone(), pool)),
                Err(e) => {
                    for (_, pool) in started {
                        pool.quiet.cancel();
                    }
                    return Err(e);
                }
            }
        }
        let (next, current): (Vec<_>, Vec<_>) =
            current.into_iter().partition(|(s, _)| wanted.contains(s));
        let next: Vec<(PoolSpec, Arc<Pool>)> = next.into_iter().chain(started).collect();
        for (spec, old) in current {
            tracing::info!(pool = %spec.name, "pool removed or changed; it stops claiming and its running jobs finish");
            old.quiet.cancel();
            self.draining.push(old);
        }
        let mut routes = HashMap::new();
        for (_, pool) in &next {
            for q in &pool.queues {
                routes.insert(q.keys.wake().to_owned(), Route::Wake(pool.wake.clone()));
                routes.insert(
                    q.keys.handoff(&pool.handoff_name),
                    Route::Handoff(pool.clone(), q.clone()),
                );
            }
        }
        if let Ok(mut r) = self.routes.write() {
            *r = routes;
        }
        if let Ok(mut p) = self.shared.pools.lock() {
            *p = next;
        }
        self.shared.promoter.set_queues(&self.shared.queues());
        self.restart_cron(cron_entries, &config).await;
        self.config = config;
        Ok(())
    }

    /// Replaces the cron loop with one running `entries`. The leader lease
    /// is kept when it would be the same (same entries, same TTL), so a
    /// reload does not hand the duty over; otherwise the old one steps down.
    async fn restart_cron(&mut self, entries: Vec<cron::Entry>, config: &Config) {
        let ttl = config.daemon.leader_ttl;
        let name = cron::leader_name(&entries);
        let mut leader = None;
        if let Some(old) = self.cron.take() {
            old.stop.cancel();
            let same = old.ttl == ttl
                && old.leader.as_ref().map(|l| l.name()) == name.as_deref()
                && name.is_some();
            if same {
                leader = old.leader;
            } else {
                old.step_down().await;
            }
        }
        let store = &self.shared.store;
        let leader = leader.or_else(|| cron::start_leader(store, &entries, ttl));
        let stop = self.stop.child_token();
        self.tasks.retain(|t| !t.is_finished());
        if let Some(watch) = leader.as_ref().map(Leader::watch) {
            self.tasks.push(tokio::spawn(cron::run(
                store.clone(),
                entries,
                cron::Settings {
                    max_doc_bytes: config.daemon.max_payload_bytes,
                    catch_up: config.daemon.effective_cron_catch_up(),
                },
                watch,
                self.shared.metrics.clone(),
                stop.clone(),
            )));
        }
        self.cron = Some(CronDuty { stop, leader, ttl });
    }

    fn start_pool(&mut self, spec: &PoolSpec) -> Result<Arc<Pool>> {
        let mut queues = Vec::new();
        for (name, cfg) in &spec.queues {
            let built = match (&cfg.handler, self.library.get(name)) {
                (Some(h), _) => handlers::build(name, h)?,
                (None, Some(h)) => handlers::Built {
                    handler: h.clone(),
                    grace: handlers::library_grace(),
                },
                (None, None) => {
                    return Err(Error::Config(format!("queues.{name}.handler: missing")))
                }
            };
            let keys = self.shared.store.queue(name)?;
            self.shared.metrics.register_queue(name);
            let name: Arc<str> = Arc::from(name.as_str());
            let wctx = WriterCtx {
                name: name.clone(),
                keys: keys.clone(),
                keep: retention(cfg),
                dead: dead_retention(cfg),
                give_up_after: cfg.lease,
                metrics: self.shared.metrics.clone(),
                usage_retention: self.config.daemon.usage_retention,
            };
            let s = &self.shared;
            let (writer, task) = writer::spawn(
                wctx,
                s.store.clone(),
                s.leases.clone(),
                s.counters.clone(),
                self.writers_stop.clone(),
            );
            self.writers.push(task);
            queues.push(Arc::new(QueueRt {
                name,
                keys,
                cfg: cfg.clone(),
                handler: built.handler,
                grace: built.grace,
                writer,
                metrics: self.shared.metrics.clone(),
                in_flight: AtomicU64::new(0),
            }));
        }
        let ctx = Arc::new(PoolCtx {
            store: self.shared.store.clone(),
            leases: self.shared.leases.clone(),
            counters: self.shared.counters.clone(),
            inbox_poll: self.config.daemon.inbox_poll,
            health: self.shared.health.clone(),
        });
        let pool = Pool::new(
            spec.name.clone(),
            queues,
            spec.order,
            spec.concurrency,
            // Each pool its own name in the hand-off registrations, so a
            // pool replaced on reload cannot end its successor's.
            Arc::from(format!("{}.{}", self.shared.id, self.pools_started)),
            ctx,
        );
        self.pools_started += 1;
        self.fetchers.push(tokio::spawn(pool.clone().fetch()));
        tracing::info!(pool = %spec.name, concurrency = spec.concurrency, "pool started");
        Ok(pool)
    }

    async fn reload(&mut self) {
        notify::reloading();
        let result = match &self.reload {
            None => Err(Error::Config(
                "this daemon was started without a config file to re-read".into(),
            )),
            Some((path, overrides)) => config::read(path.as_deref(), overrides)
                .map_err(Error::from)
                .and_then(|c| {
                    let lib: BTreeSet<String> = self.library.keys().cloned().collect();
                    c.validate_with(&lib)?;
                    handlers::check_runnable(&c)?;
                    restart_only(&self.config, &c)?;
                    Ok(c)
                }),
        };
        match result {
            Ok(new) => match self.apply(new).await {
                Ok(()) => tracing::info!("configuration reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "reload failed part-way; pools that started keep running")
                }
            },
            Err(e) => tracing::error!("reload refused, the running configuration stays:\n{e}"),
        }
        notify::ready(&observer::status_line(&self.shared));
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
            .shared
            .pools
            .lock()
            .map(|p| p.iter().map(|(_, pool)| pool.clone()).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
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
            if tokio::time::timeout(grace + Duration::from_secs(1), drain)
                .await
                .is_err()
            {
                tracing::error!("some handlers did not stop; their jobs return to the queue when their leases expire");
            }
        }
        self.writers_stop.cancel();
        for w in self.writers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(30), w).await;
        }
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

/// Refuses a reload that changes where or how the daemon reaches Redis:
/// every connection, script library and queue key would have to move at
/// once, and a half-moved daemon would serve two Redis servers. Settings
/// read only at start are applied at the next restart, with a warning.
fn restart_only(running: &Config, new: &Config) -> Result<()> {
    if new.redis != running.redis {
        let changed: Vec<&str> = [
            ("redis.url", new.redis.url != running.redis.url),
            (
                "redis.key_prefix",
                new.redis.key_prefix != running.redis.key_prefix,
            ),
            (
                "redis.connect_timeout",
                new.redis.connect_timeout != running.redis.connect_timeout,
            ),
            (
                "redis.command_timeout",
                new.redis.command_timeout != running.redis.command_timeout,
            ),
        ]
        .into_iter()
        .filter_map(|(name, differs)| differs.then_some(name))
        .collect();
        return Err(Error::Config(format!(
            "{} changed: [redis] settings apply only at start; restart the daemon to use them \
             (a reload cannot move running jobs to another Redis)",
            changed.join(", ")
        )));
    }
    let (d, n) = (&running.daemon, &new.daemon);
    for (name, differs) in [
        (
            "daemon.listen",
            d.listen != n.listen || d.listen_public != n.listen_public,
        ),
        ("daemon.log_format", d.log_format != n.log_format),
        ("daemon.log_level", d.log_level != n.log_level),
        ("daemon.reap_interval", d.reap_interval != n.reap_interval),
        (
            "daemon.stats_interval",
            d.stats_interval != n.stats_interval,
        ),
    ] {
        if differs {
            tracing::warn!("{name} changed: it applies at the next restart");
        }
    }
    Ok(())
}

async fn wait_for_shutdown(rx: &mut mpsc::UnboundedReceiver<Action>) {
    loop {
        match rx.recv().await {
            Some(Action::Shutdown) | None => return,
            Some(Action::Reload) => tracing::warn!("reload ignored: shutting down"),
        }
    }
}

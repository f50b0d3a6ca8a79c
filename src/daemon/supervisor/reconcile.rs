//! Making the running daemon match a configuration, at start and on every
//! reload: the queues' settings in Redis, the pools (kept when unchanged,
//! started when new or changed, quieted when gone), the waker's routes, the
//! promoter's queues and the cron duty.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use super::{CronDuty, Daemon};
use crate::config::{self, Config, Order, QueueConfig};
use crate::daemon::pool::{Pool, PoolCtx};
use crate::daemon::waker::Route;
use crate::daemon::writer::{WriterCtx, WriterHandle};
use crate::daemon::{cron, dead_retention, handlers, notify, observer, retention, QueueRt};
use crate::error::{Error, Result};
use crate::keys::QueueKeys;
use crate::leader::Leader;
use crate::observe::Reload;
use crate::store::QueueSettings;

/// What makes a pool; a pool is rebuilt on reload only when this changes
/// (compared by value).
#[derive(Clone, PartialEq)]
pub(super) struct PoolSpec {
    name: String,
    concurrency: usize,
    order: Order,
    /// Each queue's settings, shared with its [`QueueRt`] once the pool
    /// runs: one copy per queue besides the configuration's, not two.
    queues: Vec<(String, Arc<QueueConfig>)>,
}

fn pool_specs(config: &Config) -> Vec<PoolSpec> {
    let mut specs = Vec::new();
    for (name, pool) in &config.pools {
        let queues = config
            .pool_queues(name)
            .into_iter()
            .filter_map(|q| {
                config
                    .queues
                    .get(q)
                    .map(|c| (q.to_owned(), Arc::new(c.clone())))
            })
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
                queues: vec![(name.clone(), Arc::new(q.clone()))],
            });
        }
    }
    specs
}

impl Daemon {
    /// Makes the running pools match `config`: keeps unchanged pools, starts
    /// new or changed ones, and quiets removed or changed ones (their running
    /// jobs finish).
    pub(super) async fn apply(&mut self, config: Config) -> Result<()> {
        let cron_entries = cron::entries(&config).map_err(|p| {
            Error::Config(
                p.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
        })?;
        let store = &self.shared.store;
        let mut settings = Vec::new();
        // Each queue's keys are built once and shared (a clone is a
        // reference count) by the settings list and the queue's runtime.
        let mut keys = HashMap::new();
        for (name, queue) in &config.queues {
            let s = QueueSettings {
                max_doc_bytes: config.daemon.max_payload_bytes,
                events_cap: queue.events.then_some(queue.events_maxlen),
                rate: queue.rate_limit.as_ref().map(|r| (r.jobs, r.per)),
                group: queue.group_concurrency,
                tenants: queue.tenant_limits(),
                outcome_ttl: queue.outcome_ttl,
            };
            let k = store.queue(name)?;
            keys.insert(name.clone(), k.clone());
            settings.push((k, s));
        }
        if let Ok(mut s) = self.shared.settings.lock() {
            *s = settings;
        }
        self.shared.set_up_queues().await?;

        let wanted = pool_specs(&config);
        let current: Vec<(PoolSpec, Arc<Pool>)> = self.specs.clone();
        // Start every new or changed pool first; if one cannot start, stop
        // those just started and leave the running pools as they were.
        let mut started = Vec::new();
        for spec in wanted
            .iter()
            .filter(|w| !current.iter().any(|(s, _)| s == *w))
        {
            match self.start_pool(spec, &keys) {
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
            *p = next.iter().map(|(_, pool)| pool.clone()).collect();
        }
        self.specs = next;
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

    /// Starts the pool `spec` describes; `keys` holds the keys of every
    /// configured queue.
    fn start_pool(
        &mut self,
        spec: &PoolSpec,
        keys: &HashMap<String, QueueKeys>,
    ) -> Result<Arc<Pool>> {
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
            let keys = match keys.get(name) {
                Some(k) => k.clone(),
                None => self.shared.store.queue(name)?,
            };
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
            let writer = WriterHandle::new(wctx, self.writers.clone());
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
            looker: self.shared.looker.clone(),
            claims: self.shared.claims.clone(),
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

    pub(super) async fn reload(&mut self) {
        notify::reloading();
        let result = match &self.reload {
            None => Err(Error::Config(
                "this daemon was started without a config file to re-read".into(),
            )),
            Some((path, overrides)) => {
                let lib: BTreeSet<String> = self.library.keys().cloned().collect();
                config::load_layers(path.as_deref(), overrides, &lib)
                    .and_then(|c| {
                        handlers::runnable_problems(&c)
                            .map_err(|e| config::locate(e, path.as_deref(), overrides))
                            .map(|()| c)
                    })
                    .map_err(Error::from)
                    .and_then(|c| {
                        restart_only(&self.config, &c)?;
                        Ok(c)
                    })
            }
        };
        let (outcome, failure) = match result {
            Ok(new) => match self.apply(new).await {
                Ok(()) => {
                    tracing::info!("configuration reloaded");
                    (Reload::Applied, None)
                }
                Err(e) => {
                    tracing::error!(error = %e, "reload failed part-way; pools that started keep running");
                    (Reload::Failed, Some(format!("reload failed part-way: {e}")))
                }
            },
            Err(e) => {
                tracing::error!("reload refused, the running configuration stays:\n{e}");
                (Reload::Refused, Some(format!("reload refused: {e}")))
            }
        };
        self.shared.metrics.reloaded(outcome);
        if let Ok(mut r) = self.shared.reload_error.lock() {
            *r = failure;
        }
        notify::ready(&observer::status_line(&self.shared));
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
            ("redis.tls", new.redis.tls != running.redis.tls),
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

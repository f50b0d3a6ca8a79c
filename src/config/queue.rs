//! `[queues.<name>]`: how one queue's jobs are run — concurrency, time-outs,
//! retries, leases, retention, handler and limits.
//!
//! Every field has a default, so `[queues.x]` with a `handler` is enough.
//! Checks of single values live here; rules across tables (pools, library
//! handlers) live in `validate`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;
use super::error::Problems;
use super::handler::HandlerConfig;

pub const MAX_CONCURRENCY: u32 = 10_000;
pub const MAX_ATTEMPTS: u32 = 1_000;
pub const MAX_WEIGHT: u32 = 1_000;
pub const MAX_EVENTS_MAXLEN: u64 = 100_000_000;
/// Longest tenant name, in bytes (as for a job's `tenant`).
pub const MAX_TENANT_LEN: usize = 512;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Jobs of this queue run at once by this daemon, 1–10000. Default 10.
    /// Ignored when the queue is served by a pool (the pool's applies).
    pub concurrency: u32,
    /// How long a handler may run; the handler's own `timeout` overrides it. Default 5m.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Attempts before a job goes to the dead set, 1–1000. Jobs may set their own. Default 10.
    pub max_attempts: u32,
    /// Delay before retry n: `base · 2^(n-1)`, capped at `max`, ± `jitter`.
    pub backoff: BackoffConfig,
    /// How long a claim holds a job without renewal (Redis clock). Default 30s.
    #[serde(with = "duration")]
    pub lease: Duration,
    /// How often a running job's lease is renewed; `lease` must be ≥ 3 × this. Default lease / 3.
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub lease_renew: Option<Duration>,
    /// Completed jobs kept (count); 0 removes them at once. Default 0.
    pub keep_completed: u64,
    /// How long completed jobs are kept; 0s keeps them only by count. Default 0s.
    #[serde(with = "duration")]
    pub keep_completed_for: Duration,
    /// Keep every job's outcome (state, attempts, result, last error) this
    /// long after it ends, for `redq_status` and waiters, even when the job
    /// itself is removed; up to 7d. A job's own `outcome_ttl_ms` wins.
    /// Default none (only jobs that ask for it).
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub outcome_ttl: Option<Duration>,
    /// Most jobs kept in the dead set, oldest dropped first. Default 10000.
    pub dead_max: u64,
    /// How long dead jobs are kept. Default 30d.
    #[serde(with = "duration")]
    pub dead_ttl: Duration,
    /// What a job runs. Required unless a library handler is registered for the queue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handler: Option<HandlerConfig>,
    /// The `[pools.<name>]` serving this queue instead of its own workers. Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Share of a weighted pool, 1–1000. Default 1.
    pub weight: u32,
    /// At most `jobs` claims per `per`, across all daemons. Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitConfig>,
    /// At most this many active jobs per job `group`, across all daemons. Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_concurrency: Option<u32>,
    /// At most `jobs` claims per `per` for each job `tenant`, across all
    /// daemons; jobs without a tenant are not limited. Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_rate_limit: Option<RateLimitConfig>,
    /// Per-tenant limits (tenant name, 1–512 bytes -> limit) that replace
    /// `tenant_rate_limit` for that tenant; one may exist without a default. Default none.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tenant_rate_limits: BTreeMap<String, RateLimitConfig>,
    /// Lifecycle events on the Redis Stream `<prefix>:{<queue>}:events` (`redq watch`). Default false.
    pub events: bool,
    /// About how many events the stream keeps (XADD MAXLEN ~), 1–100000000. Default 10000.
    pub events_maxlen: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackoffConfig {
    /// Delay before the first retry. Default 1s.
    #[serde(with = "duration")]
    pub base: Duration,
    /// Longest delay. Default 1h.
    #[serde(with = "duration")]
    pub max: Duration,
    /// Random spread as a fraction of the delay, 0.0–1.0. Default 0.2.
    pub jitter: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Claims allowed per window, at least 1.
    pub jobs: u32,
    /// The window.
    #[serde(with = "duration")]
    pub per: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            concurrency: 10,
            timeout: Duration::from_secs(5 * 60),
            max_attempts: 10,
            backoff: BackoffConfig::default(),
            lease: Duration::from_secs(30),
            lease_renew: None,
            keep_completed: 0,
            keep_completed_for: Duration::ZERO,
            outcome_ttl: None,
            dead_max: 10_000,
            dead_ttl: Duration::from_secs(30 * 24 * 3600),
            handler: None,
            pool: None,
            weight: 1,
            rate_limit: None,
            group_concurrency: None,
            tenant_rate_limit: None,
            tenant_rate_limits: BTreeMap::new(),
            events: false,
            events_maxlen: 10_000,
        }
    }
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            base: Duration::from_secs(1),
            max: Duration::from_secs(3600),
            jitter: 0.2,
        }
    }
}

impl QueueConfig {
    /// `lease_renew`, or a third of `lease` when unset.
    pub fn effective_lease_renew(&self) -> Duration {
        self.lease_renew.unwrap_or(self.lease / 3)
    }

    /// The handler's `timeout` if set, else the queue's.
    pub fn effective_timeout(&self) -> Duration {
        self.handler
            .as_ref()
            .and_then(HandlerConfig::timeout)
            .unwrap_or(self.timeout)
    }

    /// True when `tenant_rate_limit` or `tenant_rate_limits` is set.
    /// Whether a limit applies that only a claim can check (rate, group,
    /// tenant): such queues take no direct hand-off.
    pub fn is_limited(&self) -> bool {
        self.rate_limit.is_some() || self.group_concurrency.is_some() || self.has_tenant_limits()
    }

    pub fn has_tenant_limits(&self) -> bool {
        self.tenant_rate_limit.is_some() || !self.tenant_rate_limits.is_empty()
    }

    /// The per-tenant rate limits as the store writes them (`None` when neither is set).
    pub fn tenant_limits(&self) -> Option<crate::store::TenantLimits> {
        if !self.has_tenant_limits() {
            return None;
        }
        Some(crate::store::TenantLimits {
            default: self.tenant_rate_limit.as_ref().map(|r| (r.jobs, r.per)),
            overrides: self
                .tenant_rate_limits
                .iter()
                .map(|(t, r)| (t.clone(), (r.jobs, r.per)))
                .collect(),
        })
    }

    pub(super) fn check(&self, name: &str, p: &mut Problems) {
        let at = |keys: &[&'static str]| [&["queues", name][..], keys].concat();
        p.check(
            (1..=MAX_CONCURRENCY).contains(&self.concurrency),
            &at(&["concurrency"]),
            format!("{} is out of range 1-{MAX_CONCURRENCY}", self.concurrency),
        );
        p.check(
            !self.timeout.is_zero(),
            &at(&["timeout"]),
            "must be more than 0s",
        );
        p.check(
            (1..=MAX_ATTEMPTS).contains(&self.max_attempts),
            &at(&["max_attempts"]),
            format!("{} is out of range 1-{MAX_ATTEMPTS}", self.max_attempts),
        );
        let b = &self.backoff;
        p.check(
            !b.base.is_zero(),
            &at(&["backoff", "base"]),
            "must be more than 0s",
        );
        if b.base > b.max {
            p.push(
                &at(&["backoff", "base"]),
                format!(
                    "{} is more than backoff.max ({})",
                    duration::format(b.base),
                    duration::format(b.max)
                ),
            );
        }
        p.check(
            (0.0..=1.0).contains(&b.jitter),
            &at(&["backoff", "jitter"]),
            format!("{} is out of range 0.0-1.0", b.jitter),
        );
        p.check(
            !self.lease.is_zero(),
            &at(&["lease"]),
            "must be more than 0s",
        );
        let renew = self.effective_lease_renew();
        if renew.is_zero() {
            p.push(&at(&["lease_renew"]), "must be more than 0s");
        } else if self.lease < renew * 3 {
            p.push(
                &at(&["lease_renew"]),
                format!(
                    "lease ({}) must be at least 3 × lease_renew ({}), so a lease survives two missed renewals",
                    duration::format(self.lease),
                    duration::format(renew)
                ),
            );
        }
        p.check(
            self.dead_max > 0,
            &at(&["dead_max"]),
            "must be at least 1: failed jobs are never dropped silently",
        );
        p.check(
            !self.dead_ttl.is_zero(),
            &at(&["dead_ttl"]),
            "must be more than 0s: failed jobs are never dropped silently",
        );
        p.check(
            (1..=MAX_WEIGHT).contains(&self.weight),
            &at(&["weight"]),
            format!("{} is out of range 1-{MAX_WEIGHT}", self.weight),
        );
        if let Some(r) = &self.rate_limit {
            r.check(&at(&["rate_limit"]), p);
        }
        if let Some(r) = &self.tenant_rate_limit {
            r.check(&at(&["tenant_rate_limit"]), p);
        }
        for (tenant, r) in &self.tenant_rate_limits {
            let path = ["queues", name, "tenant_rate_limits", tenant.as_str()];
            p.check(
                (1..=MAX_TENANT_LEN).contains(&tenant.len()),
                &path,
                format!("a tenant name must be 1-{MAX_TENANT_LEN} bytes, like a job's `tenant`"),
            );
            r.check(&path, p);
        }
        if let Some(g) = self.group_concurrency {
            p.check(
                (1..=MAX_CONCURRENCY).contains(&g),
                &at(&["group_concurrency"]),
                format!("{g} is out of range 1-{MAX_CONCURRENCY}"),
            );
        }
        if let Some(ttl) = self.outcome_ttl {
            let max = Duration::from_millis(crate::job::MAX_OUTCOME_TTL_MS);
            p.check(
                !ttl.is_zero() && ttl <= max,
                &at(&["outcome_ttl"]),
                format!(
                    "{} is out of range 1ms-7d (leave it out to keep outcomes only of jobs that ask with outcome_ttl_ms)",
                    duration::format(ttl)
                ),
            );
        }
        p.check(
            (1..=MAX_EVENTS_MAXLEN).contains(&self.events_maxlen),
            &at(&["events_maxlen"]),
            format!(
                "{} is out of range 1-{MAX_EVENTS_MAXLEN}",
                self.events_maxlen
            ),
        );
        if let Some(h) = &self.handler {
            h.check(&at(&["handler"]), p);
        }
    }
}

impl RateLimitConfig {
    /// Checks `jobs` and `per` of the limit at `path`.
    fn check(&self, path: &[&str], p: &mut Problems) {
        p.check(
            self.jobs > 0,
            &[path, &["jobs"]].concat(),
            "must be at least 1",
        );
        p.check(
            self.per >= Duration::from_millis(1),
            &[path, &["per"]].concat(),
            "must be at least 1ms",
        );
    }
}

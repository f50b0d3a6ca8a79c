//! `[daemon]`: process-wide settings of `redq run` — shutdown, the local
//! HTTP listener (`/metrics`, `/healthz`, `/readyz`), logging and the
//! intervals of its background duties.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;
use super::error::Problems;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonConfig {
    /// After SIGTERM, how long running jobs may finish before they are stopped
    /// and put back to pending. Keep it below systemd's `TimeoutStopSec`. Default 25s.
    #[serde(with = "duration")]
    pub shutdown_timeout: Duration,
    /// `address:port` of the metrics and health endpoints. Default `127.0.0.1:9464`.
    pub listen: String,
    /// Allow `listen` on a non-loopback address. Default false.
    pub listen_public: bool,
    /// `text` or `json`. Default `text`.
    pub log_format: LogFormat,
    /// A `tracing` filter: `info`, `debug`, `info,redq=debug`. Default `info`.
    pub log_level: String,
    /// Interval of the summary log line. Default 60s.
    #[serde(with = "duration")]
    pub stats_interval: Duration,
    /// Largest job document accepted, in bytes. Default 1048576 (1 MiB).
    pub max_payload_bytes: usize,
    /// How often expired leases are looked for. Default 1s. (Scheduled jobs
    /// start at their due time: see `daemon::promoter`.)
    #[serde(with = "duration")]
    pub reap_interval: Duration,
    /// How often inbox lists are drained when no wake-up arrives. Default 1s.
    #[serde(with = "duration")]
    pub inbox_poll: Duration,
    /// How long per-day usage totals (`redq usage`) are kept after their day. Default 90d.
    #[serde(with = "duration")]
    pub usage_retention: Duration,
    /// TTL of the leader lease that picks the one daemon running leader-only
    /// duties (cron); renewed every third of it. A leader that dies without
    /// stepping down holds the duties up to this long. At least 100ms. Default 10s.
    #[serde(with = "duration")]
    pub leader_ttl: Duration,
    /// How far back a cron leader catches up: when every tick an entry missed
    /// since its last handled one is at most this old (a hand-over, a slow
    /// round), each runs, in order; when an older one was missed (real
    /// downtime), only the latest runs. At least 2 × `leader_ttl`, so a
    /// crashed leader's successor loses nothing. Default max(2 × `leader_ttl`, 1m).
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub cron_catch_up: Option<Duration>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            shutdown_timeout: Duration::from_secs(25),
            listen: "127.0.0.1:9464".into(),
            listen_public: false,
            log_format: LogFormat::Text,
            log_level: "info".into(),
            stats_interval: Duration::from_secs(60),
            max_payload_bytes: 1024 * 1024,
            reap_interval: Duration::from_secs(1),
            inbox_poll: Duration::from_secs(1),
            usage_retention: Duration::from_secs(90 * 24 * 60 * 60),
            leader_ttl: Duration::from_secs(10),
            cron_catch_up: None,
        }
    }
}

impl DaemonConfig {
    /// The parsed `listen` address (valid once the config is validated).
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen.parse().ok()
    }

    /// `cron_catch_up`, or max(2 × `leader_ttl`, 1m) when unset.
    pub fn effective_cron_catch_up(&self) -> Duration {
        self.cron_catch_up
            .unwrap_or((self.leader_ttl * 2).max(Duration::from_secs(60)))
    }

    pub(super) fn check(&self, p: &mut Problems) {
        let at = |key: &'static str| ["daemon", key];
        match self.listen_addr() {
            None => p.push(&at("listen"), format!("{:?} is not an address:port such as \"127.0.0.1:9464\"", self.listen)),
            Some(addr) if !addr.ip().is_loopback() && !self.listen_public => p.push(
                &at("listen"),
                format!(
                    "{addr} is not a loopback address; set daemon.listen_public = true to serve metrics and health beyond this host"
                ),
            ),
            Some(_) => {}
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            p.push(
                &at("log_level"),
                format!(
                    "{:?} is not a log filter such as \"info\" or \"info,redq=debug\": {e}",
                    self.log_level
                ),
            );
        }
        for (key, d) in [
            ("shutdown_timeout", self.shutdown_timeout),
            ("stats_interval", self.stats_interval),
            ("reap_interval", self.reap_interval),
            ("inbox_poll", self.inbox_poll),
            ("usage_retention", self.usage_retention),
        ] {
            p.check(!d.is_zero(), &at(key), "must be more than 0s");
        }
        p.check(
            self.leader_ttl >= crate::leader::MIN_TTL,
            &at("leader_ttl"),
            "must be at least 100ms",
        );
        if let Some(window) = self.cron_catch_up {
            p.check(
                window >= self.leader_ttl * 2,
                &at("cron_catch_up"),
                format!(
                    "{} is less than 2 × daemon.leader_ttl ({}); the successor of a crashed \
                     leader starts up to a TTL later and would skip the ticks missed meanwhile",
                    duration::format(window),
                    duration::format(self.leader_ttl)
                ),
            );
        }
        p.check(
            self.max_payload_bytes > 0,
            &at("max_payload_bytes"),
            "must be at least 1",
        );
    }
}

//! Daemons in Redis: each daemon's heartbeat (who runs, where, since when,
//! serving what), and the per-minute buckets of finished jobs behind the
//! rates `redq stats` shows.
//!
//! Keys (built in [`crate::keys`]), none of which needs SCAN or KEYS to find
//! and all of which expire by themselves:
//! - `<prefix>:daemons`: ZSET, member = daemon id, score = Redis ms of its
//!   last beat; entries older than the keep time are trimmed on every beat,
//!   and the set expires that long after the last beat of any daemon.
//! - `<prefix>:daemon:<id>`: HASH ([`DaemonInfo`]'s fields), expiring with
//!   the entry.
//! - `<prefix>:{<queue>}:rate:<minute>`: HASH of jobs finished in that Unix
//!   minute, summed over daemons: [`RATE_SUCCEEDED`], [`RATE_FAILED`], and
//!   `r<i>` per run-time histogram bucket i ([`rate_bucket_field`]) and
//!   `w<i>` per queue-wait bucket ([`wait_bucket_field`]); read by
//!   [`crate::inspect::last_minute`].
//! - `<prefix>:{<queue>}:meta` fields [`TOTAL_SUCCEEDED`] and
//!   [`TOTAL_FAILED`]: the same counts since the queue's first job, which
//!   `redq stats` shows whatever completed-job retention deletes.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;

use super::{split_time, with_time, Store};
use crate::error::Result;
use crate::keys::{self, QueueKeys};

/// Rate bucket field: jobs that succeeded in the minute.
pub const RATE_SUCCEEDED: &str = "succeeded";
/// Rate bucket field: attempts that failed (retried or dead) in the minute.
pub const RATE_FAILED: &str = "failed";

/// `meta` field: jobs of the queue that ever succeeded, summed over daemons.
pub const TOTAL_SUCCEEDED: &str = "succeeded_total";
/// `meta` field: attempts of the queue that ever failed (retried or dead).
pub const TOTAL_FAILED: &str = "failed_total";
/// `meta` field: jobs of the queue ever cancelled by hand (lib/cancel.lua
/// counts them, whoever cancels).
pub const TOTAL_CANCELLED: &str = "cancelled_total";

/// Rate bucket field of run-time histogram bucket `i`.
pub fn rate_bucket_field(i: usize) -> String {
    format!("r{i}")
}

/// Rate bucket field of queue-wait histogram bucket `i` (same bounds).
pub fn wait_bucket_field(i: usize) -> String {
    format!("w{i}")
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// One daemon as its heartbeat describes it.
#[derive(Debug, Clone, Serialize)]
pub struct DaemonInfo {
    pub id: String,
    /// Time since its last beat, on Redis's clock.
    pub age_ms: i64,
    pub hostname: Option<String>,
    pub pid: Option<u32>,
    pub version: Option<String>,
    pub started_at_ms: Option<i64>,
    pub queues: Vec<String>,
    /// Jobs running in it at its last beat.
    pub running: Option<i64>,
}

/// What a daemon writes about itself on each beat.
#[derive(Debug, Clone)]
pub struct Beat<'a> {
    pub id: &'a str,
    pub hostname: &'a str,
    pub pid: u32,
    pub version: &'a str,
    pub started_at_ms: i64,
    pub queues: &'a [String],
    pub running: i64,
    /// How long the entry outlives this beat.
    pub keep: Duration,
}

/// Jobs one queue finished since the daemon last published them.
#[derive(Debug, Clone)]
pub struct RateDelta<'a> {
    pub keys: &'a QueueKeys,
    pub succeeded: u64,
    pub failed: u64,
    /// Per run-time histogram bucket.
    pub runs: &'a [u64],
    /// Per queue-wait histogram bucket.
    pub waits: &'a [u64],
}

impl Store {
    /// Records a beat at Redis's clock, which it returns: the daemon's
    /// entry in the set of daemons (entries older than `keep` trimmed) and
    /// its description, both expiring `keep` after this beat.
    pub async fn beat(&self, b: &Beat<'_>) -> Result<i64> {
        let now = self.time_ms().await?;
        let zset = keys::daemons(self.prefix());
        let hash = keys::daemon(self.prefix(), b.id);
        let fields: [(&str, String); 7] = [
            ("hostname", b.hostname.to_owned()),
            ("pid", b.pid.to_string()),
            ("version", b.version.to_owned()),
            ("started_at_ms", b.started_at_ms.to_string()),
            ("beat_ms", now.to_string()),
            ("queues", b.queues.join(",")),
            ("running", b.running.to_string()),
        ];
        let keep = ms(b.keep);
        redis::pipe()
            .cmd("ZADD")
            .arg(&zset)
            .arg(now)
            .arg(b.id)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&zset)
            .arg("-inf")
            .arg(format!("({}", now - keep))
            .ignore()
            .cmd("PEXPIRE")
            .arg(&zset)
            .arg(keep)
            .ignore()
            .cmd("HSET")
            .arg(&hash)
            .arg(&fields[..])
            .ignore()
            .cmd("PEXPIRE")
            .arg(&hash)
            .arg(keep)
            .ignore()
            .query_async::<()>(&mut self.connection())
            .await?;
        Ok(now)
    }

    /// Adds what queues finished to the buckets of the minute of `now_ms`,
    /// which expire `ttl` later. O(1) per queue.
    pub async fn add_rates(
        &self,
        now_ms: i64,
        deltas: &[RateDelta<'_>],
        ttl: Duration,
    ) -> Result<()> {
        if deltas.is_empty() {
            return Ok(());
        }
        let minute = now_ms / 60_000;
        let mut pipe = redis::pipe();
        for d in deltas {
            let key = d.keys.rate(minute);
            for (i, n) in d.runs.iter().enumerate().filter(|(_, n)| **n > 0) {
                pipe.hincr(&key, rate_bucket_field(i), *n).ignore();
            }
            for (i, n) in d.waits.iter().enumerate().filter(|(_, n)| **n > 0) {
                pipe.hincr(&key, wait_bucket_field(i), *n).ignore();
            }
            pipe.hincr(&key, RATE_SUCCEEDED, d.succeeded)
                .ignore()
                .hincr(&key, RATE_FAILED, d.failed)
                .ignore()
                .pexpire(&key, ms(ttl))
                .ignore();
            // Totals since the queue's first job, whatever retention deletes.
            for (field, n) in [(TOTAL_SUCCEEDED, d.succeeded), (TOTAL_FAILED, d.failed)] {
                if n > 0 {
                    pipe.hincr(d.keys.meta(), field, n).ignore();
                }
            }
        }
        pipe.query_async::<()>(&mut self.connection()).await?;
        Ok(())
    }

    /// Removes daemon `id`'s entry (a clean stop).
    pub async fn remove_daemon(&self, id: &str) -> Result<()> {
        redis::pipe()
            .zrem(keys::daemons(self.prefix()), id)
            .ignore()
            .del(keys::daemon(self.prefix(), id))
            .ignore()
            .query_async::<()>(&mut self.connection())
            .await?;
        Ok(())
    }

    /// Every daemon that beat within `keep`, most recent beat first, with the
    /// time since its beat on Redis's clock. One round trip for the set, one
    /// for the descriptions.
    pub async fn daemons(&self, keep: Duration) -> Result<Vec<DaemonInfo>> {
        let mut con = self.connection();
        let reply: Vec<redis::Value> = with_time(&mut redis::pipe())
            .cmd("ZRANGE")
            .arg(keys::daemons(self.prefix()))
            .arg(0)
            .arg(-1)
            .arg("REV")
            .arg("WITHSCORES")
            .query_async(&mut con)
            .await?;
        let (now, rest) = split_time(reply, "daemons")?;
        let entries: Vec<(String, f64)> = match rest.into_iter().next() {
            Some(v) => redis::from_redis_value(v)
                .map_err(|e| crate::Error::protocol("daemons", e.to_string()))?,
            None => Vec::new(),
        };
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (id, _) in &entries {
            pipe.hgetall(keys::daemon(self.prefix(), id));
        }
        let hashes: Vec<HashMap<String, String>> = pipe.query_async(&mut con).await?;
        let mut out = Vec::with_capacity(entries.len());
        for ((id, beat), h) in entries.into_iter().zip(hashes) {
            let age_ms = (now - beat as i64).max(0);
            if age_ms > ms(keep) {
                continue;
            }
            let num = |k: &str| h.get(k).and_then(|v| v.parse::<i64>().ok());
            out.push(DaemonInfo {
                id,
                age_ms,
                hostname: h.get("hostname").cloned(),
                pid: num("pid").and_then(|p| u32::try_from(p).ok()),
                version: h.get("version").cloned(),
                started_at_ms: num("started_at_ms"),
                queues: h
                    .get("queues")
                    .map(|q| {
                        q.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
                running: num("running"),
            });
        }
        Ok(out)
    }
}

//! The cron loop: enqueues the ticks of `[[cron]]` entries, each exactly once
//! however many daemons run and however their clocks differ.
//!
//! Only the leader evaluates the entries: every daemon with the same set of
//! entries contends for one [`Leader`] lease (named after that set, see
//! [`leader_name`]), and the others wait. That spares Redis a round of calls
//! per daemon; it is not what makes ticks exactly-once. Daemons whose sets
//! differ (a rolling change of `workers.toml`) contend for different leases,
//! so no entry is left without a daemon, and two leaders may offer one tick.
//!
//! The safety net, whoever offers a tick: each round reads Redis's clock
//! (`TIME`, never the host's), finds for each entry its latest tick at or
//! before that time (in the entry's time zone), and hands it to
//! `cron_enqueue.lua`. The script keeps the last tick handled per entry in
//! `<prefix>:{<queue>}:cron` and enqueues a tick only when it is later than
//! that one (compare-and-set), under the deterministic id
//! `cron:<entry key>:<tick Unix ms>`. So a second leader (a lease lost during a
//! long pause), a late one, or one whose tick was already run and deleted
//! enqueues nothing.
//!
//! Policy after downtime: only the most recent missed tick runs, once; older
//! missed ticks are skipped. That includes a hand-over: after a graceful
//! step-down the next daemon leads within a third of `daemon.leader_ttl`;
//! after a crash, within the TTL. A new entry (no tick recorded) starts from
//! now: its latest past tick is recorded, not run, and the next one runs.
//!
//! The loop sleeps until the next tick of any entry, at most [`MAX_WAIT`], and
//! stops with its token. On reload the supervisor stops it and starts a new
//! one with the new entries (keeping the lease when the set is unchanged).

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::job::NewJob;
use crate::keys::QueueKeys;
use crate::leader::{Leader, LeaderWatch};
use crate::observe::Metrics;
use crate::scripts::SCRIPTS;
use crate::store::Store;

/// Longest sleep between two checks, so clock steps and reloads are seen soon.
pub const MAX_WAIT: Duration = Duration::from_secs(1);

/// One `[[cron]]` entry, ready to run.
pub(crate) struct Entry {
    /// `cron[<index>]`, for logs.
    path: String,
    key: String,
    queue: QueueKeys,
    cron: Cron,
    tz: Tz,
    payload: serde_json::Value,
    priority: i64,
}

impl Entry {
    /// The job id of the tick at `tick_ms`.
    pub fn job_id(&self, tick_ms: i64) -> String {
        format!("cron:{}:{tick_ms}", self.key)
    }

    fn at(&self, ms: i64) -> Option<DateTime<Tz>> {
        // Whole seconds: cron ticks fall on them.
        let secs = ms.div_euclid(1000);
        Utc.timestamp_opt(secs, 0)
            .single()
            .map(|t| t.with_timezone(&self.tz))
    }

    /// The latest tick at or before `now_ms` (Unix ms).
    pub fn latest_tick(&self, now_ms: i64) -> Option<i64> {
        let now = self.at(now_ms)?;
        let t = self.cron.find_previous_occurrence(&now, true).ok()?;
        Some(t.timestamp_millis())
    }

    /// The first tick after `now_ms` (Unix ms).
    pub fn next_tick(&self, now_ms: i64) -> Option<i64> {
        let now = self.at(now_ms)?;
        let t = self.cron.find_next_occurrence(&now, false).ok()?;
        Some(t.timestamp_millis())
    }

    fn document(&self, id: String, max_doc_bytes: usize) -> Result<String> {
        Ok(NewJob::new(&self.payload)?
            .priority(self.priority)
            .id(id)
            .prepare(max_doc_bytes)?
            .doc)
    }
}

/// Builds the entries of `config`; every problem names its `cron[i]` key.
pub(crate) fn entries(config: &Config) -> std::result::Result<Vec<Entry>, Vec<String>> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    for (i, c) in config.cron.iter().enumerate() {
        let path = format!("cron[{i}]");
        let key = c.key();
        if c.name.is_some() {
            if let Some(first) = names.insert(key.clone(), i) {
                problems.push(format!(
                    "{path}.name: {key:?} is also the name of cron[{first}]; names must differ"
                ));
            }
        }
        let parts = (
            c.parse_schedule(),
            c.parse_timezone(),
            QueueKeys::new(&config.redis.key_prefix, &c.queue),
        );
        let (cron, tz, queue) = match parts {
            (Ok(cron), Ok(tz), Ok(queue)) => (cron, tz, queue),
            (s, t, q) => {
                for e in [
                    s.err().map(|e| format!("{path}.schedule: {e}")),
                    t.err().map(|e| format!("{path}.timezone: {e}")),
                    q.err().map(|e| format!("{path}.queue: {e}")),
                ]
                .into_iter()
                .flatten()
                {
                    problems.push(e);
                }
                continue;
            }
        };
        let entry = Entry {
            path,
            key,
            queue,
            cron,
            tz,
            payload: c.payload.clone(),
            priority: c.priority,
        };
        // The job document must pass the same rules as any enqueue.
        let probe = entry.job_id(i64::from(i32::MAX) * 1000);
        if let Err(e) = entry.document(probe, config.daemon.max_payload_bytes) {
            problems.push(format!("{}.payload: {e}", entry.path));
            continue;
        }
        out.push(entry);
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// The `duty` label of `redq_leader`.
pub(crate) const DUTY: &str = "cron";

/// The leader lease of daemons running exactly these entries: `cron:<hash>`
/// of every entry's queue and key; `None` when there are no entries (then the
/// daemon does not contend, so it never takes the duty from one that has them).
pub(crate) fn leader_name(entries: &[Entry]) -> Option<String> {
    if entries.is_empty() {
        return None;
    }
    let mut ids: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e.queue.queue(), e.key.as_str()))
        .collect();
    ids.sort_unstable();
    let text = serde_json::json!(ids).to_string();
    // FNV-1a, 64 bits: the same on every host and build.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    Some(format!("{DUTY}:{h:016x}"))
}

/// Starts contending for the lease of `entries`; `None` without entries.
pub(crate) fn start_leader(store: &Store, entries: &[Entry], ttl: Duration) -> Option<Leader> {
    let name = leader_name(entries)?;
    match Leader::start(store.clone(), &name, ttl) {
        Ok(leader) => Some(leader),
        Err(e) => {
            // Not reachable with a validated ttl and a hashed name; never fatal.
            tracing::error!(error = %e, "cron: cannot start the leader lease; cron does not run");
            None
        }
    }
}

/// What the script did with one tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The tick's job was added.
    Created,
    /// The job id already existed (e.g. the record of the last tick was lost).
    Exists,
    /// First sight of the entry: the tick was recorded, nothing enqueued.
    Started,
    /// A tick at or after this one was handled already.
    Seen,
    /// The tick is after Redis's clock: refused.
    Future,
}

/// Redis's clock, Unix ms.
pub(crate) async fn redis_now_ms(store: &Store) -> Result<i64> {
    let (secs, micros): (i64, i64) = redis::cmd("TIME")
        .query_async(&mut store.connection())
        .await?;
    Ok(secs * 1000 + micros / 1000)
}

/// Offers one tick of `entry` to `cron_enqueue.lua`; returns what it did and
/// the entry's last tick handled afterwards.
pub(crate) async fn offer(
    store: &Store,
    entry: &Entry,
    tick_ms: i64,
    max_doc_bytes: usize,
) -> Result<(Outcome, i64)> {
    let id = entry.job_id(tick_ms);
    let doc = entry.document(id.clone(), max_doc_bytes)?;
    let mut inv = SCRIPTS.cron_enqueue.prepare_invoke();
    for k in entry.queue.all() {
        inv.key(k);
    }
    inv.key(entry.queue.cron());
    inv.arg(&entry.key)
        .arg(tick_ms)
        .arg(&id)
        .arg(doc)
        .arg(entry.priority);
    let (status, last): (String, i64) = inv.invoke_async(&mut store.connection()).await?;
    let outcome = match status.as_str() {
        "created" => Outcome::Created,
        "exists" => Outcome::Exists,
        "started" => Outcome::Started,
        "seen" => Outcome::Seen,
        "future" => Outcome::Future,
        other => {
            return Err(Error::protocol(
                "cron_enqueue",
                format!("unknown status {other:?}"),
            ))
        }
    };
    Ok((outcome, last))
}

/// Runs the entries while `leader` says this daemon leads, until `stop`.
pub(crate) async fn run(
    store: Store,
    entries: Vec<Entry>,
    max_doc_bytes: usize,
    mut leader: LeaderWatch,
    metrics: std::sync::Arc<Metrics>,
    stop: CancellationToken,
) {
    if entries.is_empty() {
        return;
    }
    tracing::info!(entries = entries.len(), "cron started");
    // The last tick known handled, per entry: spares a script call per round.
    let mut handled: Vec<Option<i64>> = vec![None; entries.len()];
    let mut led: Option<u64> = None;
    loop {
        let fence = leader.fence();
        metrics.set_leader(DUTY, fence.is_some());
        if fence != led {
            match fence {
                Some(fence) => tracing::info!(
                    fence,
                    "cron: this daemon is the leader; running the entries"
                ),
                None if led.is_some() => {
                    tracing::info!("cron: no longer the leader; another daemon runs the entries")
                }
                None => {}
            }
            led = fence;
        }
        let wait = match fence {
            // Not the leader: wait for that to change. A term can lapse
            // without a wake-up (see `LeaderWatch::changed`), hence the bound.
            None => MAX_WAIT,
            Some(fence) => match redis_now_ms(&store).await {
                Ok(now) => {
                    let mut next = now + MAX_WAIT.as_millis() as i64;
                    for (entry, handled) in entries.iter().zip(handled.iter_mut()) {
                        // Stop offering as soon as the term ends (the script
                        // would refuse a duplicate anyway).
                        if leader.fence() == Some(fence) {
                            round(&store, entry, now, max_doc_bytes, handled, fence).await;
                        }
                        if let Some(t) = entry.next_tick(now) {
                            next = next.min(t);
                        }
                    }
                    // A millisecond past the tick, so Redis's clock has reached it.
                    Duration::from_millis(u64::try_from(next - now + 1).unwrap_or(1))
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cron: cannot read Redis's clock");
                    MAX_WAIT
                }
            },
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(wait.min(MAX_WAIT)) => {}
            // Gained or lost the lease: look again at once. A false (the
            // lease task ended) is only seen at a step-down, just before `stop`.
            true = leader.changed() => {}
        }
    }
    metrics.set_leader(DUTY, false);
}

async fn round(
    store: &Store,
    entry: &Entry,
    now: i64,
    max_doc_bytes: usize,
    handled: &mut Option<i64>,
    fence: u64,
) {
    let Some(tick) = entry.latest_tick(now) else {
        return;
    };
    if handled.is_some_and(|h| tick <= h) {
        return;
    }
    match offer(store, entry, tick, max_doc_bytes).await {
        Ok((outcome, last)) => {
            if outcome != Outcome::Future {
                *handled = Some(last.max(tick));
            }
            match outcome {
                Outcome::Created => tracing::debug!(
                    entry = %entry.path, queue = entry.queue.queue(), id = %entry.job_id(tick), fence,
                    "cron: enqueued a tick"
                ),
                Outcome::Started => tracing::info!(
                    entry = %entry.path, queue = entry.queue.queue(),
                    "cron: new entry; its first tick runs at the next occurrence"
                ),
                Outcome::Exists => tracing::warn!(
                    entry = %entry.path, id = %entry.job_id(tick), fence,
                    "cron: the tick's job already existed; not enqueued again"
                ),
                Outcome::Seen | Outcome::Future => {}
            }
        }
        Err(e) => {
            tracing::warn!(entry = %entry.path, error = %e, "cron: could not enqueue a tick; retrying")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(schedule: &str, tz: Option<&str>) -> Entry {
        let toml = format!(
            "[queues.q]\nhandler = {{ builtin = \"noop\" }}\n[[cron]]\nschedule = {schedule:?}\nqueue = \"q\"\n{}",
            tz.map(|t| format!("timezone = {t:?}")).unwrap_or_default()
        );
        let config = crate::config::load_from_str(&toml).unwrap();
        entries(&config).unwrap().pop().unwrap()
    }

    fn ms(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    #[test]
    fn ticks_around_now() {
        let e = entry("*/1 * * * * *", None);
        let now = ms("2024-05-01T12:00:00.500Z");
        assert_eq!(e.latest_tick(now), Some(ms("2024-05-01T12:00:00Z")));
        assert_eq!(e.next_tick(now), Some(ms("2024-05-01T12:00:01Z")));
        let exact = ms("2024-05-01T12:00:00Z");
        assert_eq!(e.latest_tick(exact), Some(exact));
        assert_eq!(e.next_tick(exact), Some(ms("2024-05-01T12:00:01Z")));
        let five = entry("*/5 * * * *", None);
        assert_eq!(five.latest_tick(now), Some(ms("2024-05-01T12:00:00Z")));
        assert_eq!(five.next_tick(now), Some(ms("2024-05-01T12:05:00Z")));
    }

    #[test]
    fn time_zones_move_the_ticks() {
        let e = entry("0 9 * * *", Some("Europe/Paris"));
        // Paris is UTC+2 in summer.
        let now = ms("2024-07-01T12:00:00Z");
        assert_eq!(e.latest_tick(now), Some(ms("2024-07-01T07:00:00Z")));
        assert_eq!(e.next_tick(now), Some(ms("2024-07-02T07:00:00Z")));
    }

    #[test]
    fn ids_are_deterministic_and_valid() {
        let a = entry("*/1 * * * * *", None);
        let b = entry("*/1 * * * * *", None);
        let id = a.job_id(ms("2024-05-01T12:00:00Z"));
        assert_eq!(id, b.job_id(ms("2024-05-01T12:00:00Z")));
        assert!(crate::keys::is_valid_name(&id), "{id}");
        assert_ne!(a.key, entry("*/2 * * * * *", None).key);
    }
}

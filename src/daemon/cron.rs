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
//! (`TIME`, never the host's), finds for each entry the ticks due at or
//! before that time (in the entry's time zone, see below), and hands each to
//! `cron_enqueue.lua`. The script keeps the last tick handled per entry in
//! `<prefix>:{<queue>}:cron` and enqueues a tick only when it is later than
//! that one (compare-and-set), under the deterministic id
//! `cron:<entry key>:<tick Unix ms>`. So a second leader (a lease lost during a
//! long pause), a late one, or one whose tick was already run and deleted
//! enqueues nothing.
//!
//! Missed ticks: each round, for each entry, the leader lists the ticks after
//! the entry's last handled one (read from the record once per term, then
//! kept from the script's answers) up to now, in the entry's time zone, and
//! offers them oldest first, one script call each. When all of them are at
//! most `daemon.cron_catch_up` old (a hand-over after a step-down or a crash,
//! a slow round) each runs, at most [`CATCH_UP_BATCH`] per entry and round,
//! the rest at once in the next round. When an older one was missed (real
//! downtime, no daemon at all) only the most recent missed tick runs, once;
//! older ones are skipped. A new entry (no tick recorded) starts from now: its
//! latest past tick is recorded, not run, and the next one runs.
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
use crate::store::Store;

/// Longest sleep between two checks, so clock steps and reloads are seen soon.
pub const MAX_WAIT: Duration = Duration::from_secs(1);

/// Most missed ticks of one entry offered in one round; the rest follow in
/// the next round, at once, so one entry cannot hold up the others for long.
pub const CATCH_UP_BATCH: usize = 100;

/// The ticks of an entry due in a round, after its last handled one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Due {
    /// Every missed tick is within the catch-up window: these run, oldest
    /// first; `more` when the batch is full and later missed ticks remain.
    CatchUp { ticks: Vec<i64>, more: bool },
    /// A tick older than the window was missed (downtime): only `latest` runs;
    /// the missed ticks from `first` on are skipped.
    Downtime { first: i64, latest: i64 },
}

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

    /// The ticks to offer after `last` (the last tick handled) up to
    /// `now_ms`: all of them, at most `batch`, when the oldest is at most
    /// `window` old; otherwise only the latest. `None` when none is missed.
    pub fn due(&self, last: i64, now_ms: i64, window: Duration, batch: usize) -> Option<Due> {
        let latest = self.latest_tick(now_ms)?;
        let first = self.next_tick(last).filter(|&t| t <= latest)?;
        let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        if now_ms.saturating_sub(first) > window_ms {
            return Some(Due::Downtime { first, latest });
        }
        let mut ticks = vec![first];
        let mut more = false;
        while let Some(t) = self
            .next_tick(ticks[ticks.len() - 1])
            .filter(|&t| t <= latest)
        {
            if ticks.len() == batch {
                more = true;
                break;
            }
            ticks.push(t);
        }
        Some(Due::CatchUp { ticks, more })
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
    let args = vec![
        entry.key.clone(),
        tick_ms.to_string(),
        id,
        doc,
        entry.priority.to_string(),
    ];
    let (status, last): (String, i64) =
        redis::from_redis_value(store.cron_enqueue(&entry.queue, args).await?)
            .map_err(|e| Error::protocol("cron_enqueue", e.to_string()))?;
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

/// The entry's last tick handled, from its record; `None` without one.
async fn last_tick(store: &Store, entry: &Entry) -> Result<Option<i64>> {
    Ok(redis::cmd("HGET")
        .arg(entry.queue.cron())
        .arg(&entry.key)
        .query_async(&mut store.connection())
        .await?)
}

/// What every round of the loop needs besides the entries.
pub(crate) struct Settings {
    /// `daemon.max_payload_bytes`.
    pub max_doc_bytes: usize,
    /// `daemon.cron_catch_up` (effective).
    pub catch_up: Duration,
}

/// Runs the entries while `leader` says this daemon leads, until `stop`.
pub(crate) async fn run(
    store: Store,
    entries: Vec<Entry>,
    settings: Settings,
    mut leader: LeaderWatch,
    metrics: std::sync::Arc<Metrics>,
    stop: CancellationToken,
) {
    if entries.is_empty() {
        return;
    }
    tracing::info!(entries = entries.len(), "cron started");
    // The last tick known handled, per entry (`None`: read the record). A new
    // term starts from the records: another leader may have moved them.
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
            handled.fill(None);
        }
        let wait = match fence {
            // Not the leader: wait for that to change. A term can lapse
            // without a wake-up (see `LeaderWatch::changed`), hence the bound.
            None => MAX_WAIT,
            Some(fence) => match redis_now_ms(&store).await {
                Ok(now) => {
                    let mut next = now + MAX_WAIT.as_millis() as i64;
                    let mut more = false;
                    for (entry, handled) in entries.iter().zip(handled.iter_mut()) {
                        let term = Term {
                            leader: &leader,
                            fence,
                        };
                        more |= round(&store, entry, now, &settings, handled, term).await;
                        if let Some(t) = entry.next_tick(now) {
                            next = next.min(t);
                        }
                    }
                    if more {
                        Duration::ZERO
                    } else {
                        // A millisecond past the tick, so Redis's clock has reached it.
                        Duration::from_millis(u64::try_from(next - now + 1).unwrap_or(1))
                    }
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

/// The term a round runs in: ticks are offered only while it lasts (the
/// script would refuse a duplicate anyway).
#[derive(Clone, Copy)]
struct Term<'a> {
    leader: &'a LeaderWatch,
    fence: u64,
}

impl Term<'_> {
    fn lasts(&self) -> bool {
        self.leader.fence() == Some(self.fence)
    }
}

/// Offers the due ticks of `entry`, oldest first, and keeps `handled` up to
/// date; true when missed ticks remain for the next round.
async fn round(
    store: &Store,
    entry: &Entry,
    now: i64,
    settings: &Settings,
    handled: &mut Option<i64>,
    term: Term<'_>,
) -> bool {
    let Some(latest) = entry.latest_tick(now) else {
        return false;
    };
    if handled.is_some_and(|h| latest <= h) || !term.lasts() {
        return false;
    }
    if handled.is_none() {
        match last_tick(store, entry).await {
            Ok(last) => *handled = last,
            Err(e) => {
                tracing::warn!(entry = %entry.path, error = %e, "cron: cannot read the last tick handled; retrying");
                return false;
            }
        }
    }
    let (ticks, more) = match *handled {
        // First sight: the script records the tick without running it.
        None => (vec![latest], false),
        Some(last) => match entry.due(last, now, settings.catch_up, CATCH_UP_BATCH) {
            None => return false,
            Some(Due::CatchUp { ticks, more }) => {
                if ticks.len() > 1 {
                    tracing::info!(
                        entry = %entry.path, queue = entry.queue.queue(), ticks = ticks.len(), more, fence = term.fence,
                        "cron: catching up on missed ticks"
                    );
                }
                (ticks, more)
            }
            Some(Due::Downtime { first, latest }) => {
                tracing::warn!(
                    entry = %entry.path, queue = entry.queue.queue(), first_missed_ms = first, latest_ms = latest,
                    catch_up = %crate::config::duration::format(settings.catch_up),
                    "cron: ticks older than daemon.cron_catch_up were missed (downtime); only the latest runs"
                );
                (vec![latest], false)
            }
        },
    };
    for tick in ticks {
        // A 'seen' answer may have moved the record past some of them.
        if handled.is_some_and(|h| tick <= h) {
            continue;
        }
        if !term.lasts() {
            return false;
        }
        match offer(store, entry, tick, settings.max_doc_bytes).await {
            Ok((Outcome::Future, _)) => return false,
            Ok((outcome, last)) => {
                *handled = Some(last.max(tick));
                log_outcome(entry, tick, &outcome, term.fence);
            }
            Err(e) => {
                tracing::warn!(entry = %entry.path, error = %e, "cron: could not enqueue a tick; retrying");
                return false;
            }
        }
    }
    more
}

fn log_outcome(entry: &Entry, tick: i64, outcome: &Outcome, fence: u64) {
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
    fn missed_ticks_within_the_window_all_run_in_batches() {
        let e = entry("*/1 * * * * *", None);
        let last = ms("2024-05-01T12:00:00Z");
        let now = ms("2024-05-01T12:00:05.500Z");
        let minute = Duration::from_secs(60);
        let secs = |n: std::ops::RangeInclusive<i64>| n.map(|s| last + s * 1000).collect();
        assert_eq!(
            e.due(last, now, minute, 100),
            Some(Due::CatchUp {
                ticks: secs(1..=5),
                more: false
            })
        );
        assert_eq!(
            e.due(last, now, minute, 3),
            Some(Due::CatchUp {
                ticks: secs(1..=3),
                more: true
            })
        );
        // Nothing missed: the latest tick is the last handled one.
        assert_eq!(e.due(last, last + 999, minute, 100), None);
        // A clock that stepped back: nothing either.
        assert_eq!(e.due(last, last - 5000, minute, 100), None);
        // Exactly as old as the window still catches up.
        assert_eq!(
            e.due(last, last + 2000, Duration::from_secs(1), 100),
            Some(Due::CatchUp {
                ticks: secs(1..=2),
                more: false
            })
        );
    }

    #[test]
    fn after_a_gap_longer_than_the_window_only_the_latest_runs() {
        let e = entry("*/1 * * * * *", None);
        let last = ms("2024-05-01T12:00:00Z");
        let now = ms("2024-05-01T12:00:05.500Z");
        assert_eq!(
            e.due(last, now, Duration::from_secs(3), 100),
            Some(Due::Downtime {
                first: last + 1000,
                latest: last + 5000
            })
        );
        // Years of downtime cost one step, not one per missed tick.
        let yearly = entry("0 0 0 1 1 *", None);
        assert_eq!(
            yearly.due(
                ms("2000-01-01T00:00:00Z"),
                now,
                Duration::from_secs(60),
                100
            ),
            Some(Due::Downtime {
                first: ms("2001-01-01T00:00:00Z"),
                latest: ms("2024-01-01T00:00:00Z")
            })
        );
    }

    #[test]
    fn missed_ticks_follow_the_time_zone() {
        // 02:30 does not exist in Paris on 31 March 2024 (clocks jump 02:00 -> 03:00).
        let e = entry("0 30 1-3 * * *", Some("Europe/Paris"));
        let last = ms("2024-03-30T23:30:00Z"); // 00:30 CET
        let now = ms("2024-03-31T01:45:00Z"); // 03:45 CEST
        assert_eq!(
            e.due(last, now, Duration::from_secs(3 * 3600), 100),
            Some(Due::CatchUp {
                ticks: vec![ms("2024-03-31T00:30:00Z"), ms("2024-03-31T01:30:00Z")],
                more: false
            })
        );
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

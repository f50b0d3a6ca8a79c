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
//!
//! This file is the duty (lease, loop, rounds); [`schedule`] the entries and
//! their ticks; [`crate::store::CronTick`] what goes to Redis.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

mod schedule;

use schedule::Due;
pub(crate) use schedule::{entries, Entry};

use crate::error::Result;
use crate::leader::{Leader, LeaderWatch};
use crate::observe::Metrics;
use crate::store::{CronOutcome as Outcome, CronTick, Store};

/// Longest sleep between two checks, so clock steps and reloads are seen soon.
pub const MAX_WAIT: Duration = Duration::from_secs(1);

/// Most missed ticks of one entry offered in one round; the rest follow in
/// the next round, at once, so one entry cannot hold up the others for long.
pub const CATCH_UP_BATCH: usize = 100;

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

/// Offers one tick of `entry`; returns what the script did and the entry's
/// last tick handled afterwards.
async fn offer(
    store: &Store,
    entry: &Entry,
    tick_ms: i64,
    max_doc_bytes: usize,
) -> Result<(Outcome, i64)> {
    let id = entry.job_id(tick_ms);
    let doc = entry.document(id.clone(), max_doc_bytes)?;
    let tick = CronTick {
        entry: &entry.key,
        tick_ms,
        id: &id,
        doc: &doc,
        priority: entry.priority,
    };
    store.offer_cron_tick(&entry.queue, &tick).await
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
            Some(fence) => match store.time_ms().await {
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
        match store.last_cron_tick(&entry.queue, &entry.key).await {
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

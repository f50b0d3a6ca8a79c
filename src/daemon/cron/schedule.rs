//! The schedule maths of `[[cron]]` entries: parsing them from the config,
//! their ticks in their time zones, and which missed ticks a round offers
//! (all within the catch-up window, or only the latest after downtime).
//! Pure functions of the entry and a time: unit-tested here.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;

use crate::config::{Config, Problem};
use crate::error::Result;
use crate::job::NewJob;
use crate::keys::QueueKeys;

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
    pub(super) path: String,
    pub(super) key: String,
    pub(super) queue: QueueKeys,
    cron: Cron,
    tz: Tz,
    payload: serde_json::Value,
    pub(super) priority: i64,
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

    pub(super) fn document(&self, id: String, max_doc_bytes: usize) -> Result<String> {
        Ok(NewJob::new(&self.payload)?
            .priority(self.priority)
            .id(id)
            .prepare_inline(max_doc_bytes)?
            .doc)
    }
}

/// Builds the entries of `config`; every problem names its `cron[i]` key.
pub(crate) fn entries(config: &Config) -> std::result::Result<Vec<Entry>, Vec<Problem>> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    for (i, c) in config.cron.iter().enumerate() {
        let path = format!("cron[{i}]");
        let key = c.key();
        if c.name.is_some() {
            if let Some(first) = names.insert(key.clone(), i) {
                problems.push(Problem::at(
                    &["cron", &i.to_string(), "name"],
                    format!("{key:?} is also the name of cron[{first}]; names must differ"),
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
                let at = |key: &str, e: String| Problem::at(&["cron", &i.to_string(), key], e);
                for e in [
                    s.err().map(|e| at("schedule", e.to_string())),
                    t.err().map(|e| at("timezone", e.to_string())),
                    q.err().map(|e| at("queue", e.to_string())),
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
            problems.push(Problem::at(
                &["cron", &i.to_string(), "payload"],
                e.to_string(),
            ));
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

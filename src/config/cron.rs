//! `[[cron]]`: jobs enqueued on a schedule (run by `daemon::cron`).
//!
//! `schedule` is a cron expression of 5 fields (`minute hour day-of-month
//! month day-of-week`) or 6 fields with seconds first (`second minute …`),
//! as the `croner` crate reads it: ranges, lists, steps (`*/5`), names
//! (`MON`, `JAN`), `L`, `#`, `W`, and `@hourly`-style nicknames. It is read
//! in `timezone` (IANA, default UTC), so `0 0 9 * * MON-FRI` in
//! `Europe/Paris` follows daylight saving time.

use std::str::FromStr;

use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use serde::{Deserialize, Serialize};

use super::error::Problems;

/// Longest `name`: the job id `cron:<name>:<tick ms>` stays within 128 characters.
pub const MAX_CRON_NAME_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CronConfig {
    /// A stable identity for the entry (1-64 of `A-Z a-z 0-9 _ . -`), used in
    /// job ids and in the record of the last tick. Default: a hash of the
    /// entry's other settings, so editing one of them makes a new entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// When to enqueue, e.g. `"0 */5 * * * *"`. Required.
    pub schedule: String,
    /// The queue to enqueue into; must be a `[queues.<name>]`. Required.
    pub queue: String,
    /// The job's payload. Default `{}`.
    #[serde(default = "empty_object")]
    pub payload: serde_json::Value,
    /// IANA time zone of the schedule, e.g. `"Europe/Paris"`. Default UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// The job's priority (-1000 to 1000). Default 0.
    #[serde(default)]
    pub priority: i64,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

impl CronConfig {
    /// The parsed schedule, or why it is refused.
    pub fn parse_schedule(&self) -> Result<Cron, String> {
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build();
        let cron = parser.parse(self.schedule.trim()).map_err(|e| {
            format!(
                "{:?} is not a cron expression ({e}); use 5 fields (minute hour day month weekday) \
                 or 6 with seconds first, e.g. \"*/10 * * * * *\"",
                self.schedule
            )
        })?;
        // A pattern such as "0 0 30 2 *" parses but never comes due.
        let probe = chrono::DateTime::<chrono::Utc>::from_timestamp(0, 0).unwrap_or_default();
        cron.find_next_occurrence(&probe, false)
            .map_err(|e| format!("{:?} never comes due ({e})", self.schedule))?;
        Ok(cron)
    }

    /// The time zone (UTC when none is given), or why it is refused.
    pub fn parse_timezone(&self) -> Result<chrono_tz::Tz, String> {
        match &self.timezone {
            None => Ok(chrono_tz::Tz::UTC),
            Some(tz) => chrono_tz::Tz::from_str(tz.trim()).map_err(|_| {
                format!("{tz:?} is not an IANA time zone name such as \"UTC\" or \"Europe/Paris\"")
            }),
        }
    }

    pub(super) fn check(&self, index: usize, queue_exists: bool, p: &mut Problems) {
        let i = index.to_string();
        if self.schedule.trim().is_empty() {
            p.push(&["cron", &i, "schedule"], "must not be empty");
        } else if let Err(e) = self.parse_schedule() {
            p.push(&["cron", &i, "schedule"], e);
        }
        p.check(
            queue_exists,
            &["cron", &i, "queue"],
            format!("{:?} is not a queue defined under [queues]", self.queue),
        );
        if let Some(tz) = &self.timezone {
            if tz.trim().is_empty() {
                p.push(&["cron", &i, "timezone"], "must not be empty");
            } else if let Err(e) = self.parse_timezone() {
                p.push(&["cron", &i, "timezone"], e);
            }
        }
        if let Some(name) = &self.name {
            p.check(
                !name.is_empty()
                    && name.len() <= MAX_CRON_NAME_LEN
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')),
                &["cron", &i, "name"],
                format!("{name:?} must be 1-{MAX_CRON_NAME_LEN} characters from A-Z a-z 0-9 _ . -"),
            );
        }
        p.check(
            (-1000..=1000).contains(&self.priority),
            &["cron", &i, "priority"],
            format!("{} is out of range -1000-1000", self.priority),
        );
    }

    /// The entry's identity: its `name`, or `h` and a hash of its settings.
    pub fn key(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        let text = serde_json::json!([
            self.queue,
            self.schedule.trim(),
            self.timezone.as_deref().map(str::trim).unwrap_or("UTC"),
            self.payload,
            self.priority,
        ])
        .to_string();
        // FNV-1a, 64 bits: stable across builds, hosts and versions.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in text.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("h{h:016x}")
    }
}

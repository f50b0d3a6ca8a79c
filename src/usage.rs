//! Usage accounting: what handlers reported (tokens, cost, …), added up per
//! queue, tenant and UTC day in Redis, and read back by `redq usage`.
//!
//! Layout: one HASH per queue and day, `<prefix>:{<queue>}:usage:<YYYY-MM-DD>`
//! (built by [`QueueKeys::usage_day`]), field `<tenant>` U+001F `<name>` →
//! total (a float, added with `HINCRBYFLOAT`). A job with no tenant counts
//! under [`NO_TENANT`]. Besides the names handlers report, every finished
//! attempt adds [`JOBS`] (1) and [`RUN_SECONDS`] (its run time). The field is
//! split at its *last* separator, and reported names may not contain it, so a
//! tenant holding any character is still read back unambiguously.
//!
//! The daemon's result writer adds each batch's usage inside the same
//! `complete.lua` / `fail.lua` call that records the batch's results (the day
//! hash shares the queue's hash tag), so usage is added exactly once per
//! recorded batch, and sets the day's hash to expire a retention
//! (`daemon.usage_retention`) after the end of its day.
//! Reading is O(days) per queue: one `HGETALL` per queue and day, in one
//! pipeline.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::handler::Usage;
use crate::keys::{self, QueueKeys};

/// The tenant usage of jobs without one is counted under.
pub const NO_TENANT: &str = "-";
/// Separates the tenant from the name in a usage hash field.
pub const FIELD_SEP: char = '\u{1f}';
/// Name of the count of finished attempts.
pub const JOBS: &str = "jobs";
/// Name of the summed run time of finished attempts, in seconds.
pub const RUN_SECONDS: &str = "run_seconds";
/// Most names kept from one report; the rest are dropped with a warning.
pub const MAX_NAMES: usize = 32;
/// Longest reported name.
pub const MAX_NAME_LEN: usize = 64;
/// Most days one read covers.
pub const MAX_DAYS: i64 = 3660;

const DAY_SECS: u64 = 86_400;

/// A UTC calendar day, as days since 1970-01-01; shown as `YYYY-MM-DD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Day(pub i64);

impl Day {
    /// The UTC day holding `t`.
    pub fn of(t: SystemTime) -> Day {
        let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Day((secs / DAY_SECS) as i64)
    }

    /// Today (UTC, this host's clock).
    pub fn today() -> Day {
        Day::of(SystemTime::now())
    }

    /// `n` days later (earlier when negative).
    pub fn plus(self, n: i64) -> Day {
        Day(self.0 + n)
    }

    /// Unix seconds at the end of this day.
    fn end_secs(self) -> u64 {
        u64::try_from(self.0 + 1).unwrap_or(0) * DAY_SECS
    }

    /// The year, month and day.
    pub fn ymd(self) -> (i64, u32, u32) {
        // Howard Hinnant's civil_from_days.
        let z = self.0 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let y = yoe + era * 400 + i64::from(m <= 2);
        (y, m, d)
    }

    /// The day of a year, month and day (no range checks).
    pub fn from_ymd(y: i64, m: u32, d: u32) -> Day {
        // Howard Hinnant's days_from_civil.
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let m = i64::from(m);
        let doy = (153 * ((m + 9) % 12) + 2) / 5 + i64::from(d) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        Day(era * 146_097 + doe - 719_468)
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

/// Reads `YYYY-MM-DD` (a real calendar date, 1970 or later).
pub fn parse_day(text: &str) -> std::result::Result<Day, String> {
    let bad = || format!("{text:?} is not a date written YYYY-MM-DD, such as 2025-01-31");
    let b = text.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let s = text.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (Some(y), Some(m), Some(d)) = (num(0..4), num(5..7), num(8..10)) else {
        return Err(bad());
    };
    let day = Day::from_ymd(i64::from(y), m, d);
    if y < 1970 || day.ymd() != (i64::from(y), m, d) {
        return Err(bad());
    }
    Ok(day)
}

/// True for a name a handler may report: 1–64 characters from
/// `A-Z a-z 0-9 _ . - :`, and not one of redq's own ([`JOBS`], [`RUN_SECONDS`]).
pub fn is_valid_name(name: &str) -> bool {
    name.len() <= MAX_NAME_LEN && keys::is_valid_name(name) && name != JOBS && name != RUN_SECONDS
}

/// The part of `usage` that is counted: valid names (see [`is_valid_name`]) with
/// finite values, at most [`MAX_NAMES`]. What is dropped is logged as a warning.
pub fn sanitize(usage: &Usage) -> Usage {
    let mut kept = Usage::new();
    for (name, value) in usage {
        if !is_valid_name(name) {
            tracing::warn!(name = %name.escape_debug(), "usage name refused (1-64 characters from A-Z a-z 0-9 _ . - :, not \"jobs\" or \"run_seconds\"); it is not counted");
        } else if !value.is_finite() {
            tracing::warn!(name = %name, "usage value is not a finite number; it is not counted");
        } else if kept.len() >= MAX_NAMES {
            tracing::warn!(name = %name, limit = MAX_NAMES, "more usage names than the limit in one report; the rest are not counted");
            break;
        } else {
            kept.insert(name.clone(), *value);
        }
    }
    kept
}

/// The hash field of `name` for `tenant` (`None`: [`NO_TENANT`]).
pub fn field(tenant: Option<&str>, name: &str) -> String {
    format!("{}{FIELD_SEP}{name}", tenant.unwrap_or(NO_TENANT))
}

/// Splits a hash field into tenant and name.
pub fn split_field(field: &str) -> Option<(&str, &str)> {
    field.rsplit_once(FIELD_SEP)
}

/// One write batch's usage on one day, summed before it goes to Redis. The
/// daemon's writer hands it to `complete.lua` / `fail.lua` (see
/// [`Tally::script_args`]), so the usage of a batch is added in the same
/// atomic step as the batch's results: once, even when a batch is sent again
/// after its reply was lost (the retry finds every job already finished and
/// adds nothing).
#[derive(Debug)]
pub struct Tally {
    day: Day,
    sums: BTreeMap<String, f64>,
}

impl Tally {
    pub fn new(day: Day) -> Tally {
        Tally {
            day,
            sums: BTreeMap::new(),
        }
    }

    /// Adds one finished attempt of `tenant`: [`JOBS`] 1, [`RUN_SECONDS`]
    /// `run`, and the reported `usage` (already [`sanitize`]d).
    pub fn add(&mut self, tenant: Option<&str>, run: Duration, usage: &Usage) {
        let mut add = |name: &str, n: f64| {
            *self.sums.entry(field(tenant, name)).or_default() += n;
        };
        add(JOBS, 1.0);
        add(RUN_SECONDS, run.as_secs_f64());
        for (name, n) in usage {
            add(name, *n);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.sums.is_empty()
    }

    /// The day's hash key (an extra script key, same hash tag as the queue),
    /// and the arguments the scripts take: the number of fields, when the
    /// hash expires (Unix s: `retention` after the end of its day), then
    /// field and amount (as `HINCRBYFLOAT` reads it) per field.
    pub fn script_args(&self, q: &QueueKeys, retention: Duration) -> (String, Vec<String>) {
        let at = self.day.end_secs().saturating_add(retention.as_secs());
        let mut args = Vec::with_capacity(2 + 2 * self.sums.len());
        args.extend([self.sums.len().to_string(), at.to_string()]);
        for (field, n) in &self.sums {
            args.extend([field.clone(), format_number(*n)]);
        }
        (q.usage_day(&self.day.to_string()), args)
    }
}

/// A number as `HINCRBYFLOAT` reads it: integers without a fraction, others in
/// Rust's shortest round-trip form (never exponent notation, which Redis refuses).
fn format_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_round_trip_through_their_dates() {
        assert_eq!(Day(0).to_string(), "1970-01-01");
        assert_eq!(parse_day("2024-02-29").unwrap().to_string(), "2024-02-29");
        assert_eq!(
            parse_day("2000-03-01").unwrap().plus(-1).to_string(),
            "2000-02-29"
        );
        for d in [0, 59, 60, 365, 10_957, 19_782, 30_000] {
            let day = Day(d);
            assert_eq!(parse_day(&day.to_string()), Ok(day));
        }
        for bad in [
            "2023-02-29",
            "2024-13-01",
            "24-01-01",
            "2024-1-01",
            "1969-12-31",
            "2024-01-0x",
        ] {
            assert!(parse_day(bad).is_err(), "{bad}");
        }
        let t = UNIX_EPOCH + Duration::from_secs(19_782 * 86_400 + 86_399);
        assert_eq!(Day::of(t), Day(19_782));
    }

    #[test]
    fn fields_split_at_the_last_separator() {
        let f = field(Some("a\u{1f}b"), "tokens");
        assert_eq!(split_field(&f), Some(("a\u{1f}b", "tokens")));
        assert_eq!(split_field(&field(None, JOBS)), Some((NO_TENANT, JOBS)));
    }

    #[test]
    fn only_valid_names_and_finite_numbers_are_counted() {
        let mut u = Usage::new();
        u.insert("tokens".into(), 3.0);
        u.insert("jobs".into(), 1.0);
        u.insert("bad\u{1f}name".into(), 1.0);
        u.insert("nan".into(), f64::NAN);
        let kept = sanitize(&u);
        assert_eq!(
            kept.into_iter().collect::<Vec<_>>(),
            vec![("tokens".into(), 3.0)]
        );
        assert_eq!(format_number(3.0), "3");
        assert_eq!(format_number(0.001), "0.001");
        assert_eq!(format_number(1e-7), "0.0000001");
    }
}

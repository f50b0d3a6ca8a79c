//! Serde helpers for [`Duration`] written as human strings: `"500ms"`,
//! `"30s"`, `"5m"`, `"1h"`, `"30d"`, or several parts (`"1h 30m"`).
//!
//! Use as `#[serde(with = "duration")]`, or `#[serde(with = "duration::option")]`
//! for an `Option<Duration>`. Durations serialize back to the same kind of
//! string ([`format`]), so a printed config reads again.
//!
//! The units are exactly `ms`, `s`, `m`, `h` and `d`, in lower case: `"5M"`
//! (minutes or months?) and `"100y"` are refused with the list, and so are
//! bare numbers (`30` could mean seconds or milliseconds), fractions and
//! negative values, each saying what a duration looks like. The CLI's
//! duration flags (`--delay`, `--max-age`, …) read the same way.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Serializer;

/// What a duration looks like, for error messages.
pub const EXPECTED: &str =
    "a whole number and a unit, e.g. \"500ms\", \"30s\", \"5m\", \"1h\", \"7d\" or \"1h 30m\" (units: ms, s, m, h, d)";

/// The units, longest first so `ms` is not read as `m` then `s`.
const UNITS: [(&str, u64); 5] = [
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
];

/// Parses `"30s"`-style text; the error says what was wrong and what a
/// duration looks like.
pub fn parse(text: &str) -> Result<Duration, String> {
    let bad = |why: &str| format!("{text:?} is not a duration: {why}; write {EXPECTED}");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad("it is empty"));
    }
    if rest.starts_with('-') {
        return Err(bad("durations cannot be negative"));
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad(&format!("expected a number at {rest:?}")));
        }
        let (number, after) = rest.split_at(digits);
        if after.starts_with(['.', ',']) {
            return Err(bad(
                "whole numbers only (write \"1500ms\" rather than \"1.5s\")",
            ));
        }
        let after = after.trim_start();
        let unit_len = after
            .bytes()
            .take_while(|b| b.is_ascii_alphabetic())
            .count();
        let (unit, after) = after.split_at(unit_len);
        let Some((_, ms)) = UNITS.iter().find(|(u, _)| *u == unit) else {
            return Err(bad(&if unit.is_empty() {
                format!("{number} has no unit")
            } else {
                format!(
                    "unknown unit {unit:?}{}",
                    match unit {
                        "M" | "mo" | "month" | "months" | "y" | "Y" | "w" | "W" =>
                            " (months, weeks and years are ambiguous: write days, e.g. \"30d\")",
                        "min" | "mins" | "minute" | "minutes" => " (minutes are \"m\")",
                        "sec" | "secs" | "second" | "seconds" => " (seconds are \"s\")",
                        "H" | "D" | "S" | "MS" => " (units are lower case)",
                        _ => "",
                    }
                )
            }));
        };
        let n: u64 = number.parse().map_err(|_| bad("the number is too large"))?;
        total = n
            .checked_mul(*ms)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| bad("it is too large"))?;
        rest = after.trim_start();
    }
    Ok(Duration::from_millis(total))
}

/// Formats a duration the way [`parse`] reads it (`"1h 30m"`, `"90d"`,
/// `"0s"`), to the millisecond.
pub fn format(d: Duration) -> String {
    let mut left = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if left == 0 {
        return "0s".into();
    }
    let mut parts = Vec::new();
    for (unit, ms) in UNITS.iter().rev() {
        if left >= *ms {
            parts.push(format!("{}{unit}", left / ms));
            left %= ms;
        }
    }
    parts.join(" ")
}

pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*d))
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(DurationVisitor)
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(EXPECTED)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse(v).map_err(E::custom)
    }
}

/// The same for `Option<Duration>`; pair it with `#[serde(default)]`.
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::deserialize(d).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_units_an_operator_means() {
        let ms = |t: &str| parse(t).map(|d| d.as_millis()).unwrap();
        assert_eq!(ms("500ms"), 500);
        assert_eq!(ms("30s"), 30_000);
        assert_eq!(ms("5m"), 300_000);
        assert_eq!(ms("1h"), 3_600_000);
        assert_eq!(ms("30d"), 30 * 86_400_000);
        assert_eq!(ms("1h 30m"), 5_400_000);
        assert_eq!(ms("1h30m"), 5_400_000);
        assert_eq!(ms(" 2 s "), 2_000);
        assert_eq!(ms("0s"), 0);
    }

    #[test]
    fn refuses_ambiguous_units_with_the_list() {
        for (text, says) in [
            ("5M", "unknown unit \"M\""),
            ("100y", "unknown unit \"y\""),
            ("2w", "write days"),
            ("5min", "minutes are \"m\""),
            ("10us", "unknown unit \"us\""),
            ("30", "30 has no unit"),
            ("-1s", "cannot be negative"),
            ("1.5s", "whole numbers only"),
            ("", "empty"),
            ("s", "expected a number"),
            ("99999999999999999999d", "too large"),
            ("999999999999999d", "too large"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(says), "{text:?}: {e}");
            assert!(e.contains("units: ms, s, m, h, d"), "{text:?}: {e}");
        }
    }

    #[test]
    fn formats_what_it_reads() {
        for text in [
            "0s",
            "500ms",
            "30s",
            "5m",
            "1h 30m",
            "90d",
            "1d 2h 3m 4s 5ms",
        ] {
            assert_eq!(format(parse(text).unwrap()), text);
        }
    }
}

//! Serde helpers for [`Duration`] written as human strings: `"500ms"`, `"30s"`,
//! `"5m"`, `"1h"`, `"30d"` (parsed with `humantime`).
//!
//! Use as `#[serde(with = "duration")]`, or `#[serde(with = "duration::option")]`
//! for an `Option<Duration>`. Durations serialize back to the same kind of
//! string (`humantime::format_duration`), so a printed config reads again.
//! Bare numbers are refused: `30` could mean seconds or milliseconds.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Serializer;

const EXPECTED: &str = "a duration string such as \"500ms\", \"30s\", \"5m\" or \"30d\"";

/// Parses `"30s"`-style text; the error says what was wrong and what is expected.
pub fn parse(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("invalid duration {text:?}: {e}; expected {EXPECTED}"))
}

/// Formats a duration the way [`parse`] reads it (`"1m 30s"`, `"0s"`).
pub fn format(d: Duration) -> String {
    humantime::format_duration(d).to_string()
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

//! `[redis]`: where Redis is and how long to wait for it.
//!
//! Credentials live in the URL; anything that logs a URL goes through
//! [`redacted_url`] first.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;
use super::error::Problems;

/// Longest key prefix accepted (the queue name and `{}` follow it in every key).
pub const MAX_PREFIX_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[user:pass@]host[:port][/db]` or
    /// `redis+unix:///path/to.sock`. Default `redis://127.0.0.1:6379`.
    pub url: String,
    /// Prefix of every Redis key: 1–64 characters from `A-Z a-z 0-9 _ . - :`. Default `redq`.
    pub key_prefix: String,
    /// How long to wait for a connection. Default 5s.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// How long to wait for one command's answer (blocking waits excepted). Default 10s.
    #[serde(with = "duration")]
    pub command_timeout: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379".into(),
            key_prefix: crate::keys::DEFAULT_PREFIX.into(),
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(10),
        }
    }
}

const SCHEMES: [&str; 3] = ["redis", "redis+unix", "unix"];

impl RedisConfig {
    pub(super) fn check(&self, p: &mut Problems) {
        match self.url.split_once("://") {
            Some((scheme, rest)) if SCHEMES.contains(&scheme) && !rest.is_empty() => {}
            Some(("rediss", _)) => p.push(
                &["redis", "url"],
                "rediss:// (TLS) is not supported by this build of redq yet; use redis:// through a TLS tunnel (e.g. stunnel) for now".to_owned(),
            ),
            _ => p.push(
                &["redis", "url"],
                format!(
                    "{} is not a Redis URL; expected redis://[user:pass@]host[:port][/db] or redis+unix:///path",
                    redacted_url(&self.url)
                ),
            ),
        }
        let prefix_ok = (1..=MAX_PREFIX_LEN).contains(&self.key_prefix.len())
            && crate::keys::is_valid_name(&self.key_prefix);
        p.check(
            prefix_ok,
            &["redis", "key_prefix"],
            format!(
                "{:?} must be 1-{MAX_PREFIX_LEN} characters from A-Z a-z 0-9 _ . - :",
                self.key_prefix
            ),
        );
        p.check(
            !self.connect_timeout.is_zero(),
            &["redis", "connect_timeout"],
            "must be more than 0s",
        );
        p.check(
            !self.command_timeout.is_zero(),
            &["redis", "command_timeout"],
            "must be more than 0s",
        );
    }
}

/// The URL with its user and password replaced by `***`, safe to log:
/// `redis://app:secret@db:6379/2` → `redis://***@db:6379/2`.
///
/// Everything up to the last `@` after the scheme is hidden, so a password
/// containing unescaped `/` or `@` still never shows.
pub fn redacted_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    match rest.rfind('@') {
        Some(at) => format!("{scheme}***{}", &rest[at..]),
        None => url.to_string(),
    }
}

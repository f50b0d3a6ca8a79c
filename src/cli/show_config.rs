//! `redq config`'s output: the configuration as TOML, secrets masked.
//!
//! Masked: the credentials in `redis.url` and `redis.cluster`,
//! `redis.sentinel.password`, and
//! the values of a handler's `env` and `headers` (they hold API keys and
//! tokens). Everything else prints as the daemon reads it, durations in
//! the form the file takes (`"1h 30m"`), so the output reads back as a file.

use crate::config::{self, Config, HandlerConfig, ENV_PREFIX, ENV_SEPARATOR};

/// What stands for a masked value.
pub const MASK: &str = "***";

/// `c` as TOML, secrets masked, in the order of the reference.
pub fn to_toml(c: &Config) -> Result<String, String> {
    let mut c = c.clone();
    c.redis.url = config::redacted_url(&c.redis.url);
    for seed in &mut c.redis.cluster {
        *seed = config::redacted_url(seed);
    }
    if let Some(s) = &mut c.redis.sentinel {
        if s.password.is_some() {
            s.password = Some(MASK.into());
        }
    }
    for q in c.queues.values_mut() {
        let secrets = match &mut q.handler {
            Some(HandlerConfig::Command(h)) => &mut h.env,
            Some(HandlerConfig::Http(h)) => &mut h.headers,
            _ => continue,
        };
        for value in secrets.values_mut() {
            *value = MASK.into();
        }
    }
    toml::to_string_pretty(&c).map_err(|e| e.to_string())
}

/// The names of the `REDQ_…` variables that are configuration (those with
/// a `__`), sorted.
pub fn config_variables() -> Vec<String> {
    let mut vars: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| k.starts_with(ENV_PREFIX) && k.contains(ENV_SEPARATOR))
        .collect();
    vars.sort();
    vars
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_and_the_rest_reads_back() {
        let c = config::load_from_str(
            r#"
[redis]
url = "redis://app:s3cret@db:6379/2"
sentinel = { master = "m", nodes = ["s1:26379"], password = "sentinel-secret" }
[queues.mail]
handler = { command = ["/bin/cat"], env = { API_KEY = "key-secret" } }
timeout = "1h 30m"
[queues.hook]
handler = { http = "http://127.0.0.1:1/x", headers = { Authorization = "Bearer token-secret" } }
"#,
        )
        .unwrap();
        let text = to_toml(&c).unwrap();
        for secret in ["s3cret", "sentinel-secret", "key-secret", "token-secret"] {
            assert!(!text.contains(secret), "{secret} shows:\n{text}");
        }
        assert!(text.contains("redis://***@db:6379/2"), "{text}");
        assert!(text.contains("timeout = \"1h 30m\""), "{text}");
        assert!(text.contains("API_KEY = \"***\""), "{text}");
        let back = config::read_str(&text).unwrap();
        assert_eq!(back.queues["mail"].timeout, c.queues["mail"].timeout);
        assert_eq!(back.daemon, c.daemon);
    }
}

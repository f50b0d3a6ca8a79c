//! Where the CLI finds Redis: `--redis-url`, else `REDQ_REDIS__URL`, else the
//! config file (`--config`, default `workers.toml` if present), else
//! `redis://127.0.0.1:6379`. The key prefix and `[redis.tls]` are found the
//! same way (`REDQ_REDIS__TLS__CA_FILE` etc.).
//!
//! Only `[redis]` and the queue names are read here, leniently: a producer's
//! `redq enqueue` must not fail because of a daemon-only setting. `redq run`
//! and `redq check-config` validate the whole file.

use std::collections::BTreeMap;
use std::path::Path;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::Deserialize;

use crate::config::DEFAULT_PATH;
use crate::error::{Error, Result};
use crate::keys::DEFAULT_PREFIX;

/// The Redis URL, key prefix, TLS settings and configured queue names the
/// CLI works with.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub prefix: String,
    pub tls: crate::config::TlsConfig,
    pub sentinel: Option<crate::config::SentinelConfig>,
    /// `[redis] cluster` seeds (cleared by `--url`).
    pub cluster: Vec<String>,
    pub wait_replicas: u32,
    pub wait_timeout: Option<std::time::Duration>,
    pub configured_queues: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Lenient {
    #[serde(default)]
    redis: LenientRedis,
    #[serde(default)]
    queues: BTreeMap<String, serde::de::IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
struct LenientRedis {
    url: Option<String>,
    key_prefix: Option<String>,
    #[serde(default)]
    tls: crate::config::TlsConfig,
    #[serde(default)]
    sentinel: Option<crate::config::SentinelConfig>,
    #[serde(default)]
    cluster: Vec<String>,
    #[serde(default)]
    wait_replicas: u32,
    #[serde(default, with = "crate::config::duration::option")]
    wait_timeout: Option<std::time::Duration>,
}

/// Which file the CLI reads `[redis]` and the queue names from.
#[derive(Debug, Clone, Copy)]
pub enum File<'a> {
    /// `--config FILE`: it must exist.
    Named(&'a Path),
    /// `workers.toml` in the working directory, when it exists.
    Default,
    /// `--no-config`: none.
    None,
}

impl Target {
    /// The `[redis]` settings to reach the target with these connect and
    /// command time-outs.
    pub fn redis_config(
        &self,
        connect: std::time::Duration,
        command: std::time::Duration,
    ) -> crate::config::RedisConfig {
        let defaults = crate::config::RedisConfig::default();
        crate::config::RedisConfig {
            url: self.url.clone(),
            key_prefix: self.prefix.clone(),
            connect_timeout: connect,
            command_timeout: command,
            tls: self.tls.clone(),
            sentinel: self.sentinel.clone(),
            cluster: self.cluster.clone(),
            wait_replicas: self.wait_replicas,
            wait_timeout: self.wait_timeout.unwrap_or(defaults.wait_timeout),
        }
    }

    /// Connects to the target Redis with these connect and command time-outs.
    pub async fn store(
        &self,
        connect: std::time::Duration,
        command: std::time::Duration,
    ) -> Result<crate::store::Store> {
        crate::store::Store::open(&self.redis_config(connect, command)).await
    }

    pub fn resolve(file: File<'_>, url: Option<&str>, prefix: Option<&str>) -> Result<Target> {
        let mut fig = Figment::new();
        match file {
            File::Named(path) if !path.exists() => {
                return Err(Error::Config(format!(
                    "config file {} does not exist; pass an existing file with --config",
                    path.display()
                )))
            }
            File::Named(path) => fig = fig.merge(Toml::file_exact(path)),
            File::Default if Path::new(DEFAULT_PATH).exists() => {
                fig = fig.merge(Toml::file_exact(DEFAULT_PATH))
            }
            File::Default | File::None => {}
        }
        fig = fig.merge(Env::prefixed("REDQ_").split("__").only(&[
            "redis.url",
            "redis.key_prefix",
            "redis.tls.ca_file",
            "redis.tls.cert_file",
            "redis.tls.key_file",
            "redis.tls.server_name",
            "redis.tls.insecure_skip_verify",
            "redis.sentinel",
            "redis.cluster",
            "redis.wait_replicas",
            "redis.wait_timeout",
        ]));
        let file: Lenient = fig.extract().map_err(|e| Error::Config(e.to_string()))?;
        Ok(Target {
            url: url
                .map(str::to_owned)
                .or(file.redis.url)
                .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned()),
            prefix: prefix
                .map(str::to_owned)
                .or(file.redis.key_prefix)
                .unwrap_or_else(|| DEFAULT_PREFIX.to_owned()),
            tls: file.redis.tls,
            sentinel: file.redis.sentinel,
            // `--url` names one server: the one to reach.
            cluster: if url.is_some() {
                Vec::new()
            } else {
                file.redis.cluster
            },
            wait_replicas: file.redis.wait_replicas,
            wait_timeout: file.redis.wait_timeout,
            configured_queues: file.queues.into_keys().collect(),
        })
    }
}

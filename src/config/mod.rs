//! `workers.toml`: the daemon's configuration, read with figment and validated.
//!
//! Layers, later ones win: built-in defaults (the `Default` impls, through
//! `#[serde(default)]`) → the TOML file → `REDQ_…` environment variables
//! (`__` nests: `REDQ_REDIS__URL`, `REDQ_QUEUES__EMAILS__CONCURRENCY`) →
//! [`Overrides`] from command-line flags. Only variables containing `__` are
//! read, so `REDQ_CONFIG` or the `REDQ_JOB_ID` a handler receives never count.
//!
//! Unknown keys and ill-typed values are refused while reading, every one
//! of them (see `read.rs`); [`Config::validate`] then checks ranges and
//! cross-field rules. All problems are reported at once, one per line, each
//! with its key path and where it was set (file and line, variable, flag).
//!
//! Called by `redq run` / `redq check-config` (through [`load`]) and by
//! embedders (through [`read`] + [`Config::validate_with`]).

mod cron;
mod daemon;
pub mod duration;
mod error;
mod handler;
mod pool;
mod queue;
mod read;
mod redis;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Serialize};

pub use cron::CronConfig;
pub use daemon::{DaemonConfig, LogFormat};
pub use error::{ConfigError, Problem};
pub use handler::{Builtin, BuiltinHandler, CommandHandler, HandlerConfig, HttpHandler};
pub use pool::{Order, PoolConfig};
pub use queue::{BackoffConfig, QueueConfig, RateLimitConfig};
pub use redis::{redacted_url, RedisConfig, SentinelConfig, TlsConfig};

use error::Problems;

/// The file read when no path is given, if it exists.
pub const DEFAULT_PATH: &str = "workers.toml";
/// Prefix of the environment variables that override the file.
pub const ENV_PREFIX: &str = "REDQ_";
/// Nesting separator in those variables' names.
pub const ENV_SEPARATOR: &str = "__";
const OVERRIDE_SOURCE: &str = "command-line flag";

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub redis: RedisConfig,
    pub daemon: DaemonConfig,
    /// The queues this daemon serves, by name (1–128 of `A-Z a-z 0-9 _ . - :`).
    pub queues: BTreeMap<String, QueueConfig>,
    /// Shared worker sets serving several queues, by name.
    pub pools: BTreeMap<String, PoolConfig>,
    /// Scheduled enqueues.
    pub cron: Vec<CronConfig>,
}

/// Values set by command-line flags: the last layer, above the environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    values: Vec<(String, Value)>,
}

impl Overrides {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the key at the dotted `path`, e.g. `.set("daemon.log_level", "debug")`.
    /// Durations are given as strings (`"30s"`).
    pub fn set(mut self, path: &str, value: impl Into<Value>) -> Self {
        self.values.push((path.to_string(), value.into()));
        self
    }
}

impl Provider for Overrides {
    fn metadata(&self) -> Metadata {
        Metadata::named(OVERRIDE_SOURCE)
    }

    fn data(&self) -> figment::Result<Map<Profile, Dict>> {
        let mut dict = Dict::new();
        for (path, value) in &self.values {
            if let Value::Dict(_, nested) = figment::util::nest(path, value.clone()) {
                merge(&mut dict, nested);
            }
        }
        Ok(Profile::Default.collect(dict))
    }
}

/// Merges `from` into `into`, recursing into tables present in both.
fn merge(into: &mut Dict, from: Dict) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(Value::Dict(_, old)), Value::Dict(_, new)) => merge(old, new),
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

/// The `REDQ_…` variables that hold configuration (those with a `__`).
fn env_provider() -> Env {
    Env::prefixed(ENV_PREFIX)
        .filter(|key| key.as_str().contains(ENV_SEPARATOR))
        .split(ENV_SEPARATOR)
}

/// The file [`load`] reads for `path`: `path` itself, which must be a
/// file, or [`DEFAULT_PATH`] if it exists, or none.
pub fn file_to_read(path: Option<&Path>) -> Result<Option<PathBuf>, ConfigError> {
    match path {
        Some(path) => match std::fs::metadata(path) {
            Ok(m) if m.is_file() => Ok(Some(path.to_path_buf())),
            Ok(_) => Err(ConfigError::other(format!(
                "config file {}: not a file",
                path.display()
            ))),
            Err(e) => Err(ConfigError::other(format!(
                "config file {}: {e}",
                path.display()
            ))),
        },
        None if Path::new(DEFAULT_PATH).is_file() => Ok(Some(PathBuf::from(DEFAULT_PATH))),
        None => Ok(None),
    }
}

/// Reads and validates the configuration for `redq run`: `path` (which must
/// exist), or [`DEFAULT_PATH`] if it exists, then the environment, then
/// `overrides`. Every problem is reported, each with its key path and
/// where it was set (file and line, variable, flag).
pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
    load_with(path, overrides, &BTreeSet::new())
}

/// Like [`load`], for a daemon whose `library_queues` have Rust handlers
/// (see [`Config::validate_with`]).
pub fn load_with(
    path: Option<&Path>,
    overrides: &Overrides,
    library_queues: &BTreeSet<String>,
) -> Result<Config, ConfigError> {
    load_layers(file_to_read(path)?.as_deref(), overrides, library_queues)
}

/// Reads and validates the defaults, exactly `file` (none: no file at all,
/// not even [`DEFAULT_PATH`]), the environment and `overrides`.
pub fn load_layers(
    file: Option<&Path>,
    overrides: &Overrides,
    library_queues: &BTreeSet<String>,
) -> Result<Config, ConfigError> {
    let figment = read::figment(file, overrides);
    let reading = read::read_all(&figment)?;
    let mut problems = reading.problems;
    if let Err(e) = reading.config.validate_with(library_queues) {
        // A rule about a value already refused (its default stood in) would
        // only repeat the problem.
        problems.extend(e.into_problems().into_iter().filter(|p| {
            !reading
                .dropped
                .iter()
                .any(|d| p.segments.starts_with(d) || d.starts_with(&p.segments))
        }));
    }
    if problems.is_empty() {
        return Ok(reading.config);
    }
    read::locate(&mut problems, &figment);
    Err(ConfigError::from_problems(problems))
}

/// Reads, without validating, the defaults, exactly `file`, the
/// environment and `overrides`: what `redq config` prints.
pub fn read_layers(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
    let figment = read::figment(file, overrides);
    let mut reading = read::read_all(&figment)?;
    if reading.problems.is_empty() {
        return Ok(reading.config);
    }
    read::locate(&mut reading.problems, &figment);
    Err(ConfigError::from_problems(reading.problems))
}

/// Like [`load`], without [`Config::validate`]: for embedders, who then call
/// [`Config::validate_with`] naming the queues that have library handlers.
pub fn read(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
    read_layers(file_to_read(path)?.as_deref(), overrides)
}

/// Adds to each of `e`'s problems where its key was set (file and line,
/// variable, flag), reading the same layers as [`load_layers`]: for
/// problems found after loading (a handler's program that is not there).
pub fn locate(e: ConfigError, file: Option<&Path>, overrides: &Overrides) -> ConfigError {
    let figment = read::figment(file, overrides);
    let mut problems = e.into_problems();
    read::locate(&mut problems, &figment);
    ConfigError::from_problems(problems)
}

/// Reads and validates TOML text alone (no environment, no flags): for tests
/// and `check-config` on a snippet.
pub fn load_from_str(toml: &str) -> Result<Config, ConfigError> {
    let config = read_str(toml)?;
    config.validate()?;
    Ok(config)
}

/// Like [`load_from_str`], without validation.
pub fn read_str(toml: &str) -> Result<Config, ConfigError> {
    let reading = read::read_all(&Figment::from(Toml::string(toml)))?;
    if reading.problems.is_empty() {
        Ok(reading.config)
    } else {
        Err(ConfigError::from_problems(reading.problems))
    }
}

impl Config {
    /// Checks every rule, for a daemon without library handlers.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_with(&BTreeSet::new())
    }

    /// Checks every rule; queues in `library_queues` have a Rust handler
    /// registered, so they need no `handler` (and may not have one).
    pub fn validate_with(&self, library_queues: &BTreeSet<String>) -> Result<(), ConfigError> {
        let mut p = Problems::default();
        self.redis.check(&mut p);
        self.daemon.check(&mut p);
        for (name, queue) in &self.queues {
            p.check(
                crate::keys::is_valid_name(name),
                &["queues", name],
                "queue names must be 1-128 characters from A-Z a-z 0-9 _ . - :",
            );
            queue.check(name, &mut p);
            match (&queue.handler, library_queues.contains(name)) {
                (None, false) => p.push(
                    &["queues", name, "handler"],
                    "missing: set handler = { command = [...] }, { http = \"...\" } or { builtin = \"noop\" }, \
                     or register a library handler for this queue",
                ),
                (Some(_), true) => p.push(
                    &["queues", name, "handler"],
                    "this queue also has a library handler registered; keep only one of them",
                ),
                _ => {}
            }
        }
        self.check_pools(&mut p);
        for (i, cron) in self.cron.iter().enumerate() {
            cron.check(i, self.queues.contains_key(&cron.queue), &mut p);
        }
        p.into_result()
    }

    fn check_pools(&self, p: &mut Problems) {
        let mut member_of: BTreeMap<&str, &str> = BTreeMap::new();
        for (pool_name, pool) in &self.pools {
            pool.check(pool_name, p);
            for q in &pool.queues {
                if !self.queues.contains_key(q) {
                    p.push(
                        &["pools", pool_name, "queues"],
                        format!("{q:?} is not a queue defined under [queues]"),
                    );
                } else if let Some(other) =
                    member_of.insert(q, pool_name).filter(|o| o != pool_name)
                {
                    p.push(
                        &["pools", pool_name, "queues"],
                        format!("{q:?} is already in pool {other:?}; a queue may be in at most one pool"),
                    );
                }
            }
        }
        for (name, queue) in &self.queues {
            let Some(pool_name) = &queue.pool else {
                continue;
            };
            if !self.pools.contains_key(pool_name) {
                p.push(
                    &["queues", name, "pool"],
                    format!("{pool_name:?} is not a pool defined under [pools]"),
                );
            } else if let Some(other) = member_of.get(name.as_str()).filter(|o| *o != pool_name) {
                p.push(
                    &["queues", name, "pool"],
                    format!("names pool {pool_name:?} but pools.{other}.queues lists it; a queue may be in at most one pool"),
                );
            }
        }
        for pool_name in self.pools.keys() {
            if self.pool_queues(pool_name).is_empty() {
                p.push(&["pools", pool_name, "queues"], "the pool serves no queue");
            }
        }
    }

    /// The pool serving `queue`, if any: the one listing it, or the one it names.
    pub fn pool_of(&self, queue: &str) -> Option<&str> {
        let listed = self
            .pools
            .iter()
            .find(|(_, p)| p.queues.iter().any(|q| q == queue));
        listed
            .map(|(name, _)| name.as_str())
            .or_else(|| self.queues.get(queue)?.pool.as_deref())
    }

    /// The queues a pool serves: those it lists, in order, then those naming it.
    pub fn pool_queues(&self, pool: &str) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .pools
            .get(pool)
            .map(|p| p.queues.iter().map(String::as_str).collect())
            .unwrap_or_default();
        for (name, q) in &self.queues {
            if q.pool.as_deref() == Some(pool) && !out.contains(&name.as_str()) {
                out.push(name);
            }
        }
        out
    }
}

//! The Redis server itself: what a daemon's start and `redq setup` check
//! (version, functions, eviction policy, persistence), read once into
//! [`ServerFacts`] and judged by [`ServerFacts::findings`].
//!
//! Any eviction policy but `noeviction` lets Redis silently delete jobs
//! under memory pressure, so it is warned about loudly. Redis without
//! functions (older than 7.0) cannot run redq: its transitions and the
//! producers' `FCALL redq_enqueue` are Redis Functions. The facts come from
//! `INFO`, which a least-privilege user may run; only the RDB `save`
//! schedule needs `CONFIG GET`, which such a user (and some managed
//! services) may refuse: then the check says it could not tell.

use redis::aio::ConnectionLike;

use super::Store;
use crate::error::{Error, Result};

/// What the checks read from the server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerFacts {
    /// `redis_version` (Valkey reports the Redis version it is compatible
    /// with there, and its own as `valkey_version`); `None`: INFO refused.
    pub version: Option<String>,
    /// `valkey_version`, on Valkey.
    pub valkey_version: Option<String>,
    /// Whether the server knows FCALL (Redis 7.0 and newer, Valkey).
    pub functions: bool,
    /// `maxmemory_policy`; `None`: INFO refused.
    pub maxmemory_policy: Option<String>,
    /// Whether the append-only file is on; `None`: INFO refused.
    pub aof: Option<bool>,
    /// The RDB `save` schedule ("" is none); `None`: CONFIG GET refused.
    pub save: Option<String>,
}

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Ok,
    /// Redis could lose or evict jobs, or the check could not tell.
    Warn,
    /// redq cannot run on this server.
    Refuse,
}

/// One conclusion of the checks: its topic ("redis", "eviction",
/// "persistence") and a sentence for an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub topic: &'static str,
    pub severity: Severity,
    pub text: String,
}

fn finding(topic: &'static str, severity: Severity, text: impl Into<String>) -> Finding {
    Finding {
        topic,
        severity,
        text: text.into(),
    }
}

impl ServerFacts {
    /// The server's name as an operator knows it: "Redis 7.2.4", "Valkey 8.0.1".
    pub fn server_name(&self) -> String {
        match (&self.valkey_version, &self.version) {
            (Some(v), _) => format!("Valkey {v}"),
            (None, Some(v)) => format!("Redis {v}"),
            (None, None) => "Redis (version unknown: INFO refused)".to_owned(),
        }
    }

    /// The sentence `redq run` and `redq setup` refuse a server without
    /// functions with.
    pub fn unsupported(&self) -> Option<String> {
        if self.functions {
            return None;
        }
        let major: u32 = self
            .version
            .as_deref()
            .and_then(|v| v.split('.').next()?.parse().ok())
            .unwrap_or(0);
        let why = if major >= 7 {
            "does not accept FCALL (renamed or disabled?)"
        } else {
            "has no Redis Functions"
        };
        Some(format!(
            "{} {why}: redq supports Redis 7.0 or newer and Valkey 8, because its job \
             transitions and producers' FCALL redq_enqueue are Redis Functions",
            self.server_name()
        ))
    }

    /// Every conclusion, in the order an operator reads them.
    pub fn findings(&self) -> Vec<Finding> {
        let mut out = vec![match self.unsupported() {
            Some(text) => finding("redis", Severity::Refuse, text),
            None => finding("redis", Severity::Ok, self.server_name()),
        }];
        out.push(match self.maxmemory_policy.as_deref() {
            Some("noeviction") => finding("eviction", Severity::Ok, "maxmemory-policy noeviction"),
            Some(policy) => finding(
                "eviction",
                Severity::Warn,
                format!(
                    "REDIS CAN DELETE JOBS: maxmemory-policy is {policy:?}; under memory pressure \
                     Redis will evict keys, including queued jobs. Set `maxmemory-policy noeviction` \
                     on this Redis."
                ),
            ),
            None => finding(
                "eviction",
                Severity::Warn,
                "could not read maxmemory-policy (INFO refused); make sure it is noeviction",
            ),
        });
        out.push(match (self.aof, self.save.as_deref().map(str::trim)) {
            (Some(true), _) => finding("persistence", Severity::Ok, "appendonly yes"),
            (Some(false), Some("")) => finding(
                "persistence",
                Severity::Warn,
                "Redis persistence is off (no AOF, no RDB snapshots): a Redis restart loses every \
                 job. Enable appendonly for durable queues.",
            ),
            (Some(false), Some(save)) => finding(
                "persistence",
                Severity::Ok,
                format!("RDB snapshots (save {save:?}), appendonly no: a restart loses the jobs since the last snapshot; appendonly keeps them"),
            ),
            (Some(false), None) => finding(
                "persistence",
                Severity::Warn,
                "appendonly is off, and whether RDB snapshots are on is unknown (this user may \
                 not CONFIG GET; `redq setup` as an admin tells): without either, a Redis restart \
                 loses every job",
            ),
            (None, _) => finding(
                "persistence",
                Severity::Warn,
                "could not read the persistence settings (INFO refused)",
            ),
        });
        out
    }
}

impl Store {
    /// Reads [`ServerFacts`] (on a cluster, of its first primary); fails
    /// only when Redis does not answer.
    pub async fn server_facts(&self) -> Result<ServerFacts> {
        if !self.is_cluster() {
            return facts(&mut self.connection()).await;
        }
        let mut each = self.each_primary().await?;
        match each.first_mut() {
            Some((_, con)) => facts(con).await,
            None => Err(Error::Unsupported("the cluster has no primary".into())),
        }
    }

    /// Checks the server (on a cluster, each primary) at a daemon's start
    /// and logs what an operator must know (see the module doc); refuses a
    /// server without functions with [`Error::Unsupported`].
    pub async fn check_server(&self) -> Result<()> {
        let cluster = self.is_cluster();
        for (node, mut con) in self.each_primary().await? {
            let facts = facts(&mut con).await?;
            // On a cluster, each finding names its node.
            let at = |text: &str| match cluster {
                true => format!("{node}: {text}"),
                false => text.to_owned(),
            };
            for f in facts.findings() {
                match f.severity {
                    Severity::Refuse => return Err(Error::Unsupported(at(&f.text))),
                    Severity::Warn => tracing::warn!("{}", at(&f.text)),
                    Severity::Ok if f.topic == "redis" => {
                        let (server, version) = match (&facts.valkey_version, &facts.version) {
                            (Some(v), _) => ("Valkey", v.clone()),
                            (None, Some(v)) => ("Redis", v.clone()),
                            (None, None) => ("Redis", f.text.clone()),
                        };
                        match cluster {
                            true => {
                                tracing::info!(%version, %node, "connected to {server} Cluster primary")
                            }
                            false => tracing::info!(%version, "connected to {server}"),
                        }
                    }
                    Severity::Ok => {}
                }
            }
        }
        Ok(())
    }
}

fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// A reply that is a refusal (ACL, a disabled command), not a lost connection.
fn refused(e: &redis::RedisError) -> bool {
    !(e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout())
}

async fn config_get<C: ConnectionLike>(con: &mut C, name: &str) -> Result<Option<String>> {
    let pair: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(name)
        .query_async(con)
        .await;
    match pair {
        Ok(v) => Ok(v.get(1).cloned()),
        Err(e) if refused(&e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Whether the server knows FCALL: an unknown command is answered before
/// any ACL check, so any other answer (the library missing, NOPERM) means
/// it has functions.
async fn has_functions<C: ConnectionLike>(con: &mut C) -> Result<bool> {
    let probe: redis::RedisResult<redis::Value> = redis::cmd("FCALL_RO")
        .arg("redq_version")
        .arg(0)
        .query_async(con)
        .await;
    match probe {
        Ok(_) => Ok(true),
        Err(e) if e.to_string().contains("unknown command") => Ok(false),
        Err(e) if refused(&e) => Ok(true),
        Err(e) => Err(e.into()),
    }
}

async fn facts<C: ConnectionLike>(con: &mut C) -> Result<ServerFacts> {
    // INFO's default sections hold server, memory and persistence.
    let info: redis::RedisResult<String> = redis::cmd("INFO").query_async(con).await;
    let info = match info {
        Ok(text) => Some(text),
        Err(e) if refused(&e) => None,
        Err(e) => return Err(e.into()),
    };
    let field = |name: &str| {
        info.as_deref()
            .and_then(|i| info_field(i, name))
            .map(str::to_owned)
    };
    Ok(ServerFacts {
        version: field("redis_version"),
        valkey_version: field("valkey_version"),
        functions: has_functions(con).await?,
        maxmemory_policy: field("maxmemory_policy"),
        aof: field("aof_enabled").map(|v| v == "1"),
        save: config_get(con, "save").await?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(version: &str, functions: bool) -> ServerFacts {
        ServerFacts {
            version: Some(version.to_owned()),
            functions,
            maxmemory_policy: Some("noeviction".into()),
            aof: Some(true),
            ..ServerFacts::default()
        }
    }

    #[test]
    fn a_redis_without_functions_is_refused_in_one_sentence() {
        let text = facts("6.2.14", false).unsupported().unwrap();
        assert_eq!(
            text,
            "Redis 6.2.14 has no Redis Functions: redq supports Redis 7.0 or newer and Valkey 8, \
             because its job transitions and producers' FCALL redq_enqueue are Redis Functions"
        );
        assert!(facts("7.0.15", false)
            .unsupported()
            .unwrap()
            .contains("does not accept FCALL"));
        assert_eq!(facts("7.0.15", true).unsupported(), None);
        let refused = facts("6.2.14", false).findings();
        assert_eq!(refused[0].severity, Severity::Refuse);
    }

    #[test]
    fn persistence_and_eviction_are_judged_from_info() {
        let mut f = facts("7.2.4", true);
        f.valkey_version = Some("8.0.1".into());
        assert_eq!(f.server_name(), "Valkey 8.0.1");
        f.aof = Some(false);
        f.save = Some(String::new());
        f.maxmemory_policy = Some("allkeys-lru".into());
        let found = f.findings();
        assert!(found.iter().all(|x| x.severity != Severity::Refuse));
        assert!(found[1].text.starts_with("REDIS CAN DELETE JOBS"));
        assert!(found[2].text.starts_with("Redis persistence is off"));
        f.save = None;
        assert!(f.findings()[2].text.contains("may not CONFIG GET"));
    }
}

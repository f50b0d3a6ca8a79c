//! `[redis]`: where Redis is and how long to wait for it.
//!
//! Credentials live in the URL; anything that logs a URL goes through
//! [`redacted_url`] first.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;
use super::error::Problems;

/// Longest key prefix accepted (the queue name and `{}` follow it in every key).
pub const MAX_PREFIX_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[user:pass@]host[:port][/db]`, `rediss://…` (TLS, see
    /// [`TlsConfig`]) or `redis+unix:///path/to.sock`. Default
    /// `redis://127.0.0.1:6379`.
    pub url: String,
    /// Prefix of every Redis key: 1–64 characters from `A-Z a-z 0-9 _ . - :`. Default `redq`.
    pub key_prefix: String,
    /// How long to wait for a connection. Default 5s.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// How long to wait for one command's answer (blocking waits excepted). Default 10s.
    #[serde(with = "duration")]
    pub command_timeout: Duration,
    /// `[redis.tls]`: how a `rediss://` connection verifies the server and
    /// proves who the client is.
    pub tls: TlsConfig,
    /// `[redis.sentinel]`: find the primary through Redis Sentinel, and
    /// follow it when it fails over. The URL then gives the scheme, the data
    /// node's credentials and database; its host and port are not used.
    pub sentinel: Option<SentinelConfig>,
    /// Redis Cluster: seed nodes (`redis://host:port`, credentials in the
    /// URLs); redq learns the rest of the cluster from them. `url` is then
    /// not used. Empty: a single Redis (or Sentinel).
    pub cluster: Vec<String>,
    /// Replicas that must hold an enqueue (and a completion) before it
    /// answers (`WAIT`); 0: answer once the primary has it. Replication is
    /// asynchronous: without this, a job acknowledged just before a
    /// failover can be lost.
    pub wait_replicas: u32,
    /// How long such a `WAIT` may take; past it the call fails, saying how
    /// many replicas had it. Default 1s.
    #[serde(with = "duration")]
    pub wait_timeout: Duration,
}

/// `[redis.sentinel]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentinelConfig {
    /// The name the sentinels monitor the primary under (`sentinel monitor <master> …`).
    pub master: String,
    /// The sentinels, `host:port` each; asked in turn.
    pub nodes: Vec<String>,
    /// The sentinels' own credentials (`requirepass`/ACL of the sentinels),
    /// kept apart from the data node's, which the URL carries.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
}

/// `[redis.tls]`, for `rediss://` URLs. Without any key set, the server's
/// certificate must chain to the bundled Mozilla roots (webpki-roots) and
/// hold the URL's host name.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the CA certificate(s) to trust instead of the bundled
    /// roots (a private or self-signed CA).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain), for servers with `tls-auth-clients yes`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// The name the server's certificate must hold, when the URL names the
    /// host by IP address or another name (also sent as SNI).
    pub server_name: Option<String>,
    /// Accept any certificate: no verification at all. For tests against a
    /// throw-away server; logged as a warning at every start.
    pub insecure_skip_verify: bool,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379".into(),
            key_prefix: crate::keys::DEFAULT_PREFIX.into(),
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(10),
            tls: TlsConfig::default(),
            sentinel: None,
            cluster: Vec::new(),
            wait_replicas: 0,
            wait_timeout: Duration::from_secs(1),
        }
    }
}

const SCHEMES: [&str; 4] = ["redis", "rediss", "redis+unix", "unix"];

impl RedisConfig {
    pub(super) fn check(&self, p: &mut Problems) {
        match self.url.split_once("://") {
            Some((scheme, rest)) if SCHEMES.contains(&scheme) && !rest.is_empty() => {
                if let Err(why) = parse_url(&self.url) {
                    p.push(
                        &["redis", "url"],
                        format!(
                            "{} does not parse: {why}; expected redis://[user:pass@]host[:port][/db], rediss://… (TLS) or redis+unix:///path",
                            redacted_url(&self.url)
                        ),
                    );
                }
            }
            _ => p.push(
                &["redis", "url"],
                format!(
                    "{} is not a Redis URL; expected redis://[user:pass@]host[:port][/db], rediss://… (TLS) or redis+unix:///path",
                    redacted_url(&self.url)
                ),
            ),
        }
        // The URLs redq connects to: the cluster's seeds, or `url`.
        let tls_url = match self.cluster.first() {
            Some(seed) => seed.starts_with("rediss://"),
            None => self.url.starts_with("rediss://"),
        };
        let t = &self.tls;
        let any_tls = t.ca_file.is_some()
            || t.cert_file.is_some()
            || t.key_file.is_some()
            || t.server_name.is_some()
            || t.insecure_skip_verify;
        p.check(
            tls_url || !any_tls,
            &["redis", "tls"],
            "is set but redis.url (or redis.cluster) is not rediss://: use rediss:// URLs to connect with TLS",
        );
        p.check(
            t.cert_file.is_some() == t.key_file.is_some(),
            &["redis", "tls"],
            "cert_file and key_file go together: give both (a client certificate and its key) or neither",
        );
        if let Some(s) = &self.sentinel {
            p.check(
                !s.master.is_empty(),
                &["redis", "sentinel", "master"],
                "must name the primary the sentinels monitor (sentinel monitor <name> …)",
            );
            p.check(
                !s.nodes.is_empty(),
                &["redis", "sentinel", "nodes"],
                "must list at least one sentinel as \"host:port\" (three for a quorum of two)",
            );
            for n in &s.nodes {
                p.check(
                    crate::store::parse_host_port(n).is_some(),
                    &["redis", "sentinel", "nodes"],
                    format!("{n:?} is not host:port"),
                );
            }
        }
        self.check_cluster(p);
        p.check(
            self.wait_replicas == 0 || !self.wait_timeout.is_zero(),
            &["redis", "wait_timeout"],
            "must be more than 0s when wait_replicas is set",
        );
        if tls_url {
            // The files must exist and parse: refused here, not at the first connection.
            if let Err(e) = crate::store::TlsFiles::load(t) {
                p.push(&e.path, e.message);
            }
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

impl RedisConfig {
    /// Whether `[redis] cluster` names a Redis Cluster's seed nodes.
    pub fn is_cluster(&self) -> bool {
        !self.cluster.is_empty()
    }

    fn check_cluster(&self, p: &mut Problems) {
        if self.cluster.is_empty() {
            return;
        }
        p.check(
            self.sentinel.is_none(),
            &["redis", "cluster"],
            "and redis.sentinel are both set: a Redis Cluster fails over by itself; keep one of them",
        );
        let tls = self.cluster[0].starts_with("rediss://");
        p.check(
            self.cluster
                .iter()
                .all(|u| u.starts_with("rediss://") == tls),
            &["redis", "cluster"],
            "mixes redis:// and rediss:// seeds: a cluster's nodes all speak TLS or none do",
        );
        p.check(
            !(tls && self.tls.server_name.is_some()),
            &["redis", "tls", "server_name"],
            "is not supported with a cluster (the nodes are reached by the addresses the cluster announces): give the nodes certificates that name those addresses",
        );
        for seed in &self.cluster {
            let ok = match seed.split_once("://") {
                Some(("redis" | "rediss", rest)) => crate::store::parse_host_port(
                    rest.rsplit_once('@')
                        .map_or(rest, |(_, a)| a)
                        .trim_end_matches('/'),
                )
                .is_some(),
                _ => false,
            };
            p.check(
                ok,
                &["redis", "cluster"],
                format!(
                    "{} is not a cluster node URL; expected redis://[user:pass@]host:port or rediss://… (TLS)",
                    redacted_url(seed)
                ),
            );
        }
    }
}

/// Whether the connection layer will read `url` (as redis-rs parses it;
/// `rediss://` as `redis://`, since redq makes the TLS itself). The reason
/// never repeats the URL, so no credential shows.
fn parse_url(url: &str) -> Result<(), String> {
    use redis::IntoConnectionInfo;
    let plain = match url.strip_prefix("rediss://") {
        Some(rest) => format!("redis://{rest}"),
        None => url.to_owned(),
    };
    match plain.as_str().into_connection_info() {
        Ok(_) => Ok(()),
        Err(e) => {
            let port = url
                .split_once("://")
                .map(|(_, rest)| rest.rsplit_once('@').map_or(rest, |(_, host)| host))
                .and_then(|host| host.split('/').next())
                .and_then(|host| host.rsplit_once(':'))
                .filter(|(h, _)| !h.ends_with(']') || h.starts_with('['))
                .map(|(_, port)| port);
            Err(match port {
                Some(port) if port.parse::<u16>().is_err() && !port.contains(']') => {
                    format!("the port {port:?} is not a number from 1 to 65535")
                }
                _ => match e.detail() {
                    Some(d) if !d.contains(url) && !d.contains(&plain) => d.to_owned(),
                    _ => "not a valid URL".to_owned(),
                },
            })
        }
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

#[cfg(test)]
mod tests {
    use super::parse_url;

    #[test]
    fn urls_are_read_as_the_connection_layer_reads_them() {
        for ok in [
            "redis://127.0.0.1:6379",
            "redis://u:p@host:1/2",
            "rediss://host",
            "redis+unix:///tmp/r.sock",
            "unix:///tmp/r.sock",
            "redis://[::1]:6379",
        ] {
            assert_eq!(parse_url(ok), Ok(()), "{ok}");
        }
        let e = parse_url("redis://localhost:abc").unwrap_err();
        assert!(e.contains("port \"abc\" is not a number"), "{e}");
        let e = parse_url("redis://u:secret@localhost:99999").unwrap_err();
        assert!(e.contains("port \"99999\""), "{e}");
        assert!(!e.contains("secret"), "{e}");
        for bad in ["redis://u:secret@host/notadb", "redis://u:secret@ho st:1"] {
            let e = parse_url(bad).unwrap_err();
            eprintln!("{bad}: {e}");
            assert!(!e.contains("secret"), "{e}");
        }
    }
}

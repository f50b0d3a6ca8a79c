//! Redis Cluster: the store's connection when `[redis] cluster` lists seed
//! nodes, and what redq adds to redis-rs's cluster client.
//!
//! redis-rs's [`ClusterConnection`] keeps one multiplexed connection per
//! node, routes every command by its first key's slot, follows `MOVED` and
//! `ASK`, and re-reads the slot map when slots move; redq sends through it
//! exactly what it sends to a single Redis. Every key redq writes carries a
//! hash tag (a queue's `{<queue>}`, the global keys' `{@}`, a lock's
//! `{<name>}`), and every script and every atomic pipeline touches one tag
//! only, so nothing crosses slots. Three things differ from a single node:
//! - a plain (non-atomic) pipeline over many queues spans slots, which
//!   redis-rs refuses: [`Conn`] sends its commands one by one, concurrently
//!   (each goes to its node, where the node's connection pipelines them);
//! - a blocking command holds its connection, and cannot span slots: the
//!   waker opens one connection per queue it listens to, to the node that
//!   serves the queue's slot ([`Store::blocking_for`]), and opens it again
//!   (to the new owner) when the node answers `MOVED`;
//! - function libraries must be on every primary: `FUNCTION LOAD` goes to
//!   all of them (redis-rs's routing), and the library checks ask each
//!   primary ([`Store::on_every_primary`]).
//!
//! Pub/Sub (the promoter's due-time messages) needs nothing: a `PUBLISH` on
//! any node reaches subscribers on every node.

use std::collections::BTreeMap;

use futures::future::try_join_all;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{RedisFuture, Value};

use super::connect::{Endpoint, Shared};
use super::Store;
use crate::config::RedisConfig;
use crate::error::{Error, Result};

/// Slots in a Redis Cluster.
const SLOTS: u16 = 16384;

/// The store's connection: a single Redis (or the primary Sentinel names),
/// or a Redis Cluster.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(Shared),
    Cluster(ClusterConnection),
}

/// Opens a cluster connection from the seeds in `[redis] cluster`: redis-rs
/// reads the slot map from the first seed that answers.
pub(crate) async fn open(redis: &RedisConfig, seed: &Endpoint) -> Result<ClusterConnection> {
    let mut builder =
        redis::cluster::ClusterClient::builder(redis.cluster.iter().map(String::as_str))
            .connection_timeout(redis.connect_timeout)
            .response_timeout(redis.command_timeout);
    if redis.cluster.iter().any(|u| u.starts_with("rediss://")) {
        // redis-rs makes a cluster's TLS connections (to nodes it learns
        // of), from the same `[redis.tls]` files; the config check refused
        // `server_name`, which it cannot honour.
        let t = &redis.tls;
        let read = |path: &std::path::PathBuf, key: &str| {
            std::fs::read(path).map_err(|e| {
                Error::Config(format!(
                    "redis.tls.{key}: cannot read {}: {e}",
                    path.display()
                ))
            })
        };
        let client_tls = match (&t.cert_file, &t.key_file) {
            (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                client_cert: read(cert, "cert_file")?,
                client_key: read(key, "key_file")?,
            }),
            _ => None,
        };
        let root_cert = t.ca_file.as_ref().map(|f| read(f, "ca_file")).transpose()?;
        builder = builder.certs(redis::TlsCertificates {
            client_tls,
            root_cert,
        });
        if t.insecure_skip_verify {
            builder = builder.tls(redis::TlsMode::Insecure);
        }
    }
    let client = builder
        .build()
        .map_err(|e| {
            Error::Config(format!(
                "redis.cluster: {e}; expected redis://[user:pass@]host:port for each seed, with the same credentials"
            ))
        })?;
    match client.get_async_connection().await {
        Ok(con) => Ok(con),
        Err(e) => {
            // redis-rs says little ("Failed to create initial connections");
            // a connection of redq's own to the first seed says what failed
            // (a certificate not trusted, TLS spoken to a plain port, …).
            seed.multiplexed(Some(redis.connect_timeout)).await?;
            Err(Error::Redis(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                format!(
                    "the Redis Cluster at {} did not answer as a cluster: {e}; check redis.cluster (seeds of a cluster with cluster-enabled yes and all slots served)",
                    seed.shown()
                ),
            ))))
        }
    }
}

/// The Cluster slot of `key`: CRC16 (XMODEM) of its hash tag (the text
/// between the first `{` and the next `}`, when not empty), or of the key.
pub fn slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|b| *b == b'{').and_then(|open| {
        let rest = &bytes[open + 1..];
        let close = rest.iter().position(|b| *b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(bytes)) % SLOTS
}

/// The hash tag of `key` (`{…}`, braces included), or the key itself: keys
/// with the same tag live on one slot.
pub fn tag(key: &str) -> &str {
    key.find('{')
        .and_then(|open| {
            let close = key[open + 1..].find('}')?;
            (close > 0).then(|| &key[open..open + close + 2])
        })
        .unwrap_or(key)
}

/// One primary and the slot ranges it serves, from `CLUSTER SLOTS`.
#[derive(Debug, Clone)]
struct Primary {
    host: String,
    port: u16,
    ranges: Vec<(u16, u16)>,
}

/// Reads `CLUSTER SLOTS`: each entry is `[start, end, [host, port, id, …],
/// replicas…]`; the first node is the primary.
fn primaries(reply: Value) -> Result<Vec<Primary>> {
    let bad = |why: &str| Error::protocol("cluster slots", why.to_owned());
    let Value::Array(entries) = reply else {
        return Err(bad("expected an array"));
    };
    let mut by_node: BTreeMap<(String, u16), Vec<(u16, u16)>> = BTreeMap::new();
    for entry in entries {
        let Value::Array(parts) = entry else {
            return Err(bad("expected an array per slot range"));
        };
        let num = |v: Option<&Value>| match v {
            Some(Value::Int(n)) => u16::try_from(*n).ok(),
            _ => None,
        };
        let (Some(start), Some(end)) = (num(parts.first()), num(parts.get(1))) else {
            return Err(bad("a slot range without numbers"));
        };
        let Some(Value::Array(node)) = parts.get(2) else {
            return Err(bad("a slot range without a primary"));
        };
        let host = match node.first() {
            Some(Value::BulkString(h)) => String::from_utf8_lossy(h).into_owned(),
            Some(Value::SimpleString(h)) => h.clone(),
            _ => return Err(bad("a primary without a host")),
        };
        let Some(port) = num(node.get(1)) else {
            return Err(bad("a primary without a port"));
        };
        by_node.entry((host, port)).or_default().push((start, end));
    }
    Ok(by_node
        .into_iter()
        .map(|((host, port), ranges)| Primary { host, port, ranges })
        .collect())
}

impl Store {
    /// Whether this store speaks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.con, Conn::Cluster(_))
    }

    /// The primaries of the cluster (`host:port` and slot ranges), read now.
    async fn primaries(&self) -> Result<Vec<Primary>> {
        let reply: Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut self.connection())
            .await?;
        primaries(reply)
    }

    /// The primaries' addresses, `host:port` each (a single Redis: its
    /// shown address).
    pub async fn nodes(&self) -> Result<Vec<String>> {
        if !self.is_cluster() {
            return Ok(vec![self.shown_url().to_owned()]);
        }
        Ok(self
            .primaries()
            .await?
            .into_iter()
            .map(|p| format!("{}:{}", p.host, p.port))
            .collect())
    }

    /// Sends `cmd` to every primary (a single Redis: to it), and gives each
    /// one's address and answer: what reads per node need (is a function
    /// library loaded on each?).
    pub(crate) async fn on_every_primary(
        &self,
        cmd: &redis::Cmd,
    ) -> Result<Vec<(String, redis::RedisResult<Value>)>> {
        let Conn::Cluster(con) = &self.con else {
            let r = cmd.query_async(&mut self.connection()).await;
            return Ok(vec![(self.shown_url().to_owned(), r)]);
        };
        let primaries = self.primaries().await?;
        let asks = primaries.iter().map(|p| {
            let mut con = con.clone();
            let to = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                host: p.host.clone(),
                port: p.port,
            });
            async move {
                let r = con.route_command(cmd.clone(), to).await;
                (format!("{}:{}", p.host, p.port), r)
            }
        });
        Ok(futures::future::join_all(asks).await)
    }

    /// A connection of its own to each primary (a single Redis: to it),
    /// with its address: for what is read per server (version, eviction
    /// policy, persistence).
    pub(crate) async fn each_primary(&self) -> Result<Vec<(String, MultiplexedConnection)>> {
        if !self.is_cluster() {
            let con = self
                .endpoint
                .multiplexed(Some(self.command_timeout))
                .await?;
            return Ok(vec![(self.shown_url().to_owned(), con)]);
        }
        let mut out = Vec::new();
        for p in self.primaries().await? {
            let at = self.endpoint.at(&p.host, p.port);
            out.push((
                at.shown().to_owned(),
                at.multiplexed(Some(self.command_timeout)).await?,
            ));
        }
        Ok(out)
    }

    /// A new connection of its own for blocking commands on `key`'s slot
    /// (the waker's BLPOP): on a cluster, to the primary serving that slot
    /// now; a `MOVED` answer later means the slot moved, and the caller
    /// opens another. `answer_within` bounds each reply (longer than the
    /// block).
    pub(crate) async fn blocking_for(
        &self,
        key: &str,
        answer_within: std::time::Duration,
    ) -> Result<MultiplexedConnection> {
        if !self.is_cluster() {
            return self.blocking(answer_within).await;
        }
        let wanted = slot(key);
        let owner = self
            .primaries()
            .await?
            .into_iter()
            .find(|p| p.ranges.iter().any(|(a, b)| (*a..=*b).contains(&wanted)))
            .ok_or_else(|| {
                Error::Redis(redis::RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::NotConnected,
                    format!("no primary serves slot {wanted} (of {key}): the cluster is not ready"),
                )))
            })?;
        self.endpoint
            .at(&owner.host, owner.port)
            .multiplexed(Some(answer_within))
            .await
    }
}

impl Conn {
    /// The number of the shared connection to a single Redis (opening one
    /// when none is open), which grows each time it is replaced; 0 on a
    /// cluster, whose connections redis-rs replaces itself (a `WAIT` there
    /// goes to every primary and counts the fewest replicas).
    pub(crate) async fn number(&self) -> Result<u64> {
        match self {
            Conn::Single(c) => Ok(c.get().await?.0),
            Conn::Cluster(_) => Ok(0),
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => {
                // A transaction is one queue's (one slot): redis-rs sends it
                // to that slot's node as it is.
                if pipeline.is_transaction() {
                    return c.req_packed_commands(pipeline, offset, count);
                }
                // A plain pipeline may span queues, so slots, which
                // redis-rs refuses for a pipeline: each command goes on its
                // own, all at once, to its slot's node.
                let c = c.clone();
                Box::pin(async move {
                    let sends = pipeline.cmd_iter().skip(offset).take(count).map(|cmd| {
                        let mut c = c.clone();
                        async move { c.req_packed_command(cmd).await }
                    });
                    try_join_all(sends).await
                })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_hash_tag() {
        // Values from the Redis Cluster specification's examples.
        assert_eq!(slot("123456789"), 0x31C3 % SLOTS);
        assert_eq!(slot("redq:{emails}:jobs"), slot("emails"));
        assert_eq!(slot("a{}b"), slot("a{}b"));
        assert_ne!(slot("redq:{a}:jobs"), slot("redq:{b}:jobs"));
        assert_eq!(tag("redq:{emails}:wake"), "{emails}");
        assert_eq!(tag("plain"), "plain");
        assert_eq!(tag("a{}b"), "a{}b");
    }
}

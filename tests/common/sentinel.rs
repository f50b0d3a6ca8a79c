//! A Redis Sentinel topology on loopback: one primary, one replica
//! (`--replicaof`) and three sentinels (`redis-server <file> --sentinel`,
//! quorum 2), each a [`RedisServer`] on a free port, all killed on drop.
//! The server program is the harness's ([`super::server::server_program`]):
//! sentinel mode is the same binary.
//!
//! [`Topology::start`] returns once the topology can fail over: the replica
//! is in sync and every sentinel knows the primary, the replica and the two
//! other sentinels (without them no sentinel can win the vote). Every wait
//! polls what the servers report (`INFO replication`, `SENTINEL MASTER`,
//! `SENTINEL get-master-addr-by-name`), bounded; none sleeps a fixed time.
//!
//! Failover: [`Topology::kill_primary`] (SIGKILL), then
//! [`Topology::wait_new_primary`] until every sentinel names another node
//! and that node says it is the primary. With `down-after-milliseconds`
//! 1000 the sentinels promote the replica about 2-3 s after the kill.
//!
//! [`Topology::start_held`] makes the replica unpromotable
//! (`replica-priority 0`) so that after a kill no primary is known for as
//! long as a test needs (a failover cannot happen behind its back), until
//! [`Topology::allow_failover`].
//!
//! [`Topology::start_cuttable`] runs the replication link through a
//! [`Proxy`]: [`Topology::cut_replication`] stalls it (a lagging replica),
//! so what the primary acknowledges from then on is on the primary alone,
//! and a failover loses it: asynchronous replication made visible.
//!
//! Everything here blocks; async tests call it from `spawn_blocking`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use redq::config::{RedisConfig, SentinelConfig};

use super::proxy::{Fault, Proxy};
use super::server::RedisServer;
use super::wait::{secs, wait_for};

/// The name the sentinels monitor the primary under.
pub const MASTER: &str = "redq-primary";

pub struct Topology {
    /// The data nodes: `nodes[0]` is the first primary, `nodes[1]` its replica.
    pub nodes: Vec<RedisServer>,
    pub sentinels: Vec<RedisServer>,
    /// Between the replica and the first primary, with [`Topology::start_cuttable`].
    link: Option<Proxy>,
}

/// One command to `127.0.0.1:port`, on a connection of its own, bounded.
pub fn query<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> Result<T, String> {
    let client =
        redis::Client::open(format!("redis://127.0.0.1:{port}")).map_err(|e| e.to_string())?;
    let mut con = client
        .get_connection_with_timeout(Duration::from_millis(500))
        .map_err(|e| format!("{port}: {e}"))?;
    con.set_read_timeout(Some(secs(2)))
        .map_err(|e| e.to_string())?;
    cmd.query(&mut con).map_err(|e| format!("{port}: {e}"))
}

/// `INFO <section>` of the server on `port`, as field → value.
pub fn info(port: u16, section: &str) -> Result<HashMap<String, String>, String> {
    let text: String = query(port, redis::cmd("INFO").arg(section))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect())
}

/// A flat `field value …` reply as a map (`SENTINEL MASTER`, `SENTINEL REPLICAS`' entries).
fn pairs(flat: Vec<String>) -> HashMap<String, String> {
    flat.chunks(2)
        .filter_map(|p| Some((p.first()?.clone(), p.get(1)?.clone())))
        .collect()
}

impl Topology {
    /// Starts the topology and waits until it can fail over.
    pub fn start() -> Topology {
        Topology::start_with(100, false)
    }

    /// Like [`Topology::start`], with a replica the sentinels will not
    /// promote until [`Topology::allow_failover`]: after
    /// [`Topology::kill_primary`] no primary is known, for as long as the
    /// test wants.
    pub fn start_held() -> Topology {
        Topology::start_with(0, false)
    }

    /// Like [`Topology::start`], with the replication link through a proxy
    /// that [`Topology::cut_replication`] stalls.
    pub fn start_cuttable() -> Topology {
        Topology::start_with(100, true)
    }

    fn start_with(priority: u32, cuttable: bool) -> Topology {
        let primary = RedisServer::start();
        let port = primary.port.to_string();
        let link = cuttable.then(|| Proxy::start(primary.port));
        let upstream = link.as_ref().map_or(port.clone(), |p| p.port.to_string());
        let priority = priority.to_string();
        let replica = RedisServer::start_with(&[
            "--replicaof",
            "127.0.0.1",
            &upstream,
            "--replica-priority",
            &priority,
        ]);
        // A replica that replicates from another address than the
        // primary's (the proxy) is "fixed" by the sentinels (+fix-slave-config)
        // once failover-timeout has passed since they found it: with the
        // proxy that is made longer than any test.
        let failover_timeout = if cuttable { 120_000 } else { 2000 };
        let conf = format!(
            "sentinel monitor {MASTER} 127.0.0.1 {port} 2\n\
             sentinel down-after-milliseconds {MASTER} 1000\n\
             sentinel failover-timeout {MASTER} {failover_timeout}\n\
             sentinel parallel-syncs {MASTER} 1\n"
        );
        let sentinels = (0..3).map(|_| RedisServer::start_sentinel(&conf)).collect();
        let t = Topology {
            nodes: vec![primary, replica],
            sentinels,
            link,
        };
        t.wait_ready();
        t
    }

    /// Waits until the replica is in sync and every sentinel knows the
    /// primary (not down), its replica, and the two other sentinels.
    fn wait_ready(&self) {
        let primary = self.nodes[0].port;
        wait_for("the replica to be in sync", secs(20), || {
            let i = info(primary, "replication")?;
            match i.get("slave0") {
                Some(s) if s.contains("state=online") => Ok(()),
                other => Err(format!("slave0: {other:?}")),
            }
        });
        for s in &self.sentinels {
            wait_for(
                &format!("sentinel {} to know the whole topology", s.port),
                secs(30),
                || {
                    let m = pairs(query(
                        s.port,
                        redis::cmd("SENTINEL").arg("MASTER").arg(MASTER),
                    )?);
                    let ok = m.get("flags").map(String::as_str) == Some("master")
                        && m.get("num-slaves").map(String::as_str) == Some("1")
                        && m.get("num-other-sentinels").map(String::as_str) == Some("2");
                    ok.then_some(()).ok_or_else(|| format!("{m:?}"))
                },
            );
        }
        self.wait_caught_up();
    }

    /// The port each sentinel names as the primary's (`None`: it did not answer).
    pub fn named(&self) -> Vec<Option<u16>> {
        self.sentinels
            .iter()
            .map(|s| {
                let addr: Option<(String, String)> = query(
                    s.port,
                    redis::cmd("SENTINEL")
                        .arg("get-master-addr-by-name")
                        .arg(MASTER),
                )
                .ok()?;
                addr?.1.parse().ok()
            })
            .collect()
    }

    /// The data node on `port`.
    pub fn node(&self, port: u16) -> &RedisServer {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no data node on port {port}"))
    }

    /// The port of the primary now: the node every sentinel names, which
    /// says it is the primary. Fails the test when there is none.
    pub fn primary_port(&self) -> u16 {
        self.agreed_primary()
            .unwrap_or_else(|e| panic!("no agreed primary: {e}"))
    }

    fn agreed_primary(&self) -> Result<u16, String> {
        let named = self.named();
        let first = named[0].ok_or("a sentinel did not answer")?;
        if named.iter().any(|p| *p != Some(first)) {
            return Err(format!("the sentinels disagree: {named:?}"));
        }
        let role: Vec<redis::Value> = query(first, &redis::cmd("ROLE"))?;
        match role.first() {
            Some(redis::Value::BulkString(r)) if r == b"master" => Ok(first),
            other => Err(format!("127.0.0.1:{first} says it is {other:?}")),
        }
    }

    /// The primary now.
    pub fn primary(&self) -> &RedisServer {
        self.node(self.primary_port())
    }

    /// `redis://127.0.0.1:<port>` of the primary now (for a test's own
    /// reads; the code under test goes through the sentinels).
    pub fn primary_url(&self) -> String {
        self.primary().url()
    }

    /// Waits until every live replica has processed the replication stream
    /// up to where the primary is now: a kill then loses nothing written so far.
    pub fn wait_caught_up(&self) {
        let primary = self.primary_port();
        let offset: u64 = info(primary, "replication").unwrap()["master_repl_offset"]
            .parse()
            .unwrap();
        for n in self
            .nodes
            .iter()
            .filter(|n| n.running() && n.port != primary)
        {
            wait_for(
                &format!("replica {} to reach offset {offset}", n.port),
                secs(10),
                || {
                    let i = info(n.port, "replication")?;
                    let at: u64 = i
                        .get("slave_repl_offset")
                        .and_then(|o| o.parse().ok())
                        .unwrap_or(0);
                    (at >= offset).then_some(()).ok_or(format!("at {at}"))
                },
            );
        }
    }

    /// Stalls the replication link (after [`Topology::start_cuttable`]): the
    /// connection stays open and nothing more reaches the replica, as with
    /// a replica that lags far behind.
    pub fn cut_replication(&self) {
        self.link
            .as_ref()
            .expect("a topology started with start_cuttable")
            .set(Fault::Blackhole);
    }

    /// Kills the primary (SIGKILL); returns its port.
    pub fn kill_primary(&mut self) -> u16 {
        let port = self.primary_port();
        let node = self.nodes.iter_mut().find(|n| n.port == port).unwrap();
        node.kill();
        port
    }

    /// Waits until every sentinel names a primary other than `old` and that
    /// node says it is the primary; returns its port.
    pub fn wait_new_primary(&self, old: u16, limit: Duration) -> u16 {
        wait_for(
            &format!("the sentinels to name a new primary instead of {old}"),
            limit,
            || match self.agreed_primary() {
                Ok(p) if p != old => Ok(p),
                Ok(p) => Err(format!("still {p}")),
                Err(e) => Err(e),
            },
        )
    }

    /// After [`Topology::start_held`]: lets the sentinels promote the
    /// replica (`replica-priority 100`), and asks one to fail over now
    /// (`SENTINEL FAILOVER`, refused while the sentinels have not yet seen
    /// the new priority or another attempt is in progress: asked again).
    pub fn allow_failover(&self) {
        for n in self.nodes.iter().filter(|n| n.running()) {
            let _: () = query(
                n.port,
                redis::cmd("CONFIG")
                    .arg("SET")
                    .arg("replica-priority")
                    .arg(100),
            )
            .unwrap();
        }
        let mut turn = 0;
        wait_for("a sentinel to accept SENTINEL FAILOVER", secs(30), || {
            turn += 1;
            let s = &self.sentinels[turn % self.sentinels.len()];
            query::<String>(s.port, redis::cmd("SENTINEL").arg("FAILOVER").arg(MASTER))
        });
    }

    /// Starts the killed node on `port` again, as a replica of the primary
    /// now (a replacement for the lost host), and waits until it is in sync.
    pub fn restart_as_replica(&mut self, port: u16) {
        let primary = self.primary_port().to_string();
        let node = self.nodes.iter_mut().find(|n| n.port == port).unwrap();
        node.restart_with(&["--replicaof", "127.0.0.1", &primary]);
        wait_for("the restarted node to be in sync", secs(20), || {
            let i = info(port, "replication")?;
            (i.get("master_link_status").map(String::as_str) == Some("up"))
                .then_some(())
                .ok_or(format!("{:?}", i.get("master_link_status")))
        });
    }

    /// `"127.0.0.1:<port>"` of each sentinel.
    pub fn sentinel_nodes(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect()
    }

    /// The `[redis.sentinel]` table of a `workers.toml` for this topology.
    pub fn toml(&self) -> String {
        let nodes: Vec<String> = self
            .sentinel_nodes()
            .iter()
            .map(|n| format!("{n:?}"))
            .collect();
        format!(
            "\n[redis.sentinel]\nmaster = {MASTER:?}\nnodes = [{}]\n",
            nodes.join(", ")
        )
    }

    /// `[redis]` for a Rust client: through the sentinels, key prefix
    /// `prefix`. The URL's host and port are not used.
    pub fn redis_config(&self, prefix: &str) -> RedisConfig {
        RedisConfig {
            url: "redis://127.0.0.1".into(),
            key_prefix: prefix.into(),
            connect_timeout: secs(2),
            command_timeout: secs(5),
            sentinel: Some(SentinelConfig {
                master: MASTER.into(),
                nodes: self.sentinel_nodes(),
                username: None,
                password: None,
            }),
            ..Default::default()
        }
    }

    /// Connections the sentinels accepted since they started (all three):
    /// how often they were asked where the primary is.
    pub fn sentinel_connections(&self) -> u64 {
        self.sentinels
            .iter()
            .map(|s| {
                info(s.port, "stats")
                    .ok()
                    .and_then(|i| i.get("total_connections_received")?.parse().ok())
                    .unwrap_or(0)
            })
            .sum()
    }
}

/// The topology the tests of one binary share while they overlap: the
/// first to ask starts it, the last to drop its handle kills it (a static
/// would never be dropped, and its processes would outlive the tests).
/// Tests that kill a node start their own [`Topology`].
pub fn shared() -> Arc<Topology> {
    static SHARED: Mutex<Weak<Topology>> = Mutex::new(Weak::new());
    let mut slot = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(t) = slot.upgrade() {
        return t;
    }
    let t = Arc::new(Topology::start());
    *slot = Arc::downgrade(&t);
    t
}

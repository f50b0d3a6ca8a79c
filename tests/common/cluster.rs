//! A private 3-primary Redis Cluster on loopback: three servers started
//! with `--cluster-enabled yes` (each with its own bus port), joined by
//! `redis-cli --cluster create`, and ready once every node reports
//! `cluster_state:ok` and the same slot map. Killed on drop.
//!
//! Tests that leave the cluster as it is (they only add queues of their
//! own) share one ([`shared`]); a test that changes it (moves slots, flushes
//! functions, needs TLS) starts its own.

use std::process::Command;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::server::{free_port, server_tool, RedisServer};
use super::tls::Pki;
use super::wait::wait_for;

pub struct Cluster {
    pub nodes: Vec<RedisServer>,
    /// With TLS: each node's TLS port (clients and the cluster bus speak
    /// TLS; the plain port is the harness's).
    pub tls_ports: Vec<u16>,
}

impl Cluster {
    pub fn start() -> Cluster {
        Cluster::start_with(None)
    }

    /// A cluster whose nodes serve TLS with certificates `pki` signs, and
    /// whose bus speaks TLS too.
    pub fn start_tls(pki: &Pki) -> Cluster {
        Cluster::start_with(Some(pki))
    }

    fn start_with(pki: Option<&Pki>) -> Cluster {
        let mut tls_ports = Vec::new();
        let nodes: Vec<RedisServer> = (0..3)
            .map(|i| {
                let bus = free_port().to_string();
                let mut args: Vec<String> = [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-port",
                    &bus,
                    "--cluster-node-timeout",
                    "2000",
                ]
                .map(str::to_owned)
                .to_vec();
                if let Some(pki) = pki {
                    let cert = pki.node(&format!("node{i}"));
                    let port = free_port();
                    tls_ports.push(port);
                    args.extend(
                        [
                            "--tls-port",
                            &port.to_string(),
                            "--tls-cluster",
                            "yes",
                            "--tls-cert-file",
                            &cert.cert.display().to_string(),
                            "--tls-key-file",
                            &cert.key.display().to_string(),
                            "--tls-ca-cert-file",
                            &pki.ca_file().display().to_string(),
                            "--tls-auth-clients",
                            "optional",
                        ]
                        .map(|s| s.to_owned()),
                    );
                }
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                RedisServer::start_with(&args)
            })
            .collect();
        let mut create = Command::new(server_tool("cli"));
        create.arg("--cluster").arg("create");
        for n in &nodes {
            create.arg(format!("127.0.0.1:{}", n.port));
        }
        create.args(["--cluster-replicas", "0", "--cluster-yes"]);
        let out = create.output().expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Cluster { nodes, tls_ports };
        cluster.wait_ready();
        cluster
    }

    /// Waits until every node says the cluster is ok and they agree on
    /// who serves which slots.
    pub fn wait_ready(&self) {
        wait_for("the cluster to be ready", Duration::from_secs(30), || {
            let ok = self.nodes.iter().all(|n| {
                n.cli(&["CLUSTER", "INFO"])
                    .is_ok_and(|i| i.contains("cluster_state:ok"))
            });
            let maps: Vec<String> = self
                .nodes
                .iter()
                .map(|n| slot_map(&n.cli(&["CLUSTER", "SLOTS"]).unwrap_or_default()))
                .collect();
            ok && maps.windows(2).all(|w| w[0] == w[1])
        });
    }

    /// The seeds for `[redis] cluster`, as a TOML array (`rediss://` URLs
    /// of the TLS ports for a TLS cluster).
    pub fn seeds_toml(&self) -> String {
        let urls: Vec<String> = match self.tls_ports.is_empty() {
            true => self
                .nodes
                .iter()
                .map(|n| format!("\"{}\"", n.url()))
                .collect(),
            false => self
                .tls_ports
                .iter()
                .map(|p| format!("\"rediss://127.0.0.1:{p}\""))
                .collect(),
        };
        format!("[{}]", urls.join(", "))
    }

    /// The node that serves `key`'s slot now.
    pub fn node_of(&self, key: &str) -> &RedisServer {
        let slot = redq::store::slot(key);
        self.nodes
            .iter()
            .find(|n| {
                // Each node's own line in CLUSTER NODES ("myself") lists the
                // slot ranges it serves.
                let nodes = n.cli(&["CLUSTER", "NODES"]).unwrap_or_default();
                nodes
                    .lines()
                    .find(|l| l.contains("myself"))
                    .is_some_and(|l| serves(l, slot))
            })
            .expect("a node serves the slot")
    }

    /// `redis-cli -c` (following redirects) against the first node.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = self.nodes[0]
            .cli_command()
            .arg("-c")
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The cluster the tests of one binary share while they overlap: the first
/// to ask starts it, the last to drop its handle kills it (a static would
/// never be dropped, and its processes would outlive the tests). Each test
/// on it uses queue names of its own.
pub fn shared() -> Arc<Cluster> {
    static SHARED: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());
    let mut slot = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = slot.upgrade() {
        return c;
    }
    let c = Arc::new(Cluster::start());
    *slot = Arc::downgrade(&c);
    c
}

/// Whether a `CLUSTER NODES` line lists `slot` among its ranges.
fn serves(line: &str, slot: u16) -> bool {
    line.split_whitespace().skip(8).any(|r| {
        let (a, b) = r.split_once('-').unwrap_or((r, r));
        match (a.parse::<u16>(), b.parse::<u16>()) {
            (Ok(a), Ok(b)) => (a..=b).contains(&slot),
            _ => false,
        }
    })
}

/// The numbers of a `CLUSTER SLOTS` answer (ranges and ports), in order:
/// enough to tell whether two nodes agree.
fn slot_map(shards: &str) -> String {
    shards
        .lines()
        .filter(|l| l.trim().parse::<u32>().is_ok())
        .collect::<Vec<_>>()
        .join(",")
}

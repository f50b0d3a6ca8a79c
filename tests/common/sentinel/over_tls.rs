//! The TLS side of [`Topology::start_tls`]: every server speaks TLS to
//! every other (`tls-port` and `tls-replication yes` on the data nodes and
//! the sentinels: replication, the sentinels' links to the nodes and to
//! each other, and the addresses they announce and name, are all TLS
//! ports), with client certificates required (`tls-auth-clients yes`).
//! The sentinels and the data nodes have credentials of their own for
//! redq: on the data nodes the daemon's user as docs/operating.md
//! documents it ([`DATA_USER`], exactly its rules), on the sentinels a user
//! allowed only `SENTINEL get-master-addr-by-name` ([`SENTINEL_USER`]),
//! which their default user may not send: a client of redq's that logs in
//! to the sentinels with other credentials, or none, cannot find the
//! primary.
//!
//! Each server keeps a plain port for the harness alone (its start-up check
//! and its queries, as in [`super::super::tls`]; on the sentinels as
//! [`HARNESS_USER`]); what redq is given leads only to TLS ports, and
//! [`Topology::tls_links`] shows what reaches each server where.

use std::collections::HashMap;

use redq::config::RedisConfig;

use super::super::tls::{CertFiles, Pki};
use super::{query_as, Topology};

/// With [`Topology::start_tls`]: redq's user and password on the data
/// nodes: the daemon's user of docs/operating.md, with exactly its rules
/// (keys under the prefix `redq`).
pub const DATA_USER: (&str, &str) = ("redq-daemon", "data-node-secret");
/// With [`Topology::start_tls`]: redq's user and password on the sentinels,
/// allowed `SENTINEL get-master-addr-by-name` only.
pub const SENTINEL_USER: (&str, &str) = ("redq-sentinel", "sentinel-secret");
/// With [`Topology::start_tls`]: the harness's user on the sentinels (their
/// default user, which they log in to each other with, may do anything but
/// tell where the primary is).
pub(super) const HARNESS_USER: (&str, &str) = ("harness", "harness-secret");

/// A connection to a server, from [`Topology::tls_links`].
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    /// The server's plain port (its [`RedisServer::port`]).
    pub server: u16,
    /// Who connected: "replica", "sentinel" or "redq".
    pub from: &'static str,
    /// The port it connected to.
    pub port: u16,
}

/// The TLS side of a [`Topology::start_tls`] topology.
pub(super) struct Tls {
    pub(super) pki: Pki,
    /// redq's client certificate.
    pub(super) client: CertFiles,
    /// The TLS port of `nodes[i]` and of `sentinels[i]`.
    pub(super) nodes: Vec<u16>,
    pub(super) sentinels: Vec<u16>,
    /// The arguments of `nodes[i]` of its own (TLS, redq's user), kept for a restart.
    pub(super) node_args: Vec<Vec<String>>,
}

/// `redis-server` arguments that serve TLS on `port` with `cert`, want a
/// certificate from every client, and speak TLS to the servers this one
/// connects to (replication; a sentinel's links), announcing `port`.
pub(super) fn tls_args(pki: &Pki, cert: &CertFiles, port: u16) -> Vec<String> {
    let path = |p: &std::path::Path| p.display().to_string();
    [
        "--tls-port".to_owned(),
        port.to_string(),
        "--tls-cert-file".to_owned(),
        path(&cert.cert),
        "--tls-key-file".to_owned(),
        path(&cert.key),
        "--tls-ca-cert-file".to_owned(),
        path(&pki.ca_file()),
        "--tls-auth-clients".to_owned(),
        "yes".to_owned(),
        "--tls-replication".to_owned(),
        "yes".to_owned(),
    ]
    .to_vec()
}

/// The daemon's user of docs/operating.md with its password [`DATA_USER`],
/// as `redis-server` arguments: `ACL SETUSER <user> <rules…>` as `--user
/// <user> <rules…>`.
pub(super) fn data_user_args() -> Vec<String> {
    let (user, pass) = DATA_USER;
    let rules = super::super::acl::documented_rules(user, pass);
    std::iter::once("--user".to_owned())
        .chain(rules.into_iter().skip(2))
        .collect()
}

/// A sentinel's config lines for TLS (`args` of [`tls_args`] as lines:
/// `--tls-port 1` → `tls-port 1`) and its users.
pub(super) fn sentinel_conf(args: &[String]) -> String {
    let mut conf = String::new();
    for pair in args.chunks(2) {
        conf.push_str(&format!("{} {:?}\n", &pair[0][2..], pair[1]));
    }
    let ((user, pass), (harness, hpass)) = (SENTINEL_USER, HARNESS_USER);
    conf.push_str(&format!(
        "user default on nopass ~* &* +@all -sentinel|get-master-addr-by-name\n\
         user {harness} on >{hpass} ~* &* +@all\n\
         user {user} on >{pass} -@all +sentinel|get-master-addr-by-name\n"
    ));
    conf
}

impl Tls {
    /// What redq needs: `[redis.tls]` (the CA, its client certificate) and
    /// the sentinels' credentials (the data nodes' are in the URL).
    pub(super) fn configure(&self, c: &mut RedisConfig) {
        if let Some(s) = c.sentinel.as_mut() {
            s.username = Some(SENTINEL_USER.0.into());
            s.password = Some(SENTINEL_USER.1.into());
        }
        c.tls.ca_file = Some(self.pki.ca_file());
        c.tls.cert_file = Some(self.client.cert.clone());
        c.tls.key_file = Some(self.client.key.clone());
    }
}

impl Topology {
    /// With TLS: how each server is reached by the others and by redq,
    /// from its `CLIENT LIST`: each connection of the replica (`flags=S`),
    /// of a sentinel (named `sentinel-…`) or of redq (user [`DATA_USER`]),
    /// as a [`Link`]. The harness's own connections (plain port, the
    /// default user, no name) are left out.
    pub fn tls_links(&self) -> Vec<Link> {
        let mut links = Vec::new();
        let nodes = self.nodes.iter().filter(|n| n.running()).map(|n| (n, None));
        let sentinels = self.sentinels.iter().map(|s| (s, Some(HARNESS_USER)));
        for (server, user) in nodes.chain(sentinels) {
            let list: String =
                query_as(server.port, user, redis::cmd("CLIENT").arg("LIST")).unwrap();
            for line in list.lines() {
                let field = |name: &str| {
                    line.split(' ')
                        .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
                        .unwrap_or("")
                };
                let from = if field("flags").contains('S') {
                    "replica"
                } else if field("name").starts_with("sentinel-") {
                    "sentinel"
                } else if field("user") == DATA_USER.0 {
                    "redq"
                } else {
                    continue;
                };
                let port = field("laddr")
                    .rsplit_once(':')
                    .and_then(|(_, p)| p.parse().ok());
                links.push(Link {
                    server: server.port,
                    from,
                    port: port.unwrap_or(0),
                });
            }
        }
        links
    }

    /// With TLS: the TLS port of each server, by plain port.
    pub fn tls_ports(&self) -> HashMap<u16, u16> {
        let t = self
            .tls
            .as_ref()
            .expect("a topology started with start_tls");
        self.nodes
            .iter()
            .map(|n| n.port)
            .zip(t.nodes.iter().copied())
            .chain(
                self.sentinels
                    .iter()
                    .map(|s| s.port)
                    .zip(t.sentinels.iter().copied()),
            )
            .collect()
    }
}

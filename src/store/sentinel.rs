//! Finding the primary through Redis Sentinel (`[redis.sentinel]`).
//!
//! Every new connection (the store's shared one, the waker's, the
//! promoter's) asks the sentinels in turn where the primary is (`SENTINEL
//! get-master-addr-by-name`) and opens a connection to the address named;
//! [`super::connect`] then checks that the server says it is the primary
//! (`INFO replication`). When that fails, the next sentinel is asked: just after a
//! failover one sentinel may still name the old primary (dead, or a replica
//! once it is back) while another already names the new one, so one stale
//! answer does not hold a connection back. An address already tried is not
//! tried twice in one round.
//!
//! A failover is followed this way, not announced: a killed primary breaks
//! the connections (an I/O error), a demoted one answers `READONLY` (or
//! closes them: sentinels kill the clients of a node they reconfigure), and
//! the shared connection is opened again on the next call (see
//! [`super::connect::Shared`] for how often).
//!
//! Each sentinel is given the connect time-out; it is reached the way the
//! data nodes are (TLS when the URL is `rediss://`, with the same
//! `[redis.tls]`), with its own credentials (`redis.sentinel.username`,
//! `password`), never the data node's.
//!
//! When the sentinels refuse redq's login or its question (credentials,
//! ACL rules), or the primary they name refuses the data node's, the error
//! says whose and which keys to set, and is not an I/O error: callers do
//! not wait for it to pass as they would for a failover.

use std::future::Future;
use std::sync::Mutex;

use redis::aio::MultiplexedConnection;
use redis::{ErrorKind, RedisConnectionInfo, ServerErrorKind};

use super::connect::{io_err, parse_host_port, Endpoint};
use crate::config::SentinelConfig;
use crate::error::{Error, Result};

/// The sentinels of `[redis.sentinel]`, and the primary last found.
pub(super) struct Sentinels {
    master: String,
    nodes: Vec<(String, u16)>,
    /// How to log in to the sentinels.
    login: RedisConnectionInfo,
    /// The primary the last connection went to: a change is logged once.
    last: Mutex<Option<(String, u16)>>,
}

impl Sentinels {
    pub(super) fn from_config(s: &SentinelConfig) -> Result<Sentinels> {
        let nodes = s
            .nodes
            .iter()
            .map(|n| {
                parse_host_port(n).ok_or_else(|| {
                    Error::Config(format!("redis.sentinel.nodes: {n:?} is not host:port"))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut login = RedisConnectionInfo::default();
        if let Some(u) = &s.username {
            login = login.set_username(u);
        }
        if let Some(p) = &s.password {
            login = login.set_password(p);
        }
        Ok(Sentinels {
            master: s.master.clone(),
            nodes,
            login,
            last: Mutex::new(None),
        })
    }

    /// `sentinel primary "<master>" (<nodes>)`: where Redis is, for messages.
    pub(super) fn shown(s: &SentinelConfig) -> String {
        format!("sentinel primary {:?} ({})", s.master, s.nodes.join(", "))
    }

    /// Asks the sentinels in turn where the primary is, and `open`s each
    /// address named until one opens; the first success is returned. The
    /// error says what each sentinel answered and why its address failed.
    pub(super) async fn open<T, F, Fut>(&self, ep: &Endpoint, mut open: F) -> Result<T>
    where
        F: FnMut(String, u16) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let master = &self.master;
        let mut named: Vec<Named> = Vec::new();
        let mut unanswered = Vec::new();
        // The first refusal by a sentinel.
        let mut sentinel_refused = None;
        for (host, port) in &self.nodes {
            let sentinel = format!("{host}:{port}");
            match ep.within(self.ask(ep, host, *port)).await {
                Ok(Some(addr)) => {
                    if let Some(n) = named.iter_mut().find(|n| n.addr == addr) {
                        n.by.push(sentinel);
                        continue;
                    }
                    match open(addr.0.clone(), addr.1).await {
                        Ok(v) => {
                            self.found(&addr.0, addr.1);
                            return Ok(v);
                        }
                        Err(e) => named.push(Named {
                            refused: refusal(&e),
                            why: bare(e),
                            addr,
                            by: vec![sentinel],
                        }),
                    }
                }
                Ok(None) => {
                    unanswered.push(format!("{sentinel} monitors no primary named {master:?}"))
                }
                Err(e) => {
                    sentinel_refused = sentinel_refused.or(refusal(&e));
                    unanswered.push(format!("sentinel {sentinel}: {e}"));
                }
            }
        }
        let mut why: Vec<String> = named
            .iter()
            .map(|n| {
                let (h, p) = &n.addr;
                format!("{h}:{p}, named by {}: {}", n.by.join(" and "), n.why)
            })
            .collect();
        why.extend(unanswered);
        let why = why.join("; ");
        // Refused credentials or ACL rules are said as such, and are not
        // transient: the same login fails the same way until the
        // configuration changes (a failover does not fix it).
        let data_refused = named
            .iter()
            .map(|n| n.refused)
            .collect::<Option<Vec<_>>>()
            .and_then(|kinds| kinds.first().copied());
        if let Some(kind) = data_refused {
            return Err(refused(
                kind,
                format!(
                    "the primary {master:?} the sentinels name refused redq's login or a command ({why}): \
                     check the data nodes' user and password in redis.url and that user's ACL rules \
                     (the sentinels' own credentials are redis.sentinel.username and password)"
                ),
            ));
        }
        if let (true, Some(kind)) = (named.is_empty(), sentinel_refused) {
            return Err(refused(
                kind,
                format!(
                    "the sentinels refused redq's login or its question where primary {master:?} is ({why}): \
                     set redis.sentinel.username and redis.sentinel.password to a sentinel user that may run \
                     SENTINEL get-master-addr-by-name (the data nodes' credentials go in redis.url)"
                ),
            ));
        }
        let hint = if named.is_empty() {
            "check redis.sentinel.master and nodes"
        } else {
            "the primary is down or not yet replaced: a failover may be under way"
        };
        Err(io_err(
            std::io::ErrorKind::NotConnected,
            format!("no primary {master:?} reachable through the sentinels ({why}); {hint}"),
        ))
    }

    /// `SENTINEL get-master-addr-by-name` of one sentinel.
    async fn ask(&self, ep: &Endpoint, host: &str, port: u16) -> Result<Option<(String, u16)>> {
        let stream = ep.stream_to(host, port).await?;
        let (mut con, driver) = MultiplexedConnection::new_with_config(
            &self.login,
            stream,
            redis::AsyncConnectionConfig::new().set_response_timeout(Some(ep.connect_timeout())),
        )
        .await?;
        let driving = tokio::spawn(driver);
        let addr: Option<(String, String)> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&self.master)
            .query_async(&mut con)
            .await?;
        // The sentinel's connection ends here, not when it times out.
        drop(con);
        driving.abort();
        match addr {
            None => Ok(None),
            Some((h, p)) => p.parse().map(|p| Some((h, p))).map_err(|_| {
                io_err(
                    std::io::ErrorKind::InvalidData,
                    format!("answered port {p:?}"),
                )
            }),
        }
    }

    /// Logs the primary when it is not the one the last connection found.
    fn found(&self, host: &str, port: u16) {
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        let now = (host.to_owned(), port);
        match last.as_ref() {
            Some(was) if *was == now => return,
            Some((h, p)) => tracing::warn!(
                master = %self.master, from = %format!("{h}:{p}"), to = %format!("{host}:{port}"),
                "the primary has moved (a failover): following it"
            ),
            None => {
                tracing::info!(master = %self.master, primary = %format!("{host}:{port}"), "the sentinels name the primary")
            }
        }
        *last = Some(now);
    }
}

/// An address a sentinel named that did not open.
struct Named {
    addr: (String, u16),
    /// The sentinels that named it.
    by: Vec<String>,
    /// Why it did not open.
    why: String,
    /// Whether that was a refusal of redq's login or of a command.
    refused: Option<ErrorKind>,
}

/// Whether `e` is a server refusing redq's login (a wrong or missing
/// password, an unknown user) or a command (ACL rules): the kind to report.
fn refusal(e: &Error) -> Option<ErrorKind> {
    let Error::Redis(r) = e else {
        return None;
    };
    match (r.kind(), r.code()) {
        (k @ ErrorKind::AuthenticationFailed, _) => Some(k),
        (k @ ErrorKind::Server(ServerErrorKind::NoPerm), _) => Some(k),
        (_, Some("WRONGPASS" | "NOAUTH")) => Some(ErrorKind::AuthenticationFailed),
        _ => None,
    }
}

/// A refusal of `kind` with `detail` (a permanent error, not an I/O one).
fn refused(kind: ErrorKind, detail: String) -> Error {
    let what = match kind {
        ErrorKind::AuthenticationFailed => "login refused",
        _ => "command refused",
    };
    Error::Redis(redis::RedisError::from((kind, what, detail)))
}

/// The error's message without the `redis: ` its display starts with (it
/// goes inside a message that says so already).
fn bare(e: Error) -> String {
    match e {
        Error::Redis(e) => e.to_string(),
        other => other.to_string(),
    }
}

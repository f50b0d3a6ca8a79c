//! Connections: the one place that turns `[redis]` settings into
//! connections to Redis.
//!
//! redq makes each connection's stream itself (TCP, TLS through rustls, or a
//! Unix socket) and hands it to redis-rs, which speaks RESP over it. Making
//! the TLS stream here is what gives `[redis.tls]` its full meaning: a CA
//! file, a client certificate, a server name other than the URL's host (a
//! server reached by IP), and skipping verification; and it is where a
//! failure is turned into a message that says what to do (a certificate not
//! trusted, a name mismatch, a server that wants a client certificate, TLS
//! spoken to a plain port or the reverse).
//!
//! [`Endpoint`] knows how to open one connection; [`Shared`] is the store's
//! shared connection: opened on first use, reopened on the next call after
//! one failed for the connection's sake (a closed socket, a reset, a
//! `READONLY` from a primary that was demoted), never in a loop of its own.
//! The waker's blocking connection and the promoter's Pub/Sub connection come
//! from the same [`Endpoint`].
//!
//! With `[redis.sentinel]`, every connection first asks the sentinels where
//! the primary is ([`super::sentinel`]), then checks that the server it
//! reaches says it is the primary (`INFO replication`): after a failover,
//! the next connection goes to the new primary.

use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection, PubSub};
use redis::{ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo, RedisFuture};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use super::sentinel::Sentinels;
use crate::config::{redacted_url, RedisConfig, TlsConfig};
use crate::error::{Error, Result};

/// A `[redis.tls]` setting that cannot be used, with its key path.
#[derive(Debug, Clone)]
pub struct TlsFileError {
    pub path: Vec<&'static str>,
    pub message: String,
}

/// `[redis.tls]` made ready: the rustls client configuration, and how the
/// server is trusted (for messages).
#[derive(Clone)]
pub struct TlsFiles {
    config: Arc<rustls::ClientConfig>,
    server_name: Option<ServerName<'static>>,
    /// "the CA in <file>" or "the bundled Mozilla roots".
    trust: String,
    insecure: bool,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsFiles {
    /// Reads and checks the files of `t` and builds the TLS configuration;
    /// an error names the key and what to do. No network.
    pub fn load(t: &TlsConfig) -> std::result::Result<TlsFiles, TlsFileError> {
        let fail = |key: &'static str, message: String| TlsFileError {
            path: vec!["redis", "tls", key],
            message,
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| fail("ca_file", format!("cannot set up TLS: {e}")))?;
        let (builder, trust) = if t.insecure_skip_verify {
            let verifier = Arc::new(AcceptAnything(provider()));
            let b = builder
                .dangerous()
                .with_custom_certificate_verifier(verifier);
            (b, "no verification (insecure_skip_verify)".to_owned())
        } else {
            let mut roots = rustls::RootCertStore::empty();
            let trust = match &t.ca_file {
                Some(path) => {
                    for cert in read_certs(path).map_err(|m| fail("ca_file", m))? {
                        roots.add(cert).map_err(|e| {
                            fail(
                                "ca_file",
                                format!(
                                    "{} holds a certificate rustls cannot use as a CA: {e}",
                                    path.display()
                                ),
                            )
                        })?;
                    }
                    format!("the CA in {}", path.display())
                }
                None => {
                    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                    "the bundled Mozilla roots (set redis.tls.ca_file for a private CA)".to_owned()
                }
            };
            (builder.with_root_certificates(roots), trust)
        };
        let config = match (&t.cert_file, &t.key_file) {
            (Some(cert), Some(key)) => {
                let chain = read_certs(cert).map_err(|m| fail("cert_file", m))?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                    fail(
                        "key_file",
                        format!("{}: no PEM private key could be read ({e})", key.display()),
                    )
                })?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    fail(
                        "key_file",
                        format!("the key does not go with cert_file, or is not usable: {e}"),
                    )
                })?
            }
            _ => builder.with_no_client_auth(),
        };
        let server_name = match &t.server_name {
            Some(name) => Some(ServerName::try_from(name.clone()).map_err(|_| {
                fail(
                    "server_name",
                    format!("{name:?} is not a DNS name or an IP address"),
                )
            })?),
            None => None,
        };
        Ok(TlsFiles {
            config: Arc::new(config),
            server_name,
            trust,
            insecure: t.insecure_skip_verify,
        })
    }
}

/// Every PEM certificate in `path`; an error says what is wrong with it.
fn read_certs(path: &Path) -> std::result::Result<Vec<CertificateDer<'static>>, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not a PEM certificate file ({e})", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

/// `insecure_skip_verify`: accepts any certificate, still checks that the
/// handshake's signatures are well formed.
#[derive(Debug)]
struct AcceptAnything(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Where Redis is and how to open a connection to it.
pub struct Endpoint {
    addr: Addr,
    redis: RedisConnectionInfo,
    tls: Option<TlsFiles>,
    connect_timeout: Duration,
    /// The URL without credentials, for messages.
    shown: String,
}

enum Addr {
    Tcp(String, u16),
    Unix(std::path::PathBuf),
    /// The primary the sentinels monitor (see [`super::sentinel`]).
    Sentinel(Sentinels),
}

/// Where `[redis]` says Redis is, without credentials, for logs: the URL,
/// or the sentinels' primary.
pub fn describe(redis: &RedisConfig) -> String {
    if redis.is_cluster() {
        let seeds: Vec<String> = redis.cluster.iter().map(|u| redacted_url(u)).collect();
        return format!("cluster {}", seeds.join(", "));
    }
    match &redis.sentinel {
        Some(s) => Sentinels::shown(s),
        None => redacted_url(&redis.url),
    }
}

/// `host:port` (an IPv6 host in brackets), or `None`.
pub fn parse_host_port(text: &str) -> Option<(String, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some((host.to_owned(), port.parse().ok()?))
}

/// One connection's byte stream.
pub(super) enum Stream {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Unix(UnixStream),
}

impl Endpoint {
    /// From `[redis]`: the URL (`redis://`, `rediss://`, `redis+unix://`,
    /// `unix://`), `[redis.tls]` (with `rediss://` only) and
    /// `[redis.sentinel]`.
    pub fn from_config(redis: &RedisConfig) -> Result<Endpoint> {
        if let Some(seed) = redis.cluster.first() {
            // A cluster's dedicated connections (the waker's) go to the
            // node serving their slot ([`Endpoint::at`]), with the seeds'
            // credentials.
            let mut e = Endpoint::new(seed, &redis.tls, redis.connect_timeout)?;
            e.shown = describe(redis);
            return Ok(e);
        }
        let mut e = Endpoint::new(&redis.url, &redis.tls, redis.connect_timeout)?;
        if let Some(s) = &redis.sentinel {
            e.addr = Addr::Sentinel(Sentinels::from_config(s)?);
            e.shown = Sentinels::shown(s);
        }
        Ok(e)
    }

    /// From a URL (`redis://`, `rediss://`, `redis+unix://`, `unix://`) and
    /// the `[redis.tls]` settings (used with `rediss://` only).
    pub fn new(url: &str, tls: &TlsConfig, connect_timeout: Duration) -> Result<Endpoint> {
        let shown = redacted_url(url);
        let is_tls = url.starts_with("rediss://");
        // redis-rs parses the URL (credentials, database, protocol); the TLS
        // part is ours, so it reads the same URL as plain redis://.
        let plain = match url.strip_prefix("rediss://") {
            Some(rest) => format!("redis://{rest}"),
            None => url.to_owned(),
        };
        let info = plain.as_str().into_connection_info().map_err(|e| {
            Error::Config(format!(
                "redis.url {shown}: {e}; expected redis://[user:pass@]host[:port][/db], rediss://… or redis+unix:///path"
            ))
        })?;
        let addr = match info.addr() {
            ConnectionAddr::Tcp(host, port) => Addr::Tcp(host.clone(), *port),
            ConnectionAddr::TcpTls { host, port, .. } => Addr::Tcp(host.clone(), *port),
            ConnectionAddr::Unix(path) => Addr::Unix(path.clone()),
            _ => {
                return Err(Error::Config(format!(
                    "redis.url {shown}: this kind of address is not supported"
                )))
            }
        };
        let tls = if is_tls {
            Some(
                TlsFiles::load(tls)
                    .map_err(|e| Error::Config(format!("{}: {}", e.path.join("."), e.message)))?,
            )
        } else {
            None
        };
        if tls.as_ref().is_some_and(|t| t.insecure) {
            tracing::warn!(redis = %shown, "TLS without verification (redis.tls.insecure_skip_verify): anyone on the path can read and change the traffic");
        }
        Ok(Endpoint {
            addr,
            redis: info.redis_settings().clone(),
            tls,
            connect_timeout,
            shown,
        })
    }

    /// The same server settings (credentials, TLS) at another address: a
    /// cluster node.
    pub(crate) fn at(&self, host: &str, port: u16) -> Endpoint {
        Endpoint {
            addr: Addr::Tcp(host.to_owned(), port),
            redis: self.redis.clone(),
            tls: self.tls.clone(),
            connect_timeout: self.connect_timeout,
            shown: format!("{host}:{port}"),
        }
    }

    /// The URL without credentials.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Opens the byte stream: TCP (then TLS) or a Unix socket, within the
    /// connect time-out, with errors that say what to do. Not for Sentinel,
    /// whose address is found anew for each connection (see
    /// [`Endpoint::multiplexed`]).
    async fn stream(&self) -> Result<Stream> {
        match &self.addr {
            Addr::Unix(path) => {
                self.within(async {
                    UnixStream::connect(path)
                        .await
                        .map(Stream::Unix)
                        .map_err(|e| {
                            self.io_error(&format!("cannot connect to {}", path.display()), e)
                        })
                })
                .await
            }
            Addr::Tcp(host, port) => self.stream_to(host, *port).await,
            Addr::Sentinel(_) => Err(Error::Config(format!(
                "{}: a sentinel's primary has no fixed address",
                self.shown
            ))),
        }
    }

    /// A TCP (then TLS, with `rediss://`) stream to `host:port`, within the
    /// connect time-out: a data node, or a sentinel.
    pub(super) async fn stream_to(&self, host: &str, port: u16) -> Result<Stream> {
        self.within(self.tcp(host, port)).await
    }

    /// `redis.connect_timeout`.
    pub(super) fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// `open` within the connect time-out.
    pub(super) async fn within<T>(
        &self,
        open: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.connect_timeout, open).await {
            Ok(r) => r,
            Err(_) => Err(io_err(
                std::io::ErrorKind::TimedOut,
                format!(
                    "{}: no connection within {:?} (redis.connect_timeout){}",
                    self.shown,
                    self.connect_timeout,
                    if self.tls.is_some() {
                        "; if the server does not speak TLS on this port, use redis://"
                    } else {
                        ""
                    }
                ),
            )),
        }
    }

    /// TCP to `host:port`, then TLS when the URL is `rediss://`.
    async fn tcp(&self, host: &str, port: u16) -> Result<Stream> {
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(|e| self.io_error(&format!("cannot connect to {host}:{port}"), e))?;
        let _ = tcp.set_nodelay(true);
        let Some(t) = &self.tls else {
            return Ok(Stream::Tcp(tcp));
        };
        let name = match &t.server_name {
            Some(n) => n.clone(),
            None => ServerName::try_from(host.to_owned()).map_err(|_| {
                Error::Config(format!(
                    "redis.url {}: {host:?} is not a name TLS can verify; set redis.tls.server_name",
                    self.shown
                ))
            })?,
        };
        let connector = tokio_rustls::TlsConnector::from(t.config.clone());
        connector
            .connect(name.clone(), tcp)
            .await
            .map(|s| Stream::Tls(Box::new(s)))
            .map_err(|e| self.tls_error(t, &name, e))
    }

    fn io_error(&self, what: &str, e: std::io::Error) -> Error {
        match self.addr {
            // The sentinels' message names the primary and who named it.
            Addr::Sentinel(_) => io_err(e.kind(), format!("{what}: {e}")),
            _ => io_err(e.kind(), format!("{what} ({}): {e}", self.shown)),
        }
    }

    /// A failed TLS handshake, said in terms of what to do about it.
    fn tls_error(&self, t: &TlsFiles, name: &ServerName<'_>, e: std::io::Error) -> Error {
        use rustls::{AlertDescription as A, CertificateError as C, Error as R};
        let name = name.to_str();
        let hint = match e.get_ref().and_then(|i| i.downcast_ref::<R>()) {
            Some(R::InvalidCertificate(C::UnknownIssuer | C::BadSignature)) => format!(
                "the server's certificate is not signed by a CA redq trusts ({}); set redis.tls.ca_file to the CA that signed it",
                t.trust
            ),
            Some(R::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. })) => format!(
                "the server's certificate is not for {name:?}; connect by a name it holds, or set redis.tls.server_name to one"
            ),
            Some(R::InvalidCertificate(C::Expired | C::ExpiredContext { .. })) => {
                "the server's certificate has expired".to_owned()
            }
            Some(R::InvalidCertificate(other)) => {
                format!("the server's certificate was refused: {other:?}")
            }
            Some(R::AlertReceived(A::CertificateRequired | A::HandshakeFailure | A::BadCertificate))
                if t.config.client_auth_cert_resolver.has_certs() =>
            {
                "the server refused redq's client certificate (redis.tls.cert_file): is it signed by a CA the server trusts (tls-ca-cert-file)?".to_owned()
            }
            Some(R::AlertReceived(A::CertificateRequired | A::HandshakeFailure | A::BadCertificate)) => {
                "the server wants a client certificate (tls-auth-clients yes): set redis.tls.cert_file and key_file".to_owned()
            }
            Some(R::InvalidMessage(_)) => {
                "the server does not speak TLS on this port: use redis:// for a plain port, or the server's tls-port".to_owned()
            }
            _ if matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            ) =>
            {
                "the server closed the connection during the TLS handshake: does it want a client certificate (redis.tls.cert_file, key_file), or is this not its TLS port?".to_owned()
            }
            _ => format!("{e}"),
        };
        io_err(
            std::io::ErrorKind::ConnectionAborted,
            format!("TLS to {} failed: {hint}", self.shown),
        )
    }

    /// A multiplexed connection whose replies time out after `answer_within`.
    /// With Sentinel, to a server that says it is the primary.
    pub(crate) async fn multiplexed(
        &self,
        answer_within: Option<Duration>,
    ) -> Result<MultiplexedConnection> {
        let Addr::Sentinel(sentinels) = &self.addr else {
            let stream = self.stream().await?;
            return self.handshake(stream, answer_within).await;
        };
        sentinels
            .open(self, |host, port| async move {
                self.within(async {
                    let stream = self.tcp(&host, port).await?;
                    let mut con = self.handshake(stream, answer_within).await?;
                    // Just after a failover a sentinel may still name the
                    // old primary, which a restart has made a replica.
                    // `INFO`, not `ROLE`: the daemon's documented ACL rules
                    // grant INFO (the start checks read it), not ROLE.
                    let info: String = redis::cmd("INFO")
                        .arg("replication")
                        .query_async(&mut con)
                        .await?;
                    if info.lines().any(|l| l.trim_end() == "role:master") {
                        Ok(con)
                    } else {
                        Err(io_err(
                            std::io::ErrorKind::NotConnected,
                            "not a primary (yet)".to_owned(),
                        ))
                    }
                })
                .await
            })
            .await
    }

    async fn handshake(
        &self,
        stream: Stream,
        answer_within: Option<Duration>,
    ) -> Result<MultiplexedConnection> {
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(answer_within);
        let (con, driver) = MultiplexedConnection::new_with_config(&self.redis, stream, config)
            .await
            .map_err(|e| self.handshake_error(e))?;
        tokio::spawn(driver);
        Ok(con)
    }

    /// A Pub/Sub connection. With Sentinel, to the primary a sentinel
    /// names (not checked, as a Pub/Sub connection cannot send `INFO`; a
    /// replica forwards the primary's messages anyway).
    pub(crate) async fn pubsub(&self) -> Result<PubSub> {
        let Addr::Sentinel(sentinels) = &self.addr else {
            let stream = self.stream().await?;
            return PubSub::new(&self.redis, stream)
                .await
                .map_err(|e| self.handshake_error(e));
        };
        sentinels
            .open(self, |host, port| async move {
                self.within(async {
                    let stream = self.tcp(&host, port).await?;
                    PubSub::new(&self.redis, stream)
                        .await
                        .map_err(|e| self.handshake_error(e))
                })
                .await
            })
            .await
    }

    /// A failure after the stream opened (AUTH, HELLO, SELECT): a plain
    /// connection to a TLS port fails here, as the server drops it.
    fn handshake_error(&self, e: redis::RedisError) -> Error {
        // With TLS 1.3 the server checks the client's certificate after the
        // client finished its handshake: its refusal arrives with the first
        // reply.
        if let Some(t) = &self.tls {
            let text = e.to_string();
            if [
                "CertificateRequired",
                "BadCertificate",
                "UnknownCA",
                "HandshakeFailure",
            ]
            .iter()
            .any(|alert| text.contains(alert))
            {
                let hint = if t.config.client_auth_cert_resolver.has_certs() {
                    "the server refused redq's client certificate (redis.tls.cert_file): is it signed by a CA the server trusts (tls-ca-cert-file)?"
                } else {
                    "the server wants a client certificate (tls-auth-clients yes): set redis.tls.cert_file and key_file"
                };
                return io_err(
                    std::io::ErrorKind::ConnectionAborted,
                    format!("TLS to {} failed: {hint} ({text})", self.shown),
                );
            }
        }
        if self.tls.is_none() && (e.is_connection_dropped() || e.is_io_error()) {
            return io_err(
                std::io::ErrorKind::ConnectionAborted,
                format!(
                    "{} closed the connection at once ({e}): if this is a TLS port, use rediss://",
                    self.shown
                ),
            );
        }
        e.into()
    }
}

pub(super) fn io_err(kind: std::io::ErrorKind, message: String) -> Error {
    Error::Redis(redis::RedisError::from(std::io::Error::new(kind, message)))
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// The store's shared connection: one multiplexed connection, opened on
/// first use and again on the next call after one failed for the
/// connection's sake. Callers retry with their own backoff; a call that
/// failed that way did not run, or its reply was lost (the transitions are
/// fenced, so a lost reply is harmless).
///
/// While Redis cannot be reached, openings are spaced: after one fails,
/// the calls of the next [`OPEN_PAUSE_MIN`] (doubling with each failure up
/// to [`OPEN_PAUSE_MAX`]) get its error at once instead of opening again.
/// Every component of a daemon shares this connection and retries on its
/// own schedule (the reaper every `reap_interval`, the writers, the lease
/// keeper, the fetchers, the observer), and with Sentinel every opening
/// asks each sentinel in turn: without the pause a daemon asked the
/// sentinels about 60 times a second while no primary was known
/// (tests/sentinel.rs counts them). The cost: a primary that is back is
/// found up to [`OPEN_PAUSE_MAX`] later.
#[derive(Clone)]
pub(crate) struct Shared {
    endpoint: Arc<Endpoint>,
    answer_within: Option<Duration>,
    /// The open connection and its number (a failure closes only its own).
    current: Arc<RwLock<Option<(u64, MultiplexedConnection)>>>,
    /// One opening at a time.
    opening: Arc<tokio::sync::Mutex<Opening>>,
    db: i64,
}

/// The first pause after a failed opening.
pub(crate) const OPEN_PAUSE_MIN: Duration = Duration::from_millis(100);
/// The longest pause between openings.
pub(crate) const OPEN_PAUSE_MAX: Duration = Duration::from_secs(1);

/// Openings so far, and the last failure while it holds.
#[derive(Default)]
struct Opening {
    number: u64,
    /// Until when calls get this failure's error, and the pause it set.
    failed: Option<(tokio::time::Instant, Duration, Error)>,
}

/// The error of a failed opening, for a call that did not try again: an
/// I/O error stays one (callers retry on those), with the same message.
fn again(e: &Error) -> Error {
    match e {
        Error::Redis(r) if r.is_io_error() => {
            io_err(std::io::ErrorKind::NotConnected, r.to_string())
        }
        other => other.shared(),
    }
}

impl Shared {
    pub(crate) fn new(endpoint: Arc<Endpoint>, answer_within: Option<Duration>) -> Shared {
        let db = endpoint.redis.db();
        Shared {
            endpoint,
            answer_within,
            current: Arc::new(RwLock::new(None)),
            opening: Arc::new(tokio::sync::Mutex::new(Opening::default())),
            db,
        }
    }

    fn open_now(&self) -> Option<(u64, MultiplexedConnection)> {
        self.current.read().ok().and_then(|c| c.clone())
    }

    /// The open connection, opening one if none is (or the last opening's
    /// error, within the pause after it).
    pub(crate) async fn get(&self) -> Result<(u64, MultiplexedConnection)> {
        if let Some(c) = self.open_now() {
            return Ok(c);
        }
        let mut opening = self.opening.lock().await;
        if let Some(c) = self.open_now() {
            return Ok(c);
        }
        let now = tokio::time::Instant::now();
        if let Some((until, _, e)) = &opening.failed {
            if now < *until {
                return Err(again(e));
            }
        }
        match self.endpoint.multiplexed(self.answer_within).await {
            Ok(con) => {
                opening.failed = None;
                opening.number += 1;
                let entry = (opening.number, con);
                if let Ok(mut c) = self.current.write() {
                    *c = Some(entry.clone());
                }
                Ok(entry)
            }
            Err(e) => {
                let pause = match &opening.failed {
                    Some((_, last, _)) => (*last * 2).min(OPEN_PAUSE_MAX),
                    None => OPEN_PAUSE_MIN,
                };
                let kept = again(&e);
                opening.failed = Some((tokio::time::Instant::now() + pause, pause, kept));
                Err(e)
            }
        }
    }

    /// Drops connection `number` after an error that broke it.
    fn broken(&self, number: u64, e: &redis::RedisError) {
        // READONLY: the server was a primary and is a replica now (a
        // failover); the next connection finds the new primary.
        let demoted = matches!(e.code(), Some("READONLY" | "MASTERDOWN"));
        if demoted || e.is_unrecoverable_error() || e.is_connection_dropped() || e.is_io_error() {
            if let Ok(mut c) = self.current.write() {
                if c.as_ref().is_some_and(|(n, _)| *n == number) {
                    *c = None;
                }
            }
        }
    }
}

fn to_redis(e: Error) -> redis::RedisError {
    match e {
        Error::Redis(e) => e,
        other => redis::RedisError::from(std::io::Error::other(other.to_string())),
    }
}

impl ConnectionLike for Shared {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, redis::Value> {
        Box::pin(async move {
            let (n, mut con) = self.get().await.map_err(to_redis)?;
            let r = con.req_packed_command(cmd).await;
            if let Err(e) = &r {
                self.broken(n, e);
            }
            r
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<redis::Value>> {
        Box::pin(async move {
            let (n, mut con) = self.get().await.map_err(to_redis)?;
            let r = con.req_packed_commands(pipeline, offset, count).await;
            if let Err(e) = &r {
                self.broken(n, e);
            }
            r
        })
    }

    fn get_db(&self) -> i64 {
        self.db
    }
}

//! The benchmark's private `redis-server` ([`RedisProcess`]: a free port on
//! 127.0.0.1, no persistence, killed when dropped) in a temporary directory,
//! with the connection and the `INFO` readings the scenarios use.
//!
//! `REDQ_BENCH_REDIS_SERVER` runs another program instead of `redis-server`
//! (a build of its own, or a wrapper that `exec`s one, e.g. under valgrind);
//! `REDQ_BENCH_REDIS_ARGS` adds server settings ("hash-max-listpack-entries 0").
//!
//! With `--replica` a second server replicates the first (`--replicaof`, its
//! own directory), and the run starts once it is in sync; with
//! `--wait-replicas N` redq's `redis.wait_replicas` is N, so every enqueue
//! and completion waits for that replica (`WAIT`): what durability at
//! failover costs.

use std::path::PathBuf;

use redis::aio::ConnectionManager;

use super::redis_server::{Options, RedisProcess};
use redq::config::{RedisConfig, TlsConfig};
use redq::error::{Error, Result};

pub struct Private {
    // Fields drop in this order: the servers are killed before their directories go.
    _replica: Option<RedisProcess>,
    server: RedisProcess,
    _dir: TempDir,
    /// How redq reaches the server: its plain port, or with `--tls` its TLS
    /// port at rediss://localhost trusting the run's CA.
    pub redis: RedisConfig,
    con: ConnectionManager,
}

/// The server's directory, removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn cfg_err(e: impl std::fmt::Display) -> Error {
    Error::Config(format!("bench: {e}"))
}

impl Private {
    /// Starts the server (`tls`: with a TLS port too), and with `replica` a
    /// replica of it; redq waits for `wait_replicas` replicas.
    pub async fn start(tls: bool, replica: bool, wait_replicas: u32) -> Result<Private> {
        // One directory per server started (the unit tests start several
        // in one process, at once).
        static STARTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("redq-bench-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| cfg_err(format!("{}: {e}", dir.display())))?;
        let dir = TempDir(dir);
        let mut extra = vec!["--maxmemory-policy".into(), "noeviction".into()];
        let tls_port = if tls {
            make_certificates(&dir.0)?;
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(cfg_err)?
                .port();
            let file = |f: &str| dir.0.join(f).into_os_string();
            extra.extend([
                "--tls-port".into(),
                port.to_string().into(),
                "--tls-cert-file".into(),
                file("server.pem"),
                "--tls-key-file".into(),
                file("server.key"),
                "--tls-ca-cert-file".into(),
                file("ca.pem"),
                "--tls-auth-clients".into(),
                "no".into(),
            ]);
            Some(port)
        } else {
            None
        };
        // Extra server settings for experiments, e.g. "hash-max-listpack-entries 0".
        extra.extend(
            std::env::var("REDQ_BENCH_REDIS_ARGS")
                .unwrap_or_default()
                .split_whitespace()
                .enumerate()
                .map(|(i, a)| match i % 2 {
                    0 => format!("--{a}").into(),
                    _ => a.into(),
                }),
        );
        let opts = Options {
            program: std::env::var_os("REDQ_BENCH_REDIS_SERVER")
                .unwrap_or_else(|| "redis-server".into()),
            dir: dir.0.clone(),
            logfile: None,
            extra,
            config: None,
        };
        let replica_opts = opts.clone();
        let server = tokio::task::spawn_blocking(move || RedisProcess::start(&opts, None))
            .await
            .map_err(cfg_err)?
            .map_err(cfg_err)?;
        let replica = if replica {
            Some(start_replica(replica_opts, server.port()).await?)
        } else {
            None
        };
        let url = format!("redis://127.0.0.1:{}", server.port());
        let redis = match tls_port {
            Some(port) => RedisConfig {
                url: format!("rediss://localhost:{port}"),
                tls: TlsConfig {
                    ca_file: Some(dir.0.join("ca.pem")),
                    ..Default::default()
                },
                wait_replicas,
                ..Default::default()
            },
            None => RedisConfig {
                url: url.clone(),
                wait_replicas,
                ..Default::default()
            },
        };
        // The bench's own connection to its own server, for FLUSHALL and
        // INFO (the store's shared connection is the library's alone).
        let con = redis::Client::open(url.as_str())
            .map_err(cfg_err)?
            .get_connection_manager()
            .await
            .map_err(|e| cfg_err(format!("the private redis-server did not come up: {e}")))?;
        Ok(Private {
            _replica: replica,
            server,
            _dir: dir,
            redis,
            con,
        })
    }

    pub fn pid(&self) -> u32 {
        self.server.pid()
    }

    pub fn con(&self) -> ConnectionManager {
        self.con.clone()
    }

    /// Empties the private server between scenarios (keys only; the function
    /// library stays loaded).
    pub async fn flush(&self) -> Result<()> {
        let mut con = self.con();
        redis::cmd("FLUSHALL")
            .query_async::<()>(&mut con)
            .await
            .map_err(cfg_err)
    }

    /// One field of `INFO <section>`.
    pub async fn info_field(&self, section: &str, field: &str) -> Result<String> {
        let mut con = self.con();
        let text: String = redis::cmd("INFO")
            .arg(section)
            .query_async(&mut con)
            .await
            .map_err(cfg_err)?;
        text.lines()
            .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
            .map(|v| v.trim().to_owned())
            .ok_or_else(|| cfg_err(format!("INFO {section} has no {field}")))
    }

    pub async fn info_u64(&self, section: &str, field: &str) -> Result<u64> {
        self.info_field(section, field)
            .await?
            .parse()
            .map_err(|e| cfg_err(format!("INFO {field}: {e}")))
    }

    /// Zeroes Redis's command statistics (`CONFIG RESETSTAT`).
    pub async fn reset_stats(&self) -> Result<()> {
        let mut con = self.con();
        redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async::<()>(&mut con)
            .await
            .map_err(cfg_err)
    }

    /// `INFO commandstats`, one line per command, busiest first.
    pub async fn commandstats(&self) -> Result<String> {
        let mut con = self.con();
        let text: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut con)
            .await
            .map_err(cfg_err)?;
        let usec = |l: &str| -> u64 {
            l.split(',')
                .find_map(|f| f.strip_prefix("usec="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let mut lines: Vec<&str> = text.lines().filter(|l| l.starts_with("cmdstat_")).collect();
        lines.sort_by_key(|l| std::cmp::Reverse(usec(l)));
        Ok(lines.join("\n"))
    }

    pub async fn version(&self) -> Result<String> {
        self.info_field("server", "redis_version").await
    }
}

/// Starts a replica of the server on `primary` (the same program and
/// settings, its own directory) and waits until the primary counts it in
/// sync: `connected_slaves:1` with `state=online`.
async fn start_replica(mut opts: Options, primary: u16) -> Result<RedisProcess> {
    opts.dir = opts.dir.join("replica");
    std::fs::create_dir_all(&opts.dir).map_err(cfg_err)?;
    // Not the TLS port of the primary's settings: the replica needs none.
    if let Some(i) = opts.extra.iter().position(|a| a == "--tls-port") {
        opts.extra.drain(i..i + 2);
    }
    opts.extra.extend([
        "--replicaof".into(),
        "127.0.0.1".into(),
        primary.to_string().into(),
    ]);
    let replica = tokio::task::spawn_blocking(move || RedisProcess::start(&opts, None))
        .await
        .map_err(cfg_err)?
        .map_err(cfg_err)?;
    let client = redis::Client::open(format!("redis://127.0.0.1:{primary}")).map_err(cfg_err)?;
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .map_err(cfg_err)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut con)
            .await
            .map_err(cfg_err)?;
        if info
            .lines()
            .any(|l| l.starts_with("slave0:") && l.contains("state=online"))
        {
            return Ok(replica);
        }
        if std::time::Instant::now() > deadline {
            return Err(cfg_err("the replica did not get in sync within 30s"));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A CA and a server certificate for `localhost` it signed, made with the
/// `openssl` command into `dir` (ca.pem; server.pem, server.key), for one
/// run of `--tls`.
fn make_certificates(dir: &std::path::Path) -> Result<()> {
    std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost\n").map_err(cfg_err)?;
    let steps: [&[&str]; 3] = [
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=redq bench CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ],
    ];
    for args in steps {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .map_err(|e| {
                cfg_err(format!(
                    "--tls needs the openssl command to make its certificates: {e}"
                ))
            })?;
        if !out.status.success() {
            return Err(cfg_err(format!(
                "openssl {} failed: {}",
                args[0],
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    }
    Ok(())
}

//! The benchmark's private `redis-server` ([`RedisProcess`]: a free port on
//! 127.0.0.1, no persistence, killed when dropped) in a temporary directory,
//! with the connection and the `INFO` readings the scenarios use.
//!
//! `REDQ_BENCH_REDIS_SERVER` runs another program instead of `redis-server`
//! (a build of its own, or a wrapper that `exec`s one, e.g. under valgrind);
//! `REDQ_BENCH_REDIS_ARGS` adds server settings ("hash-max-listpack-entries 0").

use std::path::PathBuf;

use redis::aio::ConnectionManager;

use super::redis_server::{Options, RedisProcess};
use redq::error::{Error, Result};

pub struct Private {
    // Fields drop in this order: the server is killed before its directory goes.
    server: RedisProcess,
    _dir: TempDir,
    pub url: String,
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
    pub async fn start() -> Result<Private> {
        let dir = std::env::temp_dir().join(format!("redq-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| cfg_err(format!("{}: {e}", dir.display())))?;
        let dir = TempDir(dir);
        let mut extra = vec!["--maxmemory-policy".into(), "noeviction".into()];
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
        };
        let server = tokio::task::spawn_blocking(move || RedisProcess::start(&opts, None))
            .await
            .map_err(cfg_err)?
            .map_err(cfg_err)?;
        let url = format!("redis://127.0.0.1:{}", server.port());
        // The bench's own connection to its own server, for FLUSHALL and
        // INFO (the store's shared connection is the library's alone).
        let con = redis::Client::open(url.as_str())
            .map_err(cfg_err)?
            .get_connection_manager()
            .await
            .map_err(|e| cfg_err(format!("the private redis-server did not come up: {e}")))?;
        Ok(Private {
            server,
            _dir: dir,
            url,
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

//! The benchmark's private `redis-server`: a free port on 127.0.0.1, no
//! persistence, a temporary directory, killed when dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use redis::aio::ConnectionManager;

use redq::error::{Error, Result};
use redq::store::Store;

pub struct Private {
    child: Child,
    dir: PathBuf,
    pub url: String,
    con: ConnectionManager,
}

impl Drop for Private {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn cfg_err(e: impl std::fmt::Display) -> Error {
    Error::Config(format!("bench: {e}"))
}

impl Private {
    pub async fn start() -> Result<Private> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| cfg_err(format!("no free port: {e}")))?
            .port();
        let dir = std::env::temp_dir().join(format!("redq-bench-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| cfg_err(format!("{}: {e}", dir.display())))?;
        let child = Command::new(
            std::env::var("REDQ_BENCH_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into()),
        )
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .args(["--maxmemory-policy", "noeviction"])
        // Extra server settings for experiments, e.g. "hash-max-listpack-entries 0".
        .args(
            std::env::var("REDQ_BENCH_REDIS_ARGS")
                .unwrap_or_default()
                .split_whitespace()
                .enumerate()
                .map(|(i, a)| {
                    if i % 2 == 0 {
                        format!("--{a}")
                    } else {
                        a.to_owned()
                    }
                }),
        )
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| cfg_err(format!("cannot start redis-server (is it installed?): {e}")))?;
        let url = format!("redis://127.0.0.1:{port}");
        let mut last = String::new();
        for _ in 0..200 {
            match Store::connect(&url, "redq").await {
                Ok(store) => {
                    let mut con = store.connection();
                    if redis::cmd("PING")
                        .query_async::<String>(&mut con)
                        .await
                        .is_ok()
                    {
                        return Ok(Private {
                            child,
                            dir,
                            url,
                            con,
                        });
                    }
                }
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let mut srv = child;
        let _ = srv.kill();
        Err(cfg_err(format!(
            "the private redis-server did not come up: {last}"
        )))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
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

//! A private `redis-server` per test: a free port on 127.0.0.1, a temp dir,
//! no persistence unless asked, killed on drop. Never the Redis on 6379.
//!
//! Started by `src/bench/redis_server.rs`, the one private-server starter
//! (the bench uses it too): start-up waits with a bounded time-out, and only
//! a server that reports our child's pid counts, since another test's server
//! may hold a port we found free a moment before.
//!
//! The server is `redis-server` on PATH, or the program
//! `REDQ_TEST_REDIS_SERVER` names (a Valkey or another Redis build: the
//! compatibility runs in `.ci/run`). Its tools, `redis-cli` and
//! `redis-check-aof`, come from the same build: the one beside that program
//! (`valkey-server` → `valkey-cli`), else the one on PATH.

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

// The private-server starter `redq bench` uses too: one implementation.
#[path = "../../src/bench/redis_server.rs"]
mod redis_server;

use redis_server::{Options, RedisProcess};

pub struct RedisServer {
    process: Option<RedisProcess>,
    pub port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
    /// A config file given first (a sentinel's: [`RedisServer::start_sentinel`]).
    config: Option<PathBuf>,
}

/// The server program the tests start: `REDQ_TEST_REDIS_SERVER`, else
/// `redis-server` on PATH.
pub fn server_program() -> OsString {
    std::env::var_os("REDQ_TEST_REDIS_SERVER")
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "redis-server".into())
}

/// A tool of the server's build, named as `redis-server` names it ("cli",
/// "check-aof"): `<name>-<tool>` beside a server program `<name>-server`
/// given by path (`/opt/valkey/bin/valkey-server` → `valkey-cli` there),
/// else `redis-<tool>` on PATH. The path is not resolved: Valkey's and
/// Redis's servers are symlinks that act by the name they are called by.
pub fn server_tool(tool: &str) -> OsString {
    let program = PathBuf::from(server_program());
    let beside = program
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .and_then(|dir| {
            let name = program.file_name()?.to_str()?.strip_suffix("-server")?;
            Some(dir.join(format!("{name}-{tool}")))
        });
    match beside {
        Some(path) if path.exists() => path.into(),
        _ => format!("redis-{tool}").into(),
    }
}

/// A port on 127.0.0.1 that nothing listened on a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

impl RedisServer {
    /// Starts a fresh server with no persistence.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// Starts a fresh server with extra `redis-server` arguments (e.g. `--maxmemory`).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = RedisServer {
            process: None,
            port: 0,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            config: None,
        };
        server.spawn(None);
        server
    }

    /// Starts a sentinel (`redis-server <file> --sentinel`): `config` is
    /// written to a file in the server's directory, which the sentinel
    /// rewrites as it learns the topology.
    pub fn start_sentinel(config: &str) -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("sentinel.conf");
        std::fs::write(&file, config).expect("write sentinel.conf");
        let mut server = RedisServer {
            process: None,
            port: 0,
            dir,
            extra: vec!["--sentinel".into()],
            config: Some(file),
        };
        server.spawn(None);
        server
    }

    fn options(&self) -> Options {
        Options {
            program: server_program(),
            dir: self.dir.path().to_path_buf(),
            logfile: Some(self.log_path()),
            extra: self.extra.iter().map(Into::into).collect(),
            config: self.config.clone(),
        }
    }

    /// Starts the server (on `port`, or a free one), or panics saying why.
    fn spawn(&mut self, port: Option<u16>) {
        match RedisProcess::start(&self.options(), port) {
            Ok(p) => {
                self.port = p.port();
                self.process = Some(p);
            }
            Err(e) => panic!("{e}; see {}", self.log_path().display()),
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs `redis-cli` against this server (a foreign producer); returns stdout.
    pub fn cli(&self, args: &[&str]) -> std::io::Result<String> {
        let out = self.cli_command().args(args).output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `redis-cli` of the server's build ([`server_tool`]), pointed at this
    /// server; the caller adds arguments or feeds it commands on stdin.
    pub fn cli_command(&self) -> Command {
        let mut cmd = Command::new(server_tool("cli"));
        cmd.args(["-p", &self.port.to_string()]);
        cmd
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        self.process = None;
    }

    /// Starts the server again on the same port and directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn(Some(self.port));
    }

    /// Whether the server runs (it was not killed).
    pub fn running(&self) -> bool {
        self.process.is_some()
    }

    /// Starts the (killed) server again on its port and directory with
    /// `extra` arguments in place of those it had.
    pub fn restart_with(&mut self, extra: &[&str]) {
        self.kill();
        self.extra = extra.iter().map(|s| s.to_string()).collect();
        self.spawn(Some(self.port));
    }

    pub async fn client(&self) -> redq::Client {
        redq::Client::connect(&self.url(), "redq")
            .await
            .expect("connect")
    }

    pub async fn con(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// `INFO <section>`, as field → value.
    pub async fn info(&self, section: &str) -> HashMap<String, String> {
        let text: String = redis::cmd("INFO")
            .arg(section)
            .query_async(&mut self.con().await)
            .await
            .unwrap();
        text.lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
            .collect()
    }

    /// How many times `command` (lower case, as `INFO commandstats` names
    /// it: "fcall", "evalsha") has run since start or `CONFIG RESETSTAT`.
    pub async fn command_calls(&self, command: &str) -> u64 {
        let stats = self.info("commandstats").await;
        stats
            .get(&format!("cmdstat_{command}"))
            .and_then(|v| v.strip_prefix("calls=")?.split(',').next())
            .map_or(0, |n| n.parse().unwrap())
    }

    /// Script calls of every kind (FCALL, EVALSHA and EVAL) so far.
    pub async fn script_calls(&self) -> u64 {
        let stats = self.info("commandstats").await;
        ["cmdstat_fcall", "cmdstat_evalsha", "cmdstat_eval"]
            .iter()
            .filter_map(|k| stats.get(*k)?.strip_prefix("calls=")?.split(',').next())
            .map(|n| n.parse::<u64>().unwrap())
            .sum()
    }
}

/// Redis's clock (`TIME`), in Unix ms.
pub async fn redis_ms(con: &mut redis::aio::MultiplexedConnection) -> i64 {
    let (s, us): (i64, i64) = redis::cmd("TIME").query_async(con).await.unwrap();
    s * 1000 + us / 1000
}

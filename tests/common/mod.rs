//! Test harness: a private `redis-server` per test, on a free port, in a temp
//! dir, killed on drop; plus helpers to snapshot a queue's whole state.
//!
//! Never touches the Redis on 6379. Tests wait on events (a port accepting
//! PING, a process exiting) with bounded time-outs, never fixed sleeps.
#![allow(dead_code)]

pub mod daemon;
pub mod embedded;
pub mod proxy;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redq::keys::QueueKeys;

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

fn free_port() -> u16 {
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
            child: None,
            port: 0,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        // A port found free can be taken before redis binds it: try a few.
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn() {
                return server;
            }
        }
        panic!(
            "redis-server did not start; see {}",
            server.log_path().display()
        );
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log_path())
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed (apt-get install redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                return false; // exited: port taken or bad argument
            }
            if self
                .cli(&["PING"])
                .map(|o| o.trim() == "PONG")
                .unwrap_or(false)
            {
                // Another test's server may hold the port while ours fails to
                // bind it and exits: only our own server counts.
                if self.answers_as_child() {
                    return true;
                }
                self.kill();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// True when the server on our port is the process we started.
    fn answers_as_child(&self) -> bool {
        let Some(pid) = self
            .child
            .as_ref()
            .map(|c| format!("process_id:{}", c.id()))
        else {
            return false;
        };
        self.cli(&["INFO", "server"])
            .map(|o| o.lines().any(|l| l.trim() == pid))
            .unwrap_or(false)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs `redis-cli` against this server (a foreign producer); returns stdout.
    pub fn cli(&self, args: &[&str]) -> std::io::Result<String> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port and directory.
    pub fn restart(&mut self) {
        self.kill();
        assert!(
            self.spawn(),
            "redis-server did not restart; see {}",
            self.log_path().display()
        );
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

    /// How many times `command` (lower case, as `INFO commandstats` names
    /// it: "fcall", "evalsha") has run since start or `CONFIG RESETSTAT`.
    pub async fn command_calls(&self, command: &str) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut self.con().await)
            .await
            .unwrap();
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse().unwrap())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Every key of a queue, read whole, for "nothing changed" assertions.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Snapshot {
    pub sets: BTreeMap<String, Vec<(String, f64)>>,
    pub hashes: BTreeMap<String, BTreeMap<String, String>>,
    pub lists: BTreeMap<String, Vec<String>>,
}

impl Snapshot {
    pub fn zset(&self, part: &str) -> Vec<String> {
        self.sets[part].iter().map(|(m, _)| m.clone()).collect()
    }

    /// The pending ids, in the order claims take them.
    pub fn pending_ids(&self) -> Vec<String> {
        self.lists["pending ids"].clone()
    }
}

/// The pending ids, in the order claims take them (highest priority
/// first, each priority's list head first).
pub async fn pending_ids(
    con: &mut redis::aio::MultiplexedConnection,
    q: &QueueKeys,
) -> Vec<String> {
    let levels: Vec<String> = redis::cmd("ZRANGE")
        .arg(q.pending())
        .arg(0)
        .arg(-1)
        .query_async(con)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for level in levels {
        let part: Vec<String> = redis::cmd("LRANGE")
            .arg(q.pending_list(&level))
            .arg(0)
            .arg(-1)
            .query_async(con)
            .await
            .unwrap();
        assert!(
            !part.is_empty(),
            "priority {level} is in `pending` with an empty list"
        );
        ids.extend(part);
    }
    ids
}

pub async fn snapshot(con: &mut redis::aio::MultiplexedConnection, q: &QueueKeys) -> Snapshot {
    let mut s = Snapshot::default();
    for (part, key) in redq::keys::PARTS.iter().zip(q.all()) {
        let kind: String = redis::cmd("TYPE").arg(key).query_async(con).await.unwrap();
        match (kind.as_str(), *part) {
            (
                _,
                "pending" | "scheduled" | "active" | "dead" | "done" | "claims" | "parked"
                | "tenant_parked" | "tenant_due",
            ) => {
                let v: Vec<(String, f64)> = redis::cmd("ZRANGE")
                    .arg(key)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES")
                    .query_async(con)
                    .await
                    .unwrap();
                s.sets.insert(part.to_string(), v);
            }
            (_, "events") => {
                // A stream: each entry as "<id> <field>=<value> ...".
                let v: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
                    .arg(key)
                    .arg("-")
                    .arg("+")
                    .query_async(con)
                    .await
                    .unwrap();
                let entries = v
                    .into_iter()
                    .map(|(id, kv)| {
                        let fields: Vec<String> = kv.chunks(2).map(|c| c.join("=")).collect();
                        format!("{id} {}", fields.join(" "))
                    })
                    .collect();
                s.lists.insert(part.to_string(), entries);
            }
            (_, "inbox" | "rejected" | "wake") => {
                let v: Vec<String> = redis::cmd("LRANGE")
                    .arg(key)
                    .arg(0)
                    .arg(-1)
                    .query_async(con)
                    .await
                    .unwrap();
                s.lists.insert(part.to_string(), v);
            }
            _ => {
                let v: BTreeMap<String, String> = redis::cmd("HGETALL")
                    .arg(key)
                    .query_async(con)
                    .await
                    .unwrap();
                s.hashes.insert(part.to_string(), v);
            }
        }
    }
    s.lists
        .insert("pending ids".into(), pending_ids(con, q).await);
    s
}

/// Runs a future with a bound, so a hang fails the test instead of stalling CI.
pub async fn within<T>(secs: u64, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .expect("timed out")
}

//! A private `redis-server`: a free port of 127.0.0.1, a directory the caller
//! gives, no persistence; killed (SIGKILL) and reaped when dropped. Never the
//! Redis on 6379.
//!
//! The one implementation for every throw-away server: `redq bench` starts
//! its server with it ([`super::server`]), and the file is written so the
//! test harness can include it as it is (`#[path]` from `tests/common`): it
//! uses std and the `redis` crate only, no path of this crate, and blocks
//! (the bench calls it on a blocking thread).
//!
//! A server counts as up only when the process answering on its port is the
//! one started here (`INFO server`'s `process_id`): a port found free can be
//! taken by another server before ours binds it, and ours then exits while
//! the other answers. Any failure after the spawn is retried on a new port;
//! a program that cannot be spawned is not.

use std::ffi::OsString;
use std::io;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a started server has to answer.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Free ports tried before [`RedisProcess::start`] gives up.
const PORT_TRIES: usize = 5;

/// How to start the server.
#[derive(Debug, Clone)]
pub struct Options {
    /// `redis-server`, another build, or a wrapper that `exec`s one (the
    /// process started must be the one that answers).
    pub program: OsString,
    /// Its working directory (`--dir`); the caller makes it and removes it.
    pub dir: PathBuf,
    /// Where the server logs. Without one, its log is dropped and its stderr
    /// (a wrapper's, valgrind's) passes through.
    pub logfile: Option<PathBuf>,
    /// More `redis-server` arguments (`--maxmemory 1mb`); they come last, so
    /// they win over the defaults above.
    pub extra: Vec<OsString>,
    /// A configuration file, passed first (where `redis-server` wants it).
    /// A sentinel (`--sentinel` in `extra`) needs one it may rewrite: it
    /// records what it learns there (other sentinels, replicas, failovers).
    pub config: Option<PathBuf>,
}

/// A running server of ours.
pub struct RedisProcess {
    child: Child,
    port: u16,
}

impl RedisProcess {
    /// Starts a server on `port`, or with `None` on a free port, trying a
    /// few. A port given (a restart on the same port and directory) is tried
    /// once.
    pub fn start(opts: &Options, port: Option<u16>) -> io::Result<RedisProcess> {
        let tries = if port.is_some() { 1 } else { PORT_TRIES };
        let mut why = String::new();
        for _ in 0..tries {
            let port = match port {
                Some(p) => p,
                None => free_port()?,
            };
            match RedisProcess::spawn(opts, port)?.until_up() {
                Ok(server) => return Ok(server),
                Err(e) => why = e,
            }
        }
        Err(io::Error::other(format!(
            "redis-server did not start (tried {tries} port(s)); the last time {why}"
        )))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn spawn(opts: &Options, port: u16) -> io::Result<RedisProcess> {
        let mut cmd = Command::new(&opts.program);
        if let Some(config) = &opts.config {
            cmd.arg(config);
        }
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&opts.dir);
        if let Some(log) = &opts.logfile {
            cmd.arg("--logfile").arg(log);
        }
        cmd.args(&opts.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(match opts.logfile {
                Some(_) => Stdio::null(),
                None => Stdio::inherit(),
            });
        let child = cmd.spawn().map_err(|e| {
            let program = opts.program.to_string_lossy();
            io::Error::new(
                e.kind(),
                format!("cannot start {program} (is it installed?): {e}"),
            )
        })?;
        Ok(RedisProcess { child, port })
    }

    /// Waits until the server answers as our child; on failure it is killed
    /// (dropped) and the reason returned.
    fn until_up(mut self) -> Result<RedisProcess, String> {
        let port = self.port;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.child.try_wait() {
                Ok(None) => {}
                Ok(Some(status)) => {
                    return Err(format!(
                        "it exited ({status}) on port {port}: the port was taken, or an argument is bad"
                    ))
                }
                Err(e) => return Err(format!("cannot watch it: {e}")),
            }
            match answering_pid(port) {
                Some(pid) if pid == self.child.id() => return Ok(self),
                Some(pid) => {
                    return Err(format!(
                        "port {port} is answered by another server (pid {pid})"
                    ))
                }
                None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                None => {
                    return Err(format!(
                        "it did not answer on port {port} within {START_TIMEOUT:?}"
                    ))
                }
            }
        }
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The process id of the server answering on `port`, if one answers.
fn answering_pid(port: u16) -> Option<u32> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let mut con = client
        .get_connection_with_timeout(Duration::from_millis(500))
        .ok()?;
    con.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    let info: String = redis::cmd("INFO").arg("server").query(&mut con).ok()?;
    info.lines()
        .find_map(|l| l.trim().strip_prefix("process_id:"))?
        .parse()
        .ok()
}

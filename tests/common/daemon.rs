//! Launching the real `redq` binary as a daemon process, and the helpers
//! the process-level tests share: bounded polling, `redis-cli` producers,
//! handler scripts, config files, pid checks.
//!
//! Nothing here sleeps to synchronise: every wait polls a condition in a
//! bounded loop, and a time-out fails the test saying what it waited for (a
//! failing test prints the daemon's log).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::RedisServer;

/// Interval of every polling loop.
pub const TICK: Duration = Duration::from_millis(25);
/// Lease settings of every test queue: a dead daemon's jobs come back within ~1s.
pub const FAST_LEASE: &str = "lease = \"1s\"\nlease_renew = \"200ms\"\n";

/// Polls `probe` every [`TICK`] until it returns `Some`, for at most `limit`.
pub fn poll<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(TICK);
    }
}

/// Like [`poll`], failing the test with `what` on time-out.
pub fn wait_for<T>(what: &str, limit: Duration, probe: impl FnMut() -> Option<T>) -> T {
    poll(limit, probe).unwrap_or_else(|| panic!("timed out after {limit:?} waiting for {what}"))
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

/// The `redq` binary with no `REDQ_…` variable inherited from the test's
/// environment, run from the temp dir (so no stray `workers.toml` is read).
pub fn redq() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_redq"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("REDQ_") {
            c.env_remove(name);
        }
    }
    c.current_dir(std::env::temp_dir());
    c
}

pub struct Out {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to its end, killing it (and failing) past `limit`.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Out {
    let (mut out, mut err) = (tempfile::tempfile().unwrap(), tempfile::tempfile().unwrap());
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(err.try_clone().unwrap())
        .spawn()
        .expect("spawn");
    let status = poll(limit, || child.try_wait().unwrap());
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{cmd:?} did not exit within {limit:?}");
    };
    let read = |f: &mut File| {
        let mut s = String::new();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.read_to_string(&mut s).unwrap();
        s
    };
    Out {
        code: status.code(),
        stdout: read(&mut out),
        stderr: read(&mut err),
    }
}

/// `redq job <queue> <id> --json`; `None` when the job is unknown.
pub fn job(url: &str, queue: &str, id: &str) -> Option<Value> {
    let o = run_bounded(
        redq().args(["--redis-url", url, "job", queue, id, "--json"]),
        secs(10),
    );
    match o.code {
        Some(0) => Some(serde_json::from_str(&o.stdout).expect("redq job --json prints JSON")),
        Some(1) => None,
        _ => panic!("redq job failed: {:?}\n{}", o.code, o.stderr),
    }
}

/// Waits until the job is in one of `states`; returns it.
pub fn wait_state(url: &str, queue: &str, id: &str, states: &[&str], limit: Duration) -> Value {
    let mut last = None;
    let found = poll(limit, || {
        let j = job(url, queue, id);
        let done = j
            .as_ref()
            .is_some_and(|j| states.contains(&j["state"].as_str().unwrap_or("")));
        last = j.clone();
        done.then_some(j).flatten()
    });
    found.unwrap_or_else(|| {
        panic!("job {queue}/{id} did not reach {states:?} within {limit:?}; last seen: {last:#?}")
    })
}

/// `redq stats <queue> --json`, the one queue's row.
pub fn stats(url: &str, queue: &str) -> Value {
    let o = run_bounded(
        redq().args(["--redis-url", url, "stats", queue, "--json"]),
        secs(10),
    );
    assert_eq!(o.code, Some(0), "redq stats: {}", o.stderr);
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    v[0].clone()
}

/// `FCALL redq_enqueue` through `redis-cli`; returns the job id.
pub fn fcall(redis: &RedisServer, queue: &str, doc: &str) -> String {
    let key = format!("redq:{{{queue}}}");
    let out = redis
        .cli(&["FCALL", "redq_enqueue", "1", &key, doc])
        .unwrap();
    let id = out.trim().to_owned();
    assert!(
        !id.is_empty() && !id.contains(' '),
        "FCALL redq_enqueue refused {doc}: {out}"
    );
    id
}

/// `LPUSH` of a document onto the queue's inbox through `redis-cli`.
pub fn lpush(redis: &RedisServer, queue: &str, doc: &str) {
    let key = format!("redq:{{{queue}}}:inbox");
    let out = redis.cli(&["LPUSH", &key, doc]).unwrap();
    assert!(out.trim().parse::<u64>().is_ok(), "LPUSH failed: {out}");
}

/// Writes an executable `/bin/sh` script.
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A TOML basic string.
pub fn toml_str(s: impl AsRef<str>) -> String {
    format!("{:?}", s.as_ref())
}

/// `handler = { command = [script, args…], env = { OUT = dir }, … }`.
pub fn command_handler(script: &Path, args: &[&str], out: &Path, extra: &str) -> String {
    let argv: Vec<String> = std::iter::once(script.display().to_string())
        .chain(args.iter().map(|a| a.to_string()))
        .map(toml_str)
        .collect();
    format!(
        "{{ command = [{}], env = {{ OUT = {} }}{extra} }}",
        argv.join(", "),
        toml_str(out.display().to_string())
    )
}

/// A whole `workers.toml`: Redis, fast daemon intervals, JSON logs, `queues`.
pub fn config(url: &str, shutdown_timeout: &str, queues: &str) -> String {
    format!(
        "[redis]\nurl = {}\n\n[daemon]\nshutdown_timeout = {}\nreap_interval = \"100ms\"\n\
         inbox_poll = \"100ms\"\nlog_format = \"json\"\nlog_level = \"info\"\n\n{queues}",
        toml_str(url),
        toml_str(shutdown_timeout)
    )
}

/// Replaces a file in one step, so a reload never reads half of it.
pub fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text).unwrap();
    fs::rename(&tmp, path).unwrap();
}

/// A pid written by a handler script (`None` until the write is complete).
pub fn read_pids(path: &Path) -> Option<Vec<i32>> {
    let text = fs::read_to_string(path).ok()?;
    if !text.ends_with('\n') {
        return None;
    }
    text.split_whitespace().map(|p| p.parse().ok()).collect()
}

/// Whether `pid` is a live process (a zombie counts as dead).
pub fn alive(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

pub fn wait_dead(pid: i32, what: &str) {
    wait_for(&format!("{what} (pid {pid}) to die"), secs(5), || {
        (!alive(pid)).then_some(())
    });
}

/// Kills leftover `sleep` processes a handler started, if the daemon failed
/// to, so a failing test leaks nothing.
pub struct Reap(pub Vec<i32>);

impl Drop for Reap {
    fn drop(&mut self) {
        for &pid in &self.0 {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if alive(pid) && cmdline.starts_with(b"sleep") {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// A `redq run` process; its stderr (the log) goes to a file.
pub struct Daemon {
    /// `daemon.listen`: where `/metrics`, `/healthz` and `/readyz` are served.
    pub listen: String,
    child: Child,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl Daemon {
    /// Starts `redq --config <config> run` with `env` added to a clean
    /// environment and waits for "redq daemon ready" in its log. Each daemon
    /// gets its own `daemon.listen` port.
    pub fn start(config: &Path, log: &Path, env: &[(&str, &str)]) -> Daemon {
        let mut d = Daemon::spawn(config, log, env);
        d.wait_log("redq daemon ready", 1, secs(15));
        d
    }

    pub fn spawn(config: &Path, log: &Path, env: &[(&str, &str)]) -> Daemon {
        let listen = format!("127.0.0.1:{}", free_port());
        let child = redq()
            .arg("--config")
            .arg(config)
            .arg("run")
            .env("REDQ_DAEMON__LISTEN", &listen)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(log).unwrap())
            .spawn()
            .expect("spawn redq run");
        Daemon {
            listen,
            child,
            log: log.to_owned(),
            status: None,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether it has exited (reaping it if so).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().unwrap();
        }
        self.status
    }

    /// Waits until `needle` appears `count` times in the log.
    pub fn wait_log(&mut self, needle: &str, count: usize, limit: Duration) {
        let found = poll(limit, || {
            if self.log().matches(needle).count() >= count {
                return Some(true);
            }
            self.exited().map(|_| false)
        });
        match found {
            Some(true) => {}
            Some(false) => panic!(
                "redq exited ({:?}) before logging {needle:?}:\n{}",
                self.status,
                self.log()
            ),
            None => panic!("no {needle:?} (×{count}) in the log within {limit:?}"),
        }
    }

    pub fn signal(&mut self, sig: i32) {
        assert!(self.exited().is_none(), "redq exited: {:?}", self.status);
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0, "kill({sig})");
    }

    /// Waits for the exit; returns the status and how long it took.
    pub fn wait_exit(&mut self, limit: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        let status = wait_for("redq to exit", limit, || self.exited());
        (status, started.elapsed())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- log of redq {}:\n{}", self.log.display(), self.log());
        }
    }
}

/// The `KEY=value` lines `env` printed.
pub fn parse_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// `GET path` from `addr` over plain HTTP/1.0: the status and the body
/// (`None` when nothing answers).
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// The value of an unlabelled sample in a Prometheus text body.
pub fn sample(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

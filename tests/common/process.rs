//! The real `redq` binary as a process: one-shot commands run to their end
//! under a bound ([`run_bounded`]), the CLI's views of a job and a queue, a
//! `redq run` daemon ([`Daemon`]), and the pids of the processes its
//! handlers start.
//!
//! Every wait is bounded and fails the test saying what it waited for; a
//! failing test prints the daemon's log.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::server::free_port;
use super::wait::{poll, secs, wait_for};

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

/// How a command ended and what it printed.
#[derive(Debug)]
pub struct Out {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to its end with nothing on stdin, killing it (and failing)
/// past `limit`.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Out {
    run_with_input(cmd, None, limit)
}

/// Like [`run_bounded`], with `input` (if any) on stdin.
pub fn run_with_input(cmd: &mut Command, input: Option<&[u8]>, limit: Duration) -> Out {
    let (mut out, mut err) = (tempfile::tempfile().unwrap(), tempfile::tempfile().unwrap());
    let stdin = if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    let mut child = cmd
        .stdin(stdin)
        .stdout(out.try_clone().unwrap())
        .stderr(err.try_clone().unwrap())
        .spawn()
        .expect("spawn");
    if let (Some(input), Some(mut pipe)) = (input, child.stdin.take()) {
        // Output goes to files, so the child never blocks us while we write;
        // dropping the pipe closes its stdin.
        let _ = pipe.write_all(input);
    }
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

/// [`run_bounded`] on a blocking thread, so an async test's runtime (and a
/// daemon on it) goes on meanwhile.
pub async fn run_async(mut cmd: Command, limit: Duration) -> Out {
    tokio::task::spawn_blocking(move || run_bounded(&mut cmd, limit))
        .await
        .expect("the command's thread")
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
    wait_for(
        &format!("job {queue}/{id} to reach {states:?}"),
        limit,
        || match job(url, queue, id) {
            Some(j) if states.contains(&j["state"].as_str().unwrap_or("")) => Ok(j),
            seen => Err(format!("{seen:#?}")),
        },
    )
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

/// The pids a handler script wrote, whitespace-separated (`None` until the
/// write is complete: the line ends).
pub fn read_pids(path: &Path) -> Option<Vec<i32>> {
    let text = fs::read_to_string(path).ok()?;
    if !text.ends_with('\n') {
        return None;
    }
    text.split_whitespace().map(|p| p.parse().ok()).collect()
}

/// Whether `pid` is a live process (a zombie counts as dead: the
/// container's init may not reap orphans).
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
        !alive(pid)
    });
}

/// `(comm, ppid)` of a process, from `/proc/<pid>/stat`.
pub fn comm_and_parent(pid: i32) -> Option<(String, i32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_owned();
    let ppid = rest.split_whitespace().nth(1)?.parse().ok()?;
    Some((comm, ppid))
}

/// The live child of `daemon` named `redq-guard` (its process guard), if
/// there is one. A daemon forks its guard at its first spawn, just after
/// the program started: a test that kills the daemon as soon as a handler
/// shows it runs must first wait for the guard, or the first job's group
/// may not be under it yet (see src/handler/guard.rs, "Limits").
pub fn guard_of(daemon: i32) -> Option<i32> {
    fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .find(|&pid| {
            alive(pid)
                && comm_and_parent(pid)
                    .is_some_and(|(comm, ppid)| comm == "redq-guard" && ppid == daemon)
        })
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

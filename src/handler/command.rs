//! Command handler: runs an external program for each job.
//!
//! Contract with the program (docs/operating.md, "Handlers", repeats it for handler authors):
//! - `argv` runs directly, without a shell; the payload never appears on the command line.
//! - stdin: the job's payload exactly as the producer sent it (JSON text), then EOF.
//!   A program that never reads stdin is fine.
//! - Environment: only `PATH`, the names in `env_allow` (copied from redq's own
//!   environment), the configured `env`, and `REDQ_JOB_ID`, `REDQ_QUEUE`,
//!   `REDQ_ATTEMPT`, `REDQ_TENANT` (empty if none), `REDQ_FENCE`. Nothing else, so
//!   redq's secrets (such as `REDQ_REDIS__URL`) never reach the program.
//! - Exit 0: success; stdout (capped at `max_output_bytes`) is the job's result.
//! - Exit 75 ([`EXIT_RETRY`], EX_TEMPFAIL): "retry later" with the queue's backoff.
//! - Exit 65 ([`EXIT_NO_RETRY`], EX_DATAERR): "never retry"; the job goes to the dead set.
//! - Any other exit, or death by a signal: the attempt fails and is retried while
//!   attempts remain. stderr (capped) becomes the error text.
//! - Time-out or cancellation: the program's process group gets SIGTERM, then SIGKILL
//!   after `kill_grace`. When the program exits, whatever it left running in its
//!   process group is killed too: a job's processes never outlive it.
//! - Nor do they outlive the daemon: if it dies, even by SIGKILL, the process guard
//!   (`handler/guard.rs`) kills every process group it started, grandchildren included.
//! - Usage: `REDQ_USAGE_FILE` names an empty file made for this attempt. The program
//!   may write a JSON object of numbers to it (`{"tokens": 812, "cost_usd": 0.0031}`);
//!   redq reads it once the program has ended and deletes it. A file that is not such
//!   an object, or is larger than [`MAX_USAGE_FILE_BYTES`], is ignored with a warning
//!   (entries that are not numbers are dropped one by one); it never fails the job.
//!
//! Programs start by posix_spawn, not a fork of the daemon (no `pre_exec` hook; no shell
//! is tried for a script without its `#!` line), and a bare `argv[0]` is found here in
//! the program's `PATH`, since std forks to search a `PATH` set for the child.
//!
//! The child is reaped here, by `wait4` on a blocking thread, which also yields its
//! resource usage. The group is only ever signalled (or unregistered from the guard)
//! while the child is unreaped, so its id cannot have been reused by another process.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio_util::sync::CancellationToken;

use super::{guard, Handler, JobContext, Outcome, Resources, RunReport, Usage};

/// Exit code meaning "this attempt failed, retry later" (EX_TEMPFAIL).
pub const EXIT_RETRY: i32 = 75;
/// Exit code meaning "fail for good, never retry" (EX_DATAERR).
pub const EXIT_NO_RETRY: i32 = 65;
/// Default cap on the stdout and stderr kept from one run.
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 64 * 1024;
/// Default wait between SIGTERM and SIGKILL.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(5);
/// Largest usage file read; a larger one is ignored with a warning.
pub const MAX_USAGE_FILE_BYTES: u64 = 64 * 1024;
/// `PATH` given to programs when redq itself has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// How long output may still arrive once the program and its group are gone: only a
/// process that left the group (setsid) can keep the pipes open that long.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(1);

/// How to run a command handler; built from `workers.toml`.
#[derive(Clone)]
pub struct CommandSpec {
    /// The program and its arguments; `argv[0]` is an absolute path or a name in `PATH`.
    pub argv: Vec<String>,
    /// Extra environment variables set for the program.
    pub env: BTreeMap<String, String>,
    /// Names of variables copied from redq's own environment when set there.
    pub env_allow: Vec<String>,
    /// Wait between SIGTERM and SIGKILL on time-out or cancellation.
    pub kill_grace: Duration,
    /// Cap (bytes) on the stdout and on the stderr kept; the rest is read and dropped.
    pub max_output_bytes: usize,
    /// Working directory of the program; redq's own if `None`.
    pub cwd: Option<PathBuf>,
}

impl Default for CommandSpec {
    fn default() -> Self {
        CommandSpec {
            argv: Vec::new(),
            env: BTreeMap::new(),
            env_allow: Vec::new(),
            kill_grace: DEFAULT_KILL_GRACE,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            cwd: None,
        }
    }
}

/// Shows variable names only: `env` values may be secrets.
impl std::fmt::Debug for CommandSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandSpec")
            .field("argv", &self.argv)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("env_allow", &self.env_allow)
            .field("kill_grace", &self.kill_grace)
            .field("max_output_bytes", &self.max_output_bytes)
            .field("cwd", &self.cwd)
            .finish()
    }
}

/// One run of the program: its outcome and what it cost.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandRun {
    pub outcome: Outcome,
    pub wall: Duration,
    pub user_cpu: Duration,
    pub sys_cpu: Duration,
    pub max_rss_kib: u64,
    /// Exit code if the program exited; `None` if killed by a signal or never started.
    pub exit_code: Option<i32>,
    /// The signal that killed the program, if one did.
    pub signal: Option<i32>,
    /// Bytes the program wrote to stdout / stderr, including those dropped by the cap.
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    /// What the program wrote to `REDQ_USAGE_FILE` (numbers only).
    pub usage: Usage,
}

impl CommandRun {
    /// The resources part of this run, as kept on the job.
    pub fn resources(&self) -> Resources {
        Resources {
            wall_seconds: self.wall.as_secs_f64(),
            user_cpu_seconds: self.user_cpu.as_secs_f64(),
            sys_cpu_seconds: self.sys_cpu.as_secs_f64(),
            max_rss_kib: self.max_rss_kib,
            exit_code: self.exit_code,
            signal: self.signal,
            stdout_bytes: self.stdout_bytes,
            stderr_bytes: self.stderr_bytes,
        }
    }

    fn not_started(started: Instant, error: String) -> CommandRun {
        CommandRun {
            outcome: Outcome::Fail { error },
            wall: started.elapsed(),
            user_cpu: Duration::ZERO,
            sys_cpu: Duration::ZERO,
            max_rss_kib: 0,
            exit_code: None,
            signal: None,
            stdout_bytes: 0,
            stderr_bytes: 0,
            usage: Usage::new(),
        }
    }
}

/// Runs an external program per job; see the module docs for the contract.
#[derive(Debug, Clone)]
pub struct CommandHandler {
    spec: CommandSpec,
}

/// Why the program was stopped before it exited by itself.
enum Stop {
    Timeout(Duration),
    Cancel,
}

/// What the blocking reaper returns: the wait status and the child's resource usage.
type Reaped = io::Result<(libc::c_int, libc::rusage)>;

impl CommandHandler {
    pub fn new(spec: CommandSpec) -> CommandHandler {
        CommandHandler { spec }
    }

    /// Runs the program once for `ctx` and reports how it went.
    pub async fn run(&self, ctx: JobContext) -> CommandRun {
        let started = Instant::now();
        let usage_file = match UsageFile::create() {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::warn!(error = %e, "cannot create the usage file; REDQ_USAGE_FILE is not set for this attempt");
                None
            }
        };
        let usage_path = usage_file.as_ref().map(|f| f.path.as_path());
        let mut child = match self
            .command(&ctx, usage_path)
            .and_then(|mut cmd| cmd.spawn())
        {
            Ok(child) => child,
            Err(e) => return CommandRun::not_started(started, self.spawn_error(e)),
        };
        let (pid, reaped) = (child.id() as libc::pid_t, Mutex::new(false));
        guard::register(pid);
        let group = Arc::new(Group { pid, reaped });
        let _kill_on_drop = KillOnDrop(group.clone());
        let (stdin, stdout, stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take());
        drop(child); // std's Child neither waits nor kills on drop: `group` reaps.
        let waiter = tokio::task::spawn_blocking({
            let group = group.clone();
            move || group.wait()
        });
        let payload = ctx.payload;
        let writer = tokio::spawn(async move {
            // EPIPE (a program that does not read stdin) is not an error by itself.
            if let Some(Ok(mut tx)) = stdin.map(|fd| pipe::Sender::from_owned_fd(fd.into())) {
                let _ = tx.write_all(payload.get().as_bytes()).await;
            }
        });
        let (cap, drain_stop) = (self.spec.max_output_bytes, CancellationToken::new());
        let out = tokio::spawn(read_capped(
            stdout.map(OwnedFd::from),
            cap,
            drain_stop.clone(),
        ));
        let err = tokio::spawn(read_capped(
            stderr.map(OwnedFd::from),
            cap,
            drain_stop.clone(),
        ));

        let (stop, reaped) = self.wait(waiter, &group, ctx.timeout, &ctx.cancel).await;
        writer.abort();
        let drained = async { (out.await.unwrap_or_default(), err.await.unwrap_or_default()) };
        tokio::pin!(drained);
        let ((stdout, stdout_bytes), (stderr, stderr_bytes)) = tokio::select! {
            both = &mut drained => both,
            _ = tokio::time::sleep(DRAIN_AFTER_EXIT) => { drain_stop.cancel(); drained.await }
        };
        let (status, usage) = match reaped {
            Ok(reaped) => reaped,
            Err(e) => {
                let error = format!("lost track of `{}`: {e}", self.program());
                return CommandRun::not_started(started, error);
            }
        };
        let exit_code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
        let signal = libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status));
        let stdout = (stdout_bytes > 0).then(|| capped_text(&stdout, stdout_bytes));
        let stderr = capped_text(&stderr, stderr_bytes);
        let reported = usage_file.map(|f| f.read()).unwrap_or_default();
        CommandRun {
            outcome: judge(stop, status, stdout, &stderr),
            wall: started.elapsed(),
            user_cpu: duration_of(usage.ru_utime),
            sys_cpu: duration_of(usage.ru_stime),
            max_rss_kib: max_rss_kib(&usage),
            exit_code,
            signal,
            stdout_bytes,
            stderr_bytes,
            usage: reported,
        }
    }

    /// Waits for the child to end by itself, or stops its group on time-out or
    /// cancellation: SIGTERM, then SIGKILL after the grace.
    async fn wait(
        &self,
        mut waiter: tokio::task::JoinHandle<Reaped>,
        group: &Group,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> (Option<Stop>, Reaped) {
        let early = tokio::select! {
            reaped = &mut waiter => Ok(reaped),
            _ = tokio::time::sleep(timeout) => Err(Stop::Timeout(timeout)),
            _ = cancel.cancelled() => Err(Stop::Cancel),
        };
        let (stop, reaped) = match early {
            Ok(reaped) => (None, reaped),
            Err(stop) => {
                group.signal(libc::SIGTERM);
                match tokio::time::timeout(self.spec.kill_grace, &mut waiter).await {
                    Ok(reaped) => (Some(stop), reaped),
                    Err(_) => {
                        group.signal(libc::SIGKILL);
                        (Some(stop), waiter.await)
                    }
                }
            }
        };
        (
            stop,
            reaped.map_err(io::Error::from).and_then(|reaped| reaped),
        )
    }

    fn program(&self) -> &str {
        self.spec.argv.first().map(String::as_str).unwrap_or("")
    }

    /// The command with its clean environment and own process group.
    fn command(
        &self,
        ctx: &JobContext,
        usage_file: Option<&Path>,
    ) -> io::Result<std::process::Command> {
        let Some((program, args)) = self.spec.argv.split_first() else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "argv is empty"));
        };
        let bad_name = |name: &str| name.is_empty() || name.contains(['=', '\0']);
        if let Some(name) = self
            .spec
            .env
            .keys()
            .chain(&self.spec.env_allow)
            .find(|n| bad_name(n))
        {
            let msg = format!(
                "invalid environment variable name {name:?} (empty, or contains '=' or NUL)"
            );
            return Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
        }
        let path = program_path();
        let found = match program.contains('/') {
            true => PathBuf::from(program),
            false => find_in_path(program, &path)
                .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?,
        };
        let mut cmd = std::process::Command::new(found);
        cmd.arg0(program).args(args).env_clear().env("PATH", path);
        for name in &self.spec.env_allow {
            if let Some(value) = std::env::var_os(name) {
                cmd.env(name, value);
            }
        }
        cmd.envs(&self.spec.env)
            .env("REDQ_JOB_ID", &ctx.id)
            .env("REDQ_QUEUE", &ctx.queue)
            .env("REDQ_ATTEMPT", ctx.attempt.to_string())
            .env("REDQ_TENANT", ctx.tenant.as_deref().unwrap_or(""))
            .env("REDQ_FENCE", ctx.fence.to_string());
        if let Some(path) = usage_file {
            cmd.env("REDQ_USAGE_FILE", path);
        }
        if let Some(dir) = &self.spec.cwd {
            cmd.current_dir(dir);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        Ok(cmd)
    }

    fn spawn_error(&self, e: io::Error) -> String {
        let hint = match e.raw_os_error() {
            Some(libc::ENOENT) => {
                "; check the path in argv[0] (and cwd), or that the program is in PATH"
            }
            Some(libc::EACCES) => {
                "; check that the program is executable (chmod +x) and its directory readable"
            }
            Some(libc::ENOEXEC) => "; a script needs a first line such as `#!/bin/sh`",
            _ => "",
        };
        format!("cannot start program `{}`: {e}{hint}", self.program())
    }
}

#[async_trait]
impl Handler for CommandHandler {
    async fn handle(&self, ctx: JobContext) -> Outcome {
        CommandHandler::run(self, ctx).await.outcome
    }

    async fn run(&self, ctx: JobContext) -> RunReport {
        let run = CommandHandler::run(self, ctx).await;
        let resources = Some(run.resources());
        RunReport {
            outcome: run.outcome,
            usage: run.usage,
            resources,
        }
    }
}

/// The empty file named by `REDQ_USAGE_FILE` for one attempt; deleted on drop.
struct UsageFile {
    path: PathBuf,
}

impl UsageFile {
    /// Creates a fresh, private (0600) file in the temp directory.
    fn create() -> io::Result<UsageFile> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir();
        let mut last = None;
        for _ in 0..8 {
            let name = format!(
                "redq-usage-{}-{}-{:016x}.json",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed),
                rand::random::<u64>()
            );
            let path = dir.join(name);
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(_) => return Ok(UsageFile { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no free usage file name")))
    }

    /// Reads what the program reported; problems are logged and yield no usage.
    /// The file is opened without following symlinks and without blocking (a FIFO
    /// put in its place cannot stall the worker), and must be a regular file.
    fn read(self) -> Usage {
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&self.path);
        let mut file = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Usage::new(),
            Err(e) => {
                tracing::warn!(error = %e, "usage file cannot be opened; usage ignored");
                return Usage::new();
            }
        };
        if !file.metadata().is_ok_and(|m| m.is_file()) {
            tracing::warn!(
                "usage file was replaced by something that is not a regular file; usage ignored"
            );
            return Usage::new();
        }
        let mut text = Vec::new();
        if let Err(e) = (&mut file)
            .take(MAX_USAGE_FILE_BYTES + 1)
            .read_to_end(&mut text)
        {
            tracing::warn!(error = %e, "usage file cannot be read; usage ignored");
            return Usage::new();
        }
        if text.len() as u64 > MAX_USAGE_FILE_BYTES {
            tracing::warn!(
                limit = MAX_USAGE_FILE_BYTES,
                "usage file is larger than the limit; usage ignored"
            );
            return Usage::new();
        }
        parse_usage_file(&text)
    }
}

impl Drop for UsageFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The numbers of a usage file's JSON object. Empty text is no usage; anything
/// but an object is ignored with a warning; so is each entry that is not a number.
pub fn parse_usage_file(text: &[u8]) -> Usage {
    if text.iter().all(u8::is_ascii_whitespace) {
        return Usage::new();
    }
    let doc = match serde_json::from_slice::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(doc)) => doc,
        Ok(_) => {
            tracing::warn!(
                "usage file does not hold a JSON object such as {{\"tokens\": 12}}; usage ignored"
            );
            return Usage::new();
        }
        Err(e) => {
            tracing::warn!(error = %e, "usage file is not valid JSON; usage ignored");
            return Usage::new();
        }
    };
    let mut usage = Usage::new();
    for (name, value) in doc {
        match value.as_f64().filter(|n| n.is_finite()) {
            Some(n) => {
                usage.insert(name, n);
            }
            None => tracing::warn!(name = %name, "usage entry is not a number; it is ignored"),
        }
    }
    usage
}

/// Checks that `argv0` names a program that can run: an absolute path to an executable
/// file, or a bare name found in `PATH`. Returns the path that will run.
pub fn resolve_program(argv0: &str) -> Result<PathBuf, String> {
    if argv0.is_empty() {
        return Err("argv[0] is empty; set argv = [\"/path/to/program\", …]".into());
    }
    if argv0.contains('/') {
        let path = Path::new(argv0);
        if !path.is_absolute() {
            return Err(format!(
                "program `{argv0}` is a relative path, which depends on the daemon's working \
                 directory; give an absolute path or a bare name found in PATH"
            ));
        }
        return check_executable(path).map(|()| path.to_path_buf());
    }
    let search = program_path();
    find_in_path(argv0, &search).ok_or_else(|| {
        format!(
            "program `{argv0}` was not found in PATH ({}); install it, or give its absolute path",
            search.to_string_lossy()
        )
    })
}

/// The `PATH` programs get: redq's own, or [`DEFAULT_PATH`] when it has none.
fn program_path() -> std::ffi::OsString {
    std::env::var_os("PATH")
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| DEFAULT_PATH.into())
}

/// The first executable file `name` in the absolute directories of `search`.
fn find_in_path(name: &str, search: &std::ffi::OsStr) -> Option<PathBuf> {
    std::env::split_paths(search)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|candidate| check_executable(candidate).is_ok())
}

fn check_executable(path: &Path) -> Result<(), String> {
    let shown = path.display();
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("program `{shown}` cannot be used: {e}; check the path"))?;
    if !meta.is_file() {
        return Err(format!(
            "program `{shown}` is not a regular file; give the path of the program itself"
        ));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(format!(
            "program `{shown}` is not executable; run `chmod +x {shown}` or fix the path"
        ));
    }
    Ok(())
}

/// The child's process group (its id is the child's pid) and whether the child is reaped.
struct Group {
    pid: libc::pid_t,
    reaped: Mutex<bool>,
}

impl Group {
    /// Signals the whole group, unless the child is reaped (its id may then be reused).
    fn signal(&self, sig: libc::c_int) {
        let reaped = self.reaped.lock().unwrap_or_else(PoisonError::into_inner);
        if !*reaped {
            // SAFETY: plain syscall; the unreaped child keeps the group id ours.
            unsafe { libc::kill(-self.pid, sig) };
        }
    }

    /// Blocks until the child exits, kills what it left in its group, then reaps it.
    fn wait(&self) -> io::Result<(libc::c_int, libc::rusage)> {
        // SAFETY: zeroed siginfo_t/rusage are valid out-parameters for waitid/wait4.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WEXITED | libc::WNOWAIT;
        while unsafe { libc::waitid(libc::P_PID, self.pid as libc::id_t, &mut info, flags) } == -1 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                guard::unregister(self.pid); // Not our child to wait for, nor our group.
                return Err(e);
            }
        }
        let mut reaped = self.reaped.lock().unwrap_or_else(PoisonError::into_inner);
        // The child is a zombie now: the group id stays ours to signal and to unregister.
        unsafe { libc::kill(-self.pid, libc::SIGKILL) };
        guard::unregister(self.pid);
        let (mut status, mut usage) = (0, unsafe { std::mem::zeroed::<libc::rusage>() });
        while unsafe { libc::wait4(self.pid, &mut status, 0, &mut usage) } == -1 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        *reaped = true;
        Ok((status, usage))
    }
}

/// Kills the group if `run` is dropped before the child ended (e.g. its task aborted).
struct KillOnDrop(Arc<Group>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.0.signal(libc::SIGKILL);
    }
}

/// Reads a pipe to its end (or until `stop`), keeping the first `cap` bytes; returns
/// them with the total count. Reading on past the cap keeps the child from blocking.
async fn read_capped(fd: Option<OwnedFd>, cap: usize, stop: CancellationToken) -> (Vec<u8>, u64) {
    let (mut kept, mut total) = (Vec::new(), 0u64);
    let Some(Ok(mut rx)) = fd.map(pipe::Receiver::from_owned_fd) else {
        return (kept, total);
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            read = rx.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            _ = stop.cancelled() => break,
        };
        total += n as u64;
        let room = cap.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
    (kept, total)
}

/// Lossy UTF-8 text of `kept`, marked when the cap dropped part of `total`.
fn capped_text(kept: &[u8], total: u64) -> String {
    let mut text = String::from_utf8_lossy(kept).into_owned();
    let dropped = total.saturating_sub(kept.len() as u64);
    if dropped > 0 {
        text.push_str(&format!("…[truncated {dropped} bytes]"));
    }
    text
}

/// The outcome of a run that ended with wait `status`, per the module docs' contract.
fn judge(stop: Option<Stop>, status: libc::c_int, stdout: Option<String>, stderr: &str) -> Outcome {
    let ended = if libc::WIFEXITED(status) {
        format!("exit code {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", signal_name(libc::WTERMSIG(status)))
    } else {
        format!("ended with wait status {status}")
    };
    let error = |head: String| match stderr.trim_end() {
        "" => head,
        text => format!("{head}: {text}"),
    };
    match stop {
        Some(Stop::Timeout(after)) => {
            let after = humantime::format_duration(after);
            return Outcome::Fail {
                error: error(format!("timed out after {after} ({ended})")),
            };
        }
        Some(Stop::Cancel) => {
            let head = format!("cancelled: the worker stopped the program ({ended})");
            return Outcome::Fail { error: error(head) };
        }
        None => {}
    }
    match libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)) {
        Some(0) => Outcome::Done { result: stdout },
        Some(EXIT_NO_RETRY) => Outcome::Dead {
            error: error(format!("{ended} (never retry)")),
        },
        _ => Outcome::Fail {
            error: error(ended),
        },
    }
}

fn duration_of(tv: libc::timeval) -> Duration {
    Duration::from_secs(tv.tv_sec.max(0) as u64) + Duration::from_micros(tv.tv_usec.max(0) as u64)
}

fn max_rss_kib(usage: &libc::rusage) -> u64 {
    let rss = usage.ru_maxrss.max(0) as u64;
    // Darwin reports bytes, Linux and the BSDs KiB.
    if cfg!(target_vendor = "apple") {
        rss / 1024
    } else {
        rss
    }
}

fn signal_name(sig: libc::c_int) -> String {
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGBUS => "SIGBUS",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGXCPU => "SIGXCPU",
        _ => return format!("{sig}"),
    };
    format!("{sig} ({name})")
}

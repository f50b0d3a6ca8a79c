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
//! Layout, one idea per file (each states its invariants):
//! - this file: the contract above, the spec, one run from spawn to outcome, and
//!   the outcome a run's end means;
//! - `spawn.rs`: the program's command (clean environment, own process group,
//!   `argv[0]` looked up in `PATH`) and [`resolve_program`];
//! - `process.rs`: the process group from the guard's registration to the `wait4`
//!   that reaps it: SIGTERM then SIGKILL, resource usage;
//! - `pipes.rs`: the payload into stdin; stdout and stderr read with a cap;
//! - `usage_file.rs`: `REDQ_USAGE_FILE`, made, read and deleted.

mod pipes;
mod process;
mod spawn;
mod usage_file;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{Handler, JobContext, Outcome, Resources, RunReport, Usage};
use pipes::{capped_text, Capture};
use process::{duration_of, max_rss_kib, signal_name, Running, Stop};
use usage_file::UsageFile;

pub use spawn::resolve_program;
pub use usage_file::{parse_usage_file, MAX_USAGE_FILE_BYTES};

/// Exit code meaning "this attempt failed, retry later" (EX_TEMPFAIL).
pub const EXIT_RETRY: i32 = 75;
/// Exit code meaning "fail for good, never retry" (EX_DATAERR).
pub const EXIT_NO_RETRY: i32 = 65;
/// Default cap on the stdout and stderr kept from one run.
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 64 * 1024;
/// Default wait between SIGTERM and SIGKILL.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(5);

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
        let usage_path = usage_file.as_ref().map(UsageFile::path);
        let (stdin, rest) = match pipes::stdin(&ctx.payload) {
            Ok(stdin) => stdin,
            Err(e) => {
                let error = format!(
                    "cannot start program `{}`: no pipe for its stdin: {e}",
                    self.program()
                );
                return CommandRun::not_started(started, error);
            }
        };
        let spawned =
            spawn::command(&self.spec, &ctx, usage_path, stdin).and_then(|mut cmd| cmd.spawn());
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                let error = spawn::spawn_error(self.program(), e);
                return CommandRun::not_started(started, error);
            }
        };
        let mut running = Running::watch(&child);
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        drop(child); // std's Child neither waits nor kills on drop: `running` reaps.
        let writer = rest.map(pipes::feed);
        let capture = Capture::start(stdout, stderr, self.spec.max_output_bytes);

        let (stop, reaped) = running
            .wait(ctx.timeout, &ctx.cancel, self.spec.kill_grace)
            .await;
        if let Some(writer) = writer {
            writer.abort();
        }
        let ((stdout, stdout_bytes), (stderr, stderr_bytes)) = capture.finish().await;
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

    fn program(&self) -> &str {
        self.spec.argv.first().map(String::as_str).unwrap_or("")
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

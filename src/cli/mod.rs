//! The `redq` command line: argument parsing and the commands that talk to
//! Redis as a producer or operator. `redq run` hands over to the daemon.
//! `redq bench` is not here: the binary adds it (`src/bench/`).
//!
//! Exit codes: 0 success; 1 the command failed (e.g. job not found, invalid
//! job); 2 bad usage; 69 Redis unreachable; 78 bad configuration.

mod commands;
mod daemon;
mod dashboard;
mod health;
pub mod logging;
mod setup;
mod show_config;
mod target;
mod usage;
mod watch;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use target::Target;

/// Exit code: Redis could not be reached (EX_UNAVAILABLE).
pub const EXIT_UNAVAILABLE: u8 = 69;
/// Exit code: the configuration was refused (EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;

#[derive(Debug, Parser)]
#[command(
    name = "redq",
    version,
    about = "A job queue and worker daemon on Redis"
)]
pub struct Cli {
    /// Configuration file [default: workers.toml; `run`, `check-config` and `config` need it to exist]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Read no configuration file: the defaults, REDQ_… variables and flags only
    #[arg(long, global = true, conflicts_with = "config")]
    pub no_config: bool,
    /// Redis URL; overrides REDQ_REDIS__URL and the config file [default: redis://127.0.0.1:6379]
    #[arg(long, global = true, value_name = "URL")]
    pub redis_url: Option<String>,
    /// Key prefix; overrides REDQ_REDIS__KEY_PREFIX and the config file [default: redq]
    #[arg(long, global = true, value_name = "PREFIX")]
    pub key_prefix: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the worker daemon (SIGTERM/SIGINT: drain and stop; SIGHUP: reload the config)
    Run,
    /// Check the configuration file (and handlers) without starting
    CheckConfig,
    /// Print the effective configuration (defaults, file, environment, flags) as TOML, secrets masked
    Config,
    /// Load (or upgrade) redq's function libraries and check the server; once per Redis and release
    Setup {
        /// Only report, writing nothing: exit 0 when the libraries are current, 1 when not
        #[arg(long)]
        check: bool,
        /// Also check that this ACL user (the daemon's) may run what the daemon needs (ACL DRYRUN)
        #[arg(long, value_name = "USER")]
        daemon_user: Option<String>,
    },
    /// Enqueue a job; prints its id
    Enqueue(EnqueueArgs),
    /// Show one job: state, attempts, timestamps, last error, result (or,
    /// for a removed job that kept one, its outcome)
    Job {
        queue: String,
        id: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
        /// Wait for the job to end and print its outcome; exit 0 when it
        /// succeeded, 1 when it is dead or cancelled, 75 when --timeout
        /// passed first. The job must keep an outcome (outcome_ttl_ms, or
        /// the queue's outcome_ttl) or be kept when finished
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, e.g. 30s, 5m
        #[arg(long, value_parser = crate::config::duration::parse, default_value = "30s", requires = "wait")]
        timeout: std::time::Duration,
    },
    /// List a queue's jobs in one state, a page at a time
    Jobs {
        queue: String,
        /// pending (claim order), scheduled (soonest first), active (by lease
        /// end), dead or succeeded (newest first; kept by retention)
        #[arg(long)]
        state: crate::inspect::ListState,
        /// Jobs per page, 1-1000
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Start after this cursor (the `next` a page printed)
        #[arg(long)]
        after: Option<String>,
        /// Newest (or latest) first
        #[arg(long, conflicts_with = "oldest")]
        newest: bool,
        /// Oldest (or soonest) first
        #[arg(long)]
        oldest: bool,
        /// Only jobs of this tenant
        #[arg(long)]
        tenant: Option<String>,
        /// Only jobs of this group
        #[arg(long)]
        group: Option<String>,
        /// Print JSON: {"jobs": [...], "next": cursor or null}
        #[arg(long)]
        json: bool,
    },
    /// Cancel live jobs (pending, scheduled or running; a running job's handler is stopped)
    Cancel {
        queue: String,
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Delete finished jobs (dead, or kept after success) for good
    Delete {
        queue: String,
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Run scheduled or retrying jobs now instead of at their due time
    Promote {
        queue: String,
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Show each queue's depth by state and its rates over the last minute
    Stats {
        /// Queues to show [default: every registered and configured queue]
        queues: Vec<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Inspect, retry or delete dead jobs
    #[command(subcommand)]
    Dead(DeadCommand),
    /// Write every job of a queue (all states) as JSON lines
    Export {
        queue: String,
        /// Write here instead of standard output
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Restore jobs written by `redq export` (ids that exist are skipped)
    Import {
        queue: String,
        /// Read here instead of standard input
        #[arg(long, short)]
        input: Option<PathBuf>,
    },
    /// Stop every daemon from claiming jobs of a queue (enqueueing still works)
    Pause { queue: String },
    /// Let daemons claim jobs of a paused queue again
    Resume { queue: String },
    /// Exit 0 only when Redis answers and a daemon's heartbeat is fresh (1: no fresh daemon; 69: Redis unreachable; 78: Redis refused the settings, e.g. credentials)
    Health {
        /// A heartbeat older than this does not count, e.g. 15s
        #[arg(long, value_parser = crate::config::duration::parse, default_value = "15s")]
        max_age: std::time::Duration,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Usage reported by handlers (plus jobs and run time), per queue and tenant
    Usage(usage::UsageArgs),
    /// Follow a queue's lifecycle events live (needs `events = true` for the queue)
    Watch {
        queue: String,
        /// Print one JSON object per event
        #[arg(long)]
        json: bool,
        /// Start at the oldest event kept instead of new ones only
        #[arg(long)]
        from_start: bool,
    },
    /// Serve the web dashboard (queues, jobs, dead set, daemons, cron, usage)
    Dashboard(dashboard::DashboardArgs),
}

#[derive(Debug, Args)]
pub struct EnqueueArgs {
    pub queue: String,
    /// The payload as JSON, or - to read it from standard input
    pub payload: String,
    /// Higher runs first, from -1000 to 1000
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub priority: i64,
    /// Run no earlier than this long from now, e.g. 30s, 5m
    #[arg(long, value_parser = crate::config::duration::parse)]
    pub delay: Option<std::time::Duration>,
    /// Run no earlier than this Unix time in milliseconds
    #[arg(long, conflicts_with = "delay")]
    pub run_at: Option<i64>,
    /// Attempts before the job is dead [default: the queue's setting]
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// Handler time-out for this job, e.g. 30s [default: the queue's setting]
    #[arg(long, value_parser = crate::config::duration::parse)]
    pub timeout: Option<std::time::Duration>,
    /// At most one live job per unique key in the queue
    #[arg(long)]
    pub unique_key: Option<String>,
    /// Who the job is for
    #[arg(long)]
    pub tenant: Option<String>,
    /// Concurrency group
    #[arg(long)]
    pub group: Option<String>,
    /// Choose the job id (enqueueing an existing id is a no-op)
    #[arg(long)]
    pub id: Option<String>,
    /// Keep the job's outcome this long after it ends (up to 7d), for
    /// `redq job --wait`, `redq_status` and waiters in any language
    #[arg(long, value_parser = crate::config::duration::parse)]
    pub outcome_ttl: Option<std::time::Duration>,
    /// Wait for the job to end and print its outcome (as `redq job --wait`;
    /// keeps its outcome for --outcome-ttl, default 10m)
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits, e.g. 30s, 5m
    #[arg(long, value_parser = crate::config::duration::parse, default_value = "30s", requires = "wait")]
    pub wait_timeout: std::time::Duration,
}

#[derive(Debug, Subcommand)]
pub enum DeadCommand {
    /// List dead jobs, newest first
    List {
        queue: String,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Put dead jobs back to pending with fresh attempts
    Retry {
        queue: String,
        ids: Vec<String>,
        /// Every dead job of the queue
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
    /// Delete dead jobs for good
    Purge {
        queue: String,
        ids: Vec<String>,
        /// Only jobs dead for at least this long, e.g. 7d
        #[arg(long, value_parser = crate::config::duration::parse, conflicts_with = "ids")]
        older_than: Option<std::time::Duration>,
        /// Every dead job of the queue
        #[arg(long, conflicts_with_all = ["ids", "older_than"])]
        all: bool,
    },
}

/// Runs the parsed command; returns the process exit code.
pub async fn main(cli: Cli) -> u8 {
    let src = daemon::Source {
        path: cli.config.as_deref(),
        no_config: cli.no_config,
        url: cli.redis_url.as_deref(),
        prefix: cli.key_prefix.as_deref(),
    };
    match cli.command {
        Command::Run => return daemon::run(&src).await,
        Command::CheckConfig => return daemon::check(&src),
        Command::Config => return daemon::print(&src),
        _ => {}
    }
    let file = if cli.no_config {
        target::File::None
    } else {
        cli.config
            .as_deref()
            .map_or(target::File::Default, target::File::Named)
    };
    let target = match Target::resolve(file, cli.redis_url.as_deref(), cli.key_prefix.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("redq: {e}");
            return EXIT_CONFIG;
        }
    };
    if let Command::Setup {
        check,
        ref daemon_user,
    } = cli.command
    {
        return setup::run(&target, check, daemon_user.as_deref()).await;
    }
    if let Command::Health { json, max_age } = cli.command {
        return health::run(&target, json, max_age).await;
    }
    if let Command::Watch {
        ref queue,
        json,
        from_start,
    } = cli.command
    {
        return watch::run(&target, queue, json, from_start).await;
    }
    if let Command::Dashboard(args) = cli.command {
        return dashboard::run(
            cli.config.as_deref(),
            &target,
            cli.redis_url.as_deref(),
            cli.key_prefix.as_deref(),
            args,
        )
        .await;
    }
    match commands::run(cli.command, &target).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("redq: {e}");
            exit_code(&e)
        }
    }
}

/// The exit status for a command that failed with `e`: 78 when a setting
/// is wrong (the configuration, or credentials and ACL rules Redis refused:
/// trying again will not help, and systemd does not restart on 78), 69 when
/// Redis is unreachable or failing over, 1 otherwise.
pub fn exit_code(e: &crate::Error) -> u8 {
    use redis::{ErrorKind, ServerErrorKind};
    match e {
        crate::Error::Config(_) => EXIT_CONFIG,
        crate::Error::Redis(r)
            if matches!(
                r.kind(),
                ErrorKind::AuthenticationFailed | ErrorKind::Server(ServerErrorKind::NoPerm)
            ) || matches!(r.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM")) =>
        {
            EXIT_CONFIG
        }
        e if e.is_transient() => EXIT_UNAVAILABLE,
        _ => 1,
    }
}

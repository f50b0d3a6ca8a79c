//! `redq bench`: measures the queue through the real daemon on a private
//! `redis-server` it starts itself (on a free port, never the Redis on 6379),
//! and optionally another queue (BullMQ or ChasquiMQ: [`peer`]) on the
//! same server in the same run.
//!
//! Scenarios (pick with `--scenarios a,c,…`), each on a flushed server:
//! - `a` enqueue, batches of 1000 jobs per round trip;
//! - `b` single enqueues from 50 concurrent producers sharing one client;
//! - `c` process pre-enqueued jobs with the built-in no-op handler at each
//!   `--concurrency` (default 50 and 200), plain and with random priorities;
//! - `d` latency: enqueue → handler start at a steady 1000 jobs/s into an
//!   idle running daemon (p50/p95/p99/max);
//! - `e` memory: peak RSS of the bench process while processing at
//!   concurrency 200, and Redis `used_memory` per 100k waiting jobs with
//!   priorities;
//! - `f` idle: Redis commands per second and the process's CPU with an idle
//!   daemon and empty queues;
//! - `g` two daemons (in this process, each with its own connections) on
//!   one queue against one daemon, at the highest `--concurrency`;
//! - `h` many queues idle: one daemon configured with `--idle-queues`
//!   (default 1000) empty queues: Redis commands per second, Redis's and
//!   the process's CPU, and the process's RSS;
//! - `i` the command handler's spawn rate: `/bin/true` at concurrency 50
//!   against `xargs -P50 /bin/true` in the same run (not in the default
//!   set: `--scenarios i`);
//! - `j` `--due-jobs` (default 1M) delayed jobs due at one instant, drained
//!   by a daemon at concurrency 200: jobs/s and the longest single call in
//!   SLOWLOG (not in the default set);
//! - `k` big payloads: `--big-jobs` (default 10000) jobs of 64 KiB each,
//!   enqueued 100 per call and processed at concurrency 50: jobs/s, Redis's
//!   CPU per job, the process's peak RSS (not in the default set).
//!
//! With `--repeat R` every scenario runs R times (alternating redq and the
//! peer's runs under `--compare bullmq|chasquimq`) and the table shows
//! medians with min–max.
//!
//! This module belongs to the `redq` binary, not to the library: `main.rs`
//! declares it and adds its subcommand ([`Args`]) to the library's command
//! line, so a program that links the `redq` crate compiles neither the
//! scenarios, nor their arguments, nor their `redis-server` starter. It is a
//! subcommand rather than a binary of its own so that operators keep one
//! program and one command (`redq bench`, as the README and the product
//! brief name it), and so it measures exactly the daemon that binary runs,
//! through the library's public API only. The scenarios drive the daemon in
//! this process (`WorkerBuilder`, library handlers, its counters), which a
//! `cargo bench` harness could do too, but that would take the command
//! away from the installed binary.

mod peer;
mod redis_server;
mod report;
mod scenarios;
mod server;

use std::collections::BTreeMap;

use redq::error::{Error, Result};

use report::{Report, Row, Sample, Stat};

/// The arguments of `redq bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Jobs per scenario
    #[arg(long, default_value_t = 100_000)]
    jobs: u64,
    /// Worker concurrency to measure (repeatable)
    #[arg(long, default_values_t = [50, 200])]
    concurrency: Vec<u32>,
    /// Print JSON
    #[arg(long)]
    json: bool,
    /// Run every scenario this many times; report medians with min–max
    #[arg(long, default_value_t = 1)]
    repeat: u32,
    /// Scenarios to run, comma-separated: a batch enqueue, b single enqueue,
    /// c process, d latency, e memory, f idle, g two daemons, h many queues
    /// idle, i command handler spawn rate, j delayed jobs due at once (i and
    /// j not by default)
    #[arg(long, default_value = "a,b,c,d,e,f,g,h")]
    scenarios: String,
    /// How long the latency scenario enqueues at 1000 jobs/s
    #[arg(long, default_value_t = 10.0)]
    latency_secs: f64,
    /// How long the idle scenarios (f, h) watch the daemon
    #[arg(long, default_value_t = 5.0)]
    idle_secs: f64,
    /// Queues configured in scenario h (many queues idle)
    #[arg(long, default_value_t = 1000)]
    idle_queues: u32,
    /// Jobs run in scenario i (command handler spawn rate)
    #[arg(long, default_value_t = 5000)]
    spawn_jobs: u64,
    /// Delayed jobs due at one instant in scenario j
    #[arg(long, default_value_t = 1_000_000)]
    due_jobs: u64,
    /// Jobs of 64 KiB each in scenario k (big payloads)
    #[arg(long, default_value_t = 10_000)]
    big_jobs: u64,
    /// Also run the same scenarios on another queue, on the same server:
    /// `bullmq` (needs node and `npm install --prefix benches/bullmq`) or
    /// `chasquimq` (needs Redis 8.6 and `cargo build --release
    /// --manifest-path benches/chasquimq/Cargo.toml`)
    #[arg(long, value_enum)]
    compare: Option<peer::Peer>,
    /// Connect over TLS: the private server also serves a TLS port, with a
    /// CA and certificate made for the run by the `openssl` command, and
    /// redq reaches it at rediss://localhost (measures what TLS costs)
    #[arg(long)]
    tls: bool,
    /// Start a replica of the private server too (`--replicaof`); the run
    /// starts once it is in sync
    #[arg(long)]
    replica: bool,
    /// Set redis.wait_replicas: every enqueue and completion answers once
    /// this many replicas have it (WAIT); needs --replica (measures what
    /// durability at failover costs)
    #[arg(long, default_value_t = 0)]
    wait_replicas: u32,
}

/// Runs `redq bench`; returns the process exit code (1: the bench failed).
pub async fn main(args: Args) -> u8 {
    let opts = Options {
        jobs: args.jobs,
        concurrency: args.concurrency,
        repeat: args.repeat,
        scenarios: args.scenarios,
        latency_secs: args.latency_secs,
        idle_secs: args.idle_secs,
        idle_queues: args.idle_queues,
        spawn_jobs: args.spawn_jobs,
        due_jobs: args.due_jobs,
        big_jobs: args.big_jobs,
        compare: args.compare,
        tls: args.tls,
        replica: args.replica,
        wait_replicas: args.wait_replicas,
    };
    match run(&opts).await {
        Ok(report) if args.json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
            0
        }
        Ok(report) => {
            report::print_table(&report);
            0
        }
        Err(e) => {
            eprintln!("redq: bench: {e}");
            1
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Jobs per scenario (a, b, c, and e's memory fill).
    pub jobs: u64,
    /// Concurrencies for scenario c.
    pub concurrency: Vec<u32>,
    pub repeat: u32,
    /// Scenario letters, a–k.
    pub scenarios: String,
    /// How long scenario d enqueues at 1000 jobs/s.
    pub latency_secs: f64,
    /// How long scenarios f and h watch the idle daemon.
    pub idle_secs: f64,
    /// Queues configured in scenario h.
    pub idle_queues: u32,
    /// Jobs of scenario i.
    pub spawn_jobs: u64,
    /// Jobs of scenario j.
    pub due_jobs: u64,
    /// Jobs of scenario k.
    pub big_jobs: u64,
    /// Also run another queue (`--compare bullmq|chasquimq`).
    pub compare: Option<peer::Peer>,
    /// Reach the private server over TLS (`--tls`).
    pub tls: bool,
    /// Start a replica of the private server (`--replica`).
    pub replica: bool,
    /// `redis.wait_replicas` for redq (`--wait-replicas`).
    pub wait_replicas: u32,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            jobs: 100_000,
            concurrency: vec![50, 200],
            repeat: 1,
            scenarios: "a,b,c,d,e,f,g,h".into(),
            latency_secs: 10.0,
            idle_secs: 5.0,
            idle_queues: 1000,
            spawn_jobs: 5000,
            due_jobs: 1_000_000,
            big_jobs: 10_000,
            compare: None,
            tls: false,
            replica: false,
            wait_replicas: 0,
        }
    }
}

/// Parses `a,c,…` into the set of letters, refusing unknown ones.
fn parse_scenarios(list: &str) -> Result<String> {
    let mut out = String::new();
    for part in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match part {
            "a" | "b" | "c" | "d" | "e" | "f" | "g" | "h" | "i" | "j" | "k" => {
                if !out.contains(part) {
                    out.push_str(part)
                }
            }
            other => {
                return Err(Error::Config(format!(
                "--scenarios: unknown scenario {other:?} (expected letters a–k, comma-separated)"
            )))
            }
        }
    }
    if out.is_empty() {
        return Err(Error::Config("--scenarios: no scenario named".into()));
    }
    let mut v: Vec<char> = out.chars().collect();
    v.sort_unstable();
    Ok(v.into_iter().collect())
}

/// Runs the benchmark and gathers the rows.
async fn run(opts: &Options) -> Result<Report> {
    let letters = parse_scenarios(&opts.scenarios)?;
    if opts.jobs == 0 || opts.repeat == 0 {
        return Err(Error::Config(
            "--jobs and --repeat must be at least 1".into(),
        ));
    }
    if let (true, Some(p)) = (opts.tls, opts.compare) {
        return Err(Error::Config(format!(
            "--tls and --compare do not go together (the {} side connects without TLS)",
            p.name()
        )));
    }
    if opts.wait_replicas > u32::from(opts.replica) {
        return Err(Error::Config(format!(
            "--wait-replicas {} needs as many replicas: --replica starts one",
            opts.wait_replicas
        )));
    }
    if let (true, Some(p)) = (opts.wait_replicas > 0, opts.compare) {
        return Err(Error::Config(format!(
            "--wait-replicas and --compare do not go together ({} does not wait for replicas)",
            p.name()
        )));
    }
    let srv = server::Private::start(opts.tls, opts.replica, opts.wait_replicas).await?;
    let redis_server = srv.version().await.unwrap_or_default();

    let mut compare_skipped = None;
    let other = match opts.compare {
        Some(p) => match peer::Runner::find(p, &redis_server) {
            Ok(r) => Some(r),
            Err(why) => {
                eprintln!("redq bench: {} comparison skipped: {why}", p.name());
                compare_skipped = Some(why);
                None
            }
        },
        None => None,
    };

    // Collected per id, in first-seen order.
    let mut order: Vec<Sample> = Vec::new();
    let mut redq_vals: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut peer_vals: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut peer_version = None;

    for rep in 0..opts.repeat {
        if opts.repeat > 1 {
            eprintln!(
                "redq bench: repetition {} of {}: redq",
                rep + 1,
                opts.repeat
            );
        }
        let samples = scenarios::run_all(&srv, opts, &letters).await?;
        for s in samples {
            if !order.iter().any(|o| o.id == s.id) {
                order.push(s.clone());
            }
            redq_vals.entry(s.id.clone()).or_default().push(s.value);
        }
        if let Some(p) = &other {
            eprintln!(
                "redq bench: repetition {} of {}: {}",
                rep + 1,
                opts.repeat,
                p.peer().name()
            );
            srv.flush().await?;
            let out = p.run(&srv.redis.url, opts, &letters).await?;
            peer_version = Some(out.version);
            for (id, v) in out.values {
                peer_vals.entry(id).or_default().push(v);
            }
            srv.flush().await?;
        }
    }

    let rows = order
        .into_iter()
        .filter_map(|s| {
            let redq = Stat::of(redq_vals.remove(&s.id).unwrap_or_default())?;
            let peer = Stat::of(peer_vals.remove(&s.id).unwrap_or_default());
            let ratio = peer
                .as_ref()
                .filter(|b| b.median != 0.0)
                .map(|b| redq.median / b.median);
            Some(Row {
                id: s.id,
                scenario: s.label,
                unit: s.unit.into(),
                better: s.better,
                redq,
                peer,
                ratio,
            })
        })
        .collect();

    Ok(Report {
        redis_server,
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        jobs: opts.jobs,
        repeat: opts.repeat,
        scenarios: letters,
        replica: opts.replica,
        wait_replicas: opts.wait_replicas,
        peer: opts.compare.map(|p| p.name().to_owned()),
        peer_version,
        compare_skipped,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_parse_and_refuse_unknown_letters() {
        assert_eq!(parse_scenarios("c, a,c").unwrap(), "ac");
        assert!(parse_scenarios("a,z").is_err());
        assert!(parse_scenarios("").is_err());
    }

    #[test]
    fn median_and_range() {
        let s = Stat::of(vec![3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Stat::of(vec![1.0, 4.0]).unwrap().median, 2.5);
    }

    /// The one end-to-end smoke run CI does: 200 jobs, scenarios a and c.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn smoke_run_a_and_c() {
        if std::process::Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("redis-server not installed; skipping");
            return;
        }
        let opts = Options {
            jobs: 200,
            scenarios: "a,c".into(),
            ..Options::default()
        };
        let report = run(&opts).await.unwrap();
        let ids: Vec<&str> = report.rows.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "a",
                "c50",
                "c50_rcpu",
                "c50_pcpu",
                "c200",
                "c200_rcpu",
                "c200_pcpu",
                "c50p",
                "c50p_rcpu",
                "c50p_pcpu",
                "c200p",
                "c200p_rcpu",
                "c200p_pcpu"
            ]
        );
        assert!(report.rows.iter().all(|r| r.redq.median > 0.0));
    }

    /// With a replica and wait_replicas 1 (every enqueue and completion
    /// WAITs for it): 200 jobs, scenarios a and c at one concurrency.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn smoke_run_with_a_replica_and_wait_replicas() {
        if std::process::Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("redis-server not installed; skipping");
            return;
        }
        let opts = Options {
            jobs: 200,
            scenarios: "a,c".into(),
            concurrency: vec![50],
            replica: true,
            wait_replicas: 1,
            ..Options::default()
        };
        let report = run(&opts).await.unwrap();
        assert!((report.replica, report.wait_replicas) == (true, 1));
        assert!(report.rows.iter().all(|r| r.redq.median > 0.0));
        let no_replica = Options {
            replica: false,
            ..opts
        };
        let e = run(&no_replica).await.err().unwrap().to_string();
        assert!(e.contains("--replica"), "{e}");
    }
}

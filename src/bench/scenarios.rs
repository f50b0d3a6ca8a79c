//! redq's side of the scenarios. Each starts on a flushed private server.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;

use super::report::{Better, Sample};
use super::server::Private;
use super::Options;
use redq::config::{self, Config, RedisConfig};
use redq::daemon::{Counters, WorkerBuilder};
use redq::error::{Error, Result};
use redq::handler::{JobContext, Outcome};
use redq::{Client, NewJob};

const PRODUCERS: u64 = 50;
const LATENCY_RATE: u64 = 1000;

fn err(msg: impl Into<String>) -> Error {
    Error::Config(format!("bench: {}", msg.into()))
}

fn per_sec(jobs: u64, took: Duration) -> f64 {
    jobs as f64 / took.as_secs_f64().max(1e-9)
}

/// Runs the chosen scenarios once, in order a–k.
pub async fn run_all(srv: &Private, opts: &Options, letters: &str) -> Result<Vec<Sample>> {
    let mut out = Vec::new();
    let n = opts.jobs;
    if letters.contains('a') {
        srv.flush().await?;
        let took = enqueue_batches(&srv.redis, "bench", n, false).await?;
        out.push(Sample::new(
            "a",
            "enqueue, batches of 1000",
            "jobs/s",
            Better::Higher,
            per_sec(n, took),
        ));
    }
    if letters.contains('b') {
        srv.flush().await?;
        let took = enqueue_single(&srv.redis, "bench", n).await?;
        out.push(Sample::new(
            "b",
            format!("enqueue, single, {PRODUCERS} producers"),
            "jobs/s",
            Better::Higher,
            per_sec(n, took),
        ));
    }
    let mut rss_c200 = None;
    if letters.contains('c') {
        for prio in [false, true] {
            for &c in &opts.concurrency {
                srv.flush().await?;
                enqueue_batches(&srv.redis, "bench", n, prio).await?;
                let measure = c == 200 && !prio && letters.contains('e');
                let run = process(srv, "bench", n, c, 1, measure).await?;
                if measure {
                    rss_c200 = run.rss;
                }
                let (id, label) = if prio {
                    (
                        format!("c{c}p"),
                        format!("process, concurrency {c}, random priorities"),
                    )
                } else {
                    (format!("c{c}"), format!("process, concurrency {c}"))
                };
                out.push(Sample::new(
                    id.clone(),
                    label,
                    "jobs/s",
                    Better::Higher,
                    per_sec(n, run.took),
                ));
                out.push(Sample::new(
                    format!("{id}_rcpu"),
                    format!("  Redis CPU per job, {id}"),
                    "µs",
                    Better::Lower,
                    run.redis_us_per_job,
                ));
                out.push(Sample::new(
                    format!("{id}_pcpu"),
                    format!("  daemon CPU per job, {id}"),
                    "µs",
                    Better::Lower,
                    run.own_us_per_job,
                ));
            }
        }
    }
    if letters.contains('g') {
        let c = opts.concurrency.iter().copied().max().unwrap_or(200);
        for daemons in [1, 2] {
            srv.flush().await?;
            enqueue_batches(&srv.redis, "bench", n, false).await?;
            let run = process(srv, "bench", n, c, daemons, false).await?;
            out.push(Sample::new(
                format!("g{daemons}"),
                format!("process, {daemons} daemon(s) × concurrency {c}"),
                "jobs/s",
                Better::Higher,
                per_sec(n, run.took),
            ));
        }
    }
    if letters.contains('d') {
        srv.flush().await?;
        let lat = latency(&srv.redis, opts.latency_secs).await?;
        for (name, v) in [
            ("p50", lat[0]),
            ("p95", lat[1]),
            ("p99", lat[2]),
            ("max", lat[3]),
        ] {
            out.push(Sample::new(
                format!("d_{name}"),
                format!("latency {name}, enqueue → handler start, {LATENCY_RATE}/s"),
                "ms",
                Better::Lower,
                v,
            ));
        }
        // The floor under those: the enqueue call's own round trip.
        out.push(Sample::new(
            "d_call_p50",
            "the enqueue call's own round trip, p50",
            "ms",
            Better::Lower,
            lat[4],
        ));
    }
    if letters.contains('e') {
        let rss = match rss_c200 {
            Some(r) => Some(r),
            None => {
                srv.flush().await?;
                enqueue_batches(&srv.redis, "bench", n, false).await?;
                process(srv, "bench", n, 200, 1, true).await?.rss
            }
        };
        if let Some(rss) = rss {
            out.push(Sample::new(
                "e_rss",
                "peak RSS, whole bench process, processing at c200",
                "MiB",
                Better::Lower,
                rss,
            ));
        }
        srv.flush().await?;
        let before = srv.info_u64("memory", "used_memory").await?;
        enqueue_batches(&srv.redis, "bench", n, true).await?;
        let after = srv.info_u64("memory", "used_memory").await?;
        let per_100k = after.saturating_sub(before) as f64 * 100_000.0 / n as f64;
        out.push(Sample::new(
            "e_mem",
            "Redis used_memory per 100k waiting jobs, priorities",
            "MiB",
            Better::Lower,
            per_100k / (1024.0 * 1024.0),
        ));
    }
    if letters.contains('f') {
        srv.flush().await?;
        let (cmds, cpu) = idle(srv, opts.idle_secs).await?;
        out.push(Sample::new(
            "f_cmds",
            "idle: Redis commands per second",
            "cmd/s",
            Better::Lower,
            cmds,
        ));
        out.push(Sample::new(
            "f_cpu",
            "idle: CPU of the whole bench process",
            "% core",
            Better::Lower,
            cpu,
        ));
    }
    if letters.contains('h') {
        srv.flush().await?;
        let n = opts.idle_queues.max(1);
        let m = many_queues_idle(srv, n, opts.idle_secs).await?;
        for (id, label, unit, v) in [
            ("h_cmds", "Redis commands per second", "cmd/s", m.cmds),
            ("h_rcpu", "Redis CPU", "% core", m.redis_cpu),
            ("h_cpu", "CPU of the whole bench process", "% core", m.cpu),
            ("h_rss", "RSS of the whole bench process", "MiB", m.rss),
        ] {
            out.push(Sample::new(
                id,
                format!("{n} queues idle: {label}"),
                unit,
                Better::Lower,
                v,
            ));
        }
    }
    if letters.contains('i') {
        srv.flush().await?;
        let n = opts.spawn_jobs.max(1);
        let SpawnRate {
            redq,
            us_per_job,
            program_us,
            redis_us,
            xargs,
            xargs_us,
        } = spawn_rate(srv, n).await?;
        out.push(Sample::new(
            "i_redq",
            format!("command handler /bin/true, c{SPAWN_CONCURRENCY}, {n} jobs"),
            "jobs/s",
            Better::Higher,
            redq,
        ));
        out.push(Sample::new(
            "i_xargs",
            format!("xargs -P{SPAWN_CONCURRENCY} /bin/true, same count, same run"),
            "runs/s",
            Better::Higher,
            xargs,
        ));
        out.push(Sample::new(
            "i_ratio",
            "command handler over xargs",
            "×",
            Better::Higher,
            redq / xargs,
        ));
        out.push(Sample::new(
            "i_cpu",
            "CPU of the whole bench process per job (children not included)",
            "µs",
            Better::Lower,
            us_per_job,
        ));
        out.push(Sample::new(
            "i_pcpu",
            "CPU of the programs (/bin/true) redq ran, per job",
            "µs",
            Better::Lower,
            program_us,
        ));
        out.push(Sample::new(
            "i_rcpu",
            "Redis CPU per job of the command handler",
            "µs",
            Better::Lower,
            redis_us,
        ));
        out.push(Sample::new(
            "i_xcpu",
            "CPU of xargs and its /bin/true per run",
            "µs",
            Better::Lower,
            xargs_us,
        ));
    }
    if letters.contains('j') {
        srv.flush().await?;
        let n = opts.due_jobs.max(1);
        let due = due_at_once(srv, n).await?;
        out.push(Sample::new(
            "j_rate",
            format!("{n} delayed jobs due at one instant, drained at c200"),
            "jobs/s",
            Better::Higher,
            due.rate,
        ));
        out.push(Sample::new(
            "j_longest",
            "the longest single call meanwhile (SLOWLOG)",
            "ms",
            Better::Lower,
            due.longest_ms,
        ));
        out.push(Sample::new(
            "j_over5",
            "calls over 5 ms meanwhile (SLOWLOG)",
            "calls",
            Better::Lower,
            due.over_5ms as f64,
        ));
        eprintln!("redq bench: j: longest call: {}", due.longest_what);
    }
    if letters.contains('k') {
        srv.flush().await?;
        let n = opts.big_jobs.max(1);
        let cpu0 = redis_cpu(srv).await?;
        let took = enqueue_big(&srv.redis, "big", n).await?;
        let enq_rcpu = (redis_cpu(srv).await? - cpu0) * 1e6 / n as f64;
        let run = process(srv, "big", n, 50, 1, true).await?;
        let kib = BIG_PAYLOAD / 1024;
        for (id, label, unit, better, v) in [
            (
                "k_enq",
                format!("enqueue {kib} KiB payloads, {BIG_BATCH} per call"),
                "jobs/s",
                Better::Higher,
                per_sec(n, took),
            ),
            (
                "k_enq_rcpu",
                "  Redis CPU per job, k_enq".into(),
                "µs",
                Better::Lower,
                enq_rcpu,
            ),
            (
                "k_proc",
                format!("process {kib} KiB payloads, concurrency 50"),
                "jobs/s",
                Better::Higher,
                per_sec(n, run.took),
            ),
            (
                "k_rcpu",
                "  Redis CPU per job, k_proc".into(),
                "µs",
                Better::Lower,
                run.redis_us_per_job,
            ),
            (
                "k_rss",
                "peak RSS, whole bench process, k_proc".into(),
                "MiB",
                Better::Lower,
                run.rss.unwrap_or(f64::NAN),
            ),
        ] {
            out.push(Sample::new(id, label, unit, better, v));
        }
    }
    Ok(out)
}

/// (a) and the fill for (c) and (e): `jobs` small jobs, 1000 per call.
async fn enqueue_batches(
    redis: &RedisConfig,
    queue: &str,
    jobs: u64,
    priorities: bool,
) -> Result<Duration> {
    let client = Client::open(redis).await?;
    let mut rng = rand::rng();
    let started = Instant::now();
    let mut i = 0;
    while i < jobs {
        let n = (jobs - i).min(1000);
        let batch = (i..i + n)
            .map(|k| {
                let j = NewJob::new(&k)?;
                Ok(if priorities {
                    j.priority(rng.random_range(0..10))
                } else {
                    j
                })
            })
            .collect::<Result<Vec<_>>>()?;
        client.enqueue_many(queue, batch).await?;
        i += n;
    }
    Ok(started.elapsed())
}

/// The payload of scenario k: a JSON string of this many bytes, quotes
/// included.
const BIG_PAYLOAD: usize = 64 * 1024;
/// Scenario k's jobs per enqueue call (6.4 MiB per call).
const BIG_BATCH: u64 = 100;

/// (k): `jobs` jobs whose payload is a 64 KiB JSON string (printable ASCII
/// that needs no escaping, varied so no layer can shortcut it), `BIG_BATCH`
/// per call.
async fn enqueue_big(redis: &RedisConfig, queue: &str, jobs: u64) -> Result<Duration> {
    let client = Client::open(redis).await?;
    let text: String = (0..BIG_PAYLOAD - 2)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let payload = format!("\"{text}\"");
    let started = Instant::now();
    let mut i = 0;
    while i < jobs {
        let n = (jobs - i).min(BIG_BATCH);
        let batch = (0..n)
            .map(|_| NewJob::from_json(&payload))
            .collect::<Result<Vec<_>>>()?;
        client.enqueue_many(queue, batch).await?;
        i += n;
    }
    Ok(started.elapsed())
}

/// (b): 50 tasks sharing one client, each enqueueing its share one at a time.
async fn enqueue_single(redis: &RedisConfig, queue: &str, jobs: u64) -> Result<Duration> {
    let client = Arc::new(Client::open(redis).await?);
    // Register the queue before the clock starts, like a warmed-up producer.
    client.enqueue(queue, NewJob::new(&-1)?).await?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..PRODUCERS {
        let client = client.clone();
        let queue = queue.to_owned();
        let share = jobs / PRODUCERS + u64::from(p < jobs % PRODUCERS);
        tasks.push(tokio::spawn(async move {
            for k in 0..share {
                client
                    .enqueue(&queue, NewJob::new(&(p * 1_000_000 + k))?)
                    .await?;
            }
            Ok::<(), Error>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| err(e.to_string()))??;
    }
    Ok(started.elapsed())
}

fn daemon_config(redis: &RedisConfig, queue: &str, concurrency: u32, noop: bool) -> Result<Config> {
    let handler = if noop {
        "handler = { builtin = \"noop\" }\n"
    } else {
        ""
    };
    // WorkerBuilder::start validates, knowing which queues have library handlers.
    let mut config = config::read_str(&format!(
        "[daemon]\nlisten = \"127.0.0.1:0\"\n[queues.{queue}]\nconcurrency = {concurrency}\n{handler}"
    ))?;
    config.redis = redis.clone();
    Ok(config)
}

/// Resets the kernel's peak-RSS mark of this process (Linux ≥ 4.0).
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// VmHWM of this process, MiB.
fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// What one processing run measured.
struct Processed {
    took: Duration,
    /// Peak RSS of this process over the run (with `measure_rss`).
    rss: Option<f64>,
    /// Redis CPU (user + sys of the server) per processed job, µs.
    redis_us_per_job: f64,
    /// CPU of this process (the daemons; the harness only waits) per
    /// processed job, µs.
    own_us_per_job: f64,
}

/// With `REDQ_BENCH_CALLGRIND` set (and the server run under
/// `valgrind --tool=callgrind` through `REDQ_BENCH_REDIS_SERVER`), zeroes or
/// dumps the server's instruction counts, so a profile covers exactly one
/// processing run: instruction counts do not depend on what else the machine
/// is doing. See benches/README.md.
fn callgrind(srv: &Private, action: &str) {
    if std::env::var_os("REDQ_BENCH_CALLGRIND").is_some() {
        let _ = std::process::Command::new("callgrind_control")
            .arg(action)
            .arg(srv.pid().to_string())
            .stdout(std::process::Stdio::null())
            .status();
    }
}

/// Redis's own CPU seconds so far (user + sys, `INFO cpu`).
async fn redis_cpu(srv: &Private) -> Result<f64> {
    let user: f64 = srv
        .info_field("cpu", "used_cpu_user")
        .await?
        .parse()
        .unwrap_or(f64::NAN);
    let sys: f64 = srv
        .info_field("cpu", "used_cpu_sys")
        .await?
        .parse()
        .unwrap_or(f64::NAN);
    Ok(user + sys)
}

/// (c), (g): starts `daemons` daemons with the no-op handler on pre-enqueued
/// jobs and times them until every job's completion is recorded in Redis.
/// With `measure_rss`, also returns the process's peak RSS over the run.
/// With `REDQ_BENCH_PROFILE` set, prints Redis's `INFO commandstats` for the
/// run to stderr.
async fn process(
    srv: &Private,
    queue: &str,
    jobs: u64,
    concurrency: u32,
    daemons: usize,
    measure_rss: bool,
) -> Result<Processed> {
    let cfg = daemon_config(&srv.redis, queue, concurrency, true)?;
    let profile = std::env::var_os("REDQ_BENCH_PROFILE").is_some();
    if profile {
        srv.reset_stats().await?;
    }
    let cpu0 = redis_cpu(srv).await?;
    let own0 = cpu_seconds();
    callgrind(srv, "--zero");
    let reset = measure_rss && reset_peak_rss();
    let started = Instant::now();
    let mut running = Vec::new();
    for _ in 0..daemons.max(1) {
        let daemon = WorkerBuilder::new(cfg.clone()).start().await?;
        let handle = daemon.handle();
        let counters = daemon.counters();
        running.push((handle, counters, tokio::spawn(daemon.run())));
    }
    let succeeded = |running: &[(_, Arc<Counters>, _)]| -> u64 {
        running
            .iter()
            .map(|(_, c, _)| Counters::get(&c.succeeded))
            .sum()
    };
    if let Err(e) = until_done(jobs, "processing", || succeeded(&running)).await {
        for (h, _, _) in &running {
            h.shutdown();
        }
        return Err(e);
    }
    let took = started.elapsed();
    let own1 = cpu_seconds();
    let cpu1 = redis_cpu(srv).await?;
    callgrind(srv, "--dump");
    let rss = if reset { peak_rss_mib() } else { None };
    if profile {
        eprintln!(
            "redq bench: profile, {jobs} jobs, concurrency {concurrency}, {daemons} daemon(s), {:.1} µs Redis CPU per job\n{}",
            (cpu1 - cpu0) * 1e6 / jobs as f64,
            srv.commandstats().await?
        );
    }
    for (h, _, _) in &running {
        h.shutdown();
    }
    let done = succeeded(&running);
    for (_, _, run) in running {
        let _ = run.await;
    }
    let client = Client::open(&srv.redis).await?;
    let s = client.stats(&[queue.to_owned()]).await?;
    let left = s
        .first()
        .map(|s| s.pending + s.active + s.scheduled)
        .unwrap_or(0);
    if left != 0 || done != jobs {
        return Err(err(format!(
            "lost track: {done} of {jobs} jobs succeeded, {left} left in the queue"
        )));
    }
    Ok(Processed {
        took,
        rss,
        redis_us_per_job: (cpu1 - cpu0) * 1e6 / jobs as f64,
        own_us_per_job: (own1 - own0) * 1e6 / jobs as f64,
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// (d): a running, idle daemon with a library handler that records when it
/// starts; jobs are enqueued at a steady rate, each stamped just before its
/// enqueue call on the same clock. Returns p50, p95, p99, max in ms.
async fn latency(redis: &RedisConfig, secs: f64) -> Result<[f64; 5]> {
    let queue = "latency";
    let total = ((secs * LATENCY_RATE as f64).round() as usize).max(1);
    let base = Instant::now();
    let started: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let seen = Arc::new(AtomicU64::new(0));
    let handler = {
        let started = started.clone();
        let seen = seen.clone();
        move |job: JobContext| {
            let at = base.elapsed().as_nanos() as u64;
            if let Ok(i) = job.payload.get().parse::<usize>() {
                if let Some(slot) = started.get(i) {
                    slot.store(at.max(1), Ordering::Relaxed);
                    seen.fetch_add(1, Ordering::Relaxed);
                }
            }
            async { Outcome::Done { result: None } }
        }
    };
    let cfg = daemon_config(redis, queue, 50, false)?;
    let client = Arc::new(Client::open(redis).await?);
    // Warm up: registers the queue, so every timed call is a plain enqueue
    // (the handler ignores this job's payload).
    client.enqueue(queue, NewJob::new(&-1)?).await?;
    let daemon = WorkerBuilder::new(cfg)
        .handler(queue, handler)
        .start()
        .await?;
    let handle = daemon.handle();
    let run = tokio::spawn(daemon.run());
    // Let the daemon settle into idle (blocked waiting for work).
    tokio::time::sleep(Duration::from_millis(500)).await;

    let enqueued: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let returned: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let failures = Arc::new(AtomicU64::new(0));
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / LATENCY_RATE));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for i in 0..total {
        tick.tick().await;
        let job = NewJob::new(&i)?;
        let client = client.clone();
        let (enqueued, returned) = (enqueued.clone(), returned.clone());
        let failures = failures.clone();
        tokio::spawn(async move {
            enqueued[i].store(base.elapsed().as_nanos() as u64, Ordering::Relaxed);
            if client.enqueue(queue, job).await.is_err() {
                failures.fetch_add(1, Ordering::Relaxed);
            }
            returned[i].store(base.elapsed().as_nanos() as u64, Ordering::Relaxed);
        });
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while (seen.load(Ordering::Relaxed) as usize) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    handle.shutdown();
    let _ = run.await;
    let fails = failures.load(Ordering::Relaxed);
    let got = seen.load(Ordering::Relaxed) as usize;
    if fails > 0 || got < total {
        return Err(err(format!(
            "latency: {got} of {total} jobs started, {fails} enqueues failed"
        )));
    }
    // Per job, ms from its enqueue stamp to `until`'s, sorted.
    let spans = |until: &[AtomicU64]| {
        let mut v: Vec<f64> = (0..total)
            .map(|i| {
                let u = until[i].load(Ordering::Relaxed) as f64;
                let e = enqueued[i].load(Ordering::Relaxed) as f64;
                (u - e).max(0.0) / 1e6
            })
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let (ms, calls) = (spans(&started), spans(&returned));
    Ok([
        percentile(&ms, 50.0),
        percentile(&ms, 95.0),
        percentile(&ms, 99.0),
        *ms.last().unwrap_or(&f64::NAN),
        percentile(&calls, 50.0),
    ])
}

/// CPU seconds (user + sys) of this process.
fn cpu_seconds() -> f64 {
    rusage_seconds(libc::RUSAGE_SELF)
}

/// User + sys CPU seconds `getrusage(who)` reports.
fn rusage_seconds(who: libc::c_int) -> f64 {
    // SAFETY: getrusage only writes into the struct we hand it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(who, &mut ru) } != 0 {
        return f64::NAN;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// (f): an idle daemon on empty queues; Redis commands per second (less
/// the one INFO that reads the counter) and this process's CPU share.
async fn idle(srv: &Private, secs: f64) -> Result<(f64, f64)> {
    let cfg = daemon_config(&srv.redis, "idle", 50, true)?;
    let daemon = WorkerBuilder::new(cfg).start().await?;
    let handle = daemon.handle();
    let run = tokio::spawn(daemon.run());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let c0 = srv.info_u64("stats", "total_commands_processed").await?;
    let (t0, cpu0) = (Instant::now(), cpu_seconds());
    tokio::time::sleep(Duration::from_secs_f64(secs.max(0.1))).await;
    let (wall, cpu1) = (t0.elapsed().as_secs_f64(), cpu_seconds());
    let c1 = srv.info_u64("stats", "total_commands_processed").await?;
    handle.shutdown();
    let _ = run.await;
    let cmds = c1.saturating_sub(c0).saturating_sub(1) as f64 / wall;
    Ok((cmds, (cpu1 - cpu0) / wall * 100.0))
}

/// What scenario h measured.
struct ManyIdle {
    cmds: f64,
    redis_cpu: f64,
    cpu: f64,
    rss: f64,
}

/// VmRSS of this process now, MiB.
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// (h): one daemon serving `queues` empty queues (concurrency 10 each, the
/// no-op handler), idle for `secs` after settling for 36 s: Redis commands per
/// second (less the INFO readings), Redis's CPU and this process's, and
/// this process's RSS at the end.
async fn many_queues_idle(srv: &Private, queues: u32, secs: f64) -> Result<ManyIdle> {
    let mut toml = String::from("[daemon]\nlisten = \"127.0.0.1:0\"\n");
    for i in 0..queues {
        toml.push_str(&format!(
            "[queues.q{i:05}]\nconcurrency = 10\nhandler = {{ builtin = \"noop\" }}\n"
        ));
    }
    let mut cfg = config::read_str(&toml)?;
    cfg.redis = srv.redis.clone();
    let daemon = WorkerBuilder::new(cfg).start().await?;
    let handle = daemon.handle();
    let run = tokio::spawn(daemon.run());
    // Settle: the first reads of every queue (due times, depths) are done,
    // and the pools, idle since their first claim, have stopped renewing
    // their hand-off registrations (they do for 30 s after their last job).
    tokio::time::sleep(Duration::from_secs(36)).await;
    let c0 = srv.info_u64("stats", "total_commands_processed").await?;
    let r0 = redis_cpu(srv).await?;
    let (t0, cpu0) = (Instant::now(), cpu_seconds());
    tokio::time::sleep(Duration::from_secs_f64(secs.max(0.1))).await;
    let (wall, cpu1) = (t0.elapsed().as_secs_f64(), cpu_seconds());
    let r1 = redis_cpu(srv).await?;
    let c1 = srv.info_u64("stats", "total_commands_processed").await?;
    let rss = rss_mib();
    handle.shutdown();
    let _ = run.await;
    Ok(ManyIdle {
        // Less the INFO readings counted in the window: the one that read
        // c0 (counted after its reply) and the two pairs for Redis's CPU.
        cmds: c1.saturating_sub(c0).saturating_sub(5) as f64 / wall,
        redis_cpu: (r1 - r0) / wall * 100.0,
        cpu: (cpu1 - cpu0) / wall * 100.0,
        rss,
    })
}

/// Concurrency of scenario i, and of the `xargs -P` it is compared with.
const SPAWN_CONCURRENCY: u32 = 50;

/// What scenario i measured. The CPU figures say what bounds the ratio: on a
/// machine whose cores are all busy, redq's rate over xargs's is at most
/// `xargs_us / (program_us + us_per_job + redis_us)`.
struct SpawnRate {
    /// Jobs per second.
    redq: f64,
    /// This process's own CPU per job, µs.
    us_per_job: f64,
    /// The programs' CPU per job (reaped children), µs.
    program_us: f64,
    /// Redis's CPU per job, µs.
    redis_us: f64,
    /// xargs runs per second.
    xargs: f64,
    /// xargs's CPU and its programs' per run, µs.
    xargs_us: f64,
}

/// CPU seconds of this process's reaped children (and theirs, once reaped).
fn children_cpu_seconds() -> f64 {
    rusage_seconds(libc::RUSAGE_CHILDREN)
}

/// (i): `jobs` pre-enqueued jobs run by the command handler `/bin/true` at
/// concurrency 50 (jobs/s, and this process's own CPU per job: the daemon's
/// spawning, piping and reaping; the programs' CPU is not in it), then
/// `xargs -P50 -n1 /bin/true` over as many arguments (runs/s), in the same
/// run.
async fn spawn_rate(srv: &Private, jobs: u64) -> Result<SpawnRate> {
    let queue = "spawn";
    enqueue_batches(&srv.redis, queue, jobs, false).await?;
    let mut cfg = config::read_str(&format!(
        "[daemon]\nlisten = \"127.0.0.1:0\"\n[queues.{queue}]\nconcurrency = {SPAWN_CONCURRENCY}\n\
         handler = {{ command = [\"/bin/true\"] }}\n"
    ))?;
    cfg.redis = srv.redis.clone();
    let r0 = redis_cpu(srv).await?;
    let (t0, cpu0, kids0) = (Instant::now(), cpu_seconds(), children_cpu_seconds());
    let daemon = WorkerBuilder::new(cfg).start().await?;
    let handle = daemon.handle();
    let counters = daemon.counters();
    let run = tokio::spawn(daemon.run());
    if let Err(e) = until_done(jobs, "spawn rate", || Counters::get(&counters.succeeded)).await {
        handle.shutdown();
        return Err(e);
    }
    let (took, cpu1, kids1) = (t0.elapsed(), cpu_seconds(), children_cpu_seconds());
    let r1 = redis_cpu(srv).await?;
    handle.shutdown();
    let _ = run.await;
    let per_job = |seconds: f64| seconds * 1e6 / jobs as f64;

    let input: String = (0..jobs).map(|i| format!("{i}\n")).collect();
    let kids2 = children_cpu_seconds();
    let xargs = tokio::task::spawn_blocking(move || -> std::io::Result<Duration> {
        use std::io::Write;
        let started = Instant::now();
        let mut child = std::process::Command::new("xargs")
            .args(["-P", &SPAWN_CONCURRENCY.to_string(), "-n", "1", "/bin/true"])
            .stdin(std::process::Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(input.as_bytes())?;
        let status = child.wait()?;
        if !status.success() {
            return Err(std::io::Error::other(format!("xargs: {status}")));
        }
        Ok(started.elapsed())
    })
    .await
    .map_err(|e| err(e.to_string()))?
    .map_err(|e| err(format!("xargs: {e}")))?;
    Ok(SpawnRate {
        redq: per_sec(jobs, took),
        us_per_job: per_job(cpu1 - cpu0),
        program_us: per_job(kids1 - kids0),
        redis_us: per_job(r1 - r0),
        xargs: per_sec(jobs, xargs),
        xargs_us: per_job(children_cpu_seconds() - kids2),
    })
}

/// What scenario j measured.
struct DueAtOnce {
    rate: f64,
    /// Calls over 5 ms in SLOWLOG (wall time: on a busy machine a call
    /// descheduled midway counts too).
    over_5ms: u64,
    longest_ms: f64,
    longest_what: String,
}

/// (j): `jobs` jobs enqueued (1000 per call) to run at one instant, a few
/// seconds after the last enqueue; a daemon at concurrency 200, idle until
/// then, drains them (the promoter and the claims move them into pending).
/// The rate counts from that instant to the last completion; SLOWLOG
/// (every call over 0.5 ms, reset just before the instant) gives the
/// longest single call of the drain.
async fn due_at_once(srv: &Private, jobs: u64) -> Result<DueAtOnce> {
    let queue = "due";
    let client = Client::open(&srv.redis).await?;
    // Room for 50k jobs/s on a busy machine: every job is in before the instant.
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    };
    let at = now_ms() + 3000 + (jobs / 20) as i64;
    let mut i = 0;
    while i < jobs {
        let n = (jobs - i).min(1000);
        let batch = (i..i + n)
            .map(|k| Ok(NewJob::new(&k)?.run_at_ms(at)))
            .collect::<Result<Vec<_>>>()?;
        client.enqueue_many(queue, batch).await?;
        i += n;
    }
    if now_ms() >= at - 1000 {
        return Err(err(
            "due at once: enqueueing took longer than planned; try fewer jobs",
        ));
    }
    let cfg = daemon_config(&srv.redis, queue, 200, true)?;
    let daemon = WorkerBuilder::new(cfg).start().await?;
    let handle = daemon.handle();
    let counters = daemon.counters();
    let run = tokio::spawn(daemon.run());
    let mut con = srv.con();
    let slowlog = |args: &[&str]| {
        let mut c = redis::cmd("SLOWLOG");
        c.arg(args);
        c
    };
    redis::cmd("CONFIG")
        .arg(
            &[
                "SET",
                "slowlog-log-slower-than",
                "500",
                "slowlog-max-len",
                "10000",
            ][..],
        )
        .query_async::<()>(&mut con)
        .await
        .map_err(|e| err(e.to_string()))?;
    let wait = u64::try_from(at - now_ms()).unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(wait.saturating_sub(200))).await;
    slowlog(&["RESET"])
        .query_async::<()>(&mut con)
        .await
        .map_err(|e| err(e.to_string()))?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = Instant::now();
    if let Err(e) = until_done(jobs, "due at once", || Counters::get(&counters.succeeded)).await {
        handle.shutdown();
        return Err(e);
    }
    let took = t0.elapsed();
    let entries: Vec<redis::Value> = slowlog(&["GET", "10000"])
        .query_async(&mut con)
        .await
        .map_err(|e| err(e.to_string()))?;
    handle.shutdown();
    let _ = run.await;
    // Each entry: id, when, µs, [command and arguments], …
    let mut longest = (0i64, String::new());
    let mut over_5ms = 0u64;
    for e in entries {
        let redis::Value::Array(parts) = e else {
            continue;
        };
        let Some(redis::Value::Int(us)) = parts.get(2) else {
            continue;
        };
        if *us > 5000 {
            over_5ms += 1;
        }
        if *us > longest.0 {
            let what = match parts.get(3) {
                Some(redis::Value::Array(args)) => args
                    .iter()
                    .take(2)
                    .filter_map(|a| match a {
                        redis::Value::BulkString(b) => {
                            Some(String::from_utf8_lossy(b).into_owned())
                        }
                        _ => None,
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
                _ => String::new(),
            };
            longest = (*us, what);
        }
    }
    Ok(DueAtOnce {
        rate: per_sec(jobs, took),
        over_5ms,
        longest_ms: longest.0 as f64 / 1000.0,
        longest_what: format!("{:.2} ms: {}", longest.0 as f64 / 1000.0, longest.1),
    })
}

/// Polls `done` every 2 ms until it reaches `jobs`; an error naming `what`
/// when it has not moved for 30 s (the caller then stops its daemons).
async fn until_done(jobs: u64, what: &str, done: impl Fn() -> u64) -> Result<()> {
    let mut last = (0, Instant::now());
    loop {
        let n = done();
        if n >= jobs {
            return Ok(());
        }
        if n != last.0 {
            last = (n, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(30) {
            return Err(err(format!("{what}: stalled at {n} of {jobs} jobs")));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

//! ChasquiMQ's side of `redq bench --compare chasquimq`: the scenarios redq
//! measures, run with ChasquiMQ's Rust engine on the private redis-server
//! `redq bench` started, printing one JSON document on stdout:
//!
//! ```text
//! {"version": "1.3.0", "values": [["a", 412345.6], ["c50", ...], ...]}
//! ```
//!
//! Ids and units are redq's rows (jobs/s, ms, µs, MiB), and the arguments
//! those of `benches/bullmq/bench.js`, so `redq bench` drives both the same
//! way:
//!
//! ```text
//! redq-bench-chasquimq --url redis://127.0.0.1:PORT --jobs 100000 \
//!   --concurrency 50,200 --latency-secs 10 --scenarios a,b,c,d,e
//! ```
//!
//! ChasquiMQ runs in its fastest setting: its events stream off (no `XADD`
//! to `…:events` per job) and no result kept (`store_results` off, the
//! default; an acknowledgement deletes the stream entry with `XACKDEL`).
//! It has no priorities, so c's `p` rows and e's memory with priorities are
//! not measured. It needs Redis 8.6 or newer.
//!
//! It FLUSHALLs the server it is given between scenarios: only ever point
//! it at a throw-away server (`redq bench` gives it its own).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chasquimq::{Bytes, Consumer, ConsumerConfig, HandlerError, Job, Producer, ProducerConfig};
use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};
use tokio_util::sync::CancellationToken;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T> = std::result::Result<T, Error>;

/// Producers of scenario b.
const PRODUCERS: u64 = 50;
/// Jobs per second of scenario d.
const LATENCY_RATE: u64 = 1000;
/// The queue of scenarios a, b, c and e.
const QUEUE: &str = "bench";

struct Args {
    url: String,
    jobs: u64,
    concurrency: Vec<usize>,
    latency_secs: f64,
    scenarios: String,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        url: String::new(),
        jobs: 100_000,
        concurrency: vec![50, 200],
        latency_secs: 10.0,
        scenarios: "a,b,c,d,e".into(),
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let [k, v] = pair else {
            return Err(format!("{} needs a value", pair[0]).into());
        };
        match k.as_str() {
            "--url" => a.url = v.clone(),
            "--jobs" => a.jobs = v.parse()?,
            "--concurrency" => {
                a.concurrency = v
                    .split(',')
                    .map(str::parse)
                    .collect::<std::result::Result<_, _>>()?
            }
            "--latency-secs" => a.latency_secs = v.parse()?,
            "--scenarios" => a.scenarios = v.clone(),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    if a.url.is_empty() {
        return Err("--url is required".into());
    }
    Ok(a)
}

/// The ChasquiMQ version this program is built with: the exact version its
/// Cargo.toml pins, so the report cannot name another.
fn chasquimq_version() -> &'static str {
    include_str!("../Cargo.toml")
        .lines()
        .find_map(|l| l.trim().strip_prefix("chasquimq = \"="))
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or("unknown")
}

fn log(msg: impl std::fmt::Display) {
    eprintln!("chasquimq bench: {msg}");
}

fn per_sec(jobs: u64, took: Duration) -> f64 {
    jobs as f64 / took.as_secs_f64()
}

/// The bench's own connection, for FLUSHALL, INFO and XLEN.
struct Admin {
    client: Client,
}

impl Admin {
    async fn connect(url: &str) -> Result<Admin> {
        let client = Client::new(Config::from_url(url)?, None, None, None);
        client.init().await?;
        Ok(Admin { client })
    }

    async fn flush(&self) -> Result<()> {
        self.client.flushall::<()>(false).await?;
        Ok(())
    }

    /// One field of `INFO <section>`.
    async fn info_field(&self, section: &str, field: &str) -> Result<String> {
        let text: String = self
            .client
            .custom(
                CustomCommand::new_static("INFO", ClusterHash::Random, false),
                vec![section],
            )
            .await?;
        text.lines()
            .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
            .map(|v| v.trim().to_owned())
            .ok_or_else(|| format!("INFO {section} has no {field}").into())
    }

    /// Redis's own CPU seconds so far (user + sys).
    async fn redis_cpu(&self) -> Result<f64> {
        let user: f64 = self.info_field("cpu", "used_cpu_user").await?.parse()?;
        let sys: f64 = self.info_field("cpu", "used_cpu_sys").await?.parse()?;
        Ok(user + sys)
    }

    /// Entries left in a queue's stream (an acknowledged job's entry is
    /// deleted with it).
    async fn stream_len(&self, queue: &str) -> Result<u64> {
        Ok(self
            .client
            .xlen(format!("{{chasqui:{queue}}}:stream"))
            .await?)
    }
}

/// Refuses a server older than 8.6 (ChasquiMQ uses `XACKDEL` and `XADD
/// IDMP`) with a message instead of failing on the first command.
async fn check_version(admin: &Admin) -> Result<()> {
    let v = admin.info_field("server", "redis_version").await?;
    let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) < (8, 6) {
        return Err(format!("ChasquiMQ needs Redis 8.6 or newer; this server is {v}").into());
    }
    Ok(())
}

async fn producer(url: &str, queue: &str) -> Result<Producer<i64>> {
    let cfg = ProducerConfig {
        queue_name: queue.into(),
        ..ProducerConfig::default()
    };
    Ok(Producer::connect(url, cfg).await?)
}

/// A consumer in ChasquiMQ's fastest setting: events off, results not kept.
fn consumer(url: &str, queue: &str, concurrency: usize) -> Consumer<i64> {
    let cfg = ConsumerConfig {
        queue_name: queue.into(),
        concurrency,
        events_enabled: false,
        store_results: false,
        ..ConsumerConfig::default()
    };
    Consumer::new(url, cfg)
}

/// (a) and the fills of (c): `add_bulk`, 1000 jobs per call, one producer.
async fn enqueue_batches(url: &str, jobs: u64) -> Result<Duration> {
    let p = producer(url, QUEUE).await?;
    let started = Instant::now();
    let mut i = 0;
    while i < jobs {
        let n = (jobs - i).min(1000);
        p.add_bulk((i..i + n).map(|k| k as i64).collect()).await?;
        i += n;
    }
    Ok(started.elapsed())
}

/// (b): 50 tasks sharing one producer, each adding its share one at a time.
async fn enqueue_single(url: &str, jobs: u64) -> Result<Duration> {
    let p = Arc::new(producer(url, QUEUE).await?);
    p.add(-1).await?; // warm-up, as on redq's side
    let started = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..PRODUCERS {
        let p = p.clone();
        let share = jobs / PRODUCERS + u64::from(k < jobs % PRODUCERS);
        tasks.push(tokio::spawn(async move {
            for j in 0..share {
                p.add((k * 1_000_000 + j) as i64).await?;
            }
            Ok::<(), chasquimq::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(started.elapsed())
}

/// Resets the process's peak RSS (`VmHWM`); false where the kernel refuses.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

struct Processed {
    took: Duration,
    redis_us_per_job: f64,
    rss: Option<f64>,
}

/// (c): a consumer with a no-op handler on `jobs` pre-added jobs, timed from
/// its start until the last one's acknowledgement has reached Redis (the
/// handler has run `jobs` times and the stream is empty).
async fn process(
    admin: &Admin,
    url: &str,
    jobs: u64,
    concurrency: usize,
    rss: bool,
) -> Result<Processed> {
    let ran = Arc::new(AtomicU64::new(0));
    let handler = {
        let ran = ran.clone();
        move |_job: Job<i64>| {
            ran.fetch_add(1, Ordering::Relaxed);
            async { Ok::<Bytes, HandlerError>(Bytes::new()) }
        }
    };
    let cpu0 = admin.redis_cpu().await?;
    let reset = rss && reset_peak_rss();
    let stop = CancellationToken::new();
    let started = Instant::now();
    let run = tokio::spawn(consumer(url, QUEUE, concurrency).run(handler, stop.clone()));
    let waited = async {
        until(jobs, "processing", || ran.load(Ordering::Relaxed)).await?;
        loop {
            if admin.stream_len(QUEUE).await? == 0 {
                return Ok::<(), Error>(());
            }
            if started.elapsed() > Duration::from_secs(600) {
                return Err("processing: the stream never emptied".into());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    .await;
    let took = started.elapsed();
    let cpu1 = admin.redis_cpu().await?;
    let rss = if reset { peak_rss_mib() } else { None };
    stop.cancel();
    let _ = run.await;
    waited?;
    let n = ran.load(Ordering::Relaxed);
    if n != jobs {
        return Err(format!("processing: the handler ran {n} times for {jobs} jobs").into());
    }
    Ok(Processed {
        took,
        redis_us_per_job: (cpu1 - cpu0) * 1e6 / jobs as f64,
        rss,
    })
}

/// Polls `done` every 2 ms until it reaches `jobs`; an error naming `what`
/// when it has not moved for 30 s.
async fn until(jobs: u64, what: &str, done: impl Fn() -> u64) -> Result<()> {
    let mut last = (0, Instant::now());
    loop {
        let n = done();
        if n >= jobs {
            return Ok(());
        }
        if n != last.0 {
            last = (n, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(30) {
            return Err(format!("{what}: stalled at {n} of {jobs} jobs").into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// (d): an idle running consumer (concurrency 50) whose handler stamps its
/// start; jobs added one at a time at a steady 1000/s, each stamped just
/// before its add call, on the same clock. Returns p50, p95, p99, max in ms.
async fn latency(url: &str, secs: f64) -> Result<[f64; 4]> {
    let queue = "latency";
    let total = ((secs * LATENCY_RATE as f64).round() as usize).max(1);
    let base = Instant::now();
    let stamps =
        |n: usize| -> Arc<Vec<AtomicU64>> { Arc::new((0..n).map(|_| AtomicU64::new(0)).collect()) };
    let (started, enqueued) = (stamps(total), stamps(total));
    let seen = Arc::new(AtomicU64::new(0));
    let handler = {
        let (started, seen) = (started.clone(), seen.clone());
        move |job: Job<i64>| {
            let at = base.elapsed().as_nanos() as u64;
            if let Some(slot) = usize::try_from(job.payload)
                .ok()
                .and_then(|i| started.get(i))
            {
                if slot.swap(at.max(1), Ordering::Relaxed) == 0 {
                    seen.fetch_add(1, Ordering::Relaxed);
                }
            }
            async { Ok::<Bytes, HandlerError>(Bytes::new()) }
        }
    };
    let p = Arc::new(producer(url, queue).await?);
    p.add(-1).await?; // warm-up: the handler ignores this job
    let stop = CancellationToken::new();
    let run = tokio::spawn(consumer(url, queue, 50).run(handler, stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await; // settle into idle

    let failures = Arc::new(AtomicU64::new(0));
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / LATENCY_RATE));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for i in 0..total {
        tick.tick().await;
        let (p, enqueued, failures) = (p.clone(), enqueued.clone(), failures.clone());
        tokio::spawn(async move {
            enqueued[i].store(base.elapsed().as_nanos() as u64, Ordering::Relaxed);
            if p.add(i as i64).await.is_err() {
                failures.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while (seen.load(Ordering::Relaxed) as usize) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.cancel();
    let _ = run.await;
    let (fails, got) = (
        failures.load(Ordering::Relaxed),
        seen.load(Ordering::Relaxed) as usize,
    );
    if fails > 0 || got < total {
        return Err(format!("latency: {got} of {total} jobs started, {fails} adds failed").into());
    }
    let mut ms: Vec<f64> = (0..total)
        .map(|i| {
            let s = started[i].load(Ordering::Relaxed) as f64;
            let e = enqueued[i].load(Ordering::Relaxed) as f64;
            (s - e).max(0.0) / 1e6
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    Ok([
        percentile(&ms, 50.0),
        percentile(&ms, 95.0),
        percentile(&ms, 99.0),
        *ms.last().unwrap_or(&f64::NAN),
    ])
}

async fn run(args: &Args) -> Result<Vec<(String, f64)>> {
    let has = |s: &str| args.scenarios.split(',').any(|x| x.trim() == s);
    let admin = Admin::connect(&args.url).await?;
    check_version(&admin).await?;
    let (url, n) = (args.url.as_str(), args.jobs);
    let mut values = Vec::new();
    if has("a") {
        admin.flush().await?;
        values.push(("a".into(), per_sec(n, enqueue_batches(url, n).await?)));
    }
    if has("b") {
        admin.flush().await?;
        values.push(("b".into(), per_sec(n, enqueue_single(url, n).await?)));
    }
    let mut rss_c200 = None;
    if has("c") {
        for &c in &args.concurrency {
            admin.flush().await?;
            enqueue_batches(url, n).await?;
            let measure = c == 200 && has("e");
            let run = process(&admin, url, n, c, measure).await?;
            if measure {
                rss_c200 = run.rss;
            }
            values.push((format!("c{c}"), per_sec(n, run.took)));
            values.push((format!("c{c}_rcpu"), run.redis_us_per_job));
        }
    }
    if has("d") {
        admin.flush().await?;
        let [p50, p95, p99, max] = latency(url, args.latency_secs).await?;
        for (id, v) in [
            ("d_p50", p50),
            ("d_p95", p95),
            ("d_p99", p99),
            ("d_max", max),
        ] {
            values.push((id.into(), v));
        }
    }
    if has("e") {
        if rss_c200.is_none() {
            admin.flush().await?;
            enqueue_batches(url, n).await?;
            rss_c200 = process(&admin, url, n, 200, true).await?.rss;
        }
        if let Some(rss) = rss_c200 {
            values.push(("e_rss".into(), rss));
        }
    }
    admin.flush().await?;
    Ok(values)
}

#[tokio::main]
async fn main() {
    let result = match parse_args() {
        Ok(args) => run(&args).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(values) => {
            let doc = serde_json::json!({ "version": chasquimq_version(), "values": values });
            println!("{doc}");
        }
        Err(e) => {
            log(e);
            std::process::exit(1);
        }
    }
}

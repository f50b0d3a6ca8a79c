//! The daemon's Prometheus metrics: job outcomes, duration histograms, queue
//! gauges and daemon-wide gauges (rendered by `render.rs`).
//!
//! Invariants:
//! - Recording is cheap: a read lock and a hash lookup by `&str`, then
//!   relaxed atomic adds. The only allocation is the first use of a queue name.
//! - Label sets are bounded: `queue` (names from the config; at most
//!   [`MAX_QUEUES`] distinct, later ones are counted in
//!   `redq_metrics_dropped_total` and otherwise ignored), `outcome` and `state`
//!   (fixed enums), `le`, `version`, `duty` (fixed in code). Never job ids or tenants.
//! - A scrape reads atomics only; it never touches Redis. Queue depth gauges
//!   are whatever the daemon last passed to [`Metrics::set_queue_depths`].
//!
//! Called by the daemon (recording) and `http.rs` (`/metrics`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::histogram::{Histogram, Window};

/// At most this many distinct queue label values are kept.
pub const MAX_QUEUES: usize = 1024;

/// How a job attempt ended, as counted in `redq_jobs_total{outcome}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobOutcome {
    /// The handler succeeded and the job completed.
    Succeeded,
    /// The attempt failed and a retry was scheduled.
    Failed,
    /// The job went to the dead set.
    Dead,
    /// The job was given back to pending without spending an attempt at
    /// shutdown (stopped, or handed to the daemon as it stopped). Jobs put
    /// back unstarted because they came beyond the free slots are
    /// `redq_jobs_returned_unstarted_total`, not this.
    Released,
    /// The lease could not be renewed; another worker may own the job now.
    LeaseLost,
    /// Redis refused a write made with a stale fence.
    StaleRefused,
    /// The job was cancelled while it ran; its handler was stopped.
    Cancelled,
}

impl JobOutcome {
    /// Every outcome, in rendering order.
    pub const ALL: [JobOutcome; 7] = [
        JobOutcome::Succeeded,
        JobOutcome::Failed,
        JobOutcome::Dead,
        JobOutcome::Released,
        JobOutcome::LeaseLost,
        JobOutcome::StaleRefused,
        JobOutcome::Cancelled,
    ];

    /// The `outcome` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            JobOutcome::Succeeded => "succeeded",
            JobOutcome::Failed => "failed",
            JobOutcome::Dead => "dead",
            JobOutcome::Released => "released",
            JobOutcome::LeaseLost => "lease_lost",
            JobOutcome::StaleRefused => "stale_refused",
            JobOutcome::Cancelled => "cancelled",
        }
    }
}

/// How a reload ended: `redq_config_reloads_total{result}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reload {
    /// The new configuration runs.
    Applied = 0,
    /// The file was refused (invalid, or a start-only setting changed); the
    /// running configuration stays.
    Refused = 1,
    /// Accepted, but applying it failed part-way (Redis unreachable).
    Failed = 2,
}

impl Reload {
    pub const ALL: [Reload; 3] = [Reload::Applied, Reload::Refused, Reload::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            Reload::Applied => "applied",
            Reload::Refused => "refused",
            Reload::Failed => "failed",
        }
    }
}

/// How a job reached this daemon: `redq_jobs_started_total{via}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// Taken by the daemon's own claim.
    Claim = 0,
    /// Leased to it by an enqueue while it was idle (direct hand-off).
    Handoff = 1,
}

impl Start {
    pub const ALL: [Start; 2] = [Start::Claim, Start::Handoff];

    pub fn as_str(self) -> &'static str {
        match self {
            Start::Claim => "claim",
            Start::Handoff => "handoff",
        }
    }
}

/// A queue's depth by state, read from Redis by the daemon (O(1) reads).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueDepths {
    pub pending: u64,
    pub scheduled: u64,
    pub active: u64,
    pub dead: u64,
    pub inbox: u64,
    pub rejected: u64,
    /// Age of the oldest pending job; `None` when nothing is pending (rendered as 0).
    pub oldest_pending_age: Option<Duration>,
    /// Jobs ever cancelled by hand (`cancelled_total` of the queue's meta).
    pub cancelled_total: u64,
}

pub(super) const STATES: [&str; 6] = [
    "pending",
    "scheduled",
    "active",
    "dead",
    "inbox",
    "rejected",
];

pub(super) struct QueueMetrics {
    pub(super) outcomes: [AtomicU64; JobOutcome::ALL.len()],
    /// Made at the queue's first finished job: ~1 KiB of buckets that a
    /// daemon serving many quiet queues would otherwise hold for each
    /// (issue 19: 1000 idle queues).
    timings: std::sync::OnceLock<Box<Timings>>,
    pub(super) in_flight: AtomicU64,
    /// Jobs started, in [`Start::ALL`] order.
    pub(super) started: [AtomicU64; 2],
    /// Jobs put back to pending unstarted: they came beyond the free slots.
    pub(super) returned_unstarted: AtomicU64,
    /// In [`STATES`] order.
    pub(super) depths: [AtomicU64; STATES.len()],
    /// `redq_queue_cancelled_total`: as last read from Redis.
    pub(super) cancelled_total: AtomicU64,
    pub(super) depths_known: AtomicBool,
    pub(super) oldest_pending_micros: AtomicU64,
    /// Command handler runs measured, and what they used (sums).
    pub(super) command_runs: AtomicU64,
    pub(super) command_cpu_micros: AtomicU64,
    pub(super) command_output_bytes: AtomicU64,
    /// The largest peak RSS of one run, KiB.
    pub(super) command_max_rss_kib: AtomicU64,
}

/// A queue's duration histograms.
struct Timings {
    wait: Histogram,
    run: Histogram,
    end_to_end: Histogram,
    /// Run times since the last summary line, for its p50/p99.
    run_window: Window,
}

/// What a queue's histograms read before its first finished job.
static NO_OBSERVATIONS: Histogram = Histogram::new();

impl QueueMetrics {
    /// The queue's histograms, made on first use.
    fn timings(&self) -> &Timings {
        self.timings.get_or_init(|| {
            Box::new(Timings {
                wait: Histogram::new(),
                run: Histogram::new(),
                end_to_end: Histogram::new(),
                run_window: Window::new(),
            })
        })
    }

    fn observed(&self, pick: impl Fn(&Timings) -> &Histogram) -> &Histogram {
        self.timings
            .get()
            .map_or(&NO_OBSERVATIONS, |t| pick(t.as_ref()))
    }

    pub(super) fn wait(&self) -> &Histogram {
        self.observed(|t| &t.wait)
    }

    pub(super) fn run(&self) -> &Histogram {
        self.observed(|t| &t.run)
    }

    pub(super) fn end_to_end(&self) -> &Histogram {
        self.observed(|t| &t.end_to_end)
    }

    fn new() -> Self {
        QueueMetrics {
            outcomes: std::array::from_fn(|_| AtomicU64::new(0)),
            timings: std::sync::OnceLock::new(),
            in_flight: AtomicU64::new(0),
            started: std::array::from_fn(|_| AtomicU64::new(0)),
            returned_unstarted: AtomicU64::new(0),
            depths: std::array::from_fn(|_| AtomicU64::new(0)),
            cancelled_total: AtomicU64::new(0),
            depths_known: AtomicBool::new(false),
            oldest_pending_micros: AtomicU64::new(0),
            command_runs: AtomicU64::new(0),
            command_cpu_micros: AtomicU64::new(0),
            command_output_bytes: AtomicU64::new(0),
            command_max_rss_kib: AtomicU64::new(0),
        }
    }
}

/// All of the daemon's metrics. Share it as `Arc<Metrics>`; every method takes `&self`.
pub struct Metrics {
    pub(super) started: Instant,
    pub(super) version: String,
    pub(super) queues: RwLock<HashMap<Box<str>, Box<QueueMetrics>>>,
    pub(super) dropped: AtomicU64,
    pub(super) redis_up: AtomicBool,
    /// `redq_redis_data_lost_total`: times Redis was found without redq's data.
    pub(super) redis_data_lost: AtomicU64,
    /// `f64` bits of the last round-trip time in seconds; NaN until measured.
    pub(super) redis_rtt_bits: AtomicU64,
    /// `redq_config_reloads_total{result}`, in [`Reload::ALL`] order.
    pub(super) reloads: [AtomicU64; 3],
    /// `redq_leader{duty}`: duty names are fixed in code, so the labels are bounded.
    pub(super) leader: RwLock<BTreeMap<&'static str, bool>>,
}

impl Metrics {
    /// Creates the metrics of a daemon of this build `version`; uptime counts from now.
    pub fn new(version: &str) -> Arc<Metrics> {
        Arc::new(Metrics {
            started: Instant::now(),
            version: version.to_owned(),
            queues: RwLock::new(HashMap::new()),
            dropped: AtomicU64::new(0),
            redis_up: AtomicBool::new(false),
            redis_data_lost: AtomicU64::new(0),
            redis_rtt_bits: AtomicU64::new(f64::NAN.to_bits()),
            reloads: std::array::from_fn(|_| AtomicU64::new(0)),
            leader: RwLock::new(BTreeMap::new()),
        })
    }

    /// Makes `queue`'s series appear (at zero) before its first job. Optional.
    pub fn register_queue(&self, queue: &str) {
        self.with_queue(queue, |_| {});
    }

    /// Adds `n` to `redq_jobs_total{queue, outcome}`.
    pub fn job_outcome(&self, queue: &str, outcome: JobOutcome, n: u64) {
        self.with_queue(queue, |q| {
            q.outcomes[outcome as usize].fetch_add(n, Relaxed);
        });
    }

    /// Adds `n` to `redq_jobs_started_total{queue, via}`.
    pub fn jobs_started(&self, queue: &str, via: Start, n: u64) {
        self.with_queue(queue, |q| {
            q.started[via as usize].fetch_add(n, Relaxed);
        });
    }

    /// Adds `n` to `redq_jobs_returned_unstarted_total{queue}`.
    pub fn returned_unstarted(&self, queue: &str, n: u64) {
        if n > 0 {
            self.with_queue(queue, |q| {
                q.returned_unstarted.fetch_add(n, Relaxed);
            });
        }
    }

    /// The current value of `redq_jobs_total{queue, outcome}` (0 for an unknown queue).
    pub fn jobs_total(&self, queue: &str, outcome: JobOutcome) -> u64 {
        read(&self.queues)
            .get(queue)
            .map_or(0, |q| q.outcomes[outcome as usize].load(Relaxed))
    }

    /// Records one finished attempt: queue wait (enqueue → start) and
    /// end-to-end time when known, and run time (also fed to the p50/p99 window).
    pub fn observe_job(
        &self,
        queue: &str,
        wait: Option<Duration>,
        run: Duration,
        end_to_end: Option<Duration>,
    ) {
        self.with_queue(queue, |q| {
            let t = q.timings();
            if let Some(wait) = wait {
                t.wait.observe(wait);
            }
            t.run.observe(run);
            t.run_window.observe(run);
            if let Some(e2e) = end_to_end {
                t.end_to_end.observe(e2e);
            }
        });
    }

    /// Adds what one command handler run used: CPU (user + system), output
    /// bytes, and its peak RSS to the per-queue maximum.
    pub fn add_resources(&self, queue: &str, r: &crate::handler::Resources) {
        self.with_queue(queue, |q| {
            let cpu = ((r.user_cpu_seconds + r.sys_cpu_seconds).max(0.0) * 1e6) as u64;
            q.command_runs.fetch_add(1, Relaxed);
            q.command_cpu_micros.fetch_add(cpu, Relaxed);
            q.command_output_bytes
                .fetch_add(r.stdout_bytes + r.stderr_bytes, Relaxed);
            q.command_max_rss_kib.fetch_max(r.max_rss_kib, Relaxed);
        });
    }

    /// Run-time histogram of a queue as per-bucket (not cumulative) counts,
    /// in the order of [`Metrics::run_bucket_bounds`] plus a last `+Inf` bucket.
    pub fn run_time_buckets(&self, queue: &str) -> Option<Vec<u64>> {
        let map = self.queues.read().ok()?;
        Some(per_bucket(map.get(queue)?.run()))
    }

    /// The queue-wait histogram (enqueue or due time → start) of a queue,
    /// as [`Metrics::run_time_buckets`] gives run times.
    pub fn wait_time_buckets(&self, queue: &str) -> Option<Vec<u64>> {
        let map = self.queues.read().ok()?;
        Some(per_bucket(map.get(queue)?.wait()))
    }

    /// Upper bounds (seconds) of the run-time buckets, without `+Inf`.
    pub fn run_bucket_bounds() -> &'static [f64] {
        &super::histogram::BUCKETS
    }

    /// Sets `redq_jobs_in_flight{queue}`.
    pub fn set_in_flight(&self, queue: &str, n: u64) {
        self.with_queue(queue, |q| q.in_flight.store(n, Relaxed));
    }

    /// Sets `redq_queue_jobs{queue, state}` and `redq_queue_oldest_pending_age_seconds{queue}`.
    pub fn set_queue_depths(&self, queue: &str, d: &QueueDepths) {
        self.with_queue(queue, |q| {
            let values = [
                d.pending,
                d.scheduled,
                d.active,
                d.dead,
                d.inbox,
                d.rejected,
            ];
            for (slot, v) in q.depths.iter().zip(values) {
                slot.store(v, Relaxed);
            }
            let age = d.oldest_pending_age.unwrap_or(Duration::ZERO);
            let age = u64::try_from(age.as_micros()).unwrap_or(u64::MAX);
            q.oldest_pending_micros.store(age, Relaxed);
            // A counter: an idle queue's poll reads no meta and passes 0,
            // which must not lower it.
            q.cancelled_total.fetch_max(d.cancelled_total, Relaxed);
            q.depths_known.store(true, Relaxed);
        });
    }

    /// Counts one reload (SIGHUP) by how it ended.
    pub fn reloaded(&self, result: Reload) {
        self.reloads[result as usize].fetch_add(1, Relaxed);
    }

    /// Counts one more time Redis was found without redq's data.
    pub fn redis_data_lost(&self) {
        self.redis_data_lost.fetch_add(1, Relaxed);
    }

    /// Sets `redq_redis_up`, and `redq_redis_rtt_seconds` when a round trip was measured
    /// (otherwise the last measurement stays).
    pub fn set_redis(&self, up: bool, rtt: Option<Duration>) {
        self.redis_up.store(up, Relaxed);
        if let Some(rtt) = rtt {
            self.redis_rtt_bits
                .store(rtt.as_secs_f64().to_bits(), Relaxed);
        }
    }

    /// Sets `redq_leader{duty}`: whether this daemon holds the leader lease of `duty`.
    pub fn set_leader(&self, duty: &'static str, leader: bool) {
        let mut map = self.leader.write().unwrap_or_else(|e| e.into_inner());
        map.insert(duty, leader);
    }

    /// Estimated (p50, p99) of `queue`'s run times since the previous call,
    /// from a reset-on-read histogram with ×1.25 buckets (so within ~25 %).
    /// `None` when no job of `queue` ran in between.
    pub fn run_time_quantiles(&self, queue: &str) -> Option<(Duration, Duration)> {
        read(&self.queues)
            .get(queue)?
            .timings
            .get()?
            .run_window
            .take_p50_p99()
    }

    /// Runs `f` on `queue`'s metrics, creating them on first use (up to [`MAX_QUEUES`]).
    fn with_queue(&self, queue: &str, f: impl FnOnce(&QueueMetrics)) {
        if let Some(q) = read(&self.queues).get(queue) {
            f(q);
            return;
        }
        let mut map = self.queues.write().unwrap_or_else(|e| e.into_inner());
        if !map.contains_key(queue) && map.len() >= MAX_QUEUES {
            self.dropped.fetch_add(1, Relaxed);
            return;
        }
        f(map
            .entry(queue.into())
            .or_insert_with(|| Box::new(QueueMetrics::new())));
    }
}

/// A read guard that survives poisoning: the map holds only atomics, so a
/// panic elsewhere cannot leave it half-updated.
pub(super) fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

/// A histogram's per-bucket (not cumulative) counts.
fn per_bucket(h: &super::histogram::Histogram) -> Vec<u64> {
    let mut prev = 0;
    h.snapshot()
        .cumulative
        .iter()
        .map(|c| {
            let n = c.saturating_sub(prev);
            prev = *c;
            n
        })
        .collect()
}

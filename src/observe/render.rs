//! [`Metrics::render`]: every metric in the Prometheus text exposition format
//! (0.0.4), each family opened by `# HELP` and `# TYPE`.
//!
//! Invariants: reads atomics only (under the queue map's read lock, so
//! recording into known queues is never blocked); queues are rendered in name
//! order so scrapes diff cleanly; all samples of a family are contiguous.
//! Depth gauges appear only for queues whose depths the daemon has set.

use std::sync::atomic::Ordering::Relaxed;

use super::histogram::{Histogram, BUCKET_LABELS};
use super::metrics::{read, JobOutcome, Metrics, QueueMetrics, Reload, Start, MAX_QUEUES, STATES};
use super::text::{header, sample};

/// Picks one of a queue's histograms.
type Pick = fn(&QueueMetrics) -> &Histogram;

const HISTOGRAMS: [(&str, &str, Pick); 3] = [
    (
        "redq_job_wait_seconds",
        "Time from enqueue (or run_at) to start.",
        |q| q.wait(),
    ),
    (
        "redq_job_run_seconds",
        "Time a handler ran, per attempt.",
        |q| q.run(),
    ),
    (
        "redq_job_end_to_end_seconds",
        "Time from enqueue to completion.",
        |q| q.end_to_end(),
    ),
];

/// A per-queue command handler series: name, type, help, value.
type CommandSeries = (
    &'static str,
    &'static str,
    &'static str,
    fn(&QueueMetrics) -> f64,
);

impl Metrics {
    /// Every metric in the Prometheus text exposition format (0.0.4).
    pub fn render(&self) -> String {
        let map = read(&self.queues);
        let mut queues: Vec<(&str, &QueueMetrics)> =
            map.iter().map(|(k, v)| (&**k, &**v)).collect();
        queues.sort_unstable_by_key(|(name, _)| *name);
        let mut out = String::with_capacity(4096 + queues.len() * 6144);
        let out_ = &mut out;

        let name = "redq_jobs_total";
        let help =
            "Job attempts finished, by queue and outcome (released: given back at shutdown).";
        header(out_, name, "counter", help);
        for (queue, q) in &queues {
            for outcome in JobOutcome::ALL {
                let labels = [("queue", *queue), ("outcome", outcome.as_str())];
                sample(
                    out_,
                    name,
                    &labels,
                    q.outcomes[outcome as usize].load(Relaxed),
                );
            }
        }

        let name = "redq_jobs_started_total";
        let help = "Jobs started by this daemon, by queue and how they came: its own claim, or a direct hand-off from an enqueue.";
        header(out_, name, "counter", help);
        for (queue, q) in &queues {
            for via in Start::ALL {
                let labels = [("queue", *queue), ("via", via.as_str())];
                sample(out_, name, &labels, q.started[via as usize].load(Relaxed));
            }
        }

        let name = "redq_jobs_returned_unstarted_total";
        let help = "Jobs put back at the head of pending without starting or spending an attempt, because they came beyond the free slots (a direct hand-off and this daemon's own claim crossed).";
        header(out_, name, "counter", help);
        for (queue, q) in &queues {
            sample(
                out_,
                name,
                &[("queue", *queue)],
                q.returned_unstarted.load(Relaxed),
            );
        }

        for (name, help, pick) in HISTOGRAMS {
            header(out_, name, "histogram", help);
            let bucket = format!("{name}_bucket");
            let (sum, count) = (format!("{name}_sum"), format!("{name}_count"));
            for (queue, q) in &queues {
                let s = pick(q).snapshot();
                for (le, c) in BUCKET_LABELS.iter().zip(s.cumulative) {
                    sample(out_, &bucket, &[("queue", queue), ("le", le)], c);
                }
                sample(out_, &sum, &[("queue", queue)], s.sum_seconds);
                sample(out_, &count, &[("queue", queue)], s.count);
            }
        }

        let known: Vec<&(&str, &QueueMetrics)> = queues
            .iter()
            .filter(|(_, q)| q.depths_known.load(Relaxed))
            .collect();
        let name = "redq_queue_jobs";
        let help = "Jobs in a queue by state, as last read from Redis.";
        header(out_, name, "gauge", help);
        for (queue, q) in &known {
            for (state, v) in STATES.iter().zip(&q.depths) {
                let labels = [("queue", *queue), ("state", state)];
                sample(out_, name, &labels, v.load(Relaxed));
            }
        }
        let name = "redq_queue_oldest_pending_age_seconds";
        let help = "Age of the oldest pending job (0 when none).";
        header(out_, name, "gauge", help);
        for (queue, q) in &known {
            let secs = q.oldest_pending_micros.load(Relaxed) as f64 / 1e6;
            sample(out_, name, &[("queue", queue)], secs);
        }
        let name = "redq_queue_cancelled_total";
        let help = "Jobs of a queue ever cancelled by hand (pending, scheduled or running), \
                    by any daemon or client, as last read from Redis.";
        header(out_, name, "counter", help);
        for (queue, q) in &known {
            sample(
                out_,
                name,
                &[("queue", queue)],
                q.cancelled_total.load(Relaxed),
            );
        }
        let name = "redq_jobs_in_flight";
        header(out_, name, "gauge", "Jobs this daemon is running now.");
        for (queue, q) in &queues {
            sample(out_, name, &[("queue", queue)], q.in_flight.load(Relaxed));
        }

        let command: [CommandSeries; 4] = [
            (
                "redq_command_runs_total",
                "counter",
                "Command handler runs measured.",
                |q| q.command_runs.load(Relaxed) as f64,
            ),
            (
                "redq_command_cpu_seconds_total",
                "counter",
                "User plus system CPU of command handler runs.",
                |q| q.command_cpu_micros.load(Relaxed) as f64 / 1e6,
            ),
            (
                "redq_command_output_bytes_total",
                "counter",
                "Bytes command handlers wrote to stdout and stderr.",
                |q| q.command_output_bytes.load(Relaxed) as f64,
            ),
            (
                "redq_command_max_rss_bytes",
                "gauge",
                "Largest peak RSS of one command handler run.",
                |q| q.command_max_rss_kib.load(Relaxed) as f64 * 1024.0,
            ),
        ];
        for (name, kind, help, value) in command {
            header(out_, name, kind, help);
            for (queue, q) in &queues {
                sample(out_, name, &[("queue", queue)], value(q));
            }
        }

        self.render_daemon(out_);
        out
    }

    fn render_daemon(&self, out: &mut String) {
        let name = "redq_redis_rtt_seconds";
        header(out, name, "gauge", "Last measured Redis round-trip time.");
        let rtt = f64::from_bits(self.redis_rtt_bits.load(Relaxed));
        if rtt.is_finite() {
            sample(out, name, &[], rtt);
        }
        let name = "redq_redis_up";
        let help = "1 when the last Redis check succeeded, else 0.";
        header(out, name, "gauge", help);
        sample(out, name, &[], u8::from(self.redis_up.load(Relaxed)));
        let name = "redq_redis_data_lost_total";
        let help =
            "Times Redis was found without redq's data (a restart without persistence, a flush).";
        header(out, name, "counter", help);
        sample(out, name, &[], self.redis_data_lost.load(Relaxed));
        let name = "redq_config_reloads_total";
        let help = "Configuration reloads (SIGHUP) by result: applied; refused (the running configuration stays); failed part-way.";
        header(out, name, "counter", help);
        for r in Reload::ALL {
            sample(
                out,
                name,
                &[("result", r.as_str())],
                self.reloads[r as usize].load(Relaxed),
            );
        }
        let name = "redq_uptime_seconds";
        header(out, name, "gauge", "Seconds since the daemon started.");
        sample(out, name, &[], self.started.elapsed().as_secs_f64());
        let name = "redq_build_info";
        let help = "Always 1; the version label names the build.";
        header(out, name, "gauge", help);
        sample(out, name, &[("version", &self.version)], 1);
        let leader = read(&self.leader).clone();
        if !leader.is_empty() {
            let name = "redq_leader";
            let help = "1 while this daemon holds the leader lease of the duty, else 0.";
            header(out, name, "gauge", help);
            for (duty, held) in leader {
                sample(out, name, &[("duty", duty)], u8::from(held));
            }
        }
        let name = "redq_metrics_dropped_total";
        let help = format!("Metric updates ignored because over {MAX_QUEUES} queues were seen.");
        header(out, name, "counter", &help);
        sample(out, name, &[], self.dropped.load(Relaxed));
    }
}

//! What the daemon shows about itself: the `/metrics`, `/healthz`, `/readyz`
//! listener; a poller that refreshes queue depths and Redis round-trip time
//! (O(1) reads, every few seconds, so a scrape never touches Redis; empty
//! queues cost nothing per queue, see [`poll_once`]); systemd
//! STATUS and WATCHDOG; and the summary log line every `stats_interval`.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::{notify, probe, trim, Counters, QueueRt};
use crate::config::DaemonConfig;
use crate::error::{Error, Result};
use crate::inspect;
use crate::observe::{self, JobOutcome, QueueDepths};

/// The poller's name in `/healthz`.
pub const LOOP: &str = "queue poller";
/// How often queue depths and Redis RTT are read.
pub const POLL: Duration = Duration::from_secs(5);
/// Every how many polls the function library is checked (and reloaded if lost).
const LIBRARY_EVERY: u32 = 6;

/// Binds `daemon.listen` and serves metrics and health until `stop`.
pub async fn start_http(
    cfg: &DaemonConfig,
    shared: &Arc<Shared>,
    stop: CancellationToken,
) -> Result<(JoinHandle<()>, std::net::SocketAddr)> {
    let addr = observe::check_listen(&cfg.listen, cfg.listen_public).map_err(Error::Config)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Config(format!("daemon.listen: cannot listen on {addr}: {e}")))?;
    let bound = listener.local_addr().unwrap_or(addr);
    tracing::info!(%bound, "serving /metrics, /healthz and /readyz");
    let (metrics, health) = (shared.metrics.clone(), shared.health.clone());
    let task = tokio::spawn(async move {
        if let Err(e) = observe::serve(listener, metrics, health, stop).await {
            tracing::error!(error = %e, "metrics listener failed");
        }
    });
    Ok((task, bound))
}

/// Reads depths and the head-of-queue age of every queue, and times the
/// round trip. Queues that hold nothing (no key but their settings and
/// the `active` pin) are found with one `EXISTS` and one `ZUNION` over all
/// of them ([`crate::store::Store::which_exist`]) and read as zeros; only
/// the others have their depths read one by one, so an idle daemon's poll
/// costs Redis the same however many queues it serves.
async fn poll_once(shared: &Shared, queues: &[Arc<QueueRt>]) -> Result<(Duration, Vec<u64>)> {
    if queues.is_empty() {
        // Nothing to read: time one round trip all the same.
        let sent = Instant::now();
        shared.store.time_ms().await?;
        return Ok((sent.elapsed(), Vec::new()));
    }
    let groups: Vec<Vec<String>> = queues.iter().map(|q| q.keys.depth_keys()).collect();
    let (mut holding, rtt) = shared.store.which_exist(&groups).await?;
    let empty: Vec<usize> = (0..queues.len()).filter(|i| !holding[*i]).collect();
    if !empty.is_empty() {
        let actives: Vec<&str> = empty.iter().map(|i| queues[*i].keys.active()).collect();
        let leased = shared.store.which_hold_leases(&actives).await?;
        for (i, l) in empty.into_iter().zip(leased) {
            holding[i] = l;
        }
    }
    let read: Vec<&Arc<QueueRt>> = queues
        .iter()
        .zip(&holding)
        .filter(|(_, h)| **h)
        .map(|(q, _)| q)
        .collect();
    let keys: Vec<_> = read.iter().map(|q| q.keys.clone()).collect();
    let (stats, heads) = if keys.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        (
            inspect::stats(&shared.store, &keys).await?,
            inspect::head_ages(&shared.store, &keys).await?,
        )
    };
    let mut read_depths = stats.iter().zip(heads);
    let mut pending = Vec::with_capacity(queues.len());
    for (q, h) in queues.iter().zip(&holding) {
        let depths = match h.then(|| read_depths.next()).flatten() {
            Some((s, head)) => QueueDepths {
                pending: s.pending,
                scheduled: s.scheduled,
                active: s.active,
                dead: s.dead,
                inbox: s.inbox,
                rejected: s.rejected,
                oldest_pending_age: head,
                cancelled_total: s.cancelled_total,
            },
            // Nothing there: zeros (the cancellation count, a counter,
            // keeps the last value read; see Metrics::set_queue_depths).
            None => QueueDepths::default(),
        };
        pending.push(depths.pending);
        shared.metrics.set_queue_depths(&q.name, &depths);
    }
    Ok((rtt, pending))
}

/// The first summary line comes this soon after start (or after
/// `stats_interval`, if shorter), so the first minutes are not silent.
pub const FIRST_SUMMARY: Duration = Duration::from_secs(10);

/// When the first summary line comes.
pub fn first_summary_after(stats_interval: Duration) -> Duration {
    stats_interval.min(FIRST_SUMMARY)
}

/// Reads depths and Redis's round trip once, before the daemon reports
/// ready, so the first scrape has every gauge.
pub async fn prime(shared: &Shared) {
    let queues = shared.queues();
    match poll_once(shared, &queues).await {
        Ok((rtt, _)) => shared.metrics.set_redis(true, Some(rtt)),
        Err(e) => tracing::debug!(error = %e, "reading queue depths at start failed"),
    }
}

/// The poller loop, with STATUS, WATCHDOG and the summary line.
pub async fn run(shared: Arc<Shared>, stats_interval: Duration, stop: CancellationToken) {
    let watchdog = notify::watchdog_interval();
    let tick = watchdog.map(|w| w / 2).unwrap_or(POLL).min(POLL);
    let mut last_summary = Instant::now();
    // The first summary comes early; the rest every `stats_interval`.
    let mut next_after = first_summary_after(stats_interval);
    let mut last: BTreeMap<Arc<str>, (u64, u64)> = BTreeMap::new();
    let mut polls: u32 = 0;
    let mut epoch = probe::mark(&shared).await;
    let mut trimmer = trim::Trimmer::default();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(tick) => {}
        }
        let queues = shared.queues();
        let mut failure = None;
        let (rtt, pending) = match poll_once(&shared, &queues).await {
            Ok((rtt, pending)) => (Some(rtt), pending),
            Err(e) => {
                tracing::debug!(error = %e, "polling queue depths failed");
                failure = Some(e.to_string());
                (None, Vec::new())
            }
        };
        // Redis's state goes out with the depths just set, before the
        // library check below (another round trip), so a scrape never sees
        // fresh depths beside a stale `redq_redis_up`.
        shared.metrics.set_redis(rtt.is_some(), rtt);
        shared.health.set_redis_ok(rtt.is_some());
        if failure.is_some() {
            shared.health.set_redis_error(failure);
        }
        if rtt.is_some() {
            probe::check(&shared, &mut epoch).await;
        }
        polls = polls.wrapping_add(1);
        if rtt.is_some() && polls % LIBRARY_EVERY == 1 {
            // A library deleted by itself (a transition finding the
            // internal one gone restores both at once): put it back so
            // FCALL producers keep working, or say who must.
            shared.store.restore_public_library().await;
        }
        trimmer.tick(&shared.counters);
        shared.health.beat(LOOP);
        notify::status(&status_line(&shared));
        let (healthy, body) = shared.health.healthz();
        if healthy {
            notify::watchdog();
        } else {
            tracing::error!(%body, "loops are not making progress; not petting the systemd watchdog");
        }
        if last_summary.elapsed() >= next_after {
            summary(
                &shared,
                &queues,
                &pending,
                last_summary.elapsed(),
                rtt,
                &mut last,
            );
            last_summary = Instant::now();
            next_after = stats_interval;
        }
    }
}

/// One line per interval: per queue throughput, failures, depth, run-time
/// p50/p99; and Redis RTT.
fn summary(
    shared: &Shared,
    queues: &[Arc<QueueRt>],
    pending: &[u64],
    took: Duration,
    rtt: Option<Duration>,
    last: &mut BTreeMap<Arc<str>, (u64, u64)>,
) {
    let secs = took.as_secs_f64().max(0.001);
    let mut parts = Vec::new();
    for (i, q) in queues.iter().enumerate() {
        let m = &shared.metrics;
        let done = m.jobs_total(&q.name, JobOutcome::Succeeded);
        let failed =
            m.jobs_total(&q.name, JobOutcome::Failed) + m.jobs_total(&q.name, JobOutcome::Dead);
        let (d0, f0) = last
            .insert(q.name.clone(), (done, failed))
            .unwrap_or((0, 0));
        let pct = m
            .run_time_quantiles(&q.name)
            .map(|(p50, p99)| format!(" p50={:.1}ms p99={:.1}ms", ms(p50), ms(p99)))
            .unwrap_or_default();
        parts.push(format!(
            "{}: {:.1}/s ok, {} failed, {} pending, {} running{pct}",
            q.name,
            (done - d0) as f64 / secs,
            failed - f0,
            pending.get(i).map_or("?".to_owned(), |n| n.to_string()),
            q.in_flight.load(Ordering::Relaxed)
        ));
    }
    let rtt = rtt
        .map(|r| format!("{:.2}ms", ms(r)))
        .unwrap_or_else(|| "unreachable".into());
    tracing::info!(redis_rtt = %rtt, "summary: {}", parts.join("; "));
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The one-line STATUS for systemd; it leads with a failed reload's
/// reason until a reload applies.
pub fn status_line(shared: &Shared) -> String {
    let c = &shared.counters;
    let reload = shared
        .reload_error
        .lock()
        .ok()
        .and_then(|r| r.clone())
        .map(|e| {
            let first = e.lines().next().unwrap_or_default().to_owned();
            let more = e.lines().count().saturating_sub(1);
            if more > 0 {
                format!("{first} (and {more} more problems, see the log); ")
            } else {
                format!("{first}; ")
            }
        })
        .unwrap_or_default();
    format!(
        "{reload}{} running; {} succeeded, {} retried, {} dead since start; Redis {}",
        c.running.load(Ordering::Relaxed),
        Counters::get(&c.succeeded),
        Counters::get(&c.retried),
        Counters::get(&c.dead),
        if shared.health.readyz().1["redis"] == true {
            "ok"
        } else {
            "unreachable"
        },
    )
}

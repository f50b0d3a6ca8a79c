//! Runs one claimed job: handler, time-out, stop signals, then one report.
//!
//! A handler runs in its own task, so a panic is caught and counted as a
//! failed attempt. What is reported depends on why the handler ended:
//! lease lost → nothing (another worker owns the job now); shutdown →
//! release (no attempt spent); otherwise the outcome, with failures turned
//! into a retry with backoff or, out of attempts, the dead set.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::time::Instant;
use tracing::Instrument;

use super::leases::{self, Leases, Stop, StopReason};
use super::writer::{Release, Report, Spent};
use super::{backoff, Counters, QueueRt};
use crate::handler::{JobContext, Outcome, RunReport};
use crate::observe::JobOutcome;
use crate::store::{ClaimedJob, Store};

/// Runs `job` to its end and reports it to the queue's writer.
pub async fn run(
    rt: Arc<QueueRt>,
    store: Option<Store>,
    job: ClaimedJob,
    claimed_ms: i64,
    lease_deadline: Instant,
    leases: Leases,
    counters: Arc<Counters>,
) {
    let span = tracing::info_span!("job", queue = %rt.name, id = %job.id, attempt = job.attempt);
    counters.running.fetch_add(1, Ordering::Relaxed);
    let in_flight = rt.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
    rt.metrics.set_in_flight(&rt.name, in_flight);
    let enqueued_ms = job.record.as_ref().map(|r| r.enqueued_ms).ok();
    let started = Instant::now();
    let ran = run_inner(&rt, store.as_ref(), job, lease_deadline, &leases, &counters)
        .instrument(span)
        .await;
    let in_flight = rt
        .in_flight
        .fetch_sub(1, Ordering::Relaxed)
        .saturating_sub(1);
    rt.metrics.set_in_flight(&rt.name, in_flight);
    counters.running.fetch_sub(1, Ordering::Relaxed);
    if ran {
        // Queue wait on Redis's clock (enqueue, or due time for delayed
        // jobs, included), then run time on ours.
        let wait = enqueued_ms
            .and_then(|e| u64::try_from(claimed_ms - e).ok())
            .map(Duration::from_millis);
        let run = started.elapsed();
        rt.metrics
            .observe_job(&rt.name, wait, run, wait.map(|w| w + run));
    }
}

async fn run_inner(
    rt: &Arc<QueueRt>,
    store: Option<&Store>,
    mut job: ClaimedJob,
    lease_deadline: Instant,
    leases: &Leases,
    counters: &Counters,
) -> bool {
    let stop = Stop::default();
    let lease = leases.insert(rt, &job.id, job.fence, lease_deadline, stop.clone());
    if let Ok(r) = &mut job.record {
        if let (true, Some(store)) = (r.payload_apart, store) {
            // A big payload is kept apart from the record (see
            // job::PAYLOAD_APART_BYTES): one HGET, on the shared connection,
            // where the reads of jobs starting together go out together.
            match store.payload(&rt.keys, &job.id).await {
                Ok(Some(p)) => {
                    if let Err(why) = r.set_payload(p) {
                        job.record = Err(why);
                    }
                }
                // Deleted or cancelled since the claim (then the report
                // below changes nothing: the fence is gone), or lost.
                Ok(None) => {
                    job.record = Err(
                        "its payload, kept apart in the queue's `payloads` hash, is missing".into(),
                    )
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the job's payload; returning the job unstarted");
                    rt.writer.send(Report::Release {
                        id: job.id,
                        fence: job.fence,
                        why: Release::NoFreeSlot,
                    });
                    return false;
                }
            }
        }
    }
    let record = match job.record {
        Ok(r) => r,
        Err(reason) => {
            tracing::warn!(%reason, "job record cannot be read; moving it to the dead set");
            rt.writer.send(Report::Fail {
                id: job.id,
                fence: job.fence,
                retry_in: None,
                error: format!("job record cannot be read: {reason}"),
                unique: None,
                outcome_ttl: rt.cfg.outcome_ttl,
                spent: None,
            });
            return false;
        }
    };
    let doc = record.doc;
    let timeout = doc
        .timeout_ms
        .map(Duration::from_millis)
        .unwrap_or(rt.cfg.effective_timeout());
    let ctx = JobContext {
        id: job.id.clone(),
        queue: rt.name.to_string(),
        attempt: job.attempt,
        tenant: doc.tenant.clone(),
        fence: job.fence,
        payload: doc.payload,
        timeout,
        cancel: stop.cancel.clone(),
    };
    tracing::debug!("started");
    let started = Instant::now();
    let RunReport {
        outcome,
        usage,
        resources,
    } = supervise(rt, ctx, &stop, timeout, lease).await;
    let run = started.elapsed();
    if let Some(r) = &resources {
        rt.metrics.add_resources(&rt.name, r);
        tracing::debug!(
            wall_ms = (r.wall_seconds * 1000.0) as u64,
            user_cpu_ms = (r.user_cpu_seconds * 1000.0) as u64,
            sys_cpu_ms = (r.sys_cpu_seconds * 1000.0) as u64,
            max_rss_kib = r.max_rss_kib,
            exit_code = r.exit_code,
            signal = r.signal,
            stdout_bytes = r.stdout_bytes,
            stderr_bytes = r.stderr_bytes,
            "resources"
        );
    }
    let spent = Spent {
        tenant: doc.tenant,
        run,
        usage: crate::usage::sanitize(&usage),
        resources,
    };
    let unique = doc.unique_key;
    let outcome_ttl = doc
        .outcome_ttl_ms
        .map(Duration::from_millis)
        .or(rt.cfg.outcome_ttl);
    let (id, fence) = (job.id, job.fence);
    match stop.reason() {
        StopReason::Cancelled => {
            tracing::info!("stopped: the job was cancelled; nothing is written");
            rt.metrics.job_outcome(&rt.name, JobOutcome::Cancelled, 1);
            leases.remove(&rt.name, &[&id]);
            return true;
        }
        StopReason::LeaseLost => {
            tracing::warn!("stopped: lease lost; the result is not written");
            counters.add(&counters.lease_lost, 1);
            rt.metrics.job_outcome(&rt.name, JobOutcome::LeaseLost, 1);
            leases.remove(&rt.name, &[&id]);
            return true;
        }
        StopReason::Shutdown => {
            tracing::info!("stopped by shutdown; giving the job back");
            rt.writer.send(Report::Release {
                id,
                fence,
                why: Release::Shutdown,
            });
            return true;
        }
        StopReason::Timeout | StopReason::None => {}
    }
    let max_attempts = if record.max_attempts > 0 {
        record.max_attempts
    } else {
        rt.cfg.max_attempts
    };
    // A failed attempt is retried after a delay, or buried (`None`).
    let (retry_in, error) = match outcome {
        Outcome::Done { result } => {
            tracing::debug!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "succeeded"
            );
            rt.writer.send(Report::Complete {
                id,
                fence,
                unique,
                result,
                outcome_ttl,
                spent,
            });
            return true;
        }
        Outcome::Dead { error } => {
            tracing::warn!(%error, "failed for good; moving it to the dead set");
            (None, error)
        }
        Outcome::Fail { error } | Outcome::Retry { error, .. } if job.attempt >= max_attempts => {
            tracing::warn!(%error, "failed on the last attempt ({max_attempts}); moving it to the dead set");
            (
                None,
                format!("attempt {} of {max_attempts}: {error}", job.attempt),
            )
        }
        Outcome::Fail { error } => {
            let delay = backoff::delay(&rt.cfg.backoff, job.attempt);
            tracing::info!(%error, retry_in_ms = delay.as_millis() as u64, "failed; will retry");
            (Some(delay), error)
        }
        Outcome::Retry { after, error } => {
            let delay = if after.is_zero() {
                backoff::delay(&rt.cfg.backoff, job.attempt)
            } else {
                after
            };
            tracing::info!(%error, retry_in_ms = delay.as_millis() as u64, "asked to retry later");
            (Some(delay), error)
        }
    };
    let report = Report::Fail {
        id,
        fence,
        retry_in,
        error,
        unique,
        outcome_ttl,
        spent: Some(spent),
    };
    rt.writer.send(report);
    true
}

/// Runs the handler (in the job's span) and waits for it, its time-out, a
/// stop, or the end of its lease. The handler's future is polled here, in
/// the runner's task, not spawned: a job starts without a second task hop.
/// A panic is caught as a failed attempt. A handler stopped by a time-out or
/// a shutdown gets its grace period to clean up (a command handler signals
/// its process group) and is dropped after it. A job whose lease is lost, or
/// about to lapse ([`leases::self_fence_margin`] before the local deadline),
/// is dropped at once: another worker may take it over, so nothing of it may
/// go on (dropping a command handler SIGKILLs its process group).
async fn supervise(
    rt: &QueueRt,
    ctx: JobContext,
    stop: &Stop,
    timeout: Duration,
    lease: tokio::sync::watch::Receiver<Instant>,
) -> RunReport {
    let handler = rt.handler.clone();
    let mut task = std::pin::pin!(std::panic::AssertUnwindSafe(
        async move { handler.run(ctx).await }
    )
    .catch_unwind()
    .in_current_span());
    let mut lease_ends = std::pin::pin!(leases::lease_ends(
        lease,
        leases::self_fence_margin(rt.cfg.lease)
    ));
    let fence = |stop: &Stop| {
        tracing::warn!("lease about to lapse (renewals failed); stopping the job at once");
        stop.stop(StopReason::LeaseLost);
    };
    let joined = tokio::select! {
        r = &mut task => Some(r),
        _ = tokio::time::sleep(timeout) => {
            stop.stop(StopReason::Timeout);
            None
        }
        _ = &mut lease_ends => {
            fence(stop);
            None
        }
        _ = stop.cancel.cancelled() => None,
    };
    // Returning drops the handler's future.
    let lost = || Outcome::Fail {
        error: "lease lost".into(),
    };
    if matches!(stop.reason(), StopReason::LeaseLost | StopReason::Cancelled) {
        // One last poll, so a handler sees ctx.cancel and does what it does
        // at once (a command handler sends SIGTERM), then it is dropped (a
        // command handler's process group gets SIGKILL): no grace.
        let _ = (&mut task).now_or_never();
        return lost().into();
    }
    let joined = match joined {
        Some(r) => r,
        // Stopped: the handler was told through ctx.cancel; give it a grace
        // period to clean up (a command handler kills its process group),
        // unless the lease ends first.
        None => tokio::select! {
            r = &mut task => r,
            _ = tokio::time::sleep(rt.grace) => {
                return Outcome::Fail {
                    error: format!(
                        "handler did not stop within {:?} of being told to",
                        rt.grace
                    ),
                }
                .into();
            }
            _ = &mut lease_ends => {
                fence(stop);
                let _ = (&mut task).now_or_never();
                return lost().into();
            }
        },
    };
    let mut report = match joined {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Outcome::Fail {
                error: format!("handler panicked: {msg}"),
            }
            .into()
        }
    };
    if stop.reason() == StopReason::Timeout {
        // Keep what the run reported and used; only the outcome is the time-out.
        report.outcome = Outcome::Fail {
            error: format!("timed out after {}", humantime::format_duration(timeout)),
        };
    }
    report
}

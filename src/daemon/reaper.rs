//! The reaper: every `reap_interval`, rescues jobs whose lease expired, on
//! every queue this daemon serves. Many daemons may reap at once: the script
//! hands each expired job to exactly one of them.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::dead_retention;
use super::supervisor::Shared;

/// Expired jobs handled per call; a queue with more is reaped again at once.
const BATCH: usize = 200;

/// The reaper's name in `/healthz`.
pub const LOOP: &str = "reaper";

pub async fn run(shared: Arc<Shared>, every: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let queues = shared.queues();
        let expired = match earliest_expired(&shared, &queues).await {
            Ok(flags) => flags,
            Err(e) => {
                tracing::debug!(error = %e, "reading lease deadlines failed");
                vec![true; queues.len()]
            }
        };
        for (q, _) in queues.iter().zip(expired).filter(|(_, e)| *e) {
            loop {
                match shared
                    .store
                    .reap(&q.keys, BATCH, q.cfg.max_attempts, dead_retention(&q.cfg))
                    .await
                {
                    Ok((requeued, dead)) => {
                        if requeued + dead > 0 {
                            tracing::warn!(queue = %q.name, requeued, dead, "rescued jobs whose lease expired");
                        }
                        if (requeued + dead) < BATCH as u64 {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(queue = %q.name, error = %e, "reaping failed");
                        break;
                    }
                }
            }
        }
        shared.health.beat(LOOP);
    }
}

/// Per queue, whether its earliest lease deadline has passed on Redis's clock:
/// one pipeline (TIME and the head of each `active` set), so an idle daemon
/// runs the reap script only where a lease has actually expired.
async fn earliest_expired(
    shared: &Shared,
    queues: &[Arc<super::QueueRt>],
) -> crate::Result<Vec<bool>> {
    let mut pipe = redis::pipe();
    pipe.cmd("TIME");
    for q in queues {
        pipe.cmd("ZRANGE")
            .arg(q.keys.active())
            .arg(0)
            .arg(0)
            .arg("WITHSCORES");
    }
    let reply: Vec<redis::Value> = pipe.query_async(&mut shared.store.connection()).await?;
    let (now_ms, heads) = crate::store::split_time(reply, "reaper")?;
    let now_ms = now_ms as f64;
    let parse = |e: redis::ParsingError| crate::Error::protocol("reaper", e.to_string());
    heads
        .into_iter()
        .map(|v| {
            let head: Vec<(String, f64)> = redis::from_redis_value(v).map_err(parse)?;
            Ok(head
                .first()
                .is_some_and(|(_, deadline)| *deadline <= now_ms))
        })
        .collect()
}

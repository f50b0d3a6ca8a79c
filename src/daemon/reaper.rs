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
        for q in shared.queues() {
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

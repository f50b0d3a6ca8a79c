//! The reaper: every `reap_interval`, rescues jobs whose lease expired, on
//! every queue this daemon serves. Many daemons may reap at once: the script
//! hands each expired job to exactly one of them.
//!
//! What it reads each tick does not grow with the number of idle queues:
//! the queues where the last look found leases ("busy") have the first
//! deadline of their `active` set read one by one; the others are asked
//! together whether any of them holds a lease now (one `ZUNION`, see
//! [`crate::store::Store::which_hold_leases`]), and those that do are busy
//! from then on, read one by one in the same tick. A busy queue whose set
//! holds no lease any more goes back to the others.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::dead_retention;
use super::Shared;

/// Expired jobs handled per call; a queue with more is reaped again at once.
const BATCH: usize = 200;

/// The reaper's name in `/healthz`.
pub const LOOP: &str = "reaper";

/// How often the reaper reads Redis's clock; in between it adds the offset
/// it measured to the local clock.
const CLOCK_SYNC: Duration = Duration::from_secs(60);

/// Redis's clock as seen from here: Redis ms minus local Unix ms, when read.
#[derive(Default)]
struct Clock {
    offset_ms: Option<i64>,
    synced: Option<Instant>,
}

impl Clock {
    fn due(&self) -> bool {
        self.offset_ms.is_none() || self.synced.is_none_or(|s| s.elapsed() >= CLOCK_SYNC)
    }

    fn local_ms() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }

    fn sync(&mut self, redis_ms: i64) {
        self.offset_ms = Some(redis_ms - Self::local_ms());
        self.synced = Some(Instant::now());
    }

    fn redis_now(&self) -> i64 {
        Self::local_ms() + self.offset_ms.unwrap_or(0)
    }
}

pub async fn run(shared: Arc<Shared>, every: Duration, stop: CancellationToken) {
    let mut clock = Clock::default();
    // Queues whose last look found leases (by name).
    let mut busy: HashSet<Arc<str>> = HashSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let all = shared.queues();
        busy.retain(|name| all.iter().any(|q| &q.name == name));
        let idle: Vec<&Arc<super::QueueRt>> =
            all.iter().filter(|q| !busy.contains(&q.name)).collect();
        if !idle.is_empty() {
            let actives: Vec<&str> = idle.iter().map(|q| q.keys.active()).collect();
            match shared.store.which_hold_leases(&actives).await {
                Ok(found) => {
                    for (q, leased) in idle.iter().zip(found) {
                        if leased {
                            busy.insert(q.name.clone());
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "looking for leases failed");
                    shared.health.beat(LOOP);
                    continue;
                }
            }
        }
        let queues: Vec<Arc<super::QueueRt>> = all
            .iter()
            .filter(|q| busy.contains(&q.name))
            .cloned()
            .collect();
        if queues.is_empty() {
            shared.health.beat(LOOP);
            continue;
        }
        let expired = match earliest_expired(&shared, &queues, &mut clock, &mut busy).await {
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
                    .reap(
                        &q.keys,
                        BATCH,
                        q.cfg.max_attempts,
                        dead_retention(&q.cfg),
                        crate::store::TAKEOVER_GRACE,
                    )
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

/// Per queue, whether its earliest lease deadline has passed, by the
/// takeover grace, on Redis's clock: one pipeline (the first deadline of
/// each `active` set, and Redis's TIME once a minute), so the reap script
/// runs only where a lease has actually expired. A queue with no lease left
/// leaves `busy`. Between
/// readings Redis's clock is the local clock plus the offset last measured;
/// an error of a few ms only moves when the script is called, and the
/// script decides on Redis's own clock.
async fn earliest_expired(
    shared: &Shared,
    queues: &[Arc<super::QueueRt>],
    clock: &mut Clock,
    busy: &mut HashSet<Arc<str>>,
) -> crate::Result<Vec<bool>> {
    if queues.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<&crate::keys::QueueKeys> = queues.iter().map(|q| &q.keys).collect();
    let (now, deadlines) = shared
        .store
        .first_lease_deadlines(&keys, clock.due())
        .await?;
    if let Some(now) = now {
        clock.sync(now);
    }
    // Leases count as expired TAKEOVER_GRACE after their deadline (reap.lua).
    let now_ms = clock.redis_now() - crate::store::TAKEOVER_GRACE.as_millis() as i64;
    Ok(queues
        .iter()
        .zip(deadlines)
        .map(|(q, d)| {
            if d.is_none() {
                busy.remove(&q.name);
            }
            d.is_some_and(|deadline| deadline <= now_ms)
        })
        .collect())
}

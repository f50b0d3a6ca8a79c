//! The daemon's checks of Redis itself, run by the observer every poll:
//! whether Redis takes writes now, and whether it still holds redq's data.
//!
//! - Writes: a no-op write ([`crate::store::Store::probe`]) must be answered
//!   within [`WRITE_PROBE_WITHIN`]. A Redis under `CLIENT PAUSE WRITE`, or a
//!   replica that a failover left read-only, answers PING and reads but moves
//!   no job; `/readyz` then says not ready (`"writes": false`).
//! - Data: the first daemon writes a random epoch mark
//!   ([`crate::keys::epoch`]); each daemon remembers the mark it saw. When the
//!   mark vanishes or changes, Redis lost what it held (a restart without
//!   persistence, a flush, a failover to an empty replica): the daemon logs an
//!   error, counts `redq_redis_data_lost_total`, and writes again what it owns
//!   (the queues' settings, the registry, the function libraries), so the
//!   queues run under their limits at once, not after a restart.

use std::sync::Arc;
use std::time::Duration;

use super::Shared;

/// How long the write probe may take before Redis counts as not taking writes.
pub const WRITE_PROBE_WITHIN: Duration = Duration::from_secs(2);

/// A new epoch mark: unique per daemon start.
fn new_mark() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Writes the epoch mark unless one exists and returns the mark Redis holds
/// (`None` when it cannot be written now, e.g. at maxmemory: tried again at
/// the next check).
pub async fn mark(shared: &Shared) -> Option<String> {
    match shared.store.mark_epoch(&new_mark()).await {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::debug!(error = %e, "cannot write the epoch mark yet");
            None
        }
    }
}

/// One check (see the module doc); `known` is the epoch mark this daemon saw.
pub async fn check(shared: &Arc<Shared>, known: &mut Option<String>) {
    let found = match tokio::time::timeout(WRITE_PROBE_WITHIN, shared.store.probe()).await {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => {
            if shared.health.readyz().1["writes"] == true {
                tracing::warn!(error = %e, "Redis refused a write; not ready until it takes writes again");
            }
            shared.health.set_writes_ok(false);
            return;
        }
        Err(_) => {
            if shared.health.readyz().1["writes"] == true {
                tracing::warn!(
                    "Redis took no write within {WRITE_PROBE_WITHIN:?} (CLIENT PAUSE? a replica?); \
                     not ready until it takes writes again"
                );
            }
            shared.health.set_writes_ok(false);
            return;
        }
    };
    shared.health.set_writes_ok(true);
    match known.as_deref() {
        None => *known = mark(shared).await,
        Some(k) if found.as_deref() == Some(k) => {}
        Some(_) => {
            tracing::error!(
                "Redis lost redq's data (restarted without persistence, flushed, or failed over to an \
                 empty replica): the jobs it held are gone. Writing the queues' settings and the \
                 function libraries again. Turn on appendonly to keep jobs across restarts."
            );
            shared.metrics.redis_data_lost();
            *known = mark(shared).await;
            restore(shared).await;
        }
    }
}

/// Writes again what the daemon owns in Redis.
async fn restore(shared: &Shared) {
    if let Err(e) = shared.set_up_queues().await {
        tracing::warn!(error = %e, "cannot write the queues' settings again; retrying at the next check");
    }
    // The queues' set-up ran transitions, which load the internal library
    // (and the public one with it) when this user may; the public one again
    // in case no queue is set up, or to say (once) who must load it.
    shared.store.restore_public_library().await;
}

//! The idle look: every `inbox_poll`, one look for all idle pools at once
//! for work no wake-up announced, so an idle daemon's looks cost Redis the
//! same however many queues it serves.
//!
//! A pool with nothing to claim says so here ([`Looker::watch`]) with the
//! keys that mean work for it: each queue's `inbox` (documents a plain
//! `LPUSH` put there wake nobody), its `pending` index (jobs whose wake-up
//! another, busy daemon consumed; not while the queue's rate limit holds
//! them back) and, with tenant limits, `tenant_due` (parked tenants). The
//! look is one `EXISTS` over all of them ([`Store::which_exist`]: empty
//! lists and sorted sets do not exist in Redis); only when it counts
//! something are the queues halved until the ones with work are found, and
//! their pools are woken to claim. A pool that claims leaves the watch
//! ([`Looker::unwatch`]) and comes back when it is idle again.
//!
//! It replaces a look per pool per tick (two or three reads per queue),
//! which with 1000 queues was 2000–3000 commands a second. On Redis
//! Cluster the look is one `EXISTS` per slot, so per queue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// One idle pool: what to wake, and per queue the keys that mean work.
struct Watched {
    wake: Arc<Notify>,
    groups: Vec<Vec<String>>,
}

/// The idle pools, by pool name (unique per pool, see `Pool::handoff_name`).
#[derive(Default)]
pub struct Looker {
    idle: Mutex<HashMap<Arc<str>, Watched>>,
}

impl Looker {
    /// Pool `name` is idle: wake it through `wake` when one of `groups` (per
    /// queue, the keys that mean work) holds something.
    pub fn watch(&self, name: &Arc<str>, wake: &Arc<Notify>, groups: Vec<Vec<String>>) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.insert(
                name.clone(),
                Watched {
                    wake: wake.clone(),
                    groups,
                },
            );
        }
    }

    /// Pool `name` is no longer idle (it claims, or stops).
    pub fn unwatch(&self, name: &str) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.remove(name);
        }
    }

    /// One look: wakes the idle pools whose queues have work. On an error
    /// every idle pool is woken: its claim meets the error and reports it
    /// (health, retries), as it would have met it itself.
    async fn look(&self, store: &Store) {
        let (wakes, groups, owners) = {
            let Ok(idle) = self.idle.lock() else { return };
            let mut wakes = Vec::with_capacity(idle.len());
            let mut groups = Vec::new();
            let mut owners = Vec::new();
            for w in idle.values() {
                for g in &w.groups {
                    groups.push(g.clone());
                    owners.push(wakes.len());
                }
                wakes.push(w.wake.clone());
            }
            (wakes, groups, owners)
        };
        if groups.is_empty() {
            return;
        }
        match store.which_exist(&groups).await {
            Ok((found, _)) => {
                let mut woken = vec![false; wakes.len()];
                for (owner, hit) in owners.iter().zip(found) {
                    if hit && !woken[*owner] {
                        woken[*owner] = true;
                        wakes[*owner].notify_one();
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "the idle look failed; waking the idle pools");
                for w in &wakes {
                    w.notify_one();
                }
            }
        }
    }
}

/// The look loop: every `every` until `stop`.
pub async fn run(store: Store, looker: Arc<Looker>, every: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        looker.look(&store).await;
    }
}

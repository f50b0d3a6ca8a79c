//! A leader lease: one of several processes runs a duty, chosen by a
//! [`crate::lock`] held in Redis and renewed in the background.
//!
//! [`Leader::start`]`(store, "name", ttl)` spawns a task that tries to take
//! the lock `<prefix>:lock:{leader:<name>}` with a TTL when it is free, and
//! while it holds it renews it every TTL/3. Whether this process leads is
//! cheap to read ([`Leader::fence`], [`Leader::is_leader`]) and to wait on
//! ([`Leader::watch`], then [`LeaderWatch::changed`]). [`Leader::step_down`]
//! releases the lock (compare-and-delete) so a successor takes over at its
//! next try (within TTL/3) instead of after the TTL.
//!
//! ```no_run
//! # async fn example(store: redq::store::Store) -> redq::Result<()> {
//! use std::time::Duration;
//! use redq::leader::Leader;
//!
//! let leader = Leader::start(store, "cleanup", Duration::from_secs(10))?;
//! let mut watch = leader.watch();
//! loop {
//!     if let Some(fence) = watch.fence() {
//!         // Lead: run one round of the duty, idempotent or passing `fence` on.
//!     }
//!     // Wake on a change, and look again at least every second: a term
//!     // that lapses by the local horizon alone wakes nobody.
//!     let _ = tokio::time::timeout(Duration::from_secs(1), watch.changed()).await;
//! #   break;
//! }
//! leader.step_down().await;
//! # Ok(())
//! # }
//! ```
//!
//! It errs on the side of "not leader". Each grant or renewal is counted from
//! the moment the request was *sent* (Redis starts the TTL later than that),
//! and this process claims leadership only until half the TTL after that
//! moment, by the local monotonic clock. A renewal answered later than that
//! counts as lost, as does one refused or failed: the state turns to `None` at
//! once and the task contends again like any other process. The local horizon
//! is checked on every read, so a starved task cannot stretch it.
//!
//! What it guarantees: while one Redis primary keeps its data and clocks run
//! at roughly the same rate, at most one process sees itself leader of a name
//! at a time, as measured by Redis's clock; each new term gets a larger
//! fencing number than every earlier one.
//!
//! What it does not: it is a lease, not consensus. A process paused longer
//! than the horizon (GC-like stalls, a suspended VM) between reading
//! [`Leader::fence`] and acting on it can act after a successor took over, so
//! a duty must be idempotent or hand the fencing number to the resource it
//! writes. A Redis failover with asynchronous replication can lose the lock
//! and grant it twice. A leader that dies without stepping down blocks the
//! duty until its lock expires (up to the TTL). A reply lost on the network
//! can leave the lock held by nobody who knows it, until the TTL.
//!
//! In the daemon it picks the one daemon that evaluates cron: daemons with
//! the same `[[cron]]` entries share the lease `leader:cron:<hash of the
//! entries>` with TTL `daemon.leader_ttl`, and a daemon steps down first
//! thing when it shuts down; `redq_leader{duty="cron"}` in `/metrics` is 1 on
//! the leader. Exactly-once ticks do not rest on the lease (a compare-and-set
//! in Redis does that; see `daemon::cron`). Every other background duty runs
//! on every daemon.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::lock::{self, Acquired, LockGuard};
use crate::store::Store;

/// The shortest TTL accepted: shorter ones leave no room for a round trip.
pub const MIN_TTL: Duration = Duration::from_millis(100);

/// One term of leadership as the lease task last saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Term {
    fence: u64,
    /// Leadership is claimed until this local instant at the latest.
    until: Instant,
}

fn current(term: &Option<Term>) -> Option<u64> {
    term.filter(|t| Instant::now() < t.until).map(|t| t.fence)
}

/// A running leader lease. Dropping it stops contending and releases the
/// lock in the background; [`Leader::step_down`] does the same and waits.
pub struct Leader {
    name: String,
    state: watch::Receiver<Option<Term>>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

/// A cheap, clonable view of a [`Leader`]'s state, for the tasks that run the duty.
#[derive(Clone)]
pub struct LeaderWatch {
    state: watch::Receiver<Option<Term>>,
}

impl LeaderWatch {
    /// The fencing number of the current term while this process is leader.
    pub fn fence(&self) -> Option<u64> {
        current(&self.state.borrow())
    }

    pub fn is_leader(&self) -> bool {
        self.fence().is_some()
    }

    /// Waits until leadership is gained or lost; false once the lease task has
    /// ended (after a step-down). A term that lapses by the local horizon
    /// alone, without the task noticing yet, does not wake this: poll
    /// [`LeaderWatch::fence`] with a bound as well.
    pub async fn changed(&mut self) -> bool {
        self.state.changed().await.is_ok()
    }
}

impl Leader {
    /// Starts contending for `name` (1–121 of `A-Z a-z 0-9 _ . - :`) with
    /// lease `ttl` (at least [`MIN_TTL`]).
    pub fn start(store: Store, name: &str, ttl: Duration) -> Result<Leader> {
        let lock_name = format!("leader:{name}");
        // Checks the name the same way a lock does.
        lock::check_name(&lock_name)?;
        if ttl < MIN_TTL {
            return Err(crate::Error::Config(format!(
                "leader lease {name:?}: ttl {ttl:?} is shorter than {MIN_TTL:?}"
            )));
        }
        let (tx, rx) = watch::channel(None);
        let stop = CancellationToken::new();
        let task = tokio::spawn(contend(store, lock_name, ttl, tx, stop.clone()));
        Ok(Leader {
            name: name.to_owned(),
            state: rx,
            stop,
            task: Some(task),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The fencing number of the current term while this process is leader.
    pub fn fence(&self) -> Option<u64> {
        current(&self.state.borrow())
    }

    pub fn is_leader(&self) -> bool {
        self.fence().is_some()
    }

    pub fn watch(&self) -> LeaderWatch {
        LeaderWatch {
            state: self.state.clone(),
        }
    }

    /// Stops contending and, if leader, stops claiming leadership and releases
    /// the lock so another process can take it at once. Bounded: returns
    /// after the release or a time-out (the lock then expires by its TTL).
    pub async fn step_down(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = timeout(Duration::from_secs(5), task).await;
        }
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The lease task: contend, hold while renewals succeed in time, repeat.
async fn contend(
    store: Store,
    lock_name: String,
    ttl: Duration,
    tx: watch::Sender<Option<Term>>,
    stop: CancellationToken,
) {
    let every = ttl / 3;
    loop {
        let sent = Instant::now();
        let attempt = tokio::select! {
            _ = stop.cancelled() => return,
            r = timeout(every, lock::try_acquire(&store, &lock_name, ttl)) => r,
        };
        let wait = match attempt {
            Ok(Ok(Acquired::Held(guard))) if Instant::now() < sent + ttl / 2 => {
                hold(guard, sent, ttl, &tx, &stop).await;
                if stop.is_cancelled() {
                    return;
                }
                Duration::ZERO
            }
            Ok(Ok(Acquired::Held(guard))) => {
                tracing::warn!(lease = %lock_name, "leader lease granted too late to use; giving it back");
                release(guard, every).await;
                every
            }
            Ok(Ok(Acquired::Busy { expires_in })) => expires_in.min(every),
            Ok(Err(e)) => {
                tracing::debug!(lease = %lock_name, error = %e, "leader lease: cannot reach Redis");
                every
            }
            Err(_) => every,
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Holds a granted lock: renews it every TTL/3 until a renewal fails or comes
/// back too late, or until `stop`; always leaves the state at `None`.
async fn hold(
    guard: LockGuard,
    mut sent: Instant,
    ttl: Duration,
    tx: &watch::Sender<Option<Term>>,
    stop: &CancellationToken,
) {
    let every = ttl / 3;
    let fence = guard.fence();
    tx.send_replace(Some(Term {
        fence,
        until: sent + ttl / 2,
    }));
    tracing::info!(fence, "became leader");
    let lost = loop {
        tokio::select! {
            _ = stop.cancelled() => break None,
            _ = tokio::time::sleep_until(sent + every) => {}
        }
        let renew_sent = Instant::now();
        let renewed = tokio::select! {
            _ = stop.cancelled() => break None,
            r = timeout_at(renew_sent + ttl / 2, guard.renew(ttl)) => r,
        };
        match renewed {
            Ok(Ok(true)) => {
                sent = renew_sent;
                // A renewal keeps the term: update the horizon without waking watchers.
                tx.send_if_modified(|t| {
                    if let Some(t) = t {
                        t.until = sent + ttl / 2;
                    }
                    false
                });
            }
            Ok(Ok(false)) => break Some("the lock expired or was taken".to_owned()),
            Ok(Err(e)) => break Some(format!("renewal failed: {e}")),
            Err(_) => break Some(format!("no renewal answer within {:?}", ttl / 2)),
        }
    };
    // Stop claiming before anything else, then give the lock back if we can.
    tx.send_replace(None);
    match lost {
        None => tracing::info!(fence, "stepping down as leader"),
        Some(why) => tracing::warn!(fence, reason = %why, "leadership lost"),
    }
    release(guard, every).await;
}

async fn release(guard: LockGuard, bound: Duration) {
    match timeout(bound, guard.release()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "leader lease: release failed; it expires by its TTL")
        }
        Err(_) => tracing::debug!("leader lease: release timed out; it expires by its TTL"),
    }
}

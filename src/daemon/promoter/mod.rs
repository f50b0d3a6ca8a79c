//! The promoter: starts each scheduled job (a delayed job, a retry waiting
//! out its backoff) at its due time, on an idle or busy daemon alike,
//! without polling.
//!
//! It keeps, per queue this daemon serves, the earliest due time Redis
//! reported, sleeps until the earliest of them (on Redis's clock, mapped
//! onto ours through the offset the latest reply showed), then runs
//! promote.lua, which moves what is due into pending and hands it to idle
//! daemons or wakes one, and replies with the next due time. It re-arms
//! when told of an earlier time: a script that makes a job a queue's
//! earliest publishes the due time on the queue's channel
//! ([`crate::keys::QueueKeys::due_channel`]), which [`listen`] receives on
//! its own Pub/Sub connection. Every daemon hears every such message, so a
//! daemon that dies takes no knowledge with it; several daemons armed for
//! the same instant each call promote.lua once, and the script hands each
//! job to one of them.
//!
//! Nothing is lost while the subscription is down: after (re)subscribing,
//! the listener marks the queues of the new channels unread, and the
//! promoter reads their earliest due times again (one pipeline). Claims also promote due
//! jobs (claim.lua), so a busy pool never waits on the promoter.
//!
//! Invariant: for every queue served, either its due time is unread (and
//! read next), or the promoter holds a time no later than the queue's
//! earliest scheduled job, as of the latest reply or message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

mod listen;

pub use listen::listen;

use super::QueueRt;
use crate::keys::QueueKeys;
use crate::store::{Promoted, Store};

/// Jobs moved per promote call; a queue with more due is called again,
/// after the other due queues had their turn. 200, like a claim's
/// promotion: with 1M jobs due at once a call of 1000 ran 7 ms in Redis
/// (SLOWLOG, `redq bench --scenarios j`), holding up every other client;
/// the goal is no call over 5 ms.
const BATCH: usize = 200;
/// How often the listener pings its connection, so a connection that died
/// silently (a partition) is noticed and the subscription made again.
const PING_EVERY: Duration = Duration::from_secs(15);
/// Longest wait for Redis to answer a (re)connect, subscribe or ping.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);
/// Longest pause between attempts after errors: a second, so that after a
/// failover due jobs start and the due-time subscription is made again
/// within about a second of the new primary (the store's shared connection
/// spaces its own reconnections, so the loop's retries cost no connection
/// attempt; the listener's are one connection each).
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// One queue as the promoter sees it.
struct Watched {
    keys: QueueKeys,
    /// Earliest due time known (Redis ms); `None`: nothing scheduled.
    due: Option<i64>,
    /// The due time must be read from Redis (new queue, resubscribed).
    unread: bool,
    /// While a call about this queue is in flight: the earliest time heard
    /// since it was sent, which its reply (read before) cannot know of.
    heard: Option<Option<i64>>,
}

#[derive(Default)]
struct State {
    /// By due channel.
    queues: HashMap<String, Watched>,
    /// Redis's clock minus the local Unix clock (ms), from the latest reply.
    offset_ms: i64,
}

/// Shared by the promoter loop, the listener and the supervisor.
#[derive(Default)]
pub struct Promoter {
    state: Mutex<State>,
    /// The promoter loop: something changed (new due time, queues, unread).
    pub(super) changed: Notify,
    /// The listener: the set of queues changed (subscribe to new channels).
    pub(super) resubscribe: Notify,
}

fn earlier(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

fn local_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Promoter {
    /// Serves these queues from now on (at start and on reload): new ones
    /// are read, gone ones forgotten.
    pub fn set_queues(&self, queues: &[Arc<QueueRt>]) {
        if let Ok(mut s) = self.state.lock() {
            let mut next = HashMap::new();
            for q in queues {
                let channel = q.keys.due_channel();
                let w = s.queues.remove(&channel).unwrap_or(Watched {
                    keys: q.keys.clone(),
                    due: None,
                    unread: true,
                    heard: None,
                });
                next.insert(channel, w);
            }
            s.queues = next;
        }
        self.changed.notify_one();
        self.resubscribe.notify_one();
    }

    /// The channels to listen to.
    pub(super) fn channels(&self) -> Vec<String> {
        self.state
            .lock()
            .map(|s| s.queues.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// A message on `channel`: a job is now due at `due_ms`.
    pub(super) fn heard(&self, channel: &str, due_ms: i64) {
        if let Ok(mut s) = self.state.lock() {
            if let Some(w) = s.queues.get_mut(channel) {
                w.due = earlier(w.due, Some(due_ms));
                if let Some(h) = &mut w.heard {
                    *h = earlier(*h, Some(due_ms));
                }
            }
        }
        self.changed.notify_one();
    }

    /// These queues' due times must be read again: messages published
    /// before their channels were subscribed may have been missed.
    pub(super) fn mark_unread(&self, channels: &[String]) {
        if let Ok(mut s) = self.state.lock() {
            for c in channels {
                if let Some(w) = s.queues.get_mut(c) {
                    w.unread = true;
                }
            }
        }
        self.changed.notify_one();
    }

    /// The queues to read, marking their calls in flight.
    fn take_unread(&self) -> Vec<(String, QueueKeys)> {
        let Ok(mut s) = self.state.lock() else {
            return Vec::new();
        };
        s.queues
            .iter_mut()
            .filter(|(_, w)| w.unread)
            .map(|(c, w)| {
                w.unread = false;
                w.heard = Some(None);
                (c.clone(), w.keys.clone())
            })
            .collect()
    }

    /// The queues due by Redis's clock now (as estimated), marking their
    /// calls in flight.
    fn take_due(&self) -> Vec<(String, QueueKeys)> {
        let Ok(mut s) = self.state.lock() else {
            return Vec::new();
        };
        let now = local_ms() + s.offset_ms;
        s.queues
            .iter_mut()
            .filter(|(_, w)| w.due.is_some_and(|d| d <= now))
            .map(|(c, w)| {
                w.heard = Some(None);
                (c.clone(), w.keys.clone())
            })
            .collect()
    }

    /// Records what Redis answered about `channel`'s queue at `now_ms`: its
    /// earliest due time then, and any earlier one heard meanwhile. With
    /// `None` (the call failed) the queue is read again.
    fn answered(&self, channel: &str, reply: Option<(i64, Option<i64>)>) {
        if let Ok(mut s) = self.state.lock() {
            if let Some((now_ms, _)) = reply {
                s.offset_ms = now_ms - local_ms();
            }
            if let Some(w) = s.queues.get_mut(channel) {
                let heard = w.heard.take().flatten();
                match reply {
                    Some((_, due)) => w.due = earlier(due, heard),
                    None => {
                        w.due = earlier(w.due, heard);
                        w.unread = true;
                    }
                }
            }
        }
    }

    /// How long until the earliest due time (`None`: nothing scheduled).
    fn wait(&self) -> Option<Duration> {
        let s = self.state.lock().ok()?;
        let due = s.queues.values().filter_map(|w| w.due).min()?;
        let ahead = due - (local_ms() + s.offset_ms);
        Some(Duration::from_millis(u64::try_from(ahead).unwrap_or(0)))
    }
}

/// The promoter loop: read unread due times, promote what is due, sleep
/// until the next due time or a change. Returns when `stop` is cancelled.
pub async fn run(store: Store, p: Arc<Promoter>, stop: CancellationToken) {
    let mut pause = Duration::from_millis(100);
    loop {
        let ok = read_unread(&store, &p).await && promote_due(&store, &p).await;
        let wait = if ok {
            pause = Duration::from_millis(100);
            p.wait()
        } else {
            let wait = pause;
            pause = (pause * 2).min(MAX_PAUSE);
            Some(wait)
        };
        let sleep = async {
            match wait {
                Some(w) => tokio::time::sleep(w).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = p.changed.notified() => {}
            _ = sleep => {}
        }
    }
}

/// Reads the due time of every unread queue in one pipeline; false on error.
async fn read_unread(store: &Store, p: &Promoter) -> bool {
    let unread = p.take_unread();
    if unread.is_empty() {
        return true;
    }
    let keys: Vec<&QueueKeys> = unread.iter().map(|(_, k)| k).collect();
    match store.scheduled_heads(&keys).await {
        Ok((now_ms, heads)) => {
            for ((channel, _), due) in unread.iter().zip(heads) {
                p.answered(channel, Some((now_ms, due)));
            }
            true
        }
        Err(e) => {
            tracing::debug!(error = %e, "cannot read when scheduled jobs are due; retrying");
            for (channel, _) in &unread {
                p.answered(channel, None);
            }
            false
        }
    }
}

/// Promotes every due queue, one call each per round (so one queue with a
/// large backlog due does not hold the others back), until none is due.
async fn promote_due(store: &Store, p: &Promoter) -> bool {
    loop {
        let due = p.take_due();
        if due.is_empty() {
            return true;
        }
        for (channel, keys) in &due {
            match store.promote(keys, BATCH).await {
                Ok(Promoted {
                    now_ms,
                    moved,
                    next_due_ms,
                }) => {
                    if moved > 0 {
                        tracing::debug!(
                            queue = keys.queue(),
                            moved,
                            "scheduled jobs due: moved into pending"
                        );
                    }
                    // Still due after a call that moved nothing: a damaged
                    // `scheduled`; do not spin on it.
                    let stuck = moved == 0 && next_due_ms.is_some_and(|d| d <= now_ms);
                    let next = if stuck {
                        tracing::warn!(queue = keys.queue(), "scheduled jobs are due but none could be moved; trying again in a second");
                        next_due_ms.map(|d| d.max(now_ms + 1000))
                    } else {
                        next_due_ms
                    };
                    p.answered(channel, Some((now_ms, next)));
                }
                Err(e) => {
                    tracing::warn!(queue = keys.queue(), error = %e, "cannot move due scheduled jobs into pending; retrying");
                    p.answered(channel, None);
                    for (other, _) in due.iter().filter(|(c, _)| c != channel) {
                        p.answered(other, None);
                    }
                    return false;
                }
            }
        }
    }
}

//! The waker: blocks on the queues' `wake` lists on a dedicated connection,
//! so an idle daemon costs Redis one blocked client, not a poll loop.
//!
//! Enqueue, retry scheduling, release, reaping and resume leave one element
//! in a queue's `wake` list; BLPOP hands it to one blocked daemon, which
//! notifies the pool serving that queue. Claims re-arm the marker when work
//! remains, so other daemons wake too. On errors it reconnects with capped
//! backoff (at most [`MAX_PAUSE`]).
//!
//! The same BLPOP waits on this daemon's hand-off lists (listed first, so
//! jobs already leased to it are taken before a wake-up): each element is
//! started by the pool serving that queue (see [`super::pool`]).
//!
//! On Redis Cluster a blocking command cannot span slots, so the waker runs
//! one such listener per queue, each on a connection to the node that
//! serves the queue's slot: an idle daemon costs each node one blocked
//! client per queue it serves there.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::pool::Pool;
use super::QueueRt;
use crate::store::{self, Store};

/// What a popped list is for.
pub enum Route {
    /// A queue's `wake` list: notify the pool serving it.
    Wake(Arc<Notify>),
    /// This daemon's hand-off list of a queue: the pool starts its jobs.
    Handoff(Arc<Pool>, Arc<QueueRt>),
}

/// list key → its route. Replaced on reload.
pub type Routes = Arc<RwLock<HashMap<String, Route>>>;

/// How long one BLPOP blocks; bounds how late a reload's new routes apply.
const BLOCK: Duration = Duration::from_secs(2);
/// The longest pause between attempts to connect: an idle daemon hears of
/// new jobs only through this connection, so after a failover it should
/// find the new primary within a second, not five. One attempt a second
/// (with Sentinel: asking each sentinel once) costs nothing worth saving.
const MAX_PAUSE: Duration = Duration::from_secs(1);

pub async fn run(store: Store, routes: Routes, stop: CancellationToken) {
    if !store.is_cluster() {
        return listen(store, routes, None, stop).await;
    }
    // Redis Cluster: one BLPOP cannot span slots, and each queue's lists
    // carry the queue's hash tag, so one listener per queue, on a
    // connection to the node serving that queue's slot. Listeners follow
    // the routes (a reload adds and drops queues).
    let mut listeners: HashMap<String, (CancellationToken, tokio::task::JoinHandle<()>)> =
        HashMap::new();
    loop {
        let tags: HashSet<String> = routes
            .read()
            .map(|r| r.keys().map(|k| store::tag(k).to_owned()).collect())
            .unwrap_or_default();
        listeners.retain(|tag, (token, task)| {
            let keep = tags.contains(tag) && !task.is_finished();
            if !keep {
                token.cancel();
            }
            keep
        });
        for tag in tags {
            listeners.entry(tag).or_insert_with_key(|tag| {
                let token = stop.child_token();
                let task = tokio::spawn(listen(
                    store.clone(),
                    routes.clone(),
                    Some(tag.clone()),
                    token.clone(),
                ));
                (token, task)
            });
        }
        tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(BLOCK) => {} }
    }
}

/// BLPOPs the routes' lists (on a cluster, only those with hash tag `tag`)
/// until `stop`, reconnecting with capped backoff. A cluster node that
/// answers `MOVED` (the slot moved) fails the pop like a lost connection:
/// the next connection goes to the slot's new owner.
async fn listen(store: Store, routes: Routes, tag: Option<String>, stop: CancellationToken) {
    let mut pause = Duration::from_millis(100);
    let connect_to = tag.clone().unwrap_or_default();
    'connect: loop {
        let mut con = tokio::select! {
            _ = stop.cancelled() => return,
            c = store.blocking_for(&connect_to, BLOCK + Duration::from_secs(5)) => match c {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "waker cannot connect; retrying");
                    tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(pause) => {} }
                    pause = (pause * 2).min(MAX_PAUSE);
                    continue 'connect;
                }
            }
        };
        pause = Duration::from_millis(100);
        loop {
            let keys: Vec<String> = routes
                .read()
                .map(|r| {
                    let mut keys: Vec<(bool, &String)> = r
                        .iter()
                        .filter(|(k, _)| tag.as_deref().is_none_or(|t| store::tag(k) == t))
                        .map(|(k, route)| {
                            if let Route::Handoff(pool, _) = route {
                                pool.listened_to();
                            }
                            (matches!(route, Route::Wake(_)), k)
                        })
                        .collect();
                    keys.sort();
                    keys.into_iter().map(|(_, k)| k.clone()).collect()
                })
                .unwrap_or_default();
            if keys.is_empty() {
                if tag.is_some() {
                    return;
                }
                tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(BLOCK) => continue }
            }
            let popped = tokio::select! {
                _ = stop.cancelled() => return,
                r = store::pop_first(&mut con, &keys, BLOCK) => r,
            };
            match popped {
                Ok(Some((key, payload))) => {
                    let received = Instant::now();
                    if let Ok(r) = routes.read() {
                        match r.get(&key) {
                            Some(Route::Wake(n)) => n.notify_one(),
                            Some(Route::Handoff(pool, queue)) => {
                                pool.take_handoff(queue, store::parse_handoff(&payload), received);
                            }
                            None => {}
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "waker lost its connection (or the slot moved); reconnecting");
                    tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(pause) => {} }
                    pause = (pause * 2).min(Duration::from_secs(5));
                    continue 'connect;
                }
            }
        }
    }
}

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

use std::collections::HashMap;
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
    let mut pause = Duration::from_millis(100);
    'connect: loop {
        let mut con = tokio::select! {
            _ = stop.cancelled() => return,
            c = store.blocking(BLOCK + Duration::from_secs(5)) => match c {
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
                    tracing::debug!(error = %e, "waker lost its connection; reconnecting");
                    tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(pause) => {} }
                    continue 'connect;
                }
            }
        }
    }
}

//! The waker: blocks on the queues' `wake` lists on a dedicated connection,
//! so an idle daemon costs Redis one blocked client, not a poll loop.
//!
//! Enqueue, retry scheduling, release, reaping and resume leave one element
//! in a queue's `wake` list; BLPOP hands it to one blocked daemon, which
//! notifies the pool serving that queue. Claims re-arm the marker when work
//! remains, so other daemons wake too. On errors it reconnects with capped
//! backoff.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::AsyncConnectionConfig;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// wake key → the pool to notify. Replaced on reload.
pub type Routes = Arc<RwLock<HashMap<String, Arc<Notify>>>>;

/// How long one BLPOP blocks; bounds how late a reload's new routes apply.
const BLOCK: Duration = Duration::from_secs(2);

pub async fn run(client: redis::Client, routes: Routes, stop: CancellationToken) {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(BLOCK + Duration::from_secs(5)));
    let mut pause = Duration::from_millis(100);
    'connect: loop {
        let mut con = tokio::select! {
            _ = stop.cancelled() => return,
            c = client.get_multiplexed_async_connection_with_config(&config) => match c {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "waker cannot connect; retrying");
                    tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(pause) => {} }
                    pause = (pause * 2).min(Duration::from_secs(5));
                    continue 'connect;
                }
            }
        };
        pause = Duration::from_millis(100);
        loop {
            let keys: Vec<String> = routes
                .read()
                .map(|r| r.keys().cloned().collect())
                .unwrap_or_default();
            if keys.is_empty() {
                tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(BLOCK) => continue }
            }
            let mut blpop = redis::cmd("BLPOP");
            blpop.arg(&keys).arg(BLOCK.as_secs_f64());
            let popped: redis::RedisResult<Option<(String, String)>> = tokio::select! {
                _ = stop.cancelled() => return,
                r = blpop.query_async(&mut con) => r,
            };
            match popped {
                Ok(Some((key, _))) => {
                    if let Some(n) = routes.read().ok().and_then(|r| r.get(&key).cloned()) {
                        n.notify_one();
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

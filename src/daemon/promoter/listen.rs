//! The promoter's listener: one Pub/Sub connection subscribed to the due
//! channels of the queues served. Each message tells the promoter of an
//! earlier due time, or (`cancel <id> <fence>`, from cancel.lua) that a
//! running job was cancelled, which stops it at once if this daemon holds
//! it ([`Leases::cancelled`]); after every (re)subscription the promoter reads the
//! queues of the new channels again, so nothing published while the
//! connection was down is missed. A ping every [`PING_EVERY`] notices a
//! connection that died silently.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Promoter, ANSWER_WITHIN, MAX_PAUSE, PING_EVERY};
use crate::daemon::leases::Leases;
use crate::store::Store;

/// The listener: subscribes to the due channels of the queues served and
/// passes each message to the promoter; after every (re)subscription the
/// promoter reads every queue again. Returns when `stop` is cancelled.
pub async fn listen(store: Store, p: Arc<Promoter>, leases: Leases, stop: CancellationToken) {
    let mut pause = Duration::from_millis(100);
    loop {
        let connected = tokio::select! {
            _ = stop.cancelled() => return,
            c = tokio::time::timeout(ANSWER_WITHIN, store.subscriber()) => c,
        };
        match connected {
            Ok(Ok(pubsub)) => {
                pause = Duration::from_millis(100);
                match subscribed(pubsub, &p, &leases, &stop).await {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::debug!(error = %e, "due-time subscription lost; subscribing again")
                    }
                }
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "cannot subscribe to due times; retrying"),
            Err(_) => tracing::debug!("cannot subscribe to due times: no answer; retrying"),
        }
        // What was published meanwhile is read again once subscribed.
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// Serves one subscription until `stop` (Ok) or a connection error.
async fn subscribed(
    pubsub: redis::aio::PubSub,
    p: &Promoter,
    leases: &Leases,
    stop: &CancellationToken,
) -> redis::RedisResult<()> {
    let (mut sink, mut stream) = pubsub.split();
    let mut listening: std::collections::HashSet<String> = Default::default();
    let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
    let timed_out = || redis::RedisError::from((redis::ErrorKind::Io, "no answer"));
    loop {
        let new: Vec<String> = p
            .channels()
            .into_iter()
            .filter(|c| !listening.contains(c))
            .collect();
        if !new.is_empty() {
            tokio::time::timeout(ANSWER_WITHIN, sink.subscribe(&new))
                .await
                .map_err(|_| timed_out())??;
            // Subscribed first, read second: a time published in between
            // is in both, and nothing falls between them.
            p.mark_unread(&new);
            listening.extend(new);
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = p.resubscribe.notified() => {}
            _ = ping.tick() => {
                tokio::time::timeout(ANSWER_WITHIN, sink.ping::<redis::Value>())
                    .await
                    .map_err(|_| timed_out())??;
            }
            msg = stream.next() => {
                let Some(msg) = msg else {
                    return Err(redis::RedisError::from((redis::ErrorKind::Io, "subscription closed")));
                };
                let text = msg.get_payload::<String>().unwrap_or_default();
                let channel = msg.get_channel_name();
                if let Some((id, fence)) = cancel_notice(&text) {
                    let base = channel.strip_suffix(":due").unwrap_or(channel);
                    leases.cancelled(base, id, fence);
                } else if let Ok(due) = text.parse() {
                    p.heard(channel, due);
                } else {
                    tracing::debug!(channel, "ignoring a message that is neither a due time nor a cancel notice");
                }
            }
        }
    }
}

/// `cancel <id> <fence>` (cancel.lua's notice) → (id, fence).
fn cancel_notice(text: &str) -> Option<(&str, u64)> {
    let mut parts = text.strip_prefix("cancel ")?.split(' ');
    let (id, fence) = (parts.next()?, parts.next()?.parse().ok()?);
    parts.next().is_none().then_some((id, fence))
}

#[cfg(test)]
mod tests {
    use super::cancel_notice;

    #[test]
    fn cancel_notices_are_read_and_anything_else_is_not_one() {
        assert_eq!(cancel_notice("cancel 01ABC 42"), Some(("01ABC", 42)));
        for not in [
            "1765000000000",
            "cancel",
            "cancel 01ABC",
            "cancel 01ABC x",
            "cancel a 1 2",
            "",
        ] {
            assert_eq!(cancel_notice(not), None, "{not:?}");
        }
    }
}

//! A queue's lifecycle events as Redis keeps them: the stream
//! `<prefix>:{<queue>}:events`, written by the transition scripts when the
//! queue's `meta` field `events` holds the stream's cap (see `emit` in the
//! Lua library), and read here for `redq watch`.

use std::time::Duration;

use redis::Value;

use super::Store;
use crate::error::Result;
use crate::keys::QueueKeys;

/// One stream entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The stream entry id, `<ms>-<seq>`.
    pub stream_id: String,
    /// Redis time of the event, in Unix ms (from the entry id).
    pub time_ms: i64,
    /// The entry's fields in order: `event`, `id`, `attempt`, then extras.
    pub fields: Vec<(String, String)>,
}

impl Store {
    /// The queue's events cap from its `meta` hash; 0 when events are off.
    pub async fn events_cap(&self, q: &QueueKeys) -> Result<u64> {
        let v: Option<String> = redis::cmd("HGET")
            .arg(q.meta())
            .arg("events")
            .query_async(&mut self.connection())
            .await?;
        Ok(v.and_then(|s| s.parse().ok()).unwrap_or(0))
    }

    /// The id of the newest entry, or `0-0` when the stream is empty or missing.
    pub async fn newest_event_id(&self, q: &QueueKeys) -> Result<String> {
        let v: Value = redis::cmd("XREVRANGE")
            .arg(q.events())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut self.connection())
            .await?;
        Ok(entries(v)
            .into_iter()
            .next()
            .map_or_else(|| "0-0".to_owned(), |e| e.stream_id))
    }

    /// Up to `count` entries after `last`, waiting up to `block` for some.
    /// A blocking read: for a connection of its own (the CLI's), never the
    /// daemon's shared one.
    pub async fn events_after(
        &self,
        q: &QueueKeys,
        last: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Event>> {
        let v: Value = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(u64::try_from(block.as_millis()).unwrap_or(u64::MAX))
            .arg("STREAMS")
            .arg(q.events())
            .arg(last)
            .query_async(&mut self.connection())
            .await?;
        // Reply: nil on time-out, else [[key, entries]] (RESP2) or {key: entries} (RESP3).
        Ok(match v {
            Value::Array(streams) => streams
                .into_iter()
                .flat_map(|s| match s {
                    Value::Array(mut pair) if pair.len() == 2 => entries(pair.remove(1)),
                    _ => Vec::new(),
                })
                .collect(),
            Value::Map(streams) => streams.into_iter().flat_map(|(_, e)| entries(e)).collect(),
            _ => Vec::new(),
        })
    }
}

/// Parses `[[id, [field, value, ...]], ...]`.
fn entries(v: Value) -> Vec<Event> {
    let Value::Array(items) = v else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| {
            let Value::Array(mut pair) = item else {
                return None;
            };
            if pair.len() != 2 {
                return None;
            }
            let fields = pair.pop()?;
            let stream_id = string(&pair.pop()?)?;
            let time_ms = stream_id
                .split('-')
                .next()
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            let fields = match fields {
                Value::Array(kv) => kv
                    .chunks(2)
                    .filter_map(|c| Some((string(c.first()?)?, string(c.get(1)?)?)))
                    .collect(),
                Value::Map(kv) => kv
                    .iter()
                    .filter_map(|(k, v)| Some((string(k)?, string(v)?)))
                    .collect(),
                _ => Vec::new(),
            };
            Some(Event {
                stream_id,
                time_ms,
                fields,
            })
        })
        .collect()
}

fn string(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

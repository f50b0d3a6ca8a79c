//! `redq watch <queue>`: follows a queue's lifecycle events live.
//!
//! Events are opt-in per queue (`events = true` in `[queues.<name>]`): the
//! daemon writes the stream's cap into the queue's `meta` hash, and every
//! transition script then appends to the Redis Stream
//! `<prefix>:{<queue>}:events` (trimmed with `XADD MAXLEN ~`). Each entry has
//! `event`, `id`, `attempt` and extras (`via`, `priority`, `due_ms`,
//! `lease_until_ms`, `run_ms`, `error`, `retry_at_ms`); the entry id is the
//! time on Redis's clock.
//!
//! This command reads the stream with `XREAD BLOCK` in a loop (a bounded
//! block, so it notices signals and reconnects), starting after the newest
//! entry (or at the oldest kept one with `--from-start`), and prints one line
//! per event, or one JSON object per line with `--json`. SIGINT and SIGTERM
//! end it with exit 0, and so does a closed standard output (e.g. `| head`).

use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Map, Value as Json};
use tokio::signal::unix::{signal, SignalKind};

use crate::cli::{Target, EXIT_UNAVAILABLE};
use crate::error::Error;
use crate::store::Event;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one read waits for new entries (well under COMMAND_TIMEOUT).
const BLOCK: Duration = Duration::from_secs(2);
/// Most entries read per call.
const BATCH: usize = 1_000;

impl Event {
    fn field(&self, name: &str) -> &str {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    fn time(&self) -> String {
        let ms = u64::try_from(self.time_ms).unwrap_or(0);
        humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
    }

    /// One line: time, event, job id, attempt, extras as `name=value`.
    pub fn to_line(&self) -> String {
        let mut line = format!(
            "{} {:<13} {} attempt={}",
            self.time(),
            self.field("event"),
            self.field("id"),
            self.field("attempt")
        );
        for (k, v) in &self.fields {
            if matches!(k.as_str(), "event" | "id" | "attempt") {
                continue;
            }
            let plain = !v.is_empty()
                && !v
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '\\');
            if plain {
                line.push_str(&format!(" {k}={v}"));
            } else {
                line.push_str(&format!(" {k}={v:?}"));
            }
        }
        line
    }

    /// One JSON object: `stream_id`, `time`, `time_ms`, then the fields
    /// (`attempt`, `priority` and `*_ms` as numbers).
    pub fn to_json(&self) -> Json {
        let mut m = Map::new();
        m.insert("stream_id".into(), Json::from(self.stream_id.clone()));
        m.insert("time".into(), Json::from(self.time()));
        m.insert("time_ms".into(), Json::from(self.time_ms));
        for (k, v) in &self.fields {
            let numeric = k == "attempt" || k == "priority" || k.ends_with("_ms");
            let value = match v.parse::<i64>() {
                Ok(n) if numeric => Json::from(n),
                _ => Json::from(v.clone()),
            };
            m.insert(k.clone(), value);
        }
        Json::Object(m)
    }
}

pub async fn run(target: &Target, queue: &str, json: bool, from_start: bool) -> u8 {
    let store = match target.store(CONNECT_TIMEOUT, COMMAND_TIMEOUT).await {
        Ok(s) => s,
        Err(e) => return failed(&e),
    };
    let q = match store.queue(queue) {
        Ok(q) => q,
        Err(e) => {
            eprintln!("redq: {e}");
            return 2;
        }
    };
    let (mut int, mut term) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(i), Ok(t)) => (i, t),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("redq: watch: cannot handle signals: {e}");
            return 1;
        }
    };
    match store.events_cap(&q).await {
        Ok(0) => eprintln!(
            "redq: events are off for queue {queue}: no daemon has set `events = true` in [queues.{queue}] \
             (meta field \"events\" of {} is not set); watching {} anyway",
            q.meta(),
            q.events()
        ),
        Ok(_) => {}
        Err(e) => return failed(&e),
    }
    let mut last = if from_start {
        "0-0".to_owned()
    } else {
        match store.newest_event_id(&q).await {
            Ok(id) => id,
            Err(e) => return failed(&e),
        }
    };
    eprintln!(
        "redq: watching {} {} (Ctrl-C to stop)",
        q.events(),
        if from_start {
            "from the oldest event kept"
        } else {
            "for new events"
        }
    );
    let mut out = std::io::stdout();
    let mut down = false;
    loop {
        let read = tokio::select! {
            _ = int.recv() => return 0,
            _ = term.recv() => return 0,
            r = store.events_after(&q, &last, BATCH, BLOCK) => r,
        };
        let events = match read {
            Ok(events) => {
                if down {
                    eprintln!("redq: watch: Redis is back");
                    down = false;
                }
                events
            }
            Err(e) if e.is_transient() => {
                if !down {
                    eprintln!("redq: watch: Redis unreachable ({e}); retrying");
                    down = true;
                }
                tokio::select! {
                    _ = int.recv() => return 0,
                    _ = term.recv() => return 0,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
            Err(e) => {
                eprintln!("redq: watch: {e}");
                return 1;
            }
        };
        let mut text = String::new();
        for ev in &events {
            if json {
                text.push_str(&ev.to_json().to_string());
            } else {
                text.push_str(&ev.to_line());
            }
            text.push('\n');
        }
        if let Some(ev) = events.last() {
            last = ev.stream_id.clone();
        }
        // A closed pipe (SIGPIPE is ignored by Rust programs) ends the watch quietly.
        if out
            .write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            return 0;
        }
    }
}

fn failed(e: &Error) -> u8 {
    eprintln!("redq: watch: {e}");
    if e.is_transient() {
        EXIT_UNAVAILABLE
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(fields: &[(&str, &str)]) -> Event {
        Event {
            stream_id: "1700000000123-0".into(),
            time_ms: 1_700_000_000_123,
            fields: fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn lines_show_time_event_id_attempt_and_quoted_extras() {
        let e = ev(&[
            ("event", "failed"),
            ("id", "j1"),
            ("attempt", "2"),
            ("error", "exit 1: no such file"),
            ("retry_at_ms", "1700000001123"),
        ]);
        assert_eq!(
            e.to_line(),
            "2023-11-14T22:13:20.123Z failed        j1 attempt=2 error=\"exit 1: no such file\" retry_at_ms=1700000001123"
        );
        let j = e.to_json();
        assert_eq!(j["attempt"], 2);
        assert_eq!(j["retry_at_ms"], 1_700_000_001_123_i64);
        assert_eq!(j["error"], "exit 1: no such file");
        assert_eq!(j["time_ms"], 1_700_000_000_123_i64);
        assert_eq!(j["stream_id"], "1700000000123-0");
    }
}

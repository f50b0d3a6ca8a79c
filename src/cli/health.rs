//! `redq health`: exits 0 only when Redis answers PING and at least one
//! daemon's heartbeat (see [`crate::daemon::heartbeat`]) is younger than
//! `--max-age`; 1 when no daemon is fresh; 69 when Redis is unreachable.
//! Prints the daemons seen (id, age, running jobs, queues) or the reason.

use std::time::Duration;

use serde_json::{json, Value};

use crate::cli::{Target, EXIT_UNAVAILABLE};
use crate::daemon::heartbeat;
use crate::error::Error;
use crate::store::DaemonInfo;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn run(target: &Target, json: bool, max_age: Duration) -> u8 {
    let max_age_ms = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
    let store = match target.store(CONNECT_TIMEOUT, COMMAND_TIMEOUT).await {
        Ok(s) => s,
        Err(e) => return redis_failed(json, max_age_ms, &e),
    };
    let rtt = match store.ping().await {
        Ok(rtt) => rtt,
        Err(e) => return redis_failed(json, max_age_ms, &e),
    };
    let daemons = match store.daemons(heartbeat::KEEP).await {
        Ok(d) => d,
        Err(e) => return redis_failed(json, max_age_ms, &e),
    };
    let fresh = daemons.iter().filter(|d| d.age_ms < max_age_ms).count();
    let reason = (fresh == 0).then(|| no_fresh_reason(&daemons, max_age, &target.prefix));
    if json {
        let list: Vec<Value> = daemons
            .iter()
            .map(|d| {
                let mut v = serde_json::to_value(d).unwrap_or(Value::Null);
                v["fresh"] = json!(d.age_ms < max_age_ms);
                v
            })
            .collect();
        let body = json!({
            "healthy": fresh > 0,
            "redis": true,
            "redis_rtt_ms": rtt.as_secs_f64() * 1000.0,
            "max_age_ms": max_age_ms,
            "fresh": fresh,
            "daemons": list,
            "reason": reason,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&body).unwrap_or_default()
        );
    } else {
        println!("redis: ok (PING {:.2}ms)", rtt.as_secs_f64() * 1000.0);
        if !daemons.is_empty() {
            print_daemons(&daemons, max_age_ms);
        }
        if fresh > 0 {
            println!(
                "healthy: {fresh} daemon{} with a heartbeat younger than {}",
                if fresh == 1 { "" } else { "s" },
                humantime::format_duration(max_age)
            );
        }
    }
    match reason {
        None => 0,
        Some(r) => {
            eprintln!("redq: unhealthy: {r}");
            1
        }
    }
}

fn no_fresh_reason(daemons: &[DaemonInfo], max_age: Duration, prefix: &str) -> String {
    match daemons.first() {
        None => format!(
            "no daemon heartbeat under key prefix {prefix:?}: no `redq run` is serving this Redis and prefix (or none beat in the last {})",
            humantime::format_duration(heartbeat::KEEP)
        ),
        Some(d) => format!(
            "no daemon heartbeat younger than {}; the most recent, {}, is {} old",
            humantime::format_duration(max_age),
            d.id,
            age(d.age_ms)
        ),
    }
}

fn redis_failed(json: bool, max_age_ms: i64, e: &Error) -> u8 {
    let unreachable = e.is_transient();
    let reason = match e {
        // A setting redq cannot use (a TLS file, the URL): say that, not PING.
        Error::Config(_) => e.to_string(),
        _ if unreachable => format!("Redis unreachable: {e}"),
        _ => format!("Redis did not answer PING: {e}"),
    };
    if json {
        let body = json!({
            "healthy": false,
            "redis": false,
            "max_age_ms": max_age_ms,
            "fresh": 0,
            "daemons": [],
            "reason": reason,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&body).unwrap_or_default()
        );
    }
    eprintln!("redq: unhealthy: {reason}");
    if unreachable {
        EXIT_UNAVAILABLE
    } else {
        1
    }
}

fn print_daemons(daemons: &[DaemonInfo], max_age_ms: i64) {
    println!(
        "{:<40} {:>8} {:>8}  {:<8} QUEUES",
        "DAEMON", "AGE", "RUNNING", "STATE"
    );
    for d in daemons {
        println!(
            "{:<40} {:>8} {:>8}  {:<8} {}",
            d.id,
            age(d.age_ms),
            d.running.map_or("-".to_owned(), |r| r.to_string()),
            if d.age_ms < max_age_ms {
                "fresh"
            } else {
                "stale"
            },
            d.queues.join(",")
        );
    }
}

fn age(ms: i64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

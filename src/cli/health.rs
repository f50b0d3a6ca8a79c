//! `redq health`: exits 0 only when Redis answers PING and at least one
//! daemon's heartbeat (see [`crate::daemon::heartbeat`]) is younger than
//! `--max-age`; 1 when no daemon is fresh (or Redis answered something
//! unexpected); 69 when Redis is unreachable (refused, timed out, TLS and
//! plain ports crossed, certificate not trusted); 78 when Redis answered
//! but the settings do not fit it (credentials refused, an ACL without the
//! commands, a Cluster node redirecting). Prints the daemons seen (id,
//! age, running jobs, queues) or the reason: the real cause, never a bare
//! "PING failed".

use std::time::Duration;

use serde_json::{json, Value};

use crate::cli::{Target, EXIT_CONFIG, EXIT_UNAVAILABLE};
use crate::daemon::heartbeat;
use crate::error::Error;
use crate::store::DaemonInfo;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn run(target: &Target, json: bool, max_age: Duration) -> u8 {
    let max_age_ms = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
    let store = match target.store(CONNECT_TIMEOUT, COMMAND_TIMEOUT).await {
        Ok(s) => s,
        Err(e) => return redis_failed(json, max_age_ms, Step::Connect, target, &e),
    };
    let rtt = match store.ping().await {
        Ok(rtt) => rtt,
        Err(e) => return redis_failed(json, max_age_ms, Step::Ping, target, &e),
    };
    let daemons = match store.daemons(heartbeat::KEEP).await {
        Ok(d) => d,
        Err(e) => return redis_failed(json, max_age_ms, Step::Heartbeats, target, &e),
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

/// What `redq health` was doing when Redis failed it.
#[derive(Clone, Copy)]
enum Step {
    Connect,
    Ping,
    Heartbeats,
}

impl Step {
    fn doing(self) -> &'static str {
        match self {
            Step::Connect => "connecting",
            Step::Ping => "PING",
            Step::Heartbeats => "reading the daemons' heartbeats",
        }
    }
}

/// The reason to print and the exit code, from what failed. With Sentinel
/// the error itself says whose credentials or rules were refused (the
/// sentinels' or the data nodes'), and which keys hold them.
fn cause(step: Step, sentinel: bool, e: &Error) -> (String, u8) {
    let code = match e {
        Error::Redis(r) => r.code(),
        _ => None,
    };
    let kind = match e {
        Error::Redis(r) => Some(r.kind()),
        _ => None,
    };
    use redis::{ErrorKind, ServerErrorKind};
    match (e, kind, code) {
        // A setting redq cannot use (a TLS file, the URL).
        (Error::Config(_), ..) => (e.to_string(), EXIT_CONFIG),
        (_, Some(ErrorKind::AuthenticationFailed), _) | (_, _, Some("WRONGPASS" | "NOAUTH"))
            if sentinel =>
        {
            (format!("Redis refused the credentials: {e}"), EXIT_CONFIG)
        }
        (_, Some(ErrorKind::AuthenticationFailed), _) | (_, _, Some("WRONGPASS" | "NOAUTH")) => (
            format!(
                "Redis refused the credentials ({e}): set the right user and password in \
                 redis.url (or REDQ_REDIS__URL, or --redis-url)"
            ),
            EXIT_CONFIG,
        ),
        (_, Some(ErrorKind::Server(ServerErrorKind::NoPerm)), _)
            if sentinel && matches!(step, Step::Connect) =>
        {
            (
                format!("Redis answered, but an ACL user may not run what connecting needs: {e}"),
                EXIT_CONFIG,
            )
        }
        (_, Some(ErrorKind::Server(ServerErrorKind::NoPerm)), _) => (
            format!(
                "Redis answered, but this ACL user may not run what {} needs ({e}): \
                 give it the daemon's rules (docs/operating.md, ACL users)",
                step.doing()
            ),
            EXIT_CONFIG,
        ),
        (_, Some(ErrorKind::Server(ServerErrorKind::Moved | ServerErrorKind::Ask)), _) => (
            format!(
                "Redis answered with a Cluster redirect ({e}): redis.url names one node of \
                 a Redis Cluster, and redq's keys live on another; list the cluster's nodes \
                 in redis.cluster instead (docs/operating.md, Redis Cluster)"
            ),
            EXIT_CONFIG,
        ),
        _ if e.is_transient() => (format!("Redis unreachable: {e}"), EXIT_UNAVAILABLE),
        _ => (
            format!("Redis answered {} with an error: {e}", step.doing()),
            1,
        ),
    }
}

fn redis_failed(json: bool, max_age_ms: i64, step: Step, target: &Target, e: &Error) -> u8 {
    let (reason, code) = cause(step, target.sentinel.is_some(), e);
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
    code
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

//! Faults injected by the tests themselves, against real `redq run`
//! processes and the test's own redis-server: a daemon cut off from Redis
//! (a proxy that blackholes or resets its connections), ...
//!
//! Every wait is a bounded poll of a condition (a file a handler wrote, a
//! process's death, a job's state); a failing test prints the daemons' logs.

mod common;

use std::fs;
use std::path::Path;

use common::http::{http_get, sample};
use common::process::*;
use common::producers::fcall;
use common::proxy::{Fault, Proxy};
use common::server::{server_tool, RedisServer};
use common::wait::{eventually, now_ms, secs, sleep_past_ms, wait_for};
use common::workers::*;

/// A handler that writes its pid, then the time (Unix ms) every ~20 ms to
/// `$OUT/run.<fence>` until it is killed: each run of a job leaves its own
/// file, and the files show when each run was alive.
const TICKER: &str = r#"
run="$OUT/run.$REDQ_FENCE"
echo "pid $$" > "$run"
while :; do date +%s%3N >> "$run"; sleep 0.02; done
"#;

/// The runs so far: (fence, pid, times written).
fn runs(dir: &Path) -> Vec<(u64, i32, Vec<i64>)> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(fence) = name.strip_prefix("run.").and_then(|f| f.parse().ok()) else {
            continue;
        };
        let text = fs::read_to_string(e.path()).unwrap_or_default();
        let mut lines = text.lines();
        let Some(pid) = lines
            .next()
            .and_then(|l| l.strip_prefix("pid "))
            .and_then(|p| p.parse().ok())
        else {
            continue;
        };
        // A line being written may be cut short: keep whole times only.
        let times = lines
            .filter(|l| l.len() == 13)
            .filter_map(|l| l.parse().ok())
            .collect();
        out.push((fence, pid, times));
    }
    out.sort();
    out
}

/// One daemon runs a job with its Redis traffic going through a proxy; the
/// proxy then fails with `fault`, and a second daemon (straight to Redis)
/// takes the job over once its lease has expired. The first run must be
/// over before the second starts.
fn no_overlap_when_cut_off(fault: Fault) {
    let redis = RedisServer::start();
    let proxy = Proxy::start(redis.port);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ticker = script(d, "ticker.sh", TICKER);
    let queues = format!(
        "[queues.q]\nconcurrency = 1\nmax_attempts = 5\nlease = \"2s\"\nlease_renew = \"500ms\"\n\
         handler = {}\n",
        command_handler(&ticker, &[], d, ", timeout = \"120s\"")
    );
    let (cut, direct) = (d.join("cut.toml"), d.join("direct.toml"));
    fs::write(&cut, config(&proxy.url(), "2s", &queues)).unwrap();
    fs::write(&direct, config(&redis.url(), "2s", &queues)).unwrap();
    let _a = Daemon::start(&cut, &d.join("cut.log"), &[]);
    fcall(&redis, "q", r#"{"payload":{},"id":"j1"}"#);
    let (first, pid) = wait_for("the first run", secs(10), || {
        runs(d)
            .first()
            .filter(|(_, _, t)| !t.is_empty())
            .map(|(f, p, _)| (*f, *p))
    });
    let mut reap = Reap(vec![pid]);
    let _b = Daemon::start(&direct, &d.join("direct.log"), &[]);

    proxy.set(fault);
    let second = wait_for("another daemon to take the job over", secs(20), || {
        runs(d)
            .into_iter()
            .find(|(f, _, t)| *f != first && !t.is_empty())
    });
    reap.0.push(second.1);
    wait_dead(pid, "the first run's handler");
    let all = runs(d);
    let old = &all.iter().find(|(f, _, _)| *f == first).unwrap().2;
    let (last_old, first_new) = (*old.last().unwrap(), second.2[0]);
    assert!(
        last_old < first_new,
        "the first run was still alive at {last_old}, {} ms after the second started at {first_new}",
        last_old - first_new
    );
    assert!(second.0 > first, "the takeover has a newer fence");
}

#[test]
fn a_partitioned_daemon_stops_its_job_before_another_takes_it_over() {
    no_overlap_when_cut_off(Fault::Blackhole);
}

#[test]
fn a_daemon_whose_connections_are_reset_stops_its_job_before_another_takes_it_over() {
    no_overlap_when_cut_off(Fault::Reset);
}

/// Fills a Redis under `maxmemory` (noeviction) with jobs of `queue`
/// (`redq enqueue`) until it refuses more; returns how many it took.
fn fill_to_maxmemory(redis: &RedisServer, queue: &str) -> usize {
    let payload = format!("\"{}\"", "x".repeat(100_000));
    for n in 0..500 {
        let out = run_bounded(
            redq().args(["--redis-url", &redis.url(), "enqueue", queue, &payload]),
            secs(10),
        );
        if out.code != Some(0) {
            assert!(out.stderr.contains("OOM"), "{}", out.stderr);
            assert!(n > 0, "Redis refused the first job: {}", out.stderr);
            return n;
        }
    }
    panic!("Redis never filled up");
}

#[test]
fn a_daemon_starts_and_drains_a_redis_at_maxmemory() {
    let redis =
        RedisServer::start_with(&["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"]);
    let n = fill_to_maxmemory(&redis, "q");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ok = script(d, "ok.sh", "cat > /dev/null\n");
    let queues = format!(
        "[queues.q]\nconcurrency = 4\nkeep_completed = 0\nevents = true\nhandler = {}\n",
        command_handler(&ok, &[], d, "")
    );
    let cfg = d.join("w.toml");
    fs::write(&cfg, config(&redis.url(), "2s", &queues)).unwrap();
    let mut daemon = Daemon::start(&cfg, &d.join("redq.log"), &[]);
    wait_for(&format!("the {n} jobs to drain"), secs(30), || {
        let s = stats(&redis.url(), "q");
        s["pending"] == 0 && s["active"] == 0
    });
    assert!(daemon.exited().is_none(), "{}", daemon.log());
}

#[tokio::test]
async fn fencing_tokens_never_repeat_after_redis_loses_its_latest_writes() {
    let mut redis = RedisServer::start_with(&[
        "--appendonly",
        "yes",
        "--aof-timestamp-enabled",
        "yes",
        "--appendfsync",
        "always",
    ]);
    let client = redis.client().await;
    let store = client.store();
    let q = store.queue("q").unwrap();
    let jobs = (0..20).map(|n| redq::NewJob::new(&n).unwrap()).collect();
    client.enqueue_many("q", jobs).await.unwrap();
    let lease = std::time::Duration::from_secs(60);
    let kept = store.claim(&q, 5, lease, 0, 0).await.unwrap();
    // The AOF marks each second it writes in; cut it after this one.
    let second = now_ms() / 1000;
    sleep_past_ms(second * 1000 + 999).await;
    let lost = store.claim(&q, 5, lease, 0, 0).await.unwrap();
    assert_eq!(lost.jobs.len(), 5);

    // A power loss (or a failover to a replica that lagged): Redis comes
    // back with the writes of the last second gone.
    redis.kill();
    let manifest = redis.dir().join("appendonlydir/appendonly.aof.manifest");
    let check_aof = server_tool("check-aof");
    let out = std::process::Command::new(&check_aof)
        .arg("--truncate-to-timestamp")
        .arg(second.to_string())
        .arg(&manifest)
        .output()
        .unwrap_or_else(|e| panic!("{check_aof:?} (installed with the server): {e}"));
    assert!(
        out.status.success(),
        "{check_aof:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    redis.restart();

    // The first call after the restart finds the old connection broken
    // (nothing ran); the store reconnects for the next.
    let again = eventually("a claim after the restart", secs(10), || async {
        match store.claim(&q, 5, lease, 0, 0).await {
            Ok(c) => Ok(c),
            Err(e) if e.is_transient() => Err(e.to_string()),
            Err(e) => panic!("claim after the restart: {e}"),
        }
    })
    .await;
    let ids = |c: &redq::store::Claimed| c.jobs.iter().map(|j| j.id.clone()).collect::<Vec<_>>();
    assert_eq!(
        ids(&again),
        ids(&lost),
        "the lost claim's jobs are pending again"
    );
    let fences = |c: &redq::store::Claimed| c.jobs.iter().map(|j| j.fence).collect::<Vec<_>>();
    let (kept, lost, again) = (fences(&kept), fences(&lost), fences(&again));
    assert!(
        again.iter().min() > lost.iter().max(),
        "fences issued after the rollback {again:?} must exceed the lost ones {lost:?} (kept: {kept:?})"
    );
}

/// Every how often the daemon's observer checks Redis in these tests: its
/// tick is half the systemd watchdog interval when one is set.
const FAST_OBSERVER: (&str, &str) = ("WATCHDOG_USEC", "1000000");

fn simple_daemon(redis_url: &str, d: &Path, queue_extra: &str) -> std::path::PathBuf {
    let ok = script(d, "ok.sh", "cat > /dev/null\n");
    let queues = format!(
        "[queues.q]\nconcurrency = 2\nkeep_completed = 10\n{queue_extra}handler = {}\n",
        command_handler(&ok, &[], d, "")
    );
    let cfg = d.join("w.toml");
    fs::write(&cfg, config(redis_url, "2s", &queues)).unwrap();
    cfg
}

#[test]
fn a_redis_that_lost_its_data_is_reported_and_the_queues_settings_written_again() {
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = simple_daemon(
        &redis.url(),
        d,
        "rate_limit = { jobs = 1000, per = \"1s\" }\n",
    );
    let mut daemon = Daemon::start(&cfg, &d.join("redq.log"), &[FAST_OBSERVER]);
    let meta = |r: &RedisServer| r.cli(&["HGET", "redq:{q}:meta", "rate_jobs"]).unwrap();
    assert_eq!(meta(&redis).trim(), "1000");

    // No persistence: the restarted Redis is empty.
    redis.restart();
    daemon.wait_log("Redis lost redq's data", 1, secs(15));
    let lost = wait_for("the data-loss counter", secs(10), || {
        let (_, body) = http_get(&daemon.listen, "/metrics")?;
        sample(&body, "redq_redis_data_lost_total").filter(|n| *n >= 1.0)
    });
    assert_eq!(lost, 1.0);
    wait_for("the queue's limits written again", secs(10), || {
        meta(&redis).trim() == "1000"
    });
    let id = fcall(&redis, "q", r#"{"payload":{}}"#);
    wait_state(&redis.url(), "q", &id, &["succeeded"], secs(10));
    assert!(daemon.exited().is_none());
}

#[test]
fn readyz_says_not_ready_while_redis_takes_no_writes() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = simple_daemon(&redis.url(), d, "");
    let daemon = Daemon::start(&cfg, &d.join("redq.log"), &[FAST_OBSERVER]);
    let ready = || http_get(&daemon.listen, "/readyz");
    wait_for("ready", secs(10), || ready().filter(|(c, _)| *c == 200));
    // Reads and PING still answer; writes wait out the pause.
    redis.cli(&["CLIENT", "PAUSE", "6000", "WRITE"]).unwrap();
    let (_, body) = wait_for("not ready during the pause", secs(5), || {
        ready().filter(|(c, _)| *c == 503)
    });
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (&body["redis"], &body["writes"]),
        (&true.into(), &false.into()),
        "{body}"
    );
    wait_for("ready after the pause", secs(15), || {
        ready().filter(|(c, _)| *c == 200)
    });
}

#[test]
fn a_reload_that_points_at_another_redis_is_refused_and_the_daemon_goes_on() {
    let (redis, other) = (RedisServer::start(), RedisServer::start());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = simple_daemon(&redis.url(), d, "");
    let mut daemon = Daemon::start(&cfg, &d.join("redq.log"), &[]);
    let moved = fs::read_to_string(&cfg)
        .unwrap()
        .replace(&redis.url(), &other.url());
    write_atomic(&cfg, &moved);
    daemon.signal(libc::SIGHUP);
    daemon.wait_log("redis.url changed", 1, secs(10));
    assert!(
        daemon.log().contains("restart the daemon"),
        "{}",
        daemon.log()
    );
    // Still serving the Redis it started with, and nothing written to the other.
    let id = fcall(&redis, "q", r#"{"payload":{}}"#);
    wait_state(&redis.url(), "q", &id, &["succeeded"], secs(10));
    assert_eq!(other.cli(&["DBSIZE"]).unwrap().trim(), "0");
}

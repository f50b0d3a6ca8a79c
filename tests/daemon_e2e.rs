//! End to end: the real `redq` binary (`redq --config <file> run`) against a
//! private redis-server, fed by `redis-cli` as a foreign producer, and
//! steered with signals the way systemd and operators do.
//!
//! Nothing here sleeps to synchronise: every wait polls a condition (a file a
//! handler wrote, a job's state from `redq job --json`, a daemon log line, a
//! process's exit) in a bounded loop, and a time-out fails the test saying
//! what it waited for (a failing test prints the daemon's log). Handlers are
//! tiny `/bin/sh` scripts written into each test's temp dir; they find that
//! dir in `$OUT`, set through the handler's `env` table. Leases and intervals
//! are short (lease 1s, renewal 200ms, reaping and inbox polling 100ms).

mod common;

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::process::*;
use common::producers::{fcall, lpush};
use common::server::{free_port, RedisServer};
use common::wait::{now_ms, secs, wait_for};
use common::workers::*;
use serde_json::Value;

// ---------------------------------------------------------------- 1. command handler

/// Records stdin, argv and environment per attempt; the payload decides the
/// exit: `tempfail` exits 75 on attempt 1, `refuse` exits 65.
const RECORDER: &str = r#"
tag="$OUT/out/$REDQ_JOB_ID.$REDQ_ATTEMPT"
cat > "$tag.stdin"
for a in "$@"; do printf '%s\n' "$a"; done > "$tag.argv"
env > "$tag.env"
case "$(cat "$tag.stdin")" in
  *tempfail*) if [ "$REDQ_ATTEMPT" = 1 ]; then echo "busy, try later" >&2; exit 75; fi ;;
  *refuse*) echo 'payload refused: field "x" must be a number' >&2; exit 65 ;;
esac
printf 'ok %s' "$REDQ_JOB_ID"
"#;

#[test]
fn command_handler_gets_payload_on_stdin_a_clean_env_and_exit_codes_decide() {
    let redis = RedisServer::start();
    let url = redis.url();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::create_dir(d.join("out")).unwrap();
    let handler = script(d, "recorder.sh", RECORDER);
    let queues = format!(
        "[queues.cmd]\nconcurrency = 4\nmax_attempts = 3\nkeep_completed = 100\n{FAST_LEASE}\
         backoff = {{ base = \"100ms\", max = \"1s\", jitter = 0.0 }}\nhandler = {}\n",
        command_handler(&handler, &["fixed-arg", "two words"], d, "")
    );
    let cfg = d.join("w.toml");
    fs::write(&cfg, config(&url, "2s", &queues)).unwrap();
    // The daemon's own Redis URL (with a password-like secret) and another
    // secret in its environment: neither may reach the handler.
    let _daemon = Daemon::start(
        &cfg,
        &d.join("redq.log"),
        &[("REDQ_REDIS__URL", &url), ("DAEMON_ONLY_SECRET", "s3cret")],
    );

    let pwned = d.join("pwned");
    let payload = format!(
        r#"{{"cmd" : "$(touch {p})", "tick":"`touch {p}`; touch {p}", "text":"héllo wörld ✓ 日本語 🎉",  "list":[ ], "empty":[], "n":[1, 2.50, -0, 1e3, 1E+2], "esc":"tab\there \"q\" \\ \u00e9 \ud83c\udf89"}}"#,
        p = pwned.display()
    );
    let by_fcall = fcall(&redis, "cmd", &format!(r#"{{"payload":{payload}}}"#));
    lpush(
        &redis,
        "cmd",
        &format!(r#"{{"payload": {payload} , "id":"inbox-1", "tenant":"acme"}}"#),
    );
    let retried = fcall(
        &redis,
        "cmd",
        r#"{"payload":{"mode":"tempfail"},"id":"retry-1"}"#,
    );
    let refused = fcall(
        &redis,
        "cmd",
        r#"{"payload":{"mode":"refuse"},"id":"refuse-1"}"#,
    );
    assert_eq!(
        (retried.as_str(), refused.as_str()),
        ("retry-1", "refuse-1")
    );

    let ok = ["succeeded"];
    for id in [by_fcall.as_str(), "inbox-1"] {
        let j = wait_state(&url, "cmd", id, &ok, secs(15));
        assert_eq!(j["attempts"], 1, "{j:#}");
        assert_eq!(j["result"], format!("ok {id}"), "{j:#}");
        let rec = |ext: &str| fs::read_to_string(d.join(format!("out/{id}.1.{ext}"))).unwrap();
        // Byte for byte: spacing, number spellings, escapes, unicode, `[]`.
        assert_eq!(rec("stdin"), payload, "payload of {id} changed on its way");
        assert_eq!(rec("argv"), "fixed-arg\ntwo words\n", "argv of {id}");
        let env = parse_env(&rec("env"));
        assert_eq!(env.get("REDQ_JOB_ID").map(String::as_str), Some(id));
        assert_eq!(env.get("REDQ_QUEUE").map(String::as_str), Some("cmd"));
        assert_eq!(env.get("REDQ_ATTEMPT").map(String::as_str), Some("1"));
        assert_eq!(env.get("OUT"), Some(&d.display().to_string()));
        assert!(env.contains_key("PATH"), "{env:?}");
        for secret in [
            "REDQ_REDIS__URL",
            "DAEMON_ONLY_SECRET",
            "REDQ_DAEMON__LISTEN",
        ] {
            assert!(
                !env.contains_key(secret),
                "{secret} reached the handler: {env:?}"
            );
        }
        assert!(
            !env.values().any(|v| v.contains(&url)),
            "the Redis URL reached the handler: {env:?}"
        );
    }
    let inbox_env = parse_env(&fs::read_to_string(d.join("out/inbox-1.1.env")).unwrap());
    assert_eq!(inbox_env["REDQ_TENANT"], "acme");
    assert!(!pwned.exists(), "payload text was run by a shell");

    // Exit 75: retried; attempt 2 sees REDQ_ATTEMPT=2 and succeeds.
    let j = wait_state(&url, "cmd", "retry-1", &ok, secs(15));
    assert_eq!(j["attempts"], 2, "{j:#}");
    let env2 = parse_env(&fs::read_to_string(d.join("out/retry-1.2.env")).unwrap());
    assert_eq!(env2["REDQ_ATTEMPT"], "2");
    assert_eq!(
        fs::read_to_string(d.join("out/retry-1.2.stdin")).unwrap(),
        r#"{"mode":"tempfail"}"#
    );
    assert!(
        j["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("exit code 75") && e.contains("busy, try later")),
        "{j:#}"
    );

    // Exit 65: dead at once, stderr as the reason.
    let j = wait_state(&url, "cmd", "refuse-1", &["dead"], secs(15));
    assert_eq!(j["attempts"], 1, "{j:#}");
    let err = j["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains(r#"payload refused: field "x" must be a number"#) && err.contains("65"),
        "{j:#}"
    );
    assert!(
        !d.join("out/refuse-1.2.stdin").exists(),
        "exit 65 was retried"
    );
}

// ---------------------------------------------------------------- 2. HTTP handler

/// One request the test endpoint saw: payload kind, attempt, time answered,
/// Idempotency-Key header, id in the body.
type Seen = Arc<Mutex<Vec<(String, u64, i64, String, String)>>>;

async fn endpoint(
    axum::extract::State(seen): axum::extract::State<Seen>,
    headers: axum::http::HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let kind = body["payload"]["kind"].as_str().unwrap_or("").to_owned();
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let id = body["id"].as_str().unwrap_or("").to_owned();
    let attempt = body["attempt"].as_u64().unwrap_or(0);
    seen.lock()
        .unwrap()
        .push((kind.clone(), attempt, now_ms(), key, id));
    match kind.as_str() {
        "ok" => (StatusCode::OK, r#"{"answer":42,"echo":"✓"}"#).into_response(),
        "busy" => (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "30")],
            "come back later",
        )
            .into_response(),
        "gone" => (StatusCode::NOT_FOUND, "no such order").into_response(),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "exploded").into_response(),
    }
}

#[test]
fn http_handler_statuses_decide_success_retry_after_dead_and_backoff() {
    let redis = RedisServer::start();
    let url = redis.url();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let seen: Seen = Arc::default();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new()
        .route("/job", axum::routing::post(endpoint))
        .with_state(seen.clone());
    rt.spawn(async move { axum::serve(listener, app).await });

    let queues = format!(
        "[queues.web]\nconcurrency = 4\nmax_attempts = 5\nkeep_completed = 10\n{FAST_LEASE}\
         backoff = {{ base = \"10s\", max = \"1m\", jitter = 0.0 }}\n\
         handler = {{ http = \"http://127.0.0.1:{port}/job\", timeout = \"5s\" }}\n"
    );
    let cfg = d.join("w.toml");
    fs::write(&cfg, config(&url, "2s", &queues)).unwrap();
    let _daemon = Daemon::start(&cfg, &d.join("redq.log"), &[]);

    for kind in ["ok", "busy", "gone", "boom"] {
        let doc = format!(r#"{{"payload":{{"kind":"{kind}"}},"id":"{kind}-1"}}"#);
        assert_eq!(fcall(&redis, "web", &doc), format!("{kind}-1"));
    }
    let ok = wait_state(&url, "web", "ok-1", &["succeeded"], secs(15));
    let busy = wait_state(&url, "web", "busy-1", &["retrying"], secs(15));
    let gone = wait_state(&url, "web", "gone-1", &["dead"], secs(15));
    let boom = wait_state(&url, "web", "boom-1", &["retrying"], secs(15));

    let seen = seen.lock().unwrap().clone();
    let answered = |kind: &str| {
        let hits: Vec<_> = seen.iter().filter(|s| s.0 == kind).collect();
        assert_eq!(
            hits.len(),
            1,
            "{kind} should be called once so far: {seen:?}"
        );
        let (_, attempt, at, key, id) = hits[0];
        assert_eq!(*attempt, 1);
        assert_eq!(id, &format!("{kind}-1"));
        assert_eq!(key, id, "Idempotency-Key is the job id");
        *at
    };

    // 200: succeeded, the body kept as the result.
    answered("ok");
    assert_eq!(ok["attempts"], 1, "{ok:#}");
    assert_eq!(ok["result"], r#"{"answer":42,"echo":"✓"}"#, "{ok:#}");

    // 503 + Retry-After: 30 → retrying, due 30s after the answer.
    let at = answered("busy");
    assert_eq!(busy["attempts"], 1, "{busy:#}");
    let due = busy["run_at_ms"].as_i64().expect("run_at_ms") - at;
    assert!(
        (29_000..=31_500).contains(&due),
        "Retry-After ignored: due in {due} ms"
    );
    assert!(
        busy["last_error"].as_str().unwrap().contains("503"),
        "{busy:#}"
    );

    // 404: dead at once.
    answered("gone");
    assert_eq!(gone["attempts"], 1, "{gone:#}");
    assert!(
        gone["last_error"].as_str().unwrap().contains("404"),
        "{gone:#}"
    );

    // 500: retrying after the queue's backoff (base 10s, no jitter).
    let at = answered("boom");
    assert_eq!(boom["attempts"], 1, "{boom:#}");
    let due = boom["run_at_ms"].as_i64().expect("run_at_ms") - at;
    assert!(
        (9_000..=11_500).contains(&due),
        "backoff not applied: due in {due} ms"
    );
    assert!(
        boom["last_error"].as_str().unwrap().contains("500"),
        "{boom:#}"
    );
}

// ---------------------------------------------------------------- 3. SIGTERM

#[test]
fn sigterm_drains_a_running_job_stops_claiming_and_exits_0() {
    let redis = RedisServer::start();
    let url = redis.url();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let handler = script(
        d,
        "slow.sh",
        "touch \"$OUT/started.$REDQ_JOB_ID\"\nsleep 1\nprintf finished\n",
    );
    let queues = format!(
        "[queues.slow]\nconcurrency = 2\nkeep_completed = 10\n{FAST_LEASE}handler = {}\n",
        command_handler(&handler, &[], d, "")
    );
    let cfg = d.join("w.toml");
    fs::write(&cfg, config(&url, "10s", &queues)).unwrap();
    let mut daemon = Daemon::start(&cfg, &d.join("redq.log"), &[]);

    let id = fcall(&redis, "slow", r#"{"payload":{}}"#);
    wait_for("the handler to start", secs(10), || {
        d.join(format!("started.{id}")).exists()
    });
    daemon.signal(libc::SIGTERM);
    daemon.wait_log("shutting down", 1, secs(5));
    // Enqueued after the signal: must not be claimed any more.
    let late = fcall(&redis, "slow", r#"{"payload":{},"id":"late"}"#);
    let (status, _) = daemon.wait_exit(secs(8));
    assert_eq!(status.code(), Some(0), "{status:?}");

    let j = job(&url, "slow", &id).expect("kept by keep_completed");
    assert_eq!(
        j["state"], "succeeded",
        "the running job was not drained: {j:#}"
    );
    assert_eq!(j["attempts"], 1);
    assert_eq!(j["result"], "finished");
    let j = job(&url, "slow", &late).unwrap();
    assert_eq!(j["state"], "pending", "claimed after SIGTERM: {j:#}");
    assert_eq!(j["attempts"], 0);
    assert!(!d.join(format!("started.{late}")).exists());
}

/// Starts a grandchild that would outlive a careless kill, writes
/// "<handler pid> <grandchild pid>\n", then runs for a minute.
const STUCK: &str = r#"
sleep 1000 &
echo "$$ $!" > "$OUT/pids.tmp" && mv "$OUT/pids.tmp" "$OUT/pids"
sleep 60
"#;

/// One queue `stuck` whose handler runs [`STUCK`]; returns the daemon, the
/// job id and the handler's and grandchild's pids once it runs.
fn start_stuck_job(
    redis: &RedisServer,
    d: &Path,
    shutdown_timeout: &str,
) -> (Daemon, String, Reap) {
    let handler = script(d, "stuck.sh", STUCK);
    let queues = format!(
        "[queues.stuck]\nconcurrency = 1\n{FAST_LEASE}handler = {}\n",
        command_handler(&handler, &[], d, ", kill_grace = \"2s\"")
    );
    let cfg = d.join("w.toml");
    fs::write(&cfg, config(&redis.url(), shutdown_timeout, &queues)).unwrap();
    let daemon = Daemon::start(&cfg, &d.join("redq.log"), &[]);
    let id = fcall(redis, "stuck", r#"{"payload":{"n":1}}"#);
    let pids = wait_for("the handler's pids", secs(10), || {
        read_pids(&d.join("pids"))
    });
    assert_eq!(pids.len(), 2);
    (daemon, id, Reap(pids))
}

fn assert_released(url: &str, id: &str, pids: &Reap) {
    let j = job(url, "stuck", id).unwrap();
    assert_eq!(j["state"], "pending", "not given back: {j:#}");
    assert_eq!(j["attempts"], 0, "shutdown spent an attempt: {j:#}");
    wait_dead(pids.0[0], "the handler");
    wait_dead(pids.0[1], "the handler's grandchild");
}

#[test]
fn sigterm_past_the_deadline_stops_the_handler_and_its_children_and_releases_the_job() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (mut daemon, id, pids) = start_stuck_job(&redis, dir.path(), "1s");
    daemon.signal(libc::SIGTERM);
    // 1s deadline, then SIGTERM to the group (which ends it at once).
    let (status, took) = daemon.wait_exit(secs(8));
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(
        took >= Duration::from_millis(900),
        "did not wait for the deadline: {took:?}"
    );
    assert_released(&redis.url(), &id, &pids);
}

#[test]
fn a_second_sigterm_ends_the_wait_at_once() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (mut daemon, id, pids) = start_stuck_job(&redis, dir.path(), "30s");
    daemon.signal(libc::SIGTERM);
    // Two signals close together may be delivered as one: wait for the first.
    daemon.wait_log("shutting down", 1, secs(5));
    daemon.signal(libc::SIGTERM);
    let (status, took) = daemon.wait_exit(secs(20));
    assert_eq!(status.code(), Some(0), "{status:?}");
    // The group gets SIGTERM (kill_grace 2s) at once instead of in 30s.
    assert!(took < secs(5), "waited {took:?} of the 30s deadline");
    assert_released(&redis.url(), &id, &pids);
}

// ---------------------------------------------------------------- 4. SIGHUP

/// Marks its start; payloads with "hold" wait (bounded) for `$OUT/release`.
const HOLDER: &str = r#"
payload=$(cat)
touch "$OUT/started.$REDQ_QUEUE.$REDQ_JOB_ID"
case "$payload" in
  *hold*) n=0; while [ ! -e "$OUT/release" ] && [ $n -lt 400 ]; do sleep 0.05; n=$((n+1)); done ;;
esac
printf 'ran on %s' "$REDQ_QUEUE"
"#;

#[test]
fn sighup_adds_queues_changes_concurrency_keeps_running_jobs_and_refuses_bad_configs() {
    let redis = RedisServer::start();
    let url = redis.url();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let handler = script(d, "holder.sh", HOLDER);
    let h = command_handler(&handler, &[], d, "");
    let queue = |name: &str, concurrency: u32, extra: &str| {
        format!(
            "[queues.{name}]\nconcurrency = {concurrency}\nkeep_completed = 100\n{FAST_LEASE}handler = {h}\n{extra}\n"
        )
    };
    let cfg = d.join("w.toml");
    fs::write(&cfg, config(&url, "5s", &queue("a", 1, ""))).unwrap();
    let mut daemon = Daemon::start(&cfg, &d.join("redq.log"), &[]);
    let started = |q: &str, id: &str| d.join(format!("started.{q}.{id}")).exists();

    // A job of `a` is running when the reload replaces a's pool.
    let held = fcall(&redis, "a", r#"{"payload":"hold","id":"held-0"}"#);
    wait_for("held-0 to start", secs(10), || started("a", &held));
    let b_early = fcall(&redis, "b", r#"{"payload":1,"id":"b-early"}"#);

    let two = format!("{}{}", queue("a", 3, ""), queue("b", 2, ""));
    write_atomic(&cfg, &config(&url, "5s", &two));
    daemon.signal(libc::SIGHUP);
    daemon.wait_log("configuration reloaded", 1, secs(10));

    // The new queue runs, including a job enqueued before it was served.
    for id in [b_early, fcall(&redis, "b", r#"{"payload":2}"#)] {
        let j = wait_state(&url, "b", &id, &["succeeded"], secs(10));
        assert_eq!(j["result"], "ran on b");
    }
    // a's concurrency is 3 now: three held jobs run at once (besides held-0,
    // still running in the old pool, which finishes under the old settings).
    let ids: Vec<String> = (1..=3)
        .map(|i| {
            fcall(
                &redis,
                "a",
                &format!(r#"{{"payload":"hold","id":"held-{i}"}}"#),
            )
        })
        .collect();
    wait_for("three held jobs of `a` to run at once", secs(10), || {
        ids.iter().all(|id| started("a", id))
    });
    assert_eq!(job(&url, "a", &held).unwrap()["state"], "active");
    File::create(d.join("release")).unwrap();
    for id in ids.iter().chain([&held]) {
        let j = wait_state(&url, "a", id, &["succeeded"], secs(15));
        assert_eq!(j["attempts"], 1, "a reload dropped or re-ran {id}: {j:#}");
    }

    // A bad file is refused; the daemon keeps serving with the old settings.
    let bad = format!("{}{}", queue("a", 3, ""), queue("b", 2, "concurency = 5"));
    write_atomic(&cfg, &config(&url, "5s", &bad));
    daemon.signal(libc::SIGHUP);
    daemon.wait_log("reload refused", 1, secs(10));
    assert!(
        daemon.log().contains("queues.b.concurency"),
        "the log does not name the bad key:\n{}",
        daemon.log()
    );
    assert!(daemon.exited().is_none(), "a bad reload stopped the daemon");
    for q in ["a", "b"] {
        let id = fcall(&redis, q, r#"{"payload":"after the bad reload"}"#);
        wait_state(&url, q, &id, &["succeeded"], secs(10));
    }
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit(secs(10)).0.code(), Some(0));
}

// ---------------------------------------------------------------- 5. kill -9

#[test]
fn a_killed_daemons_job_is_finished_by_another_after_the_lease_expires() {
    let redis = RedisServer::start();
    let url = redis.url();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Attempt 1 hangs (its processes die with the daemon: see
    // tests/process_guard.rs); later attempts finish at once.
    let handler = script(
        d,
        "once.sh",
        r#"
if [ "$REDQ_ATTEMPT" = 1 ]; then
  echo "$$ $PPID" > "$OUT/first.tmp" && mv "$OUT/first.tmp" "$OUT/first"
  exec sleep 1000
fi
printf 'finished on attempt %s' "$REDQ_ATTEMPT"
"#,
    );
    let queues = format!(
        "[queues.k]\nconcurrency = 2\nkeep_completed = 10\nmax_attempts = 3\n{FAST_LEASE}handler = {}\n",
        command_handler(&handler, &[], d, "")
    );
    let cfg = d.join("w.toml");
    fs::write(&cfg, config(&url, "2s", &queues)).unwrap();
    let mut daemons = [
        Daemon::start(&cfg, &d.join("redq-1.log"), &[]),
        Daemon::start(&cfg, &d.join("redq-2.log"), &[]),
    ];

    let id = fcall(&redis, "k", r#"{"payload":{"order":7}}"#);
    let pids = wait_for("attempt 1 to run", secs(10), || read_pids(&d.join("first")));
    let reap = Reap(vec![pids[0]]);
    let holder = daemons
        .iter()
        .position(|dm| dm.pid() == pids[1])
        .expect("the handler's parent is one of the daemons");
    wait_for("the holder's process guard", secs(5), || {
        guard_of(daemons[holder].pid())
    });
    let killed_at = now_ms();
    daemons[holder].signal(libc::SIGKILL);
    daemons[holder].wait_exit(secs(5));
    wait_dead(reap.0[0], "the killed daemon's handler (the process guard)");

    let j = wait_state(&url, "k", &id, &["succeeded"], secs(15));
    assert_eq!(j["attempts"], 2, "{j:#}");
    assert_eq!(j["result"], "finished on attempt 2", "{j:#}");
    let err = j["last_error"].as_str().unwrap_or_default();
    assert!(err.contains("lease expired"), "{j:#}");
    // Rescued only once the 1s lease (renewed every 200ms) had run out.
    let second_start = j["started_at_ms"].as_i64().unwrap();
    assert!(
        second_start - killed_at >= 600,
        "rescued {} ms after the kill, before the lease expired",
        second_start - killed_at
    );
    let other = &mut daemons[1 - holder];
    assert!(other.exited().is_none());
    assert!(other.log().contains("rescued jobs whose lease expired"));
}

// ---------------------------------------------------------------- 6. Redis restart

#[test]
fn every_job_completes_across_a_redis_kill_and_aof_restart() {
    const JOBS: usize = 500;
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let url = redis.url();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let handler = script(d, "quick.sh", "exec sleep 0.02\n");
    let queues = format!(
        "[queues.bulk]\nconcurrency = 8\nkeep_completed = 1000\nmax_attempts = 50\n{FAST_LEASE}\
         backoff = {{ base = \"100ms\", max = \"500ms\" }}\nhandler = {}\n",
        command_handler(&handler, &[], d, "")
    );
    let cfg = d.join("w.toml");
    fs::write(&cfg, config(&url, "2s", &queues)).unwrap();

    // The daemon loads the function library; then everything is enqueued
    // in one redis-cli session (the daemon starts on it at once).
    let mut daemon = Daemon::start(&cfg, &d.join("redq.log"), &[]);
    let mut cli = redis
        .cli_command()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = cli.stdin.take().unwrap();
        for i in 0..JOBS {
            writeln!(
                stdin,
                r#"FCALL redq_enqueue 1 redq:{{bulk}} '{{"payload":{i},"id":"j{i}"}}'"#
            )
            .unwrap();
        }
    }
    let out = cli.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.lines().filter(|l| l.starts_with('j')).count(),
        JOBS,
        "{out}"
    );

    let done = |redis: &RedisServer| -> usize {
        let out = redis
            .cli(&["ZCARD", "redq:{bulk}:done"])
            .unwrap_or_default();
        out.trim().parse().unwrap_or(0)
    };
    let at_kill = wait_for("50 jobs done", secs(20), || {
        let n = done(&redis);
        (n >= 50).then_some(n)
    });
    redis.kill();
    assert!(
        at_kill < JOBS - 50,
        "finished too early ({at_kill}) to test anything"
    );
    redis.restart();

    let last = wait_for("every job to finish after the restart", secs(40), || {
        let s = stats(&url, "bulk");
        let busy: u64 = ["pending", "scheduled", "active", "inbox"]
            .iter()
            .map(|k| s[k].as_u64().unwrap())
            .sum();
        (busy == 0 && s["succeeded"].as_u64() == Some(JOBS as u64)).then_some(s)
    });
    assert_eq!(last["dead"], 0, "{last:#}");
    assert_eq!(last["rejected"], 0, "{last:#}");
    let jobs: usize = redis
        .cli(&["HLEN", "redq:{bulk}:jobs"])
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(jobs, JOBS, "jobs lost or duplicated");
    assert!(
        daemon.exited().is_none(),
        "redq exited when Redis went away"
    );
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit(secs(10)).0.code(), Some(0));
}

// ---------------------------------------------------------------- 7. config errors

#[test]
fn config_errors_exit_78_naming_the_key_and_unreachable_redis_exits_69() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Nothing listens here: a daemon that got past validation would fail on Redis.
    let nowhere = format!("redis://127.0.0.1:{}", free_port());
    let noop = "handler = { builtin = \"noop\" }";
    let cases: &[(&str, String, &[&str])] = &[
        (
            "unknown key",
            format!("[queues.a]\n{noop}\nconcurency = 2\n"),
            &["queues.a.concurency", "unknown key"],
        ),
        (
            "bad duration",
            format!("[queues.a]\n{noop}\nlease = \"5 parsecs\"\n"),
            &["queues.a.lease", "5 parsecs"],
        ),
        (
            "missing handler",
            "[queues.a]\nconcurrency = 2\n".to_owned(),
            &["queues.a.handler", "missing"],
        ),
        (
            "command not found",
            "[queues.a]\nhandler = { command = [\"/nonexistent/redq-handler\", \"x\"] }\n"
                .to_owned(),
            &["queues.a.handler.command", "/nonexistent/redq-handler"],
        ),
        (
            "value out of range",
            format!("[queues.a]\n{noop}\nconcurrency = 0\n"),
            &["queues.a.concurrency", "out of range"],
        ),
    ];
    for (i, (what, queues, needles)) in cases.iter().enumerate() {
        let cfg = d.join(format!("case{i}.toml"));
        fs::write(&cfg, config(&nowhere, "2s", queues)).unwrap();
        for sub in ["check-config", "run"] {
            let o = run_bounded(redq().arg("--config").arg(&cfg).arg(sub), secs(15));
            assert_eq!(o.code, Some(78), "{what}: redq {sub}: {}", o.stderr);
            for n in *needles {
                assert!(
                    o.stderr.contains(n),
                    "{what}: redq {sub} does not say {n:?}:\n{}",
                    o.stderr
                );
            }
        }
    }

    // A bad value from the environment names the variable.
    let good = d.join("good.toml");
    fs::write(
        &good,
        config(&nowhere, "2s", &format!("[queues.a]\n{noop}\n")),
    )
    .unwrap();
    let o = run_bounded(
        redq()
            .arg("--config")
            .arg(&good)
            .arg("run")
            .env("REDQ_QUEUES__A__CONCURRENCY", "lots"),
        secs(15),
    );
    assert_eq!(o.code, Some(78), "{}", o.stderr);
    assert!(o.stderr.contains("queues.a.concurrency"), "{}", o.stderr);
    assert!(
        o.stderr.contains("REDQ_QUEUES__A__CONCURRENCY"),
        "{}",
        o.stderr
    );

    // A valid file: check-config passes without Redis; run cannot reach it.
    let o = run_bounded(
        redq().arg("--config").arg(&good).arg("check-config"),
        secs(15),
    );
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let o = run_bounded(redq().arg("--config").arg(&good).arg("run"), secs(30));
    assert_eq!(o.code, Some(69), "Redis unreachable: {}", o.stderr);
}

// ---------------------------------------------------------------- 8. the server's checks

#[test]
fn at_start_the_daemon_names_the_server_and_its_version_and_warns_about_eviction_and_persistence() {
    // No persistence (the harness's default) and an evicting policy.
    let redis = RedisServer::start_with(&["--maxmemory-policy", "allkeys-lru"]);
    let info = redis.cli(&["INFO", "server"]).unwrap();
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
    };
    // Valkey reports the Redis it matches as `redis_version` (7.2.4 on
    // Valkey 8) and its own version as `valkey_version`.
    let (server, version) = match field("valkey_version") {
        Some(v) => ("Valkey", v),
        None => ("Redis", field("redis_version").expect("INFO server")),
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let queues = "[queues.a]\nhandler = { builtin = \"noop\" }\n";
    let cfg = d.join("w.toml");
    fs::write(&cfg, config(&redis.url(), "2s", queues)).unwrap();
    let mut daemon = Daemon::start(&cfg, &d.join("redq.log"), &[]);
    let log = daemon.log();
    let lines: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let logged = |message: &str| {
        lines
            .iter()
            .find(|l| l["message"].as_str() == Some(message))
            .unwrap_or_else(|| panic!("no {message:?} in the log:\n{log}"))
    };
    let connected = logged(&format!("connected to {server}"));
    assert_eq!(connected["version"], version.as_str(), "{log}");
    // CONFIG GET answered: the warnings name what it read.
    assert!(log.contains("REDIS CAN DELETE JOBS"), "{log}");
    assert!(log.contains("allkeys-lru"), "{log}");
    assert!(log.contains("persistence is off"), "{log}");
    assert!(!log.contains("could not read"), "{log}");
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit(secs(10)).0.code(), Some(0));
}

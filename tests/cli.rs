//! The `redq` binary as an operator or shell producer uses it.

mod common;

use std::borrow::BorrowMut;
use std::process::Command;

use common::process::{self, run_bounded, run_with_input};
use common::server::RedisServer;
use common::wait::secs;

/// `redq <args>`, with a clean environment.
fn redq(args: &[&str]) -> Command {
    let mut c = process::redq();
    c.args(args);
    c
}

/// Runs `c` to its end (bounded): its exit code (-1 for a signal), stdout, stderr.
fn run(mut c: impl BorrowMut<Command>) -> (i32, String, String) {
    let o = run_bounded(c.borrow_mut(), secs(30));
    (o.code.unwrap_or(-1), o.stdout, o.stderr)
}

/// `redq enqueue` loads the `redq` function library when it is missing, so
/// producers calling `FCALL redq_enqueue` can start before any daemon.
#[test]
fn enqueue_loads_the_function_library_for_fcall_producers() {
    let redis = RedisServer::start();
    let key = "redq:{mail}";
    let doc = r#"{"payload":1}"#;
    let before = redis
        .cli(&["FCALL", "redq_enqueue", "1", key, doc])
        .unwrap();
    assert!(before.contains("Function not found"), "{before}");
    let (code, _, err) = run(redq(&[
        "--redis-url",
        &redis.url(),
        "enqueue",
        "mail",
        "{}",
    ]));
    assert_eq!(code, 0, "{err}");
    let id = redis
        .cli(&["FCALL", "redq_enqueue", "1", key, doc])
        .unwrap();
    assert_eq!(id.trim().len(), 26, "{id}");
}

#[test]
fn enqueue_prints_the_id_and_job_shows_it() {
    let redis = RedisServer::start();
    let url = redis.url();
    let (code, out, err) = run(redq(&[
        "--redis-url",
        &url,
        "enqueue",
        "mail",
        r#"{"to":"$(touch /tmp/x)"}"#,
        "--priority",
        "-5",
        "--tenant",
        "acme",
        "--max-attempts",
        "3",
    ]));
    assert_eq!(code, 0, "{err}");
    let id = out.trim();
    let (code, out, err) = run(redq(&["--redis-url", &url, "job", "mail", id, "--json"]));
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["id"], id);
    assert_eq!(v["queue"], "mail");
    assert_eq!(v["state"], "pending");
    assert_eq!(v["priority"], -5);
    assert_eq!(v["attempts"], 0);
    assert_eq!(v["max_attempts"], 3);
    assert_eq!(v["tenant"], "acme");
    assert_eq!(v["payload"]["to"], "$(touch /tmp/x)");
    assert!(v["last_error"].is_null());
    let (code, out, _) = run(redq(&["--redis-url", &url, "job", "mail", id]));
    assert_eq!(code, 0);
    assert!(out.contains("state:       pending"), "{out}");
}

#[test]
fn payload_from_stdin_and_stats_as_json() {
    let redis = RedisServer::start();
    let url = redis.url();
    let o = run_with_input(
        &mut redq(&["--redis-url", &url, "enqueue", "a", "-", "--delay", "5m"]),
        Some(br#"{"big":[1,2,3]}"#),
        secs(30),
    );
    assert!(o.code == Some(0));
    run(redq(&["--redis-url", &url, "enqueue", "b", "1"]));
    let (code, out, err) = run(redq(&["--redis-url", &url, "stats", "--json"]));
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["queue"], "a");
    assert_eq!(v[0]["scheduled"], 1);
    assert_eq!(v[1]["queue"], "b");
    assert_eq!(v[1]["pending"], 1);
    for field in ["pending", "scheduled", "active", "dead", "rejected"] {
        assert!(v[0].get(field).is_some(), "{field}");
    }
}

#[test]
fn bad_input_is_refused_with_a_clear_message() {
    let redis = RedisServer::start();
    let url = redis.url();
    let (code, _, err) = run(redq(&["--redis-url", &url, "enqueue", "q", "{oops"]));
    assert_eq!(code, 1);
    assert!(
        err.contains("payload") && err.contains("not valid JSON"),
        "{err}"
    );
    let (code, _, err) = run(redq(&[
        "--redis-url",
        &url,
        "enqueue",
        "q",
        "1",
        "--priority",
        "2000",
    ]));
    assert_eq!(code, 1);
    assert!(
        err.contains("priority") && err.contains("-1000 to 1000"),
        "{err}"
    );
    let (code, _, err) = run(redq(&["--redis-url", &url, "enqueue", "no spaces", "1"]));
    assert_eq!(code, 1);
    assert!(err.contains("queue name"), "{err}");
    let (code, _, err) = run(redq(&["--redis-url", &url, "job", "q", "nope"]));
    assert_eq!(code, 1);
    assert!(err.contains("not found"), "{err}");
    let (_, out, _) = run(redq(&["--redis-url", &url, "stats", "--json"]));
    assert_eq!(out.trim(), "[]", "nothing was written");
}

#[test]
fn redis_is_found_by_flag_then_env_then_config_file() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("w.toml");
    std::fs::write(
        &cfg,
        format!(
            "[redis]\nurl = \"{}\"\nkey_prefix = \"custom\"\n",
            redis.url()
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    // Config file only.
    let (code, _, err) = run(redq(&["--config", cfg, "enqueue", "q", "1"]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        redis.cli(&["LLEN", "custom:{q}:pending:0"]).unwrap().trim(),
        "1"
    );
    // The environment beats the file; the flag beats the environment.
    let (code, _, _) =
        run(redq(&["--config", cfg, "enqueue", "q", "1"])
            .env("REDQ_REDIS__URL", "redis://127.0.0.1:1"));
    assert_eq!(code, 69, "unreachable Redis has its own exit code");
    let (code, _, err) = run(redq(&[
        "--config",
        cfg,
        "--redis-url",
        &redis.url(),
        "enqueue",
        "q",
        "1",
    ])
    .env("REDQ_REDIS__URL", "redis://127.0.0.1:1"));
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(redq(&["--config", "/nonexistent/w.toml", "stats"]));
    assert_eq!(code, 78);
    assert!(err.contains("/nonexistent/w.toml"), "{err}");
}

#[test]
fn pause_resume_and_dead_commands() {
    let redis = RedisServer::start();
    let url = redis.url();
    assert_eq!(run(redq(&["--redis-url", &url, "pause", "q"])).0, 0);
    let (_, out, _) = run(redq(&["--redis-url", &url, "stats", "q", "--json"]));
    assert!(out.contains("\"paused\": true"), "{out}");
    assert_eq!(run(redq(&["--redis-url", &url, "resume", "q"])).0, 0);
    let (code, out, _) = run(redq(&["--redis-url", &url, "dead", "list", "q", "--json"]));
    assert_eq!((code, out.trim()), (0, "[]"));
    let (code, _, err) = run(redq(&[
        "--redis-url",
        &url,
        "dead",
        "retry",
        "q",
        "missing",
    ]));
    assert_eq!(code, 1);
    assert!(err.contains("not in the dead set"), "{err}");
    let (code, out, _) = run(redq(&["--redis-url", &url, "dead", "purge", "q", "--all"]));
    assert_eq!((code, out.trim()), (0, "deleted 0 dead jobs"));
}

/// A mistyped queue name is said: `redq enqueue`, `pause` and `resume`
/// warn when neither the config file nor a live daemon names the queue,
/// and still do what they were asked (producers may start first).
#[test]
fn enqueue_and_pause_warn_about_a_queue_nothing_serves() {
    let redis = RedisServer::start();
    let url = redis.url();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("w.toml");
    std::fs::write(&cfg, "[queues.emails]\nhandler = { builtin = \"noop\" }\n").unwrap();
    let cfg = cfg.display().to_string();
    for args in [
        vec!["enqueue", "emials", "{}"],
        vec!["pause", "emials"],
        vec!["resume", "emials"],
    ] {
        let (code, _, err) = run(redq(&["--redis-url", &url, "--config", &cfg]).args(&args));
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(
            err.contains("warning: no queue \"emials\" in the config and no live daemon serves it")
                && err.contains("known queues: emails"),
            "{args:?}: {err}"
        );
    }
    // A queue the config names: no warning.
    let (code, _, err) =
        run(redq(&["--redis-url", &url, "--config", &cfg]).args(["enqueue", "emails", "{}"]));
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning"), "{err}");
}

//! Least privilege: `redq setup` loads the function libraries once, and the
//! daemon and producers run under the ACL users docs/operating.md documents,
//! read from that file, so the rules an operator copies are the rules tested.
//!
//! - `redq setup` and `--check`: what they print, their exit codes, that
//!   `--check` writes nothing, `--daemon-user`.
//! - The daemon, the operator's CLI and producers (FCALL and LPUSH) under
//!   those users, with no ACL refusal logged but the expected ones; the
//!   producer's user cannot claim, complete or read payloads.
//! - A daemon that may not load the libraries starts, runs its transitions as
//!   EVALSHA and warns once; a Redis without functions is refused in one
//!   sentence, never with a Lua dump.

mod common;

use std::process::Command;

use common::http::{http_get, sample};
use common::process::{redq, run_bounded, Daemon, Out};
use common::server::RedisServer;
use common::wait::{secs, wait_for};
use common::workers::config;

const PASSWORD: &str = "pw";

/// The documented rules of `user`, with [`PASSWORD`].
fn documented_rules(user: &str) -> Vec<String> {
    common::acl::documented_rules(user, PASSWORD)
}

/// Creates `user` with its documented rules.
fn create_user(redis: &RedisServer, user: &str) {
    let rules = documented_rules(user);
    let args: Vec<&str> = rules.iter().map(String::as_str).collect();
    assert_eq!(redis.cli(&args).unwrap().trim(), "OK", "{rules:?}");
}

fn url_as(redis: &RedisServer, user: &str) -> String {
    format!("redis://{user}:{PASSWORD}@127.0.0.1:{}", redis.port)
}

/// `redis-cli` as `user`; stdout (replies and errors alike).
fn cli_as(redis: &RedisServer, user: &str, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "--no-auth-warning"])
        .args(["--user", user, "--pass", PASSWORD])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn run(url: &str, args: &[&str]) -> Out {
    run_bounded(redq().arg("--redis-url").arg(url).args(args), secs(30))
}

/// `(user, command or key)` of every ACL refusal Redis logged.
fn acl_refusals(redis: &RedisServer) -> Vec<(String, String)> {
    let log = redis.cli(&["ACL", "LOG", "100"]).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    let mut out = Vec::new();
    let mut object = None;
    for pair in lines.windows(2) {
        match pair[0] {
            "object" => object = Some(pair[1].to_owned()),
            "username" => out.push((pair[1].to_owned(), object.take().unwrap_or_default())),
            _ => {}
        }
    }
    out
}

fn libraries(redis: &RedisServer) -> String {
    redis.cli(&["FUNCTION", "LIST"]).unwrap()
}

fn a_daemon(redis: &RedisServer, dir: &std::path::Path, user: &str) -> Daemon {
    let queues = "[queues.mail]\nhandler = { command = [\"/bin/cat\"] }\nkeep_completed = 100\nevents = true\n";
    let path = dir.join("workers.toml");
    std::fs::write(&path, config(&url_as(redis, user), "5s", queues)).unwrap();
    Daemon::start(&path, &dir.join("daemon.log"), &[])
}

fn state(url: &str, id: &str) -> String {
    let o = run(url, &["job", "mail", id, "--json"]);
    if o.code != Some(0) {
        return format!("{:?}: {}", o.code, o.stderr);
    }
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    v["state"].as_str().unwrap_or_default().to_owned()
}

fn wait_succeeded(url: &str, id: &str) {
    wait_for(&format!("job {id} to succeed"), secs(15), || {
        let s = state(url, id);
        if s == "succeeded" {
            Ok(())
        } else {
            Err(s)
        }
    });
}

#[test]
fn setup_loads_both_libraries_and_check_writes_nothing() {
    let redis = RedisServer::start();
    let url = redis.url();
    let o = run(&url, &["setup", "--check"]);
    assert_eq!(o.code, Some(1), "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("library redq:"), "{}", o.stdout);
    assert!(
        o.stdout.contains("missing: `redq setup` loads"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("not ready"), "{}", o.stdout);
    assert!(
        !libraries(&redis).contains("redq"),
        "--check loaded something"
    );
    assert_eq!(redis.cli(&["DBSIZE"]).unwrap().trim(), "0");

    let o = run(&url, &["setup"]);
    assert_eq!(o.code, Some(0), "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("redis:"), "{}", o.stdout);
    assert!(o.stdout.contains("Redis 7"), "{}", o.stdout);
    assert!(
        o.stdout.contains("maxmemory-policy noeviction"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("persistence is off"), "{}", o.stdout);
    assert!(o.stdout.contains("(was missing)"), "{}", o.stdout);
    assert!(
        o.stdout.contains("may run every command the daemon needs"),
        "{}",
        o.stdout
    );
    // Nothing but the libraries: no key written.
    assert_eq!(redis.cli(&["DBSIZE"]).unwrap().trim(), "0");
    let listed = libraries(&redis);
    assert!(
        listed.contains(redq::scripts::internal_library_name()),
        "{listed}"
    );
    let version = redis.cli(&["FCALL_RO", "redq_version", "0"]).unwrap();
    assert_eq!(version.trim(), redq::scripts::library_version());

    let o = run(&url, &["setup", "--check"]);
    assert_eq!(o.code, Some(0), "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("current"), "{}", o.stdout);

    // An older release's public library counts as not current.
    redis.cli(&["FUNCTION", "DELETE", "redq"]).unwrap();
    let o = run(&url, &["setup", "--check"]);
    assert_eq!(o.code, Some(1), "{}", o.stdout);
    assert!(o.stdout.contains("library redq:"), "{}", o.stdout);
    let o = run(&url, &["setup"]);
    assert_eq!(o.code, Some(0), "{}", o.stdout);
}

#[test]
fn setup_as_a_user_that_may_not_load_functions_says_who_may() {
    let redis = RedisServer::start();
    create_user(&redis, "redq-daemon");
    let o = run(&url_as(&redis, "redq-daemon"), &["setup"]);
    assert_eq!(o.code, Some(1), "{}{}", o.stdout, o.stderr);
    assert!(
        o.stdout
            .contains("this user may not FUNCTION LOAD; run `redq setup` as a user that may"),
        "{}",
        o.stdout
    );
    assert!(!o.stdout.contains("redis://redq-daemon:pw"), "{}", o.stdout);
}

#[test]
fn setup_checks_a_daemon_user_against_what_the_daemon_needs() {
    let redis = RedisServer::start();
    create_user(&redis, "redq-daemon");
    create_user(&redis, "redq-producer");
    let url = redis.url();
    let o = run(&url, &["setup", "--daemon-user", "redq-daemon"]);
    assert_eq!(o.code, Some(0), "{}{}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains(
            "may run every command the daemon needs on redq's keys; may not load function libraries"
        ),
        "{}",
        o.stdout
    );
    let o = run(
        &url,
        &["setup", "--check", "--daemon-user", "redq-producer"],
    );
    assert_eq!(o.code, Some(1), "{}{}", o.stdout, o.stderr);
    assert!(
        o.stdout
            .contains("may not run what the daemon needs: fcall"),
        "{}",
        o.stdout
    );
    let o = run(&url, &["setup", "--check", "--daemon-user", "nobody"]);
    assert_eq!(o.code, Some(1), "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("cannot check"), "{}", o.stdout);
}

#[test]
fn the_daemon_and_producers_run_under_the_documented_users() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(run(&redis.url(), &["setup"]).code, Some(0));
    create_user(&redis, "redq-daemon");
    create_user(&redis, "redq-producer");
    redis.cli(&["ACL", "LOG", "RESET"]).unwrap();
    let daemon = a_daemon(&redis, dir.path(), "redq-daemon");
    let as_daemon = url_as(&redis, "redq-daemon");

    // FCALL into an idle daemon (the direct hand-off), a delayed job, a
    // unique key twice, an existing id, the inbox.
    let fcall = |doc: &str| {
        cli_as(
            &redis,
            "redq-producer",
            &["FCALL", "redq_enqueue", "1", "redq:{mail}", doc],
        )
    };
    let first = fcall(r#"{"payload":{"n":1}}"#);
    assert_eq!(first.len(), 26, "{first}");
    let delayed = fcall(r#"{"payload":{"n":2},"delay_ms":200}"#);
    let unique = fcall(r#"{"payload":{"n":3},"unique_key":"u","delay_ms":100000}"#);
    assert_eq!(fcall(r#"{"payload":{"n":4},"unique_key":"u"}"#), unique);
    assert_eq!(fcall(r#"{"payload":{"n":5},"id":"mine"}"#), "mine");
    assert_eq!(fcall(r#"{"payload":{"n":5},"id":"mine"}"#), "mine");
    assert_eq!(
        cli_as(
            &redis,
            "redq-producer",
            &[
                "LPUSH",
                "redq:{mail}:inbox",
                r#"{"payload":{"n":6},"id":"inbox-1"}"#
            ]
        ),
        "1"
    );
    // The operator's CLI under the daemon's user.
    let o = run(&as_daemon, &["enqueue", "mail", r#"{"n":7}"#]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let from_cli = o.stdout.trim().to_owned();
    for id in [&first, &delayed, "mine", "inbox-1", &from_cli] {
        wait_succeeded(&as_daemon, id);
    }
    // A producer waits for its job's outcome (docs/producers.md) as itself.
    let kept = fcall(r#"{"payload":{"n":8},"outcome_ttl_ms":60000}"#);
    let key = format!("redq:{{mail}}:outcome:{kept}");
    let outcome = cli_as(
        &redis,
        "redq-producer",
        &["BLMOVE", &key, &key, "RIGHT", "RIGHT", "10"],
    );
    let outcome: serde_json::Value = serde_json::from_str(&outcome).expect(&outcome);
    assert_eq!(outcome["state"], "succeeded", "{outcome}");
    assert_eq!(outcome["id"], kept.as_str(), "{outcome}");
    let o = run(
        &as_daemon,
        &["job", "mail", &kept, "--wait", "--timeout", "5s"],
    );
    assert_eq!(o.code, Some(0), "{}{}", o.stdout, o.stderr);
    for args in [
        &["stats", "mail"][..],
        &["dead", "list", "mail"],
        &["pause", "mail"],
        &["resume", "mail"],
        &["export", "mail"],
        &["health"],
        &["setup", "--check"],
    ] {
        let o = run(&as_daemon, args);
        assert_eq!(o.code, Some(0), "redq {args:?}: {}{}", o.stdout, o.stderr);
    }
    // The first FCALL found the daemon idle and handed its job over.
    let (_, metrics) = http_get(&daemon.listen, "/metrics").expect("metrics");
    let handed = sample(
        &metrics,
        r#"redq_jobs_started_total{queue="mail",via="handoff"}"#,
    );
    assert!(handed.unwrap_or(0.0) >= 1.0, "{metrics}");
    // Transitions ran as functions: the libraries were there.
    let log = daemon.log();
    assert!(!log.contains("may not load"), "{log}");
    assert!(!log.contains("EVALSHA"), "{log}");

    // No refusal but the soft CONFIG GET of the start checks, and `redq
    // setup --check` asking who it runs as.
    let refused: Vec<_> = acl_refusals(&redis)
        .into_iter()
        .filter(|(_, what)| what != "config|get" && what != "acl|whoami")
        .collect();
    assert!(refused.is_empty(), "{refused:?}\n{log}");

    // Refused credentials, or rules that do not allow a command, are a
    // setting to fix, not an outage: exit 78 (not 69, not 1).
    let wrong = format!(
        "redis://redq-daemon:not-the-password@127.0.0.1:{}",
        redis.port
    );
    let o = run(&wrong, &["stats", "mail"]);
    assert_eq!(o.code, Some(78), "{}{}", o.stdout, o.stderr);
    let o = run(&url_as(&redis, "redq-producer"), &["stats", "mail"]);
    assert_eq!(o.code, Some(78), "{}{}", o.stdout, o.stderr);
}

#[test]
fn the_producer_user_cannot_claim_complete_or_read_payloads() {
    let redis = RedisServer::start();
    assert_eq!(run(&redis.url(), &["setup"]).code, Some(0));
    create_user(&redis, "redq-producer");
    let p = |args: &[&str]| cli_as(&redis, "redq-producer", args);
    let id = p(&[
        "FCALL",
        "redq_enqueue",
        "1",
        "redq:{mail}",
        r#"{"payload":"secret"}"#,
    ]);
    assert_eq!(id.len(), 26, "{id}");
    let lib = redq::scripts::internal_library_name();
    let claim = format!("{lib}_claim");
    let complete = format!("{lib}_complete");
    let refusals = [
        p(&[
            "FCALL",
            &claim,
            "1",
            "redq:{mail}",
            "10",
            "30000",
            "10",
            "10",
        ]),
        p(&["FCALL", &complete, "1", "redq:{mail}", &id, "1"]),
        p(&["FCALL_RO", "redq_version", "0"]),
        p(&[
            "EVAL",
            "return redis.call('HGET', KEYS[1], ARGV[1])",
            "1",
            "redq:{mail}:jobs",
            &id,
        ]),
        p(&["HGET", "redq:{mail}:jobs", &id]),
        p(&["HMGET", "redq:{mail}:jobs", &id]),
        p(&["HGETALL", "redq:{mail}:jobs"]),
        p(&["HGET", "redq:{mail}:results", &id]),
        p(&["LRANGE", "redq:{mail}:inbox", "0", "-1"]),
        p(&["LPUSH", "redq:{mail}:pending:0", &id]),
        p(&["LPOP", "redq:{mail}:pending:0"]),
        p(&["GET", "redq:{@}:epoch"]),
        p(&["KEYS", "*"]),
    ];
    for (i, r) in refusals.iter().enumerate() {
        assert!(r.starts_with("NOPERM"), "#{i} was allowed: {r}");
    }
    // An idle daemon waiting for a hand-off gets the new job when nothing
    // is pending, and otherwise nothing: handing it the pending job ahead
    // would read that job's record, which this user may not.
    let now_ms: i64 = redis
        .cli(&["TIME"])
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .parse::<i64>()
        .unwrap()
        * 1000;
    let registration = format!("5,30000,{}", now_ms + 60_000);
    for q in ["mail", "fresh"] {
        let idle = format!("redq:{{{q}}}:idle");
        redis.cli(&["HSET", &idle, "d1.0", &registration]).unwrap();
    }
    let behind = p(&[
        "FCALL",
        "redq_enqueue",
        "1",
        "redq:{mail}",
        r#"{"payload":"behind"}"#,
    ]);
    assert_eq!(behind.len(), 26, "{behind}");
    assert_eq!(
        redis
            .cli(&["EXISTS", "redq:{mail}:handoff:d1.0"])
            .unwrap()
            .trim(),
        "0"
    );
    let handed = p(&[
        "FCALL",
        "redq_enqueue",
        "1",
        "redq:{fresh}",
        r#"{"payload":"handed"}"#,
    ]);
    assert_eq!(handed.len(), 26, "{handed}");
    let list = redis
        .cli(&["LRANGE", "redq:{fresh}:handoff:d1.0", "0", "-1"])
        .unwrap();
    assert!(list.contains(&handed) && list.contains("handed"), "{list}");
    // The job is still there, untouched, for a daemon.
    let o = run(&redis.url(), &["job", "mail", &id, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["state"], "pending");
    assert_eq!(v["payload"], serde_json::json!("secret"));
    // Nor through the CLI, whose view of a job is an atomic read (MULTI):
    // refused. (A debug build's redis-rs 1.8.1 panics on that refusal in
    // its connection task, so only the failure is checked, not its code.)
    let o = run(&url_as(&redis, "redq-producer"), &["job", "mail", &id]);
    assert_ne!(o.code, Some(0), "{}{}", o.stdout, o.stderr);
    assert!(!o.stdout.contains("secret"), "{}", o.stdout);
}

#[test]
fn without_the_libraries_a_daemon_that_may_not_load_them_runs_on_evalsha_and_warns_once() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    create_user(&redis, "redq-daemon");
    create_user(&redis, "redq-producer");
    let mut daemon = a_daemon(&redis, dir.path(), "redq-daemon");
    let as_daemon = url_as(&redis, "redq-daemon");
    // The inbox works without any library.
    for n in 0..3 {
        let doc = format!(r#"{{"payload":{n},"id":"j{n}"}}"#);
        cli_as(
            &redis,
            "redq-producer",
            &["LPUSH", "redq:{mail}:inbox", &doc],
        );
    }
    for n in 0..3 {
        wait_succeeded(&as_daemon, &format!("j{n}"));
    }
    let fcall = cli_as(
        &redis,
        "redq-producer",
        &[
            "FCALL",
            "redq_enqueue",
            "1",
            "redq:{mail}",
            r#"{"payload":1}"#,
        ],
    );
    assert!(fcall.contains("Function not found"), "{fcall}");
    assert!(daemon.exited().is_none(), "{}", daemon.log());
    let log = daemon.log();
    let public =
        "producers' FCALL redq_enqueue fails with \\\"Function not found\\\" until `redq setup`";
    let internal = "redq runs its transitions as EVALSHA scripts";
    assert_eq!(log.matches(public).count(), 1, "{log}");
    assert_eq!(log.matches(internal).count(), 1, "{log}");
    assert!(!log.contains("#!lua"), "{log}");

    // An admin runs `redq setup`: FCALL producers work, the daemon goes on.
    assert_eq!(run(&redis.url(), &["setup"]).code, Some(0));
    let id = cli_as(
        &redis,
        "redq-producer",
        &[
            "FCALL",
            "redq_enqueue",
            "1",
            "redq:{mail}",
            r#"{"payload":2}"#,
        ],
    );
    assert_eq!(id.len(), 26, "{id}");
    wait_succeeded(&as_daemon, &id);
    let log = daemon.log();
    assert_eq!(log.matches(public).count(), 1, "{log}");
    assert_eq!(log.matches(internal).count(), 1, "{log}");
}

#[test]
fn a_redis_without_functions_is_refused_in_one_sentence() {
    let redis = RedisServer::start_with(&[
        "--rename-command",
        "FCALL",
        "fcall-off",
        "--rename-command",
        "FCALL_RO",
        "fcall-ro-off",
        "--rename-command",
        "FUNCTION",
        "function-off",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let sentence = "redq supports Redis 7.0 or newer and Valkey 8, because its job transitions and producers' FCALL redq_enqueue are Redis Functions";
    let mut daemon = Daemon::spawn(
        &{
            let path = dir.path().join("workers.toml");
            let queues = "[queues.mail]\nhandler = { command = [\"/bin/cat\"] }\n";
            std::fs::write(&path, config(&redis.url(), "5s", queues)).unwrap();
            path
        },
        &dir.path().join("daemon.log"),
        &[],
    );
    let (status, _) = daemon.wait_exit(secs(15));
    assert_eq!(status.code(), Some(1), "{}", daemon.log());
    let log = daemon.log();
    assert!(log.contains(sentence), "{log}");
    assert!(log.contains("does not accept FCALL"), "{log}");
    assert!(!log.contains("lua"), "{log}");
    let o = run(&redis.url(), &["setup"]);
    assert_eq!(o.code, Some(1), "{}", o.stdout);
    assert!(o.stdout.contains(sentence), "{}", o.stdout);
}

/// The daemon's documented rules grant exactly the commands the daemon
/// sends or runs from Lua (`redq::store::acl::DAEMON_COMMANDS`, which a unit
/// test holds to the Lua): none missing, none extra.
#[test]
fn the_documented_daemon_rules_grant_exactly_what_the_daemon_runs() {
    use std::collections::BTreeSet;
    let granted: BTreeSet<String> = documented_rules("redq-daemon")
        .iter()
        .filter_map(|w| w.strip_prefix('+'))
        .map(str::to_owned)
        .collect();
    let needed: BTreeSet<String> = redq::store::acl::DAEMON_COMMANDS
        .iter()
        .map(|s| redq::store::acl::acl_name(s))
        .collect();
    assert_eq!(granted, needed);
    let rules = documented_rules("redq-daemon");
    for scope in ["reset", "on", "~redq:*", "&redq:*"] {
        assert!(rules.iter().any(|w| w == scope), "{scope}: {rules:?}");
    }
}

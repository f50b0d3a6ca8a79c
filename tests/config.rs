//! Configuration: defaults, durations, refusal of unknown keys and bad values
//! (naming the key path), the layering file → environment → flags, and the
//! cross-field rules of `validate`.
//!
//! Tests that touch `REDQ_…` variables or the process environment hold
//! [`ENV_LOCK`]; every other test uses `load_from_str`, which never reads it.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use redq::config::{
    self, load, load_from_str, read_str, redacted_url, Builtin, Config, HandlerConfig, LogFormat,
    Order, Overrides,
};

/// Serializes the tests that read or change the process environment.
static ENV_LOCK: Mutex<()> = Mutex::new(());

/// Sets environment variables for the life of the guard (hold `ENV_LOCK`).
struct EnvVars(Vec<&'static str>);

impl EnvVars {
    fn set(vars: &[(&'static str, &str)]) -> Self {
        for (k, v) in vars {
            std::env::set_var(k, v);
        }
        EnvVars(vars.iter().map(|(k, _)| *k).collect())
    }
}

impl Drop for EnvVars {
    fn drop(&mut self) {
        for k in &self.0 {
            std::env::remove_var(k);
        }
    }
}

fn temp_toml(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

fn err(toml: &str) -> String {
    load_from_str(toml)
        .expect_err("config should be refused")
        .to_string()
}

const NOOP: &str = "handler = { builtin = \"noop\" }";

#[test]
fn defaults() {
    let c = load_from_str("").unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(c.redis.url, "redis://127.0.0.1:6379");
    assert_eq!(c.redis.key_prefix, "redq");
    assert_eq!(c.redis.connect_timeout, Duration::from_secs(5));
    assert_eq!(c.daemon.shutdown_timeout, Duration::from_secs(25));
    assert_eq!(c.daemon.listen, "127.0.0.1:9464");
    assert_eq!(c.daemon.log_format, LogFormat::Text);
    assert_eq!(c.daemon.max_payload_bytes, 1_048_576);

    let c = load_from_str(&format!("[queues.q]\n{NOOP}")).unwrap();
    let q = &c.queues["q"];
    assert_eq!(q.concurrency, 10);
    assert_eq!(q.timeout, Duration::from_secs(300));
    assert_eq!(q.max_attempts, 10);
    assert_eq!(q.lease, Duration::from_secs(30));
    assert_eq!(q.lease_renew, None);
    assert_eq!(q.effective_lease_renew(), Duration::from_secs(10));
    assert_eq!(q.dead_ttl, Duration::from_secs(30 * 86400));
    assert_eq!(q.backoff.jitter, 0.2);
    assert_eq!(q.weight, 1);
    assert!(matches!(&q.handler, Some(HandlerConfig::Builtin(b)) if b.name == Builtin::Noop));
}

#[test]
fn durations_parse_and_print_back() {
    let c = load_from_str(&format!(
        "[daemon]\nreap_interval = \"500ms\"\nshutdown_timeout = \"30s\"\n\
         [queues.q]\ntimeout = \"5m\"\ndead_ttl = \"30d\"\n{NOOP}"
    ))
    .unwrap();
    assert_eq!(c.daemon.reap_interval, Duration::from_millis(500));
    assert_eq!(c.daemon.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(c.queues["q"].timeout, Duration::from_secs(300));
    assert_eq!(c.queues["q"].dead_ttl, Duration::from_secs(30 * 86400));
    assert_eq!(config::duration::format(Duration::from_secs(90)), "1m 30s");

    let json = serde_json::to_value(&c).unwrap();
    assert_eq!(json["daemon"]["reap_interval"], "500ms");
    assert_eq!(json["queues"]["q"]["handler"]["builtin"], "noop");

    let e = err("[daemon]\nshutdown_timeout = \"5 parsecs\"");
    assert!(
        e.starts_with("daemon.shutdown_timeout: \"5 parsecs\" is not a duration"),
        "{e}"
    );
    let e = err("[daemon]\nshutdown_timeout = 30");
    assert!(
        e.starts_with("daemon.shutdown_timeout: invalid type"),
        "{e}"
    );
}

#[test]
fn unknown_keys_are_refused_with_their_path() {
    let e = err("colour = 1");
    assert!(e.starts_with("colour: unknown key"), "{e}");
    let e = err(&format!("[queues.emails]\nconcurency = 3\n{NOOP}"));
    assert!(
        e.starts_with("queues.emails.concurency: unknown key"),
        "{e}"
    );
    assert!(e.contains("`concurrency`"), "{e}");
    let e = err("[queues.emails]\nhandler = { builtin = \"noop\", retries = 3 }");
    assert!(
        e.starts_with("queues.emails.handler.retries: unknown key"),
        "{e}"
    );
}

#[test]
fn bad_types_name_the_path() {
    let e = err(&format!("[queues.emails]\nconcurrency = \"x\"\n{NOOP}"));
    assert!(
        e.starts_with("queues.emails.concurrency: invalid type: found string \"x\", expected u32"),
        "{e}"
    );
    let e = err("[daemon]\nlog_format = \"xml\"");
    assert!(
        e.starts_with("daemon.log_format: unknown value \"xml\""),
        "{e}"
    );
    let e = err("[queues.\"mail.out\"]\nweight = -1");
    assert!(e.starts_with("queues.\"mail.out\".weight: invalid"), "{e}");
}

#[test]
fn environment_wins_over_the_file_and_flags_win_over_both() {
    let _lock = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let file = temp_toml("[redis]\nurl = \"redis://file:6379\"\n[daemon]\nlog_level = \"warn\"");
    let _env = EnvVars::set(&[
        ("REDQ_REDIS__URL", "redis://env:6379"),
        ("REDQ_DAEMON__LOG_LEVEL", "debug"),
        ("REDQ_CONFIG", "ignored: not a nested key"),
    ]);
    let c = load(Some(file.path()), &Overrides::new()).unwrap();
    assert_eq!(c.redis.url, "redis://env:6379");
    assert_eq!(c.daemon.log_level, "debug");

    let flags = Overrides::new()
        .set("daemon.log_level", "trace")
        .set("redis.key_prefix", "flags");
    let c = load(Some(file.path()), &flags).unwrap();
    assert_eq!(c.daemon.log_level, "trace");
    assert_eq!(c.redis.key_prefix, "flags");
    assert_eq!(c.redis.url, "redis://env:6379");
}

#[test]
fn environment_errors_name_the_variable() {
    let _lock = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let file = temp_toml("[queues.emails]\nhandler = { builtin = \"noop\" }");
    let _env = EnvVars::set(&[("REDQ_QUEUES__EMAILS__CONCURRENCY", "many")]);
    let e = load(Some(file.path()), &Overrides::new())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("queues.emails.concurrency: invalid type"),
        "{e}"
    );
    assert!(e.contains("REDQ_QUEUES__EMAILS__CONCURRENCY"), "{e}");
}

#[test]
fn a_missing_named_file_is_an_error() {
    let e = load(Some(Path::new("/nonexistent/redq.toml")), &Overrides::new())
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/redq.toml"), "{e}");
}

#[test]
fn exactly_one_handler_kind() {
    let e = err("[queues.q]\nhandler = { }");
    assert!(
        e.starts_with("queues.q.handler: exactly one of `command`, `http` or `builtin`"),
        "{e}"
    );
    assert!(e.contains("found none"), "{e}");
    let e = err("[queues.q]\nhandler = { command = [\"/bin/true\"], http = \"http://x/\" }");
    assert!(e.contains("found command and http"), "{e}");
    let e = err("[queues.q]\nhandler = { builtin = \"noop\", headers = { A = \"b\" } }");
    assert!(
        e.starts_with("queues.q.handler: `headers` applies to http handlers only"),
        "{e}"
    );
    let e = err("[queues.q]\nhandler = { builtin = \"explode\" }");
    assert!(
        e.starts_with("queues.q.handler.builtin: unknown value \"explode\""),
        "{e}"
    );
    assert!(e.contains("`noop` or `fail`"), "{e}");

    let e = err("[queues.q]\nconcurrency = 1");
    assert!(e.starts_with("queues.q.handler: missing"), "{e}");
    let c = read_str("[queues.q]\nconcurrency = 1").unwrap();
    c.validate_with(&BTreeSet::from(["q".to_string()])).unwrap();

    let c = load_from_str(
        "[queues.q]\nhandler = { command = [\"/bin/prog\", \"-v\"], env = { A = \"1\" }, kill_grace = \"2s\", timeout = \"9s\" }",
    )
    .unwrap();
    let Some(HandlerConfig::Command(cmd)) = &c.queues["q"].handler else {
        panic!("not a command")
    };
    assert_eq!(cmd.argv, ["/bin/prog", "-v"]);
    assert_eq!(cmd.kill_grace, Duration::from_secs(2));
    assert_eq!(c.queues["q"].effective_timeout(), Duration::from_secs(9));

    let e = err(
        "[queues.q]\nhandler = { command = [] }\n[queues.h]\nhandler = { http = \"ftp://x/\" }",
    );
    assert!(
        e.contains("queues.q.handler.command: must name a program"),
        "{e}"
    );
    assert!(
        e.contains("queues.h.handler.http: \"ftp://x/\" must be an http:// or https:// URL"),
        "{e}"
    );
}

#[test]
fn pool_rules() {
    let base = format!(
        "[queues.a]\n{NOOP}\n[queues.b]\n{NOOP}\nweight = 3\n[queues.c]\n{NOOP}\npool = \"p\"\n"
    );
    let c = load_from_str(&format!(
        "{base}[pools.p]\nconcurrency = 4\nqueues = [\"a\", \"b\"]\norder = \"weighted\""
    ))
    .unwrap();
    assert_eq!(c.pools["p"].order, Order::Weighted);
    assert_eq!(c.pool_queues("p"), ["a", "b", "c"]);
    assert_eq!(c.pool_of("b"), Some("p"));
    assert_eq!(c.pool_of("c"), Some("p"));

    let e = err(&format!(
        "{base}[pools.p]\nconcurrency = 4\nqueues = [\"a\", \"zz\"]\n[pools.r]\nconcurrency = 1\nqueues = [\"a\"]"
    ));
    assert!(
        e.contains("pools.p.queues: \"zz\" is not a queue defined under [queues]"),
        "{e}"
    );
    assert!(
        e.contains("pools.r.queues: \"a\" is already in pool \"p\""),
        "{e}"
    );

    let e = err(&format!(
        "{base}[pools.x]\nconcurrency = 0\nqueues = [\"a\"]"
    ));
    assert!(
        e.contains("queues.c.pool: \"p\" is not a pool defined under [pools]"),
        "{e}"
    );
    assert!(
        e.contains("pools.x.concurrency: 0 is out of range 1-10000"),
        "{e}"
    );

    let e = err(&format!("[queues.a]\n{NOOP}\npool = \"p\"\n[pools.p]\nconcurrency = 1\n[pools.r]\nconcurrency = 1\nqueues = [\"a\"]"));
    assert!(
        e.contains("queues.a.pool: names pool \"p\" but pools.r.queues lists it"),
        "{e}"
    );
    let e = err(&format!(
        "{base}[pools.p]\nconcurrency = 1\n[pools.empty]\nconcurrency = 1"
    ));
    assert!(
        e.starts_with("pools.empty.queues: the pool serves no queue"),
        "{e}"
    );
}

#[test]
fn lease_must_be_three_times_the_renewal() {
    load_from_str(&format!(
        "[queues.q]\n{NOOP}\nlease = \"30s\"\nlease_renew = \"10s\""
    ))
    .unwrap();
    let e = err(&format!(
        "[queues.q]\n{NOOP}\nlease = \"30s\"\nlease_renew = \"11s\""
    ));
    assert!(
        e.starts_with("queues.q.lease_renew: lease (30s) must be at least 3 × lease_renew (11s)"),
        "{e}"
    );
}

#[test]
fn cron_catch_up_defaults_to_twice_the_leader_ttl_and_at_least_a_minute() {
    let d = load_from_str("").unwrap().daemon;
    assert_eq!(d.cron_catch_up, None);
    assert_eq!(d.effective_cron_catch_up(), Duration::from_secs(60));
    let d = load_from_str("[daemon]\nleader_ttl = \"45s\"")
        .unwrap()
        .daemon;
    assert_eq!(d.effective_cron_catch_up(), Duration::from_secs(90));
    let d = load_from_str("[daemon]\nleader_ttl = \"1500ms\"\ncron_catch_up = \"3s\"")
        .unwrap()
        .daemon;
    assert_eq!(d.effective_cron_catch_up(), Duration::from_secs(3));
    let e = err("[daemon]\ncron_catch_up = \"19s\"");
    assert!(
        e.starts_with("daemon.cron_catch_up: 19s is less than 2 × daemon.leader_ttl (10s)"),
        "{e}"
    );
    let e = err("[daemon]\ncron_catch_up = \"soon\"");
    assert!(
        e.starts_with("daemon.cron_catch_up: \"soon\" is not a duration"),
        "{e}"
    );
}

#[test]
fn non_loopback_listen_needs_listen_public() {
    let e = err("[daemon]\nlisten = \"0.0.0.0:9464\"");
    assert!(
        e.starts_with("daemon.listen: 0.0.0.0:9464 is not a loopback address"),
        "{e}"
    );
    assert!(e.contains("listen_public = true"), "{e}");
    load_from_str("[daemon]\nlisten = \"0.0.0.0:9464\"\nlisten_public = true").unwrap();
    load_from_str("[daemon]\nlisten = \"[::1]:9464\"").unwrap();
    let e = err("[daemon]\nlisten = \"localhost\"");
    assert!(
        e.starts_with("daemon.listen: \"localhost\" is not an address:port"),
        "{e}"
    );
}

#[test]
fn every_problem_is_reported_one_per_line() {
    let e = load_from_str(&format!(
        "[redis]\nkey_prefix = \"a b\"\n[daemon]\nshutdown_timeout = \"0s\"\nleader_ttl = \"50ms\"\n\
         [queues.q]\nconcurrency = 0\nmax_attempts = 0\nbackoff = {{ base = \"2h\", max = \"1h\", jitter = 1.5 }}\n\
         handler = {{ builtin = \"fail\", timeout = \"0s\" }}\n[queues.\"bad name\"]\n{NOOP}\n\
         [[cron]]\nschedule = \"\"\nqueue = \"nope\""
    ))
    .unwrap_err();
    let lines: Vec<String> = e.to_string().lines().map(String::from).collect();
    eprintln!("{e}");
    assert_eq!(lines.len(), e.problems().len());
    for expected in [
        "redis.key_prefix: ",
        "daemon.shutdown_timeout: must be more than 0s",
        "daemon.leader_ttl: must be at least 100ms",
        "queues.q.concurrency: 0 is out of range 1-10000",
        "queues.q.max_attempts: 0 is out of range 1-1000",
        "queues.q.backoff.base: 2h is more than backoff.max (1h)",
        "queues.q.backoff.jitter: 1.5 is out of range 0.0-1.0",
        "queues.q.handler.timeout: must be more than 0s",
        "queues.\"bad name\": queue names must be",
        "cron[0].schedule: must not be empty",
        "cron[0].queue: \"nope\" is not a queue",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(expected)),
            "no line starts with {expected:?} in:\n{e}"
        );
    }
    let wrapped: redq::Error = e.into();
    assert!(matches!(wrapped, redq::Error::Config(_)));
}

#[test]
fn redacted_urls_hide_credentials() {
    assert_eq!(
        redacted_url("redis://app:s3cret@db:6379/2"),
        "redis://***@db:6379/2"
    );
    assert_eq!(redacted_url("rediss://:p/a@ss@db"), "rediss://***@db");
    assert_eq!(
        redacted_url("redis://127.0.0.1:6379"),
        "redis://127.0.0.1:6379"
    );
    let e = err("[redis]\nurl = \"http://u:pw@host\"");
    assert!(
        e.starts_with("redis.url: http://***@host is not a Redis URL"),
        "{e}"
    );
    assert!(!e.contains("pw"), "{e}");
}

#[test]
fn the_repository_example_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("workers.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let c = load_from_str(&text).unwrap();
    assert_eq!(
        c,
        Config {
            queues: c.queues.clone(),
            ..Config::default()
        },
        "sections other than queues hold defaults"
    );
    assert!(matches!(
        c.queues["emails"].handler,
        Some(HandlerConfig::Command(_))
    ));
    assert!(matches!(
        c.queues["webhooks"].handler,
        Some(HandlerConfig::Http(_))
    ));
    assert!(matches!(
        c.queues["smoke"].handler,
        Some(HandlerConfig::Builtin(_))
    ));
    let emails = &c.queues["emails"];
    let defaults = config::QueueConfig {
        handler: emails.handler.clone(),
        ..Default::default()
    };
    assert_eq!(emails, &defaults, "[queues.emails] shows the defaults");

    let printed = serde_json::to_value(&c).unwrap();
    let back: Config = serde_json::from_value(printed).unwrap();
    assert_eq!(back, c, "a printed config reads back the same");

    let _lock = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    assert_eq!(load(Some(&path), &Overrides::new()).unwrap(), c);
}

#[test]
fn tls_settings_are_checked_at_load_naming_the_key() {
    // rediss:// with the bundled roots needs no file.
    let ok = load_from_str("[redis]\nurl = \"rediss://db.example:6380\"\n").unwrap();
    assert_eq!(ok.redis.tls, redq::config::TlsConfig::default());
    // TLS settings without a rediss:// URL would be silently ignored.
    let e = err("[redis]\nurl = \"redis://db:6379\"\ntls = { insecure_skip_verify = true }\n");
    assert!(e.contains("redis.tls") && e.contains("rediss://"), "{e}");
    // A client certificate needs its key.
    let e = err("[redis]\nurl = \"rediss://db:6380\"\ntls = { cert_file = \"/etc/x.pem\" }\n");
    assert!(e.contains("cert_file and key_file"), "{e}");
    // Files must exist and hold PEM certificates.
    let e =
        err("[redis]\nurl = \"rediss://db:6380\"\ntls = { ca_file = \"/nonexistent/ca.pem\" }\n");
    assert!(
        e.contains("redis.tls.ca_file") && e.contains("/nonexistent/ca.pem"),
        "{e}"
    );
    let not_pem = temp_toml("not a certificate");
    let toml = format!(
        "[redis]\nurl = \"rediss://db:6380\"\ntls = {{ ca_file = {:?} }}\n",
        not_pem.path().display().to_string()
    );
    let e = err(&toml);
    assert!(
        e.contains("redis.tls.ca_file") && e.contains("no PEM certificate"),
        "{e}"
    );
    let e =
        err("[redis]\nurl = \"rediss://10.0.0.1:6380\"\ntls = { server_name = \"not a name\" }\n");
    assert!(e.contains("redis.tls.server_name"), "{e}");
}

#[test]
fn ambiguous_duration_units_are_refused_with_the_allowed_list() {
    for (value, says) in [
        ("5M", "unknown unit \"M\""),
        ("100y", "unknown unit \"y\""),
        ("-1s", "durations cannot be negative"),
        ("30", "has no unit"),
    ] {
        let e = err(&format!("[queues.q]\ntimeout = \"{value}\"\n{NOOP}"));
        assert!(
            e.starts_with(&format!("queues.q.timeout: \"{value}\" is not a duration")),
            "{e}"
        );
        assert!(e.contains(says), "{value}: {e}");
        assert!(e.contains("units: ms, s, m, h, d"), "{value}: {e}");
    }
    let c = load_from_str(&format!("[queues.q]\ntimeout = \"1h 30m\"\n{NOOP}")).unwrap();
    assert_eq!(c.queues["q"].timeout, Duration::from_secs(5400));
}

#[test]
fn every_unknown_key_and_bad_type_is_reported_in_one_run_with_its_line() {
    let file = temp_toml(
        "[redis]\n\
         url = \"redis://app:s3cret@localhost:abc\"\n\
         \n\
         [daemon]\n\
         colour = 1\n\
         shutdown_timeout = \"5M\"\n\
         \n\
         [queues.emails]\n\
         concurency = 3\n\
         handler = { builtin = \"noop\" }\n\
         \n\
         [queues.b]\n\
         concurrency = \"many\"\n\
         max_attempts = 0\n\
         handler = { builtin = \"noop\" }\n",
    );
    let name = file.path().display().to_string();
    let _lock = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let e = load(Some(file.path()), &Overrides::new()).unwrap_err();
    let text = e.to_string();
    for (key, line) in [
        ("daemon.colour: unknown key", 5),
        ("daemon.shutdown_timeout: \"5M\" is not a duration", 6),
        ("queues.emails.concurency: unknown key", 9),
        ("queues.b.concurrency: invalid type", 13),
        ("queues.b.max_attempts: 0 is out of range", 14),
        ("redis.url: redis://***@localhost:abc does not parse", 2),
    ] {
        let found = text.lines().find(|l| l.starts_with(key));
        let Some(found) = found else {
            panic!("no line starts with {key:?}:\n{text}");
        };
        assert!(
            found.ends_with(&format!("(in {name}, line {line})")),
            "{key}: not at line {line}: {found}"
        );
    }
    assert_eq!(e.problems().len(), 6, "{text}");
    assert!(!text.contains("s3cret"), "{text}");
    assert!(!text.contains("invalid configuration"), "{text}");
}

#[test]
fn urls_are_checked_when_the_config_is_read() {
    let e = err("[redis]\nurl = \"redis://localhost:abc\"");
    assert!(
        e.starts_with("redis.url: redis://localhost:abc does not parse: the port \"abc\""),
        "{e}"
    );
}

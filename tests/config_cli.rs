//! The configuration as the command line meets it: which file is read,
//! `redq check-config` and `redq config`, and how problems are reported
//! (one `invalid configuration:` prefix, each key with its file and line).
//! Needs no Redis.

mod common;

use std::fs;

use common::process::{redq, run_bounded};
use common::wait::secs;

#[test]
fn without_a_workers_toml_run_and_check_config_refuse_unless_told_no_file() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["check-config", "run", "config"] {
        let o = run_bounded(redq().current_dir(dir.path()).arg(sub), secs(15));
        assert_eq!(o.code, Some(78), "redq {sub}: {}", o.stderr);
        assert!(
            o.stderr.contains("no configuration file")
                && o.stderr.contains("workers.toml does not exist")
                && o.stderr.contains("--config FILE")
                && o.stderr.contains("--no-config"),
            "redq {sub}: {}",
            o.stderr
        );
    }
    // On purpose: defaults and the environment only; zero queues is said loudly.
    let o = run_bounded(
        redq()
            .current_dir(dir.path())
            .args(["--no-config", "check-config"]),
        secs(15),
    );
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(o.stdout.contains("ok (0 queues"), "{}", o.stdout);
    assert!(
        o.stderr.contains("warning: no queues are configured"),
        "{}",
        o.stderr
    );
}

#[test]
fn handler_problems_have_one_prefix_and_say_where_the_key_is() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("w.toml");
    fs::write(
        &cfg,
        "[queues.a]\nconcurrency = 2\nhandler = { command = [\"/nonexistent/redq-handler\"] }\n",
    )
    .unwrap();
    let o = run_bounded(
        redq().arg("--config").arg(&cfg).arg("check-config"),
        secs(15),
    );
    assert_eq!(o.code, Some(78), "{}", o.stderr);
    assert_eq!(
        o.stderr.matches("invalid configuration").count(),
        1,
        "{}",
        o.stderr
    );
    assert!(
        o.stderr.contains("queues.a.handler.command: ")
            && o.stderr.contains("/nonexistent/redq-handler")
            && o.stderr
                .contains(&format!("(in {}, line 3)", cfg.display())),
        "{}",
        o.stderr
    );
}

#[test]
fn redq_config_prints_the_effective_configuration_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("w.toml");
    fs::write(
        &cfg,
        "[redis]\nurl = \"redis://file:6379\"\n[queues.mail]\ntimeout = \"90m\"\n\
         handler = { builtin = \"noop\" }\n\
         [queues.hook]\nhandler = { http = \"http://127.0.0.1:1/\", headers = { Authorization = \"Bearer tok-secret\" } }\n",
    )
    .unwrap();
    let o = run_bounded(
        redq()
            .arg("--config")
            .arg(&cfg)
            .args(["--key-prefix", "flagged", "config"])
            .env("REDQ_REDIS__URL", "redis://app:pw-secret@envhost:6380")
            .env("REDQ_QUEUES__MAIL__CONCURRENCY", "3"),
        secs(15),
    );
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let out = &o.stdout;
    assert!(
        !out.contains("pw-secret") && !out.contains("tok-secret"),
        "{out}"
    );
    for line in [
        "url = \"redis://***@envhost:6380\"",
        "key_prefix = \"flagged\"",
        "[queues.mail]",
        "concurrency = 3",
        "timeout = \"1h 30m\"",
        "Authorization = \"***\"",
        "shutdown_timeout = \"25s\"",
    ] {
        assert!(
            out.lines().any(|l| l == line),
            "no line {line:?} in:\n{out}"
        );
    }
    assert!(
        out.contains("REDQ_QUEUES__MAIL__CONCURRENCY, REDQ_REDIS__URL")
            && out.contains("--key-prefix"),
        "the header names the layers: {out}"
    );

    // What it prints reads back as a file.
    let printed = dir.path().join("printed.toml");
    fs::write(&printed, out).unwrap();
    let o = run_bounded(
        redq().arg("--config").arg(&printed).arg("check-config"),
        secs(15),
    );
    assert_eq!(o.code, Some(0), "{}", o.stderr);

    // An invalid value still prints (so it can be seen), then exits 78.
    let o = run_bounded(
        redq()
            .arg("--config")
            .arg(&cfg)
            .arg("config")
            .env("REDQ_QUEUES__MAIL__CONCURRENCY", "0"),
        secs(15),
    );
    assert_eq!(o.code, Some(78), "{}", o.stderr);
    assert!(o.stdout.contains("concurrency = 0"), "{}", o.stdout);
    assert!(
        o.stderr
            .contains("queues.mail.concurrency: 0 is out of range")
            && o.stderr.contains("REDQ_QUEUES__MAIL__CONCURRENCY"),
        "{}",
        o.stderr
    );
}

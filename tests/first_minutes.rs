//! The first minutes of an operator, with a real `redq run`: readable
//! logs (no colour off a terminal, no timestamps of its own under
//! journald), a first sign that jobs run (the first success of each queue
//! is logged once, the first summary comes early, `redq stats` counts
//! successes that retention deleted), a first scrape with every gauge, and
//! a refused reload that systemd's STATUS and a metric both show.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;

use common::http::{http_get, sample};
use common::process::{redq, run_bounded, stats, Daemon};
use common::server::RedisServer;
use common::wait::{secs, wait_for};
use common::workers::{config, write_atomic};

const QUEUE: &str = "[queues.mail]\nhandler = { builtin = \"noop\" }\n";

fn text_config(url: &str) -> String {
    config(url, "2s", QUEUE).replace("log_format = \"json\"", "log_format = \"text\"")
}

fn enqueue(url: &str, queue: &str) -> String {
    let o = run_bounded(
        redq().args(["--redis-url", url, "enqueue", queue, "{}"]),
        secs(10),
    );
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    o.stdout.trim().to_owned()
}

#[test]
fn text_logs_have_no_colour_off_a_terminal_and_no_timestamps_under_journald() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("w.toml");
    fs::write(&cfg, text_config(&redis.url())).unwrap();

    // A file: plain text, each line stamped with the time.
    let log = dir.path().join("file.log");
    let mut d = Daemon::start(&cfg, &log, &[]);
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(secs(10)).0.code(), Some(0));
    let text = fs::read_to_string(&log).unwrap();
    assert!(!text.contains('\x1b'), "ANSI escapes in a file:\n{text}");
    let first = text.lines().next().unwrap();
    assert!(
        first.starts_with(|c: char| c.is_ascii_digit()) && first.contains(" INFO "),
        "a timestamp first: {first}"
    );

    // The journal: stderr is the stream JOURNAL_STREAM names.
    let log = dir.path().join("journal.log");
    fs::write(&log, "").unwrap();
    let m = fs::metadata(&log).unwrap();
    let stream = format!("{}:{}", m.dev(), m.ino());
    let mut d = Daemon::start(&cfg, &log, &[("JOURNAL_STREAM", &stream)]);
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(secs(10)).0.code(), Some(0));
    let text = fs::read_to_string(&log).unwrap();
    assert!(!text.contains('\x1b'), "{text}");
    for line in text.lines() {
        assert!(
            line.trim_start().starts_with("INFO")
                || line.trim_start().starts_with("WARN")
                || line.trim_start().starts_with("ERROR"),
            "journald adds the time; the line starts with its level: {line}"
        );
    }

    // NO_COLOR needs a terminal to matter; its rule is a unit test
    // (src/cli/logging.rs). It never adds colour where there was none.
    let log = dir.path().join("no_color.log");
    let mut d = Daemon::start(&cfg, &log, &[("NO_COLOR", "1")]);
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(secs(10)).0.code(), Some(0));
    assert!(!fs::read_to_string(&log).unwrap().contains('\x1b'));
}

#[test]
fn the_first_success_of_a_queue_is_logged_once_and_stats_count_what_retention_deleted() {
    let redis = RedisServer::start();
    let url = redis.url();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("w.toml");
    fs::write(&cfg, text_config(&url)).unwrap();
    let log = dir.path().join("redq.log");
    let mut d = Daemon::start(&cfg, &log, &[]);
    assert!(
        d.log()
            .contains("redq daemon ready, serving mail; the first summary follows in 10s"),
        "{}",
        d.log()
    );

    let first = enqueue(&url, "mail");
    d.wait_log("first job of queue mail succeeded", 1, secs(10));
    assert!(
        d.log().contains(&first),
        "the line names the job: {}",
        d.log()
    );
    for _ in 0..4 {
        enqueue(&url, "mail");
    }
    // Completed jobs are deleted at once (keep_completed = 0), yet counted.
    let s = wait_for("redq stats to count 5 successes", secs(15), || {
        let s = stats(&url, "mail");
        (s["succeeded_total"] == 5).then_some(s)
    });
    assert_eq!(s["succeeded"], 0, "none kept: {s}");
    let o = run_bounded(
        redq().args(["--redis-url", &url, "stats", "mail"]),
        secs(10),
    );
    let header: Vec<&str> = o
        .stdout
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let row: Vec<&str> = o
        .stdout
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .collect();
    let col = |name: &str| row[header.iter().position(|h| *h == name).unwrap()];
    assert_eq!((col("SUCCEEDED"), col("KEPT")), ("5", "0"), "{}", o.stdout);

    // The first summary line comes within seconds, not after a minute.
    d.wait_log("summary: mail: ", 1, secs(15));
    assert_eq!(
        d.log().matches("first job of queue mail succeeded").count(),
        1,
        "logged once: {}",
        d.log()
    );
    // `redq job` on a deleted job says why it may be gone.
    let o = run_bounded(
        redq().args(["--redis-url", &url, "job", "mail", &first]),
        secs(10),
    );
    assert_eq!(o.code, Some(1));
    assert!(o.stderr.contains("keep_completed"), "{}", o.stderr);
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(secs(10)).0.code(), Some(0));
}

/// Reads what the daemon sent to the notify socket until a `STATUS=` for
/// which `wanted` holds; returns it.
fn status_where(sock: &UnixDatagram, what: &str, wanted: impl Fn(&str) -> bool) -> String {
    let mut buf = vec![0u8; 65536];
    let mut seen = Vec::new();
    wait_for(&format!("a STATUS {what}"), secs(15), || {
        while let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            if let Some(status) = msg.lines().find_map(|l| l.strip_prefix("STATUS=")) {
                if wanted(status) {
                    return Ok(status.to_owned());
                }
            }
            seen.push(msg);
        }
        Err(format!("{seen:?}"))
    })
}

fn status_with(sock: &UnixDatagram, needle: &str) -> String {
    status_where(sock, &format!("with {needle:?}"), |s| s.contains(needle))
}

#[test]
fn a_refused_reload_shows_in_status_and_a_metric_and_the_first_scrape_has_every_gauge() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("w.toml");
    let good = text_config(&redis.url());
    fs::write(&cfg, &good).unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_nonblocking(true).unwrap();
    let notify = sock_path.display().to_string();
    let mut d = Daemon::start(
        &cfg,
        &dir.path().join("redq.log"),
        &[("NOTIFY_SOCKET", &notify)],
    );

    // The first scrape, right after READY: depths and Redis's round trip are there.
    let (_, body) = http_get(&d.listen, "/metrics").unwrap();
    assert_eq!(
        sample(&body, "redq_queue_jobs{queue=\"mail\",state=\"pending\"}"),
        Some(0.0),
        "{body}"
    );
    let rtt = sample(&body, "redq_redis_rtt_seconds").unwrap();
    assert!(rtt.is_finite() && rtt > 0.0, "{body}");
    assert!(status_with(&sock, "running").contains("Redis ok"));

    write_atomic(
        &cfg,
        &good.replace("[queues.mail]", "[queues.mail]\nconcurrency = 0"),
    );
    d.signal(libc::SIGHUP);
    let status = status_with(&sock, "reload refused");
    assert!(
        status.contains("queues.mail.concurrency") && status.contains("running"),
        "{status}"
    );
    let (_, body) = http_get(&d.listen, "/metrics").unwrap();
    assert_eq!(
        sample(&body, "redq_config_reloads_total{result=\"refused\"}"),
        Some(1.0),
        "{body}"
    );
    // The next STATUS (the poller's, every few seconds) still says so.
    status_with(&sock, "reload refused");

    write_atomic(&cfg, &good);
    d.signal(libc::SIGHUP);
    wait_for("the applied reload to be counted", secs(15), || {
        let (_, body) = http_get(&d.listen, "/metrics").unwrap();
        sample(&body, "redq_config_reloads_total{result=\"applied\"}") == Some(1.0)
    });
    status_where(&sock, "without the refusal", |s| {
        s.contains("running") && !s.contains("reload refused")
    });
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(secs(10)).0.code(), Some(0));
}

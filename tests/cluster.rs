//! redq on a Redis Cluster: a private 3-primary cluster on loopback
//! (`common::cluster`), the daemon and the CLI configured with its seeds.
//! Queues are picked so that their slots land on different primaries (or
//! on a primary that is not the first seed). Tests that only add queues of
//! their own share one cluster; tests that change it start their own.

mod common;

use std::path::{Path, PathBuf};

use serde_json::Value;

use common::cluster::{self, Cluster};
use common::process::{redq, run_bounded, run_with_input, Daemon, Out};
use common::wait::{secs, wait_for};
use common::watch::Watch;
use common::workers::{toml_str, write_atomic};

/// One queue name per primary: `names[i]`'s slot is on `cluster.nodes[i]`.
fn queue_per_node(cluster: &Cluster, stem: &str) -> Vec<String> {
    (0..cluster.nodes.len())
        .map(|i| queue_on(cluster, stem, i))
        .collect()
}

/// The first queue name `<stem><n>` whose slot is on `cluster.nodes[i]`.
fn queue_on(cluster: &Cluster, stem: &str, i: usize) -> String {
    (0..)
        .map(|n| format!("{stem}{n}"))
        .find(|q| cluster.node_of(&format!("{{{q}}}")).port == cluster.nodes[i].port)
        .expect("some name lands on each node")
}

struct Setup {
    _dir: tempfile::TempDir,
    config: PathBuf,
    log: PathBuf,
}

/// A `workers.toml` with the cluster's seeds, `prefix`, and a builtin
/// no-op handler on each of `queues`.
fn setup(cluster: &Cluster, prefix: &str, queues: &[String]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let mut text = format!(
        "[redis]\ncluster = {}\nkey_prefix = {}\n\n[daemon]\nshutdown_timeout = \"5s\"\n\
         reap_interval = \"100ms\"\ninbox_poll = \"100ms\"\nlog_format = \"json\"\nlog_level = \"info\"\n\n",
        cluster.seeds_toml(),
        toml_str(prefix)
    );
    for q in queues {
        text.push_str(&format!(
            "[queues.{q}]\nhandler = {{ builtin = \"noop\" }}\nkeep_completed = 100\n\n"
        ));
    }
    let config = dir.path().join("workers.toml");
    write_atomic(&config, &text);
    let log = dir.path().join("redq.log");
    Setup {
        _dir: dir,
        config,
        log,
    }
}

/// A fresh cluster, a queue per primary named after `stem`, their
/// `workers.toml`, and a daemon serving them.
fn running(stem: &str) -> (Cluster, Vec<String>, Setup, Daemon) {
    let cluster = Cluster::start();
    let (queues, s, daemon) = running_on(&cluster, stem);
    (cluster, queues, s, daemon)
}

/// A queue per primary of `cluster` named after `stem`, their
/// `workers.toml`, and a daemon serving them.
fn running_on(cluster: &Cluster, stem: &str) -> (Vec<String>, Setup, Daemon) {
    let queues = queue_per_node(cluster, stem);
    let s = setup(cluster, "redq", &queues);
    let daemon = Daemon::start(&s.config, &s.log, &[]);
    (queues, s, daemon)
}

/// Stops the daemon with SIGTERM; it must exit 0. Returns its log.
fn stop(mut daemon: Daemon) -> String {
    daemon.signal(libc::SIGTERM);
    let log = daemon.log();
    assert_eq!(daemon.wait_exit(secs(15)).0.code(), Some(0), "{log}");
    daemon.log()
}

/// `redq --config <config> <args>`.
fn cli(config: &Path, args: &[&str]) -> Out {
    run_bounded(redq().arg("--config").arg(config).args(args), secs(20))
}

fn job_state(config: &Path, queue: &str, id: &str) -> Option<Value> {
    let o = cli(config, &["job", queue, id, "--json"]);
    (o.code == Some(0)).then(|| serde_json::from_str(&o.stdout).expect("redq job --json"))
}

fn wait_succeeded(config: &Path, queue: &str, id: &str) -> Value {
    wait_for(
        &format!("{queue}/{id} to succeed"),
        secs(20),
        || match job_state(config, queue, id) {
            Some(j) if j["state"] == "succeeded" => Ok(j),
            other => Err(format!("{other:?}")),
        },
    )
}

#[test]
fn jobs_of_queues_on_every_primary_run_from_every_producer() {
    let cluster = cluster::shared();
    let (queues, s, daemon) = running_on(&cluster, "q");

    for (i, q) in queues.iter().enumerate() {
        // The CLI.
        let id = format!("cli-{i}");
        let o = cli(&s.config, &["enqueue", "--id", &id, q, "{\"n\":1}"]);
        assert_eq!(o.code, Some(0), "redq enqueue: {}{}", o.stdout, o.stderr);
        wait_succeeded(&s.config, q, &id);
        // A payload kept apart from its record: staged in the enqueue's
        // MULTI/EXEC on the queue's node, read back when the job runs.
        let id = format!("big-{i}");
        let big = format!("\"{}\"", "b".repeat(redq::job::PAYLOAD_APART_BYTES));
        let o = cli(&s.config, &["enqueue", "--id", &id, q, &big]);
        assert_eq!(o.code, Some(0), "redq enqueue: {}{}", o.stdout, o.stderr);
        let done = wait_succeeded(&s.config, q, &id);
        assert_eq!(done["payload"].as_str().map(str::len), Some(big.len() - 2));
        // A foreign producer: FCALL through redis-cli -c, which follows
        // the redirect to the node serving the queue.
        let id = format!("fcall-{i}");
        let doc = format!("{{\"id\":\"{id}\",\"payload\":{{\"n\":2}}}}");
        let base = format!("redq:{{{q}}}");
        let out = cluster.cli(&["FCALL", "redq_enqueue", "1", &base, &doc]);
        assert!(!out.contains("ERR"), "FCALL redq_enqueue: {out}");
        wait_succeeded(&s.config, q, &id);
    }
    // Delayed jobs on every node are promoted when due: the promoter's
    // Pub/Sub connection is on one node, and hears every node's messages.
    for q in &queues {
        let o = cli(
            &s.config,
            &["enqueue", "--id", "later", "--delay", "1s", q, "{}"],
        );
        assert_eq!(
            o.code,
            Some(0),
            "redq enqueue --delay: {}{}",
            o.stdout,
            o.stderr
        );
    }
    for q in &queues {
        wait_succeeded(&s.config, q, "later");
    }
    // Each primary holds its queue's keys, and only those.
    for (i, q) in queues.iter().enumerate() {
        for (part, n) in [("jobs", "4"), ("payloads", "1")] {
            let key = format!("redq:{{{q}}}:{part}");
            assert_eq!(
                cluster.nodes[i].cli(&["HLEN", &key]).unwrap().trim(),
                n,
                "{key} on node {i}"
            );
        }
    }
    // The CLI reads across nodes.
    let o = cli(&s.config, &["stats", "--json"]);
    assert_eq!(o.code, Some(0), "redq stats: {}", o.stderr);
    let rows: Value = serde_json::from_str(&o.stdout).unwrap();
    for q in &queues {
        let row = rows
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["queue"] == q.as_str())
            .unwrap_or_else(|| panic!("{q} in {rows}"));
        assert_eq!(row["pending"], 0, "{row}");
    }
    let log = stop(daemon);
    assert!(!log.contains("MOVED"), "{log}");
    assert!(!log.contains("CROSSSLOT"), "{log}");
}

/// The function libraries redq loaded, as `FUNCTION LIST` names them.
fn libraries(node: &common::server::RedisServer) -> Vec<String> {
    let list = node.cli(&["FUNCTION", "LIST"]).unwrap_or_default();
    let mut lines = list.lines();
    let mut names = Vec::new();
    while let Some(l) = lines.next() {
        if l == "library_name" {
            names.extend(lines.next().map(str::to_owned));
        }
    }
    names.sort();
    names
}

#[test]
fn the_libraries_are_on_every_primary_and_put_back_where_they_were_lost() {
    let (cluster, queues, s, daemon) = running("f");
    let first = libraries(&cluster.nodes[0]);
    assert_eq!(
        first.len(),
        2,
        "the public and the internal library: {first:?}"
    );
    for (i, n) in cluster.nodes.iter().enumerate() {
        assert_eq!(libraries(n), first, "node {i}");
    }
    // One primary loses its functions (a restart without persistence, a
    // node added by resharding): the next transition there puts them back.
    let lost = 1;
    assert_eq!(
        cluster.nodes[lost]
            .cli(&["FUNCTION", "FLUSH"])
            .unwrap()
            .trim(),
        "OK"
    );
    let o = cli(
        &s.config,
        &["enqueue", "--id", "after", &queues[lost], "{}"],
    );
    assert_eq!(o.code, Some(0), "redq enqueue: {}{}", o.stdout, o.stderr);
    wait_succeeded(&s.config, &queues[lost], "after");
    wait_for("the libraries back on the node", secs(10), || {
        libraries(&cluster.nodes[lost]) == first
    });
    // And producers' FCALL works there again.
    let base = format!("redq:{{{}}}", queues[lost]);
    let out = cluster.cli(&[
        "FCALL",
        "redq_enqueue",
        "1",
        &base,
        "{\"id\":\"fcall\",\"payload\":1}",
    ]);
    assert!(!out.contains("ERR"), "FCALL redq_enqueue: {out}");
    wait_succeeded(&s.config, &queues[lost], "fcall");
    // `redq setup --check` asks every primary.
    let o = cli(&s.config, &["setup", "--check"]);
    assert_eq!(o.code, Some(0), "{}{}", o.stdout, o.stderr);
    assert_eq!(
        cluster.nodes[2].cli(&["FUNCTION", "FLUSH"]).unwrap().trim(),
        "OK"
    );
    let o = cli(&s.config, &["setup", "--check"]);
    assert_ne!(
        o.code,
        Some(0),
        "a primary without the libraries: {}{}",
        o.stdout,
        o.stderr
    );
    let o = cli(&s.config, &["setup"]);
    assert_eq!(o.code, Some(0), "{}{}", o.stdout, o.stderr);
    assert_eq!(libraries(&cluster.nodes[2]), first);
    stop(daemon);
}

/// `INFO clients`' `blocked_clients` of a node.
fn blocked_clients(node: &common::server::RedisServer) -> u64 {
    let info = node.cli(&["INFO", "clients"]).unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("blocked_clients:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Moves `slot` from node `from` to node `to` with its keys, as
/// `redis-cli --cluster reshard` does: IMPORTING/MIGRATING, MIGRATE, NODE.
fn move_slot(cluster: &Cluster, slot: u16, from: usize, to: usize) {
    let id = |i: usize| {
        cluster.nodes[i]
            .cli(&["CLUSTER", "MYID"])
            .unwrap()
            .trim()
            .to_owned()
    };
    let (src, dst) = (id(from), id(to));
    let slot = slot.to_string();
    let ok = |out: String| assert!(out.trim() == "OK", "{out}");
    ok(cluster.nodes[to]
        .cli(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &src])
        .unwrap());
    ok(cluster.nodes[from]
        .cli(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &dst])
        .unwrap());
    loop {
        let keys = cluster.nodes[from]
            .cli(&["CLUSTER", "GETKEYSINSLOT", &slot, "100"])
            .unwrap();
        let keys: Vec<&str> = keys.lines().filter(|l| !l.is_empty()).collect();
        if keys.is_empty() {
            break;
        }
        let port = cluster.nodes[to].port.to_string();
        let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
        args.extend(keys);
        ok(cluster.nodes[from].cli(&args).unwrap());
    }
    for n in &cluster.nodes {
        ok(n.cli(&["CLUSTER", "SETSLOT", &slot, "NODE", &dst]).unwrap());
    }
    cluster.wait_ready();
}

#[test]
fn an_idle_daemon_waits_on_every_node_and_follows_a_queue_whose_slot_moved() {
    let (cluster, queues, s, daemon) = running("w");
    // Idle: one blocked client (the waker's BLPOP) on each node that
    // serves one of its queues, no polling.
    for (i, n) in cluster.nodes.iter().enumerate() {
        wait_for(&format!("a blocked waker on node {i}"), secs(10), || {
            blocked_clients(n) >= 1
        });
    }
    // Jobs wake it.
    for q in &queues {
        let o = cli(&s.config, &["enqueue", "--id", "one", q, "{}"]);
        assert_eq!(o.code, Some(0), "{}", o.stderr);
        wait_succeeded(&s.config, q, "one");
    }
    // Queue 0's slot moves to node 1, with its keys: the waker's BLPOP on
    // node 0 is answered MOVED, and it waits on node 1 now.
    let slot = redq::store::slot(&format!("{{{}}}", queues[0]));
    move_slot(&cluster, slot, 0, 1);
    assert_eq!(
        cluster.node_of(&format!("{{{}}}", queues[0])).port,
        cluster.nodes[1].port
    );
    wait_for("the waker to leave node 0", secs(15), || {
        blocked_clients(&cluster.nodes[0]) == 0
    });
    wait_for("two wakers on node 1", secs(15), || {
        blocked_clients(&cluster.nodes[1]) >= 2
    });
    let o = cli(&s.config, &["enqueue", "--id", "moved", &queues[0], "{}"]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    wait_succeeded(&s.config, &queues[0], "moved");
    // The job enqueued before the move is still known, on its new node.
    assert_eq!(
        job_state(&s.config, &queues[0], "one").unwrap()["state"],
        "succeeded"
    );
    let log = stop(daemon);
    assert!(!log.contains("\"ERROR\""), "{log}");
}

#[test]
fn the_cli_works_across_nodes_and_never_shows_a_redirect() {
    let cluster = cluster::shared();
    let queues = queue_per_node(&cluster, "c");
    let dir = tempfile::tempdir().unwrap();
    // Queue 0 fails its jobs (no retries): dead jobs to list and retry.
    let text = format!(
        "[redis]\ncluster = {}\n\n[daemon]\nshutdown_timeout = \"5s\"\nlog_format = \"json\"\n\n\
         [queues.{}]\nhandler = {{ builtin = \"fail\" }}\nmax_attempts = 1\n\n\
         [queues.{}]\nhandler = {{ builtin = \"noop\" }}\nkeep_completed = 100\n\n\
         [queues.{}]\nhandler = {{ builtin = \"noop\" }}\nkeep_completed = 100\n",
        cluster.seeds_toml(),
        queues[0],
        queues[1],
        queues[2]
    );
    let config = dir.path().join("workers.toml");
    write_atomic(&config, &text);
    let log = dir.path().join("redq.log");
    let daemon = Daemon::start(&config, &log, &[]);
    for q in &queues {
        for n in 0..3 {
            let o = cli(
                &config,
                &["enqueue", "--id", &format!("j{n}"), q, "{\"n\":1}"],
            );
            assert_eq!(o.code, Some(0), "{}", o.stderr);
        }
    }
    wait_succeeded(&config, &queues[1], "j2");
    wait_succeeded(&config, &queues[2], "j2");
    wait_for("three dead jobs", secs(20), || {
        let o = cli(&config, &["dead", "list", &queues[0], "--json"]);
        o.code == Some(0) && o.stdout.matches("\"id\"").count() == 3
    });
    let mut outputs = Vec::new();
    let mut run = |args: &[&str]| {
        let o = cli(&config, args);
        assert_eq!(o.code, Some(0), "redq {args:?}: {}{}", o.stdout, o.stderr);
        outputs.push(format!("{}{}", o.stdout, o.stderr));
        o.stdout
    };
    let stats = run(&["stats"]);
    for q in &queues {
        assert!(stats.contains(q.as_str()), "{stats}");
    }
    run(&["health"]);
    run(&["usage", "--json"]);
    run(&["pause", &queues[1]]);
    run(&["resume", &queues[1]]);
    let export = run(&["export", &queues[2]]);
    assert_eq!(export.lines().count(), 3, "{export}");
    // Imported into queue 1 (another node): ids there exist, so skipped.
    let o = run_with_input(
        redq()
            .arg("--config")
            .arg(&config)
            .args(["import", &queues[1]]),
        Some(export.as_bytes()),
        secs(20),
    );
    assert_eq!(o.code, Some(0), "redq import: {}{}", o.stdout, o.stderr);
    run(&["dead", "retry", &queues[0], "--all"]);
    run(&["dead", "purge", &queues[0], "--all"]);
    for out in &outputs {
        for word in ["MOVED", "ASK", "CROSSSLOT", "CLUSTERDOWN"] {
            assert!(!out.contains(word), "{out}");
        }
    }
    stop(daemon);
}

#[test]
fn redq_watch_follows_a_queue_on_a_node_that_is_not_the_first_seed() {
    let cluster = cluster::shared();
    // The seeds list node 0 first: the queue's events are on node 2.
    let q = queue_on(&cluster, "e", 2);
    assert_ne!(
        cluster.node_of(&format!("{{{q}}}")).port,
        cluster.nodes[0].port
    );
    let s = setup(&cluster, "redq", std::slice::from_ref(&q));
    let text = std::fs::read_to_string(&s.config).unwrap();
    let text = text.replacen(
        &format!("[queues.{q}]\n"),
        &format!("[queues.{q}]\nevents = true\n"),
        1,
    );
    write_atomic(&s.config, &text);
    let daemon = Daemon::start(&s.config, &s.log, &[]);

    let config = s.config.display().to_string();
    let mut watch = Watch::spawn(&["--config", &config], &q, &[]);
    // It finds the events switched on (the daemon's mark in the queue's
    // meta hash, on node 2) and reads the stream there.
    let said = watch.stderr_until(|l| l.contains("redq: watching"));
    assert!(
        !said.iter().any(|l| l.contains("events are off")),
        "{said:#?}"
    );
    let o = cli(&s.config, &["enqueue", "--id", "w1", &q, "{}"]);
    assert_eq!(o.code, Some(0), "redq enqueue: {}{}", o.stdout, o.stderr);
    let seen = watch.stdout_until(|l| l.contains(" succeeded ") && l.contains(" w1 "));
    let events: Vec<&str> = seen
        .iter()
        .filter(|l| l.contains(" w1 "))
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(events, ["enqueued", "started", "succeeded"], "{seen:#?}");
    // The entries are on node 2's stream, where the watch read them.
    let key = format!("redq:{{{q}}}:events");
    assert_eq!(cluster.nodes[2].cli(&["XLEN", &key]).unwrap().trim(), "3");

    watch.signal(libc::SIGINT);
    assert!(watch.wait_exit().success());
    let mut errors = String::new();
    while let Ok(line) = watch.stderr.try_recv() {
        errors.push_str(&line);
    }
    for word in ["MOVED", "ASK", "CROSSSLOT", "unreachable"] {
        assert!(!errors.contains(word), "{errors}");
    }
    stop(daemon);
}

#[test]
fn a_tls_cluster_runs_jobs_with_the_same_tls_settings() {
    let pki = common::tls::Pki::new("redq test CA");
    let cluster = Cluster::start_tls(&pki);
    let queues = queue_per_node(&cluster, "t");
    let s = setup(&cluster, "redq", &queues);
    let text = std::fs::read_to_string(&s.config).unwrap();
    let tls = format!(
        "[redis.tls]\nca_file = {}\n\n",
        toml_str(pki.ca_file().display().to_string())
    );
    // `[redis.tls]` goes right after `[redis]`'s keys.
    let text = text.replacen("[daemon]", &format!("{tls}[daemon]"), 1);
    write_atomic(&s.config, &text);
    let daemon = Daemon::start(&s.config, &s.log, &[]);
    for q in &queues {
        let o = cli(&s.config, &["enqueue", "--id", "tls", q, "{}"]);
        assert_eq!(o.code, Some(0), "redq enqueue: {}{}", o.stdout, o.stderr);
        wait_succeeded(&s.config, q, "tls");
    }
    // The waker's connections (redq's own TLS) wait on every node.
    for (i, n) in cluster.nodes.iter().enumerate() {
        wait_for(&format!("a blocked waker on node {i}"), secs(10), || {
            blocked_clients(n) >= 1
        });
    }
    // A wrong CA is refused, naming the problem.
    let other = common::tls::Pki::new("another CA");
    let wrong = text.replace(
        &pki.ca_file().display().to_string(),
        &other.ca_file().display().to_string(),
    );
    write_atomic(&s.config, &wrong);
    let o = cli(&s.config, &["stats"]);
    assert_ne!(o.code, Some(0), "{}", o.stdout);
    assert!(
        o.stderr.contains("not signed by a CA redq trusts")
            && o.stderr.contains("redis.tls.ca_file"),
        "{}",
        o.stderr
    );
    write_atomic(&s.config, &text);
    stop(daemon);
}

//! redq on a Redis Cluster: a private 3-primary cluster on loopback
//! (`common::cluster`), the daemon and the CLI configured with its seeds.
//! Queues are picked so that their slots land on different primaries.

mod common;

use std::path::{Path, PathBuf};

use serde_json::Value;

use common::cluster::Cluster;
use common::process::{redq, run_bounded, Daemon, Out};
use common::wait::{secs, wait_for};
use common::workers::{toml_str, write_atomic};

/// One queue name per primary: `names[i]`'s slot is on `cluster.nodes[i]`.
fn queue_per_node(cluster: &Cluster, stem: &str) -> Vec<String> {
    (0..cluster.nodes.len())
        .map(|i| {
            (0..)
                .map(|n| format!("{stem}{n}"))
                .find(|q| cluster.node_of(&format!("{{{q}}}")).port == cluster.nodes[i].port)
                .expect("some name lands on each node")
        })
        .collect()
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
    let cluster = Cluster::start();
    let queues = queue_per_node(&cluster, "q");
    let s = setup(&cluster, "redq", &queues);
    let mut daemon = Daemon::start(&s.config, &s.log, &[]);

    for (i, q) in queues.iter().enumerate() {
        // The CLI.
        let id = format!("cli-{i}");
        let o = cli(&s.config, &["enqueue", "--id", &id, q, "{\"n\":1}"]);
        assert_eq!(o.code, Some(0), "redq enqueue: {}{}", o.stdout, o.stderr);
        wait_succeeded(&s.config, q, &id);
        // A foreign producer: FCALL through redis-cli -c, which follows
        // the redirect to the node serving the queue.
        let id = format!("fcall-{i}");
        let doc = format!("{{\"id\":\"{id}\",\"payload\":{{\"n\":2}}}}");
        let base = format!("redq:{{{q}}}");
        let out = cluster.cli(&["FCALL", "redq_enqueue", "1", &base, &doc]);
        assert!(!out.contains("ERR"), "FCALL redq_enqueue: {out}");
        wait_succeeded(&s.config, q, &id);
    }
    // Each primary holds its queue's keys, and only those.
    for (i, q) in queues.iter().enumerate() {
        let key = format!("redq:{{{q}}}:jobs");
        assert_eq!(
            cluster.nodes[i].cli(&["HLEN", &key]).unwrap().trim(),
            "2",
            "{key} on node {i}"
        );
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
    daemon.signal(libc::SIGTERM);
    assert_eq!(
        daemon.wait_exit(secs(15)).0.code(),
        Some(0),
        "{}",
        daemon.log()
    );
    let log = daemon.log();
    assert!(!log.contains("MOVED"), "{log}");
    assert!(!log.contains("CROSSSLOT"), "{log}");
}

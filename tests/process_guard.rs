//! No process of a job outlives the daemon, however the daemon dies.
//!
//! Handlers are often wrappers: a shell script that starts the real work in
//! the background and waits for it. The work is then a grandchild of the
//! daemon, in the job's process group. These tests kill the real `redq`
//! binary with SIGKILL (no clean-up code of its own can run) and check that
//! the wrapper and its grandchild die too, so a job rerun by another daemon
//! after its lease expires never overlaps the old run. They also kill the
//! guard process that does this, and check that the daemon starts a new one
//! that still knows every running job.
//!
//! As everywhere in the process tests, waits poll a condition with a bounded
//! time-out; [`Reap`] kills any `sleep` left behind by a failing test.

mod common;

use std::fs;
use std::path::Path;

use common::process::*;
use common::producers::fcall;
use common::server::RedisServer;
use common::wait::{secs, wait_for};
use common::workers::*;

/// A wrapper that starts a long-running grandchild, writes
/// "<wrapper pid> <grandchild pid>\n" to `$OUT/pids.<job id>`, and waits.
const WRAPPER: &str = r#"
sleep 300 &
echo "$$ $!" > "$OUT/pids.$REDQ_JOB_ID.tmp" && mv "$OUT/pids.$REDQ_JOB_ID.tmp" "$OUT/pids.$REDQ_JOB_ID"
wait
"#;

/// Starts a daemon whose queue `w` (concurrency 4) runs [`WRAPPER`], enqueues
/// `jobs` jobs and waits until every wrapper and grandchild runs; returns the
/// daemon and all their pids.
fn start_wrapped_jobs(redis: &RedisServer, d: &Path, jobs: usize) -> (Daemon, Reap) {
    let handler = script(d, "wrapper.sh", WRAPPER);
    let queues = format!(
        "[queues.w]\nconcurrency = 4\n{FAST_LEASE}handler = {}\n",
        command_handler(&handler, &[], d, "")
    );
    let cfg = d.join("w.toml");
    fs::write(&cfg, config(&redis.url(), "2s", &queues)).unwrap();
    let daemon = Daemon::start(&cfg, &d.join("redq.log"), &[]);
    let ids: Vec<String> = (0..jobs)
        .map(|n| fcall(redis, "w", &format!(r#"{{"payload":{{"n":{n}}}}}"#)))
        .collect();
    let mut pids = Vec::new();
    for id in &ids {
        let pair = wait_for(&format!("job {id}'s pids"), secs(10), || {
            read_pids(&d.join(format!("pids.{id}")))
        });
        assert_eq!(pair.len(), 2, "{pair:?}");
        pids.extend(pair);
    }
    for &pid in &pids {
        assert!(
            alive(pid),
            "pid {pid} ended before the test killed anything"
        );
    }
    // The guard starts at the first spawn, after it (see `guard_of`).
    wait_for("the daemon's guard process", secs(5), || {
        guard_of(daemon.pid())
    });
    (daemon, Reap(pids))
}

fn kill_9(pid: i32) {
    assert_eq!(
        unsafe { libc::kill(pid, libc::SIGKILL) },
        0,
        "kill -9 {pid}"
    );
}

#[test]
fn kill_9_of_the_daemon_kills_every_process_of_its_jobs_groups_grandchildren_included() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (mut daemon, pids) = start_wrapped_jobs(&redis, dir.path(), 4);
    daemon.signal(libc::SIGKILL);
    daemon.wait_exit(secs(5));
    for pair in pids.0.chunks(2) {
        wait_dead(pair[1], "a wrapper's grandchild");
        wait_dead(pair[0], "a wrapper");
    }
}

#[test]
fn a_killed_guard_is_replaced_and_the_new_one_knows_the_running_jobs() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (mut daemon, pids) = start_wrapped_jobs(&redis, dir.path(), 2);
    let first = wait_for("the daemon's guard process", secs(5), || {
        guard_of(daemon.pid())
    });
    kill_9(first);
    daemon.wait_log("process guard ended", 1, secs(5));
    let second = wait_for("a new guard process", secs(5), || {
        guard_of(daemon.pid()).filter(|&pid| pid != first)
    });

    // The jobs started before the new guard: it must have been told of them.
    daemon.signal(libc::SIGKILL);
    daemon.wait_exit(secs(5));
    for pair in pids.0.chunks(2) {
        wait_dead(pair[1], "a wrapper's grandchild");
        wait_dead(pair[0], "a wrapper");
    }
    wait_dead(second, "the guard, once its daemon is gone");
}

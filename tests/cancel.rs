//! Cancel and delete, from the library, the CLI and the `redq_cancel` /
//! `redq_status` functions; a running job's daemon stops its handler at
//! once (a notice on the queue's due channel), and its lease renewal is
//! refused as "gone" in any case (the guarantee when the notice is missed).

mod common;

use std::fs;
use std::time::Duration;

use serde_json::Value;

use redq::inspect::{ListQuery, ListState};
use redq::job::NewJob;
use redq::store::{Renewal, Retention, WasIn};

use common::http::{http_get, sample};
use common::process::{redq, run_bounded, wait_dead, Daemon};
use common::server::RedisServer;
use common::store::{claim, completions, failure, DEAD};
use common::wait::{secs, wait_for};
use common::workers::{config, script, toml_str};

fn job(id: &str) -> NewJob {
    NewJob::from_json("{}").unwrap().id(id)
}

async fn pending_ids(client: &redq::Client, queue: &str) -> Vec<String> {
    let q = ListQuery {
        limit: 100,
        ..Default::default()
    };
    let page = client
        .list_jobs(queue, ListState::Pending, &q)
        .await
        .unwrap();
    page.jobs.into_iter().map(|j| j.id).collect()
}

#[tokio::test]
async fn cancel_removes_live_jobs_and_frees_their_unique_keys_delete_removes_finished_ones() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let store = redq::store::Store::connect(&redis.url(), "redq")
        .await
        .unwrap();
    let q = store.queue("q").unwrap();
    redis
        .cli(&["HSET", "redq:{q}:meta", "events", "100"])
        .unwrap();
    for id in ["a", "b", "c"] {
        client.enqueue("q", job(id)).await.unwrap();
    }
    client
        .enqueue("q", job("u").unique_key("only-one").priority(7))
        .await
        .unwrap();
    client
        .enqueue("q", job("later").delay(Duration::from_secs(600)))
        .await
        .unwrap();
    let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // The middle of a list, the only job of its priority, a scheduled one,
    // one unknown.
    let was = client
        .cancel("q", &ids(&["b", "u", "later", "nope"]))
        .await
        .unwrap();
    assert_eq!(
        was,
        vec![
            WasIn::Pending,
            WasIn::Pending,
            WasIn::Scheduled,
            WasIn::Unknown
        ]
    );
    assert_eq!(pending_ids(&client, "q").await, ids(&["a", "c"]));
    assert_eq!(
        redis.cli(&["ZCARD", "redq:{q}:pending"]).unwrap().trim(),
        "1",
        "priority 7 is gone"
    );
    assert_eq!(
        redis.cli(&["ZCARD", "redq:{q}:scheduled"]).unwrap().trim(),
        "0"
    );
    for id in ["b", "u", "later"] {
        assert!(client.job("q", id).await.unwrap().is_none(), "{id} is gone");
    }
    // The unique key is free: a new job may take it.
    let again = client
        .enqueue("q", job("u2").unique_key("only-one"))
        .await
        .unwrap();
    assert_eq!(again.id, "u2");
    // Each cancel is an event saying where the job was.
    let events = redis.cli(&["XRANGE", "redq:{q}:events", "-", "+"]).unwrap();
    assert_eq!(events.matches("cancelled").count(), 3, "{events}");
    // Claims go on past what was cancelled.
    let claimed = claim(&store, "q", 10).await;
    let got: Vec<&str> = claimed.jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(got, vec!["a", "c", "u2"]);
    // A retrying job is cancelled too; a dead one and a kept succeeded one
    // are not, but delete removes them.
    let keep = Retention {
        keep: 10,
        max_age: Duration::ZERO,
    };
    store
        .complete(&q, &completions(&claimed.jobs[..1]), keep)
        .await
        .unwrap();
    store
        .fail(
            &q,
            &[
                failure(&claimed.jobs[1], None, "boom"),
                failure(&claimed.jobs[2], Some(Duration::from_secs(600)), "later"),
            ],
            DEAD,
        )
        .await
        .unwrap();
    let was = client.cancel("q", &ids(&["a", "c", "u2"])).await.unwrap();
    assert_eq!(was, vec![WasIn::Succeeded, WasIn::Dead, WasIn::Retrying]);
    assert!(client.job("q", "a").await.unwrap().is_some());
    assert!(client.job("q", "c").await.unwrap().is_some());
    let was = client.delete("q", &ids(&["a", "c", "x"])).await.unwrap();
    assert_eq!(was, vec![WasIn::Succeeded, WasIn::Dead, WasIn::Unknown]);
    for id in ["a", "c"] {
        assert!(client.job("q", id).await.unwrap().is_none());
    }
    for key in ["jobs", "runs", "errors", "done", "dead", "scheduled"] {
        let n = redis.cli(&["TYPE", &format!("redq:{{q}}:{key}")]).unwrap();
        if n.trim() == "hash" {
            assert_eq!(
                redis
                    .cli(&["HLEN", &format!("redq:{{q}}:{key}")])
                    .unwrap()
                    .trim(),
                "0",
                "{key}"
            );
        }
    }
    // Delete leaves a live job alone.
    client.enqueue("q", job("live")).await.unwrap();
    assert_eq!(
        client.delete("q", &ids(&["live"])).await.unwrap(),
        vec![WasIn::Pending]
    );
    assert!(client.job("q", "live").await.unwrap().is_some());
}

#[tokio::test]
async fn producers_in_any_language_read_status_and_cancel_through_functions() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let store = redq::store::Store::connect(&redis.url(), "redq")
        .await
        .unwrap();
    let q = store.queue("q").unwrap();
    store.ensure_library().await.unwrap();
    let status = |id: &str| -> Value {
        let out = redis
            .cli(&["FCALL_RO", "redq_status", "1", "redq:{q}", id])
            .unwrap();
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
    };
    assert_eq!(status("none")["state"], "unknown");
    client.enqueue("q", job("p")).await.unwrap();
    assert_eq!(status("p")["state"], "pending");
    assert_eq!(status("p")["attempts"], 0);
    assert_eq!(status("p")["result"], Value::Null);
    let claimed = claim(&store, "q", 1).await;
    assert_eq!(status("p")["state"], "active");
    let keep = Retention {
        keep: 10,
        max_age: Duration::ZERO,
    };
    let mut done = completions(&claimed.jobs);
    done[0].result = Some("{\"sent\":true}");
    store.complete(&q, &done, keep).await.unwrap();
    let s = status("p");
    assert_eq!(s["state"], "succeeded");
    assert_eq!(s["attempts"], 1);
    assert_eq!(s["result"], "{\"sent\":true}");
    // redq_cancel answers where the job was.
    client.enqueue("q", job("c")).await.unwrap();
    let out = redis
        .cli(&["FCALL", "redq_cancel", "1", "redq:{q}", "c"])
        .unwrap();
    assert_eq!(out.trim(), "pending");
    assert_eq!(status("c")["state"], "unknown");
    let out = redis
        .cli(&["FCALL", "redq_cancel", "1", "redq:{q}", "p"])
        .unwrap();
    assert_eq!(out.trim(), "succeeded", "a finished job is left as it is");
    // Bad calls name the problem.
    let out = redis
        .cli(&["FCALL", "redq_cancel", "1", "emails", "c"])
        .unwrap();
    assert!(out.contains("takes one key, <prefix>:{<queue>}"), "{out}");
    let out = redis
        .cli(&["FCALL_RO", "redq_status", "1", "redq:{q}", "../x"])
        .unwrap();
    assert!(out.contains("takes one argument: a job id"), "{out}");
}

#[test]
fn a_running_job_is_cancelled_its_handler_stopped_and_nothing_written() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pid_file = d.join("pid");
    let handler = script(
        d,
        "slow.sh",
        &format!("echo $$ > {}\nexec sleep 60\n", pid_file.display()),
    );
    let queues = format!(
        "[queues.slow]\nlease = \"60s\"\nlease_renew = \"20s\"\nkeep_completed = 10\n\
         handler = {{ command = [{}] }}\n",
        toml_str(handler.display().to_string())
    );
    let cfg = d.join("w.toml");
    fs::write(&cfg, config(&redis.url(), "5s", &queues)).unwrap();
    let mut daemon = Daemon::start(&cfg, &d.join("redq.log"), &[]);
    let url = redis.url();
    let cli = |args: &[&str]| run_bounded(redq().args(["--redis-url", &url]).args(args), secs(20));
    let o = cli(&["enqueue", "--id", "run", "slow", "{}"]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let pid: i32 = wait_for("the handler to start", secs(10), || {
        fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse().ok())
    });
    let o = cli(&["cancel", "slow", "run"]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert_eq!(o.stdout.trim(), "cancelled run (was active)");
    // Counted for the queue, whoever cancelled: in `redq stats` and, once
    // the daemon reads the queue's depths again (an idle daemon reads them
    // for queues that hold jobs: a delayed one here), in its metrics.
    let o = cli(&["stats", "slow", "--json"]);
    let stats: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(stats[0]["cancelled_total"], 1, "{stats}");
    let o = cli(&["enqueue", "--delay", "1h", "slow", "{}"]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    wait_for("the cancellation in the daemon's metrics", secs(15), || {
        http_get(&daemon.listen, "/metrics")
            .and_then(|(_, body)| sample(&body, "redq_queue_cancelled_total{queue=\"slow\"}"))
            == Some(1.0)
    });
    // The daemon hears of it at once (its next lease renewal is ~20 s
    // away, and this waits at most 5 s) and stops the handler's process
    // group.
    wait_dead(pid, "the cancelled job's handler");
    wait_for("the cancelled outcome counted", secs(10), || {
        http_get(&daemon.listen, "/metrics").and_then(|(_, body)| {
            sample(
                &body,
                "redq_jobs_total{queue=\"slow\",outcome=\"cancelled\"}",
            )
        }) == Some(1.0)
    });
    // Nothing was written for it: not succeeded, not failed, not dead.
    let o = cli(&["job", "slow", "run"]);
    assert_eq!(o.code, Some(1), "{}{}", o.stdout, o.stderr);
    assert_eq!(
        redis.cli(&["ZCARD", "redq:{slow}:done"]).unwrap().trim(),
        "0"
    );
    assert_eq!(
        redis.cli(&["ZCARD", "redq:{slow}:dead"]).unwrap().trim(),
        "0"
    );
    // The CLI says what it could not do.
    let o = cli(&["cancel", "slow", "run"]);
    assert_eq!(o.code, Some(1));
    assert!(o.stderr.contains("slow has no job run"), "{}", o.stderr);
    let o = cli(&["delete", "slow", "run", "x"]);
    assert_eq!(o.code, Some(1));
    daemon.signal(libc::SIGTERM);
    assert_eq!(
        daemon.wait_exit(secs(15)).0.code(),
        Some(0),
        "{}",
        daemon.log()
    );
    assert!(
        daemon.log().contains("the job was cancelled"),
        "{}",
        daemon.log()
    );
}

#[tokio::test]
async fn the_renewal_of_a_cancelled_running_job_answers_gone() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let store = client.store();
    client.enqueue("q", job("a")).await.unwrap();
    client.enqueue("q", job("b")).await.unwrap();
    let jobs = claim(store, "q", 2).await.jobs;
    assert_eq!(jobs.len(), 2);
    let was = client.cancel("q", &["a".to_owned()]).await.unwrap();
    assert_eq!(was, vec![WasIn::Active]);
    let q = store.queue("q").unwrap();
    let held: Vec<(&str, u64)> = jobs.iter().map(|j| (j.id.as_str(), j.fence)).collect();
    let (_, renewed) = store
        .renew(&q, &held, Duration::from_secs(30))
        .await
        .unwrap();
    let by_id: Vec<(&str, Renewal)> = held.iter().map(|(id, _)| *id).zip(renewed).collect();
    assert!(by_id.contains(&("a", Renewal::Gone)), "{by_id:?}");
    assert!(by_id.contains(&("b", Renewal::Renewed)), "{by_id:?}");
}

#[tokio::test]
async fn a_cancelled_parked_job_leaves_nothing_that_could_bring_its_id_back_twice() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let store = client.store();
    let q = store.queue("q").unwrap();
    store.set_limits(&q, None, Some(1)).await.unwrap();
    let grouped = |id: &str| job(id).group("g");
    client.enqueue("q", grouped("a")).await.unwrap();
    client.enqueue("q", grouped("b")).await.unwrap();
    // `a` runs and holds the group's one slot; `b` is parked behind it.
    let first = claim(store, "q", 2).await.jobs;
    assert_eq!(
        first.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
        ["a"]
    );
    assert_eq!(
        redis.cli(&["ZCARD", "redq:{q}:parked"]).unwrap().trim(),
        "1"
    );
    let was = client.cancel("q", &["b".to_owned()]).await.unwrap();
    assert_eq!(was, vec![WasIn::Pending]);
    assert_eq!(
        redis.cli(&["ZCARD", "redq:{q}:parked"]).unwrap().trim(),
        "0"
    );
    // A new job under the same id, then the slot comes free: it runs once.
    client.enqueue("q", grouped("b")).await.unwrap();
    let done = store
        .complete(
            &q,
            &completions(&first),
            Retention {
                keep: 0,
                max_age: Duration::ZERO,
            },
        )
        .await
        .unwrap();
    assert_eq!(done, vec![true]);
    let next = claim(store, "q", 10).await.jobs;
    assert_eq!(
        next.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
        ["b"]
    );
    assert!(pending_ids(&client, "q").await.is_empty());
    assert_eq!(
        redis.cli(&["ZCARD", "redq:{q}:parked"]).unwrap().trim(),
        "0"
    );
}

#[test]
fn promote_runs_a_scheduled_job_now_and_says_when_there_is_nothing_to_promote() {
    let redis = RedisServer::start();
    let url = redis.url();
    let cli = |args: &[&str]| run_bounded(redq().args(["--redis-url", &url]).args(args), secs(20));
    let o = cli(&["enqueue", "--id", "later", "--delay", "1h", "q", "{}"]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let o = cli(&["promote", "q", "later"]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(
        o.stdout.contains("promoted later (was scheduled)"),
        "{}",
        o.stdout
    );
    let o = cli(&["job", "q", "later", "--json"]);
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["state"], "pending", "{v}");
    assert_eq!(v["attempts"], 0, "{v}");
    let o = cli(&["promote", "q", "later", "nope"]);
    assert_eq!(o.code, Some(1));
    assert!(
        o.stderr.contains("later is pending, not scheduled"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("q has no job nope"), "{}", o.stderr);
}

//! Kept outcomes and waiting for them: a job enqueued with `outcome_ttl_ms`
//! (or in a queue with `outcome_ttl`) leaves `<base>:outcome:<id>` when it
//! ends, succeeded, dead or cancelled; waiters blocked on it (`Client::wait`,
//! `redq job --wait`, `BLMOVE` from any language) all wake at its end;
//! `redq_status` answers with it once the job is removed; a job that keeps
//! none cannot be waited for, and says why.
//!
//! Each test starts its own `redis-server` and, where jobs must run, a daemon
//! in the test process with a library handler.

mod common;

use std::time::Duration;

use common::embedded::*;
use common::process::{redq, run_async};
use common::server::RedisServer;
use common::wait::{eventually, secs, within, WAIT};
use redq::daemon::WorkerBuilder;
use redq::store::EndState;
use redq::{Error, JobContext, NewJob, Outcome};
use tokio::sync::mpsc;

const TTL: Duration = Duration::from_secs(60);

fn job(n: i64) -> NewJob {
    NewJob::new(&n).unwrap()
}

/// Clients blocked in a command on the server (`INFO clients`).
async fn blocked_clients(redis: &RedisServer) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("clients")
        .query_async(&mut redis.con().await)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("blocked_clients:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

async fn until_blocked(redis: &RedisServer, n: u64) {
    eventually(&format!("{n} blocked waiters"), WAIT, || async {
        match blocked_clients(redis).await {
            b if b >= n => Ok(()),
            b => Err(format!("{b} blocked")),
        }
    })
    .await
}

type Ending = std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + Send>>;

/// A handler whose job `n` ends when the test sends on its gate: 0 succeeds
/// with result "r0", 1 fails for good; others succeed at once with "r<n>".
fn gated() -> (
    impl Fn(JobContext) -> Ending + Clone + Send + Sync + 'static,
    mpsc::UnboundedSender<()>,
) {
    let (tx, rx) = mpsc::unbounded_channel::<()>();
    let rx = std::sync::Arc::new(tokio::sync::Mutex::new(rx));
    let handler = move |ctx: JobContext| -> Ending {
        let rx = rx.clone();
        Box::pin(async move {
            let n = payload_n(&ctx);
            if n < 2 {
                rx.lock().await.recv().await;
            }
            match n {
                1 => Outcome::Dead {
                    error: "boom: the mail server said no".into(),
                },
                n => Outcome::Done {
                    result: Some(format!("r{n}")),
                },
            }
        })
    };
    (handler, tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_waiter_wakes_when_the_job_ends_and_the_outcome_stays_for_its_ttl() {
    let redis = RedisServer::start();
    let client = std::sync::Arc::new(redis.client().await);
    let (handler, gate) = gated();
    let cfg = config(&redis, "", &queue("q", "keep_completed = 0"));
    let d = launch(WorkerBuilder::new(cfg).handler("q", handler)).await;

    // Three waiters block before the job ends; one end wakes all three.
    let id = client
        .enqueue("q", job(0).outcome_ttl(TTL))
        .await
        .unwrap()
        .id;
    let mut waiters = Vec::new();
    for _ in 0..3 {
        let (client, id) = (client.clone(), id.clone());
        waiters.push(tokio::spawn(async move {
            client.wait("q", &id, secs(20)).await
        }));
    }
    until_blocked(&redis, 3).await;
    gate.send(()).unwrap();
    for w in waiters {
        let o = within(10, w).await.unwrap().unwrap().expect("an outcome");
        assert_eq!(o.id, id);
        assert_eq!(o.state, EndState::Succeeded);
        assert_eq!(o.attempts, 1);
        assert_eq!(o.result.as_deref(), Some("r0"));
        assert_eq!(o.last_error, None);
        assert!(o.finished_ms > 0);
    }
    // The job itself is gone (keep_completed = 0); its outcome is not, for
    // its TTL, and later readers and waiters get it at once.
    assert!(client.job("q", &id).await.unwrap().is_none());
    let key = redq::keys::QueueKeys::new("redq", "q")
        .unwrap()
        .outcome(&id);
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut redis.con().await)
        .await
        .unwrap();
    assert!(ttl > 50_000 && ttl <= 60_000, "{ttl}");
    let len: i64 = redis::cmd("LLEN")
        .arg(&key)
        .query_async(&mut redis.con().await)
        .await
        .unwrap();
    assert_eq!(len, 1, "waiters leave the one element in place");
    let again = client.wait("q", &id, secs(5)).await.unwrap().unwrap();
    assert_eq!(again.result.as_deref(), Some("r0"));
    assert_eq!(client.outcome("q", &id).await.unwrap(), Some(again));
    let status: String = redis::cmd("FCALL_RO")
        .arg("redq_status")
        .arg(1)
        .arg("redq:{q}")
        .arg(&id)
        .query_async(&mut redis.con().await)
        .await
        .unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["state"], "succeeded", "{status}");
    assert_eq!(status["result"], "r0", "{status}");

    // A job that fails for good: its waiter gets `dead` and the error; a
    // retry by hand clears the outcome, so the next waiter waits for its
    // new end.
    let dead = client
        .enqueue("q", job(1).outcome_ttl(TTL))
        .await
        .unwrap()
        .id;
    let w = {
        let (client, dead) = (client.clone(), dead.clone());
        tokio::spawn(async move { client.wait("q", &dead, secs(20)).await })
    };
    until_blocked(&redis, 1).await;
    gate.send(()).unwrap();
    let o = within(10, w).await.unwrap().unwrap().unwrap();
    assert_eq!(o.state, EndState::Dead);
    assert!(o.last_error.as_deref().unwrap().contains("boom"), "{o:?}");
    assert_eq!(o.result, None);
    let retried = client
        .dead_retry("q", std::slice::from_ref(&dead))
        .await
        .unwrap();
    assert_eq!(retried.len(), 1);
    eventually("the retried job to wait for its gate", WAIT, || async {
        match client.outcome("q", &dead).await.unwrap() {
            None => Ok(()),
            Some(o) => Err(format!("{o:?}")),
        }
    })
    .await;
    gate.send(()).unwrap();
    let o = client.wait("q", &dead, secs(10)).await.unwrap().unwrap();
    assert_eq!(o.state, EndState::Dead);
    assert_eq!(o.attempts, 1, "fresh attempts after the retry");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_wakes_the_waiter_and_a_wait_can_time_out() {
    let redis = RedisServer::start();
    let client = std::sync::Arc::new(redis.client().await);

    // No daemon: a delayed job stays scheduled.
    let id = client
        .enqueue("q", job(5).delay(Duration::from_secs(600)).outcome_ttl(TTL))
        .await
        .unwrap()
        .id;
    let started = tokio::time::Instant::now();
    assert_eq!(
        client
            .wait("q", &id, Duration::from_millis(300))
            .await
            .unwrap(),
        None
    );
    assert!(started.elapsed() >= Duration::from_millis(300));

    let w = {
        let (client, id) = (client.clone(), id.clone());
        tokio::spawn(async move { client.wait("q", &id, secs(20)).await })
    };
    until_blocked(&redis, 1).await;
    let was = client.cancel("q", std::slice::from_ref(&id)).await.unwrap();
    assert_eq!(was[0].as_str(), "scheduled");
    let o = within(10, w).await.unwrap().unwrap().unwrap();
    assert_eq!(o.state, EndState::Cancelled);
    assert!(
        o.last_error.as_deref().unwrap().contains("cancelled"),
        "{o:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_keeps_no_outcome_cannot_be_waited_for_and_says_why() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let id = client
        .enqueue("q", job(5).delay(Duration::from_secs(600)))
        .await
        .unwrap()
        .id;
    match client.wait("q", &id, secs(5)).await {
        Err(Error::NoOutcome(m)) => {
            assert!(m.contains("scheduled"), "{m}");
            assert!(m.contains("outcome_ttl_ms"), "{m}");
            assert!(m.contains("queues.q.outcome_ttl"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    match client.wait("q", "NOSUCHJOB", secs(5)).await {
        Err(Error::NoOutcome(m)) => assert!(m.contains("not found"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Out of range, like every other field, before anything is written.
    let e = client
        .enqueue("q", job(1).outcome_ttl(Duration::from_secs(8 * 86_400)))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("outcome_ttl_ms"), "{e}");
    let e: redis::RedisError = redis::cmd("FCALL")
        .arg("redq_enqueue")
        .arg(1)
        .arg("redq:{q}")
        .arg(r#"{"payload":1,"outcome_ttl_ms":0}"#)
        .query_async::<String>(&mut redis.con().await)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("field \"outcome_ttl_ms\""), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_outcome_ttl_keeps_every_jobs_outcome_and_the_cli_waits() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let (handler, _gate) = gated();
    let cfg = config(
        &redis,
        "",
        &queue("q", "keep_completed = 0\noutcome_ttl = \"2m\""),
    );
    let d = launch(WorkerBuilder::new(cfg).handler("q", handler)).await;

    // No outcome_ttl_ms: the queue's applies.
    let id = client.enqueue("q", job(7)).await.unwrap().id;
    let o = client.wait("q", &id, secs(10)).await.unwrap().unwrap();
    assert_eq!(o.result.as_deref(), Some("r7"));
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("redq:{{q}}:outcome:{id}"))
        .query_async(&mut redis.con().await)
        .await
        .unwrap();
    assert!(ttl > 100_000 && ttl <= 120_000, "{ttl}");

    // The CLI: enqueue and wait in one command, then wait for a job that
    // ended already, and show the outcome of a removed job.
    let url = redis.url();
    let mut cmd = redq();
    cmd.args([
        "--redis-url",
        &url,
        "enqueue",
        "q",
        "8",
        "--wait",
        "--wait-timeout",
        "10s",
    ]);
    let o = run_async(cmd, secs(20)).await;
    assert_eq!(o.code, Some(0), "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("state:       succeeded"), "{}", o.stdout);
    assert!(o.stdout.contains("result:      r8"), "{}", o.stdout);
    for args in [
        &["job", "q", &id, "--wait", "--timeout", "5s", "--json"][..],
        &["job", "q", &id, "--json"],
    ] {
        let mut cmd = redq();
        cmd.args(["--redis-url", &url]).args(args);
        let o = run_async(cmd, secs(20)).await;
        assert_eq!(o.code, Some(0), "{args:?}: {}{}", o.stdout, o.stderr);
        let v: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap();
        assert_eq!(v["state"], "succeeded", "{v}");
        assert_eq!(v["result"], "r7", "{v}");
    }
    d.stop().await;

    // Nothing runs now: a wait that times out exits 75 and says so.
    let id = client.enqueue("q", job(9)).await.unwrap().id;
    let mut cmd = redq();
    cmd.args([
        "--redis-url",
        &url,
        "job",
        "q",
        &id,
        "--wait",
        "--timeout",
        "200ms",
    ]);
    let o = run_async(cmd, secs(20)).await;
    assert_eq!(o.code, Some(75), "{}{}", o.stdout, o.stderr);
    assert!(
        o.stderr.contains("has not ended after 200ms"),
        "{}",
        o.stderr
    );
}

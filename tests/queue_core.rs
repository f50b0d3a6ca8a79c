//! The contracts of the Lua transitions, through the Rust store and client,
//! against a private redis-server per test.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::server::{redis_ms, RedisServer};
use common::snapshot::{handed, pending_ids, registration, snapshot};
use common::store::{claim, completions, DEAD, KEEP_NONE, LEASE};
use common::wait::{eventually, within, WAIT};
use redq::inspect::JobState;
use redq::store::HandoffOffer;
use redq::store::{Completion, DeadRetry, EnqueueStatus, FailResult, Failure, Retention, Store};
use redq::usage::{self, Day, Tally};
use redq::NewJob;
use serde_json::json;

/// A job whose payload is `{"n": n}` (what [`payload_n`] reads back).
fn job(n: i64) -> NewJob {
    NewJob::new(&json!({ "n": n })).unwrap()
}

fn payload_n(j: &redq::store::ClaimedJob) -> i64 {
    let v: serde_json::Value =
        serde_json::from_str(j.record.as_ref().unwrap().doc.payload.get()).unwrap();
    v["n"].as_i64().unwrap()
}

/// Enqueues job(i) with priority prios[i], in one batch.
async fn enqueue_with_priorities(client: &redq::Client, prios: &[i64]) {
    let jobs = prios
        .iter()
        .enumerate()
        .map(|(i, p)| job(i as i64).priority(*p))
        .collect();
    client.enqueue_many("q", jobs).await.unwrap();
}

#[tokio::test]
async fn higher_priority_first_and_fifo_within_a_priority() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    enqueue_with_priorities(&client, &[0, 5, 0, 5, -3, 1000, -1000, 0]).await;
    let got = claim(client.store(), "q", 100).await;
    let order: Vec<i64> = got.jobs.iter().map(payload_n).collect();
    assert_eq!(order, vec![5, 1, 3, 0, 2, 7, 4, 6]);
    assert!(got.jobs.iter().all(|j| j.attempt == 1));
}

#[tokio::test]
async fn small_claims_cross_priorities_in_order_and_leave_no_empty_priority_behind() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let store = client.store();
    let q = store.queue("q").unwrap();
    // Three jobs at priority 2 (claimed exactly by the first claim), two at
    // 0, one at -1: every claim ends on or crosses a priority's last job.
    enqueue_with_priorities(&client, &[0, 2, -1, 2, 0, 2]).await;
    let mut order = Vec::new();
    let mut con = redis.con().await;
    for (n, levels) in [(3, vec!["0", "-1"]), (1, vec!["0", "-1"]), (2, vec![])] {
        let got = claim(store, "q", n).await;
        order.extend(got.jobs.iter().map(payload_n));
        // `pending` names exactly the priorities with jobs left (the helper
        // also checks that none of them has an empty list).
        let s = snapshot(&mut con, &q).await;
        assert_eq!(s.zset("pending"), levels, "after {order:?}");
        assert_eq!(s.pending_ids().len(), 6 - order.len());
    }
    assert_eq!(order, [1, 3, 5, 0, 4, 2]);
    let exists: bool = redis::cmd("EXISTS")
        .arg(q.pending())
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(!exists, "an empty line leaves no `pending` key");
}

#[tokio::test]
async fn batches_beyond_luas_unpack_limit_are_split_and_lose_nothing() {
    // Lua's unpack() takes at most ~8000 values: a script that passed a
    // whole batch through it at once failed halfway (after taking jobs
    // from the line, for a claim).
    let redis = RedisServer::start();
    let client = redis.client().await;
    let store = client.store();
    let q = store.queue("q").unwrap();
    let n = 9000;
    client
        .enqueue_many("q", (0..n).map(job).collect())
        .await
        .unwrap();
    assert_eq!(client.stats(&["q".into()]).await.unwrap()[0].pending, 9000);

    // A claim hands out at most MAX_CALL_JOBS, in order.
    let max = redq::store::MAX_CALL_JOBS;
    let mut held = Vec::new();
    for round in 0..5 {
        let got = claim(store, "q", 5 * max).await;
        assert_eq!(got.jobs.len(), max, "round {round}");
        held.extend(got.jobs);
    }
    let order: Vec<i64> = held.iter().map(payload_n).collect();
    assert_eq!(order, (0..5000).collect::<Vec<_>>());

    // Renewing and releasing 5000 leases work, in calls of MAX_CALL_JOBS.
    let pairs: Vec<(&str, u64)> = held.iter().map(|j| (j.id.as_str(), j.fence)).collect();
    let (_, renewed) = store.extend(&q, &pairs, LEASE).await.unwrap();
    assert_eq!(renewed, vec![true; 5000]);
    assert_eq!(store.release(&q, &pairs).await.unwrap(), vec![true; 5000]);

    // Released jobs are back at the head of the pending jobs in their order, and
    // every job is there once.
    let line = pending_ids(&mut redis.con().await, &q).await;
    assert_eq!(line.len(), 9000);
    assert_eq!(line.iter().collect::<HashSet<_>>().len(), 9000);
    let mut all = Vec::new();
    loop {
        let got = claim(store, "q", max).await;
        if got.jobs.is_empty() {
            break;
        }
        all.extend(got.jobs.iter().map(payload_n));
    }
    assert_eq!(all, (0..n).collect::<Vec<_>>());
}

#[tokio::test]
async fn delayed_jobs_wait_until_due_then_are_promoted_in_priority_order() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let store = client.store();
    let a = client
        .enqueue("q", job(1).delay(Duration::from_secs(3600)))
        .await
        .unwrap()
        .id;
    let b = client
        .enqueue("q", job(2).delay(Duration::from_secs(3600)).priority(9))
        .await
        .unwrap()
        .id;
    let none = claim(store, "q", 10).await;
    assert!(none.jobs.is_empty());
    let due = none.next_due_ms.expect("next due time");
    assert!(
        due >= none.now_ms + 3_599_000 && due <= none.now_ms + 3_600_000,
        "{due} vs {}",
        none.now_ms
    );
    assert_eq!(
        client.job("q", &a).await.unwrap().unwrap().state,
        JobState::Scheduled
    );
    // Make both due now (as if an hour had passed).
    let q = store.queue("q").unwrap();
    let mut con = redis.con().await;
    let _: () = redis::cmd("ZADD")
        .arg(q.scheduled())
        .arg("XX")
        .arg(0)
        .arg(&a)
        .arg(0)
        .arg(&b)
        .query_async(&mut con)
        .await
        .unwrap();
    let got = claim(store, "q", 10).await;
    let ids: Vec<&str> = got.jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, vec![b.as_str(), a.as_str()]);
}

#[tokio::test]
async fn concurrent_batch_claims_never_hand_one_job_to_two_claimers() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let total = 5000;
    for chunk in (0..total).collect::<Vec<_>>().chunks(1000) {
        client
            .enqueue_many("q", chunk.iter().map(|n| job(*n)).collect())
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for _ in 0..8 {
        // Separate connections, so claims really interleave on the server.
        let store = Store::connect(&redis.url(), "redq").await.unwrap();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = claim(&store, "q", 37).await;
                if got.jobs.is_empty() {
                    return mine;
                }
                mine.extend(got.jobs.into_iter().map(|j| (j.id, j.fence)));
            }
        }));
    }
    let mut ids = HashSet::new();
    let mut fences = HashSet::new();
    let mut count = 0;
    for t in tasks {
        for (id, fence) in within(60, t).await.unwrap() {
            count += 1;
            ids.insert(id);
            fences.insert(fence);
        }
    }
    assert_eq!(count, total as usize, "every job claimed exactly once");
    assert_eq!(ids.len(), total as usize);
    assert_eq!(
        fences.len(),
        total as usize,
        "every claim gets its own fence"
    );
}

#[tokio::test]
async fn a_stale_token_is_refused_everywhere_and_changes_nothing() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let store = client.store();
    let q = store.queue("q").unwrap();
    client.enqueue("q", job(1).unique_key("u")).await.unwrap();
    let got = claim(store, "q", 1).await;
    let j = &got.jobs[0];
    let stale = j.fence + 1;
    let mut con = redis.con().await;
    let before = snapshot(&mut con, &q).await;
    let done = [Completion {
        id: &j.id,
        fence: stale,
        unique_key: Some("u"),
        result: None,
        outcome_ttl: None,
    }];
    assert_eq!(
        store.complete(&q, &done, KEEP_NONE).await.unwrap(),
        vec![false]
    );
    let failed = [Failure {
        id: &j.id,
        fence: stale,
        retry_in: None,
        error: "x",
        unique_key: Some("u"),
        outcome_ttl: None,
    }];
    assert_eq!(
        store.fail(&q, &failed, DEAD).await.unwrap(),
        vec![FailResult::Stale]
    );
    assert_eq!(
        store.extend(&q, &[(&j.id, stale)], LEASE).await.unwrap().1,
        vec![false]
    );
    assert_eq!(
        store.release(&q, &[(&j.id, stale)]).await.unwrap(),
        vec![false]
    );
    assert_eq!(
        snapshot(&mut con, &q).await,
        before,
        "refused writes change nothing"
    );

    // Once the lease expires and the job is rescued, the old holder's fence is dead too.
    store
        .extend(&q, &[(&j.id, j.fence)], Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        store.reap(&q, 10, 5, DEAD, Duration::ZERO).await.unwrap(),
        (1, 0)
    );
    let old = [Completion {
        id: &j.id,
        fence: j.fence,
        unique_key: Some("u"),
        result: None,
        outcome_ttl: None,
    }];
    assert_eq!(
        store.complete(&q, &old, KEEP_NONE).await.unwrap(),
        vec![false]
    );
    let again = claim(store, "q", 1).await;
    assert_eq!(again.jobs[0].id, j.id);
    assert_eq!(again.jobs[0].attempt, 2);
    assert!(again.jobs[0].fence > j.fence);
}

#[tokio::test]
async fn extend_moves_the_lease_deadline_for_the_holder() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let store = client.store();
    let q = store.queue("q").unwrap();
    client.enqueue("q", job(1)).await.unwrap();
    let j = claim(store, "q", 1).await.jobs.remove(0);
    let (now, ok) = store
        .extend(&q, &[(&j.id, j.fence)], Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(ok, vec![true]);
    let info = client.job("q", &j.id).await.unwrap().unwrap();
    assert_eq!(info.state, JobState::Active);
    assert!(info.lease_deadline_ms.unwrap() >= now + 600_000);
}

#[tokio::test]
async fn an_expired_lease_spends_an_attempt_and_ends_dead_when_they_run_out() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let store = client.store();
    let q = store.queue("q").unwrap();
    let id = client
        .enqueue("q", job(1).max_attempts(2))
        .await
        .unwrap()
        .id;
    // A lease of 0 ms has expired as soon as it is granted.
    let first = store.claim(&q, 1, Duration::ZERO, 0, 0).await.unwrap();
    assert_eq!(first.jobs.len(), 1);
    assert_eq!(
        store.reap(&q, 10, 25, DEAD, Duration::ZERO).await.unwrap(),
        (1, 0)
    );
    let info = client.job("q", &id).await.unwrap().unwrap();
    assert_eq!((info.state, info.attempts), (JobState::Pending, 1));
    assert!(info.last_error.unwrap().contains("lease expired"));
    store.claim(&q, 1, Duration::ZERO, 0, 0).await.unwrap();
    assert_eq!(
        store.reap(&q, 10, 25, DEAD, Duration::ZERO).await.unwrap(),
        (0, 1)
    );
    let info = client.job("q", &id).await.unwrap().unwrap();
    assert_eq!((info.state, info.attempts), (JobState::Dead, 2));
    assert!(info.last_error.unwrap().contains("attempt 2 of 2"));
    assert_eq!(
        store.reap(&q, 10, 25, DEAD, Duration::ZERO).await.unwrap(),
        (0, 0),
        "nothing left to reap"
    );
}

#[tokio::test]
async fn a_lease_is_taken_over_only_a_grace_after_its_deadline() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let store = client.store();
    let q = store.queue("q").unwrap();
    client.enqueue("q", job(1)).await.unwrap();
    let grace = redq::store::TAKEOVER_GRACE;
    let claimed = store.claim(&q, 1, Duration::ZERO, 0, 0).await.unwrap();
    let deadline = claimed.now_ms;
    // Expired on Redis's clock, but within the grace: its holder may still
    // be stopping it.
    assert_eq!(store.reap(&q, 10, 5, DEAD, grace).await.unwrap(), (0, 0));
    let con = redis.con().await;
    let past = deadline + grace.as_millis() as i64;
    eventually("Redis's clock to pass the grace", WAIT, || {
        let mut con = con.clone();
        async move { redis_ms(&mut con).await > past }
    })
    .await;
    assert_eq!(store.reap(&q, 10, 5, DEAD, grace).await.unwrap(), (1, 0));
}

#[tokio::test]
async fn release_gives_the_job_back_without_spending_an_attempt() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let store = client.store();
    let q = store.queue("q").unwrap();
    client
        .enqueue_many("q", vec![job(1), job(2)])
        .await
        .unwrap();
    let a = claim(store, "q", 1).await.jobs.remove(0);
    assert_eq!(
        store.release(&q, &[(&a.id, a.fence)]).await.unwrap(),
        vec![true]
    );
    let info = client.job("q", &a.id).await.unwrap().unwrap();
    assert_eq!((info.state, info.attempts), (JobState::Pending, 0));
    let again = claim(store, "q", 1).await.jobs.remove(0);
    assert_eq!(
        again.id, a.id,
        "a released job goes to the front of its priority"
    );
    assert_eq!(again.attempt, 1);
}

#[tokio::test]
async fn failures_retry_with_the_given_delay_then_die_and_dead_jobs_can_be_retried() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let store = client.store();
    let q = store.queue("q").unwrap();
    let id = client
        .enqueue("q", job(1).unique_key("k"))
        .await
        .unwrap()
        .id;
    let j = claim(store, "q", 1).await.jobs.remove(0);
    let retry = [Failure {
        id: &j.id,
        fence: j.fence,
        retry_in: Some(Duration::from_secs(60)),
        error: "boom",
        unique_key: Some("k"),
        outcome_ttl: None,
    }];
    assert_eq!(
        store.fail(&q, &retry, DEAD).await.unwrap(),
        vec![FailResult::Retrying]
    );
    let info = client.job("q", &id).await.unwrap().unwrap();
    assert_eq!((info.state, info.attempts), (JobState::Retrying, 1));
    assert_eq!(info.last_error.as_deref(), Some("boom"));
    assert!(info.run_at_ms.unwrap() > info.started_at_ms.unwrap() + 59_000);
    // The unique key is still held while the job retries.
    let dup = client.enqueue("q", job(2).unique_key("k")).await.unwrap();
    assert_eq!(
        (dup.status, dup.id.as_str()),
        (EnqueueStatus::Duplicate, id.as_str())
    );

    let _: () = redis::cmd("ZADD")
        .arg(q.scheduled())
        .arg("XX")
        .arg(0)
        .arg(&id)
        .query_async(&mut redis.con().await)
        .await
        .unwrap();
    let j = claim(store, "q", 1).await.jobs.remove(0);
    assert_eq!(j.attempt, 2);
    let dead = [Failure {
        id: &j.id,
        fence: j.fence,
        retry_in: None,
        error: "gave up",
        unique_key: Some("k"),
        outcome_ttl: None,
    }];
    assert_eq!(
        store.fail(&q, &dead, DEAD).await.unwrap(),
        vec![FailResult::Dead]
    );
    let info = client.job("q", &id).await.unwrap().unwrap();
    assert_eq!((info.state, info.attempts), (JobState::Dead, 2));
    assert_eq!(
        client.dead_list("q", 0, 10).await.unwrap()[0]
            .last_error
            .as_deref(),
        Some("gave up")
    );

    assert_eq!(
        client
            .dead_retry("q", &[id.clone(), "nope".into()])
            .await
            .unwrap(),
        vec![DeadRetry::Requeued, DeadRetry::NotDead]
    );
    let info = client.job("q", &id).await.unwrap().unwrap();
    assert_eq!(
        (info.state, info.attempts),
        (JobState::Pending, 0),
        "fresh attempts"
    );
    let dup = client.enqueue("q", job(3).unique_key("k")).await.unwrap();
    assert_eq!(
        dup.status,
        EnqueueStatus::Duplicate,
        "a retried dead job holds its unique key again"
    );
}

#[tokio::test]
async fn dead_jobs_can_be_purged_by_id_and_by_age() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let store = client.store();
    let q = store.queue("q").unwrap();
    client
        .enqueue_many("q", (0..3).map(|n| job(n).max_attempts(1)).collect())
        .await
        .unwrap();
    let got = claim(store, "q", 3).await;
    let fails: Vec<Failure> = got
        .jobs
        .iter()
        .map(|j| Failure {
            id: &j.id,
            fence: j.fence,
            retry_in: None,
            error: "x",
            unique_key: None,
            outcome_ttl: None,
        })
        .collect();
    store.fail(&q, &fails, DEAD).await.unwrap();
    assert_eq!(
        client
            .dead_purge("q", &[got.jobs[0].id.clone()])
            .await
            .unwrap(),
        1
    );
    assert!(client.job("q", &got.jobs[0].id).await.unwrap().is_none());
    assert_eq!(
        client
            .dead_purge_older("q", Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        client.dead_purge_older("q", Duration::ZERO).await.unwrap(),
        2
    );
    let mut con = redis.con().await;
    let s = snapshot(&mut con, &q).await;
    assert!(
        s.hashes["jobs"].is_empty() && s.hashes["runs"].is_empty() && s.hashes["errors"].is_empty()
    );
}

#[tokio::test]
async fn the_dead_set_is_capped_by_count() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let store = client.store();
    let q = store.queue("q").unwrap();
    client
        .enqueue_many("q", (0..5).map(job).collect())
        .await
        .unwrap();
    let got = claim(store, "q", 5).await;
    let cap = Retention {
        keep: 3,
        max_age: Duration::ZERO,
    };
    for j in &got.jobs {
        let f = [Failure {
            id: &j.id,
            fence: j.fence,
            retry_in: None,
            error: "x",
            unique_key: None,
            outcome_ttl: None,
        }];
        store.fail(&q, &f, cap).await.unwrap();
    }
    let s = snapshot(&mut redis.con().await, &q).await;
    let kept: Vec<String> = got.jobs[2..].iter().map(|j| j.id.clone()).collect();
    let mut dead = s.zset("dead");
    dead.sort();
    let mut want = kept.clone();
    want.sort();
    assert_eq!(dead, want, "the newest 3 are kept");
    assert_eq!(
        s.hashes["jobs"].len(),
        3,
        "records of dropped dead jobs are deleted"
    );
}

#[tokio::test]
async fn completion_removes_the_job_or_keeps_it_per_retention() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let store = client.store();
    let q = store.queue("q").unwrap();
    client
        .enqueue_many(
            "q",
            (0..4).map(|n| job(n).unique_key(format!("u{n}"))).collect(),
        )
        .await
        .unwrap();
    let got = claim(store, "q", 4).await;
    let keys: Vec<String> = (0..4).map(|n| format!("u{n}")).collect();
    let first = [Completion {
        id: &got.jobs[0].id,
        fence: got.jobs[0].fence,
        unique_key: Some(&keys[0]),
        result: Some("r0"),
        outcome_ttl: None,
    }];
    assert_eq!(
        store.complete(&q, &first, KEEP_NONE).await.unwrap(),
        vec![true]
    );
    assert!(
        client.job("q", &got.jobs[0].id).await.unwrap().is_none(),
        "removed at once by default"
    );
    let keep2 = Retention {
        keep: 2,
        max_age: Duration::ZERO,
    };
    let rest: Vec<Completion> = got.jobs[1..]
        .iter()
        .zip(&keys[1..])
        .map(|(j, k)| Completion {
            id: &j.id,
            fence: j.fence,
            unique_key: Some(k),
            result: Some("ok"),
            outcome_ttl: None,
        })
        .collect();
    assert_eq!(
        store.complete(&q, &rest, keep2).await.unwrap(),
        vec![true; 3]
    );
    let s = snapshot(&mut redis.con().await, &q).await;
    assert_eq!(s.sets["done"].len(), 2);
    assert_eq!(s.hashes["jobs"].len(), 2);
    assert!(s.sets["active"].is_empty());
    // Kept jobs keep their run entry (attempts, start) with no fence; trimmed ones lose it.
    assert_eq!(s.hashes["runs"].len(), 2);
    assert!(
        s.hashes["runs"]
            .values()
            .all(|r| r.split(',').nth(1) == Some("0")),
        "{:?}",
        s.hashes["runs"]
    );
    assert!(
        s.hashes["unique"].is_empty(),
        "unique keys are free once jobs finish"
    );
    let kept = client
        .job("q", &s.sets["done"][0].0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (kept.state, kept.result.as_deref(), kept.attempts),
        (JobState::Succeeded, Some("ok"), 1)
    );
    // The same completion again is stale: the job is no longer held.
    assert_eq!(
        store.complete(&q, &rest[2..], keep2).await.unwrap(),
        vec![false]
    );
}

#[tokio::test]
async fn unique_keys_allow_one_live_job_and_ids_are_idempotent() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let a = client
        .enqueue("q", job(1).unique_key("report-7"))
        .await
        .unwrap();
    assert_eq!(a.status, EnqueueStatus::Created);
    let b = client
        .enqueue("q", job(2).unique_key("report-7"))
        .await
        .unwrap();
    assert_eq!((b.status, b.id), (EnqueueStatus::Duplicate, a.id.clone()));
    let c = client.enqueue("q", job(3).unique_key("report-7")).await;
    assert_eq!(c.unwrap().status, EnqueueStatus::Duplicate);

    let x = client.enqueue("q", job(10).id("order-42")).await.unwrap();
    assert_eq!(
        (x.status, x.id.as_str()),
        (EnqueueStatus::Created, "order-42")
    );
    let y = client
        .enqueue("q", job(11).id("order-42").priority(9))
        .await
        .unwrap();
    assert_eq!(
        (y.status, y.id.as_str()),
        (EnqueueStatus::Exists, "order-42")
    );
    let info = client.job("q", "order-42").await.unwrap().unwrap();
    assert_eq!(
        (info.payload.get(), info.priority),
        (r#"{"n":10}"#, 0),
        "the first enqueue stands"
    );
    assert_eq!(client.stats(&["q".into()]).await.unwrap()[0].pending, 2);
}

#[tokio::test]
async fn invalid_jobs_are_refused_naming_the_field_and_nothing_is_written() {
    let redis = RedisServer::start();
    let client = redis.client().await.with_max_doc_bytes(200);
    let q = client.store().queue("q").unwrap();
    let mut con = redis.con().await;
    let before = snapshot(&mut con, &q).await;
    let cases: Vec<(NewJob, &str)> = vec![
        (job(1).priority(1001), "priority"),
        (job(1).priority(i64::MIN), "priority"),
        (job(1).max_attempts(0), "max_attempts"),
        (job(1).max_attempts(1001), "max_attempts"),
        (job(1).timeout(Duration::ZERO), "timeout_ms"),
        (job(1).run_at_ms(-5), "run_at"),
        (
            job(1).delay(Duration::from_secs(20 * 365 * 86400)),
            "delay_ms",
        ),
        (job(1).delay(Duration::from_secs(1)).run_at_ms(5), "run_at"),
        (job(1).unique_key(""), "unique_key"),
        (job(1).tenant("t".repeat(600)), "tenant"),
        (job(1).group(""), "group"),
        (job(1).id("has space"), "id"),
        (job(1).id("a{b}"), "id"),
        (NewJob::new(&"x".repeat(300)).unwrap(), "payload"),
    ];
    for (bad, field) in cases {
        let err = client.enqueue("q", bad).await.unwrap_err().to_string();
        assert!(err.contains(field), "{err:?} should name {field}");
    }
    // One bad job in a batch refuses the whole batch.
    let err = client
        .enqueue_many("q", vec![job(1), job(2).priority(5000)])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("job #1"), "{err}");
    assert!(NewJob::from_json("{not json").is_err());
    assert!(client.enqueue("bad queue", job(1)).await.is_err());
    assert_eq!(snapshot(&mut con, &q).await, before);
    assert!(
        client.queues().await.unwrap().is_empty(),
        "not even the registry was written"
    );
}

#[tokio::test]
async fn a_paused_queue_hands_out_nothing_but_accepts_jobs() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    client.pause("q").await.unwrap();
    client.enqueue("q", job(1)).await.unwrap();
    let got = claim(client.store(), "q", 10).await;
    assert!(got.paused && got.jobs.is_empty());
    assert!(client.stats(&["q".into()]).await.unwrap()[0].paused);
    client.resume("q").await.unwrap();
    let got = claim(client.store(), "q", 10).await;
    assert!(!got.paused);
    assert_eq!(got.jobs.len(), 1);
}

#[tokio::test]
async fn stats_count_each_state() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let store = client.store();
    client
        .enqueue_many("q", (0..5).map(job).collect())
        .await
        .unwrap();
    client
        .enqueue("q", job(9).delay(Duration::from_secs(600)))
        .await
        .unwrap();
    let got = claim(store, "q", 2).await;
    let q = store.queue("q").unwrap();
    let f = [Failure {
        id: &got.jobs[0].id,
        fence: got.jobs[0].fence,
        retry_in: None,
        error: "x",
        unique_key: None,
        outcome_ttl: None,
    }];
    store.fail(&q, &f, DEAD).await.unwrap();
    let s = &client.stats(&["q".into()]).await.unwrap()[0];
    assert_eq!(
        (s.pending, s.scheduled, s.active, s.dead, s.succeeded),
        (3, 1, 1, 1, 0)
    );
    assert_eq!(client.queues().await.unwrap(), vec!["q".to_string()]);
}

#[tokio::test]
async fn at_maxmemory_enqueue_fails_with_oom_but_freeing_transitions_still_work() {
    let redis =
        RedisServer::start_with(&["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"]);
    let client = redis.client().await;
    let store = client.store();
    let q = store.queue("q").unwrap();
    let big = "x".repeat(100_000);
    let mut oom = None;
    for _ in 0..200 {
        match client.enqueue("q", NewJob::new(&big).unwrap()).await {
            Ok(_) => {}
            Err(e) => {
                oom = Some(e.to_string());
                break;
            }
        }
    }
    let oom = oom.expect("Redis never filled up");
    assert!(oom.contains("OOM"), "{oom}");
    let mut con = redis.con().await;
    let before = snapshot(&mut con, &q).await;
    assert!(client
        .enqueue("q", NewJob::new(&big).unwrap())
        .await
        .unwrap_err()
        .to_string()
        .contains("OOM"));
    assert_eq!(
        snapshot(&mut con, &q).await,
        before,
        "a refused enqueue writes nothing"
    );

    // Claim, extend, release, fail, reap and complete all still work.
    let got = within(10, store.claim(&q, 4, LEASE, 10, 10)).await.unwrap();
    assert_eq!(got.jobs.len(), 4);
    let [a, b, c, d] = &got.jobs[..] else {
        unreachable!()
    };
    assert_eq!(
        store
            .extend(&q, &[(&a.id, a.fence)], LEASE)
            .await
            .unwrap()
            .1,
        vec![true]
    );
    assert_eq!(
        store.release(&q, &[(&a.id, a.fence)]).await.unwrap(),
        vec![true]
    );
    let f = [Failure {
        id: &b.id,
        fence: b.fence,
        retry_in: None,
        error: "x",
        unique_key: None,
        outcome_ttl: None,
    }];
    assert_eq!(
        store.fail(&q, &f, DEAD).await.unwrap(),
        vec![FailResult::Dead]
    );
    store
        .extend(&q, &[(&c.id, c.fence)], Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        store.reap(&q, 10, 5, DEAD, Duration::ZERO).await.unwrap(),
        (1, 0)
    );
    let done = [Completion {
        id: &d.id,
        fence: d.fence,
        unique_key: None,
        result: None,
        outcome_ttl: None,
    }];
    assert_eq!(
        store.complete(&q, &done, KEEP_NONE).await.unwrap(),
        vec![true]
    );

    // With the functions gone (a new version, a flushed library) Redis
    // refuses to load them while full; the freeing transitions still run,
    // as EVAL scripts.
    redis
        .cli(&["FUNCTION", "DELETE", redq::scripts::internal_library_name()])
        .unwrap();
    let got = within(10, store.claim(&q, 1, LEASE, 10, 10)).await.unwrap();
    assert_eq!(got.jobs.len(), 1);
    assert_eq!(
        store
            .complete(&q, &completions(&got.jobs), KEEP_NONE)
            .await
            .unwrap(),
        vec![true]
    );
}

#[tokio::test]
async fn transitions_run_as_functions_loaded_again_when_redis_lost_them() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let store = client.store();
    let q = store.queue("q").unwrap();
    client.enqueue("q", job(0)).await.unwrap();
    // The internal library holds every transition, and a call is an FCALL:
    // no per-call Lua library as an EVAL script would run.
    let listed = redis
        .cli(&["FUNCTION", "LIST", "LIBRARYNAME", "redqi_*"])
        .unwrap();
    assert!(
        listed.contains(redq::scripts::internal_library_name()),
        "{listed}"
    );
    for t in [
        "enqueue", "claim", "complete", "fail", "extend", "release", "reap",
    ] {
        assert!(
            listed.contains(&format!("{}_{t}", redq::scripts::internal_library_name())),
            "{t}: {listed}"
        );
    }
    assert!(redis.command_calls("fcall").await >= 1);
    assert_eq!(redis.command_calls("evalsha").await, 0);

    // Lost (FUNCTION FLUSH, or a Redis restarted without persistence): the
    // next call loads the library again and acts once.
    redis.cli(&["FUNCTION", "FLUSH"]).unwrap();
    client.enqueue("q", job(1)).await.unwrap();
    let got = claim(store, "q", 10).await;
    assert_eq!(got.jobs.iter().map(payload_n).collect::<Vec<_>>(), [0, 1]);
    assert_eq!(
        store
            .complete(&q, &completions(&got.jobs), KEEP_NONE)
            .await
            .unwrap(),
        [true, true]
    );
    assert_eq!(redis.command_calls("evalsha").await, 0);
}

#[tokio::test]
async fn a_batch_resent_after_a_lost_reply_adds_its_usage_once() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let store = client.store();
    let q = store.queue("q").unwrap();
    for n in 0..3 {
        client.enqueue("q", job(n)).await.unwrap();
    }
    let got = claim(store, "q", 3).await;
    let done = completions(&got.jobs);
    let day = Day::today();
    let mut tally = Tally::new(day);
    for _ in &done {
        tally.add(
            Some("acme"),
            Duration::from_millis(500),
            &Default::default(),
        );
    }
    let retention = Duration::from_secs(3600);
    // The first send is applied; the resend (as after a lost reply) finds
    // every job finished and adds nothing.
    for want in [true, false] {
        let applied = store
            .complete_with(&q, &done, KEEP_NONE, &[], Some(&tally), retention)
            .await
            .unwrap();
        assert_eq!(applied, vec![want; 3]);
    }
    let totals = redq::inspect::totals(store, &["q".to_owned()], Some("acme"), day, day)
        .await
        .unwrap();
    assert_eq!(totals.len(), 1, "{totals:?}");
    assert_eq!(totals[0].usage.get(usage::JOBS), Some(&3.0));
    assert_eq!(totals[0].usage.get(usage::RUN_SECONDS), Some(&1.5));
}

/// Single enqueues issued at once through one shared client travel in fewer
/// script calls than jobs, and each caller still gets its own answer: its
/// own id, and "duplicate" with the holder's id when another job of the same
/// batch took its unique key first.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_single_enqueues_share_calls_and_keep_their_own_answers() {
    let redis = RedisServer::start();
    let client = std::sync::Arc::new(redis.client().await);
    client.enqueue("q", job(-1)).await.unwrap(); // registers the queue
    let before = redis.command_calls("fcall").await;
    let n = 300;
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                // Every tenth job shares unique key "u<i/10>" with the one before it.
                let key = format!("u{}", i / 2);
                let j = if i % 10 < 2 {
                    job(i).unique_key(key)
                } else {
                    job(i)
                };
                (i, client.enqueue("q", j).await.unwrap())
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(within(10, t).await.unwrap());
    }
    let after = redis.command_calls("fcall").await;
    assert!(
        after > before && after - before < n as u64,
        "{} calls for {n} jobs",
        after - before
    );

    let created: Vec<_> = answers
        .iter()
        .filter(|(_, e)| e.status == EnqueueStatus::Created)
        .collect();
    let duplicates = answers
        .iter()
        .filter(|(_, e)| e.status == EnqueueStatus::Duplicate)
        .count();
    // Pairs (0,1), (10,11), ... share a key: one of each pair is created.
    assert_eq!(duplicates, n as usize / 10, "{answers:?}");
    assert_eq!(created.len(), n as usize - n as usize / 10);
    let ids: HashSet<&str> = created.iter().map(|(_, e)| e.id.as_str()).collect();
    assert_eq!(ids.len(), created.len(), "every created job has its own id");
    // Each answer is about the caller's own job: its payload is stored under its id.
    for (i, e) in &created {
        let info = client.job("q", &e.id).await.unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_str(info.payload.get()).unwrap();
        assert_eq!(v["n"].as_i64(), Some(*i), "job {}", e.id);
    }
}

/// A daemon's hand-off registration and list, read raw.
const IDLE_TTL: Duration = Duration::from_secs(60);

/// Registers pool "d1" for hand-offs of `q` with 3 free slots, as its claim
/// that found nothing would.
async fn register_d1(store: &Store, q: &redq::keys::QueueKeys) -> redq::store::Claimed {
    store
        .claim_as(
            q,
            3,
            LEASE,
            0,
            0,
            Some(HandoffOffer {
                name: "d1",
                ttl: IDLE_TTL,
            }),
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn an_enqueue_leases_the_head_of_the_line_to_a_registered_idle_daemon() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let store = client.store();
    let q = store.queue("q").unwrap();
    // A claim that finds nothing leaves the caller with 3 free slots: it registers.
    let none = register_d1(store, &q).await;
    assert!(none.jobs.is_empty());
    let reg = registration(&redis, &q, "d1").await.expect("registered");
    assert!(reg.starts_with("3,30000,"), "{reg}");

    let jobs = (0..5).map(job).collect();
    client.enqueue_many("q", jobs).await.unwrap();
    // One element for the call, holding the first three jobs pending, leased.
    let list = handed(&redis, &q, "d1").await;
    assert_eq!(list.len(), 1);
    let got = redq::store::parse_handoff(&list[0]).unwrap();
    assert_eq!(
        got.jobs.iter().map(payload_n).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert!(got.jobs.iter().all(|j| j.attempt == 1));
    let s = snapshot(&mut redis.con().await, &q).await;
    assert_eq!(s.pending_ids().len(), 2);
    let active: HashSet<String> = s.zset("active").into_iter().collect();
    assert_eq!(active, got.jobs.iter().map(|j| j.id.clone()).collect());
    // Its three slots are used: the registration is over; the rest wakes others.
    assert_eq!(registration(&redis, &q, "d1").await, None);
    assert_eq!(s.lists["wake"].len(), 1);
    // The fences are the jobs' fences: completing with them works.
    let done = completions(&got.jobs);
    assert_eq!(
        store.complete(&q, &done, KEEP_NONE).await.unwrap(),
        [true; 3]
    );
    // The next claim takes up where the hand-off stopped.
    let rest = claim(store, "q", 10).await;
    assert_eq!(rest.jobs.iter().map(payload_n).collect::<Vec<_>>(), [3, 4]);
}

#[tokio::test]
async fn a_single_enqueue_into_an_empty_queue_is_leased_without_entering_the_line() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let store = client.store();
    let q = store.queue("q").unwrap();
    register_d1(store, &q).await;
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut redis.con().await)
        .await
        .unwrap();
    let id = client.enqueue("q", job(7)).await.unwrap().id;

    let list = handed(&redis, &q, "d1").await;
    assert_eq!(list.len(), 1);
    let got = redq::store::parse_handoff(&list[0]).unwrap();
    assert_eq!(got.jobs.len(), 1);
    assert_eq!(
        (got.jobs[0].id.as_str(), payload_n(&got.jobs[0])),
        (id.as_str(), 7)
    );
    // Straight to the daemon: never added to the line nor taken from it.
    for command in ["lpop", "zrange"] {
        assert_eq!(redis.command_calls(command).await, 0, "{command}");
    }
    let s = snapshot(&mut redis.con().await, &q).await;
    assert!(s.pending_ids().is_empty());
    assert!(s.zset("pending").is_empty());
    assert_eq!(s.zset("active"), std::slice::from_ref(&id));
    assert!(registration(&redis, &q, "d1")
        .await
        .unwrap()
        .starts_with("2,"));
    assert_eq!(
        store
            .complete(&q, &completions(&got.jobs), KEEP_NONE)
            .await
            .unwrap(),
        [true]
    );
}

#[tokio::test]
async fn a_single_enqueue_behind_waiting_jobs_is_handed_off_in_its_place_in_line() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let store = client.store();
    let q = store.queue("q").unwrap();
    register_d1(store, &q).await;
    // Two jobs wait (enqueued while paused, so not handed off), then one
    // more arrives with a higher priority than the second.
    store.pause(&q).await.unwrap();
    client.enqueue("q", job(0).priority(1)).await.unwrap();
    client.enqueue("q", job(1)).await.unwrap();
    store.resume(&q).await.unwrap();
    assert!(handed(&redis, &q, "d1").await.is_empty());
    client.enqueue("q", job(2).priority(1)).await.unwrap();

    let list = handed(&redis, &q, "d1").await;
    assert_eq!(list.len(), 1);
    let got = redq::store::parse_handoff(&list[0]).unwrap();
    assert_eq!(
        got.jobs.iter().map(payload_n).collect::<Vec<_>>(),
        [0, 2, 1]
    );
    assert!(snapshot(&mut redis.con().await, &q)
        .await
        .pending_ids()
        .is_empty());
}

#[tokio::test]
async fn no_hand_off_when_the_registration_expired_the_queue_is_paused_or_limited() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let store = client.store();
    let q = store.queue("q").unwrap();

    // Expired (a registration of 0 ms expires at once): removed, nothing handed.
    store
        .claim_as(
            &q,
            3,
            LEASE,
            0,
            0,
            Some(HandoffOffer {
                name: "d1",
                ttl: Duration::ZERO,
            }),
        )
        .await
        .unwrap();
    client.enqueue("q", job(0)).await.unwrap();
    assert!(handed(&redis, &q, "d1").await.is_empty());
    assert_eq!(registration(&redis, &q, "d1").await, None);
    assert_eq!(claim(store, "q", 10).await.jobs.len(), 1);

    // Paused: the job stays pending.
    register_d1(store, &q).await;
    store.pause(&q).await.unwrap();
    client.enqueue("q", job(1)).await.unwrap();
    assert!(handed(&redis, &q, "d1").await.is_empty());
    store.resume(&q).await.unwrap();

    // A rate limit needs the claim's checks: a claim does not register.
    store
        .set_limits(&q, Some((100, Duration::from_secs(1))), None)
        .await
        .unwrap();
    let got = store
        .claim_as(
            &q,
            3,
            LEASE,
            0,
            0,
            Some(HandoffOffer {
                name: "d1",
                ttl: IDLE_TTL,
            }),
        )
        .await
        .unwrap();
    assert_eq!(got.jobs.len(), 1);
    assert_eq!(registration(&redis, &q, "d1").await, None);
    client.enqueue("q", job(2)).await.unwrap();
    assert!(handed(&redis, &q, "d1").await.is_empty());
}

#[tokio::test]
async fn a_busy_claim_or_ending_the_registration_stops_hand_offs() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let store = client.store();
    let q = store.queue("q").unwrap();
    register_d1(store, &q).await;
    client.enqueue("q", job(0)).await.unwrap();
    assert_eq!(handed(&redis, &q, "d1").await.len(), 1);
    // Two slots left.
    assert!(registration(&redis, &q, "d1")
        .await
        .unwrap()
        .starts_with("2,"));

    // Ending it takes what was handed over and not yet received.
    let taken = store.end_handoff(&q, "d1").await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].as_ref().unwrap().jobs.len(), 1);
    assert_eq!(registration(&redis, &q, "d1").await, None);
    assert!(handed(&redis, &q, "d1").await.is_empty());

    // A claim that fills every slot it asked for ends the registration.
    register_d1(store, &q).await;
    // (Jobs enqueued while paused wait pending instead of being handed off.)
    store.pause(&q).await.unwrap();
    client
        .enqueue_many("q", (1..=3).map(job).collect())
        .await
        .unwrap();
    store.resume(&q).await.unwrap();
    assert!(registration(&redis, &q, "d1").await.is_some());
    let busy = store
        .claim_as(
            &q,
            1,
            LEASE,
            0,
            0,
            Some(HandoffOffer {
                name: "d1",
                ttl: IDLE_TTL,
            }),
        )
        .await
        .unwrap();
    assert_eq!(busy.jobs.len(), 1);
    assert_eq!(registration(&redis, &q, "d1").await, None);
    client.enqueue("q", job(4)).await.unwrap();
    assert!(handed(&redis, &q, "d1").await.is_empty());
}

#[tokio::test]
async fn failed_attempts_are_kept_in_the_jobs_history_capped_and_removed_with_it() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let store = client.store();
    let q = store.queue("q").unwrap();
    let id = client.enqueue("q", job(1)).await.unwrap().id;
    // Seven failed attempts, each retried at once, with resources on the
    // second; the history keeps the last five.
    for n in 1..=7u32 {
        let j = claim(store, "q", 1).await.jobs.remove(0);
        assert_eq!(j.attempt, n);
        let error = format!("boom {n}");
        let f = [common::store::failure(&j, Some(Duration::ZERO), &error)];
        let used = r#"{"wall_seconds":0.5,"user_cpu_seconds":0.1,"sys_cpu_seconds":0.0,"max_rss_kib":900,"exit_code":1,"signal":null,"stdout_bytes":0,"stderr_bytes":3}"#;
        let res = [(n == 7).then_some(used)];
        let r = store
            .fail_with(&q, &f, DEAD, &res, None, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(r, vec![FailResult::Retrying]);
    }
    let info = client.job("q", &id).await.unwrap().unwrap();
    let attempts: Vec<u32> = info.history.iter().map(|a| a.attempt).collect();
    assert_eq!(attempts, [3, 4, 5, 6, 7]);
    assert_eq!(info.history[4].error, "boom 7");
    assert!(info.history[4].ended_ms >= info.history[4].started_ms);
    assert_eq!(info.history[4].resources.as_ref().unwrap().max_rss_kib, 900);
    assert!(info.history[0].resources.is_none());
    // A long error is cut to its first 1000 bytes.
    let j = claim(store, "q", 1).await.jobs.remove(0);
    let long = "x".repeat(5000);
    let f = [common::store::failure(&j, Some(Duration::ZERO), &long)];
    store.fail(&q, &f, DEAD).await.unwrap();
    let info = client.job("q", &id).await.unwrap().unwrap();
    assert_eq!(info.history.last().unwrap().error.len(), 1000);
    // Success with nothing kept removes the history with the job.
    let j = claim(store, "q", 1).await.jobs;
    assert_eq!(
        store
            .complete(&q, &completions(&j), KEEP_NONE)
            .await
            .unwrap(),
        vec![true]
    );
    let left: i64 = redis::cmd("HLEN")
        .arg(q.history())
        .query_async(&mut redis.con().await)
        .await
        .unwrap();
    assert_eq!(left, 0);
    // A job that never failed has none.
    let ok = client.enqueue("q", job(2)).await.unwrap().id;
    assert!(client
        .job("q", &ok)
        .await
        .unwrap()
        .unwrap()
        .history
        .is_empty());
}

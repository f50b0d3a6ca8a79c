//! The value formats Rust and Lua share agree: what one side writes, the
//! other reads back the same. Each format has one encoder and one decoder
//! per language; these tests put each pair through a real redis-server.
//!
//! - the job record `<priority>;<max_attempts>;<enqueued_ms>;<document>`
//!   (Rust: `job::Record`; Lua: the enqueue paths, `record_header`);
//! - the run entry `<attempts>,<fence>,<started_ms>` (Lua writes it; Rust's
//!   `inspect` reads it);
//! - the hand-off element (Lua writes it; `store::parse_handoff` reads it);
//! - the hand-off registration `<slots>,<lease_ms>,<expires_ms>` (both
//!   write it: `store::Registration`, claim.lua; both read it).

mod common;

use std::time::Duration;

use common::server::RedisServer;
use common::snapshot::handed_jobs;
use redq::inspect::JobState;
use redq::job::Record;
use redq::store::{HandoffOffer, Registration, Retention};

const DEAD: Retention = Retention {
    keep: 100,
    max_age: Duration::ZERO,
};

async fn hget(redis: &RedisServer, key: &str, field: &str) -> Option<String> {
    redis::cmd("HGET")
        .arg(key)
        .arg(field)
        .query_async(&mut redis.con().await)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_job_record_written_by_lua_reads_back_in_rust_and_the_reverse() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    client.ensure_library().await.unwrap();
    let store = client.store();
    let q = store.queue("q").unwrap();

    // Lua writes (FCALL), Rust reads.
    let doc = r#"{"payload":{"text":"a;b,c\nd é"},"priority":5,"max_attempts":3,"id":"lua"}"#;
    let id: String = redis::cmd("FCALL")
        .arg("redq_enqueue")
        .arg(1)
        .arg(q.base())
        .arg(doc)
        .query_async(&mut redis.con().await)
        .await
        .unwrap();
    let stored = hget(&redis, q.jobs(), &id).await.unwrap();
    let r = Record::split(&stored).unwrap();
    assert_eq!((r.priority, r.max_attempts, r.doc), (5, 3, doc));
    assert!(r.enqueued_ms > 1_600_000_000_000, "{}", r.enqueued_ms);

    // Rust writes (import), Lua reads the header: priority 7 runs before 5,
    // and two attempts are all it gets.
    let record = Record {
        priority: 7,
        max_attempts: 2,
        enqueued_ms: 1_700_000_000_000,
        doc: r#"{"payload":1}"#,
    };
    let imported = store
        .import(
            &q,
            &[redq::store::ImportJob {
                id: "rust",
                record,
                state: JobState::Pending,
                at_ms: None,
                attempts: 0,
                last_error: None,
                result: None,
                unique_key: None,
            }],
        )
        .await
        .unwrap();
    assert_eq!(imported, [true]);
    assert_eq!(
        hget(&redis, q.jobs(), "rust").await.unwrap(),
        record.encode()
    );
    for attempt in 1..=2 {
        let got = store.claim(&q, 1, Duration::ZERO, 0, 0).await.unwrap();
        assert_eq!(
            got.jobs[0].id, "rust",
            "priority 7 first (attempt {attempt})"
        );
        assert_eq!(got.jobs[0].attempt, attempt);
        store.reap(&q, 10, 25, DEAD, Duration::ZERO).await.unwrap();
    }
    let info = client.job("q", "rust").await.unwrap().unwrap();
    assert_eq!(
        info.state,
        JobState::Dead,
        "max_attempts 2 read from the header"
    );
    assert!(info.last_error.unwrap().contains("attempt 2 of 2"));
}

#[tokio::test]
async fn a_run_entry_written_by_lua_reads_back_in_rust() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let store = client.store();
    let q = store.queue("q").unwrap();
    let id = client
        .enqueue("q", redq::NewJob::new(&1).unwrap())
        .await
        .unwrap()
        .id;
    let got = store
        .claim(&q, 1, Duration::from_secs(60), 0, 0)
        .await
        .unwrap();
    let job = &got.jobs[0];
    let entry = hget(&redis, q.runs(), &id).await.unwrap();
    assert_eq!(entry, format!("1,{},{}", job.fence, got.now_ms));
    let info = client.job("q", &id).await.unwrap().unwrap();
    assert_eq!(info.state, JobState::Active);
    assert_eq!(info.attempts, 1);
}

#[tokio::test]
async fn a_hand_off_element_written_by_lua_reads_back_in_rust() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let store = client.store();
    let q = store.queue("q").unwrap();
    let offer = HandoffOffer {
        name: "d1.0",
        ttl: Duration::from_secs(60),
    };
    let lease = Duration::from_secs(30);
    let got = store
        .claim_as(&q, 4, lease, 0, 0, Some(offer))
        .await
        .unwrap();
    assert!(got.jobs.is_empty());
    // Records with the element's own separators inside.
    let payloads = ["line\nbreak", "comma,and;semicolon", "multi-byte é ✓ 🎉"];
    let jobs = payloads
        .iter()
        .map(|p| redq::NewJob::new(p).unwrap())
        .collect();
    client.enqueue_many("q", jobs).await.unwrap();
    let handed = handed_jobs(&redis, &q, "d1.0").await;
    assert_eq!(handed.len(), 3);
    for (job, payload) in handed.iter().zip(payloads) {
        let stored = hget(&redis, q.jobs(), &job.id).await.unwrap();
        let record = job.record.as_ref().unwrap();
        let want = serde_json::to_string(payload).unwrap();
        assert_eq!(record.doc.payload.get(), want);
        let kept = Record::split(&stored).unwrap();
        assert_eq!(
            (record.priority, record.enqueued_ms),
            (kept.priority, kept.enqueued_ms)
        );
        let entry = hget(&redis, q.runs(), &job.id).await.unwrap();
        assert_eq!(
            entry.split(',').nth(1),
            Some(job.fence.to_string().as_str())
        );
        assert_eq!(job.attempt, 1);
    }
}

#[tokio::test]
async fn a_registration_written_by_either_side_reads_back_in_the_other() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let store = client.store();
    let q = store.queue("q").unwrap();
    let lease = Duration::from_secs(30);

    // Lua writes (a claim that leaves 4 free slots), Rust reads.
    let offer = HandoffOffer {
        name: "d1.0",
        ttl: Duration::from_secs(60),
    };
    let got = store
        .claim_as(&q, 4, lease, 0, 0, Some(offer))
        .await
        .unwrap();
    let value = hget(&redis, q.idle(), "d1.0").await.unwrap();
    let r = Registration::decode(&value).unwrap();
    assert_eq!((r.slots, r.lease), (4, lease));
    assert_eq!(r.expires_ms, got.now_ms + 60_000);

    // Rust writes (an idle pool's renewal: 2 slots), Lua reads: the next
    // enqueue of three hands two over and ends the registration.
    let renewed = Registration {
        slots: 2,
        lease,
        expires_ms: got.now_ms + 60_000,
    };
    store
        .renew_registrations("d1.0", &[(&q, renewed)])
        .await
        .unwrap();
    assert_eq!(
        hget(&redis, q.idle(), "d1.0").await.as_deref(),
        Some(renewed.encode().as_str())
    );
    let jobs = (0..3).map(|n| redq::NewJob::new(&n).unwrap()).collect();
    client.enqueue_many("q", jobs).await.unwrap();
    assert_eq!(handed_jobs(&redis, &q, "d1.0").await.len(), 2);
    assert_eq!(
        hget(&redis, q.idle(), "d1.0").await,
        None,
        "its slots are used"
    );
}

//! Payloads kept apart from their job records (job::PAYLOAD_APART_BYTES):
//! staged in the queue's `payloads` hash in the enqueue's transaction, read
//! by the daemon when the job starts, put back for every reader, and
//! deleted with the job. Against a private redis-server per test.

mod common;

use common::embedded::*;
use common::server::RedisServer;
use common::wait::within;
use redq::daemon::WorkerBuilder;
use redq::job::PAYLOAD_APART_BYTES;
use redq::store::EnqueueStatus;
use redq::{JobContext, NewJob, Outcome};
use tokio::sync::mpsc;

/// A JSON string payload of `len` bytes (quotes included) built from `seed`.
fn big(len: usize, seed: char) -> String {
    let body: String = (0..len - 2)
        .map(|i| char::from_u32(u32::from(seed) + (i % 20) as u32).unwrap_or('x'))
        .collect();
    format!("\"{body}\"")
}

fn job_of(payload: &str) -> NewJob {
    NewJob::from_json(payload).unwrap()
}

async fn hget(
    con: &mut redis::aio::MultiplexedConnection,
    key: &str,
    field: &str,
) -> Option<String> {
    redis::cmd("HGET")
        .arg(key)
        .arg(field)
        .query_async(con)
        .await
        .unwrap()
}

async fn exists(con: &mut redis::aio::MultiplexedConnection, key: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(key)
        .query_async(con)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_payload_is_kept_apart_and_reaches_the_handler_byte_for_byte() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let q = client.store().queue("q").unwrap();
    let mut con = redis.con().await;
    let small = r#"{"n":1}"#.to_owned();
    let large = big(64 * 1024, 'a');
    // Exactly at the threshold, an object with members in an order and
    // spacing a re-encoding would change.
    let pad = "x".repeat(PAYLOAD_APART_BYTES);
    let edge = format!("{{ \"z\": 1, \"a\": \"{pad}\" }}");
    let edge = edge[..].to_owned();
    let sent = [small.clone(), large.clone(), edge.clone()];
    let ids: Vec<String> = client
        .enqueue_many(
            "q",
            vec![
                job_of(&small),
                job_of(&large).tenant("t").priority(3),
                job_of(&edge),
            ],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();

    // The record of a big job holds its options, not its payload.
    let record = hget(&mut con, q.jobs(), &ids[1]).await.unwrap();
    assert!(record.len() < 200, "{record}");
    assert!(
        record.starts_with("3;0;") && record.contains(";@{"),
        "{record}"
    );
    assert!(record.contains(r#""tenant":"t""#), "{record}");
    assert_eq!(
        hget(&mut con, q.payloads(), &ids[1]).await,
        Some(large.clone())
    );
    assert_eq!(
        hget(&mut con, q.payloads(), &ids[2]).await,
        Some(edge.clone())
    );
    assert_eq!(
        hget(&mut con, q.payloads(), &ids[0]).await,
        None,
        "small stays inline"
    );

    // Readers get the job whole.
    let info = client.job("q", &ids[1]).await.unwrap().unwrap();
    assert_eq!(info.payload.get(), large);
    assert_eq!(info.tenant.as_deref(), Some("t"));

    let (tx, mut rx) = mpsc::unbounded_channel();
    let handler = move |ctx: JobContext| {
        let _ = tx.send(ctx.payload.get().to_owned());
        std::future::ready(Outcome::Done { result: None })
    };
    let d = launch(
        WorkerBuilder::new(config(&redis, "", &queue("q", "keep_completed = 0")))
            .handler("q", handler),
    )
    .await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(recv(&mut rx).await);
    }
    got.sort();
    let mut want = sent.to_vec();
    want.sort();
    assert!(got == want, "the handler saw other payloads");
    counter_reaches("succeeded", &d.counters, &d.counters.succeeded, 3).await;
    // Completion deleted the payloads with the records.
    assert!(!exists(&mut con, q.payloads()).await);
    assert!(!exists(&mut con, q.jobs()).await);
    d.stop().await;
}

#[tokio::test]
async fn a_staged_payload_stays_only_with_a_job_that_was_created() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let q = client.store().queue("q").unwrap();
    let mut con = redis.con().await;
    let (first, second) = (big(8000, 'a'), big(9000, 'k'));

    // The same id again: the first job and its payload stay as they were.
    let a = client.enqueue("q", job_of(&first).id("A")).await.unwrap();
    assert_eq!(a.status, EnqueueStatus::Created);
    let again = client.enqueue("q", job_of(&second).id("A")).await.unwrap();
    assert_eq!(again.status, EnqueueStatus::Exists);
    assert_eq!(hget(&mut con, q.payloads(), "A").await, Some(first.clone()));
    // Delayed jobs take the other path in the script: the same holds.
    let again = client
        .enqueue(
            "q",
            job_of(&second)
                .id("A")
                .delay(std::time::Duration::from_secs(60)),
        )
        .await
        .unwrap();
    assert_eq!(again.status, EnqueueStatus::Exists);
    assert_eq!(hget(&mut con, q.payloads(), "A").await, Some(first.clone()));

    // A small job, then a big one under its id: nothing is left staged.
    client.enqueue("q", job_of("1").id("B")).await.unwrap();
    let b = client.enqueue("q", job_of(&second).id("B")).await.unwrap();
    assert_eq!(b.status, EnqueueStatus::Exists);
    assert_eq!(hget(&mut con, q.payloads(), "B").await, None);

    // A live holder of the unique key wins; the newcomer's payload goes.
    client
        .enqueue("q", job_of(&first).id("C").unique_key("u"))
        .await
        .unwrap();
    let d = client
        .enqueue("q", job_of(&second).id("D").unique_key("u"))
        .await
        .unwrap();
    assert_eq!((d.status, d.id.as_str()), (EnqueueStatus::Duplicate, "C"));
    assert_eq!(hget(&mut con, q.payloads(), "D").await, None);
    assert_eq!(hget(&mut con, q.payloads(), "C").await, Some(first.clone()));

    // Cancelling a job deletes its payload.
    client
        .cancel("q", &["A".to_owned(), "C".to_owned()])
        .await
        .unwrap();
    assert!(!exists(&mut con, q.payloads()).await);
}

#[tokio::test]
async fn a_big_enqueue_loads_lost_functions_and_adds_its_job_once() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let q = client.store().queue("q").unwrap();
    let mut con = redis.con().await;
    client.enqueue("q", job_of("1")).await.unwrap();
    // Redis loses the libraries (a restart without persistence, a flush):
    // the first EXEC stages the payload and fails the call; the second
    // runs both again.
    redis::cmd("FUNCTION")
        .arg("FLUSH")
        .query_async::<()>(&mut con)
        .await
        .unwrap();
    let payload = big(10_000, 'a');
    let e = within(10, client.enqueue("q", job_of(&payload).id("X")))
        .await
        .unwrap();
    assert_eq!(e.status, EnqueueStatus::Created);
    assert_eq!(
        hget(&mut con, q.payloads(), "X").await,
        Some(payload.clone())
    );
    let info = client.job("q", "X").await.unwrap().unwrap();
    assert_eq!(info.payload.get(), payload);
    let stats = client.stats(&["q".to_owned()]).await.unwrap();
    assert_eq!(stats[0].pending, 2);
}

//! The producer protocol as a foreign client sees it: `redis-cli` calling
//! `FCALL redq_enqueue` and pushing JSON onto a queue's inbox.

mod common;

use std::time::Duration;

use common::producers::{fcall, fcall_bytes, fcall_reply};
use common::server::RedisServer;
use common::snapshot::{handed_jobs, snapshot};
use redq::job::{check_doc, JobDoc};
use redq::scripts::LibraryStatus;
use redq::store::HandoffOffer;
use redq::store::Store;

async fn setup() -> (RedisServer, redq::Client) {
    let redis = RedisServer::start();
    let client = redis.client().await;
    assert_eq!(
        client.ensure_library().await.unwrap(),
        LibraryStatus::Current
    );
    (redis, client)
}

async fn claim_all(store: &Store, queue: &str) -> Vec<redq::store::ClaimedJob> {
    store
        .claim(
            &store.queue(queue).unwrap(),
            1000,
            Duration::from_secs(30),
            1000,
            1000,
        )
        .await
        .unwrap()
        .jobs
}

/// A producer can call `FCALL redq_enqueue` before any daemon ran: the
/// first client that connected (a Rust program, `redq enqueue`) loaded it.
#[tokio::test]
async fn connecting_a_client_loads_the_library_for_fcall_producers() {
    let redis = RedisServer::start();
    let before = fcall_reply(&redis, "q", r#"{"payload":1}"#);
    assert!(before.contains("Function not found"), "{before}");
    let _client = redis.client().await;
    let id = fcall(&redis, "q", r#"{"payload":1}"#);
    assert_eq!(id.len(), 26, "{id}");
    // Loaded once: a second client finds it current and loads nothing.
    let loads = redis.command_calls("function|load").await;
    let _again = redis.client().await;
    assert_eq!(redis.command_calls("function|load").await, loads);
}

/// A client that may not load functions connects all the same.
#[tokio::test]
async fn a_client_whose_user_may_not_load_functions_connects() {
    let redis = RedisServer::start();
    redis
        .cli(&[
            "ACL",
            "SETUSER",
            "app",
            "on",
            ">pw",
            "~*",
            "&*",
            "+@all",
            "-function",
        ])
        .unwrap();
    let url = format!("redis://app:pw@127.0.0.1:{}", redis.port);
    let client = redq::Client::connect(&url, "redq").await.unwrap();
    assert!(fcall_reply(&redis, "q", r#"{"payload":1}"#).contains("Function not found"));
    // Its own enqueues run as EVALSHA scripts meanwhile.
    client
        .enqueue("q", redq::NewJob::new(&1).unwrap())
        .await
        .unwrap();
    assert!(redis.command_calls("evalsha").await >= 1);
}

#[tokio::test]
async fn the_library_loads_once_per_version() {
    let (redis, client) = setup().await;
    assert_eq!(
        client.ensure_library().await.unwrap(),
        LibraryStatus::Current
    );
    redis.cli(&["FUNCTION", "DELETE", "redq"]).unwrap();
    assert_eq!(
        client.ensure_library().await.unwrap(),
        LibraryStatus::Loaded
    );
    let version = redis.cli(&["FCALL_RO", "redq_version", "0"]).unwrap();
    assert_eq!(version.trim(), redq::scripts::library_version());
}

#[tokio::test]
async fn fcall_enqueues_and_the_payload_arrives_byte_for_byte() {
    let (redis, client) = setup().await;
    let doc =
        r#"{"payload":{"b":[],"x":1.50,"s":"a\/b","u":"\u00e9"},"priority":3,"tenant":"acme"}"#;
    let id = fcall(&redis, "emails", doc);
    // The Rust client's form: 26 base32 characters, sorting by time.
    assert_eq!(id.len(), 26, "{id}");
    assert!(id
        .bytes()
        .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()));
    // Its first 10 characters are Redis's time in ms, as in ids made here.
    let ms = |id: &str| {
        id[..10].bytes().fold(0u64, |n, b| {
            let d = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ"
                .iter()
                .position(|&c| c == b);
            n * 32 + d.expect("a base32 character") as u64
        })
    };
    let made_here = redq::job::new_id();
    assert!(
        ms(&id).abs_diff(ms(&made_here)) < 60_000,
        "{id} {made_here}"
    );
    let jobs = claim_all(client.store(), "emails").await;
    assert_eq!(jobs.len(), 1);
    let rec = jobs[0].record.as_ref().unwrap();
    assert_eq!(jobs[0].id, id);
    assert_eq!(
        rec.doc.payload.get(),
        r#"{"b":[],"x":1.50,"s":"a\/b","u":"\u00e9"}"#
    );
    assert_eq!((rec.priority, rec.doc.tenant.as_deref()), (3, Some("acme")));
}

#[tokio::test]
async fn fcall_ids_are_idempotent_unique_keys_dedupe_and_ids_differ() {
    let (redis, client) = setup().await;
    let a = fcall(&redis, "q", r#"{"payload":1,"id":"job-1"}"#);
    let b = fcall(&redis, "q", r#"{"payload":2,"id":"job-1"}"#);
    assert_eq!((a.as_str(), b.as_str()), ("job-1", "job-1"));
    let u1 = fcall(&redis, "q", r#"{"payload":1,"unique_key":"k"}"#);
    let u2 = fcall(&redis, "q", r#"{"payload":2,"unique_key":"k"}"#);
    assert_eq!(u1, u2);
    let ids: std::collections::HashSet<String> = (0..50)
        .map(|_| fcall(&redis, "q", r#"{"payload":0}"#))
        .collect();
    assert_eq!(ids.len(), 50);
    assert_eq!(client.stats(&["q".into()]).await.unwrap()[0].pending, 52);
}

#[tokio::test]
async fn fcall_refuses_bad_documents_naming_the_field_and_writes_nothing() {
    let (redis, client) = setup().await;
    let q = client.store().queue("q").unwrap();
    // A small limit, as a daemon with daemon.max_payload_bytes = 64 would set.
    redis
        .cli(&["HSET", q.meta(), "max_doc_bytes", "64"])
        .unwrap();
    let mut con = redis.con().await;
    let before = snapshot(&mut con, &q).await;
    let cases = [
        (r#"{"payload":1,"priority":1001}"#, "\"priority\""),
        (r#"{"payload":1,"priority":0x10}"#, "not valid JSON"),
        (r#"{"payload":1,"priority":"5"}"#, "\"priority\""),
        (r#"{"payload":1,"priority":1.5}"#, "\"priority\""),
        (r#"{"payload":1,"priority":1e400}"#, "\"priority\""),
        (r#"{"payload":1,"delay_ms":-1}"#, "\"delay_ms\""),
        (r#"{"payload":1,"delay_ms":5,"run_at":5}"#, "\"run_at\""),
        (r#"{"payload":1,"max_attempts":0}"#, "\"max_attempts\""),
        (r#"{"payload":1,"timeout_ms":0}"#, "\"timeout_ms\""),
        (r#"{"payload":1,"unique_key":""}"#, "\"unique_key\""),
        (r#"{"payload":1,"tenant":7}"#, "\"tenant\""),
        (r#"{"payload":1,"id":"a b"}"#, "\"id\""),
        (
            r#"{"payload":1,"colour":"red","zz":1}"#,
            "unknown field(s) \"colour\", \"zz\"",
        ),
        (r#"{"priority":1}"#, "\"payload\": required"),
        (r#"[1,2]"#, "JSON object"),
        (r#""just a string""#, "JSON object"),
        (r#"{"payload":"#, "not valid JSON"),
        (
            r#"{"payload":"0123456789012345678901234567890123456789012345678901234567890"}"#,
            "limit is 64 bytes",
        ),
    ];
    for (doc, expect) in cases {
        let out = fcall_reply(&redis, "q", doc);
        assert!(
            out.starts_with("ERR invalid job: ") && out.contains(expect),
            "{doc} -> {out}"
        );
    }
    let out = redis
        .cli(&["FCALL", "redq_enqueue", "1", "redq:q", r#"{"payload":1}"#])
        .unwrap();
    assert!(out.contains("<prefix>:{<queue>}"), "{out}");
    let out = redis
        .cli(&["FCALL", "redq_enqueue", "1", "redq:{q}"])
        .unwrap();
    assert!(out.contains("one argument"), "{out}");
    assert_eq!(snapshot(&mut con, &q).await, before);
}

#[tokio::test]
async fn inbox_documents_become_jobs_in_order_and_bad_ones_are_kept_with_the_reason() {
    let (redis, client) = setup().await;
    let q = client.store().queue("inq").unwrap();
    let docs = [
        r#"{"payload":{"n":1}}"#,
        r#"{"payload":{"n":2},"colour":"red"}"#,
        r#"{"payload":{"n":3},"delay_ms":3600000}"#,
        r#"not json"#,
        r#"{"payload":{"n":4},"id":"chosen"}"#,
    ];
    for d in docs {
        redis.cli(&["LPUSH", q.inbox(), d]).unwrap();
    }
    let jobs = claim_all(client.store(), "inq").await;
    let payloads: Vec<&str> = jobs
        .iter()
        .map(|j| j.record.as_ref().unwrap().doc.payload.get())
        .collect();
    assert_eq!(
        payloads,
        vec![r#"{"n":1}"#, r#"{"n":4}"#],
        "first in, first out"
    );
    assert_eq!(jobs[1].id, "chosen");
    let s = snapshot(&mut redis.con().await, &q).await;
    assert!(s.lists["inbox"].is_empty());
    assert_eq!(s.sets["scheduled"].len(), 1, "the delayed one waits");
    let rejected: Vec<serde_json::Value> = s.lists["rejected"]
        .iter()
        .map(|r| serde_json::from_str(r).unwrap())
        .collect();
    assert_eq!(rejected.len(), 2, "nothing is dropped");
    assert_eq!(rejected[1]["document"], docs[1]);
    assert!(rejected[1]["reason"]
        .as_str()
        .unwrap()
        .contains("\"colour\""));
    assert_eq!(rejected[0]["document"], docs[3]);
    assert!(rejected[0]["reason"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));
    assert_eq!(client.stats(&["inq".into()]).await.unwrap()[0].rejected, 2);
}

#[tokio::test]
async fn the_inbox_is_drained_in_bounded_batches() {
    let (redis, client) = setup().await;
    let store = client.store();
    let q = store.queue("big").unwrap();
    let mut args = vec!["LPUSH".to_owned(), q.inbox().to_owned()];
    args.extend((0..250).map(|n| format!(r#"{{"payload":{n}}}"#)));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    redis.cli(&args).unwrap();
    let got = store
        .claim(&q, 0, Duration::from_secs(30), 0, 100)
        .await
        .unwrap();
    assert!(got.jobs.is_empty());
    let s = &client.stats(&["big".into()]).await.unwrap()[0];
    assert_eq!((s.inbox, s.pending), (150, 100));
}

/// The Rust rules and the Lua rules must agree on every document.
#[tokio::test]
async fn rust_and_lua_agree_on_what_is_valid() {
    let (redis, _client) = setup().await;
    let docs = [
        r#"{"payload":null}"#,
        r#"{"payload":1,"priority":-1000}"#,
        r#"{"payload":1,"priority":-1001}"#,
        r#"{"payload":1,"priority":1000}"#,
        r#"{"payload":1,"max_attempts":1000}"#,
        r#"{"payload":1,"max_attempts":1001}"#,
        r#"{"payload":1,"delay_ms":315360000000}"#,
        r#"{"payload":1,"delay_ms":315360000001}"#,
        r#"{"payload":1,"timeout_ms":604800000}"#,
        r#"{"payload":1,"timeout_ms":604800001}"#,
        r#"{"payload":1,"tenant":"t","group":"g","unique_key":"u"}"#,
        r#"{"payload":1,"id":"ok-id_1.2:3"}"#,
        r#"{"payload":1,"id":"no/slash"}"#,
        r#"{"payload":1,"extra":1}"#,
        r#"{"payload":1,"priority":null}"#,
    ];
    for doc in docs {
        let rust_ok = serde_json::from_str::<JobDoc>(doc)
            .map_err(|e| e.to_string())
            .and_then(|d| check_doc(&d).map_err(|e| e.to_string()));
        let lua = fcall_reply(&redis, "agree", doc);
        assert_eq!(
            rust_ok.is_ok(),
            !lua.starts_with("ERR"),
            "{doc}: rust {rust_ok:?}, lua {lua}"
        );
    }
}

#[tokio::test]
async fn documents_that_are_not_utf8_are_refused_like_the_rust_side_does() {
    let (redis, client) = setup().await;
    let bad: [&[u8]; 6] = [
        b"{\"payload\":\"\xc3\x28\"}", // a lead byte without its continuation
        b"{\"payload\":\"\xc0\xaf\"}", // an overlong form of '/'
        b"{\"payload\":\"\xed\xa0\x80\"}", // a UTF-16 surrogate
        b"{\"payload\":\"\xf4\x90\x80\x80\"}", // past U+10FFFF
        b"{\"payload\":\"ok\",\"tenant\":\"\xff\"}",
        b"{\"payload\":\"cut \xe2\x9c\"}",
    ];
    for doc in bad {
        assert!(
            serde_json::from_slice::<JobDoc>(doc).is_err(),
            "Rust refuses {doc:?}"
        );
        let err = fcall_bytes(&redis, "utf", doc).await.unwrap_err();
        assert!(err.contains("not valid UTF-8"), "{doc:?}: {err}");
    }
    let good = "{\"payload\":\"h\u{e9}llo \u{2713} \u{1f389} \u{10ffff}\"}".as_bytes();
    assert!(serde_json::from_slice::<JobDoc>(good).is_ok());
    fcall_bytes(&redis, "utf", good).await.unwrap();
    // From the inbox, a document that is not UTF-8 is kept aside with the reason.
    let q = client.store().queue("utf").unwrap();
    let _: () = redis::cmd("LPUSH")
        .arg(q.inbox())
        .arg(bad[0])
        .query_async(&mut redis.con().await)
        .await
        .unwrap();
    let jobs = claim_all(client.store(), "utf").await;
    assert_eq!(jobs.len(), 1, "only the good one");
    let rejected: Vec<Vec<u8>> = redis::cmd("LRANGE")
        .arg(q.rejected())
        .arg(0)
        .arg(-1)
        .query_async(&mut redis.con().await)
        .await
        .unwrap();
    assert_eq!(rejected.len(), 1);
    let text = String::from_utf8_lossy(&rejected[0]);
    assert!(text.contains("not valid UTF-8"), "{text}");
}

/// A record written straight into Redis, past every check, larger than the
/// queue's document limit: at the head of the pending jobs, ahead of `next`.
async fn plant_oversize(redis: &RedisServer, q: &redq::keys::QueueKeys, limit: usize) -> String {
    let mut con = redis.con().await;
    let _: () = redis::cmd("HSET")
        .arg(q.meta())
        .arg("max_doc_bytes")
        .arg(limit)
        .query_async(&mut con)
        .await
        .unwrap();
    let doc = format!(r#"{{"payload":"{}"}}"#, "x".repeat(limit * 5));
    let _: () = redis::cmd("HSET")
        .arg(q.jobs())
        .arg("huge")
        .arg(format!("0;0;1700000000000;{doc}"))
        .query_async(&mut con)
        .await
        .unwrap();
    let _: () = redis::pipe()
        .cmd("LPUSH")
        .arg(q.pending_list("0"))
        .arg("huge")
        .ignore()
        .cmd("ZADD")
        .arg(q.pending())
        .arg(0)
        .arg("0")
        .ignore()
        .query_async(&mut con)
        .await
        .unwrap();
    doc.len().to_string()
}

#[tokio::test]
async fn a_record_over_the_document_limit_goes_dead_unread_at_claim_and_hand_off() {
    let (redis, client) = setup().await;
    let store = client.store();
    let q = store.queue("big").unwrap();
    let limit = 10_000;

    // Claimed: the record is not handed out, the job behind it is.
    fcall(&redis, "big", r#"{"payload":"small","id":"next"}"#);
    let bytes = plant_oversize(&redis, &q, limit).await;
    let jobs = claim_all(store, "big").await;
    let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, ["next"]);
    let info = client.job("big", "huge").await.unwrap().unwrap();
    assert_eq!(info.state, redq::inspect::JobState::Dead);
    let error = info.last_error.unwrap();
    assert!(
        error.contains(&format!("{bytes} bytes")) && error.contains("limit is 10000"),
        "{error}"
    );

    // Handed off to an idle daemon by an enqueue (a client's: FCALL
    // redq_enqueue hands off only the job it creates, into an empty
    // queue): the same.
    let _: () = redis::cmd("DEL")
        .arg(q.dead())
        .arg(q.jobs())
        .query_async(&mut redis.con().await)
        .await
        .unwrap();
    let lease = Duration::from_secs(30);
    let got = store
        .claim_as(
            &q,
            4,
            lease,
            0,
            0,
            Some(HandoffOffer {
                name: "d1.0",
                ttl: Duration::from_secs(60),
            }),
        )
        .await
        .unwrap();
    assert!(got.jobs.is_empty());
    plant_oversize(&redis, &q, limit).await;
    let after = redq::NewJob::new(&"small").unwrap().id("after");
    client.enqueue("big", after).await.unwrap();
    let handed = handed_jobs(&redis, &q, "d1.0").await;
    let ids: Vec<String> = handed.into_iter().map(|j| j.id).collect();
    assert_eq!(ids, ["after"]);
    let info = client.job("big", "huge").await.unwrap().unwrap();
    assert_eq!(info.state, redq::inspect::JobState::Dead);
}

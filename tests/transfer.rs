//! `redq export` and `redq import`: a round trip keeps every job as it was.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::process::{self, run_bounded, run_with_input, Out};
use common::server::RedisServer;
use common::wait::secs;
use redq::store::{Completion, Failure, Retention};
use redq::NewJob;
use serde_json::{json, Value};

/// `redq --redis-url <url> <args>`, with a clean environment.
fn redq(url: &str, args: &[&str]) -> Command {
    let mut c = process::redq();
    c.arg("--redis-url").arg(url).args(args);
    c
}

/// Runs `redq export q` (bounded).
fn export(url: &str) -> Out {
    run_bounded(&mut redq(url, &["export", "q"]), secs(30))
}

/// Runs `redq import q` with `input` on standard input (bounded).
fn import(url: &str, input: &str) -> Out {
    run_with_input(
        &mut redq(url, &["import", "q"]),
        Some(input.as_bytes()),
        secs(30),
    )
}

fn by_id(text: &str) -> BTreeMap<String, Value> {
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| (v["id"].as_str().unwrap().to_owned(), v))
        .collect()
}

#[tokio::test]
async fn export_then_import_restores_every_job_in_its_state() {
    let src = RedisServer::start();
    let client = src.client().await;
    let store = client.store();
    let q = store.queue("q").unwrap();
    let job = |n: i64| NewJob::new(&json!({ "n": n, "list": [] })).unwrap();
    client
        .enqueue("q", job(2).delay(Duration::from_secs(3600)).id("later"))
        .await
        .unwrap();
    client
        .enqueue_many(
            "q",
            vec![
                job(3).id("will-retry"),
                job(4).id("will-die"),
                job(5).id("will-succeed"),
                job(6).id("is-active"),
            ],
        )
        .await
        .unwrap();
    let claimed = store
        .claim(&q, 10, Duration::from_secs(60), 0, 0)
        .await
        .unwrap()
        .jobs;
    let fence = |id: &str| claimed.iter().find(|j| j.id == id).unwrap().fence;
    let dead = Retention {
        keep: 100,
        max_age: Duration::ZERO,
    };
    let retry = Failure {
        id: "will-retry",
        fence: fence("will-retry"),
        retry_in: Some(Duration::from_secs(600)),
        error: "try later",
        unique_key: None,
        outcome_ttl: None,
    };
    let die = Failure {
        id: "will-die",
        fence: fence("will-die"),
        retry_in: None,
        error: "bad",
        unique_key: None,
        outcome_ttl: None,
    };
    store.fail(&q, &[retry, die], dead).await.unwrap();
    let ok = Completion {
        id: "will-succeed",
        fence: fence("will-succeed"),
        unique_key: None,
        result: Some("fine"),
        outcome_ttl: None,
    };
    store
        .complete(
            &q,
            &[ok],
            Retention {
                keep: 10,
                max_age: Duration::ZERO,
            },
        )
        .await
        .unwrap();
    client
        .enqueue("q", job(1).priority(7).id("pending-1").unique_key("u1"))
        .await
        .unwrap();

    let out = export(&src.url());
    assert!(out.code == Some(0), "{}", out.stderr);
    let exported = out.stdout;
    let before = by_id(&exported);
    assert_eq!(before.len(), 6);
    let states: BTreeMap<&str, &str> = before
        .iter()
        .map(|(k, v)| (k.as_str(), v["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states["later"], "scheduled");
    assert_eq!(states["will-retry"], "retrying");
    assert_eq!(states["will-die"], "dead");
    assert_eq!(states["will-succeed"], "succeeded");
    assert_eq!(states["is-active"], "active");
    assert_eq!(before["pending-1"]["priority"], 7);
    assert_eq!(before["will-retry"]["attempts"], 1);
    assert_eq!(states["pending-1"], "pending");
    assert_eq!(
        before["pending-1"]["document"]["payload"]["list"],
        json!([])
    );

    let dst = RedisServer::start();
    let out = import(&dst.url(), &exported);
    assert!(out.code == Some(0), "{}", out.stdout);
    assert!(out.stdout.contains("imported 6 jobs"));

    let again = export(&dst.url());
    let after = by_id(&again.stdout);
    for (id, mut v) in before {
        if id == "is-active" {
            // A lease cannot move between servers: it comes back pending, attempts kept.
            assert_eq!(after[&id]["state"], "pending");
            assert_eq!(after[&id]["attempts"], 1);
            v["state"] = json!("pending");
            v.as_object_mut().unwrap().remove("at_ms");
        }
        assert_eq!(after[&id], v, "{id}");
    }
    // Importing the same file again changes nothing.
    let out = import(&dst.url(), &exported);
    assert!(out.stdout.contains("imported 0 jobs into q; skipped 6"));
    // The unique key came back with the live job.
    let dup = dst
        .client()
        .await
        .enqueue("q", job(9).unique_key("u1"))
        .await
        .unwrap();
    assert_eq!(dup.id, "pending-1");
    // Import runs as a function of the internal library, not as a script.
    assert!(dst.command_calls("fcall").await >= 2);
    assert_eq!(dst.command_calls("evalsha").await, 0);
    assert_eq!(dst.command_calls("eval").await, 0);
}

#[test]
fn bad_lines_are_refused_by_number_and_the_rest_imported() {
    let dst = RedisServer::start();
    let good = r#"{"id":"a","state":"pending","priority":0,"max_attempts":0,"attempts":0,"enqueued_at_ms":1,"document":{"payload":1}}"#;
    let input = format!("{good}\nnot json\n{}\n", good.replace("\"a\"", "\"b c\""));
    let out = import(&dst.url(), &input);
    assert_eq!(out.code, Some(1));
    let err = &out.stderr;
    assert!(
        err.contains("line 2") && err.contains("line 3") && err.contains("\"id\""),
        "{err}"
    );
    assert!(out.stdout.contains("imported 1 jobs"));
}

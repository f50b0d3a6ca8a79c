//! `redq jobs`: a queue's jobs listed by state, in pages, filtered by
//! tenant and group, through the library and the CLI.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use redq::inspect::{ListQuery, ListState, Order};
use redq::job::NewJob;
use redq::store::Retention;

use common::process::{redq, run_bounded};
use common::server::RedisServer;
use common::store::{claim, completions, failure, DEAD};
use common::wait::secs;

fn job(n: usize) -> NewJob {
    NewJob::from_json(&format!("{{\"n\":{n}}}"))
        .unwrap()
        .id(format!("j{n:03}"))
}

/// Every page of `state` with `limit` per page, through the library: the
/// ids in order.
async fn all_pages(
    client: &redq::Client,
    queue: &str,
    state: ListState,
    mut query: ListQuery,
) -> (Vec<String>, usize) {
    let mut ids = Vec::new();
    let mut pages = 0;
    loop {
        let page = client.list_jobs(queue, state, &query).await.unwrap();
        pages += 1;
        assert!(
            page.jobs.len() <= query.limit,
            "a page holds at most its limit"
        );
        ids.extend(page.jobs.iter().map(|j| j.id.clone()));
        match page.next {
            Some(next) => query.after = Some(next),
            None => return (ids, pages),
        }
        assert!(pages < 100, "paging never ends");
    }
}

#[tokio::test]
async fn every_state_is_listed_in_its_order_page_by_page() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let store = redq::store::Store::connect(&redis.url(), "redq")
        .await
        .unwrap();
    let q = store.queue("mail").unwrap();
    // 30 pending jobs over three priorities, enqueued in id order.
    for n in 0..30 {
        let p = [0, 5, -3][n % 3];
        client.enqueue("mail", job(n).priority(p)).await.unwrap();
    }
    let query = ListQuery {
        limit: 7,
        ..Default::default()
    };
    let (pending, pages) = all_pages(&client, "mail", ListState::Pending, query.clone()).await;
    assert_eq!(pages, 5, "30 jobs at 7 a page");
    // Claim order: priority 5 first, then 0, then −3; first in, first out within each.
    let expected: Vec<String> = [1, 0, 2]
        .iter()
        .flat_map(|r| {
            (0..30)
                .filter(move |n| n % 3 == *r)
                .map(|n| format!("j{n:03}"))
        })
        .collect();
    assert_eq!(pending, expected);
    // What a claim takes is what the listing said comes first.
    let claimed = claim(&store, "mail", 4).await;
    let first: Vec<&str> = claimed.jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(
        first,
        expected[..4].iter().map(String::as_str).collect::<Vec<_>>()
    );
    let (active, _) = all_pages(&client, "mail", ListState::Active, query.clone()).await;
    assert_eq!(
        active.iter().collect::<BTreeSet<_>>(),
        first
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .iter()
            .collect()
    );
    let (pending, _) = all_pages(&client, "mail", ListState::Pending, query.clone()).await;
    assert_eq!(pending, expected[4..]);
    // Two succeed (kept), one fails for good, one is retried later.
    let keep = Retention {
        keep: 100,
        max_age: Duration::ZERO,
    };
    store
        .complete(&q, &completions(&claimed.jobs[..2]), keep)
        .await
        .unwrap();
    store
        .fail(
            &q,
            &[
                failure(&claimed.jobs[2], None, "boom"),
                failure(&claimed.jobs[3], Some(Duration::from_secs(3600)), "later"),
            ],
            DEAD,
        )
        .await
        .unwrap();
    let (done, _) = all_pages(&client, "mail", ListState::Succeeded, query.clone()).await;
    assert_eq!(done.len(), 2);
    let (dead, _) = all_pages(&client, "mail", ListState::Dead, query.clone()).await;
    assert_eq!(dead, vec![expected[2].clone()]);
    // Scheduled: the retry and delayed jobs, soonest first; --newest reverses.
    client
        .enqueue("mail", job(100).delay(Duration::from_secs(60)))
        .await
        .unwrap();
    client
        .enqueue("mail", job(101).delay(Duration::from_secs(30)))
        .await
        .unwrap();
    let (scheduled, _) = all_pages(&client, "mail", ListState::Scheduled, query.clone()).await;
    assert_eq!(
        scheduled,
        vec!["j101".to_owned(), "j100".into(), expected[3].clone()]
    );
    let newest = ListQuery {
        order: Order::Newest,
        ..query.clone()
    };
    let (reversed, _) = all_pages(&client, "mail", ListState::Scheduled, newest).await;
    assert_eq!(
        reversed,
        vec![expected[3].clone(), "j100".into(), "j101".into()]
    );
    // Each listed job carries its details.
    let page = client
        .list_jobs("mail", ListState::Dead, &query)
        .await
        .unwrap();
    assert_eq!(page.jobs[0].last_error.as_deref(), Some("boom"));
}

#[tokio::test]
async fn filters_bound_what_one_page_reads_and_say_where_to_go_on() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    // 12 000 jobs of tenant "a" first, then 3 of tenant "b".
    let batch: Vec<NewJob> = (0..12_000)
        .map(|n| job(n).tenant("a"))
        .chain((0..3).map(|n| job(20_000 + n).tenant("b").group("g")))
        .collect();
    for chunk in batch.chunks(1000) {
        client.enqueue_many("big", chunk.to_vec()).await.unwrap();
    }
    let query = ListQuery {
        limit: 10,
        tenant: Some("b".into()),
        ..Default::default()
    };
    let first = client
        .list_jobs("big", ListState::Pending, &query)
        .await
        .unwrap();
    // Tenant b's jobs lie past what one page may read: a short page and
    // a cursor, not a scan of the whole queue.
    assert!(first.jobs.is_empty(), "{:?}", first.jobs.len());
    assert!(first.next.is_some());
    let (ids, pages) = all_pages(&client, "big", ListState::Pending, query.clone()).await;
    assert_eq!(ids, vec!["j20000", "j20001", "j20002"]);
    assert!(pages >= 3, "{pages} pages");
    let by_group = ListQuery {
        tenant: None,
        group: Some("g".into()),
        ..query
    };
    let (ids, _) = all_pages(&client, "big", ListState::Pending, by_group).await;
    assert_eq!(ids.len(), 3);
}

fn cli(url: &str, args: &[&str]) -> common::process::Out {
    run_bounded(redq().args(["--redis-url", url]).args(args), secs(20))
}

#[tokio::test]
async fn the_cli_pages_with_a_cursor_and_refuses_bad_input() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    for n in 0..5 {
        client.enqueue("web", job(n)).await.unwrap();
    }
    let url = redis.url();
    let o = cli(
        &url,
        &[
            "jobs", "web", "--state", "pending", "--limit", "3", "--json",
        ],
    );
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let page: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(page["jobs"].as_array().unwrap().len(), 3);
    assert_eq!(page["jobs"][0]["id"], "j000");
    assert_eq!(page["jobs"][0]["state"], "pending");
    let next = page["next"].as_str().expect("a next cursor").to_owned();
    let o = cli(
        &url,
        &["jobs", "web", "--state", "pending", "--after", &next],
    );
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", o.stdout);
    assert!(lines[0].starts_with("j003\tpending"), "{}", o.stdout);
    // Bad input names the problem.
    let o = cli(&url, &["jobs", "web", "--state", "running"]);
    assert_eq!(o.code, Some(2), "{}", o.stderr);
    assert!(
        o.stderr
            .contains("expected pending, scheduled, active, dead or succeeded"),
        "{}",
        o.stderr
    );
    let o = cli(&url, &["jobs", "web", "--state", "dead", "--after", "zz"]);
    assert_ne!(o.code, Some(0));
    assert!(o.stderr.contains("cursor \"zz\""), "{}", o.stderr);
    let o = cli(&url, &["jobs", "web", "--state", "dead", "--limit", "0"]);
    assert_ne!(o.code, Some(0));
    assert!(o.stderr.contains("1-1000"), "{}", o.stderr);
    let o = cli(&url, &["jobs", "web", "--state", "dead"]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(o.stderr.contains("no dead jobs in web"), "{}", o.stderr);
}

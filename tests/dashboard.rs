//! `redq dashboard` over HTTP against a seeded private redis-server: every
//! page renders what Redis holds, values from Redis come out escaped, GET
//! never writes, actions are POST with a CSRF token and change Redis, bad
//! input is a 4xx page, and the listener refuses to be public without a
//! token. The last test drives the pages in headless Chromium.

mod common;

use std::time::Duration;

use redq::dashboard::{self, Options};
use redq::store::{Beat, RateDelta, Store};
use reqwest::redirect::Policy;
use reqwest::StatusCode;
use tokio_util::sync::CancellationToken;

use common::browser::Browser;
use common::process::{redq, run_bounded};
use common::server::RedisServer;
use common::store::{claim, failure, DEAD};

/// A payload a hostile producer could send.
const XSS_PAYLOAD: &str = r#"{"html":"<script>alert('pwned')</script>"}"#;
/// A handler error that is markup.
const XSS_ERROR: &str = "<img src=x onerror=alert(1)>";
const DEAD_IDS: [&str; 3] = ["dead-1", "dead-2", "dead-3"];

/// A dashboard served in-process over a seeded Redis.
struct Board {
    base: String,
    http: reqwest::Client,
    store: Store,
    server: RedisServer,
    stop: CancellationToken,
}

impl Drop for Board {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Board {
    async fn get(&self, path: &str) -> (StatusCode, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }

    async fn post(&self, path: &str, form: &str, origin: Option<&str>) -> reqwest::Response {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.to_owned());
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        req.send().await.unwrap()
    }

    /// The CSRF token the queue page's forms carry.
    async fn csrf(&self) -> String {
        let (_, page) = self.get("/queues/reports").await;
        let at = page
            .find("name=\"csrf\" value=\"")
            .expect("a form with a token")
            + 19;
        page[at..at + 32].to_owned()
    }

    /// Writes Redis has counted (`rdb_changes_since_last_save`).
    async fn writes(&self) -> u64 {
        self.server.info("persistence").await["rdb_changes_since_last_save"]
            .parse()
            .unwrap()
    }

    async fn paused(&self, queue: &str) -> bool {
        let q = self.store.queue(queue).unwrap();
        redq::inspect::stats(&self.store, &[q]).await.unwrap()[0].paused
    }

    async fn dead(&self, queue: &str) -> u64 {
        let q = self.store.queue(queue).unwrap();
        redq::inspect::stats(&self.store, &[q]).await.unwrap()[0].dead
    }
}

/// Queues `emails` (3 pending, one with [`XSS_PAYLOAD`], one scheduled) and
/// `reports` (the dead [`DEAD_IDS`], their error [`XSS_ERROR`]); a daemon's
/// heartbeat, rate buckets, usage of two tenants, a cron record.
async fn seed(server: &RedisServer) -> Store {
    let client = server.client().await;
    client
        .enqueue(
            "emails",
            redq::NewJob::from_json(XSS_PAYLOAD)
                .unwrap()
                .id("xss")
                .tenant("acme"),
        )
        .await
        .unwrap();
    for i in 0..2 {
        let job = redq::NewJob::new(&serde_json::json!({ "n": i })).unwrap();
        client.enqueue("emails", job).await.unwrap();
    }
    let later = redq::NewJob::new(&serde_json::json!({}))
        .unwrap()
        .delay(Duration::from_secs(3600));
    client.enqueue("emails", later).await.unwrap();
    for id in DEAD_IDS {
        let job = redq::NewJob::new(&serde_json::json!({ "report": id }))
            .unwrap()
            .id(id);
        client.enqueue("reports", job).await.unwrap();
    }
    let store = client.store().clone();
    let reports = store.queue("reports").unwrap();
    let claimed = claim(&store, "reports", 10).await;
    let failed: Vec<_> = claimed
        .jobs
        .iter()
        .map(|j| failure(j, None, XSS_ERROR))
        .collect();
    store.fail(&reports, &failed, DEAD).await.unwrap();

    let now = store.time_ms().await.unwrap();
    let queues = vec!["emails".to_owned(), "reports".to_owned()];
    store
        .beat(&Beat {
            id: "daemon-under-test",
            hostname: "host-<b>1</b>",
            pid: 4242,
            version: "0.1.0",
            started_at_ms: now - 60_000,
            queues: &queues,
            running: 2,
            keep: Duration::from_secs(60),
        })
        .await
        .unwrap();
    let emails = store.queue("emails").unwrap();
    let runs = [0u64, 0, 4, 30, 60, 20, 5, 1];
    let waits = [10u64, 80, 20, 8, 1, 1, 0, 0];
    let delta = RateDelta {
        keys: &emails,
        succeeded: 120,
        failed: 7,
        runs: &runs,
        waits: &waits,
    };
    store
        .add_rates(now, &[delta], Duration::from_secs(7200))
        .await
        .unwrap();
    // An hour of history for the chart (and the README's screenshots).
    for m in 1..60u64 {
        let delta = RateDelta {
            keys: &emails,
            succeeded: 40 + (m * 37) % 50,
            failed: (m * 7) % 9,
            runs: &runs,
            waits: &waits,
        };
        let at = now - 60_000 * m as i64;
        store
            .add_rates(at, &[delta], Duration::from_secs(7200))
            .await
            .unwrap();
    }
    let day = redq::usage::Day::today().to_string();
    let mut con = server.con().await;
    let _: () = redis::cmd("HSET")
        .arg(emails.usage_day(&day))
        .arg(redq::usage::field(Some("acme"), "jobs"))
        .arg(5)
        .arg(redq::usage::field(Some("acme"), "tokens"))
        .arg(1200)
        .arg(redq::usage::field(Some("<i>t</i>"), "jobs"))
        .arg(2)
        .query_async(&mut con)
        .await
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg(emails.cron())
        .arg("nightly")
        .arg(1_700_000_000_000i64)
        .query_async(&mut con)
        .await
        .unwrap();
    store
}

fn options() -> Options {
    let cron = redq::config::read_str(
        "[[cron]]\nname = \"nightly\"\nschedule = \"0 0 3 * * *\"\nqueue = \"emails\"\n",
    )
    .unwrap()
    .cron;
    Options {
        cron: Ok(cron),
        ..Options::default()
    }
}

async fn board_with(opts: Options) -> Board {
    let server = RedisServer::start();
    let store = seed(&server).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    tokio::spawn(dashboard::serve(
        listener,
        store.clone(),
        opts,
        stop.clone(),
    ));
    let http = reqwest::Client::builder()
        .redirect(Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    Board {
        base,
        http,
        store,
        server,
        stop,
    }
}

async fn board() -> Board {
    board_with(options()).await
}

#[tokio::test]
async fn every_page_shows_what_redis_holds() {
    let b = board().await;
    let (code, page) = b.get("/").await;
    assert_eq!(code, StatusCode::OK, "{page}");
    for want in [
        "href=\"/queues/emails\"",
        "href=\"/queues/reports\"",
        "data-live=\"emails.pending\">3<",
        "data-live=\"emails.scheduled\">1<",
        "data-live=\"reports.dead\">3<",
        "<svg class=\"chart\"",
        "120 succeeded",
        "<th>wait p50</th>",
        "data-live=\"emails.wp50\">≤",
        "data-live=\"emails.p99\">≤",
    ] {
        assert!(page.contains(want), "overview lacks {want:?}:\n{page}");
    }

    let (code, page) = b.get("/queues/reports").await;
    assert_eq!(code, StatusCode::OK);
    for want in DEAD_IDS
        .iter()
        .map(|id| format!("href=\"/queues/reports/jobs/{id}\""))
        .chain([
            "action=\"/queues/reports/pause\"".to_owned(),
            "id=\"jobs-by-state\"".to_owned(),
            "Dead jobs (3)".to_owned(),
        ])
    {
        assert!(page.contains(&want), "queue page lacks {want:?}:\n{page}");
    }

    let (code, page) = b.get("/queues/emails/jobs/xss").await;
    assert_eq!(code, StatusCode::OK);
    assert!(
        page.contains("state-pending") && page.contains("acme"),
        "{page}"
    );

    let (code, page) = b.get("/queues/reports/jobs/dead-1").await;
    assert_eq!(code, StatusCode::OK);
    assert!(
        page.contains("state-dead") && page.contains("Last error"),
        "{page}"
    );
    // Its failed attempt, from the job's history (the seed failed it once).
    assert!(
        page.contains("Failed attempts") && page.contains("id=\"attempts\""),
        "{page}"
    );

    let (code, page) = b.get("/daemons").await;
    assert_eq!(code, StatusCode::OK);
    for want in ["daemon-under-test", "4242", "0.1.0", "alive"] {
        assert!(page.contains(want), "daemons page lacks {want:?}:\n{page}");
    }

    let (code, page) = b.get("/cron").await;
    assert_eq!(code, StatusCode::OK);
    for want in ["nightly", "0 0 3 * * *", "2023-11-14T22:13:20Z"] {
        assert!(page.contains(want), "cron page lacks {want:?}:\n{page}");
    }

    let (code, page) = b.get("/usage").await;
    assert_eq!(code, StatusCode::OK);
    for want in ["acme", "tokens 1200", "<svg class=\"chart\""] {
        assert!(page.contains(want), "usage page lacks {want:?}:\n{page}");
    }

    let (code, page) = b.get("/api/summary").await;
    assert_eq!(code, StatusCode::OK);
    let summary: serde_json::Value = serde_json::from_str(&page).unwrap();
    let emails = summary["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "emails")
        .unwrap();
    assert_eq!(emails["pending"], 3);

    for (path, kind) in [
        ("/assets/app.css", "text/css"),
        ("/assets/app.js", "text/javascript"),
        ("/charts/rates.svg?queue=emails", "image/svg+xml"),
    ] {
        let r = b
            .http
            .get(format!("{}{path}", b.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.starts_with(kind), "{path}: {ct}");
    }
}

#[tokio::test]
async fn values_from_redis_are_escaped() {
    let b = board().await;
    let (_, job) = b.get("/queues/emails/jobs/xss").await;
    assert!(!job.contains("<script>alert"), "{job}");
    assert!(
        job.contains("&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;"),
        "{job}"
    );
    let (_, queue) = b.get("/queues/reports").await;
    assert!(!queue.contains(XSS_ERROR), "{queue}");
    assert!(
        queue.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{queue}"
    );
    let (_, daemons) = b.get("/daemons").await;
    assert!(daemons.contains("host-&lt;b&gt;1&lt;/b&gt;"), "{daemons}");
    let (_, usage) = b.get("/usage").await;
    assert!(
        !usage.contains("<i>t</i>") && usage.contains("&lt;i&gt;t&lt;/i&gt;"),
        "{usage}"
    );
}

#[tokio::test]
async fn redact_payloads_hides_payloads() {
    let b = board_with(Options {
        redact_payloads: true,
        ..options()
    })
    .await;
    let (_, job) = b.get("/queues/emails/jobs/xss").await;
    assert!(
        !job.contains("pwned") && job.contains("--redact-payloads"),
        "{job}"
    );
}

/// Every GET the dashboard serves, and nonsense besides.
const GETS: &[&str] = &[
    "/",
    "/queues/emails",
    "/queues/reports?page=1",
    "/queues/emails/jobs/xss",
    "/queues/emails/jobs?state=active",
    "/queues/emails/jobs?state=dead",
    "/daemons",
    "/cron",
    "/usage?days=30",
    "/api/summary",
    "/charts/rates.svg",
    "/lookup?queue=emails&id=xss",
    "/queues/reports/pause",
    "/queues/reports/dead/retry?all=1",
];

/// Bad names, ids and query strings: each answered 4xx (or a page), never 5xx.
const NONSENSE: &[&str] = &[
    "/queues/bad%20name",
    "/queues/%00",
    "/queues/a%2Fb",
    "/queues/%3Cscript%3E/jobs/x",
    "/queues/emails/jobs/%3Cscript%3Ealert(1)%3C%2Fscript%3E",
    "/queues/emails/jobs/nope",
    "/queues/emails?page=-1",
    "/queues/emails?page=99999999999999999999999",
    "/queues/emails?done=%3Cscript%3E",
    "/queues/emails/jobs?state=%3Cx%3E",
    "/usage?days=abc",
    "/usage?days=-5",
    "/lookup?queue=%ZZ&id=",
    "/lookup",
    "/charts/rates.svg?queue=%FF",
    "/nowhere?%%%=&&==",
];

#[tokio::test]
async fn gets_never_write_and_bad_input_is_a_4xx_page() {
    let b = board().await;
    let long = format!("/queues/{}", "q".repeat(5000));
    let before = b.writes().await;
    for path in GETS.iter().chain(NONSENSE).copied().chain([long.as_str()]) {
        let (code, body) = b.get(path).await;
        assert!(!code.is_server_error(), "{path}: {code} {body}");
        assert!(
            !body.contains("<script>a") && !body.contains("<x>"),
            "{path}: {body}"
        );
    }
    assert_eq!(b.writes().await, before, "a GET wrote to Redis");
    assert!(!b.paused("reports").await);
    assert_eq!(b.dead("reports").await, 3);
    // The dashboard still answers.
    assert_eq!(b.get("/").await.0, StatusCode::OK);
}

#[tokio::test]
async fn actions_are_posts_with_a_csrf_token_that_change_redis() {
    let b = board().await;
    let token = b.csrf().await;
    let csrf = format!("csrf={token}");

    let r = b.post("/queues/reports/pause", &csrf, None).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(r.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with("/queues/reports?done=Paused"));
    assert!(b.paused("reports").await);
    let (_, page) = b.get("/queues/reports").await;
    assert!(page.contains("action=\"/queues/reports/resume\""), "{page}");

    let r = b.post("/queues/reports/resume", &csrf, None).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(!b.paused("reports").await);

    let r = b
        .post(
            "/queues/reports/dead/retry",
            &format!("{csrf}&id=dead-1"),
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(b.dead("reports").await, 2);
    let job = b.store.queue("reports").unwrap();
    let info = redq::inspect::job(&b.store, &job, "dead-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.state, redq::inspect::JobState::Pending);

    let r = b
        .post(
            "/queues/reports/dead/purge",
            &format!("{csrf}&id=dead-2"),
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(b.dead("reports").await, 1);
    assert!(redq::inspect::job(&b.store, &job, "dead-2")
        .await
        .unwrap()
        .is_none());

    let r = b
        .post("/queues/reports/dead/retry", &format!("{csrf}&all=1"), None)
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(b.dead("reports").await, 0);

    // A same-origin browser POST passes the origin check.
    let origin = b.base.clone();
    let r = b.post("/queues/emails/pause", &csrf, Some(&origin)).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(b.paused("emails").await);
}

#[tokio::test]
async fn actions_without_the_token_or_from_another_site_are_refused() {
    let b = board().await;
    let token = b.csrf().await;
    let before = b.writes().await;
    for (form, origin) in [
        ("".to_owned(), None),
        ("csrf=0123456789abcdef0123456789abcdef".to_owned(), None),
        (format!("csrf={token}"), Some("http://evil.example")),
        (format!("csrf={token}"), Some("null")),
    ] {
        let r = b.post("/queues/reports/pause", &form, origin).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{form} from {origin:?}");
        let r = b
            .post(
                "/queues/reports/dead/purge",
                &format!("{form}&all=1"),
                origin,
            )
            .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }
    let r = b
        .post("/queues/reports/dead/retry", &format!("csrf={token}"), None)
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "no ids, no all");
    let r = b
        .post("/queues/bad%20name/pause", &format!("csrf={token}"), None)
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(b.writes().await, before);
    assert!(!b.paused("reports").await);
    assert_eq!(b.dead("reports").await, 3);
}

#[tokio::test]
async fn an_access_token_guards_every_page_when_set() {
    let token = "a-token-of-24-characters";
    let b = board_with(Options {
        token: Some(token.into()),
        ..options()
    })
    .await;
    let (code, _) = b.get("/").await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let r = b
        .http
        .get(format!("{}/queues/emails", b.base))
        .basic_auth("operator", Some(token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = b
        .http
        .get(format!("{}/api/summary", b.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = b
        .http
        .get(format!("{}/", b.base))
        .basic_auth("operator", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[test]
fn a_public_listen_address_needs_the_flag_and_a_token() {
    let server = RedisServer::start();
    let url = server.url();
    let run = |args: &[&str]| {
        run_bounded(
            redq().args(["--redis-url", &url, "dashboard"]).args(args),
            Duration::from_secs(20),
        )
    };
    let out = run(&["--listen", "0.0.0.0:0"]);
    assert_eq!(out.code, Some(78), "{out:?}");
    assert!(out.stderr.contains("--listen-public"), "{out:?}");
    let out = run(&["--listen", "0.0.0.0:0", "--listen-public"]);
    assert_eq!(out.code, Some(78), "{out:?}");
    assert!(out.stderr.contains("token"), "{out:?}");
    let out = run(&[
        "--listen",
        "0.0.0.0:0",
        "--listen-public",
        "--token",
        "short",
    ]);
    assert_eq!(out.code, Some(78), "{out:?}");
    let out = run(&["--listen", "not an address"]);
    assert_eq!(out.code, Some(78), "{out:?}");
}

/// Headless Chromium loads the pages (the script runs and refreshes the
/// numbers), clicks Pause, Retry all dead and a job's Cancel, and Redis has
/// changed.
/// `REDQ_SCREENSHOTS=<dir>` saves the main pages as PNG there (the README's
/// come from this test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_browser_pauses_and_retries() {
    let Some(browser) = Browser::start(1280, 1000).await else {
        return;
    };
    let b = board().await;
    let shots = std::env::var_os("REDQ_SCREENSHOTS").map(std::path::PathBuf::from);
    let shoot = |name: &'static str| {
        let shots = shots.clone();
        let browser = &browser;
        async move {
            if let Some(dir) = shots {
                std::fs::write(dir.join(name), browser.screenshot().await).unwrap();
            }
        }
    };

    browser.goto(&format!("{}/", b.base)).await;
    assert_eq!(
        browser.eval("return document.title").await,
        "Overview · redq"
    );
    common::wait::eventually(
        "the script to refresh the numbers",
        Duration::from_secs(10),
        || async {
            browser
                .eval("return document.body.getAttribute('data-refreshed')")
                .await
                .as_str()
                .map(str::to_owned)
        },
    )
    .await;
    shoot("dashboard-overview.png").await;

    browser.click("a[href='/queues/reports']").await;
    assert_eq!(browser.text("h1").await, "Queue reports");
    browser
        .click("form[action='/queues/reports/pause'] button")
        .await;
    common::wait::eventually("the pause to reach Redis", Duration::from_secs(10), || {
        b.paused("reports")
    })
    .await;
    assert!(browser.text(".notice").await.starts_with("Paused reports"));
    shoot("dashboard-queue.png").await;

    browser
        .click("form[action='/queues/reports/dead/retry'] button")
        .await;
    common::wait::eventually(
        "the retry to reach Redis",
        Duration::from_secs(10),
        || async { b.dead("reports").await == 0 },
    )
    .await;
    assert!(browser
        .text(".notice")
        .await
        .starts_with("Requeued 3 dead jobs"));

    browser
        .goto(&format!("{}/queues/emails/jobs/xss", b.base))
        .await;
    assert!(browser
        .text("#payload")
        .await
        .contains("<script>alert('pwned')</script>"));
    assert_eq!(browser.alert().await, None, "the payload ran as script");
    shoot("dashboard-job.png").await;

    // Cancel from the job's own page: the job is gone from Redis.
    browser
        .click("form[action='/queues/emails/jobs/xss/cancel'] button")
        .await;
    let emails = b.store.queue("emails").unwrap();
    common::wait::eventually("the cancel to reach Redis", Duration::from_secs(10), || {
        let (store, emails) = (b.store.clone(), emails.clone());
        async move {
            match redq::inspect::job(&store, &emails, "xss").await {
                Ok(None) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    assert!(browser.text(".notice").await.starts_with("Cancelled xss"));

    for page in ["/daemons", "/cron", "/usage"] {
        browser.goto(&format!("{}{page}", b.base)).await;
        assert!(browser.text("main").await.len() > 20, "{page} is empty");
    }
    shoot("dashboard-usage.png").await;
    browser.quit().await;
}

/// The `redq dashboard` process, killed on drop.
struct Process(std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `redq dashboard` (the binary) on a 3-primary cluster, one queue on each
/// node: the pages show every queue and the actions reach every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_works_on_a_cluster() {
    let cluster = common::cluster::Cluster::start();
    let queues: Vec<String> = cluster
        .nodes
        .iter()
        .map(|node| {
            (0..)
                .map(|n| format!("c{n}"))
                .find(|q| cluster.node_of(&format!("{{{q}}}")).port == node.port)
                .unwrap()
        })
        .collect();
    let seeds: Vec<String> = cluster.nodes.iter().map(|n| n.url()).collect();
    let store = Store::open(&redq::config::RedisConfig {
        cluster: seeds,
        ..Default::default()
    })
    .await
    .unwrap();
    let client = redq::Client::from_store(store.clone());
    for q in &queues {
        for n in 0..2 {
            let job = redq::NewJob::new(&serde_json::json!({ "n": n }))
                .unwrap()
                .id(format!("j{n}"));
            client.enqueue(q, job).await.unwrap();
        }
    }
    let dead_q = store.queue(&queues[0]).unwrap();
    let claimed = claim(&store, &queues[0], 10).await;
    let failed: Vec<_> = claimed
        .jobs
        .iter()
        .map(|j| failure(j, None, "boom"))
        .collect();
    store.fail(&dead_q, &failed, DEAD).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("workers.toml");
    std::fs::write(
        &config,
        format!("[redis]\ncluster = {}\n", cluster.seeds_toml()),
    )
    .unwrap();
    let port = common::server::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _process = Process(
        redq()
            .arg("--config")
            .arg(&config)
            .args(["dashboard", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let overview =
        common::wait::eventually("the dashboard to answer", Duration::from_secs(20), || {
            let url = format!("{base}/");
            async move {
                let (code, body) = common::http::get(&url).await;
                (code == 200).then_some(body)
            }
        })
        .await;
    for q in &queues {
        assert!(
            overview.contains(&format!("href=\"/queues/{q}\"")),
            "{overview}"
        );
    }
    let (code, page) = common::http::get(&format!("{base}/queues/{}", queues[0])).await;
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("Dead jobs (2)"), "{page}");
    let (code, page) = common::http::get(&format!("{base}/queues/{}/jobs/j1", queues[1])).await;
    assert_eq!(code, 200, "{page}");
    for word in ["MOVED", "ASK ", "CROSSSLOT"] {
        assert!(!page.contains(word) && !overview.contains(word));
    }

    let (_, q2) = common::http::get(&format!("{base}/queues/{}", queues[2])).await;
    let i = q2.find("name=\"csrf\" value=\"").expect("a form") + 19;
    let token = q2[i..i + 32].to_owned();
    let http = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    let post = |path: String, form: String| {
        let http = http.clone();
        async move {
            http.post(path)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let csrf = format!("csrf={token}");
    let status = post(format!("{base}/queues/{}/pause", queues[2]), csrf.clone()).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let status = post(
        format!("{base}/queues/{}/dead/retry", queues[0]),
        format!("{csrf}&all=1"),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let keys: Vec<_> = queues.iter().map(|q| store.queue(q).unwrap()).collect();
    let stats = redq::inspect::stats(&store, &keys).await.unwrap();
    assert!(stats[2].paused);
    assert_eq!(stats[0].dead, 0);
    assert_eq!(stats[0].pending, 2);
}

/// The id of the first job of `queue` a page links to.
fn first_job_of(queue: &str, page: &str) -> String {
    page.split(&format!("/queues/{queue}/jobs/"))
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("no job of {queue} linked: {page}"))
        .to_owned()
}

#[tokio::test]
async fn jobs_are_listed_by_state_with_filters_and_cancelled_promoted_or_deleted() {
    let b = board().await;
    // The seeded `emails` queue: three pending jobs (one of tenant acme,
    // whose payload is markup), one scheduled.
    let (status, page) = b.get("/queues/emails/jobs?state=pending").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("id=\"jobs-list\""), "{page}");
    assert!(page.contains("/queues/emails/jobs/xss\""), "{page}");
    assert_eq!(page.matches(">Cancel<").count(), 3, "{page}");
    let (_, only) = b.get("/queues/emails/jobs?state=pending&tenant=acme").await;
    assert_eq!(only.matches(">Cancel<").count(), 1, "{only}");
    assert!(only.contains(">acme<"), "{only}");
    let (_, scheduled) = b.get("/queues/emails/jobs?state=scheduled").await;
    assert_eq!(scheduled.matches(">Cancel<").count(), 1, "{scheduled}");
    let (_, dead) = b.get("/queues/reports/jobs?state=dead").await;
    assert!(dead.contains("dead-1"), "{dead}");
    assert!(
        !dead.contains(">Cancel<"),
        "dead jobs are not cancelled: {dead}"
    );
    assert!(
        dead.contains(">Delete<"),
        "dead jobs can be deleted: {dead}"
    );
    assert!(scheduled.contains(">Run now<"), "{scheduled}");
    // Cancel from the list: a POST with the form's token.
    let token = b.csrf().await;
    let r = b
        .post(
            "/queues/emails/jobs/xss/cancel",
            &format!("csrf={token}"),
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(to.contains("Cancelled%20xss"), "{to}");
    let q = b.store.queue("emails").unwrap();
    assert!(redq::inspect::job(&b.store, &q, "xss")
        .await
        .unwrap()
        .is_none());
    // Without the token nothing happens.
    let (_, page) = b.get("/queues/emails/jobs?state=pending").await;
    let id = first_job_of("emails", &page);
    let r = b
        .post(
            &format!("/queues/emails/jobs/{id}/cancel"),
            "csrf=forged",
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(redq::inspect::job(&b.store, &q, &id)
        .await
        .unwrap()
        .is_some());

    // Run the scheduled job now: it is pending at once.
    let scheduled_id = first_job_of("emails", &scheduled);
    let r = b
        .post(
            &format!("/queues/emails/jobs/{scheduled_id}/promote"),
            &format!("csrf={token}"),
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(to.contains("Promoted"), "{to}");
    let info = redq::inspect::job(&b.store, &q, &scheduled_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.state, redq::inspect::JobState::Pending);
    // An action the dashboard does not have.
    let r = b
        .post(
            &format!("/queues/emails/jobs/{scheduled_id}/explode"),
            &format!("csrf={token}"),
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // Delete a dead job, from its own page's button.
    let (_, job_page) = b.get("/queues/reports/jobs/dead-1").await;
    assert!(
        job_page.contains("/queues/reports/jobs/dead-1/delete"),
        "{job_page}"
    );
    let r = b
        .post(
            "/queues/reports/jobs/dead-1/delete",
            &format!("csrf={token}"),
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let reports = b.store.queue("reports").unwrap();
    assert!(redq::inspect::job(&b.store, &reports, "dead-1")
        .await
        .unwrap()
        .is_none());
}

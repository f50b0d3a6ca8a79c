//! Redis Sentinel, on a real local topology (tests/common/sentinel.rs: one
//! primary, one replica, three sentinels on loopback): jobs flow through the
//! sentinels from `redq enqueue --config` and the Rust `Client`; a primary
//! killed with SIGKILL mid-load is replaced by the replica and the daemon
//! and a producer follow it without a restart; with `wait_replicas = 1`
//! every acknowledged enqueue survives the failover; SIGTERM while no
//! primary is known still drains and exits 0; `/readyz` says why it is not
//! ready while no primary is known, and an idle daemon (waker, promoter)
//! follows the new one. The same failover over TLS end to end (data nodes
//! and sentinels), with the sentinels' credentials and the data nodes'
//! (the documented daemon user) kept apart.
//!
//! The tests that only read share one topology; each test that kills a node
//! starts its own. Every wait is bounded and polls what the servers, the
//! daemon or its handlers report; a failing test prints the daemon's log.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::process::{redq, run_async, Daemon};
use common::sentinel::over_tls::{Link, DATA_USER, SENTINEL_USER};
use common::sentinel::{self, Topology};
use common::wait::{eventually, secs, wait_for};
use common::workers::{command_handler, config, script, toml_str};
use redq::inspect::JobState;
use redq::{Client, NewJob};

/// Runs blocking harness work (starting servers, waiting on processes and
/// on the sentinels) on this thread, while the runtime's other tasks (a
/// producer) go on on the other worker.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// A handler that records each job it ran in `$OUT/done` (one id a line),
/// after `$1` seconds.
const RECORD: &str = "cat > /dev/null\nsleep \"$1\"\necho \"$REDQ_JOB_ID\" >> \"$OUT/done\"\n";

/// The ids the handler recorded so far.
fn recorded(dir: &Path) -> BTreeSet<String> {
    fs::read_to_string(dir.join("done"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A `workers.toml` through the topology's sentinels: key prefix `prefix`,
/// `redis_extra` lines in `[redis]`, and `queues` (with TLS: `[redis.tls]`
/// and the sentinels' and data nodes' credentials). The URL's host and
/// port lead nowhere: only the sentinels say where Redis is.
fn write_config(
    t: &Topology,
    dir: &Path,
    prefix: &str,
    redis_extra: &str,
    queues: &str,
) -> PathBuf {
    let text = config(&t.url(), "2s", queues).replacen(
        "\n\n[daemon]",
        &format!(
            "\nkey_prefix = {}\n{redis_extra}{}\n[daemon]",
            toml_str(prefix),
            t.toml()
        ),
        1,
    );
    let path = dir.join("workers.toml");
    fs::write(&path, text).unwrap();
    path
}

/// The state of job `id`, read through the sentinels.
async fn state(client: &Client, queue: &str, id: &str) -> Option<JobState> {
    client.job(queue, id).await.ok().flatten().map(|j| j.state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_flow_through_sentinel_from_redq_enqueue_and_the_rust_client() {
    let t = blocking(sentinel::shared);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    let handler = script(&d, "record.sh", RECORD);
    let queues = format!(
        "[queues.q]\nkeep_completed = 100\nhandler = {}\n",
        command_handler(&handler, &["0"], &d, "")
    );
    let cfg = write_config(&t, &d, "flow", "", &queues);
    let (c, l) = (cfg.clone(), d.join("redq.log"));
    let daemon = blocking(|| Daemon::start(&c, &l, &[]));

    let mut enqueue = redq();
    enqueue
        .arg("--config")
        .arg(&cfg)
        .args(["enqueue", "q", r#"{"via":"cli"}"#]);
    let out = run_async(enqueue, secs(10)).await;
    assert_eq!(out.code, Some(0), "redq enqueue: {}", out.stderr);
    let from_cli = out.stdout.trim().to_owned();

    let client = Client::open(&t.redis_config("flow"))
        .await
        .expect("connect through the sentinels");
    let from_rust = client
        .enqueue("q", NewJob::new(&"rust").unwrap())
        .await
        .unwrap()
        .id;

    for id in [&from_cli, &from_rust] {
        eventually(&format!("job {id} to succeed"), secs(10), || async {
            state(&client, "q", id).await == Some(JobState::Succeeded)
        })
        .await;
    }
    assert_eq!(
        recorded(&d),
        BTreeSet::from([from_cli.clone(), from_rust.clone()])
    );

    // They live on the primary the sentinels name, not anywhere else.
    let primary = t.primary_url();
    for id in [&from_cli, &from_rust] {
        let mut job = redq();
        job.args([
            "--redis-url",
            &primary,
            "--key-prefix",
            "flow",
            "job",
            "q",
            id,
        ]);
        let out = run_async(job, secs(10)).await;
        assert!(out.stdout.contains("succeeded"), "{out:?}");
    }
    assert!(
        daemon.log().contains("sentinel primary"),
        "{}",
        daemon.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_that_is_down_is_skipped_and_a_wrong_master_name_is_refused_with_the_sentinels_answers(
) {
    let t = blocking(sentinel::shared);
    // A dead sentinel listed first: the next one answers.
    let mut cfg = t.redis_config("skip");
    let dead = format!("127.0.0.1:{}", common::server::free_port());
    cfg.sentinel.as_mut().unwrap().nodes.insert(0, dead.clone());
    let client = Client::open(&cfg)
        .await
        .expect("the second sentinel answers");
    let id = client
        .enqueue("q", NewJob::new(&1).unwrap())
        .await
        .unwrap()
        .id;
    assert_eq!(state(&client, "q", &id).await, Some(JobState::Pending));

    // A master name no sentinel monitors: refused, each sentinel's answer said.
    cfg.sentinel.as_mut().unwrap().master = "nobody".into();
    let e = match Client::open(&cfg).await {
        Ok(_) => panic!("connected to a primary no sentinel monitors"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("\"nobody\""), "{e}");
    assert!(e.contains(&dead), "{e}");
    assert!(e.contains("monitors no primary named"), "{e}");
    assert!(e.contains("redis.sentinel.master"), "{e}");

    // The CLI says the same, and exits 69 (Redis unreachable).
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("nobody.toml");
    let toml = t.toml().replace(sentinel::MASTER, "nobody");
    fs::write(
        &cfg,
        format!("[redis]\nurl = \"redis://127.0.0.1:1\"\n{toml}"),
    )
    .unwrap();
    let mut enqueue = redq();
    enqueue
        .arg("--config")
        .arg(&cfg)
        .args(["enqueue", "q", "1"]);
    let out = run_async(enqueue, secs(10)).await;
    assert_eq!(out.code, Some(69), "{out:?}");
    assert!(
        out.stderr.contains("monitors no primary named \"nobody\""),
        "{out:?}"
    );
}

/// A producer enqueueing job `p<n>` every `every` into queue `q` through
/// one client until told to stop; a refused enqueue is sent again with the
/// same id (so it is never enqueued twice) until Redis acknowledges it.
struct Producer {
    acked: Arc<Mutex<Vec<Ack>>>,
    /// Errors seen (the enqueue was sent again), with when.
    errors: Arc<Mutex<Vec<(String, Instant)>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

/// An acknowledged enqueue.
#[derive(Debug, Clone)]
struct Ack {
    id: String,
    /// When it was first sent.
    sent: Instant,
    /// When Redis acknowledged it.
    at: Instant,
}

impl Producer {
    fn start(client: Arc<Client>, every: Duration) -> Producer {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, e, s) = (acked.clone(), errors.clone(), stop.clone());
        let task = tokio::spawn(async move {
            for n in 0u64.. {
                let id = format!("p{n:06}");
                let sent = Instant::now();
                loop {
                    if s.load(Ordering::Relaxed) {
                        return;
                    }
                    let job = NewJob::new(&n).unwrap().id(&id);
                    match client.enqueue("q", job).await {
                        Ok(_) => {
                            let at = Instant::now();
                            a.lock().unwrap().push(Ack {
                                id: id.clone(),
                                sent,
                                at,
                            });
                            break;
                        }
                        Err(err) => {
                            e.lock().unwrap().push((err.to_string(), Instant::now()));
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
                tokio::time::sleep(every).await;
            }
        });
        Producer {
            acked,
            errors,
            stop,
            task,
        }
    }

    fn acked(&self) -> Vec<Ack> {
        self.acked.lock().unwrap().clone()
    }

    /// The first acknowledgement after `t`.
    fn first_ack_after(&self, t: Instant) -> Option<Ack> {
        self.acked().into_iter().find(|a| a.at > t)
    }

    fn errors_after(&self, t: Instant) -> Vec<String> {
        let errors = self.errors.lock().unwrap();
        errors
            .iter()
            .filter(|(_, at)| *at > t)
            .map(|(e, _)| e.clone())
            .collect()
    }

    async fn stop(self) -> (Vec<Ack>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = tokio::time::timeout(secs(15), self.task).await;
        let errors = self.errors.lock().unwrap().len();
        (self.acked.lock().unwrap().clone(), errors)
    }
}

fn ids(acks: impl IntoIterator<Item = Ack>) -> Vec<String> {
    acks.into_iter().map(|a| a.id).collect()
}

/// The load of the failover tests: a daemon (8 workers, each job 50 ms)
/// through the sentinels, and a producer at ~40 jobs/s.
struct Load {
    daemon: Daemon,
    client: Arc<Client>,
    producer: Producer,
    dir: tempfile::TempDir,
}

async fn start_load(t: &Topology, prefix: &str, wait_replicas: u32) -> Load {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    let handler = script(&d, "record.sh", RECORD);
    // The lease outlasts the failover (~3 s) with room to spare, so running
    // jobs keep their leases; jobs whose completion the lost primary took
    // with it come back when it expires.
    let queues = format!(
        "[queues.q]\nconcurrency = 8\nkeep_completed = 100000\nlease = \"6s\"\nlease_renew = \"1s\"\n\
         handler = {}\n",
        command_handler(&handler, &["0.05"], &d, "")
    );
    let wait = format!("wait_replicas = {wait_replicas}\nwait_timeout = \"500ms\"\n");
    let cfg = write_config(t, &d, prefix, &wait, &queues);
    let l = d.join("redq.log");
    let daemon = blocking(|| Daemon::start(&cfg, &l, &[]));
    let mut redis = t.redis_config(prefix);
    redis.wait_replicas = wait_replicas;
    redis.wait_timeout = Duration::from_millis(500);
    let client = Arc::new(
        Client::open(&redis)
            .await
            .expect("connect through the sentinels"),
    );
    let producer = Producer::start(client.clone(), Duration::from_millis(25));
    Load {
        daemon,
        client,
        producer,
        dir,
    }
}

/// Kills the primary, waits for the sentinels to name another, then for the
/// producer's first acknowledgement from it and for the same daemon process
/// (`pid`, recording into `dir`) to run that job. Returns the new primary's
/// port, when the old one was killed and when the sentinels named the new.
async fn fail_over_and_follow(
    t: &mut Topology,
    load: &mut Load,
    dir: &Path,
    pid: i32,
    what: &str,
) -> (u16, Instant, Instant) {
    let killed = Instant::now();
    let old = blocking(|| t.kill_primary());
    let new = blocking(|| t.wait_new_primary(old, secs(20)));
    let named = Instant::now();
    eprintln!(
        "{what}: {old} -> {new}, named {:?} after the kill",
        named - killed
    );
    follow(load, dir, named).await;
    eprintln!(
        "followed within {:?} of the sentinels naming {new}",
        named.elapsed()
    );
    assert_eq!(load.daemon.pid(), pid);
    assert!(
        load.daemon.exited().is_none(),
        "the daemon exited:\n{}",
        load.daemon.log()
    );
    (new, killed, named)
}

/// Waits for the producer's first acknowledgement after `named` (the
/// sentinels named a new primary) and for the daemon recording into `dir`
/// to run that job.
async fn follow(load: &Load, dir: &Path, named: Instant) {
    let first = eventually(
        "the producer to enqueue on the new primary",
        FOLLOW_WITHIN,
        || async { load.producer.first_ack_after(named) },
    )
    .await;
    eventually(
        "the daemon to run a job enqueued after the failover",
        FOLLOW_WITHIN,
        || async { recorded(dir).contains(&first.id) },
    )
    .await;
}

/// Waits until the handler has recorded at least `n` jobs.
async fn until_recorded(dir: &Path, n: usize, limit: Duration) {
    eventually(&format!("{n} jobs to run"), limit, || async {
        let seen = recorded(dir).len();
        (seen >= n).then_some(()).ok_or(format!("{seen} ran"))
    })
    .await;
}

/// Every id in `ids` has succeeded (read through the sentinels), within `limit`.
async fn all_succeed(client: &Client, ids: &[String], limit: Duration) {
    eventually(
        &format!("all {} acknowledged jobs to succeed", ids.len()),
        limit,
        || async {
            let mut missing = Vec::new();
            for id in ids {
                let s = state(client, "q", id).await;
                if s != Some(JobState::Succeeded) {
                    missing.push(format!("{id}: {s:?}"));
                }
            }
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{} not yet: {:?}",
                    missing.len(),
                    &missing[..missing.len().min(10)]
                ))
            }
        },
    )
    .await;
}

/// How long the daemon and a producer may take to follow the new primary
/// once every sentinel names it.
const FOLLOW_WITHIN: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_primary_is_killed_mid_load_the_daemon_and_a_producer_follow_the_promoted_replica(
) {
    let mut t = blocking(Topology::start_cuttable);
    let mut load = start_load(&t, "failover", 0).await;
    let d = load.dir.path().to_owned();
    until_recorded(&d, 40, secs(15)).await;
    let pid = load.daemon.pid();

    // The replica falls behind: what the primary acknowledges from now on
    // is on the primary alone.
    t.cut_replication();
    let cut = Instant::now();
    eventually("enqueues the replica does not get", secs(10), || async {
        load.producer
            .acked()
            .iter()
            .filter(|a| a.sent > cut)
            .count()
            >= 5
    })
    .await;
    // The producer's first acknowledgement from the new primary, then that
    // job, run by the same daemon process.
    let (new, killed, named) = fail_over_and_follow(&mut t, &mut load, &d, pid, "failover").await;

    // Jobs keep completing: everything acknowledged after the failover succeeds.
    until_recorded(&d, recorded(&d).len() + 40, secs(15)).await;
    let (acked, errors) = load.producer.stop().await;
    let after = ids(acked.iter().filter(|a| a.at > named).cloned());
    all_succeed(&load.client, &after, secs(20)).await;
    // Replication is asynchronous and wait_replicas is 0: what only the
    // lost primary held is gone, although the producer was told it was
    // enqueued.
    let unreplicated = ids(acked
        .iter()
        .filter(|a| a.sent > cut && a.at < killed)
        .cloned());
    for id in &unreplicated {
        assert_eq!(
            state(&load.client, "q", id).await,
            None,
            "{id} was acknowledged by the lost primary only"
        );
    }
    eprintln!(
        "{} acknowledged; {} of them by the lost primary alone, and lost; {} after the failover, all run; {errors} enqueue errors",
        acked.len(),
        unreplicated.len(),
        after.len(),
    );
    assert!(!unreplicated.is_empty());
    assert_eq!(t.primary_port(), new);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_wait_replicas_every_acknowledged_enqueue_completes_after_the_failover() {
    let mut t = blocking(Topology::start_cuttable);
    let mut load = start_load(&t, "durable", 1).await;
    let d = load.dir.path().to_owned();
    until_recorded(&d, 40, secs(15)).await;

    // The replica falls behind: now the primary acknowledges nothing (WAIT
    // 1 times out), and the producer sends each refused enqueue again.
    t.cut_replication();
    let cut = Instant::now();
    eventually("enqueues refused as not replicated", secs(10), || async {
        let refused = load.producer.errors_after(cut);
        (refused
            .iter()
            .filter(|e| e.contains("wait_replicas"))
            .count()
            >= 2)
            .then_some(())
            .ok_or(format!("{refused:?}"))
    })
    .await;
    let killed = Instant::now();
    let old = blocking(|| t.kill_primary());
    blocking(|| t.wait_new_primary(old, secs(20)));
    let named = Instant::now();
    // The new primary has no replica: nothing is acknowledged until one
    // joins (here the lost host, replaced).
    blocking(|| t.restart_as_replica(old));
    follow(&load, &d, named).await;
    let (acked, errors) = load.producer.stop().await;
    let during = acked
        .iter()
        .filter(|a| a.sent > cut && a.at < killed)
        .count();
    assert_eq!(during, 0, "acknowledged while the replica got nothing");
    // Every job the producer was told was enqueued, before the kill and
    // after, completes; jobs whose completion was lost with the old primary
    // come back when their lease expires.
    let all = ids(acked);
    all_succeed(&load.client, &all, secs(30)).await;
    eprintln!(
        "{} acknowledged, all succeeded; {errors} enqueue errors",
        all.len()
    );
    assert!(
        load.daemon.exited().is_none(),
        "the daemon exited:\n{}",
        load.daemon.log()
    );
}

/// Waits until each server of `wanted` (plain port) has a connection from
/// whom it names, and checks that every connection of the replica, the
/// sentinels and redq to a server of `t` reached its TLS port; returns them.
fn all_over_tls(t: &Topology, wanted: &[(u16, &str)]) -> Vec<Link> {
    let tls = t.tls_ports();
    let links = wait_for("the expected connections", secs(10), || {
        let links = t.tls_links();
        match wanted
            .iter()
            .find(|(server, from)| !links.iter().any(|l| l.server == *server && l.from == *from))
        {
            None => Ok(links),
            Some((server, from)) => Err(format!("no {from} connection on {server}: {links:#?}")),
        }
    });
    for l in &links {
        assert_eq!(
            Some(&l.port),
            tls.get(&l.server),
            "not over TLS: {l:?} in {links:#?}"
        );
    }
    links
}

/// The whole topology speaks TLS (data nodes and sentinels: `tls-port`,
/// `tls-replication yes`, client certificates required), and the sentinels
/// and the data nodes each know only their own credentials for redq: the
/// daemon and a producer find the primary, then follow the promoted replica
/// after a SIGKILL, over TLS with the same `[redis.tls]` (CA and client
/// certificate) for both. The CLI works the same way, and neither secret
/// shows in the daemon's log or `redq config`; crossed or missing
/// credentials are refused, each by the side that was given the wrong ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_with_credentials_of_their_own_the_daemon_and_a_producer_follow_the_promoted_replica(
) {
    let mut t = blocking(Topology::start_tls);
    // The documented daemon user's keys are under the prefix `redq`.
    let mut load = start_load(&t, "redq", 0).await;
    let d = load.dir.path().to_owned();
    until_recorded(&d, 20, secs(15)).await;
    let pid = load.daemon.pid();
    // The replica, the sentinels and redq all reach the primary (and the
    // sentinels each other) at their TLS ports; redq as its data-node user.
    let primary = blocking(|| t.primary_port());
    let mut wanted = vec![
        (primary, "replica"),
        (primary, "sentinel"),
        (primary, "redq"),
    ];
    wanted.extend(t.sentinels.iter().map(|s| (s.port, "sentinel")));
    let links = blocking(|| all_over_tls(&t, &wanted));
    eprintln!("{} connections, all over TLS", links.len());

    let (new, _, named) =
        fail_over_and_follow(&mut t, &mut load, &d, pid, "failover over TLS").await;
    // The new primary is reached over TLS too.
    blocking(|| all_over_tls(&t, &[(new, "redq"), (new, "sentinel")]));
    until_recorded(&d, recorded(&d).len() + 20, secs(15)).await;
    let (acked, _) = load.producer.stop().await;
    let after = ids(acked.iter().filter(|a| a.at > named).cloned());
    all_succeed(&load.client, &after, secs(20)).await;

    // The CLI, through the same file.
    let cfg = d.join("workers.toml");
    let mut enqueue = redq();
    enqueue
        .arg("--config")
        .arg(&cfg)
        .args(["enqueue", "q", "{}"]);
    let out = run_async(enqueue, secs(10)).await;
    assert_eq!(out.code, Some(0), "redq enqueue over TLS: {}", out.stderr);
    let mut show = redq();
    show.arg("--config").arg(&cfg).arg("config");
    let shown = run_async(show, secs(10)).await;
    assert_eq!(shown.code, Some(0), "redq config: {}", shown.stderr);
    let log = load.daemon.log();
    for secret in [DATA_USER.1, SENTINEL_USER.1] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
        assert!(
            !shown.stdout.contains(secret),
            "{secret} in redq config:\n{}",
            shown.stdout
        );
    }
    assert!(log.contains("the primary has moved"), "{log}");

    // Credentials crossed or missing: refused, by the side given the wrong ones.
    let good = t.redis_config("redq");
    let mut crossed = good.clone();
    let s = crossed.sentinel.as_mut().unwrap();
    s.username = Some(DATA_USER.0.into());
    s.password = Some(DATA_USER.1.into());
    let mut none = good.clone();
    let s = none.sentinel.as_mut().unwrap();
    s.username = None;
    s.password = None;
    let mut data_wrong = good.clone();
    data_wrong.url = data_wrong.url.replace(DATA_USER.1, SENTINEL_USER.1);
    for (what, config, says) in [
        (
            "the data nodes' credentials given to the sentinels",
            crossed,
            "the sentinels refused redq's login",
        ),
        (
            "no credentials for the sentinels",
            none,
            "redis.sentinel.username and redis.sentinel.password",
        ),
        (
            "the sentinels' password given to the data nodes",
            data_wrong,
            "check the data nodes' user and password in redis.url",
        ),
    ] {
        let e = match Client::open(&config).await {
            Ok(_) => panic!("{what}: connected"),
            Err(e) => e,
        };
        // Said as what it is, not as an outage or a failover under way.
        assert!(!e.is_transient(), "{what}: {e}");
        assert!(e.to_string().contains(says), "{what}: {e}");
        assert!(!e.to_string().contains("failover"), "{what}: {e}");
    }
    // `redq health` says so too, and exits 78 (the configuration does not fit).
    let wrong = d.join("wrong.toml");
    let text = fs::read_to_string(&cfg).unwrap();
    fs::write(&wrong, text.replace(SENTINEL_USER.1, "not-the-password")).unwrap();
    let mut health = redq();
    health.arg("--config").arg(&wrong).arg("health");
    let out = run_async(health, secs(10)).await;
    assert_eq!(out.code, Some(78), "{out:?}");
    assert!(
        out.stderr.contains("Redis refused the credentials")
            && out.stderr.contains("redis.sentinel.password"),
        "{out:?}"
    );
}

/// A handler that records its start in `$OUT/started`, runs 2 s (a payload
/// containing "long": 60 s), then records the job in `$OUT/done`.
const SHORT_OR_LONG: &str = r#"p=$(cat)
echo "$REDQ_JOB_ID" >> "$OUT/started"
case "$p" in *long*) sleep 60 ;; *) sleep 2 ;; esac
echo "$REDQ_JOB_ID" >> "$OUT/done"
"#;

/// SIGTERM while the primary is dead and no replica has been promoted: the
/// daemon stops claiming at once; the jobs that finish within
/// `shutdown_timeout` (2 s) finish, the others are stopped then (their
/// process groups get SIGTERM, SIGKILL after `kill_grace`); every outcome
/// (completions and releases) stays with the writers, which retry for up to
/// the lease (20 s here) while no primary is known. So the daemon does not
/// exit while results it holds could still be written; once a primary is
/// found it writes them and exits 0: the finished jobs succeeded, the
/// stopped ones are pending again with no attempt spent. (Had no primary
/// come back within the lease, it would exit 0 after it, and the jobs would
/// come back when their leases expired: the results would be stale by then.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_no_primary_is_known_drains_keeps_the_results_until_a_primary_is_back_and_exits_0(
) {
    let mut t = blocking(Topology::start_held);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    let handler = script(&d, "job.sh", SHORT_OR_LONG);
    let queues = format!(
        "[queues.q]\nconcurrency = 4\nkeep_completed = 100\nlease = \"20s\"\nlease_renew = \"1s\"\n\
         handler = {}\n",
        command_handler(&handler, &[], &d, ", kill_grace = \"1s\"")
    );
    let cfg = write_config(&t, &d, "drain", "", &queues);
    let l = d.join("redq.log");
    let mut daemon = blocking(|| Daemon::start(&cfg, &l, &[]));
    let client = Client::open(&t.redis_config("drain")).await.unwrap();
    for (id, kind) in [
        ("s1", "short"),
        ("s2", "short"),
        ("l1", "long"),
        ("l2", "long"),
    ] {
        client
            .enqueue("q", NewJob::new(&kind).unwrap().id(id))
            .await
            .unwrap();
    }
    let started = d.join("started");
    eventually("the four jobs to start", secs(10), || async {
        fs::read_to_string(&started)
            .unwrap_or_default()
            .lines()
            .count()
            == 4
    })
    .await;

    blocking(|| t.wait_caught_up());
    let old = blocking(|| t.kill_primary());
    daemon.signal(libc::SIGTERM);
    let signalled = Instant::now();
    // The drain: the short jobs finish, the long ones are stopped at the deadline.
    blocking(|| {
        daemon.wait_log("stopping the jobs still running", 1, secs(10));
        wait_for("the short jobs to finish", secs(10), || {
            let done = fs::read_to_string(d.join("done")).unwrap_or_default();
            done.contains("s1") && done.contains("s2")
        })
    });
    // Their results cannot be written anywhere yet: the daemon keeps them.
    assert!(
        daemon.exited().is_none(),
        "exited with results unwritten:\n{}",
        daemon.log()
    );

    blocking(|| t.allow_failover());
    let new = blocking(|| t.wait_new_primary(old, secs(20)));
    eprintln!(
        "failover {old} -> {new} {:?} after SIGTERM",
        signalled.elapsed()
    );
    let (status, _) = blocking(|| daemon.wait_exit(secs(30)));
    eprintln!("exited {:?} after SIGTERM", signalled.elapsed());
    assert_eq!(status.code(), Some(0), "{}", daemon.log());
    assert!(
        daemon.log().contains("redq daemon stopped"),
        "{}",
        daemon.log()
    );

    // The client's connection went down with the old primary: its first
    // call after the failover fails (and reconnects), as any call may.
    let mut jobs = Vec::new();
    for id in ["s1", "s2", "l1", "l2"] {
        let j = eventually(
            &format!("job {id} read on the new primary"),
            secs(10),
            || async {
                client
                    .job("q", id)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("unknown".to_owned())
            },
        )
        .await;
        jobs.push((id, j.state, j.attempts));
    }
    assert_eq!(
        jobs,
        [
            ("s1", JobState::Succeeded, 1),
            ("s2", JobState::Succeeded, 1),
            // Released: pending again, the attempt not spent.
            ("l1", JobState::Pending, 0),
            ("l2", JobState::Pending, 0),
        ]
    );
}

/// `/readyz` of a daemon: status and body.
async fn readyz(listen: &str) -> (u16, serde_json::Value) {
    let (status, body) = common::http::get(&format!("http://{listen}/readyz")).await;
    (status, serde_json::from_str(&body).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_no_primary_is_known_readyz_says_why_and_an_idle_daemon_follows_the_promoted_replica()
{
    let mut t = blocking(Topology::start_held);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    let handler = script(&d, "record.sh", RECORD);
    let queues = format!(
        "[queues.q]\nkeep_completed = 100\nhandler = {}\n",
        command_handler(&handler, &["0"], &d, "")
    );
    let cfg = write_config(&t, &d, "ready", "", &queues);
    let l = d.join("redq.log");
    // With inbox_poll at a minute, an idle daemon learns of new jobs only
    // through its waker (BLPOP) and its promoter (Pub/Sub): the jobs below
    // run promptly only if those connections followed the new primary.
    let daemon = blocking(|| Daemon::start(&cfg, &l, &[("REDQ_DAEMON__INBOX_POLL", "60s")]));
    eventually("/readyz to say ready", secs(15), || async {
        readyz(&daemon.listen).await.0 == 200
    })
    .await;

    let old = blocking(|| t.kill_primary());
    let (_, body) = eventually("/readyz to say not ready, and why", secs(15), || async {
        let (status, body) = readyz(&daemon.listen).await;
        let why = body["redis_error"].as_str().unwrap_or_default().to_owned();
        let named = why.contains("no primary \"redq-primary\" reachable through the sentinels")
            && why.contains(&format!("127.0.0.1:{old}"))
            && why.contains("failover");
        (status == 503 && body["redis"] == false && named)
            .then_some((status, body.clone()))
            .ok_or(format!("{status} {body}"))
    })
    .await;
    eprintln!("not ready: {body}");

    // While no primary is known the daemon asks the sentinels with backoff,
    // not in a loop: its shared connection, its waker's and its promoter's
    // each try at most once a second once their pauses have grown, and
    // each try asks the three sentinels: about 9 a second (without the
    // shared connection's pause: about 60). (A window to count in, not a
    // wait for an event.)
    let asked = blocking(|| {
        let before = t.sentinel_connections();
        std::thread::sleep(secs(3));
        // Minus this reading's own connection to each sentinel.
        t.sentinel_connections() - before - 3
    });
    eprintln!("the sentinels were asked {asked} times in 3 s");

    blocking(|| t.allow_failover());
    let new = blocking(|| t.wait_new_primary(old, secs(20)));
    let followed = Instant::now();
    eventually("/readyz to say ready again", secs(15), || async {
        readyz(&daemon.listen).await.0 == 200
    })
    .await;
    eprintln!(
        "ready {:?} after the sentinels named {new}",
        followed.elapsed()
    );

    let client = Client::open(&t.redis_config("ready")).await.unwrap();
    let now = client
        .enqueue("q", NewJob::new(&"now").unwrap())
        .await
        .unwrap()
        .id;
    let later = client
        .enqueue(
            "q",
            NewJob::new(&"later")
                .unwrap()
                .delay(Duration::from_millis(300)),
        )
        .await
        .unwrap()
        .id;
    eventually("the idle daemon to run both jobs", secs(10), || async {
        let r = recorded(&d);
        r.contains(&now) && r.contains(&later)
    })
    .await;
    eprintln!(
        "the idle daemon ran both {:?} after the sentinels named {new}",
        followed.elapsed()
    );
    assert!(
        asked <= 60,
        "the sentinels were asked {asked} times in 3 s:\n{}",
        daemon.log()
    );
}

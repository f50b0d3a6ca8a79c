//! The producer and operator commands: enqueue, job, stats, dead, pause, resume.

use std::io::Read;

use crate::cli::{Command, DeadCommand, EnqueueArgs, Target};
use crate::client::Client;
use crate::error::{Error, Result};
use crate::inspect::{JobInfo, QueueStats};
use crate::job::NewJob;
use crate::store::{DeadRetry, EndState, EnqueueStatus, JobOutcome, WasIn};

/// The CLI's time-outs: 5 s to connect, 30 s for an answer (an import
/// or a purge of a large dead set takes a while).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub async fn run(command: Command, target: &Target) -> Result<u8> {
    let client = Client::open(&target.redis_config(CONNECT_TIMEOUT, COMMAND_TIMEOUT)).await?;
    match command {
        Command::Enqueue(args) => {
            warn_if_unserved(&client, target, &args.queue).await;
            enqueue(&client, args).await
        }
        Command::Job {
            queue,
            id,
            json,
            wait: true,
            timeout,
        } => wait_for(&client, &queue, &id, timeout, json).await,
        Command::Job {
            queue, id, json, ..
        } => match client.job(&queue, &id).await? {
            Some(info) => {
                print_job(&info, json)?;
                Ok(0)
            }
            None if let Some(o) = client.outcome(&queue, &id).await? => {
                print_outcome(&o, json)?;
                Ok(0)
            }
            None => {
                eprintln!(
                    "redq: job {id} not found in queue {queue}: never enqueued there, or it succeeded and was removed \
                     (completed jobs are deleted at once unless the queue sets keep_completed or keep_completed_for; \
                     `redq stats {queue}` counts them under SUCCEEDED)"
                );
                Ok(1)
            }
        },
        Command::Stats { queues, json } => {
            let queues = if queues.is_empty() {
                let mut all = client.queues().await?;
                all.extend(target.configured_queues.iter().cloned());
                all.sort();
                all.dedup();
                all
            } else {
                queues
            };
            let stats = if queues.is_empty() {
                Vec::new()
            } else {
                client.stats(&queues).await?
            };
            print_stats(&stats, json)?;
            Ok(0)
        }
        Command::Dead(cmd) => dead(&client, cmd).await,
        Command::Cancel { queue, ids } => {
            let was = client.cancel(&queue, &ids).await?;
            let mut code = 0;
            for (id, w) in ids.iter().zip(was) {
                match w {
                    w if w.is_live() => println!("cancelled {id} (was {})", w.as_str()),
                    WasIn::Unknown => {
                        eprintln!("redq: {queue} has no job {id}");
                        code = 1;
                    }
                    w => {
                        eprintln!(
                            "redq: {id} is {} already: nothing to cancel (redq delete removes it)",
                            w.as_str()
                        );
                        code = 1;
                    }
                }
            }
            Ok(code)
        }
        Command::Delete { queue, ids } => {
            let was = client.delete(&queue, &ids).await?;
            let mut code = 0;
            for (id, w) in ids.iter().zip(was) {
                match w {
                    WasIn::Dead | WasIn::Succeeded => println!("deleted {id} (was {})", w.as_str()),
                    WasIn::Unknown => {
                        eprintln!("redq: {queue} has no job {id}");
                        code = 1;
                    }
                    w => {
                        eprintln!("redq: {id} is {}: cancel a live job (redq cancel) instead of deleting it", w.as_str());
                        code = 1;
                    }
                }
            }
            Ok(code)
        }
        Command::Promote { queue, ids } => {
            let was = client.promote(&queue, &ids).await?;
            let mut code = 0;
            for (id, w) in ids.iter().zip(was) {
                match w {
                    WasIn::Scheduled | WasIn::Retrying => {
                        println!(
                            "promoted {id} (was {}): it runs as soon as a worker is free",
                            w.as_str()
                        )
                    }
                    WasIn::Unknown => {
                        eprintln!("redq: {queue} has no job {id}");
                        code = 1;
                    }
                    w => {
                        eprintln!(
                            "redq: {id} is {}, not scheduled: nothing to promote",
                            w.as_str()
                        );
                        code = 1;
                    }
                }
            }
            Ok(code)
        }
        Command::Jobs {
            queue,
            state,
            limit,
            after,
            newest,
            oldest,
            tenant,
            group,
            json,
        } => {
            let order = match (newest, oldest) {
                (true, _) => crate::inspect::Order::Newest,
                (_, true) => crate::inspect::Order::Oldest,
                _ => crate::inspect::Order::Natural,
            };
            if !(1..=crate::inspect::MAX_PAGE).contains(&limit) {
                return Err(Error::InvalidName(format!(
                    "--limit {limit}: a page holds 1-{} jobs",
                    crate::inspect::MAX_PAGE
                )));
            }
            let query = crate::inspect::ListQuery {
                limit,
                after,
                order,
                tenant,
                group,
            };
            let page = client.list_jobs(&queue, state, &query).await?;
            if json {
                println!("{}", to_json(&page)?);
                return Ok(0);
            }
            for j in &page.jobs {
                let when = j.when_ms();
                println!(
                    "{}\t{}\tpriority {}\tattempts {}\t{}\t{}",
                    j.id,
                    lowercase(&j.state),
                    j.priority,
                    j.attempts,
                    time(when),
                    j.last_error
                        .as_deref()
                        .unwrap_or("")
                        .lines()
                        .next()
                        .unwrap_or("")
                );
            }
            match &page.next {
                Some(next) => eprintln!("more: --after {next}"),
                None if page.jobs.is_empty() => {
                    eprintln!("no {} jobs in {queue}", lowercase(&state))
                }
                None => {}
            }
            Ok(0)
        }
        Command::Pause { queue } => {
            warn_if_unserved(&client, target, &queue).await;
            client.pause(&queue).await?;
            println!("paused {queue}: no daemon claims its jobs until `redq resume {queue}`");
            Ok(0)
        }
        Command::Resume { queue } => {
            warn_if_unserved(&client, target, &queue).await;
            client.resume(&queue).await?;
            println!("resumed {queue}");
            Ok(0)
        }
        Command::Export { queue, output } => export(&client, &queue, output).await,
        Command::Import { queue, input } => import(&client, &queue, input).await,
        Command::Usage(args) => super::usage::run(&client, target, args).await,
        Command::Run
        | Command::CheckConfig
        | Command::Config
        | Command::Setup { .. }
        | Command::Health { .. }
        | Command::Watch { .. }
        | Command::Dashboard(_) => Ok(2),
    }
}

/// Warns (stderr, exit code unchanged) when neither the config file nor a
/// live daemon's heartbeat names `queue`: most likely a mistyped name,
/// whose jobs would wait for a daemon that never comes. (FCALL and the
/// inbox stay silent: producers may start before any daemon.)
async fn warn_if_unserved(client: &Client, target: &Target, queue: &str) {
    if target.configured_queues.iter().any(|q| q == queue) {
        return;
    }
    let Ok(daemons) = client.store().daemons(crate::daemon::heartbeat::KEEP).await else {
        return;
    };
    if daemons.iter().any(|d| d.queues.iter().any(|q| q == queue)) {
        return;
    }
    let mut known: Vec<&str> = daemons
        .iter()
        .flat_map(|d| d.queues.iter().map(String::as_str))
        .chain(target.configured_queues.iter().map(String::as_str))
        .collect();
    known.sort_unstable();
    known.dedup();
    let known = if known.is_empty() {
        String::new()
    } else {
        format!(" (known queues: {})", known.join(", "))
    };
    eprintln!(
        "redq: warning: no queue {queue:?} in the config and no live daemon serves it{known}; \
         check the name: its jobs wait until a daemon serves {queue:?}"
    );
}

async fn enqueue(client: &Client, a: EnqueueArgs) -> Result<u8> {
    let payload = if a.payload == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map_err(|e| {
            Error::InvalidJob(format!(
                "field \"payload\": cannot read standard input: {e}"
            ))
        })?;
        s
    } else {
        a.payload
    };
    let mut job = NewJob::from_json(&payload)?.priority(a.priority);
    if let Some(d) = a.delay {
        job = job.delay(d);
    }
    if let Some(t) = a.run_at {
        job = job.run_at_ms(t);
    }
    if let Some(n) = a.max_attempts {
        job = job.max_attempts(n);
    }
    if let Some(t) = a.timeout {
        job = job.timeout(t);
    }
    if let Some(k) = a.unique_key {
        job = job.unique_key(k);
    }
    if let Some(t) = a.tenant {
        job = job.tenant(t);
    }
    if let Some(g) = a.group {
        job = job.group(g);
    }
    if let Some(id) = a.id {
        job = job.id(id);
    }
    match (a.outcome_ttl, a.wait) {
        (Some(ttl), _) => job = job.outcome_ttl(ttl),
        (None, true) => job = job.outcome_ttl(DEFAULT_WAIT_OUTCOME_TTL),
        (None, false) => {}
    }
    let done = client.enqueue(&a.queue, job).await?;
    println!("{}", done.id);
    match done.status {
        EnqueueStatus::Created => {}
        EnqueueStatus::Exists => eprintln!("redq: job {} already exists; nothing changed", done.id),
        EnqueueStatus::Duplicate => {
            eprintln!("redq: a live job holds that unique key: {}", done.id)
        }
    }
    if a.wait {
        return wait_for(client, &a.queue, &done.id, a.wait_timeout, false).await;
    }
    Ok(0)
}

/// How long `redq enqueue --wait` keeps the outcome when --outcome-ttl is not given.
const DEFAULT_WAIT_OUTCOME_TTL: std::time::Duration = std::time::Duration::from_secs(600);

/// Exit status of a wait that timed out (EX_TEMPFAIL: try again later).
const EXIT_WAIT_TIMED_OUT: u8 = 75;

/// `--wait`: blocks for the job's end, prints its outcome; exit 0 when it
/// succeeded, 1 when dead or cancelled, 75 when `timeout` passed first.
async fn wait_for(
    client: &Client,
    queue: &str,
    id: &str,
    timeout: std::time::Duration,
    json: bool,
) -> Result<u8> {
    match client.wait(queue, id, timeout).await? {
        Some(o) => {
            print_outcome(&o, json)?;
            Ok(u8::from(o.state != EndState::Succeeded))
        }
        None => {
            eprintln!(
                "redq: job {id} of queue {queue} has not ended after {}; `redq job {queue} {id}` shows where it is",
                crate::config::duration::format(timeout)
            );
            Ok(EXIT_WAIT_TIMED_OUT)
        }
    }
}

fn print_outcome(o: &JobOutcome, json: bool) -> Result<()> {
    if json {
        println!("{}", to_json(o)?);
        return Ok(());
    }
    println!("id:          {}", o.id);
    println!("state:       {}", o.state.as_str());
    println!("attempts:    {}", o.attempts);
    println!("finished:    {}", time(o.finished_ms));
    if let Some(e) = &o.last_error {
        println!("last error:  {e}");
    }
    if let Some(r) = &o.result {
        println!("result:      {r}");
    }
    Ok(())
}

async fn dead(client: &Client, cmd: DeadCommand) -> Result<u8> {
    match cmd {
        DeadCommand::List { queue, limit, json } => {
            let jobs = client.dead_list(&queue, 0, limit).await?;
            if json {
                println!("{}", to_json(&jobs)?);
            } else {
                for j in jobs {
                    println!(
                        "{}\tdied {}\tattempts {}\t{}",
                        j.id,
                        time(j.died_at_ms),
                        j.attempts,
                        j.last_error
                            .unwrap_or_default()
                            .lines()
                            .next()
                            .unwrap_or("")
                    );
                }
            }
            Ok(0)
        }
        DeadCommand::Retry { queue, ids, all } => {
            if all {
                println!(
                    "requeued {} dead jobs",
                    client.dead_retry_all(&queue).await?
                );
                return Ok(0);
            }
            if ids.is_empty() {
                return Err(Error::InvalidName(
                    "name the dead jobs to retry, or pass --all".into(),
                ));
            }
            let mut code = 0;
            for (id, r) in ids.iter().zip(client.dead_retry(&queue, &ids).await?) {
                match r {
                    DeadRetry::Requeued => println!("requeued {id}"),
                    DeadRetry::UniqueKeyTaken => {
                        eprintln!("redq: {id} stays dead: a live job holds its unique key");
                        code = 1;
                    }
                    DeadRetry::NotDead => {
                        eprintln!("redq: {id} is not in the dead set of {queue}");
                        code = 1;
                    }
                }
            }
            Ok(code)
        }
        DeadCommand::Purge {
            queue,
            ids,
            older_than,
            all,
        } => {
            let n = if !ids.is_empty() {
                client.dead_purge(&queue, &ids).await?
            } else if let Some(age) = older_than {
                client.dead_purge_older(&queue, age).await?
            } else if all {
                client
                    .dead_purge_older(&queue, std::time::Duration::ZERO)
                    .await?
            } else {
                return Err(Error::InvalidName(
                    "name the dead jobs to delete, or pass --older-than 7d or --all".into(),
                ));
            };
            println!("deleted {n} dead jobs");
            Ok(0)
        }
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string_pretty(v).map_err(|e| Error::protocol("json output", e.to_string()))
}

fn time(ms: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

/// A state's name as JSON writes it ("pending", "succeeded").
fn lowercase(state: &impl serde::Serialize) -> String {
    serde_json::to_value(state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn print_job(j: &JobInfo, json: bool) -> Result<()> {
    if json {
        println!("{}", to_json(j)?);
        return Ok(());
    }
    let state = lowercase(&j.state);
    println!("id:          {}", j.id);
    println!("queue:       {}", j.queue);
    println!("state:       {state}");
    println!("priority:    {}", j.priority);
    let max = j
        .max_attempts
        .map_or("queue default".to_owned(), |m| m.to_string());
    println!("attempts:    {} (max {max})", j.attempts);
    println!("enqueued:    {}", time(j.enqueued_at_ms));
    let optional = [
        ("run at:      ", j.run_at_ms),
        ("started:     ", j.started_at_ms),
        ("lease until: ", j.lease_deadline_ms),
        ("finished:    ", j.finished_at_ms),
    ];
    for (label, t) in optional {
        if let Some(t) = t {
            println!("{label}{}", time(t));
        }
    }
    for (label, v) in [
        ("tenant:      ", &j.tenant),
        ("group:       ", &j.group),
        ("unique key:  ", &j.unique_key),
    ] {
        if let Some(v) = v {
            println!("{label}{v}");
        }
    }
    println!("payload:     {}", j.payload.get());
    if let Some(r) = &j.resources {
        let ended = match (r.exit_code, r.signal) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(sig)) => format!("signal {sig}"),
            (None, None) => "not started".into(),
        };
        println!(
            "resources:   {ended}, wall {:.3}s, cpu {:.3}s user + {:.3}s sys, max rss {} KiB, out {} B, err {} B",
            r.wall_seconds, r.user_cpu_seconds, r.sys_cpu_seconds, r.max_rss_kib, r.stdout_bytes, r.stderr_bytes
        );
    }
    for a in &j.history {
        let first_line = a.error.lines().next().unwrap_or_default();
        println!(
            "attempt {}:   {} → {}: {first_line}",
            a.attempt,
            time(a.started_ms),
            time(a.ended_ms)
        );
    }
    if let Some(e) = &j.last_error {
        println!("last error:  {e}");
    }
    if let Some(r) = &j.result {
        println!("result:      {r}");
    }
    Ok(())
}

fn print_stats(stats: &[QueueStats], json: bool) -> Result<()> {
    if json {
        println!("{}", to_json(&stats)?);
        return Ok(());
    }
    println!(
        "{:<24} {:>9} {:>9} {:>7} {:>7} {:>9} {:>7} {:>7} {:>8} {:>8} {:>8} {:>9} {:>9}",
        "QUEUE",
        "PENDING",
        "SCHEDULED",
        "ACTIVE",
        "DEAD",
        "SUCCEEDED",
        "KEPT",
        "INBOX",
        "REJECTED",
        "OK/S",
        "FAILED/S",
        "RUN P50",
        "RUN P99"
    );
    for s in stats {
        let r = s.last_minute.unwrap_or_default();
        println!(
            "{:<24} {:>9} {:>9} {:>7} {:>7} {:>9} {:>7} {:>7} {:>8} {:>8.2} {:>8.2} {:>9} {:>9}{}",
            s.queue,
            s.pending,
            s.scheduled,
            s.active,
            s.dead,
            s.succeeded_total,
            s.succeeded,
            s.inbox,
            s.rejected,
            r.succeeded_per_sec,
            r.failed_per_sec,
            percentile(r.run_p50_ms),
            percentile(r.run_p99_ms),
            if s.paused { "  (paused)" } else { "" }
        );
    }
    Ok(())
}

async fn export(client: &Client, queue: &str, output: Option<std::path::PathBuf>) -> Result<u8> {
    let q = client.store().queue(queue)?;
    let io_err = |e: std::io::Error| Error::InvalidName(format!("cannot write the export: {e}"));
    let n = match output {
        Some(path) => {
            let file = std::fs::File::create(&path).map_err(io_err)?;
            let mut w = std::io::BufWriter::new(file);
            let n = crate::transfer::export(client.store(), &q, &mut w).await?;
            std::io::Write::flush(&mut w).map_err(io_err)?;
            n
        }
        None => {
            let mut w = std::io::BufWriter::new(std::io::stdout().lock());
            let n = crate::transfer::export(client.store(), &q, &mut w).await?;
            std::io::Write::flush(&mut w).map_err(io_err)?;
            n
        }
    };
    eprintln!("exported {n} jobs from {queue}");
    Ok(0)
}

async fn import(client: &Client, queue: &str, input: Option<std::path::PathBuf>) -> Result<u8> {
    use std::io::BufRead;
    let q = client.store().queue(queue)?;
    let reader: Box<dyn BufRead> = match input {
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(&path)
                .map_err(|e| Error::InvalidName(format!("{}: {e}", path.display())))?,
        )),
        None => Box::new(std::io::BufReader::new(std::io::stdin())),
    };
    crate::inspect::register(client.store(), &[queue]).await?;
    let (mut imported, mut skipped, mut refused) = (0, 0, 0);
    let mut batch = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line =
            line.map_err(|e| Error::InvalidName(format!("cannot read line {}: {e}", n + 1)))?;
        if line.trim().is_empty() {
            continue;
        }
        match crate::transfer::parse_line(&line) {
            Ok(job) => batch.push(job),
            Err(e) => {
                eprintln!("redq: line {} not imported: {e}", n + 1);
                refused += 1;
            }
        }
        if batch.len() >= 500 {
            let (i, s) = crate::transfer::import(client.store(), &q, &batch).await?;
            (imported, skipped) = (imported + i, skipped + s);
            batch.clear();
        }
    }
    let (i, s) = crate::transfer::import(client.store(), &q, &batch).await?;
    (imported, skipped) = (imported + i, skipped + s);
    println!("imported {imported} jobs into {queue}; skipped {skipped} whose id exists; refused {refused} lines");
    Ok(if refused > 0 { 1 } else { 0 })
}

/// A bucket bound as `<=N ms`, `-` when nothing ran.
fn percentile(ms: Option<f64>) -> String {
    match ms {
        Some(v) if v.is_finite() => format!("<={v}ms"),
        Some(_) => ">600s".into(),
        None => "-".into(),
    }
}

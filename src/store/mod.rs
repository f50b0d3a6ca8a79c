//! Typed wrappers around the Lua transitions: one method per script.
//!
//! A [`Store`] is cheap to clone (it shares one multiplexed, auto-reconnecting
//! connection). Every method is one Redis round trip, and the batch methods
//! (`enqueue`, `claim`, `complete`, `fail`, `extend`, `release`) serve many
//! jobs in that one trip. Read-only inspection lives in [`crate::inspect`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Value;

use crate::error::{Error, Result};
use crate::job::{PreparedJob, StoredJob};
use crate::keys::{self, QueueKeys};
use crate::scripts::{Scripts, Transition, SCRIPTS};
use crate::usage::Tally;

mod probe;
mod setup;
pub use setup::{QueueSettings, TenantLimits, ACTIVE_PIN_MEMBER, RUNS_PIN_FIELD};

/// Connection to Redis plus the key prefix.
#[derive(Clone)]
pub struct Store {
    con: ConnectionManager,
    prefix: String,
    /// Whether Redis has functions (7.0+): transitions run as functions of
    /// the internal library; without, as EVAL scripts.
    functions: Arc<AtomicBool>,
}

/// What happened to one enqueued job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnqueueStatus {
    /// A new job was added.
    Created,
    /// A job with this id already existed; nothing changed.
    Exists,
    /// A live job holds the unique key; the id returned is that job's.
    Duplicate,
}

/// The result of enqueueing one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    pub id: String,
    pub status: EnqueueStatus,
}

/// One claimed job: run it, then complete, fail or release it with `fence`.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub id: String,
    pub fence: u64,
    /// 1 on the first attempt.
    pub attempt: u32,
    /// The stored job, or why it could not be read (the caller should bury it).
    pub record: std::result::Result<StoredJob, String>,
}

impl ClaimedJob {
    /// The `i`-th job (from 0) of a claim or hand-off whose fences
    /// run consecutively from `first_fence`.
    fn nth(first_fence: u64, i: usize, id: String, attempt: i64, record: &str) -> ClaimedJob {
        ClaimedJob {
            id,
            fence: first_fence.saturating_add(i as u64),
            attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
            record: StoredJob::parse(record),
        }
    }
}

/// The reply of one claim call.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Redis's clock when the claim ran (ms).
    pub now_ms: i64,
    /// When fewer jobs than asked were handed out: when the next scheduled
    /// job is due or, when `throttled`, when the rate limit has room again (Redis ms).
    pub next_due_ms: Option<i64>,
    pub paused: bool,
    /// The queue's rate limit held back jobs that are ready; they wait in
    /// `pending` (no attempt spent) until `next_due_ms`.
    pub throttled: bool,
    pub jobs: Vec<ClaimedJob>,
}

/// The reply of one promote call ([`Store::promote`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Promoted {
    /// Redis's clock when it ran (ms).
    pub now_ms: i64,
    /// Jobs moved into pending.
    pub moved: u64,
    /// When the earliest job still scheduled is due (Redis ms); at or before
    /// `now_ms` when more were due than one call moves.
    pub next_due_ms: Option<i64>,
}

/// Reads one element of a daemon's hand-off list (see [`QueueKeys::handoff`]):
/// jobs an enqueue leased directly to that daemon, as a claim would have.
/// `paused`, `throttled` and `next_due_ms` do not apply.
///
/// The element (written by `hand_off` in lib/handoff.lua) is
/// `<now_ms>,<first fence>` and then, per job,
/// `\n<id>,<attempt>,<record length in bytes>\n<record>`: the record is
/// passed through as it is, so its length, not a delimiter, ends it.
pub fn parse_handoff(payload: &str) -> Result<Claimed> {
    let bad = |why: &str| Error::protocol("handoff", why.to_owned());
    let int = |s: Option<&str>, what: &str| -> Result<i64> {
        s.and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(&format!("{what} is not an integer")))
    };
    let (head, mut rest) = payload.split_once('\n').unwrap_or((payload, ""));
    let mut fields = head.split(',');
    let now_ms = int(fields.next(), "now_ms")?;
    let first_fence = u64::try_from(int(fields.next(), "the first fence")?)
        .map_err(|_| bad("the first fence is not a positive integer"))?;
    let mut jobs = Vec::new();
    while !rest.is_empty() {
        let (line, after) = rest
            .split_once('\n')
            .ok_or_else(|| bad("a job line without its record"))?;
        let mut fields = line.rsplitn(3, ',');
        let len = usize::try_from(int(fields.next(), "the record length")?)
            .map_err(|_| bad("the record length is negative"))?;
        let attempt = int(fields.next(), "the attempt")?;
        let id = fields
            .next()
            .ok_or_else(|| bad("a job line without an id"))?;
        let record = after
            .get(..len)
            .ok_or_else(|| bad("a record shorter than its length"))?;
        jobs.push(ClaimedJob::nth(
            first_fence,
            jobs.len(),
            id.to_owned(),
            attempt,
            record,
        ));
        let tail = &after[len..];
        rest = match tail.strip_prefix('\n') {
            Some(next) => next,
            None if tail.is_empty() => tail,
            None => return Err(bad("a record longer than its length")),
        };
    }
    Ok(Claimed {
        now_ms,
        next_due_ms: None,
        paused: false,
        throttled: false,
        jobs,
    })
}

/// How many finished jobs a queue keeps, and for how long (0 = no age limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub keep: u64,
    pub max_age: Duration,
}

/// A successful attempt to record.
#[derive(Debug, Clone)]
pub struct Completion<'a> {
    pub id: &'a str,
    pub fence: u64,
    pub unique_key: Option<&'a str>,
    pub result: Option<&'a str>,
}

/// A failed attempt to record.
#[derive(Debug, Clone)]
pub struct Failure<'a> {
    pub id: &'a str,
    pub fence: u64,
    /// `Some(delay)`: retry after the delay; `None`: dead now.
    pub retry_in: Option<Duration>,
    pub error: &'a str,
    pub unique_key: Option<&'a str>,
}

/// A pool's offer to take direct hand-offs, made with its claims
/// ([`Store::claim_as`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandoffOffer<'a> {
    /// The pool's hand-off name, `<daemon id>.<pool number>`: its field in
    /// the queue's `idle` hash and the tail of its hand-off list's key.
    pub name: &'a str,
    /// How long a registration lasts unless renewed.
    pub ttl: Duration,
}

/// What a dead-set retry did to one id ([`Store::dead_retry`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadRetry {
    /// Back to pending, with fresh attempts.
    Requeued,
    /// Not in the dead set (unknown id, or not dead); nothing changed.
    NotDead,
    /// It stays dead: a live job holds its unique key.
    UniqueKeyTaken,
}

/// What a fail call did to one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailResult {
    Retrying,
    Dead,
    /// The fence was not the job's current one; nothing changed.
    Stale,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Store {
    /// Connects to `url` (redis://, rediss://), reconnecting by itself with
    /// capped backoff; 5 s to connect, 30 s for an answer.
    pub async fn connect(url: &str, prefix: &str) -> Result<Store> {
        Store::connect_with(url, prefix, Duration::from_secs(5), Duration::from_secs(30)).await
    }

    /// Like [`Store::connect`] with the connect and command time-outs given
    /// (`[redis] connect_timeout`, `command_timeout`).
    pub async fn connect_with(
        url: &str,
        prefix: &str,
        connect: Duration,
        command: Duration,
    ) -> Result<Store> {
        keys::check_prefix(prefix)?;
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect))
            .set_response_timeout(Some(command))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let con = ConnectionManager::new_with_config(client, config).await?;
        Ok(Store {
            con,
            prefix: prefix.to_owned(),
            functions: Arc::new(AtomicBool::new(true)),
        })
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A connection handle (shares the multiplexed connection).
    pub fn connection(&self) -> ConnectionManager {
        self.con.clone()
    }

    /// The keys of `queue`, checking its name.
    pub fn queue(&self, queue: &str) -> Result<QueueKeys> {
        QueueKeys::new(&self.prefix, queue)
    }

    async fn run(
        &self,
        pick: fn(&Scripts) -> &Transition,
        q: &QueueKeys,
        args: Vec<String>,
    ) -> Result<Value> {
        self.run_with(pick, q, None, args).await
    }

    /// [`Store::run`] with one more key after the queue's (same hash tag).
    ///
    /// One round trip: `FCALL` of the transition's function in the internal
    /// library. Only when Redis answers that the function is not there (a
    /// new version, a Redis restarted without persistence, `FUNCTION
    /// FLUSH`) does it load the library and call again; nothing ran the
    /// first time, so the second call is the only one that acts. A Redis
    /// without functions (< 7.0) gets the same Lua as an EVAL script, and so
    /// does a call whose library Redis refused to load (at `maxmemory`,
    /// where `FUNCTION LOAD` is refused but a freeing transition must run).
    async fn run_with(
        &self,
        pick: fn(&Scripts) -> &Transition,
        q: &QueueKeys,
        extra_key: Option<&str>,
        args: Vec<String>,
    ) -> Result<Value> {
        let t = pick(&SCRIPTS);
        let mut con = self.con.clone();
        if self.functions.load(Ordering::Relaxed) {
            let mut call = redis::cmd("FCALL");
            call.arg(&t.function)
                .arg(1 + usize::from(extra_key.is_some()))
                .arg(q.base())
                .arg(extra_key)
                .arg(&args);
            match call.query_async(&mut con).await {
                Ok(v) => return Ok(v),
                Err(e) if e.to_string().contains("Function not found") => {
                    if crate::scripts::load_internal_library(&mut con).await? {
                        return Ok(call.query_async(&mut con).await?);
                    }
                }
                Err(e) if e.to_string().contains("unknown command") => {
                    self.functions.store(false, Ordering::Relaxed);
                }
                Err(e) => return Err(e.into()),
            }
        }
        let mut inv = t.script.prepare_invoke();
        inv.key(q.base());
        if let Some(k) = extra_key {
            inv.key(k);
        }
        for a in args {
            inv.arg(a);
        }
        Ok(inv.invoke_async(&mut con).await?)
    }

    /// Runs `import.lua` (see [`crate::transfer::import`]): 8 arguments per job.
    pub(crate) async fn import(&self, q: &QueueKeys, args: Vec<String>) -> Result<Value> {
        self.run(|s| &s.import, q, args).await
    }

    /// Runs `cron_enqueue.lua` (see `daemon::cron::offer`), which also
    /// reads and writes the queue's cron record.
    pub(crate) async fn cron_enqueue(&self, q: &QueueKeys, args: Vec<String>) -> Result<Value> {
        self.run_with(|s| &s.cron_enqueue, q, Some(&q.cron()), args)
            .await
    }

    /// Adds checked jobs to one queue in one round trip.
    pub async fn enqueue(&self, q: &QueueKeys, jobs: &[PreparedJob]) -> Result<Vec<Enqueued>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = Vec::with_capacity(jobs.len() * 7);
        for j in jobs {
            args.extend([
                j.id.clone(),
                j.doc.clone(),
                j.priority.to_string(),
                j.max_attempts.to_string(),
                j.delay_ms.to_string(),
                j.run_at_ms.to_string(),
                j.unique_key.clone(),
            ]);
        }
        let reply = array(self.run(|s| &s.enqueue, q, args).await?, "enqueue")?;
        reply
            .chunks(2)
            .map(|pair| {
                let status = match text(pair.first(), "enqueue")?.as_str() {
                    "created" => EnqueueStatus::Created,
                    "exists" => EnqueueStatus::Exists,
                    "duplicate" => EnqueueStatus::Duplicate,
                    other => {
                        return Err(Error::protocol(
                            "enqueue",
                            format!("unknown status {other:?}"),
                        ))
                    }
                };
                Ok(Enqueued {
                    id: text(pair.get(1), "enqueue")?,
                    status,
                })
            })
            .collect()
    }

    /// Claims up to `max` ready jobs under a lease of `lease`, after promoting
    /// up to `promote` due jobs and taking up to `inbox` inbox documents.
    /// The queue's rate limit and group concurrency (see [`Store::set_limits`])
    /// may hand out fewer.
    pub async fn claim(
        &self,
        q: &QueueKeys,
        max: usize,
        lease: Duration,
        promote: usize,
        inbox: usize,
    ) -> Result<Claimed> {
        self.claim_as(q, max, lease, promote, inbox, None).await
    }

    /// [`Store::claim`] by a pool that takes direct hand-offs (`offer`):
    /// when the claim leaves it with free slots, it is registered for the
    /// hand-off of newly enqueued jobs (see [`parse_handoff`]); any other
    /// claim by it ends that registration.
    ///
    /// One call hands out at most [`MAX_CALL_JOBS`] jobs, whatever `max`.
    pub async fn claim_as(
        &self,
        q: &QueueKeys,
        max: usize,
        lease: Duration,
        promote: usize,
        inbox: usize,
        offer: Option<HandoffOffer<'_>>,
    ) -> Result<Claimed> {
        let mut args = vec![
            max.min(MAX_CALL_JOBS).to_string(),
            ms(lease).to_string(),
            promote.to_string(),
            inbox.to_string(),
        ];
        if let Some(o) = offer {
            args.extend([o.name.to_owned(), ms(o.ttl).to_string()]);
        }
        let reply = array(self.run(|s| &s.claim, q, args).await?, "claim")?;
        let (head, rest) = reply.split_at(reply.len().min(5));
        let now_ms = int(head.first(), "claim")?;
        let next_due = int(head.get(1), "claim")?;
        // Fences are consecutive from the first (see claim.lua).
        let first_fence = u64::try_from(int(head.get(4), "claim")?)
            .map_err(|_| Error::protocol("claim", "fence is not a positive integer"))?;
        let mut jobs = Vec::with_capacity(rest.len() / 3);
        for (i, job) in rest.chunks(3).enumerate() {
            jobs.push(ClaimedJob::nth(
                first_fence,
                i,
                text(job.first(), "claim")?,
                int(job.get(1), "claim")?,
                &text(job.get(2), "claim")?,
            ));
        }
        Ok(Claimed {
            now_ms,
            next_due_ms: (next_due >= 0).then_some(next_due),
            paused: int(head.get(2), "claim")? == 1,
            throttled: int(head.get(3), "claim")? == 1,
            jobs,
        })
    }

    /// Ends `daemon`'s hand-off registration on `q` and takes what was
    /// already handed to it (raw list elements, for [`parse_handoff`]).
    /// Atomic: an enqueue either ran before (its element is taken here) or
    /// after (it finds no registration).
    pub async fn end_handoff(&self, q: &QueueKeys, daemon: &str) -> Result<Vec<String>> {
        let key = q.handoff(daemon);
        let (_, taken, _): (i64, Vec<String>, i64) = redis::pipe()
            .atomic()
            .hdel(q.idle(), daemon)
            .lrange(&key, 0, -1)
            .del(&key)
            .query_async(&mut self.connection())
            .await?;
        Ok(taken)
    }

    /// Records successes; returns per job whether it completed (false: stale fence).
    pub async fn complete(
        &self,
        q: &QueueKeys,
        done: &[Completion<'_>],
        keep: Retention,
    ) -> Result<Vec<bool>> {
        self.complete_with(q, done, keep, &[], None, Duration::ZERO)
            .await
    }

    /// [`Store::complete`], also keeping each job's resources JSON (`resources[i]`
    /// for `done[i]`; missing or `None`: none) while the job is kept, and
    /// adding the batch's `usage` in the same atomic step (not when every
    /// job of the batch is stale, as on a resend after a lost reply).
    pub async fn complete_with(
        &self,
        q: &QueueKeys,
        done: &[Completion<'_>],
        keep: Retention,
        resources: &[Option<&str>],
        usage: Option<&Tally>,
        usage_retention: Duration,
    ) -> Result<Vec<bool>> {
        if done.is_empty() {
            return Ok(Vec::new());
        }
        let keep_result = keep.keep > 0;
        // complete.lua's layout: id and fence per job, then extras only for
        // the jobs that have any (see the script's header).
        let mut args = Vec::with_capacity(5 + 2 * done.len());
        args.extend([
            keep.keep.to_string(),
            ms(keep.max_age).to_string(),
            done.len().to_string(),
        ]);
        let usage_key = usage_args(&mut args, q, usage, usage_retention);
        for c in done {
            args.extend([c.id.to_owned(), c.fence.to_string()]);
        }
        for (i, c) in done.iter().enumerate() {
            let unique = c.unique_key.unwrap_or_default();
            let result = if keep_result {
                c.result.unwrap_or_default()
            } else {
                ""
            };
            let res = resources.get(i).copied().flatten().unwrap_or("");
            if !(unique.is_empty() && result.is_empty() && res.is_empty()) {
                args.extend([
                    (i + 1).to_string(),
                    unique.to_owned(),
                    result.to_owned(),
                    res.to_owned(),
                ]);
            }
        }
        flags(
            self.run_with(|s| &s.complete, q, usage_key.as_deref(), args)
                .await?,
            "complete",
        )
    }

    /// Records failures: each job is scheduled for a retry or moved to the dead set.
    pub async fn fail(
        &self,
        q: &QueueKeys,
        failed: &[Failure<'_>],
        dead: Retention,
    ) -> Result<Vec<FailResult>> {
        self.fail_with(q, failed, dead, &[], None, Duration::ZERO)
            .await
    }

    /// [`Store::fail`], also keeping each job's resources JSON (`resources[i]` for
    /// `failed[i]`; missing or `None`: none), and adding `usage` as
    /// [`Store::complete_with`] does.
    pub async fn fail_with(
        &self,
        q: &QueueKeys,
        failed: &[Failure<'_>],
        dead: Retention,
        resources: &[Option<&str>],
        usage: Option<&Tally>,
        usage_retention: Duration,
    ) -> Result<Vec<FailResult>> {
        if failed.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = vec![dead.keep.to_string(), ms(dead.max_age).to_string()];
        let usage_key = usage_args(&mut args, q, usage, usage_retention);
        for (i, f) in failed.iter().enumerate() {
            args.extend([
                f.id.to_owned(),
                f.fence.to_string(),
                f.retry_in.map_or("-1".to_owned(), |d| ms(d).to_string()),
                f.error.to_owned(),
                f.unique_key.unwrap_or_default().to_owned(),
                resources.get(i).copied().flatten().unwrap_or("").to_owned(),
            ]);
        }
        let reply = array(
            self.run_with(|s| &s.fail, q, usage_key.as_deref(), args)
                .await?,
            "fail",
        )?;
        reply
            .iter()
            .map(|v| match int(Some(v), "fail")? {
                1 => Ok(FailResult::Retrying),
                2 => Ok(FailResult::Dead),
                _ => Ok(FailResult::Stale),
            })
            .collect()
    }

    /// Renews leases; returns Redis's clock and per job whether it was renewed.
    pub async fn extend(
        &self,
        q: &QueueKeys,
        held: &[(&str, u64)],
        lease: Duration,
    ) -> Result<(i64, Vec<bool>)> {
        let mut first_now = None;
        let mut ok = Vec::with_capacity(held.len());
        // At most MAX_CALL_JOBS per call; `now` is the first call's (the
        // earliest, so deadlines computed from it are never late).
        for part in held.chunks(MAX_CALL_JOBS) {
            let mut args = vec![ms(lease).to_string()];
            for (id, fence) in part {
                args.extend([(*id).to_owned(), fence.to_string()]);
            }
            let reply = array(self.run(|s| &s.extend, q, args).await?, "extend")?;
            first_now.get_or_insert(int(reply.first(), "extend")?);
            for v in reply.iter().skip(1) {
                ok.push(int(Some(v), "extend")? == 1);
            }
        }
        Ok((first_now.unwrap_or(0), ok))
    }

    /// Gives jobs back without spending an attempt; per job whether it was released.
    pub async fn release(&self, q: &QueueKeys, held: &[(&str, u64)]) -> Result<Vec<bool>> {
        // At most MAX_CALL_JOBS per call, the last ones first: each call puts
        // its jobs at the head of the pending jobs, so the first ones end up first.
        let mut parts: Vec<Vec<bool>> = Vec::new();
        for part in held.rchunks(MAX_CALL_JOBS) {
            let args = part
                .iter()
                .flat_map(|(id, t)| [(*id).to_owned(), t.to_string()])
                .collect();
            parts.push(flags(self.run(|s| &s.release, q, args).await?, "release")?);
        }
        Ok(parts.into_iter().rev().flatten().collect())
    }

    /// Rescues up to `limit` jobs whose lease expired at least `grace` ago
    /// (the daemon passes [`TAKEOVER_GRACE`]); returns (requeued, dead).
    pub async fn reap(
        &self,
        q: &QueueKeys,
        limit: usize,
        default_max_attempts: u32,
        dead: Retention,
        grace: Duration,
    ) -> Result<(u64, u64)> {
        let args = vec![
            limit.to_string(),
            default_max_attempts.to_string(),
            dead.keep.to_string(),
            ms(dead.max_age).to_string(),
            ms(grace).to_string(),
        ];
        let reply = array(self.run(|s| &s.reap, q, args).await?, "reap")?;
        let n = |i| int(reply.get(i), "reap").map(|v| u64::try_from(v).unwrap_or(0));
        Ok((n(0)?, n(1)?))
    }

    /// Moves up to `limit` due scheduled jobs of `q` into pending (delayed
    /// jobs, retries), hands them to idle daemons or wakes one (promote.lua).
    pub async fn promote(&self, q: &QueueKeys, limit: usize) -> Result<Promoted> {
        let args = vec![limit.min(MAX_CALL_JOBS).to_string()];
        let reply = array(self.run(|s| &s.promote, q, args).await?, "promote")?;
        let next = int(reply.get(2), "promote")?;
        Ok(Promoted {
            now_ms: int(reply.first(), "promote")?,
            moved: u64::try_from(int(reply.get(1), "promote")?).unwrap_or(0),
            next_due_ms: (next >= 0).then_some(next),
        })
    }

    /// Redis's clock (ms) and, per queue, when its earliest scheduled job is
    /// due (`None`: nothing scheduled), in one pipeline.
    pub async fn scheduled_heads(&self, queues: &[&QueueKeys]) -> Result<(i64, Vec<Option<i64>>)> {
        let mut pipe = redis::pipe();
        pipe.cmd("TIME");
        for q in queues {
            pipe.cmd("ZRANGE")
                .arg(q.scheduled())
                .arg(0)
                .arg(0)
                .arg("WITHSCORES");
        }
        let reply: Vec<Value> = pipe.query_async(&mut self.con.clone()).await?;
        let (now_ms, heads) = split_time(reply, "scheduled_heads")?;
        let heads = heads
            .into_iter()
            .map(|v| {
                let head: Vec<(String, f64)> = redis::from_redis_value(v)
                    .map_err(|e| Error::protocol("scheduled_heads", e.to_string()))?;
                // Due times are whole ms well inside f64's exact range.
                Ok(head.first().map(|(_, due)| *due as i64))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((now_ms, heads))
    }

    /// Puts dead jobs back to pending, with fresh attempts; what happened to each id.
    pub async fn dead_retry(&self, q: &QueueKeys, ids: &[String]) -> Result<Vec<DeadRetry>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let reply = array(
            self.run(|s| &s.dead_retry, q, ids.to_vec()).await?,
            "dead_retry",
        )?;
        reply
            .iter()
            .map(|v| match int(Some(v), "dead_retry")? {
                1 => Ok(DeadRetry::Requeued),
                0 => Ok(DeadRetry::NotDead),
                2 => Ok(DeadRetry::UniqueKeyTaken),
                n => Err(Error::protocol("dead_retry", format!("unknown code {n}"))),
            })
            .collect()
    }

    /// Deletes the given dead jobs; returns how many were deleted.
    pub async fn dead_purge_ids(&self, q: &QueueKeys, ids: &[String]) -> Result<u64> {
        let mut args = vec!["ids".to_owned(), "0".to_owned()];
        args.extend(ids.iter().cloned());
        let (n, _) = self.dead_purge(q, args).await?;
        Ok(n)
    }

    /// Deletes dead jobs that died at least `older_than` ago (all when zero).
    /// One call deletes a bounded batch (dead_purge.lua's `PURGE_BATCH`) and
    /// says whether it stopped there; this calls again until it did not.
    pub async fn dead_purge_older(&self, q: &QueueKeys, older_than: Duration) -> Result<u64> {
        let mut total = 0;
        loop {
            let args = vec!["age".to_owned(), ms(older_than).to_string()];
            let (n, more) = self.dead_purge(q, args).await?;
            total += n;
            if !more {
                return Ok(total);
            }
        }
    }

    /// Runs `dead_purge.lua`: how many jobs it deleted, and whether more may
    /// be due (it stopped at its batch).
    async fn dead_purge(&self, q: &QueueKeys, args: Vec<String>) -> Result<(u64, bool)> {
        let reply = array(self.run(|s| &s.dead_purge, q, args).await?, "dead_purge")?;
        let n = int(reply.first(), "dead_purge")?;
        let more = int(reply.get(1), "dead_purge")?;
        Ok((u64::try_from(n).unwrap_or(0), more == 1))
    }

    /// Stops every daemon from claiming jobs of this queue; enqueues still work.
    pub async fn pause(&self, q: &QueueKeys) -> Result<()> {
        redis::cmd("HSET")
            .arg(q.meta())
            .arg("paused")
            .arg("1")
            .query_async::<()>(&mut self.con.clone())
            .await?;
        Ok(())
    }

    /// Lets daemons claim again, and wakes idle ones.
    pub async fn resume(&self, q: &QueueKeys) -> Result<()> {
        redis::pipe()
            .atomic()
            .hdel(q.meta(), "paused")
            .ignore()
            .lpush(q.wake(), "1")
            .ignore()
            .ltrim(q.wake(), 0, 0)
            .ignore()
            .query_async::<()>(&mut self.con.clone())
            .await?;
        Ok(())
    }
}

/// Most jobs one call claims, renews or releases. A script passes each
/// call's ids to Redis commands as Lua values, and Lua's `unpack` takes at
/// most ~8000 of them; a claim of more (a pool of up to 10 000 slots) would
/// fail after taking its pending jobs. Callers split larger sets.
pub const MAX_CALL_JOBS: usize = 1000;

/// How long after a lease's deadline (on Redis's clock) the job may be
/// taken over. A daemon stops a job whose lease it could not renew
/// `daemon::leases::self_fence_margin` (at most 500 ms) before the deadline
/// on its own monotonic clock, which runs no later than Redis's; the grace
/// is larger than that margin, so the old run is over before the new one
/// starts even when the old daemon's timer fired late.
pub const TAKEOVER_GRACE: Duration = Duration::from_secs(1);

/// Appends the usage section of complete.lua / fail.lua (field count, expiry,
/// then field and amount pairs; "0", "0" for none) and returns the day hash
/// to pass as the extra key.
fn usage_args(
    args: &mut Vec<String>,
    q: &QueueKeys,
    usage: Option<&Tally>,
    retention: Duration,
) -> Option<String> {
    match usage.filter(|t| !t.is_empty()) {
        Some(t) => {
            let (key, more) = t.script_args(q, retention);
            args.extend(more);
            Some(key)
        }
        None => {
            args.extend(["0".to_owned(), "0".to_owned()]);
            None
        }
    }
}

fn array(v: Value, context: &'static str) -> Result<Vec<Value>> {
    match v {
        Value::Array(items) => Ok(items),
        other => Err(Error::protocol(
            context,
            format!("expected an array, got {other:?}"),
        )),
    }
}

fn flags(v: Value, context: &'static str) -> Result<Vec<bool>> {
    array(v, context)?
        .iter()
        .map(|v| int(Some(v), context).map(|n| n == 1))
        .collect()
}

pub(crate) fn int(v: Option<&Value>, context: &'static str) -> Result<i64> {
    match v {
        Some(Value::Int(n)) => Ok(*n),
        Some(Value::BulkString(b)) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::protocol(context, "expected an integer")),
        other => Err(Error::protocol(
            context,
            format!("expected an integer, got {other:?}"),
        )),
    }
}

pub(crate) fn text(v: Option<&Value>, context: &'static str) -> Result<String> {
    match v {
        Some(Value::BulkString(b)) => Ok(String::from_utf8_lossy(b).into_owned()),
        Some(Value::SimpleString(s)) => Ok(s.clone()),
        Some(Value::Int(n)) => Ok(n.to_string()),
        other => Err(Error::protocol(
            context,
            format!("expected a string, got {other:?}"),
        )),
    }
}

/// Splits the reply of a pipeline that starts with TIME: Redis's clock in
/// ms, and the replies of the commands after it.
pub(crate) fn split_time(
    mut reply: Vec<Value>,
    context: &'static str,
) -> Result<(i64, Vec<Value>)> {
    let rest = reply.split_off(1.min(reply.len()));
    let time = reply.pop().unwrap_or(Value::Nil);
    let (sec, usec): (i64, i64) =
        redis::from_redis_value(time).map_err(|e| Error::protocol(context, e.to_string()))?;
    Ok((sec * 1000 + usec / 1000, rest))
}

#[cfg(test)]
mod tests {
    use super::parse_handoff;

    #[test]
    fn a_hand_off_element_is_read_by_lengths_whatever_its_records_hold() {
        // Records as FCALL producers may store them: raw newlines, commas
        // and multi-byte characters inside the document.
        let r1 = "0;0;1700000000000;{\"payload\":\"a,b\\nc\"}";
        let r2 = "5;3;1700000000001;{\n \"payload\": \"é\\n,\"\n}";
        let element = format!(
            "1700000000002,41\nid-1,1,{}\n{r1}\nid-2,4,{}\n{r2}",
            r1.len(),
            r2.len()
        );
        let got = parse_handoff(&element).unwrap();
        assert_eq!(got.now_ms, 1_700_000_000_002);
        let jobs: Vec<_> = got
            .jobs
            .iter()
            .map(|j| (j.id.as_str(), j.attempt, j.fence))
            .collect();
        assert_eq!(jobs, [("id-1", 1, 41), ("id-2", 4, 42)]);
        let priority = got.jobs[1].record.as_ref().unwrap().priority;
        assert_eq!(priority, 5);
    }

    #[test]
    fn a_damaged_hand_off_element_is_an_error_not_a_panic() {
        for bad in [
            "",
            "x,1",
            "1,-1",
            "1,1\nid,1,99\nshort",
            "1,1\nid,1,2\nlonger",
            "1,1\nid,1\nab",
            "1,1\nid,1,1\né",
            "1,1\nno newline after the job line",
        ] {
            assert!(parse_handoff(bad).is_err(), "{bad:?}");
        }
        // No jobs at all is a valid (empty) element.
        assert!(parse_handoff("1,1").unwrap().jobs.is_empty());
    }
}

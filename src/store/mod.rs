//! The one place that talks to Redis: every command redq sends, every value
//! format it writes, and every connection it opens go through here.
//!
//! A [`Store`] is cheap to clone (it shares one multiplexed, auto-reconnecting
//! connection). Transitions are typed methods, one per Lua script, grouped by
//! what they do to a job: [`enqueue`] (adding), [`claim`] (taking, and the
//! direct hand-off), [`finish`] (completing, failing, renewing, releasing,
//! reaping), [`schedule`] (due jobs), [`dead`] (the dead set, pausing). Queue
//! settings are [`setup`], the checks of Redis itself [`probe`] and
//! [`server`]. Every method is one Redis round trip, and the batch methods
//! (`enqueue`, `claim`, `complete`, `fail`, `extend`, `release`) serve many
//! jobs in that one trip. Read-only inspection is [`crate::inspect`].
//!
//! Besides the shared connection, the store hands out the two dedicated ones
//! the daemon needs: a blocking connection for the waker's BLPOP
//! ([`Store::blocking`]) and a Pub/Sub connection for the promoter
//! ([`Store::subscriber`]); only they send commands outside this module.

use std::sync::Arc;
use std::time::Duration;

use redis::Value;

use crate::error::{Error, Result};
use crate::keys::{self, QueueKeys};
use crate::scripts::{Scripts, Transition, SCRIPTS};

pub mod acl;
mod board;
mod cancel;
mod census;
mod claim;
mod cluster;
mod connect;
mod cron;
mod dead;
mod enqueue;
mod events;
mod finish;
mod functions;
mod handoff;
pub mod heartbeat;
pub mod inspect;
mod lock;
mod outcome;
mod probe;
mod schedule;
mod sentinel;
mod server;
mod setup;
pub use board::MinuteCount;
pub use cancel::WasIn;
pub use claim::{parse_handoff, Claimed, ClaimedJob, HandoffOffer};
pub use cluster::{slot, tag};
pub use connect::{describe, parse_host_port, Endpoint, TlsFileError, TlsFiles};
pub use cron::{CronOutcome, CronTick};
pub use dead::DeadRetry;
pub use enqueue::{EnqueueStatus, Enqueued, ImportJob};
pub use events::Event;
pub use finish::{Completion, FailResult, Failure, Renewal, Retention};
pub use functions::{InternalLibrary, PublicLibrary, RETRY_FCALL};
pub use handoff::Registration;
pub use heartbeat::{Beat, DaemonInfo, RateDelta};
pub(crate) use lock::{lock_value, LockAnswer};
pub use outcome::{EndState, JobOutcome};
pub use schedule::Promoted;
pub use server::{Finding, ServerFacts, Severity};
pub use setup::{QueueSettings, TenantLimits, ACTIVE_PIN_MEMBER, RUNS_PIN_FIELD};

/// Connection to Redis plus the key prefix.
#[derive(Clone)]
pub struct Store {
    con: cluster::Conn,
    /// Where Redis is, for the dedicated connections ([`Store::blocking`],
    /// [`Store::subscriber`]).
    endpoint: Arc<Endpoint>,
    prefix: String,
    /// How transitions run: as functions of the internal library, or as
    /// EVALSHA scripts (see [`functions`]).
    functions: Arc<functions::Functions>,
    /// `redis.wait_replicas` and `redis.wait_timeout`: enqueues and
    /// completions answer once this many replicas have them.
    wait: Option<(u32, Duration)>,
    /// `redis.command_timeout`, for the connections of its own it opens.
    command_timeout: Duration,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Store {
    /// Connects to `url` (redis://, rediss:// with the bundled CA roots,
    /// redis+unix://); 5 s to connect, 30 s for an answer.
    pub async fn connect(url: &str, prefix: &str) -> Result<Store> {
        Store::connect_with(url, prefix, Duration::from_secs(5), Duration::from_secs(30)).await
    }

    /// Like [`Store::connect`] with the connect and command time-outs given.
    pub async fn connect_with(
        url: &str,
        prefix: &str,
        connect: Duration,
        command: Duration,
    ) -> Result<Store> {
        let redis = crate::config::RedisConfig {
            url: url.to_owned(),
            key_prefix: prefix.to_owned(),
            connect_timeout: connect,
            command_timeout: command,
            ..Default::default()
        };
        Store::open(&redis).await
    }

    /// Connects as `[redis]` says: URL, key prefix, time-outs and
    /// `[redis.tls]`. The connection is opened now (an unreachable Redis is
    /// an error here), and opened again by the next call after it breaks.
    pub async fn open(redis: &crate::config::RedisConfig) -> Result<Store> {
        keys::check_prefix(&redis.key_prefix)?;
        let endpoint = Arc::new(Endpoint::from_config(redis)?);
        let con = if redis.is_cluster() {
            cluster::Conn::Cluster(cluster::open(redis, &endpoint).await?)
        } else {
            let con = connect::Shared::new(endpoint.clone(), Some(redis.command_timeout));
            con.get().await?;
            cluster::Conn::Single(con)
        };
        Ok(Store {
            con,
            endpoint,
            prefix: redis.key_prefix.clone(),
            functions: Arc::default(),
            wait: (redis.wait_replicas > 0).then_some((redis.wait_replicas, redis.wait_timeout)),
            command_timeout: redis.command_timeout,
        })
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The URL Redis is reached at, without credentials.
    pub fn shown_url(&self) -> &str {
        self.endpoint.shown()
    }

    /// With `redis.wait_replicas`, before a write [`Store::replicated`]
    /// will cover: the number of the shared connection it goes out on.
    async fn before_write(&self) -> Result<Option<u64>> {
        match self.wait {
            Some(_) => Ok(Some(self.con.number().await?)),
            None => Ok(None),
        }
    }

    /// With `redis.wait_replicas`: waits until that many replicas hold what
    /// this connection wrote so far (`WAIT`, sent after the write was
    /// answered, so it covers it); an error says how many did in time.
    /// `written_on` is [`Store::before_write`]'s number: `WAIT` only counts
    /// what its own connection wrote, so when the shared connection was
    /// replaced between the write and the `WAIT` (a failover: the new
    /// connection, to the new primary, wrote nothing, and its `WAIT` would
    /// answer at once) the write counts as not replicated.
    async fn replicated(&self, what: &str, written_on: Option<u64>) -> Result<()> {
        let (Some((wanted, within)), Some(written_on)) = (self.wait, written_on) else {
            return Ok(());
        };
        let acked: i64 = redis::cmd("WAIT")
            .arg(wanted)
            .arg(ms(within))
            .query_async(&mut self.connection())
            .await?;
        // Connection numbers only grow: the same number before the write
        // and after the WAIT means both went out on that one connection.
        if self.con.number().await? != written_on {
            return Err(Error::NotReplicated(format!(
                "the {what} reached Redis, but the connection was lost before its replicas could be counted (a failover?): a failover now could lose it; call again (an enqueue with the same id, a completion with the same fence, changes nothing twice)"
            )));
        }
        if acked >= i64::from(wanted) {
            return Ok(());
        }
        Err(Error::NotReplicated(format!(
            "the {what} is on the primary, but only {acked} of the {wanted} replicas redis.wait_replicas asks for had it within {within:?} (redis.wait_timeout): a failover now could lose it; call again (an enqueue with the same id, a completion with the same fence, changes nothing twice)"
        )))
    }

    /// A connection handle (shares the multiplexed connection).
    pub(crate) fn connection(&self) -> cluster::Conn {
        self.con.clone()
    }

    /// A new connection of its own, for blocking commands (the waker's
    /// BLPOP): a blocked command would hold up every caller of the shared
    /// one. `answer_within` bounds each reply (longer than the block).
    pub(crate) async fn blocking(
        &self,
        answer_within: Duration,
    ) -> Result<redis::aio::MultiplexedConnection> {
        self.endpoint.multiplexed(Some(answer_within)).await
    }

    /// A new Pub/Sub connection (the promoter's due-time messages).
    pub(crate) async fn subscriber(&self) -> Result<redis::aio::PubSub> {
        self.endpoint.pubsub().await
    }

    /// Redis's clock, in Unix ms: the one clock leases, due times and
    /// heartbeats are measured on, so hosts with drifting clocks agree.
    pub async fn time_ms(&self) -> Result<i64> {
        let reply: Vec<Value> = with_time(&mut redis::pipe())
            .query_async(&mut self.connection())
            .await?;
        Ok(split_time(reply, "time")?.0)
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

    /// [`Store::run`] with one more key after the queue's (same hash tag):
    /// one round trip, an FCALL of the transition's function (see
    /// [`Store::call`] for when it loads the libraries or runs as EVALSHA).
    async fn run_with(
        &self,
        pick: fn(&Scripts) -> &Transition,
        q: &QueueKeys,
        extra_key: Option<&str>,
        args: Vec<String>,
    ) -> Result<Value> {
        let keys: Vec<&str> = std::iter::once(q.base()).chain(extra_key).collect();
        self.call(pick(&SCRIPTS), &keys, args).await
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

/// BLPOP on a connection from [`Store::blocking`]: the first of `keys`
/// with an element gives it up (`(key, element)`), or `None` after `block`.
pub(crate) async fn pop_first(
    con: &mut redis::aio::MultiplexedConnection,
    keys: &[String],
    block: Duration,
) -> redis::RedisResult<Option<(String, String)>> {
    redis::cmd("BLPOP")
        .arg(keys)
        .arg(block.as_secs_f64())
        .query_async(con)
        .await
}

/// Starts a pipeline with TIME, so its other replies come with Redis's
/// clock at that moment ([`split_time`] reads it).
pub(crate) fn with_time(pipe: &mut redis::Pipeline) -> &mut redis::Pipeline {
    pipe.cmd("TIME")
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

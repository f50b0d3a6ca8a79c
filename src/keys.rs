//! The one place that builds Redis key names.
//!
//! Every key of a queue is `<prefix>:{<queue>}:<part>`. The `{<queue>}` hash
//! tag puts all of a queue's keys on one Redis Cluster slot, so every script,
//! which only ever touches one queue, runs on one slot.
//!
//! Scripts (and the `redq` Redis Function) receive only the base key
//! `<prefix>:{<queue>}` ([`QueueKeys::base`]) and derive the others from it
//! with the part names of [`PARTS`], which `src/lua/lib/keys.lua` lists too.

use crate::error::{Error, Result};

/// Default key prefix.
pub const DEFAULT_PREFIX: &str = "redq";

/// Longest queue name, job id or prefix accepted.
pub const MAX_NAME_LEN: usize = 128;

/// The parts of a queue's keyspace (`src/lua/lib/keys.lua`'s `QUEUE_PARTS` lists the same).
pub const PARTS: [&str; 26] = [
    "jobs",      // HASH  id -> stored job record (see job::StoredJob)
    "pending", // ZSET  priority -> -priority, for each priority with pending jobs (see QueueKeys::pending_list)
    "scheduled", // ZSET  id -> due time (Redis ms)
    "active",  // ZSET  id -> lease deadline (Redis ms)
    "dead",    // ZSET  id -> time of death (Redis ms)
    "done",    // ZSET  id -> time of completion (only when retention keeps them)
    "runs",    // HASH  id -> "attempts,fence,started_ms"
    "errors",  // HASH  id -> last error text
    "results", // HASH  id -> result text (only when retention keeps them)
    "unique",  // HASH  unique_key -> id of the live job holding it
    "meta",    // HASH  seq, fence, paused, max_doc_bytes, events (stream cap; absent = off),
    //                 rate_jobs, rate_per_ms, group_limit (absent = no limit), parking (jobs may be parked),
    //                 tenant_rate ("<jobs>,<per_ms>,<overrides 0|1>"; absent = no tenant limits)
    "inbox",         // LIST  raw job documents pushed by any client (LPUSH)
    "rejected",      // LIST  inbox documents refused, with the reason
    "wake",          // LIST  wake-up marker for idle daemons (at most one element)
    "resources",     // HASH  id -> resources JSON of the latest command run (handler::Resources)
    "events",        // STREAM lifecycle events, only when meta `events` is set (capped, MAXLEN ~)
    "claims",        // ZSET  fence -> claim time (Redis ms): the rate limit's sliding window
    "parked", // ZSET  "<len>:<group>:<pending score>:<id>" (all scores 0): jobs whose group was full
    "groups", // HASH  group -> jobs of the group now active (group_concurrency)
    "holders", // HASH  id -> group, for each active job counted in `groups`
    "tenant_limits", // HASH  tenant -> "<jobs>,<per_ms>": per-tenant overrides of meta `tenant_rate`
    "tenant_parked", // ZSET  "<len>:<tenant>:<pending score>:<id>" (all scores 0): jobs whose tenant had no room
    "tenant_due", // ZSET  tenant -> Redis ms when it has room again, for each tenant with parked jobs
    "idle", // HASH  "<daemon id>.<pool number>" -> "<free slots>,<lease_ms>,<expires_ms>": idle pools waiting for a direct hand-off
    "history", // HASH  id -> JSON array of the job's latest failed attempts (at most 5): attempt, started_ms, ended_ms, error, resources
    "payloads", // HASH  id -> payload JSON of a job whose record keeps it apart (see job::PAYLOAD_APART_BYTES)
];

/// True when `name` is 1–128 characters from `A-Z a-z 0-9 _ . - :`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b':'))
}

/// Checks a queue name before it becomes part of a key.
pub fn check_queue_name(name: &str) -> Result<()> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(Error::InvalidName(format!(
            "queue name {name:?} must be 1-{MAX_NAME_LEN} characters from A-Z a-z 0-9 _ . - :"
        )))
    }
}

/// Checks a job id chosen by a producer before it becomes part of a key or field.
pub fn check_job_id(id: &str) -> Result<()> {
    if is_valid_name(id) {
        Ok(())
    } else {
        Err(Error::InvalidJob(format!(
            "field \"id\": {id:?} must be 1-{MAX_NAME_LEN} characters from A-Z a-z 0-9 _ . - :"
        )))
    }
}

/// Checks a key prefix (the part before `:{queue}`).
pub fn check_prefix(prefix: &str) -> Result<()> {
    if is_valid_name(prefix) && !prefix.contains('{') {
        Ok(())
    } else {
        Err(Error::InvalidName(format!(
            "key prefix {prefix:?} must be 1-{MAX_NAME_LEN} characters from A-Z a-z 0-9 _ . - :"
        )))
    }
}

/// The hash tag of redq's global keys (registry, daemons, data mark): `@`
/// is never part of a queue name, so no queue shares it. On Redis Cluster
/// they all live on that tag's one slot, so a pipeline over them (a
/// heartbeat) never crosses slots.
pub const GLOBAL_TAG: &str = "{@}";

/// The key that lists every known queue (a SET; only plain commands touch
/// it, never a script).
pub fn registry(prefix: &str) -> String {
    format!("{prefix}:{GLOBAL_TAG}:queues")
}

/// The ZSET of daemons that have beaten recently (member = daemon id, score
/// = Redis ms of its last heartbeat). Plain commands only.
pub fn daemons(prefix: &str) -> String {
    format!("{prefix}:{GLOBAL_TAG}:daemons")
}

/// The HASH describing one daemon (host, pid, version, queues, running);
/// it expires by itself when the daemon stops beating.
pub fn daemon(prefix: &str, id: &str) -> String {
    format!("{prefix}:{GLOBAL_TAG}:daemon:{id}")
}

/// The STRING a daemon writes once (SET NX) with a random value: the mark
/// that this Redis holds redq's data under `prefix`. When it vanishes or
/// changes, Redis lost what it held (a restart without persistence, a
/// flush, a failover to an empty replica). Plain commands only.
pub fn epoch(prefix: &str) -> String {
    format!("{prefix}:{GLOBAL_TAG}:epoch")
}

/// A key that never exists: the daemon's readiness probe deletes it, a write
/// that needs no memory, to learn whether Redis accepts writes now.
pub fn write_probe(prefix: &str) -> String {
    format!("{prefix}:{GLOBAL_TAG}:probe")
}

/// The lock `name` (checked by the caller): `<prefix>:lock:{<name>}`, a
/// STRING `<token>:<fence>` expiring with the lock's TTL. Its own hash tag,
/// so its fencing counter sits on the same Cluster slot.
pub fn lock(prefix: &str, name: &str) -> String {
    format!("{prefix}:lock:{{{name}}}")
}

/// The fencing counter of a lock key: `<lock key>:fence`, never expiring.
pub fn lock_fence(lock_key: &str) -> String {
    format!("{lock_key}:fence")
}

/// All key names of one queue.
///
/// Held in one shared string (every key, one after the other) with the end
/// of each: a clone is a reference count, not 27 strings. A daemon holds
/// its queues' keys in several places (the queue, its writer, the
/// promoter, the settings), and with 1000 queues the separate strings were
/// about 7 MB of the idle daemon's ~25 MB heap (issue 19).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueKeys {
    /// `<base>:jobs<base>:pending…`, in the order of [`PARTS`].
    text: std::sync::Arc<str>,
    /// Where each key of [`PARTS`] ends in `text` (keys are at most ~280
    /// bytes: prefix and queue names are at most 128 each).
    ends: [u16; PARTS.len()],
    /// `<prefix>:{` is `text[..queue_at]`, the queue `text[queue_at..base_len - 1]`.
    queue_at: u16,
    base_len: u16,
}

impl QueueKeys {
    /// Builds the keys of `queue` under `prefix`, checking both names.
    pub fn new(prefix: &str, queue: &str) -> Result<Self> {
        check_prefix(prefix)?;
        check_queue_name(queue)?;
        let base = format!("{prefix}:{{{queue}}}");
        let mut text = String::with_capacity(PARTS.iter().map(|p| base.len() + 1 + p.len()).sum());
        let mut ends = [0u16; PARTS.len()];
        for (end, p) in ends.iter_mut().zip(PARTS) {
            text.push_str(&base);
            text.push(':');
            text.push_str(p);
            // Cannot fail: names are checked to at most MAX_NAME_LEN above.
            *end = u16::try_from(text.len()).unwrap_or(u16::MAX);
        }
        Ok(QueueKeys {
            text: text.into(),
            ends,
            queue_at: (prefix.len() + 2) as u16,
            base_len: base.len() as u16,
        })
    }

    /// The queue's name.
    pub fn queue(&self) -> &str {
        &self.text[usize::from(self.queue_at)..usize::from(self.base_len) - 1]
    }

    /// `<prefix>:{<queue>}`: the one key `FCALL redq_enqueue` takes.
    pub fn base(&self) -> &str {
        &self.text[..usize::from(self.base_len)]
    }

    /// Every key, in the order of [`PARTS`].
    pub fn all(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        (0..PARTS.len()).map(|i| self.key(i))
    }

    /// The key of `PARTS[i]`.
    fn key(&self, i: usize) -> &str {
        let start = if i == 0 {
            0
        } else {
            usize::from(self.ends[i - 1])
        };
        &self.text[start..usize::from(self.ends[i])]
    }

    fn part(&self, name: &str) -> &str {
        let i = PARTS.iter().position(|p| *p == name).unwrap_or(0);
        self.key(i)
    }

    pub fn jobs(&self) -> &str {
        self.part("jobs")
    }
    /// The priorities with pending jobs, highest first; each one's jobs
    /// are the list [`QueueKeys::pending_list`].
    pub fn pending(&self) -> &str {
        self.part("pending")
    }
    /// The ids of the jobs pending at `priority`, next first:
    /// `<base>:pending:<priority>`. Not one of [`PARTS`].
    pub fn pending_list(&self, priority: &str) -> String {
        format!("{}:{priority}", self.pending())
    }
    pub fn scheduled(&self) -> &str {
        self.part("scheduled")
    }
    /// The keys that hold what the daemon's depth gauges count (pending,
    /// parked, scheduled, dead, inbox, rejected): none exists when they are
    /// all 0 (Redis deletes an emptied list or set). Not `active`, which
    /// always holds its pin.
    pub fn depth_keys(&self) -> Vec<String> {
        [
            self.pending(),
            self.parked(),
            self.tenant_parked(),
            self.scheduled(),
            self.dead(),
            self.inbox(),
            self.rejected(),
        ]
        .map(str::to_owned)
        .to_vec()
    }
    pub fn active(&self) -> &str {
        self.part("active")
    }
    pub fn dead(&self) -> &str {
        self.part("dead")
    }
    pub fn done(&self) -> &str {
        self.part("done")
    }
    pub fn runs(&self) -> &str {
        self.part("runs")
    }
    pub fn errors(&self) -> &str {
        self.part("errors")
    }
    pub fn results(&self) -> &str {
        self.part("results")
    }
    pub fn unique(&self) -> &str {
        self.part("unique")
    }
    pub fn meta(&self) -> &str {
        self.part("meta")
    }
    pub fn inbox(&self) -> &str {
        self.part("inbox")
    }
    pub fn rejected(&self) -> &str {
        self.part("rejected")
    }
    pub fn wake(&self) -> &str {
        self.part("wake")
    }
    pub fn resources(&self) -> &str {
        self.part("resources")
    }
    pub fn events(&self) -> &str {
        self.part("events")
    }
    pub fn claims(&self) -> &str {
        self.part("claims")
    }
    pub fn parked(&self) -> &str {
        self.part("parked")
    }
    pub fn groups(&self) -> &str {
        self.part("groups")
    }
    pub fn holders(&self) -> &str {
        self.part("holders")
    }
    pub fn tenant_limits(&self) -> &str {
        self.part("tenant_limits")
    }
    pub fn tenant_parked(&self) -> &str {
        self.part("tenant_parked")
    }
    pub fn tenant_due(&self) -> &str {
        self.part("tenant_due")
    }
    pub fn idle(&self) -> &str {
        self.part("idle")
    }
    pub fn history(&self) -> &str {
        self.part("history")
    }
    pub fn payloads(&self) -> &str {
        self.part("payloads")
    }

    /// `<prefix>:{<queue>}:due`: a Pub/Sub channel, not a key. A script that
    /// makes a job the queue's earliest scheduled one publishes its due time
    /// (Redis ms) here (`announce_due` in lib/scheduled.lua); every daemon's
    /// promoter listens, so none polls `scheduled`.
    pub fn due_channel(&self) -> String {
        format!("{}:due", self.base())
    }

    /// `<prefix>:{<queue>}:handoff:<name>`: a LIST, one element per
    /// enqueue call that leased jobs directly to the pool registered as
    /// `name` in `idle` ("<daemon id>.<pool number>"; JSON array:
    /// now_ms, first fence, then id, attempt, record per job). The daemon's
    /// waker blocks on it; the scripts derive it from the base key (same hash
    /// tag); it expires with the lease. Not one of [`PARTS`].
    pub fn handoff(&self, daemon: &str) -> String {
        format!("{}:handoff:{daemon}", self.base())
    }

    /// `<prefix>:{<queue>}:outcome:<id>`: a LIST of one element, the JSON
    /// outcome of a job that ended (state, attempts, result, last error,
    /// finished_ms), kept for the job's `outcome_ttl_ms` or the queue's
    /// `outcome_ttl` (`src/lua/lib/outcome.lua` writes it). Waiters block
    /// on it with `BLMOVE <key> <key> RIGHT RIGHT <timeout>`. Not one of
    /// [`PARTS`].
    pub fn outcome(&self, id: &str) -> String {
        format!("{}:outcome:{id}", self.base())
    }

    /// `<prefix>:{<queue>}:claims:<tenant>`: a ZSET, fence -> claim
    /// time (Redis ms), one tenant's rate window. claim.lua derives it from
    /// the `claims` key it is given (same hash tag, same Cluster slot) and
    /// lets it expire one window after the tenant's last claim; not one of
    /// [`PARTS`].
    pub fn tenant_claims(&self, tenant: &str) -> String {
        format!("{}:{tenant}", self.claims())
    }

    /// `<prefix>:{<queue>}:cron`: a HASH, `[[cron]]` entry key -> last tick
    /// handled (Unix ms). Only `cron_enqueue.lua` touches it, receiving it
    /// after the queue's keys; not one of [`PARTS`].
    pub fn cron(&self) -> String {
        format!("{}:cron", self.base())
    }

    /// `<prefix>:{<queue>}:usage:<YYYY-MM-DD>`: the usage totals of one UTC day
    /// (a HASH, field `<tenant>` U+001F `<name>`; see [`crate::usage`]). Added to
    /// by complete.lua and fail.lua, which receive it as KEYS[2]; not one of [`PARTS`].
    pub fn usage_day(&self, day: &str) -> String {
        format!("{}:usage:{day}", self.base())
    }

    /// `<prefix>:{<queue>}:rate:<minute>`: a HASH of jobs finished in one
    /// Unix minute (`succeeded`, `failed`), added to by daemons; expires by itself.
    /// Not one of [`PARTS`]: scripts never touch it.
    pub fn rate(&self, minute: i64) -> String {
        format!("{}:rate:{minute}", self.base())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_carries_the_queue_hash_tag() {
        let k = QueueKeys::new("redq", "emails").unwrap();
        assert_eq!(k.base(), "redq:{emails}");
        assert_eq!(k.pending(), "redq:{emails}:pending");
        assert_eq!(k.pending_list("-3"), "redq:{emails}:pending:-3");
        assert_eq!(k.wake(), "redq:{emails}:wake");
        assert_eq!(k.queue(), "emails");
        assert!(k.all().all(|key| key.starts_with("redq:{emails}:")));
        assert_eq!(k.all().len(), PARTS.len());
        for (key, part) in k.all().zip(PARTS) {
            assert_eq!(key, format!("redq:{{emails}}:{part}"));
        }
        let long = QueueKeys::new(&"p".repeat(128), &"q".repeat(128)).unwrap();
        assert_eq!(long.queue(), "q".repeat(128));
        assert_eq!(
            long.history(),
            format!("{}:{{{}}}:history", "p".repeat(128), "q".repeat(128))
        );
    }

    #[test]
    fn names_are_checked_before_they_become_keys() {
        assert!(QueueKeys::new("redq", "a}b").is_err());
        assert!(QueueKeys::new("redq", "").is_err());
        assert!(QueueKeys::new("redq", &"x".repeat(129)).is_err());
        assert!(QueueKeys::new("redq", "with space").is_err());
        assert!(QueueKeys::new("re{dq", "ok").is_err());
        assert!(QueueKeys::new("redq", "Ok_.-:9").is_ok());
        assert!(check_job_id("0190b1f2-7c3e-7000-8000-000000000000").is_ok());
        assert!(check_job_id("../etc").is_err());
    }
}

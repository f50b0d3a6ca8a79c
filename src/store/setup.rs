//! Queue set-up: the settings a daemon writes for each queue it serves, at
//! start and on every reload, in one call per queue (configure.lua): the
//! `meta` fields the scripts read (document size limit, events cap, rate and
//! group limits, the tenant default), the tenant overrides, and the pins
//! that keep two hot keys in O(1) encodings. The call is atomic, so a claim
//! sees a queue's old settings or its new ones, and it works at maxmemory,
//! so a daemon can start on a full Redis and drain it under the right limits.
//!
//! This file is the one encoder of those fields; claim.lua and the Lua library
//! are their readers.

use std::time::Duration;

use super::{ms, Store};
use crate::error::Result;
use crate::keys::QueueKeys;

/// A queue's per-tenant rate limits: at most `jobs` claims per window of
/// `per` for each job `tenant`, over all daemons.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantLimits {
    /// The limit of every tenant without an override; `None`: only the
    /// tenants in `overrides` are limited.
    pub default: Option<(u32, Duration)>,
    /// (tenant, (jobs, per)): limits that replace the default for one tenant.
    pub overrides: Vec<(String, (u32, Duration))>,
}

/// Everything [`Store::set_up_queue`] writes for one queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueSettings {
    /// Largest job document FCALL and inbox producers may send (bytes).
    pub max_doc_bytes: usize,
    /// The cap of the `events` stream; `None`: events off.
    pub events_cap: Option<u64>,
    /// At most `.0` claims in any window of `.1`, over all daemons.
    pub rate: Option<(u32, Duration)>,
    /// At most this many active jobs per job `group`, over all daemons.
    pub group: Option<u32>,
    /// Per-tenant rate limits.
    pub tenants: Option<TenantLimits>,
    /// How long the outcome of a job that does not set its own
    /// `outcome_ttl_ms` is kept (`queues.<q>.outcome_ttl`); `None`: not kept.
    pub outcome_ttl: Option<Duration>,
}

/// The field of `runs` that keeps it a real hash table. Redis stores a hash
/// with few fields (`hash-max-listpack-entries`, default 128) and short
/// values (`hash-max-listpack-value`, default 64 bytes) as a listpack, which
/// it searches linearly on every field access. `runs` holds one entry per
/// running job and every claim and completion touches one field per job, so
/// at the sizes a busy daemon keeps it (~its concurrency) each batch cost
/// O(concurrency²): profiling showed a quarter of Redis's time in that
/// search. One field whose value is longer than any listpack value converts
/// the hash for good (Redis never converts back while the key exists),
/// making each access O(1). Not a valid job id (ids never contain `~`), so
/// no job ever uses it.
pub const RUNS_PIN_FIELD: &str = "~pin";
const RUNS_PIN_VALUE: &str =
    "keeps this hash out of Redis's listpack encoding: field lookups stay O(1) (redq)";

/// The member of `active` that keeps it a skiplist, for the reason
/// [`RUNS_PIN_FIELD`] gives for `runs`: below `zset-max-listpack-entries`
/// (default 128) members Redis stores a sorted set as a listpack, where
/// every ZADD searches the whole list for the member and again for its
/// place by score. `active` holds one member per running job, so at a
/// concurrency under 128 each claim of n jobs cost O(n × concurrency):
/// callgrind put a fifth of Redis's instructions at concurrency 50 in that
/// search. One member longer than any listpack entry converts it for good.
/// Its score is `+inf`: the reaper's `ZRANGEBYSCORE -inf <now>` never sees
/// it, and [`crate::inspect::stats`] leaves it out of the count. Not a valid
/// job id (ids never contain `~`).
pub const ACTIVE_PIN_MEMBER: &str =
    "~pin: keeps this sorted set out of Redis's listpack encoding: ZADD and ZREM stay O(log n) (redq)";

/// The limit fields of `meta`; `None` deletes the field (no limit).
fn limit_fields(
    rate: Option<(u32, Duration)>,
    group: Option<u32>,
) -> [(&'static str, Option<String>); 3] {
    [
        ("rate_jobs", rate.map(|(jobs, _)| jobs.to_string())),
        (
            "rate_per_ms",
            rate.map(|(_, per)| ms(per).max(1).to_string()),
        ),
        ("group_limit", group.map(|n| n.to_string())),
    ]
}

/// The `tenant_rate` field of `meta` ("<jobs>,<per_ms>,<overrides 0|1>",
/// jobs 0: no default) and the `tenant_limits` pairs (tenant ->
/// "<jobs>,<per_ms>").
fn tenant_fields(tenants: Option<&TenantLimits>) -> (Option<String>, Vec<(String, String)>) {
    let Some(t) = tenants else {
        return (None, Vec::new());
    };
    let (jobs, per) = t.default.map_or((0, 0), |(j, p)| (j, ms(p).max(1)));
    let overrides: Vec<(String, String)> = t
        .overrides
        .iter()
        .map(|(name, (j, p))| (name.clone(), format!("{j},{}", ms(*p).max(1))))
        .collect();
    let flag = u8::from(!overrides.is_empty());
    (Some(format!("{jobs},{per},{flag}")), overrides)
}

/// What configure.lua writes: the pins or not, `meta` fields, and the
/// tenant overrides (`None`: left as they are).
struct Writes {
    pins: bool,
    meta: Vec<(&'static str, Option<String>)>,
    tenants: Option<Vec<(String, String)>>,
}

impl Writes {
    fn args(self) -> Vec<String> {
        let mut args = vec![
            if self.pins { "pins" } else { "" }.to_owned(),
            RUNS_PIN_FIELD.to_owned(),
            RUNS_PIN_VALUE.to_owned(),
            ACTIVE_PIN_MEMBER.to_owned(),
            self.meta.len().to_string(),
        ];
        for (field, value) in self.meta {
            args.extend([field.to_owned(), value.unwrap_or_default()]);
        }
        match self.tenants {
            Some(pairs) => {
                args.push("tenants".to_owned());
                args.extend(pairs.into_iter().flat_map(|(t, v)| [t, v]));
            }
            None => args.push(String::new()),
        }
        args
    }
}

impl Store {
    async fn configure(&self, q: &QueueKeys, w: Writes) -> Result<()> {
        self.run(|s| &s.configure, q, w.args()).await?;
        Ok(())
    }

    /// Writes every setting of `q` the daemon owns (see the module doc), in
    /// one atomic call that works at maxmemory.
    pub async fn set_up_queue(&self, q: &QueueKeys, s: &QueueSettings) -> Result<()> {
        let (tenant_rate, overrides) = tenant_fields(s.tenants.as_ref());
        let mut meta = vec![
            ("max_doc_bytes", Some(s.max_doc_bytes.to_string())),
            ("events", s.events_cap.map(|c| c.to_string())),
            ("tenant_rate", tenant_rate),
            (
                "outcome_ttl_ms",
                s.outcome_ttl.map(|d| ms(d).max(1).to_string()),
            ),
        ];
        meta.extend(limit_fields(s.rate, s.group));
        self.configure(
            q,
            Writes {
                pins: true,
                meta,
                tenants: Some(overrides),
            },
        )
        .await
    }

    /// Sets (or, with `None`, lifts) a queue's limits, as the daemon does at
    /// start and reload: at most `rate.0` claims in any window of `rate.1`,
    /// and at most `group` active jobs per job `group`, across all daemons.
    pub async fn set_limits(
        &self,
        q: &QueueKeys,
        rate: Option<(u32, Duration)>,
        group: Option<u32>,
    ) -> Result<()> {
        let meta = limit_fields(rate, group).into();
        self.configure(
            q,
            Writes {
                pins: false,
                meta,
                tenants: None,
            },
        )
        .await
    }

    /// Sets (or, with `None`, lifts) a queue's per-tenant rate limits, as the
    /// daemon does at start and reload; atomic, so no claim sees half of them.
    /// Jobs parked by a lifted limit come back at their tenant's due time.
    pub async fn set_tenant_limits(
        &self,
        q: &QueueKeys,
        tenants: Option<&TenantLimits>,
    ) -> Result<()> {
        let (tenant_rate, overrides) = tenant_fields(tenants);
        self.configure(
            q,
            Writes {
                pins: false,
                meta: vec![("tenant_rate", tenant_rate)],
                tenants: Some(overrides),
            },
        )
        .await
    }
}

//! Usage totals as `redq usage` reads them: one `HGETALL` per queue and day
//! of the day hashes the result writer adds to (the format is
//! [`crate::usage`]'s).

use std::collections::BTreeMap;

use serde::Serialize;

use super::super::Store;
use crate::error::Result;
use crate::usage::{split_field, Day, MAX_DAYS};

/// The totals of one queue and tenant over a range of days.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageTotals {
    pub queue: String,
    pub tenant: String,
    /// Name → total; always holds [`JOBS`] and [`RUN_SECONDS`].
    pub usage: BTreeMap<String, f64>,
}

/// Sums the usage of `queues` from `since` to `until` (both included, at most
/// [`MAX_DAYS`] days ending at `until`), for one tenant or all; sorted by
/// queue and tenant. One pipeline of `HGETALL`s: O(queues × days).
pub async fn totals(
    store: &Store,
    queues: &[String],
    tenant: Option<&str>,
    since: Day,
    until: Day,
) -> Result<Vec<UsageTotals>> {
    let since = since.max(until.plus(1 - MAX_DAYS));
    let keys = queues
        .iter()
        .map(|q| store.queue(q))
        .collect::<Result<Vec<_>>>()?;
    if keys.is_empty() || since > until {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for q in &keys {
        for d in since.0..=until.0 {
            pipe.hgetall(q.usage_day(&Day(d).to_string()));
        }
    }
    let days: Vec<BTreeMap<String, String>> = pipe.query_async(&mut store.connection()).await?;
    let per_queue = (until.0 - since.0 + 1) as usize;
    let mut sums: BTreeMap<(String, String), BTreeMap<String, f64>> = BTreeMap::new();
    for (q, hashes) in keys.iter().zip(days.chunks(per_queue)) {
        for hash in hashes {
            for (field, value) in hash {
                let Some((t, name)) = split_field(field) else {
                    continue;
                };
                if tenant.is_some_and(|want| want != t) {
                    continue;
                }
                let Ok(n) = value.parse::<f64>() else {
                    continue;
                };
                *sums
                    .entry((q.queue().to_owned(), t.to_owned()))
                    .or_default()
                    .entry(name.to_owned())
                    .or_default() += n;
            }
        }
    }
    Ok(sums
        .into_iter()
        .map(|((queue, tenant), usage)| UsageTotals {
            queue,
            tenant,
            usage,
        })
        .collect())
}

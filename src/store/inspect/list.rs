//! Jobs of a queue listed by state, a page at a time: `redq jobs`.
//!
//! Each page costs what it shows, never the queue's size: one ranged read
//! of the state's set or lists (`ZRANGE` by index, `LRANGE`), then one
//! atomic lookup of those jobs ([`super::jobs`]). A filter (tenant, group)
//! looks at up to [`SCAN_PER_PAGE`] entries per page and says where it
//! stopped, so a filter that matches little returns short pages with a
//! cursor to go on from, not one long blocking scan.
//!
//! The cursor is a position (an index in the set; a priority and an index
//! in its list for pending jobs). Jobs move while someone pages: one that
//! moved away is skipped; a page may then miss or repeat a job near its
//! edge. `redq export` is the way to a consistent copy.
//!
//! Pending jobs are listed in the order claims take them (highest priority
//! first, then first in, first out). Jobs parked by a group or tenant limit
//! are pending too but wait outside the lists, and are not listed.

use serde::Serialize;

use super::super::Store;
use super::{jobs, JobInfo};
use crate::error::{Error, Result};
use crate::keys::QueueKeys;

/// Most entries one page looks at when filtering (a bound on its cost).
pub const SCAN_PER_PAGE: usize = 5000;

/// Most jobs on one page.
pub const MAX_PAGE: usize = 1000;

/// Which jobs to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListState {
    /// Ready to run, in claim order.
    Pending,
    /// Waiting for a due time (delayed, or a retry's backoff), soonest first.
    Scheduled,
    /// Running under a lease, by lease deadline.
    Active,
    /// In the dead set, newest first.
    Dead,
    /// Completed and kept by retention (`keep_completed`), newest first.
    Succeeded,
}

impl std::str::FromStr for ListState {
    type Err = Error;
    fn from_str(s: &str) -> Result<ListState> {
        Ok(match s {
            "pending" => ListState::Pending,
            "scheduled" => ListState::Scheduled,
            "active" => ListState::Active,
            "dead" => ListState::Dead,
            "succeeded" => ListState::Succeeded,
            other => {
                return Err(Error::InvalidName(format!(
                    "state {other:?}: expected pending, scheduled, active, dead or succeeded"
                )))
            }
        })
    }
}

/// Order of a set's jobs (pending jobs are always in claim order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// The state's natural order: soonest due (scheduled), soonest lease
    /// end (active), newest (dead, succeeded).
    #[default]
    Natural,
    /// Newest or latest first.
    Newest,
    /// Oldest or soonest first.
    Oldest,
}

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub limit: usize,
    /// The `next` of the page before.
    pub after: Option<String>,
    pub order: Order,
    pub tenant: Option<String>,
    pub group: Option<String>,
}

/// One page.
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    pub jobs: Vec<JobInfo>,
    /// Where the next page starts; `None` at the end.
    pub next: Option<String>,
}

fn bad_cursor(c: &str) -> Error {
    Error::InvalidName(format!(
        "cursor {c:?} is not one `redq jobs` printed: pass the `next` of the page before, or nothing to start at the first page"
    ))
}

/// Lists `state`'s jobs of `q`, one page.
pub async fn list_jobs(
    store: &Store,
    q: &QueueKeys,
    state: ListState,
    query: &ListQuery,
) -> Result<Page> {
    let limit = query.limit.clamp(1, MAX_PAGE);
    let filtered = query.tenant.is_some() || query.group.is_some();
    // Without a filter every entry read is shown: read a page. With one,
    // read in pieces until the page is full or SCAN_PER_PAGE were seen.
    let piece = if filtered { limit.max(100) } else { limit };
    let mut shown = Vec::new();
    let mut cursor = query.after.clone();
    let mut seen = 0;
    loop {
        let (ids, next) = match sorted_set(q, state) {
            None => pending_ids(store, q, cursor.as_deref(), piece).await?,
            Some(set) => set_ids(store, set, query.order, cursor.as_deref(), piece).await?,
        };
        seen += ids.len();
        let found = jobs(store, q, &ids).await?;
        for (info, _) in found.into_iter().flatten() {
            let keep = query
                .tenant
                .as_ref()
                .is_none_or(|t| info.tenant.as_ref() == Some(t))
                && query
                    .group
                    .as_ref()
                    .is_none_or(|g| info.group.as_ref() == Some(g));
            if keep && shown.len() < limit {
                shown.push(info);
            }
        }
        cursor = next;
        if cursor.is_none() || shown.len() >= limit || seen >= SCAN_PER_PAGE || !filtered {
            break;
        }
    }
    Ok(Page {
        jobs: shown,
        next: cursor,
    })
}

/// The sorted set of a state, and whether its natural order is newest
/// first; `None` for pending jobs (lists).
fn sorted_set(q: &QueueKeys, state: ListState) -> Option<(&str, bool)> {
    match state {
        ListState::Pending => None,
        ListState::Scheduled => Some((q.scheduled(), false)),
        ListState::Active => Some((q.active(), false)),
        ListState::Dead => Some((q.dead(), true)),
        ListState::Succeeded => Some((q.done(), true)),
    }
}

/// Up to `n` ids of a sorted-set state from the index in `after`.
async fn set_ids(
    store: &Store,
    (key, newest_first): (&str, bool),
    order: Order,
    after: Option<&str>,
    n: usize,
) -> Result<(Vec<String>, Option<String>)> {
    let start: usize = match after {
        Some(c) => c.parse().map_err(|_| bad_cursor(c))?,
        None => 0,
    };
    let rev = match order {
        Order::Natural => newest_first,
        Order::Newest => true,
        Order::Oldest => false,
    };
    let mut cmd = redis::cmd("ZRANGE");
    // One more than asked: whether a next page exists.
    cmd.arg(key).arg(start).arg(start + n);
    if rev {
        cmd.arg("REV");
    }
    let mut ids: Vec<String> = cmd.query_async(&mut store.connection()).await?;
    // The pins that keep `active` and `runs` from vanishing are not jobs.
    let more = ids.len() > n;
    ids.truncate(n);
    let read = ids.len();
    ids.retain(|id| id != super::super::ACTIVE_PIN_MEMBER);
    Ok((ids, more.then(|| (start + read).to_string())))
}

/// Up to `n` pending ids from `after` ("<priority>:<index>"), highest
/// priority first: the lists of `pending:<priority>` in the order of the
/// `pending` set (score −priority).
async fn pending_ids(
    store: &Store,
    q: &QueueKeys,
    after: Option<&str>,
    n: usize,
) -> Result<(Vec<String>, Option<String>)> {
    let (from_priority, mut index) = match after {
        Some(c) => {
            let (p, i) = c.split_once(':').ok_or_else(|| bad_cursor(c))?;
            (
                Some(p.parse::<i64>().map_err(|_| bad_cursor(c))?),
                i.parse::<usize>().map_err(|_| bad_cursor(c))?,
            )
        }
        None => (None, 0),
    };
    // At most 2001 priorities exist (−1000…1000): one small read.
    let levels: Vec<String> = redis::cmd("ZRANGE")
        .arg(q.pending())
        .arg(0)
        .arg(-1)
        .query_async(&mut store.connection())
        .await?;
    let mut levels: Vec<i64> = levels.iter().filter_map(|l| l.parse().ok()).collect();
    levels.sort_unstable_by(|a, b| b.cmp(a));
    if let Some(p) = from_priority {
        if !levels.contains(&p) {
            // That priority emptied meanwhile: go on with the next lower.
            index = 0;
        }
        levels.retain(|l| *l <= p);
    }
    let mut ids = Vec::new();
    for (i, level) in levels.iter().enumerate() {
        let want = n - ids.len();
        let got: Vec<String> = redis::cmd("LRANGE")
            .arg(q.pending_list(&level.to_string()))
            .arg(index)
            .arg(index + want)
            .query_async(&mut store.connection())
            .await?;
        let more_here = got.len() > want;
        let taken = got.len().min(want);
        ids.extend(got.into_iter().take(want));
        if ids.len() >= n {
            let next = if more_here {
                Some(format!("{level}:{}", index + taken))
            } else {
                levels.get(i + 1).map(|l| format!("{l}:0"))
            };
            return Ok((ids, next));
        }
        index = 0;
    }
    Ok((ids, None))
}

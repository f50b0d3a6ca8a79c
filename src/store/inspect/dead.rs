//! The dead set as `redq dead list` shows it.

use serde::Serialize;

use super::super::Store;
use super::parse_run;
use crate::error::Result;
use crate::keys::QueueKeys;

#[derive(Debug, Clone, Serialize)]
pub struct DeadJob {
    pub id: String,
    pub died_at_ms: i64,
    pub attempts: u32,
    pub last_error: Option<String>,
}

/// Dead jobs, newest first, `limit` from `offset`.
pub async fn dead_list(
    store: &Store,
    q: &QueueKeys,
    offset: usize,
    limit: usize,
) -> Result<Vec<DeadJob>> {
    let mut con = store.connection();
    let entries: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg(q.dead())
        .arg(offset)
        .arg(offset + limit.max(1) - 1)
        .arg("REV")
        .arg("WITHSCORES")
        .query_async(&mut con)
        .await?;
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&String> = entries.iter().map(|(id, _)| id).collect();
    let (runs, errors): (Vec<Option<String>>, Vec<Option<String>>) = redis::pipe()
        .cmd("HMGET")
        .arg(q.runs())
        .arg(&ids)
        .cmd("HMGET")
        .arg(q.errors())
        .arg(&ids)
        .query_async(&mut con)
        .await?;
    Ok(entries
        .iter()
        .enumerate()
        .map(|(i, (id, died))| DeadJob {
            id: id.clone(),
            died_at_ms: *died as i64,
            attempts: parse_run(runs.get(i).and_then(|r| r.as_deref())).0,
            last_error: errors.get(i).cloned().flatten(),
        })
        .collect())
}

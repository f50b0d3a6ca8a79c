//! A queue's whole state read at once, for "nothing changed" assertions
//! and for looking at one part (`s.zset("pending")`, `s.lists["rejected"]`).

use std::collections::BTreeMap;

use redis::aio::MultiplexedConnection;
use redq::keys::QueueKeys;

use super::server::RedisServer;

/// Every key of a queue, read whole.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Snapshot {
    pub sets: BTreeMap<String, Vec<(String, f64)>>,
    pub hashes: BTreeMap<String, BTreeMap<String, String>>,
    pub lists: BTreeMap<String, Vec<String>>,
}

impl Snapshot {
    pub fn zset(&self, part: &str) -> Vec<String> {
        self.sets[part].iter().map(|(m, _)| m.clone()).collect()
    }

    /// The pending ids, in the order claims take them.
    pub fn pending_ids(&self) -> Vec<String> {
        self.lists["pending ids"].clone()
    }
}

/// The pending ids, in the order claims take them (highest priority
/// first, each priority's list head first).
pub async fn pending_ids(con: &mut MultiplexedConnection, q: &QueueKeys) -> Vec<String> {
    let levels: Vec<String> = redis::cmd("ZRANGE")
        .arg(q.pending())
        .arg(0)
        .arg(-1)
        .query_async(con)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for level in levels {
        let part: Vec<String> = redis::cmd("LRANGE")
            .arg(q.pending_list(&level))
            .arg(0)
            .arg(-1)
            .query_async(con)
            .await
            .unwrap();
        assert!(
            !part.is_empty(),
            "priority {level} is in `pending` with an empty list"
        );
        ids.extend(part);
    }
    ids
}

pub async fn snapshot(con: &mut MultiplexedConnection, q: &QueueKeys) -> Snapshot {
    let mut s = Snapshot::default();
    for (part, key) in redq::keys::PARTS.iter().zip(q.all()) {
        let kind: String = redis::cmd("TYPE").arg(key).query_async(con).await.unwrap();
        match (kind.as_str(), *part) {
            (
                _,
                "pending" | "scheduled" | "active" | "dead" | "done" | "claims" | "parked"
                | "tenant_parked" | "tenant_due",
            ) => {
                let v: Vec<(String, f64)> = redis::cmd("ZRANGE")
                    .arg(key)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES")
                    .query_async(con)
                    .await
                    .unwrap();
                s.sets.insert(part.to_string(), v);
            }
            (_, "events") => {
                // A stream: each entry as "<id> <field>=<value> ...".
                let v: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
                    .arg(key)
                    .arg("-")
                    .arg("+")
                    .query_async(con)
                    .await
                    .unwrap();
                let entries = v
                    .into_iter()
                    .map(|(id, kv)| {
                        let fields: Vec<String> = kv.chunks(2).map(|c| c.join("=")).collect();
                        format!("{id} {}", fields.join(" "))
                    })
                    .collect();
                s.lists.insert(part.to_string(), entries);
            }
            (_, "inbox" | "rejected" | "wake") => {
                let v: Vec<String> = redis::cmd("LRANGE")
                    .arg(key)
                    .arg(0)
                    .arg(-1)
                    .query_async(con)
                    .await
                    .unwrap();
                s.lists.insert(part.to_string(), v);
            }
            _ => {
                let v: BTreeMap<String, String> = redis::cmd("HGETALL")
                    .arg(key)
                    .query_async(con)
                    .await
                    .unwrap();
                s.hashes.insert(part.to_string(), v);
            }
        }
    }
    s.lists
        .insert("pending ids".into(), pending_ids(con, q).await);
    s
}

/// A queue's hand-off registrations (`idle`): pool name → "slots,lease,expiry".
pub async fn registrations(redis: &RedisServer, q: &QueueKeys) -> Vec<(String, String)> {
    redis::cmd("HGETALL")
        .arg(q.idle())
        .query_async(&mut redis.con().await)
        .await
        .unwrap()
}

/// Pool `name`'s hand-off registration on `q` as `idle` holds it.
pub async fn registration(redis: &RedisServer, q: &QueueKeys, name: &str) -> Option<String> {
    redis::cmd("HGET")
        .arg(q.idle())
        .arg(name)
        .query_async(&mut redis.con().await)
        .await
        .unwrap()
}

/// The elements waiting on pool `name`'s hand-off list of `q`, raw.
pub async fn handed(redis: &RedisServer, q: &QueueKeys, name: &str) -> Vec<String> {
    redis::cmd("LRANGE")
        .arg(q.handoff(name))
        .arg(0)
        .arg(-1)
        .query_async(&mut redis.con().await)
        .await
        .unwrap()
}

/// The jobs waiting on pool `name`'s hand-off list of `q`, read.
pub async fn handed_jobs(
    redis: &RedisServer,
    q: &QueueKeys,
    name: &str,
) -> Vec<redq::store::ClaimedJob> {
    handed(redis, q, name)
        .await
        .iter()
        .flat_map(|e| redq::store::parse_handoff(e).unwrap().jobs)
        .collect()
}

//! Looks over many queues whose cost does not grow with the number of
//! queues while they are empty: which of many groups of keys hold anything
//! ([`Store::which_exist`]), and which of many `active` sets hold a lease
//! ([`Store::which_hold_leases`]).
//!
//! Each is one multi-key command over every queue (`EXISTS k1 k2 …`, or
//! `ZUNION n a1 a2 … AGGREGATE MIN WITHSCORES`), so an idle daemon's looks
//! cost Redis one command each, however many queues it serves, instead of
//! one or more per queue. Only when that command finds something are the
//! queues halved, each half asked again, until the queues that hold
//! something are found: about 2·log2(n) more commands per such queue, in
//! log2(n) round trips. Redis Cluster refuses a multi-key command whose keys
//! span slots, so there the queues are first grouped by slot (one command
//! per slot: per queue, since every queue has its own hash tag).
//!
//! Both are reads of a moment: a key that appears or goes between two round
//! trips may be missed or reported once, which the callers (the idle look,
//! the reaper, the depth poller) put right at their next tick.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::Value;
use tokio::time::Instant;

use super::{cluster, Store};
use crate::error::{Error, Result};

/// What one probe asks of a set of groups.
#[derive(Clone, Copy)]
enum Probe {
    /// `EXISTS`: does any of these keys exist?
    Exists,
    /// `ZUNION … AGGREGATE MIN WITHSCORES` of `active` sets: does any hold
    /// a member with a finite score (a lease; the pin's score is `+inf`)?
    Leases,
}

impl Probe {
    fn command<'a>(self, pipe: &mut redis::Pipeline, keys: impl Iterator<Item = &'a str>) {
        match self {
            Probe::Exists => {
                pipe.cmd("EXISTS");
                for k in keys {
                    pipe.arg(k);
                }
            }
            Probe::Leases => {
                let keys: Vec<&str> = keys.collect();
                pipe.cmd("ZUNION").arg(keys.len()).arg(keys);
                pipe.arg("AGGREGATE").arg("MIN").arg("WITHSCORES");
            }
        }
    }

    fn hit(self, reply: Value) -> Result<bool> {
        match self {
            Probe::Exists => {
                let n: u64 = redis::from_redis_value(reply)
                    .map_err(|e| Error::protocol("exists", e.to_string()))?;
                Ok(n > 0)
            }
            Probe::Leases => {
                let members: Vec<(String, f64)> = redis::from_redis_value(reply)
                    .map_err(|e| Error::protocol("zunion", e.to_string()))?;
                // Sorted by score: a lease, if any, comes first.
                Ok(members.first().is_some_and(|(_, s)| s.is_finite()))
            }
        }
    }
}

impl Store {
    /// For each group of keys (the keys of one queue), whether any of them
    /// exists; and how long the first round trip took (a measure of
    /// Redis's round-trip time). Empty lists, sets and hashes do not exist
    /// in Redis, so this tells which queues hold anything.
    pub async fn which_exist(&self, groups: &[Vec<String>]) -> Result<(Vec<bool>, Duration)> {
        self.bisect(groups, Probe::Exists).await
    }

    /// For each `active` set, whether it holds a lease (a member other than
    /// the pin).
    pub async fn which_hold_leases(&self, actives: &[&str]) -> Result<Vec<bool>> {
        let groups: Vec<Vec<String>> = actives.iter().map(|k| vec![(*k).to_owned()]).collect();
        Ok(self.bisect(&groups, Probe::Leases).await?.0)
    }

    /// Asks `probe` of all groups at once (per slot on a cluster), then of
    /// the halves of every set that answered yes, down to single groups;
    /// one pipeline per level.
    async fn bisect(&self, groups: &[Vec<String>], probe: Probe) -> Result<(Vec<bool>, Duration)> {
        let mut found = vec![false; groups.len()];
        let mut sets: Vec<Vec<usize>> = if self.is_cluster() {
            let mut by_slot: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
            for (i, g) in groups.iter().enumerate() {
                let slot = g.first().map_or(0, |k| cluster::slot(k));
                by_slot.entry(slot).or_default().push(i);
            }
            by_slot.into_values().collect()
        } else {
            vec![(0..groups.len()).collect()]
        };
        sets.retain(|s| !s.is_empty());
        let mut first_trip = None;
        while !sets.is_empty() {
            let mut pipe = redis::pipe();
            for set in &sets {
                let keys = set
                    .iter()
                    .flat_map(|&i| groups[i].iter().map(String::as_str));
                probe.command(&mut pipe, keys);
            }
            let sent = Instant::now();
            let replies: Vec<Value> = pipe.query_async(&mut self.connection()).await?;
            first_trip.get_or_insert(sent.elapsed());
            let mut next = Vec::new();
            for (set, reply) in sets.into_iter().zip(replies) {
                if !probe.hit(reply)? {
                    continue;
                }
                if let [one] = set[..] {
                    found[one] = true;
                    continue;
                }
                let (a, b) = set.split_at(set.len() / 2);
                next.push(a.to_vec());
                next.push(b.to_vec());
            }
            sets = next;
        }
        Ok((found, first_trip.unwrap_or_default()))
    }
}

//! `[pools.<name>]`: several queues served by one shared set of workers.
//!
//! A queue joins a pool by being listed in the pool's `queues` or by naming
//! the pool in its own `pool` key (both may be written; they must agree).
//! With `order = "strict"` a free worker takes from the first listed queue
//! that has work; with `order = "weighted"` queues are picked in proportion
//! to their `weight`.

use serde::{Deserialize, Serialize};

use super::error::Problems;
use super::queue::MAX_CONCURRENCY;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Jobs of all the pool's queues run at once by this daemon, 1–10000. Required.
    pub concurrency: u32,
    /// The queues served, in priority order for `strict`. Default: only those naming this pool.
    #[serde(default)]
    pub queues: Vec<String>,
    /// `strict` or `weighted`. Default `strict`.
    #[serde(default)]
    pub order: Order,
}

/// How a pool picks the next queue to claim from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// The first listed queue with work.
    #[default]
    Strict,
    /// In proportion to each queue's `weight`.
    Weighted,
}

impl PoolConfig {
    pub(super) fn check(&self, name: &str, p: &mut Problems) {
        p.check(
            crate::keys::is_valid_name(name),
            &["pools", name],
            "pool names must be 1-128 characters from A-Z a-z 0-9 _ . - :",
        );
        p.check(
            (1..=MAX_CONCURRENCY).contains(&self.concurrency),
            &["pools", name, "concurrency"],
            format!("{} is out of range 1-{MAX_CONCURRENCY}", self.concurrency),
        );
        for (i, q) in self.queues.iter().enumerate() {
            if self.queues[..i].contains(q) {
                p.push(&["pools", name, "queues"], format!("{q:?} is listed twice"));
            }
        }
    }
}

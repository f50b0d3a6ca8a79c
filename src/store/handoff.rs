//! The direct hand-off, seen from the pool's side: its registration in a
//! queue's `idle` hash, renewed while it idles and ended when it is busy or
//! stops, and the look an idle pool takes between wake-ups.
//!
//! A registration's value is `<free slots>,<lease_ms>,<expires_ms>`
//! ([`Registration`] encodes it here; claim.lua writes the same form, and
//! `hand_off` in the Lua library reads it). A claim registers or ends the
//! registration itself (claim.lua); between claims an idle pool renews it
//! with one HSET per queue.

use std::time::Duration;

use super::{ms, parse_handoff, Claimed, Store};
use crate::error::Result;
use crate::keys::QueueKeys;

/// An idle pool's offer, as a queue's `idle` hash holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registration {
    /// Jobs the pool can start now.
    pub slots: usize,
    /// The lease its jobs get.
    pub lease: Duration,
    /// When the offer ends (Redis ms) unless renewed.
    pub expires_ms: i64,
}

impl Registration {
    /// `<free slots>,<lease_ms>,<expires_ms>`.
    pub fn encode(&self) -> String {
        format!("{},{},{}", self.slots, ms(self.lease), self.expires_ms)
    }

    /// The value as Redis holds it; `None` when it is not of that form.
    pub fn decode(value: &str) -> Option<Registration> {
        let mut parts = value.split(',');
        let slots = parts.next()?.parse().ok()?;
        let lease = Duration::from_millis(parts.next()?.parse().ok()?);
        let expires_ms = parts.next()?.parse().ok()?;
        parts.next().is_none().then_some(Registration {
            slots,
            lease,
            expires_ms,
        })
    }
}

impl Store {
    /// Renews pool `name`'s registrations (an idle pool's, between
    /// claims): one HSET per queue, one round trip.
    pub async fn renew_registrations(
        &self,
        name: &str,
        renew: &[(&QueueKeys, Registration)],
    ) -> Result<()> {
        if renew.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (q, r) in renew {
            pipe.hset(q.idle(), name, r.encode()).ignore();
        }
        pipe.query_async::<()>(&mut self.connection()).await?;
        Ok(())
    }

    /// Ends pool `name`'s registrations on `queues` (it is busy).
    pub async fn end_registrations(&self, queues: &[&QueueKeys], name: &str) -> Result<()> {
        let mut pipe = redis::pipe();
        for q in queues {
            pipe.hdel(q.idle(), name).ignore();
        }
        pipe.query_async::<()>(&mut self.connection()).await?;
        Ok(())
    }

    /// Ends `name`'s hand-off registration on `q` and takes what was
    /// already handed to it, read ([`parse_handoff`]; an unreadable element
    /// is an error in its place). Atomic: an enqueue either ran before (its
    /// element is taken here) or after (it finds no registration).
    pub async fn end_handoff(&self, q: &QueueKeys, name: &str) -> Result<Vec<Result<Claimed>>> {
        let key = q.handoff(name);
        let (_, taken, _): (i64, Vec<String>, i64) = redis::pipe()
            .atomic()
            .hdel(q.idle(), name)
            .lrange(&key, 0, -1)
            .del(&key)
            .query_async(&mut self.connection())
            .await?;
        Ok(taken.iter().map(|e| parse_handoff(e)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registration_reads_back_as_written_and_damaged_ones_are_none() {
        let r = Registration {
            slots: 7,
            lease: Duration::from_millis(30_000),
            expires_ms: 1_800_000_000_123,
        };
        assert_eq!(r.encode(), "7,30000,1800000000123");
        assert_eq!(Registration::decode(&r.encode()), Some(r));
        for bad in ["", "7", "7,30000", "7,x,1", "-1,1,1", "1,2,3,4"] {
            assert_eq!(Registration::decode(bad), None, "{bad:?}");
        }
    }
}

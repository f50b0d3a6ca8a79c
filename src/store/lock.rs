//! Named locks in Redis (the API is [`crate::lock`]): the lock key holds
//! `<token>:<fence>` (the holder's random token and its fencing number) and
//! expires with the TTL; `<lock key>:fence` counts acquisitions and never
//! expires. Each step is one script, so a holder can only renew or release
//! the lock it still holds (compare-and-set on the whole value).

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::{int, Store};
use crate::error::Result;
use crate::keys;

static ACQUIRE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/lock_acquire.lua")));
static RENEW: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/lock_renew.lua")));
static RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/lock_release.lua")));

/// A TTL in whole ms, at least 1 (a zero TTL is an error to Redis).
fn ttl_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// What Redis holds for a lock taken by `token` under `fence`.
pub(crate) fn lock_value(token: &str, fence: u64) -> String {
    format!("{token}:{fence}")
}

/// What an attempt to take a lock found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockAnswer {
    /// Taken, under this fencing number.
    Taken { fence: u64 },
    /// Someone else holds it for at most this long.
    Busy { expires_in: Duration },
}

impl Store {
    /// Takes lock `name` (checked by the caller) for `ttl` as `token` when
    /// nobody holds it.
    pub(crate) async fn lock_acquire(
        &self,
        name: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<LockAnswer> {
        let key = keys::lock(self.prefix(), name);
        let reply: Vec<redis::Value> = ACQUIRE
            .key(&key)
            .key(keys::lock_fence(&key))
            .arg(token)
            .arg(ttl_ms(ttl))
            .invoke_async(&mut self.connection())
            .await?;
        let (got, n) = (int(reply.first(), "lock")?, int(reply.get(1), "lock")?);
        Ok(if got == 1 {
            LockAnswer::Taken {
                fence: u64::try_from(n).unwrap_or(0),
            }
        } else {
            LockAnswer::Busy {
                expires_in: Duration::from_millis(u64::try_from(n).unwrap_or(0)),
            }
        })
    }

    /// Extends lock `name` held as `value` ([`lock_value`]); false when it is
    /// no longer held so.
    pub(crate) async fn lock_renew(&self, name: &str, value: &str, ttl: Duration) -> Result<bool> {
        let n: i64 = RENEW
            .key(keys::lock(self.prefix(), name))
            .arg(value)
            .arg(ttl_ms(ttl))
            .invoke_async(&mut self.connection())
            .await?;
        Ok(n == 1)
    }

    /// Releases lock `name` if it is still held as `value`; false when not.
    pub(crate) async fn lock_release(&self, name: &str, value: &str) -> Result<bool> {
        let n: i64 = RELEASE
            .key(keys::lock(self.prefix(), name))
            .arg(value)
            .invoke_async(&mut self.connection())
            .await?;
        Ok(n == 1)
    }
}

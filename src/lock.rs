//! Distributed locks on one Redis: a token, a TTL, renewal, release by
//! compare-and-delete, and a fencing number that only grows.
//!
//! [`try_acquire`]`(&store, "name", ttl)` takes the lock `name` with a random
//! token and a TTL if nobody holds it, or says how long the current holder's
//! lock has left ([`Acquired::Busy`]). The [`LockGuard`] it returns can
//! [`renew`](LockGuard::renew) the TTL and [`release`](LockGuard::release)
//! the lock (compare-and-delete: only the holder's token works), and carries
//! [`fence`](LockGuard::fence), a number that grows with every acquisition.
//! Dropping a guard does not release the lock; its TTL does. Lock names are
//! 1–128 characters of `A-Z a-z 0-9 _ . - :`.
//!
//! ```no_run
//! # async fn example(store: redq::store::Store) -> redq::Result<()> {
//! use std::time::Duration;
//! use redq::lock::{try_acquire, Acquired};
//!
//! match try_acquire(&store, "nightly-export", Duration::from_secs(30)).await? {
//!     Acquired::Held(guard) => {
//!         // Work well inside the TTL, or hand guard.fence() to what you write.
//!         let still_ours = guard.renew(Duration::from_secs(30)).await?;
//!         // ...
//!         guard.release().await?;
//!     }
//!     Acquired::Busy { expires_in } => println!("held elsewhere for up to {expires_in:?}"),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! What it guarantees: while one Redis primary keeps its data, at most one
//! holder has a given lock at a time, as measured by Redis's clock; a holder
//! whose TTL lapsed cannot renew or release the lock someone else took since;
//! each acquisition gets a larger fencing number than every earlier one.
//!
//! What it does not: a holder may still *believe* it holds the lock after the
//! TTL lapsed (a long pause, a slow network), so work guarded by a lock must
//! either finish well inside the TTL or pass [`LockGuard::fence`] to the
//! resource and let it refuse older numbers. On a Redis failover with
//! asynchronous replication a lock can be lost and granted twice. It is not
//! Redlock and makes no claims across several independent Redis servers.
//!
//! For a duty that must run in one process at a time, [`crate::leader`]
//! builds a renewed leader lease on these locks.
//!
//! Keys: `<prefix>:lock:{<name>}` (the holder's `<token>:<fence>`, expiring
//! with the TTL) and `<prefix>:lock:{<name>}:fence` (the fencing counter,
//! which never expires), one hash tag, so a lock lives on one Redis Cluster
//! slot. Scripts: `lua/lock_acquire.lua`, `lock_renew.lua`, `lock_release.lua`.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::keys;
use crate::store::{lock_value, LockAnswer, Store};

/// A held lock. Dropping it does not release it (the TTL will): call
/// [`LockGuard::release`] when done.
#[derive(Clone)]
pub struct LockGuard {
    store: Store,
    name: String,
    value: String,
    fence: u64,
}

/// The answer of [`try_acquire`].
#[derive(Debug)]
pub enum Acquired {
    Held(LockGuard),
    /// Someone else holds it; it expires in this long at the latest.
    Busy {
        expires_in: Duration,
    },
}

/// Refuses a lock name that is not 1-128 of `A-Z a-z 0-9 _ . - :`.
pub(crate) fn check_name(name: &str) -> Result<()> {
    if keys::is_valid_name(name) {
        return Ok(());
    }
    Err(Error::InvalidName(format!(
        "lock name {name:?} must be 1-{} characters from A-Z a-z 0-9 _ . - :",
        keys::MAX_NAME_LEN
    )))
}

/// Takes the lock `name` for `ttl` if nobody holds it.
pub async fn try_acquire(store: &Store, name: &str, ttl: Duration) -> Result<Acquired> {
    check_name(name)?;
    let token = uuid::Uuid::now_v7().simple().to_string();
    Ok(match store.lock_acquire(name, &token, ttl).await? {
        LockAnswer::Taken { fence } => Acquired::Held(LockGuard {
            store: store.clone(),
            name: name.to_owned(),
            value: lock_value(&token, fence),
            fence,
        }),
        LockAnswer::Busy { expires_in } => Acquired::Busy { expires_in },
    })
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("name", &self.name)
            .field("fence", &self.fence)
            .finish()
    }
}

impl LockGuard {
    /// The fencing number of this acquisition: larger than every earlier one.
    pub fn fence(&self) -> u64 {
        self.fence
    }

    /// Extends the TTL; false when the lock is no longer ours (stop the guarded work).
    pub async fn renew(&self, ttl: Duration) -> Result<bool> {
        self.store.lock_renew(&self.name, &self.value, ttl).await
    }

    /// Releases the lock if it is still ours; false when it had already lapsed.
    pub async fn release(self) -> Result<bool> {
        self.store.lock_release(&self.name, &self.value).await
    }
}

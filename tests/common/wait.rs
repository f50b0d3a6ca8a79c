//! Bounded waits, one family for every test: [`eventually`] in async tests,
//! [`wait_for`] in blocking (process) tests. Both look at a condition every
//! [`TICK`] until it holds, and fail the test after `limit` naming what they
//! waited for and what they saw last.
//!
//! These are for conditions that have no signal to await (Redis state, a
//! file a handler wrote, a process's exit, a `/metrics` sample). Where the
//! test holds a signal (a handler's channel, a `watch`, a semaphore), it
//! awaits that under [`within`] instead of polling.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often a condition is looked at again.
pub const TICK: Duration = Duration::from_millis(20);
/// The usual bound of a wait for something the daemon does at once.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// What a probe answers: `bool` (the condition holds), `Option<T>` (the
/// value, once there) or `Result<T, String>` (the value, or what was seen
/// instead, for the time-out message).
pub trait Ready {
    type Value;
    fn ready(self) -> Result<Self::Value, String>;
}

impl Ready for bool {
    type Value = ();
    fn ready(self) -> Result<(), String> {
        self.then_some(()).ok_or_else(String::new)
    }
}

impl<T> Ready for Option<T> {
    type Value = T;
    fn ready(self) -> Result<T, String> {
        self.ok_or_else(String::new)
    }
}

impl<T> Ready for Result<T, String> {
    type Value = T;
    fn ready(self) -> Result<T, String> {
        self
    }
}

fn timed_out(what: &str, limit: Duration, last: &str) -> ! {
    if last.is_empty() {
        panic!("timed out after {limit:?} waiting for {what}")
    }
    panic!("timed out after {limit:?} waiting for {what}; last seen: {last}")
}

/// Awaits `probe` every [`TICK`] until it is ready; fails the test after
/// `limit` (a probe that hangs counts against the limit too).
pub async fn eventually<R, F, Fut>(what: &str, limit: Duration, mut probe: F) -> R::Value
where
    R: Ready,
    F: FnMut() -> Fut,
    Fut: Future<Output = R>,
{
    let mut last = String::new();
    let looking = async {
        loop {
            match probe().await.ready() {
                Ok(v) => return v,
                Err(seen) => last = seen,
            }
            tokio::time::sleep(TICK).await;
        }
    };
    match tokio::time::timeout(limit, looking).await {
        Ok(v) => v,
        Err(_) => timed_out(what, limit, &last),
    }
}

/// Calls `probe` every [`TICK`] until it is ready; fails the test after `limit`.
pub fn wait_for<R: Ready>(what: &str, limit: Duration, mut probe: impl FnMut() -> R) -> R::Value {
    let mut last = String::new();
    poll(limit, || match probe().ready() {
        Ok(v) => Some(v),
        Err(seen) => {
            last = seen;
            None
        }
    })
    .unwrap_or_else(|| timed_out(what, limit, &last))
}

/// Calls `probe` every [`TICK`] until it returns `Some`, for at most
/// `limit`; `None` on time-out, for callers that explain it themselves.
pub fn poll<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(TICK);
    }
}

/// Runs a future with a bound, so a hang fails the test instead of stalling CI.
pub async fn within<T>(secs: u64, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("timed out after {secs}s"))
}

/// The host's clock, in Unix ms (what handlers and the tests read).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Sleeps until the host's clock has passed `t` (Unix ms): a wait for time
/// itself to pass, not for something to happen.
pub async fn sleep_past_ms(t: i64) {
    while now_ms() <= t {
        tokio::time::sleep(Duration::from_millis((t + 1 - now_ms()).max(1) as u64)).await;
    }
}

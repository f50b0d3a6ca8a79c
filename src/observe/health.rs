//! Liveness and readiness state behind `/healthz` and `/readyz` (and the
//! systemd watchdog, which should only be fed while `healthz` is ok).
//!
//! - Healthy (`/healthz`): the process answers and every registered loop has
//!   beaten within its allowed staleness. A loop's registration counts as its
//!   first beat, so a loop that never starts turns unhealthy after one
//!   staleness period.
//! - Ready (`/readyz`): Redis answered the last check, accepted the last
//!   write probe (a paused Redis or a replica answers reads but no writes,
//!   and no job moves then), the scripts are loaded, and the daemon is not
//!   draining. Starts not ready (writes count as accepted until a probe says
//!   otherwise).
//!
//! Invariants: time comes from one injected clock (tests use a manual one,
//! never sleeps); a beat takes a mutex and a lookup by `&str`, allocating only
//! for a loop's first beat; no method panics (a poisoned lock is recovered,
//! since the state is plain timestamps).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

/// Staleness allowed to a loop that beats without being registered first.
pub const DEFAULT_STALENESS: Duration = Duration::from_secs(60);

struct LoopState {
    last_beat: Instant,
    max_staleness: Duration,
}

type Clock = Box<dyn Fn() -> Instant + Send + Sync>;

/// Shared health state. Wrap it in an `Arc`; every method takes `&self`.
pub struct Health {
    clock: Clock,
    redis_ok: AtomicBool,
    /// Why Redis is not reachable, when it is not (shown by `/readyz`).
    redis_error: Mutex<Option<String>>,
    writes_ok: AtomicBool,
    scripts_loaded: AtomicBool,
    draining: AtomicBool,
    loops: Mutex<BTreeMap<String, LoopState>>,
}

impl Default for Health {
    fn default() -> Self {
        Health::new()
    }
}

impl Health {
    /// Health on the real monotonic clock: not ready, no loops registered.
    pub fn new() -> Health {
        Health::with_clock(Instant::now)
    }

    /// Health on an injected clock (for tests: a closure reading a shared `Instant`).
    pub fn with_clock(clock: impl Fn() -> Instant + Send + Sync + 'static) -> Health {
        Health {
            clock: Box::new(clock),
            redis_ok: AtomicBool::new(false),
            redis_error: Mutex::new(None),
            writes_ok: AtomicBool::new(true),
            scripts_loaded: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            loops: Mutex::new(BTreeMap::new()),
        }
    }

    /// Registers (or re-registers) a loop that must beat at least every
    /// `max_staleness`; counts as a beat now.
    pub fn register_loop(&self, name: &str, max_staleness: Duration) {
        let now = (self.clock)();
        let state = LoopState {
            last_beat: now,
            max_staleness,
        };
        self.loops().insert(name.to_owned(), state);
    }

    /// Forgets a loop that stopped on purpose (for example during shutdown).
    pub fn unregister_loop(&self, name: &str) {
        self.loops().remove(name);
    }

    /// Records progress of loop `name`; an unregistered loop is registered
    /// with [`DEFAULT_STALENESS`].
    pub fn beat(&self, name: &str) {
        let now = (self.clock)();
        let mut loops = self.loops();
        match loops.get_mut(name) {
            Some(state) => state.last_beat = now,
            None => {
                let state = LoopState {
                    last_beat: now,
                    max_staleness: DEFAULT_STALENESS,
                };
                loops.insert(name.to_owned(), state);
            }
        }
    }

    /// Whether the last Redis check succeeded (a success clears the error
    /// recorded by [`Health::set_redis_error`]).
    pub fn set_redis_ok(&self, ok: bool) {
        self.redis_ok.store(ok, Relaxed);
        if ok {
            self.set_redis_error(None);
        }
    }

    /// Why the last Redis check failed (`None`: it did not), for `/readyz`.
    pub fn set_redis_error(&self, error: Option<String>) {
        *self.redis_error.lock().unwrap_or_else(|e| e.into_inner()) = error;
    }

    /// Whether Redis accepted the last write probe in time.
    pub fn set_writes_ok(&self, ok: bool) {
        self.writes_ok.store(ok, Relaxed);
    }

    /// Whether redq's scripts and function library are loaded into Redis.
    pub fn set_scripts_loaded(&self, loaded: bool) {
        self.scripts_loaded.store(loaded, Relaxed);
    }

    /// Whether the daemon is draining (stopped claiming, shutting down).
    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Relaxed);
    }

    /// Liveness and its JSON body:
    /// `{"status":"ok","loops":{"claim":{"ok":true,"since_beat_ms":12,"max_staleness_ms":5000}}}`.
    pub fn healthz(&self) -> (bool, Value) {
        let now = (self.clock)();
        let mut all_ok = true;
        let mut loops = Map::new();
        for (name, state) in self.loops().iter() {
            let since = now.saturating_duration_since(state.last_beat);
            let ok = since <= state.max_staleness;
            all_ok &= ok;
            let body = json!({
                "ok": ok,
                "since_beat_ms": millis(since),
                "max_staleness_ms": millis(state.max_staleness),
            });
            loops.insert(name.clone(), body);
        }
        let body = json!({ "status": status(all_ok), "loops": loops });
        (all_ok, body)
    }

    /// Readiness and its JSON body:
    /// `{"status":"unavailable","redis":true,"writes":false,"scripts":true,"draining":false}`;
    /// with Redis unreachable also `"redis_error"`: what the last check said.
    pub fn readyz(&self) -> (bool, Value) {
        let redis = self.redis_ok.load(Relaxed);
        let writes = self.writes_ok.load(Relaxed);
        let scripts = self.scripts_loaded.load(Relaxed);
        let draining = self.draining.load(Relaxed);
        let ok = redis && writes && scripts && !draining;
        let mut body = json!({
            "status": status(ok),
            "redis": redis,
            "writes": writes,
            "scripts": scripts,
            "draining": draining,
        });
        if !redis {
            let error = self
                .redis_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            if let (Some(error), Some(b)) = (error, body.as_object_mut()) {
                b.insert("redis_error".into(), Value::from(error));
            }
        }
        (ok, body)
    }

    fn loops(&self) -> MutexGuard<'_, BTreeMap<String, LoopState>> {
        self.loops.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn status(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "unavailable"
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

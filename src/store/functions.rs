//! redq's two Redis Function libraries on the server (see
//! [`crate::scripts`]): reading whether they are there, loading them, and
//! running a transition as a function of the internal one.
//!
//! Loading needs `FUNCTION LOAD`, which a least-privilege user lacks
//! (`redq setup` loads the libraries once per Redis and release, as a user
//! that may). So every process loads a library only when it is missing and
//! it may, and otherwise carries on:
//! - the internal library missing and not loadable (NOPERM): transitions run
//!   as EVALSHA scripts (the same Lua), and FCALL is tried again every
//!   [`RETRY_FCALL`], so a library `redq setup` loads meanwhile is used;
//! - the public library missing or another version and not loadable:
//!   producers' `FCALL redq_enqueue` fails until `redq setup` runs.
//!
//! Each is warned about once (again only after it was found fixed). When a
//! transition finds its function gone (Redis restarted without persistence,
//! `FUNCTION FLUSH`), Redis has most likely lost the public library too:
//! the store loads both then, not at the daemon's next periodic check.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use redis::Value;

use super::Store;
use crate::error::Result;
use crate::scripts::{self, LibraryStatus, Transition};

/// While the internal library is missing and this user may not load it,
/// how long transitions run as EVALSHA before FCALL is tried again (one
/// failing FCALL and FUNCTION LOAD per period).
pub const RETRY_FCALL: Duration = Duration::from_secs(30);

/// What Redis holds of the public `redq` library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicLibrary {
    /// This version.
    Current,
    /// Not loaded.
    Missing,
    /// Another version (of another redq release).
    Other(String),
    /// Could not tell: this user may not call `redq_version`.
    Unknown,
}

/// Whether this version's internal library is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InternalLibrary {
    Loaded,
    Missing,
    /// Could not tell: this user may not call it.
    Unknown,
}

/// How the store's clones run transitions, and which warnings were given.
#[derive(Default)]
pub(crate) struct Functions {
    /// Redis has no functions: transitions run as EVALSHA for good (only a
    /// client gets here: a daemon refuses such a server at start).
    absent: AtomicBool,
    /// While the internal library is missing and may not be loaded:
    /// EVALSHA until this many ms after [`EPOCH`] (0: FCALL).
    eval_until_ms: AtomicU64,
    warned_internal: AtomicBool,
    warned_public: AtomicBool,
    /// One restore of the public library at a time.
    restoring: AtomicBool,
    /// This process has seen the public library current on the server: a
    /// later load means Redis lost it (or another release replaced it).
    seen_public: AtomicBool,
}

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn since_epoch_ms() -> u64 {
    u64::try_from(EPOCH.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Functions {
    fn use_fcall(&self) -> bool {
        if self.absent.load(Ordering::Relaxed) {
            return false;
        }
        let until = self.eval_until_ms.load(Ordering::Relaxed);
        until == 0 || since_epoch_ms() >= until
    }

    /// The internal library may not be loaded: EVALSHA for [`RETRY_FCALL`].
    fn eval_for_a_while(&self) {
        let until = since_epoch_ms()
            .saturating_add(super::ms(RETRY_FCALL))
            .max(1);
        self.eval_until_ms.store(until, Ordering::Relaxed);
        if !self.warned_internal.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "redq's function library {} is not loaded on this Redis and this user may not load it \
                 (FUNCTION LOAD refused: NOPERM): redq runs its transitions as EVALSHA scripts, \
                 which cost Redis more per call, until `redq setup` loads it",
                scripts::internal_library_name()
            );
        }
    }

    /// An FCALL worked: after a time on EVALSHA, say so once.
    fn fcall_works(&self) {
        if self.eval_until_ms.swap(0, Ordering::Relaxed) != 0
            && self.warned_internal.swap(false, Ordering::Relaxed)
        {
            tracing::info!(
                "redq's function library {} is loaded now: the transitions run as functions again",
                scripts::internal_library_name()
            );
        }
    }
}

fn not_found(e: &redis::RedisError) -> bool {
    e.to_string().contains("Function not found")
}

fn unknown_command(e: &redis::RedisError) -> bool {
    e.to_string().contains("unknown command")
}

/// Sends `call` alone, or after `first`'s commands in one MULTI/EXEC
/// (`first`'s replies ignored); `call`'s reply.
async fn send(
    con: &mut super::cluster::Conn,
    first: Option<&redis::Pipeline>,
    call: &redis::Cmd,
) -> redis::RedisResult<Value> {
    let Some(first) = first else {
        return call.query_async(con).await;
    };
    let mut pipe = first.clone();
    pipe.atomic().add_command(call.clone());
    let mut replies: Vec<Value> = pipe.query_async(con).await?;
    replies.pop().ok_or_else(|| {
        redis::RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "MULTI/EXEC answered no reply for the transition",
        ))
    })
}

fn connection_lost(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}

impl Store {
    /// Runs transition `t` on `keys` (the queue's base key first): one
    /// FCALL of its function in the internal library. Only when Redis
    /// answers that the function is not there (a new version, a Redis
    /// restarted without persistence, `FUNCTION FLUSH`) does it load the
    /// library, and the public one with it, and call again; nothing ran the
    /// first time, so the second call is the only one that acts. The same
    /// Lua runs as an EVALSHA script on a Redis without functions, for a
    /// call whose library Redis refused to load at `maxmemory` (where a
    /// freeing transition must run), and while this user may not load it
    /// (see the module doc).
    pub(super) async fn call(
        &self,
        t: &Transition,
        keys: &[&str],
        args: Vec<String>,
    ) -> Result<Value> {
        self.call_after(None, t, keys, args).await
    }

    /// [`Store::call`], with `first`'s commands (their replies ignored)
    /// before it in one MULTI/EXEC when given: they and the transition take
    /// effect together or not at all. When the function is not there, the
    /// EXEC ran `first` and failed the call; the second EXEC runs both
    /// again, so `first` must be idempotent (the enqueue's `HSETNX` of a
    /// staged payload is).
    pub(super) async fn call_after(
        &self,
        first: Option<&redis::Pipeline>,
        t: &Transition,
        keys: &[&str],
        args: Vec<String>,
    ) -> Result<Value> {
        let mut con = self.connection();
        let f = &self.functions;
        if f.use_fcall() {
            let mut call = redis::cmd("FCALL");
            call.arg(&t.function).arg(keys.len()).arg(keys).arg(&args);
            match send(&mut con, first, &call).await {
                Ok(v) => {
                    f.fcall_works();
                    return Ok(v);
                }
                Err(e) if not_found(&e) => match self.load_internal_library().await {
                    Ok(true) => {
                        self.restore_public_library().await;
                        let v = send(&mut con, first, &call).await?;
                        f.fcall_works();
                        return Ok(v);
                    }
                    Ok(false) => {}
                    Err(e) if e.is_no_perm() => f.eval_for_a_while(),
                    Err(e) => return Err(e),
                },
                Err(e) if unknown_command(&e) => f.absent.store(true, Ordering::Relaxed),
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(first) = first {
            // Inside MULTI a missing script cannot be loaded on NOSCRIPT
            // and retried alone: load it first.
            let script = t.script();
            script.load_async(&mut con).await?;
            let mut call = redis::cmd("EVALSHA");
            call.arg(script.get_hash())
                .arg(keys.len())
                .arg(keys)
                .arg(&args);
            return Ok(send(&mut con, Some(first), &call).await?);
        }
        let mut inv = t.script().prepare_invoke();
        for k in keys {
            inv.key(*k);
        }
        for a in args {
            inv.arg(a);
        }
        Ok(inv.invoke_async(&mut con).await?)
    }

    /// Calls the read-only `function` (no keys) on every primary (one
    /// Redis, or each primary of a cluster: a library must be on each).
    async fn version_on_every_primary(
        &self,
        function: &str,
    ) -> Result<Vec<redis::RedisResult<String>>> {
        let mut call = redis::cmd("FCALL_RO");
        call.arg(function).arg(0);
        Ok(self
            .on_every_primary(&call)
            .await?
            .into_iter()
            .map(|(_, r)| r.and_then(|v| Ok(redis::from_redis_value(v)?)))
            .collect())
    }

    /// What Redis holds of the public library, read without writing (on a
    /// cluster, the worst of what its primaries hold).
    pub async fn public_library(&self) -> Result<PublicLibrary> {
        let mut worst = PublicLibrary::Current;
        for have in self.version_on_every_primary("redq_version").await? {
            let this = match have {
                Ok(v) if v == scripts::library_version() => PublicLibrary::Current,
                Ok(v) => PublicLibrary::Other(v),
                Err(e) if not_found(&e) => PublicLibrary::Missing,
                Err(e) if e.code() == Some("NOPERM") => PublicLibrary::Unknown,
                Err(e) => return Err(e.into()),
            };
            let rank = |l: &PublicLibrary| match l {
                PublicLibrary::Current => 0,
                PublicLibrary::Unknown => 1,
                PublicLibrary::Other(_) => 2,
                PublicLibrary::Missing => 3,
            };
            if rank(&this) > rank(&worst) {
                worst = this;
            }
        }
        Ok(worst)
    }

    /// Whether this version's internal library is loaded (on a cluster, on
    /// every primary), read without writing.
    pub async fn internal_library(&self) -> Result<InternalLibrary> {
        let mut worst = InternalLibrary::Loaded;
        for have in self
            .version_on_every_primary(&scripts::internal_version_function())
            .await?
        {
            match have {
                Ok(_) => {}
                Err(e) if not_found(&e) => return Ok(InternalLibrary::Missing),
                Err(e) if e.code() == Some("NOPERM") => worst = InternalLibrary::Unknown,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(worst)
    }

    /// Loads the public `redq` library (FCALL redq_enqueue) unless the
    /// same version is loaded (on a cluster: on every primary; `FUNCTION
    /// LOAD` goes to all of them). Fails with NOPERM when this user may not
    /// load functions, and with OOM at `maxmemory`.
    pub async fn ensure_library(&self) -> Result<LibraryStatus> {
        let mut current = true;
        for have in self.version_on_every_primary("redq_version").await? {
            match have {
                Ok(v) if v == scripts::library_version() => {}
                Ok(_) => current = false,
                Err(e) if unknown_command(&e) => return Ok(LibraryStatus::Unsupported),
                Err(e) if connection_lost(&e) => return Err(e.into()),
                // "Function not found": not loaded yet; NOPERM: cannot tell,
                // and FUNCTION LOAD says whether this user may load it.
                Err(_) => current = false,
            }
        }
        if current {
            return Ok(LibraryStatus::Current);
        }
        self.load_public_library().await?;
        Ok(LibraryStatus::Loaded)
    }

    /// `FUNCTION LOAD REPLACE` of the public library, whatever is loaded.
    pub async fn load_public_library(&self) -> Result<()> {
        redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg("REPLACE")
            .arg(scripts::library_source())
            .query_async::<String>(&mut self.connection())
            .await?;
        Ok(())
    }

    /// Loads the internal library ([`scripts::internal_library_name`]):
    /// `true` once it is there, `false` when Redis refused it for being at
    /// `maxmemory` (`FUNCTION LOAD` needs memory; the transitions then run
    /// as EVAL scripts). A library of that name is the same Lua (the name is
    /// its hash), so "already exists" (another process loaded it first) is
    /// success. Fails with NOPERM when this user may not load functions.
    pub async fn load_internal_library(&self) -> Result<bool> {
        let loaded: redis::RedisResult<String> = redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg(scripts::internal_library_source())
            .query_async(&mut self.connection())
            .await;
        match loaded {
            Ok(_) => Ok(true),
            Err(e) if e.to_string().contains("already exists") => Ok(true),
            Err(e) if e.code() == Some("OOM") => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Loads the public library when it is missing or another version and
    /// this user may, and logs what an operator must know: that it was
    /// loaded again, or (once) that producers' FCALL needs `redq setup`.
    /// A daemon calls it at start and every 30 s, and the store when a
    /// transition finds Redis lost its functions. One call at a time.
    pub async fn restore_public_library(&self) {
        if let Err(e) = self.check_public_library().await {
            tracing::debug!(error = %e, "checking the `redq` function library failed");
        }
    }

    /// [`Store::restore_public_library`], failing when Redis does not
    /// answer (a daemon's start).
    pub(crate) async fn check_public_library(&self) -> Result<()> {
        let f = &self.functions;
        if f.restoring.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let found = self.ensure_library().await;
        f.restoring.store(false, Ordering::Release);
        let what = match found {
            Ok(LibraryStatus::Loaded) => {
                if f.seen_public.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "the `redq` function library was gone or another version (Redis lost its \
                         functions, or a daemon of another release replaced it); loaded it again"
                    );
                } else {
                    tracing::info!(
                        version = scripts::library_version(),
                        "loaded the `redq` function library"
                    );
                }
                f.warned_public.store(false, Ordering::Relaxed);
                return Ok(());
            }
            Ok(LibraryStatus::Current) => {
                f.seen_public.store(true, Ordering::Relaxed);
                if f.warned_public.swap(false, Ordering::Relaxed) {
                    tracing::info!(
                        "the `redq` function library is loaded now: FCALL redq_enqueue works"
                    );
                }
                return Ok(());
            }
            Ok(LibraryStatus::Unsupported) => return Ok(()),
            Err(e) if e.is_no_perm() => "this user may not load it (FUNCTION LOAD refused: NOPERM)",
            Err(e) if e.is_oom() => "Redis is at maxmemory and refused to load it",
            Err(e) => return Err(e),
        };
        if !f.warned_public.swap(true, Ordering::Relaxed) {
            let (state, effect) = match self.public_library().await {
                Ok(PublicLibrary::Other(v)) => (
                    format!(
                        "is another version ({v}; this redq's is {})",
                        scripts::library_version()
                    ),
                    "runs that version",
                ),
                _ => (
                    "is not loaded".to_owned(),
                    "fails with \"Function not found\"",
                ),
            };
            tracing::warn!(
                "the `redq` function library {state} and {what}: producers' FCALL redq_enqueue \
                 {effect} until `redq setup` runs against this Redis (the inbox list works meanwhile)"
            );
        }
        Ok(())
    }

    /// At a daemon's start: the public library as
    /// [`Store::check_public_library`], and the internal one loaded now
    /// rather than at the first claim when it is missing and this user may;
    /// when it may not, the transitions start on EVALSHA (warned once).
    pub async fn prepare_libraries(&self) -> Result<()> {
        self.check_public_library().await?;
        if self.internal_library().await? != InternalLibrary::Missing {
            return Ok(());
        }
        match self.load_internal_library().await {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                "Redis is at maxmemory: the transitions run as EVAL scripts until their library loads"
            ),
            Err(e) if e.is_no_perm() => self.functions.eval_for_a_while(),
            Err(e) => return Err(e),
        }
        Ok(())
    }
}

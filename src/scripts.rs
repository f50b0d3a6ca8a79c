//! The Lua transitions and the two Redis Function libraries.
//!
//! Each transition is one file in `src/lua/`, with a contract header
//! (purpose, KEYS, ARGV, returns). `prelude.lua` holds the helpers they share
//! (key names, scores, the job-document rules). Each transition exists in
//! two forms built here from the same text:
//! - a function of the internal library `redqi_<hash>` (prelude once, then
//!   each body as a function's callback), which is how the store runs it
//!   (`Store::run_with`: FCALL, loading the library when Redis says the
//!   function is not found);
//! - an EVAL script (prelude + body, self-contained), for Redis without
//!   functions, for a Redis at maxmemory that refuses to load the library,
//!   and for the few callers that pass their own keys. `redis::Script`
//!   sends EVALSHA and loads the script on NOSCRIPT.
//!
//! The public `redq` library (`FCALL redq_enqueue`) is for producers in
//! other languages; it is versioned and replaced as a whole.

use std::sync::LazyLock;

use redis::Script;

use crate::error::Result;

const PRELUDE: &str = include_str!("lua/prelude.lua");
const FUNCTIONS: &str = include_str!("lua/functions.lua");

/// One transition, in both of its forms.
pub struct Transition {
    pub name: &'static str,
    /// The same text as an EVAL script (prelude + body), for Redis without
    /// functions and for callers that pass their own keys.
    pub script: Script,
    /// Its function in the internal library ([`internal_library_source`]).
    pub function: String,
}

fn transition(name: &'static str, body: &'static str) -> Transition {
    Transition {
        name,
        script: Script::new(&format!("{PRELUDE}\n{body}")),
        function: function_name(name),
    }
}

/// The function of transition `name` in the internal library.
fn function_name(name: &str) -> String {
    format!("{}_{name}", internal_library_name())
}

/// Every internal script, built once.
pub struct Scripts {
    pub enqueue: Transition,
    pub claim: Transition,
    pub complete: Transition,
    pub fail: Transition,
    pub extend: Transition,
    pub release: Transition,
    pub reap: Transition,
    pub dead_retry: Transition,
    pub dead_purge: Transition,
    pub import: Transition,
    pub cron_enqueue: Transition,
    pub promote: Transition,
    pub configure: Transition,
}

/// Each transition: its name, its body (without the prelude) and whether it
/// must run when Redis is at `maxmemory` (it frees memory or keeps leases
/// alive: see `allow_when_full` in the prelude).
const BODIES: [(&str, &str, bool); 13] = [
    ("enqueue", include_str!("lua/enqueue.lua"), false),
    ("claim", include_str!("lua/claim.lua"), true),
    ("complete", include_str!("lua/complete.lua"), true),
    ("fail", include_str!("lua/fail.lua"), true),
    ("extend", include_str!("lua/extend.lua"), true),
    ("release", include_str!("lua/release.lua"), true),
    ("reap", include_str!("lua/reap.lua"), true),
    ("dead_retry", include_str!("lua/dead_retry.lua"), false),
    ("dead_purge", include_str!("lua/dead_purge.lua"), true),
    ("import", include_str!("lua/import.lua"), false),
    ("cron_enqueue", include_str!("lua/cron_enqueue.lua"), false),
    ("promote", include_str!("lua/promote.lua"), true),
    ("configure", include_str!("lua/configure.lua"), true),
];

pub static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| {
    let [enqueue, claim, complete, fail, extend, release, reap, dead_retry, dead_purge, import, cron_enqueue, promote, configure] =
        BODIES.map(|(name, body, _)| transition(name, body));
    Scripts {
        enqueue,
        claim,
        complete,
        fail,
        extend,
        release,
        reap,
        dead_retry,
        dead_purge,
        import,
        cron_enqueue,
        promote,
        configure,
    }
});

/// FNV-1a, 64 bits: stable across builds and platforms.
fn fnv(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in parts.iter().flat_map(|p| p.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The name of the internal library: `redqi_<hash of its Lua>`. The
/// transitions run as its functions (`FCALL redqi_<hash>_claim ...`), so
/// the prelude runs once when the library loads, not on every call as it
/// does for an EVAL script (measured: ~7 µs of Redis's time per call when
/// warm, ~30 µs when Redis was idle and its caches cold, as at a steady
/// trickle of single enqueues). The name changes with the Lua, so daemons
/// of two versions sharing a Redis during a rolling upgrade each find their
/// own functions instead of replacing each other's; a library of a version
/// no longer running can be removed with `FUNCTION DELETE`.
pub fn internal_library_name() -> &'static str {
    static NAME: LazyLock<String> = LazyLock::new(|| {
        let mut parts = vec![PRELUDE];
        parts.extend(BODIES.iter().map(|(_, body, _)| *body));
        format!("redqi_{:016x}", fnv(&parts))
    });
    &NAME
}

/// The internal library's source, as `FUNCTION LOAD` takes it: the prelude
/// once, then each transition's body as the callback of its function
/// (called with the same KEYS and ARGV as the EVAL script).
pub fn internal_library_source() -> String {
    let mut src = format!("#!lua name={}\n{PRELUDE}\n", internal_library_name());
    for (name, body, allow_oom) in BODIES {
        let flags = if allow_oom { "{ 'allow-oom' }" } else { "{}" };
        src.push_str(&format!(
            "-- {name}.lua\nredis.register_function {{ function_name = '{function}', flags = {flags}, callback = function(KEYS, ARGV)\n{body}\nend }}\n",
            function = function_name(name),
        ));
    }
    src
}

/// The version of the function library: a hash of its source, so any change
/// to the Lua reloads it and an unchanged one is never reloaded.
pub fn library_version() -> String {
    let h = fnv(&[PRELUDE, FUNCTIONS]);
    format!("{}-{h:016x}", env!("CARGO_PKG_VERSION"))
}

/// The library's source, as `FUNCTION LOAD` takes it.
pub fn library_source() -> String {
    format!(
        "#!lua name=redq\nlocal REDQ_LIBRARY_VERSION = '{}'\n{PRELUDE}\n{FUNCTIONS}",
        library_version()
    )
}

/// What [`ensure_library`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LibraryStatus {
    /// The library with this version was already loaded.
    Current,
    /// It was missing or older and has been (re)loaded.
    Loaded,
    /// Redis is older than 7.0 and has no functions; only the inbox protocol works.
    Unsupported,
}

/// Loads the `redq` function library unless the same version is loaded.
pub async fn ensure_library<C: redis::aio::ConnectionLike>(con: &mut C) -> Result<LibraryStatus> {
    let want = library_version();
    let have: redis::RedisResult<String> = redis::cmd("FCALL_RO")
        .arg("redq_version")
        .arg(0)
        .query_async(con)
        .await;
    match have {
        Ok(v) if v == want => return Ok(LibraryStatus::Current),
        Ok(_) => {}
        Err(e) => {
            let msg = e.to_string();
            if msg.contains("unknown command") {
                return Ok(LibraryStatus::Unsupported);
            }
            if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
                return Err(e.into());
            }
            // "Function not found": not loaded yet.
        }
    }
    redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(library_source())
        .query_async::<String>(con)
        .await?;
    Ok(LibraryStatus::Loaded)
}

/// Loads the internal library ([`internal_library_name`]) into Redis:
/// `true` once it is there, `false` when Redis refused it for being at
/// `maxmemory` (`FUNCTION LOAD` needs memory; the transitions then run as
/// EVAL scripts). A library of that name is the same Lua (the name is its
/// hash), so "already exists" (another process loaded it first) is success.
pub async fn load_internal_library<C: redis::aio::ConnectionLike>(con: &mut C) -> Result<bool> {
    let loaded: redis::RedisResult<String> = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(internal_library_source())
        .query_async(con)
        .await;
    match loaded {
        Ok(_) => Ok(true),
        Err(e) if e.to_string().contains("already exists") => Ok(true),
        Err(e) if e.code() == Some("OOM") => Ok(false),
        Err(e) => Err(e.into()),
    }
}

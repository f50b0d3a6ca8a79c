//! The Lua transitions and the `redq` Redis Function library.
//!
//! Each transition is one file in `src/lua/`, with a contract header
//! (purpose, KEYS, ARGV, returns). `prelude.lua` holds the helpers they share
//! (key names, scores, the job-document rules) and is put in front of each
//! body here, once, so the text Redis runs is self-contained and there is no
//! include step at run time. `redis::Script` sends EVALSHA and falls back to
//! loading the script on NOSCRIPT (e.g. after a Redis restart).

use std::sync::LazyLock;

use redis::Script;

use crate::error::Result;

const PRELUDE: &str = include_str!("lua/prelude.lua");
const FUNCTIONS: &str = include_str!("lua/functions.lua");

fn build(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}\n{body}"))
}

/// Every internal script, built once.
pub struct Scripts {
    pub enqueue: Script,
    pub claim: Script,
    pub complete: Script,
    pub fail: Script,
    pub extend: Script,
    pub release: Script,
    pub reap: Script,
    pub dead_retry: Script,
    pub dead_purge: Script,
    pub import: Script,
    pub cron_enqueue: Script,
}

pub static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    enqueue: build(include_str!("lua/enqueue.lua")),
    claim: build(include_str!("lua/claim.lua")),
    complete: build(include_str!("lua/complete.lua")),
    fail: build(include_str!("lua/fail.lua")),
    extend: build(include_str!("lua/extend.lua")),
    release: build(include_str!("lua/release.lua")),
    reap: build(include_str!("lua/reap.lua")),
    dead_retry: build(include_str!("lua/dead_retry.lua")),
    dead_purge: build(include_str!("lua/dead_purge.lua")),
    import: build(include_str!("lua/import.lua")),
    cron_enqueue: build(include_str!("lua/cron_enqueue.lua")),
});

/// The version of the function library: a hash of its source, so any change
/// to the Lua reloads it and an unchanged one is never reloaded.
pub fn library_version() -> String {
    // FNV-1a, 64 bits: stable across builds and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in PRELUDE.bytes().chain(FUNCTIONS.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
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

//! The Redis server itself: the checks at a daemon's start (version,
//! eviction policy, persistence) and the function libraries redq loads.
//!
//! Any eviction policy but `noeviction` lets Redis silently delete jobs
//! under memory pressure, so it is warned about loudly. Managed Redis
//! services may refuse CONFIG GET; then the check says it could not tell.

use redis::aio::ConnectionLike;

use super::Store;
use crate::error::Result;
use crate::scripts::{self, LibraryStatus};

impl Store {
    /// Checks the server and logs what an operator must know (see the
    /// module doc); fails only when Redis does not answer.
    pub async fn check_server(&self) -> Result<()> {
        check(&mut self.connection()).await
    }

    /// Loads the public `redq` library (FCALL redq_enqueue) unless the
    /// same version is loaded.
    pub async fn ensure_library(&self) -> Result<LibraryStatus> {
        let mut con = self.connection();
        let want = scripts::library_version();
        let have: redis::RedisResult<String> = redis::cmd("FCALL_RO")
            .arg("redq_version")
            .arg(0)
            .query_async(&mut con)
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
            .arg(scripts::library_source())
            .query_async::<String>(&mut con)
            .await?;
        Ok(LibraryStatus::Loaded)
    }

    /// Loads the internal library ([`scripts::internal_library_name`]):
    /// `true` once it is there, `false` when Redis refused it for being at
    /// `maxmemory` (`FUNCTION LOAD` needs memory; the transitions then run
    /// as EVAL scripts). A library of that name is the same Lua (the name is
    /// its hash), so "already exists" (another process loaded it first) is
    /// success.
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
}

fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

async fn config_get<C: ConnectionLike>(con: &mut C, name: &str) -> Option<String> {
    let pair: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(name)
        .query_async(con)
        .await;
    pair.ok().and_then(|v| v.get(1).cloned())
}

async fn check<C: ConnectionLike>(con: &mut C) -> Result<()> {
    let info: String = redis::cmd("INFO").arg("server").query_async(con).await?;
    let version = info_field(&info, "redis_version")
        .unwrap_or("unknown")
        .to_owned();
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    // Valkey's `redis_version` is the Redis it matches (7.2.4 on Valkey 8);
    // its own version is `valkey_version`.
    match info_field(&info, "valkey_version") {
        Some(valkey) => tracing::info!(version = valkey, "connected to Valkey"),
        None => tracing::info!(%version, "connected to Redis"),
    }
    if major < 7 {
        tracing::warn!(%version, "Redis is older than 7.0: FCALL redq_enqueue is not available; producers must use the inbox list or a redq client");
    }
    match config_get(con, "maxmemory-policy").await.as_deref() {
        Some("noeviction") => {}
        Some(policy) => tracing::warn!(
            policy,
            "REDIS CAN DELETE JOBS: maxmemory-policy is {policy:?}; under memory pressure Redis will evict keys, \
             including queued jobs. Set `maxmemory-policy noeviction` on this Redis."
        ),
        None => tracing::warn!("could not read maxmemory-policy (CONFIG GET refused); make sure it is noeviction"),
    }
    let aof = config_get(con, "appendonly").await;
    let save = config_get(con, "save").await;
    if aof.as_deref() == Some("no") && save.as_deref().map(str::trim) == Some("") {
        tracing::warn!("Redis persistence is off (no AOF, no RDB snapshots): a Redis restart loses every job. Enable appendonly for durable queues.");
    }
    Ok(())
}

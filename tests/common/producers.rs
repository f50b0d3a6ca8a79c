//! Producers as other languages are: `FCALL redq_enqueue` and `LPUSH` onto
//! an inbox, through `redis-cli` (blocking, for process tests) or through a
//! connection (async); and [`job`], the Rust client's job of the tests.

use redq::NewJob;

use super::server::RedisServer;

/// `FCALL redq_enqueue` through `redis-cli`; returns the job id, failing
/// the test if Redis refused the document.
pub fn fcall(redis: &RedisServer, queue: &str, doc: &str) -> String {
    let id = fcall_reply(redis, queue, doc);
    assert!(
        !id.is_empty() && !id.contains(' '),
        "FCALL redq_enqueue refused {doc}: {id}"
    );
    id
}

/// `FCALL redq_enqueue` through `redis-cli`; returns the reply as printed
/// (trimmed): the id, or the error.
pub fn fcall_reply(redis: &RedisServer, queue: &str, doc: &str) -> String {
    let key = format!("redq:{{{queue}}}");
    redis
        .cli(&["FCALL", "redq_enqueue", "1", &key, doc])
        .unwrap()
        .trim()
        .to_owned()
}

/// `LPUSH` of a document onto the queue's inbox through `redis-cli`.
pub fn lpush(redis: &RedisServer, queue: &str, doc: &str) {
    let key = format!("redq:{{{queue}}}:inbox");
    let out = redis.cli(&["LPUSH", &key, doc]).unwrap();
    assert!(out.trim().parse::<u64>().is_ok(), "LPUSH failed: {out}");
}

/// `FCALL redq_enqueue` through a connection, the document given as raw
/// bytes: the id, or Redis's error.
pub async fn fcall_bytes(redis: &RedisServer, queue: &str, doc: &[u8]) -> Result<String, String> {
    redis::cmd("FCALL")
        .arg("redq_enqueue")
        .arg(1)
        .arg(format!("redq:{{{queue}}}"))
        .arg(doc)
        .query_async(&mut redis.con().await)
        .await
        .map_err(|e| e.to_string())
}

/// `FCALL redq_enqueue` through a connection; returns the job id, failing
/// the test if Redis refused the document.
pub async fn fcall_async(redis: &RedisServer, queue: &str, doc: &str) -> String {
    fcall_bytes(redis, queue, doc.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("FCALL refused {doc}: {e}"))
}

/// A job whose payload is the number `n`.
pub fn job(n: i64) -> NewJob {
    NewJob::new(&n).unwrap()
}

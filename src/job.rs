//! Jobs: the document producers send, its rules, and the record redq stores.
//!
//! A producer's job is a JSON object (see [`JobDoc`]); `payload` is required
//! and kept byte for byte. The same rules are enforced in three places that
//! must agree: here (Rust client, CLI), and in `src/lua/lib/doc.lua`
//! (`check_doc`, used by `FCALL redq_enqueue` and the inbox). The limits are
//! the constants below; `tests/protocol.rs` checks both sides refuse alike.
//!
//! Stored record (one field of the queue's `jobs` hash):
//! `"<priority>;<max_attempts or 0>;<enqueued_ms>;<document JSON>"`. The short
//! numeric header lets scripts read what they need without decoding JSON.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::{Error, Result};
use crate::keys;

/// Lowest priority accepted. Each priority in use has its own list of
/// pending jobs; a parked job's order key (lib/parking.lua, `park_score`) stays an exact
/// integer below 2^53: 2001 priority bands of 2^42 places each.
pub const PRIORITY_MIN: i64 = -1000;
/// Highest priority accepted (runs first).
pub const PRIORITY_MAX: i64 = 1000;
/// Longest delay (and furthest `run_at`) accepted: ten years, in ms.
pub const MAX_DELAY_MS: i64 = 315_360_000_000;
/// Most attempts a job may ask for.
pub const MAX_ATTEMPTS: u32 = 1000;
/// Longest `timeout_ms` accepted: one week.
pub const MAX_TIMEOUT_MS: u64 = 604_800_000;
/// Longest `outcome_ttl_ms` accepted (and longest `outcome_ttl` of a
/// queue): one week.
pub const MAX_OUTCOME_TTL_MS: u64 = 604_800_000;
/// Longest `unique_key`, `tenant` or `group`, in bytes.
pub const MAX_TEXT_LEN: usize = 512;
/// Default limit on a job document's size (payload plus options), in bytes.
pub const DEFAULT_MAX_DOC_BYTES: usize = 1024 * 1024;
/// A payload at least this long is kept apart from its job record: in the
/// queue's `payloads` hash, written with `HSETNX` in the enqueue's
/// transaction and read by the daemon with one `HGET` when the job starts,
/// so no script ever handles it (see `src/lua/lib/record.lua`). Every string
/// a script reads is copied and hashed byte by byte in Lua: ~11
/// instructions per byte, so a 4 KiB payload costs about what the rest of a
/// job's transitions do, and a 64 KiB one ten times that. Below this size
/// the extra commands would cost more than they save.
pub const PAYLOAD_APART_BYTES: usize = 4096;

/// The job document, as producers write it (JSON). Unknown fields are refused.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobDoc {
    /// Any JSON; required; handed to the handler exactly as sent.
    pub payload: Box<RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Keep the job's outcome (state, attempts, result, last error) this
    /// long after it ends, at `<prefix>:{<queue>}:outcome:<id>`, for
    /// `redq_status` and for waiters (`BLMOVE`, [`crate::Client::wait`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome_ttl_ms: Option<u64>,
}

/// A job a Rust producer is about to enqueue. Build with [`NewJob::new`] and the setters.
#[derive(Debug, Clone)]
pub struct NewJob {
    doc: JobDoc,
}

/// A job checked and ready for the enqueue script.
#[derive(Debug, Clone)]
pub struct PreparedJob {
    pub id: String,
    /// The stored document; `@` then the document with `"payload":null`
    /// when the payload is kept apart (`payload_apart`).
    pub doc: String,
    /// The payload, when it is kept apart ([`PAYLOAD_APART_BYTES`]).
    pub payload_apart: Option<String>,
    pub priority: i64,
    pub max_attempts: u32,
    pub delay_ms: i64,
    pub run_at_ms: i64,
    pub unique_key: String,
}

impl NewJob {
    /// A job with this payload (any serializable value).
    pub fn new(payload: &impl Serialize) -> Result<Self> {
        let payload = serde_json::value::to_raw_value(payload).map_err(|e| {
            Error::InvalidJob(format!("field \"payload\": cannot encode as JSON: {e}"))
        })?;
        Ok(Self::from_raw(payload))
    }

    /// A job whose payload is this JSON text, kept byte for byte.
    pub fn from_json(payload: &str) -> Result<Self> {
        let payload = RawValue::from_string(payload.trim().to_owned()).map_err(|e| {
            Error::InvalidJob(format!(
                "field \"payload\": not valid JSON ({e}); quote strings, e.g. '\"text\"'"
            ))
        })?;
        Ok(Self::from_raw(payload))
    }

    fn from_raw(payload: Box<RawValue>) -> Self {
        NewJob {
            doc: JobDoc {
                payload,
                priority: None,
                delay_ms: None,
                run_at: None,
                max_attempts: None,
                timeout_ms: None,
                unique_key: None,
                tenant: None,
                group: None,
                id: None,
                outcome_ttl_ms: None,
            },
        }
    }

    /// Higher runs first; from -1000 to 1000; default 0.
    pub fn priority(mut self, p: i64) -> Self {
        self.doc.priority = Some(p);
        self
    }
    /// Run no earlier than this long after Redis receives the job.
    pub fn delay(mut self, d: Duration) -> Self {
        self.doc.delay_ms = Some(i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        self
    }
    /// Run no earlier than this Unix time in milliseconds (Redis's clock).
    pub fn run_at_ms(mut self, ms: i64) -> Self {
        self.doc.run_at = Some(ms);
        self
    }
    /// Attempts before the job is dead (1–1000); default: the queue's setting.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.doc.max_attempts = Some(n);
        self
    }
    /// Handler time-out for this job; default: the queue's setting.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.doc.timeout_ms = Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self
    }
    /// At most one live job per unique key per queue.
    pub fn unique_key(mut self, k: impl Into<String>) -> Self {
        self.doc.unique_key = Some(k.into());
        self
    }
    /// Who the job is for (usage and limits are kept per tenant).
    pub fn tenant(mut self, t: impl Into<String>) -> Self {
        self.doc.tenant = Some(t.into());
        self
    }
    /// Concurrency group.
    pub fn group(mut self, g: impl Into<String>) -> Self {
        self.doc.group = Some(g.into());
        self
    }
    /// A producer-chosen id; enqueueing an id that exists is a no-op returning it.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.doc.id = Some(id.into());
        self
    }

    /// Keep the job's outcome for `d` after it ends (up to 7 days), so a
    /// producer can ask for it or wait for it ([`crate::Client::wait`])
    /// even when the queue keeps no finished jobs.
    pub fn outcome_ttl(mut self, d: Duration) -> Self {
        self.doc.outcome_ttl_ms = Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// Checks every rule and encodes the document; nothing reaches Redis unchecked.
    ///
    /// The stored document leaves out what is kept elsewhere: the id (the
    /// field name), priority and max_attempts (the record's header) and
    /// delay_ms / run_at (spent on the due time). Every waiting job carries
    /// its record, so those bytes count (see benches/README.md, memory).
    /// A payload of [`PAYLOAD_APART_BYTES`] or more is kept apart
    /// ([`PreparedJob::payload_apart`]).
    pub fn prepare(self, max_doc_bytes: usize) -> Result<PreparedJob> {
        self.prepare_with(max_doc_bytes, PAYLOAD_APART_BYTES)
    }

    /// [`NewJob::prepare`], the payload always in the document (for a
    /// script that takes the document alone: cron_enqueue.lua).
    pub fn prepare_inline(self, max_doc_bytes: usize) -> Result<PreparedJob> {
        self.prepare_with(max_doc_bytes, usize::MAX)
    }

    fn prepare_with(self, max_doc_bytes: usize, apart_at: usize) -> Result<PreparedJob> {
        let mut doc = self.doc;
        check_doc(&doc)?;
        let id = match doc.id.take() {
            Some(id) => id,
            None => new_id(),
        };
        let (priority, max_attempts) = (doc.priority.take(), doc.max_attempts.take());
        let (delay_ms, run_at) = (doc.delay_ms.take(), doc.run_at.take());
        let text = serde_json::to_string(&doc)
            .map_err(|e| Error::InvalidJob(format!("cannot encode the job as JSON: {e}")))?;
        // The limit is on the document as the producer wrote it (as
        // `FCALL redq_enqueue` measures it): each field left out would have
        // added `,"<name>":<integer>`.
        let left_out = |name: &str, v: Option<i64>| v.map_or(0, |v| name.len() + 4 + int_len(v));
        let full = text.len()
            + left_out("priority", priority)
            + left_out("max_attempts", max_attempts.map(i64::from))
            + left_out("delay_ms", delay_ms)
            + left_out("run_at", run_at);
        if full > max_doc_bytes {
            return Err(Error::InvalidJob(format!(
                "field \"payload\": the job document is {full} bytes; the limit is {max_doc_bytes} bytes (daemon.max_payload_bytes)"
            )));
        }
        let (text, payload_apart) = if doc.payload.get().len() >= apart_at {
            let payload = std::mem::replace(&mut doc.payload, null_payload());
            let rest = serde_json::to_string(&doc)
                .map_err(|e| Error::InvalidJob(format!("cannot encode the job as JSON: {e}")))?;
            (
                format!("@{rest}"),
                Some(String::from(Box::<str>::from(payload))),
            )
        } else {
            (text, None)
        };
        Ok(PreparedJob {
            payload_apart,
            id,
            priority: priority.unwrap_or(0),
            max_attempts: max_attempts.unwrap_or(0),
            delay_ms: delay_ms.unwrap_or(0),
            run_at_ms: run_at.unwrap_or(0),
            unique_key: doc.unique_key.clone().unwrap_or_default(),
            doc: text,
        })
    }
}

/// Characters of a job id: Crockford's base32 (no I, L, O, U).
const ID_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A new job id: a UUIDv7 (unique, ordered by creation time) written as 26
/// characters of Crockford's base32, the form of a ULID: the first 10 are
/// the Unix time in ms. Ten bytes shorter than the UUID's 36-character form
/// in every hash field and list entry that names the job. `FCALL
/// redq_enqueue` makes ids of the same form (lib/new_jobs.lua, `new_job_id`).
pub fn new_id() -> String {
    let n = uuid::Uuid::now_v7().as_u128();
    (0..26)
        .rev()
        .map(|i| char::from(ID_ALPHABET[((n >> (5 * i)) & 31) as usize]))
        .collect()
}

/// Characters of `v` in decimal.
fn int_len(v: i64) -> usize {
    usize::from(v < 0)
        + v.unsigned_abs()
            .checked_ilog10()
            .map_or(1, |d| d as usize + 1)
}

fn range<T: PartialOrd + std::fmt::Display>(field: &str, v: Option<T>, lo: T, hi: T) -> Result<()> {
    match v {
        Some(v) if v < lo || v > hi => Err(Error::InvalidJob(format!(
            "field \"{field}\": {v} is out of range; must be an integer from {lo} to {hi}"
        ))),
        _ => Ok(()),
    }
}

fn text(field: &str, v: &Option<String>) -> Result<()> {
    match v {
        Some(s) if s.is_empty() || s.len() > MAX_TEXT_LEN => Err(Error::InvalidJob(format!(
            "field \"{field}\": must be a string of 1 to {MAX_TEXT_LEN} bytes"
        ))),
        _ => Ok(()),
    }
}

/// The rules of a job document (the Lua twin is `check_doc` in lib/doc.lua).
pub fn check_doc(doc: &JobDoc) -> Result<()> {
    range("priority", doc.priority, PRIORITY_MIN, PRIORITY_MAX)?;
    range("delay_ms", doc.delay_ms, 0, MAX_DELAY_MS)?;
    range("run_at", doc.run_at, 0, i64::MAX)?;
    range("max_attempts", doc.max_attempts, 1, MAX_ATTEMPTS)?;
    range("timeout_ms", doc.timeout_ms, 1, MAX_TIMEOUT_MS)?;
    range("outcome_ttl_ms", doc.outcome_ttl_ms, 1, MAX_OUTCOME_TTL_MS)?;
    if doc.delay_ms.is_some() && doc.run_at.is_some() {
        return Err(Error::InvalidJob(
            "fields \"delay_ms\" and \"run_at\": give one or the other, not both".into(),
        ));
    }
    text("unique_key", &doc.unique_key)?;
    text("tenant", &doc.tenant)?;
    text("group", &doc.group)?;
    if let Some(id) = &doc.id {
        keys::check_job_id(id)?;
    }
    Ok(())
}

/// The job record format of a queue's `jobs` hash, split but not decoded:
/// `<priority>;<max_attempts or 0>;<enqueued_ms>;<document JSON>`. The
/// header lets scripts read a job's priority and attempts without decoding
/// its document. Rust's one encoder ([`Record::encode`]) and decoder
/// ([`Record::split`]); the Lua library's are `record_header`/`record_doc`
/// and the enqueue paths (tests/formats.rs checks that they agree).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub priority: i64,
    /// 0 means "the queue's setting".
    pub max_attempts: u32,
    pub enqueued_ms: i64,
    pub doc: &'a str,
}

impl<'a> Record<'a> {
    pub fn encode(&self) -> String {
        format!(
            "{};{};{};{}",
            self.priority, self.max_attempts, self.enqueued_ms, self.doc
        )
    }

    /// Splits a stored record; the error says what is wrong with its header.
    pub fn split(record: &'a str) -> std::result::Result<Record<'a>, String> {
        let mut parts = record.splitn(4, ';');
        let (Some(p), Some(m), Some(e), Some(doc)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("job record has no header; it was not written by redq".into());
        };
        let num = |s: &str, what: &str| {
            s.parse::<i64>()
                .map_err(|_| format!("job record header: {what} {s:?} is not an integer"))
        };
        Ok(Record {
            priority: num(p, "priority")?,
            max_attempts: u32::try_from(num(m, "max_attempts")?).unwrap_or(0),
            enqueued_ms: num(e, "enqueued time")?,
            doc,
        })
    }
}

/// A JSON `null`, the payload of a document whose payload is kept apart.
fn null_payload() -> Box<RawValue> {
    RawValue::from_string("null".to_owned()).unwrap_or_else(|_| unreachable!("null is JSON"))
}

/// A job record as stored in the queue's `jobs` hash, decoded.
#[derive(Debug, Clone)]
pub struct StoredJob {
    pub priority: i64,
    /// 0 means "the queue's setting".
    pub max_attempts: u32,
    pub enqueued_ms: i64,
    pub doc: JobDoc,
    /// The payload is kept apart, in the queue's `payloads` hash
    /// ([`PAYLOAD_APART_BYTES`]): `doc.payload` is `null` until
    /// [`StoredJob::set_payload`] puts it in.
    pub payload_apart: bool,
}

impl StoredJob {
    /// Parses a stored record; the error says what is wrong with it.
    pub fn parse(record: &str) -> std::result::Result<StoredJob, String> {
        let r = Record::split(record)?;
        let (text, payload_apart) = match r.doc.strip_prefix('@') {
            Some(rest) => (rest, true),
            None => (r.doc, false),
        };
        let doc: JobDoc = serde_json::from_str(text).map_err(|e| format!("job document: {e}"))?;
        Ok(StoredJob {
            priority: r.priority,
            max_attempts: r.max_attempts,
            enqueued_ms: r.enqueued_ms,
            doc,
            payload_apart,
        })
    }

    /// Puts in the payload kept apart (read from the queue's `payloads`
    /// hash); the error says why it cannot be used.
    pub fn set_payload(&mut self, payload: String) -> std::result::Result<(), String> {
        self.doc.payload = RawValue::from_string(payload)
            .map_err(|e| format!("the payload kept apart is not valid JSON: {e}"))?;
        self.payload_apart = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_checks_every_rule() {
        let job = || NewJob::from_json(r#"{"a":1}"#).unwrap();
        assert!(job().prepare(1024).is_ok());
        for (bad, field) in [
            (job().priority(1001), "priority"),
            (job().priority(-1001), "priority"),
            (job().max_attempts(0), "max_attempts"),
            (job().run_at_ms(-1), "run_at"),
            (
                job().delay(Duration::from_secs(400 * 86400 * 365)),
                "delay_ms",
            ),
            (job().unique_key(""), "unique_key"),
            (job().tenant("x".repeat(513)), "tenant"),
            (job().id("a b"), "id"),
        ] {
            let err = bad.prepare(1024).unwrap_err().to_string();
            assert!(err.contains(field), "{err} should name {field}");
        }
        let err = job().prepare(5).unwrap_err().to_string();
        assert!(err.contains("limit is 5 bytes"), "{err}");
    }

    #[test]
    fn the_stored_document_leaves_out_the_header_but_the_limit_counts_it() {
        let job = || {
            NewJob::from_json(r#"{"a":1}"#)
                .unwrap()
                .priority(-7)
                .max_attempts(12)
                .delay(Duration::from_millis(1500))
                .tenant("t")
        };
        // The document as the producer would write it.
        let mut whole = job().doc;
        whole.id = None;
        let full = serde_json::to_string(&whole).unwrap().len();
        let p = job().prepare(full).unwrap();
        assert_eq!(p.doc, r#"{"payload":{"a":1},"tenant":"t"}"#);
        assert_eq!((p.priority, p.max_attempts, p.delay_ms), (-7, 12, 1500));
        let err = job().prepare(full - 1).unwrap_err().to_string();
        assert!(err.contains(&format!("document is {full} bytes")), "{err}");
        for (v, len) in [(0, 1), (9, 1), (10, 2), (-1, 2), (-1000, 5), (i64::MIN, 20)] {
            assert_eq!(int_len(v), len, "{v}");
        }
    }

    #[test]
    fn new_ids_are_26_base32_characters_ordered_by_time() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        let ids: Vec<String> = (0..1000).map(|_| new_id()).collect();
        for id in &ids {
            assert_eq!(id.len(), 26, "{id}");
            assert!(id.bytes().all(|b| ID_ALPHABET.contains(&b)), "{id}");
            assert!(keys::check_job_id(id).is_ok());
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "made in order, sorted");
        // The first ten characters are the time in ms.
        let ms = ids[0][..10].bytes().fold(0u128, |n, b| {
            n * 32 + ID_ALPHABET.iter().position(|&c| c == b).unwrap() as u128
        });
        assert!(ms.abs_diff(now) < 60_000, "{ms} vs {now}");
    }

    #[test]
    fn payload_is_kept_byte_for_byte() {
        let p = job_text(r#"{"b":[],"a":1.50,"s":"\/x"}"#);
        let stored = StoredJob::parse(&format!("0;0;1;{p}")).unwrap();
        assert_eq!(stored.doc.payload.get(), r#"{"b":[],"a":1.50,"s":"\/x"}"#);
    }

    #[test]
    fn a_big_payload_is_kept_apart_and_put_back_whole() {
        let big = format!("[{}1]", "1,".repeat(PAYLOAD_APART_BYTES / 2));
        let p = NewJob::from_json(&big)
            .unwrap()
            .tenant("t")
            .prepare(1 << 20)
            .unwrap();
        assert_eq!(p.doc, r#"@{"payload":null,"tenant":"t"}"#);
        assert_eq!(p.payload_apart.as_deref(), Some(big.as_str()));
        // The limit counts the payload kept apart.
        let err = NewJob::from_json(&big)
            .unwrap()
            .prepare(big.len())
            .unwrap_err();
        assert!(err.to_string().contains("limit is"), "{err}");
        // Readers see the payload as missing until it is put back.
        let mut stored = StoredJob::parse(&format!("0;0;1;{}", p.doc)).unwrap();
        assert!(stored.payload_apart);
        assert_eq!(stored.doc.tenant.as_deref(), Some("t"));
        stored.set_payload(big.clone()).unwrap();
        assert_eq!(
            (stored.doc.payload.get(), stored.payload_apart),
            (big.as_str(), false)
        );
        assert!(stored.set_payload("not json".into()).is_err());
        // Below the threshold, and for cron's documents, it stays inline.
        let small = NewJob::from_json("[1]").unwrap().prepare(1 << 20).unwrap();
        assert!(small.payload_apart.is_none() && small.doc.starts_with('{'));
        let inline = NewJob::from_json(&big)
            .unwrap()
            .prepare_inline(1 << 20)
            .unwrap();
        assert!(inline.payload_apart.is_none() && inline.doc.contains(&big));
    }

    fn job_text(payload: &str) -> String {
        NewJob::from_json(payload)
            .unwrap()
            .prepare(1 << 20)
            .unwrap()
            .doc
    }

    #[test]
    fn bad_records_are_described_not_panicked_on() {
        assert!(StoredJob::parse("garbage").is_err());
        assert!(StoredJob::parse("x;0;0;{}").is_err());
        assert!(StoredJob::parse("0;0;0;{\"payload\":1,\"zzz\":2}").is_err());
    }
}

//! Taking jobs: claims (claim.lua) and the direct hand-off that idle pools
//! register for, whose elements [`parse_handoff`] reads.

use std::time::Duration;

use super::{array, int, ms, text, Store, MAX_CALL_JOBS};
use crate::error::{Error, Result};
use crate::job::StoredJob;
use crate::keys::QueueKeys;

/// One claimed job: run it, then complete, fail or release it with `fence`.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub id: String,
    pub fence: u64,
    /// 1 on the first attempt.
    pub attempt: u32,
    /// The stored job, or why it could not be read (the caller should bury it).
    pub record: std::result::Result<StoredJob, String>,
}

impl ClaimedJob {
    /// The `i`-th job (from 0) of a claim or hand-off whose fences
    /// run consecutively from `first_fence`.
    fn nth(first_fence: u64, i: usize, id: String, attempt: i64, record: &str) -> ClaimedJob {
        ClaimedJob {
            id,
            fence: first_fence.saturating_add(i as u64),
            attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
            record: StoredJob::parse(record),
        }
    }
}

/// The reply of one claim call.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Redis's clock when the claim ran (ms).
    pub now_ms: i64,
    /// When fewer jobs than asked were handed out: when the next scheduled
    /// job is due or, when `throttled`, when the rate limit has room again (Redis ms).
    pub next_due_ms: Option<i64>,
    pub paused: bool,
    /// The queue's rate limit held back jobs that are ready; they wait in
    /// `pending` (no attempt spent) until `next_due_ms`.
    pub throttled: bool,
    pub jobs: Vec<ClaimedJob>,
}

/// A pool's offer to take direct hand-offs, made with its claims
/// ([`Store::claim_as`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandoffOffer<'a> {
    /// The pool's hand-off name, `<daemon id>.<pool number>`: its field in
    /// the queue's `idle` hash and the tail of its hand-off list's key.
    pub name: &'a str,
    /// How long a registration lasts unless renewed.
    pub ttl: Duration,
}

/// Reads one element of a daemon's hand-off list (see [`QueueKeys::handoff`]):
/// jobs an enqueue leased directly to that daemon, as a claim would have.
/// `paused`, `throttled` and `next_due_ms` do not apply.
///
/// The element (written by `hand_off` in lib/handoff.lua) is
/// `<now_ms>,<first fence>` and then, per job,
/// `\n<id>,<attempt>,<record length in bytes>\n<record>`: the record is
/// passed through as it is, so its length, not a delimiter, ends it.
pub fn parse_handoff(payload: &str) -> Result<Claimed> {
    let bad = |why: &str| Error::protocol("handoff", why.to_owned());
    let int = |s: Option<&str>, what: &str| -> Result<i64> {
        s.and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(&format!("{what} is not an integer")))
    };
    let (head, mut rest) = payload.split_once('\n').unwrap_or((payload, ""));
    let mut fields = head.split(',');
    let now_ms = int(fields.next(), "now_ms")?;
    let first_fence = u64::try_from(int(fields.next(), "the first fence")?)
        .map_err(|_| bad("the first fence is not a positive integer"))?;
    let mut jobs = Vec::new();
    while !rest.is_empty() {
        let (line, after) = rest
            .split_once('\n')
            .ok_or_else(|| bad("a job line without its record"))?;
        let mut fields = line.rsplitn(3, ',');
        let len = usize::try_from(int(fields.next(), "the record length")?)
            .map_err(|_| bad("the record length is negative"))?;
        let attempt = int(fields.next(), "the attempt")?;
        let id = fields
            .next()
            .ok_or_else(|| bad("a job line without an id"))?;
        let record = after
            .get(..len)
            .ok_or_else(|| bad("a record shorter than its length"))?;
        jobs.push(ClaimedJob::nth(
            first_fence,
            jobs.len(),
            id.to_owned(),
            attempt,
            record,
        ));
        let tail = &after[len..];
        rest = match tail.strip_prefix('\n') {
            Some(next) => next,
            None if tail.is_empty() => tail,
            None => return Err(bad("a record longer than its length")),
        };
    }
    Ok(Claimed {
        now_ms,
        next_due_ms: None,
        paused: false,
        throttled: false,
        jobs,
    })
}

impl Store {
    /// Claims up to `max` ready jobs under a lease of `lease`, after promoting
    /// up to `promote` due jobs and taking up to `inbox` inbox documents.
    /// The queue's rate limit and group concurrency (see [`Store::set_limits`])
    /// may hand out fewer.
    pub async fn claim(
        &self,
        q: &QueueKeys,
        max: usize,
        lease: Duration,
        promote: usize,
        inbox: usize,
    ) -> Result<Claimed> {
        self.claim_as(q, max, lease, promote, inbox, None).await
    }

    /// [`Store::claim`] by a pool that takes direct hand-offs (`offer`):
    /// when the claim leaves it with free slots, it is registered for the
    /// hand-off of newly enqueued jobs (see [`parse_handoff`]); any other
    /// claim by it ends that registration.
    ///
    /// One call hands out at most [`MAX_CALL_JOBS`] jobs, whatever `max`.
    pub async fn claim_as(
        &self,
        q: &QueueKeys,
        max: usize,
        lease: Duration,
        promote: usize,
        inbox: usize,
        offer: Option<HandoffOffer<'_>>,
    ) -> Result<Claimed> {
        let mut args = vec![
            max.min(MAX_CALL_JOBS).to_string(),
            ms(lease).to_string(),
            promote.to_string(),
            inbox.to_string(),
        ];
        if let Some(o) = offer {
            args.extend([o.name.to_owned(), ms(o.ttl).to_string()]);
        }
        let reply = array(self.run(|s| &s.claim, q, args).await?, "claim")?;
        let (head, rest) = reply.split_at(reply.len().min(5));
        let now_ms = int(head.first(), "claim")?;
        let next_due = int(head.get(1), "claim")?;
        // Fences are consecutive from the first (see claim.lua).
        let first_fence = u64::try_from(int(head.get(4), "claim")?)
            .map_err(|_| Error::protocol("claim", "fence is not a positive integer"))?;
        let mut jobs = Vec::with_capacity(rest.len() / 3);
        for (i, job) in rest.chunks(3).enumerate() {
            jobs.push(ClaimedJob::nth(
                first_fence,
                i,
                text(job.first(), "claim")?,
                int(job.get(1), "claim")?,
                &text(job.get(2), "claim")?,
            ));
        }
        Ok(Claimed {
            now_ms,
            next_due_ms: (next_due >= 0).then_some(next_due),
            paused: int(head.get(2), "claim")? == 1,
            throttled: int(head.get(3), "claim")? == 1,
            jobs,
        })
    }

    /// The payload of job `id` kept apart from its record (see
    /// [`crate::job::PAYLOAD_APART_BYTES`]); `None` when there is none. The
    /// daemon reads it when the job starts, outside any script.
    pub async fn payload(&self, q: &QueueKeys, id: &str) -> Result<Option<String>> {
        let p: Option<String> = redis::cmd("HGET")
            .arg(q.payloads())
            .arg(id)
            .query_async(&mut self.connection())
            .await?;
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_handoff;

    #[test]
    fn a_hand_off_element_is_read_by_lengths_whatever_its_records_hold() {
        // Records as FCALL producers may store them: raw newlines, commas
        // and multi-byte characters inside the document.
        let r1 = "0;0;1700000000000;{\"payload\":\"a,b\\nc\"}";
        let r2 = "5;3;1700000000001;{\n \"payload\": \"é\\n,\"\n}";
        let element = format!(
            "1700000000002,41\nid-1,1,{}\n{r1}\nid-2,4,{}\n{r2}",
            r1.len(),
            r2.len()
        );
        let got = parse_handoff(&element).unwrap();
        assert_eq!(got.now_ms, 1_700_000_000_002);
        let jobs: Vec<_> = got
            .jobs
            .iter()
            .map(|j| (j.id.as_str(), j.attempt, j.fence))
            .collect();
        assert_eq!(jobs, [("id-1", 1, 41), ("id-2", 4, 42)]);
        let priority = got.jobs[1].record.as_ref().unwrap().priority;
        assert_eq!(priority, 5);
    }

    #[test]
    fn a_damaged_hand_off_element_is_an_error_not_a_panic() {
        for bad in [
            "",
            "x,1",
            "1,-1",
            "1,1\nid,1,99\nshort",
            "1,1\nid,1,2\nlonger",
            "1,1\nid,1\nab",
            "1,1\nid,1,1\né",
            "1,1\nno newline after the job line",
        ] {
            assert!(parse_handoff(bad).is_err(), "{bad:?}");
        }
        // No jobs at all is a valid (empty) element.
        assert!(parse_handoff("1,1").unwrap().jobs.is_empty());
    }
}

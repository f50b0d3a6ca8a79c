//! The store's transitions driven by hand, as a daemon would call them:
//! claims with the tests' usual settings, completions and failures of
//! claimed jobs, and the retention settings the contract tests use.

use std::time::Duration;

use redq::store::{Claimed, ClaimedJob, Completion, Failure, Retention, Store};

/// A lease long enough never to expire during a test.
pub const LEASE: Duration = Duration::from_secs(30);
/// Completed jobs are deleted at once.
pub const KEEP_NONE: Retention = Retention {
    keep: 0,
    max_age: Duration::ZERO,
};
/// The dead set keeps 100 jobs, of any age.
pub const DEAD: Retention = Retention {
    keep: 100,
    max_age: Duration::ZERO,
};

/// Claims up to `max` jobs of `queue` under [`LEASE`], promoting and
/// draining the inbox by up to 100 each.
pub async fn claim(store: &Store, queue: &str, max: usize) -> Claimed {
    store
        .claim(&store.queue(queue).unwrap(), max, LEASE, 100, 100)
        .await
        .unwrap()
}

/// A plain success (no unique key, no result) of a claimed job.
pub fn done(j: &ClaimedJob) -> Completion<'_> {
    Completion {
        id: &j.id,
        fence: j.fence,
        unique_key: None,
        result: None,
        outcome_ttl: None,
    }
}

/// Plain successes of claimed jobs.
pub fn completions(jobs: &[ClaimedJob]) -> Vec<Completion<'_>> {
    jobs.iter().map(done).collect()
}

/// A failed attempt of a claimed job: retried in `retry_in`, or dead.
pub fn failure<'a>(j: &'a ClaimedJob, retry_in: Option<Duration>, error: &'a str) -> Failure<'a> {
    Failure {
        id: &j.id,
        fence: j.fence,
        retry_in,
        error,
        unique_key: None,
        outcome_ttl: None,
    }
}

/// The ids of claimed jobs, in order.
pub fn ids(jobs: &[ClaimedJob]) -> Vec<&str> {
    jobs.iter().map(|j| j.id.as_str()).collect()
}

//! `[[cron]]`: jobs enqueued on a schedule. Only the shape and the obvious
//! rules are checked here; the scheduler that reads the schedule owns its syntax.

use serde::{Deserialize, Serialize};

use super::error::Problems;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CronConfig {
    /// When to enqueue, e.g. `"0 */5 * * * *"`. Required.
    pub schedule: String,
    /// The queue to enqueue into; must be a `[queues.<name>]`. Required.
    pub queue: String,
    /// The job's payload. Default `{}`.
    #[serde(default = "empty_object")]
    pub payload: serde_json::Value,
    /// IANA time zone of the schedule, e.g. `"Europe/Paris"`. Default UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// The job's priority. Default 0.
    #[serde(default)]
    pub priority: i64,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

impl CronConfig {
    pub(super) fn check(&self, index: usize, queue_exists: bool, p: &mut Problems) {
        let i = index.to_string();
        p.check(
            !self.schedule.trim().is_empty(),
            &["cron", &i, "schedule"],
            "must not be empty",
        );
        p.check(
            queue_exists,
            &["cron", &i, "queue"],
            format!("{:?} is not a queue defined under [queues]", self.queue),
        );
        if let Some(tz) = &self.timezone {
            p.check(
                !tz.trim().is_empty(),
                &["cron", &i, "timezone"],
                "must not be empty",
            );
        }
    }
}

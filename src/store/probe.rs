//! The daemon's checks of Redis itself: whether it accepts writes now (a
//! paused Redis, a read-only replica do not), and whether it still holds
//! redq's data (the epoch mark, [`crate::keys::epoch`]).

use super::Store;
use crate::error::Result;
use crate::keys;

impl Store {
    /// PING: how long Redis took to answer.
    pub async fn ping(&self) -> Result<std::time::Duration> {
        let sent = std::time::Instant::now();
        redis::cmd("PING")
            .query_async::<String>(&mut self.connection())
            .await?;
        Ok(sent.elapsed())
    }

    /// One round trip: reads the epoch mark and deletes a key that never
    /// exists (a write that needs no memory, so it works at maxmemory, but
    /// waits out a `CLIENT PAUSE WRITE` and fails on a replica). Returns the
    /// mark, `None` when it is missing.
    pub async fn probe(&self) -> Result<Option<String>> {
        let (epoch, _): (Option<String>, i64) = redis::pipe()
            .get(keys::epoch(&self.prefix))
            .del(keys::write_probe(&self.prefix))
            .query_async(&mut self.con.clone())
            .await?;
        Ok(epoch)
    }

    /// Writes the epoch mark `value` unless one exists; returns the mark
    /// Redis holds afterwards (`value`, or the one found).
    pub async fn mark_epoch(&self, value: &str) -> Result<String> {
        let old: Option<String> = redis::cmd("SET")
            .arg(keys::epoch(&self.prefix))
            .arg(value)
            .arg("NX")
            .arg("GET")
            .query_async(&mut self.con.clone())
            .await?;
        Ok(old.unwrap_or_else(|| value.to_owned()))
    }
}

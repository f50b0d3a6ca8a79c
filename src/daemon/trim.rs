//! Gives memory the daemon freed back to the operating system once it is
//! idle.
//!
//! glibc's malloc keeps freed memory for reuse: it returns only the free
//! space at the very top of each heap, and a start-up's or a burst's
//! temporary allocations (a daemon serving 1000 queues claims on all of
//! them at once when it starts, ~10 MB for a moment) leave free pages
//! between live ones that stay counted in the RSS for good. `malloc_trim`
//! releases every whole free page of every arena. Measured on the
//! 1000-queue idle bench (issue 19, scenario h): most of the gap between the
//! live heap and the RSS.
//!
//! The observer calls [`Trimmer::tick`] on each poll (every 5 s): it trims
//! when no job runs and none finished since the previous poll, so a busy
//! daemon, whose freed memory is about to be reused, pays nothing. An idle
//! daemon trims on every poll: its start-up (1000 pools' first claims, the
//! promoter's and the poller's first reads) can outlast the first poll,
//! and each poll's own reads free what they allocated; one `malloc_trim` of
//! a heap of a few MB costs well under a millisecond. Elsewhere than glibc
//! it does nothing.

use std::sync::atomic::Ordering;

use super::Counters;

/// The jobs finished as of the previous poll.
#[derive(Default)]
pub struct Trimmer {
    finished: u64,
}

impl Trimmer {
    /// Trims if no job runs and none finished since the previous call.
    pub fn tick(&mut self, c: &Counters) {
        let finished = [
            &c.succeeded,
            &c.retried,
            &c.dead,
            &c.released,
            &c.returned_unstarted,
            &c.lease_lost,
        ]
        .iter()
        .map(|n| Counters::get(n))
        .fold(0u64, u64::wrapping_add);
        let worked = finished != self.finished;
        self.finished = finished;
        if worked || c.running.load(Ordering::Relaxed) > 0 {
            return;
        }
        give_back();
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn give_back() {
    // SAFETY: malloc_trim takes no pointer and may be called from any
    // thread at any time; it only releases free pages.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn give_back() {}

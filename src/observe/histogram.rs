//! Lock-free duration histograms: fixed arrays of atomic counters, so
//! recording never allocates, locks or panics.
//!
//! - [`Histogram`]: cumulative since start, on the Prometheus buckets
//!   [`BUCKETS`] (0.5 ms … 600 s, plus `+Inf`); rendered as `_bucket`, `_sum`,
//!   `_count`. `_count` is the sum of the bucket counters read in one pass, so
//!   it always equals the `+Inf` bucket of the same scrape.
//! - [`Window`]: finer geometric buckets (×1.25 from 0.5 ms, 64 of them, up to
//!   ~640 s) that are emptied on every read. It backs the run-time p50/p99 of
//!   the summary log: an estimate, interpolated linearly inside the bucket that
//!   holds the rank, so off by at most one bucket width (≤ 25 %).
//!   Observations racing with a read land in this window or the next, never
//!   in neither.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds (seconds) of the Prometheus buckets, ascending.
pub(crate) const BUCKETS: [f64; 19] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0, 600.0,
];

/// [`BUCKETS`] as `le` label values, then `+Inf`.
pub(crate) const BUCKET_LABELS: [&str; 20] = [
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1",
    "2.5", "5", "10", "30", "60", "120", "300", "600", "+Inf",
];

/// A cumulative Prometheus histogram of durations.
pub(crate) struct Histogram {
    /// Per-bucket (not cumulative) counts; the last one is `> 600 s`.
    counts: [AtomicU64; BUCKETS.len() + 1],
    /// Sum of observations in microseconds (wraps after ~584,000 years).
    sum_micros: AtomicU64,
}

/// One consistent-enough read of a [`Histogram`].
pub(crate) struct HistogramSnapshot {
    /// Cumulative counts per `le`, in [`BUCKET_LABELS`] order.
    pub cumulative: [u64; BUCKETS.len() + 1],
    pub sum_seconds: f64,
    pub count: u64,
}

impl Histogram {
    /// A `const fn`, so an empty one can be a `static` (the histograms of
    /// a queue that has run nothing yet, see `QueueMetrics::timings`).
    pub(crate) const fn new() -> Self {
        Histogram {
            counts: [const { AtomicU64::new(0) }; BUCKETS.len() + 1],
            sum_micros: AtomicU64::new(0),
        }
    }

    pub(crate) fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        // First bucket whose bound is >= secs; BUCKETS.len() means +Inf only.
        let i = BUCKETS.partition_point(|&bound| bound < secs);
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Relaxed);
        }
        self.sum_micros.fetch_add(micros(d), Relaxed);
    }

    pub(crate) fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = [0u64; BUCKETS.len() + 1];
        let mut running = 0u64;
        for (slot, c) in cumulative.iter_mut().zip(&self.counts) {
            running = running.saturating_add(c.load(Relaxed));
            *slot = running;
        }
        HistogramSnapshot {
            cumulative,
            sum_seconds: self.sum_micros.load(Relaxed) as f64 / 1e6,
            count: running,
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

const WINDOW_BASE: f64 = 0.0005;
const WINDOW_FACTOR: f64 = 1.25;
const WINDOW_LEN: usize = 64;

/// A reset-on-read histogram for quantile estimates.
pub(crate) struct Window {
    /// Bucket 0 holds `[0, BASE]`, bucket i holds `(upper(i-1), upper(i)]`,
    /// the last one everything above `upper(WINDOW_LEN - 1)`.
    counts: [AtomicU64; WINDOW_LEN + 1],
}

impl Window {
    pub(crate) fn new() -> Self {
        Window {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    pub(crate) fn observe(&self, d: Duration) {
        if let Some(c) = self.counts.get(window_index(d.as_secs_f64())) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// Empties the window and returns its estimated (p50, p99), or `None`
    /// when nothing was observed since the last call.
    pub(crate) fn take_p50_p99(&self) -> Option<(Duration, Duration)> {
        let counts: [u64; WINDOW_LEN + 1] =
            std::array::from_fn(|i| self.counts[i].swap(0, Relaxed));
        let total = counts.iter().fold(0u64, |a, &c| a.saturating_add(c));
        if total == 0 {
            return None;
        }
        let q = |q: f64| Duration::from_secs_f64(quantile(&counts, total, q));
        Some((q(0.5), q(0.99)))
    }
}

fn upper(i: usize) -> f64 {
    WINDOW_BASE * WINDOW_FACTOR.powi(i32::try_from(i).unwrap_or(i32::MAX))
}

fn window_index(secs: f64) -> usize {
    if secs.is_nan() || secs <= WINDOW_BASE {
        return 0;
    }
    // `as` saturates on floats, so huge values land in the overflow bucket.
    let i = ((secs / WINDOW_BASE).ln() / WINDOW_FACTOR.ln()).ceil() as usize;
    i.clamp(1, WINDOW_LEN)
}

/// The value at rank `q * total`, interpolated inside its bucket.
fn quantile(counts: &[u64], total: u64, q: f64) -> f64 {
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, &c) in counts.iter().enumerate() {
        let through = below.saturating_add(c);
        if c > 0 && through as f64 >= rank {
            if i >= WINDOW_LEN {
                // Above the top bucket: the best lower bound we have.
                return upper(WINDOW_LEN - 1);
            }
            let lower = if i == 0 { 0.0 } else { upper(i - 1) };
            let frac = ((rank - below as f64) / c as f64).clamp(0.0, 1.0);
            return lower + (upper(i) - lower) * frac;
        }
        below = through;
    }
    upper(WINDOW_LEN - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_count_matches_inf() {
        let h = Histogram::new();
        for ms in [0, 1, 7, 700, 1_000_000] {
            h.observe(Duration::from_millis(ms));
        }
        let s = h.snapshot();
        assert_eq!(s.cumulative[0], 1); // 0 ms <= 0.5 ms
        assert_eq!(s.cumulative[1], 2); // 1 ms <= 1 ms
        assert_eq!(s.cumulative[BUCKETS.len() - 1], 4); // <= 600 s
        assert_eq!(s.cumulative[BUCKETS.len()], 5);
        assert_eq!(s.count, 5);
        assert!((s.sum_seconds - 1000.708).abs() < 1e-9);
    }

    #[test]
    fn window_estimates_quantiles_within_a_bucket_and_resets() {
        let w = Window::new();
        for ms in 1..=1000 {
            w.observe(Duration::from_millis(ms));
        }
        let (p50, p99) = w.take_p50_p99().expect("observations");
        assert!((p50.as_secs_f64() / 0.5 - 1.0).abs() < 0.25, "{p50:?}");
        assert!((p99.as_secs_f64() / 0.99 - 1.0).abs() < 0.25, "{p99:?}");
        assert_eq!(w.take_p50_p99(), None);
    }

    #[test]
    fn window_handles_extremes() {
        let w = Window::new();
        w.observe(Duration::MAX);
        w.observe(Duration::ZERO);
        let (p50, p99) = w.take_p50_p99().expect("observations");
        assert!(p50 <= Duration::from_micros(500));
        assert!(p99 >= Duration::from_secs(600));
    }
}

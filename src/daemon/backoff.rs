//! Retry delays: exponential from `base`, capped at `max`, with jitter.

use std::time::Duration;

use crate::config::BackoffConfig;

/// The delay before retry number `attempt` (1 after the first failure).
/// `base · 2^(attempt−1)`, capped at `max`, then spread by ±`jitter` so
/// jobs that failed together do not retry together.
pub fn delay(cfg: &BackoffConfig, attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(63);
    let raw = cfg.base.as_secs_f64() * 2f64.powi(exp as i32);
    let capped = raw.min(cfg.max.as_secs_f64());
    let spread = 1.0 + cfg.jitter.clamp(0.0, 1.0) * (rand::random::<f64>() * 2.0 - 1.0);
    Duration::from_secs_f64((capped * spread).clamp(0.0, cfg.max.as_secs_f64()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_within_the_jitter_and_is_capped() {
        let cfg = BackoffConfig {
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
            jitter: 0.2,
        };
        for attempt in 1..=5 {
            let want = 2f64.powi(attempt as i32 - 1);
            let d = delay(&cfg, attempt).as_secs_f64();
            assert!(
                d >= want * 0.8 - 1e-9 && d <= want * 1.2 + 1e-9,
                "{attempt}: {d}"
            );
        }
        assert!(delay(&cfg, 40) <= Duration::from_secs(60));
        assert!(delay(&cfg, u32::MAX) <= Duration::from_secs(60));
    }
}

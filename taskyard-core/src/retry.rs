//! Retry policy: how many attempts a job gets and how long it waits between them.
//!
//! Why full jitter: when a dependency fails, every job that touched it fails at once. If
//! they all retried after the same delay they would hit the dependency together again.
//! Drawing each delay uniformly from `[0, min(cap, base × 2^(attempt-1))]` spreads them out
//! while the expected delay still grows exponentially.

use std::time::Duration;

use rand::Rng;

/// Per kind or per job: max attempts and exponential backoff with full jitter.
///
/// Defaults to 25 attempts, a base of 1 s and a cap of 1 h — about the same patience as
/// Sidekiq's default of 25 retries, reached in roughly half a day.
///
/// ```
/// use std::time::Duration;
/// use taskyard_core::RetryPolicy;
///
/// let policy = RetryPolicy::default()
///     .max_attempts(5)
///     .base(Duration::from_millis(200))
///     .cap(Duration::from_secs(10));
/// assert!(policy.backoff(3) <= Duration::from_millis(800));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first run included; `1` means no retry.
    pub max_attempts: u32,
    /// The backoff of the first retry, before jitter.
    pub base: Duration,
    /// The largest backoff, before jitter.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 25,
            base: Duration::from_secs(1),
            cap: Duration::from_secs(3600),
        }
    }
}

impl RetryPolicy {
    /// Sets the number of attempts in all. Defaults to 25.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// Sets the base delay. Defaults to 1 s.
    pub fn base(mut self, base: Duration) -> Self {
        self.base = base;
        self
    }

    /// Sets the largest delay. Defaults to 1 h.
    pub fn cap(mut self, cap: Duration) -> Self {
        self.cap = cap;
        self
    }

    /// The upper bound of the delay after failed attempt `attempt` (1-based), before jitter.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let shift = attempt.saturating_sub(1).min(40);
        let grown = self.base.saturating_mul(1u32 << shift.min(31));
        let grown = if shift > 31 { self.cap } else { grown };
        grown.min(self.cap)
    }

    /// A delay drawn uniformly from `[0, ceiling(attempt)]` (full jitter).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt).as_millis() as u64;
        Duration::from_millis(rand::rng().random_range(0..=ceiling))
    }

    pub(crate) fn validate(&self) -> crate::Result<()> {
        if self.max_attempts == 0 {
            return Err(crate::Error::InvalidOption(
                "max_attempts must be at least 1".into(),
            ));
        }
        if self.base > self.cap {
            return Err(crate::Error::InvalidOption(format!(
                "retry base {:?} is larger than its cap {:?}",
                self.base, self.cap
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_then_caps() {
        let p = RetryPolicy::default()
            .base(Duration::from_millis(100))
            .cap(Duration::from_secs(1));
        assert_eq!(p.ceiling(1), Duration::from_millis(100));
        assert_eq!(p.ceiling(2), Duration::from_millis(200));
        assert_eq!(p.ceiling(4), Duration::from_millis(800));
        assert_eq!(p.ceiling(5), Duration::from_secs(1));
        assert_eq!(p.ceiling(60), Duration::from_secs(1));
    }

    #[test]
    fn backoff_stays_within_ceiling() {
        let p = RetryPolicy::default();
        for attempt in 1..30 {
            assert!(p.backoff(attempt) <= p.ceiling(attempt));
        }
    }

    /// Full jitter: delays spread over the whole of `[0, ceiling]`, not pinned to either
    /// end. 2,000 draws of a 1,000 ms ceiling: with a uniform draw the chance that the
    /// bounds below fail is far under one in a billion.
    #[test]
    fn backoff_is_drawn_uniformly_from_zero_to_the_ceiling() {
        let p = RetryPolicy::default()
            .base(Duration::from_millis(125))
            .cap(Duration::from_secs(3600));
        assert_eq!(p.ceiling(4), Duration::from_millis(1000));
        let draws: Vec<u64> = (0..2000).map(|_| p.backoff(4).as_millis() as u64).collect();
        assert!(draws.iter().all(|d| *d <= 1000));
        let mean = draws.iter().sum::<u64>() as f64 / draws.len() as f64;
        assert!((450.0..550.0).contains(&mean), "mean {mean}");
        for decile in 0..10 {
            let n = draws.iter().filter(|d| **d / 100 == decile).count();
            assert!((120..280).contains(&n), "{n} draws in decile {decile}");
        }
    }

    #[test]
    fn default_policy_is_25_attempts_base_1s_cap_1h() {
        let p = RetryPolicy::default();
        assert_eq!(p.max_attempts, 25);
        assert_eq!(p.base, Duration::from_secs(1));
        assert_eq!(p.cap, Duration::from_secs(3600));
    }

    #[test]
    fn zero_attempts_is_rejected() {
        assert!(RetryPolicy::default().max_attempts(0).validate().is_err());
    }
}

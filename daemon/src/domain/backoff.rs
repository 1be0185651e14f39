//! Exponential backoff with full jitter between attempts.

use std::time::Duration;

/// Backoff bounds: the delay before attempt `n + 1` is drawn uniformly from
/// `[0, min(max, base * 2^(n-1))]` ("full jitter"), so many tasks failing together do not
/// come back together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The upper bound of the delay after failed attempt number `attempt` (1-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(32);
        let factor = 1u64 << doublings;
        let base_ms = u64::try_from(self.base.as_millis()).unwrap_or(u64::MAX);
        let max_ms = u64::try_from(self.max.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(base_ms.saturating_mul(factor).min(max_ms))
    }

    /// These bounds with a task's own where it has them (`retry_base_ms`, `retry_max_ms`);
    /// the base never above the max.
    pub fn with_task(&self, base_ms: Option<u64>, max_ms: Option<u64>) -> Backoff {
        let max = max_ms.map_or(self.max, Duration::from_millis);
        let base = base_ms.map_or(self.base, Duration::from_millis).min(max);
        Backoff { base, max }
    }

    /// The delay after failed attempt number `attempt`, given a uniform sample `unit` in
    /// `[0, 1)`. The caller draws the sample so this stays pure.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let ceiling = self.ceiling(attempt).as_millis() as f64;
        let unit = unit.clamp(0.0, 1.0);
        Duration::from_millis((ceiling * unit).round() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff() -> Backoff {
        Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(600),
        }
    }

    #[test]
    fn ceiling_doubles_then_caps() {
        let b = backoff();
        assert_eq!(b.ceiling(1), Duration::from_secs(1));
        assert_eq!(b.ceiling(2), Duration::from_secs(2));
        assert_eq!(b.ceiling(4), Duration::from_secs(8));
        assert_eq!(b.ceiling(10), Duration::from_secs(512));
        assert_eq!(b.ceiling(11), Duration::from_secs(600));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(600));
    }

    #[test]
    fn delay_spans_zero_to_the_ceiling() {
        let b = backoff();
        assert_eq!(b.delay(3, 0.0), Duration::ZERO);
        assert_eq!(b.delay(3, 0.5), Duration::from_secs(2));
        assert_eq!(b.delay(3, 1.0), Duration::from_secs(4));
        assert_eq!(b.delay(3, 7.0), Duration::from_secs(4), "clamped");
    }
}

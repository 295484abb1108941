//! Per-trigger token buckets: `rateLimit` tokens per second, a burst of the same size.
//!
//! The buckets live in this replica's memory: with N gateway replicas behind a Service a
//! trigger accepts up to N times its `rateLimit`. Buckets exist only for triggers of existing
//! Playbooks, so their number is bounded by the Playbooks the gateway has served.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    rate: f64,
    last: Instant,
}

/// Token buckets keyed by trigger (`namespace/playbook`).
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// Buckets kept before full, idle ones are swept.
const SWEEP_ABOVE: usize = 4096;

impl RateLimiter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one token from the trigger's bucket.
    ///
    /// # Errors
    ///
    /// The wait until a token is available, for `Retry-After`.
    pub fn acquire(&self, key: &str, rps: u32, now: Instant) -> Result<(), Duration> {
        let rate = f64::from(rps.max(1));
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > SWEEP_ABOVE {
            buckets.retain(|_, b| b.refilled(now) < b.rate);
        }
        let bucket =
            buckets.entry(key.to_string()).or_insert(Bucket { tokens: rate, rate, last: now });
        bucket.tokens = bucket.refilled(now);
        // A changed rateLimit takes effect at once; the burst shrinks with it.
        bucket.rate = rate;
        bucket.tokens = bucket.tokens.min(rate);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }
}

impl Bucket {
    fn refilled(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        (self.tokens + elapsed * self.rate).min(self.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_rps_passes_then_the_next_waits() {
        let limiter = RateLimiter::new();
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(limiter.acquire("soc/ir", 5, t0), Ok(()));
        }
        let wait = limiter.acquire("soc/ir", 5, t0).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(200), "{wait:?}");
    }

    #[test]
    fn tokens_come_back_at_the_configured_rate() {
        let limiter = RateLimiter::new();
        let t0 = Instant::now();
        assert_eq!(limiter.acquire("k", 1, t0), Ok(()));
        assert!(limiter.acquire("k", 1, t0 + Duration::from_millis(500)).is_err());
        assert_eq!(limiter.acquire("k", 1, t0 + Duration::from_millis(1001)), Ok(()));
    }

    #[test]
    fn triggers_have_separate_buckets() {
        let limiter = RateLimiter::new();
        let t0 = Instant::now();
        assert_eq!(limiter.acquire("a/x", 1, t0), Ok(()));
        assert!(limiter.acquire("a/x", 1, t0).is_err());
        assert_eq!(limiter.acquire("a/y", 1, t0), Ok(()));
    }

    #[test]
    fn a_lowered_limit_applies_at_once() {
        let limiter = RateLimiter::new();
        let t0 = Instant::now();
        assert_eq!(limiter.acquire("k", 100, t0), Ok(()));
        assert_eq!(limiter.acquire("k", 1, t0), Ok(()));
        assert!(limiter.acquire("k", 1, t0).is_err());
    }
}

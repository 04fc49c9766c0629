//! A circuit breaker per carrier connection. Closed: traffic flows, failures
//! are counted. After `threshold` consecutive failures it opens: nothing is
//! sent for `cooldown`, routes send elsewhere. Then half-open: one probe; its
//! success closes the breaker, its failure opens it again.

use std::time::{Duration, Instant};

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Debug, Clone)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    failures: u32,
    state: BreakerState,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cooldown,
            failures: 0,
            state: BreakerState::Closed,
        }
    }

    /// The state now (an expired open breaker becomes half-open).
    pub fn state(&mut self, now: Instant) -> BreakerState {
        if let BreakerState::Open { until } = self.state {
            if now >= until {
                self.state = BreakerState::HalfOpen { probing: false };
            }
        }
        self.state
    }

    /// Whether routes should send here (closed, or half-open for a probe).
    pub fn is_usable(&mut self, now: Instant) -> bool {
        !matches!(self.state(now), BreakerState::Open { .. })
    }

    /// May one request go out now? Half-open lets exactly one probe through.
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.state(now) {
            BreakerState::Closed => true,
            BreakerState::Open { .. } => false,
            BreakerState::HalfOpen { probing: true } => false,
            BreakerState::HalfOpen { probing: false } => {
                self.state = BreakerState::HalfOpen { probing: true };
                true
            }
        }
    }

    pub fn success(&mut self) {
        self.failures = 0;
        self.state = BreakerState::Closed;
    }

    /// Returns true when this failure opened the breaker.
    pub fn failure(&mut self, now: Instant) -> bool {
        self.failures += 1;
        let open_now = match self.state {
            BreakerState::HalfOpen { .. } => true,
            BreakerState::Closed => self.failures >= self.threshold,
            BreakerState::Open { .. } => false,
        };
        if open_now {
            self.state = BreakerState::Open {
                until: now + self.cooldown,
            };
        }
        open_now
    }

    pub fn is_open(&self) -> bool {
        matches!(self.state, BreakerState::Open { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_probes_then_closes() {
        let t0 = Instant::now();
        let mut b = Breaker::new(3, Duration::from_secs(5));
        assert!(!b.failure(t0));
        assert!(!b.failure(t0));
        assert!(b.failure(t0), "third failure opens");
        assert!(!b.allow(t0 + Duration::from_secs(1)));
        assert!(!b.is_usable(t0 + Duration::from_secs(1)));
        let later = t0 + Duration::from_secs(6);
        assert!(b.allow(later), "one probe");
        assert!(!b.allow(later), "only one");
        b.success();
        assert!(b.allow(later));
    }

    #[test]
    fn a_failed_probe_reopens() {
        let t0 = Instant::now();
        let mut b = Breaker::new(1, Duration::from_secs(5));
        b.failure(t0);
        let later = t0 + Duration::from_secs(6);
        assert!(b.allow(later));
        assert!(b.failure(later));
        assert!(!b.allow(later + Duration::from_secs(1)));
    }

    #[test]
    fn success_resets_the_count() {
        let t0 = Instant::now();
        let mut b = Breaker::new(2, Duration::from_secs(5));
        b.failure(t0);
        b.success();
        assert!(!b.failure(t0));
    }
}

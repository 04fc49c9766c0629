//! Throughput control of one carrier connection: a token bucket whose rate
//! adapts, additive increase and multiplicative decrease (AIMD). A throttling
//! answer halves the rate (not below a floor); every second without one adds
//! back a tenth of the configured rate, up to the configured rate.

use std::time::{Duration, Instant};

/// Lowest rate a carrier is throttled down to (messages per second).
pub const MIN_RATE: f64 = 1.0;
/// Fraction of the configured rate regained per quiet second.
pub const RECOVERY_STEP: f64 = 0.1;
/// Factor applied to the rate on a throttling answer.
pub const DECREASE_FACTOR: f64 = 0.5;
/// Largest burst, in seconds of the current rate.
pub const BURST_SECONDS: f64 = 0.02;
/// Throttling answers closer together than this count as one.
pub const DECREASE_HOLDOFF: Duration = Duration::from_millis(500);

/// A token bucket with an adaptive rate. Bursts are at most [`BURST_SECONDS`]
/// of traffic (at least one message), so no second ever sees more than the
/// rate by more than 2%.
#[derive(Debug, Clone)]
pub struct Throttle {
    configured: f64,
    rate: f64,
    tokens: f64,
    last_refill: Instant,
    last_decrease: Option<Instant>,
    last_increase: Instant,
}

impl Throttle {
    pub fn new(rate: f64, now: Instant) -> Self {
        Self {
            configured: rate,
            rate,
            tokens: 1.0,
            last_refill: now,
            last_decrease: None,
            last_increase: now,
        }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    pub fn configured(&self) -> f64 {
        self.configured
    }

    fn burst(&self) -> f64 {
        (self.rate * BURST_SECONDS).max(1.0)
    }

    /// Bring tokens and the adaptive rate up to `now` (also without traffic,
    /// so the reported rate recovers while the carrier is idle).
    pub fn refill(&mut self, now: Instant) {
        let elapsed = now
            .saturating_duration_since(self.last_refill)
            .as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst());
        self.last_refill = now;
        // Additive increase, once per quiet second.
        let quiet = self
            .last_decrease
            .is_none_or(|d| now.saturating_duration_since(d) >= Duration::from_secs(1));
        if quiet && now.saturating_duration_since(self.last_increase) >= Duration::from_secs(1) {
            self.rate = (self.rate + self.configured * RECOVERY_STEP).min(self.configured);
            self.last_increase = now;
        }
    }

    /// Take one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until a token is available.
    pub fn wait(&self) -> Duration {
        let missing = (1.0 - self.tokens).max(0.0);
        Duration::from_secs_f64(missing / self.rate)
    }

    /// The carrier said slow down.
    pub fn throttled(&mut self, now: Instant) {
        if self
            .last_decrease
            .is_some_and(|d| now.saturating_duration_since(d) < DECREASE_HOLDOFF)
        {
            return;
        }
        self.rate = (self.rate * DECREASE_FACTOR).max(MIN_RATE.min(self.configured));
        self.tokens = self.tokens.min(self.burst());
        self.last_decrease = Some(now);
        self.last_increase = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken_over(t: &mut Throttle, start: Instant, secs: f64) -> u32 {
        let mut n = 0;
        let steps = (secs * 1000.0) as u64;
        for ms in 0..steps {
            let now = start + Duration::from_millis(ms);
            while t.try_take(now) {
                n += 1;
            }
        }
        n
    }

    #[test]
    fn never_more_than_the_rate_plus_a_small_burst() {
        let start = Instant::now();
        let mut t = Throttle::new(100.0, start);
        let n = taken_over(&mut t, start, 10.0);
        assert!((995..=1003).contains(&n), "{n}");
    }

    #[test]
    fn halves_on_throttling_and_climbs_back() {
        let start = Instant::now();
        let mut t = Throttle::new(100.0, start);
        t.throttled(start);
        assert_eq!(t.rate(), 50.0);
        t.throttled(start + Duration::from_millis(100));
        assert_eq!(
            t.rate(),
            50.0,
            "hold-off: one burst of refusals counts once"
        );
        t.throttled(start + Duration::from_millis(600));
        assert_eq!(t.rate(), 25.0);
        let later = start + Duration::from_millis(600);
        taken_over(&mut t, later, 5.0);
        // Four quiet seconds in five: +10 each.
        assert!(t.rate() > 25.0 && t.rate() <= 75.0, "{}", t.rate());
        taken_over(&mut t, later + Duration::from_secs(5), 30.0);
        assert_eq!(t.rate(), 100.0, "back to the configured rate, not above");
    }

    #[test]
    fn never_below_the_floor() {
        let start = Instant::now();
        let mut t = Throttle::new(4.0, start);
        for i in 0..10 {
            t.throttled(start + Duration::from_secs(i));
        }
        assert_eq!(t.rate(), MIN_RATE);
    }
}
#[cfg(test)]
mod idle_recovery {
    use super::*;

    #[test]
    fn recovers_while_idle_with_only_periodic_refills() {
        let start = Instant::now();
        let mut t = Throttle::new(400.0, start);
        t.throttled(start);
        for i in 1..=80 {
            t.refill(start + Duration::from_millis(500 * i));
        }
        assert_eq!(t.rate(), 400.0);
    }
}

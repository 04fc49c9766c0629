//! Early warning for a carrier connection: its round-trip latency and error
//! rate. When latency climbs well above what this carrier normally answers
//! in, or errors pass a fifth of recent answers, the connection lowers its
//! rate (the same multiplicative decrease as a throttling answer) before the
//! carrier starts refusing. Pure logic; the connection feeds it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Answers considered for the error rate.
pub const WINDOW: usize = 50;
/// Answers needed before any alarm.
pub const WARMUP: usize = 20;
/// Error fraction that raises the alarm.
pub const ERROR_ALARM: f64 = 0.2;
/// Latency alarm: above this many times the usual latency…
pub const LATENCY_FACTOR: f64 = 3.0;
/// …and at least this much above it.
pub const LATENCY_MARGIN: Duration = Duration::from_millis(50);
/// At most one alarm per this long.
pub const ALARM_HOLDOFF: Duration = Duration::from_secs(1);
/// Weight of a new latency sample in the moving average.
const ALPHA: f64 = 0.1;
/// How fast the usual latency follows a lasting rise (per sample).
const FLOOR_DRIFT: f64 = 0.002;

/// Why the rate was lowered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strain {
    Latency,
    Errors,
}

impl Strain {
    pub fn as_str(self) -> &'static str {
        match self {
            Strain::Latency => "latency",
            Strain::Errors => "errors",
        }
    }
}

#[derive(Debug, Default)]
pub struct Vitals {
    /// Moving average of latency, seconds.
    average: Option<f64>,
    /// The usual latency: follows the average down at once, up slowly.
    usual: Option<f64>,
    recent: VecDeque<bool>,
    samples: usize,
    last_alarm: Option<Instant>,
}

impl Vitals {
    /// Moving average of the round-trip latency, once there is one.
    pub fn latency(&self) -> Option<Duration> {
        self.average.map(Duration::from_secs_f64)
    }

    /// Record one answer (`error`: a temporary failure or timeout).
    pub fn observe(&mut self, latency: Duration, error: bool, now: Instant) -> Option<Strain> {
        let l = latency.as_secs_f64();
        self.samples += 1;
        if !error {
            let avg = match self.average {
                Some(a) => a + ALPHA * (l - a),
                None => l,
            };
            self.average = Some(avg);
            self.usual = Some(match self.usual {
                Some(u) if avg < u => avg,
                Some(u) => u + FLOOR_DRIFT * (avg - u),
                None => avg,
            });
        }
        self.recent.push_back(error);
        if self.recent.len() > WINDOW {
            self.recent.pop_front();
        }
        if self.samples < WARMUP
            || self
                .last_alarm
                .is_some_and(|t| now.saturating_duration_since(t) < ALARM_HOLDOFF)
        {
            return None;
        }
        let errors = self.recent.iter().filter(|e| **e).count() as f64 / self.recent.len() as f64;
        let strain = if errors > ERROR_ALARM {
            Some(Strain::Errors)
        } else {
            match (self.average, self.usual) {
                (Some(a), Some(u))
                    if a > u * LATENCY_FACTOR && a > u + LATENCY_MARGIN.as_secs_f64() =>
                {
                    Some(Strain::Latency)
                }
                _ => None,
            }
        };
        if strain.is_some() {
            self.last_alarm = Some(now);
        }
        strain
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_answers_raise_nothing() {
        let t0 = Instant::now();
        let mut v = Vitals::default();
        for i in 0..500 {
            let now = t0 + Duration::from_millis(i * 10);
            assert_eq!(v.observe(Duration::from_millis(5), false, now), None);
        }
    }

    #[test]
    fn climbing_latency_raises_the_alarm_once_per_holdoff() {
        let t0 = Instant::now();
        let mut v = Vitals::default();
        for i in 0..100 {
            v.observe(
                Duration::from_millis(5),
                false,
                t0 + Duration::from_millis(i),
            );
        }
        let mut alarms = 0;
        for i in 0..100 {
            let now = t0 + Duration::from_millis(100 + i * 5);
            if v.observe(Duration::from_millis(300), false, now) == Some(Strain::Latency) {
                alarms += 1;
            }
        }
        assert_eq!(
            alarms, 1,
            "one alarm in half a second (the hold-off is a second)"
        );
    }

    #[test]
    fn errors_raise_the_alarm() {
        let t0 = Instant::now();
        let mut v = Vitals::default();
        let mut raised = None;
        for i in 0..60 {
            let error = i % 3 == 0;
            if let Some(s) = v.observe(
                Duration::from_millis(5),
                error,
                t0 + Duration::from_millis(i),
            ) {
                raised = Some(s);
            }
        }
        assert_eq!(raised, Some(Strain::Errors));
    }
}

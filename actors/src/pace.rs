//! Pacing of publish rounds. A task that gathers whatever is waiting and
//! publishes it with one confirm makes rounds as small as its confirms are
//! quick: at 1,000 messages a second and a 2 ms confirm, two messages a
//! round, and RabbitMQ's cost is per round and per AMQP message, not per
//! byte. [`Pace`] starts a round no sooner than `period` after the previous
//! one started: idle, the first message goes at once; under load, rounds
//! come every `period` and carry what arrived meanwhile.

use std::time::Duration;

use tokio::time::Instant;

/// The pace of the publish rounds of the outbox relay and the couriers:
/// under load a message waits at most this long per hop, and a round
/// carries this long's worth of traffic.
pub const ROUND_PERIOD: Duration = Duration::from_millis(20);

/// When the next round may start.
#[derive(Debug)]
pub struct Pace {
    period: Duration,
    last: Option<Instant>,
}

impl Pace {
    pub fn new(period: Duration) -> Self {
        Pace { period, last: None }
    }

    /// Wait until `period` has passed since the previous round started (not
    /// at all after an idle spell), then count a new round as started.
    pub async fn round(&mut self) {
        let now = Instant::now();
        match self.last.map(|last| last + self.period) {
            // No timer when the period has passed: idle, a round costs nothing.
            Some(next) if next > now => {
                tokio::time::sleep_until(next).await;
                self.last = Some(next);
            }
            _ => self.last = Some(now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_first_round_goes_at_once_and_the_next_waits_out_the_period() {
        let mut pace = Pace::new(Duration::from_millis(20));
        let start = Instant::now();
        pace.round().await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        tokio::time::advance(Duration::from_millis(5)).await;
        pace.round().await;
        assert_eq!(start.elapsed(), Duration::from_millis(20));
        // After an idle spell longer than the period: at once.
        tokio::time::advance(Duration::from_millis(50)).await;
        let idle = Instant::now();
        pace.round().await;
        assert_eq!(idle.elapsed(), Duration::ZERO);
    }
}

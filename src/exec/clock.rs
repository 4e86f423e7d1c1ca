//! The run's clock: the wall-clock instant a run started plus the time elapsed on tokio's
//! clock since. A deploy's tokio clock is real time; a simulation pauses it, so change
//! windows, the journal's durations and the summary follow virtual time there through
//! the same code.

use chrono::{DateTime, Utc};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall_start: DateTime<Utc>,
    start: Instant,
}

impl Clock {
    /// Real time: now, on the wall and on tokio's clock.
    pub fn real() -> Clock {
        Clock::starting_at(Utc::now())
    }

    /// A clock that reads `wall_start` now and advances with tokio's clock (tests and
    /// simulations pick the hour a run starts at).
    pub fn starting_at(wall_start: DateTime<Utc>) -> Clock {
        Clock {
            wall_start,
            start: Instant::now(),
        }
    }

    /// The wall-clock time now.
    pub fn now(&self) -> DateTime<Utc> {
        self.wall_start + chrono::Duration::from_std(self.elapsed()).unwrap_or_default()
    }

    /// Time since the clock started.
    pub fn elapsed(&self) -> Duration {
        Instant::now().saturating_duration_since(self.start)
    }

    /// The wall-clock time the clock started at.
    pub fn wall_start(&self) -> DateTime<Utc> {
        self.wall_start
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[tokio::test(start_paused = true)]
    async fn follows_tokios_clock_from_the_given_instant() {
        let start = Utc.with_ymd_and_hms(2026, 3, 10, 20, 0, 0).unwrap();
        let clock = Clock::starting_at(start);
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(clock.elapsed(), Duration::from_secs(3600));
        assert_eq!(
            clock.now(),
            Utc.with_ymd_and_hms(2026, 3, 10, 21, 0, 0).unwrap()
        );
    }
}

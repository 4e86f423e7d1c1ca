//! A controller's hold on its run, as the run watches it whatever the backend: told
//! when the hold is lost ([`LeaseLost`]), and the lease counted on the controller's own
//! clock ([`LeaseClock`]).
//!
//! The lease counted on the controller's own clock. The database expires a lease a
//! whole lease after the renewal that last went through, by its clock; a controller
//! that cannot renew (the database down, hung, or behind a held lock) must have stopped
//! by then, its task commands killed, or another controller may take the run over while
//! this one still works the hosts.
//!
//! So every renewal that went through (the heartbeat's, a journal batch's) moves this
//! controller's own deadline to two thirds of a lease after the moment the renewal was
//! *sent* (never later than the database's `now()` at that renewal), on the monotonic
//! clock; the run watches it (`commands::run`) and, once it passes, stops as on a lost
//! lease. The last third is the stop's: killing the running commands and leaving.
//! Nothing here waits on the database, so a call that never returns cannot hold it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Told when this controller lost a lease it holds (broken with `pony unlock --force`,
/// or taken over after it expired): the run starts nothing more and kills what runs.
/// Cheap to clone; once lost, it stays lost ([`LeaseLost::is_lost`]), so whoever looks
/// after the wake-up (the scheduler, the end of the run) still knows.
#[derive(Clone, Default)]
pub struct LeaseLost(Arc<LostState>);

#[derive(Default)]
struct LostState {
    notify: tokio::sync::Notify,
    lost: AtomicBool,
}

impl LeaseLost {
    /// Marks the lease lost and wakes whoever waits for it.
    pub fn notify_one(&self) {
        self.0.lost.store(true, Ordering::SeqCst);
        self.0.notify.notify_one();
    }

    /// Resolves once the lease is lost.
    pub async fn notified(&self) {
        self.0.notify.notified().await
    }

    pub fn is_lost(&self) -> bool {
        self.0.lost.load(Ordering::SeqCst)
    }
}

/// The last renewal that went through, and the deadline it gives.
#[derive(Debug)]
pub struct LeaseClock {
    lease: Duration,
    renewed: Mutex<Option<Instant>>,
}

impl LeaseClock {
    pub fn new(lease: Duration) -> LeaseClock {
        LeaseClock {
            lease,
            renewed: Mutex::new(None),
        }
    }

    /// A renewal sent at `sent` went through (the lease taken, or renewed).
    pub fn renewed(&self, sent: Instant) {
        let mut renewed = self.renewed.lock().unwrap_or_else(|e| e.into_inner());
        if renewed.is_none_or(|last| sent > last) {
            *renewed = Some(sent);
        }
    }

    /// How long after a renewal this controller stops if none other went through.
    pub fn allowance(&self) -> Duration {
        self.lease * 2 / 3
    }

    /// When this controller must stop unless a renewal goes through first (None before
    /// the lease is taken).
    pub fn deadline(&self) -> Option<Instant> {
        let renewed = *self.renewed.lock().unwrap_or_else(|e| e.into_inner());
        renewed.map(|at| at + self.allowance())
    }

    /// Whether the deadline has passed.
    pub fn passed(&self) -> bool {
        self.deadline().is_some_and(|d| Instant::now() >= d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_later_renewal_moves_the_deadline() {
        let clock = LeaseClock::new(Duration::from_secs(9));
        assert_eq!(clock.deadline(), None);
        assert!(!clock.passed());
        let start = Instant::now();
        clock.renewed(start);
        assert_eq!(clock.deadline(), Some(start + Duration::from_secs(6)));
        // A renewal sent earlier that came back later does not move it back.
        clock.renewed(start + Duration::from_secs(2));
        clock.renewed(start + Duration::from_secs(1));
        assert_eq!(clock.deadline(), Some(start + Duration::from_secs(8)));
        let old = LeaseClock::new(Duration::from_millis(30));
        old.renewed(Instant::now() - Duration::from_millis(20));
        assert!(old.passed());
    }
}

//! A circuit breaker for one endpoint (closed → open → half-open → closed).
//!
//! Closed: calls go through; `failures` consecutive failed calls open it. Open: calls are refused
//! at once (the step runs its fallback) until `cooldown` has passed. Half-open: one probe call is
//! let through; its success closes the breaker, its failure opens it for another cooldown.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::domain::Clock;

/// What the breaker is doing, for the status page and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum BreakerState {
    Closed {
        failures: u32,
    },
    /// Refusing calls for this much longer.
    Open {
        retry_in_ms: u64,
    },
    /// A probe call is in flight.
    HalfOpen,
}

#[derive(Debug)]
enum Inner {
    Closed { failures: u32 },
    Open { until: DateTime<Utc> },
    HalfOpen,
}

#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
}

/// Leave to make one call; report how it went with [`Permit::finish`]. A permit dropped
/// unfinished (the call was cancelled) counts as a failure.
pub struct Permit<'a> {
    breaker: &'a Breaker,
    done: bool,
}

impl Breaker {
    /// Opens after `threshold` consecutive failures (at least 1), for `cooldown` as `clock`
    /// tells time.
    pub fn new(threshold: u32, cooldown: Duration, clock: Arc<dyn Clock>) -> Self {
        Self {
            threshold: threshold.max(1),
            cooldown,
            clock,
            inner: Mutex::new(Inner::Closed { failures: 0 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means a panic elsewhere mid-update; the state is still usable.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A permit when a call may be made now; `None` while open (or while the probe is out).
    pub fn try_acquire(&self) -> Option<Permit<'_>> {
        let mut inner = self.lock();
        match *inner {
            Inner::Closed { .. } => {}
            Inner::Open { until } if self.clock.now() >= until => *inner = Inner::HalfOpen,
            Inner::Open { .. } | Inner::HalfOpen => return None,
        }
        Some(Permit { breaker: self, done: false })
    }

    fn record(&self, success: bool) {
        let mut inner = self.lock();
        *inner = match (&*inner, success) {
            (_, true) => Inner::Closed { failures: 0 },
            (Inner::Closed { failures }, false) if failures + 1 < self.threshold => {
                Inner::Closed { failures: failures + 1 }
            }
            (_, false) => Inner::Open {
                until: self.clock.now()
                    + chrono::Duration::from_std(self.cooldown).unwrap_or(chrono::Duration::MAX),
            },
        };
    }

    pub fn state(&self) -> BreakerState {
        match *self.lock() {
            Inner::Closed { failures } => BreakerState::Closed { failures },
            Inner::Open { until } => BreakerState::Open {
                retry_in_ms: (until - self.clock.now()).num_milliseconds().max(0) as u64,
            },
            Inner::HalfOpen => BreakerState::HalfOpen,
        }
    }
}

impl Permit<'_> {
    pub fn finish(mut self, success: bool) {
        self.done = true;
        self.breaker.record(success);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.breaker.record(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ManualClock;

    #[test]
    fn opens_after_consecutive_failures_and_probes_after_the_cooldown() {
        let clock = Arc::new(ManualClock::starting_now());
        let b = Breaker::new(3, Duration::from_millis(40), clock.clone());
        for _ in 0..2 {
            b.try_acquire().expect("closed").finish(false);
        }
        b.try_acquire().expect("closed").finish(true);
        assert_eq!(b.state(), BreakerState::Closed { failures: 0 }, "a success resets the count");
        for _ in 0..3 {
            b.try_acquire().expect("closed").finish(false);
        }
        assert!(matches!(b.state(), BreakerState::Open { .. }));
        assert!(b.try_acquire().is_none(), "open: refused at once");
        clock.advance(Duration::from_millis(39));
        assert!(b.try_acquire().is_none(), "still cooling down");
        clock.advance(Duration::from_millis(1));
        let probe = b.try_acquire().expect("half-open probe");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.try_acquire().is_none(), "one probe at a time");
        probe.finish(false);
        assert_eq!(b.state(), BreakerState::Open { retry_in_ms: 40 }, "a failed probe opens it again");
        clock.advance(Duration::from_millis(40));
        b.try_acquire().expect("probe").finish(true);
        assert_eq!(b.state(), BreakerState::Closed { failures: 0 });
    }

    #[test]
    fn a_cancelled_call_counts_as_a_failure() {
        let b = Breaker::new(1, Duration::from_secs(60), Arc::new(ManualClock::starting_now()));
        drop(b.try_acquire().expect("closed"));
        assert!(matches!(b.state(), BreakerState::Open { .. }));
    }
}

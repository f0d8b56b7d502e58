//! Admission control: while scans are quick the verdict is given in the
//! session; when the expected scan latency of one more message would exceed
//! the configured budget, the message is accepted first and scanned from
//! the spool ("deferred"), so a storm slows nobody down and nothing goes
//! unscanned.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How a message's virus scan is done.
pub use crate::events::ScanMode as Mode;

pub struct Admission {
    /// Zero disables deferral (always in session).
    budget: Duration,
    /// Scans that can run at once (clamd connections).
    capacity: usize,
    in_flight: AtomicUsize,
    /// Moving average of one scan's latency, microseconds.
    ewma_us: AtomicU64,
    in_session: AtomicU64,
    deferred: AtomicU64,
}

impl Admission {
    pub fn new(budget: Duration, capacity: usize) -> Self {
        Admission {
            budget,
            capacity: capacity.max(1),
            in_flight: AtomicUsize::new(0),
            ewma_us: AtomicU64::new(0),
            in_session: AtomicU64::new(0),
            deferred: AtomicU64::new(0),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Expected latency of one more scan: the recent scan latency times the
    /// number of rounds the scans already running or waiting take.
    pub fn expected(&self) -> Duration {
        let waiting = self.in_flight.load(Ordering::Relaxed);
        let rounds = (waiting / self.capacity) as u64 + 1;
        Duration::from_micros(self.ewma_us.load(Ordering::Relaxed).saturating_mul(rounds))
    }

    /// Whether one more in-session scan would take longer than the budget.
    pub fn over_budget(&self) -> bool {
        !self.budget.is_zero() && self.expected() > self.budget
    }

    /// Picks the mode for the next message and counts it.
    pub fn choose(&self) -> Mode {
        let mode = if self.over_budget() {
            Mode::Deferred
        } else {
            Mode::InSession
        };
        match mode {
            Mode::Deferred => self.deferred.fetch_add(1, Ordering::Relaxed),
            _ => self.in_session.fetch_add(1, Ordering::Relaxed),
        };
        mode
    }

    /// (in-session, deferred) message counts so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.in_session.load(Ordering::Relaxed),
            self.deferred.load(Ordering::Relaxed),
        )
    }

    /// Marks a scan as running until the guard is finished or dropped.
    pub fn begin(&self) -> ScanGuard<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        ScanGuard {
            adm: self,
            started: Instant::now(),
        }
    }

    fn record(&self, took: Duration) {
        let sample = took.as_micros().min(u64::MAX as u128) as u64;
        // EWMA with weight 1/8; a lost race only drops one sample.
        let old = self.ewma_us.load(Ordering::Relaxed);
        let new = if old == 0 { sample } else { old - old / 8 + sample / 8 };
        self.ewma_us.store(new, Ordering::Relaxed);
    }
}

pub struct ScanGuard<'a> {
    adm: &'a Admission,
    started: Instant,
}

impl Drop for ScanGuard<'_> {
    fn drop(&mut self) {
        self.adm.record(self.started.elapsed());
        self.adm.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defers_only_over_budget() {
        let a = Admission::new(Duration::from_millis(100), 2);
        assert_eq!(a.choose(), Mode::InSession, "no history: in session");
        a.record(Duration::from_millis(60));
        assert_eq!(a.choose(), Mode::InSession);
        // Two running plus two waiting: three rounds of 60 ms.
        let guards: Vec<_> = (0..4).map(|_| a.begin()).collect();
        assert_eq!(a.expected(), Duration::from_millis(180));
        assert_eq!(a.choose(), Mode::Deferred);
        drop(guards);
        a.ewma_us.store(60_000, Ordering::Relaxed);
        assert_eq!(a.choose(), Mode::InSession);
        assert_eq!(a.counts(), (3, 1));
    }

    #[test]
    fn zero_budget_never_defers() {
        let a = Admission::new(Duration::ZERO, 1);
        a.record(Duration::from_secs(100));
        let _g: Vec<_> = (0..10).map(|_| a.begin()).collect();
        assert_eq!(a.choose(), Mode::InSession);
    }
}

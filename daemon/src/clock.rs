//! Wall-clock time as a seam: the agent asks a [`Clock`] for "now" where it compares
//! timestamps (restart back-off, grace periods, container start times), so tests can run its
//! decisions on tokio's paused clock.
//!
//! Invariant: [`SystemClock`] is `jiff::Timestamp::now()`, nothing more. Boundary: wall time
//! only; durations between two instants on one node use `tokio::time::Instant`.

/// Where "now" comes from.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> jiff::Timestamp;
}

/// The host's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::now()
    }
}

/// A wall clock that follows tokio's clock from a fixed start, so `tokio::time::advance` and
/// the auto-advance of a paused runtime move it too (tests).
#[cfg(test)]
#[derive(Debug, Clone, Copy)]
pub struct PausedClock {
    start: jiff::Timestamp,
    origin: tokio::time::Instant,
}

#[cfg(test)]
impl PausedClock {
    /// A clock that reads `start` now (call it inside the runtime).
    pub fn starting_at(start: jiff::Timestamp) -> PausedClock {
        PausedClock { start, origin: tokio::time::Instant::now() }
    }
}

#[cfg(test)]
impl Clock for PausedClock {
    fn now(&self) -> jiff::Timestamp {
        let elapsed = jiff::SignedDuration::try_from(self.origin.elapsed()).expect("a test runs for less than ages");
        self.start + elapsed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_paused_clock_follows_tokio_time() {
        let start = jiff::Timestamp::from_second(1_750_000_000).unwrap();
        let clock = PausedClock::starting_at(start);
        assert_eq!(clock.now(), start);
        tokio::time::advance(std::time::Duration::from_millis(10_500)).await;
        assert_eq!(clock.now(), start + jiff::SignedDuration::from_millis(10_500));
    }
}

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
/// A Go-style duration (`24h`, `90m`, `1h30m`, `45s`, also `2d`), as kubeadm's `--ttl` and
/// kube-controller-manager's periods take; `None` for anything else or zero.
pub fn parse_duration(text: &str) -> Option<jiff::SignedDuration> {
    let mut total = 0i64;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: i64 = digits.parse().ok()?;
        digits.clear();
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            'd' => 86400,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    (digits.is_empty() && total > 0).then(|| jiff::SignedDuration::from_secs(total))
}

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

    #[test]
    fn go_durations_read_as_kubernetes_writes_them() {
        use jiff::SignedDuration;
        assert_eq!(parse_duration("24h"), Some(SignedDuration::from_hours(24)));
        assert_eq!(parse_duration("1h30m"), Some(SignedDuration::from_mins(90)));
        assert_eq!(parse_duration("45s"), Some(SignedDuration::from_secs(45)));
        for bad in ["", "h", "10", "1x", "-1h", "0s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_paused_clock_follows_tokio_time() {
        let start = jiff::Timestamp::from_second(1_750_000_000).unwrap();
        let clock = PausedClock::starting_at(start);
        assert_eq!(clock.now(), start);
        tokio::time::advance(std::time::Duration::from_millis(10_500)).await;
        assert_eq!(clock.now(), start + jiff::SignedDuration::from_millis(10_500));
    }
}

//! The one backoff of herald's retry loops: [`Backoff`], a delay that
//! doubles from a first value up to a cap and starts over on
//! [`Backoff::reset`]. It is a `backon` backoff (an iterator of delays), so
//! a plain retry of one call runs it with `backon::Retryable`.

use std::time::Duration;

/// Delays that double after each failure, from `first` up to `cap`.
///
/// The doubling is exact (whole `Duration` arithmetic): backon's own
/// `ExponentialBuilder` multiplies in `f32`, which would turn 400 ms into
/// 400.000006 ms. The first delay is `first` even when above `cap`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `first`; each delay taken doubles the next, up to `cap`.
    pub const fn new(first: Duration, cap: Duration) -> Self {
        Backoff {
            first,
            cap,
            next: first,
        }
    }

    /// The delay the next failure waits (what [`Self::next_delay`] returns).
    pub fn delay(&self) -> Duration {
        self.next
    }

    /// The delay to wait now; the one after it is twice as long (capped).
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = delay.saturating_mul(2).min(self.cap);
        delay
    }

    /// Back to the first delay, after a success.
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// The delay after `doublings` failures, without taking any: `first`
    /// times 2^`doublings`, capped (for schedules that jitter it).
    pub fn nth_delay(&self, doublings: u32) -> Duration {
        let factor = 1u32.checked_shl(doublings).unwrap_or(u32::MAX);
        self.first.saturating_mul(factor).min(self.cap)
    }
}

/// Endless: bound it with `take` for a retry that gives up.
impl Iterator for Backoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(self.next_delay())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn doubles_up_to_the_cap_and_starts_over() {
        let mut backoff = Backoff::new(MS(200), Duration::from_secs(5));
        let taken: Vec<_> = (0..8).map(|_| backoff.next_delay()).collect();
        let expected = [200, 400, 800, 1600, 3200, 5000, 5000, 5000].map(MS);
        assert_eq!(taken, expected);
        assert_eq!(backoff.delay(), MS(5000));
        backoff.reset();
        assert_eq!(backoff.delay(), MS(200));
        assert_eq!(backoff.next_delay(), MS(200));
        assert_eq!(backoff.next_delay(), MS(400));
    }

    /// The old loops' `(delay * 2).min(cap)`, delay by delay, for the
    /// first delays and caps they used (the outbox's starts at its period).
    #[test]
    fn matches_doubling_by_hand() {
        for (first, cap) in [
            (200, 5_000),
            (200, 10_000),
            (1_000, 60_000),
            (90_000, 60_000),
        ] {
            let (first, cap) = (MS(first), MS(cap));
            let mut backoff = Backoff::new(first, cap);
            let mut by_hand = first;
            for _ in 0..40 {
                assert_eq!(backoff.next_delay(), by_hand);
                by_hand = (by_hand * 2).min(cap);
            }
        }
    }

    #[test]
    fn nth_delay_is_the_capped_power_of_two() {
        let backoff = Backoff::new(MS(100), Duration::from_secs(5));
        let delays: Vec<_> = (0..8).map(|n| backoff.nth_delay(n)).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000].map(MS));
        let uncapped = Backoff::new(MS(1), Duration::MAX);
        assert_eq!(uncapped.nth_delay(30), MS(1 << 30));
        assert_eq!(uncapped.nth_delay(40), MS(u64::from(u32::MAX)));
        assert_eq!(backoff, Backoff::new(MS(100), Duration::from_secs(5)));
    }

    /// With backon, `take(n)` retries n times, waiting each delay in turn.
    #[tokio::test(start_paused = true)]
    async fn backon_waits_each_delay_then_gives_up() {
        use backon::Retryable;
        let calls = std::sync::atomic::AtomicU32::new(0);
        let start = tokio::time::Instant::now();
        let mut waits = Vec::new();
        let result: Result<(), &str> = (|| async {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err("down")
        })
        .retry(Backoff::new(MS(100), Duration::MAX).take(5))
        .notify(|_, wait| waits.push(wait))
        .await;
        assert_eq!(result, Err("down"));
        assert_eq!(calls.into_inner(), 6);
        assert_eq!(waits, [100, 200, 400, 800, 1600].map(MS));
        assert_eq!(start.elapsed(), MS(3100));
    }
}

//! Deadlines from configured durations. `Instant + Duration` panics when the
//! sum does not fit, and "never" is naturally configured as `Duration::MAX`
//! (a delivery timeout, a linger, a request timeout): such a deadline is
//! taken as a century away instead.

use std::time::{Duration, Instant};

/// A deadline this far away is never reached by a running process.
const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `from + wait`, or a century after `from` when that does not fit.
pub(crate) fn after(from: Instant, wait: Duration) -> Instant {
    from.checked_add(wait)
        .or_else(|| from.checked_add(CENTURY))
        .unwrap_or(from)
}

/// [`after`] for Tokio's clock.
pub(crate) fn after_tokio(from: tokio::time::Instant, wait: Duration) -> tokio::time::Instant {
    tokio::time::Instant::from_std(after(from.into_std(), wait))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_that_does_not_fit_is_a_century_away() {
        let now = Instant::now();
        assert_eq!(
            after(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        assert_eq!(after(now, Duration::MAX), now + CENTURY);
        let tokio_now = tokio::time::Instant::now();
        assert_eq!(after_tokio(tokio_now, Duration::MAX), tokio_now + CENTURY);
    }
}

//! When a step a broker retries until it succeeds (joining the cluster,
//! registering with it) has failed long enough to tell the operator.
//!
//! Each failure is retried within a second and says little alone (a peer
//! still starting, an election under way), so the attempts log at debug;
//! a step still failing after `WARN_AFTER` warns, with the last reason,
//! and again every `WARN_EVERY` while it keeps failing.

use std::time::Duration;

use tokio::time::Instant;

/// How long a step may fail before the broker warns.
pub(crate) const WARN_AFTER: Duration = Duration::from_secs(10);
/// How often it warns again while the step keeps failing.
pub(crate) const WARN_EVERY: Duration = Duration::from_secs(60);

/// Failures of one step since it last succeeded (or began).
#[derive(Debug)]
pub(crate) struct StillFailing {
    since: Instant,
    warned_at: Option<Instant>,
}

impl StillFailing {
    pub(crate) fn since(started: Instant) -> Self {
        Self {
            since: started,
            warned_at: None,
        }
    }

    /// Whether a failure seen `now` should be logged as a warning: then
    /// how long the step has been failing.
    pub(crate) fn warn_now(&mut self, now: Instant) -> Option<Duration> {
        let failing_for = now.duration_since(self.since);
        let due = failing_for >= WARN_AFTER
            && self
                .warned_at
                .is_none_or(|warned| now.duration_since(warned) >= WARN_EVERY);
        if !due {
            return None;
        }
        self.warned_at = Some(now);
        Some(failing_for)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_warns_after_a_while_then_now_and_then() {
        let start = Instant::now();
        let mut failing = StillFailing::since(start);
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        assert_eq!(failing.warn_now(at(0)), None);
        assert_eq!(failing.warn_now(at(9)), None);
        assert!(failing.warn_now(at(10)).is_some(), "failing for WARN_AFTER");
        assert_eq!(failing.warn_now(at(11)), None);
        assert_eq!(failing.warn_now(at(69)), None);
        assert_eq!(
            failing.warn_now(at(70)),
            Some(Duration::from_secs(70)),
            "WARN_EVERY later"
        );
    }
}

//! How long a leader has gone without a majority acknowledging it.
//!
//! openraft reports the time since a majority last acknowledged the leader
//! (`millis_since_quorum_ack`), but nothing at all for a leader no
//! majority has acknowledged yet in its term: a leader cut off right after
//! its election would report nothing for as long as the cut lasts, and
//! read as one that is in touch. Here that silence counts from the moment
//! this node was first seen leading the term.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// A group member's view of its own leadership, fed from its Raft metrics.
#[derive(Debug, Default)]
pub(crate) struct QuorumSilence {
    /// The term this node was last seen leading without an acknowledgement,
    /// and when it was first seen so.
    unacknowledged_since: Mutex<Option<(u64, Instant)>>,
}

impl QuorumSilence {
    /// While this node leads `term`: how long since a majority last
    /// acknowledged it (`acked_ms_ago`, openraft's figure), or, while no
    /// majority has yet, since it was first seen leading the term. `None`
    /// when it does not lead.
    pub(crate) fn of(
        &self,
        leading: bool,
        term: u64,
        acked_ms_ago: Option<u64>,
    ) -> Option<Duration> {
        self.at(leading, term, acked_ms_ago, Instant::now())
    }

    fn at(
        &self,
        leading: bool,
        term: u64,
        acked_ms_ago: Option<u64>,
        now: Instant,
    ) -> Option<Duration> {
        if !leading {
            return None;
        }
        if let Some(ms) = acked_ms_ago {
            return Some(Duration::from_millis(ms));
        }
        let mut since = self.unacknowledged_since.lock();
        match *since {
            Some((seen, at)) if seen == term => Some(now.saturating_duration_since(at)),
            _ => {
                *since = Some((term, now));
                Some(Duration::ZERO)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_acknowledged_leader_reports_openraft_s_figure() {
        let silence = QuorumSilence::default();
        let now = Instant::now();
        assert_eq!(
            silence.at(true, 3, Some(40), now),
            Some(Duration::from_millis(40))
        );
        assert_eq!(silence.at(false, 3, Some(40), now), None);
    }

    #[test]
    fn a_leader_never_acknowledged_grows_silent_from_when_it_was_first_seen_leading() {
        let silence = QuorumSilence::default();
        let start = Instant::now();
        assert_eq!(silence.at(true, 5, None, start), Some(Duration::ZERO));
        let later = start + Duration::from_secs(2);
        assert_eq!(
            silence.at(true, 5, None, later),
            Some(Duration::from_secs(2))
        );
        // A new term starts the count again.
        assert_eq!(silence.at(true, 6, None, later), Some(Duration::ZERO));
        assert_eq!(
            silence.at(true, 6, None, later + Duration::from_millis(300)),
            Some(Duration::from_millis(300))
        );
    }
}

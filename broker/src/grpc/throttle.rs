//! Quotas on the request path: holding a request's answer back for its
//! principal's quota (`Broker::charge_quota` says how long).
//!
//! A request is served at once; only its answer waits, so a client over
//! its quota sees it slowed (and told how much, in `throttle_time_ms`),
//! never failed. A wait ends early when the broker starts shutting down,
//! so no throttled answer holds up a drain.

use std::time::Duration;

use brook_engine::Broker;
use brook_engine::quota::Direction;
use tokio::time::Instant;

/// Charges `bytes` to `principal` and says until when its answer is held back.
pub(crate) fn charge(
    broker: &Broker,
    principal: &str,
    direction: Direction,
    bytes: usize,
) -> Instant {
    Instant::now() + broker.charge_quota(principal, direction, bytes as u64)
}

/// Waits until `until` (or until the broker starts stopping) and returns
/// how long that was, in milliseconds rounded up, for `throttle_time_ms`.
pub(crate) async fn hold(
    broker: &Broker,
    principal: &str,
    direction: Direction,
    until: Instant,
) -> u32 {
    let started = Instant::now();
    if until <= started {
        return 0;
    }
    tokio::select! {
        () = tokio::time::sleep_until(until) => {}
        () = broker.stopping() => {}
    }
    let held = started.elapsed();
    broker
        .metrics()
        .principals
        .record_throttle(principal, direction, held);
    tracing::debug!(
        principal,
        direction = direction.name(),
        held_ms = held.as_millis() as u64,
        "answer held back for the quota"
    );
    millis_rounded_up(held)
}

fn millis_rounded_up(held: Duration) -> u32 {
    u32::try_from(held.as_nanos().div_ceil(1_000_000)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_shorter_than_a_millisecond_still_shows() {
        assert_eq!(millis_rounded_up(Duration::ZERO), 0);
        assert_eq!(millis_rounded_up(Duration::from_micros(1)), 1);
        assert_eq!(millis_rounded_up(Duration::from_secs(30)), 30_000);
    }
}

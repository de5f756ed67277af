//! One principal's account for one direction: a token bucket that may go
//! into debt. It refills at the quota's rate up to a small burst; a request
//! of N bytes takes N whatever the balance, so nothing is refused, and the
//! debt says how long the answer must wait for the principal's rate to be
//! back at its quota: debt / rate.
//!
//! Invariant: the balance stays within `[-rate × THROTTLE_MAX, rate ×
//! BURST]`, so no answer waits longer than `THROTTLE_MAX` and a request too
//! large for the quota is forgiven what it owes beyond that (as Kafka's
//! windowed rate forgets old samples), instead of throttling the principal
//! for minutes after it.

use std::time::Duration;

use tokio::time::Instant;

/// How much of its rate an account holds when it has been idle: a client
/// that starts, or resumes after a pause, sends this long's worth before
/// any answer is held back. Small, so a rate measured over a few seconds
/// is the quota's.
pub const BURST: Duration = Duration::from_millis(100);

/// The longest an answer is held back, whatever the principal owes.
pub const THROTTLE_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Account {
    /// Bytes that may still pass without delay; negative, the debt.
    balance: f64,
    /// The quota the balance was last measured against, in bytes per second.
    rate: u64,
    /// When the balance was last brought up to date.
    updated: Instant,
    /// When a request was last charged, to find the least recently used.
    pub(super) last_charged: Instant,
}

impl Account {
    /// A full account, as for a principal that was idle.
    pub fn new(rate: u64, now: Instant) -> Self {
        assert!(rate > 0, "a quota's rate is positive");
        Self {
            balance: burst_bytes(rate),
            rate,
            updated: now,
            last_charged: now,
        }
    }

    /// Takes `bytes` at `rate` (the quota now: a changed quota applies from
    /// this request) and returns how long the answer must wait.
    pub fn charge(&mut self, bytes: u64, rate: u64, now: Instant) -> Duration {
        assert!(rate > 0, "a quota's rate is positive");
        self.refill(now);
        if rate != self.rate {
            self.rate = rate;
            self.balance = self.balance.clamp(debt_max(rate), burst_bytes(rate));
        }
        self.balance = (self.balance - bytes as f64).max(debt_max(rate));
        self.last_charged = self.last_charged.max(now);
        if self.balance >= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(-self.balance / rate as f64).min(THROTTLE_MAX)
    }

    /// Whether the account is full at `now`: dropping it then loses
    /// nothing, since a new one starts full.
    pub fn is_full(&self, now: Instant) -> bool {
        self.balance_at(now) >= burst_bytes(self.rate)
    }

    fn refill(&mut self, now: Instant) {
        self.balance = self.balance_at(now);
        self.updated = self.updated.max(now);
    }

    fn balance_at(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        (self.balance + elapsed * self.rate as f64).min(burst_bytes(self.rate))
    }
}

fn burst_bytes(rate: u64) -> f64 {
    rate as f64 * BURST.as_secs_f64()
}

/// The lowest balance: the debt an answer held back `THROTTLE_MAX` repays.
fn debt_max(rate: u64) -> f64 {
    -(rate as f64) * THROTTLE_MAX.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u64 = 10_000_000;

    /// Float arithmetic makes a wait a few nanoseconds off.
    fn assert_wait(wait: Duration, expected_ms: u64) {
        let expected = Duration::from_millis(expected_ms);
        assert!(
            wait.abs_diff(expected) < Duration::from_micros(1),
            "waits {wait:?}, expected {expected:?}"
        );
    }

    #[test]
    fn a_full_account_lets_its_burst_through_then_holds_back_the_excess() {
        let start = Instant::now();
        let mut account = Account::new(RATE, start);
        // 100 ms of 10 MB/s is 1 MB.
        assert_eq!(account.charge(1_000_000, RATE, start), Duration::ZERO);
        assert_wait(account.charge(500_000, RATE, start), 50);
    }

    #[test]
    fn the_account_refills_at_the_rate_up_to_the_burst() {
        let start = Instant::now();
        let mut account = Account::new(RATE, start);
        assert_wait(account.charge(3_000_000, RATE, start), 200);
        assert!(!account.is_full(start + Duration::from_millis(250)));
        // 300 ms after, the 2 MB debt and the 1 MB burst are back.
        assert!(account.is_full(start + Duration::from_millis(301)));
        // A long pause does not save up more than the burst.
        let later = start + Duration::from_secs(60);
        assert_eq!(account.charge(1_000_000, RATE, later), Duration::ZERO);
        assert_wait(account.charge(100_000, RATE, later), 10);
    }

    #[test]
    fn a_huge_request_waits_at_most_the_cap_and_is_forgiven_the_rest() {
        let start = Instant::now();
        let mut account = Account::new(1_000, start);
        // 64 MB at 1 kB/s would be 18 hours.
        assert_wait(account.charge(64_000_000, 1_000, start), 30_000);
        // Once the cap has passed, the account is even again.
        let after = start + THROTTLE_MAX;
        assert_eq!(account.charge(0, 1_000, after), Duration::ZERO);
    }

    #[test]
    fn a_changed_rate_applies_to_the_next_request() {
        let start = Instant::now();
        let mut account = Account::new(1_000, start);
        assert_wait(account.charge(10_100, 1_000, start), 10_000);
        // Raised a thousandfold: the same debt is repaid a thousand times faster.
        assert_wait(account.charge(0, 1_000_000, start), 10);
        // Lowered again: the debt it can hold shrinks with the rate.
        assert_wait(account.charge(0, 1, start), 30_000);
    }

    /// A client that keeps `window` requests in flight and sends the next
    /// as soon as an answer arrives: the answers, and so its sends, settle
    /// at the quota's rate however deep its pipeline.
    #[test]
    fn a_pipelined_flat_out_client_converges_to_the_quota() {
        for (window, request_bytes) in [(1, 64 * 1024), (16, 64 * 1024), (128, 1024 * 1024)] {
            let start = Instant::now();
            let mut account = Account::new(RATE, start);
            let mut answers: std::collections::VecDeque<Instant> = (0..window)
                .map(|_| start + account.charge(request_bytes, RATE, start))
                .collect();
            let run = Duration::from_secs(10);
            let mut answered: u64 = 0;
            let mut last = start;
            while let Some(answer) = answers.pop_front() {
                if answer > start + run {
                    break;
                }
                answered += request_bytes;
                last = answer;
                // The next request leaves when this answer arrives, and is
                // answered in order after the earlier ones.
                let wait = account.charge(request_bytes, RATE, answer);
                let after = answers.back().copied().unwrap_or(answer);
                answers.push_back((answer + wait).max(after));
            }
            let rate = answered as f64 / (last - start).as_secs_f64();
            let ratio = rate / RATE as f64;
            assert!(
                (0.97..1.03).contains(&ratio),
                "window {window} of {request_bytes} B: {rate:.0} B/s"
            );
        }
    }
}

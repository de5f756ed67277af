//! Staying useful while the broker is not: a jittered exponential
//! [`Backoff`] for retry loops, and the [`CircuitBreaker`] every call of a
//! [`crate::Client`] passes through.
//!
//! The breaker is the usual three-state machine:
//!
//! ```text
//!   Closed ──(failure_threshold consecutive retryable failures)──▶ Open
//!     ▲                                                             │
//!     │ probe succeeds                          open_duration passed │
//!     │                                                             ▼
//!     └──────────────────────────── HalfOpen (one probe call) ◀─────┘
//!                                      │ probe fails ──▶ Open
//! ```
//!
//! Invariants: at most one probe is in flight while half open; an outcome is
//! only counted by the state it was granted in (a permit from before a
//! transition is ignored after it), so calls that were already in flight when
//! the breaker opened cannot close it or extend it; the lock is never held
//! across an `.await` or while logging.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::Rng;

use crate::error::ClientError;

/// Exponential backoff with full jitter (as in the AWS Architecture Blog's
/// "Exponential Backoff and Jitter"): the delay before retry `attempt` is
/// drawn uniformly from `[0, min(max, initial × multiplier^attempt)]`.
///
/// Full jitter spreads the retries of many clients that failed together
/// (e.g. when the broker restarted) over the whole window instead of
/// bunching them at its end.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Backoff {
    /// The ceiling of the first delay (`attempt` 0).
    pub initial: Duration,
    /// The largest ceiling, reached after a few attempts.
    pub max: Duration,
    /// How much the ceiling grows per attempt; at least 1.
    pub multiplier: f64,
}

impl Default for Backoff {
    /// 50 ms doubling up to 5 s.
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(5),
            multiplier: 2.0,
        }
    }
}

impl Backoff {
    /// A random delay before retry `attempt` (0 for the first retry), in
    /// `[0, self.ceiling(attempt)]`.
    ///
    /// # Panics
    ///
    /// If `multiplier` is below 1 or not finite.
    #[must_use]
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_with(attempt, &mut rand::rng())
    }

    /// [`Backoff::delay`] drawing from `rng` (seed one for reproducible delays).
    ///
    /// # Panics
    ///
    /// If `multiplier` is below 1 or not finite.
    pub fn delay_with(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(attempt);
        let ceiling_nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.random_range(0..=ceiling_nanos))
    }

    /// The upper bound of the delay before retry `attempt`:
    /// `min(max, initial × multiplier^attempt)`.
    ///
    /// # Panics
    ///
    /// If `multiplier` is below 1 or not finite.
    #[must_use]
    pub fn ceiling(&self, attempt: u32) -> Duration {
        assert!(
            self.multiplier.is_finite() && self.multiplier >= 1.0,
            "a backoff multiplier must be finite and at least 1, not {}",
            self.multiplier
        );
        let exponent = i32::try_from(attempt).unwrap_or(i32::MAX);
        let ceiling_secs = self.initial.as_secs_f64() * self.multiplier.powi(exponent);
        // `<` is false for an infinite product (many attempts), so it caps too.
        if ceiling_secs < self.max.as_secs_f64() {
            Duration::from_secs_f64(ceiling_secs)
        } else {
            self.max
        }
    }
}

/// When a [`CircuitBreaker`] opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CircuitBreakerConfig {
    /// Consecutive retryable failures that open the breaker; at least 1.
    pub failure_threshold: u32,
    /// How long an open breaker fails calls fast before it lets one probe
    /// call through.
    pub open_duration: Duration,
}

/// [`CircuitBreakerConfig::failure_threshold`] by default.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 5;
/// [`CircuitBreakerConfig::open_duration`] by default.
pub const DEFAULT_OPEN_DURATION: Duration = Duration::from_secs(1);

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
            open_duration: DEFAULT_OPEN_DURATION,
        }
    }
}

/// The state of a [`CircuitBreaker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls go through; consecutive retryable failures are counted.
    Closed,
    /// Calls fail fast with [`ClientError::CircuitOpen`]. The breaker stays
    /// in this state until the next [`CircuitBreaker::acquire`] after
    /// `open_duration`, which turns it half open.
    Open,
    /// One probe call goes through; the others fail fast until its outcome
    /// closes the breaker or opens it again.
    HalfOpen,
}

impl CircuitState {
    /// The snake_case name used in logs.
    fn name(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// Fails calls fast while the broker looks unreachable, so callers do not
/// each wait for a connect timeout, and the broker is not hammered while it
/// restarts. See the [module docs](self) for the state machine.
///
/// Cloning is cheap; clones share the state (a [`crate::Client`] and its
/// clones share one breaker, as they share one connection).
///
/// ```
/// use brook_client::resilience::{CircuitBreaker, CircuitBreakerConfig};
///
/// let breaker = CircuitBreaker::new(CircuitBreakerConfig::default());
/// let permit = breaker.acquire()?;
/// // ... make the call, then report how it went:
/// permit.success();
/// # Ok::<(), brook_client::ClientError>(())
/// ```
#[derive(Clone)]
pub struct CircuitBreaker {
    shared: Arc<Shared>,
}

/// What the clones of one breaker share.
struct Shared {
    config: CircuitBreakerConfig,
    clock: Box<dyn Fn() -> Instant + Send + Sync>,
    /// Callers acquire and settle permits from many tasks; held only to read
    /// or change the state, never across an `.await`.
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    phase: Phase,
    /// Bumped on every transition; a permit's outcome counts only in the
    /// generation it was granted in.
    generation: u64,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

impl Phase {
    fn state(self) -> CircuitState {
        match self {
            Self::Closed { .. } => CircuitState::Closed,
            Self::Open { .. } => CircuitState::Open,
            Self::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }
}

/// A transition made under the lock, logged after it is released.
#[derive(Debug, Clone, Copy)]
struct Transition {
    from: CircuitState,
    to: CircuitState,
}

impl Transition {
    fn log(self, config: &CircuitBreakerConfig) {
        let (from, to) = (self.from.name(), self.to.name());
        match self.to {
            CircuitState::Open => tracing::warn!(
                from,
                to,
                failure_threshold = config.failure_threshold,
                open_ms = u64::try_from(config.open_duration.as_millis()).unwrap_or(u64::MAX),
                "circuit breaker opened: calls to the broker fail fast"
            ),
            CircuitState::HalfOpen => {
                tracing::info!(from, to, "circuit breaker half open: probing the broker");
            }
            CircuitState::Closed => {
                tracing::info!(from, to, "circuit breaker closed: the broker answers again");
            }
        }
    }
}

impl State {
    fn transition(&mut self, to: Phase) -> Transition {
        let from = self.phase.state();
        self.phase = to;
        self.generation += 1;
        Transition {
            from,
            to: to.state(),
        }
    }
}

impl CircuitBreaker {
    /// A closed breaker.
    ///
    /// # Panics
    ///
    /// If `config.failure_threshold` is 0.
    #[must_use]
    pub fn new(config: CircuitBreakerConfig) -> Self {
        Self::with_clock(config, Instant::now)
    }

    /// A closed breaker that reads the time from `clock` (tests move it by hand).
    pub(crate) fn with_clock(
        config: CircuitBreakerConfig,
        clock: impl Fn() -> Instant + Send + Sync + 'static,
    ) -> Self {
        assert!(
            config.failure_threshold > 0,
            "a circuit breaker needs at least one failure to open"
        );
        Self {
            shared: Arc::new(Shared {
                config,
                clock: Box::new(clock),
                state: Mutex::new(State {
                    phase: Phase::Closed { failures: 0 },
                    generation: 0,
                }),
            }),
        }
    }

    /// The configuration this breaker was made with.
    #[must_use]
    pub fn config(&self) -> &CircuitBreakerConfig {
        &self.shared.config
    }

    /// The current state. An open breaker whose `open_duration` has passed
    /// still reads [`CircuitState::Open`] until the next [`Self::acquire`].
    #[must_use]
    pub fn state(&self) -> CircuitState {
        self.shared.state.lock().phase.state()
    }

    /// Asks to make one call. Closed, or half open with no probe in flight:
    /// a [`Permit`] to report the call's outcome with. Otherwise
    /// [`ClientError::CircuitOpen`] at once, with how long until a probe may
    /// go (while a probe is in flight, `open_duration`: the wait if it fails).
    pub fn acquire(&self) -> Result<Permit, ClientError> {
        let now = (self.shared.clock)();
        let open_duration = self.shared.config.open_duration;
        let mut state = self.shared.state.lock();
        let (probe, transition) = match state.phase {
            Phase::Closed { .. } => (false, None),
            Phase::Open { until } if now < until => {
                return Err(ClientError::CircuitOpen {
                    retry_after: until - now,
                });
            }
            Phase::Open { .. } => {
                let transition = state.transition(Phase::HalfOpen { probing: true });
                (true, Some(transition))
            }
            Phase::HalfOpen { probing: true } => {
                return Err(ClientError::CircuitOpen {
                    retry_after: open_duration,
                });
            }
            Phase::HalfOpen { probing: false } => {
                // The previous probe was dropped without an outcome.
                state.phase = Phase::HalfOpen { probing: true };
                (true, None)
            }
        };
        let permit = Permit {
            shared: self.shared.clone(),
            generation: state.generation,
            probe,
            settled: false,
        };
        drop(state);
        if let Some(transition) = transition {
            transition.log(&self.shared.config);
        }
        Ok(permit)
    }
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("config", &self.shared.config)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

/// Leave from a [`CircuitBreaker`] to make one call; report its outcome
/// with [`Permit::success`] or [`Permit::failure`]. A permit dropped without
/// an outcome (e.g. the caller gave up on the call) counts as nothing; a
/// dropped probe lets the next caller probe instead.
#[must_use = "report the call's outcome, or the breaker learns nothing"]
pub struct Permit {
    shared: Arc<Shared>,
    generation: u64,
    /// Whether this is the one call let through while half open.
    probe: bool,
    settled: bool,
}

impl Permit {
    /// The call got an answer.
    pub fn success(mut self) {
        self.settle(true);
    }

    /// The call failed. Only a `retryable` failure (the broker unreachable,
    /// overloaded or slow) counts against the broker; any other error is an
    /// answer (a `NotFound` shows the broker is there) and counts as a success.
    pub fn failure(mut self, retryable: bool) {
        self.settle(!retryable);
    }

    /// Reports `result`: success if `Ok`, else a failure that is retryable
    /// as [`ClientError::is_retryable`] says.
    pub fn report<T>(self, result: &Result<T, ClientError>) {
        match result {
            Ok(_) => self.success(),
            Err(error) => self.failure(error.is_retryable()),
        }
    }

    /// Whether this permit is the probe of a half-open breaker.
    #[must_use]
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    fn settle(&mut self, answered: bool) {
        self.settled = true;
        let now = (self.shared.clock)();
        let config = self.shared.config;
        let mut state = self.shared.state.lock();
        if state.generation != self.generation {
            return; // granted before a transition: stale news
        }
        let transition = match (state.phase, answered) {
            (Phase::Closed { .. }, true) => {
                state.phase = Phase::Closed { failures: 0 };
                None
            }
            (Phase::Closed { failures }, false) => {
                let failures = failures + 1;
                if failures >= config.failure_threshold {
                    Some(state.transition(Phase::Open {
                        until: crate::deadline::after(now, config.open_duration),
                    }))
                } else {
                    state.phase = Phase::Closed { failures };
                    None
                }
            }
            (Phase::HalfOpen { .. }, true) => Some(state.transition(Phase::Closed { failures: 0 })),
            (Phase::HalfOpen { .. }, false) => Some(state.transition(Phase::Open {
                until: crate::deadline::after(now, config.open_duration),
            })),
            // An open breaker grants no permits in its own generation.
            (Phase::Open { .. }, _) => None,
        };
        drop(state);
        if let Some(transition) = transition {
            transition.log(&config);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.settled || !self.probe {
            return;
        }
        let mut state = self.shared.state.lock();
        if state.generation == self.generation
            && matches!(state.phase, Phase::HalfOpen { probing: true })
        {
            state.phase = Phase::HalfOpen { probing: false };
        }
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("generation", &self.generation)
            .field("probe", &self.probe)
            .finish_non_exhaustive()
    }
}

setters!(CircuitBreakerConfig {
    with_failure_threshold => failure_threshold: u32,
    with_open_duration => open_duration: Duration,
});

setters!(Backoff {
    with_initial => initial: Duration,
    with_max => max: Duration,
    with_multiplier => multiplier: f64,
});

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    /// A clock that moves only when told.
    #[derive(Clone)]
    struct ManualClock(Arc<Mutex<Instant>>);

    impl ManualClock {
        fn new() -> Self {
            Self(Arc::new(Mutex::new(Instant::now())))
        }
        fn advance(&self, by: Duration) {
            *self.0.lock() += by;
        }
        fn now(&self) -> Instant {
            *self.0.lock()
        }
    }

    const OPEN: Duration = Duration::from_secs(1);

    fn breaker(threshold: u32) -> (CircuitBreaker, ManualClock) {
        let clock = ManualClock::new();
        let config = CircuitBreakerConfig {
            failure_threshold: threshold,
            open_duration: OPEN,
        };
        let breaker = CircuitBreaker::with_clock(config, {
            let clock = clock.clone();
            move || clock.now()
        });
        (breaker, clock)
    }

    fn fail(breaker: &CircuitBreaker, times: u32) {
        for _ in 0..times {
            breaker.acquire().expect("closed").failure(true);
        }
    }

    fn retry_after(result: Result<Permit, ClientError>) -> Duration {
        match result {
            Err(ClientError::CircuitOpen { retry_after }) => retry_after,
            other => panic!("expected CircuitOpen, got {other:?}"),
        }
    }

    /// An `Rng` that always yields the same word, to hit the ends of a range.
    struct Constant(u64);

    impl rand::RngCore for Constant {
        fn next_u32(&mut self) -> u32 {
            u32::try_from(self.0 & u64::from(u32::MAX)).expect("masked to 32 bits")
        }
        fn next_u64(&mut self) -> u64 {
            self.0
        }
        fn fill_bytes(&mut self, dst: &mut [u8]) {
            dst.fill(self.0.to_le_bytes()[0]);
        }
    }

    #[test]
    fn backoff_ceiling_grows_exponentially_up_to_max() {
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            multiplier: 2.0,
        };
        let ceilings: Vec<_> = (0..6).map(|a| backoff.ceiling(a).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff.ceiling(u32::MAX), backoff.max);
        let flat = Backoff {
            multiplier: 1.0,
            ..backoff
        };
        assert_eq!(flat.ceiling(1000), backoff.initial);
        let inverted = Backoff {
            initial: Duration::from_secs(9),
            ..backoff
        };
        assert_eq!(inverted.ceiling(0), backoff.max);
    }

    #[test]
    fn backoff_delay_spans_zero_to_the_ceiling() {
        let backoff = Backoff::default();
        for attempt in [0, 3, 40] {
            let ceiling = backoff.ceiling(attempt);
            assert_eq!(
                backoff.delay_with(attempt, &mut Constant(0)),
                Duration::ZERO
            );
            assert_eq!(
                backoff.delay_with(attempt, &mut Constant(u64::MAX)),
                ceiling
            );
            let mut rng = StdRng::seed_from_u64(u64::from(attempt));
            for _ in 0..1000 {
                assert!(backoff.delay_with(attempt, &mut rng) <= ceiling);
            }
            assert!(backoff.delay(attempt) <= ceiling);
        }
    }

    #[test]
    fn backoff_delay_is_reproducible_from_a_seed() {
        let backoff = Backoff::default();
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..5)
                .map(|a| backoff.delay_with(a, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    #[should_panic(expected = "at least 1")]
    fn a_shrinking_backoff_is_a_bug() {
        let backoff = Backoff {
            multiplier: 0.5,
            ..Backoff::default()
        };
        let _ = backoff.ceiling(1);
    }

    #[test]
    fn opens_after_threshold_consecutive_retryable_failures() {
        let (breaker, _clock) = breaker(3);
        fail(&breaker, 2);
        assert_eq!(breaker.state(), CircuitState::Closed);
        fail(&breaker, 1);
        assert_eq!(breaker.state(), CircuitState::Open);
        assert_eq!(retry_after(breaker.acquire()), OPEN);
        assert!(ClientError::CircuitOpen { retry_after: OPEN }.is_retryable());
    }

    #[test]
    fn answers_reset_the_count_and_non_retryable_errors_are_answers() {
        let (breaker, _clock) = breaker(3);
        fail(&breaker, 2);
        breaker.acquire().expect("closed").success();
        fail(&breaker, 2);
        breaker.acquire().expect("closed").failure(false); // e.g. NotFound
        fail(&breaker, 2);
        let ok: Result<(), ClientError> = Ok(());
        breaker.acquire().expect("closed").report(&ok);
        fail(&breaker, 2);
        assert_eq!(breaker.state(), CircuitState::Closed);
    }

    #[test]
    fn dropped_permits_count_as_nothing() {
        let (breaker, _clock) = breaker(2);
        fail(&breaker, 1);
        drop(breaker.acquire().expect("closed"));
        assert_eq!(breaker.state(), CircuitState::Closed);
        fail(&breaker, 1);
        assert_eq!(breaker.state(), CircuitState::Open);
    }

    #[test]
    fn after_open_duration_one_probe_goes_through() {
        let (breaker, clock) = breaker(1);
        fail(&breaker, 1);
        clock.advance(Duration::from_millis(700));
        assert_eq!(retry_after(breaker.acquire()), Duration::from_millis(300));
        clock.advance(Duration::from_millis(300));
        let probe = breaker.acquire().expect("half open lets a probe through");
        assert!(probe.is_probe());
        assert_eq!(breaker.state(), CircuitState::HalfOpen);
        assert_eq!(retry_after(breaker.acquire()), OPEN);
        probe.success();
        assert_eq!(breaker.state(), CircuitState::Closed);
        let permit = breaker.acquire().expect("closed");
        assert!(!permit.is_probe());
        permit.success();
    }

    #[test]
    fn a_failed_probe_opens_again_for_open_duration() {
        let (breaker, clock) = breaker(1);
        fail(&breaker, 1);
        clock.advance(OPEN);
        breaker.acquire().expect("probe").failure(true);
        assert_eq!(breaker.state(), CircuitState::Open);
        assert_eq!(retry_after(breaker.acquire()), OPEN);
        clock.advance(OPEN);
        // A non-retryable failure is an answer: the probe closes the breaker.
        breaker.acquire().expect("probe").failure(false);
        assert_eq!(breaker.state(), CircuitState::Closed);
    }

    #[test]
    fn a_dropped_probe_lets_the_next_caller_probe() {
        let (breaker, clock) = breaker(1);
        fail(&breaker, 1);
        clock.advance(OPEN);
        drop(breaker.acquire().expect("probe"));
        assert_eq!(breaker.state(), CircuitState::HalfOpen);
        let probe = breaker.acquire().expect("a new probe");
        assert!(probe.is_probe());
        assert!(breaker.acquire().is_err());
        probe.success();
        assert_eq!(breaker.state(), CircuitState::Closed);
    }

    #[test]
    fn outcomes_from_before_a_transition_are_ignored() {
        let (breaker, clock) = breaker(2);
        let late_success = breaker.acquire().expect("closed");
        let late_failure = breaker.acquire().expect("closed");
        fail(&breaker, 2);
        assert_eq!(breaker.state(), CircuitState::Open);
        late_success.success(); // must not close an open breaker
        assert_eq!(breaker.state(), CircuitState::Open);
        clock.advance(OPEN);
        let probe = breaker.acquire().expect("probe");
        late_failure.failure(true); // must not reopen over the probe
        assert_eq!(breaker.state(), CircuitState::HalfOpen);
        probe.success();
        assert_eq!(breaker.state(), CircuitState::Closed);
    }

    #[test]
    fn clones_share_state() {
        let (breaker, _clock) = breaker(1);
        let clone = breaker.clone();
        fail(&clone, 1);
        assert_eq!(breaker.state(), CircuitState::Open);
        assert!(format!("{breaker:?}").contains("Open"));
    }

    #[test]
    #[should_panic(expected = "at least one failure")]
    fn a_zero_threshold_is_a_bug() {
        let _ = CircuitBreaker::new(CircuitBreakerConfig {
            failure_threshold: 0,
            open_duration: OPEN,
        });
    }
}

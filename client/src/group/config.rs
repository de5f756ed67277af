//! The settings of a group member, and what [`super::GroupConsumer::run`]
//! does with a record whose handler keeps failing.

use std::time::Duration;

use crate::consumer::{ConsumerConfig, OffsetReset};
use crate::resilience::Backoff;
use crate::undecodable::UndecodablePolicy;

/// What becomes of a record whose handler failed `handler_retries + 1` times.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// Log it, count it as done (its offset may be committed) and go on.
    Skip,
    /// Stop: [`super::GroupConsumer::run`] waits for the other handlers,
    /// commits what was done (not this record), leaves the group and returns
    /// the error. The default: nothing is lost unless asked for.
    #[default]
    Fail,
    /// Send the record (key, value, headers, timestamp) to `topic` with a
    /// `deadLetterReason` header (the error) and `originalTopic`,
    /// `originalPartition` and `originalOffset`, then count it as done. A
    /// failed dead-letter send is treated as [`FailurePolicy::Fail`].
    DeadLetter {
        /// The dead-letter topic; it must exist.
        topic: String,
    },
}

/// Settings of a [`super::GroupConsumer`]. [`GroupConfig::new`] gives the
/// defaults for a group and its topics; change fields with struct update
/// syntax.
///
/// ```
/// use std::time::Duration;
/// use brook_client::{FailurePolicy, GroupConfig, OffsetReset};
///
/// let config = GroupConfig::new("billing", ["orders"])
///     .with_auto_offset_reset(OffsetReset::Earliest)
///     .with_handler_retries(3)
///     .with_failure_policy(FailurePolicy::DeadLetter { topic: "orders.dlq".into() });
/// assert_eq!(config.commit_interval, Duration::from_secs(1));
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct GroupConfig {
    /// The group to join.
    pub group: String,
    /// The topics to consume; all must exist.
    pub topics: Vec<String>,
    /// A free-form name shown by `describe`.
    pub client_id: String,
    /// The broker removes the member (and moves its partitions) after this
    /// long without a heartbeat. Zero takes the broker's default.
    pub session_timeout: Duration,
    /// Where a partition without a committed offset starts. With
    /// [`OffsetReset::Error`] such a partition is not read.
    pub auto_offset_reset: OffsetReset,
    /// How often [`super::GroupConsumer::run`] commits the offsets whose
    /// records were handled (it also commits on revocation and at the end).
    /// Not zero.
    pub commit_interval: Duration,
    /// Upper bound for the records of one fetch.
    pub max_bytes: u32,
    /// How long one fetch waits for data when there is none. Not zero.
    pub max_wait: Duration,
    /// Fetched chunks held at most (see [`ConsumerConfig::prefetch`]). At least 1.
    pub prefetch: usize,
    /// Records [`super::GroupConsumer::run`] queues per partition ahead of
    /// its handler. At least 1.
    pub max_poll_records: usize,
    /// Handlers [`super::GroupConsumer::run`] runs at once (each partition
    /// runs one at a time, in order). At least 1.
    pub max_concurrency: usize,
    /// Times a failed handler is retried before the failure policy applies.
    pub handler_retries: u32,
    /// Paces handler retries and re-joins after a broken session.
    pub retry_backoff: Backoff,
    /// What to do with a record whose handler kept failing.
    pub failure_policy: FailurePolicy,
    /// What to do with a batch whose records do not decode, in both ways
    /// of consuming: stop (the stream yields the `DATA_LOSS` error, `run`
    /// returns it) or skip it (reported to
    /// [`super::GroupConsumer::on_skipped`]; `run` counts its offsets as
    /// done, so the next commit moves past it).
    pub undecodable: UndecodablePolicy,
}

impl GroupConfig {
    /// The defaults: 10 s session timeout, reset to latest, commits every
    /// second, 4 MiB fetches with a 500 ms long poll and 4 prefetched, 256
    /// records queued per partition, 16 handlers at once, no handler retries,
    /// [`FailurePolicy::Fail`], and a batch that does not decode stops the
    /// member ([`UndecodablePolicy::Stop`]).
    pub fn new<T: Into<String>>(
        group: impl Into<String>,
        topics: impl IntoIterator<Item = T>,
    ) -> Self {
        let consumer = ConsumerConfig::default();
        Self {
            group: group.into(),
            topics: topics.into_iter().map(Into::into).collect(),
            client_id: "brook-client".to_owned(),
            session_timeout: Duration::from_secs(10),
            auto_offset_reset: OffsetReset::Latest,
            commit_interval: Duration::from_secs(1),
            max_bytes: consumer.max_bytes,
            max_wait: consumer.max_wait,
            prefetch: consumer.prefetch,
            max_poll_records: 256,
            max_concurrency: 16,
            handler_retries: 0,
            retry_backoff: Backoff {
                initial: Duration::from_millis(50),
                max: Duration::from_secs(2),
                multiplier: 2.0,
            },
            failure_policy: FailurePolicy::Fail,
            undecodable: UndecodablePolicy::Stop,
        }
    }

    /// The settings of the member's internal [`crate::Consumer`].
    pub(crate) fn consumer_config(&self) -> ConsumerConfig {
        ConsumerConfig {
            max_bytes: self.max_bytes,
            max_wait: self.max_wait,
            prefetch: self.prefetch,
            auto_offset_reset: self.auto_offset_reset,
            retry_backoff: self.retry_backoff.initial,
            retry_backoff_max: self.retry_backoff.max,
            undecodable: self.undecodable,
        }
    }

    /// Panics on settings that cannot work.
    pub(crate) fn check(&self) {
        assert!(!self.group.is_empty(), "a group needs a name");
        assert!(!self.topics.is_empty(), "a group member needs topics");
        assert!(
            !self.commit_interval.is_zero(),
            "a zero commit_interval would commit without pause"
        );
        assert!(self.prefetch > 0, "prefetch must leave room for one chunk");
        assert!(
            !self.max_wait.is_zero(),
            "a zero max_wait makes an idle consumer poll without pause"
        );
        assert!(
            self.max_poll_records > 0,
            "max_poll_records must leave room for one record"
        );
        assert!(
            self.max_concurrency > 0,
            "max_concurrency must allow one handler"
        );
        assert!(
            u32::try_from(self.session_timeout.as_millis()).is_ok(),
            "session_timeout must fit in u32 milliseconds"
        );
    }
}

setters!(GroupConfig {
    with_group => group: String,
    with_topics => topics: Vec<String>,
    with_client_id => client_id: String,
    with_session_timeout => session_timeout: Duration,
    with_auto_offset_reset => auto_offset_reset: OffsetReset,
    with_commit_interval => commit_interval: Duration,
    with_max_bytes => max_bytes: u32,
    with_max_wait => max_wait: Duration,
    with_prefetch => prefetch: usize,
    with_max_poll_records => max_poll_records: usize,
    with_max_concurrency => max_concurrency: usize,
    with_handler_retries => handler_retries: u32,
    with_retry_backoff => retry_backoff: Backoff,
    with_failure_policy => failure_policy: FailurePolicy,
    with_undecodable => undecodable: UndecodablePolicy,
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_their_own_checks() {
        let config = GroupConfig::new("g", ["t"]);
        config.check();
        assert_eq!(config.topics, ["t"]);
        assert_eq!(config.failure_policy, FailurePolicy::Fail);
        assert_eq!(
            config.consumer_config().auto_offset_reset,
            config.auto_offset_reset
        );
        let skipping = config.with_undecodable(UndecodablePolicy::Skip);
        assert_eq!(
            skipping.consumer_config().undecodable,
            UndecodablePolicy::Skip
        );
    }

    #[test]
    #[should_panic(expected = "needs topics")]
    fn a_member_without_topics_is_refused() {
        GroupConfig::new("g", Vec::<String>::new()).check();
    }
}

//! Why a group member failed.

use crate::error::{ClientError, ErrorKind};

/// A handler's error, type-erased.
pub(crate) type HandlerError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a [`super::GroupConsumer`] call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// A call to the broker failed (joining, fetching, committing).
    #[error(transparent)]
    Client(#[from] ClientError),

    /// A handler kept failing and the policy is [`super::FailurePolicy::Fail`].
    #[error("handler failed on {topic}/{partition}@{offset} after {attempts} attempts")]
    Handler {
        /// The record's topic.
        topic: String,
        /// The record's partition.
        partition: u32,
        /// The record's offset; it was not committed.
        offset: i64,
        /// Handler calls made, retries included.
        attempts: u32,
        /// The last attempt's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },

    /// A record could not be sent to the dead-letter topic.
    #[error("dead-lettering {topic}/{partition}@{offset} to {dead_letter_topic} failed")]
    DeadLetter {
        /// The record's topic.
        topic: String,
        /// The record's partition.
        partition: u32,
        /// The record's offset; it was not committed.
        offset: i64,
        /// Where it was to go.
        dead_letter_topic: String,
        /// Why the send failed (boxed: it would make every group error
        /// larger).
        #[source]
        source: Box<ClientError>,
    },

    /// The member's session ended for good (the member was closed, or the
    /// broker refused to let it join again).
    #[error("the group session is closed")]
    Closed,
}

impl GroupError {
    /// Whether the broker refused a commit because the member no longer
    /// owns the partition in its current generation, or is no longer a
    /// member (`FAILED_PRECONDITION`): a rebalance moved on; the records
    /// will be consumed again by their new owner.
    pub fn is_fenced(&self) -> bool {
        matches!(self, Self::Client(e) if e.kind() == ErrorKind::Fenced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fencing_is_recognised_by_its_code() {
        let fenced = GroupError::Client(ClientError::new(
            "commit_offsets",
            crate::StatusCode::FailedPrecondition,
            "commit to group `g` refused for member `m`: stale generation 3, current 4",
        ));
        assert!(fenced.is_fenced());
        assert!(!GroupError::Closed.is_fenced());
    }

    #[test]
    fn a_handler_failure_names_the_record() {
        let error = GroupError::Handler {
            topic: "t".into(),
            partition: 2,
            offset: 7,
            attempts: 3,
            source: "boom".into(),
        };
        assert_eq!(
            error.to_string(),
            "handler failed on t/2@7 after 3 attempts"
        );
    }
}

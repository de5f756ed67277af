//! How the producer reads the broker's answers, and the errors it makes
//! itself (expressed as [`ClientError`]s, so callers see one error type).

use std::time::Duration;

use crate::error::{ClientError, ErrorKind, StatusCode};

/// What to do with a batch after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// A passing condition (broker unreachable, overloaded, answer lost):
    /// send the same bytes again after a backoff.
    Retry,
    /// The broker refused the batch's sequence number as out of order: an
    /// earlier batch of the partition is missing (idempotent only).
    OutOfOrder,
    /// The broker refused the producer identity (an older epoch, or an id
    /// it does not know): nothing more can be sent with it.
    Fenced,
    /// The batch itself is wrong (too large, unknown partition...).
    Fatal,
}

/// Classifies a failed attempt of a batch by the kind of its error.
pub(crate) fn classify(error: &ClientError, idempotent: bool) -> Failure {
    if error.is_retryable() {
        return Failure::Retry;
    }
    match error.kind() {
        ErrorKind::OutOfOrderSequence if idempotent => Failure::OutOfOrder,
        ErrorKind::Fenced if idempotent => Failure::Fenced,
        _ => Failure::Fatal,
    }
}

/// Whether `error` says the topic or partition does not exist (as far as
/// the broker knows): the cached partition count may be stale.
pub(crate) fn is_unknown_partition(error: &ClientError) -> bool {
    error.code() == Some(StatusCode::NotFound)
}

/// Whether `error` says the broker looked at the batch and refused it, so
/// the attempt was certainly not appended: it was malformed or too large,
/// or its topic or partition does not exist. Not so for `INTERNAL`, `UNKNOWN` or
/// `DATA_LOSS` (a failed write may still have reached the log), nor for
/// anything retryable (a timeout may hide an append).
pub(crate) fn is_definite_refusal(error: &ClientError) -> bool {
    !error.is_retryable()
        && matches!(
            error.code(),
            Some(StatusCode::InvalidArgument | StatusCode::NotFound)
        )
}

/// The operation named in the producer's own errors.
pub(crate) const OPERATION: &str = "producer_send";

/// `send` on a producer that was closed (or whose task is gone).
pub(crate) fn closed() -> ClientError {
    ClientError::new(OPERATION, StatusCode::Cancelled, "the producer is closed")
}

/// A record that cannot fit the buffer even when it is empty.
pub(crate) fn larger_than_buffer(record_bytes: usize, buffer_memory: usize) -> ClientError {
    ClientError::new(
        OPERATION,
        StatusCode::InvalidArgument,
        format!(
            "record of about {record_bytes} bytes is larger than buffer_memory ({buffer_memory} bytes)"
        ),
    )
}

/// A record for a partition the topic does not have.
pub(crate) fn no_such_partition(topic: &str, partition: u32, partition_count: u32) -> ClientError {
    ClientError::new(
        OPERATION,
        StatusCode::NotFound,
        format!(
            "topic {topic} has {partition_count} partitions; there is no partition {partition}"
        ),
    )
}

/// A record that cannot fit a batch the topic accepts, even alone.
pub(crate) fn larger_than_topic_limit(
    topic: &str,
    batch_bytes: usize,
    max_message_bytes: u32,
) -> ClientError {
    ClientError::new(
        OPERATION,
        StatusCode::InvalidArgument,
        format!(
            "record makes a batch of up to {batch_bytes} bytes, more than the \
             max_message_bytes of topic {topic} ({max_message_bytes} bytes)"
        ),
    )
}

/// A record whose delivery timeout ran out before it was acknowledged.
pub(crate) fn delivery_timed_out(after: Duration) -> ClientError {
    ClientError::Timeout {
        operation: "produce_delivery",
        after,
    }
}

/// An acknowledgement the test hook threw away: like a lost answer.
pub(crate) fn acknowledgement_dropped() -> ClientError {
    ClientError::StreamClosed {
        operation: "produce (acknowledgement dropped by test hook)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(code: StatusCode, message: &str) -> ClientError {
        ClientError::Rejected {
            topic: "t".into(),
            partition: 0,
            code,
            message: message.to_owned(),
            leader: None,
        }
    }

    #[test]
    fn answers_classify() {
        let gap = rejected(
            StatusCode::FailedPrecondition,
            "batch for topic `t` partition 0 refused: out of order sequence for producer_id 1: expected base_sequence 0, got 5",
        );
        assert_eq!(classify(&gap, true), Failure::OutOfOrder);
        assert_eq!(classify(&gap, false), Failure::Fatal);
        let fenced = rejected(
            StatusCode::FailedPrecondition,
            "batch for topic `t` partition 0 refused: producer_id 1 epoch 0 is fenced",
        );
        assert_eq!(classify(&fenced, true), Failure::Fenced);
        assert_eq!(
            classify(&rejected(StatusCode::Unavailable, "x"), true),
            Failure::Retry
        );
        assert_eq!(classify(&acknowledgement_dropped(), true), Failure::Retry);
        assert_eq!(
            classify(&rejected(StatusCode::InvalidArgument, "x"), true),
            Failure::Fatal
        );
    }

    #[test]
    fn only_refusals_after_validation_are_definite() {
        for code in [StatusCode::InvalidArgument, StatusCode::NotFound] {
            assert!(is_definite_refusal(&rejected(code, "x")), "{code:?}");
        }
        for code in [
            StatusCode::Internal,
            StatusCode::Unknown,
            StatusCode::DataLoss,
            StatusCode::Unavailable,
            StatusCode::FailedPrecondition,
        ] {
            assert!(!is_definite_refusal(&rejected(code, "x")), "{code:?}");
        }
        assert!(!is_definite_refusal(&delivery_timed_out(
            Duration::from_secs(1)
        )));
    }
}

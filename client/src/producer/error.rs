//! How the producer reads the broker's answers, and the errors it makes
//! itself (expressed as [`ClientError`]s, so callers see one error type).

use std::time::Duration;

use tonic::{Code, Status};

use crate::error::ClientError;

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

/// Classifies a failed attempt of a batch. The broker answers both
/// sequence gaps and fenced epochs with `FAILED_PRECONDITION`; the message
/// tells them apart ("out of order sequence ...", see the broker's
/// `storage::producers::SequenceError`).
pub(crate) fn classify(error: &ClientError, idempotent: bool) -> Failure {
    if error.is_retryable() {
        return Failure::Retry;
    }
    match error {
        ClientError::Rejected { status, .. } | ClientError::Status { status, .. }
            if idempotent && status.code() == Code::FailedPrecondition =>
        {
            if status.message().contains("out of order sequence") {
                Failure::OutOfOrder
            } else {
                Failure::Fenced
            }
        }
        _ => Failure::Fatal,
    }
}

/// Whether `error` says the topic or partition does not exist (as far as
/// the broker knows): the cached partition count may be stale.
pub(crate) fn is_unknown_partition(error: &ClientError) -> bool {
    error.code() == Some(Code::NotFound)
}

/// Whether `error` says the broker looked at the batch and refused it, so
/// the attempt was certainly not appended: it was malformed or too large,
/// or its topic or partition does not exist. Not so for `INTERNAL`, `UNKNOWN` or
/// `DATA_LOSS` (a failed write may still have reached the log), nor for
/// anything retryable (a timeout may hide an append).
pub(crate) fn is_definite_refusal(error: &ClientError) -> bool {
    !error.is_retryable() && matches!(error.code(), Some(Code::InvalidArgument | Code::NotFound))
}

/// A copy of `error` for another record of the same batch. [`ClientError`]
/// is not `Clone` (a transport error is not); such errors become a status
/// with the same message and the same retryability (so do variants added
/// later, hence the wildcard).
#[allow(
    clippy::match_wildcard_for_single_variants,
    reason = "variants added to ClientError later must replicate too"
)]
pub(crate) fn replicate(error: &ClientError) -> ClientError {
    match error {
        ClientError::Status { operation, status } => ClientError::Status {
            operation,
            status: status.clone(),
        },
        ClientError::Rejected {
            topic,
            partition,
            status,
        } => ClientError::Rejected {
            topic: topic.clone(),
            partition: *partition,
            status: status.clone(),
        },
        ClientError::Timeout { operation, after } => ClientError::Timeout {
            operation,
            after: *after,
        },
        ClientError::StreamClosed { operation } => ClientError::StreamClosed { operation },
        ClientError::Encode(e) => ClientError::Encode(e.clone()),
        ClientError::Decode(e) => ClientError::Decode(e.clone()),
        ClientError::Protocol(why) => ClientError::Protocol(why.clone()),
        ClientError::CircuitOpen { retry_after } => ClientError::CircuitOpen {
            retry_after: *retry_after,
        },
        other => {
            let code = if other.is_retryable() {
                Code::Unavailable
            } else {
                other.code().unwrap_or(Code::Unknown)
            };
            ClientError::status(OPERATION, Status::new(code, other.to_string()))
        }
    }
}

/// The operation named in the producer's own errors.
pub(crate) const OPERATION: &str = "producer_send";

/// `send` on a producer that was closed (or whose task is gone).
pub(crate) fn closed() -> ClientError {
    ClientError::status(OPERATION, Status::cancelled("the producer is closed"))
}

/// A record that cannot fit the buffer even when it is empty.
pub(crate) fn larger_than_buffer(record_bytes: usize, buffer_memory: usize) -> ClientError {
    ClientError::status(
        OPERATION,
        Status::invalid_argument(format!(
            "record of about {record_bytes} bytes is larger than buffer_memory ({buffer_memory} bytes)"
        )),
    )
}

/// A record for a partition the topic does not have.
pub(crate) fn no_such_partition(topic: &str, partition: u32, partition_count: u32) -> ClientError {
    ClientError::status(
        OPERATION,
        Status::not_found(format!(
            "topic {topic} has {partition_count} partitions; there is no partition {partition}"
        )),
    )
}

/// A record that cannot fit a batch the topic accepts, even alone.
pub(crate) fn larger_than_topic_limit(
    topic: &str,
    batch_bytes: usize,
    max_message_bytes: u32,
) -> ClientError {
    ClientError::status(
        OPERATION,
        Status::invalid_argument(format!(
            "record makes a batch of up to {batch_bytes} bytes, more than the \
             max_message_bytes of topic {topic} ({max_message_bytes} bytes)"
        )),
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

    fn rejected(code: Code, message: &str) -> ClientError {
        ClientError::Rejected {
            topic: "t".into(),
            partition: 0,
            status: Status::new(code, message),
        }
    }

    #[test]
    fn answers_classify() {
        let gap = rejected(
            Code::FailedPrecondition,
            "batch for topic `t` partition 0 refused: out of order sequence for producer_id 1: expected base_sequence 0, got 5",
        );
        assert_eq!(classify(&gap, true), Failure::OutOfOrder);
        assert_eq!(classify(&gap, false), Failure::Fatal);
        let fenced = rejected(
            Code::FailedPrecondition,
            "batch for topic `t` partition 0 refused: producer_id 1 epoch 0 is fenced",
        );
        assert_eq!(classify(&fenced, true), Failure::Fenced);
        assert_eq!(
            classify(&rejected(Code::Unavailable, "x"), true),
            Failure::Retry
        );
        assert_eq!(classify(&acknowledgement_dropped(), true), Failure::Retry);
        assert_eq!(
            classify(&rejected(Code::InvalidArgument, "x"), true),
            Failure::Fatal
        );
    }

    #[test]
    fn only_refusals_after_validation_are_definite() {
        for code in [Code::InvalidArgument, Code::NotFound] {
            assert!(is_definite_refusal(&rejected(code, "x")), "{code:?}");
        }
        for code in [
            Code::Internal,
            Code::Unknown,
            Code::DataLoss,
            Code::Unavailable,
            Code::FailedPrecondition,
        ] {
            assert!(!is_definite_refusal(&rejected(code, "x")), "{code:?}");
        }
        assert!(!is_definite_refusal(&delivery_timed_out(
            Duration::from_secs(1)
        )));
    }

    #[test]
    fn replicas_keep_code_and_retryability() {
        for error in [
            rejected(Code::NotFound, "no such topic"),
            delivery_timed_out(Duration::from_secs(1)),
            closed(),
            acknowledgement_dropped(),
        ] {
            let copy = replicate(&error);
            assert_eq!(copy.code(), error.code());
            assert_eq!(copy.is_retryable(), error.is_retryable());
            assert_eq!(copy.to_string(), error.to_string());
        }
    }
}

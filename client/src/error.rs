//! The one error type of the client, and whether retrying can help.
//!
//! Invariant: a status the broker answered with is kept whole (code, message,
//! metadata) as the error's source; nothing is flattened to a string.

use std::time::Duration;

use brook_record::BatchError;
use tonic::Code;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The broker (or the gRPC stack under it) answered the call with a status.
    #[error("{operation} failed with {code:?}: {message}", code = status.code(), message = status.message())]
    Status {
        /// The call, e.g. `create_topic`.
        operation: &'static str,
        /// The status, as received.
        #[source]
        status: tonic::Status,
    },

    /// The broker refused one batch of a produce (the request itself went through).
    #[error("batch for {topic}/{partition} rejected with {code:?}: {message}", code = status.code(), message = status.message())]
    Rejected {
        /// The batch's topic.
        topic: String,
        /// The batch's partition.
        partition: u32,
        /// The broker's error as a status: its code and its message.
        #[source]
        status: tonic::Status,
    },

    /// The broker served bytes that are not valid record batches.
    #[error("fetched records do not decode")]
    Decode(#[source] BatchError),

    /// The records given to a produce call could not be encoded (e.g. none).
    #[error("records do not encode into a batch")]
    Encode(#[source] BatchError),

    /// Connecting failed, or the endpoint is not a valid URI.
    #[error("cannot reach the broker")]
    Transport(#[from] tonic::transport::Error),

    /// No answer within the call's time limit.
    #[error("{operation} timed out after {after:?}")]
    Timeout {
        /// The call, e.g. `fetch`.
        operation: &'static str,
        /// The time limit that passed.
        after: Duration,
    },

    /// A stream ended (the connection dropped, or the broker is shutting
    /// down) before this request was answered. The request may or may not
    /// have been applied.
    #[error("{operation} stream closed before the answer arrived")]
    StreamClosed {
        /// The stream's call, e.g. `produce_stream`.
        operation: &'static str,
    },

    /// The client's circuit breaker is open: recent calls failed to reach the
    /// broker, so this one failed at once instead of waiting for a connect
    /// timeout. See [`crate::resilience::CircuitBreaker`].
    #[error("circuit breaker open: the broker was unreachable; retry after {retry_after:?}")]
    CircuitOpen {
        /// How long until the breaker lets a probe call through.
        retry_after: Duration,
    },

    /// The broker's answer broke the protocol (e.g. a produce response with
    /// the wrong number of results). A bug on one side; do not retry.
    #[error("protocol violation: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The gRPC status code, when the broker answered with one.
    pub fn code(&self) -> Option<Code> {
        match self {
            Self::Status { status, .. } | Self::Rejected { status, .. } => Some(status.code()),
            Self::Decode(_)
            | Self::Encode(_)
            | Self::Transport(_)
            | Self::Timeout { .. }
            | Self::StreamClosed { .. }
            | Self::CircuitOpen { .. }
            | Self::Protocol(_) => None,
        }
    }

    /// Whether the same call may succeed if tried again later: the broker was
    /// unreachable, overloaded, shutting down or slow. A produce retried after
    /// a timeout or a closed stream may append its records twice. An open
    /// circuit breaker is retryable (after its `retry_after`): nothing was sent.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Status { status, .. } | Self::Rejected { status, .. } => {
                code_is_retryable(status.code()) || is_connection_failure(status)
            }
            Self::Transport(_)
            | Self::Timeout { .. }
            | Self::StreamClosed { .. }
            | Self::CircuitOpen { .. } => true,
            Self::Decode(_) | Self::Encode(_) | Self::Protocol(_) => false,
        }
    }

    /// A `Status` error for `operation`.
    pub(crate) fn status(operation: &'static str, status: tonic::Status) -> Self {
        Self::Status { operation, status }
    }

    /// A `Rejected` error from the broker's in-band `Error` message.
    pub(crate) fn rejected(topic: String, partition: u32, error: brook_proto::Error) -> Self {
        Self::Rejected {
            topic,
            partition,
            status: tonic::Status::new(Code::from_i32(error.code), error.message),
        }
    }
}

/// Whether an `Unknown` or `Cancelled` status stands for a broken
/// connection (the broker went away mid-call: an I/O, transport or HTTP/2
/// failure underneath; tonic reports a connection closed under a call as
/// `CANCELLED`) rather than for an answer of the broker. The answer was
/// lost; the request may or may not have been applied.
fn is_connection_failure(status: &tonic::Status) -> bool {
    if !matches!(status.code(), Code::Unknown | Code::Cancelled) {
        return false;
    }
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() || cause.is::<tonic::transport::Error>() {
            return true;
        }
        source = cause.source();
    }
    status.code() == Code::Unknown
        && (status.message().starts_with("h2 protocol error")
            || status.message().starts_with("transport error"))
}

/// Codes that describe a passing condition rather than a wrong request.
fn code_is_retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Aborted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_connection_is_retryable() {
        let broken = tonic::Status::from_error(Box::new(std::io::Error::from(
            std::io::ErrorKind::BrokenPipe,
        )));
        assert_eq!(broken.code(), Code::Unknown);
        assert!(ClientError::status("produce", broken).is_retryable());
        let h2 = tonic::Status::unknown("h2 protocol error: error reading a body from connection");
        assert!(ClientError::status("produce", h2).is_retryable());
        let answer = tonic::Status::unknown("the handler failed");
        assert!(!ClientError::status("produce", answer).is_retryable());
    }

    #[test]
    fn codes_classify_as_documented() {
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::ResourceExhausted,
        ] {
            let e = ClientError::status("produce", tonic::Status::new(code, "x"));
            assert!(e.is_retryable(), "{code:?}");
            assert_eq!(e.code(), Some(code));
        }
        for code in [
            Code::InvalidArgument,
            Code::NotFound,
            Code::AlreadyExists,
            Code::OutOfRange,
            Code::FailedPrecondition,
        ] {
            let e = ClientError::status("produce", tonic::Status::new(code, "x"));
            assert!(!e.is_retryable(), "{code:?}");
        }
    }

    #[test]
    fn rejected_keeps_code_and_message() {
        let e = ClientError::rejected(
            "t".into(),
            2,
            brook_proto::Error {
                code: Code::InvalidArgument as i32,
                message: "crc mismatch".into(),
            },
        );
        assert_eq!(e.code(), Some(Code::InvalidArgument));
        assert!(!e.is_retryable());
        assert_eq!(
            e.to_string(),
            "batch for t/2 rejected with InvalidArgument: crc mismatch"
        );
    }

    #[test]
    fn local_failures_classify() {
        let timeout = ClientError::Timeout {
            operation: "fetch",
            after: Duration::from_secs(1),
        };
        assert!(timeout.is_retryable());
        assert_eq!(timeout.code(), None);
        assert!(!ClientError::Decode(BatchError::EmptyBatch).is_retryable());
        assert!(
            ClientError::StreamClosed {
                operation: "produce"
            }
            .is_retryable()
        );
        let open = ClientError::CircuitOpen {
            retry_after: Duration::from_millis(300),
        };
        assert!(open.is_retryable());
        assert_eq!(open.code(), None);
        assert_eq!(
            open.to_string(),
            "circuit breaker open: the broker was unreachable; retry after 300ms"
        );
    }
}

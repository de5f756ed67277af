//! The one error type of the client, what kind of failure it is, and
//! whether retrying can help.
//!
//! Invariants: no type of the gRPC stack appears here; a status the broker
//! answered with is kept as its code (the client's own [`StatusCode`]) and
//! its message, and a failure underneath (a broken connection, an invalid
//! address) is kept as the error's source, never flattened to a string.
//! Every variant is cheap to clone, so one error can answer every record
//! of a batch.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use brook_record::BatchError;

/// A failure below the client (the transport, the HTTP/2 stack), kept as
/// the source of a [`ClientError`].
pub type Cause = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Why a client call failed. Match on [`ClientError::kind`] to tell
/// failures apart; [`ClientError::is_retryable`] says whether the same
/// call may succeed later.
///
/// ```no_run
/// # async fn example(client: brook_client::Client) -> Result<(), brook_client::ClientError> {
/// use brook_client::{ErrorKind, TopicConfig};
///
/// match client.create_topic("events", 3, TopicConfig::default()).await {
///     Ok(_created) => {}
///     Err(error) if error.kind() == ErrorKind::AlreadyExists => {}
///     Err(error) => return Err(error),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ClientError {
    /// The broker answered the call with an error status.
    Status {
        /// The call, e.g. `create_topic`.
        operation: &'static str,
        /// The status code.
        code: StatusCode,
        /// The broker's message: what it refused, naming the field or limit.
        message: String,
        /// What the client found underneath, if anything (e.g. why fetched
        /// bytes do not decode).
        source: Option<Cause>,
    },

    /// The broker refused one batch of a produce (the request itself went through).
    Rejected {
        /// The batch's topic.
        topic: String,
        /// The batch's partition.
        partition: u32,
        /// The status code of the refusal.
        code: StatusCode,
        /// The broker's message.
        message: String,
        /// In a cluster: the address of the broker that leads the
        /// partition, when the refusal (UNAVAILABLE: the answering broker
        /// does not lead it) named one.
        leader: Option<String>,
    },

    /// The broker served bytes that are not valid record batches.
    Decode(BatchError),

    /// The records given to a produce call could not be encoded (e.g. none).
    Encode(BatchError),

    /// The endpoint given to [`crate::Client::connect`] is not a valid URI.
    InvalidEndpoint {
        /// The endpoint, as given (with `http://` added when it had no scheme).
        endpoint: String,
        /// Why it does not parse.
        source: Cause,
    },

    /// The TLS settings cannot be used: a PEM that cannot be read or holds
    /// no certificate or key, a key that does not fit, or TLS settings with
    /// an `http://` endpoint. Retrying cannot help.
    Tls {
        /// What is wrong, naming the file or endpoint.
        message: String,
        /// Why, when something underneath said so.
        source: Option<Cause>,
    },

    /// Connecting to the broker failed.
    Transport(Cause),

    /// The connection broke under a call (the broker went away: an I/O,
    /// transport or HTTP/2 failure). The answer was lost; the request may
    /// or may not have been applied.
    ConnectionLost {
        /// The call, e.g. `produce`.
        operation: &'static str,
        /// The failure underneath.
        source: Cause,
    },

    /// No answer within the call's time limit.
    Timeout {
        /// The call, e.g. `fetch`.
        operation: &'static str,
        /// The time limit that passed.
        after: Duration,
    },

    /// A stream ended (the connection dropped, or the broker is shutting
    /// down) before this request was answered. The request may or may not
    /// have been applied.
    StreamClosed {
        /// The stream's call, e.g. `produce_stream`.
        operation: &'static str,
    },

    /// The client's circuit breaker is open: recent calls failed to reach the
    /// broker, so this one failed at once instead of waiting for a connect
    /// timeout. See [`crate::resilience::CircuitBreaker`].
    CircuitOpen {
        /// How long until the breaker lets a probe call through.
        retry_after: Duration,
    },

    /// The broker's answer broke the protocol (e.g. a produce response with
    /// the wrong number of results). A bug on one side; do not retry.
    Protocol(String),
}

/// What a broker's refusal says when it does not lead the partition
/// (docs/errors.md).
pub(crate) const NOT_LEADER_PHRASE: &str = "is not led by this broker";
/// What it says when it leads the partition but has lost touch with a
/// majority of the replicas: another broker may lead it by now.
pub(crate) const CUT_OFF_PHRASE: &str = "has heard from no majority";
/// What a broker of a cluster says to a group call when another broker
/// coordinates the consumer groups.
pub(crate) const NOT_COORDINATOR_PHRASE: &str = "does not coordinate consumer groups";

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status {
                operation,
                code,
                message,
                ..
            } => write!(f, "{operation} failed with {code}: {message}"),
            Self::Rejected {
                topic,
                partition,
                code,
                message,
                ..
            } => write!(
                f,
                "batch for {topic}/{partition} rejected with {code}: {message}"
            ),
            Self::Decode(_) => f.write_str("fetched records do not decode"),
            Self::Encode(_) => f.write_str("records do not encode into a batch"),
            Self::InvalidEndpoint { endpoint, .. } => {
                write!(f, "{endpoint} is not a valid broker address")
            }
            Self::Tls { message, .. } => write!(f, "invalid TLS settings: {message}"),
            Self::Transport(_) => f.write_str("cannot reach the broker"),
            Self::ConnectionLost { operation, .. } => {
                write!(f, "{operation} lost its connection to the broker")
            }
            Self::Timeout { operation, after } => {
                write!(f, "{operation} timed out after {after:?}")
            }
            Self::StreamClosed { operation } => {
                write!(f, "{operation} stream closed before the answer arrived")
            }
            Self::CircuitOpen { retry_after } => write!(
                f,
                "circuit breaker open: the broker was unreachable; retry after {retry_after:?}"
            ),
            Self::Protocol(why) => write!(f, "protocol violation: {why}"),
        }
    }
}

/// Written by hand rather than derived: a [`Cause`] is an `Arc`, and the
/// source must be the error inside it, not the `Arc`, so that callers can
/// downcast it (e.g. to `std::io::Error`).
impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Status { source, .. } | Self::Tls { source, .. } => {
                source.as_deref().map(|cause| cause as _)
            }
            Self::Decode(error) | Self::Encode(error) => Some(error),
            Self::InvalidEndpoint { source, .. }
            | Self::Transport(source)
            | Self::ConnectionLost { source, .. } => Some(&**source),
            Self::Rejected { .. }
            | Self::Timeout { .. }
            | Self::StreamClosed { .. }
            | Self::CircuitOpen { .. }
            | Self::Protocol(_) => None,
        }
    }
}

/// What kind of failure a [`ClientError`] is, for callers to match on.
/// More kinds may be added; match with a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The topic already exists.
    AlreadyExists,
    /// The topic, partition or group does not exist.
    NotFound,
    /// The request is malformed or breaks a limit (a field, a batch's size,
    /// a record larger than the producer's buffer, an invalid address).
    InvalidArgument,
    /// The offset is outside the partition's log.
    OutOfRange,
    /// The identity is superseded: an idempotent producer's epoch is older
    /// than the broker's (another instance took over), or a group member's
    /// generation or ownership is no longer current. Retrying cannot help.
    Fenced,
    /// An idempotent batch's sequence number does not follow the
    /// partition's last one: an earlier batch was lost.
    OutOfOrderSequence,
    /// The request does not fit the current state (e.g. deleting a group
    /// that still has members).
    FailedPrecondition,
    /// The broker aborted the call (e.g. the member was removed from its group).
    Aborted,
    /// No answer within the time limit (the client's or the broker's).
    TimedOut,
    /// The broker is unreachable, shutting down, or cannot serve the
    /// partition now; or the connection or stream broke under the call, or
    /// the circuit breaker is open.
    Unavailable,
    /// A limit of the broker was reached (e.g. a group's member limit), or
    /// it is overloaded.
    ResourceExhausted,
    /// Stored or fetched data is corrupt: a batch does not decode.
    DataLoss,
    /// The call was cancelled, or the producer is closed.
    Cancelled,
    /// The broker failed internally (e.g. a write or fsync failed).
    Internal,
    /// The broker's answer broke the protocol.
    Protocol,
    /// The broker does not know the call (it is older than the client).
    Unimplemented,
    /// The call was refused for lack of credentials or rights.
    PermissionDenied,
    /// Any other failure.
    Unknown,
}

/// A status code the broker answered with: the gRPC codes
/// (`google.rpc.Code`), as the client's own type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[allow(missing_docs, reason = "the gRPC codes, documented by google.rpc.Code")]
pub enum StatusCode {
    Ok,
    Cancelled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
}

impl StatusCode {
    /// The code with this number on the wire; an unknown number is `Unknown`.
    pub(crate) fn from_i32(code: i32) -> Self {
        Self::from_tonic(tonic::Code::from_i32(code))
    }

    /// tonic's code as the client's own (tonic stays out of the public API).
    pub(crate) fn from_tonic(code: tonic::Code) -> Self {
        use tonic::Code as C;
        match code {
            C::Ok => Self::Ok,
            C::Cancelled => Self::Cancelled,
            C::Unknown => Self::Unknown,
            C::InvalidArgument => Self::InvalidArgument,
            C::DeadlineExceeded => Self::DeadlineExceeded,
            C::NotFound => Self::NotFound,
            C::AlreadyExists => Self::AlreadyExists,
            C::PermissionDenied => Self::PermissionDenied,
            C::ResourceExhausted => Self::ResourceExhausted,
            C::FailedPrecondition => Self::FailedPrecondition,
            C::Aborted => Self::Aborted,
            C::OutOfRange => Self::OutOfRange,
            C::Unimplemented => Self::Unimplemented,
            C::Internal => Self::Internal,
            C::Unavailable => Self::Unavailable,
            C::DataLoss => Self::DataLoss,
            C::Unauthenticated => Self::Unauthenticated,
        }
    }
}

impl fmt::Display for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl ClientError {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Status { code, message, .. } | Self::Rejected { code, message, .. } => {
                kind_of(*code, message)
            }
            Self::Decode(_) => ErrorKind::DataLoss,
            Self::Encode(_) | Self::InvalidEndpoint { .. } | Self::Tls { .. } => {
                ErrorKind::InvalidArgument
            }
            Self::Transport(_)
            | Self::ConnectionLost { .. }
            | Self::StreamClosed { .. }
            | Self::CircuitOpen { .. } => ErrorKind::Unavailable,
            Self::Timeout { .. } => ErrorKind::TimedOut,
            Self::Protocol(_) => ErrorKind::Protocol,
        }
    }

    /// The status code, when the broker answered with one (or the client
    /// answered for it, e.g. a closed producer is `Cancelled`).
    pub fn code(&self) -> Option<StatusCode> {
        match self {
            Self::Status { code, .. } | Self::Rejected { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether the same call may succeed if tried again later: the broker was
    /// unreachable, overloaded, shutting down or slow. A produce retried after
    /// a timeout or a lost connection may append its records twice. An open
    /// circuit breaker is retryable (after its `retry_after`): nothing was sent.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Status { code, .. } | Self::Rejected { code, .. } => code_is_retryable(*code),
            Self::Transport(_)
            | Self::ConnectionLost { .. }
            | Self::Timeout { .. }
            | Self::StreamClosed { .. }
            | Self::CircuitOpen { .. } => true,
            Self::Decode(_)
            | Self::Encode(_)
            | Self::InvalidEndpoint { .. }
            | Self::Tls { .. }
            | Self::Protocol(_) => false,
        }
    }

    /// A `Status` error for `operation`, made by the client itself.
    pub(crate) fn new(
        operation: &'static str,
        code: StatusCode,
        message: impl Into<String>,
    ) -> Self {
        Self::Status {
            operation,
            code,
            message: message.into(),
            source: None,
        }
    }

    /// The error of `operation` from the gRPC status it ended with: a
    /// broken connection is told apart from the broker's answers.
    #[allow(
        clippy::needless_pass_by_value,
        reason = "takes the status the way `map_err` hands it over"
    )]
    pub(crate) fn status(operation: &'static str, status: tonic::Status) -> Self {
        if is_connection_failure(&status) {
            return Self::ConnectionLost {
                operation,
                source: connection_cause(&status),
            };
        }
        Self::new(
            operation,
            StatusCode::from_tonic(status.code()),
            status.message(),
        )
    }

    /// A `Status` error from the broker's in-band `Error` message (a
    /// produce stream's response refused as a whole).
    pub(crate) fn refused(operation: &'static str, error: brook_proto::Error) -> Self {
        Self::new(operation, StatusCode::from_i32(error.code), error.message)
    }

    /// The broker that leads the refused batch's partition, when the
    /// refusal named it.
    /// Whether the broker itself could not be reached (or did not answer),
    /// as opposed to a refusal it sent.
    pub(crate) fn is_broker_unreachable(&self) -> bool {
        matches!(
            self,
            Self::Transport(_)
                | Self::ConnectionLost { .. }
                | Self::Timeout { .. }
                | Self::CircuitOpen { .. }
        )
    }

    pub(crate) fn leader(&self) -> Option<&str> {
        match self {
            Self::Rejected { leader, .. } => leader.as_deref(),
            _ => None,
        }
    }

    /// Drops the leader a refusal named (one known to be unreachable).
    pub(crate) fn forget_leader(&mut self) {
        if let Self::Rejected { leader, .. } = self {
            *leader = None;
        }
    }

    /// Whether a broker refused a batch for not leading its partition (with
    /// or without naming the leader).
    pub(crate) fn is_not_leader(&self) -> bool {
        matches!(self, Self::Rejected { code: StatusCode::Unavailable, message, .. }
            if message.contains(NOT_LEADER_PHRASE))
    }

    /// Whether a broker refused a batch, or a read, because it is cut off
    /// from a majority of the partition's replicas.
    pub(crate) fn is_cut_off_leader(&self) -> bool {
        match self {
            Self::Rejected {
                code: StatusCode::Unavailable,
                message,
                ..
            }
            | Self::Status {
                code: StatusCode::Unavailable,
                message,
                ..
            } => message.contains(CUT_OFF_PHRASE),
            _ => false,
        }
    }

    /// Whether a broker of a cluster refused a group call because another
    /// broker coordinates the groups.
    pub(crate) fn is_not_coordinator(&self) -> bool {
        matches!(self, Self::Status { code: StatusCode::Unavailable, message, .. }
            if message.contains(NOT_COORDINATOR_PHRASE))
    }

    /// A `Rejected` error from the broker's in-band `Error` message.
    pub(crate) fn rejected(topic: String, partition: u32, error: brook_proto::Error) -> Self {
        Self::Rejected {
            topic,
            partition,
            code: StatusCode::from_i32(error.code),
            message: error.message,
            leader: error.leader.map(|leader| leader.address),
        }
    }

    /// The error of a connection that could not be made.
    /// A [`ClientError::Tls`].
    pub(crate) fn tls(message: impl Into<String>, source: Option<Cause>) -> Self {
        Self::Tls {
            message: message.into(),
            source,
        }
    }

    pub(crate) fn transport(error: tonic::transport::Error) -> Self {
        Self::Transport(Arc::new(error))
    }
}

/// The kind of a status. The broker answers both a fenced identity and a
/// sequence gap (and a group that is not empty) with `FAILED_PRECONDITION`;
/// its message tells them apart ("out of order sequence ...", "... needs an
/// empty group ..."; docs/errors.md promises these phrases).
fn kind_of(code: StatusCode, message: &str) -> ErrorKind {
    match code {
        StatusCode::Cancelled => ErrorKind::Cancelled,
        StatusCode::InvalidArgument => ErrorKind::InvalidArgument,
        StatusCode::DeadlineExceeded => ErrorKind::TimedOut,
        StatusCode::NotFound => ErrorKind::NotFound,
        StatusCode::AlreadyExists => ErrorKind::AlreadyExists,
        StatusCode::PermissionDenied | StatusCode::Unauthenticated => ErrorKind::PermissionDenied,
        StatusCode::ResourceExhausted => ErrorKind::ResourceExhausted,
        StatusCode::FailedPrecondition if message.contains("out of order sequence") => {
            ErrorKind::OutOfOrderSequence
        }
        StatusCode::FailedPrecondition
            if message.contains("needs an empty group")
                || message.contains("holds replicas")
                || message.contains("not in a cluster") =>
        {
            ErrorKind::FailedPrecondition
        }
        StatusCode::FailedPrecondition => ErrorKind::Fenced,
        StatusCode::Aborted => ErrorKind::Aborted,
        StatusCode::OutOfRange => ErrorKind::OutOfRange,
        StatusCode::Unimplemented => ErrorKind::Unimplemented,
        StatusCode::Internal => ErrorKind::Internal,
        StatusCode::Unavailable => ErrorKind::Unavailable,
        StatusCode::DataLoss => ErrorKind::DataLoss,
        StatusCode::Ok | StatusCode::Unknown => ErrorKind::Unknown,
    }
}

/// What broke a connection, as an `io::Error` (of the kind the OS reported,
/// when there was one) carrying the status's message, so that users can
/// look at it without knowing tonic.
fn connection_cause(status: &tonic::Status) -> Cause {
    let mut source = std::error::Error::source(status);
    let mut kind = std::io::ErrorKind::Other;
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            kind = io.kind();
            break;
        }
        source = cause.source();
    }
    Arc::new(std::io::Error::new(kind, cause_chain(status)))
}

/// The status's message and every cause under it, each once: the cause
/// that says what happened (e.g. the TLS alert a broker sent when it
/// refused a client certificate) is often several layers down, under
/// layers that only say "transport error".
fn cause_chain(status: &tonic::Status) -> String {
    let mut message = status.message().to_owned();
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.ends_with(&text) {
            message = format!("{message}: {text}");
        }
        source = cause.source();
    }
    message
}

/// Whether an `Unknown` or `Cancelled` status stands for a broken
/// connection (the broker went away mid-call: an I/O, transport or HTTP/2
/// failure underneath; tonic reports a connection closed under a call as
/// `CANCELLED`) rather than for an answer of the broker. The answer was
/// lost; the request may or may not have been applied.
fn is_connection_failure(status: &tonic::Status) -> bool {
    use tonic::Code;
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
fn code_is_retryable(code: StatusCode) -> bool {
    matches!(
        code,
        StatusCode::Unavailable
            | StatusCode::DeadlineExceeded
            | StatusCode::ResourceExhausted
            | StatusCode::Aborted
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
        assert_eq!(broken.code(), tonic::Code::Unknown);
        let lost = ClientError::status("produce", broken);
        assert!(lost.is_retryable());
        assert_eq!(lost.kind(), ErrorKind::Unavailable);
        // The I/O error is kept in the chain of causes.
        let mut source = std::error::Error::source(&lost);
        let mut found = false;
        while let Some(cause) = source {
            found |= cause.is::<std::io::Error>();
            source = cause.source();
        }
        assert!(found, "{lost:?}");
        let h2 = tonic::Status::unknown("h2 protocol error: error reading a body from connection");
        assert!(ClientError::status("produce", h2).is_retryable());
        let answer = tonic::Status::unknown("the handler failed");
        assert!(!ClientError::status("produce", answer).is_retryable());
    }

    #[test]
    fn codes_classify_as_documented() {
        for (code, kind) in [
            (tonic::Code::Unavailable, ErrorKind::Unavailable),
            (tonic::Code::DeadlineExceeded, ErrorKind::TimedOut),
            (tonic::Code::ResourceExhausted, ErrorKind::ResourceExhausted),
            (tonic::Code::Aborted, ErrorKind::Aborted),
        ] {
            let e = ClientError::status("produce", tonic::Status::new(code, "x"));
            assert!(e.is_retryable(), "{code:?}");
            assert_eq!(e.code(), Some(StatusCode::from_tonic(code)));
            assert_eq!(e.kind(), kind);
        }
        for (code, kind) in [
            (tonic::Code::InvalidArgument, ErrorKind::InvalidArgument),
            (tonic::Code::NotFound, ErrorKind::NotFound),
            (tonic::Code::AlreadyExists, ErrorKind::AlreadyExists),
            (tonic::Code::OutOfRange, ErrorKind::OutOfRange),
            (tonic::Code::DataLoss, ErrorKind::DataLoss),
            (tonic::Code::Internal, ErrorKind::Internal),
        ] {
            let e = ClientError::status("produce", tonic::Status::new(code, "x"));
            assert!(!e.is_retryable(), "{code:?}");
            assert_eq!(e.kind(), kind);
        }
    }

    #[test]
    fn failed_preconditions_are_told_apart_by_the_message() {
        let refusal = |message: &str| {
            ClientError::status(
                "produce",
                tonic::Status::failed_precondition(message.to_owned()),
            )
            .kind()
        };
        assert_eq!(
            refusal(
                "batch for topic `t` partition 0 refused: out of order sequence for producer_id 1: expected base_sequence 0, got 5"
            ),
            ErrorKind::OutOfOrderSequence
        );
        assert_eq!(
            refusal(
                "batch for topic `t` partition 0 refused: producer_id 1 epoch 0 is fenced: a newer instance holds epoch 1"
            ),
            ErrorKind::Fenced
        );
        assert_eq!(
            refusal("commit to group `g` refused for member `m`: stale generation 3, current 4"),
            ErrorKind::Fenced
        );
        assert_eq!(
            refusal(
                "group `g` has 2 members; delete needs an empty group (stop its consumers first)"
            ),
            ErrorKind::FailedPrecondition
        );
    }

    #[test]
    fn rejected_keeps_code_and_message() {
        let e = ClientError::rejected(
            "t".into(),
            2,
            brook_proto::Error {
                code: tonic::Code::InvalidArgument as i32,
                message: "crc mismatch".into(),
                leader: None,
            },
        );
        assert_eq!(e.code(), Some(StatusCode::InvalidArgument));
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(!e.is_retryable());
        assert_eq!(
            e.to_string(),
            "batch for t/2 rejected with InvalidArgument: crc mismatch"
        );
        let clone = e.clone();
        assert_eq!(clone.to_string(), e.to_string());
    }

    #[test]
    fn local_failures_classify() {
        let timeout = ClientError::Timeout {
            operation: "fetch",
            after: Duration::from_secs(1),
        };
        assert!(timeout.is_retryable());
        assert_eq!(timeout.code(), None);
        assert_eq!(timeout.kind(), ErrorKind::TimedOut);
        assert!(!ClientError::Decode(BatchError::EmptyBatch).is_retryable());
        assert_eq!(
            ClientError::Decode(BatchError::EmptyBatch).kind(),
            ErrorKind::DataLoss
        );
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
        assert_eq!(open.kind(), ErrorKind::Unavailable);
        assert_eq!(
            open.to_string(),
            "circuit breaker open: the broker was unreachable; retry after 300ms"
        );
    }

    #[test]
    fn a_lost_connection_is_retryable_and_its_cause_is_an_io_error() {
        let mut status = tonic::Status::unknown("transport error");
        status.set_source(Arc::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )));
        let error = ClientError::status("produce", status);
        assert!(
            matches!(error, ClientError::ConnectionLost { .. }),
            "{error:?}"
        );
        assert!(error.is_retryable());
        let cause = std::error::Error::source(&error)
            .and_then(|c| c.downcast_ref::<std::io::Error>())
            .map(std::io::Error::kind);
        assert_eq!(cause, Some(std::io::ErrorKind::ConnectionReset));
    }
}

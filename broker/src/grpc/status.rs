//! The one mapping from broker errors to gRPC statuses.

use tonic::{Code, Status};

use brook_engine::broker::BrokerError;
use brook_storage::LogError;

pub fn code(error: &BrokerError) -> Code {
    match error {
        BrokerError::TopicNotFound(_)
        | BrokerError::PartitionNotFound { .. }
        | BrokerError::GroupNotFound(_) => Code::NotFound,
        BrokerError::TopicExists(_) => Code::AlreadyExists,
        BrokerError::InvalidArgument { .. } | BrokerError::InvalidBatch { .. } => {
            Code::InvalidArgument
        }
        BrokerError::OffsetOutOfRange { .. } => Code::OutOfRange,
        BrokerError::ProducerFenced { .. }
        | BrokerError::Sequence { .. }
        | BrokerError::CommitFenced { .. }
        | BrokerError::GroupNotEmpty { .. } => Code::FailedPrecondition,
        BrokerError::GroupFull { .. } => Code::ResourceExhausted,
        BrokerError::MemberRemoved { .. } => Code::Aborted,
        BrokerError::JoinTimeout { .. } => Code::DeadlineExceeded,
        BrokerError::Log { source, .. } => match source {
            LogError::Poisoned { .. } => Code::Unavailable,
            LogError::OffsetOutOfRange { .. } => Code::OutOfRange,
            LogError::Io { .. } | LogError::Corrupt { .. } => Code::Internal,
        },
        BrokerError::ShuttingDown => Code::Unavailable,
        BrokerError::Meta(_) | BrokerError::Io { .. } | BrokerError::Internal(_) => Code::Internal,
    }
}

/// A status whose message is the error and its causes.
pub fn to_status(error: &BrokerError) -> Status {
    let code = code(error);
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    if code == Code::Internal {
        tracing::error!(error = %message, "request failed");
    } else {
        tracing::debug!(error = %message, "request rejected");
    }
    Status::new(code, message)
}

/// For `map_err`: the status of an owned error.
#[allow(clippy::needless_pass_by_value)]
pub fn status(error: BrokerError) -> Status {
    to_status(&error)
}

/// The `Error` message of a streamed response or a per-batch result.
pub fn to_proto_error(error: &BrokerError) -> brook_proto::Error {
    let status = to_status(error);
    brook_proto::Error {
        code: status.code() as i32,
        message: status.message().to_owned(),
    }
}

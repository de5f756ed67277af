//! The one mapping from the engine's errors to gRPC statuses
//! (`docs/errors.md` is its table for clients). Each error family maps its
//! own variants; the parts the families share map the same way everywhere.
//!
//! A status message repeats names from the request, so it is cut: a quoted
//! name to [`NAME_CHARS_MAX`] characters, the whole message to
//! [`MESSAGE_BYTES_MAX`] bytes. Without that a long name could push the
//! status past the client's header limit, and the client would see
//! RESOURCE_EXHAUSTED or INTERNAL instead of the real code.

use brook_engine::{
    AdminError, FetchError, GroupError, Invalid, NotFound, OpenError, PartitionError, ProduceError,
};
use brook_engine::{Leader, QuotaError};
use brook_storage::LogError;
use tonic::{Code, Status};

/// Longest name (text between backticks) a status message repeats whole.
pub const NAME_CHARS_MAX: usize = 128;
/// Longest status message, in bytes.
pub const MESSAGE_BYTES_MAX: usize = 1024;

/// An engine error as a gRPC status.
pub trait ToStatus: std::error::Error {
    fn code(&self) -> Code;

    /// The broker that leads the partition refused here for not being led
    /// by this broker, when known.
    fn leader(&self) -> Option<&Leader> {
        None
    }
}

/// Metadata keys that name the leader of a partition a call was refused
/// for (see `brook.v1.Error.leader`).
pub const LEADER_ID_KEY: &str = "brook-leader-id";
pub const LEADER_ADDRESS_KEY: &str = "brook-leader-address";

impl ToStatus for NotFound {
    fn code(&self) -> Code {
        Code::NotFound
    }
}

impl ToStatus for Invalid {
    fn code(&self) -> Code {
        Code::InvalidArgument
    }
}

impl ToStatus for PartitionError {
    fn code(&self) -> Code {
        match self {
            // Poisoned or closed: until the broker restarts; another
            // replica or a restart helps. In a cluster: another broker
            // leads it, or its replicas are starting; a retry (there)
            // succeeds.
            Self::Poisoned { .. }
            | Self::Closed { .. }
            | Self::NotLeader { .. }
            | Self::Unavailable { .. }
            | Self::NotReadable { .. } => Code::Unavailable,
            Self::Deleted { .. } => Code::NotFound,
            // Acknowledged records are missing: as with a corrupt batch,
            // retrying does not help; an operator must decide.
            Self::Damaged { .. } => Code::DataLoss,
            Self::OutOfRange(_) => Code::OutOfRange,
            // Retryable once space or descriptors are back; the message
            // names which.
            Self::ResourceExhausted { .. } => Code::ResourceExhausted,
            Self::Storage { source, .. } => match **source {
                LogError::Corrupt { .. } => Code::DataLoss,
                _ => Code::Internal,
            },
            _ => Code::Internal,
        }
    }

    fn leader(&self) -> Option<&Leader> {
        match self {
            Self::NotLeader { leader, .. } => leader.as_ref(),
            _ => None,
        }
    }
}

impl ToStatus for ProduceError {
    fn code(&self) -> Code {
        match self {
            Self::NotFound(e) => e.code(),
            Self::Invalid(e) => e.code(),
            Self::InvalidBatch { .. } => Code::InvalidArgument,
            Self::ProducerFenced { .. } | Self::Sequence { .. } => Code::FailedPrecondition,
            Self::ProducerIdHeld { .. } | Self::Denied(_) => Code::PermissionDenied,
            Self::Partition(e) => e.code(),
            // Retryable once space is freed; nothing was staged.
            Self::Meta(e) if e.is_out_of_space() => Code::ResourceExhausted,
            Self::ShuttingDown => Code::Unavailable,
            _ => Code::Internal,
        }
    }

    fn leader(&self) -> Option<&Leader> {
        match self {
            Self::Partition(e) => e.leader(),
            _ => None,
        }
    }
}

impl ToStatus for FetchError {
    fn code(&self) -> Code {
        match self {
            Self::NotFound(e) => e.code(),
            Self::Invalid(e) => e.code(),
            Self::Partition(e) => e.code(),
            Self::ShuttingDown => Code::Unavailable,
            _ => Code::Internal,
        }
    }

    fn leader(&self) -> Option<&Leader> {
        match self {
            Self::Partition(e) => e.leader(),
            _ => None,
        }
    }
}

impl ToStatus for AdminError {
    fn code(&self) -> Code {
        match self {
            Self::NotFound(e) => e.code(),
            Self::Invalid(e) => e.code(),
            Self::TopicExists(_) => Code::AlreadyExists,
            Self::Partition(e) => e.code(),
            // Retryable once space is freed; nothing was staged.
            Self::Meta(e) if e.is_out_of_space() => Code::ResourceExhausted,
            Self::ShuttingDown => Code::Unavailable,
            _ => Code::Internal,
        }
    }
}

impl ToStatus for GroupError {
    fn code(&self) -> Code {
        match self {
            Self::NotFound(e) => e.code(),
            Self::Invalid(e) => e.code(),
            Self::Partition(e) => e.code(),
            // Retryable once space is freed; nothing was staged.
            Self::Meta(e) if e.is_out_of_space() => Code::ResourceExhausted,
            Self::NotEmpty { .. } | Self::CommitFenced { .. } => Code::FailedPrecondition,
            Self::Full { .. } => Code::ResourceExhausted,
            Self::MemberRemoved { .. } => Code::Aborted,
            Self::JoinTimeout { .. } => Code::DeadlineExceeded,
            Self::ShuttingDown | Self::Contended(_) | Self::NotCoordinator(_) => Code::Unavailable,
            _ => Code::Internal,
        }
    }
}

impl ToStatus for OpenError {
    fn code(&self) -> Code {
        match self {
            Self::Config(e) => e.code(),
            Self::ShuttingDown => Code::Unavailable,
            _ => Code::Internal,
        }
    }
}

impl ToStatus for QuotaError {
    fn code(&self) -> Code {
        match self {
            Self::Invalid(e) => e.code(),
            Self::NotFound(_) => Code::NotFound,
            // Retryable once a quota is removed, or space is freed.
            Self::TooMany { .. } => Code::ResourceExhausted,
            Self::Meta(e) if e.is_out_of_space() => Code::ResourceExhausted,
            Self::ShuttingDown => Code::Unavailable,
            _ => Code::Internal,
        }
    }
}

/// A status whose message is the error and its causes.
pub fn to_status(error: &(impl ToStatus + ?Sized)) -> Status {
    let code = error.code();
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    let message = bounded(&message);
    if matches!(code, Code::Internal | Code::DataLoss) {
        tracing::error!(error = %message, "request failed");
    } else {
        tracing::debug!(error = %message, "request rejected");
    }
    let mut status = Status::new(code, message);
    if let Some(leader) = error.leader() {
        let metadata = status.metadata_mut();
        metadata.insert(LEADER_ID_KEY, leader.id.into());
        if let Ok(address) = leader.address.parse() {
            metadata.insert(LEADER_ADDRESS_KEY, address);
        }
    }
    status
}

/// `message` with each name between backticks cut to `NAME_CHARS_MAX`
/// characters and the whole cut to `MESSAGE_BYTES_MAX` bytes, on character
/// boundaries; a cut is marked with `…`.
pub fn bounded(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(MESSAGE_BYTES_MAX));
    for (i, part) in message.split('`').enumerate() {
        if i > 0 {
            out.push('`');
        }
        // Odd parts are between backticks.
        if i % 2 == 1 && part.chars().count() > NAME_CHARS_MAX {
            out.extend(part.chars().take(NAME_CHARS_MAX));
            out.push('…');
        } else {
            out.push_str(part);
        }
    }
    if out.len() > MESSAGE_BYTES_MAX {
        let mut end = MESSAGE_BYTES_MAX - '…'.len_utf8();
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push('…');
    }
    out
}

/// For `map_err`: the status of an owned error.
#[allow(clippy::needless_pass_by_value)]
pub fn status(error: impl ToStatus) -> Status {
    to_status(&error)
}

/// The status of a change the cluster's metadata group refused, or could
/// not take now (UNAVAILABLE: a retry may succeed).
pub fn cluster_status(error: crate::replicas::ClusterAdminError) -> Status {
    use crate::replicas::ClusterAdminError;
    match error {
        ClusterAdminError::Admin(e) => status(e),
        ClusterAdminError::Quota(e) => status(e),
        e @ ClusterAdminError::NoSuchBroker(_) => Status::not_found(e.to_string()),
        e @ ClusterAdminError::BrokerInUse { .. } => Status::failed_precondition(e.to_string()),
        e @ ClusterAdminError::NotMade(_) => Status::aborted(e.to_string()),
        other => Status::unavailable(other.to_string()),
    }
}

/// The `Error` message of a streamed response or a per-batch result.
pub fn to_proto_error(error: &impl ToStatus) -> brook_proto::Error {
    let status = to_status(error);
    brook_proto::Error {
        code: status.code() as i32,
        message: status.message().to_owned(),
        leader: error.leader().map(|leader| brook_proto::LeaderHint {
            id: leader.id,
            address: leader.address.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn partition_error(source: LogError) -> PartitionError {
        PartitionError::from_log("t", 0, source)
    }

    #[test]
    fn poisoned_deleted_and_closed_are_told_apart() {
        let poisoned = partition_error(LogError::Poisoned {
            reason: "fsync failed".to_owned(),
        });
        assert_eq!(poisoned.code(), Code::Unavailable);
        assert_eq!(partition_error(LogError::Deleted).code(), Code::NotFound);
        let closed = PartitionError::Closed {
            topic: "t".to_owned(),
            partition: 0,
        };
        assert_eq!(closed.code(), Code::Unavailable);
        assert_ne!(poisoned.to_string(), closed.to_string());
    }

    #[test]
    fn storage_failures_are_internal_and_corruption_is_data_loss() {
        let io = partition_error(LogError::io(
            "fsync",
            std::path::Path::new("/d/0.log"),
            std::io::Error::other("disk gone"),
        ));
        assert_eq!(io.code(), Code::Internal);
        let status = to_status(&ProduceError::from(io));
        assert_eq!(status.code(), Code::Internal);
        assert!(
            status.message().contains("disk gone"),
            "{}",
            status.message()
        );
        assert!(
            !status.message().contains("poisoned"),
            "{}",
            status.message()
        );
        let corrupt = PartitionError::Storage {
            topic: "t".to_owned(),
            partition: 0,
            source: Arc::new(LogError::corrupt(
                std::path::Path::new("/d/0.log"),
                12,
                "bad crc".to_owned(),
            )),
        };
        assert_eq!(FetchError::from(corrupt).code(), Code::DataLoss);
        let damaged = partition_error(LogError::Damaged {
            damage: brook_storage::Damage::MissingDirectory,
        });
        assert_eq!(ProduceError::from(damaged).code(), Code::DataLoss);
    }

    #[test]
    fn a_resource_shortage_is_resource_exhausted_and_names_the_resource() {
        // Linux's ENOSPC and EMFILE.
        for (errno, phrase) in [
            (28, "no space left on the data volume"),
            (24, "too many open files"),
        ] {
            let error = ProduceError::from(partition_error(LogError::io_or_resource(
                "append",
                std::path::Path::new("/d/0.log"),
                std::io::Error::from_raw_os_error(errno),
            )));
            let status = to_status(&error);
            assert_eq!(status.code(), Code::ResourceExhausted);
            assert!(status.message().contains(phrase), "{}", status.message());
            assert!(
                !status.message().contains("poisoned"),
                "{}",
                status.message()
            );
        }
    }

    #[test]
    fn a_poisoned_partition_is_named_once() {
        let error = ProduceError::from(partition_error(LogError::Poisoned {
            reason: "fsync of /d/0.log failed".to_owned(),
        }));
        let message = to_status(&error).message().to_owned();
        assert_eq!(message.matches("poisoned").count(), 1, "{message}");
        assert!(message.contains("fsync of /d/0.log failed"), "{message}");
    }

    #[test]
    fn long_names_are_cut_and_the_message_is_bounded() {
        let name = "é".repeat(10_000);
        let status = to_status(&NotFound::Topic(name.clone()));
        assert_eq!(status.code(), Code::NotFound);
        let message = status.message();
        assert!(message.len() <= MESSAGE_BYTES_MAX, "{}", message.len());
        assert!(message.ends_with("does not exist"), "{message}");
        assert!(message.contains(&"é".repeat(NAME_CHARS_MAX)), "{message}");

        let long = format!("{} `a` {}", "ü".repeat(700), "x".repeat(700));
        let cut = bounded(&long);
        assert!(
            cut.len() <= MESSAGE_BYTES_MAX && cut.ends_with('…'),
            "{cut}"
        );
        assert_eq!(
            bounded("topic `t` does not exist"),
            "topic `t` does not exist"
        );
    }

    /// A broker that does not lead a partition says so in the phrase
    /// docs/errors.md gives, and names the leader where clients read it.
    #[test]
    fn not_leader_names_the_leader_in_band_and_in_metadata() {
        let leader = brook_engine::Leader {
            id: 3,
            address: "10.0.0.3:9420".to_owned(),
        };
        let refused = ProduceError::Partition(PartitionError::NotLeader {
            topic: "t".to_owned(),
            partition: 0,
            leader: Some(leader.clone()),
        });
        let status = to_status(&refused);
        assert_eq!(status.code(), Code::Unavailable);
        assert!(
            status.message().contains("is not led by this broker"),
            "{status:?}"
        );
        assert_eq!(
            status
                .metadata()
                .get(LEADER_ADDRESS_KEY)
                .map(|v| v.to_str().ok()),
            Some(Some("10.0.0.3:9420"))
        );
        assert_eq!(
            status
                .metadata()
                .get(LEADER_ID_KEY)
                .map(|v| v.to_str().ok()),
            Some(Some("3"))
        );
        let in_band = to_proto_error(&refused);
        assert_eq!(in_band.code, Code::Unavailable as i32);
        assert_eq!(
            in_band.leader,
            Some(brook_proto::LeaderHint {
                id: 3,
                address: leader.address,
            })
        );
        let unknown = PartitionError::NotLeader {
            topic: "t".to_owned(),
            partition: 0,
            leader: None,
        };
        assert!(to_proto_error(&unknown).leader.is_none());
        assert!(
            to_status(&unknown)
                .message()
                .contains("is not led by this broker")
        );
    }

    /// docs/errors.md promises these phrases to clients, which tell the
    /// three FAILED_PRECONDITION situations apart by them.
    #[test]
    fn failed_preconditions_keep_their_documented_phrases() {
        let gap = ProduceError::Sequence {
            topic: "t".to_owned(),
            partition: 0,
            source: brook_storage::SequenceError::OutOfOrder {
                producer_id: 1,
                expected: 3,
                got: 5,
            },
        };
        let not_empty = GroupError::NotEmpty {
            group: "g".to_owned(),
            members: 2,
            action: "DeleteGroup",
        };
        let fenced = ProduceError::Sequence {
            topic: "t".to_owned(),
            partition: 0,
            source: brook_storage::SequenceError::StaleEpoch {
                producer_id: 1,
                epoch: 0,
                current: 1,
            },
        };
        for (error, phrase) in [
            (to_status(&gap), Some("out of order sequence")),
            (to_status(&not_empty), Some("needs an empty group")),
            (to_status(&fenced), None),
        ] {
            assert_eq!(error.code(), Code::FailedPrecondition);
            let message = error.message();
            match phrase {
                Some(phrase) => assert!(message.contains(phrase), "{message}"),
                None => assert!(
                    !message.contains("out of order sequence")
                        && !message.contains("needs an empty group"),
                    "{message}"
                ),
            }
        }
    }
}

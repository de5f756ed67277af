//! Errors of the broker's operations, each saying which request field or
//! which topic and partition it is about. `grpc/status.rs` maps them to
//! gRPC status codes.

use brook_record::BatchError;

use crate::meta::MetaError;
use brook_storage::LogError;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("topic `{0}` does not exist")]
    TopicNotFound(String),
    #[error("topic `{0}` already exists")]
    TopicExists(String),
    #[error(
        "partition {partition} of topic `{topic}` does not exist (the topic has {partitions} partitions)"
    )]
    PartitionNotFound {
        topic: String,
        partition: u32,
        partitions: u32,
    },
    #[error("{field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    #[error("batch for topic `{topic}` partition {partition} rejected: {source}")]
    InvalidBatch {
        topic: String,
        partition: u32,
        #[source]
        source: BatchError,
    },
    #[error(
        "offset {offset} is out of range for topic `{topic}` partition {partition}: the log holds offsets {start_offset} (start) to {end_offset} (end)"
    )]
    OffsetOutOfRange {
        topic: String,
        partition: u32,
        offset: i64,
        start_offset: i64,
        end_offset: i64,
    },
    #[error("batch for topic `{topic}` partition {partition} refused: {reason}")]
    ProducerFenced {
        topic: String,
        partition: u32,
        reason: String,
    },
    #[error("batch for topic `{topic}` partition {partition} refused: {source}")]
    Sequence {
        topic: String,
        partition: u32,
        #[source]
        source: brook_storage::SequenceError,
    },
    #[error("topic `{topic}` partition {partition}: {source}")]
    Log {
        topic: String,
        partition: u32,
        #[source]
        source: LogError,
    },
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("group `{0}` does not exist (it has no members and no committed offsets)")]
    GroupNotFound(String),
    #[error(
        "group `{group}` has {members} members; {action} needs an empty group (stop its consumers first)"
    )]
    GroupNotEmpty {
        group: String,
        members: usize,
        action: &'static str,
    },
    #[error("group `{group}` already has {members_max} members, the limit (groups.members_max)")]
    GroupFull { group: String, members_max: usize },
    #[error("commit to group `{group}` refused for member `{member_id}`: {reason}")]
    CommitFenced {
        group: String,
        member_id: String,
        reason: String,
    },
    #[error("member `{member_id}` was removed from group `{group}`: {reason}; join again")]
    MemberRemoved {
        group: String,
        member_id: String,
        reason: String,
    },
    #[error("no `join` within {waited_ms} ms of opening the group session")]
    JoinTimeout { waited_ms: u64 },
    #[error("the broker is shutting down")]
    ShuttingDown,
    #[error("internal error: {0}")]
    Internal(String),
}

impl BrokerError {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }

    /// Wraps a log error of one partition, lifting out-of-range offsets so
    /// they name the topic.
    pub fn from_log(topic: &str, partition: u32, source: LogError) -> Self {
        match source {
            LogError::OffsetOutOfRange {
                offset,
                start_offset,
                end_offset,
            } => Self::OffsetOutOfRange {
                topic: topic.to_owned(),
                partition,
                offset,
                start_offset,
                end_offset,
            },
            source => Self::Log {
                topic: topic.to_owned(),
                partition,
                source,
            },
        }
    }
}

impl From<tokio::task::JoinError> for BrokerError {
    fn from(e: tokio::task::JoinError) -> Self {
        Self::Internal(format!("blocking task failed: {e}"))
    }
}

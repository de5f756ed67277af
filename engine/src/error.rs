//! Errors of the broker's operations, one type per family (opening,
//! produce, fetch, topic administration, groups, quotas), each saying
//! which request field, topic, partition or group it is about. The parts every family
//! shares (something not found, a field out of its limits, a partition that
//! refuses) are types of their own, so that a variant means one thing in
//! every family. The server maps each to a gRPC status in one place.

use std::sync::Arc;

use brook_record::BatchError;
use brook_storage::{Damage, LogError, Resource, SequenceError};

use crate::meta::MetaError;
use crate::quota::QuotaTarget;

/// A request names something that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotFound {
    #[error("topic `{0}` does not exist")]
    Topic(String),
    #[error(
        "partition {partition} of topic `{topic}` does not exist (the topic has {partitions} partitions)"
    )]
    Partition {
        topic: String,
        partition: u32,
        partitions: u32,
    },
    #[error("group `{0}` does not exist (it has no members and no committed offsets)")]
    Group(String),
}

/// A request field (or a setting) breaks a rule or a limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
#[non_exhaustive]
pub struct Invalid {
    /// The field as the request (or the configuration) names it.
    pub field: &'static str,
    pub reason: String,
}

impl Invalid {
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

/// An offset outside what a partition holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "offset {offset} is out of range for topic `{topic}` partition {partition}: the log holds offsets {start_offset} (start) to {end_offset} (end)"
)]
#[non_exhaustive]
pub struct OutOfRange {
    pub topic: String,
    pub partition: u32,
    pub offset: i64,
    pub start_offset: i64,
    pub end_offset: i64,
}

/// A partition that refused an operation, or whose log failed it. The
/// variants are different situations for a client: a poisoned partition
/// stays unavailable until the broker restarts, a deleted one is gone, a
/// closed one is on a broker that is stopping, one short of a resource
/// (disk space, file descriptors) takes writes again once it is back, and a
/// storage failure is the broker's own fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PartitionError {
    #[error(
        "topic `{topic}` partition {partition} is poisoned: it refuses writes until the broker restarts, after an earlier failure: {reason}"
    )]
    Poisoned {
        topic: String,
        partition: u32,
        reason: String,
    },
    #[error("topic `{topic}` partition {partition} was deleted")]
    Deleted { topic: String, partition: u32 },
    /// Acknowledged data is missing: the partition refuses reads and
    /// writes until an operator accepts the loss (`accept_data_loss`).
    #[error(
        "topic `{topic}` partition {partition} is damaged: {damage}; it refuses reads and writes until an operator accepts the loss (setting `accept_data_loss`, `brook serve --accept-data-loss {topic}/{partition}`)"
    )]
    Damaged {
        topic: String,
        partition: u32,
        damage: Damage,
    },
    #[error("topic `{topic}` partition {partition} is closed: the broker is stopping")]
    Closed { topic: String, partition: u32 },
    /// In a cluster: this broker does not lead the partition (or holds no
    /// replica of it). Nothing was appended; `leader` takes it when known.
    #[error("topic `{topic}` partition {partition} is not led by this broker{}", leader_hint(.leader.as_ref()))]
    NotLeader {
        topic: String,
        partition: u32,
        leader: Option<crate::partition::Leader>,
    },
    /// In a cluster: the partition's replicas cannot take writes now
    /// (starting, or stopped); a retry succeeds once they can.
    #[error("topic `{topic}` partition {partition} cannot take writes now: {reason}")]
    Unavailable {
        topic: String,
        partition: u32,
        reason: String,
    },
    /// In a cluster: this broker's replica may not serve reads now (a
    /// leader cut off from the other replicas); another broker may.
    #[error("topic `{topic}` partition {partition} cannot be read here now: {reason}")]
    NotReadable {
        topic: String,
        partition: u32,
        reason: String,
    },
    #[error(transparent)]
    OutOfRange(#[from] OutOfRange),
    /// The operation failed for want of `resource` and left nothing behind;
    /// the partition is not poisoned, and a retry succeeds once the
    /// resource is back (`LogError::ResourceExhausted`).
    #[error("topic `{topic}` partition {partition} cannot write now: {source}")]
    ResourceExhausted {
        topic: String,
        partition: u32,
        resource: Resource,
        #[source]
        source: Arc<LogError>,
    },
    /// A read or write of the log failed (`LogError::Io`) or found damaged
    /// data (`LogError::Corrupt`). Shared, because one failed fsync fails
    /// every batch that waited for it.
    #[error("topic `{topic}` partition {partition}: {source}")]
    Storage {
        topic: String,
        partition: u32,
        #[source]
        source: Arc<LogError>,
    },
}

fn leader_hint(leader: Option<&crate::partition::Leader>) -> String {
    match leader {
        Some(leader) => format!(": {leader} leads it"),
        None => ": no leader is known now (an election may be under way); retry".to_owned(),
    }
}

impl PartitionError {
    /// Names the partition a log error came from, keeping each kind apart.
    pub fn from_log(topic: &str, partition: u32, source: LogError) -> Self {
        Self::from_shared_log(topic, partition, Arc::new(source))
    }

    /// `from_log` for an error several requests share.
    pub fn from_shared_log(topic: &str, partition: u32, source: Arc<LogError>) -> Self {
        let topic = topic.to_owned();
        match &*source {
            LogError::Poisoned { reason } => Self::Poisoned {
                topic,
                partition,
                reason: reason.clone(),
            },
            LogError::Deleted => Self::Deleted { topic, partition },
            LogError::Damaged { damage } => Self::Damaged {
                topic,
                partition,
                damage: damage.clone(),
            },
            &LogError::OffsetOutOfRange {
                offset,
                start_offset,
                end_offset,
            } => Self::OutOfRange(OutOfRange {
                topic,
                partition,
                offset,
                start_offset,
                end_offset,
            }),
            &LogError::ResourceExhausted { resource, .. } => Self::ResourceExhausted {
                topic,
                partition,
                resource,
                source,
            },
            LogError::Io { .. } | LogError::Corrupt { .. } => Self::Storage {
                topic,
                partition,
                source,
            },
        }
    }
}

/// Why `Broker::open` (or a configuration check) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error("invalid configuration: {0}")]
    Config(#[from] Invalid),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Partition(#[from] PartitionError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the runtime stopped while the broker was opening")]
    ShuttingDown,
}

/// Why a produce (or `InitProducerId`) was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProduceError {
    #[error(transparent)]
    NotFound(#[from] NotFound),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("batch for topic `{topic}` partition {partition} rejected: {source}")]
    InvalidBatch {
        topic: String,
        partition: u32,
        #[source]
        source: BatchError,
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
        source: SequenceError,
    },
    #[error(transparent)]
    Partition(#[from] PartitionError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// Taking over a producer id (bumping its epoch) is for the
    /// principal it was handed out to.
    #[error(
        "principal `{principal}` may not take over producer_id {producer_id}: it was handed out to another principal (ask for a new id)"
    )]
    ProducerIdHeld { producer_id: i64, principal: String },
    /// The ACLs do not let the principal produce to a topic of the request.
    #[error(transparent)]
    Denied(#[from] crate::acl::Denied),
    #[error("the broker is shutting down")]
    ShuttingDown,
}

/// Why a fetch, a subscription or an offset lookup failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    #[error(transparent)]
    NotFound(#[from] NotFound),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Partition(#[from] PartitionError),
    #[error("the broker is shutting down")]
    ShuttingDown,
}

/// Why a topic could not be created, changed, described or deleted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    #[error(transparent)]
    NotFound(#[from] NotFound),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("topic `{0}` already exists")]
    TopicExists(String),
    #[error(transparent)]
    Partition(#[from] PartitionError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the broker is shutting down")]
    ShuttingDown,
}

/// Why a quarantined topic directory could not be brought back
/// (`recover_quarantined_topic`). Each refusal leaves the directory where
/// it was and the metadata unchanged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecoverError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("the metadata already names a topic `{0}`; recover under another name")]
    TopicExists(String),
    #[error("{} already exists; recover under another name", .0.display())]
    DirectoryExists(std::path::PathBuf),
    #[error("{} is not a broker data directory: it has no meta/", .0.display())]
    NotADataDir(std::path::PathBuf),
    /// The directory does not look like a topic's: its partitions must be
    /// directories `0` to `n - 1`, nothing else.
    #[error("{} is not a topic directory: {reason}", path.display())]
    Layout {
        path: std::path::PathBuf,
        reason: String,
    },
    /// A partition's log cannot be opened: the broker would refuse to
    /// start with it too.
    #[error(transparent)]
    Partition(#[from] PartitionError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// Why a client quota could not be set or removed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuotaError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("no quota is set for {0}")]
    NotFound(QuotaTarget),
    /// Every quota the broker keeps is taken.
    #[error("{max} quotas are set, the most the broker keeps; remove one first")]
    TooMany { max: usize },
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("the broker is shutting down")]
    ShuttingDown,
}

/// Why a group operation (join, commit, offsets, administration) failed,
/// or why a member's session ended.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    #[error(transparent)]
    NotFound(#[from] NotFound),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Partition(#[from] PartitionError),
    #[error(
        "group `{group}` has {members} members; {action} needs an empty group (stop its consumers first)"
    )]
    NotEmpty {
        group: String,
        members: usize,
        action: &'static str,
    },
    #[error("group `{group}` already has {members_max} members, the limit (groups.members_max)")]
    Full { group: String, members_max: usize },
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
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("the broker is shutting down")]
    ShuttingDown,
    #[error("group `{0}` kept closing while a member joined; try again")]
    Contended(String),
    /// In a cluster: this broker does not coordinate consumer groups (now),
    /// or the cluster could not commit the change; the message says which
    /// broker does, when known.
    #[error("{0}")]
    NotCoordinator(String),
}

impl From<FetchError> for GroupError {
    fn from(e: FetchError) -> Self {
        match e {
            FetchError::NotFound(e) => Self::NotFound(e),
            FetchError::Invalid(e) => Self::Invalid(e),
            FetchError::Partition(e) => Self::Partition(e),
            FetchError::ShuttingDown => Self::ShuttingDown,
        }
    }
}

impl From<OutOfRange> for GroupError {
    fn from(e: OutOfRange) -> Self {
        Self::Partition(PartitionError::OutOfRange(e))
    }
}

/// Blocking work that never ran because the runtime is shutting down.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stopped;

macro_rules! stopped_is_shutting_down {
    ($($family:ident),*) => {$(
        impl From<Stopped> for $family {
            fn from(_: Stopped) -> Self {
                Self::ShuttingDown
            }
        }
    )*};
}

stopped_is_shutting_down!(OpenError, ProduceError, FetchError, AdminError, GroupError);

stopped_is_shutting_down!(QuotaError);

/// Runs blocking work (file or metadata I/O, fsync) on tokio's blocking
/// pool, never on an async worker. A panic there is re-raised here, as if
/// the work had run inline.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Stopped> {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => Ok(value),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_cancelled) => Err(Stopped),
    }
}

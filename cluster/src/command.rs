//! What the metadata group agrees on: the commands its log holds, in the
//! order every broker applies them.

use brook_engine::TopicOverrides;
use brook_engine::acl::AclBinding;
use brook_engine::quota::QuotaLimits;
use serde::{Deserialize, Serialize};

use crate::types::NodeId;

/// One change to the cluster's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaCommand {
    /// A broker says where it is reached; a later registration of the same
    /// id replaces the address. `incarnation` is new at every start of the
    /// broker: once a broker sees its own in the state it applied, that
    /// state holds everything committed before the broker started.
    RegisterBroker {
        id: NodeId,
        address: String,
        #[serde(default)]
        incarnation: u64,
    },
    /// Creates a topic, placing each partition's replicas on the brokers
    /// registered when the command is applied. A replication factor of 0
    /// takes min(3, registered brokers).
    CreateTopic {
        name: String,
        partitions: u32,
        replication_factor: u32,
        overrides: TopicOverrides,
    },
    /// Deletes a topic.
    DeleteTopic { name: String },
    /// Grows a topic to `partitions` partitions, placing the new ones' replicas
    /// on the brokers registered when the command is applied.
    AddPartitions { name: String, partitions: u32 },
    /// Changes a topic's settings: the overrides it sets replace the
    /// topic's.
    AlterTopic {
        name: String,
        overrides: TopicOverrides,
    },
    /// Adds an ACL every broker enforces (one that exists changes nothing).
    AddAcl { acl: AclBinding },
    /// Removes an ACL.
    RemoveAcl { acl: AclBinding },
    /// Sets the quota of a principal, or the default quota (`None`).
    SetQuota {
        principal: Option<String>,
        limits: QuotaLimits,
    },
    /// Removes a principal's quota, or the default one (`None`).
    RemoveQuota { principal: Option<String> },
    /// Commits a consumer group's offsets (topic, partition, next offset
    /// to consume), the group last active at `at_ms`.
    CommitOffsets {
        group: String,
        offsets: Vec<(String, u32, i64)>,
        at_ms: i64,
    },
    /// Records when a group with committed offsets was last active.
    MarkGroupActive { group: String, at_ms: i64 },
    /// Deletes a consumer group's committed offsets.
    DeleteGroup { group: String },
}

/// What applying a command did. A refusal is decided by the state machine,
/// the same on every broker, so it is an answer, not an error of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaResponse {
    /// The change is made (and for a blank or membership entry: nothing to
    /// say).
    Done,
    /// A topic of that name exists.
    TopicExists { name: String },
    /// No topic of that name exists.
    NoSuchTopic { name: String },
    /// Fewer brokers are registered than the replication factor asks for.
    NotEnoughBrokers { needed: u32, registered: u32 },
    /// A count or name the command carries is out of bounds.
    Invalid { field: String, reason: String },
    /// An ACL was removed, or there was no such ACL.
    AclRemoved { existed: bool },
    /// No such quota is set.
    NoSuchQuota,
    /// Every quota the brokers keep is taken.
    TooManyQuotas { max: usize },
}

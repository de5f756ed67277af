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
    /// `epoch` is that of the coordinator making the change (see
    /// `crate::coordinators`): the change is refused unless it is the
    /// group's slot's epoch when applied.
    CommitOffsets {
        group: String,
        offsets: Vec<(String, u32, i64)>,
        at_ms: i64,
        #[serde(default)]
        epoch: Option<u64>,
    },
    /// Records when a group with committed offsets was last active.
    MarkGroupActive {
        group: String,
        at_ms: i64,
        #[serde(default)]
        epoch: Option<u64>,
    },
    /// Deletes a consumer group's committed offsets.
    DeleteGroup {
        group: String,
        #[serde(default)]
        epoch: Option<u64>,
    },
    /// Gives each slot of consumer groups to a broker to coordinate, each
    /// under a new epoch.
    AssignCoordinators { slots: Vec<(u32, NodeId)> },
    /// Starts moving partitions of a topic to other replicas: each
    /// `(partition, replicas)` is the replica list the partition is to
    /// have, the first the preferred leader. The partition's leader
    /// changes its group's membership; `FinishReassignment` records that
    /// it did. A partition whose list is its current one stops moving.
    ReassignPartitions {
        topic: String,
        partitions: Vec<(u32, Vec<NodeId>)>,
    },
    /// A partition's group has `replicas` as its voters now: the move to
    /// them is over. Changes nothing unless the topic is still `topic_id`
    /// and the partition is moving to exactly `replicas`.
    FinishReassignment {
        topic: String,
        topic_id: u64,
        partition: u32,
        replicas: Vec<NodeId>,
    },
    /// Takes a broker out of the cluster's brokers: no partition is
    /// placed on it from then on. Refused while it holds a replica, or
    /// is to hold one.
    RemoveBroker { id: NodeId },
    /// Lets a broker that was removed register again (it is being added
    /// back).
    AdmitBroker { id: NodeId },
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
    /// The broker holds replicas (or is to hold them): `partitions` names
    /// some of them, as `topic/partition`.
    BrokerHoldsReplicas {
        id: NodeId,
        count: usize,
        partitions: Vec<String>,
    },
    /// A change to a group's offsets came from a broker that does not
    /// coordinate it (any longer); `coordinator` does, if any.
    NotCoordinator {
        group: String,
        coordinator: Option<NodeId>,
    },
    /// No broker of that id is registered.
    NoSuchBroker { id: NodeId },
    /// The broker was removed from the cluster: it may not register
    /// until it is added again.
    BrokerRemoved { id: NodeId },
}

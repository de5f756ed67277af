//! Partition groups: one Raft group per partition, whose state machine is
//! the partition's segmented log.
//!
//! The leader proposes a produce (validated batches) as one entry; once a
//! majority has the entry in its Raft log, fsynced, the entry is committed
//! and every replica applies it by appending its batches to its
//! `PartitionLog`, which assigns the offsets and recognises idempotent
//! producers' retries the same way on every replica. The leader answers
//! the producer with what applying gave: the base offsets.
//!
//! - [`types`]: the group's openraft types and how its entries are written.
//! - [`state_machine`]: applying entries to the log; snapshots.
//! - [`source`]: reading missing records from another replica.
//! - [`replica`]: a broker's replica of one partition.
//! - [`proposer`]: concurrent produces grouped into few entries.
//! - `heartbeats`: one clock for the heartbeats of the groups a broker
//!   leads, so that they leave together ([`HeartbeatClock`]).
//! - `write_back`: the segments synced a little at a time as batches are
//!   applied, so that a snapshot's sync finds little left to write.

mod heartbeats;
pub mod proposer;
pub mod replica;
pub mod source;
pub mod state_machine;
pub mod types;
mod write_back;

pub use heartbeats::HeartbeatClock;
pub use proposer::Proposer;
pub use replica::{
    ElectionTimeouts, HEARTBEAT_INTERVAL, PartitionGroups, PartitionReplica,
    PartitionReplicaConfig, ReplicaStatus,
};
pub use source::LogSource;
pub use state_machine::PartitionStateMachine;
pub use types::{AppliedBatch, PartitionRaft, PartitionRaftConfig, ProduceApplied, ProduceCommand};

/// The name of a partition's group, as brokers address it to each other:
/// `topic/partition@topic_id`. The topic's id (its number in the metadata
/// group) keeps apart the groups of a topic deleted and created again under
/// its name: a broker that missed the deletion and starts its old replica
/// must not reach the new group's members, whose votes and logs it does
/// not share.
pub fn group_name(topic: &str, partition: u32, topic_id: u64) -> String {
    format!("{topic}/{partition}@{topic_id}")
}

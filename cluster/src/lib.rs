//! Brook's cluster: the brokers agree on the cluster's metadata (which
//! brokers there are, which topics, where each partition's replicas live)
//! through one Raft group, the metadata group, run by `openraft`.
//!
//! - [`command`]: what the group's log holds; [`state`]: what applying it
//!   builds, the same on every broker.
//! - [`store`]: the log, vote and snapshot on disk, fsynced before openraft
//!   is told they are.
//! - [`network`]: the group's messages over gRPC
//!   (`brook.cluster.v1.RaftService`).
//! - [`node`]: a broker's member of the group.
//! - [`membership`]: changing a group's voters (brokers added and
//!   removed, partitions moved).
//! - [`coordinators`]: which broker coordinates which consumer groups.
//! - [`partition`]: one Raft group per partition, whose state machine is
//!   the partition's log.
//!
//! Invariant: every decision that needs agreement is openraft's; this
//! crate only stores, carries and applies what it decides.

pub mod command;
pub mod coordinators;
pub mod membership;
pub mod network;
pub mod node;
pub mod partition;
mod quorum_silence;
pub mod state;
pub mod store;
pub mod types;

pub use command::{MetaCommand, MetaResponse};
pub use coordinators::{COORDINATOR_SLOTS, CoordinatorLease, LeaseBoard, coordinator_slot};
pub use node::{ClusterError, MembershipChange, MetaNode, MetaNodeConfig};
pub use state::{ClusterState, GroupOffsets};
pub use types::{BrokerNode, NodeId};

//! The openraft types of the metadata group, and what every group's types
//! share.

use std::fmt;
use std::io::{self, Cursor};

use serde::{Deserialize, Serialize};

use crate::command::{MetaCommand, MetaResponse};

/// A broker's id in the cluster (`--node-id`), stable across restarts.
pub type NodeId = u64;

/// What the cluster knows of a broker: where its peers reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerNode {
    /// `HOST:PORT` of the broker's gRPC listener (or `--cluster-listen`).
    pub address: String,
}

impl BrokerNode {
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
        }
    }
}

impl fmt::Display for BrokerNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.address)
    }
}

openraft::declare_raft_types!(
    /// The metadata group's Raft: entries are [`MetaCommand`]s.
    pub MetaRaftConfig:
        D = MetaCommand,
        R = MetaResponse,
        NodeId = NodeId,
        Node = BrokerNode,
        Entry = openraft::Entry<MetaRaftConfig>,
        SnapshotData = Cursor<Vec<u8>>,
);

/// The metadata group's Raft handle.
pub type MetaRaft = openraft::Raft<MetaRaftConfig>;
pub type MetaEntry = openraft::Entry<MetaRaftConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type Membership = openraft::Membership<NodeId, BrokerNode>;
pub type StoredMembership = openraft::StoredMembership<NodeId, BrokerNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, BrokerNode>;

/// A Raft group's types, and how its log entries are written to its log
/// file and sent to peers.
pub trait EntryFormat:
    openraft::RaftTypeConfig<NodeId = NodeId, Node = BrokerNode, Entry = openraft::Entry<Self>>
{
    /// Appends `entry`'s bytes to `out`.
    fn encode_entry(entry: &openraft::Entry<Self>, out: &mut Vec<u8>) -> io::Result<()>;
    /// The entry `bytes` hold, as `encode_entry` wrote it.
    fn decode_entry(bytes: &[u8]) -> io::Result<openraft::Entry<Self>>;
}

/// The metadata log is small: its entries are JSON, readable with `jq`.
impl EntryFormat for MetaRaftConfig {
    fn encode_entry(entry: &MetaEntry, out: &mut Vec<u8>) -> io::Result<()> {
        serde_json::to_writer(out, entry).map_err(io::Error::other)
    }

    fn decode_entry(bytes: &[u8]) -> io::Result<MetaEntry> {
        serde_json::from_slice(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

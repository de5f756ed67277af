//! What a broker says of its cluster: the brokers, which answer, and who
//! leads each partition.

use std::collections::BTreeMap;
use std::time::Duration;

use brook_proto as proto;
use brook_proto::cluster_service_client::ClusterServiceClient;

use crate::client::Client;
use crate::error::ClientError;

/// The cluster as one broker sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterDescription {
    /// The id of the broker that answered (1 when it is not in a cluster).
    pub answered_by: u64,
    /// Whether it runs in a cluster.
    pub clustered: bool,
    /// Every broker, by id.
    pub brokers: Vec<BrokerDescription>,
    /// The broker leading the metadata group, when known.
    pub metadata_leader: Option<u64>,
    /// The metadata group's term.
    pub metadata_term: u64,
    /// The partitions the answering broker serves.
    pub partitions: Vec<PartitionReplicas>,
}

/// A broker of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokerDescription {
    /// Its id (`--node-id`).
    pub id: u64,
    /// Its gRPC address.
    pub address: String,
    /// Whether it answered the asked broker within 500 ms.
    pub alive: bool,
}

/// A partition's leader and replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionReplicas {
    /// The topic.
    pub topic: String,
    /// The partition's index.
    pub partition: u32,
    /// The broker that leads it.
    pub leader: u64,
    /// The brokers holding it.
    pub replicas: Vec<u64>,
    /// Records each replica is behind the leader, by broker id.
    pub lag: BTreeMap<u64, i64>,
    /// While the partition moves to other brokers: the replicas it moves
    /// to (empty otherwise).
    pub moving_to: Vec<u64>,
}

/// The broker that coordinates a consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupCoordinator {
    /// False for a broker alone: it coordinates every group itself.
    pub clustered: bool,
    /// The coordinator's id.
    pub node_id: u64,
    /// Its gRPC address (`HOST:PORT`).
    pub address: String,
    /// The group's slot: groups of a slot share their coordinator.
    pub slot: u32,
}

/// How long a change of the cluster's brokers may take: a broker being
/// added has a minute to catch up with the metadata group.
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(100);

impl Client {
    /// The cluster as the connected broker sees it (needs `describe` on the
    /// cluster when ACLs are on).
    pub async fn describe_cluster(&self) -> Result<ClusterDescription, ClientError> {
        let mut stub = ClusterServiceClient::new(self.channel.clone());
        let response = self
            .rpc(
                "describe_cluster",
                self.options.request_timeout,
                stub.describe_cluster(proto::DescribeClusterRequest {}),
            )
            .await?;
        Ok(ClusterDescription {
            answered_by: response.answered_by,
            clustered: response.clustered,
            brokers: response
                .brokers
                .into_iter()
                .map(|b| BrokerDescription {
                    id: b.id,
                    address: b.address,
                    alive: b.alive,
                })
                .collect(),
            metadata_leader: response.metadata_leader,
            metadata_term: response.metadata_term,
            partitions: response
                .partitions
                .into_iter()
                .map(|p| PartitionReplicas {
                    topic: p.topic,
                    partition: p.partition,
                    leader: p.leader,
                    replicas: p.replicas,
                    lag: p.lag.into_iter().collect(),
                    moving_to: p.moving_to,
                })
                .collect(),
        })
    }

    /// Which broker coordinates consumer group `group` (needs `describe`
    /// on the group when ACLs are on).
    pub async fn find_coordinator(&self, group: &str) -> Result<GroupCoordinator, ClientError> {
        let mut stub = ClusterServiceClient::new(self.channel.clone());
        let response = self
            .rpc(
                "find_coordinator",
                self.options.request_timeout,
                stub.find_coordinator(proto::FindCoordinatorRequest {
                    group: group.to_owned(),
                }),
            )
            .await?;
        Ok(GroupCoordinator {
            clustered: response.clustered,
            node_id: response.node_id,
            address: response.address,
            slot: response.slot,
        })
    }

    /// Adds the broker `node_id`, started with `join` and reached at
    /// `address` (`HOST:PORT`), to the cluster; returns once it votes in
    /// the metadata group (needs `alter` on the cluster when ACLs are on).
    pub async fn add_broker(&self, node_id: u64, address: &str) -> Result<(), ClientError> {
        let mut stub = ClusterServiceClient::new(self.channel.clone());
        self.rpc(
            "add_broker",
            self.options.request_timeout.max(MEMBERSHIP_TIMEOUT),
            stub.add_broker(proto::AddBrokerRequest {
                node_id,
                address: address.to_owned(),
            }),
        )
        .await?;
        Ok(())
    }

    /// Removes the broker `node_id`, which must hold no replica, from the
    /// cluster.
    pub async fn remove_broker(&self, node_id: u64) -> Result<(), ClientError> {
        let mut stub = ClusterServiceClient::new(self.channel.clone());
        self.rpc(
            "remove_broker",
            self.options.request_timeout.max(MEMBERSHIP_TIMEOUT),
            stub.remove_broker(proto::RemoveBrokerRequest { node_id }),
        )
        .await?;
        Ok(())
    }

    /// Moves partitions of `topic`: each `(partition, replicas)` names the
    /// brokers it is to be on, the first its preferred leader. Returns once
    /// the move is recorded; [`Client::describe_cluster`] shows it under
    /// way (`moving_to`) until the partition's replicas are the new ones.
    pub async fn reassign_partitions(
        &self,
        topic: &str,
        partitions: &[(u32, Vec<u64>)],
    ) -> Result<(), ClientError> {
        let mut stub = ClusterServiceClient::new(self.channel.clone());
        self.rpc(
            "reassign_partitions",
            self.options.request_timeout,
            stub.reassign_partitions(proto::ReassignPartitionsRequest {
                topic: topic.to_owned(),
                partitions: partitions
                    .iter()
                    .map(|(partition, replicas)| proto::PartitionTarget {
                        partition: *partition,
                        replicas: replicas.clone(),
                    })
                    .collect(),
            }),
        )
        .await?;
        Ok(())
    }
}

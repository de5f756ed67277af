//! `brook.v1.ClusterService`: the brokers, which of them answer, and who
//! leads each partition, as the answering broker knows it.

use std::sync::Arc;
use std::time::Duration;

use brook_cluster::MetaNode;
use brook_engine::Broker;
use brook_engine::acl::{Operation, Resource};
use brook_proto::cluster_service_server::ClusterService;
use brook_proto::{
    BrokerDescription, DescribeClusterRequest, DescribeClusterResponse, PartitionReplicas,
};
use tonic::{Request, Response, Status};

use super::authorize::Caller;

/// How long a peer has to answer before it counts as not alive.
const ALIVE_WITHIN: Duration = Duration::from_millis(500);

/// The id a broker that is not in a cluster answers with.
const ALONE: u64 = 1;

pub struct ClusterHandler {
    broker: Arc<Broker>,
    meta: Option<MetaNode>,
}

impl ClusterHandler {
    pub fn new(broker: Arc<Broker>, meta: Option<MetaNode>) -> Self {
        Self { broker, meta }
    }

    /// Every peer with whether it answered, pinged all at once.
    async fn brokers(&self, meta: &MetaNode) -> Vec<BrokerDescription> {
        let peers = self
            .broker
            .config()
            .cluster
            .as_ref()
            .map(|cluster| cluster.peers.clone())
            .unwrap_or_default();
        let pings = peers.iter().map(|(id, address)| async move {
            let alive = *id == meta.id() || meta.ping(address, ALIVE_WITHIN).await.is_some();
            BrokerDescription {
                id: *id,
                address: address.clone(),
                alive,
            }
        });
        futures::future::join_all(pings).await
    }
}

#[tonic::async_trait]
impl ClusterService for ClusterHandler {
    async fn describe_cluster(
        &self,
        request: Request<DescribeClusterRequest>,
    ) -> Result<Response<DescribeClusterResponse>, Status> {
        let _timer = self.broker.metrics().time_request("DescribeCluster");
        Caller::of(&request).check(&self.broker, Operation::Describe, Resource::Cluster)?;
        let (answered_by, brokers, metadata_leader, metadata_term) = match &self.meta {
            Some(meta) => (
                meta.id(),
                self.brokers(meta).await,
                meta.leader(),
                meta.term(),
            ),
            None => (
                ALONE,
                vec![BrokerDescription {
                    id: ALONE,
                    address: self.broker.config().listen.to_string(),
                    alive: true,
                }],
                None,
                0,
            ),
        };
        let partitions = self
            .broker
            .partition_states()
            .into_iter()
            .map(|(topic, partition, _)| PartitionReplicas {
                topic,
                partition,
                leader: answered_by,
                replicas: vec![answered_by],
                lag: [(answered_by, 0)].into_iter().collect(),
            })
            .collect();
        Ok(Response::new(DescribeClusterResponse {
            answered_by,
            clustered: self.meta.is_some(),
            brokers,
            metadata_leader,
            metadata_term,
            partitions,
        }))
    }
}

//! `brook.v1.ClusterService`: the brokers, which of them answer, and who
//! leads each partition, as the answering broker knows it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use brook_cluster::MetaNode;
use brook_engine::Broker;
use brook_engine::acl::{Operation, Resource};
use brook_proto::cluster::PingResponse;
use brook_proto::cluster_service_server::ClusterService;
use brook_proto::{
    AddBrokerRequest, AddBrokerResponse, BrokerDescription, DescribeClusterRequest,
    DescribeClusterResponse, FindCoordinatorRequest, FindCoordinatorResponse, PartitionReplicas,
    ReassignPartitionsRequest, ReassignPartitionsResponse, RemoveBrokerRequest,
    RemoveBrokerResponse,
};
use tonic::{Request, Response, Status};

use super::authorize::Caller;
use super::status::cluster_status;
use crate::replicas::Replicas;

/// How long a peer has to answer before it counts as not alive.
const ALIVE_WITHIN: Duration = Duration::from_millis(500);

/// The id a broker that is not in a cluster answers with.
const ALONE: u64 = 1;

pub struct ClusterHandler {
    broker: Arc<Broker>,
    meta: Option<MetaNode>,
    replicas: Option<Arc<Replicas>>,
}

/// What each broker answered a ping with, by id (`None`: it did not).
type Answers = BTreeMap<u64, Option<PingResponse>>;

impl ClusterHandler {
    pub fn new(
        broker: Arc<Broker>,
        meta: Option<MetaNode>,
        replicas: Option<Arc<Replicas>>,
    ) -> Self {
        Self {
            broker,
            meta,
            replicas,
        }
    }

    /// Every broker with whether it answered, pinged all at once; this
    /// broker answers for itself.
    async fn ping_all(&self, meta: &MetaNode) -> (Vec<BrokerDescription>, Answers) {
        let peers = meta.brokers();
        let pings = peers.iter().map(|(id, address)| async move {
            let answer = if *id == meta.id() {
                Some(meta.ping_answer())
            } else {
                meta.ping(address, ALIVE_WITHIN).await
            };
            (
                BrokerDescription {
                    id: *id,
                    address: address.clone(),
                    alive: answer.is_some(),
                },
                (*id, answer),
            )
        });
        futures::future::join_all(pings).await.into_iter().unzip()
    }
}

/// The metadata group's leader as the broker in the latest term knows it: a
/// broker back from a restart names itself, from the term it led before,
/// until it hears of the next one.
fn metadata_leader(answers: &Answers) -> (u64, Option<u64>) {
    answers
        .values()
        .flatten()
        .max_by_key(|answer| (answer.term, answer.leader.is_some()))
        .map_or((0, None), |answer| (answer.term, answer.leader))
}

/// Each partition of the cluster: its leader as most of its replicas know
/// it (a replica back from a restart can name itself, from the term it led
/// before, until it hears of the next), and how far each replica's applied
/// end is behind the furthest one's (no replica applies what is not
/// committed, so that is how far it is behind the commit).
fn replicated_partitions(replicas: &Replicas, answers: &Answers) -> Vec<PartitionReplicas> {
    let answer = |id: u64| answers.get(&id).and_then(Option::as_ref);
    replicas
        .partitions()
        .into_iter()
        .map(|view| {
            let group =
                brook_cluster::partition::group_name(&view.topic, view.partition, view.topic_id);
            let mut claims: BTreeMap<u64, usize> = BTreeMap::new();
            for id in &view.replicas {
                // A leader no longer among the replicas (it was moved off
                // and stepped down) is named until the next election.
                if let Some(leader) = answer(*id)
                    .and_then(|a| a.partition_leaders.get(&group))
                    .filter(|leader| view.replicas.contains(leader))
                {
                    *claims.entry(*leader).or_default() += 1;
                }
            }
            let leader = claims
                .into_iter()
                .max_by_key(|(_, count)| *count)
                .map(|(leader, _)| leader)
                .or(view.leader.filter(|leader| view.replicas.contains(leader)));
            let end_of = |id: u64| answer(id)?.high_watermarks.get(&group).copied();
            let furthest = view.replicas.iter().filter_map(|id| end_of(*id)).max();
            let lag = view
                .replicas
                .iter()
                .filter_map(|id| Some((*id, furthest? - end_of(*id)?)))
                .collect();
            PartitionReplicas {
                topic: view.topic,
                partition: view.partition,
                leader: leader.unwrap_or_default(),
                replicas: view.replicas,
                lag,
                moving_to: view.moving_to,
            }
        })
        .collect()
}

#[tonic::async_trait]
impl ClusterService for ClusterHandler {
    async fn describe_cluster(
        &self,
        request: Request<DescribeClusterRequest>,
    ) -> Result<Response<DescribeClusterResponse>, Status> {
        let _timer = self.broker.metrics().time_request("DescribeCluster");
        Caller::of(&request).check(&self.broker, Operation::Describe, Resource::Cluster)?;
        let response = match (&self.meta, &self.replicas) {
            (Some(meta), Some(replicas)) => {
                let (brokers, answers) = self.ping_all(meta).await;
                let (metadata_term, metadata_leader) = metadata_leader(&answers);
                DescribeClusterResponse {
                    answered_by: meta.id(),
                    clustered: true,
                    brokers,
                    metadata_leader,
                    metadata_term,
                    partitions: replicated_partitions(replicas, &answers),
                }
            }
            _ => DescribeClusterResponse {
                answered_by: ALONE,
                clustered: false,
                brokers: vec![BrokerDescription {
                    id: ALONE,
                    address: self.broker.config().listen.to_string(),
                    alive: true,
                }],
                metadata_leader: None,
                metadata_term: 0,
                partitions: self
                    .broker
                    .partition_states()
                    .into_iter()
                    .map(|(topic, partition, _)| PartitionReplicas {
                        topic,
                        partition,
                        leader: ALONE,
                        replicas: vec![ALONE],
                        lag: [(ALONE, 0)].into_iter().collect(),
                        moving_to: Vec::new(),
                    })
                    .collect(),
            },
        };
        Ok(Response::new(response))
    }

    async fn add_broker(
        &self,
        request: Request<AddBrokerRequest>,
    ) -> Result<Response<AddBrokerResponse>, Status> {
        let _timer = self.broker.metrics().time_request("AddBroker");
        Caller::of(&request).check(&self.broker, Operation::Alter, Resource::Cluster)?;
        let replicas = self.clustered()?;
        let request = request.into_inner();
        replicas
            .add_broker(request.node_id, &request.address)
            .await
            .map_err(cluster_status)?;
        tracing::info!(node_id = request.node_id, address = %request.address, "broker added to the cluster");
        Ok(Response::new(AddBrokerResponse {}))
    }

    async fn remove_broker(
        &self,
        request: Request<RemoveBrokerRequest>,
    ) -> Result<Response<RemoveBrokerResponse>, Status> {
        let _timer = self.broker.metrics().time_request("RemoveBroker");
        Caller::of(&request).check(&self.broker, Operation::Alter, Resource::Cluster)?;
        let replicas = self.clustered()?;
        let node_id = request.into_inner().node_id;
        replicas
            .remove_broker(node_id)
            .await
            .map_err(cluster_status)?;
        tracing::info!(node_id, "broker removed from the cluster");
        Ok(Response::new(RemoveBrokerResponse {}))
    }

    async fn reassign_partitions(
        &self,
        request: Request<ReassignPartitionsRequest>,
    ) -> Result<Response<ReassignPartitionsResponse>, Status> {
        let _timer = self.broker.metrics().time_request("ReassignPartitions");
        Caller::of(&request).check(&self.broker, Operation::Alter, Resource::Cluster)?;
        let replicas = self.clustered()?;
        let request = request.into_inner();
        let partitions = request
            .partitions
            .into_iter()
            .map(|target| (target.partition, target.replicas))
            .collect();
        replicas
            .reassign_partitions(&request.topic, partitions)
            .await
            .map_err(cluster_status)?;
        Ok(Response::new(ReassignPartitionsResponse {}))
    }

    async fn find_coordinator(
        &self,
        request: Request<FindCoordinatorRequest>,
    ) -> Result<Response<FindCoordinatorResponse>, Status> {
        let _timer = self.broker.metrics().time_request("FindCoordinator");
        let caller = Caller::of(&request);
        let group = request.into_inner().group;
        caller.check(&self.broker, Operation::Describe, Resource::Group(&group))?;
        brook_engine::group::validate_group_name(&group).map_err(super::status::status)?;
        let slot = brook_cluster::coordinator_slot(&group);
        let slots = brook_cluster::COORDINATOR_SLOTS;
        let Some(replicas) = &self.replicas else {
            return Ok(Response::new(FindCoordinatorResponse {
                clustered: false,
                node_id: ALONE,
                address: self.broker.config().listen.to_string(),
                slot,
                slots,
            }));
        };
        // Cut off from the metadata leader, this broker may name a
        // coordinator the others have replaced: the client asks another.
        if !replicas.in_touch() {
            return Err(Status::unavailable(format!(
                "broker {} is not in touch with the cluster's metadata leader now, and cannot say who coordinates group `{group}`: ask another broker",
                self.meta.as_ref().map_or(0, MetaNode::id)
            )));
        }
        match replicas.coordinator_of(&group) {
            Some((node_id, Some(address))) => Ok(Response::new(FindCoordinatorResponse {
                clustered: true,
                node_id,
                address,
                slot,
                slots,
            })),
            _ => Err(Status::unavailable(replicas.not_coordinator(&group))),
        }
    }
}

impl ClusterHandler {
    /// The broker's replicas, when it runs in a cluster.
    fn clustered(&self) -> Result<&Arc<Replicas>, Status> {
        self.replicas.as_ref().ok_or_else(|| {
            Status::failed_precondition(
                "this broker is not in a cluster (no node_id and peers): there are no brokers to add, remove or move partitions between",
            )
        })
    }
}

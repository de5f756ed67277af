//! The gRPC surface: one file per `brook.v1` service, and the single
//! mapping from broker errors to statuses.
//!
//! Invariant: only this module (among the broker's) knows the protobuf types.

mod acl;
mod admin;
mod audit;
mod authorize;
mod cluster;
pub mod connections;
mod fetch;
mod group;
mod produce;
mod quota;
pub mod receive_budget;
pub mod status;
mod throttle;

use std::sync::Arc;

use brook_proto::acl_service_server::AclServiceServer;
use brook_proto::admin_service_server::AdminServiceServer;
use brook_proto::cluster_service_server::ClusterServiceServer;
use brook_proto::fetch_service_server::FetchServiceServer;
use brook_proto::group_service_server::GroupServiceServer;
use brook_proto::produce_service_server::ProduceServiceServer;
use brook_proto::quota_service_server::QuotaServiceServer;
use tonic::service::Routes;

use brook_cluster::MetaNode;
use brook_engine::Broker;

use crate::replicas::Replicas;

/// The broker's gRPC services, ready to serve; with `meta`, the services
/// of the cluster's groups too.
pub fn routes(
    broker: &Arc<Broker>,
    meta: Option<&MetaNode>,
    replicas: Option<&Arc<Replicas>>,
) -> Routes {
    let limit = broker.config().limits.grpc_message_bytes_max;
    let routes = Routes::new(
        AdminServiceServer::new(admin::AdminHandler::new(broker.clone(), replicas.cloned()))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit),
    )
    .add_service(
        ProduceServiceServer::new(produce::ProduceHandler::new(broker.clone()))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit),
    )
    .add_service(
        FetchServiceServer::new(fetch::FetchHandler::new(broker.clone()))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit),
    )
    .add_service(
        GroupServiceServer::new(group::GroupHandler::new(broker.clone(), replicas.cloned()))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit),
    )
    .add_service(
        AclServiceServer::new(acl::AclHandler::new(broker.clone(), replicas.cloned()))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit),
    )
    .add_service(
        QuotaServiceServer::new(quota::QuotaHandler::new(broker.clone(), replicas.cloned()))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit),
    )
    .add_service(ClusterServiceServer::new(cluster::ClusterHandler::new(
        broker.clone(),
        meta.cloned(),
        replicas.cloned(),
    )));
    match meta {
        Some(meta) => routes.add_service(meta.service()),
        None => routes,
    }
}

//! `brook.v1.AdminService`: topic administration.

use std::sync::Arc;

use brook_proto::admin_service_server::AdminService;
use brook_proto::{
    AddPartitionsRequest, AddPartitionsResponse, AlterTopicConfigRequest, AlterTopicConfigResponse,
    CreateTopicRequest, CreateTopicResponse, DeleteTopicRequest, DeleteTopicResponse,
    DescribeTopicRequest, DescribeTopicResponse, ListTopicsRequest, ListTopicsResponse,
    PartitionDescription, TopicConfig, TopicDescription, TopicSummary,
};
use tonic::{Request, Response, Status};

use brook_engine::Invalid;
use brook_engine::{Broker, TopicInfo};
use brook_engine::{RecordValidation, TopicOverrides};

use super::audit::Audit;
use super::authorize::Caller;
use super::status::{cluster_status, status};
use crate::replicas::Replicas;
use brook_engine::acl::{Operation, Resource};

#[derive(Debug)]
pub struct AdminHandler {
    broker: Arc<Broker>,
    /// In a cluster: topics are created and deleted through it.
    replicas: Option<Arc<Replicas>>,
}

impl AdminHandler {
    pub fn new(broker: Arc<Broker>, replicas: Option<Arc<Replicas>>) -> Self {
        Self { broker, replicas }
    }
}

fn overrides(config: Option<TopicConfig>) -> Result<TopicOverrides, Status> {
    let config = config.unwrap_or_default();
    let validate_records = config
        .validate_records
        .map(|name| name.parse::<RecordValidation>())
        .transpose()
        .map_err(|e| status(Invalid::new("validate_records", e.to_string())))?;
    Ok(TopicOverrides {
        retention_ms: config.retention_ms,
        retention_bytes: config.retention_bytes,
        segment_bytes: config.segment_bytes,
        segment_ms: config.segment_ms,
        max_message_bytes: config.max_message_bytes,
        validate_records,
    })
}

fn description(info: TopicInfo) -> TopicDescription {
    let s = info.settings;
    TopicDescription {
        name: info.name,
        config: Some(TopicConfig {
            retention_ms: Some(s.retention_ms),
            retention_bytes: Some(s.retention_bytes),
            segment_bytes: Some(s.segment_bytes),
            segment_ms: Some(s.segment_ms),
            max_message_bytes: Some(s.max_message_bytes),
            validate_records: Some(s.validate_records.name().to_owned()),
        }),
        partitions: info
            .partitions
            .into_iter()
            .map(|p| PartitionDescription {
                partition: p.partition,
                start_offset: p.start_offset,
                end_offset: p.end_offset,
                size_bytes: p.size_bytes,
                segments: p.segments,
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl AdminService for AdminHandler {
    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().name))]
    async fn create_topic(
        &self,
        request: Request<CreateTopicRequest>,
    ) -> Result<Response<CreateTopicResponse>, Status> {
        let _timer = self.broker.metrics().time_request("CreateTopic");
        let audit = Audit::of(&request);
        let caller = Caller::of(&request);
        let request = request.into_inner();
        let details = format!(
            "partitions={} config={:?}",
            request.partitions, request.config
        );
        let result = async {
            caller.check(
                &self.broker,
                Operation::Create,
                Resource::Topic(&request.name),
            )?;
            let overrides = overrides(request.config)?;
            let info = if let Some(replicas) = &self.replicas {
                replicas
                    .create_topic(
                        &request.name,
                        request.partitions,
                        request.replication_factor.unwrap_or(0),
                        overrides,
                    )
                    .await
                    .map_err(cluster_status)?
            } else {
                if request.replication_factor.is_some_and(|factor| factor > 1) {
                    return Err(status(Invalid::new(
                        "replication_factor",
                        "a broker that is not in a cluster holds one replica of each partition: ask for 1 or leave it unset",
                    )));
                }
                self.broker
                    .create_topic(&request.name, request.partitions, overrides)
                    .await
                    .map_err(status)?
            };
            Ok(Response::new(CreateTopicResponse {
                topic: Some(description(info)),
            }))
        }
        .await;
        audit.record(
            "create_topic",
            &format!("topic:{}", request.name),
            &details,
            &result,
        );
        result
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().name))]
    async fn delete_topic(
        &self,
        request: Request<DeleteTopicRequest>,
    ) -> Result<Response<DeleteTopicResponse>, Status> {
        let _timer = self.broker.metrics().time_request("DeleteTopic");
        let audit = Audit::of(&request);
        let caller = Caller::of(&request);
        let name = request.into_inner().name;
        let result = async {
            caller.check(&self.broker, Operation::Delete, Resource::Topic(&name))?;
            match &self.replicas {
                Some(replicas) => replicas.delete_topic(&name).await.map_err(cluster_status),
                None => self.broker.delete_topic(&name).await.map_err(status),
            }
            .map(|()| Response::new(DeleteTopicResponse {}))
        }
        .await;
        audit.record("delete_topic", &format!("topic:{name}"), "", &result);
        result
    }

    async fn list_topics(
        &self,
        request: Request<ListTopicsRequest>,
    ) -> Result<Response<ListTopicsResponse>, Status> {
        let _timer = self.broker.metrics().time_request("ListTopics");
        let caller = Caller::of(&request);
        let topics = self
            .broker
            .list_topics()
            .into_iter()
            .filter(|(name, _)| {
                caller.may(&self.broker, Operation::Describe, Resource::Topic(name))
            })
            .map(|(name, partitions)| TopicSummary { name, partitions })
            .collect();
        Ok(Response::new(ListTopicsResponse { topics }))
    }

    async fn describe_topic(
        &self,
        request: Request<DescribeTopicRequest>,
    ) -> Result<Response<DescribeTopicResponse>, Status> {
        let _timer = self.broker.metrics().time_request("DescribeTopic");
        let caller = Caller::of(&request);
        let name = request.into_inner().name;
        caller.check(&self.broker, Operation::Describe, Resource::Topic(&name))?;
        let info = self.broker.describe_topic(&name).map_err(status)?;
        Ok(Response::new(DescribeTopicResponse {
            topic: Some(description(info)),
        }))
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().name))]
    async fn add_partitions(
        &self,
        request: Request<AddPartitionsRequest>,
    ) -> Result<Response<AddPartitionsResponse>, Status> {
        let _timer = self.broker.metrics().time_request("AddPartitions");
        let audit = Audit::of(&request);
        let caller = Caller::of(&request);
        let request = request.into_inner();
        let result = async {
            caller.check(
                &self.broker,
                Operation::Alter,
                Resource::Topic(&request.name),
            )?;
            let info = match &self.replicas {
                Some(replicas) => replicas
                    .add_partitions(&request.name, request.partitions)
                    .await
                    .map_err(cluster_status)?,
                None => self
                    .broker
                    .add_partitions(&request.name, request.partitions)
                    .await
                    .map_err(status)?,
            };
            Ok(Response::new(AddPartitionsResponse {
                topic: Some(description(info)),
            }))
        }
        .await;
        audit.record(
            "add_partitions",
            &format!("topic:{}", request.name),
            &format!("partitions={}", request.partitions),
            &result,
        );
        result
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().name))]
    async fn alter_topic_config(
        &self,
        request: Request<AlterTopicConfigRequest>,
    ) -> Result<Response<AlterTopicConfigResponse>, Status> {
        let _timer = self.broker.metrics().time_request("AlterTopicConfig");
        let audit = Audit::of(&request);
        let caller = Caller::of(&request);
        let request = request.into_inner();
        let details = format!("config={:?}", request.config);
        let result = async {
            caller.check(
                &self.broker,
                Operation::Alter,
                Resource::Topic(&request.name),
            )?;
            if request.config.is_none() {
                return Err(status(Invalid::new("config", "must be set")));
            }
            let overrides = overrides(request.config.clone())?;
            let info = match &self.replicas {
                Some(replicas) => replicas
                    .alter_topic_config(&request.name, overrides)
                    .await
                    .map_err(cluster_status)?,
                None => self
                    .broker
                    .alter_topic_config(&request.name, overrides)
                    .await
                    .map_err(status)?,
            };
            Ok(Response::new(AlterTopicConfigResponse {
                topic: Some(description(info)),
            }))
        }
        .await;
        audit.record(
            "alter_topic_config",
            &format!("topic:{}", request.name),
            &details,
            &result,
        );
        result
    }
}

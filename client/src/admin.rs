//! Topic administration, and the client's own types for topics: the proto
//! types stay inside this crate.

use brook_proto as proto;
use brook_record::{ParseRecordValidationError, RecordValidation};

use crate::client::Client;
use crate::error::ClientError;

/// Settings to give a topic; `None` takes the broker's default (on create)
/// or leaves the setting as it is (on alter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct TopicConfig {
    /// Delete whole segments whose newest record is older than this; -1 keeps forever.
    pub retention_ms: Option<i64>,
    /// Delete the oldest segments while a partition holds more; -1 keeps everything.
    pub retention_bytes: Option<i64>,
    /// Roll to a new segment once the active one holds this many bytes.
    pub segment_bytes: Option<u64>,
    /// Roll to a new segment once the active one is this old.
    pub segment_ms: Option<i64>,
    /// The largest record batch the topic accepts.
    pub max_message_bytes: Option<u32>,
    /// How much of a produced batch's records the broker checks: `Framing`
    /// does not decompress compressed batches (see `docs/record-batch.md`).
    pub validate_records: Option<RecordValidation>,
}

/// A topic's effective settings, defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicSettings {
    /// Segments whose newest record is older than this are deleted; -1 keeps forever.
    pub retention_ms: i64,
    /// The oldest segments are deleted while a partition holds more; -1 keeps everything.
    pub retention_bytes: i64,
    /// A new segment starts once the active one holds this many bytes.
    pub segment_bytes: u64,
    /// A new segment starts once the active one is this old.
    pub segment_ms: i64,
    /// The largest record batch the topic accepts, in bytes.
    pub max_message_bytes: u32,
    /// How much of a produced batch's records the broker checks; `None`
    /// from a broker too old to report it.
    pub validate_records: Option<RecordValidation>,
}

/// A topic and the state of each of its partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    /// The topic's name.
    pub name: String,
    /// The effective settings.
    pub config: TopicSettings,
    /// In partition order.
    pub partitions: Vec<PartitionDescription>,
}

/// One partition's offsets and size on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionDescription {
    /// The partition's index, from 0.
    pub partition: u32,
    /// The first offset still retained.
    pub start_offset: i64,
    /// The offset the next record will get (the high watermark).
    pub end_offset: i64,
    /// Bytes of segment files on disk.
    pub size_bytes: u64,
    /// Segment files the partition's log is made of.
    pub segments: u32,
}

/// A topic as listed: its name and partition count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSummary {
    /// The topic's name.
    pub name: String,
    /// How many partitions it has.
    pub partitions: u32,
}

impl Client {
    /// Creates a topic with `partitions` partitions.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        config: TopicConfig,
    ) -> Result<TopicDescription, ClientError> {
        self.create_replicated_topic(name, partitions, None, config)
            .await
    }

    /// Creates a topic whose partitions are each held by
    /// `replication_factor` brokers of the cluster (`None`: min(3,
    /// brokers)). A broker that is not in a cluster takes only 1.
    pub async fn create_replicated_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: Option<u32>,
        config: TopicConfig,
    ) -> Result<TopicDescription, ClientError> {
        let request = proto::CreateTopicRequest {
            name: name.to_owned(),
            partitions,
            config: Some(to_proto(config)),
            replication_factor,
        };
        let response = self
            .rpc(
                "create_topic",
                self.options.request_timeout,
                self.admin.clone().create_topic(request),
            )
            .await?;
        description(response.topic)
    }

    /// Deletes a topic and all its records.
    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        let request = proto::DeleteTopicRequest {
            name: name.to_owned(),
        };
        self.rpc(
            "delete_topic",
            self.options.request_timeout,
            self.admin.clone().delete_topic(request),
        )
        .await?;
        Ok(())
    }

    /// Every topic with its partition count.
    pub async fn list_topics(&self) -> Result<Vec<TopicSummary>, ClientError> {
        let response = self
            .rpc(
                "list_topics",
                self.options.request_timeout,
                self.admin.clone().list_topics(proto::ListTopicsRequest {}),
            )
            .await?;
        Ok(response
            .topics
            .into_iter()
            .map(|t| TopicSummary {
                name: t.name,
                partitions: t.partitions,
            })
            .collect())
    }

    /// A topic's settings and the offsets and size of each partition.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription, ClientError> {
        let request = proto::DescribeTopicRequest {
            name: name.to_owned(),
        };
        let response = self
            .rpc(
                "describe_topic",
                self.options.request_timeout,
                self.admin.clone().describe_topic(request),
            )
            .await?;
        description(response.topic)
    }

    /// Grows a topic to `partitions` partitions in total (more than it has).
    pub async fn add_partitions(
        &self,
        name: &str,
        partitions: u32,
    ) -> Result<TopicDescription, ClientError> {
        let request = proto::AddPartitionsRequest {
            name: name.to_owned(),
            partitions,
        };
        let response = self
            .rpc(
                "add_partitions",
                self.options.request_timeout,
                self.admin.clone().add_partitions(request),
            )
            .await?;
        description(response.topic)
    }

    /// Changes the settings that are `Some` in `config`.
    pub async fn alter_topic_config(
        &self,
        name: &str,
        config: TopicConfig,
    ) -> Result<TopicDescription, ClientError> {
        let request = proto::AlterTopicConfigRequest {
            name: name.to_owned(),
            config: Some(to_proto(config)),
        };
        let response = self
            .rpc(
                "alter_topic_config",
                self.options.request_timeout,
                self.admin.clone().alter_topic_config(request),
            )
            .await?;
        description(response.topic)
    }
}

fn to_proto(config: TopicConfig) -> proto::TopicConfig {
    proto::TopicConfig {
        retention_ms: config.retention_ms,
        retention_bytes: config.retention_bytes,
        segment_bytes: config.segment_bytes,
        segment_ms: config.segment_ms,
        max_message_bytes: config.max_message_bytes,
        validate_records: config
            .validate_records
            .map(|validation| validation.name().to_owned()),
    }
}

/// The broker promises a description with every setting filled in.
fn description(topic: Option<proto::TopicDescription>) -> Result<TopicDescription, ClientError> {
    let topic = topic.ok_or_else(|| missing("topic"))?;
    let config = topic.config.ok_or_else(|| missing("topic.config"))?;
    Ok(TopicDescription {
        name: topic.name,
        config: TopicSettings {
            retention_ms: config.retention_ms.ok_or_else(|| missing("retention_ms"))?,
            retention_bytes: config
                .retention_bytes
                .ok_or_else(|| missing("retention_bytes"))?,
            segment_bytes: config
                .segment_bytes
                .ok_or_else(|| missing("segment_bytes"))?,
            segment_ms: config.segment_ms.ok_or_else(|| missing("segment_ms"))?,
            max_message_bytes: config
                .max_message_bytes
                .ok_or_else(|| missing("max_message_bytes"))?,
            validate_records: config
                .validate_records
                .map(|name| name.parse())
                .transpose()
                .map_err(|e: ParseRecordValidationError| ClientError::Protocol(e.to_string()))?,
        },
        partitions: topic
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
    })
}

fn missing(field: &str) -> ClientError {
    ClientError::Protocol(format!("the topic description has no {field}"))
}

setters!(TopicConfig {
    with_retention_ms => retention_ms: Option<i64>,
    with_retention_bytes => retention_bytes: Option<i64>,
    with_segment_bytes => segment_bytes: Option<u64>,
    with_segment_ms => segment_ms: Option<i64>,
    with_max_message_bytes => max_message_bytes: Option<u32>,
    with_validate_records => validate_records: Option<RecordValidation>,
});

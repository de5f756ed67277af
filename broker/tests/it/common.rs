//! Helpers shared by the broker's integration tests: gRPC clients for an
//! embedded broker, batch builders, and bounded produce and fetch loops.
//!
//! Every wait is bounded by `WAIT`, so a broken broker fails a test instead
//! of hanging it.

#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use brook_proto::admin_service_client::AdminServiceClient;
use brook_proto::fetch_service_client::FetchServiceClient;
use brook_proto::produce_service_client::ProduceServiceClient;
use brook_proto::{
    CreateTopicRequest, DescribeTopicRequest, FetchPartition, FetchRequest, PartitionBatch,
    PartitionDescription, ProduceRequest, TopicConfig,
};
use brook_record::{BatchOptions, NewRecord, Record};
use bytes::Bytes;
use tonic::transport::Channel;

/// The longest any single step of a test may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// Fails instead of waiting longer than `WAIT`.
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> anyhow::Result<T> {
    tokio::time::timeout(WAIT, future)
        .await
        .with_context(|| format!("{what} did not finish within {WAIT:?}"))
}

/// One client per service, all on one connection.
#[derive(Debug, Clone)]
pub struct Clients {
    pub admin: AdminServiceClient<Channel>,
    pub produce: ProduceServiceClient<Channel>,
    pub fetch: FetchServiceClient<Channel>,
}

impl Clients {
    pub async fn connect(endpoint: String) -> anyhow::Result<Self> {
        let channel = within(
            "connecting",
            Channel::from_shared(endpoint)?
                .connect_timeout(WAIT)
                .connect(),
        )
        .await??;
        Ok(Self::over(channel))
    }

    /// Clients over an existing channel (a TLS one, say).
    pub fn over(channel: Channel) -> Self {
        Self {
            admin: AdminServiceClient::new(channel.clone()),
            produce: ProduceServiceClient::new(channel.clone()),
            fetch: FetchServiceClient::new(channel),
        }
    }

    pub async fn create_topic(
        &mut self,
        name: &str,
        partitions: u32,
        config: TopicConfig,
    ) -> anyhow::Result<()> {
        let request = CreateTopicRequest {
            name: name.to_owned(),
            partitions,
            config: Some(config),
            replication_factor: None,
        };
        within("create topic", self.admin.create_topic(request)).await??;
        Ok(())
    }

    pub async fn describe(
        &mut self,
        topic: &str,
        partition: u32,
    ) -> anyhow::Result<PartitionDescription> {
        let request = DescribeTopicRequest {
            name: topic.to_owned(),
        };
        let response = within("describe", self.admin.describe_topic(request)).await??;
        let description = response.into_inner().topic.context("no topic described")?;
        description
            .partitions
            .into_iter()
            .find(|p| p.partition == partition)
            .with_context(|| format!("partition {partition} not described"))
    }

    pub async fn end_offset(&mut self, topic: &str, partition: u32) -> anyhow::Result<i64> {
        Ok(self.describe(topic, partition).await?.end_offset)
    }

    /// Produces one batch and returns its base offset; a per-batch error fails.
    pub async fn produce(
        &mut self,
        topic: &str,
        partition: u32,
        batch: Bytes,
    ) -> anyhow::Result<i64> {
        let request = produce_request(0, vec![partition_batch(topic, partition, batch)]);
        let response = within("produce", self.produce.produce(request))
            .await??
            .into_inner();
        let [result] = response.results.as_slice() else {
            bail!("expected one batch result, got {:?}", response.results);
        };
        if let Some(error) = &result.error {
            bail!("batch rejected: {error:?}");
        }
        Ok(result.base_offset)
    }

    /// One fetch without waiting; returns the raw records.
    pub async fn fetch_once(
        &mut self,
        topic: &str,
        partition: u32,
        offset: i64,
    ) -> Result<Bytes, tonic::Status> {
        let request = FetchRequest {
            partitions: vec![FetchPartition {
                topic: topic.to_owned(),
                partition,
                offset,
                max_bytes: 0,
            }],
            max_wait_ms: 0,
            max_bytes: 0,
            max_message_bytes: 0,
        };
        let response = tokio::time::timeout(WAIT, self.fetch.fetch(request))
            .await
            .map_err(|_| tonic::Status::deadline_exceeded("fetch took longer than WAIT"))??;
        let partition = response.into_inner().partitions.into_iter().next();
        Ok(partition.map(|p| p.records).unwrap_or_default())
    }

    /// Every record from `from` to the end offset, fetched in as many rounds
    /// as it takes (bounded), records below `from` skipped.
    pub async fn fetch_all(
        &mut self,
        topic: &str,
        partition: u32,
        from: i64,
    ) -> anyhow::Result<Vec<Record>> {
        let end = self.end_offset(topic, partition).await?;
        let mut records: Vec<Record> = Vec::new();
        let mut next = from;
        for _ in 0..=end.saturating_sub(from) {
            if next >= end {
                return Ok(records);
            }
            let bytes = self.fetch_once(topic, partition, next).await?;
            let fetched = brook_record::decode_batches(&bytes)?;
            ensure!(
                !fetched.is_empty(),
                "fetch at {next} below end {end} was empty"
            );
            records.extend(fetched.into_iter().filter(|r| r.offset >= next));
            next = records.last().map_or(next, |r| r.offset + 1);
        }
        ensure!(next >= end, "fetching stopped at {next}, before end {end}");
        Ok(records)
    }
}

pub fn partition_batch(topic: &str, partition: u32, batch: Bytes) -> PartitionBatch {
    PartitionBatch {
        topic: topic.to_owned(),
        partition,
        batch,
    }
}

pub fn produce_request(correlation_id: u64, batches: Vec<PartitionBatch>) -> ProduceRequest {
    ProduceRequest {
        correlation_id,
        batches,
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `count` records valued `<prefix>-<i>`, all stamped `timestamp`.
pub fn records(prefix: &str, count: usize, timestamp: i64) -> Vec<NewRecord> {
    (0..count)
        .map(|i| NewRecord {
            timestamp,
            key: None,
            value: Some(Bytes::from(format!("{prefix}-{i}"))),
            headers: Vec::new(),
        })
        .collect()
}

/// One uncompressed batch of `records(prefix, count, now)`.
pub fn batch(prefix: &str, count: usize) -> anyhow::Result<Bytes> {
    Ok(brook_record::encode_batch(
        &records(prefix, count, now_ms()),
        BatchOptions::default(),
    )?)
}

/// One batch of a single record holding `value_bytes` bytes, stamped `timestamp`.
pub fn sized_batch(value_bytes: usize, timestamp: i64) -> anyhow::Result<Bytes> {
    let record = NewRecord {
        timestamp,
        key: None,
        value: Some(Bytes::from(vec![b'v'; value_bytes])),
        headers: Vec::new(),
    };
    Ok(brook_record::encode_batch(
        &[record],
        BatchOptions::default(),
    )?)
}

/// The values of `records`, as strings.
pub fn values(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
        .collect()
}

/// A small deterministic generator for garbage bytes (xorshift64).
pub fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.max(1);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

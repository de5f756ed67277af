//! Load generation for Brook: produce records as fast as the broker
//! acknowledges them and report throughput and acknowledgement latency.
//!
//! The producer here speaks the pipelined produce stream directly, so the
//! figures measure the broker and the wire, not a client library's batching.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use brook_proto::admin_service_client::AdminServiceClient;
use brook_proto::produce_service_client::ProduceServiceClient;
use brook_proto::{CreateTopicRequest, PartitionBatch, ProduceRequest};
use brook_record::{BatchBuilder, BatchOptions, NewRecord};
use bytes::Bytes;
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// What to produce.
#[derive(Debug, Clone)]
pub struct ProduceOptions {
    pub topic: String,
    pub partitions: u32,
    pub records: u64,
    pub record_size: usize,
    /// Records per batch.
    pub batch_records: usize,
    /// Produce requests in flight on the stream.
    pub in_flight: usize,
}

impl Default for ProduceOptions {
    fn default() -> Self {
        Self {
            topic: "bench".to_owned(),
            partitions: 8,
            records: 1_000_000,
            record_size: 100,
            batch_records: 1000,
            in_flight: 64,
        }
    }
}

/// The outcome of a run; latencies are from sending a request to its
/// acknowledgement.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub records: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub records_per_sec: f64,
    pub mb_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} records, {:.1} MB in {:.2} s: {:.0} records/s, {:.1} MB/s; ack latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            self.records,
            self.bytes as f64 / 1e6,
            self.seconds,
            self.records_per_sec,
            self.mb_per_sec,
            self.p50_ms,
            self.p99_ms,
            self.p999_ms,
            self.max_ms
        )
    }
}

/// Produces `options.records` records to `endpoint` over one produce stream,
/// spreading batches round-robin over the partitions.
pub async fn produce(endpoint: &str, options: &ProduceOptions) -> anyhow::Result<Report> {
    if options.records == 0 || options.batch_records == 0 || options.partitions == 0 {
        bail!("records, batch size and partitions must be positive");
    }
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connect to {endpoint}"))?;
    let mut admin = AdminServiceClient::new(channel.clone());
    let created = admin
        .create_topic(CreateTopicRequest {
            name: options.topic.clone(),
            partitions: options.partitions,
            config: None,
        })
        .await;
    if let Err(status) = created {
        if status.code() != tonic::Code::AlreadyExists {
            return Err(status).context("create the bench topic");
        }
    }
    let mut producer = ProduceServiceClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    let (requests, outbound) = mpsc::channel(options.in_flight);
    let mut acks = producer
        .produce_stream(ReceiverStream::new(outbound))
        .await
        .context("open the produce stream")?
        .into_inner();
    let mut latencies = Histogram::<u64>::new(3)?;
    let mut sent_at: VecDeque<Instant> = VecDeque::with_capacity(options.in_flight);
    let value = Bytes::from(vec![b'x'; options.record_size]);
    let batches = options.records.div_ceil(options.batch_records as u64);
    let started = Instant::now();
    let mut bytes = 0u64;
    let mut next_batch = 0u64;
    let mut acked = 0u64;
    while acked < batches {
        if next_batch < batches && sent_at.len() < options.in_flight {
            let first = next_batch * options.batch_records as u64;
            let count = (options.records - first).min(options.batch_records as u64);
            let batch = encode(&value, count)?;
            bytes += batch.len() as u64;
            let request = ProduceRequest {
                correlation_id: next_batch,
                batches: vec![PartitionBatch {
                    topic: options.topic.clone(),
                    partition: (next_batch % u64::from(options.partitions)) as u32,
                    batch,
                }],
            };
            sent_at.push_back(Instant::now());
            requests
                .send(request)
                .await
                .context("produce stream closed")?;
            next_batch += 1;
            continue;
        }
        let ack = acks
            .next()
            .await
            .context("produce stream ended early")?
            .context("produce stream failed")?;
        if let Some(error) = ack
            .error
            .or_else(|| ack.results.into_iter().find_map(|r| r.error))
        {
            bail!("produce failed: {}", error.message);
        }
        let sent = sent_at
            .pop_front()
            .context("an acknowledgement nobody waited for")?;
        latencies.record(sent.elapsed().as_micros() as u64)?;
        acked += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    let ms = |q: f64| latencies.value_at_quantile(q) as f64 / 1000.0;
    Ok(Report {
        records: options.records,
        bytes,
        seconds,
        records_per_sec: options.records as f64 / seconds,
        mb_per_sec: bytes as f64 / seconds / 1e6,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: latencies.max() as f64 / 1000.0,
    })
}

fn encode(value: &Bytes, count: u64) -> anyhow::Result<Bytes> {
    let mut builder = BatchBuilder::new(BatchOptions::default());
    let timestamp = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis(),
    )?;
    for _ in 0..count {
        builder.push(&NewRecord {
            timestamp,
            key: None,
            value: Some(value.clone()),
            headers: Vec::new(),
        });
    }
    Ok(builder.build()?)
}

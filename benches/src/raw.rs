//! Produce over the raw pipelined stream (`--raw`): batches encoded once
//! up front, no client library, so the figures are the broker's and the
//! wire's own ceiling. Also fills topics quickly for consume runs.

use std::collections::VecDeque;
use std::time::Instant;

use anyhow::{Context, bail};
use brook_proto::produce_service_client::ProduceServiceClient;
use brook_proto::{PartitionBatch, ProduceRequest};
use brook_record::{BatchBuilder, BatchOptions, Compression, NewRecord};
use bytes::Bytes;
use futures::StreamExt;
use hdrhistogram::Histogram;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

use crate::connection::Connection;
use crate::report::{Figures, Latency, histogram};
use crate::workload::Workload;

/// One raw stream's work.
#[derive(Debug, Clone)]
pub struct RawOptions {
    pub topic: String,
    /// The partitions it writes, round robin: all of them on a broker
    /// alone, those one broker leads in a cluster.
    pub partitions: Vec<u32>,
    /// The index in `partitions` of the first batch's partition.
    pub first_partition: usize,
    pub records: u64,
    pub record_size: usize,
    pub batch_records: usize,
    /// Produce requests in flight on the stream.
    pub in_flight: usize,
    pub compression: Compression,
}

/// `--raw`: `workload.producers` producers, each with a stream on its own
/// connection to every broker that leads partitions of the topic, with
/// batches of about `batch_size` bytes and `max_in_flight` requests each.
pub async fn run(connection: &Connection, workload: &Workload) -> anyhow::Result<Figures> {
    if workload.rate.is_some() || workload.keyed || workload.duration().is_some() {
        bail!("--raw produces a count of keyless records as fast as acknowledged");
    }
    let destinations = destinations(connection, &workload.topic, workload.partitions).await?;
    let started = Instant::now();
    let mut streams = Vec::new();
    for index in 0..workload.producers {
        let template = RawOptions {
            topic: workload.topic.clone(),
            partitions: Vec::new(),
            first_partition: index,
            records: 0,
            record_size: workload.record_size,
            batch_records: (workload.batch_size / workload.record_size.max(1)).max(1),
            in_flight: workload.max_in_flight,
            compression: workload.compression,
        };
        let share = workload.share(index).unwrap_or(0);
        streams.extend(spawn_streams(&destinations, share, &template));
    }
    let mut latencies = histogram();
    for stream in streams {
        latencies.add(stream.await??)?;
    }
    let records = workload.share(0).map_or(0, |_| {
        (0..workload.producers)
            .filter_map(|i| workload.share(i))
            .sum::<u64>()
    });
    Ok(Figures {
        records,
        bytes: records * workload.record_size as u64,
        seconds: started.elapsed().as_secs_f64(),
        latency: Latency::SendToAck,
        latencies,
    })
}

/// Writes `records` records of `record_size` bytes to `topic` (created
/// with `partitions` if missing) over one raw stream per leading broker,
/// for consume runs and retained data; not measured.
pub async fn fill(
    connection: &Connection,
    topic: &str,
    partitions: u32,
    records: u64,
    record_size: usize,
) -> anyhow::Result<()> {
    let destinations = destinations(connection, topic, partitions).await?;
    let template = RawOptions {
        topic: topic.to_owned(),
        partitions: Vec::new(),
        first_partition: 0,
        records: 0,
        record_size,
        batch_records: (256 * 1024 / record_size.max(1)).clamp(1, 10_000),
        in_flight: 32,
        compression: Compression::None,
    };
    for stream in spawn_streams(&destinations, records, &template) {
        stream.await??;
    }
    Ok(())
}

/// Starts one raw stream per destination, each writing its share of
/// `records` to the partitions it leads, otherwise as `template` says (its
/// own `partitions` and `records` are not used).
fn spawn_streams(
    destinations: &[Destination],
    records: u64,
    template: &RawOptions,
) -> Vec<JoinHandle<anyhow::Result<Histogram<u64>>>> {
    destinations
        .iter()
        .zip(split(records, destinations))
        .map(|(destination, records)| {
            let options = RawOptions {
                partitions: destination.partitions.clone(),
                records,
                ..template.clone()
            };
            let connection = destination.connection.clone();
            tokio::spawn(async move { produce(&connection, &options).await })
        })
        .collect()
}

/// A broker the raw stream writes to, and the partitions it leads.
#[derive(Debug, Clone)]
struct Destination {
    connection: Connection,
    partitions: Vec<u32>,
}

/// Creates `topic` unless it exists, and waits for its leaders: the
/// broker `connection` reaches when it is alone, else each leader.
async fn destinations(
    connection: &Connection,
    topic: &str,
    partitions: u32,
) -> anyhow::Result<Vec<Destination>> {
    let client = connection.client().await?;
    let Some(leaders) = crate::produce::ensure_topic(&client, topic, partitions).await? else {
        return Ok(vec![Destination {
            connection: connection.clone(),
            partitions: (0..partitions).collect(),
        }]);
    };
    Ok(leaders
        .into_iter()
        .map(|(address, partitions)| Destination {
            connection: Connection::new(address, connection.options.clone()),
            partitions,
        })
        .collect())
}

/// `records` dealt to the destinations in proportion to the partitions
/// each one leads.
fn split(records: u64, destinations: &[Destination]) -> Vec<u64> {
    let total: u64 = destinations.iter().map(|d| d.partitions.len() as u64).sum();
    let mut shares: Vec<u64> = destinations
        .iter()
        .map(|d| records * d.partitions.len() as u64 / total.max(1))
        .collect();
    let dealt: u64 = shares.iter().sum();
    if let Some(first) = shares.first_mut() {
        *first += records - dealt;
    }
    shares
}

/// Produces `options.records` records over one produce stream, spreading
/// batches round-robin over `options.partitions`; returns request → ack
/// latencies (microseconds, one per batch).
pub async fn produce(
    connection: &Connection,
    options: &RawOptions,
) -> anyhow::Result<Histogram<u64>> {
    let mut latencies = histogram();
    if options.records == 0 {
        return Ok(latencies);
    }
    if options.batch_records == 0 || options.partitions.is_empty() || options.in_flight == 0 {
        bail!("batch size, partitions and in-flight requests must be positive");
    }
    let channel = connection.channel().await?;
    let mut producer = ProduceServiceClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    let (requests, outbound) = mpsc::channel(options.in_flight);
    let mut acks = producer
        .produce_stream(ReceiverStream::new(outbound))
        .await
        .context("open the produce stream")?
        .into_inner();
    let mut sent_at: VecDeque<Instant> = VecDeque::with_capacity(options.in_flight);
    let value = Bytes::from(vec![b'x'; options.record_size]);
    let full_batch = encode(&value, options.batch_records as u64, options.compression)?;
    let batches = options.records.div_ceil(options.batch_records as u64);
    let mut next_batch = 0u64;
    let mut acked = 0u64;
    while acked < batches {
        if next_batch < batches && sent_at.len() < options.in_flight {
            let first = next_batch * options.batch_records as u64;
            let count = (options.records - first).min(options.batch_records as u64);
            let batch = if count == options.batch_records as u64 {
                full_batch.clone()
            } else {
                encode(&value, count, options.compression)?
            };
            let partition = options.partitions
                [(options.first_partition + next_batch as usize) % options.partitions.len()];
            let request = ProduceRequest {
                correlation_id: next_batch,
                batches: vec![PartitionBatch {
                    topic: options.topic.clone(),
                    partition,
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
        crate::produce::record_latency(&mut latencies, sent);
        acked += 1;
    }
    Ok(latencies)
}

/// One batch of `count` copies of `value`; the broker stamps offsets, so
/// the same bytes can be sent again.
fn encode(value: &Bytes, count: u64, compression: Compression) -> anyhow::Result<Bytes> {
    let mut builder = BatchBuilder::new(BatchOptions {
        compression,
        ..BatchOptions::default()
    });
    let timestamp = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .context("the clock is before 1970")?
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

#[cfg(test)]
mod tests {
    use super::*;

    fn led(partitions: &[u32]) -> Destination {
        Destination {
            connection: Connection::new("b:9420", brook_client::ClientOptions::default()),
            partitions: partitions.to_vec(),
        }
    }

    #[test]
    fn records_are_dealt_by_partitions_led_and_add_up() {
        let destinations = [led(&[0, 3]), led(&[1]), led(&[2, 4, 5])];
        assert_eq!(split(600, &destinations), vec![200, 100, 300]);
        assert_eq!(split(7, &destinations), vec![3, 1, 3]);
        assert_eq!(split(0, &destinations), vec![0, 0, 0]);
        assert_eq!(split(5, &[led(&[0])]), vec![5]);
    }
}

//! Read a topic back with `brook_client::Consumer`: fill it first (over
//! the raw stream, not measured) unless `--existing`, then read every
//! record from the earliest offset. Right after the fill the data is in
//! the page cache, so this measures the broker's fetch path and the
//! client's decoding, not the disk.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use brook_client::{Client, Consumer, ConsumerConfig, OffsetReset, OffsetSpec, SeekTo};
use futures::StreamExt;

use crate::connection::Connection;
use crate::report::{Figures, Latency, histogram};
use crate::workload::{Amount, Workload};

pub async fn run(connection: &Connection, workload: &Workload) -> anyhow::Result<Figures> {
    if !workload.existing {
        let Amount::Records(records) = workload.amount else {
            bail!("consume fills the topic with --records (or reads it with --existing)");
        };
        crate::raw::fill(
            connection,
            &workload.topic,
            workload.partitions,
            records,
            workload.record_size,
        )
        .await
        .context("fill the topic")?;
    }
    let client = connection.client().await?;
    let mut consumers = Vec::with_capacity(workload.consumers);
    for mine in partitions_per_consumer(&client, workload).await? {
        consumers.push(prepare(connection, workload, &mine).await?);
    }
    let started = Instant::now();
    let deadline = workload.duration().map(|d| started + d);
    let tasks: Vec<_> = consumers
        .into_iter()
        .map(|(consumer, expected)| tokio::spawn(read(consumer, expected, deadline)))
        .collect();
    let (mut records, mut bytes) = (0, 0);
    for task in tasks {
        let (r, b) = task.await??;
        records += r;
        bytes += b;
    }
    Ok(Figures {
        records,
        bytes,
        seconds: started.elapsed().as_secs_f64(),
        latency: Latency::None,
        latencies: histogram(),
    })
}

/// The topic's partitions dealt round robin to the workload's consumers.
pub(crate) async fn partitions_per_consumer(
    client: &Client,
    workload: &Workload,
) -> anyhow::Result<Vec<Vec<u32>>> {
    let partitions = u32::try_from(
        client
            .describe_topic(&workload.topic)
            .await?
            .partitions
            .len(),
    )?;
    Ok((0..workload.consumers)
        .map(|index| {
            (0..partitions)
                .filter(|p| *p as usize % workload.consumers == index)
                .collect()
        })
        .collect())
}

/// A consumer of `partitions`, sought to their start, and how many records
/// they hold.
async fn prepare(
    connection: &Connection,
    workload: &Workload,
    partitions: &[u32],
) -> anyhow::Result<(Consumer, u64)> {
    let client = connection.client().await?;
    let consumer = Consumer::new(
        client.clone(),
        ConsumerConfig::default()
            .with_max_bytes(workload.fetch_bytes)
            .with_auto_offset_reset(OffsetReset::Earliest)
            .with_max_wait(Duration::from_millis(100)),
    );
    let assignment: Vec<(&str, u32)> = partitions
        .iter()
        .map(|p| (workload.topic.as_str(), *p))
        .collect();
    consumer.assign(&assignment);
    let mut expected = 0;
    for &partition in partitions {
        let end = client
            .list_offsets(&workload.topic, partition, OffsetSpec::Latest)
            .await?;
        let start = consumer
            .seek(&workload.topic, partition, SeekTo::Earliest)
            .await?;
        expected += u64::try_from(end - start)?;
    }
    Ok((consumer, expected))
}

/// Reads `expected` records (or until `deadline`); returns records and value bytes.
async fn read(
    mut consumer: Consumer,
    expected: u64,
    deadline: Option<Instant>,
) -> anyhow::Result<(u64, u64)> {
    let (mut records, mut bytes) = (0u64, 0u64);
    while records < expected {
        // Checked every 1024 records: `Instant::now` per record would cost
        // more than the rest of the loop.
        if records % 1024 == 0 && deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let consumed = consumer
            .next()
            .await
            .context("the consumer stream ended")?
            .context("consume")?;
        records += 1;
        bytes += consumed.record.value.map_or(0, |v| v.len() as u64);
    }
    Ok((records, bytes))
}

//! A quick measurement of the client's produce and consume rates against an
//! in-process broker (fsync on every acknowledgement, as by default), with
//! each compression codec:
//!
//! `cargo run --release -p brook-client --example rates -- [records] [record_size]`
//!
//! The load generator (`brook bench`) is the tool for real figures; this one
//! shows what the `Producer` and `Consumer` themselves cost.

use std::time::{Duration, Instant};

use brook_broker::EmbeddedBroker;
use brook_client::{
    Client, Compression, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord,
    SeekTo, TopicConfig,
};
use futures::StreamExt;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let records: usize = args.next().map_or(Ok(500_000), |a| a.parse())?;
    let record_size: usize = args.next().map_or(Ok(100), |a| a.parse())?;
    let broker = EmbeddedBroker::start().await?;
    let client = Client::connect(broker.endpoint()).await?;
    for compression in [Compression::None, Compression::Lz4, Compression::Zstd] {
        let topic = format!("rates-{compression}");
        client
            .create_topic(&topic, 8, TopicConfig::default())
            .await?;
        let produce = produce(&client, &topic, compression, records, record_size).await?;
        let consume = consume(&client, &topic, records).await?;
        let size = broker
            .broker()
            .describe_topic(&topic)?
            .partitions
            .iter()
            .map(|p| p.size_bytes)
            .sum::<u64>();
        println!(
            "{compression:>4}: produce {:>9.0} records/s, consume {:>9.0} records/s, {:.1} MB on disk",
            records as f64 / produce.as_secs_f64(),
            records as f64 / consume.as_secs_f64(),
            size as f64 / 1e6
        );
    }
    Ok(())
}

/// Sends `records` keyless records (the values compress like text) and
/// waits for every acknowledgement.
async fn produce(
    client: &Client,
    topic: &str,
    compression: Compression,
    records: usize,
    record_size: usize,
) -> anyhow::Result<Duration> {
    let producer = Producer::new(
        client.clone(),
        ProducerConfig::default().with_compression(compression),
    );
    let value: Vec<u8> = b"the quick brown fox jumps over the lazy dog "
        .iter()
        .copied()
        .cycle()
        .take(record_size)
        .collect();
    let started = Instant::now();
    let mut deliveries = Vec::with_capacity(records);
    for _ in 0..records {
        deliveries.push(
            producer
                .enqueue(ProducerRecord::new(topic, value.clone()))
                .await?,
        );
    }
    producer.flush().await;
    for delivery in deliveries {
        delivery.await?;
    }
    let elapsed = started.elapsed();
    producer.close().await;
    Ok(elapsed)
}

/// Reads `records` records back from every partition.
async fn consume(client: &Client, topic: &str, records: usize) -> anyhow::Result<Duration> {
    let partitions = client.describe_topic(topic).await?.partitions.len() as u32;
    let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default());
    let assignment: Vec<(String, u32)> = (0..partitions).map(|p| (topic.to_owned(), p)).collect();
    consumer.assign(&assignment);
    for p in 0..partitions {
        consumer.seek(topic, p, SeekTo::Earliest).await?;
    }
    let started = Instant::now();
    let mut seen = 0;
    while seen < records {
        match consumer.next().await {
            Some(record) => {
                record?;
                seen += 1;
            }
            None => anyhow::bail!("the consumer ended after {seen} records"),
        }
    }
    Ok(started.elapsed())
}

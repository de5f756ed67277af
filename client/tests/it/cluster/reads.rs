//! Reading in a cluster: a consumer reads each partition from the broker
//! that holds it, wherever it connected.

use std::time::Duration;

use brook_broker::EmbeddedCluster;
use brook_client::{
    Client, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig, ProducerRecord,
    TopicConfig,
};
use bytes::Bytes;
use futures::StreamExt;

use super::{STEP_LIMIT, acknowledged};

/// A topic whose partitions each have one replica, on different brokers:
/// a consumer connected to broker 1 reads every partition from the broker
/// that holds it (broker 1 holds no replica of the others, and refuses to
/// serve them).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumer_reads_each_partition_from_the_broker_that_holds_it() {
    const SPREAD: &str = "spread";
    const PER_PARTITION: usize = 20;
    let cluster = EmbeddedCluster::start().await.expect("a cluster");
    let client = Client::connect(cluster.endpoint(1).expect("broker 1"))
        .await
        .expect("connect");
    client
        .create_replicated_topic(SPREAD, 3, Some(1), TopicConfig::default())
        .await
        .expect("create the topic");
    let description = client.describe_cluster().await.expect("describe");
    let elsewhere = description
        .partitions
        .iter()
        .filter(|p| p.topic == SPREAD && !p.replicas.contains(&1))
        .count();
    assert!(elsewhere > 0, "every partition was placed on broker 1");

    let producer = Producer::new(client.clone(), ProducerConfig::default());
    for partition in 0..3u32 {
        for i in 0..PER_PARTITION {
            let record = ProducerRecord::new(SPREAD, Bytes::from(format!("{partition}-{i}")))
                .partition(partition);
            acknowledged(&producer, record).await.expect("acknowledged");
        }
    }
    producer.close().await;

    let mut consumer = Consumer::new(
        client,
        ConsumerConfig::default()
            .with_max_wait(Duration::from_millis(100))
            .with_auto_offset_reset(OffsetReset::Earliest),
    );
    consumer.assign(&[(SPREAD, 0), (SPREAD, 1), (SPREAD, 2)]);
    let mut read: Vec<Vec<String>> = vec![Vec::new(); 3];
    for _ in 0..3 * PER_PARTITION {
        let consumed = tokio::time::timeout(STEP_LIMIT, consumer.next())
            .await
            .expect("a record in time")
            .expect("the stream goes on")
            .expect("no error");
        let value = consumed.record.value.clone().expect("a value");
        read[consumed.partition as usize].push(String::from_utf8(value.to_vec()).expect("text"));
    }
    for (partition, values) in read.iter().enumerate() {
        let expected: Vec<String> = (0..PER_PARTITION)
            .map(|i| format!("{partition}-{i}"))
            .collect();
        assert_eq!(values, &expected, "partition {partition}");
    }
    drop(consumer);
    cluster.shutdown().await.expect("a clean shutdown");
}

//! Producing where the client must find each partition's leader itself.

use std::time::Duration;

use brook_broker::EmbeddedCluster;
use brook_client::{Client, Producer, ProducerConfig, ProducerRecord, TopicConfig};
use bytes::Bytes;

use super::STEP_LIMIT;

/// A producer that starts on a topic the moment it is created, while its
/// partitions elect their leaders: its batches go to the broker it connected
/// to, most are refused with the leader named, and with several requests in
/// flight per partition they must still reach the leader (a retry sent at
/// once after the old broker, behind requests still in flight there, was
/// refused again and again until the delivery timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_producer_started_during_the_first_elections_reaches_every_leader() {
    const TOPIC: &str = "fresh";
    const PARTITIONS: u32 = 6;
    const RECORDS: u32 = 30_000;
    let cluster = EmbeddedCluster::start().await.expect("a cluster");
    let client = Client::connect(cluster.endpoint(1).expect("broker 1"))
        .await
        .expect("connect");
    client
        .create_replicated_topic(TOPIC, PARTITIONS, Some(3), TopicConfig::default())
        .await
        .expect("create the topic");
    let producer = Producer::new(
        client.clone(),
        ProducerConfig::default()
            .with_linger(Duration::ZERO)
            .with_batch_size(4096)
            .with_delivery_timeout(STEP_LIMIT),
    );
    let mut deliveries = Vec::new();
    for n in 0..RECORDS {
        let record =
            ProducerRecord::new(TOPIC, Bytes::from(vec![b'x'; 200])).partition(n % PARTITIONS);
        deliveries.push(producer.enqueue(record).await.expect("accepted"));
    }
    let all = futures::future::join_all(deliveries);
    let answers = tokio::time::timeout(STEP_LIMIT + Duration::from_secs(5), all)
        .await
        .expect("every record answered");
    let failed = answers.iter().filter(|answer| answer.is_err()).count();
    assert_eq!(
        failed,
        0,
        "records not delivered: {:?}",
        answers.iter().find(|a| a.is_err())
    );
    producer.close().await;
    cluster.shutdown().await.expect("a clean shutdown");
}

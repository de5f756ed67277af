//! Several brokers of an `EmbeddedCluster` in the test's process: a leader
//! cut off from its peers, reads routed to the brokers that hold the
//! partitions, ACLs, quotas and topic settings the same everywhere, and
//! consumer groups that outlive their coordinator.

use std::ops::Range;
use std::time::Duration;

use brook_client::{Client, ClientError, Producer, ProducerConfig, ProducerRecord, RecordMetadata};
use bytes::Bytes;

mod cut_off;
mod groups;
mod heartbeats;
mod membership;
mod producing;
mod reads;
mod routing;
mod settings;

/// How long one step (an election, catching up, a change reaching every
/// broker) may take.
const STEP_LIMIT: Duration = Duration::from_secs(30);

/// Sends `record` and waits for its acknowledgement, at most `STEP_LIMIT`.
async fn acknowledged(
    producer: &Producer,
    record: ProducerRecord,
) -> Result<RecordMetadata, ClientError> {
    tokio::time::timeout(STEP_LIMIT, producer.send(record))
        .await
        .expect("acknowledged in time")
}

/// Produces the values `numbers` to `topic` through `client`, number `n`
/// to partition `n % partitions`, each acknowledged.
async fn send_numbered(client: &Client, topic: &str, numbers: Range<u64>, partitions: u64) {
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    for n in numbers {
        let partition = u32::try_from(n % partitions).expect("a partition");
        let record = ProducerRecord::new(topic, Bytes::from(n.to_string())).partition(partition);
        acknowledged(&producer, record).await.expect("acknowledged");
    }
    producer.close().await;
}

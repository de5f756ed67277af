//! Topics of a three-broker cluster are created and deleted through its
//! metadata group: a topic deleted and created again under its name while
//! a broker was down is, on that broker once it is back, the new topic and
//! not the old one's records.

use std::time::{Duration, Instant};

use brook_client::{Client, Producer, ProducerConfig, ProducerRecord};
use bytes::Bytes;
use nix::sys::signal::Signal;

use crate::common;
use crate::three_brokers::{Cluster, STEP_LIMIT, create_replicated_topic};

const TOPIC: &str = "reborn";

async fn produce(client: &Client, numbers: impl IntoIterator<Item = u64>) {
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    for number in numbers {
        producer
            .send(ProducerRecord::new(TOPIC, Bytes::from(number.to_string())))
            .await
            .expect("acknowledged");
    }
    producer.close().await;
}

/// Waits (bounded) until broker `id` lists the topics `expected` says.
async fn wait_for_topics(cluster: &Cluster, id: u64, expected: bool) {
    let client = Client::connect(cluster.address(id)).await.expect("connect");
    let deadline = Instant::now() + STEP_LIMIT;
    loop {
        let topics = client.list_topics().await.expect("list topics");
        if topics.iter().any(|t| t.name == TOPIC) == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "broker {id} never {} the topic",
            if expected { "held" } else { "dropped" }
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_topic_deleted_and_created_again_while_a_broker_was_down_is_the_new_one_there() {
    let mut cluster = Cluster::start().await;
    let client = Client::connect(cluster.address(1))
        .await
        .expect("connect to a broker");
    create_replicated_topic(&client, TOPIC).await;
    produce(&client, 0..10).await;
    cluster.leader(TOPIC, &[1, 2, 3]).await;

    // Deleted through broker 2: every broker drops it.
    let second = Client::connect(cluster.address(2))
        .await
        .expect("connect to broker 2");
    second.delete_topic(TOPIC).await.expect("delete the topic");
    for id in 1..=3 {
        wait_for_topics(&cluster, id, false).await;
    }

    // Created again, and deleted and created once more, while broker 3 is
    // down: it comes back holding the old copy of the name.
    create_replicated_topic(&client, TOPIC).await;
    cluster.leader(TOPIC, &[1, 2, 3]).await;
    let stopped = cluster.servers[2].take().expect("broker 3 runs");
    stopped.stop(Signal::SIGKILL).await;
    client.delete_topic(TOPIC).await.expect("delete again");
    create_replicated_topic(&client, TOPIC).await;
    produce(&client, [100, 101]).await;
    cluster.servers[2] = Some(cluster.start_broker(3).await);
    cluster.leader(TOPIC, &[1, 2, 3]).await;

    for id in 1..=3 {
        let replica = Client::connect(cluster.address(id))
            .await
            .expect("connect to a replica");
        assert_eq!(
            common::read_sequence_numbers(&replica, TOPIC, 0).await,
            vec![100, 101],
            "broker {id} holds the new topic's records only"
        );
    }
    for server in cluster.servers.into_iter().flatten() {
        server.stop(Signal::SIGTERM).await;
    }
}

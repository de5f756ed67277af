//! Idle partitions keep their leaders: the heartbeats of the partitions a
//! broker leads, sent on one clock and gathered into one call per peer,
//! reach every follower in time, so no follower stands for election.

use std::time::{Duration, Instant};

use brook_broker::EmbeddedCluster;
use brook_client::{Client, TopicConfig};

use super::STEP_LIMIT;

const TOPIC: &str = "idle";
const PARTITIONS: u32 = 24;

/// Elections the brokers' metrics have counted.
fn elections(cluster: &EmbeddedCluster) -> u64 {
    cluster
        .ids()
        .map(|id| {
            cluster
                .broker(id)
                .expect("the broker runs")
                .broker()
                .metrics()
                .partition_elections
                .get()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_partitions_keep_their_leaders() {
    let cluster = EmbeddedCluster::start().await.expect("a cluster");
    let client = Client::connect(cluster.endpoint(1).expect("broker 1"))
        .await
        .expect("connect");
    client
        .create_replicated_topic(TOPIC, PARTITIONS, Some(3), TopicConfig::default())
        .await
        .expect("create the topic");
    // Every partition led by its preferred replica (which would otherwise
    // be handed leadership later, an election of its own).
    let deadline = Instant::now() + STEP_LIMIT;
    loop {
        let description = client.describe_cluster().await.expect("describe");
        let settled = description
            .partitions
            .iter()
            .filter(|p| p.topic == TOPIC)
            .filter(|p| p.leader != 0 && p.replicas.first() == Some(&p.leader))
            .count();
        if settled == PARTITIONS as usize {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{settled} of {PARTITIONS} partitions led by their preferred replica after {STEP_LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The metrics sample every second: once past the first elections,
    // 3 s of silence would be four election timeouts.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = elections(&cluster);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = elections(&cluster);
    assert_eq!(
        after - before,
        0,
        "elections among idle partitions: their leaders' heartbeats did not arrive in time"
    );
    cluster.shutdown().await.expect("a clean shutdown");
}

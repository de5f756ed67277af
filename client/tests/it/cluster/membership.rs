//! Brokers added to and removed from an `EmbeddedCluster`, and a partition
//! moved under a producer: a spare broker started to join is added, the
//! partition moves off its leader onto the new broker while an idempotent
//! producer writes, and every acknowledged record ends up on each new
//! replica exactly once, at its offset; the old replica's records and Raft
//! files are gone, and the broker that held it can then be removed (one
//! that holds a replica cannot).

use std::time::{Duration, Instant};

use brook_broker::EmbeddedCluster;
use brook_client::{Client, ErrorKind, PartitionReplicas, TopicConfig};

use super::STEP_LIMIT;
use super::producing::{Producing, log_of, producer_options};

const TOPIC: &str = "moving";
const SPARE: u64 = 4;

/// Partition 0 of `topic` as broker `asked` describes it, once `done`
/// holds for it.
async fn partition_when(
    cluster: &EmbeddedCluster,
    asked: u64,
    topic: &str,
    done: impl Fn(&PartitionReplicas) -> bool,
) -> PartitionReplicas {
    let deadline = Instant::now() + STEP_LIMIT;
    let client = Client::connect(cluster.endpoint(asked).expect("a broker"))
        .await
        .expect("connect");
    let mut last = None;
    loop {
        if let Ok(description) = client.describe_cluster().await
            && let Some(partition) = description
                .partitions
                .into_iter()
                .find(|p| p.topic == topic && p.partition == 0)
        {
            if done(&partition) {
                return partition;
            }
            last = Some(partition);
        }
        assert!(
            Instant::now() < deadline,
            "partition 0 of {topic} not as wanted within {STEP_LIMIT:?}: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts a `Producing` through broker `bootstrap`.
async fn produce_through(cluster: &EmbeddedCluster, bootstrap: u64) -> Producing {
    let client = Client::connect_with(
        cluster.endpoint(bootstrap).expect("a broker"),
        producer_options(),
    )
    .await
    .expect("connect");
    Producing::start(client, TOPIC)
}

/// Waits until broker `id` holds every acknowledged record, then checks
/// that each is there once, at its offset.
async fn holds_every_acknowledged(cluster: &EmbeddedCluster, id: u64, acknowledged: &[(u64, i64)]) {
    let last = acknowledged
        .iter()
        .map(|(_, offset)| *offset)
        .max()
        .expect("records");
    let deadline = Instant::now() + STEP_LIMIT;
    let client = Client::connect(cluster.endpoint(id).expect("a broker"))
        .await
        .expect("connect");
    let log = loop {
        let log = log_of(&client, TOPIC).await;
        if i64::try_from(log.len()).expect("a count") > last {
            break log;
        }
        assert!(Instant::now() < deadline, "broker {id} did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for (seq, offset) in acknowledged {
        let at = usize::try_from(*offset).expect("an offset");
        assert_eq!(
            log.get(at),
            Some(&seq.to_string()),
            "broker {id}: record {seq} acknowledged at offset {offset}"
        );
    }
    let mut distinct = log.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        log.len(),
        "broker {id} holds a record twice"
    );
}

/// Three brokers and `spares` not started, a topic of one partition with
/// three replicas, a client of broker 1, and the partition once it has a
/// leader.
async fn three_brokers_and_a_topic(spares: u64) -> (EmbeddedCluster, Client, PartitionReplicas) {
    let cluster = EmbeddedCluster::builder()
        .brokers(3)
        .spares(spares)
        .start()
        .await
        .expect("a cluster");
    let admin = Client::connect(cluster.endpoint(1).expect("broker 1"))
        .await
        .expect("connect");
    admin
        .create_replicated_topic(TOPIC, 1, Some(3), TopicConfig::default())
        .await
        .expect("create the topic");
    let partition = partition_when(&cluster, 1, TOPIC, |p| p.leader != 0).await;
    (cluster, admin, partition)
}

/// Starts the spare (it joins) and adds it, as an operator would.
async fn add_the_spare(cluster: &mut EmbeddedCluster, admin: &Client) {
    cluster.restart(SPARE).await.expect("start the spare");
    let address = cluster
        .endpoint(SPARE)
        .expect("the spare")
        .trim_start_matches("http://")
        .to_owned();
    admin
        .add_broker(SPARE, &address)
        .await
        .expect("add the spare");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition_moves_off_its_leader_onto_an_added_broker_under_a_producer() {
    let (mut cluster, admin, before) = three_brokers_and_a_topic(1).await;
    let leaving = before.leader;

    // The spare joins: started, then added by an operator.
    add_the_spare(&mut cluster, &admin).await;
    let described = admin.describe_cluster().await.expect("describe");
    assert!(
        described.brokers.iter().any(|b| b.id == SPARE),
        "the added broker is listed: {described:?}"
    );

    let staying = (1..=3).find(|id| *id != leaving).expect("another broker");
    let producing = produce_through(&cluster, staying).await;
    producing.wait_for(500, "the producer stalled").await;

    // The leader moves off: the spare takes its place, first in the list.
    let target: Vec<u64> = std::iter::once(SPARE)
        .chain(before.replicas.iter().copied().filter(|id| *id != leaving))
        .collect();
    admin
        .reassign_partitions(TOPIC, &[(0, target.clone())])
        .await
        .expect("move the partition");
    let moved = partition_when(&cluster, 1, TOPIC, |p| {
        p.replicas == target && p.moving_to.is_empty() && p.leader != 0
    })
    .await;
    assert_ne!(moved.leader, leaving, "the old leader was moved off");
    producing
        .wait_for(producing.count() + 500, "the producer stalled")
        .await;
    let (acknowledged, _) = producing.stop(STEP_LIMIT).await;
    // Every new replica holds every acknowledged record once, at its
    // offset, once it has caught up.
    for id in &target {
        holds_every_acknowledged(&cluster, *id, &acknowledged).await;
    }

    // The replica that left dropped its records and its Raft files, and
    // names the partition's brokers instead of serving it.
    let left = cluster.broker(leaving).expect("the old leader runs");
    let raft_dir = left
        .data_dir()
        .join("cluster")
        .join("partitions")
        .join(TOPIC)
        .join("0");
    let deadline = Instant::now() + STEP_LIMIT;
    while raft_dir.exists() {
        assert!(
            Instant::now() < deadline,
            "{} is still there",
            raft_dir.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = left
        .broker()
        .partition(TOPIC, 0)
        .expect("the partition")
        .log()
        .clone();
    assert_eq!((log.start_offset(), log.high_watermark()), (0, 0));

    // A broker that holds a replica cannot be removed; the one that left
    // can, and new topics are placed on the others only.
    let refused = admin
        .remove_broker(target[1])
        .await
        .expect_err("removed a broker that holds a replica");
    assert_eq!(refused.kind(), ErrorKind::FailedPrecondition, "{refused}");
    assert!(refused.to_string().contains(TOPIC), "{refused}");
    let asked = target[1];
    let admin = Client::connect(cluster.endpoint(asked).expect("a broker"))
        .await
        .expect("connect");
    admin
        .remove_broker(leaving)
        .await
        .expect("remove the broker");
    let described = admin.describe_cluster().await.expect("describe");
    assert!(
        described.brokers.iter().all(|b| b.id != leaving),
        "the removed broker is not listed: {described:?}"
    );
    // The removed broker may have led the metadata group: until the
    // others elect a leader, a change is refused as UNAVAILABLE, which a
    // client retries.
    let deadline = Instant::now() + STEP_LIMIT;
    loop {
        match admin
            .create_replicated_topic("after", 3, Some(3), TopicConfig::default())
            .await
        {
            Ok(_) => break,
            Err(error) if error.kind() == ErrorKind::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("create a topic after the removal: {error}"),
        }
    }
    let placed = partition_when(&cluster, asked, "after", |p| p.leader != 0).await;
    assert!(
        !placed.replicas.contains(&leaving),
        "placed on the removed broker: {placed:?}"
    );
    let unknown = admin
        .remove_broker(99)
        .await
        .expect_err("removed a broker that does not exist");
    assert_eq!(unknown.kind(), ErrorKind::NotFound, "{unknown}");
    cluster.shutdown().await.expect("shutdown");
}

/// After its preferred replica (the first of its list) restarts, a
/// partition's leadership goes back to it by itself, with no error for a
/// producer writing meanwhile and nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leadership_goes_back_to_the_preferred_replica_after_it_restarts() {
    let (mut cluster, _, created) = three_brokers_and_a_topic(0).await;
    let preferred = created.replicas[0];
    let other = created.replicas[1];

    cluster
        .stop(preferred)
        .await
        .expect("stop the preferred replica");
    partition_when(&cluster, other, TOPIC, |p| {
        p.leader != 0 && p.leader != preferred
    })
    .await;
    let producing = produce_through(&cluster, other).await;
    producing.wait_for(500, "the producer stalled").await;
    cluster
        .restart(preferred)
        .await
        .expect("start the preferred replica again");
    // It leads again once it has caught up and the stand-in has led for
    // 10 s (looked at every 5 s).
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let back = partition_when(&cluster, other, TOPIC, |p| p.leader != 0).await;
        if back.leader == preferred {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leadership did not go back to broker {preferred}: {back:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    producing
        .wait_for(producing.count() + 500, "the producer stalled")
        .await;
    let (acknowledged, _) = producing.stop(STEP_LIMIT).await;
    for id in &created.replicas {
        holds_every_acknowledged(&cluster, *id, &acknowledged).await;
    }
    cluster.shutdown().await.expect("shutdown");
}

/// A move to a broker that is down waits for it; naming the partition's
/// current replicas calls the move off, and the partition goes on where it
/// was, taking produces, with nothing placed on the broker when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_move_to_a_broker_that_is_down_can_be_called_off() {
    let (mut cluster, admin, before) = three_brokers_and_a_topic(1).await;
    add_the_spare(&mut cluster, &admin).await;
    cluster.stop(SPARE).await.expect("stop the spare");

    let target: Vec<u64> = before.replicas[..2]
        .iter()
        .copied()
        .chain(std::iter::once(SPARE))
        .collect();
    admin
        .reassign_partitions(TOPIC, &[(0, target.clone())])
        .await
        .expect("move the partition");
    partition_when(&cluster, 1, TOPIC, |p| p.moving_to == target).await;
    // The spare cannot catch up: the move waits.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let waiting = partition_when(&cluster, 1, TOPIC, |_| true).await;
    assert_eq!(waiting.moving_to, target, "{waiting:?}");
    assert_eq!(waiting.replicas, before.replicas);

    admin
        .reassign_partitions(TOPIC, &[(0, before.replicas.clone())])
        .await
        .expect("call the move off");
    partition_when(&cluster, 1, TOPIC, |p| {
        p.moving_to.is_empty() && p.replicas == before.replicas && p.leader != 0
    })
    .await;
    let producing = produce_through(&cluster, 1).await;
    producing.wait_for(300, "the producer stalled").await;
    cluster.restart(SPARE).await.expect("start the spare again");
    producing
        .wait_for(producing.count() + 300, "the producer stalled")
        .await;
    let (acknowledged, _) = producing.stop(STEP_LIMIT).await;
    for id in &before.replicas {
        holds_every_acknowledged(&cluster, *id, &acknowledged).await;
    }
    let spare = cluster.broker(SPARE).expect("the spare runs");
    let log = spare
        .broker()
        .partition(TOPIC, 0)
        .expect("the partition")
        .log()
        .clone();
    assert_eq!(log.high_watermark(), 0, "the spare holds none of it");
    cluster.shutdown().await.expect("shutdown");
}

//! Consumer groups in a cluster: one coordinator for every member of a
//! group, wherever it connected; groups spread over the brokers; committed
//! offsets that outlive their coordinator.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use brook_broker::EmbeddedCluster;
use brook_client::{
    Client, ConsumedRecord, GroupClient, GroupConfig, GroupConsumer, OffsetReset, TopicConfig,
};

use super::{STEP_LIMIT, send_numbered};

/// A consumer group in a cluster: members connected to different brokers
/// form one group at the broker that coordinates it; its
/// committed offsets outlive that broker, and the members go on at the
/// next one from where they had committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_spans_the_cluster_and_its_offsets_outlive_its_coordinator() {
    const EVENTS: &str = "events";
    const GROUP: &str = "billing";
    let mut cluster = EmbeddedCluster::start().await.expect("a cluster");
    let endpoints = cluster.endpoints();
    let client = Client::connect(endpoints[0].clone())
        .await
        .expect("connect");
    client
        .create_replicated_topic(EVENTS, 4, Some(3), TopicConfig::default())
        .await
        .expect("create the topic");
    send_numbered(&client, EVENTS, 0..200, 4).await;

    // Two members, each connected to another broker.
    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let mut members = Vec::new();
    for endpoint in &endpoints[1..] {
        let groups = GroupClient::connect(endpoint.clone())
            .await
            .expect("connect");
        let config = GroupConfig::new(GROUP, [EVENTS])
            .with_session_timeout(Duration::from_secs(1))
            .with_auto_offset_reset(OffsetReset::Earliest)
            .with_commit_interval(Duration::from_millis(100))
            .with_max_wait(Duration::from_millis(100));
        let member = GroupConsumer::join(groups, config).await.expect("join");
        let handle = member.handle();
        let seen = seen.clone();
        let task = tokio::spawn(member.run(move |consumed: ConsumedRecord| {
            let seen = seen.clone();
            async move {
                let value = consumed.record.value.clone().expect("a value");
                let seq: u64 = std::str::from_utf8(&value)
                    .expect("text")
                    .parse()
                    .expect("a number");
                seen.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(seq);
                Ok::<(), std::io::Error>(())
            }
        }));
        members.push((handle, task));
    }
    let seen_now = || seen.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let deadline = Instant::now() + STEP_LIMIT;
    while seen_now()
        .iter()
        .collect::<std::collections::BTreeSet<_>>()
        .len()
        < 200
    {
        assert!(
            Instant::now() < deadline,
            "the group consumed {} of 200",
            seen_now().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // One group: two groups would each have consumed everything.
    assert!(
        seen_now().len() < 300,
        "{} records handed out for 200",
        seen_now().len()
    );

    // Everything committed, as the coordinator says.
    let groups = GroupClient::connect(endpoints[0].clone())
        .await
        .expect("connect");
    let deadline = Instant::now() + STEP_LIMIT;
    loop {
        let described = groups
            .describe_group(GROUP)
            .await
            .expect("describe the group");
        if described.partitions.len() == 4 && described.partitions.iter().all(|p| p.lag == 0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not all committed: {described:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let coordinator = client
        .find_coordinator(GROUP)
        .await
        .expect("find the group's coordinator")
        .node_id;
    let handed_out_before = seen_now().len();
    cluster
        .stop(coordinator)
        .await
        .expect("stop the coordinator");

    let survivor = endpoints
        .iter()
        .enumerate()
        .find(|(index, _)| *index as u64 + 1 != coordinator)
        .map(|(_, endpoint)| endpoint.clone())
        .expect("a broker left");
    let client = Client::connect(survivor).await.expect("connect");
    send_numbered(&client, EVENTS, 200..300, 4).await;
    let deadline = Instant::now() + STEP_LIMIT;
    while !(200..300).all(|seq| seen_now().contains(&seq)) {
        assert!(
            Instant::now() < deadline,
            "the group did not go on after broker {coordinator} (its coordinator) stopped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The new coordinator had the committed offsets: nothing before them
    // was handed out again.
    let again = seen_now()[handed_out_before..]
        .iter()
        .filter(|seq| **seq < 200)
        .count();
    assert_eq!(
        again, 0,
        "records committed before the coordinator stopped were handed out again"
    );
    for (handle, task) in members {
        handle.shutdown();
        let _ = tokio::time::timeout(STEP_LIMIT, task).await;
    }
    cluster.shutdown().await.expect("a clean shutdown");
}

/// Partitions with one replica each, on different brokers: the
/// coordinator holds at most one of them, and takes the commits of all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_commits_partitions_its_coordinator_does_not_hold() {
    const SPREAD: &str = "spread-out";
    const GROUP: &str = "spread";
    let cluster = EmbeddedCluster::start().await.expect("a cluster");
    let endpoints = cluster.endpoints();
    let client = Client::connect(endpoints[0].clone())
        .await
        .expect("connect");
    client
        .create_replicated_topic(SPREAD, 3, Some(1), TopicConfig::default())
        .await
        .expect("create the topic");
    send_numbered(&client, SPREAD, 0..30, 3).await;

    let groups = GroupClient::connect(endpoints[1].clone())
        .await
        .expect("connect");
    let config = GroupConfig::new(GROUP, [SPREAD])
        .with_auto_offset_reset(OffsetReset::Earliest)
        .with_commit_interval(Duration::from_millis(100))
        .with_max_wait(Duration::from_millis(100));
    let member = GroupConsumer::join(groups.clone(), config)
        .await
        .expect("join");
    let handle = member.handle();
    let task = tokio::spawn(member.run(|_: ConsumedRecord| async { Ok::<(), std::io::Error>(()) }));
    let deadline = Instant::now() + STEP_LIMIT;
    loop {
        let committed = groups
            .fetch_offsets(GROUP, &[])
            .await
            .expect("fetch offsets");
        if committed.len() == 3 && committed.iter().all(|p| p.offset == 10) {
            break;
        }
        assert!(Instant::now() < deadline, "committed: {committed:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    handle.shutdown();
    let _ = tokio::time::timeout(STEP_LIMIT, task).await;
    cluster.shutdown().await.expect("a clean shutdown");
}

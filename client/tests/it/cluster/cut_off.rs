//! Three brokers of an `EmbeddedCluster`, one topic with three replicas,
//! and the leader of its partition cut off from its peers (its clients
//! still reach it): it acknowledges nothing from then on (and soon
//! refuses at once what it is sent), the two others elect a leader and the
//! producer goes on there, and so does a consumer reading the partition
//! (the cut-off leader soon refuses reads too, rather than serving nothing
//! newer); once the link is healed every replica holds every acknowledged
//! record exactly once, at its acknowledged offset, and none of what the
//! cut-off leader took alone.

use std::time::{Duration, Instant};

use brook_broker::EmbeddedCluster;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use brook_client::{
    Client, Consumer, ConsumerConfig, ErrorKind, FetchOptions, NewRecord, OffsetReset, OffsetSpec,
    TopicConfig,
};
use bytes::Bytes;
use futures::StreamExt;

use super::STEP_LIMIT;
use super::producing::{Producing, log_of, producer_options};

const TOPIC: &str = "cut-off";
/// What the cut-off leader is sent directly.
const ORPHAN: &str = "taken by the cut-off leader alone";

/// The leader of partition 0 of `TOPIC` once every replica has caught up,
/// as the brokers in `asked` say; with `preferred`, once the partition is
/// led by its preferred replica (the first listed) too. A leader other
/// than the preferred one hands leadership over after leading for a while,
/// which would move it under the test's feet.
async fn leader(cluster: &EmbeddedCluster, asked: &[u64], preferred: bool) -> u64 {
    let deadline = Instant::now() + STEP_LIMIT;
    loop {
        for id in asked {
            let endpoint = cluster.endpoint(*id).expect("a broker of the cluster");
            if let Ok(client) = Client::connect(endpoint).await
                && let Ok(description) = client.describe_cluster().await
                && let Some(partition) = description.partitions.iter().find(|p| p.topic == TOPIC)
                && partition.leader != 0
                && (!preferred || partition.replicas.first() == Some(&partition.leader))
                && partition.lag.len() == 3
                && partition.lag.values().all(|lag| *lag == 0)
            {
                return partition.leader;
            }
        }
        assert!(Instant::now() < deadline, "no leader within {STEP_LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The leader of partition 0 of `TOPIC` as the broker `client` is
/// connected to describes it.
async fn leader_named_by(client: &Client) -> Option<u64> {
    let description = client.describe_cluster().await.ok()?;
    description
        .partitions
        .iter()
        .find(|p| p.topic == TOPIC)
        .map(|p| p.leader)
}

async fn high_watermark(client: &Client) -> i64 {
    client
        .list_offsets(TOPIC, 0, OffsetSpec::Latest)
        .await
        .expect("the high watermark")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_cut_off_from_its_peers_acknowledges_nothing_and_the_majority_goes_on() {
    leader_cut_off_under_a_producer(false).await;
}

/// The same with the producer connected to the leader that is cut off: it
/// must find the others by itself (the cut-off leader still names itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_producer_connected_to_a_leader_cut_off_goes_on_with_the_majority() {
    leader_cut_off_under_a_producer(true).await;
}

async fn leader_cut_off_under_a_producer(bootstrap_at_leader: bool) {
    let cluster = EmbeddedCluster::start().await.expect("a cluster");
    let admin = Client::connect(cluster.endpoint(1).expect("broker 1"))
        .await
        .expect("connect");
    admin
        .create_replicated_topic(TOPIC, 1, Some(3), TopicConfig::default())
        .await
        .expect("create the topic");
    let mut cut = leader(&cluster, &[1, 2, 3], true).await;
    let others = |cut: u64| -> Vec<u64> { cluster.ids().filter(|id| *id != cut).collect() };

    // The producer gives up on a request after 2 s: what the cut-off
    // leader took before it refuses is never answered.
    let options = producer_options();
    let bootstrap = if bootstrap_at_leader {
        cut
    } else {
        others(cut)[0]
    };
    let client = Client::connect_with(
        cluster.endpoint(bootstrap).expect("a broker"),
        options.clone(),
    )
    .await
    .expect("connect");
    let producing = Producing::start(client.clone(), TOPIC);
    producing.wait_for(500, "the producer did not start").await;
    // A consumer of the partition, connected where the producer is: the
    // highest offset it has read.
    let read_up_to = Arc::new(AtomicI64::new(-1));
    let consuming = {
        let read_up_to = read_up_to.clone();
        let config = ConsumerConfig::default()
            .with_max_wait(Duration::from_millis(100))
            .with_auto_offset_reset(OffsetReset::Earliest);
        let mut consumer = Consumer::new(client, config);
        consumer.assign(&[(TOPIC, 0)]);
        tokio::spawn(async move {
            while let Some(consumed) = consumer.next().await {
                if let Ok(consumed) = consumed {
                    read_up_to.fetch_max(consumed.record.offset, Ordering::Relaxed);
                }
            }
        })
    };

    // Cut off, a broker cannot win an election, so if it names itself
    // right after the cut it led at the cut: what follows tests a cut-off
    // leader, not a follower. On two busy cores an election can move the
    // leadership before the cut; the leader there is then is cut instead.
    let mut cuts = 0;
    let (cut_at, at_cut) = loop {
        cluster.isolate(cut);
        let cut_at = Instant::now();
        let at_cut =
            Client::connect_with(cluster.endpoint(cut).expect("a broker"), options.clone())
                .await
                .expect("connect to the cut-off leader");
        let named = leader_named_by(&at_cut).await;
        if named == Some(cut) {
            break (cut_at, at_cut);
        }
        cuts += 1;
        assert!(
            cuts < 3,
            "broker {cut} no longer led the partition when it was cut off (it names {named:?}), {cuts} times"
        );
        cluster.heal(cut);
        cut = leader_of_majority(&cluster, &[1, 2, 3]).await;
    };
    let majority = others(cut);
    // A subscription at the cut-off leader, opened before it refuses reads:
    // it must end, rather than wait at the tail for records the majority
    // takes elsewhere.
    let subscribed = {
        let mut subscription = at_cut
            .subscribe(TOPIC, 0, 0)
            .await
            .expect("subscribe at the cut-off leader");
        tokio::spawn(async move {
            while let Some(pushed) = subscription.next().await {
                if let Err(ended) = pushed {
                    return Some(ended);
                }
            }
            None
        })
    };
    // What the leader committed before the cut may still be applied.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let watermark_after_cut = high_watermark(&at_cut).await;
    let orphan = [NewRecord {
        value: Some(Bytes::from(ORPHAN)),
        ..NewRecord::default()
    }];
    let answer = at_cut.produce(TOPIC, 0, &orphan).await;
    assert!(
        answer.is_err(),
        "the cut-off leader acknowledged a record: {answer:?}"
    );
    // Once it has heard from no majority for a while, it says so at once
    // rather than leaving the client to its timeout.
    tokio::time::sleep_until((cut_at + Duration::from_millis(1500)).into()).await;
    let asked_at = Instant::now();
    let refused = at_cut
        .produce(TOPIC, 0, &orphan)
        .await
        .expect_err("the cut-off leader acknowledged a record");
    assert_eq!(refused.kind(), ErrorKind::Unavailable, "{refused}");
    assert!(
        asked_at.elapsed() < Duration::from_secs(1),
        "refused only after {:?}: {refused}",
        asked_at.elapsed()
    );
    // And reads: it would serve nothing newer than the cut.
    let read = at_cut
        .fetch(
            TOPIC,
            0,
            0,
            FetchOptions::default().with_max_wait(Duration::ZERO),
        )
        .await;
    match read {
        Ok(fetched) => {
            // Whom it takes for the leader says whether it still led.
            let described = at_cut.describe_cluster().await;
            let seen = described.as_ref().map(|d| {
                d.partitions
                    .iter()
                    .find(|p| p.topic == TOPIC)
                    .map(|p| (p.leader, p.lag.clone()))
            });
            panic!(
                "the cut-off leader (broker {cut}) served a read: {} records; it describes the partition as (leader, lag) {seen:?}",
                fetched.records.len()
            )
        }
        Err(unread) => assert_eq!(unread.kind(), ErrorKind::Unavailable, "{unread}"),
    }
    let ended = tokio::time::timeout_at((cut_at + Duration::from_secs(4)).into(), subscribed)
        .await
        .expect("the subscription at the cut-off leader still waits for records 4 s after the cut")
        .expect("the subscription's task");
    let ended = ended.expect("the subscription ended without an error");
    assert_eq!(ended.kind(), ErrorKind::Unavailable, "{ended}");

    // The majority elects a leader and the producer goes on there.
    producing
        .wait_for(
            producing.count() + 500,
            &format!("the producer made no progress while broker {cut} was cut off"),
        )
        .await;
    let new_leader = leader_of_majority(&cluster, &majority).await;
    assert_ne!(new_leader, cut);
    let deadline = Instant::now() + STEP_LIMIT;
    while read_up_to.load(Ordering::Relaxed) <= watermark_after_cut {
        assert!(
            Instant::now() < deadline,
            "the consumer read nothing the majority took after broker {cut} was cut off (up to offset {})",
            read_up_to.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    consuming.abort();
    // It refuses reads by now; if it answers, its high watermark has not
    // moved.
    match at_cut.list_offsets(TOPIC, 0, OffsetSpec::Latest).await {
        Ok(watermark) => assert_eq!(
            watermark, watermark_after_cut,
            "the cut-off leader's high watermark moved"
        ),
        Err(refused) => assert_eq!(refused.kind(), ErrorKind::Unavailable, "{refused}"),
    }
    let elapsed = cut_at.elapsed();

    cluster.heal(cut);
    let (acknowledged, sent) = producing.stop(STEP_LIMIT * 2).await;
    assert_eq!(acknowledged.len() as u64, sent, "every record acknowledged");
    leader(&cluster, &[1, 2, 3], false).await;

    let mut logs = Vec::new();
    for id in cluster.ids() {
        let client = Client::connect(cluster.endpoint(id).expect("a broker"))
            .await
            .expect("connect");
        logs.push((id, log_of(&client, TOPIC).await));
    }
    let (_, first) = &logs[0];
    for (id, log) in &logs {
        assert_eq!(log, first, "broker {id}'s log differs from broker 1's");
    }
    assert!(
        !first.iter().any(|value| value == ORPHAN),
        "what the cut-off leader took alone was kept"
    );
    let mut seen = vec![false; usize::try_from(sent).expect("a count")];
    for value in first {
        let seq: usize = value.parse().expect("a sequence number");
        assert!(!seen[seq], "record {seq} twice");
        seen[seq] = true;
    }
    for (seq, offset) in &acknowledged {
        let at = usize::try_from(*offset).expect("an offset");
        assert_eq!(
            first.get(at).map(String::as_str),
            Some(seq.to_string().as_str()),
            "record {seq} not at offset {offset}"
        );
    }
    eprintln!(
        "broker {cut} cut off for {elapsed:?}; broker {new_leader} led meanwhile; {} records acknowledged",
        acknowledged.len()
    );
    // The metrics saw the election, and say who leads now (sampled every
    // second).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = |id: u64| {
            cluster
                .broker(id)
                .expect("the broker runs")
                .broker()
                .metrics()
                .clone()
        };
        let elections: u64 = cluster
            .ids()
            .map(|id| metrics(id).partition_elections.get())
            .sum();
        let led: i64 = cluster
            .ids()
            .map(|id| metrics(id).partitions_led.get())
            .sum();
        let replicas: i64 = cluster
            .ids()
            .map(|id| metrics(id).partition_replicas.get())
            .sum();
        if elections >= 1 && led == 1 && replicas == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "metrics: {elections} elections, {led} partitions led, {replicas} replicas"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.shutdown().await.expect("a clean shutdown");
}

/// The leader the brokers of the majority agree on (the cut-off one is
/// not asked: it still names itself).
async fn leader_of_majority(cluster: &EmbeddedCluster, majority: &[u64]) -> u64 {
    let deadline = Instant::now() + STEP_LIMIT;
    loop {
        let mut named = Vec::new();
        for id in majority {
            let endpoint = cluster.endpoint(*id).expect("a broker");
            if let Ok(client) = Client::connect(endpoint).await
                && let Ok(description) = client.describe_cluster().await
                && let Some(partition) = description.partitions.iter().find(|p| p.topic == TOPIC)
            {
                named.push(partition.leader);
            }
        }
        if named.len() == majority.len()
            && named[0] != 0
            && named.iter().all(|leader| *leader == named[0])
        {
            return named[0];
        }
        assert!(Instant::now() < deadline, "the majority elected no leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

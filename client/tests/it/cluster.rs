//! Three brokers of an `EmbeddedCluster`, one topic with three replicas,
//! and the leader of its partition cut off from its peers (its clients
//! still reach it): it acknowledges nothing from then on (and soon
//! refuses at once what it is sent), the two others
//! elect a leader and the producer goes on there; once the link is healed
//! every replica holds every acknowledged record exactly once, at its
//! acknowledged offset, and none of what the cut-off leader took alone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use brook_broker::EmbeddedCluster;
use brook_client::{
    Acl, AclOperation, AclResource, Client, ClientOptions, ConsumedRecord, Consumer,
    ConsumerConfig, ErrorKind, FetchOptions, GroupClient, GroupConfig, GroupConsumer, NewRecord,
    OffsetReset, OffsetSpec, Producer, ProducerConfig, ProducerRecord, Quota, QuotaTarget,
    TopicConfig,
};
use bytes::Bytes;
use futures::StreamExt;

const TOPIC: &str = "cut-off";
/// How long one step (an election, catching up) may take.
const STEP_LIMIT: Duration = Duration::from_secs(30);
/// What the cut-off leader is sent directly.
const ORPHAN: &str = "taken by the cut-off leader alone";

/// The leader of partition 0 of `TOPIC` once every replica has caught up,
/// as the brokers in `asked` say.
async fn leader(cluster: &EmbeddedCluster, asked: &[u64]) -> u64 {
    let deadline = Instant::now() + STEP_LIMIT;
    loop {
        for id in asked {
            let endpoint = cluster.endpoint(*id).expect("a broker of the cluster");
            if let Ok(client) = Client::connect(endpoint).await
                && let Ok(description) = client.describe_cluster().await
                && let Some(partition) = description.partitions.iter().find(|p| p.topic == TOPIC)
                && partition.leader != 0
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

/// Every record value of partition 0 on the broker `client` is connected
/// to, in offset order.
async fn log_of(client: &Client) -> Vec<String> {
    let end = client
        .list_offsets(TOPIC, 0, OffsetSpec::Latest)
        .await
        .expect("the end offset");
    let options = FetchOptions::default().with_max_wait(Duration::ZERO);
    let mut values = Vec::new();
    while i64::try_from(values.len()).expect("a count") < end {
        let offset = i64::try_from(values.len()).expect("a count");
        let fetched = client
            .fetch(TOPIC, 0, offset, options)
            .await
            .expect("fetch");
        assert!(!fetched.records.is_empty(), "data below the high watermark");
        for record in fetched.records {
            let value = record.value.expect("every record has a value");
            values.push(String::from_utf8(value.to_vec()).expect("text"));
        }
    }
    values
}

async fn high_watermark(client: &Client) -> i64 {
    client
        .list_offsets(TOPIC, 0, OffsetSpec::Latest)
        .await
        .expect("the high watermark")
}

type Acknowledged = Arc<Mutex<Vec<(u64, i64, Instant)>>>;

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
    let cut = leader(&cluster, &[1, 2, 3]).await;
    let majority: Vec<u64> = cluster.ids().filter(|id| *id != cut).collect();

    // The producer gives up on a request after 2 s: what the cut-off
    // leader took before it refuses is never answered.
    let options = ClientOptions::default().with_request_timeout(Duration::from_secs(2));
    let bootstrap = if bootstrap_at_leader {
        cut
    } else {
        majority[0]
    };
    let client = Client::connect_with(
        cluster.endpoint(bootstrap).expect("a broker"),
        options.clone(),
    )
    .await
    .expect("connect");
    let producer = Producer::new(
        client,
        ProducerConfig::default().with_delivery_timeout(Duration::from_secs(60)),
    );
    let acknowledged: Acknowledged = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn({
        let acknowledged = acknowledged.clone();
        let stop = stop.clone();
        async move {
            let mut next = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut deliveries = Vec::new();
                for _ in 0..16 {
                    let record = ProducerRecord::new(TOPIC, Bytes::from(next.to_string()));
                    deliveries.push((next, producer.enqueue(record).await.expect("accepted")));
                    next += 1;
                }
                for (seq, delivery) in deliveries {
                    let metadata = delivery
                        .await
                        .unwrap_or_else(|e| panic!("record {seq} failed: {e}"));
                    acknowledged
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push((seq, metadata.offset, Instant::now()));
                }
            }
            producer.close().await;
            next
        }
    });
    let count = || {
        acknowledged
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    };
    let deadline = Instant::now() + STEP_LIMIT;
    while count() < 500 {
        assert!(Instant::now() < deadline, "the producer did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    cluster.isolate(cut);
    let cut_at = Instant::now();
    let at_cut = Client::connect_with(cluster.endpoint(cut).expect("a broker"), options)
        .await
        .expect("connect to the cut-off leader");
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

    // The majority elects a leader and the producer goes on there.
    let before = count();
    let deadline = Instant::now() + STEP_LIMIT;
    while count() < before + 500 {
        assert!(
            Instant::now() < deadline,
            "the producer made no progress while broker {cut} was cut off"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let new_leader = leader_of_majority(&cluster, &majority).await;
    assert_ne!(new_leader, cut);
    assert_eq!(
        high_watermark(&at_cut).await,
        watermark_after_cut,
        "the cut-off leader's high watermark moved"
    );
    let elapsed = cut_at.elapsed();

    cluster.heal(cut);
    stop.store(true, Ordering::Relaxed);
    let sent = tokio::time::timeout(STEP_LIMIT * 2, task)
        .await
        .expect("the producer finished")
        .expect("the producer never failed");
    let acknowledged =
        std::mem::take(&mut *acknowledged.lock().unwrap_or_else(PoisonError::into_inner));
    assert_eq!(acknowledged.len() as u64, sent, "every record acknowledged");
    leader(&cluster, &[1, 2, 3]).await;

    let mut logs = Vec::new();
    for id in cluster.ids() {
        let client = Client::connect(cluster.endpoint(id).expect("a broker"))
            .await
            .expect("connect");
        logs.push((id, log_of(&client).await));
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
    for (seq, offset, _) in &acknowledged {
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
            tokio::time::timeout(STEP_LIMIT, producer.send(record))
                .await
                .expect("acknowledged in time")
                .expect("acknowledged");
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

/// ACLs and quotas changed through any broker hold on every broker, and a
/// broker that was down when they changed takes them when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acls_and_quotas_are_the_same_on_every_broker() {
    let mut cluster = EmbeddedCluster::start().await.expect("a cluster");
    let endpoints: Vec<String> = cluster.endpoints();
    let connect =
        |id: u64| Client::connect(endpoints[usize::try_from(id - 1).expect("an id")].clone());
    let orders = Acl::allow(
        "alice",
        AclOperation::Produce,
        AclResource::Topic("orders".into()),
    );
    let quota = Quota::new(QuotaTarget::Principal("alice".into()))
        .with_produce_bytes_per_second(Some(1_000_000));
    connect(1)
        .await
        .expect("connect")
        .create_acl(&orders)
        .await
        .expect("add the ACL");
    connect(2)
        .await
        .expect("connect")
        .set_quota(&quota)
        .await
        .expect("set the quota");

    // Broker 3 is down while the first ACL goes and another comes.
    cluster.stop(3).await.expect("stop broker 3");
    let groups = Acl::allow(
        "bob",
        AclOperation::Commit,
        AclResource::GroupPrefix("bob-".into()),
    );
    let removed = connect(2)
        .await
        .expect("connect")
        .delete_acl(&orders)
        .await
        .expect("remove the ACL");
    assert!(removed, "the ACL existed");
    connect(1)
        .await
        .expect("connect")
        .create_acl(&groups)
        .await
        .expect("add an ACL");
    cluster.restart(3).await.expect("restart broker 3");

    let deadline = Instant::now() + STEP_LIMIT;
    for id in 1..=3 {
        loop {
            let client = connect(id).await.expect("connect");
            let acls = client.list_acls(None).await.expect("list ACLs");
            let quotas = client.list_quotas().await.expect("list quotas");
            if acls == vec![groups.clone()] && quotas == vec![quota.clone()] {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "broker {id} has ACLs {acls:?} and quotas {quotas:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Removing a quota that is not set is refused the same everywhere.
    let missing = connect(3)
        .await
        .expect("connect")
        .remove_quota(&QuotaTarget::Default)
        .await
        .expect_err("no default quota is set");
    assert_eq!(missing.kind(), ErrorKind::NotFound, "{missing}");
    cluster.shutdown().await.expect("a clean shutdown");
}

/// A topic's settings changed through one broker change on every broker
/// that holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_topic_s_settings_change_on_every_broker() {
    const ALTERED: &str = "altered";
    let cluster = EmbeddedCluster::start().await.expect("a cluster");
    let endpoints = cluster.endpoints();
    let admin = Client::connect(endpoints[1].clone())
        .await
        .expect("connect");
    admin
        .create_replicated_topic(ALTERED, 2, Some(3), TopicConfig::default())
        .await
        .expect("create the topic");
    let mut config = TopicConfig::default();
    config.retention_ms = Some(3_600_000);
    let altered = admin
        .alter_topic_config(ALTERED, config)
        .await
        .expect("alter the topic");
    assert_eq!(altered.config.retention_ms, 3_600_000);
    let deadline = Instant::now() + STEP_LIMIT;
    for endpoint in &endpoints {
        let client = Client::connect(endpoint.clone()).await.expect("connect");
        loop {
            let described = client.describe_topic(ALTERED).await.expect("describe");
            if described.config.retention_ms == 3_600_000 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{endpoint} keeps retention_ms {}",
                described.config.retention_ms
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // A setting out of bounds is refused before anything changes.
    let mut bad = TopicConfig::default();
    bad.segment_bytes = Some(1);
    let refused = admin
        .alter_topic_config(ALTERED, bad)
        .await
        .expect_err("a one-byte segment");
    assert_eq!(refused.kind(), ErrorKind::InvalidArgument, "{refused}");
    cluster.shutdown().await.expect("a clean shutdown");
}

/// A consumer group in a cluster: members connected to different brokers
/// form one group at the broker leading the cluster's metadata; its
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
    let produce = |from: u64, to: u64| {
        let client = client.clone();
        async move {
            let producer = Producer::new(client, ProducerConfig::default());
            for seq in from..to {
                let record = ProducerRecord::new(EVENTS, Bytes::from(seq.to_string()))
                    .partition(u32::try_from(seq % 4).expect("a partition"));
                tokio::time::timeout(STEP_LIMIT, producer.send(record))
                    .await
                    .expect("acknowledged in time")
                    .expect("acknowledged");
            }
            producer.close().await;
        }
    };
    produce(0, 200).await;

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
        .describe_cluster()
        .await
        .expect("describe the cluster")
        .metadata_leader
        .expect("a metadata leader");
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
    let producer = Producer::new(client, ProducerConfig::default());
    for seq in 200..300u64 {
        let record = ProducerRecord::new(EVENTS, Bytes::from(seq.to_string()))
            .partition(u32::try_from(seq % 4).expect("a partition"));
        tokio::time::timeout(STEP_LIMIT, producer.send(record))
            .await
            .expect("acknowledged in time")
            .expect("acknowledged");
    }
    producer.close().await;
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

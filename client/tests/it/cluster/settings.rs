//! What the cluster agrees on besides records: ACLs, quotas, topic
//! settings and partition counts changed through one broker hold on every
//! broker.

use std::time::{Duration, Instant};

use brook_broker::EmbeddedCluster;
use brook_client::{
    Acl, AclOperation, AclResource, Client, ErrorKind, Producer, ProducerConfig, ProducerRecord,
    Quota, QuotaTarget, TopicConfig,
};
use bytes::Bytes;

use super::{STEP_LIMIT, acknowledged};

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

/// A topic grown through one broker has its new partitions on every broker
/// that holds it, replicated and taking records.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_topic_grows_on_every_broker() {
    const GROWN: &str = "grown";
    let cluster = EmbeddedCluster::start().await.expect("a cluster");
    let endpoints = cluster.endpoints();
    let admin = Client::connect(endpoints[2].clone())
        .await
        .expect("connect");
    admin
        .create_replicated_topic(GROWN, 2, Some(3), TopicConfig::default())
        .await
        .expect("create the topic");
    let grown = admin
        .add_partitions(GROWN, 4)
        .await
        .expect("add partitions");
    assert_eq!(grown.partitions.len(), 4);
    let deadline = Instant::now() + STEP_LIMIT;
    for endpoint in &endpoints {
        let client = Client::connect(endpoint.clone()).await.expect("connect");
        while client
            .describe_topic(GROWN)
            .await
            .expect("describe")
            .partitions
            .len()
            < 4
        {
            assert!(
                Instant::now() < deadline,
                "{endpoint} did not grow the topic"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let producer = Producer::new(admin.clone(), ProducerConfig::default());
    for partition in 0..4 {
        let record = ProducerRecord::new(GROWN, Bytes::from("x")).partition(partition);
        acknowledged(&producer, record)
            .await
            .unwrap_or_else(|e| panic!("partition {partition}: {e}"));
    }
    producer.close().await;
    let fewer = admin
        .add_partitions(GROWN, 3)
        .await
        .expect_err("fewer partitions than it has");
    assert_eq!(fewer.kind(), ErrorKind::InvalidArgument, "{fewer}");
    cluster.shutdown().await.expect("a clean shutdown");
}

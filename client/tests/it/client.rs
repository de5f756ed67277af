//! The client against a real in-process broker.

use std::time::Duration;

use brook_broker::EmbeddedBroker;
use brook_client::{Client, ClientError, FetchOptions, Header, NewRecord, OffsetSpec, TopicConfig};
use brook_record::{BatchOptions, encode_batch};
use bytes::Bytes;
use futures::StreamExt;
use tokio::time::timeout;

/// Every wait in these tests is bounded by this.
const LIMIT: Duration = Duration::from_secs(30);

async fn connect() -> (EmbeddedBroker, Client) {
    let broker = EmbeddedBroker::start().await.expect("broker starts");
    let client = timeout(LIMIT, Client::connect(broker.endpoint()))
        .await
        .expect("connect in time")
        .expect("connect");
    (broker, client)
}

fn record(i: usize) -> NewRecord {
    NewRecord {
        timestamp: 1_700_000_000_000 + i as i64,
        key: Some(Bytes::from(format!("key-{i}"))),
        value: Some(Bytes::from(format!("value-{i}"))),
        headers: vec![Header {
            key: "seq".into(),
            value: Bytes::from(i.to_string()),
        }],
    }
}

#[tokio::test]
async fn topics_are_created_listed_described_and_deleted() {
    let (_broker, client) = connect().await;
    let config = TopicConfig::default().with_retention_ms(Some(3_600_000));
    let created = client.create_topic("orders", 3, config).await.unwrap();
    assert_eq!(created.name, "orders");
    assert_eq!(created.config.retention_ms, 3_600_000);
    assert_eq!(created.partitions.len(), 3);

    let topics = client.list_topics().await.unwrap();
    assert_eq!(topics.len(), 1);
    assert_eq!(
        (topics[0].name.as_str(), topics[0].partitions),
        ("orders", 3)
    );

    let described = client.describe_topic("orders").await.unwrap();
    let partitions: Vec<u32> = described.partitions.iter().map(|p| p.partition).collect();
    assert_eq!(partitions, [0, 1, 2]);
    assert!(described.partitions.iter().all(|p| p.end_offset == 0));

    let grown = client.add_partitions("orders", 5).await.unwrap();
    assert_eq!(grown.partitions.len(), 5);
    let altered = client
        .alter_topic_config(
            "orders",
            TopicConfig::default().with_retention_bytes(Some(1 << 30)),
        )
        .await
        .unwrap();
    assert_eq!(altered.config.retention_bytes, 1 << 30);
    assert_eq!(altered.config.retention_ms, 3_600_000);

    let again = client
        .create_topic("orders", 1, TopicConfig::default())
        .await
        .unwrap_err();
    assert_eq!(again.code(), Some(brook_client::StatusCode::AlreadyExists));

    client.delete_topic("orders").await.unwrap();
    assert!(client.list_topics().await.unwrap().is_empty());
}

#[tokio::test]
async fn produced_records_fetch_back_with_dense_offsets() {
    let (_broker, client) = connect().await;
    client
        .create_topic("t", 1, TopicConfig::default())
        .await
        .unwrap();
    let first: Vec<NewRecord> = (0..10).map(record).collect();
    let second: Vec<NewRecord> = (10..25).map(record).collect();
    let ack = client.produce("t", 0, &first).await.unwrap();
    assert_eq!(
        (ack.topic.as_str(), ack.partition, ack.base_offset),
        ("t", 0, 0)
    );
    let ack = client.produce("t", 0, &second).await.unwrap();
    assert_eq!(ack.base_offset, 10);

    let fetched = client
        .fetch("t", 0, 0, FetchOptions::default())
        .await
        .unwrap();
    assert_eq!(fetched.high_watermark, 25);
    assert_eq!(fetched.log_start_offset, 0);
    assert_eq!(fetched.next_offset, 25);
    let offsets: Vec<i64> = fetched.records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (0..25).collect::<Vec<_>>());
    for (got, want) in fetched.records.iter().zip(first.iter().chain(&second)) {
        assert_eq!(got.timestamp, want.timestamp);
        assert_eq!(got.key, want.key);
        assert_eq!(got.value, want.value);
        assert_eq!(got.headers, want.headers);
    }

    // The batch holding offset 12 starts at 10; records before 12 are dropped.
    let middle = client
        .fetch("t", 0, 12, FetchOptions::default())
        .await
        .unwrap();
    assert_eq!(middle.records.first().map(|r| r.offset), Some(12));
    assert_eq!(middle.records.len(), 13);

    // At the end, a short long-poll returns empty.
    let empty = client
        .fetch(
            "t",
            0,
            25,
            FetchOptions::default().with_max_wait(Duration::from_millis(10)),
        )
        .await
        .unwrap();
    assert!(empty.records.is_empty());
    assert_eq!(empty.next_offset, 25);
}

#[tokio::test]
async fn produce_many_answers_each_batch() {
    let (_broker, client) = connect().await;
    client
        .create_topic("t", 2, TopicConfig::default())
        .await
        .unwrap();
    let batch = encode_batch(&[record(0), record(1)], BatchOptions::default()).unwrap();
    let acks = client
        .produce_many(vec![
            ("t".into(), 0, batch.clone()),
            ("t".into(), 1, batch.clone()),
            ("t".into(), 0, batch),
        ])
        .await
        .unwrap();
    let placed: Vec<(u32, i64)> = acks
        .into_iter()
        .map(|a| {
            let a = a.unwrap();
            (a.partition, a.base_offset)
        })
        .collect();
    assert_eq!(placed, [(0, 0), (1, 0), (0, 2)]);
}

#[tokio::test]
async fn a_thousand_pipelined_batches_are_acknowledged_in_order() {
    let (_broker, client) = connect().await;
    client
        .create_topic("t", 1, TopicConfig::default())
        .await
        .unwrap();
    let mut stream = client.produce_stream().await.unwrap();
    let mut pending = Vec::with_capacity(1_000);
    timeout(LIMIT, async {
        for i in 0..1_000 {
            let batch =
                encode_batch(&[record(2 * i), record(2 * i + 1)], BatchOptions::default()).unwrap();
            pending.push(stream.send("t", 0, batch).await.unwrap());
            assert!(stream.in_flight() <= client.options().produce_in_flight_max);
        }
    })
    .await
    .expect("sends in time");

    let correlation_ids: Vec<u64> = pending
        .iter()
        .map(brook_client::PendingAck::correlation_id)
        .collect();
    assert_eq!(correlation_ids, (1..=1_000).collect::<Vec<_>>());
    let acks = timeout(LIMIT, futures::future::join_all(pending))
        .await
        .expect("acknowledged in time");
    let base_offsets: Vec<i64> = acks.into_iter().map(|a| a.unwrap().base_offset).collect();
    assert_eq!(base_offsets, (0..1_000).map(|i| 2 * i).collect::<Vec<_>>());
    timeout(LIMIT, stream.finish()).await.expect("finishes");

    let latest = client
        .list_offsets("t", 0, OffsetSpec::Latest)
        .await
        .unwrap();
    assert_eq!(latest, 2_000);
}

#[tokio::test]
async fn a_rejected_stream_batch_fails_alone() {
    let (_broker, client) = connect().await;
    client
        .create_topic("t", 1, TopicConfig::default())
        .await
        .unwrap();
    let mut stream = client.produce_stream().await.unwrap();
    let good = encode_batch(&[record(0)], BatchOptions::default()).unwrap();
    let first = stream.send("t", 0, good.clone()).await.unwrap();
    let missing = stream.send("t", 7, good.clone()).await.unwrap();
    let garbage = stream
        .send("t", 0, Bytes::from_static(b"garbage"))
        .await
        .unwrap();
    let last = stream.send("t", 0, good).await.unwrap();

    let wait = |p| async move { timeout(LIMIT, p).await.expect("answered in time") };
    assert_eq!(wait(first).await.unwrap().base_offset, 0);
    let error = wait(missing).await.unwrap_err();
    assert_eq!(
        error.code(),
        Some(brook_client::StatusCode::NotFound),
        "{error}"
    );
    let error = wait(garbage).await.unwrap_err();
    assert_eq!(
        error.code(),
        Some(brook_client::StatusCode::InvalidArgument),
        "{error}"
    );
    assert!(!error.is_retryable());
    assert_eq!(wait(last).await.unwrap().base_offset, 1);
}

#[tokio::test]
async fn a_subscription_sees_records_produced_after_it_started() {
    let (_broker, client) = connect().await;
    client
        .create_topic("t", 1, TopicConfig::default())
        .await
        .unwrap();
    client
        .produce("t", 0, &[record(0), record(1)])
        .await
        .unwrap();

    // Subscribe from offset 1: the batch holding it starts at 0.
    let mut subscription = client.subscribe("t", 0, 1).await.unwrap();
    let producer = client.clone();
    let produced = tokio::spawn(async move {
        for i in 2..6 {
            producer.produce("t", 0, &[record(i)]).await.unwrap();
        }
    });
    let mut seen = Vec::new();
    while seen.len() < 5 {
        let record = timeout(LIMIT, subscription.next())
            .await
            .expect("a record in time")
            .expect("the stream goes on")
            .unwrap();
        seen.push((record.offset, record.value.unwrap()));
    }
    produced.await.unwrap();
    let want: Vec<(i64, Bytes)> = (1..6)
        .map(|i| (i64::from(i), Bytes::from(format!("value-{i}"))))
        .collect();
    assert_eq!(seen, want);
    assert_eq!(subscription.next_offset(), 6);
}

#[tokio::test]
async fn list_offsets_reports_earliest_latest_and_by_time() {
    let (_broker, client) = connect().await;
    client
        .create_topic("t", 1, TopicConfig::default())
        .await
        .unwrap();
    let records: Vec<NewRecord> = (0..5).map(record).collect();
    client.produce("t", 0, &records).await.unwrap();
    client.produce("t", 0, &records).await.unwrap();

    let earliest = client
        .list_offsets("t", 0, OffsetSpec::Earliest)
        .await
        .unwrap();
    let latest = client
        .list_offsets("t", 0, OffsetSpec::Latest)
        .await
        .unwrap();
    assert_eq!((earliest, latest), (0, 10));
    let future = client
        .list_offsets("t", 0, OffsetSpec::Timestamp(i64::MAX))
        .await
        .unwrap();
    assert_eq!(future, -1);
}

#[tokio::test]
async fn a_missing_topic_is_not_found_and_not_retryable() {
    let (_broker, client) = connect().await;
    let errors: Vec<ClientError> = vec![
        client.describe_topic("nope").await.unwrap_err(),
        client.produce("nope", 0, &[record(0)]).await.unwrap_err(),
        client
            .fetch("nope", 0, 0, FetchOptions::default())
            .await
            .unwrap_err(),
        client.subscribe("nope", 0, 0).await.unwrap_err(),
        client
            .list_offsets("nope", 0, OffsetSpec::Latest)
            .await
            .unwrap_err(),
    ];
    for error in errors {
        assert_eq!(
            error.code(),
            Some(brook_client::StatusCode::NotFound),
            "{error}"
        );
        assert!(!error.is_retryable(), "{error}");
        assert_eq!(error.kind(), brook_client::ErrorKind::NotFound, "{error}");
        // The broker's message, which names what is missing, is kept.
        assert!(error.to_string().contains("nope"), "{error}");
    }
    let empty = client.produce("nope", 0, &[]).await.unwrap_err();
    assert!(matches!(empty, ClientError::Encode(_)), "{empty}");
}

#[tokio::test]
async fn a_stopped_broker_is_a_retryable_error() {
    let (broker, client) = connect().await;
    timeout(LIMIT, broker.shutdown())
        .await
        .expect("stops in time")
        .unwrap();
    let error = timeout(LIMIT, client.list_topics())
        .await
        .expect("fails in time")
        .unwrap_err();
    assert!(error.is_retryable(), "{error:?}");
}

#[tokio::test]
async fn a_single_streamed_batch_is_acknowledged_without_closing() {
    let (_broker, client) = connect().await;
    client
        .create_topic("t", 1, TopicConfig::default())
        .await
        .unwrap();
    let mut stream = client.produce_stream().await.unwrap();
    let batch = encode_batch(&[record(0)], BatchOptions::default()).unwrap();
    let ack = stream.send("t", 0, batch).await.unwrap();
    let ack = timeout(Duration::from_secs(5), ack)
        .await
        .expect("acknowledged while the stream stays open")
        .unwrap();
    assert_eq!(ack.base_offset, 0);
    drop(stream);
}

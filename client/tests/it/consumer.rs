//! The consumer against a real in-process broker.

use std::time::Duration;

use brook_broker::EmbeddedBroker;
use brook_client::{
    BatchOptions, Client, ClientOptions, Compression, ConsumedRecord, Consumer, ConsumerConfig,
    ConsumerError, NewRecord, OffsetReset, RecordValidation, SeekTo, TopicConfig,
};
use bytes::Bytes;
use futures::StreamExt;
use tokio::time::timeout;

/// Every wait in these tests is bounded by this.
const LIMIT: Duration = Duration::from_secs(30);
const T0: i64 = 1_700_000_000_000;

async fn connect() -> (EmbeddedBroker, Client) {
    let broker = EmbeddedBroker::start().await.expect("broker starts");
    let client = Client::connect(broker.endpoint()).await.expect("connect");
    (broker, client)
}

fn record(partition: u32, i: i64) -> NewRecord {
    NewRecord {
        timestamp: T0 + i,
        key: None,
        value: Some(Bytes::from(format!("p{partition}-{i}"))),
        headers: vec![],
    }
}

/// Produces records `from..to` to the partition, `per_batch` to a batch.
async fn produce(
    client: &Client,
    topic: &str,
    partition: u32,
    from: i64,
    to: i64,
    per_batch: usize,
) {
    let records: Vec<NewRecord> = (from..to).map(|i| record(partition, i)).collect();
    for batch in records.chunks(per_batch) {
        client
            .produce(topic, partition, batch)
            .await
            .expect("produce");
    }
}

async fn next(consumer: &mut Consumer) -> ConsumedRecord {
    timeout(LIMIT, consumer.next())
        .await
        .expect("a record in time")
        .expect("the stream goes on")
        .expect("no error")
}

fn config(reset: OffsetReset) -> ConsumerConfig {
    ConsumerConfig::default()
        .with_max_wait(Duration::from_millis(100))
        .with_auto_offset_reset(reset)
}

fn value(consumed: &ConsumedRecord) -> String {
    String::from_utf8(consumed.record.value.clone().expect("a value").to_vec()).expect("utf-8")
}

#[tokio::test]
async fn two_assigned_partitions_stream_in_order_per_partition() {
    let (_broker, client) = connect().await;
    client
        .create_topic("orders", 2, TopicConfig::default())
        .await
        .unwrap();
    produce(&client, "orders", 0, 0, 30, 7).await;
    produce(&client, "orders", 1, 0, 25, 4).await;

    let mut consumer = Consumer::new(client, config(OffsetReset::Earliest));
    consumer.assign(&[("orders", 0), ("orders", 1)]);
    assert_eq!(
        consumer.assignment(),
        [("orders".to_owned(), 0), ("orders".to_owned(), 1)]
    );
    let mut seen = [Vec::new(), Vec::new()];
    for _ in 0..55 {
        let consumed = next(&mut consumer).await;
        assert_eq!(&*consumed.topic, "orders");
        let p = consumed.partition;
        assert_eq!(value(&consumed), format!("p{p}-{}", consumed.record.offset));
        seen[p as usize].push(consumed.record.offset);
    }
    assert_eq!(seen[0], (0..30).collect::<Vec<_>>());
    assert_eq!(seen[1], (0..25).collect::<Vec<_>>());
    assert_eq!(consumer.position("orders", 0), Some(30));
    assert_eq!(consumer.position("orders", 1), Some(25));
}

/// More partitions on one broker than a consumer streams: it reads them
/// with fetches of several at a time, every record once and in order.
#[tokio::test]
async fn a_consumer_of_many_partitions_reads_them_all_in_order() {
    const PARTITIONS: u32 = 20;
    let (_broker, client) = connect().await;
    client
        .create_topic("many", PARTITIONS, TopicConfig::default())
        .await
        .unwrap();
    for partition in 0..PARTITIONS {
        produce(&client, "many", partition, 0, 12, 5).await;
    }
    let mut consumer = Consumer::new(client.clone(), config(OffsetReset::Earliest));
    let assigned: Vec<(&str, u32)> = (0..PARTITIONS).map(|p| ("many", p)).collect();
    consumer.assign(&assigned);
    let mut seen = vec![Vec::new(); PARTITIONS as usize];
    for _ in 0..PARTITIONS * 12 {
        let consumed = next(&mut consumer).await;
        let p = consumed.partition;
        assert_eq!(value(&consumed), format!("p{p}-{}", consumed.record.offset));
        seen[p as usize].push(consumed.record.offset);
    }
    // Records appended while it waits at the end come too.
    produce(&client, "many", 7, 12, 15, 1).await;
    for _ in 0..3 {
        let consumed = next(&mut consumer).await;
        seen[consumed.partition as usize].push(consumed.record.offset);
    }
    for (partition, offsets) in seen.iter().enumerate() {
        let end = if partition == 7 { 15 } else { 12 };
        assert_eq!(
            offsets,
            &(0..end).collect::<Vec<_>>(),
            "partition {partition}"
        );
    }
}

/// A consumer of a few partitions has the broker push their records:
/// records appended while it waits at the end come as they are appended,
/// and a seek back reads them again.
#[tokio::test]
async fn a_streaming_consumer_gets_appends_and_seeks_back() {
    let (_broker, client) = connect().await;
    client
        .create_topic("pushed", 1, TopicConfig::default())
        .await
        .unwrap();
    produce(&client, "pushed", 0, 0, 10, 3).await;
    let mut consumer = Consumer::new(client.clone(), config(OffsetReset::Earliest));
    consumer.assign(&[("pushed", 0)]);
    for offset in 0..10 {
        assert_eq!(next(&mut consumer).await.record.offset, offset);
    }
    for i in 10..20 {
        produce(&client, "pushed", 0, i, i + 1, 1).await;
        assert_eq!(next(&mut consumer).await.record.offset, i);
    }
    consumer
        .seek("pushed", 0, SeekTo::Offset(4))
        .await
        .expect("seek");
    for offset in 4..20 {
        assert_eq!(next(&mut consumer).await.record.offset, offset);
    }
}

#[tokio::test]
async fn seek_moves_to_an_offset_the_ends_and_a_timestamp() {
    let (_broker, client) = connect().await;
    client
        .create_topic("orders", 1, TopicConfig::default())
        .await
        .unwrap();
    produce(&client, "orders", 0, 0, 10, 3).await;

    let mut consumer = Consumer::new(client.clone(), config(OffsetReset::Error));
    consumer.assign(&[("orders", 0)]);

    assert_eq!(
        consumer.seek("orders", 0, SeekTo::Offset(5)).await.unwrap(),
        5
    );
    // 5 is inside the batch 3..6: the records before it are skipped.
    assert_eq!(next(&mut consumer).await.record.offset, 5);
    assert_eq!(next(&mut consumer).await.record.offset, 6);

    assert_eq!(
        consumer.seek("orders", 0, SeekTo::Earliest).await.unwrap(),
        0
    );
    assert_eq!(next(&mut consumer).await.record.offset, 0);

    assert_eq!(
        consumer
            .seek("orders", 0, SeekTo::Timestamp(T0 + 7))
            .await
            .unwrap(),
        7
    );
    assert_eq!(next(&mut consumer).await.record.offset, 7);

    assert_eq!(
        consumer.seek("orders", 0, SeekTo::Latest).await.unwrap(),
        10
    );
    produce(&client, "orders", 0, 10, 11, 1).await;
    assert_eq!(next(&mut consumer).await.record.offset, 10);

    // No record that recent: the end.
    let future = consumer
        .seek("orders", 0, SeekTo::Timestamp(T0 + 1_000))
        .await
        .unwrap();
    assert_eq!(future, 11);

    let error = consumer
        .seek("orders", 1, SeekTo::Earliest)
        .await
        .unwrap_err();
    assert!(
        matches!(error, ConsumerError::NotAssigned { partition: 1, .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn position_is_the_offset_after_the_last_record_handed_out() {
    let (_broker, client) = connect().await;
    client
        .create_topic("orders", 1, TopicConfig::default())
        .await
        .unwrap();
    produce(&client, "orders", 0, 0, 20, 20).await;

    let mut consumer = Consumer::new(client, config(OffsetReset::Error));
    assert_eq!(consumer.position("orders", 0), None, "not assigned");
    consumer.assign(&[("orders", 0)]);
    assert_eq!(consumer.position("orders", 0), None, "no offset yet");
    consumer.seek("orders", 0, SeekTo::Offset(3)).await.unwrap();
    assert_eq!(consumer.position("orders", 0), Some(3));
    let consumed = next(&mut consumer).await;
    assert_eq!(consumed.record.offset, 3);
    // The whole batch is fetched, but only one record was handed out.
    assert_eq!(consumer.position("orders", 0), Some(4));
    next(&mut consumer).await;
    assert_eq!(consumer.position("orders", 0), Some(5));

    consumer.assign(&[("orders", 1)]);
    assert_eq!(consumer.position("orders", 0), None, "unassigned");
}

#[tokio::test]
async fn a_newly_assigned_partition_starts_where_auto_offset_reset_says() {
    let (_broker, client) = connect().await;
    client
        .create_topic("orders", 2, TopicConfig::default())
        .await
        .unwrap();
    produce(&client, "orders", 0, 0, 5, 5).await;

    let mut latest = Consumer::new(client.clone(), config(OffsetReset::Latest));
    latest.assign(&[("orders", 0)]);
    let mut earliest = Consumer::new(client.clone(), config(OffsetReset::Earliest));
    earliest.assign(&[("orders", 0)]);
    assert_eq!(next(&mut earliest).await.record.offset, 0);
    // Latest resolves to 5 before the next record is appended.
    timeout(LIMIT, async {
        while latest.position("orders", 0).is_none() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("resolved in time");
    assert_eq!(latest.position("orders", 0), Some(5));
    produce(&client, "orders", 0, 5, 6, 1).await;
    assert_eq!(next(&mut latest).await.record.offset, 5);
}

#[tokio::test]
async fn a_slow_reader_never_has_more_than_prefetch_chunks_buffered() {
    const PREFETCH: usize = 2;
    const BATCHES: i64 = 20;
    let (_broker, client) = connect().await;
    client
        .create_topic("orders", 1, TopicConfig::default())
        .await
        .unwrap();
    produce(&client, "orders", 0, 0, BATCHES, 1).await;

    let mut consumer = Consumer::new(
        client,
        config(OffsetReset::Earliest)
            // One batch per fetch: each chunk is one record.
            .with_max_bytes(1)
            .with_prefetch(PREFETCH),
    );
    consumer.assign(&[("orders", 0)]);
    for offset in 0..BATCHES {
        assert_eq!(next(&mut consumer).await.record.offset, offset);
        // Give the fetcher every chance to run ahead before reading on.
        timeout(LIMIT, async {
            while consumer.buffered_chunks() < PREFETCH {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("the fetcher fills its slots");
        assert!(consumer.buffered_chunks() <= PREFETCH);
    }
    assert_eq!(consumer.buffered_chunks_max(), PREFETCH);
}

#[tokio::test]
async fn lz4_and_zstd_batches_decode() {
    let broker = EmbeddedBroker::start().await.expect("broker starts");
    let plain = Client::connect(broker.endpoint()).await.unwrap();
    plain
        .create_topic("orders", 2, TopicConfig::default())
        .await
        .unwrap();
    for (partition, compression) in [(0, Compression::Lz4), (1, Compression::Zstd)] {
        let options = ClientOptions::default().with_batch(BatchOptions {
            compression,
            ..BatchOptions::default()
        });
        let client = Client::connect_with(broker.endpoint(), options)
            .await
            .unwrap();
        produce(&client, "orders", partition, 0, 50, 25).await;
    }
    let mut consumer = Consumer::new(plain, config(OffsetReset::Earliest));
    consumer.assign(&[("orders", 0), ("orders", 1)]);
    let mut counts = [0_i64; 2];
    for _ in 0..100 {
        let consumed = next(&mut consumer).await;
        let p = consumed.partition as usize;
        assert_eq!(consumed.record.offset, counts[p]);
        assert_eq!(value(&consumed), format!("p{p}-{}", counts[p]));
        counts[p] += 1;
    }
    assert_eq!(counts, [50, 50]);
}

/// A topic whose first segments retention has deleted; returns the new start.
async fn retained_topic(broker: &EmbeddedBroker, client: &Client) -> i64 {
    let config = TopicConfig::default().with_segment_bytes(Some(1024));
    client
        .create_topic("orders", 1, config)
        .await
        .expect("create");
    // ~300-byte batches: a segment rolls every few of them.
    let padding = "x".repeat(250);
    for i in 0..20 {
        let record = NewRecord {
            timestamp: T0 + i,
            value: Some(Bytes::from(format!("{i}-{padding}"))),
            ..NewRecord::default()
        };
        client
            .produce("orders", 0, &[record])
            .await
            .expect("produce");
    }
    let keep_little = TopicConfig::default().with_retention_bytes(Some(1));
    client
        .alter_topic_config("orders", keep_little)
        .await
        .expect("alter");
    broker.broker().enforce_retention().await;
    let start = client
        .describe_topic("orders")
        .await
        .expect("describe")
        .partitions[0]
        .start_offset;
    assert!(start > 0, "retention deleted segments");
    start
}

#[tokio::test]
async fn out_of_range_after_retention_resets_to_the_new_start() {
    let (broker, client) = connect().await;
    let start = retained_topic(&broker, &client).await;

    let mut consumer = Consumer::new(client, config(OffsetReset::Earliest));
    consumer.assign(&[("orders", 0)]);
    consumer.seek("orders", 0, SeekTo::Offset(0)).await.unwrap();
    let consumed = next(&mut consumer).await;
    assert_eq!(consumed.record.offset, start);
    assert_eq!(consumer.position("orders", 0), Some(start + 1));
    for offset in start + 1..20 {
        assert_eq!(next(&mut consumer).await.record.offset, offset);
    }
}

#[tokio::test]
async fn out_of_range_under_error_policy_is_reported_and_a_seek_resumes() {
    let (broker, client) = connect().await;
    let start = retained_topic(&broker, &client).await;

    let mut consumer = Consumer::new(client, config(OffsetReset::Error));
    consumer.assign(&[("orders", 0)]);
    consumer.seek("orders", 0, SeekTo::Offset(0)).await.unwrap();
    let error = timeout(LIMIT, consumer.next())
        .await
        .expect("an answer in time")
        .expect("the stream goes on")
        .expect_err("out of range");
    assert_eq!(
        error.code(),
        Some(brook_client::StatusCode::OutOfRange),
        "{error:?}"
    );
    assert_eq!(
        consumer.position("orders", 0),
        Some(0),
        "nothing handed out"
    );

    consumer.seek("orders", 0, SeekTo::Earliest).await.unwrap();
    assert_eq!(next(&mut consumer).await.record.offset, start);
}

/// A batch of three records whose LZ4 payload is garbage under a valid
/// CRC: a topic with `validate_records = framing` stores it (the broker
/// does not decompress it), no reader decodes it.
fn undecodable_batch() -> Bytes {
    let options = BatchOptions {
        compression: Compression::Lz4,
        ..BatchOptions::default()
    };
    let records: Vec<NewRecord> = (0..3).map(|i| record(0, i)).collect();
    let mut batch = brook_record::encode_batch(&records, options)
        .expect("records encode")
        .to_vec();
    for byte in &mut batch[brook_record::HEADER_LEN..] {
        *byte = 0xff;
    }
    // The CRC covers everything after itself (bytes 12..16).
    let crc = crc32fast::hash(&batch[16..]);
    batch[12..16].copy_from_slice(&crc.to_le_bytes());
    Bytes::from(batch)
}

/// `orders`/0: records 0..3, an undecodable batch at 3..6, records 6..8;
/// `orders`/1: records 0..5.
async fn topic_with_a_bad_batch(client: &Client) {
    client
        .create_topic(
            "orders",
            2,
            TopicConfig::default().with_validate_records(Some(RecordValidation::Framing)),
        )
        .await
        .expect("create orders");
    produce(client, "orders", 0, 0, 3, 3).await;
    client
        .produce_batch("orders", 0, undecodable_batch())
        .await
        .expect("the broker takes it");
    produce(client, "orders", 0, 6, 8, 2).await;
    produce(client, "orders", 1, 0, 5, 5).await;
}

#[tokio::test]
async fn an_undecodable_batch_stops_only_its_partition_after_the_records_before_it() {
    let (_broker, client) = connect().await;
    topic_with_a_bad_batch(&client).await;

    let mut consumer = Consumer::new(client.clone(), config(OffsetReset::Earliest));
    consumer.assign(&[("orders", 0), ("orders", 1)]);
    let mut seen = [Vec::new(), Vec::new()];
    let mut errors = Vec::new();
    while seen[0].len() < 3 || seen[1].len() < 5 || errors.is_empty() {
        let item = timeout(LIMIT, consumer.next())
            .await
            .expect("the partitions are not stalled")
            .expect("the stream goes on");
        match item {
            Ok(consumed) => seen[consumed.partition as usize].push(consumed.record.offset),
            Err(error) => errors.push(error),
        }
        assert!(errors.len() <= 1, "reported once: {errors:?}");
    }
    assert_eq!(seen, [vec![0, 1, 2], vec![0, 1, 2, 3, 4]]);
    let error = &errors[0];
    assert_eq!(
        error.code(),
        Some(brook_client::StatusCode::DataLoss),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("orders/0 at offset 3"),
        "names the batch: {error}"
    );
    assert_eq!(consumer.position("orders", 0), Some(3));

    // The other partition goes on; the bad one waits for a seek past it.
    produce(&client, "orders", 1, 5, 6, 1).await;
    let consumed = next(&mut consumer).await;
    assert_eq!((consumed.partition, consumed.record.offset), (1, 5));
    consumer.seek("orders", 0, SeekTo::Offset(6)).await.unwrap();
    let consumed = next(&mut consumer).await;
    assert_eq!((consumed.partition, consumed.record.offset), (0, 6));
}

#[tokio::test]
async fn fetches_and_subscriptions_return_the_records_before_an_undecodable_batch() {
    let (_broker, client) = connect().await;
    topic_with_a_bad_batch(&client).await;

    let options = brook_client::FetchOptions::default();
    let fetched = client.fetch("orders", 0, 0, options).await.unwrap();
    let offsets: Vec<i64> = fetched.records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, [0, 1, 2]);
    assert_eq!(
        fetched.next_offset, 3,
        "the next fetch starts at the bad batch"
    );
    let error = client.fetch("orders", 0, 3, options).await.unwrap_err();
    assert_eq!(
        error.code(),
        Some(brook_client::StatusCode::DataLoss),
        "{error:?}"
    );

    let mut records = client.subscribe("orders", 0, 0).await.unwrap();
    for offset in 0..3 {
        let record = timeout(LIMIT, records.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(record.offset, offset);
    }
    let error = timeout(LIMIT, records.next())
        .await
        .unwrap()
        .expect("an error, then the end")
        .unwrap_err();
    assert!(
        error.to_string().contains("orders/0 at offset 3"),
        "{error}"
    );
    assert_eq!(records.next_offset(), 3, "where to resume");
    assert!(timeout(LIMIT, records.next()).await.unwrap().is_none());
}

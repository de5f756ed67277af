//! Batches that pass their CRC check but whose records do not decode, as
//! older brokers could store them: under `UndecodablePolicy::Stop` the
//! partition stops at the first with `DATA_LOSS`; under `Skip` the consumer,
//! and a group member's `run`, report each skipped range in order, count
//! it, and go on after it, and the group's commit moves past it.
//!
//! The bad batches are made under the broker, not produced (a broker
//! refuses to append them): valid batches are produced, the broker stopped,
//! a record byte changed in the segment file and the batch's CRC fixed,
//! and the broker started again on the same directory. Its clean shutdown
//! mark still matches the segment, so it does not scan the records.

use std::sync::Arc;
use std::time::{Duration, Instant};

use brook_broker::EmbeddedBroker;
use brook_client::{
    BatchOptions, Client, Consumer, ConsumerConfig, ErrorKind, GroupClient, GroupConfig,
    GroupConsumer, GroupError, NewRecord, OffsetReset, SeekTo, SkippedBatch, TopicConfig,
    TopicPartition, UndecodablePolicy,
};
use brook_record::{BatchHeader, HEADER_LEN, split_batches};
use bytes::Bytes;
use futures::StreamExt;
use parking_lot::Mutex;
use tempfile::TempDir;
use tokio::time::timeout;

/// Every wait in these tests is bounded by this.
const LIMIT: Duration = Duration::from_secs(30);
const TOPIC: &str = "ledger";
/// Records per produced batch.
const PER_BATCH: i64 = 3;
/// Four batches: 0-2 good, 3-5 undecodable, 6-8 good, 9-11 undecodable
/// (the last, so only the skip itself can move a commit to 12).
const BATCHES: i64 = 4;
const BAD_BASES: [i64; 2] = [3, 9];
const END: i64 = BATCHES * PER_BATCH;

/// A broker on a directory holding the four batches, and the directory.
async fn broker_with_undecodable_batches() -> (TempDir, EmbeddedBroker) {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = EmbeddedBroker::builder()
        .data_dir(dir.path())
        .start()
        .await
        .expect("broker starts");
    let client = Client::connect(broker.endpoint()).await.expect("connect");
    client
        .create_topic(TOPIC, 1, TopicConfig::default())
        .await
        .expect("create topic");
    for batch in 0..BATCHES {
        let records: Vec<NewRecord> = (batch * PER_BATCH..(batch + 1) * PER_BATCH)
            .map(|i| NewRecord {
                timestamp: 1_700_000_000_000 + i,
                value: Some(Bytes::from(format!("r{i}"))),
                ..NewRecord::default()
            })
            .collect();
        let encoded =
            brook_record::encode_batch(&records, BatchOptions::default()).expect("encodes");
        client
            .produce_batch(TOPIC, 0, encoded)
            .await
            .expect("produce");
    }
    drop(client);
    broker.shutdown().await.expect("the broker stops");
    spoil_records(dir.path(), &BAD_BASES);
    let broker = EmbeddedBroker::builder()
        .data_dir(dir.path())
        .start()
        .await
        .expect("the broker starts again");
    (dir, broker)
}

/// In the partition's segment, sets the first record's reserved attributes
/// byte of each batch at `bases` and fixes the batch's CRC: the batch
/// frames and checks out, its records do not decode.
fn spoil_records(data_dir: &std::path::Path, bases: &[i64]) {
    let segment = data_dir
        .join("topics")
        .join(TOPIC)
        .join("0")
        .join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&segment).expect("read the segment");
    let mut at = 0;
    let mut spoiled = 0;
    for batch in split_batches(Bytes::from(bytes.clone())) {
        let batch = batch.expect("the segment frames");
        let header = BatchHeader::parse(&batch).expect("a header");
        if bases.contains(&header.base_offset) {
            let stored = &mut bytes[at..at + batch.len()];
            // The records section starts with the first record's one-byte
            // length varint, then its attributes, which must be 0.
            stored[HEADER_LEN + 1] = 1;
            let crc = crc32fast::hash(&stored[16..]);
            stored[12..16].copy_from_slice(&crc.to_le_bytes());
            let spoilt = Bytes::copy_from_slice(stored);
            brook_record::validate_batch(&spoilt, usize::MAX).expect("its header checks out");
            brook_record::decode_batch(&spoilt).expect_err("its records do not decode");
            spoiled += 1;
        }
        at += batch.len();
    }
    assert_eq!(spoiled, bases.len(), "every batch named was found");
    std::fs::write(&segment, bytes).expect("write the segment");
}

fn consumer_config(policy: UndecodablePolicy) -> ConsumerConfig {
    ConsumerConfig::default()
        .with_max_wait(Duration::from_millis(100))
        .with_auto_offset_reset(OffsetReset::Earliest)
        .with_undecodable(policy)
}

/// What a consumer handed out, in order: `r<offset>` per record,
/// `skip <base>-<last>` per skipped batch.
type Seen = Arc<Mutex<Vec<String>>>;

fn skipped(seen: &Seen) -> impl Fn(&SkippedBatch) + Send + Sync + 'static {
    let seen = seen.clone();
    move |batch: &SkippedBatch| {
        assert_eq!((&*batch.topic, batch.partition), (TOPIC, 0));
        assert_eq!(batch.records(), 3);
        assert!(batch.reason.contains("attributes"), "{}", batch.reason);
        seen.lock()
            .push(format!("skip {}-{}", batch.base_offset, batch.last_offset));
    }
}

fn everything_in_order() -> Vec<String> {
    ["r0", "r1", "r2", "skip 3-5", "r6", "r7", "r8", "skip 9-11"]
        .map(String::from)
        .to_vec()
}

#[tokio::test]
async fn under_stop_the_consumer_fails_at_the_first_undecodable_batch() {
    let (_dir, broker) = broker_with_undecodable_batches().await;
    let client = Client::connect(broker.endpoint()).await.expect("connect");
    let mut consumer = Consumer::new(client, consumer_config(UndecodablePolicy::Stop));
    consumer.assign(&[(TOPIC, 0)]);
    consumer
        .seek(TOPIC, 0, SeekTo::Earliest)
        .await
        .expect("seek");
    for expected in 0..3 {
        let record = timeout(LIMIT, consumer.next())
            .await
            .expect("in time")
            .expect("the stream goes on")
            .expect("a record");
        assert_eq!(record.record.offset, expected);
    }
    let error = timeout(LIMIT, consumer.next())
        .await
        .expect("in time")
        .expect("the stream goes on")
        .expect_err("the undecodable batch");
    assert_eq!(error.kind(), ErrorKind::DataLoss, "{error}");
    assert!(error.to_string().contains("at offset 3"), "{error}");
    assert_eq!(consumer.position(TOPIC, 0), Some(3));
    assert_eq!(consumer.skipped_batches(), 0);
}

#[tokio::test]
async fn under_skip_the_consumer_reports_each_range_in_order_and_reads_past_it() {
    let (_dir, broker) = broker_with_undecodable_batches().await;
    let client = Client::connect(broker.endpoint()).await.expect("connect");
    let seen: Seen = Arc::default();
    let mut consumer =
        Consumer::new(client, consumer_config(UndecodablePolicy::Skip)).on_skipped(skipped(&seen));
    consumer.assign(&[(TOPIC, 0)]);
    consumer
        .seek(TOPIC, 0, SeekTo::Earliest)
        .await
        .expect("seek");
    for _ in 0..6 {
        let record = timeout(LIMIT, consumer.next())
            .await
            .expect("in time")
            .expect("the stream goes on")
            .expect("a record, not an error");
        seen.lock().push(format!("r{}", record.record.offset));
    }
    // The last skip comes with no record after it: wait for it.
    let deadline = Instant::now() + LIMIT;
    while consumer.position(TOPIC, 0) != Some(END) {
        assert!(Instant::now() < deadline, "the last batch was not skipped");
        let _ = timeout(Duration::from_millis(50), consumer.next()).await;
    }
    assert_eq!(*seen.lock(), everything_in_order());
    assert_eq!(consumer.skipped_batches(), 2);
    assert_eq!(consumer.skipped_records(), 6);
}

async fn join(broker: &EmbeddedBroker, group: &str, policy: UndecodablePolicy) -> GroupConsumer {
    let client = GroupClient::connect(broker.endpoint())
        .await
        .expect("connect");
    let config = GroupConfig::new(group, [TOPIC])
        .with_auto_offset_reset(OffsetReset::Earliest)
        .with_commit_interval(Duration::from_millis(50))
        .with_max_wait(Duration::from_millis(100))
        .with_undecodable(policy);
    GroupConsumer::join(client, config).await.expect("join")
}

async fn committed(broker: &EmbeddedBroker, group: &str) -> i64 {
    let client = GroupClient::connect(broker.endpoint())
        .await
        .expect("connect");
    let offsets = client
        .fetch_offsets(group, &[TopicPartition::new(TOPIC, 0)])
        .await
        .expect("fetch offsets");
    offsets.first().map_or(-1, |o| o.offset)
}

#[tokio::test]
async fn under_stop_a_group_member_commits_up_to_the_batch_and_fails() {
    let (_dir, broker) = broker_with_undecodable_batches().await;
    let member = join(&broker, "stops", UndecodablePolicy::Stop).await;
    let result = timeout(
        LIMIT,
        member.run(|_| async { Ok::<(), std::io::Error>(()) }),
    )
    .await
    .expect("run ends in time");
    let Err(GroupError::Client(error)) = result else {
        panic!("not the data loss: {result:?}");
    };
    assert_eq!(error.kind(), ErrorKind::DataLoss, "{error}");
    assert_eq!(committed(&broker, "stops").await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_skip_a_group_member_reports_in_order_and_commits_past_the_last_batch() {
    let (_dir, broker) = broker_with_undecodable_batches().await;
    let seen: Seen = Arc::default();
    let member = join(&broker, "skips", UndecodablePolicy::Skip)
        .await
        .on_skipped(skipped(&seen));
    let handle = member.handle();
    let handled = seen.clone();
    let run = tokio::spawn(member.run(move |consumed| {
        let handled = handled.clone();
        async move {
            // Slow handlers: a skip reported before they finish is out of order.
            tokio::time::sleep(Duration::from_millis(20)).await;
            handled.lock().push(format!("r{}", consumed.record.offset));
            Ok::<(), std::io::Error>(())
        }
    }));
    let deadline = Instant::now() + LIMIT;
    while committed(&broker, "skips").await != END {
        assert!(
            Instant::now() < deadline,
            "the commit never moved past the last batch"
        );
        assert!(!run.is_finished(), "run ended early: {run:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(*seen.lock(), everything_in_order());
    assert_eq!(handle.skipped_batches(), 2);
    assert_eq!(handle.skipped_records(), 6);
    handle.shutdown();
    timeout(LIMIT, run)
        .await
        .expect("run ends in time")
        .expect("run does not panic")
        .expect("run ends cleanly");
}

#[tokio::test]
async fn under_skip_a_group_member_read_as_a_stream_reports_in_order() {
    let (_dir, broker) = broker_with_undecodable_batches().await;
    let seen: Seen = Arc::default();
    let mut member = join(&broker, "streams", UndecodablePolicy::Skip)
        .await
        .on_skipped(skipped(&seen));
    for _ in 0..6 {
        let consumed = timeout(LIMIT, member.recv())
            .await
            .expect("in time")
            .expect("the stream goes on")
            .expect("a record, not an error");
        seen.lock().push(format!("r{}", consumed.record.offset));
    }
    let deadline = Instant::now() + LIMIT;
    while member.skipped_batches() < 2 {
        assert!(Instant::now() < deadline, "the last batch was not skipped");
        let _ = timeout(Duration::from_millis(50), member.recv()).await;
    }
    assert_eq!(*seen.lock(), everything_in_order());
    assert_eq!(member.skipped_records(), 6);
    member.close().await.expect("close");
}

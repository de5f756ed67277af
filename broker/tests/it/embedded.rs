//! An embedded broker over gRPC: produce, fetch, subscribe, offset lookups,
//! describe, pipelined produce streams and long polls.

use crate::common;

use std::time::{Duration, Instant};

use brook_broker::EmbeddedBroker;
use brook_proto::list_offsets_request::Spec;
use brook_proto::{
    FetchPartition, FetchRequest, ListOffsetsRequest, SubscribeRequest, TopicConfig,
};
use brook_record::BatchOptions;
use common::{Clients, WAIT, batch, partition_batch, produce_request, records, values, within};
use tokio_stream::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produced_records_are_fetched_back_and_start_is_quick() {
    let started = Instant::now();
    let embedded = EmbeddedBroker::start().await.unwrap();
    let mut clients = Clients::connect(embedded.endpoint()).await.unwrap();
    clients
        .create_topic("orders", 1, TopicConfig::default())
        .await
        .unwrap();
    let base = clients
        .produce("orders", 0, batch("first", 10).unwrap())
        .await
        .unwrap();
    let bytes = clients.fetch_once("orders", 0, 0).await.unwrap();
    let elapsed = started.elapsed();
    eprintln!("embedded start to first produce+fetch round trip: {elapsed:?} (spec: < 20 ms)");
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");

    assert_eq!(base, 0);
    let fetched = brook_record::decode_batches(&bytes).unwrap();
    let offsets: Vec<i64> = fetched.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (0..10).collect::<Vec<i64>>());
    let expected: Vec<String> = (0..10).map(|i| format!("first-{i}")).collect();
    assert_eq!(values(&fetched), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_receives_records_produced_after_it() {
    let embedded = EmbeddedBroker::start().await.unwrap();
    let mut clients = Clients::connect(embedded.endpoint()).await.unwrap();
    clients
        .create_topic("events", 1, TopicConfig::default())
        .await
        .unwrap();
    clients
        .produce("events", 0, batch("before", 10).unwrap())
        .await
        .unwrap();

    let request = SubscribeRequest {
        topic: "events".to_owned(),
        partition: 0,
        offset: 10,
        max_bytes: 0,
    };
    let mut stream = within("subscribe", clients.fetch.subscribe(request))
        .await
        .unwrap()
        .unwrap()
        .into_inner();
    clients
        .produce("events", 0, batch("after", 5).unwrap())
        .await
        .unwrap();

    let message = within("first pushed message", stream.next())
        .await
        .unwrap()
        .expect("the stream stays open")
        .unwrap();
    let pushed = brook_record::decode_batches(&message.records).unwrap();
    assert_eq!(pushed.first().map(|r| r.offset), Some(10));
    assert_eq!(message.next_offset, 15);
    assert_eq!(message.high_watermark, 15);
    let expected: Vec<String> = (0..5).map(|i| format!("after-{i}")).collect();
    assert_eq!(values(&pushed), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_are_listed_and_described() {
    let embedded = EmbeddedBroker::start().await.unwrap();
    let mut clients = Clients::connect(embedded.endpoint()).await.unwrap();
    clients
        .create_topic("clicks", 1, TopicConfig::default())
        .await
        .unwrap();
    // Three batches of five records, a second apart, an hour ago.
    let first_ms = common::now_ms() - 3_600_000;
    for i in 0..3 {
        let timestamp = first_ms + i * 1_000;
        let encoded =
            brook_record::encode_batch(&records("click", 5, timestamp), BatchOptions::default())
                .unwrap();
        clients.produce("clicks", 0, encoded).await.unwrap();
    }

    let mut lookup = async |spec: Spec| {
        let request = ListOffsetsRequest {
            topic: "clicks".to_owned(),
            partition: 0,
            spec: Some(spec),
        };
        let response = within("list offsets", clients.fetch.list_offsets(request))
            .await
            .unwrap()
            .unwrap()
            .into_inner();
        (response.offset, response.timestamp_ms)
    };
    assert_eq!(lookup(Spec::Earliest(true)).await.0, 0);
    assert_eq!(lookup(Spec::Latest(true)).await.0, 15);
    assert_eq!(lookup(Spec::TimestampMs(0)).await, (0, first_ms));
    assert_eq!(
        lookup(Spec::TimestampMs(first_ms + 1_000)).await,
        (5, first_ms + 1_000)
    );
    assert_eq!(
        lookup(Spec::TimestampMs(first_ms + 1_500)).await,
        (10, first_ms + 2_000)
    );
    assert_eq!(lookup(Spec::TimestampMs(first_ms + 2_001)).await, (-1, -1));

    let described = clients.describe("clicks", 0).await.unwrap();
    assert_eq!(described.start_offset, 0);
    assert_eq!(described.end_offset, 15);
    assert_eq!(described.segments, 1);
    assert!(described.size_bytes > 3 * brook_record::HEADER_LEN as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_stream_acknowledges_pipelined_requests_in_order() {
    const REQUESTS: u64 = 200;
    let embedded = EmbeddedBroker::start().await.unwrap();
    let mut clients = Clients::connect(embedded.endpoint()).await.unwrap();
    clients
        .create_topic("stream", 1, TopicConfig::default())
        .await
        .unwrap();
    // Request i carries i % 3 + 1 records, so offsets advance unevenly.
    let requests: Vec<_> = (0..REQUESTS)
        .map(|i| {
            let encoded = batch(&format!("r{i}"), (i % 3 + 1) as usize).unwrap();
            produce_request(i, vec![partition_batch("stream", 0, encoded)])
        })
        .collect();
    let mut acks = within(
        "open produce stream",
        clients.produce.produce_stream(tokio_stream::iter(requests)),
    )
    .await
    .unwrap()
    .unwrap()
    .into_inner();

    let mut expected_base = 0;
    for i in 0..REQUESTS {
        let ack = within("acknowledgement", acks.next())
            .await
            .unwrap()
            .expect("one acknowledgement per request")
            .unwrap();
        assert_eq!(ack.correlation_id, i, "acknowledged out of order");
        assert_eq!(ack.error, None);
        let [result] = ack.results.as_slice() else {
            panic!("one result per batch, got {:?}", ack.results);
        };
        assert_eq!(result.error, None);
        assert_eq!(result.base_offset, expected_base, "request {i}");
        expected_base += (i % 3 + 1) as i64;
    }
    assert!(
        within("end of stream", acks.next())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        clients.end_offset("stream", 0).await.unwrap(),
        expected_base
    );
    let fetched = clients.fetch_all("stream", 0, 0).await.unwrap();
    assert_eq!(fetched.len() as i64, expected_base);
    assert_eq!(fetched.last().map(|r| r.offset), Some(expected_base - 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_returns_as_soon_as_records_arrive() {
    let embedded = EmbeddedBroker::start().await.unwrap();
    let mut clients = Clients::connect(embedded.endpoint()).await.unwrap();
    clients
        .create_topic("polls", 1, TopicConfig::default())
        .await
        .unwrap();
    clients
        .produce("polls", 0, batch("old", 10).unwrap())
        .await
        .unwrap();

    let mut poller = clients.fetch.clone();
    let started = Instant::now();
    let poll = tokio::spawn(async move {
        let request = FetchRequest {
            partitions: vec![FetchPartition {
                topic: "polls".to_owned(),
                partition: 0,
                offset: 10,
                max_bytes: 0,
            }],
            max_wait_ms: 2_000,
            max_bytes: 0,
            max_message_bytes: 0,
        };
        let response = poller.fetch(request).await;
        (response, started.elapsed())
    });
    clients
        .produce("polls", 0, batch("new", 3).unwrap())
        .await
        .unwrap();

    let (response, elapsed) = tokio::time::timeout(WAIT, poll).await.unwrap().unwrap();
    let partitions = response.unwrap().into_inner().partitions;
    let fetched = brook_record::decode_batches(&partitions[0].records).unwrap();
    assert_eq!(values(&fetched), ["new-0", "new-1", "new-2"]);
    assert_eq!(fetched[0].offset, 10);
    assert!(
        elapsed < Duration::from_millis(1_500),
        "the long poll waited {elapsed:?} although records arrived"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_fetch_responses_are_not_held_back_by_nagle() {
    let embedded = EmbeddedBroker::start().await.unwrap();
    let mut clients = Clients::connect(embedded.endpoint()).await.unwrap();
    clients
        .create_topic("latency", 1, TopicConfig::default())
        .await
        .unwrap();
    // A response of a few hundred bytes goes out in several small writes;
    // without TCP_NODELAY the last waits for the client's delayed ACK (~40 ms).
    let encoded = common::sized_batch(230, common::now_ms()).unwrap();
    clients.produce("latency", 0, encoded).await.unwrap();
    clients.fetch_once("latency", 0, 0).await.unwrap();
    let mut took: Vec<Duration> = Vec::new();
    for _ in 0..11 {
        let started = Instant::now();
        let bytes = clients.fetch_once("latency", 0, 0).await.unwrap();
        took.push(started.elapsed());
        assert!(!bytes.is_empty());
    }
    took.sort();
    let median = took[took.len() / 2];
    eprintln!("fetch round trips: median {median:?}, all {took:?}");
    assert!(
        median < Duration::from_millis(25),
        "median fetch took {median:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_without_a_partition_byte_limit_returns_every_batch() {
    let embedded = EmbeddedBroker::start().await.unwrap();
    let mut clients = Clients::connect(embedded.endpoint()).await.unwrap();
    clients
        .create_topic("unbounded", 1, TopicConfig::default())
        .await
        .unwrap();
    for i in 0..5 {
        clients
            .produce("unbounded", 0, batch(&format!("b{i}"), 2).unwrap())
            .await
            .unwrap();
    }
    // max_bytes 0 (unset) means "no limit" for the request; it must not
    // mean "one batch" for the partition.
    let bytes = clients.fetch_once("unbounded", 0, 0).await.unwrap();
    let fetched = brook_record::decode_batches(&bytes).unwrap();
    assert_eq!(fetched.len(), 10, "fetched {:?}", values(&fetched));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_bytes_are_the_produced_bytes_with_the_base_offset_in_front() {
    let embedded = EmbeddedBroker::start().await.unwrap();
    let mut clients = Clients::connect(embedded.endpoint()).await.unwrap();
    clients
        .create_topic("raw", 1, TopicConfig::default())
        .await
        .unwrap();
    let first = batch("a", 3).unwrap();
    let second = batch("b", 2).unwrap();
    assert_eq!(clients.produce("raw", 0, first.clone()).await.unwrap(), 0);
    assert_eq!(clients.produce("raw", 0, second.clone()).await.unwrap(), 3);
    let stored = clients.fetch_once("raw", 0, 0).await.unwrap();
    assert_eq!(stored.len(), first.len() + second.len());
    let (stored_first, stored_second) = stored.split_at(first.len());
    // Only the first 8 bytes, the base offset (little-endian), are the broker's.
    assert_eq!(stored_first[..8], 0_i64.to_le_bytes());
    assert_eq!(stored_first[8..], first[8..]);
    assert_eq!(stored_second[..8], 3_i64.to_le_bytes());
    assert_eq!(stored_second[8..], second[8..]);
}

//! The batching, retrying, idempotent producer against a real in-process broker.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use brook_broker::{Broker, BrokerConfig, EmbeddedBroker};
use brook_client::{
    Client, ClientError, ClientOptions, Compression, FetchOptions, Producer, ProducerConfig,
    ProducerRecord, Record, TopicConfig, fnv1a32,
};
use futures::future::join_all;
use tokio::net::TcpListener;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

/// Every wait in these tests is bounded by this.
const LIMIT: Duration = Duration::from_secs(60);

async fn connect() -> (EmbeddedBroker, Client) {
    let broker = EmbeddedBroker::start().await.expect("broker starts");
    let client = Client::connect(broker.endpoint()).await.expect("connect");
    (broker, client)
}

/// Quick retries, so lost acknowledgements are recovered fast.
fn fast_retries() -> ProducerConfig {
    ProducerConfig::default()
        .with_retry_backoff(Duration::from_millis(10))
        .with_retry_backoff_max(Duration::from_millis(100))
}

/// Every record of a partition, read until the high watermark.
async fn fetch_all(client: &Client, topic: &str, partition: u32) -> Vec<Record> {
    let mut records = Vec::new();
    let mut offset = 0;
    loop {
        let options = FetchOptions::default().with_max_wait(Duration::ZERO);
        let fetched = timeout(LIMIT, client.fetch(topic, partition, offset, options))
            .await
            .expect("fetch in time")
            .expect("fetch");
        records.extend(fetched.records);
        offset = fetched.next_offset;
        if offset >= fetched.high_watermark {
            return records;
        }
    }
}

async fn fetch_topic(client: &Client, topic: &str, partitions: u32) -> Vec<(u32, Record)> {
    let mut all = Vec::new();
    for partition in 0..partitions {
        let records = fetch_all(client, topic, partition).await;
        all.extend(records.into_iter().map(|r| (partition, r)));
    }
    all
}

fn value_of(record: &Record) -> String {
    String::from_utf8(record.value.clone().expect("a value").to_vec()).expect("utf-8")
}

/// Enqueues `count` records made by `make`, then awaits every acknowledgement.
async fn send_all(
    producer: &Producer,
    count: usize,
    make: impl Fn(usize) -> ProducerRecord,
) -> Vec<brook_client::RecordMetadata> {
    let mut pending = Vec::with_capacity(count);
    for i in 0..count {
        pending.push(producer.enqueue(make(i)).await.expect("accepted"));
    }
    let acks = timeout(LIMIT, join_all(pending))
        .await
        .expect("acks in time");
    acks.into_iter()
        .map(|ack| ack.expect("delivered"))
        .collect()
}

#[tokio::test]
async fn records_are_acknowledged_with_their_offsets() {
    let (_broker, client) = connect().await;
    client
        .create_topic("t", 3, TopicConfig::default())
        .await
        .unwrap();
    let producer = Producer::new(client.clone(), ProducerConfig::default());

    let sent = timeout(
        LIMIT,
        producer.send(ProducerRecord::new("t", "hello").partition(2)),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        (sent.topic.as_str(), sent.partition, sent.offset),
        ("t", 2, 0)
    );
    let keyed = timeout(LIMIT, producer.send(ProducerRecord::new("t", "v").key("k")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        keyed.partition,
        fnv1a32(b"k") % 3,
        "same partition as `brook produce`"
    );

    let records = fetch_all(&client, "t", 2).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].value.as_deref(), Some(&b"hello"[..]));
    assert_eq!(records[0].timestamp, sent.timestamp);

    let missing = timeout(LIMIT, producer.send(ProducerRecord::new("nope", "v")))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        missing.code(),
        Some(brook_client::StatusCode::NotFound),
        "{missing}"
    );
    producer.close().await;
    let closed = producer
        .send(ProducerRecord::new("t", "late"))
        .await
        .unwrap_err();
    assert!(!closed.is_retryable(), "{closed}");
}

#[tokio::test]
async fn durations_meaning_never_are_accepted() {
    let broker = EmbeddedBroker::start().await.expect("broker starts");
    let options = ClientOptions::default().with_request_timeout(Duration::MAX);
    let client = Client::connect_with(broker.endpoint(), options)
        .await
        .unwrap();
    client
        .create_topic("t", 1, TopicConfig::default())
        .await
        .unwrap();
    let config = ProducerConfig::default()
        .with_linger(Duration::from_secs(24 * 3600))
        .with_delivery_timeout(Duration::MAX)
        .with_retry_backoff_max(Duration::MAX);
    let producer = Producer::new(client.clone(), config);
    let delivery = timeout(LIMIT, producer.enqueue(ProducerRecord::new("t", "v")))
        .await
        .unwrap()
        .unwrap();
    timeout(LIMIT, producer.flush()).await.unwrap();
    let sent = timeout(LIMIT, delivery).await.unwrap().unwrap();
    assert_eq!(sent.offset, 0);
    producer.close().await;
}

#[tokio::test]
async fn retried_batches_are_appended_once() {
    let (_broker, client) = connect().await;
    client
        .create_topic("t", 4, TopicConfig::default())
        .await
        .unwrap();
    let producer = Producer::new(client.clone(), fast_retries().with_batch_size(2 * 1024));
    producer.drop_acknowledgements(8);
    let acks = send_all(&producer, 2_000, |i| {
        ProducerRecord::new("t", format!("value-{i}")).key(format!("key-{}", i % 50))
    })
    .await;

    let log = fetch_topic(&client, "t", 4).await;
    assert_eq!(log.len(), 2_000, "each record exactly once");
    let values: HashSet<String> = log.iter().map(|(_, r)| value_of(r)).collect();
    assert_eq!(values.len(), 2_000);
    // Every acknowledgement (retries included) names the record's real place.
    let by_place: HashMap<(u32, i64), String> = log
        .iter()
        .map(|(p, r)| ((*p, r.offset), value_of(r)))
        .collect();
    for (i, ack) in acks.iter().enumerate() {
        assert_eq!(by_place[&(ack.partition, ack.offset)], format!("value-{i}"));
    }
}

#[tokio::test]
async fn keyed_records_keep_their_order_across_retries() {
    const RECORDS: usize = 10_000;
    const KEYS: usize = 100;
    const PARTITIONS: u32 = 8;
    let (_broker, client) = connect().await;
    client
        .create_topic("orders", PARTITIONS, TopicConfig::default())
        .await
        .unwrap();
    let producer = Producer::new(client.clone(), fast_retries().with_batch_size(4 * 1024));
    let record = |i: usize| {
        let key = format!("key-{}", i % KEYS);
        ProducerRecord::new("orders", format!("{key}/{i}")).key(key)
    };
    let mut pending = Vec::with_capacity(RECORDS);
    for i in 0..RECORDS {
        if i == RECORDS / 2 {
            producer.drop_acknowledgements(12);
        }
        pending.push(producer.enqueue(record(i)).await.unwrap());
    }
    let acks = timeout(LIMIT, join_all(pending)).await.unwrap();
    assert!(acks.iter().all(Result::is_ok));

    let log = fetch_topic(&client, "orders", PARTITIONS).await;
    assert_eq!(log.len(), RECORDS, "each record exactly once");
    let mut last_seen: HashMap<String, usize> = HashMap::new();
    for (partition, record) in &log {
        let key = record.key.clone().expect("keyed");
        assert_eq!(*partition, fnv1a32(&key) % PARTITIONS);
        let value = value_of(record);
        let (key, seq) = value.split_once('/').unwrap();
        let seq: usize = seq.parse().unwrap();
        if let Some(previous) = last_seen.insert(key.to_owned(), seq) {
            assert!(previous < seq, "{key}: {seq} after {previous}");
        }
    }
    assert_eq!(last_seen.len(), KEYS);
}

#[tokio::test]
async fn send_waits_for_buffer_space() {
    const BUDGET: usize = 4 * 1024;
    let (_broker, client) = connect().await;
    client
        .create_topic("t", 2, TopicConfig::default())
        .await
        .unwrap();
    let producer = Producer::new(
        client.clone(),
        ProducerConfig::default()
            .with_buffer_memory(BUDGET)
            .with_batch_size(1024),
    );
    let tasks: Vec<_> = (0..32)
        .map(|task| {
            let producer = producer.clone();
            tokio::spawn(async move {
                for i in 0..20 {
                    let value = format!("{task}-{i}-{}", "x".repeat(300));
                    producer
                        .send(ProducerRecord::new("t", value))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in timeout(LIMIT, join_all(tasks)).await.unwrap() {
        task.unwrap();
    }
    let peak = producer.buffered_bytes_peak();
    assert!(
        peak <= BUDGET,
        "held {peak} bytes, over the budget of {BUDGET}"
    );
    assert!(
        peak > BUDGET / 2,
        "32 concurrent senders should fill the buffer: {peak}"
    );
    assert_eq!(producer.buffered_bytes(), 0, "all memory given back");
    let total: usize = fetch_topic(&client, "t", 2).await.len();
    assert_eq!(total, 32 * 20);

    let huge = ProducerRecord::new("t", vec![0u8; BUDGET]);
    let refused = producer.send(huge).await.unwrap_err();
    assert_eq!(
        refused.code(),
        Some(brook_client::StatusCode::InvalidArgument),
        "{refused}"
    );
}

#[tokio::test]
async fn compressed_batches_are_fetched_decoded() {
    let (_broker, client) = connect().await;
    for compression in [Compression::Lz4, Compression::Zstd] {
        let topic = format!("t-{compression}");
        client
            .create_topic(&topic, 1, TopicConfig::default())
            .await
            .unwrap();
        let producer = Producer::new(
            client.clone(),
            ProducerConfig::default().with_compression(compression),
        );
        let value = |i: usize| format!("{i:05}{}", "compressible ".repeat(80));
        send_all(&producer, 500, |i| {
            ProducerRecord::new(topic.clone(), value(i))
        })
        .await;
        let records = fetch_all(&client, &topic, 0).await;
        let values: Vec<String> = records.iter().map(value_of).collect();
        let expected: Vec<String> = (0..500).map(value).collect();
        assert_eq!(values, expected, "{compression}");
        let raw: usize = expected.iter().map(String::len).sum();
        let stored = client.describe_topic(&topic).await.unwrap().partitions[0].size_bytes;
        assert!(
            (stored as usize) < raw / 4,
            "{compression}: {stored} bytes stored for {raw} bytes of values"
        );
    }
}

#[tokio::test]
async fn send_fails_after_the_delivery_timeout_when_the_broker_is_gone() {
    const DELIVERY_TIMEOUT: Duration = Duration::from_secs(1);
    let (broker, client) = connect().await;
    client
        .create_topic("t", 1, TopicConfig::default())
        .await
        .unwrap();
    let producer = Producer::new(
        client,
        fast_retries().with_delivery_timeout(DELIVERY_TIMEOUT),
    );
    producer
        .send(ProducerRecord::new("t", "first"))
        .await
        .unwrap();
    broker.shutdown().await.unwrap();

    let started = Instant::now();
    let error = timeout(LIMIT, producer.send(ProducerRecord::new("t", "lost")))
        .await
        .unwrap()
        .unwrap_err();
    let took = started.elapsed();
    assert!(error.is_retryable(), "{error}");
    assert!(
        matches!(error, ClientError::Timeout { .. }),
        "a delivery timeout: {error:?}"
    );
    assert!(
        took + Duration::from_millis(50) >= DELIVERY_TIMEOUT
            && took < DELIVERY_TIMEOUT + Duration::from_secs(2),
        "failed after {took:?}"
    );
    assert_eq!(
        producer.buffered_bytes(),
        0,
        "the record's memory is given back"
    );
}

/// Serves `data_dir` on `addr` until the token is cancelled.
/// A broker on a data directory of its own, so that `serve_at` can start
/// it again on the same address; a client; and `topic` with `partitions`.
async fn restartable(topic: &str, partitions: u32) -> (tempfile::TempDir, EmbeddedBroker, Client) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let broker = EmbeddedBroker::builder()
        .data_dir(dir.path())
        .start()
        .await
        .expect("broker starts");
    let client = Client::connect(broker.endpoint()).await.expect("connect");
    client
        .create_topic(topic, partitions, TopicConfig::default())
        .await
        .expect("topic created");
    (dir, broker, client)
}

async fn serve_at(
    data_dir: &Path,
    addr: SocketAddr,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind(addr)
        .await
        .expect("the port is free again");
    let mut config = BrokerConfig::default();
    config.data_dir = data_dir.to_owned();
    config.listen = addr;
    let broker: Arc<Broker> = Broker::open(config).await.expect("broker reopens");
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move {
            brook_broker::server::serve(broker, listener, None, async move {
                stop.cancelled().await;
            })
            .await
            .expect("serves");
        }
    });
    (stop, task)
}

#[tokio::test]
async fn a_broker_restart_between_send_and_retry_appends_once() {
    const RECORDS: usize = 200;
    let (dir, broker, client) = restartable("t", 2).await;
    let addr = broker.addr();
    // About 20 bytes a record: 3 or 4 batches per partition, within the 5
    // a partition may have unacknowledged.
    let producer = Producer::new(client.clone(), fast_retries().with_batch_size(700));

    // Every acknowledgement is lost until the broker has restarted: the
    // batches are appended by the first broker and retried against both.
    producer.drop_acknowledgements(usize::MAX);
    let mut pending = Vec::new();
    for i in 0..RECORDS {
        let record = ProducerRecord::new("t", format!("value-{i:03}")).partition(i as u32 % 2);
        pending.push(producer.enqueue(record).await.unwrap());
    }
    let appended = async {
        loop {
            let log = fetch_topic(&client, "t", 2).await;
            if log.len() >= RECORDS {
                return log.len();
            }
            // Long-poll for more rather than spinning.
            let _ = client
                .fetch(
                    "t",
                    0,
                    i64::MAX,
                    FetchOptions::default().with_max_wait(Duration::from_millis(20)),
                )
                .await;
        }
    };
    assert_eq!(timeout(LIMIT, appended).await.unwrap(), RECORDS);
    broker.shutdown().await.unwrap();

    let (stop, server) = serve_at(dir.path(), addr).await;
    producer.drop_acknowledgements(0);
    let acks = timeout(LIMIT, join_all(pending)).await.unwrap();
    let acks: Vec<_> = acks.into_iter().map(|a| a.expect("delivered")).collect();

    let log = fetch_topic(&client, "t", 2).await;
    assert_eq!(log.len(), RECORDS, "each record exactly once");
    let by_place: HashMap<(u32, i64), String> = log
        .iter()
        .map(|(p, r)| ((*p, r.offset), value_of(r)))
        .collect();
    for (i, ack) in acks.iter().enumerate() {
        assert_eq!(
            by_place[&(ack.partition, ack.offset)],
            format!("value-{i:03}")
        );
    }
    stop.cancel();
    timeout(LIMIT, server).await.unwrap().unwrap();
}

#[tokio::test]
async fn flush_sends_without_waiting_for_linger() {
    let (_broker, client) = connect().await;
    client
        .create_topic("t", 2, TopicConfig::default())
        .await
        .unwrap();
    let producer = Producer::new(
        client.clone(),
        ProducerConfig::default()
            .with_linger(Duration::from_secs(60))
            .with_delivery_timeout(Duration::from_secs(120)),
    );
    let mut pending = Vec::new();
    for i in 0..10 {
        pending.push(
            producer
                .enqueue(ProducerRecord::new("t", format!("v{i}")))
                .await
                .unwrap(),
        );
    }
    timeout(LIMIT, producer.flush())
        .await
        .expect("flush returns long before the linger");
    for delivery in pending {
        let answered = futures::FutureExt::now_or_never(delivery).expect("answered by flush");
        answered.unwrap();
    }
    assert_eq!(fetch_topic(&client, "t", 2).await.len(), 10);
}

#[tokio::test]
async fn a_fenced_producer_fails_its_records() {
    use brook_proto::InitProducerIdRequest;
    use brook_proto::produce_service_client::ProduceServiceClient;

    let (broker, client) = connect().await;
    client
        .create_topic("t", 1, TopicConfig::default())
        .await
        .unwrap();
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    producer
        .send(ProducerRecord::new("t", "first"))
        .await
        .unwrap();

    // Another instance takes over the producer id (read from the batch header).
    let fetched = brook_proto::fetch_service_client::FetchServiceClient::connect(broker.endpoint())
        .await
        .unwrap()
        .fetch(brook_proto::FetchRequest {
            partitions: vec![brook_proto::FetchPartition {
                topic: "t".into(),
                partition: 0,
                offset: 0,
                max_bytes: 0,
            }],
            max_wait_ms: 0,
            max_bytes: 0,
            max_message_bytes: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let header = brook_record::BatchHeader::parse(&fetched.partitions[0].records).unwrap();
    assert!(
        header.producer_id > 0 && header.base_sequence == 0,
        "{header:?}"
    );
    ProduceServiceClient::connect(broker.endpoint())
        .await
        .unwrap()
        .init_producer_id(InitProducerIdRequest {
            producer_id: header.producer_id,
        })
        .await
        .unwrap();

    let fenced = timeout(LIMIT, producer.send(ProducerRecord::new("t", "second")))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        fenced.code(),
        Some(brook_client::StatusCode::FailedPrecondition),
        "{fenced}"
    );
    assert!(!fenced.is_retryable());
    let later = producer
        .send(ProducerRecord::new("t", "third"))
        .await
        .unwrap_err();
    assert_eq!(
        later.code(),
        Some(brook_client::StatusCode::FailedPrecondition),
        "{later}"
    );
    assert_eq!(fetch_all(&client, "t", 0).await.len(), 1);
}

#[cfg(feature = "otel")]
#[tokio::test]
async fn records_carry_the_trace_of_their_sender() {
    use opentelemetry::trace::TracerProvider as _;
    use tracing::Instrument as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("producer-test")));
    let _default = tracing::subscriber::set_default(subscriber);

    let (_broker, client) = connect().await;
    client
        .create_topic("t", 1, TopicConfig::default())
        .await
        .unwrap();
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    producer
        .send(ProducerRecord::new("t", "traced"))
        .instrument(tracing::info_span!("checkout"))
        .await
        .unwrap();
    let own = ProducerRecord::new("t", "own").header("traceparent", "00-kept");
    producer
        .send(own)
        .instrument(tracing::info_span!("checkout"))
        .await
        .unwrap();
    producer
        .send(ProducerRecord::new("t", "untraced"))
        .await
        .unwrap();

    let records = fetch_all(&client, "t", 0).await;
    let traceparents: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            r.headers
                .iter()
                .filter(|h| h.key == "traceparent")
                .map(|h| String::from_utf8(h.value.to_vec()).unwrap())
                .collect()
        })
        .collect();
    assert_eq!(traceparents[0].len(), 1);
    assert!(traceparents[0][0].starts_with("00-"), "{traceparents:?}");
    assert_eq!(traceparents[1], ["00-kept"], "an existing header is kept");
    assert!(traceparents[2].is_empty(), "no trace, no header");
}

/// More records than the sender task takes from its inbox in one burst,
/// enqueued at once from another thread: every one must be answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_records_is_answered_in_full() {
    let (_broker, client) = connect().await;
    client
        .create_topic("burst", 3, TopicConfig::default())
        .await
        .unwrap();
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let mut pending = Vec::new();
    for i in 0..2000 {
        let record = ProducerRecord::new("burst", format!("{i}").into_bytes())
            .key(format!("user-{}", i % 7).into_bytes());
        pending.push(producer.enqueue(record).await.unwrap());
    }
    producer.flush().await;
    let mut failed = Vec::new();
    for (i, delivery) in pending.into_iter().enumerate() {
        if let Err(e) = timeout(LIMIT, delivery).await.unwrap() {
            failed.push((i, e.to_string()));
        }
    }
    assert!(failed.is_empty(), "{} unanswered: {failed:?}", failed.len());
}

#[tokio::test]
async fn one_bad_batch_fails_alone_in_a_multi_partition_request() {
    let (_broker, client) = connect().await;
    for topic in ["good", "gone"] {
        client
            .create_topic(topic, 2, TopicConfig::default())
            .await
            .unwrap();
    }
    // A linger longer than the test: batches go out on flush, all at once.
    let producer = Producer::new(
        client.clone(),
        ProducerConfig::default()
            .with_linger(Duration::from_secs(600))
            .with_delivery_timeout(Duration::from_secs(900)),
    );
    // The producer learns both topics; then one is deleted behind its back.
    let mut warm = Vec::new();
    for topic in ["good", "gone"] {
        warm.push(
            producer
                .enqueue(ProducerRecord::new(topic, "warm").partition(0))
                .await
                .unwrap(),
        );
    }
    timeout(LIMIT, producer.flush()).await.unwrap();
    for delivery in warm {
        delivery.await.unwrap();
    }
    client.delete_topic("gone").await.unwrap();

    // One request: two good batches and one for the deleted topic, which
    // the broker refuses as a whole.
    let mut good = Vec::new();
    for partition in 0..2 {
        let record = ProducerRecord::new("good", format!("g{partition}")).partition(partition);
        good.push(producer.enqueue(record).await.unwrap());
    }
    let gone = producer
        .enqueue(ProducerRecord::new("gone", "lost").partition(1))
        .await
        .unwrap();
    timeout(LIMIT, producer.flush()).await.unwrap();

    let refused = gone.await.unwrap_err();
    assert_eq!(
        refused.code(),
        Some(brook_client::StatusCode::NotFound),
        "{refused}"
    );
    for delivery in good {
        delivery
            .await
            .expect("a good batch is not failed by its neighbour");
    }
    let values: HashSet<String> = fetch_topic(&client, "good", 2)
        .await
        .iter()
        .map(|(_, record)| value_of(record))
        .collect();
    assert_eq!(
        values,
        HashSet::from(["warm".into(), "g0".into(), "g1".into()])
    );
}

#[tokio::test]
async fn records_that_cannot_fit_their_topic_are_refused_at_enqueue() {
    let (_broker, client) = connect().await;
    client
        .create_topic(
            "small",
            2,
            TopicConfig::default().with_max_message_bytes(Some(1024)),
        )
        .await
        .unwrap();
    let producer = Producer::new(client.clone(), ProducerConfig::default());

    let missing = timeout(
        LIMIT,
        producer.enqueue(ProducerRecord::new("small", "v").partition(2)),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert_eq!(
        missing.code(),
        Some(brook_client::StatusCode::NotFound),
        "{missing}"
    );

    let large = timeout(
        LIMIT,
        producer.enqueue(ProducerRecord::new("small", vec![b'x'; 2000])),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert_eq!(
        large.code(),
        Some(brook_client::StatusCode::InvalidArgument),
        "{large}"
    );
    assert_eq!(producer.buffered_bytes(), 0, "nothing was accepted");

    // The topic grows: its new partition is found, not refused from the cache.
    client.add_partitions("small", 3).await.unwrap();
    let sent = timeout(
        LIMIT,
        producer.send(ProducerRecord::new("small", vec![b'x'; 500]).partition(2)),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!((sent.partition, sent.offset), (2, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_in_flight_together_arrive_in_order() {
    let (_broker, client) = connect().await;
    client
        .create_topic("pipelined", 1, TopicConfig::default())
        .await
        .unwrap();
    // No linger: nearly every record is a batch of its own, and up to five
    // of them are in flight to the one partition at once. Were they to
    // overtake each other on the way, the broker would refuse the early
    // arrivals as out of order and they would be sent again.
    let producer = Producer::new(
        client.clone(),
        ProducerConfig::default().with_linger(Duration::ZERO),
    );
    let mut pending = Vec::new();
    for i in 0..10_000 {
        let record = ProducerRecord::new("pipelined", format!("{i}").into_bytes());
        pending.push(producer.enqueue(record).await.unwrap());
        if i % 4 == 0 {
            tokio::task::yield_now().await;
        }
    }
    for (i, delivery) in pending.into_iter().enumerate() {
        let sent = timeout(LIMIT, delivery).await.unwrap().unwrap();
        assert_eq!(sent.offset, i as i64, "offsets follow the send order");
    }
    assert_eq!(
        producer.resent_batches(),
        0,
        "no batch needed a second attempt"
    );
    let records = fetch_all(&client, "pipelined", 0).await;
    let values: Vec<String> = records.iter().map(value_of).collect();
    let expected: Vec<String> = (0..10_000).map(|i| i.to_string()).collect();
    assert_eq!(values, expected);
}

#[tokio::test]
async fn a_send_after_the_broker_restarted_while_idle_goes_through() {
    let (dir, broker, client) = restartable("idle", 1).await;
    let addr = broker.addr();
    // No linger: the record's batch is taken at the first look, which is
    // also when the ended stream is noticed.
    let producer = Producer::new(
        client.clone(),
        ProducerConfig::default().with_linger(Duration::ZERO),
    );
    let first = producer.send(ProducerRecord::new("idle", "before")).await;
    assert_eq!(first.unwrap().offset, 0);

    // The producer's stream ends with the broker while nothing is queued;
    // the next record must open another at once, not wait out its
    // delivery timeout (two minutes).
    broker.shutdown().await.unwrap();
    let (stop, server) = serve_at(dir.path(), addr).await;
    let second = timeout(
        Duration::from_secs(20),
        producer.send(ProducerRecord::new("idle", "after")),
    )
    .await
    .expect("sent well before the delivery timeout");
    assert_eq!(second.unwrap().offset, 1);
    stop.cancel();
    timeout(LIMIT, server).await.unwrap().unwrap();
}

/// Under a lowered gRPC message bound, records of many partitions are
/// still all delivered, in requests that fit the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_fit_a_lowered_message_bound() {
    const PARTITIONS: u32 = 16;
    const RECORDS: usize = 1600;
    const MESSAGE_BYTES_MAX: usize = 256 * 1024;
    let broker = EmbeddedBroker::start().await.expect("broker starts");
    let options = brook_client::ClientOptions::default().with_message_bytes_max(MESSAGE_BYTES_MAX);
    let client = Client::connect_with(broker.endpoint(), options)
        .await
        .expect("connect");
    client
        .create_topic("bounded", PARTITIONS, TopicConfig::default())
        .await
        .expect("topic created");
    // 16 partitions × ~60 KiB batches, one request in flight: the batches
    // that fill meanwhile make about 1 MiB for the next request unless it
    // is bounded.
    let config = ProducerConfig::default()
        .with_max_in_flight(1)
        .with_batch_size(60 * 1024)
        .with_linger(Duration::from_millis(50))
        .with_delivery_timeout(Duration::from_secs(10));
    let producer = Producer::new(client.clone(), config);
    let value = "v".repeat(1000);
    let acks = send_all(&producer, RECORDS, |i| {
        ProducerRecord::new("bounded", value.clone()).partition(i as u32 % PARTITIONS)
    })
    .await;
    assert_eq!(acks.len(), RECORDS);
    assert_eq!(
        fetch_topic(&client, "bounded", PARTITIONS).await.len(),
        RECORDS
    );
}

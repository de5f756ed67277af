//! Typed events against a real in-process broker: envelopes, codecs, the
//! router and its policies, upcasting.

use std::sync::Arc;
use std::time::Duration;

use brook_broker::EmbeddedBroker;
use brook_client::event::{
    EventError, EventRouter, Outcome, RouterStats, Unhandled, UnknownPolicy, decode_envelope,
    event_record, headers, send_event, send_event_to,
};
use brook_client::{
    Client, ConsumedRecord, Consumer, ConsumerConfig, Header, NewRecord, OffsetReset, Producer,
    ProducerConfig, Record, TopicConfig,
};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::time::timeout;
use uuid::Uuid;

/// Every wait in these tests is bounded by this.
const LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OrderPlacedV1 {
    id: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OrderPlaced {
    id: u64,
    currency: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OrderCancelled {
    id: u64,
    reason: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct OrderShipped {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(string, tag = "2")]
    carrier: String,
}

brook_client::event!(OrderPlacedV1, "order.placed", version = 1, codec = json);
brook_client::event!(OrderPlaced, "order.placed", version = 2, codec = json);
brook_client::event!(OrderCancelled, "order.cancelled", version = 1, codec = json);
brook_client::event!(OrderShipped, "order.shipped", version = 1, codec = protobuf);

async fn connect() -> (EmbeddedBroker, Client) {
    let broker = EmbeddedBroker::start().await.expect("broker starts");
    let client = Client::connect(broker.endpoint()).await.expect("connect");
    client
        .create_topic("orders", 1, TopicConfig::default())
        .await
        .expect("create orders");
    (broker, client)
}

fn consumer(client: &Client, topic: &str) -> Consumer {
    let consumer = Consumer::new(
        client.clone(),
        ConsumerConfig::default()
            .with_auto_offset_reset(OffsetReset::Earliest)
            .with_max_wait(Duration::from_millis(100)),
    );
    consumer.assign(&[(topic, 0)]);
    consumer
}

async fn next(consumer: &mut Consumer) -> ConsumedRecord {
    timeout(LIMIT, consumer.next())
        .await
        .expect("a record in time")
        .expect("the stream goes on")
        .expect("no error")
}

fn header<'a>(record: &'a Record, key: &str) -> &'a str {
    let value = &record
        .headers
        .iter()
        .find(|h| h.key == key)
        .unwrap_or_else(|| panic!("a {key} header"))
        .value;
    std::str::from_utf8(value).expect("utf-8")
}

fn placed(id: u64) -> OrderPlaced {
    OrderPlaced {
        id,
        currency: "EUR".into(),
    }
}

/// Checks the envelope headers every event carries.
fn assert_envelope(record: &Record, event_type: &str, version: &str, content_type: &str) {
    assert_eq!(header(record, headers::EVENT_TYPE), event_type);
    assert_eq!(header(record, headers::VERSION), version);
    assert_eq!(header(record, headers::CONTENT_TYPE), content_type);
    let id = Uuid::parse_str(header(record, headers::EVENT_ID)).expect("a UUID");
    assert_eq!(id.get_version_num(), 4);
    let timestamp = header(record, headers::TIMESTAMP);
    assert!(timestamp.ends_with('Z'), "UTC: {timestamp}");
    let parsed = DateTime::parse_from_rfc3339(timestamp).expect("RFC 3339");
    assert_eq!(parsed.timestamp_millis(), record.timestamp);
}

#[tokio::test]
async fn a_json_event_round_trips_with_its_envelope() {
    let (_broker, client) = connect().await;
    let before = Utc::now();
    let ack = send_event(&client, "orders", Some(Bytes::from("7")), &placed(7))
        .await
        .unwrap();
    assert_eq!(ack.base_offset, 0);

    let consumed = next(&mut consumer(&client, "orders")).await;
    assert_envelope(&consumed.record, "order.placed", "2", "application/json");
    assert_eq!(
        consumed.record.value.as_deref(),
        Some(&br#"{"id":7,"currency":"EUR"}"#[..]),
        "the value is the payload alone"
    );

    let envelope = decode_envelope::<OrderPlaced>(&consumed).unwrap();
    assert_eq!(envelope.payload, placed(7));
    assert_eq!(envelope.event_type, "order.placed");
    assert_eq!(envelope.version, 2);
    assert_eq!(envelope.event_id.get_version_num(), 4);
    assert!(envelope.timestamp >= before - chrono::Duration::milliseconds(1));
    assert_eq!(
        (&*envelope.topic, envelope.partition, envelope.offset),
        ("orders", 0, 0)
    );
    assert_eq!(envelope.key.as_deref(), Some(&b"7"[..]));

    let wrong = decode_envelope::<OrderPlacedV1>(&consumed).unwrap_err();
    assert!(
        matches!(wrong, EventError::UnknownVersion { version: 2, .. }),
        "{wrong:?}"
    );
    let wrong = decode_envelope::<OrderCancelled>(&consumed).unwrap_err();
    assert!(matches!(wrong, EventError::UnknownType { .. }), "{wrong:?}");
}

#[tokio::test]
async fn a_protobuf_event_round_trips_with_its_envelope() {
    let (_broker, client) = connect().await;
    let shipped = OrderShipped {
        id: 9,
        carrier: "post".into(),
    };
    send_event_to(&client, "orders", 0, None, &shipped)
        .await
        .unwrap();

    let consumed = next(&mut consumer(&client, "orders")).await;
    assert_envelope(
        &consumed.record,
        "order.shipped",
        "1",
        "application/x-protobuf",
    );
    assert_eq!(
        consumed.record.value.as_deref(),
        Some(&prost::Message::encode_to_vec(&shipped)[..])
    );
    let envelope = decode_envelope::<OrderShipped>(&consumed).unwrap();
    assert_eq!(envelope.payload, shipped);
    assert_eq!(envelope.key, None);
}

/// What the handlers saw, as `type:id`.
type Seen = Arc<Mutex<Vec<String>>>;

fn router(seen: &Seen) -> EventRouter {
    let (placed, cancelled) = (seen.clone(), seen.clone());
    EventRouter::new()
        .on::<OrderPlaced, _, _>(move |env| {
            let seen = placed.clone();
            async move {
                assert_eq!(env.version, 2);
                seen.lock().push(format!(
                    "placed:{}:{}",
                    env.payload.id, env.payload.currency
                ));
            }
        })
        .on::<OrderCancelled, _, _>(move |env| {
            let seen = cancelled.clone();
            async move {
                seen.lock().push(format!("cancelled:{}", env.payload.id));
                Ok::<(), std::io::Error>(())
            }
        })
}

#[tokio::test]
async fn a_router_hands_each_event_type_to_its_handler() {
    let (_broker, client) = connect().await;
    send_event(&client, "orders", None, &placed(1))
        .await
        .unwrap();
    let cancelled = OrderCancelled {
        id: 1,
        reason: "changed mind".into(),
    };
    send_event(&client, "orders", None, &cancelled)
        .await
        .unwrap();
    send_event(&client, "orders", None, &placed(2))
        .await
        .unwrap();

    let seen = Seen::default();
    let router = router(&seen);
    let mut consumer = consumer(&client, "orders");
    for _ in 0..3 {
        assert_eq!(
            router.handle(&next(&mut consumer).await).await.unwrap(),
            Outcome::Handled
        );
    }
    assert_eq!(
        *seen.lock(),
        ["placed:1:EUR", "cancelled:1", "placed:2:EUR"]
    );
    assert_eq!(
        router.stats(),
        RouterStats {
            handled: 3,
            ..RouterStats::default()
        }
    );
}

/// Appends, in order: an unknown type, an unknown version of a known type,
/// a payload that does not decode, and a good event.
async fn produce_unhandled(client: &Client) {
    send_event(client, "orders", None, &OrderShipped::default())
        .await
        .expect("sends");
    let mut v9 = event_record(None, &placed(1)).expect("sends");
    v9.headers.retain(|h| h.key != headers::VERSION);
    v9.headers.push(Header {
        key: headers::VERSION.into(),
        value: Bytes::from("9"),
    });
    let mut garbage = event_record(Some(Bytes::from("k")), &placed(1)).expect("sends");
    garbage.value = Some(Bytes::from("not json"));
    client
        .produce("orders", 0, &[v9, garbage])
        .await
        .expect("sends");
    send_event(client, "orders", None, &placed(4))
        .await
        .expect("sends");
}

#[tokio::test]
async fn unhandled_records_are_skipped_and_counted_under_skip() {
    let (_broker, client) = connect().await;
    produce_unhandled(&client).await;
    let seen = Seen::default();
    let router = router(&seen).unhandled(UnknownPolicy::Skip);
    let mut consumer = consumer(&client, "orders");
    let mut outcomes = Vec::new();
    for _ in 0..4 {
        outcomes.push(router.handle(&next(&mut consumer).await).await.unwrap());
    }
    assert_eq!(
        outcomes,
        [
            Outcome::Skipped(Unhandled::UnknownType),
            Outcome::Skipped(Unhandled::UnknownVersion),
            Outcome::Skipped(Unhandled::Undecodable),
            Outcome::Handled,
        ]
    );
    assert_eq!(*seen.lock(), ["placed:4:EUR"]);
    let stats = router.stats();
    assert_eq!((stats.skipped, stats.handled, stats.failed), (3, 1, 0));
}

#[tokio::test]
async fn unhandled_records_are_errors_under_fail() {
    let (_broker, client) = connect().await;
    produce_unhandled(&client).await;
    let seen = Seen::default();
    // Fail is the default.
    let router = router(&seen);
    let mut consumer = consumer(&client, "orders");

    let error = router.handle(&next(&mut consumer).await).await.unwrap_err();
    assert!(
        matches!(error.cause(), EventError::UnknownType { event_type } if event_type == "order.shipped"),
        "{error:?}"
    );
    let error = router.handle(&next(&mut consumer).await).await.unwrap_err();
    assert!(
        matches!(error.cause(), EventError::UnknownVersion { version: 9, .. }),
        "{error:?}"
    );
    let error = router.handle(&next(&mut consumer).await).await.unwrap_err();
    assert!(
        matches!(error.cause(), EventError::Decode { version: 2, .. }),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    assert_eq!(
        router.handle(&next(&mut consumer).await).await.unwrap(),
        Outcome::Handled
    );
    assert_eq!(router.stats().failed, 3);
}

#[tokio::test]
async fn unhandled_records_land_in_the_dead_letter_topic_with_the_reason() {
    let (_broker, client) = connect().await;
    client
        .create_topic("orders.dlq", 1, TopicConfig::default())
        .await
        .unwrap();
    produce_unhandled(&client).await;
    let seen = Seen::default();
    let router = router(&seen)
        .unhandled(UnknownPolicy::DeadLetter {
            topic: "orders.dlq".into(),
        })
        .dead_letter_sender(client.clone());
    let mut consumer = consumer(&client, "orders");
    let mut originals = Vec::new();
    let mut outcomes = Vec::new();
    for _ in 0..4 {
        let consumed = next(&mut consumer).await;
        outcomes.push(router.handle(&consumed).await.unwrap());
        originals.push(consumed.record);
    }
    assert_eq!(
        outcomes,
        [
            Outcome::DeadLettered(Unhandled::UnknownType),
            Outcome::DeadLettered(Unhandled::UnknownVersion),
            Outcome::DeadLettered(Unhandled::Undecodable),
            Outcome::Handled,
        ]
    );
    assert_eq!(router.stats().dead_lettered, 3);

    let mut dlq = consumer_of(&client, "orders.dlq");
    let reasons = [
        "unknown event type order.shipped",
        "unknown version 9",
        "does not decode",
    ];
    for (original, reason) in originals.iter().zip(reasons) {
        let dead = next(&mut dlq).await.record;
        assert_eq!(dead.value, original.value);
        assert_eq!(dead.key, original.key);
        let got = header(&dead, headers::DEAD_LETTER_REASON);
        assert!(got.contains(reason), "{got:?} names {reason:?}");
        assert_eq!(header(&dead, headers::ORIGINAL_TOPIC), "orders");
        assert_eq!(header(&dead, headers::ORIGINAL_PARTITION), "0");
        assert_eq!(
            header(&dead, headers::ORIGINAL_OFFSET),
            original.offset.to_string()
        );
        // The envelope headers travel along, for a later replay.
        assert_eq!(
            header(&dead, headers::EVENT_ID),
            header(original, headers::EVENT_ID)
        );
    }
}

fn consumer_of(client: &Client, topic: &str) -> Consumer {
    consumer(client, topic)
}

#[tokio::test]
async fn dead_letter_without_a_sender_is_an_error_not_a_panic() {
    let (_broker, client) = connect().await;
    send_event(&client, "orders", None, &OrderShipped::default())
        .await
        .unwrap();
    let router = EventRouter::new().unknown_type(UnknownPolicy::DeadLetter {
        topic: "orders.dlq".into(),
    });
    let error = router
        .handle(&next(&mut consumer(&client, "orders")).await)
        .await
        .unwrap_err();
    assert!(
        matches!(error.cause(), EventError::NoDeadLetterSink { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_v1_event_is_upcast_to_v2() {
    let (_broker, client) = connect().await;
    send_event(&client, "orders", None, &OrderPlacedV1 { id: 1 })
        .await
        .unwrap();
    send_event(&client, "orders", None, &placed(2))
        .await
        .unwrap();

    let seen = Seen::default();
    // The upcast is registered before its target's handler: looked up late.
    let router = EventRouter::new()
        .upcast::<OrderPlacedV1, OrderPlaced, _>(|v1| OrderPlaced {
            id: v1.id,
            currency: "USD".into(),
        })
        .on::<OrderPlaced, _, _>({
            let seen = seen.clone();
            move |env| {
                let seen = seen.clone();
                async move {
                    seen.lock().push(format!(
                        "{} v{} {}:{}",
                        env.event_type, env.version, env.payload.id, env.payload.currency
                    ));
                }
            }
        });
    let mut consumer = consumer(&client, "orders");
    router.run((&mut consumer).take(2)).await.unwrap();
    assert_eq!(
        *seen.lock(),
        ["order.placed v2 1:USD", "order.placed v2 2:EUR"]
    );
}

#[tokio::test]
async fn an_upcast_without_a_target_handler_and_a_failing_handler_are_errors() {
    let (_broker, client) = connect().await;
    send_event(&client, "orders", None, &OrderPlacedV1 { id: 1 })
        .await
        .unwrap();
    send_event(&client, "orders", None, &placed(2))
        .await
        .unwrap();
    let router = EventRouter::new()
        .upcast::<OrderPlacedV1, OrderPlaced, _>(|v1| placed(v1.id))
        .on::<OrderCancelled, _, _>(|_| async {});
    let mut consumer = consumer(&client, "orders");
    let error = router.handle(&next(&mut consumer).await).await.unwrap_err();
    assert!(
        matches!(error.cause(), EventError::NoHandler { version: 2, .. }),
        "{error:?}"
    );

    let failing = EventRouter::new().on::<OrderPlaced, _, _>(|_| async { Err("out of stock") });
    let error = failing
        .handle(&next(&mut consumer).await)
        .await
        .unwrap_err();
    assert!(
        matches!(error.cause(), EventError::Handler { offset: 1, .. }),
        "{error:?}"
    );
    assert_eq!(failing.stats().failed, 1);
}

fn consumed(headers: Vec<Header>, value: Option<&'static str>) -> ConsumedRecord {
    ConsumedRecord {
        topic: Arc::from("orders"),
        partition: 0,
        record: Record {
            offset: 0,
            timestamp: 0,
            key: None,
            value: value.map(Bytes::from),
            headers,
        },
    }
}

#[tokio::test]
async fn malformed_envelopes_are_classified_never_a_panic() {
    let router = EventRouter::new()
        .on::<OrderPlaced, _, _>(|_| async {})
        .unhandled(UnknownPolicy::Skip);
    let good = event_record(None, &placed(1)).unwrap().headers;
    let with = |key: &str, value: &'static [u8]| {
        let mut headers: Vec<Header> = good.iter().filter(|h| h.key != key).cloned().collect();
        headers.push(Header {
            key: key.into(),
            value: Bytes::from_static(value),
        });
        headers
    };
    let without = |key: &str| {
        good.iter()
            .filter(|h| h.key != key)
            .cloned()
            .collect::<Vec<_>>()
    };
    let json = Some(r#"{"id":1,"currency":"EUR"}"#);
    let cases = [
        (consumed(vec![], json), Unhandled::UnknownType),
        (
            consumed(with(headers::EVENT_TYPE, b"\xff"), json),
            Unhandled::UnknownType,
        ),
        (
            consumed(without(headers::VERSION), json),
            Unhandled::Undecodable,
        ),
        (
            consumed(with(headers::VERSION, b"two"), json),
            Unhandled::Undecodable,
        ),
        (
            consumed(with(headers::EVENT_ID, b"not-a-uuid"), json),
            Unhandled::Undecodable,
        ),
        (
            consumed(with(headers::TIMESTAMP, b"yesterday"), json),
            Unhandled::Undecodable,
        ),
        (
            consumed(with(headers::CONTENT_TYPE, b"application/x-protobuf"), json),
            Unhandled::Undecodable,
        ),
        (consumed(good.clone(), None), Unhandled::Undecodable),
        (
            consumed(good.clone(), Some("\u{0}")),
            Unhandled::Undecodable,
        ),
    ];
    for (record, why) in &cases {
        assert_eq!(
            router.handle(record).await.unwrap(),
            Outcome::Skipped(*why),
            "{record:?}"
        );
    }
    assert_eq!(
        router.handle(&consumed(good, json)).await.unwrap(),
        Outcome::Handled
    );
    assert_eq!(router.stats().skipped, cases.len() as u64);
}

#[tokio::test]
async fn handlers_run_inside_the_record_span() {
    let _subscriber = tracing::subscriber::set_default(tracing_subscriber::registry());
    let names = Seen::default();
    let router = EventRouter::new().on::<OrderPlaced, _, _>({
        let names = names.clone();
        move |_| {
            let names = names.clone();
            async move {
                let name = tracing::Span::current()
                    .metadata()
                    .map(|m| m.name().to_owned());
                names.lock().push(name.unwrap_or_default());
            }
        }
    });
    let record = event_record(None, &placed(1)).unwrap();
    let consumed = consumed(record.headers, Some(r#"{"id":1,"currency":"EUR"}"#));
    router.handle(&consumed).await.unwrap();
    assert_eq!(*names.lock(), ["brook.record"]);
}

#[test]
fn an_event_record_carries_the_payload_and_envelope() {
    let record: NewRecord = event_record(Some(Bytes::from("k")), &placed(3)).unwrap();
    assert_eq!(record.key.as_deref(), Some(&b"k"[..]));
    let keys: Vec<&str> = record.headers.iter().map(|h| h.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "eventType",
            "eventId",
            "timestamp",
            "version",
            "contentType"
        ]
    );
}

#[tokio::test]
async fn events_sent_through_a_producer_are_partitioned_by_key_and_dead_lettered_through_it() {
    let (_broker, client) = connect().await;
    client
        .create_topic("payments", 3, TopicConfig::default())
        .await
        .unwrap();
    client
        .create_topic("payments.dlq", 1, TopicConfig::default())
        .await
        .unwrap();
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let mut partitions = Vec::new();
    for id in 0..6_u64 {
        let key = Some(Bytes::from(format!("order-{}", id % 2)));
        let sent = send_event(&producer, "payments", key, &placed(id))
            .await
            .unwrap();
        partitions.push(sent.partition);
    }
    // Equal keys, equal partitions.
    assert!(
        partitions.iter().step_by(2).all(|p| *p == partitions[0]),
        "{partitions:?}"
    );
    assert!(
        partitions
            .iter()
            .skip(1)
            .step_by(2)
            .all(|p| *p == partitions[1]),
        "{partitions:?}"
    );
    let sent = send_event_to(&producer, "payments", 2, None, &OrderShipped::default())
        .await
        .unwrap();
    assert_eq!(sent.partition, 2);

    let router = EventRouter::new()
        .on::<OrderPlaced, _, _>(|_| async {})
        .unknown_type(UnknownPolicy::DeadLetter {
            topic: "payments.dlq".into(),
        })
        .dead_letter_sender(producer.clone());
    let mut consumer = consumer(&client, "payments");
    consumer.assign(&[("payments", 0), ("payments", 1), ("payments", 2)]);
    let mut ids = Vec::new();
    for _ in 0..7 {
        let consumed = next(&mut consumer).await;
        match router.handle(&consumed).await.unwrap() {
            Outcome::Handled => {
                let envelope = decode_envelope::<OrderPlaced>(&consumed).unwrap();
                assert_eq!(envelope.partition, partitions[envelope.payload.id as usize]);
                ids.push(envelope.payload.id);
            }
            outcome => assert_eq!(outcome, Outcome::DeadLettered(Unhandled::UnknownType)),
        }
    }
    ids.sort_unstable();
    assert_eq!(ids, [0, 1, 2, 3, 4, 5]);
    let dead = next(&mut consumer_of(&client, "payments.dlq")).await.record;
    assert_eq!(header(&dead, headers::EVENT_TYPE), "order.shipped");
    assert_eq!(header(&dead, headers::ORIGINAL_PARTITION), "2");
    producer.close().await;
}

#[tokio::test]
async fn a_record_whose_handler_failed_is_read_again_after_run_consumer() {
    let (_broker, client) = connect().await;
    for id in 0..3 {
        send_event(&client, "orders", None, &placed(id))
            .await
            .unwrap();
    }
    let seen = Seen::default();
    let fail_once = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let router = EventRouter::new().on::<OrderPlaced, _, _>({
        let seen = seen.clone();
        move |env| {
            let fails =
                env.offset == 1 && fail_once.swap(false, std::sync::atomic::Ordering::SeqCst);
            let seen = seen.clone();
            async move {
                if fails {
                    return Err("flaky downstream");
                }
                seen.lock().push(format!("{}", env.offset));
                Ok(())
            }
        }
    });
    let mut consumer = consumer(&client, "orders");

    let error = timeout(LIMIT, router.run_consumer(&mut consumer))
        .await
        .expect("fails in time")
        .unwrap_err();
    assert_eq!(error.record(), Some(("orders", 0, 1)), "{error:?}");
    assert!(
        matches!(error.cause(), EventError::Handler { .. }),
        "{error:?}"
    );
    assert_eq!(
        consumer.position("orders", 0),
        Some(1),
        "what a commit would store does not pass the failed record"
    );
    assert_eq!(*seen.lock(), ["0"]);

    // Reading on starts with the failed record.
    let again = next(&mut consumer).await;
    assert_eq!(again.record.offset, 1);
    router.handle(&again).await.unwrap();
    router.handle(&next(&mut consumer).await).await.unwrap();
    assert_eq!(*seen.lock(), ["0", "1", "2"]);
}

#[tokio::test]
async fn every_router_error_names_its_record() {
    let (_broker, client) = connect().await;
    send_event(&client, "orders", None, &OrderShipped::default())
        .await
        .unwrap();
    let error = EventRouter::new()
        .handle(&next(&mut consumer(&client, "orders")).await)
        .await
        .unwrap_err();
    assert_eq!(error.record(), Some(("orders", 0, 0)));
    assert!(
        matches!(error.cause(), EventError::UnknownType { .. }),
        "{error:?}"
    );
    assert_eq!(error.to_string(), "event at orders/0@0 not handled");
    let source = std::error::Error::source(&error).expect("the reason");
    assert_eq!(source.to_string(), "unknown event type order.shipped");
}

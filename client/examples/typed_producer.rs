//! Sends a few order events to a Brook broker: JSON `order.placed` in its
//! current version and in the old one (as a not yet upgraded service would),
//! and a protobuf `order.cancelled`, creating the topic if missing.
//!
//! ```text
//! brook serve &
//! cargo run -p brook-client --example typed_producer [-- http://127.0.0.1:9420]
//! ```

mod orders;

use brook_client::event::send_event;
use brook_client::{Client, Producer, ProducerConfig};
use bytes::Bytes;

use orders::{OrderCancelled, OrderPlaced, OrderPlacedV1, TOPIC};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let client = Client::connect(orders::address()).await?;
    orders::ensure_topic(&client, TOPIC, 3).await?;
    let producer = Producer::new(client, ProducerConfig::default());

    for order_id in 1..=3_u64 {
        // Keyed by order: one order's events go to one partition, in order.
        let key = Some(Bytes::from(order_id.to_string()));
        let placed = OrderPlaced {
            order_id,
            amount_cents: 1_000 * order_id,
            currency: "USD".to_owned(),
        };
        let ack = send_event(&producer, TOPIC, key, &placed).await?;
        println!("order.placed v2 for order {order_id}: {ack:?}");
    }

    let old = OrderPlacedV1 {
        order_id: 4,
        amount_cents: 4_000,
    };
    let ack = send_event(&producer, TOPIC, Some(Bytes::from("4")), &old).await?;
    println!("order.placed v1 for order 4: {ack:?}");

    let cancelled = OrderCancelled {
        order_id: 2,
        reason: "changed mind".to_owned(),
    };
    let ack = send_event(&producer, TOPIC, Some(Bytes::from("2")), &cancelled).await?;
    println!("order.cancelled for order 2: {ack:?}");
    producer.close().await;
    Ok(())
}

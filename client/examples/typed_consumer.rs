//! Handles the order events of `typed_producer` until Ctrl-C: a router with
//! a handler per event type, v1 orders upcast to v2, unknown event types
//! skipped, undecodable ones sent to a dead-letter topic.
//!
//! ```text
//! brook serve &
//! cargo run -p brook-client --example typed_producer
//! cargo run -p brook-client --example typed_consumer [-- http://127.0.0.1:9420]
//! ```

mod orders;

use brook_client::event::{EventRouter, UnknownPolicy};
use brook_client::{Client, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig};

use orders::{DEAD_LETTER_TOPIC, OrderCancelled, OrderPlaced, OrderPlacedV1, TOPIC};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let client = Client::connect(orders::address()).await?;
    let partitions = orders::ensure_topic(&client, TOPIC, 3).await?;
    orders::ensure_topic(&client, DEAD_LETTER_TOPIC, 1).await?;

    let router = EventRouter::new()
        .on::<OrderPlaced, _, _>(|env| async move {
            let order = env.payload;
            println!(
                "{}/{}@{} order {} placed: {} {} cents (event {} at {})",
                env.topic,
                env.partition,
                env.offset,
                order.order_id,
                order.currency,
                order.amount_cents,
                env.event_id,
                env.timestamp
            );
        })
        .upcast::<OrderPlacedV1, OrderPlaced, _>(|v1| OrderPlaced {
            order_id: v1.order_id,
            amount_cents: v1.amount_cents,
            // Orders from before the currency field were all in euros.
            currency: "EUR".to_owned(),
        })
        .on::<OrderCancelled, _, _>(|env| async move {
            println!(
                "{}/{}@{} order {} cancelled: {}",
                env.topic, env.partition, env.offset, env.payload.order_id, env.payload.reason
            );
        })
        .unknown_type(UnknownPolicy::Skip)
        .unknown_version(UnknownPolicy::DeadLetter {
            topic: DEAD_LETTER_TOPIC.to_owned(),
        })
        .undecodable(UnknownPolicy::DeadLetter {
            topic: DEAD_LETTER_TOPIC.to_owned(),
        })
        .dead_letter_sender(Producer::new(client.clone(), ProducerConfig::default()));

    let config = ConsumerConfig::default().with_auto_offset_reset(OffsetReset::Earliest);
    let mut consumer = Consumer::new(client, config);
    let assignment: Vec<(&str, u32)> = (0..partitions).map(|p| (TOPIC, p)).collect();
    consumer.assign(&assignment);
    println!("reading {TOPIC} ({partitions} partitions) from the start; Ctrl-C stops");

    // run_consumer seeks back to a record whose handling failed, so a
    // restarted loop reads it again instead of skipping it.
    tokio::select! {
        handled = router.run_consumer(&mut consumer) => handled?,
        _ = tokio::signal::ctrl_c() => {}
    }
    println!("stopped: {:?}", router.stats());
    Ok(())
}

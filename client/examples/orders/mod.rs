//! The order events both examples share, as a schema crate would in an
//! application.

// Each example uses part of it.
#![allow(dead_code)]

use brook_client::{Client, ClientError, TopicConfig};
use serde::{Deserialize, Serialize};

/// The topic the examples use, and where undecodable orders go.
pub const TOPIC: &str = "orders";
pub const DEAD_LETTER_TOPIC: &str = "orders.dlq";
/// `brook serve`'s default gRPC address.
pub const DEFAULT_ADDRESS: &str = "http://127.0.0.1:9420";

/// The first schema of `order.placed`: no currency yet.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderPlacedV1 {
    pub order_id: u64,
    pub amount_cents: u64,
}
brook_client::event!(OrderPlacedV1, "order.placed", version = 1, codec = json);

/// The current schema of `order.placed`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub order_id: u64,
    pub amount_cents: u64,
    pub currency: String,
}
brook_client::event!(OrderPlaced, "order.placed", version = 2, codec = json);

/// A protobuf event, as prost would generate it from a `.proto` file.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OrderCancelled {
    #[prost(uint64, tag = "1")]
    pub order_id: u64,
    #[prost(string, tag = "2")]
    pub reason: String,
}
brook_client::event!(
    OrderCancelled,
    "order.cancelled",
    version = 1,
    codec = protobuf
);

/// The broker address: the first argument, or `brook serve`'s default.
pub fn address() -> String {
    std::env::args()
        .nth(1)
        .unwrap_or_else(|| DEFAULT_ADDRESS.to_owned())
}

/// Creates `topic` unless it exists; returns its partition count.
pub async fn ensure_topic(
    client: &Client,
    topic: &str,
    partitions: u32,
) -> Result<u32, ClientError> {
    match client
        .create_topic(topic, partitions, TopicConfig::default())
        .await
    {
        Ok(created) => Ok(created.partitions.len() as u32),
        Err(e) if e.kind() == brook_client::ErrorKind::AlreadyExists => {
            Ok(client.describe_topic(topic).await?.partitions.len() as u32)
        }
        Err(e) => Err(e),
    }
}

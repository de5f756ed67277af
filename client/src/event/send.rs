//! Sending typed events: anything that can append one record implements
//! [`EventSender`] (the [`Producer`] for batching, partitioning by key and
//! retries; a [`Client`] for one unary produce per event); [`send_event`] and
//! [`send_event_to`] wrap an event in its envelope and send it.

use std::future::Future;
use std::pin::Pin;

use brook_record::NewRecord;
use bytes::Bytes;

use super::Event;
use super::envelope::event_record;
use super::error::EventError;
use crate::client::Client;
use crate::error::ClientError;
use crate::produce::ProduceAck;
use crate::producer::{Producer, ProducerRecord, RecordMetadata};

/// Appends single records: what [`send_event`] and dead-lettering need.
pub trait EventSender: Send + Sync {
    /// The broker's acknowledgement.
    type Ack: Send;

    /// Appends `record` to the topic; to `partition` if given, else where the
    /// sender's partitioner puts it.
    fn send_record(
        &self,
        topic: &str,
        partition: Option<u32>,
        record: NewRecord,
    ) -> impl Future<Output = Result<Self::Ack, ClientError>> + Send;
}

/// A [`Producer`] batches the record with others, partitions it by key
/// (sticky for keyless records) and retries it until its delivery timeout.
impl EventSender for Producer {
    type Ack = RecordMetadata;

    async fn send_record(
        &self,
        topic: &str,
        partition: Option<u32>,
        record: NewRecord,
    ) -> Result<RecordMetadata, ClientError> {
        self.send(ProducerRecord {
            topic: topic.to_owned(),
            partition,
            key: record.key,
            value: record.value,
            headers: record.headers,
            timestamp: Some(record.timestamp),
        })
        .await
    }
}

/// A [`Client`] sends each record as its own batch in one unary produce. It
/// has no partitioner: without a partition a record goes to partition 0.
impl EventSender for Client {
    type Ack = ProduceAck;

    async fn send_record(
        &self,
        topic: &str,
        partition: Option<u32>,
        record: NewRecord,
    ) -> Result<ProduceAck, ClientError> {
        self.produce(topic, partition.unwrap_or(0), &[record]).await
    }
}

/// Sends `event` in its envelope (new event id, current time) to `topic`,
/// partitioned as `sender` partitions `key`.
///
/// ```no_run
/// # async fn example() -> Result<(), brook_client::event::EventError> {
/// use brook_client::event::send_event;
/// use brook_client::{Client, Producer, ProducerConfig};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct OrderPlaced { id: u64 }
/// brook_client::event!(OrderPlaced, "order.placed", version = 1, codec = json);
///
/// let client = Client::connect("http://127.0.0.1:9420").await?;
/// let producer = Producer::new(client, ProducerConfig::default());
/// let sent = send_event(&producer, "orders", Some("7".into()), &OrderPlaced { id: 7 }).await?;
/// println!("order placed at {}/{}@{}", sent.topic, sent.partition, sent.offset);
/// # Ok(())
/// # }
/// ```
pub async fn send_event<S: EventSender, E: Event + Sync>(
    sender: &S,
    topic: &str,
    key: Option<Bytes>,
    event: &E,
) -> Result<S::Ack, EventError> {
    let record = event_record(key, event)?;
    Ok(sender.send_record(topic, None, record).await?)
}

/// [`send_event`] to a given partition.
pub async fn send_event_to<S: EventSender, E: Event + Sync>(
    sender: &S,
    topic: &str,
    partition: u32,
    key: Option<Bytes>,
    event: &E,
) -> Result<S::Ack, EventError> {
    let record = event_record(key, event)?;
    Ok(sender.send_record(topic, Some(partition), record).await?)
}

type SendFuture<'a> = Pin<Box<dyn Future<Output = Result<(), ClientError>> + Send + 'a>>;

/// An [`EventSender`] behind a pointer, for the router's dead letters.
pub(super) trait DynSender: Send + Sync {
    fn send<'a>(&'a self, topic: &'a str, record: NewRecord) -> SendFuture<'a>;
}

impl<S: EventSender> DynSender for S {
    fn send<'a>(&'a self, topic: &'a str, record: NewRecord) -> SendFuture<'a> {
        Box::pin(async move {
            self.send_record(topic, None, record).await?;
            Ok(())
        })
    }
}

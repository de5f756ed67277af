//! The batching, retrying, idempotent [`Producer`].
//!
//! `send`/`enqueue` run in the caller's task: they take buffer memory (and
//! wait for it), learn the topic's partition count, pick the partition and
//! hand the record to the sender task through a bounded inbox. The sender
//! task (`sender.rs`) owns everything else: open batches
//! (`accumulator.rs`), each partition's queue of closed batches and its
//! retry and ordering rules (`queue.rs`), and the produce requests in
//! flight.
//!
//! Invariants: the bytes of accepted, unanswered records never exceed
//! `buffer_memory` (a semaphore permit per record, released when its batch
//! is answered); every accepted record is answered exactly once, with its
//! offset or an error, at the latest when its delivery timeout runs out
//! (plus the time an in-flight request needs to return).

mod accumulator;
mod batch;
mod config;
mod error;
mod metadata;
mod partitioner;
mod queue;
mod record;
mod sender;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};

pub use config::{
    DEFAULT_BATCH_SIZE, DEFAULT_BUFFER_MEMORY, DEFAULT_DELIVERY_TIMEOUT, DEFAULT_LINGER,
    DEFAULT_MAX_IN_FLIGHT, DEFAULT_RETRY_BACKOFF, DEFAULT_RETRY_BACKOFF_MAX, ProducerConfig,
};
pub use partitioner::fnv1a32;
pub use record::{ProducerRecord, RecordMetadata};

use self::metadata::{MetadataCache, TOPICS_MAX, TopicMetadata};
use self::partitioner::{Target, keyed_partition};
use self::record::record_size;
use self::sender::{Command, Enqueued, Sender};
use crate::client::Client;
use crate::error::ClientError;

/// A topic and partition, as the sender task keys its state.
pub(crate) type TopicPartition = (Arc<str>, u32);
/// Where a record's outcome goes.
pub(crate) type Reply = oneshot::Sender<Result<RecordMetadata, ClientError>>;

/// Records and commands waiting for the sender task. Records already hold
/// their buffer memory, so this only bounds how many wait; `send` waits
/// when it is full.
const INBOX_CAPACITY: usize = 1024;

/// A batching, retrying producer: records are gathered per partition into
/// batches (sent when full or after `linger`), several partitions' batches
/// travel in one request, failed attempts are retried with backoff until
/// the delivery timeout, and with idempotence (the default) a retried batch
/// is appended once and the order within a partition is kept.
///
/// Cheap to clone; clones share one sender task and one buffer. When the
/// last clone is dropped, the records already accepted are still sent.
///
/// ```no_run
/// # async fn example() -> Result<(), brook_client::ClientError> {
/// use brook_client::{Client, Producer, ProducerConfig, ProducerRecord};
///
/// let client = Client::connect("http://127.0.0.1:9420").await?;
/// let producer = Producer::new(client, ProducerConfig::default());
///
/// // Wait for the acknowledgement of one record:
/// let sent = producer
///     .send(ProducerRecord::new("orders", "order 1").key("customer-7"))
///     .await?;
/// println!("{}/{} at offset {}", sent.topic, sent.partition, sent.offset);
///
/// // Or queue many and collect the acknowledgements later:
/// let mut pending = Vec::new();
/// for i in 0..1000 {
///     let record = ProducerRecord::new("orders", format!("order {i}"));
///     pending.push(producer.enqueue(record).await?);
/// }
/// producer.flush().await;
/// for delivery in pending {
///     delivery.await?;
/// }
/// producer.close().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Producer {
    handle: Arc<Handle>,
}

/// What the clones of one producer share; dropping the last one closes
/// the inbox, which lets the sender task finish.
#[derive(Debug)]
struct Handle {
    shared: Arc<Shared>,
    /// To the sender task; bounded by `INBOX_CAPACITY`.
    inbox: mpsc::Sender<Command>,
}

/// State shared by the callers and the sender task.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) client: Client,
    pub(crate) config: ProducerConfig,
    /// One permit per byte of `buffer_memory`: a record holds its size
    /// from `enqueue` until its batch is answered.
    memory: Arc<Semaphore>,
    /// The most buffer memory ever held at once (a test hook reads it).
    memory_peak: AtomicUsize,
    /// Partition counts by topic, bounded; an entry is dropped when the
    /// broker says the topic or partition does not exist. Never held across
    /// an await.
    pub(crate) metadata: Mutex<MetadataCache>,
    /// The error that fenced the producer, if it was; never held across an await.
    pub(crate) fenced: Mutex<Option<ClientError>>,
    /// Test hook: the next this many acknowledgements are treated as lost.
    pub(crate) drop_acknowledgements: AtomicUsize,
    /// Set by the sender task when it ends.
    pub(crate) finished: watch::Sender<bool>,
}

impl Producer {
    /// Starts a producer on `client` (its connection is shared). Must be
    /// called within a Tokio runtime: it spawns the sender task. The
    /// idempotent producer id is fetched when the first batch is sent.
    ///
    /// # Panics
    ///
    /// When `config` is inconsistent (see [`ProducerConfig`]'s fields).
    pub fn new(client: Client, config: ProducerConfig) -> Self {
        config.check();
        let (inbox, commands) = mpsc::channel(INBOX_CAPACITY);
        let shared = Arc::new(Shared {
            client,
            config,
            memory: Arc::new(Semaphore::new(config.buffer_memory)),
            memory_peak: AtomicUsize::new(0),
            metadata: Mutex::new(MetadataCache::new(TOPICS_MAX)),
            fenced: Mutex::new(None),
            drop_acknowledgements: AtomicUsize::new(0),
            finished: watch::Sender::new(false),
        });
        tokio::spawn(Sender::new(shared.clone(), commands).run());
        Self {
            handle: Arc::new(Handle { shared, inbox }),
        }
    }

    /// The settings this producer was made with.
    pub fn config(&self) -> &ProducerConfig {
        &self.handle.shared.config
    }

    /// Sends `record` and waits for the broker's acknowledgement (or the
    /// delivery timeout).
    pub async fn send(&self, record: ProducerRecord) -> Result<RecordMetadata, ClientError> {
        self.enqueue(record).await?.await
    }

    /// Accepts `record` for sending, waiting only while the buffer is full;
    /// the returned future yields its acknowledgement. Dropping the future
    /// does not cancel the record (fire and forget).
    ///
    /// Fails at once when the producer is closed or fenced, when the record
    /// is larger than `buffer_memory`, when the topic's partition count
    /// cannot be learned (it does not exist, or the broker stays
    /// unreachable for the delivery timeout), when the record names a
    /// partition the topic does not have (`NOT_FOUND`), or when a batch of
    /// the record alone, uncompressed, would exceed the topic's
    /// `max_message_bytes` (`INVALID_ARGUMENT`).
    pub async fn enqueue(&self, mut record: ProducerRecord) -> Result<DeliveryFuture, ClientError> {
        let shared = &self.handle.shared;
        if let Some(error) = &*shared.fenced.lock() {
            return Err(error::replicate(error));
        }
        if self.handle.inbox.is_closed() {
            return Err(error::closed());
        }
        let deadline = Instant::now() + shared.config.delivery_timeout;
        record.add_traceparent();
        let metadata = shared.checked_metadata(&record, deadline).await?;
        let target = match (record.partition, &record.key) {
            (Some(partition), _) => Target::Partition(partition),
            (None, Some(key)) => Target::Partition(keyed_partition(key, metadata.partition_count)),
            (None, None) => Target::Sticky {
                partition_count: metadata.partition_count,
            },
        };
        let size = record_size(&record);
        let permits = u32::try_from(size)
            .ok()
            .filter(|&permits| permits as usize <= shared.config.buffer_memory)
            .ok_or_else(|| error::larger_than_buffer(size, shared.config.buffer_memory))?;
        let permit = shared
            .memory
            .clone()
            .acquire_many_owned(permits)
            .await
            .expect("the memory semaphore is never closed");
        shared
            .memory_peak
            .fetch_max(shared.buffered_bytes(), Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        let enqueued = Enqueued {
            topic: Arc::from(record.topic.as_str()),
            target,
            record: record.into_new_record(),
            reply,
            permit,
            deadline,
            batch_bytes_max: shared
                .config
                .batch_size
                .min(metadata.max_message_bytes as usize),
        };
        self.handle
            .inbox
            .send(Command::Record(Box::new(enqueued)))
            .await
            .map_err(|_closed| error::closed())?;
        Ok(DeliveryFuture { answer })
    }

    /// Sends every record accepted so far without waiting for `linger`, and
    /// waits until each is answered (acknowledged or failed).
    pub async fn flush(&self) {
        let (waiter, done) = oneshot::channel();
        if self.handle.inbox.send(Command::Flush(waiter)).await.is_ok() && done.await.is_ok() {
            return;
        }
        // The task is ending: it answers everything before it does.
        self.wait_finished().await;
    }

    /// Sends every record accepted so far, waits until each is answered,
    /// and ends the sender task. `send` fails from then on, on every clone.
    pub async fn close(&self) {
        // An error means it is closing already.
        let _ = self.handle.inbox.send(Command::Close).await;
        self.wait_finished().await;
    }

    async fn wait_finished(&self) {
        let mut finished = self.handle.shared.finished.subscribe();
        // The sender is held by `shared`, which outlives this call.
        let _ = finished.wait_for(|finished| *finished).await;
    }

    /// Test hook: the next `n` acknowledgements (one per batch) the broker
    /// sends are discarded and treated as lost answers, so the batches are
    /// sent again. `0` stops dropping. Not part of the API.
    #[doc(hidden)]
    pub fn drop_acknowledgements(&self, n: usize) {
        self.handle
            .shared
            .drop_acknowledgements
            .store(n, Ordering::SeqCst);
    }

    /// Test hook: bytes of buffer memory held now. Not part of the API.
    #[doc(hidden)]
    pub fn buffered_bytes(&self) -> usize {
        self.handle.shared.buffered_bytes()
    }

    /// Test hook: the most buffer memory ever held at once. Not part of the API.
    #[doc(hidden)]
    pub fn buffered_bytes_peak(&self) -> usize {
        self.handle.shared.memory_peak.load(Ordering::Relaxed)
    }
}

impl Shared {
    fn buffered_bytes(&self) -> usize {
        self.config.buffer_memory - self.memory.available_permits()
    }

    /// The metadata of `record`'s topic, after checking that the record
    /// fits it: its partition exists (the topic may have grown since it was
    /// cached: then it is described again), and a batch of the record alone
    /// (its size bound plus the batch header) is within `max_message_bytes`.
    async fn checked_metadata(
        &self,
        record: &ProducerRecord,
        deadline: Instant,
    ) -> Result<TopicMetadata, ClientError> {
        let topic = &record.topic;
        let mut metadata = self.topic_metadata(topic, deadline).await?;
        if let Some(partition) = record.partition {
            if partition >= metadata.partition_count {
                self.metadata.lock().remove(topic);
                metadata = self.topic_metadata(topic, deadline).await?;
            }
            if partition >= metadata.partition_count {
                return Err(error::no_such_partition(
                    topic,
                    partition,
                    metadata.partition_count,
                ));
            }
        }
        let batch_bytes = record_size(record) + brook_record::HEADER_LEN;
        if batch_bytes > metadata.max_message_bytes as usize {
            return Err(error::larger_than_topic_limit(
                topic,
                batch_bytes,
                metadata.max_message_bytes,
            ));
        }
        Ok(metadata)
    }

    /// The topic's metadata, from the cache or the broker; retries an
    /// unreachable broker until `deadline`.
    async fn topic_metadata(
        &self,
        topic: &str,
        deadline: Instant,
    ) -> Result<TopicMetadata, ClientError> {
        if let Some(metadata) = self.metadata.lock().get(topic) {
            return Ok(metadata);
        }
        let backoff = self.config.backoff();
        let timed_out = || error::delivery_timed_out(self.config.delivery_timeout);
        let mut retries = 0;
        loop {
            let described =
                tokio::time::timeout_at(deadline.into(), self.client.describe_topic(topic))
                    .await
                    .map_err(|_elapsed| timed_out())?;
            match described {
                Ok(description) => {
                    let partition_count = u32::try_from(description.partitions.len())
                        .ok()
                        .filter(|&count| count > 0)
                        .ok_or_else(|| {
                            ClientError::Protocol(format!(
                                "topic {topic} is described with {} partitions",
                                description.partitions.len()
                            ))
                        })?;
                    let metadata = TopicMetadata {
                        partition_count,
                        max_message_bytes: description.config.max_message_bytes,
                    };
                    self.metadata.lock().insert(topic, metadata);
                    return Ok(metadata);
                }
                Err(error) if error.is_retryable() => {
                    let retry_at = Instant::now() + backoff.delay(retries);
                    retries += 1;
                    if retry_at >= deadline {
                        tracing::debug!(topic, %error, "describe_topic failed until the delivery timeout");
                        return Err(timed_out());
                    }
                    tokio::time::sleep_until(retry_at.into()).await;
                }
                Err(error) => return Err(error),
            }
        }
    }
}

/// The acknowledgement of one record accepted by [`Producer::enqueue`].
#[derive(Debug)]
#[must_use = "await it to learn whether the record was appended (dropping it does not cancel the send)"]
pub struct DeliveryFuture {
    answer: oneshot::Receiver<Result<RecordMetadata, ClientError>>,
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata, ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // The sender task answers every record it takes; a dropped reply
        // means the task is gone (the runtime shut down).
        Pin::new(&mut self.answer)
            .poll(cx)
            .map(|answer| answer.unwrap_or_else(|_gone| Err(error::closed())))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tonic::transport::Endpoint;

    use super::*;
    use crate::ClientOptions;

    /// A client whose connection is made on first use, to nowhere.
    fn unconnected_client() -> Client {
        let channel = Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
        Client::from_channel(channel, ClientOptions::default())
    }

    #[tokio::test]
    async fn flush_and_close_return_when_the_sender_task_panics() {
        let producer = Producer::new(unconnected_client(), ProducerConfig::default());
        producer
            .handle
            .inbox
            .send(Command::Panic)
            .await
            .expect("the task takes commands");
        let limit = Duration::from_secs(10);
        tokio::time::timeout(limit, producer.flush())
            .await
            .expect("flush returns once the task is gone");
        tokio::time::timeout(limit, producer.close())
            .await
            .expect("close returns once the task is gone");
        let refused = producer
            .enqueue(ProducerRecord::new("t", "v"))
            .await
            .expect_err("the producer is closed");
        assert_eq!(refused.code(), Some(tonic::Code::Cancelled));
    }
}

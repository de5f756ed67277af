//! The batching, retrying, idempotent [`Producer`].
//!
//! `send`/`enqueue` run in the caller's task: they reserve buffer memory
//! (and wait for it), learn the topic's partition count, pick the
//! partition and encode the record into its partition's open batch, all
//! under one short lock (`accumulator.rs`). The sender task (`sender.rs`)
//! takes batches when they fill up or are due, keeps each partition's
//! queue of closed batches with its retry and ordering rules (`queue.rs`),
//! and sends them in multi-partition produce requests. Each batch answers
//! all its records' [`DeliveryFuture`]s at once (`completion.rs`).
//!
//! Invariants: the bytes of accepted, unanswered records never exceed
//! `buffer_memory` (`buffer.rs`: reserved per record, given back when its
//! batch is answered); every accepted record is answered exactly once,
//! with its offset or an error, at the latest when its delivery timeout
//! runs out (plus the time an in-flight request needs to return).

mod accumulator;
mod batch;
mod buffer;
mod completion;
mod config;
mod connection;
mod error;
mod metadata;
mod partitioner;
mod queue;
mod record;
mod sender;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::Instant;

use brook_record::NewRecord;
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc, oneshot, watch};

pub use completion::DeliveryFuture;
pub use config::{
    DEFAULT_BATCH_SIZE, DEFAULT_BUFFER_MEMORY, DEFAULT_DELIVERY_TIMEOUT, DEFAULT_LINGER,
    DEFAULT_MAX_IN_FLIGHT, DEFAULT_RETRY_BACKOFF, DEFAULT_RETRY_BACKOFF_MAX, ProducerConfig,
};
pub use partitioner::fnv1a32;
pub use record::{ProducerRecord, RecordMetadata};

use self::accumulator::{Accumulator, Incoming};
use self::buffer::BufferMemory;
use self::metadata::{MetadataCache, TOPICS_MAX, TopicMetadata};
use self::partitioner::{Target, keyed_partition};
use self::record::{WallClock, record_size};
use self::sender::{Control, Sender};
use crate::client::Client;
use crate::error::ClientError;

/// A topic and partition, as the sender task keys its state.
pub(crate) type TopicPartition = (Arc<str>, u32);

/// Flush requests waiting for the sender task.
const CONTROL_CAPACITY: usize = 64;

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
/// the producer, which lets the sender task finish.
#[derive(Debug)]
struct Handle {
    shared: Arc<Shared>,
    /// Flush requests to the sender task.
    control: mpsc::Sender<Control>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.close();
    }
}

/// State shared by the callers and the sender task.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) client: Client,
    pub(crate) config: ProducerConfig,
    pub(crate) buffer: Arc<BufferMemory>,
    /// Everything callers and the sender both change; never held across
    /// an await, and only for a few map lookups and one record's encoding.
    pub(crate) state: Mutex<State>,
    /// Wakes the sender task: a batch opened or filled up, a caller waits
    /// for buffer memory, a flush, close.
    pub(crate) wake: Notify,
    /// Test hook: the next this many acknowledgements are treated as lost.
    pub(crate) drop_acknowledgements: AtomicUsize,
    /// Batches sent again after a failed attempt (a test hook reads it).
    pub(crate) resent_batches: AtomicU64,
    /// Set by the sender task when it ends.
    pub(crate) finished: watch::Sender<bool>,
    /// Stamps records without a timestamp.
    pub(crate) wall_clock: WallClock,
}

/// The part of [`Shared`] behind its lock.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) accumulator: Accumulator,
    /// Partition counts by topic, bounded; an entry is dropped when the
    /// broker says the topic or partition does not exist.
    pub(crate) metadata: MetadataCache,
    /// Nothing more is accepted: `close` was called, every handle is
    /// gone, or the sender task ended.
    pub(crate) closed: bool,
    /// The error that fenced the producer, if it was.
    pub(crate) fenced: Option<ClientError>,
}

impl State {
    fn check_accepting(&self) -> Result<(), ClientError> {
        if let Some(error) = &self.fenced {
            return Err(error.clone());
        }
        if self.closed {
            return Err(error::closed());
        }
        Ok(())
    }
}

/// What `enqueue` needs before it can try again.
enum Wanted {
    /// The topic's metadata described again (the cached one looked stale).
    Metadata,
    /// Room in the buffer.
    Memory,
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
        let (control, requests) = mpsc::channel(CONTROL_CAPACITY);
        let buffer = Arc::new(BufferMemory::new(config.buffer_memory));
        let shared = Arc::new(Shared {
            client,
            config,
            state: Mutex::new(State {
                accumulator: Accumulator::new(config.compression, config.linger, buffer.clone()),
                metadata: MetadataCache::new(TOPICS_MAX),
                closed: false,
                fenced: None,
            }),
            buffer,
            wake: Notify::new(),
            drop_acknowledgements: AtomicUsize::new(0),
            resent_batches: AtomicU64::new(0),
            finished: watch::Sender::new(false),
            wall_clock: WallClock::new(),
        });
        tokio::spawn(Sender::new(shared.clone(), requests).run());
        Self {
            handle: Arc::new(Handle { shared, control }),
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
        shared.state.lock().check_accepting()?;
        // One clock read serves the deadline and the linger's start.
        let accepted = Instant::now();
        let deadline = crate::deadline::after(accepted, shared.config.delivery_timeout);
        #[cfg(feature = "otel")]
        record.add_traceparent();
        let size = record_size(&record);
        let bytes = u32::try_from(size)
            .ok()
            .filter(|&bytes| bytes as usize <= shared.config.buffer_memory)
            .ok_or_else(|| error::larger_than_buffer(size, shared.config.buffer_memory))?;
        let topic = std::mem::take(&mut record.topic);
        let partition = record.partition;
        let record = record.into_new_record(|| shared.wall_clock.ms_at(accepted));
        let mut reservation = None;
        let mut described_again = false;
        loop {
            let wanted = 'attempt: {
                let mut state = shared.state.lock();
                state.check_accepting()?;
                let Some(metadata) = state.metadata.get(&topic) else {
                    break 'attempt Wanted::Metadata;
                };
                let target = match check_fits(partition, &record, size, metadata) {
                    Ok(target) => target,
                    Err(Misfit::NoPartition(_)) if !described_again => {
                        // The topic may have grown since it was cached.
                        state.metadata.remove(&topic);
                        described_again = true;
                        break 'attempt Wanted::Metadata;
                    }
                    Err(misfit) => return Err(misfit.into_error(&topic, metadata)),
                };
                let Some(reservation) = reservation
                    .take()
                    .or_else(|| shared.buffer.try_reserve(bytes))
                else {
                    break 'attempt Wanted::Memory;
                };
                let incoming = Incoming {
                    topic: &topic,
                    target,
                    record: &record,
                    record_bytes: size,
                    reservation,
                    deadline,
                    batch_bytes_max: shared
                        .config
                        .batch_size
                        .min(metadata.max_message_bytes as usize),
                };
                let (delivery, wake) = state.accumulator.append(incoming, accepted);
                drop(state);
                if wake {
                    shared.wake.notify_one();
                }
                return Ok(delivery);
            };
            match wanted {
                // Boxed: the waits are rare, and inline they would make
                // every `enqueue` future as large as a describe call.
                Wanted::Metadata => Box::pin(shared.describe_topic(&topic, deadline)).await?,
                Wanted::Memory => {
                    let wake = || shared.wake.notify_one();
                    reservation = Some(Box::pin(shared.buffer.reserve(bytes, wake)).await);
                }
            }
        }
    }

    /// Sends every record accepted so far without waiting for `linger`, and
    /// waits until each is answered (acknowledged or failed).
    pub async fn flush(&self) {
        let shared = &self.handle.shared;
        let covers_below = shared.state.lock().accumulator.flush();
        shared.wake.notify_one();
        let (waiter, done) = oneshot::channel();
        let request = Control::Flush {
            covers_below,
            waiter,
        };
        if self.handle.control.send(request).await.is_ok() && done.await.is_ok() {
            return;
        }
        // The task is ending: it answers everything before it does.
        self.wait_finished().await;
    }

    /// Sends every record accepted so far, waits until each is answered,
    /// and ends the sender task. `send` fails from then on, on every clone.
    pub async fn close(&self) {
        self.handle.shared.close();
        self.wait_finished().await;
    }

    async fn wait_finished(&self) {
        let mut finished = self.handle.shared.finished.subscribe();
        // The sender is held by `shared`, which outlives this call.
        let _ = finished.wait_for(|finished| *finished).await;
    }

    /// Test hook: the next `n` acknowledgements (one per batch) the broker
    /// sends are discarded and treated as lost answers, so the batches are
    /// sent again. `0` stops dropping. Not part of the API (feature `test-hooks`).
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn drop_acknowledgements(&self, n: usize) {
        self.handle
            .shared
            .drop_acknowledgements
            .store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// Test hook: batches sent again after a failed attempt. Not part of the API (feature `test-hooks`).
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn resent_batches(&self) -> u64 {
        self.handle
            .shared
            .resent_batches
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Test hook: bytes of buffer memory held now. Not part of the API (feature `test-hooks`).
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn buffered_bytes(&self) -> usize {
        self.handle.shared.buffer.held()
    }

    /// Test hook: the most buffer memory ever held at once. Not part of the API (feature `test-hooks`).
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn buffered_bytes_peak(&self) -> usize {
        self.handle.shared.buffer.peak()
    }
}

impl Shared {
    /// Accepts nothing more; the sender task sends what it holds and ends.
    pub(crate) fn close(&self) {
        self.state.lock().closed = true;
        self.wake.notify_one();
    }

    /// Learns `topic`'s metadata from the broker into the cache; retries an
    /// unreachable broker until `deadline`.
    async fn describe_topic(&self, topic: &str, deadline: Instant) -> Result<(), ClientError> {
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
                    self.state.lock().metadata.insert(topic, metadata);
                    return Ok(());
                }
                Err(error) if error.is_retryable() => {
                    let retry_at = crate::deadline::after(Instant::now(), backoff.delay(retries));
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

/// Why a record does not fit its topic.
enum Misfit {
    /// The partition it names does not exist.
    NoPartition(u32),
    /// A batch of the record alone would exceed `max_message_bytes`.
    TooLarge { batch_bytes: usize },
}

impl Misfit {
    fn into_error(self, topic: &str, metadata: TopicMetadata) -> ClientError {
        match self {
            Misfit::NoPartition(partition) => {
                error::no_such_partition(topic, partition, metadata.partition_count)
            }
            Misfit::TooLarge { batch_bytes } => {
                error::larger_than_topic_limit(topic, batch_bytes, metadata.max_message_bytes)
            }
        }
    }
}

/// Where `record` goes, after checking that it fits the topic: the
/// partition it names exists, and a batch of the record alone (its size
/// bound `record_bytes` plus the batch header) is within
/// `max_message_bytes`.
fn check_fits(
    partition: Option<u32>,
    record: &NewRecord,
    record_bytes: usize,
    metadata: TopicMetadata,
) -> Result<Target, Misfit> {
    if let Some(partition) = partition.filter(|&p| p >= metadata.partition_count) {
        return Err(Misfit::NoPartition(partition));
    }
    let batch_bytes = record_bytes + brook_record::HEADER_LEN;
    if batch_bytes > metadata.max_message_bytes as usize {
        return Err(Misfit::TooLarge { batch_bytes });
    }
    Ok(match (partition, &record.key) {
        (Some(partition), _) => Target::Partition(partition),
        (None, Some(key)) => Target::Partition(keyed_partition(key, metadata.partition_count)),
        (None, None) => Target::Sticky {
            partition_count: metadata.partition_count,
        },
    })
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
    async fn an_enqueue_future_stays_small() {
        let producer = Producer::new(unconnected_client(), ProducerConfig::default());
        let enqueue = producer.enqueue(ProducerRecord::new("t", "v"));
        // Callers move it (into `block_on`, a select, a task) once per record.
        assert!(
            size_of_val(&enqueue) <= 1024,
            "{} bytes",
            size_of_val(&enqueue)
        );
    }

    #[tokio::test]
    async fn flush_and_close_return_when_the_sender_task_panics() {
        let producer = Producer::new(unconnected_client(), ProducerConfig::default());
        producer
            .handle
            .control
            .send(Control::Panic)
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
        assert_eq!(refused.code(), Some(crate::StatusCode::Cancelled));
    }
}

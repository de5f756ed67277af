//! A consumer of manually assigned partitions: a `Stream` of records that
//! prefetches in the background, within a bound.
//!
//! Layout: `cursor` holds the state the stream and the fetcher share (the
//! assignment, fetch offsets, positions); `fetcher` is the background task.
//! Consumer groups build on this: they decide the assignment and the offsets
//! to seek to, this module reads.
//!
//! Invariants: at most `prefetch` fetched chunks are held (queued, being
//! handed out, or being fetched); a record is handed out at most once per
//! seek, in offset order per partition, and never below the partition's
//! position. A skipped batch (see `crate::undecodable`) is handed out in
//! the same order, as a [`Delivery`], and moves the position past it.

mod cursor;
mod fetcher;
mod streams;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use std::{fmt, future};

use brook_record::Record;
use futures::Stream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use self::cursor::Shared;
use self::fetcher::{Chunk, Fetcher, Item};
use crate::client::Client;
use crate::error::ClientError;
use crate::fetch::{OffsetSpec, undecodable};
use crate::undecodable::{SkipCounters, SkippedBatch, SkippedCallback, UndecodablePolicy};

/// Where a partition's consumption starts when it has no valid offset: when
/// it is newly assigned and not sought, or when its offset is out of range
/// (e.g. retention deleted the records there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    /// The first offset still retained.
    Earliest,
    /// The end of the partition: only records appended from now on.
    #[default]
    Latest,
    /// No automatic choice: a newly assigned partition waits for a
    /// [`Consumer::seek`]; an out-of-range one is reported on the stream
    /// (a [`ClientError`] with code `OutOfRange`) and waits for a seek.
    Error,
}

/// Settings of a [`Consumer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerConfig {
    /// Upper bound for the records of one fetch (in total and per
    /// partition); at least one batch comes back when data exists.
    pub max_bytes: u32,
    /// How long one fetch waits for data when there is none. Not zero.
    pub max_wait: Duration,
    /// Fetched chunks (fetch answers with data) held at most, including the
    /// one being handed out and the fetch in flight: memory stays below
    /// about `prefetch * max_bytes` of decoded records (plus one batch per
    /// partition) however slowly the stream is read and however well the
    /// batches compress. At least 1.
    pub prefetch: usize,
    /// What to do without a valid offset.
    pub auto_offset_reset: OffsetReset,
    /// The first wait after a retryable failure; doubled each time up to `retry_backoff_max`.
    pub retry_backoff: Duration,
    /// The longest wait between retries.
    pub retry_backoff_max: Duration,
    /// What to do with a batch whose records do not decode: stop the
    /// partition there (an error on the stream), or skip it (see
    /// [`Consumer::on_skipped`]).
    pub undecodable: UndecodablePolicy,
}

impl Default for ConsumerConfig {
    /// 4 MiB fetches, a 500 ms long poll, 4 chunks prefetched, reset to
    /// latest, retries after 100 ms up to 5 s, a batch that does not
    /// decode stops its partition.
    fn default() -> Self {
        Self {
            max_bytes: brook_record::protocol::FETCH_BYTES_DEFAULT,
            max_wait: brook_record::protocol::FETCH_WAIT_DEFAULT,
            prefetch: 4,
            auto_offset_reset: OffsetReset::Latest,
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(5),
            undecodable: UndecodablePolicy::Stop,
        }
    }
}

/// Where [`Consumer::seek`] moves a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekTo {
    /// This offset.
    Offset(i64),
    /// The first offset still retained.
    Earliest,
    /// The end: the next record appended.
    Latest,
    /// The first record whose timestamp is at or after this (ms since the
    /// Unix epoch); the end if there is none.
    Timestamp(i64),
}

/// A record and the partition it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    /// The record's topic.
    pub topic: Arc<str>,
    /// The record's partition.
    pub partition: u32,
    /// The record, decoded (and decompressed).
    pub record: Record,
}

/// What the consumer hands out next on a partition: a record, or a batch
/// it skipped.
#[derive(Debug)]
pub(crate) enum Delivery {
    Record(ConsumedRecord),
    Skipped(SkippedBatch),
}

/// Why a [`Consumer`] call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumerError {
    /// The partition is not in the consumer's assignment.
    #[error("{topic}/{partition} is not assigned to this consumer")]
    NotAssigned {
        /// The topic named.
        topic: String,
        /// The partition named.
        partition: u32,
    },
    /// A call to the broker failed.
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// Reads assigned partitions as one `Stream` of [`ConsumedRecord`]s, records
/// of each partition in offset order.
///
/// A background task fetches ahead (one long poll over all assigned
/// partitions at a time) into a queue of at most
/// [`ConsumerConfig::prefetch`] chunks; it ends when the consumer is dropped.
/// Retryable failures are retried with backoff and not reported; any other
/// failure is yielded as an `Err` item for the partition it concerns, which
/// is then not read until it is sought again. An error is dropped, not
/// yielded, if its partition was sought or unassigned after it happened: it
/// is about offsets no longer asked for. The stream never ends by itself.
///
/// [`Consumer::position`] is the offset after the last record handed out
/// (or batch skipped), which is what to commit or to resume from.
///
/// A batch whose records do not decode stops its partition with a
/// `DATA_LOSS` error, or, under [`UndecodablePolicy::Skip`], is skipped:
/// see [`Consumer::on_skipped`].
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use brook_client::{Client, Consumer, ConsumerConfig, SeekTo};
/// use futures::StreamExt;
///
/// let client = Client::connect("http://127.0.0.1:9420").await?;
/// let mut consumer = Consumer::new(client, ConsumerConfig::default());
/// consumer.assign(&[("orders", 0), ("orders", 1)]);
/// consumer.seek("orders", 0, SeekTo::Earliest).await?;
/// while let Some(consumed) = consumer.next().await {
///     let consumed = consumed?;
///     println!("{}/{} @{}", consumed.topic, consumed.partition, consumed.record.offset);
/// }
/// # Ok(())
/// # }
/// ```
#[must_use = "a consumer does nothing unless its stream is polled"]
pub struct Consumer {
    client: Client,
    config: ConsumerConfig,
    shared: Arc<Shared>,
    /// Fetched chunks; bounded by `prefetch`, and never full when the fetcher
    /// sends, as each chunk holds one of `prefetch` slots.
    chunks: mpsc::Receiver<Chunk>,
    /// The chunk being handed out.
    current: Option<Chunk>,
    fetcher: JoinHandle<()>,
    skipped: Arc<SkipCounters>,
    on_skipped: Option<SkippedCallback>,
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("config", &self.config)
            .field("assignment", &self.assignment())
            .field("skipped", &self.skipped)
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// A consumer with nothing assigned; starts its fetch task, so it must
    /// be called within a Tokio runtime.
    ///
    /// # Panics
    ///
    /// If `config.prefetch` or `config.max_wait` is zero (the fetcher would
    /// have no room, or would poll without pause).
    pub fn new(client: Client, config: ConsumerConfig) -> Self {
        assert!(
            config.prefetch > 0,
            "prefetch must leave room for one chunk"
        );
        assert!(
            !config.max_wait.is_zero(),
            "a zero max_wait makes an idle consumer poll without pause"
        );
        let shared = Arc::new(Shared::new(config.prefetch));
        let (sender, chunks) = mpsc::channel(config.prefetch);
        let fetcher = tokio::spawn(
            Fetcher {
                client: client.clone(),
                config,
                shared: shared.clone(),
                chunks: sender,
                described_at: parking_lot::Mutex::new(None),
                fetch_only: std::sync::atomic::AtomicBool::new(false),
            }
            .run(),
        );
        Self {
            client,
            config,
            shared,
            chunks,
            current: None,
            fetcher,
            skipped: Arc::new(SkipCounters::default()),
            on_skipped: None,
        }
    }

    /// Calls `callback` with each batch skipped under
    /// [`UndecodablePolicy::Skip`], as the stream passes it: after the
    /// partition's records before it, before those after it. By then the
    /// position is past the batch, it was counted
    /// ([`Self::skipped_batches`]) and logged as a warning.
    pub fn on_skipped(mut self, callback: impl Fn(&SkippedBatch) + Send + Sync + 'static) -> Self {
        self.on_skipped = Some(Arc::new(callback));
        self
    }

    /// Batches skipped because their records did not decode, since the
    /// consumer was made.
    pub fn skipped_batches(&self) -> u64 {
        self.skipped.batches()
    }

    /// Records (offsets) in those batches.
    pub fn skipped_records(&self) -> u64 {
        self.skipped.records()
    }

    /// The counters behind [`Self::skipped_batches`], for a group member
    /// that reads them while its consumer is busy.
    pub(crate) fn skip_counters(&self) -> Arc<SkipCounters> {
        self.skipped.clone()
    }

    /// The settings this consumer was made with.
    pub fn config(&self) -> &ConsumerConfig {
        &self.config
    }

    /// Makes `partitions` the assignment, replacing the previous one.
    /// Partitions kept keep their positions; new ones start where
    /// [`ConsumerConfig::auto_offset_reset`] says unless sought first;
    /// records of dropped ones still queued are discarded.
    pub fn assign<T: AsRef<str>>(&self, partitions: &[(T, u32)]) {
        let partitions: Vec<(&str, u32)> = partitions
            .iter()
            .map(|(topic, partition)| (topic.as_ref(), *partition))
            .collect();
        self.shared.assign(&partitions);
    }

    /// The assigned partitions, ordered by topic then partition.
    pub fn assignment(&self) -> Vec<(String, u32)> {
        self.shared
            .cells()
            .iter()
            .map(|cell| (cell.topic.to_string(), cell.partition))
            .collect()
    }

    /// Moves an assigned partition: the next record it hands out is the one
    /// at the offset `to` resolves to (or the first after it). Records
    /// fetched before are discarded. Returns that offset.
    pub async fn seek(
        &self,
        topic: &str,
        partition: u32,
        to: SeekTo,
    ) -> Result<i64, ConsumerError> {
        let not_assigned = || ConsumerError::NotAssigned {
            topic: topic.to_owned(),
            partition,
        };
        if self.shared.cell(topic, partition).is_none() {
            return Err(not_assigned());
        }
        let offset = match to {
            SeekTo::Offset(offset) => offset,
            SeekTo::Earliest => self.lookup(topic, partition, OffsetSpec::Earliest).await?,
            SeekTo::Latest => self.lookup(topic, partition, OffsetSpec::Latest).await?,
            SeekTo::Timestamp(ms) => {
                match self
                    .lookup(topic, partition, OffsetSpec::Timestamp(ms))
                    .await?
                {
                    -1 => self.lookup(topic, partition, OffsetSpec::Latest).await?,
                    offset => offset,
                }
            }
        };
        // Looked up again: the assignment may have changed during the lookups.
        let cell = self
            .shared
            .cell(topic, partition)
            .ok_or_else(not_assigned)?;
        cell.seek(offset);
        self.shared.note_change();
        Ok(offset)
    }

    /// The offset of the next record the partition hands out: one past the
    /// last one handed out, or where it was sought or reset to. `None` if the
    /// partition is not assigned or has no offset yet.
    pub fn position(&self, topic: &str, partition: u32) -> Option<i64> {
        self.shared.cell(topic, partition)?.cursor.lock().position
    }

    /// Chunks fetched and not yet fully handed out (with the fetch in
    /// flight). For tests of the prefetch bound.
    #[doc(hidden)]
    pub fn buffered_chunks(&self) -> usize {
        self.shared.buffered.load(Ordering::Acquire)
    }

    /// The most [`Self::buffered_chunks`] ever was.
    #[doc(hidden)]
    pub fn buffered_chunks_max(&self) -> usize {
        self.shared.buffered_max.load(Ordering::Acquire)
    }

    async fn lookup(
        &self,
        topic: &str,
        partition: u32,
        spec: OffsetSpec,
    ) -> Result<i64, ClientError> {
        self.client.list_offsets(topic, partition, spec).await
    }

    /// The next record, skipped batch or error of the current chunk, if it has one.
    fn next_from_current(&mut self) -> Option<Result<Delivery, ClientError>> {
        let chunk = self.current.as_mut()?;
        loop {
            if let Item::Records {
                cell,
                epoch,
                records,
            } = chunk.items.front_mut()?
            {
                let mut cursor = cell.cursor.lock();
                if cursor.assigned && cursor.epoch == *epoch {
                    for record in records.by_ref() {
                        let record = match record {
                            Ok(record) => record,
                            Err(error) => {
                                let at = cursor.position.unwrap_or_default();
                                let error = undecodable(&cell.topic, cell.partition, at, error);
                                return Some(Err(error));
                            }
                        };
                        if cursor.position.is_none_or(|at| record.offset >= at) {
                            cursor.position = Some(record.offset + 1);
                            return Some(Ok(Delivery::Record(ConsumedRecord {
                                topic: cell.topic.clone(),
                                partition: cell.partition,
                                record,
                            })));
                        }
                    }
                }
            }
            // The first item is exhausted, stale, or not records: take it.
            match chunk.items.pop_front()? {
                Item::Records { .. } => {}
                Item::Skipped { cell, epoch, batch } => {
                    let mut cursor = cell.cursor.lock();
                    if cursor.assigned
                        && cursor.epoch == epoch
                        && cursor.position.is_none_or(|at| at <= batch.last_offset)
                    {
                        cursor.position = Some(batch.last_offset + 1);
                        drop(cursor);
                        self.skipped.count(&batch);
                        return Some(Ok(Delivery::Skipped(batch)));
                    }
                }
                Item::Reset {
                    cell,
                    epoch,
                    offset,
                } => {
                    let mut cursor = cell.cursor.lock();
                    if cursor.assigned && cursor.epoch == epoch {
                        cursor.position = Some(offset);
                    }
                }
                Item::Error { cell, epoch, error } => {
                    let cursor = cell.cursor.lock();
                    // An error from before a seek or of a partition no
                    // longer assigned is about nothing the reader asks for.
                    if cursor.assigned && cursor.epoch == epoch {
                        return Some(Err(error));
                    }
                }
            }
        }
    }
}

impl Consumer {
    /// The next record or skipped batch, without calling
    /// [`Self::on_skipped`]'s callback: a group member reports skips itself,
    /// in order with its handlers.
    pub(crate) fn poll_delivery(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Delivery, ClientError>>> {
        loop {
            if let Some(item) = self.next_from_current() {
                return Poll::Ready(Some(item));
            }
            // Dropping the exhausted chunk frees its prefetch slot.
            self.current = None;
            match self.chunks.poll_recv(cx) {
                Poll::Ready(Some(chunk)) => self.current = Some(chunk),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// [`Self::poll_delivery`] as a future; cancel-safe.
    pub(crate) async fn next_delivery(&mut self) -> Option<Result<Delivery, ClientError>> {
        future::poll_fn(|cx| self.poll_delivery(cx)).await
    }
}

impl Stream for Consumer {
    type Item = Result<ConsumedRecord, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            match ready!(this.poll_delivery(cx)) {
                Some(Ok(Delivery::Record(record))) => return Poll::Ready(Some(Ok(record))),
                Some(Ok(Delivery::Skipped(batch))) => {
                    if let Some(callback) = &this.on_skipped {
                        callback(&batch);
                    }
                }
                Some(Err(error)) => return Poll::Ready(Some(Err(error))),
                None => return Poll::Ready(None),
            }
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.fetcher.abort();
    }
}

setters!(ConsumerConfig {
    with_max_bytes => max_bytes: u32,
    with_max_wait => max_wait: Duration,
    with_prefetch => prefetch: usize,
    with_auto_offset_reset => auto_offset_reset: OffsetReset,
    with_retry_backoff => retry_backoff: Duration,
    with_retry_backoff_max => retry_backoff_max: Duration,
    with_undecodable => undecodable: UndecodablePolicy,
});

#[cfg(test)]
mod tests {
    use tonic::transport::Endpoint;

    use super::cursor::PartitionCell;
    use super::*;
    use crate::ClientOptions;

    /// A client whose connection is made on first use, to nowhere.
    fn unconnected_client() -> Client {
        let channel = Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
        Client::from_channel(channel, ClientOptions::default())
    }

    #[tokio::test]
    async fn errors_from_before_a_seek_or_of_unassigned_partitions_are_dropped() {
        let config = ConsumerConfig {
            // Nothing is fetched until sought: the test places the chunks.
            auto_offset_reset: OffsetReset::Error,
            ..ConsumerConfig::default()
        };
        let mut consumer = Consumer::new(unconnected_client(), config);
        consumer.assign(&[("t", 0), ("t", 1), ("t", 2)]);
        let cell = |partition| consumer.shared.cell("t", partition).expect("assigned");
        let error = |cell: Arc<PartitionCell>, epoch, why: &str| Item::Error {
            cell,
            epoch,
            error: ClientError::new("fetch", crate::StatusCode::Internal, why),
        };
        let items = [
            error(cell(0), 0, "before the seek"),
            error(cell(1), 0, "of a partition unassigned since"),
            error(cell(2), 0, "current"),
        ];
        let permit = consumer.shared.slots.clone().acquire_owned().await.unwrap();
        consumer.current = Some(Chunk {
            items: items.into_iter().collect(),
            _slot: consumer.shared.chunk_buffered(permit),
        });

        consumer.seek("t", 0, SeekTo::Offset(5)).await.unwrap();
        consumer.assign(&[("t", 0), ("t", 2)]);
        let reported = consumer.next_from_current().expect("one error stands");
        let reported = reported.expect_err("an error");
        assert!(reported.to_string().contains("current"), "{reported}");
        assert!(consumer.next_from_current().is_none());
    }

    #[test]
    fn defaults_are_bounded() {
        let config = ConsumerConfig::default();
        assert!(config.prefetch > 0);
        assert!(!config.max_wait.is_zero());
        assert!(config.retry_backoff <= config.retry_backoff_max);
    }
}

//! Reads: long-poll fetch over several partitions, subscriptions that push
//! batches as they become visible, and offset lookups. Reads return stored
//! batches as they are; nothing is decoded on this path.

use std::sync::{Arc, Weak};
use std::time::Duration;

use brook_record::BatchHeader;
use bytes::Bytes;
use futures::future::select_all;
use tokio::sync::watch;

use super::Broker;
use crate::error::{FetchError, Invalid, PartitionError, blocking};
use crate::metrics::Metrics;
use crate::partition::Partition;
use brook_storage::PartitionLog;

/// Chunk size of a subscription that asks for no particular size.
pub const SUBSCRIPTION_CHUNK_BYTES: u32 = 1024 * 1024;

/// One partition of a fetch request.
#[derive(Debug, Clone)]
pub struct FetchSpec {
    pub topic: String,
    pub partition: u32,
    pub offset: i64,
    pub max_bytes: u32,
}

#[derive(Debug, Clone)]
pub struct Fetched {
    pub topic: String,
    pub partition: u32,
    /// Whole batches; empty when there was nothing new.
    pub records: Bytes,
    pub high_watermark: i64,
    pub start_offset: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    Earliest,
    Latest,
    /// The first record at or after this many ms since the epoch.
    Timestamp(i64),
}

impl Broker {
    /// Returns as soon as any partition has data at its offset, or after
    /// `max_wait` with empty results. With `max_message_bytes` (the client's
    /// limit on a response message; 0 for none) the response fits it: a
    /// batch that does not fit beside what is already in the response waits
    /// for the next fetch, and one that could never fit is refused.
    pub async fn fetch(
        &self,
        specs: Vec<FetchSpec>,
        max_wait: Duration,
        max_bytes: u32,
        max_message_bytes: u32,
    ) -> Result<Vec<Fetched>, FetchError> {
        self.metrics.fetch_requests.inc();
        let limits = &self.config.limits;
        if specs.is_empty() || specs.len() > limits.fetch_partitions_max {
            return Err(Invalid::new(
                "partitions",
                format!(
                    "a fetch names 1 to {} partitions, got {}",
                    limits.fetch_partitions_max,
                    specs.len()
                ),
            )
            .into());
        }
        let max_wait = max_wait.min(Duration::from_millis(u64::from(limits.fetch_wait_ms_max)));
        let max_bytes = if max_bytes == 0 {
            limits.fetch_bytes_max
        } else {
            max_bytes.min(limits.fetch_bytes_max)
        };
        let message_room = records_room(&specs, max_message_bytes)?;
        let mut targets = Vec::with_capacity(specs.len());
        for spec in specs {
            check_offset(spec.offset)?;
            let partition = self.partition(&spec.topic, spec.partition)?;
            partition.check_readable()?;
            targets.push((spec, partition));
        }
        let deadline = tokio::time::Instant::now() + max_wait;
        // A read right after a wait that an append ended runs on this task
        // instead of a blocking thread: it reads what was just written,
        // which is in the page cache, so it does not block on the disk, and
        // it saves two thread hand-offs on a tailing consumer's latency.
        // Other reads (a consumer catching up may touch cold segments) go
        // to a blocking thread.
        let mut woken_at_tail = false;
        loop {
            // Subscribe before reading so an append between the read and the
            // wait still wakes us.
            let mut watches: Vec<watch::Receiver<i64>> =
                targets.iter().map(|(_, p)| p.watch()).collect();
            let reading: Vec<(FetchSpec, Arc<PartitionLog>)> = targets
                .iter()
                .map(|(s, p)| (s.clone(), p.log().clone()))
                .collect();
            let fetched = if woken_at_tail {
                read_all(&reading, max_bytes, message_room)?
            } else {
                blocking(move || read_all(&reading, max_bytes, message_room)).await??
            };
            let has_data = fetched.iter().any(|f| !f.records.is_empty());
            if has_data || tokio::time::Instant::now() >= deadline {
                for f in &fetched {
                    if !f.records.is_empty() {
                        let (_, records) = batch_stats(&f.records);
                        self.metrics
                            .record_fetched(&f.topic, records, f.records.len() as u64);
                    }
                }
                return Ok(fetched);
            }
            let changes = watches.iter_mut().map(|w| Box::pin(w.changed()));
            tokio::select! {
                woken = tokio::time::timeout_at(deadline, select_all(changes)) => {
                    if woken.is_err() {
                        return Ok(fetched);
                    }
                    woken_at_tail = true;
                }
                () = self.background.cancelled() => return Ok(fetched),
            }
        }
    }

    /// A subscription to one partition from `offset`.
    pub fn subscribe(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
        max_bytes: u32,
    ) -> Result<Subscription, FetchError> {
        check_offset(offset)?;
        let partition = self.partition(topic, partition)?;
        partition.check_readable()?;
        let limit = self.config.limits.fetch_bytes_max;
        // A subscription reads ahead of its client, so its chunks default
        // to a modest size rather than the largest fetch.
        let max_bytes = if max_bytes == 0 {
            SUBSCRIPTION_CHUNK_BYTES.min(limit)
        } else {
            max_bytes.min(limit)
        };
        Ok(Subscription {
            watch: partition.watch(),
            log: partition.log().clone(),
            readable: Arc::downgrade(&partition),
            topic: topic.to_owned(),
            partition: partition.index(),
            offset,
            max_bytes,
            stop: self.background.clone(),
            metrics: self.metrics.clone(),
            woken_at_tail: false,
        })
    }

    pub async fn list_offsets(
        &self,
        topic: &str,
        partition: u32,
        spec: OffsetSpec,
    ) -> Result<(i64, i64), FetchError> {
        let partition = self.partition(topic, partition)?;
        partition.check_readable()?;
        let log = partition.log().clone();
        match spec {
            OffsetSpec::Earliest => Ok((log.start_offset(), -1)),
            OffsetSpec::Latest => Ok((log.high_watermark(), -1)),
            OffsetSpec::Timestamp(ts) => {
                let found = blocking(move || log.find_timestamp(ts)).await?;
                let found = found.map_err(|e| {
                    PartitionError::from_log(partition.topic(), partition.index(), e)
                })?;
                Ok(found.unwrap_or((-1, -1)))
            }
        }
    }
}

fn check_offset(offset: i64) -> Result<(), Invalid> {
    if offset < 0 {
        return Err(Invalid::new(
            "offset",
            format!("must be >= 0, got {offset}"),
        ));
    }
    Ok(())
}

/// Bytes of a fetch response's message that are not records, per
/// partition: the `FetchedPartition` fields and their tags and lengths
/// (besides the topic name), with room to spare.
const FETCHED_PARTITION_FRAMING: usize = 48;

/// How many bytes of records a response may hold to stay within the
/// client's `max_message_bytes` (`None` when it states no limit).
fn records_room(specs: &[FetchSpec], max_message_bytes: u32) -> Result<Option<usize>, Invalid> {
    if max_message_bytes == 0 {
        return Ok(None);
    }
    let framing: usize = specs
        .iter()
        .map(|s| s.topic.len() + FETCHED_PARTITION_FRAMING)
        .sum();
    match (max_message_bytes as usize).checked_sub(framing) {
        Some(room) if room > 0 => Ok(Some(room)),
        _ => Err(Invalid::new(
            "max_message_bytes",
            format!(
                "{max_message_bytes} bytes cannot hold even an empty response for {} partitions ({framing} bytes)",
                specs.len()
            ),
        )),
    }
}

/// The length of the longest run of whole batches at the start of
/// `records` that fits in `room` bytes, and the first batch's length.
fn whole_batches_within(records: &[u8], room: usize) -> (usize, usize) {
    let mut end = 0;
    let mut first = 0;
    while let Some(len) = records.get(end..).and_then(brook_record::batch_total_len) {
        if first == 0 {
            first = len;
        }
        if len == 0 || end + len > room {
            break;
        }
        end += len;
    }
    (end, first)
}

/// Reads each partition in turn until the response budget is spent.
fn read_all(
    targets: &[(FetchSpec, Arc<PartitionLog>)],
    max_bytes: u32,
    message_room: Option<usize>,
) -> Result<Vec<Fetched>, FetchError> {
    let mut budget = max_bytes as usize;
    let mut room_left = message_room;
    let mut fetched = Vec::with_capacity(targets.len());
    for (spec, log) in targets {
        // 0 means no limit for the partition beyond the response's.
        let mut want = match spec.max_bytes {
            0 => budget,
            max => (max as usize).min(budget),
        };
        if let Some(room) = room_left {
            want = want.min(room);
        }
        let read = if want == 0 {
            Ok(brook_storage::ReadResult {
                records: Bytes::new(),
                high_watermark: log.high_watermark(),
                start_offset: log.start_offset(),
            })
        } else {
            log.read(spec.offset, want)
        };
        let mut read =
            read.map_err(|e| PartitionError::from_log(&spec.topic, spec.partition, e))?;
        if let (Some(room), Some(whole_room)) = (room_left.as_mut(), message_room) {
            // A read returns at least one batch, however large: keep what
            // fits the client's message limit. A batch that does not fit
            // even in an otherwise empty response can never be delivered.
            let (fits, first) = whole_batches_within(&read.records, *room);
            if fits == 0 && first > whole_room {
                return Err(Invalid::new(
                    "max_message_bytes",
                    format!(
                        "the batch at offset {} of topic `{}` partition {} is {first} bytes, more than a response within max_message_bytes can hold: raise the client's message limit",
                        spec.offset, spec.topic, spec.partition
                    ),
                )
                .into());
            }
            read.records = read.records.slice(..fits);
            *room -= fits;
        }
        budget = budget.saturating_sub(read.records.len());
        fetched.push(Fetched {
            topic: spec.topic.clone(),
            partition: spec.partition,
            records: read.records,
            high_watermark: read.high_watermark,
            start_offset: read.start_offset,
        });
    }
    Ok(fetched)
}

/// What a subscription pushes.
#[derive(Debug, Clone)]
pub struct SubscriptionChunk {
    pub records: Bytes,
    pub high_watermark: i64,
    /// The offset after the last record in `records`.
    pub next_offset: i64,
}

/// Follows one partition, yielding batches as they become visible.
#[derive(Debug)]
pub struct Subscription {
    watch: watch::Receiver<i64>,
    log: Arc<PartitionLog>,
    /// Asked before every read, and every `READABILITY_CHECKED_EVERY` at the
    /// tail, whether it may still be read here: a leader cut off from its
    /// replicas would otherwise keep the subscription waiting for records
    /// the majority takes elsewhere. Weak: the partition's end (its topic
    /// deleted) is what ends the subscription, and holding it would keep
    /// its watch open.
    readable: Weak<Partition>,
    topic: String,
    partition: u32,
    offset: i64,
    max_bytes: u32,
    stop: tokio_util::sync::CancellationToken,
    metrics: Arc<Metrics>,
    /// The last wait ended with an append at the tail: the next read is
    /// of the page cache and runs inline (see `Broker::fetch`).
    woken_at_tail: bool,
}

impl Subscription {
    /// Why the partition may not be read here now, if it may not (a
    /// partition already gone is left to its watch to end the subscription).
    fn refusal(&self) -> Option<PartitionError> {
        self.readable.upgrade()?.check_readable().err()
    }

    /// The next batches; `None` once the partition is gone or the broker
    /// stops.
    pub async fn next(&mut self) -> Option<Result<SubscriptionChunk, FetchError>> {
        loop {
            // Checked on every turn, not only while idle: a subscriber with
            // a backlog must not hold up a shutdown.
            if self.stop.is_cancelled() {
                return None;
            }
            if let Some(refused) = self.refusal() {
                return Some(Err(refused.into()));
            }
            self.watch.mark_unchanged();
            let log = self.log.clone();
            let (offset, max_bytes) = (self.offset, self.max_bytes as usize);
            let read = if std::mem::take(&mut self.woken_at_tail) {
                log.read(offset, max_bytes)
            } else {
                match blocking(move || log.read(offset, max_bytes)).await {
                    Ok(read) => read,
                    Err(stopped) => return Some(Err(stopped.into())),
                }
            };
            let read = match read {
                Ok(read) => read,
                Err(e) => {
                    return Some(Err(PartitionError::from_log(
                        &self.topic,
                        self.partition,
                        e,
                    )
                    .into()));
                }
            };
            if let (Some(last), records) = batch_stats(&read.records) {
                self.metrics
                    .record_fetched(&self.topic, records, read.records.len() as u64);
                self.offset = last + 1;
                return Some(Ok(SubscriptionChunk {
                    records: read.records,
                    high_watermark: read.high_watermark,
                    next_offset: self.offset,
                }));
            }
            loop {
                tokio::select! {
                    () = self.stop.cancelled() => return None,
                    changed = self.watch.changed() => {
                        if changed.is_err() {
                            return None;
                        }
                        self.woken_at_tail = true;
                        break;
                    }
                    () = tokio::time::sleep(READABILITY_CHECKED_EVERY) => {
                        if let Some(refused) = self.refusal() {
                            return Some(Err(refused.into()));
                        }
                    }
                }
            }
        }
    }
}

/// How often a subscription waiting at the tail asks whether its partition
/// may still be read here.
const READABILITY_CHECKED_EVERY: Duration = Duration::from_millis(250);

/// The last offset held by concatenated whole batches and how many records
/// they hold, from their headers (nothing is decoded).
pub(crate) fn batch_stats(records: &[u8]) -> (Option<i64>, u64) {
    let mut position = 0;
    let mut last = None;
    let mut count = 0u64;
    while let Some(len) = records
        .get(position..)
        .and_then(brook_record::batch_total_len)
    {
        let Some(header) = records
            .get(position..)
            .and_then(|rest| BatchHeader::parse(rest).ok())
        else {
            break;
        };
        last = Some(header.last_offset());
        count += u64::from(header.record_count);
        position += len.max(brook_record::HEADER_LEN);
    }
    (last, count)
}

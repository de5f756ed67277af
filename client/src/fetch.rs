//! Reading: long-poll fetches, subscriptions, offset lookups. Batches come
//! back as stored; this module decodes them and drops records below the
//! offset asked for (a batch may start before it).
//!
//! Invariants: decoded records held per fetched partition stay within about
//! the fetch's `max_bytes` plus one batch, and a subscription decodes one
//! batch at a time, however well the batches compressed. A batch that does
//! not decode never costs the records before it: decoding stops at it, and
//! it is an error (naming its partition and offset) only once it is the
//! first batch to decode, or, under [`UndecodablePolicy::Skip`] with a
//! sound header, a [`SkippedBatch`] ahead of the records after it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use brook_proto as proto;
use brook_proto::list_offsets_request::Spec;
use brook_record::{
    BatchError, BatchIter, CheckedBatch, CheckedRecords, Record, check_batch, decode_batch,
    split_batches,
};
use bytes::Bytes;
use futures::Stream;
use tonic::Streaming;

use crate::client::Client;
use crate::error::{ClientError, StatusCode};
use crate::undecodable::{SkippedBatch, UndecodablePolicy};

/// Bytes of records the broker pushes per subscription message.
pub const SUBSCRIBE_MAX_BYTES: u32 = 1024 * 1024;

/// Bounds of one fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FetchOptions {
    /// Upper bound for the response's records (per partition and in total);
    /// at least one batch is returned when data exists, whatever its size.
    pub max_bytes: u32,
    /// How long the broker waits for data when there is none; zero returns at once.
    pub max_wait: Duration,
    /// What to do when a partition's first batch does not decode: fail the
    /// fetch, or skip the batch ([`FetchResult::skipped`]).
    pub undecodable: UndecodablePolicy,
}

impl Default for FetchOptions {
    /// 4 MiB, a 500 ms long-poll, and a batch that does not decode fails the fetch.
    fn default() -> Self {
        Self {
            max_bytes: brook_record::protocol::FETCH_BYTES_DEFAULT,
            max_wait: brook_record::protocol::FETCH_WAIT_DEFAULT,
            undecodable: UndecodablePolicy::Stop,
        }
    }
}

/// What one partition returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResult {
    /// Decoded records at or after the offset asked for, in offset order.
    /// Empty when the wait ended without data.
    pub records: Vec<Record>,
    /// The offset the next appended record will get.
    pub high_watermark: i64,
    /// The partition's first retained offset.
    pub log_start_offset: i64,
    /// Where to fetch next: one past the last batch decoded (or skipped),
    /// or the offset asked for when nothing was. Decoding stops early at a
    /// batch that does not decode (the next fetch starts with it, and fails
    /// on it or skips it) and once about `max_bytes` of records are decoded.
    pub next_offset: i64,
    /// Under [`UndecodablePolicy::Skip`]: the first batch fetched, which
    /// did not decode and was skipped. Its offsets come before every record
    /// of `records`.
    pub skipped: Option<SkippedBatch>,
}

/// One partition of a [`Client::fetch_many`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchTarget {
    /// The topic to read.
    pub topic: String,
    /// The partition to read.
    pub partition: u32,
    /// The first offset wanted.
    pub offset: i64,
}

/// One partition's part of a [`Client::fetch_many`] answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionFetch {
    /// The topic read.
    pub topic: String,
    /// The partition read.
    pub partition: u32,
    /// What it returned.
    pub result: FetchResult,
}

/// Which offset [`Client::list_offsets`] looks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The first offset still retained.
    Earliest,
    /// The offset the next appended record will get.
    Latest,
    /// The first record whose timestamp is at or after this (ms since the Unix epoch).
    Timestamp(i64),
}

impl Client {
    /// Reads records of one partition from `offset`, waiting up to
    /// `options.max_wait` for some to arrive.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
        options: FetchOptions,
    ) -> Result<FetchResult, ClientError> {
        let target = FetchTarget {
            topic: topic.to_owned(),
            partition,
            offset,
        };
        let mut fetched = self.fetch_many(&[target], options).await?;
        Ok(fetched
            .pop()
            .expect("fetch_many answers each target")
            .result)
    }

    /// Reads several partitions in one long-poll: the answer comes as soon as
    /// any of them has data. Results are in the order of `targets`. The
    /// broker fills its byte budget in that order, so a caller reading many
    /// busy partitions should rotate them between calls.
    ///
    /// Fails with `DATA_LOSS` if a partition's first batch does not decode;
    /// the message names the partition and the offset. Under
    /// [`UndecodablePolicy::Skip`] such a batch is skipped instead when its
    /// header is sound ([`FetchResult::skipped`]).
    pub async fn fetch_many(
        &self,
        targets: &[FetchTarget],
        options: FetchOptions,
    ) -> Result<Vec<PartitionFetch>, ClientError> {
        let fetched = self.fetch_checked(targets, options).await?;
        targets
            .iter()
            .zip(fetched)
            .map(|(target, fetched)| {
                let CheckedFetch {
                    checked,
                    high_watermark,
                    log_start_offset,
                } = fetched;
                let records = FetchedRecords::new(checked.batches, target.offset)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|error| {
                        undecodable(&target.topic, target.partition, target.offset, error)
                    })?;
                Ok(PartitionFetch {
                    topic: target.topic.clone(),
                    partition: target.partition,
                    result: FetchResult {
                        records,
                        high_watermark,
                        log_start_offset,
                        next_offset: checked.next_offset,
                        skipped: checked.skipped,
                    },
                })
            })
            .collect()
    }

    /// [`Client::fetch_many`] with each partition's batches checked but
    /// their records not yet decoded: a consumer decodes each record as it
    /// hands it out, on its reader's task, while the next fetch travels.
    pub(crate) async fn fetch_checked(
        &self,
        targets: &[FetchTarget],
        options: FetchOptions,
    ) -> Result<Vec<CheckedFetch>, ClientError> {
        let request = proto::FetchRequest {
            partitions: targets
                .iter()
                .map(|t| proto::FetchPartition {
                    topic: t.topic.clone(),
                    partition: t.partition,
                    offset: t.offset,
                    max_bytes: options.max_bytes,
                })
                .collect(),
            max_wait_ms: u32::try_from(options.max_wait.as_millis()).unwrap_or(u32::MAX),
            max_bytes: options.max_bytes,
            // The broker keeps the response within what this client decodes.
            max_message_bytes: u32::try_from(self.options.message_bytes_max).unwrap_or(u32::MAX),
        };
        let timeout = self.options.request_timeout + options.max_wait;
        let response = self
            .rpc("fetch", timeout, self.fetch.clone().fetch(request))
            .await?;
        if response.partitions.len() != targets.len() {
            return Err(ClientError::Protocol(format!(
                "{} partitions fetched, {} answered",
                targets.len(),
                response.partitions.len()
            )));
        }
        // Decoded bytes the response may still produce; `max_bytes` bounds
        // what travels, this what it decodes to. 0 is the broker's limit.
        let mut budget = match options.max_bytes {
            0 => self.options.message_bytes_max,
            max_bytes => max_bytes as usize,
        };
        targets
            .iter()
            .zip(response.partitions)
            .map(|(target, fetched)| {
                if fetched.topic != target.topic || fetched.partition != target.partition {
                    return Err(ClientError::Protocol(format!(
                        "asked for {}/{}, answered {}/{}",
                        target.topic, target.partition, fetched.topic, fetched.partition
                    )));
                }
                let checked = check_from(
                    &fetched.topic,
                    fetched.partition,
                    fetched.records,
                    target.offset,
                    options.undecodable,
                    &mut budget,
                )?;
                Ok(CheckedFetch {
                    checked,
                    high_watermark: fetched.high_watermark,
                    log_start_offset: fetched.log_start_offset,
                })
            })
            .collect()
    }

    /// Streams the partition's records from `offset` on, as they are
    /// appended; see [`Subscription`].
    pub async fn subscribe(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
    ) -> Result<Subscription, ClientError> {
        let request = proto::SubscribeRequest {
            topic: topic.to_owned(),
            partition,
            offset,
            max_bytes: SUBSCRIBE_MAX_BYTES,
        };
        let responses = self
            .rpc(
                "subscribe",
                self.options.request_timeout,
                self.fetch.clone().subscribe(request),
            )
            .await?;
        Ok(Subscription {
            topic: topic.to_owned(),
            partition,
            responses,
            batches: split_batches(Bytes::new()),
            buffered: Vec::new().into_iter(),
            next_offset: offset,
            done: false,
        })
    }

    /// The messages of a subscription as they come, each up to `max_bytes`
    /// of batches: for a consumer that checks the batches itself.
    pub(crate) async fn subscribe_raw(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
        max_bytes: u32,
    ) -> Result<Streaming<proto::SubscribeResponse>, ClientError> {
        let request = proto::SubscribeRequest {
            topic: topic.to_owned(),
            partition,
            offset,
            max_bytes,
        };
        self.rpc(
            "subscribe",
            self.options.request_timeout,
            self.fetch.clone().subscribe(request),
        )
        .await
    }

    /// Looks up an offset of a partition. For [`OffsetSpec::Timestamp`] the
    /// answer is -1 when no record is that recent.
    pub async fn list_offsets(
        &self,
        topic: &str,
        partition: u32,
        spec: OffsetSpec,
    ) -> Result<i64, ClientError> {
        let request = proto::ListOffsetsRequest {
            topic: topic.to_owned(),
            partition,
            spec: Some(match spec {
                OffsetSpec::Earliest => Spec::Earliest(true),
                OffsetSpec::Latest => Spec::Latest(true),
                OffsetSpec::Timestamp(ms) => Spec::TimestampMs(ms),
            }),
        };
        let response = self
            .rpc(
                "list_offsets",
                self.options.request_timeout,
                self.fetch.clone().list_offsets(request),
            )
            .await?;
        Ok(response.offset)
    }
}

/// One partition of a [`Client::fetch_checked`] answer: as a
/// [`FetchResult`], with batches checked instead of records decoded.
#[derive(Debug)]
pub(crate) struct CheckedFetch {
    pub checked: Checked,
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

/// The batches of one subscription message, checked as a fetch's are
/// (no budget: a message holds at most what was asked per message).
pub(crate) fn check_pushed(
    topic: &str,
    partition: u32,
    pushed: proto::SubscribeResponse,
    offset: i64,
    policy: UndecodablePolicy,
) -> Result<Checked, ClientError> {
    let mut budget = usize::MAX;
    check_from(
        topic,
        partition,
        pushed.records,
        offset,
        policy,
        &mut budget,
    )
}

/// What [`check_from`] made of one partition's bytes.
#[derive(Debug)]
pub(crate) struct Checked {
    /// Batches that decode, in offset order; the first may start before
    /// the offset asked for.
    pub batches: Vec<CheckedBatch>,
    /// Where to read next: after the last batch kept, or skipped.
    pub next_offset: i64,
    pub skipped: Option<SkippedBatch>,
}

/// Checks the concatenated batches fetched from `topic`/`partition` at
/// `offset`, keeping those that decode; also returns the offset after the
/// last batch kept (or `offset` if none).
///
/// Stops at a batch that does not decode, returning what came before it
/// (the next fetch starts with it). If it is the first batch, it fails,
/// unless `policy` is to skip and the batch's header is sound: then the
/// batch is skipped and checking goes on after it. Takes the bytes of the
/// batches' records, decompressed, from `budget`, and stops, after the
/// first batch (so every partition makes progress), once the budget is
/// spent: compressed batches may decode to many times the bytes fetched.
fn check_from(
    topic: &str,
    partition: u32,
    records: Bytes,
    offset: i64,
    policy: UndecodablePolicy,
    budget: &mut usize,
) -> Result<Checked, ClientError> {
    let mut kept = Vec::new();
    let mut next_offset = offset;
    let mut skipped = None;
    for (index, batch) in split_batches(records).enumerate() {
        if index > 0 && *budget == 0 {
            break;
        }
        let checked = match &batch {
            Ok(batch) => check_batch(batch),
            Err(error) => Err(error.clone()),
        };
        let checked = match checked {
            Ok(checked) => checked,
            Err(error) if index == 0 => {
                let skip = match (&batch, policy) {
                    (Ok(batch), UndecodablePolicy::Skip) => {
                        SkippedBatch::of(topic, partition, next_offset, batch, &error)
                    }
                    _ => None,
                };
                let Some(skip) = skip else {
                    return Err(undecodable(topic, partition, next_offset, error));
                };
                next_offset = skip.last_offset.saturating_add(1);
                skipped = Some(skip);
                continue;
            }
            // Where the bad batch starts (its own header may be the bad
            // part): the next fetch starts there and reports it.
            Err(_) => break,
        };
        next_offset = next_offset.max(checked.last_offset().saturating_add(1));
        *budget = budget.saturating_sub(checked.records_bytes());
        // A batch wholly below the offset asked for holds nothing to hand out.
        if checked.last_offset() >= offset {
            kept.push(checked);
        }
    }
    Ok(Checked {
        batches: kept,
        next_offset,
        skipped,
    })
}

/// The records of checked batches from an offset on, each decoded as it
/// is taken.
#[derive(Debug)]
pub(crate) struct FetchedRecords {
    batches: std::vec::IntoIter<CheckedBatch>,
    current: Option<CheckedRecords>,
    /// Records below this (the offset fetched from) are passed over.
    from: i64,
}

impl FetchedRecords {
    pub(crate) fn new(batches: Vec<CheckedBatch>, from: i64) -> Self {
        Self {
            batches: batches.into_iter(),
            current: None,
            from,
        }
    }
}

impl Iterator for FetchedRecords {
    /// An error only if a checked batch failed to decode after all: the
    /// records end there.
    type Item = Result<Record, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(record) = self.current.as_mut().and_then(Iterator::next) {
                if record.is_err() {
                    self.batches = Vec::new().into_iter();
                    self.current = None;
                }
                return Some(record);
            }
            let mut records = self.batches.next()?.records();
            records.skip_below(self.from);
            self.current = Some(records);
        }
    }
}

/// A batch of `topic`/`partition` at `offset` that does not decode: lost
/// data as far as this client can tell, so `DATA_LOSS`, not retryable; the
/// decoding error is the status's source.
pub(crate) fn undecodable(
    topic: &str,
    partition: u32,
    offset: i64,
    error: BatchError,
) -> ClientError {
    ClientError::Status {
        operation: "fetch",
        code: StatusCode::DataLoss,
        message: format!(
            "the batch of {topic}/{partition} at offset {offset} does not decode: {error}"
        ),
        source: Some(Arc::new(error)),
    }
}

/// A partition's records as they are appended, from [`Client::subscribe`]:
/// a `Stream` of decoded records in offset order, none below the offset
/// subscribed at. It ends after the first error, and the broker always
/// ends it with one: `Unavailable` (retryable) when the broker shuts down,
/// `NotFound` when the partition is deleted. After a retryable one,
/// subscribe again from [`Subscription::next_offset`]. A batch that does
/// not decode is also such an error (`DATA_LOSS`, naming the partition and
/// offset), after the records before it.
///
/// A subscription waits for records as long as there are none; a broker
/// that vanished without closing the connection is noticed by the
/// connection's HTTP/2 keepalive (see [`crate::ClientOptions::keepalive_interval`]),
/// which ends the stream with an error.
#[derive(Debug)]
#[must_use = "a subscription does nothing unless polled"]
pub struct Subscription {
    topic: String,
    partition: u32,
    responses: Streaming<proto::SubscribeResponse>,
    /// Batches of the last message not yet decoded: they are decoded one
    /// at a time, so memory holds one decoded batch however large the
    /// message's batches decompress.
    batches: BatchIter,
    /// Records of the last batch decoded not yet yielded.
    buffered: std::vec::IntoIter<Record>,
    /// The next offset to yield; records below it are skipped.
    next_offset: i64,
    done: bool,
}

impl Subscription {
    /// The offset of the next record this subscription yields: where to
    /// subscribe again to resume.
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }
}

impl Stream for Subscription {
    type Item = Result<Record, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            for record in this.buffered.by_ref() {
                if record.offset >= this.next_offset {
                    this.next_offset = record.offset + 1;
                    return Poll::Ready(Some(Ok(record)));
                }
            }
            if this.done {
                return Poll::Ready(None);
            }
            if let Some(batch) = this.batches.next() {
                match batch.and_then(|batch| decode_batch(&batch)) {
                    Ok((_, records)) => {
                        this.buffered = records.into_iter();
                        continue;
                    }
                    Err(error) => {
                        this.done = true;
                        let (topic, partition) = (&this.topic, this.partition);
                        let error = undecodable(topic, partition, this.next_offset, error);
                        return Poll::Ready(Some(Err(error)));
                    }
                }
            }
            let failure = match ready!(Pin::new(&mut this.responses).poll_next(cx)) {
                Some(Ok(message)) => {
                    this.batches = split_batches(message.records);
                    continue;
                }
                Some(Err(status)) => ClientError::status("subscribe", status),
                None => {
                    this.done = true;
                    return Poll::Ready(None);
                }
            };
            this.done = true;
            return Poll::Ready(Some(Err(failure)));
        }
    }
}

setters!(FetchOptions {
    with_max_bytes => max_bytes: u32,
    with_max_wait => max_wait: Duration,
    with_undecodable => undecodable: UndecodablePolicy,
});

#[cfg(test)]
mod tests {
    use brook_record::{BatchOptions, Compression, HEADER_LEN, NewRecord, encode_batch};

    use super::*;

    /// A batch of `count` records of `value_bytes` bytes each, at `base_offset`.
    fn batch(
        base_offset: i64,
        count: usize,
        value_bytes: usize,
        compression: Compression,
    ) -> Vec<u8> {
        let records = vec![
            NewRecord {
                value: Some(Bytes::from(vec![b'v'; value_bytes])),
                ..NewRecord::default()
            };
            count
        ];
        let options = BatchOptions {
            compression,
            ..BatchOptions::default()
        };
        let mut batch = encode_batch(&records, options).unwrap().to_vec();
        brook_record::stamp_base_offset(&mut batch, base_offset);
        batch
    }

    /// An LZ4 batch whose compressed payload is garbage under a valid CRC:
    /// a topic with `validate_records = framing` accepts it (the broker
    /// then does not decompress it), no reader can decode it.
    fn garbage(base_offset: i64) -> Vec<u8> {
        let mut batch = batch(base_offset, 3, 100, Compression::Lz4);
        for byte in &mut batch[HEADER_LEN..] {
            *byte = 0xff;
        }
        let crc = crc32fast::hash(&batch[16..]);
        batch[12..16].copy_from_slice(&crc.to_le_bytes());
        let framing = brook_record::RecordValidation::Framing;
        brook_record::validate_produced_batch(&batch, usize::MAX, framing)
            .expect("a framing topic accepts it");
        batch
    }

    fn concat(batches: &[Vec<u8>]) -> Bytes {
        Bytes::from(batches.concat())
    }

    /// What the consumer gets of a fetch answer, with its records decoded.
    #[derive(Debug)]
    struct Decoded {
        records: Vec<Record>,
        next_offset: i64,
        skipped: Option<SkippedBatch>,
    }

    fn decode_from(
        topic: &str,
        partition: u32,
        records: Bytes,
        offset: i64,
        policy: UndecodablePolicy,
        budget: &mut usize,
    ) -> Result<Decoded, ClientError> {
        let checked = check_from(topic, partition, records, offset, policy, budget)?;
        Ok(Decoded {
            records: FetchedRecords::new(checked.batches, offset)
                .collect::<Result<_, _>>()
                .unwrap(),
            next_offset: checked.next_offset,
            skipped: checked.skipped,
        })
    }

    fn offsets(records: &[Record]) -> Vec<i64> {
        records.iter().map(|r| r.offset).collect()
    }

    #[test]
    fn a_bad_batch_after_good_ones_ends_the_decoding_without_losing_them() {
        let fetched = concat(&[
            batch(0, 2, 10, Compression::None),
            garbage(2),
            batch(5, 1, 10, Compression::None),
        ]);
        for policy in [UndecodablePolicy::Stop, UndecodablePolicy::Skip] {
            let decoded =
                decode_from("t", 3, fetched.clone(), 1, policy, &mut { usize::MAX }).unwrap();
            assert_eq!(offsets(&decoded.records), [1]);
            assert_eq!(
                decoded.next_offset, 2,
                "the next fetch starts at the bad batch"
            );
            assert_eq!(decoded.skipped, None);
        }
    }

    #[test]
    fn a_bad_first_batch_is_an_error_naming_partition_and_offset() {
        let fetched = concat(&[garbage(2), batch(5, 1, 10, Compression::None)]);
        let error = decode_from("t", 3, fetched, 2, UndecodablePolicy::Stop, &mut {
            usize::MAX
        })
        .unwrap_err();
        assert_eq!(error.code(), Some(StatusCode::DataLoss));
        assert!(!error.is_retryable());
        assert!(error.to_string().contains("t/3 at offset 2"), "{error}");
        let source = std::error::Error::source(&error);
        assert!(
            source.is_some_and(<dyn std::error::Error>::is::<BatchError>),
            "the decoding error is kept: {error:?}"
        );
    }

    #[test]
    fn decoding_stops_once_the_budget_is_spent() {
        // Each batch decodes to 100 KiB but compresses to almost nothing.
        let fetched = concat(&[
            batch(0, 10, 10 * 1024, Compression::Zstd),
            batch(10, 10, 10 * 1024, Compression::Zstd),
            batch(20, 10, 10 * 1024, Compression::Zstd),
        ]);
        assert!(fetched.len() < 10 * 1024);
        let mut budget = 150 * 1024;
        let stop = UndecodablePolicy::Stop;
        let decoded = decode_from("t", 0, fetched.clone(), 0, stop, &mut budget).unwrap();
        assert_eq!(decoded.records.len(), 20);
        assert_eq!(decoded.next_offset, 20);
        assert_eq!(budget, 0);
        // A spent budget still decodes one batch: every partition moves.
        let decoded = decode_from("t", 1, fetched, 0, stop, &mut budget).unwrap();
        assert_eq!(decoded.records.len(), 10);
        assert_eq!(decoded.next_offset, 10);
    }

    #[test]
    fn a_bad_first_batch_is_skipped_under_skip_and_decoding_goes_on_after_it() {
        let fetched = concat(&[
            garbage(2),
            batch(5, 2, 10, Compression::None),
            garbage(7),
            batch(10, 1, 10, Compression::None),
        ]);
        let skip = UndecodablePolicy::Skip;
        let decoded = decode_from("t", 3, fetched, 3, skip, &mut { usize::MAX }).unwrap();
        let skipped = decoded.skipped.expect("the first batch is skipped");
        assert_eq!((&*skipped.topic, skipped.partition), ("t", 3));
        assert_eq!((skipped.base_offset, skipped.last_offset), (2, 4));
        assert_eq!(skipped.records(), 3);
        assert_eq!(offsets(&decoded.records), [5, 6]);
        assert_eq!(
            decoded.next_offset, 7,
            "the next fetch starts at the next bad batch"
        );
    }

    #[test]
    fn a_bad_first_batch_with_a_broken_header_fails_even_under_skip() {
        let mut bad = garbage(2);
        bad[20] ^= 1; // last_offset_delta, covered by the CRC
        let fetched = concat(&[bad, batch(5, 1, 10, Compression::None)]);
        let skip = UndecodablePolicy::Skip;
        let error = decode_from("t", 3, fetched, 2, skip, &mut { usize::MAX }).unwrap_err();
        assert_eq!(error.code(), Some(StatusCode::DataLoss));
    }
}

//! Reading: long-poll fetches, subscriptions, offset lookups. Batches come
//! back as stored; this module decodes them and drops records below the
//! offset asked for (a batch may start before it).

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use brook_proto as proto;
use brook_proto::list_offsets_request::Spec;
use brook_record::{Record, decode_batch, decode_batches, split_batches};
use bytes::Bytes;
use futures::Stream;
use tonic::Streaming;

use crate::client::Client;
use crate::error::ClientError;

/// Bytes of records the broker pushes per subscription message.
pub const SUBSCRIBE_MAX_BYTES: u32 = 1024 * 1024;

/// Bounds of one fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchOptions {
    /// Upper bound for the response's records (per partition and in total);
    /// at least one batch is returned when data exists, whatever its size.
    pub max_bytes: u32,
    /// How long the broker waits for data when there is none; zero returns at once.
    pub max_wait: Duration,
}

impl Default for FetchOptions {
    /// 1 MiB, and a 500 ms long-poll.
    fn default() -> Self {
        Self {
            max_bytes: 1024 * 1024,
            max_wait: Duration::from_millis(500),
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
    /// Where to fetch next: one past the last batch returned, or the offset
    /// asked for when nothing was returned.
    pub next_offset: i64,
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
    pub async fn fetch_many(
        &self,
        targets: &[FetchTarget],
        options: FetchOptions,
    ) -> Result<Vec<PartitionFetch>, ClientError> {
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
                let (records, next_offset) = decode_from(fetched.records, target.offset)?;
                Ok(PartitionFetch {
                    topic: fetched.topic,
                    partition: fetched.partition,
                    result: FetchResult {
                        records,
                        high_watermark: fetched.high_watermark,
                        log_start_offset: fetched.log_start_offset,
                        next_offset,
                    },
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
            responses,
            buffered: Vec::new().into_iter(),
            next_offset: offset,
            done: false,
        })
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

/// Decodes concatenated batches, keeping records at or after `offset`;
/// also returns the offset after the last batch (or `offset` if none).
fn decode_from(records: Bytes, offset: i64) -> Result<(Vec<Record>, i64), ClientError> {
    let mut kept = Vec::new();
    let mut next_offset = offset;
    for batch in split_batches(records) {
        let (header, decoded) =
            decode_batch(&batch.map_err(ClientError::Decode)?).map_err(ClientError::Decode)?;
        // decode_batch checked that the last offset fits in an i64.
        let last = header.base_offset + i64::from(header.last_offset_delta);
        next_offset = next_offset.max(last.saturating_add(1));
        kept.extend(decoded.into_iter().filter(|r| r.offset >= offset));
    }
    Ok((kept, next_offset))
}

/// A partition's records as they are appended, from [`Client::subscribe`]:
/// a `Stream` of decoded records in offset order, none below the offset
/// subscribed at. It ends when the broker ends it (shutdown) and after the
/// first error.
#[derive(Debug)]
#[must_use = "a subscription does nothing unless polled"]
pub struct Subscription {
    responses: Streaming<proto::SubscribeResponse>,
    /// Records of the last message not yet yielded.
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
            let failure = match ready!(Pin::new(&mut this.responses).poll_next(cx)) {
                Some(Ok(message)) => match decode_batches(&message.records) {
                    Ok(records) => {
                        this.buffered = records.into_iter();
                        continue;
                    }
                    Err(e) => ClientError::Decode(e),
                },
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

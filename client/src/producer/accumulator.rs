//! Open batches, one per (topic, partition), filled as records arrive.
//!
//! A batch closes when the next record would push it past its byte limit,
//! when it reaches its byte or record limit, when its first record has
//! waited `linger`, or on flush. Closing encodes (and compresses) it into a
//! [`Batch`]; the idempotent identity is stamped later, when it is first sent.
//!
//! Invariants: every record accepted is either in an open batch or handed
//! back in a closed one (or answered with the encoding error); batch ids
//! increase in the order batches are opened.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use brook_record::{BatchBuilder, BatchOptions, Compression, MAX_RECORDS_PER_BATCH};
use bytes::Bytes;
use tokio::sync::OwnedSemaphorePermit;

use super::TopicPartition;
use super::batch::{Batch, PendingRecord};
use super::partitioner::{Sticky, Target};
use super::record::record_size;
use super::sender::Enqueued;
use crate::error::ClientError;

/// Records per batch; the broker refuses more.
const BATCH_RECORDS_MAX: usize = MAX_RECORDS_PER_BATCH as usize;

#[derive(Debug)]
struct OpenBatch {
    id: u64,
    builder: BatchBuilder,
    records: Vec<PendingRecord>,
    permit: Option<OwnedSemaphorePermit>,
    /// When the first record arrived.
    opened: Instant,
    /// When the first record's linger is over.
    linger_until: Instant,
    /// The earliest delivery deadline of its records.
    deadline: Instant,
    bytes_max: usize,
}

#[derive(Debug)]
pub(crate) struct Accumulator {
    open: HashMap<TopicPartition, OpenBatch>,
    sticky: Sticky,
    compression: Compression,
    linger: Duration,
    next_id: u64,
}

impl Accumulator {
    pub(crate) fn new(compression: Compression, linger: Duration) -> Self {
        Self {
            open: HashMap::new(),
            sticky: Sticky::default(),
            compression,
            linger,
            next_id: 1,
        }
    }

    /// The id the next opened batch gets: every batch opened so far has a
    /// smaller one.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// When the earliest open batch's linger is over.
    pub(crate) fn next_linger(&self) -> Option<Instant> {
        self.open.values().map(|b| b.linger_until).min()
    }

    /// Adds a record; returns the batches this closed (at most two: the one
    /// it did not fit in, and its own if that is full at once).
    pub(crate) fn append(
        &mut self,
        enqueued: Enqueued,
        now: Instant,
    ) -> Vec<(TopicPartition, Batch)> {
        let Enqueued {
            topic,
            target,
            record,
            reply,
            permit,
            deadline,
            batch_bytes_max,
        } = enqueued;
        let partition = match target {
            Target::Partition(partition) => partition,
            Target::Sticky { partition_count } => self.sticky.partition(&topic, partition_count),
        };
        let key = (topic, partition);
        let mut closed = Vec::new();
        if let Some(open) = self.open.get(&key) {
            if open.builder.encoded_len() + record_size(&record) > open.bytes_max {
                closed.extend(self.close(&key));
            }
        }
        let open = self.open.entry(key.clone()).or_insert_with(|| {
            let id = self.next_id;
            self.next_id += 1;
            OpenBatch {
                id,
                builder: BatchBuilder::new(BatchOptions {
                    compression: self.compression,
                    ..BatchOptions::default()
                }),
                records: Vec::new(),
                permit: None,
                opened: now,
                linger_until: now + self.linger,
                deadline,
                bytes_max: batch_bytes_max,
            }
        });
        open.builder.push(&record);
        open.records
            .push(PendingRecord::new(reply, record.timestamp));
        open.deadline = open.deadline.min(deadline);
        match &mut open.permit {
            Some(held) => held.merge(permit),
            None => open.permit = Some(permit),
        }
        if open.builder.encoded_len() >= open.bytes_max || open.builder.len() >= BATCH_RECORDS_MAX {
            closed.extend(self.close(&key));
        }
        closed
    }

    /// Closes every batch whose linger is over.
    pub(crate) fn close_lingering(&mut self, now: Instant) -> Vec<(TopicPartition, Batch)> {
        let due: Vec<TopicPartition> = self
            .open
            .iter()
            .filter(|(_, b)| b.linger_until <= now)
            .map(|(key, _)| key.clone())
            .collect();
        due.iter().filter_map(|key| self.close(key)).collect()
    }

    /// Closes every open batch (flush, close).
    pub(crate) fn close_all(&mut self) -> Vec<(TopicPartition, Batch)> {
        let keys: Vec<TopicPartition> = self.open.keys().cloned().collect();
        keys.iter().filter_map(|key| self.close(key)).collect()
    }

    /// Answers every record of every open batch with `error`.
    pub(crate) fn fail_all(&mut self, error: &ClientError) {
        for (_, open) in self.open.drain() {
            let mut batch = Batch::new(
                open.id,
                Bytes::new(),
                open.records,
                open.permit,
                open.opened,
                open.deadline,
            );
            batch.fail(error);
        }
    }

    /// Encodes the open batch of `key`; `None` when encoding failed (its
    /// records are answered with the error) or there was none.
    fn close(&mut self, key: &TopicPartition) -> Option<(TopicPartition, Batch)> {
        let open = self.open.remove(key)?;
        self.sticky.batch_closed(&key.0, key.1);
        let (bytes, error) = match open.builder.build() {
            Ok(bytes) => (bytes, None),
            Err(error) => (Bytes::new(), Some(error)),
        };
        let mut batch = Batch::new(
            open.id,
            bytes,
            open.records,
            open.permit,
            open.opened,
            open.deadline,
        );
        if let Some(error) = error {
            batch.fail(&ClientError::Encode(error));
            return None;
        }
        Some((key.clone(), batch))
    }
}

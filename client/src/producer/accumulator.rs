//! Open batches, one per (topic, partition), filled by the callers of
//! `enqueue` (under the producer's lock) and taken by the sender task.
//!
//! A batch that fills up (its byte or record limit) is set aside at once
//! for the sender. A batch that is not full stays open, and keeps taking
//! records, until the sender takes it: when it is due (its linger is over,
//! a flush or close asked for it, or callers wait for buffer memory) and
//! its partition can send it now. So a partition whose earlier batches are
//! still in flight gathers the next one meanwhile instead of queuing many
//! small ones. A batch whose delivery timeout ran out is taken in any case
//! (the sender then fails it).
//!
//! Records are encoded into the batch as they are appended; encoding the
//! header, the CRC and compression happen when the sender closes the batch,
//! outside the lock.
//!
//! Invariants: every accepted record is in exactly one open batch, or in a
//! batch handed to the sender; batch ids increase in the order batches are
//! opened.

use std::collections::HashMap;

use foldhash::fast::RandomState;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::TopicPartition;
use super::batch::Batch;
use super::buffer::{BufferMemory, Lease, Reservation};
use super::completion::{AnswerOnDrop, Completion, DeliveryFuture};
use super::metadata::TOPICS_MAX;
use super::partitioner::{Sticky, Target};
use crate::error::ClientError;
use brook_record::{BatchBuilder, BatchOptions, Compression, MAX_RECORDS_PER_BATCH, NewRecord};

/// Records per batch; the broker refuses more.
const BATCH_RECORDS_MAX: usize = MAX_RECORDS_PER_BATCH as usize;

/// Bytes an open batch reserves up front at most; its buffer grows past
/// this if it must. A batch reserves about what its partition's last
/// batch held, so a steady stream fills its batches without copying them
/// over, and a trickle does not hold a large buffer per partition. (These
/// buffers are not counted in `buffer_memory`, which counts records.)
const PREALLOCATED_BYTES_MAX: usize = 1024 * 1024;
/// What a topic's first batch reserves.
const PREALLOCATED_BYTES_FIRST: usize = 16 * 1024;

/// A record on its way into a batch.
#[derive(Debug)]
pub(crate) struct Incoming<'a> {
    pub(crate) topic: &'a str,
    pub(crate) target: Target,
    pub(crate) record: &'a NewRecord,
    /// Its size bound (`record_size`), computed once by the caller.
    pub(crate) record_bytes: usize,
    /// Its share of the buffer memory.
    pub(crate) reservation: Reservation<'a>,
    pub(crate) deadline: Instant,
    /// `batch_size`, or the topic's `max_message_bytes` if smaller.
    pub(crate) batch_bytes_max: usize,
}

/// A batch still taking records.
#[derive(Debug)]
pub(crate) struct OpenBatch {
    id: u64,
    builder: BatchBuilder,
    completion: AnswerOnDrop,
    lease: Lease,
    /// When the first record arrived.
    opened: Instant,
    /// When the first record's linger is over.
    linger_until: Instant,
    /// The earliest delivery deadline of its records.
    deadline: Instant,
    bytes_max: usize,
}

impl OpenBatch {
    fn is_full(&self) -> bool {
        self.builder.encoded_len() >= self.bytes_max || self.builder.len() >= BATCH_RECORDS_MAX
    }

    /// Encodes (and compresses) the batch; `None` when that failed, after
    /// answering its records with the error.
    pub(crate) fn close(self) -> Option<Batch> {
        let count = self.builder.len();
        match self.builder.build() {
            Ok(bytes) => Some(Batch::new(
                self.id,
                bytes,
                count,
                self.completion,
                self.lease,
                self.opened,
                self.deadline,
            )),
            Err(error) => {
                drop(self.lease);
                self.completion.fail(&ClientError::Encode(error));
                None
            }
        }
    }

    fn fail(self, error: &ClientError) {
        drop(self.lease);
        self.completion.fail(error);
    }
}

/// One topic's open batches and sticky partition.
#[derive(Debug)]
struct TopicBatches {
    name: Arc<str>,
    sticky: Sticky,
    open: HashMap<u32, OpenBatch, RandomState>,
    /// Bytes of each partition's last closed batch (at most one entry per
    /// partition of the topic).
    last_batch_bytes: HashMap<u32, usize, RandomState>,
}

impl TopicBatches {
    /// Hands the open batch of `partition` over: keyless records move on.
    fn close(&mut self, partition: u32) -> Option<(TopicPartition, OpenBatch)> {
        let open = self.open.remove(&partition)?;
        self.sticky.batch_closed(partition);
        self.last_batch_bytes
            .insert(partition, open.builder.encoded_len());
        Some(((self.name.clone(), partition), open))
    }

    /// Bytes to reserve for a new batch of `partition` of at most `bytes_max`.
    fn preallocation(&self, partition: u32, bytes_max: usize) -> usize {
        let expected = match self.last_batch_bytes.get(&partition) {
            None => PREALLOCATED_BYTES_FIRST,
            Some(&last) => last + last / 8,
        };
        expected.min(bytes_max).min(PREALLOCATED_BYTES_MAX)
    }
}

/// When the sender takes open batches that are not full.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Due {
    pub(crate) now: Instant,
    /// Every open batch is due: the producer is closing, or callers wait
    /// for buffer memory.
    pub(crate) all: bool,
}

#[derive(Debug)]
pub(crate) struct Accumulator {
    /// Looked up once or twice per record: a fast hasher (the keys are
    /// the application's, not a peer's).
    topics: HashMap<Arc<str>, TopicBatches, RandomState>,
    /// Batches that filled up, for the sender to take.
    full: Vec<(TopicPartition, OpenBatch)>,
    compression: Compression,
    linger: Duration,
    next_id: u64,
    /// Open batches with a smaller id are due whatever their linger (a
    /// flush asked for them).
    flush_below: u64,
    buffer: Arc<BufferMemory>,
}

impl Accumulator {
    pub(crate) fn new(
        compression: Compression,
        linger: Duration,
        buffer: Arc<BufferMemory>,
    ) -> Self {
        Self {
            topics: HashMap::default(),
            full: Vec::new(),
            compression,
            linger,
            next_id: 1,
            flush_below: 0,
            buffer,
        }
    }

    /// Adds a record to its partition's open batch: its delivery future,
    /// and whether the sender must look (a batch opened, so a linger
    /// started, or one filled up).
    pub(crate) fn append(
        &mut self,
        incoming: Incoming<'_>,
        now: Instant,
    ) -> (DeliveryFuture, bool) {
        let Incoming {
            topic,
            target,
            record,
            record_bytes,
            reservation,
            deadline,
            batch_bytes_max,
        } = incoming;
        if !self.topics.contains_key(topic) {
            self.make_room_for_a_topic();
            let name: Arc<str> = Arc::from(topic);
            self.topics.insert(
                name.clone(),
                TopicBatches {
                    name,
                    sticky: Sticky::default(),
                    open: HashMap::default(),
                    last_batch_bytes: HashMap::default(),
                },
            );
        }
        let batches = self
            .topics
            .get_mut(topic)
            .expect("the topic was inserted above");
        let partition = match target {
            Target::Partition(partition) => partition,
            Target::Sticky { partition_count } => batches.sticky.partition(partition_count),
        };
        let mut wake = false;
        let fits = |open: &OpenBatch| open.builder.encoded_len() + record_bytes <= open.bytes_max;
        if batches.open.get(&partition).is_some_and(|open| !fits(open)) {
            self.full.extend(batches.close(partition));
            wake = true;
        }
        let preallocation = batches.preallocation(partition, batch_bytes_max);
        let open = batches.open.entry(partition).or_insert_with(|| {
            wake = true;
            let id = self.next_id;
            self.next_id += 1;
            OpenBatch {
                id,
                builder: BatchBuilder::with_capacity(
                    BatchOptions {
                        compression: self.compression,
                        ..BatchOptions::default()
                    },
                    preallocation,
                ),
                completion: AnswerOnDrop(Completion::new(batches.name.clone(), partition)),
                lease: Lease::new(self.buffer.clone()),
                opened: now,
                linger_until: crate::deadline::after(now, self.linger),
                deadline,
                bytes_max: batch_bytes_max,
            }
        });
        let index = u32::try_from(open.builder.len()).expect("batches hold at most 1e6 records");
        open.builder.push(record);
        reservation.join(&mut open.lease);
        open.deadline = open.deadline.min(deadline);
        let delivery = open.completion.0.delivery(index, record.timestamp);
        if open.is_full() {
            self.full.extend(batches.close(partition));
            wake = true;
        }
        (delivery, wake)
    }

    /// Keeps the topic map bounded: topics without open batches go when
    /// it is at its bound (they lose only their sticky partition).
    fn make_room_for_a_topic(&mut self) {
        if self.topics.len() >= TOPICS_MAX {
            self.topics.retain(|_, batches| !batches.open.is_empty());
        }
    }

    /// Marks every open batch due; returns the first id not covered.
    pub(crate) fn flush(&mut self) -> u64 {
        self.flush_below = self.next_id;
        self.next_id
    }

    /// The batches that filled up, and the open batches that are due and
    /// whose partition `can_send` now, or whose delivery timeout ran out.
    pub(crate) fn take(
        &mut self,
        due: Due,
        mut can_send: impl FnMut(&TopicPartition) -> bool,
    ) -> Vec<(TopicPartition, OpenBatch)> {
        let mut taken = std::mem::take(&mut self.full);
        for batches in self.topics.values_mut() {
            let ready: Vec<u32> = batches
                .open
                .iter()
                .filter(|&(&partition, open)| {
                    let expired = open.deadline <= due.now;
                    let is_due =
                        due.all || open.id < self.flush_below || open.linger_until <= due.now;
                    expired || (is_due && can_send(&(batches.name.clone(), partition)))
                })
                .map(|(&partition, _)| partition)
                .collect();
            for partition in ready {
                taken.extend(batches.close(partition));
            }
        }
        taken.sort_unstable_by_key(|(_, open)| open.id);
        taken
    }

    /// The next instant after `now` at which an open batch becomes due by
    /// its linger or expires.
    pub(crate) fn next_wake(&self, now: Instant) -> Option<Instant> {
        self.topics
            .values()
            .flat_map(|batches| batches.open.values())
            .flat_map(|open| [open.linger_until, open.deadline])
            .filter(|&wake| wake > now)
            .min()
    }

    /// The smallest id of a batch not handed to the sender.
    pub(crate) fn oldest_id(&self) -> Option<u64> {
        let full = self.full.iter().map(|(_, open)| open.id);
        let open = self
            .topics
            .values()
            .flat_map(|batches| batches.open.values().map(|open| open.id));
        full.chain(open).min()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.full.is_empty() && self.topics.values().all(|batches| batches.open.is_empty())
    }

    /// Answers every record of every batch not handed to the sender with `error`.
    pub(crate) fn fail_all(&mut self, error: &ClientError) {
        for (_, open) in self.full.drain(..) {
            open.fail(error);
        }
        for batches in self.topics.values_mut() {
            for (_, open) in batches.open.drain() {
                open.fail(error);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt as _;

    use bytes::Bytes;

    use super::super::record::record_size;
    use super::*;

    const LIMIT: usize = 10 * 1024;

    fn accumulator(linger: Duration) -> (Accumulator, Arc<BufferMemory>) {
        let buffer = Arc::new(BufferMemory::new(1 << 20));
        (
            Accumulator::new(Compression::None, linger, buffer.clone()),
            buffer,
        )
    }

    fn record(bytes: usize) -> NewRecord {
        NewRecord {
            value: Some(Bytes::from(vec![7; bytes])),
            ..NewRecord::default()
        }
    }

    fn append(
        accumulator: &mut Accumulator,
        buffer: &BufferMemory,
        target: Target,
        record: &NewRecord,
        now: Instant,
    ) -> (DeliveryFuture, bool) {
        let record_bytes = record_size(record);
        let size = u32::try_from(record_bytes).unwrap();
        let incoming = Incoming {
            topic: "t",
            target,
            record,
            record_bytes,
            reservation: buffer.try_reserve(size).unwrap(),
            deadline: now + Duration::from_secs(60),
            batch_bytes_max: LIMIT,
        };
        accumulator.append(incoming, now)
    }

    fn due(now: Instant) -> Due {
        Due { now, all: false }
    }

    #[test]
    fn a_batch_fills_then_goes_and_keyless_records_move_on() {
        let (mut accumulator, buffer) = accumulator(Duration::from_secs(60));
        let now = Instant::now();
        let sticky = Target::Sticky { partition_count: 2 };
        let record = record(1000);
        let (_, wake) = append(&mut accumulator, &buffer, sticky, &record, now);
        assert!(wake, "a batch opened");
        let mut appended = 1;
        while accumulator.full.is_empty() {
            let (_, wake) = append(&mut accumulator, &buffer, sticky, &record, now);
            appended += 1;
            assert_eq!(wake, !accumulator.full.is_empty());
        }
        let taken = accumulator.take(due(now), |_| true);
        assert_eq!(taken.len(), 1, "the open one lingers");
        let first = taken[0].0.1;
        let open: Vec<u32> = accumulator.topics["t"].open.keys().copied().collect();
        assert_eq!(
            open,
            [first],
            "the record that did not fit opened the next batch"
        );
        let batch = taken.into_iter().next().unwrap().1.close().unwrap();
        assert_eq!(batch.record_count(), appended - 1);
        assert_eq!(appended - 1, 10, "10 records of 1000 B fit in 10 KiB");
        assert!(batch.bytes.len() <= LIMIT);
        let other = Target::Partition(1 - first);
        let _delivery = append(&mut accumulator, &buffer, other, &record, now);
        let taken = accumulator.take(due(now), |_| true);
        assert!(taken.is_empty(), "both linger");
        for _ in 0..10 {
            let _delivery = append(&mut accumulator, &buffer, sticky, &record, now);
        }
        let full = accumulator.take(due(now), |_| true);
        assert_eq!(full.len(), 1, "{full:?}");
        let (_, wake) = append(&mut accumulator, &buffer, sticky, &record, now);
        assert!(
            !wake,
            "keyless records moved on to the other partition's open batch"
        );
    }

    #[test]
    fn an_open_batch_goes_when_due_and_its_partition_can_send() {
        let (mut accumulator, buffer) = accumulator(Duration::from_millis(5));
        let now = Instant::now();
        let record = record(10);
        let (delivery, _) = append(
            &mut accumulator,
            &buffer,
            Target::Partition(0),
            &record,
            now,
        );
        assert!(accumulator.take(due(now), |_| true).is_empty(), "lingering");
        assert_eq!(
            accumulator.next_wake(now),
            Some(now + Duration::from_millis(5))
        );
        let later = now + Duration::from_millis(5);
        assert!(
            accumulator.take(due(later), |_| false).is_empty(),
            "due, but the partition cannot send"
        );
        let (_, wake) = append(
            &mut accumulator,
            &buffer,
            Target::Partition(0),
            &record,
            later,
        );
        assert!(!wake, "it keeps filling meanwhile");
        let taken = accumulator.take(due(later), |_| true);
        assert_eq!(taken.len(), 1);
        let mut batch = taken.into_iter().next().unwrap().1.close().unwrap();
        assert_eq!(batch.record_count(), 2);
        assert!(buffer.held() > 0);
        batch.succeed(40);
        assert_eq!(buffer.held(), 0, "the lease is given back");
        assert_eq!(delivery.now_or_never().unwrap().unwrap().offset, 40);
    }

    #[test]
    fn flush_makes_the_open_batches_due_and_expired_batches_go_regardless() {
        let (mut accumulator, buffer) = accumulator(Duration::from_secs(600));
        let now = Instant::now();
        let record = record(10);
        let _delivery = append(
            &mut accumulator,
            &buffer,
            Target::Partition(0),
            &record,
            now,
        );
        let _delivery = append(
            &mut accumulator,
            &buffer,
            Target::Partition(1),
            &record,
            now,
        );
        assert_eq!(accumulator.oldest_id(), Some(1));
        let covers_below = accumulator.flush();
        assert_eq!(covers_below, 3);
        let _delivery = append(
            &mut accumulator,
            &buffer,
            Target::Partition(2),
            &record,
            now,
        );
        let taken = accumulator.take(due(now), |key| key.1 == 0);
        assert_eq!(taken.iter().map(|(key, _)| key.1).collect::<Vec<_>>(), [0]);
        let expired = now + Duration::from_secs(60);
        let taken = accumulator.take(due(expired), |_| false);
        assert_eq!(taken.len(), 2, "past their delivery timeout");
        assert!(accumulator.is_empty());
        assert_eq!(accumulator.oldest_id(), None);
    }

    #[test]
    fn failing_everything_answers_every_record_and_frees_the_buffer() {
        let (mut accumulator, buffer) = accumulator(Duration::from_secs(600));
        let now = Instant::now();
        let (delivery, _) = append(
            &mut accumulator,
            &buffer,
            Target::Partition(0),
            &record(10),
            now,
        );
        accumulator.fail_all(&super::super::error::closed());
        assert_eq!(buffer.held(), 0);
        assert!(delivery.now_or_never().unwrap().is_err());
        assert!(accumulator.is_empty());
    }
}

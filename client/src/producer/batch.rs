//! A closed batch: its encoded bytes, the answer its records wait for, the
//! buffer memory it holds, and its place in the retry cycle.
//!
//! Invariants: a batch answers each of its records exactly once (acked or
//! failed), and gives its buffer memory back when it does; its bytes never
//! change between attempts of one producer identity, so a retry is
//! byte-for-byte the batch the broker may already hold.

use std::time::Instant;

use brook_record::{BatchHeader, HEADER_LEN};
use bytes::{Bytes, BytesMut};

use super::buffer::Lease;
use super::completion::AnswerOnDrop;
use crate::error::ClientError;

/// An idempotent producer identity: batches carry it in their header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) producer_id: i64,
    pub(crate) producer_epoch: i16,
}

/// Where a batch is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BatchState {
    /// To be sent, not before this instant (now for a first attempt).
    Ready { not_before: Instant },
    /// Refused as out of order while an earlier batch of its partition was
    /// unacknowledged: sent again only once every earlier batch is acked.
    Held,
    /// Part of a request awaiting its answer.
    InFlight,
    /// Appended and answered; kept as a placeholder while an earlier batch
    /// of the partition is unacknowledged (it still counts in the window).
    Acked,
}

#[derive(Debug)]
pub(crate) struct Batch {
    /// Unique per producer, increasing in the order batches were opened.
    pub(crate) id: u64,
    pub(crate) bytes: Bytes,
    record_count: usize,
    /// Answers the records' delivery futures.
    completion: AnswerOnDrop,
    /// The buffer memory of the records; released when the batch is answered.
    lease: Option<Lease>,
    /// When the oldest record's delivery timeout runs out.
    pub(crate) deadline: Instant,
    pub(crate) state: BatchState,
    /// Requests this batch was part of.
    pub(crate) attempts: u32,
    /// The identity and base sequence in the header; `None` until the first
    /// send of an idempotent batch (and again after a sequence reset).
    pub(crate) stamp: Option<(Identity, i32)>,
    /// Whether the last attempt was sent while no earlier batch of the
    /// partition was unacknowledged: then an out-of-order answer means a
    /// real gap, not a race with an earlier batch.
    pub(crate) sent_as_front: bool,
    /// The error of the last failed attempt, for the log when it expires.
    pub(crate) last_error: Option<ClientError>,
    /// Whether the batch goes in a request of its own: a request it was
    /// part of was refused as a whole, and only requests of one batch tell
    /// which batch the broker objects to.
    pub(crate) alone: bool,
    /// Whether an attempt under the current stamp failed in a way that may
    /// hide an append (a timeout, a lost answer): then its sequence numbers
    /// may be taken at the broker even if a later attempt is refused.
    pub(crate) maybe_appended: bool,
}

impl Batch {
    pub(crate) fn new(
        id: u64,
        bytes: Bytes,
        record_count: usize,
        completion: AnswerOnDrop,
        lease: Lease,
        opened: Instant,
        deadline: Instant,
    ) -> Self {
        assert!(record_count > 0, "a batch holds at least one record");
        Self {
            id,
            bytes,
            record_count,
            completion,
            lease: Some(lease),
            deadline,
            state: BatchState::Ready { not_before: opened },
            attempts: 0,
            stamp: None,
            sent_as_front: false,
            last_error: None,
            alone: false,
            maybe_appended: false,
        }
    }

    pub(crate) fn record_count(&self) -> usize {
        self.record_count
    }

    /// Writes `identity` and `base_sequence` into the header (and the CRC
    /// that covers them).
    pub(crate) fn stamp(&mut self, identity: Identity, base_sequence: i32) {
        self.bytes = stamp_producer(std::mem::take(&mut self.bytes), identity, base_sequence);
        self.stamp = Some((identity, base_sequence));
    }

    /// Forgets the stamp: the batch is stamped again when next sent (after
    /// a sequence reset, under another identity or sequence).
    pub(crate) fn unstamp(&mut self) {
        self.stamp = None;
        self.maybe_appended = false;
    }

    /// Answers every record: offsets follow `base_offset` densely.
    pub(crate) fn succeed(&mut self, base_offset: i64) {
        self.release();
        self.completion.succeed(base_offset);
    }

    /// Answers every record with `error`.
    pub(crate) fn fail(&mut self, error: &ClientError) {
        self.release();
        self.completion.fail(error);
    }

    /// Gives the buffer memory back before any record is answered: a caller
    /// that sees its answer finds its bytes free (and another can use them).
    fn release(&mut self) {
        self.lease = None;
        self.bytes = Bytes::new();
        self.last_error = None;
    }
}

/// Where the CRC's range starts: after the base offset, the batch length
/// and the CRC itself (see `docs/record-batch.md`).
const CRC_START: usize = 16;

/// `batch` with the producer fields of its header replaced, and its CRC
/// updated without reading the records again: CRC-32 is linear, so the CRC
/// of the new header followed by the records is the old CRC plus (xor) the
/// CRC of the change in the header shifted past the records, which
/// `crc32fast`'s `combine` computes in time logarithmic in their length.
/// The records' CRC is thus computed once, when the batch is built.
fn stamp_producer(batch: Bytes, identity: Identity, base_sequence: i32) -> Bytes {
    let mut header = BatchHeader::parse(&batch)
        .expect("batches are built by BatchBuilder, whole headers included");
    let old = header.to_bytes();
    header.producer_id = identity.producer_id;
    header.producer_epoch = identity.producer_epoch;
    header.base_sequence = base_sequence;
    let new = header.to_bytes();
    let change = crc32fast::hash(&old[CRC_START..]) ^ crc32fast::hash(&new[CRC_START..]);
    let records_len = (batch.len() - HEADER_LEN) as u64;
    let mut shifted = crc32fast::Hasher::new_with_initial(change);
    shifted.combine(&crc32fast::Hasher::new_with_initial_len(0, records_len));
    header.crc ^= shifted.finalize();
    // Copies only when a request still holds the bytes (a restamp).
    let mut bytes = batch
        .try_into_mut()
        .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
    bytes[..HEADER_LEN].copy_from_slice(&header.to_bytes());
    bytes.freeze()
}

/// A closed batch of `records` empty records opened at `opened` (with a
/// minute's delivery time), and the futures of their answers.
#[cfg(test)]
pub(crate) fn test_batch(
    id: u64,
    records: usize,
    opened: Instant,
) -> (Batch, Vec<super::DeliveryFuture>) {
    let bytes = brook_record::encode_batch(
        &vec![brook_record::NewRecord::default(); records],
        brook_record::BatchOptions::default(),
    )
    .expect("empty records encode");
    let completion = super::completion::Completion::new(std::sync::Arc::from("t"), 0);
    let deliveries = (0..records)
        .map(|index| completion.delivery(u32::try_from(index).unwrap(), 0))
        .collect();
    let buffer = std::sync::Arc::new(super::buffer::BufferMemory::new(1));
    let deadline = opened + std::time::Duration::from_secs(60);
    (
        Batch::new(
            id,
            bytes,
            records,
            AnswerOnDrop(completion),
            Lease::new(buffer),
            opened,
            deadline,
        ),
        deliveries,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use brook_record::{
        BatchOptions, Compression, NewRecord, decode_batch, encode_batch, validate_batch,
    };

    #[test]
    fn an_updated_crc_equals_one_computed_over_the_whole_batch() {
        for records in [1_usize, 2, 7, 64, 300] {
            let batch: Vec<NewRecord> = (0..records)
                .map(|i| NewRecord {
                    value: Some(Bytes::from(vec![u8::try_from(i % 251).unwrap(); i * 3])),
                    ..NewRecord::default()
                })
                .collect();
            let plain = encode_batch(&batch, BatchOptions::default()).unwrap();
            let first = Identity {
                producer_id: 1,
                producer_epoch: 0,
            };
            let second = Identity {
                producer_id: i64::MAX,
                producer_epoch: i16::MAX,
            };
            // Stamped, then stamped again (a sequence reset), while a
            // request still holds the first stamp's bytes.
            let once = stamp_producer(plain.clone(), first, 0);
            let twice = stamp_producer(once.clone(), second, i32::MAX);
            for (stamped, identity, sequence) in [(once, first, 0), (twice, second, i32::MAX)] {
                let mut expected = plain.to_vec();
                brook_record::stamp_producer(
                    &mut expected,
                    identity.producer_id,
                    identity.producer_epoch,
                    sequence,
                )
                .unwrap();
                assert_eq!(stamped, expected, "{records} records");
                validate_batch(&stamped, usize::MAX).unwrap();
            }
        }
    }

    #[test]
    fn stamping_matches_a_batch_built_with_the_identity() {
        let records = vec![
            NewRecord {
                timestamp: 5,
                value: Some(Bytes::from_static(b"v")),
                ..NewRecord::default()
            };
            3
        ];
        for compression in [Compression::None, Compression::Lz4, Compression::Zstd] {
            let plain = encode_batch(
                &records,
                BatchOptions {
                    compression,
                    ..BatchOptions::default()
                },
            )
            .unwrap();
            let identity = Identity {
                producer_id: 42,
                producer_epoch: 3,
            };
            let mut by_record = plain.to_vec();
            brook_record::stamp_producer(&mut by_record, 42, 3, 17).unwrap();
            let stamped = stamp_producer(plain, identity, 17);
            assert_eq!(stamped, by_record, "{compression}");
            let built = encode_batch(
                &records,
                BatchOptions {
                    compression,
                    producer_id: 42,
                    producer_epoch: 3,
                    base_sequence: 17,
                },
            )
            .unwrap();
            assert_eq!(stamped, built, "{compression}");
            validate_batch(&stamped, usize::MAX).unwrap();
            let (header, decoded) = decode_batch(&stamped).unwrap();
            assert_eq!(header.base_sequence, 17);
            assert_eq!(decoded.len(), 3);
        }
    }
}

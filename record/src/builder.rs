//! Building batches from records, as a producer does.
//!
//! Records are encoded as they are pushed, so [`BatchBuilder::encoded_len`] is exact
//! for the uncompressed batch and a client can decide when a batch is full.
//! Invariants of every built batch: base_offset 0 (the broker stamps the real one),
//! magic 1, offset deltas 0..n dense, `last_offset_delta = n - 1`, first_timestamp is
//! the first pushed record's timestamp and max_timestamp the largest, and the CRC
//! covers bytes `[16, end)`. A built batch always passes [`crate::validate_batch`] for
//! any limit at least its size.

use bytes::Bytes;

use crate::compression::{self, Compression, MAX_DECOMPRESSED_BYTES};
use crate::error::BatchError;
use crate::header::{BatchHeader, HEADER_LEN, LENGTH_PREFIX_LEN, MAGIC, compute_crc};
use crate::record::{NewRecord, encode_record};
use crate::validate::MAX_RECORDS_PER_BATCH;

/// How a batch is compressed and which idempotent-producer identity it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOptions {
    pub compression: Compression,
    /// -1 when the producer is not idempotent.
    pub producer_id: i64,
    /// -1 when the producer is not idempotent.
    pub producer_epoch: i16,
    /// -1 when the producer is not idempotent.
    pub base_sequence: i32,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            compression: Compression::None,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        }
    }
}

/// Incremental builder: encodes records as they are pushed (so the size is known for
/// batching decisions).
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    options: BatchOptions,
    /// Room for the header, then the encoded, uncompressed records
    /// section: an uncompressed batch is built in place, without a copy.
    records: Vec<u8>,
    /// Scratch for one record body, reused to avoid an allocation per push.
    scratch: Vec<u8>,
    count: usize,
    first_timestamp: i64,
    max_timestamp: i64,
}

impl BatchBuilder {
    pub fn new(options: BatchOptions) -> Self {
        Self::with_capacity(options, 0)
    }

    /// A builder whose buffer holds `bytes` of batch (header included)
    /// before it grows.
    pub fn with_capacity(options: BatchOptions, bytes: usize) -> Self {
        let mut records = Vec::with_capacity(bytes.max(HEADER_LEN));
        records.resize(HEADER_LEN, 0);
        BatchBuilder {
            options,
            records,
            scratch: Vec::new(),
            count: 0,
            first_timestamp: 0,
            max_timestamp: 0,
        }
    }

    /// Appends a record. Its offset_delta is the number pushed so far; its timestamp is
    /// stored relative to the first pushed record's timestamp (deltas are signed, so
    /// later records may be older).
    pub fn push(&mut self, record: &NewRecord) {
        if self.count == 0 {
            self.first_timestamp = record.timestamp;
            self.max_timestamp = record.timestamp;
        }
        self.max_timestamp = self.max_timestamp.max(record.timestamp);
        // Wrapping keeps push infallible for extreme timestamps; decode wraps back.
        let delta = record.timestamp.wrapping_sub(self.first_timestamp);
        encode_record(
            &mut self.records,
            &mut self.scratch,
            record,
            delta,
            self.count as u64,
        );
        self.count += 1;
    }

    /// Records pushed so far.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Size of the batch if built uncompressed now (header included). With compression
    /// the built batch is usually smaller, so this is a safe upper-bound estimate.
    pub fn encoded_len(&self) -> usize {
        self.records.len()
    }

    /// Compresses the records, fills in the header and CRC. base_offset is 0.
    pub fn build(self) -> Result<Bytes, BatchError> {
        if self.count == 0 {
            return Err(BatchError::EmptyBatch);
        }
        let record_count = u32::try_from(self.count)
            .ok()
            .filter(|&n| n <= MAX_RECORDS_PER_BATCH)
            .ok_or(BatchError::TooManyRecords {
                count: self.count,
                max: MAX_RECORDS_PER_BATCH,
            })?;
        let codec = self.options.compression;
        let section_len = self.records.len() - HEADER_LEN;
        // Readers refuse to inflate past this; do not produce what no one can read.
        if codec != Compression::None && section_len > MAX_DECOMPRESSED_BYTES {
            return Err(BatchError::DecompressedTooLarge {
                codec,
                size: section_len,
                max: MAX_DECOMPRESSED_BYTES,
            });
        }
        let mut batch = if codec == Compression::None {
            self.records
        } else {
            let section =
                compression::compress(codec, self.records.get(HEADER_LEN..).unwrap_or_default())?;
            let mut batch = Vec::with_capacity(HEADER_LEN + section.len());
            batch.resize(HEADER_LEN, 0);
            batch.extend_from_slice(&section);
            batch
        };

        let total = batch.len();
        let max_total = LENGTH_PREFIX_LEN + u32::MAX as usize;
        let batch_length =
            u32::try_from(total - LENGTH_PREFIX_LEN).map_err(|_| BatchError::EncodedTooLarge {
                size: total,
                max: max_total,
            })?;

        let mut header = BatchHeader {
            base_offset: 0,
            batch_length,
            crc: 0,
            magic: MAGIC,
            attributes: u16::from(codec.id()),
            last_offset_delta: record_count - 1,
            first_timestamp: self.first_timestamp,
            max_timestamp: self.max_timestamp,
            producer_id: self.options.producer_id,
            producer_epoch: self.options.producer_epoch,
            base_sequence: self.options.base_sequence,
            record_count,
        };
        batch[..HEADER_LEN].copy_from_slice(&header.to_bytes());
        header.crc = compute_crc(&batch);
        batch[..HEADER_LEN].copy_from_slice(&header.to_bytes());
        Ok(Bytes::from(batch))
    }
}

/// Builds one batch from `records` in order.
pub fn encode_batch(records: &[NewRecord], options: BatchOptions) -> Result<Bytes, BatchError> {
    let mut builder = BatchBuilder::new(options);
    for record in records {
        builder.push(record);
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::compute_crc;

    fn rec(ts: i64, value: &'static [u8]) -> NewRecord {
        NewRecord {
            timestamp: ts,
            value: Some(Bytes::from_static(value)),
            ..NewRecord::default()
        }
    }

    #[test]
    fn empty_builder_is_an_error() {
        let b = BatchBuilder::new(BatchOptions::default());
        assert!(b.is_empty());
        assert_eq!(b.encoded_len(), HEADER_LEN);
        assert_eq!(b.build(), Err(BatchError::EmptyBatch));
    }

    #[test]
    fn header_fields_are_filled_in() {
        let options = BatchOptions {
            compression: Compression::Lz4,
            producer_id: 7,
            producer_epoch: 2,
            base_sequence: 40,
        };
        let mut b = BatchBuilder::new(options);
        b.push(&rec(1_000, b"a"));
        b.push(&rec(900, b"b"));
        b.push(&rec(1_500, b"c"));
        assert_eq!(b.len(), 3);
        let uncompressed = b.encoded_len();
        let batch = b.build().unwrap();
        let h = BatchHeader::parse(&batch).unwrap();
        assert_eq!(h.base_offset, 0);
        assert_eq!(h.total_len(), batch.len());
        assert_eq!(h.magic, MAGIC);
        assert_eq!(h.compression(), Ok(Compression::Lz4));
        assert_eq!(h.record_count, 3);
        assert_eq!(h.last_offset_delta, 2);
        assert_eq!((h.first_timestamp, h.max_timestamp), (1_000, 1_500));
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (7, 2, 40)
        );
        assert_eq!(h.crc, compute_crc(&batch));
        assert!(uncompressed > HEADER_LEN);
    }

    #[test]
    fn encoded_len_is_exact_when_uncompressed() {
        let mut b = BatchBuilder::new(BatchOptions::default());
        b.push(&rec(1, b"hello"));
        let len = b.encoded_len();
        assert_eq!(b.build().unwrap().len(), len);
    }

    #[test]
    fn encode_batch_matches_builder() {
        let records = [rec(5, b"x"), rec(6, b"y")];
        let mut b = BatchBuilder::new(BatchOptions::default());
        for r in &records {
            b.push(r);
        }
        assert_eq!(
            encode_batch(&records, BatchOptions::default()).unwrap(),
            b.build().unwrap()
        );
        assert_eq!(
            encode_batch(&[], BatchOptions::default()),
            Err(BatchError::EmptyBatch)
        );
    }
}

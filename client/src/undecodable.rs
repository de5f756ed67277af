//! What a reader does with a fetched batch whose records do not decode:
//! stop there (the default), or skip the batch's offsets and report them.
//!
//! A batch is skipped only when its header is sound: it framed, its CRC
//! matched and its offset fields agree, and only the records section
//! failed (malformed records, a wrong record count, a section that does not
//! decompress). Then the header's offsets are the ones the broker gave the
//! batch, so the range skipped is exactly the batch. A batch whose header
//! is unusable (a CRC mismatch, a broken length) gives no range to trust,
//! and stops the partition under either policy.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use brook_record::{BatchError, BatchHeader};
use bytes::Bytes;

/// What a consumer does with a batch that passes its CRC check but whose
/// records do not decode (written before the broker checked records fully,
/// or by a bug).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UndecodablePolicy {
    /// Stop the partition at the batch: the read fails with `DATA_LOSS`
    /// naming the partition and offset, and nothing after it is read. The
    /// default: nothing is lost unless asked for.
    #[default]
    Stop,
    /// Skip the batch's offsets: report a [`SkippedBatch`], count it, log
    /// it as a warning and go on with the next batch. A batch whose header
    /// is unusable too still stops the partition (there is no range to
    /// trust).
    Skip,
}

/// A batch a consumer skipped under [`UndecodablePolicy::Skip`]: its
/// records are lost to this consumer. Reported in order: after every record
/// of the partition before it, before every record after it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SkippedBatch {
    /// The batch's topic.
    pub topic: Arc<str>,
    /// The batch's partition.
    pub partition: u32,
    /// The batch's first offset (its header's base offset).
    pub base_offset: i64,
    /// The batch's last offset (base offset plus last offset delta); the
    /// partition goes on at the offset after it.
    pub last_offset: i64,
    /// Why the records did not decode.
    pub reason: String,
}

impl SkippedBatch {
    /// Offsets in the batch's range: the records lost.
    pub fn records(&self) -> u64 {
        // A skipped batch's header checked out: last >= base.
        u64::try_from(self.last_offset - self.base_offset + 1).unwrap_or(0)
    }

    /// The batch of `batch` (that failed to decode with `error`) as a skip,
    /// if its header is sound and it reaches `offset`, the offset asked for
    /// (else skipping it would not move the reader).
    pub(crate) fn of(
        topic: &str,
        partition: u32,
        offset: i64,
        batch: &Bytes,
        error: &BatchError,
    ) -> Option<Self> {
        if !failed_after_header(error) {
            return None;
        }
        let header = BatchHeader::parse(batch).ok()?;
        let last_offset = header
            .base_offset
            .checked_add(i64::from(header.last_offset_delta))?;
        if last_offset < offset {
            return None;
        }
        Some(Self {
            topic: Arc::from(topic),
            partition,
            base_offset: header.base_offset,
            last_offset,
            reason: error.to_string(),
        })
    }
}

/// Whether `error` is one that `brook_record::decode_batch` raises only
/// after the header checked out: length, magic, attributes, CRC, record
/// count against last offset delta, and that the last offset fits. Any
/// other error (and any error added later) leaves the header untrusted.
fn failed_after_header(error: &BatchError) -> bool {
    matches!(
        error,
        BatchError::RecordCountMismatch { .. }
            | BatchError::MalformedRecord { .. }
            | BatchError::OffsetDeltaNotPosition { .. }
            | BatchError::Decompression { .. }
            | BatchError::DecompressedTooLarge { .. }
    )
}

/// A callback that receives each [`SkippedBatch`].
pub(crate) type SkippedCallback = Arc<dyn Fn(&SkippedBatch) + Send + Sync>;

/// Batches and records a consumer skipped, since it was made.
#[derive(Debug, Default)]
pub(crate) struct SkipCounters {
    batches: AtomicU64,
    records: AtomicU64,
}

impl SkipCounters {
    /// Counts `skipped` and logs it: the one place a skip is announced.
    pub fn count(&self, skipped: &SkippedBatch) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.records.fetch_add(skipped.records(), Ordering::Relaxed);
        tracing::warn!(
            topic = &*skipped.topic,
            partition = skipped.partition,
            base_offset = skipped.base_offset,
            last_offset = skipped.last_offset,
            reason = %skipped.reason,
            "batch does not decode; its records are skipped"
        );
    }

    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use brook_record::{BatchOptions, HEADER_LEN, NewRecord, encode_batch, stamp_base_offset};

    use super::*;

    /// Three uncompressed records at `base_offset`, the first record's
    /// attributes byte set to `attributes`, the CRC fixed if `fix_crc`.
    fn batch(base_offset: i64, attributes: u8, fix_crc: bool) -> Bytes {
        let records = vec![
            NewRecord {
                value: Some(Bytes::from_static(b"value")),
                ..NewRecord::default()
            };
            3
        ];
        let mut batch = encode_batch(&records, BatchOptions::default())
            .expect("encodes")
            .to_vec();
        stamp_base_offset(&mut batch, base_offset);
        // The first record: a one-byte length varint, then its attributes.
        batch[HEADER_LEN + 1] = attributes;
        if fix_crc {
            let crc = crc32fast::hash(&batch[16..]);
            batch[12..16].copy_from_slice(&crc.to_le_bytes());
        }
        Bytes::from(batch)
    }

    fn skip_of(batch: &Bytes, offset: i64) -> Option<SkippedBatch> {
        let error = brook_record::decode_batch(batch).expect_err("does not decode");
        SkippedBatch::of("t", 1, offset, batch, &error)
    }

    #[test]
    fn a_batch_with_a_sound_header_is_skipped_over_its_whole_range() {
        brook_record::decode_batch(&batch(10, 0, true)).expect("unchanged, it decodes");
        let skipped = skip_of(&batch(10, 1, true), 11).expect("skippable");
        assert_eq!((skipped.base_offset, skipped.last_offset), (10, 12));
        assert_eq!(skipped.records(), 3);
        assert_eq!((&*skipped.topic, skipped.partition), ("t", 1));
        assert!(skipped.reason.contains("attributes"), "{}", skipped.reason);
    }

    #[test]
    fn a_batch_whose_crc_fails_is_not_skipped() {
        assert_eq!(skip_of(&batch(10, 1, false), 10), None);
    }

    #[test]
    fn a_batch_entirely_before_the_offset_asked_for_is_not_skipped() {
        assert_eq!(skip_of(&batch(10, 1, true), 13), None);
    }

    #[test]
    fn a_batch_whose_offsets_are_not_dense_is_skipped() {
        let mut bytes = batch(10, 0, true).to_vec();
        // The first record: length, attributes, timestamp delta, then its
        // offset delta, made 2 instead of 0.
        bytes[HEADER_LEN + 3] = 4;
        let crc = crc32fast::hash(&bytes[16..]);
        bytes[12..16].copy_from_slice(&crc.to_le_bytes());
        let bytes = Bytes::from(bytes);
        let error = brook_record::decode_batch(&bytes).expect_err("does not decode");
        assert!(
            matches!(error, BatchError::OffsetDeltaNotPosition { .. }),
            "{error:?}"
        );
        let skipped = skip_of(&bytes, 10).expect("skippable");
        assert_eq!((skipped.base_offset, skipped.last_offset), (10, 12));
    }
}

//! The checks a batch passes before the broker stores it.
//!
//! Checks run in a fixed order and each failure has its own [`BatchError`]
//! variant, so a producer sees the first thing wrong with its batch, named
//! precisely. Two depths:
//!
//! - [`validate_batch`] checks the header, the CRC and, for an uncompressed
//!   batch, that the record length prefixes tile the section into exactly
//!   `record_count` records. It is what recovery runs over a log that is
//!   already stored.
//! - [`validate_produced_batch`] is the broker's acceptance check: on top of
//!   that, every record is walked field by field by the same walk consumers
//!   decode with (`record_walk.rs`), so a batch it accepts decodes. With
//!   [`RecordValidation::Full`] a compressed section is decompressed (under
//!   [`crate::MAX_DECOMPRESSED_BYTES`], into one buffer per thread reused across
//!   batches) and walked the same way; with [`RecordValidation::Framing`] it
//!   stays opaque.
//!
//! Neither allocates per record.

use std::cell::RefCell;
use std::fmt;
use std::str::FromStr;

use crate::compression::{Compression, decompress_into};
use crate::error::BatchError;
use crate::header::{BatchHeader, HEADER_LEN, LENGTH_PREFIX_LEN, MAGIC, compute_crc};
use crate::record::{RecordSpans, count_records};
use crate::record_walk::walk_record;

/// Most records one batch may declare.
pub const MAX_RECORDS_PER_BATCH: u32 = 1_000_000;

/// Largest decompression buffer a thread keeps between batches; a larger
/// batch gets a buffer of its own, freed afterwards, so a few huge batches do
/// not pin their size in every thread that validated one.
const SCRATCH_KEEP_BYTES: usize = 4 * 1024 * 1024;

thread_local! {
    /// Where compressed sections are inflated for validation.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// How much of a produced batch's records the broker checks before storing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum RecordValidation {
    /// Every record is checked exactly as a consumer decodes it; a compressed
    /// section is decompressed for that.
    #[default]
    Full,
    /// Every record of an uncompressed batch is checked as with `Full`; a
    /// compressed section is not decompressed, so its records are not checked
    /// (the CRC still covers its bytes).
    Framing,
}

impl RecordValidation {
    /// Lower-case name, as accepted by [`FromStr`].
    pub fn name(self) -> &'static str {
        match self {
            RecordValidation::Full => "full",
            RecordValidation::Framing => "framing",
        }
    }
}

impl fmt::Display for RecordValidation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A record validation name that is not `full` or `framing`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown record validation {0:?} (expected \"full\" or \"framing\")")]
pub struct ParseRecordValidationError(pub String);

impl FromStr for RecordValidation {
    type Err = ParseRecordValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "full" => Ok(RecordValidation::Full),
            "framing" => Ok(RecordValidation::Framing),
            other => Err(ParseRecordValidationError(other.to_owned())),
        }
    }
}

/// Parses the header and checks that `batch_length` matches the buffer exactly.
pub(crate) fn parse_exact(batch: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(batch)?;
    let follows = batch.len() - LENGTH_PREFIX_LEN; // parse guaranteed len >= HEADER_LEN
    if header.batch_length as usize != follows {
        return Err(BatchError::LengthMismatch {
            declared: header.batch_length,
            actual: follows,
        });
    }
    Ok(header)
}

/// Checks the header fields (magic through timestamps, CRC included) of a batch
/// already known to be exactly `header.total_len()` bytes. Returns the codec.
pub(crate) fn check_header(header: &BatchHeader, batch: &[u8]) -> Result<Compression, BatchError> {
    if header.magic != MAGIC {
        return Err(BatchError::UnsupportedMagic(header.magic));
    }
    let codec = header.compression()?;
    let computed = compute_crc(batch);
    if header.crc != computed {
        return Err(BatchError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    if header.record_count == 0 {
        return Err(BatchError::EmptyBatch);
    }
    if header.record_count > MAX_RECORDS_PER_BATCH {
        return Err(BatchError::TooManyRecords {
            count: header.record_count as usize,
            max: MAX_RECORDS_PER_BATCH,
        });
    }
    if header.last_offset_delta != header.record_count - 1 {
        return Err(BatchError::OffsetDeltaMismatch {
            last_offset_delta: header.last_offset_delta,
            record_count: header.record_count,
        });
    }
    if header.max_timestamp < header.first_timestamp {
        return Err(BatchError::TimestampOrder {
            first_timestamp: header.first_timestamp,
            max_timestamp: header.max_timestamp,
        });
    }
    Ok(codec)
}

/// Checks that a plain records section splits into exactly `record_count` records.
pub(crate) fn check_record_count(header: &BatchHeader, section: &[u8]) -> Result<(), BatchError> {
    let actual = count_records(section)?;
    if actual != header.record_count as usize {
        return Err(BatchError::RecordCountMismatch {
            declared: header.record_count,
            actual,
        });
    }
    Ok(())
}

/// Checks every record of a plain records section field by field, as decoding
/// would, and that there are exactly `record_count` of them.
fn check_records(header: &BatchHeader, section: &[u8]) -> Result<(), BatchError> {
    let mut actual = 0;
    for (index, span) in RecordSpans::new(section).enumerate() {
        walk_record(section, span?, index, &mut ())?;
        actual += 1;
    }
    if actual != header.record_count as usize {
        return Err(BatchError::RecordCountMismatch {
            declared: header.record_count,
            actual,
        });
    }
    Ok(())
}

/// Checks the header and the size limit; returns the header and its codec.
fn check_framing(
    batch: &[u8],
    max_batch_bytes: usize,
) -> Result<(BatchHeader, Compression), BatchError> {
    let header = parse_exact(batch)?;
    if batch.len() > max_batch_bytes {
        return Err(BatchError::TooLarge {
            size: batch.len(),
            max: max_batch_bytes,
        });
    }
    let codec = check_header(&header, batch)?;
    Ok((header, codec))
}

/// The structural check of a batch. Checks, in order, with a distinct
/// [`BatchError`] variant each: at least HEADER_LEN bytes; `12 + batch_length ==
/// batch.len()`; `batch.len() <= max_batch_bytes`; magic; reserved attribute bits and
/// codec; CRC; `1 <= record_count <= MAX_RECORDS_PER_BATCH`; `last_offset_delta ==
/// record_count - 1`; `max_timestamp >= first_timestamp`; and, for an uncompressed
/// batch, that the record length prefixes tile the records section exactly into
/// `record_count` records. Record fields are not read and compressed batches are
/// not decompressed: a batch that passes may still not decode. The broker checks
/// produced batches with [`validate_produced_batch`].
pub fn validate_batch(batch: &[u8], max_batch_bytes: usize) -> Result<BatchHeader, BatchError> {
    let (header, codec) = check_framing(batch, max_batch_bytes)?;
    if codec == Compression::None {
        check_record_count(&header, batch.get(HEADER_LEN..).unwrap_or_default())?;
    }
    Ok(header)
}

/// The broker's acceptance check of a produced batch: the checks of
/// [`validate_batch`], then every record field by field exactly as
/// [`crate::decode_batch`] reads it (reserved attributes, `offset_delta` equal to
/// the record's position, key, value and header lengths within the record, header
/// keys UTF-8, nothing left over in a record), and that there are `record_count`
/// records. A compressed section is decompressed for this under `Full` (a
/// declared size over [`crate::MAX_DECOMPRESSED_BYTES`] is refused before any
/// allocation) and left unread under `Framing`.
pub fn validate_produced_batch(
    batch: &[u8],
    max_batch_bytes: usize,
    validation: RecordValidation,
) -> Result<BatchHeader, BatchError> {
    let (header, codec) = check_framing(batch, max_batch_bytes)?;
    let section = batch.get(HEADER_LEN..).unwrap_or_default();
    match (codec, validation) {
        (Compression::None, _) => check_records(&header, section)?,
        (_, RecordValidation::Framing) => {}
        (_, RecordValidation::Full) => check_compressed_records(&header, codec, section)?,
    }
    Ok(header)
}

fn check_compressed_records(
    header: &BatchHeader,
    codec: Compression,
    section: &[u8],
) -> Result<(), BatchError> {
    SCRATCH.with(|scratch| {
        // Re-entered only if validation ran inside validation, which it never
        // does; a fresh buffer keeps that case correct all the same.
        let mut own = Vec::new();
        let mut borrowed = scratch.try_borrow_mut();
        let buffer = match borrowed.as_deref_mut() {
            Ok(buffer) => buffer,
            Err(_) => &mut own,
        };
        let result =
            decompress_into(codec, section, buffer).and_then(|()| check_records(header, buffer));
        if buffer.capacity() > SCRATCH_KEEP_BYTES {
            *buffer = Vec::new();
        }
        result
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::builder::{BatchOptions, encode_batch};
    use crate::header::{CRC_OFFSET, stamp_base_offset};
    use crate::record::NewRecord;

    const MAX: usize = 1 << 20;

    fn valid(n: usize, codec: Compression) -> Vec<u8> {
        let records: Vec<NewRecord> = (0..n)
            .map(|i| NewRecord {
                timestamp: 1_000 + i as i64,
                value: Some(Bytes::from(vec![b'v'; 10])),
                ..NewRecord::default()
            })
            .collect();
        let options = BatchOptions {
            compression: codec,
            ..BatchOptions::default()
        };
        encode_batch(&records, options).unwrap().to_vec()
    }

    /// Applies `edit` to the header, rewrites it and fixes up the CRC so that only the
    /// edited field is wrong.
    fn with_header(mut batch: Vec<u8>, edit: impl FnOnce(&mut BatchHeader)) -> Vec<u8> {
        let mut h = BatchHeader::parse(&batch).unwrap();
        edit(&mut h);
        batch[..HEADER_LEN].copy_from_slice(&h.to_bytes());
        fix_crc(batch)
    }

    fn fix_crc(mut batch: Vec<u8>) -> Vec<u8> {
        let crc = compute_crc(&batch);
        batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
        batch
    }

    fn err(batch: &[u8]) -> BatchError {
        validate_batch(batch, MAX).unwrap_err()
    }

    #[test]
    fn accepts_valid_batches() {
        for codec in [Compression::None, Compression::Lz4, Compression::Zstd] {
            let mut batch = valid(3, codec);
            let h = validate_batch(&batch, MAX).unwrap();
            assert_eq!(h.record_count, 3);
            // The broker stamps base_offset after validation; the CRC does not cover it.
            stamp_base_offset(&mut batch, 77);
            assert_eq!(validate_batch(&batch, MAX).unwrap().base_offset, 77);
            // Exactly at the limit is fine.
            assert!(validate_batch(&batch, batch.len()).is_ok());
        }
    }

    #[test]
    fn too_short() {
        let batch = valid(1, Compression::None);
        assert_eq!(
            err(&batch[..30]),
            BatchError::TooShort {
                needed: HEADER_LEN,
                actual: 30
            }
        );
    }

    #[test]
    fn length_mismatch() {
        let batch = valid(1, Compression::None);
        let e = err(&batch[..batch.len() - 1]);
        assert!(matches!(e, BatchError::LengthMismatch { .. }));
        let mut longer = batch.clone();
        longer.push(0);
        let e = err(&longer);
        let declared = batch.len() - 12;
        assert_eq!(
            e.to_string(),
            format!(
                "batch_length declares {declared} bytes but {} follow",
                declared + 1
            )
        );
    }

    #[test]
    fn too_large() {
        let batch = valid(1, Compression::None);
        let e = validate_batch(&batch, batch.len() - 1).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "batch is {} bytes, over the limit of {} (max_message_bytes)",
                batch.len(),
                batch.len() - 1
            )
        );
    }

    #[test]
    fn magic_attributes_codec() {
        let b = valid(1, Compression::None);
        assert_eq!(
            err(&with_header(b.clone(), |h| h.magic = 2)),
            BatchError::UnsupportedMagic(2)
        );
        assert_eq!(
            err(&with_header(b.clone(), |h| h.attributes = 0x10)),
            BatchError::ReservedAttributes(0x10)
        );
        assert_eq!(
            err(&with_header(b, |h| h.attributes = 3)),
            BatchError::UnknownCompression(3)
        );
    }

    #[test]
    fn crc_mismatch() {
        let mut b = valid(1, Compression::None);
        let last = b.len() - 1;
        b[last] ^= 0x01;
        let e = err(&b);
        assert!(matches!(e, BatchError::CrcMismatch { .. }));
        assert!(e.to_string().starts_with("crc mismatch: stored 0x"), "{e}");
    }

    #[test]
    fn record_count_limits() {
        let b = valid(1, Compression::None);
        assert_eq!(
            err(&with_header(b.clone(), |h| h.record_count = 0)),
            BatchError::EmptyBatch
        );
        let e = err(&with_header(b, |h| {
            h.record_count = MAX_RECORDS_PER_BATCH + 1;
            h.last_offset_delta = MAX_RECORDS_PER_BATCH;
        }));
        assert_eq!(
            e.to_string(),
            "record_count is 1000001, over the limit of 1000000 (MAX_RECORDS_PER_BATCH)"
        );
    }

    #[test]
    fn offset_delta_mismatch() {
        let b = valid(2, Compression::None);
        assert_eq!(
            err(&with_header(b, |h| h.last_offset_delta = 5)),
            BatchError::OffsetDeltaMismatch {
                last_offset_delta: 5,
                record_count: 2
            }
        );
    }

    #[test]
    fn timestamp_order() {
        let b = valid(1, Compression::None);
        assert_eq!(
            err(&with_header(b, |h| h.max_timestamp = h.first_timestamp - 1)),
            BatchError::TimestampOrder {
                first_timestamp: 1_000,
                max_timestamp: 999
            }
        );
    }

    #[test]
    fn record_count_mismatch() {
        let b = valid(4, Compression::None);
        let e = err(&with_header(b, |h| {
            h.record_count = 5;
            h.last_offset_delta = 4;
        }));
        assert_eq!(
            e.to_string(),
            "record_count is 5 but the records section holds 4 records"
        );
        // The structural check leaves compressed sections unread: the same
        // lie passes it, and the produce check under `Framing`, but not `Full`.
        let lie = with_header(valid(4, Compression::Zstd), |h| {
            h.record_count = 5;
            h.last_offset_delta = 4;
        });
        assert!(validate_batch(&lie, MAX).is_ok());
        assert!(validate_produced_batch(&lie, MAX, RecordValidation::Framing).is_ok());
        assert_eq!(
            validate_produced_batch(&lie, MAX, RecordValidation::Full),
            Err(BatchError::RecordCountMismatch {
                declared: 5,
                actual: 4
            })
        );
    }

    #[test]
    fn malformed_length_prefix() {
        let mut b = valid(2, Compression::None);
        // Make the first record's length run past the section.
        b[HEADER_LEN] = 0x7f;
        let e = err(&fix_crc(b));
        assert!(
            matches!(
                e,
                BatchError::MalformedRecord {
                    index: 0,
                    field: "length",
                    ..
                }
            ),
            "{e}"
        );
    }
}

//! The broker's acceptance check for a produced batch.
//!
//! Checks run in a fixed order and each failure has its own [`BatchError`] variant,
//! so a producer sees the first thing wrong with its batch, named precisely. The check
//! is cheap: it never decompresses and never decodes record fields. For an uncompressed
//! batch it walks the record length prefixes, which is enough to guarantee that
//! consumers can split the section into exactly `record_count` records; a compressed
//! section is opaque to the broker and protected end to end by the CRC.

use crate::compression::Compression;
use crate::error::BatchError;
use crate::header::{BatchHeader, HEADER_LEN, LENGTH_PREFIX_LEN, MAGIC, compute_crc};
use crate::record::count_records;

/// Most records one batch may declare.
pub const MAX_RECORDS_PER_BATCH: u32 = 1_000_000;

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

/// The broker's check of a produced batch. Checks, in order, with a distinct
/// [`BatchError`] variant each: at least HEADER_LEN bytes; `12 + batch_length ==
/// batch.len()`; `batch.len() <= max_batch_bytes`; magic; reserved attribute bits and
/// codec; CRC; `1 <= record_count <= MAX_RECORDS_PER_BATCH`; `last_offset_delta ==
/// record_count - 1`; `max_timestamp >= first_timestamp`; and, for an uncompressed
/// batch, that the record length prefixes tile the records section exactly into
/// `record_count` records. Compressed batches are not decompressed here.
pub fn validate_batch(batch: &[u8], max_batch_bytes: usize) -> Result<BatchHeader, BatchError> {
    let header = parse_exact(batch)?;
    if batch.len() > max_batch_bytes {
        return Err(BatchError::TooLarge {
            size: batch.len(),
            max: max_batch_bytes,
        });
    }
    let codec = check_header(&header, batch)?;
    if codec == Compression::None {
        check_record_count(&header, batch.get(HEADER_LEN..).unwrap_or_default())?;
    }
    Ok(header)
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
        // Compressed sections are opaque to validation: the same lie passes.
        let b = valid(4, Compression::Zstd);
        assert!(
            validate_batch(
                &with_header(b, |h| {
                    h.record_count = 5;
                    h.last_offset_delta = 4;
                }),
                MAX
            )
            .is_ok()
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

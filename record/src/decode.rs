//! Reading batches back: full decode of one batch, and splitting a buffer of
//! concatenated batches (what the broker serves on fetch).
//!
//! Invariants: every byte is treated as hostile. Decoding runs the same header checks
//! as validation (minus the size limit, which is the broker's policy), then
//! decompresses under [`crate::MAX_DECOMPRESSED_BYTES`] and decodes every record
//! strictly. Nothing here panics on any input, and no allocation is sized from an
//! untrusted count without bounding it by the bytes actually present.

use std::iter::FusedIterator;

use bytes::Bytes;

use crate::compression::decompress;
use crate::error::BatchError;
use crate::header::{BatchHeader, HEADER_LEN, LENGTH_PREFIX_LEN, batch_total_len};
use crate::record::{MIN_RECORD_BODY_LEN, Record, RecordSpans};
use crate::record_decode::{RecordContext, decode_record};
use crate::record_walk::walk_record;
use crate::validate::{check_header, check_record_count, parse_exact};

/// Full decode of one batch: verifies CRC and structure, decompresses, returns header
/// and records with absolute offsets. Zero-copy for uncompressed batches (key/value
/// are slices of the input Bytes).
pub fn decode_batch(batch: &Bytes) -> Result<(BatchHeader, Vec<Record>), BatchError> {
    let (header, section) = open_batch(batch)?;
    let ctx = RecordContext::of(&header);
    // record_count is now known to match the section, and every record is at least
    // 1 + MIN_RECORD_BODY_LEN bytes; bound the preallocation by both anyway.
    let cap = (header.record_count as usize).min(section.len() / (1 + MIN_RECORD_BODY_LEN));
    let mut records = Vec::with_capacity(cap);
    for (index, span) in RecordSpans::new(&section).enumerate() {
        records.push(decode_record(&section, span?, index, ctx)?);
    }
    Ok((header, records))
}

/// Checks one batch exactly as [`decode_batch`] does (CRC, structure, every
/// record field by field), without building its records: a consumer that
/// hands records out one at a time decodes each when it is asked for
/// ([`CheckedBatch::records`]), so no vector of records is built, and the
/// check can run on one task while another hands out the records.
pub fn check_batch(batch: &Bytes) -> Result<CheckedBatch, BatchError> {
    let (header, section) = open_batch(batch)?;
    for (index, span) in RecordSpans::new(&section).enumerate() {
        walk_record(&section, span?, index, &mut ())?;
    }
    Ok(CheckedBatch { header, section })
}

/// A batch [`check_batch`] passed: its header and its records section
/// (decompressed).
#[derive(Debug, Clone)]
pub struct CheckedBatch {
    header: BatchHeader,
    section: Bytes,
}

impl CheckedBatch {
    /// The batch's header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The offset of the batch's last record.
    pub fn last_offset(&self) -> i64 {
        // open_batch checked that this does not overflow.
        self.header.base_offset + i64::from(self.header.last_offset_delta)
    }

    /// Bytes of its records, decompressed: what decoding them all holds.
    pub fn records_bytes(&self) -> usize {
        self.section.len()
    }

    /// Its records, decoded one at a time, in offset order.
    pub fn records(self) -> CheckedRecords {
        CheckedRecords {
            ctx: RecordContext::of(&self.header),
            section: self.section,
            position: 0,
            index: 0,
        }
    }
}

/// The records of a [`CheckedBatch`], decoded as they are taken.
#[derive(Debug, Clone)]
pub struct CheckedRecords {
    ctx: RecordContext,
    section: Bytes,
    /// Where the next record's length prefix starts in `section`.
    position: usize,
    index: usize,
}

impl CheckedRecords {
    /// Skips the records below `offset` without decoding them.
    pub fn skip_below(&mut self, offset: i64) {
        let mut spans = RecordSpans::starting_at(&self.section, self.position, self.index);
        while self.next_offset() < offset {
            // Nothing to skip to (a changed section would fail here).
            let Some(Ok(span)) = spans.next() else {
                self.position = self.section.len();
                return;
            };
            self.position = span.end;
            self.index += 1;
        }
    }

    /// The offset of the record `next` gives.
    fn next_offset(&self) -> i64 {
        let index = i64::try_from(self.index).unwrap_or(i64::MAX);
        self.ctx.base_offset.saturating_add(index)
    }
}

impl Iterator for CheckedRecords {
    /// Always `Ok` for a batch [`check_batch`] passed; an error (which would
    /// mean the section changed since) ends the records.
    type Item = Result<Record, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut spans = RecordSpans::starting_at(&self.section, self.position, self.index);
        let decoded = match spans.next()? {
            Ok(span) => {
                self.position = span.end;
                decode_record(&self.section, span, self.index, self.ctx)
            }
            Err(error) => Err(error),
        };
        self.index += 1;
        if decoded.is_err() {
            self.position = self.section.len();
        }
        Some(decoded)
    }
}

impl FusedIterator for CheckedRecords {}

/// The checks every decoding runs before the records: header, CRC, offsets
/// within an i64, record count; gives the header and the records section,
/// decompressed.
fn open_batch(batch: &Bytes) -> Result<(BatchHeader, Bytes), BatchError> {
    let header = parse_exact(batch)?;
    let codec = check_header(&header, batch)?;
    if header
        .base_offset
        .checked_add(i64::from(header.last_offset_delta))
        .is_none()
    {
        return Err(BatchError::OffsetOverflow {
            base_offset: header.base_offset,
            last_offset_delta: header.last_offset_delta,
        });
    }
    // parse_exact guaranteed batch.len() >= HEADER_LEN, so this slice is in range.
    let section = decompress(codec, &batch.slice(HEADER_LEN..))?;
    check_record_count(&header, &section)?;
    Ok((header, section))
}

/// Splits a buffer of concatenated whole batches (what the broker serves) into
/// batches, each a Bytes slice (no copy). Yields an error for a trailing partial batch
/// or a bad prefix, then stops; never panics. Batches are only framed here, not
/// checked: pass each to [`decode_batch`].
pub fn split_batches(buf: Bytes) -> BatchIter {
    BatchIter { rest: buf }
}

/// Iterator returned by [`split_batches`].
#[derive(Debug, Clone)]
pub struct BatchIter {
    rest: Bytes,
}

impl BatchIter {
    /// Bytes not yet yielded (empty after an error).
    pub fn remaining(&self) -> &Bytes {
        &self.rest
    }

    fn frame(&mut self) -> Result<Bytes, BatchError> {
        let available = self.rest.len();
        let Some(total) = batch_total_len(&self.rest) else {
            return Err(BatchError::TooShort {
                needed: LENGTH_PREFIX_LEN,
                actual: available,
            });
        };
        if total < HEADER_LEN {
            return Err(BatchError::BatchLengthTooSmall {
                batch_length: (total - LENGTH_PREFIX_LEN) as u32,
                min: (HEADER_LEN - LENGTH_PREFIX_LEN) as u32,
            });
        }
        if total > available {
            return Err(BatchError::LengthMismatch {
                declared: (total - LENGTH_PREFIX_LEN) as u32,
                actual: available - LENGTH_PREFIX_LEN,
            });
        }
        Ok(self.rest.split_to(total))
    }
}

impl Iterator for BatchIter {
    type Item = Result<Bytes, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let item = self.frame();
        if item.is_err() {
            // Framing is lost after a bad prefix; nothing after it can be trusted.
            self.rest.clear();
        }
        Some(item)
    }
}

impl FusedIterator for BatchIter {}

/// Decodes all records in concatenated batches, in order.
pub fn decode_batches(buf: &Bytes) -> Result<Vec<Record>, BatchError> {
    let mut records = Vec::new();
    for batch in split_batches(buf.clone()) {
        let (_, mut batch_records) = decode_batch(&batch?)?;
        records.append(&mut batch_records);
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::{BatchOptions, encode_batch};
    use crate::compression::Compression;
    use crate::header::{CRC_OFFSET, compute_crc, stamp_base_offset};
    use crate::record::{Header, NewRecord};

    fn records() -> Vec<NewRecord> {
        vec![
            NewRecord {
                timestamp: 2_000,
                key: Some(Bytes::from_static(b"user-1")),
                value: Some(Bytes::from_static(b"hello")),
                headers: vec![Header {
                    key: "h".into(),
                    value: Bytes::from_static(b"v"),
                }],
            },
            NewRecord {
                timestamp: 1_990,
                key: None,
                value: None,
                headers: vec![],
            },
        ]
    }

    fn batch(codec: Compression, base: i64) -> Bytes {
        let options = BatchOptions {
            compression: codec,
            ..BatchOptions::default()
        };
        let mut b = encode_batch(&records(), options).unwrap().to_vec();
        stamp_base_offset(&mut b, base);
        Bytes::from(b)
    }

    #[test]
    fn decodes_each_codec() {
        for codec in [Compression::None, Compression::Lz4, Compression::Zstd] {
            let (h, got) = decode_batch(&batch(codec, 10)).unwrap();
            assert_eq!(h.record_count, 2);
            assert_eq!(got.len(), 2);
            for (i, (r, want)) in got.iter().zip(records()).enumerate() {
                assert_eq!(r.offset, 10 + i as i64);
                assert_eq!(r.timestamp, want.timestamp);
                assert_eq!(r.key, want.key);
                assert_eq!(r.value, want.value);
                assert_eq!(r.headers, want.headers);
            }
        }
    }

    #[test]
    fn rejects_offset_overflow() {
        let e = decode_batch(&batch(Compression::None, i64::MAX)).unwrap_err();
        assert!(matches!(e, BatchError::OffsetOverflow { .. }), "{e}");
    }

    #[test]
    fn rejects_compressed_count_lie() {
        let mut b = batch(Compression::Lz4, 0).to_vec();
        let mut h = BatchHeader::parse(&b).unwrap();
        h.record_count = 3;
        h.last_offset_delta = 2;
        b[..HEADER_LEN].copy_from_slice(&h.to_bytes());
        let crc = compute_crc(&b);
        b[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode_batch(&Bytes::from(b)).unwrap_err(),
            BatchError::RecordCountMismatch {
                declared: 3,
                actual: 2
            }
        );
    }

    #[test]
    fn splits_and_decodes_concatenation() {
        let mut buf = batch(Compression::None, 0).to_vec();
        buf.extend_from_slice(&batch(Compression::Zstd, 2));
        let buf = Bytes::from(buf);
        let parts: Vec<_> = split_batches(buf.clone())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(parts.len(), 2);
        let offsets: Vec<i64> = decode_batches(&buf)
            .unwrap()
            .iter()
            .map(|r| r.offset)
            .collect();
        assert_eq!(offsets, [0, 1, 2, 3]);
        assert!(decode_batches(&Bytes::new()).unwrap().is_empty());
    }

    #[test]
    fn split_reports_partial_and_bad_prefixes() {
        let one = batch(Compression::None, 0);
        let mut buf = one.to_vec();
        buf.extend_from_slice(&one[..20]);
        let mut it = split_batches(Bytes::from(buf));
        assert!(it.next().unwrap().is_ok());
        let e = it.next().unwrap().unwrap_err();
        assert_eq!(
            e,
            BatchError::LengthMismatch {
                declared: one.len() as u32 - 12,
                actual: 8
            }
        );
        assert!(it.next().is_none());

        let e = split_batches(Bytes::from_static(&[0; 5]))
            .next()
            .unwrap()
            .unwrap_err();
        assert_eq!(
            e,
            BatchError::TooShort {
                needed: 12,
                actual: 5
            }
        );

        let mut tiny = [0u8; 12];
        tiny[8] = 3;
        let e = split_batches(Bytes::copy_from_slice(&tiny))
            .next()
            .unwrap()
            .unwrap_err();
        assert!(matches!(
            e,
            BatchError::BatchLengthTooSmall {
                batch_length: 3,
                min: 45
            }
        ));
    }
}

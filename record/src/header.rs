//! The fixed 57-byte batch header and the 12-byte length prefix.
//!
//! Layout (all little-endian): base_offset i64 | batch_length u32 | crc u32 | magic u8 |
//! attributes u16 | last_offset_delta u32 | first_timestamp i64 | max_timestamp i64 |
//! producer_id i64 | producer_epoch i16 | base_sequence i32 | record_count u32.
//!
//! The CRC covers bytes `[16, end)`: everything after itself except the prefix. So the
//! broker can stamp `base_offset` without touching the CRC, and `batch_length` is
//! checked against the actual size instead of being trusted.
//!
//! Parsing here only reads fields; deciding whether they are acceptable is
//! `validate.rs`'s job.

use crate::compression::Compression;
use crate::error::BatchError;

/// Size of the fixed batch header; the records section starts here.
pub const HEADER_LEN: usize = 57;
/// base_offset + batch_length: enough bytes to know a batch's size.
pub const LENGTH_PREFIX_LEN: usize = 12;
/// The only format version this crate reads and writes.
pub const MAGIC: u8 = 1;

/// Byte offset of the crc field (tests patch CRCs of crafted batches here).
#[cfg(test)]
pub(crate) const CRC_OFFSET: usize = 12;
/// First byte covered by the crc (just after the crc field).
pub(crate) const CRC_START: usize = 16;
/// Bits 0-2 of attributes hold the codec; everything else is reserved.
pub(crate) const CODEC_MASK: u16 = 0b111;

/// The decoded fixed header of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: u32,
    pub crc: u32,
    pub magic: u8,
    pub attributes: u16,
    pub last_offset_delta: u32,
    pub first_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: u32,
}

/// Splits fixed-size fields off the front of a slice without any panicking index.
struct FieldReader<'a>(&'a [u8]);

impl FieldReader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], BatchError> {
        // Only fails if the caller's length check was wrong; report it rather than panic.
        let (field, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(BatchError::TooShort {
                needed: HEADER_LEN,
                actual: self.0.len(),
            })?;
        self.0 = rest;
        Ok(*field)
    }
}

impl BatchHeader {
    /// Reads the fixed header from the first HEADER_LEN bytes; checks only that enough
    /// bytes are there. Field values are not checked (see [`crate::validate_batch`]).
    pub fn parse(buf: &[u8]) -> Result<Self, BatchError> {
        if buf.len() < HEADER_LEN {
            return Err(BatchError::TooShort {
                needed: HEADER_LEN,
                actual: buf.len(),
            });
        }
        let mut r = FieldReader(buf);
        Ok(BatchHeader {
            base_offset: i64::from_le_bytes(r.take()?),
            batch_length: u32::from_le_bytes(r.take()?),
            crc: u32::from_le_bytes(r.take()?),
            magic: u8::from_le_bytes(r.take()?),
            attributes: u16::from_le_bytes(r.take()?),
            last_offset_delta: u32::from_le_bytes(r.take()?),
            first_timestamp: i64::from_le_bytes(r.take()?),
            max_timestamp: i64::from_le_bytes(r.take()?),
            producer_id: i64::from_le_bytes(r.take()?),
            producer_epoch: i16::from_le_bytes(r.take()?),
            base_sequence: i32::from_le_bytes(r.take()?),
            record_count: u32::from_le_bytes(r.take()?),
        })
    }

    /// The header as its 57 wire bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let fields: [&[u8]; 12] = [
            &self.base_offset.to_le_bytes(),
            &self.batch_length.to_le_bytes(),
            &self.crc.to_le_bytes(),
            &self.magic.to_le_bytes(),
            &self.attributes.to_le_bytes(),
            &self.last_offset_delta.to_le_bytes(),
            &self.first_timestamp.to_le_bytes(),
            &self.max_timestamp.to_le_bytes(),
            &self.producer_id.to_le_bytes(),
            &self.producer_epoch.to_le_bytes(),
            &self.base_sequence.to_le_bytes(),
            &self.record_count.to_le_bytes(),
        ];
        let mut out = [0u8; HEADER_LEN];
        for (slot, byte) in out.iter_mut().zip(fields.iter().flat_map(|f| f.iter())) {
            *slot = *byte;
        }
        out
    }

    /// Total size of the batch: the 12-byte prefix plus `batch_length`.
    pub fn total_len(&self) -> usize {
        LENGTH_PREFIX_LEN.saturating_add(self.batch_length as usize)
    }

    /// Offset of the batch's last record. Saturates rather than overflowing for a
    /// nonsensical header; [`crate::decode_batch`] rejects such batches outright.
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(i64::from(self.last_offset_delta))
    }

    /// The codec named by the attributes. Fails if reserved attribute bits are set or
    /// the codec id is unknown.
    pub fn compression(&self) -> Result<Compression, BatchError> {
        if self.attributes & !CODEC_MASK != 0 {
            return Err(BatchError::ReservedAttributes(self.attributes));
        }
        Compression::from_id((self.attributes & CODEC_MASK) as u8)
    }
}

/// Total size of the batch starting at `buf` from its 12-byte prefix (None if fewer
/// than 12 bytes).
pub fn batch_total_len(buf: &[u8]) -> Option<usize> {
    let (_, rest) = buf.split_first_chunk::<8>()?;
    let (len, _) = rest.split_first_chunk::<4>()?;
    usize::try_from(u32::from_le_bytes(*len))
        .ok()?
        .checked_add(LENGTH_PREFIX_LEN)
}

/// Base offset of the batch starting at buf (None if < 8 bytes).
pub fn read_base_offset(buf: &[u8]) -> Option<i64> {
    buf.first_chunk::<8>().map(|b| i64::from_le_bytes(*b))
}

/// Encodes a base offset as the 8 bytes that go first in a batch (the broker writes
/// these with writev instead of copying the batch).
pub fn encode_base_offset(base_offset: i64) -> [u8; 8] {
    base_offset.to_le_bytes()
}

/// Overwrites the base offset of the batch in place. The CRC does not cover it, so
/// the batch stays valid.
///
/// # Panics
/// If `batch` is shorter than 8 bytes: callers only stamp batches they validated.
pub fn stamp_base_offset(batch: &mut [u8], base_offset: i64) {
    let len = batch.len();
    let Some(head) = batch.first_chunk_mut::<8>() else {
        panic!("stamp_base_offset: batch is {len} bytes, shorter than the 8-byte base_offset");
    };
    *head = encode_base_offset(base_offset);
}

/// Rewrites the idempotence fields of an encoded batch (producer id, epoch,
/// base sequence) and recomputes its CRC, which covers them. A producer
/// stamps a batch this way when it first sends it, so the sequence follows
/// send order rather than build order.
///
/// # Errors
/// [`BatchError::TooShort`] if `batch` is shorter than a header.
pub fn stamp_producer(
    batch: &mut [u8],
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) -> Result<(), BatchError> {
    let mut header = BatchHeader::parse(batch)?;
    header.producer_id = producer_id;
    header.producer_epoch = producer_epoch;
    header.base_sequence = base_sequence;
    batch[..HEADER_LEN].copy_from_slice(&header.to_bytes());
    header.crc = compute_crc(batch);
    batch[..HEADER_LEN].copy_from_slice(&header.to_bytes());
    Ok(())
}

/// CRC-32 (IEEE) of everything after the crc field; an empty-range CRC if the buffer
/// is shorter than that.
pub(crate) fn compute_crc(batch: &[u8]) -> u32 {
    crc32fast::hash(batch.get(CRC_START..).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamping_the_producer_matches_building_with_it() {
        use crate::{BatchOptions, NewRecord, encode_batch, validate_batch};
        let records = vec![NewRecord::default(); 3];
        let plain = encode_batch(&records, BatchOptions::default()).unwrap();
        let built = encode_batch(
            &records,
            BatchOptions {
                producer_id: 9,
                producer_epoch: 2,
                base_sequence: 40,
                ..BatchOptions::default()
            },
        )
        .unwrap();
        let mut stamped = plain.to_vec();
        stamp_producer(&mut stamped, 9, 2, 40).unwrap();
        assert_eq!(stamped, built.to_vec());
        assert!(validate_batch(&stamped, usize::MAX).is_ok());
        assert!(stamp_producer(&mut [0u8; 10], 1, 1, 1).is_err());
    }

    fn sample() -> BatchHeader {
        BatchHeader {
            base_offset: 0x0102_0304_0506_0708,
            batch_length: 45,
            crc: 0xdead_beef,
            magic: MAGIC,
            attributes: 2,
            last_offset_delta: 4,
            first_timestamp: -5,
            max_timestamp: 1_700_000_000_000,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            record_count: 5,
        }
    }

    #[test]
    fn to_bytes_parse_round_trip() {
        let h = sample();
        let bytes = h.to_bytes();
        assert_eq!(BatchHeader::parse(&bytes), Ok(h));
        assert_eq!(bytes[..8], 0x0102_0304_0506_0708i64.to_le_bytes());
        assert_eq!(bytes[12..16], 0xdead_beefu32.to_le_bytes());
        assert_eq!(bytes[16], MAGIC);
        assert_eq!(bytes[53..57], 5u32.to_le_bytes());
    }

    #[test]
    fn field_offsets_match_spec() {
        let b = sample().to_bytes();
        let at = |o: usize, n: usize| b[o..o + n].to_vec();
        assert_eq!(at(8, 4), 45u32.to_le_bytes());
        assert_eq!(at(17, 2), 2u16.to_le_bytes());
        assert_eq!(at(19, 4), 4u32.to_le_bytes());
        assert_eq!(at(23, 8), (-5i64).to_le_bytes());
        assert_eq!(at(31, 8), 1_700_000_000_000i64.to_le_bytes());
        assert_eq!(at(39, 8), (-1i64).to_le_bytes());
        assert_eq!(at(47, 2), (-1i16).to_le_bytes());
        assert_eq!(at(49, 4), (-1i32).to_le_bytes());
    }

    #[test]
    fn parse_needs_full_header() {
        let bytes = sample().to_bytes();
        assert_eq!(
            BatchHeader::parse(&bytes[..56]),
            Err(BatchError::TooShort {
                needed: 57,
                actual: 56
            })
        );
        assert!(BatchHeader::parse(&[]).is_err());
    }

    #[test]
    fn derived_values() {
        let h = sample();
        assert_eq!(h.total_len(), 57);
        assert_eq!(h.last_offset(), 0x0102_0304_0506_0708 + 4);
        assert_eq!(h.compression(), Ok(Compression::Zstd));
        let reserved = BatchHeader {
            attributes: 0x0009,
            ..h
        };
        assert_eq!(
            reserved.compression(),
            Err(BatchError::ReservedAttributes(9))
        );
        let unknown = BatchHeader { attributes: 5, ..h };
        assert_eq!(
            unknown.compression(),
            Err(BatchError::UnknownCompression(5))
        );
        let huge = BatchHeader {
            base_offset: i64::MAX,
            ..h
        };
        assert_eq!(huge.last_offset(), i64::MAX);
    }

    #[test]
    fn prefix_helpers() {
        let bytes = sample().to_bytes();
        assert_eq!(batch_total_len(&bytes), Some(57));
        assert_eq!(batch_total_len(&bytes[..11]), None);
        assert_eq!(read_base_offset(&bytes), Some(0x0102_0304_0506_0708));
        assert_eq!(read_base_offset(&bytes[..7]), None);
        let mut buf = bytes.to_vec();
        stamp_base_offset(&mut buf, 42);
        assert_eq!(read_base_offset(&buf), Some(42));
        assert_eq!(buf[..8], encode_base_offset(42));
        assert_eq!(buf[8..], bytes[8..]);
    }

    #[test]
    #[should_panic(expected = "shorter than the 8-byte base_offset")]
    fn stamp_short_buffer_panics() {
        stamp_base_offset(&mut [0u8; 7], 1);
    }
}

//! Per-record codec: the variable-length records inside a (decompressed) records section.
//!
//! ```text
//! length uvarint | attributes u8 | timestamp_delta varint | offset_delta uvarint |
//! key_length varint | key | value_length varint | value | header_count uvarint |
//! { key_length uvarint | key (UTF-8) | value_length uvarint | value }*
//! ```
//! `length` counts the bytes after itself, so a reader can step over a record without
//! parsing it. This module holds the record types, the encoder and the length-prefix
//! walker (which guarantees every yielded span lies inside the section and is at least
//! [`MIN_RECORD_BODY_LEN`] bytes); field decoding lives in `record_decode.rs`.

use std::ops::Range;

use bytes::Bytes;

use crate::error::BatchError;
use crate::varint::{put_uvarint, put_varint, read_uvarint};

/// Smallest possible record body: six fields of at least one byte each
/// (attributes, timestamp_delta, offset_delta, key_length, value_length, header_count).
pub const MIN_RECORD_BODY_LEN: usize = 6;

/// A record header: a UTF-8 key and opaque value bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub key: String,
    pub value: Bytes,
}

/// A record to be produced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewRecord {
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    pub key: Option<Bytes>,
    /// `None` is a tombstone (null value), distinct from an empty value.
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

/// A record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Absolute offset: the batch's base_offset plus the record's offset_delta.
    pub offset: i64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

/// Appends one record (length prefix included) to `out`. `body` is scratch space
/// reused across calls so the length can be written before the body.
pub(crate) fn encode_record(
    out: &mut Vec<u8>,
    body: &mut Vec<u8>,
    record: &NewRecord,
    timestamp_delta: i64,
    offset_delta: u64,
) {
    body.clear();
    body.push(0); // attributes: reserved
    put_varint(body, timestamp_delta);
    put_uvarint(body, offset_delta);
    put_nullable(body, record.key.as_deref());
    put_nullable(body, record.value.as_deref());
    put_uvarint(body, record.headers.len() as u64);
    for header in &record.headers {
        put_uvarint(body, header.key.len() as u64);
        body.extend_from_slice(header.key.as_bytes());
        put_uvarint(body, header.value.len() as u64);
        body.extend_from_slice(&header.value);
    }
    put_uvarint(out, body.len() as u64);
    out.extend_from_slice(body);
}

fn put_nullable(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
}

pub(crate) fn malformed(index: usize, field: &'static str, reason: &'static str) -> BatchError {
    BatchError::MalformedRecord {
        index,
        field,
        reason,
    }
}

/// Walks a records section by length prefix only, yielding each record body's byte
/// range. Stops after the first error.
pub(crate) struct RecordSpans<'a> {
    section: &'a [u8],
    pos: usize,
    index: usize,
    failed: bool,
}

impl<'a> RecordSpans<'a> {
    pub(crate) fn new(section: &'a [u8]) -> Self {
        Self::starting_at(section, 0, 0)
    }

    /// The spans from the record `index`, whose length prefix is at `pos`.
    pub(crate) fn starting_at(section: &'a [u8], pos: usize, index: usize) -> Self {
        RecordSpans {
            section,
            pos,
            index,
            failed: false,
        }
    }

    fn step(&mut self) -> Result<Range<usize>, BatchError> {
        let index = self.index;
        let len = read_uvarint(self.section, &mut self.pos)
            .map_err(|e| malformed(index, "length", e.reason()))?;
        let remaining = self.section.len().saturating_sub(self.pos);
        if len > remaining as u64 {
            return Err(malformed(
                index,
                "length",
                "runs past the end of the records section",
            ));
        }
        let len = len as usize;
        if len < MIN_RECORD_BODY_LEN {
            return Err(malformed(
                index,
                "length",
                "is below the 6-byte minimum record size",
            ));
        }
        let start = self.pos;
        self.pos += len;
        self.index += 1;
        Ok(start..self.pos)
    }
}

impl Iterator for RecordSpans<'_> {
    type Item = Result<Range<usize>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.section.len() {
            return None;
        }
        let item = self.step();
        self.failed = item.is_err();
        Some(item)
    }
}

/// Counts the records in a section without decoding them.
pub(crate) fn count_records(section: &[u8]) -> Result<usize, BatchError> {
    let mut count = 0;
    for span in RecordSpans::new(section) {
        span?;
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(record: &NewRecord) -> Vec<u8> {
        let mut out = Vec::new();
        encode_record(&mut out, &mut Vec::new(), record, 0, 0);
        out
    }

    #[test]
    fn minimal_record_bytes() {
        // length 6 | attrs 0 | ts 0 | offset 0 | key -1 | value -1 | 0 headers
        assert_eq!(encoded(&NewRecord::default()), [6, 0, 0, 0, 1, 1, 0]);
    }

    #[test]
    fn record_with_fields_bytes() {
        let rec = NewRecord {
            timestamp: 0,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::new()),
            headers: vec![Header {
                key: "h".into(),
                value: Bytes::from_static(b"v"),
            }],
        };
        assert_eq!(
            encoded(&rec),
            [11, 0, 0, 0, 2, b'k', 0, 1, 1, b'h', 1, b'v']
        );
    }

    #[test]
    fn spans_reject_bad_lengths() {
        let err = count_records(&[0x80]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "record 0 is malformed: length is a truncated varint"
        );
        let err = count_records(&[7, 0, 0, 0, 1, 1, 0]).unwrap_err();
        assert!(
            err.to_string()
                .contains("runs past the end of the records section")
        );
        let err = count_records(&[2, 0, 0]).unwrap_err();
        assert!(err.to_string().contains("6-byte minimum"));
        assert_eq!(
            count_records(&[6, 0, 0, 0, 1, 1, 0, 6, 0, 0, 2, 1, 1, 0]),
            Ok(2)
        );
        assert_eq!(count_records(&[]), Ok(0));
    }
}

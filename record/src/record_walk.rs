//! The one walk over a record's fields, shared by the broker's check of a
//! produced batch and by consumers' decoding, so the two can never disagree on
//! which records are well formed.
//!
//! The walk reads a record body that the length-prefix walker in `record.rs`
//! already delimited and yields positions, not values: it allocates nothing, so
//! validation costs a pass over the bytes. Decoding builds a [`crate::Record`]
//! from what it yields (`record_decode.rs`).
//!
//! Invariants enforced: reserved attributes are zero; every varint is well formed
//! and ends inside its record; `offset_delta` equals the record's position
//! (offsets are dense); `key_length` and `value_length` are -1 or a length within
//! the record; header keys are UTF-8 and every header length stays within the
//! record; the fields consume the record's `length` exactly. Never panics.

use std::ops::Range;

use crate::error::BatchError;
use crate::record::malformed;
use crate::varint::{VarintError, read_uvarint, read_varint};

/// Where a record's fields lie, as positions in the section the walk read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecordFields {
    pub timestamp_delta: i64,
    pub offset_delta: u64,
    /// `None` for a record without a key (`key_length` -1).
    pub key: Option<Range<usize>>,
    /// `None` for a null value, a tombstone (`value_length` -1).
    pub value: Option<Range<usize>>,
}

/// What a caller does with a record's headers as the walk meets them.
pub(crate) trait HeaderVisitor {
    /// Called once, before the headers, with their declared count and an upper
    /// bound on how many can fit in what is left of the record (each takes at
    /// least two bytes), to size storage without trusting the count.
    fn header_count(&mut self, declared: u64, fit_max: usize);

    /// Called for each header, in order; `key` is already checked to be UTF-8.
    fn header(&mut self, key: &str, value: Range<usize>);
}

/// Validation keeps nothing of the headers.
impl HeaderVisitor for () {
    fn header_count(&mut self, _declared: u64, _fit_max: usize) {}

    fn header(&mut self, _key: &str, _value: Range<usize>) {}
}

/// Walks the record `index` of a section whose body occupies `body`, checking
/// every field; `headers` sees each header.
pub(crate) fn walk_record(
    section: &[u8],
    body: Range<usize>,
    index: usize,
    headers: &mut impl HeaderVisitor,
) -> Result<RecordFields, BatchError> {
    let end = body.end.min(section.len());
    let mut r = BodyReader {
        body: section.get(..end).unwrap_or_default(),
        pos: body.start,
        index,
    };
    if r.u8("attributes")? != 0 {
        return Err(malformed(index, "attributes", "has reserved bits set"));
    }
    let timestamp_delta = r.varint("timestamp_delta")?;
    let offset_delta = r.uvarint("offset_delta")?;
    if offset_delta != index as u64 {
        return Err(BatchError::OffsetDeltaNotPosition {
            index,
            offset_delta,
        });
    }
    let key = r.nullable("key_length", "key")?;
    let value = r.nullable("value_length", "value")?;
    let header_count = r.uvarint("header_count")?;
    headers.header_count(header_count, r.remaining() / 2);
    for _ in 0..header_count {
        let key_len = r.uvarint("header key_length")?;
        let key_range = r.take(key_len, "header key")?;
        let key = std::str::from_utf8(r.body.get(key_range).unwrap_or_default())
            .map_err(|_| malformed(index, "header key", "is not valid UTF-8"))?;
        let value_len = r.uvarint("header value_length")?;
        let value = r.take(value_len, "header value")?;
        headers.header(key, value);
    }
    if r.remaining() != 0 {
        return Err(malformed(
            index,
            "length",
            "covers bytes after the last header",
        ));
    }
    Ok(RecordFields {
        timestamp_delta,
        offset_delta,
        key,
        value,
    })
}

/// Field reader over one record body. `body` ends where the record ends and
/// positions are absolute in the section, so ranges slice the section directly.
struct BodyReader<'a> {
    body: &'a [u8],
    pos: usize,
    index: usize,
}

impl BodyReader<'_> {
    fn remaining(&self) -> usize {
        self.body.len().saturating_sub(self.pos)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, BatchError> {
        let byte = *self
            .body
            .get(self.pos)
            .ok_or_else(|| malformed(self.index, field, "runs past the end of the record"))?;
        self.pos += 1;
        Ok(byte)
    }

    fn uvarint(&mut self, field: &'static str) -> Result<u64, BatchError> {
        read_uvarint(self.body, &mut self.pos).map_err(|e| self.varint_err(field, e))
    }

    fn varint(&mut self, field: &'static str) -> Result<i64, BatchError> {
        read_varint(self.body, &mut self.pos).map_err(|e| self.varint_err(field, e))
    }

    fn varint_err(&self, field: &'static str, e: VarintError) -> BatchError {
        let reason = match e {
            // Inside a body, running out means the varint crosses the record's end.
            VarintError::Truncated => "runs past the end of the record",
            other => other.reason(),
        };
        malformed(self.index, field, reason)
    }

    fn take(&mut self, len: u64, field: &'static str) -> Result<Range<usize>, BatchError> {
        if len > self.remaining() as u64 {
            return Err(malformed(
                self.index,
                field,
                "runs past the end of the record",
            ));
        }
        let start = self.pos;
        self.pos += len as usize;
        Ok(start..self.pos)
    }

    /// A signed length where -1 means null; the data follows.
    fn nullable(
        &mut self,
        len_field: &'static str,
        data_field: &'static str,
    ) -> Result<Option<Range<usize>>, BatchError> {
        match self.varint(len_field)? {
            -1 => Ok(None),
            len if len < -1 => Err(malformed(self.index, len_field, "is negative but not -1")),
            len => self.take(len as u64, data_field).map(Some),
        }
    }
}

//! Field-level decoding of one record whose body span the walker in `record.rs`
//! already delimited.
//!
//! Invariants enforced: every length stays inside its record, each record is consumed
//! exactly, `offset_delta` equals the record's position (offsets are dense), `key_length`
//! and `value_length` are -1 or non-negative, header keys are UTF-8, reserved attributes
//! are zero. Keys and values are zero-copy slices of the section. Never panics.

use std::ops::Range;

use bytes::Bytes;

use crate::error::BatchError;
use crate::record::{Header, Record, malformed};
use crate::varint::{VarintError, read_uvarint, read_varint};

/// Batch-level values a record needs to become absolute.
#[derive(Clone, Copy)]
pub(crate) struct RecordContext {
    pub base_offset: i64,
    pub first_timestamp: i64,
}

/// Field reader over one record body. Positions are absolute in the section so
/// keys and values can be sliced out of the section `Bytes` without copying.
struct BodyReader<'a> {
    section: &'a Bytes,
    pos: usize,
    end: usize,
    index: usize,
}

impl BodyReader<'_> {
    fn body(&self) -> &[u8] {
        self.section.get(..self.end).unwrap_or_default()
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, BatchError> {
        let byte = *self
            .body()
            .get(self.pos)
            .ok_or_else(|| malformed(self.index, field, "runs past the end of the record"))?;
        self.pos += 1;
        Ok(byte)
    }

    fn uvarint(&mut self, field: &'static str) -> Result<u64, BatchError> {
        let mut pos = self.pos;
        let v = read_uvarint(self.body(), &mut pos).map_err(|e| self.varint_err(field, e))?;
        self.pos = pos;
        Ok(v)
    }

    fn varint(&mut self, field: &'static str) -> Result<i64, BatchError> {
        let mut pos = self.pos;
        let v = read_varint(self.body(), &mut pos).map_err(|e| self.varint_err(field, e))?;
        self.pos = pos;
        Ok(v)
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
        let remaining = self.end.saturating_sub(self.pos);
        if len > remaining as u64 {
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
    ) -> Result<Option<Bytes>, BatchError> {
        match self.varint(len_field)? {
            -1 => Ok(None),
            len if len < -1 => Err(malformed(self.index, len_field, "is negative but not -1")),
            len => {
                let range = self.take(len as u64, data_field)?;
                Ok(Some(self.section.slice(range)))
            }
        }
    }
}

/// Decodes the record whose body occupies `body` within `section`.
pub(crate) fn decode_record(
    section: &Bytes,
    body: Range<usize>,
    index: usize,
    ctx: RecordContext,
) -> Result<Record, BatchError> {
    let mut r = BodyReader {
        section,
        pos: body.start,
        end: body.end.min(section.len()),
        index,
    };
    if r.u8("attributes")? != 0 {
        return Err(malformed(index, "attributes", "has reserved bits set"));
    }
    // Wrapping on both sides (encode and decode) round-trips every i64 timestamp.
    let timestamp = ctx
        .first_timestamp
        .wrapping_add(r.varint("timestamp_delta")?);
    let offset_delta = r.uvarint("offset_delta")?;
    if offset_delta != index as u64 {
        return Err(malformed(
            index,
            "offset_delta",
            "is not the record's position in the batch (offsets must be dense from 0)",
        ));
    }
    let offset = i64::try_from(offset_delta)
        .ok()
        .and_then(|d| ctx.base_offset.checked_add(d))
        .ok_or_else(|| {
            malformed(
                index,
                "offset_delta",
                "overflows i64 when added to base_offset",
            )
        })?;
    let key = r.nullable("key_length", "key")?;
    let value = r.nullable("value_length", "value")?;
    let header_count = r.uvarint("header_count")?;
    // Each header takes at least 2 bytes; never trust the count for preallocation.
    let cap = (r.end.saturating_sub(r.pos) / 2).min(usize::try_from(header_count).unwrap_or(0));
    let mut headers = Vec::with_capacity(cap);
    for _ in 0..header_count {
        let key_len = r.uvarint("header key_length")?;
        let key_range = r.take(key_len, "header key")?;
        let key = std::str::from_utf8(section.get(key_range).unwrap_or_default())
            .map_err(|_| malformed(index, "header key", "is not valid UTF-8"))?
            .to_owned();
        let value_len = r.uvarint("header value_length")?;
        let value = section.slice(r.take(value_len, "header value")?);
        headers.push(Header { key, value });
    }
    if r.pos != r.end {
        return Err(malformed(
            index,
            "length",
            "covers bytes after the last header",
        ));
    }
    Ok(Record {
        offset,
        timestamp,
        key,
        value,
        headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Header, NewRecord, RecordSpans, encode_record};

    const CTX: RecordContext = RecordContext {
        base_offset: 100,
        first_timestamp: 1_000,
    };

    fn encoded(record: &NewRecord, ts_delta: i64, offset_delta: u64) -> Vec<u8> {
        let mut out = Vec::new();
        encode_record(&mut out, &mut Vec::new(), record, ts_delta, offset_delta);
        out
    }

    fn decode_one(section: Vec<u8>) -> Result<Record, BatchError> {
        let section = Bytes::from(section);
        let span = RecordSpans::new(&section).next().unwrap()?;
        decode_record(&section, span, 0, CTX)
    }

    #[test]
    fn round_trip_with_everything() {
        let rec = NewRecord {
            timestamp: 995,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::new()),
            headers: vec![Header {
                key: "trace".into(),
                value: Bytes::from_static(b"\x00\x01"),
            }],
        };
        let got = decode_one(encoded(&rec, -5, 0)).unwrap();
        assert_eq!(got.offset, 100);
        assert_eq!(got.timestamp, 995);
        assert_eq!(got.key, rec.key);
        assert_eq!(got.value, Some(Bytes::new()));
        assert_eq!(got.headers, rec.headers);
    }

    #[test]
    fn decode_rejects_each_malformation() {
        let cases: [(&[u8], &str); 8] = [
            (&[6, 1, 0, 0, 1, 1, 0], "attributes has reserved bits set"),
            (
                &[6, 0, 0, 1, 1, 1, 0],
                "offset_delta is not the record's position",
            ),
            (&[6, 0, 0, 0, 3, 1, 0], "key_length is negative but not -1"),
            (
                &[6, 0, 0, 0, 8, 1, 0],
                "key runs past the end of the record",
            ),
            (
                &[7, 0, 0, 0, 1, 1, 0, 0],
                "length covers bytes after the last header",
            ),
            (
                &[6, 0, 0, 0, 1, 1, 1],
                "header key_length runs past the end",
            ),
            (
                &[9, 0, 0, 0, 1, 1, 1, 1, 0xff, 0],
                "header key is not valid UTF-8",
            ),
            (&[6, 0, 0, 0, 1, 1, 0x80], "header_count runs past the end"),
        ];
        for (bytes, want) in cases {
            let err = decode_one(bytes.to_vec()).unwrap_err();
            assert!(
                err.to_string().contains(want),
                "{err} does not contain {want}"
            );
        }
    }

    #[test]
    fn decode_is_zero_copy() {
        let rec = NewRecord {
            value: Some(Bytes::from_static(b"payload")),
            ..NewRecord::default()
        };
        let section = Bytes::from(encoded(&rec, 0, 0));
        let span = RecordSpans::new(&section).next().unwrap().unwrap();
        let got = decode_record(&section, span, 0, CTX).unwrap();
        let value = got.value.unwrap();
        let base = section.as_ptr() as usize;
        let ptr = value.as_ptr() as usize;
        assert!(ptr >= base && ptr < base + section.len());
    }
}

//! Decoding one record whose body span the walker in `record.rs` already
//! delimited: the checks are the shared field walk's (`record_walk.rs`), so a
//! record decodes exactly when the broker's check of it passes; this module
//! turns the positions the walk yields into a [`Record`]. Keys and values are
//! zero-copy slices of the section. Never panics.

use std::ops::Range;

use bytes::Bytes;

use crate::error::BatchError;
use crate::record::{Header, Record, malformed};
use crate::record_walk::{HeaderVisitor, walk_record};

/// Batch-level values a record needs to become absolute.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordContext {
    pub base_offset: i64,
    pub first_timestamp: i64,
}

impl RecordContext {
    pub(crate) fn of(header: &crate::header::BatchHeader) -> Self {
        Self {
            base_offset: header.base_offset,
            first_timestamp: header.first_timestamp,
        }
    }
}

/// Collects a record's headers as owned values.
struct HeaderCollector<'a> {
    section: &'a Bytes,
    headers: Vec<Header>,
}

impl HeaderVisitor for HeaderCollector<'_> {
    fn header_count(&mut self, declared: u64, fit_max: usize) {
        // Never trust the count for preallocation beyond what can fit.
        self.headers
            .reserve(usize::try_from(declared).unwrap_or(usize::MAX).min(fit_max));
    }

    fn header(&mut self, key: &str, value: Range<usize>) {
        self.headers.push(Header {
            key: key.to_owned(),
            value: self.section.slice(value),
        });
    }
}

/// Decodes the record whose body occupies `body` within `section`.
pub(crate) fn decode_record(
    section: &Bytes,
    body: Range<usize>,
    index: usize,
    ctx: RecordContext,
) -> Result<Record, BatchError> {
    let mut headers = HeaderCollector {
        section,
        headers: Vec::new(),
    };
    let fields = walk_record(section, body, index, &mut headers)?;
    // Wrapping on both sides (encode and decode) round-trips every i64 timestamp.
    let timestamp = ctx.first_timestamp.wrapping_add(fields.timestamp_delta);
    let offset = i64::try_from(fields.offset_delta)
        .ok()
        .and_then(|d| ctx.base_offset.checked_add(d))
        .ok_or_else(|| {
            malformed(
                index,
                "offset_delta",
                "overflows i64 when added to base_offset",
            )
        })?;
    Ok(Record {
        offset,
        timestamp,
        key: fields.key.map(|range| section.slice(range)),
        value: fields.value.map(|range| section.slice(range)),
        headers: headers.headers,
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
            (&[6, 0, 0, 1, 1, 1, 0], "offset_delta is 1, expected 0"),
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

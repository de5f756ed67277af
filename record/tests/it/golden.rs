//! Pins the wire format: the example batch in docs/record-batch.md must be exactly
//! what the encoder produces and must decode back. If this test fails, the format
//! changed — which breaks every stored log and every deployed client.

use brook_record::{
    BatchOptions, Header, NewRecord, decode_batch, encode_batch, stamp_base_offset, validate_batch,
};
use bytes::Bytes;

/// The example from docs/record-batch.md (base_offset 0, as a producer sends it).
const EXAMPLE_HEX: &str = concat!(
    "0000000000000000", // base_offset 0
    "40000000",         // batch_length 64
    "00d1d6c8",         // crc 0xc8d6d100
    "01",               // magic
    "0000",             // attributes: no compression
    "00000000",         // last_offset_delta 0
    "0068e5cf8b010000", // first_timestamp 1700000000000
    "0068e5cf8b010000", // max_timestamp 1700000000000
    "ffffffffffffffff", // producer_id -1
    "ffff",             // producer_epoch -1
    "ffffffff",         // base_sequence -1
    "01000000",         // record_count 1
    "12",               // record length 18
    "00",               // attributes
    "00",               // timestamp_delta 0
    "00",               // offset_delta 0
    "06",               // key_length 3 (zigzag)
    "6b6579",           // "key"
    "0a",               // value_length 5 (zigzag)
    "68656c6c6f",       // "hello"
    "01",               // header_count 1
    "01",               // header key_length 1
    "68",               // "h"
    "01",               // header value_length 1
    "31",               // "1"
);

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("EXAMPLE_HEX is valid hex"))
        .collect()
}

fn example_record() -> NewRecord {
    NewRecord {
        timestamp: 1_700_000_000_000,
        key: Some(Bytes::from_static(b"key")),
        value: Some(Bytes::from_static(b"hello")),
        headers: vec![Header {
            key: "h".into(),
            value: Bytes::from_static(b"1"),
        }],
    }
}

#[test]
fn encoder_produces_documented_bytes() {
    let batch = encode_batch(&[example_record()], BatchOptions::default()).unwrap();
    assert_eq!(batch.to_vec(), unhex(EXAMPLE_HEX));
    assert_eq!(batch.len(), 76);
}

#[test]
fn documented_bytes_decode_and_stamp() {
    let mut bytes = unhex(EXAMPLE_HEX);
    validate_batch(&bytes, 1 << 20).unwrap();
    stamp_base_offset(&mut bytes, 42);
    let (header, records) = decode_batch(&Bytes::from(bytes)).unwrap();
    assert_eq!(header.base_offset, 42);
    assert_eq!(header.crc, 0xc8d6_d100);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].offset, 42);
    assert_eq!(records[0].timestamp, 1_700_000_000_000);
    assert_eq!(records[0].key.as_deref(), Some(&b"key"[..]));
    assert_eq!(records[0].value.as_deref(), Some(&b"hello"[..]));
    assert_eq!(records[0].headers, example_record().headers);
}

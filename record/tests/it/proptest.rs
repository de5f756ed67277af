//! Property tests for the batch format: round trips under every codec, offset
//! stamping, and robustness (no panics, corruption detected) on hostile input.

use brook_record::{
    BatchError, BatchHeader, BatchOptions, Compression, HEADER_LEN, Header, NewRecord, Record,
    check_batch, decode_batch, decode_batches, encode_batch, split_batches, stamp_base_offset,
    validate_batch,
};
use bytes::Bytes;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

fn arb_codec() -> impl Strategy<Value = Compression> {
    prop_oneof![
        Just(Compression::None),
        Just(Compression::Lz4),
        Just(Compression::Zstd)
    ]
}

fn arb_bytes(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn arb_header() -> impl Strategy<Value = Header> {
    (".{0,8}", arb_bytes(16)).prop_map(|(key, value)| Header { key, value })
}

fn arb_record() -> impl Strategy<Value = NewRecord> {
    (
        // Mostly realistic timestamps (so deltas go both ways), sometimes extreme ones.
        prop_oneof![4 => 1_700_000_000_000i64..1_700_000_100_000, 1 => any::<i64>()],
        option::of(arb_bytes(32)),
        option::of(arb_bytes(64)),
        vec(arb_header(), 0..4),
    )
        .prop_map(|(timestamp, key, value, headers)| NewRecord {
            timestamp,
            key,
            value,
            headers,
        })
}

fn arb_options() -> impl Strategy<Value = BatchOptions> {
    (arb_codec(), any::<i64>(), any::<i16>(), any::<i32>()).prop_map(
        |(compression, producer_id, producer_epoch, base_sequence)| BatchOptions {
            compression,
            producer_id,
            producer_epoch,
            base_sequence,
        },
    )
}

fn assert_matches(records: &[Record], produced: &[NewRecord], base: i64) {
    assert_eq!(records.len(), produced.len());
    for (i, (got, want)) in records.iter().zip(produced).enumerate() {
        assert_eq!(got.offset, base + i as i64);
        assert_eq!(got.timestamp, want.timestamp);
        assert_eq!(got.key, want.key);
        assert_eq!(got.value, want.value);
        assert_eq!(got.headers, want.headers);
    }
}

/// Rewrites the CRC so a deliberately edited batch gets past the CRC check and
/// exercises the code behind it.
fn fix_crc(batch: &mut [u8]) {
    if batch.len() >= 16 {
        let crc = crc32fast::hash(&batch[16..]);
        batch[12..16].copy_from_slice(&crc.to_le_bytes());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn round_trip(records in vec(arb_record(), 1..16), options in arb_options()) {
        let batch = encode_batch(&records, options).unwrap();
        let header = validate_batch(&batch, batch.len()).unwrap();
        prop_assert_eq!(header.record_count as usize, records.len());
        prop_assert_eq!(header.compression().unwrap(), options.compression);
        prop_assert_eq!(header.producer_id, options.producer_id);
        prop_assert_eq!(header.producer_epoch, options.producer_epoch);
        prop_assert_eq!(header.base_sequence, options.base_sequence);
        prop_assert_eq!(header.first_timestamp, records[0].timestamp);
        prop_assert_eq!(header.max_timestamp, records.iter().map(|r| r.timestamp).max().unwrap());
        let (decoded_header, decoded) = decode_batch(&batch).unwrap();
        prop_assert_eq!(decoded_header, header);
        assert_matches(&decoded, &records, 0);
    }

    #[test]
    fn stamped_offsets(
        records in vec(arb_record(), 1..8),
        codec in arb_codec(),
        base in 0i64..=i64::MAX - 8,
    ) {
        let options = BatchOptions { compression: codec, ..BatchOptions::default() };
        let mut batch = encode_batch(&records, options).unwrap().to_vec();
        stamp_base_offset(&mut batch, base);
        let batch = Bytes::from(batch);
        let header = validate_batch(&batch, usize::MAX).unwrap();
        prop_assert_eq!(header.base_offset, base);
        prop_assert_eq!(header.last_offset(), base + records.len() as i64 - 1);
        let (_, decoded) = decode_batch(&batch).unwrap();
        assert_matches(&decoded, &records, base);
    }

    /// The records `check_batch` gives, after skipping below any offset, are
    /// the decoded records from that offset on.
    #[test]
    fn checked_records_skip_to_an_offset(
        records in vec(arb_record(), 1..8),
        codec in arb_codec(),
        base in 0i64..=i64::MAX - 8,
        skip in 0i64..10,
    ) {
        let options = BatchOptions { compression: codec, ..BatchOptions::default() };
        let mut batch = encode_batch(&records, options).unwrap().to_vec();
        stamp_base_offset(&mut batch, base);
        let batch = Bytes::from(batch);
        let checked = check_batch(&batch).unwrap();
        prop_assert_eq!(checked.last_offset(), base + records.len() as i64 - 1);
        let mut rest = checked.records();
        rest.skip_below(base.saturating_add(skip));
        let rest: Vec<Record> = rest.collect::<Result<_, _>>().unwrap();
        let (_, decoded) = decode_batch(&batch).unwrap();
        let wanted: Vec<Record> = decoded.into_iter().filter(|r| r.offset >= base + skip).collect();
        prop_assert_eq!(rest, wanted);
    }

    #[test]
    fn concatenated_batches(
        batches in vec((vec(arb_record(), 1..5), arb_codec()), 1..5),
    ) {
        let mut buf = Vec::new();
        let mut all = Vec::new();
        for (records, codec) in &batches {
            let options = BatchOptions { compression: *codec, ..BatchOptions::default() };
            let mut batch = encode_batch(records, options).unwrap().to_vec();
            stamp_base_offset(&mut batch, all.len() as i64);
            buf.extend_from_slice(&batch);
            all.extend(records.iter().cloned());
        }
        let buf = Bytes::from(buf);
        prop_assert_eq!(split_batches(buf.clone()).count(), batches.len());
        assert_matches(&decode_batches(&buf).unwrap(), &all, 0);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..256)) {
        let bytes = Bytes::from(bytes);
        let _ = validate_batch(&bytes, usize::MAX);
        let _ = decode_batch(&bytes);
        let _ = BatchHeader::parse(&bytes);
        for item in split_batches(bytes.clone()) {
            let _ = item;
        }
        let _ = decode_batches(&bytes);
    }

    #[test]
    fn flipped_byte_fails_validation(
        records in vec(arb_record(), 1..8),
        codec in arb_codec(),
        position in any::<prop::sample::Index>(),
        mask in 1u8..=255,
    ) {
        let options = BatchOptions { compression: codec, ..BatchOptions::default() };
        let mut batch = encode_batch(&records, options).unwrap().to_vec();
        let at = 12 + position.index(batch.len() - 12);
        batch[at] ^= mask;
        prop_assert!(validate_batch(&batch, usize::MAX).is_err(), "flip at {} accepted", at);
        prop_assert!(decode_batch(&Bytes::from(batch)).is_err());
    }
}

proptest! {
    // Bigger, structure-aware inputs: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Garbage behind a well-formed, CRC-correct header reaches the record walker and
    /// the decompressors, which plain random bytes almost never do.
    #[test]
    fn garbage_section_with_valid_crc_never_panics(
        section in vec(any::<u8>(), 0..512),
        codec in 0u16..=2,
        record_count in 1u32..40,
        base in any::<i64>(),
    ) {
        let header = BatchHeader {
            base_offset: base,
            batch_length: (HEADER_LEN - 12 + section.len()) as u32,
            crc: 0,
            magic: 1,
            attributes: codec,
            last_offset_delta: record_count - 1,
            first_timestamp: 0,
            max_timestamp: 0,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            record_count,
        };
        let mut batch = header.to_bytes().to_vec();
        batch.extend_from_slice(&section);
        fix_crc(&mut batch);
        let batch = Bytes::from(batch);
        let _ = validate_batch(&batch, usize::MAX);
        let _ = decode_batch(&batch);
        let _ = decode_batches(&batch);
    }

    /// Corrupt a real batch's records section (compressed or not) and re-seal the CRC:
    /// decoding must fail cleanly or succeed, never panic.
    #[test]
    fn corrupted_section_with_valid_crc_never_panics(
        records in vec(arb_record(), 1..8),
        codec in arb_codec(),
        flips in vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
        truncate in any::<prop::sample::Index>(),
    ) {
        let options = BatchOptions { compression: codec, ..BatchOptions::default() };
        let mut batch = encode_batch(&records, options).unwrap().to_vec();
        let section_len = batch.len() - HEADER_LEN;
        for (position, mask) in flips {
            batch[HEADER_LEN + position.index(section_len)] ^= mask;
        }
        // Sometimes also shorten the section (and fix batch_length to match).
        let keep = HEADER_LEN + truncate.index(section_len + 1);
        batch.truncate(keep);
        let batch_length = (batch.len() - 12) as u32;
        batch[8..12].copy_from_slice(&batch_length.to_le_bytes());
        fix_crc(&mut batch);
        let batch = Bytes::from(batch);
        let validated = validate_batch(&batch, usize::MAX);
        match decode_batch(&batch) {
            // Anything decode accepts, validation must accept too.
            Ok(_) => prop_assert!(validated.is_ok()),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
}

#[test]
fn error_messages_name_fields_and_limits() {
    let batch = encode_batch(&[NewRecord::default()], BatchOptions::default()).unwrap();
    let e = validate_batch(&batch, 10).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "batch is {} bytes, over the limit of 10 (max_message_bytes)",
            batch.len()
        )
    );
    assert!(matches!(e, BatchError::TooLarge { max: 10, .. }));
}

//! The broker's check of a produced batch (`validate_produced_batch`): each kind of
//! malformed record is refused with the record and field named, and the check
//! agrees with decoding on every batch, compressed or not: what it accepts
//! decodes, what it refuses does not.

use brook_record::{
    BatchError, BatchHeader, BatchOptions, Compression, HEADER_LEN, MAX_DECOMPRESSED_BYTES,
    NewRecord, Record, RecordValidation, check_batch, decode_batch, encode_batch,
    validate_produced_batch,
};
use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;

const CODECS: [Compression; 3] = [Compression::None, Compression::Lz4, Compression::Zstd];

/// Compresses a plain records section the way the builder does.
fn compress(codec: Compression, plain: &[u8]) -> Vec<u8> {
    match codec {
        Compression::Lz4 => lz4_flex::block::compress_prepend_size(plain),
        Compression::Zstd => zstd::bulk::compress(plain, 3).expect("zstd compresses any input"),
        Compression::None => plain.to_vec(),
    }
}

/// A batch around `section` (already compressed, if `codec` says so) with a
/// correct CRC, so every check before the records passes.
fn sealed(codec: Compression, record_count: u32, section: &[u8]) -> Bytes {
    let header = BatchHeader {
        base_offset: 0,
        batch_length: (HEADER_LEN - 12 + section.len()) as u32,
        crc: 0,
        magic: 1,
        attributes: u16::from(codec.id()),
        last_offset_delta: record_count - 1,
        first_timestamp: 1_000,
        max_timestamp: 1_000,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        record_count,
    };
    let mut batch = header.to_bytes().to_vec();
    batch.extend_from_slice(section);
    let crc = crc32fast::hash(&batch[16..]);
    batch[12..16].copy_from_slice(&crc.to_le_bytes());
    Bytes::from(batch)
}

fn full(batch: &[u8]) -> Result<BatchHeader, BatchError> {
    validate_produced_batch(batch, usize::MAX, RecordValidation::Full)
}

fn framing(batch: &[u8]) -> Result<BatchHeader, BatchError> {
    validate_produced_batch(batch, usize::MAX, RecordValidation::Framing)
}

/// A minimal record: `offset_delta` given, no key, no value, no headers.
/// `check_batch` accepts exactly what `decode_batch` decodes, and the records
/// it then gives one at a time are the same, none of them an error.
fn check_agrees_with_decoding(batch: &Bytes) -> Result<(), TestCaseError> {
    match (check_batch(batch), decode_batch(batch)) {
        (Ok(checked), Ok((_, decoded))) => {
            let checked: Result<Vec<Record>, BatchError> = checked.records().collect();
            prop_assert_eq!(checked, Ok(decoded));
        }
        (Err(_), Err(_)) => {}
        (checked, decoded) => prop_assert!(
            false,
            "check_batch {:?} but decode_batch {:?}",
            checked.err(),
            decoded.err()
        ),
    }
    Ok(())
}

fn minimal(offset_delta: u8) -> [u8; 7] {
    [6, 0, 0, offset_delta, 1, 1, 0]
}

#[test]
fn each_malformed_record_is_refused_naming_record_and_field() {
    let mut two_then_bad = Vec::new();
    two_then_bad.extend_from_slice(&minimal(0));
    two_then_bad.extend_from_slice(&minimal(1));
    // Record 2 says it is at position 1.
    two_then_bad.extend_from_slice(&minimal(1));
    let cases: [(&str, Vec<u8>, u32, &str); 5] = [
        (
            "reserved attribute bits",
            vec![6, 0x04, 0, 0, 1, 1, 0],
            1,
            "record 0 is malformed: attributes has reserved bits set",
        ),
        (
            "offset_delta not its position",
            two_then_bad,
            3,
            "record 2 is malformed: offset_delta is 1, expected 2",
        ),
        (
            "header key not UTF-8",
            vec![9, 0, 0, 0, 1, 1, 1, 1, 0xff, 0],
            1,
            "record 0 is malformed: header key is not valid UTF-8",
        ),
        (
            "value length past the record's end",
            // value_length 5 (zigzag 10) with one byte left in the record.
            vec![7, 0, 0, 0, 1, 10, b'x', 0],
            1,
            "record 0 is malformed: value runs past the end of the record",
        ),
        (
            "bytes left over after the last header",
            vec![7, 0, 0, 0, 1, 1, 0, 0],
            1,
            "record 0 is malformed: length covers bytes after the last header",
        ),
    ];
    for codec in CODECS {
        for (what, plain, count, want) in &cases {
            let batch = sealed(codec, *count, &compress(codec, plain));
            let err = full(&batch).unwrap_err();
            assert!(
                err.to_string().starts_with(want),
                "{codec}, {what}: {err} does not start with {want}"
            );
            assert!(decode_batch(&batch).is_err(), "{codec}, {what} decodes");
            // Framing still walks uncompressed records; compressed ones stay opaque.
            assert_eq!(
                framing(&batch).is_err(),
                codec == Compression::None,
                "{codec}, {what}"
            );
        }
    }
}

#[test]
fn a_record_count_over_the_records_present_is_refused() {
    for codec in CODECS {
        let batch = sealed(codec, 1_000_000, &compress(codec, &minimal(0)));
        assert_eq!(
            full(&batch).unwrap_err(),
            BatchError::RecordCountMismatch {
                declared: 1_000_000,
                actual: 1
            },
            "{codec}"
        );
    }
}

#[test]
fn sections_that_do_not_decompress_are_refused() {
    let mut lz4 = compress(Compression::Lz4, &minimal(0));
    // The block is cut short of what its sequences need.
    lz4.truncate(lz4.len() - 2);
    let zstd = b"\x28\xb5\x2f\xfd not really a frame".to_vec();
    for (codec, section) in [(Compression::Lz4, lz4), (Compression::Zstd, zstd)] {
        let batch = sealed(codec, 1, &section);
        let err = full(&batch).unwrap_err();
        assert!(
            matches!(err, BatchError::Decompression { codec: c, .. } if c == codec),
            "{codec}: {err}"
        );
        assert!(framing(&batch).is_ok(), "{codec}");
    }
}

#[test]
fn a_declared_size_of_a_gibibyte_is_refused_before_decompressing() {
    const GIB: u32 = 1 << 30;
    let mut lz4 = GIB.to_le_bytes().to_vec();
    lz4.extend_from_slice(&[0; 64]);
    // A zstd frame header: single segment, 4-byte content size of 1 GiB.
    let mut zstd = vec![0x28, 0xb5, 0x2f, 0xfd, 0xa0];
    zstd.extend_from_slice(&GIB.to_le_bytes());
    zstd.extend_from_slice(&[0; 16]);
    for (codec, section) in [(Compression::Lz4, lz4), (Compression::Zstd, zstd)] {
        let err = full(&sealed(codec, 1, &section)).unwrap_err();
        assert_eq!(
            err,
            BatchError::DecompressedTooLarge {
                codec,
                size: GIB as usize,
                max: MAX_DECOMPRESSED_BYTES
            }
        );
    }
}

#[test]
fn the_exact_message_for_an_out_of_place_offset_delta() {
    let mut plain = Vec::new();
    for delta in [0, 1, 2, 2] {
        plain.extend_from_slice(&minimal(delta));
    }
    let err = full(&sealed(Compression::None, 4, &plain)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "record 3 is malformed: offset_delta is 2, expected 3 (offsets are dense from 0)"
    );
}

fn arb_codec() -> impl Strategy<Value = Compression> {
    prop_oneof![
        Just(Compression::None),
        Just(Compression::Lz4),
        Just(Compression::Zstd)
    ]
}

fn arb_records() -> impl Strategy<Value = Vec<NewRecord>> {
    let header = (".{0,6}", vec(any::<u8>(), 0..8)).prop_map(|(key, value)| brook_record::Header {
        key,
        value: Bytes::from(value),
    });
    let record = (
        any::<i64>(),
        proptest::option::of(vec(any::<u8>(), 0..16)),
        proptest::option::of(vec(any::<u8>(), 0..32)),
        vec(header, 0..3),
    )
        .prop_map(|(timestamp, key, value, headers)| NewRecord {
            timestamp,
            key: key.map(Bytes::from),
            value: value.map(Bytes::from),
            headers,
        });
    vec(record, 1..8)
}

/// The plain records section of a builder batch.
fn plain_section(records: &[NewRecord]) -> Vec<u8> {
    let batch = encode_batch(records, BatchOptions::default()).expect("small records encode");
    batch[HEADER_LEN..].to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn builder_batches_are_always_accepted(records in arb_records(), codec in arb_codec()) {
        let options = BatchOptions { compression: codec, ..BatchOptions::default() };
        let batch = encode_batch(&records, options).unwrap();
        prop_assert!(full(&batch).is_ok());
        prop_assert!(framing(&batch).is_ok());
        check_agrees_with_decoding(&batch)?;
    }

    /// Single-byte corruptions of the plain records section, compressed again and
    /// sealed with a correct CRC: the check refuses exactly what does not decode.
    #[test]
    fn corrupted_records_are_refused_or_decode(
        records in arb_records(),
        codec in arb_codec(),
        position in any::<prop::sample::Index>(),
        mask in 1u8..=255,
    ) {
        let mut plain = plain_section(&records);
        let at = position.index(plain.len());
        plain[at] ^= mask;
        let batch = sealed(codec, records.len() as u32, &compress(codec, &plain));
        let validated = full(&batch);
        let decoded = decode_batch(&batch);
        prop_assert_eq!(
            validated.is_ok(),
            decoded.is_ok(),
            "validation {:?} but decoding {:?}",
            validated.as_ref().err(),
            decoded.as_ref().err()
        );
        if codec == Compression::None {
            prop_assert_eq!(framing(&batch).is_ok(), validated.is_ok());
        }
        check_agrees_with_decoding(&batch)?;
    }

    /// Arbitrary bytes as the plain section, compressed or not: whatever the check
    /// accepts decodes, and the other way round.
    #[test]
    fn garbage_records_agree_with_decoding(
        plain in vec(any::<u8>(), 0..256),
        codec in arb_codec(),
        record_count in 1u32..8,
    ) {
        let batch = sealed(codec, record_count, &compress(codec, &plain));
        prop_assert_eq!(full(&batch).is_ok(), decode_batch(&batch).is_ok());
        check_agrees_with_decoding(&batch)?;
    }

    /// Garbage as the compressed section itself never panics, and the check
    /// accepts it only if it decodes.
    #[test]
    fn garbage_compressed_sections_agree_with_decoding(
        section in vec(any::<u8>(), 0..256),
        codec in arb_codec(),
        record_count in 1u32..8,
    ) {
        let batch = sealed(codec, record_count, &section);
        prop_assert_eq!(full(&batch).is_ok(), decode_batch(&batch).is_ok());
        check_agrees_with_decoding(&batch)?;
    }
}

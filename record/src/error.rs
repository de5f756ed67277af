//! The crate's error types.
//!
//! Every message names the offending field and, where there is one, the limit it broke:
//! the broker forwards these strings verbatim in gRPC statuses, so a producer author
//! must be able to fix their encoder from the message alone.

use crate::compression::Compression;

/// Why a batch (or a buffer of batches) was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Fewer bytes are present than the structure being read requires.
    #[error("batch is truncated: need {needed} bytes, have {actual}")]
    TooShort { needed: usize, actual: usize },

    /// `batch_length` disagrees with the number of bytes actually following it.
    #[error("batch_length declares {declared} bytes but {actual} follow")]
    LengthMismatch { declared: u32, actual: usize },

    /// `batch_length` is too small to even hold the fixed header.
    #[error(
        "batch_length is {batch_length}, below the minimum of {min} (the fixed header alone needs that many bytes after the 12-byte prefix)"
    )]
    BatchLengthTooSmall { batch_length: u32, min: u32 },

    /// The batch exceeds the broker's configured size limit.
    #[error("batch is {size} bytes, over the limit of {max} (max_message_bytes)")]
    TooLarge { size: usize, max: usize },

    /// The encoded batch cannot be represented: `batch_length` is a u32.
    #[error(
        "encoded batch is {size} bytes, over the format's limit of {max} (batch_length is a u32)"
    )]
    EncodedTooLarge { size: usize, max: usize },

    /// `magic` names a format version this crate does not understand.
    #[error("magic is {0}, but only magic {magic} is supported", magic = crate::header::MAGIC)]
    UnsupportedMagic(u8),

    /// Bits 3-15 of `attributes` are reserved and must be zero.
    #[error(
        "attributes 0x{0:04x} set reserved bits (only bits 0-2, the compression codec, may be set)"
    )]
    ReservedAttributes(u16),

    /// Bits 0-2 of `attributes` name a codec that does not exist.
    #[error("attributes name compression codec {0}, which is unknown (0 none, 1 lz4, 2 zstd)")]
    UnknownCompression(u8),

    /// The stored CRC does not match the bytes it covers.
    #[error("crc mismatch: stored 0x{stored:08x}, computed 0x{computed:08x}")]
    CrcMismatch { stored: u32, computed: u32 },

    /// A batch must carry at least one record.
    #[error("batch has no records (record_count must be at least 1)")]
    EmptyBatch,

    /// `record_count` is above [`crate::MAX_RECORDS_PER_BATCH`].
    #[error("record_count is {count}, over the limit of {max} (MAX_RECORDS_PER_BATCH)")]
    TooManyRecords { count: usize, max: u32 },

    /// `last_offset_delta` must be `record_count - 1`.
    #[error(
        "last_offset_delta is {last_offset_delta} but record_count is {record_count} (expected record_count - 1)"
    )]
    OffsetDeltaMismatch {
        last_offset_delta: u32,
        record_count: u32,
    },

    /// `max_timestamp` is earlier than `first_timestamp`.
    #[error("max_timestamp {max_timestamp} is before first_timestamp {first_timestamp}")]
    TimestampOrder {
        first_timestamp: i64,
        max_timestamp: i64,
    },

    /// `base_offset + last_offset_delta` does not fit in an i64.
    #[error("base_offset {base_offset} plus last_offset_delta {last_offset_delta} overflows i64")]
    OffsetOverflow {
        base_offset: i64,
        last_offset_delta: u32,
    },

    /// The records section holds a different number of records than `record_count` says.
    #[error("record_count is {declared} but the records section holds {actual} records")]
    RecordCountMismatch { declared: u32, actual: usize },

    /// One record inside the records section could not be parsed.
    #[error("record {index} is malformed: {field} {reason}")]
    MalformedRecord {
        /// Zero-based position of the record in the batch.
        index: usize,
        /// The record field being read, as named in the format description.
        field: &'static str,
        reason: &'static str,
    },

    /// A record's `offset_delta` is not its position in the batch: offsets are
    /// dense from 0, so record `index` must carry `offset_delta` `index`.
    #[error(
        "record {index} is malformed: offset_delta is {offset_delta}, expected {index} (offsets are dense from 0)"
    )]
    OffsetDeltaNotPosition {
        /// Zero-based position of the record in the batch.
        index: usize,
        offset_delta: u64,
    },

    /// The compressed records section could not be decompressed.
    #[error("{codec} records section could not be decompressed: {reason}")]
    Decompression { codec: Compression, reason: String },

    /// The records section could not be compressed (only raised while building).
    #[error("{codec} compression of the records section failed: {reason}")]
    CompressionFailed { codec: Compression, reason: String },

    /// The records section inflates (or would inflate) past [`crate::MAX_DECOMPRESSED_BYTES`].
    #[error(
        "{codec} records section decompresses to at least {size} bytes, over the limit of {max} (MAX_DECOMPRESSED_BYTES)"
    )]
    DecompressedTooLarge {
        codec: Compression,
        size: usize,
        max: usize,
    },
}

/// A compression codec name that is not `none`, `lz4` or `zstd`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown compression codec {0:?} (expected \"none\", \"lz4\" or \"zstd\")")]
pub struct ParseCompressionError(pub String);

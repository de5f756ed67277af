//! Brook's record batch format: encoding, decoding and validation.
//!
//! A batch is a 57-byte little-endian header followed by a records section that may be
//! compressed as a whole. Producers build batches with [`BatchBuilder`] /
//! [`encode_batch`]; the broker checks them with [`validate_produced_batch`], stamps the base
//! offset with [`stamp_base_offset`] (or writes [`encode_base_offset`] bytes with
//! writev) and serves concatenated batches; consumers read them with
//! [`split_batches`] / [`decode_batch`] / [`decode_batches`].
//!
//! The byte-level format is described in `docs/record-batch.md`.
//!
//! Crate-wide invariants: no `unsafe`; no input, however malformed, makes a decoding or
//! validating function panic; allocations driven by input are bounded by the input's
//! size or by [`MAX_DECOMPRESSED_BYTES`].

mod builder;
mod compression;
mod decode;
mod error;
mod header;
pub mod protocol;
mod record;
mod record_decode;
mod record_walk;
mod validate;
mod varint;

pub use builder::{BatchBuilder, BatchOptions, encode_batch};
pub use compression::{Compression, MAX_DECOMPRESSED_BYTES, decompressed_size_bound};
pub use decode::{
    BatchIter, CheckedBatch, CheckedRecords, check_batch, decode_batch, decode_batches,
    split_batches,
};
pub use error::{BatchError, ParseCompressionError};
pub use header::{
    BatchHeader, HEADER_LEN, LENGTH_PREFIX_LEN, MAGIC, batch_total_len, encode_base_offset,
    read_base_offset, stamp_base_offset, stamp_producer,
};
pub use record::{Header, MIN_RECORD_BODY_LEN, NewRecord, Record};
pub use validate::{
    MAX_RECORDS_PER_BATCH, ParseRecordValidationError, RecordValidation, validate_batch,
    validate_produced_batch,
};

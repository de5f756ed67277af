//! The durable log: segments of record batches with sparse indexes, recovery
//! of a partition directory, retention, and the file-system traits all of it
//! goes through.
//!
//! Invariant: this module knows nothing of gRPC, topics' metadata store or
//! consumer groups; it stores opaque, already validated batches.

pub mod checked_json;
pub mod clean;
pub mod error;
pub mod index;
pub mod io;
pub mod log;
pub mod producers;
pub mod recovery_point;
pub mod scan;
pub mod segment;
pub mod sync_group;
pub mod testing;

pub use error::LogError;
pub use io::{LogFile, OsStorage, Storage};
pub use log::{BatchOutcome, LogConfig, PartitionLog, ReadResult, WrittenMark};
pub use producers::SequenceError;
pub use sync_group::SyncGroup;

/// Bytes of log between two offset index entries, by default.
pub const DEFAULT_INDEX_INTERVAL_BYTES: u64 = 4096;

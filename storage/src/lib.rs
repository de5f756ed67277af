//! Brook's durable log: the segments of one partition with their sparse
//! indexes, recovery of a partition directory after a crash or a clean
//! shutdown, retention, group commit's shared syncs, and the file-system
//! traits all of it goes through.
//!
//! Invariant: this crate knows nothing of the network, gRPC, protobuf, the
//! metadata store or consumer groups (its dependencies say so); it stores
//! opaque, already validated batches of one partition.

mod checked_json;
mod clean;
mod clock;
mod damage;
mod error;
mod index;
mod io;
mod log;
mod open_segments;
mod producers;
mod recovery_point;
mod scan;
mod segment;
mod sync_group;
pub mod testing;

pub use clock::now_ms;
pub use damage::{Damage, LostData, SyncRecord};
pub use error::{LogError, Resource};
pub use io::{LogFile, OsStorage, Storage, available_bytes};
pub use log::{
    BatchOutcome, LogConfig, OpenReport, PartitionLog, ReadResult, SEGMENT_BYTES_MAX, Shortage,
    WrittenMark,
};
pub use open_segments::{DEFAULT_OPEN_SEGMENTS_MAX, OpenSegments};
pub use producers::{ProducerState, SequenceError};
pub use scan::TailDamage;
pub use sync_group::SyncGroup;

/// Bytes of log between two offset index entries, by default.
pub const DEFAULT_INDEX_INTERVAL_BYTES: u64 = 4096;

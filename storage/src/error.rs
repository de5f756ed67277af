//! Errors of the storage layer. I/O errors keep their cause and say which
//! operation on which file failed.

use std::io;
use std::path::{Path, PathBuf};

use super::damage::Damage;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is damaged at byte {position}: {reason}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },
    #[error(
        "offset {offset} is out of range: the partition holds offsets {start_offset} to {end_offset}"
    )]
    OffsetOutOfRange {
        offset: i64,
        start_offset: i64,
        end_offset: i64,
    },
    /// A write or fsync failed earlier; the partition refuses writes until
    /// the broker restarts and recovery has checked its tail.
    #[error(
        "partition is poisoned after an earlier failure and refuses writes until restart: {reason}"
    )]
    Poisoned { reason: String },
    /// The partition was deleted; its files are gone.
    #[error("partition was deleted")]
    Deleted,
    /// Acknowledged data is missing: the partition refuses reads and
    /// writes until an operator accepts the loss.
    #[error(
        "partition is damaged: {damage}; it refuses reads and writes until an operator accepts the loss"
    )]
    Damaged { damage: Damage },
}

impl LogError {
    pub fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        Self::Io {
            op,
            path: path.to_owned(),
            source,
        }
    }

    pub fn corrupt(path: &Path, position: u64, reason: String) -> Self {
        Self::Corrupt {
            path: path.to_owned(),
            position,
            reason,
        }
    }
}

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
    /// A file operation failed for want of a resource that comes back by
    /// itself or by an operator's hand (disk space, file descriptors).
    /// Nothing of the operation is left behind, so the partition is not
    /// poisoned and takes writes again once the resource is back.
    #[error("{resource}: {op} {path}: {source}")]
    ResourceExhausted {
        resource: Resource,
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A resource whose shortage fails an operation without damaging the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Resource {
    /// ENOSPC or EDQUOT: the data volume (or the user's quota on it) is full.
    DiskSpace,
    /// EMFILE or ENFILE: the process's or the system's open file limit.
    OpenFiles,
}

impl Resource {
    /// The resource an I/O error says is short, if it says so.
    pub fn of(error: &io::Error) -> Option<Self> {
        use nix::errno::Errno;
        let errno = Errno::from_raw(error.raw_os_error()?);
        match errno {
            Errno::ENOSPC | Errno::EDQUOT => Some(Self::DiskSpace),
            Errno::EMFILE | Errno::ENFILE => Some(Self::OpenFiles),
            _ => None,
        }
    }
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::DiskSpace => "no space left on the data volume",
            Self::OpenFiles => "too many open files",
        })
    }
}

impl LogError {
    pub fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        Self::Io {
            op,
            path: path.to_owned(),
            source,
        }
    }

    /// An I/O error of a write or an open that leaves nothing behind on
    /// failure (or whose caller cuts back what it left): a resource
    /// shortage becomes `ResourceExhausted`, anything else `Io`. Not for
    /// fsyncs: a failed fsync loses written pages whatever its errno says.
    pub fn io_or_resource(op: &'static str, path: &Path, source: io::Error) -> Self {
        match Resource::of(&source) {
            Some(resource) => Self::ResourceExhausted {
                resource,
                op,
                path: path.to_owned(),
                source,
            },
            None => Self::io(op, path, source),
        }
    }

    /// The resource this error says is short, if it is a shortage.
    pub fn resource(&self) -> Option<Resource> {
        match self {
            Self::ResourceExhausted { resource, .. } => Some(*resource),
            _ => None,
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

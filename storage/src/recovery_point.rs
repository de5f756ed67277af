//! A partition's recovery point: how much of the active segment is known to
//! be on disk, whole and with its indexes, and the producer state at that
//! point.
//!
//! The log takes one when `due` says so: after 32 MiB of appends, or a few
//! seconds after the last one for a partition that took some appends since
//! (see `due`). After a crash, opening trusts
//! the active segment up to the point, as it trusts sealed segments, and
//! checks batch by batch only what follows: recovery reads at most what was
//! appended since the last point, not the whole segment. (Kafka's recovery
//! point checkpoint, per partition.)
//!
//! Invariants: a point is written only after the log and both indexes were
//! synced up to it, so everything before it survives a crash; a point that
//! does not match the log when the partition opens is removed, so that a
//! later log that happens to match it again is never trusted through it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::checked_json;
use super::error::LogError;
use super::io::Storage;
use super::producers::ProducerState;

const FILE_NAME: &str = "recovery-point";

/// Appends after which a point is taken at once: what a crash recovery
/// reads per busy partition at most.
pub const INTERVAL_BYTES: u64 = 32 * 1024 * 1024;
/// A partition with at least `SOON_BYTES` appended since its last point
/// takes one `SOON_MS` after it, so that many partitions each short of
/// `INTERVAL_BYTES` do not leave gigabytes for recovery between them.
pub const SOON_BYTES: u64 = 1024 * 1024;
pub const SOON_MS: i64 = 2_000;
/// Any append gets a point this long after the last one. Longer, because
/// every point costs a few fsyncs, and thousands of partitions that each
/// take a trickle would otherwise pay them every few seconds.
pub const LATEST_MS: i64 = 30_000;

/// Whether a partition that appended `grown_bytes` in the `elapsed_ms`
/// since its last point takes another.
pub fn due(grown_bytes: u64, elapsed_ms: i64) -> bool {
    grown_bytes >= INTERVAL_BYTES
        || grown_bytes >= SOON_BYTES && elapsed_ms >= SOON_MS
        || grown_bytes > 0 && elapsed_ms >= LATEST_MS
}

/// A durable prefix of the active segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryPoint {
    /// Base offset of the active segment the point is in.
    pub active_base: i64,
    /// Bytes of whole batches at the start of that segment.
    pub active_bytes: u64,
    /// The offset after the last of those batches.
    pub next_offset: i64,
    /// Idempotent producers' state after those batches.
    pub producers: ProducerState,
}

fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// Replaces the partition's recovery point. The caller has synced the log
/// and its indexes up to the point. The directory is not synced: a point
/// lost with its directory entry only makes the next recovery longer.
pub fn write(storage: &dyn Storage, dir: &Path, point: &RecoveryPoint) -> Result<(), LogError> {
    checked_json::write(storage, &path(dir), point)
}

/// The partition's recovery point; `None` when there is none or it is
/// damaged. `files` are the names in `dir`, as the caller listed them.
pub fn read(
    storage: &dyn Storage,
    dir: &Path,
    files: &[String],
) -> Result<Option<RecoveryPoint>, LogError> {
    checked_json::read_listed(storage, dir, files, FILE_NAME, "recovery point")
}

/// Removes the partition's recovery point, if `files` has one, durably:
/// a stale point must not come back after a power loss.
pub fn remove(storage: &dyn Storage, dir: &Path, files: &[String]) -> Result<(), LogError> {
    checked_json::remove_listed(storage, dir, files, FILE_NAME)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MemStorage;

    fn point() -> RecoveryPoint {
        RecoveryPoint {
            active_base: 10,
            active_bytes: 4096,
            next_offset: 42,
            producers: ProducerState::default(),
        }
    }

    fn files(storage: &MemStorage, dir: &Path) -> Vec<String> {
        storage.list_files(dir).unwrap()
    }

    #[test]
    fn a_point_is_read_until_removed() {
        let storage = MemStorage::default();
        let dir = Path::new("/p");
        assert_eq!(read(&storage, dir, &files(&storage, dir)).unwrap(), None);
        write(&storage, dir, &point()).unwrap();
        for _ in 0..2 {
            assert_eq!(
                read(&storage, dir, &files(&storage, dir)).unwrap(),
                Some(point())
            );
        }
        remove(&storage, dir, &files(&storage, dir)).unwrap();
        assert_eq!(read(&storage, dir, &files(&storage, dir)).unwrap(), None);
    }

    #[test]
    fn a_point_is_due_sooner_the_more_was_appended() {
        assert!(!due(0, i64::MAX), "nothing new, nothing to cover");
        assert!(due(INTERVAL_BYTES, 0));
        assert!(!due(SOON_BYTES, SOON_MS - 1));
        assert!(due(SOON_BYTES, SOON_MS));
        assert!(!due(SOON_BYTES - 1, LATEST_MS - 1));
        assert!(due(1, LATEST_MS));
    }

    #[test]
    fn a_damaged_point_is_none() {
        let storage = MemStorage::default();
        let dir = Path::new("/p");
        write(&storage, dir, &point()).unwrap();
        let mut bytes = storage.contents(&path(dir)).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 0x01;
        storage.set_contents(&path(dir), bytes);
        assert_eq!(read(&storage, dir, &files(&storage, dir)).unwrap(), None);
    }
}

//! A partition's clean-shutdown mark: written after the shutdown's final
//! sync, read and removed when the partition is next opened.
//!
//! With a mark that matches the log, opening trusts the active segment the
//! way it trusts sealed ones (through its synced indexes) instead of
//! reading it batch by batch, and takes the producer state from the mark
//! instead of from the segment's batch headers: a restart reads a few
//! kilobytes instead of up to a whole segment.
//!
//! Invariants: the mark is removed (durably) before the log takes another
//! append (a damaged log takes none and keeps it), so a crash after a clean restart is never taken for a clean
//! shutdown; a mark is used only if the active segment has exactly the
//! base offset, size and end offset it records, so an append after the
//! mark, or a mark from another life of the directory, sends opening down
//! the full recovery path.

use std::path::{Path, PathBuf};

use super::checked_json;
use super::error::LogError;
use super::io::Storage;
use super::recovery_point::RecoveryPoint;

const FILE_NAME: &str = "clean-shutdown";

/// The mark: a recovery point at the very end of the log.
pub type CleanShutdown = RecoveryPoint;

fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// Writes the mark durably (its file and the directory entry).
pub fn write(storage: &dyn Storage, dir: &Path, mark: &CleanShutdown) -> Result<(), LogError> {
    checked_json::write(storage, &path(dir), mark)?;
    storage
        .sync_dir(dir)
        .map_err(|e| LogError::io("fsync", dir, e))
}

/// Reads and removes the mark; `None` when there was none, or it was
/// damaged (then the log is recovered in full, as after a crash). `files`
/// are the names in `dir`, as the caller listed them.
#[cfg(test)]
pub fn take(
    storage: &dyn Storage,
    dir: &Path,
    files: &[String],
) -> Result<Option<CleanShutdown>, LogError> {
    let mark = read(storage, dir, files)?;
    remove(storage, dir, files)?;
    Ok(mark)
}

/// Reads the mark without removing it; `None` when there was none, or it
/// was damaged. Opening removes it (`remove`) before the log takes an
/// append, but not while the log is damaged: the next start must find it.
pub fn read(
    storage: &dyn Storage,
    dir: &Path,
    files: &[String],
) -> Result<Option<CleanShutdown>, LogError> {
    checked_json::read_listed(storage, dir, files, FILE_NAME, "clean-shutdown mark")
}

/// Removes the mark, if `files` has one, durably.
pub fn remove(storage: &dyn Storage, dir: &Path, files: &[String]) -> Result<(), LogError> {
    checked_json::remove_listed(storage, dir, files, FILE_NAME)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::producers::ProducerState;
    use crate::testing::MemStorage;

    fn mark() -> CleanShutdown {
        CleanShutdown {
            active_base: 10,
            active_bytes: 4096,
            next_offset: 42,
            producers: ProducerState::default(),
        }
    }

    #[test]
    fn a_mark_is_read_once() {
        let storage = MemStorage::default();
        let dir = Path::new("/p");
        storage.create_dir_all(dir).unwrap();
        assert_eq!(
            take(&storage, dir, &storage.list_files(dir).unwrap()).unwrap(),
            None
        );
        write(&storage, dir, &mark()).unwrap();
        assert_eq!(
            take(&storage, dir, &storage.list_files(dir).unwrap()).unwrap(),
            Some(mark())
        );
        assert_eq!(
            take(&storage, dir, &storage.list_files(dir).unwrap()).unwrap(),
            None,
            "removed when read"
        );
    }

    #[test]
    fn a_damaged_mark_is_ignored_and_removed() {
        let storage = MemStorage::default();
        let dir = Path::new("/p");
        storage.create_dir_all(dir).unwrap();
        write(&storage, dir, &mark()).unwrap();
        let file = storage.open(&path(dir)).unwrap();
        let len = file.len().unwrap();
        file.truncate(len - 1).unwrap();
        assert_eq!(
            take(&storage, dir, &storage.list_files(dir).unwrap()).unwrap(),
            None
        );
        assert!(
            !storage
                .list_files(dir)
                .unwrap()
                .contains(&FILE_NAME.to_owned())
        );
    }
}

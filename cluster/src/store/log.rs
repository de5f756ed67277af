//! The metadata group's Raft log on disk: one append-only file of framed
//! entries, and small files for the vote, the committed log id and the
//! purge point, each replaced atomically.
//!
//! An append is acknowledged to openraft (`LogFlushed`) only after an
//! `fdatasync`, and the vote is fsynced before `save_vote` returns: what a
//! broker promised survives a power loss. A torn last entry (a crash during
//! an append, never acknowledged) is cut off at open. Entries stay in
//! memory too: the metadata log is small and read often by replication.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::File;
use std::io::{self, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogId, RaftLogReader, StorageIOError};
use parking_lot::Mutex;

use super::files::{
    Records, frame, open_append, read_json, read_records, replace_file, replace_json,
};
use crate::types::{LogId, MetaEntry, MetaRaftConfig, StorageError, Vote};

const LOG: &str = "log";
const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "purged";

/// Purged entries the log file may keep before it is rewritten without
/// them.
const PURGED_IN_FILE_MAX: usize = 4096;

/// The log store; clones share it (openraft's reader is a clone).
#[derive(Debug, Clone)]
pub struct LogStore {
    inner: Arc<Mutex<LogFile>>,
}

#[derive(Debug)]
struct LogFile {
    dir: PathBuf,
    file: File,
    /// Every entry after the purge point, by index, with where it starts
    /// in the file.
    entries: BTreeMap<u64, (MetaEntry, u64)>,
    /// Bytes of the file that hold entries.
    end: u64,
    /// Entries in the file at or before the purge point.
    purged_in_file: usize,
    last_purged: Option<LogId>,
    vote: Option<Vote>,
    committed: Option<LogId>,
}

impl LogStore {
    /// Opens (or creates) the log in `dir`.
    pub fn open(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let last_purged: Option<LogId> = read_json(dir, PURGED)?;
        let vote: Option<Vote> = read_json(dir, VOTE)?;
        let committed: Option<LogId> = read_json(dir, COMMITTED)?;
        let path = dir.join(LOG);
        let mut file = open_append(&path)?;
        let Records { records, intact } = read_records(&mut file)?;
        let length = file.metadata()?.len();
        if intact < length {
            tracing::warn!(
                path = %path.display(),
                cut_bytes = length - intact,
                "the metadata log ends in a torn entry (a crash during an append); cutting it off"
            );
            file.set_len(intact)?;
            file.sync_all()?;
        }
        let mut entries = BTreeMap::new();
        let mut purged_in_file = 0;
        for (offset, payload) in records {
            let entry: MetaEntry = serde_json::from_slice(&payload).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} at byte {offset}: {e}", path.display()),
                )
            })?;
            let index = entry.get_log_id().index;
            if last_purged.is_some_and(|purged| index <= purged.index) {
                purged_in_file += 1;
                continue;
            }
            // A truncation rewrites the tail, so a later entry of the same
            // index replaces an earlier one.
            entries.split_off(&index);
            entries.insert(index, (entry, offset));
        }
        Ok(Self {
            inner: Arc::new(Mutex::new(LogFile {
                dir: dir.to_owned(),
                file,
                entries,
                end: intact,
                purged_in_file,
                last_purged,
                vote,
                committed,
            })),
        })
    }
}

#[cfg(test)]
impl LogStore {
    /// Appends durably, as `append` does, without openraft's callback.
    pub(crate) fn append_now(&self, entries: Vec<MetaEntry>) -> io::Result<()> {
        self.inner.lock().append(entries)
    }
}

impl LogFile {
    fn append(&mut self, entries: Vec<MetaEntry>) -> io::Result<()> {
        let mut bytes = Vec::new();
        let mut placed = Vec::with_capacity(entries.len());
        for entry in entries {
            let payload = serde_json::to_vec(&entry).map_err(io::Error::other)?;
            placed.push((entry, self.end + bytes.len() as u64));
            bytes.extend_from_slice(&frame(&payload)?);
        }
        self.file.write_all(&bytes)?;
        self.file.sync_data()?;
        self.end += bytes.len() as u64;
        for (entry, offset) in placed {
            self.entries
                .insert(entry.get_log_id().index, (entry, offset));
        }
        Ok(())
    }

    /// Removes the entries from `index` on, from memory and the file.
    fn truncate(&mut self, index: u64) -> io::Result<()> {
        let removed = self.entries.split_off(&index);
        if let Some((_, (_, offset))) = removed.first_key_value() {
            self.file.set_len(*offset)?;
            self.file.sync_data()?;
            self.end = *offset;
        }
        Ok(())
    }

    fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        replace_json(&self.dir, PURGED, &log_id)?;
        let kept = self.entries.split_off(&(log_id.index + 1));
        self.purged_in_file += self.entries.len();
        self.entries = kept;
        self.last_purged = Some(log_id);
        if self.purged_in_file > PURGED_IN_FILE_MAX {
            self.rewrite()?;
        }
        Ok(())
    }

    /// Rewrites the file with only the entries after the purge point.
    fn rewrite(&mut self) -> io::Result<()> {
        let mut bytes = Vec::new();
        let mut entries = BTreeMap::new();
        for (index, (entry, _)) in std::mem::take(&mut self.entries) {
            let payload = serde_json::to_vec(&entry).map_err(io::Error::other)?;
            let offset = bytes.len() as u64;
            bytes.extend_from_slice(&frame(&payload)?);
            entries.insert(index, (entry, offset));
        }
        replace_file(&self.dir, LOG, &bytes)?;
        self.file = open_append(&self.dir.join(LOG))?;
        self.entries = entries;
        self.end = bytes.len() as u64;
        self.purged_in_file = 0;
        Ok(())
    }
}

impl RaftLogReader<MetaRaftConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<MetaEntry>, StorageError> {
        Ok(self
            .inner
            .lock()
            .entries
            .range(range)
            .map(|(_, (entry, _))| entry.clone())
            .collect())
    }
}

impl RaftLogStorage<MetaRaftConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<MetaRaftConfig>, StorageError> {
        let inner = self.inner.lock();
        let last = inner
            .entries
            .last_key_value()
            .map(|(_, (entry, _))| *entry.get_log_id())
            .or(inner.last_purged);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let mut inner = self.inner.lock();
        replace_json(&inner.dir, VOTE, vote).map_err(|e| StorageIOError::write_vote(&e))?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.inner.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let mut inner = self.inner.lock();
        // Not needed for safety (the committed index is learned again from
        // the leader); it lets a restarted broker apply what it knew was
        // committed before hearing from anyone.
        replace_json(&inner.dir, COMMITTED, &committed).map_err(|e| StorageIOError::write(&e))?;
        inner.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.inner.lock().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<MetaRaftConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = MetaEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let result = self.inner.lock().append(entries.into_iter().collect());
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let error = StorageIOError::write_logs(&e);
                callback.log_io_completed(Err(e));
                Err(error.into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.inner
            .lock()
            .truncate(log_id.index)
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.inner
            .lock()
            .purge(log_id)
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}

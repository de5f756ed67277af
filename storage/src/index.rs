//! Sparse indexes beside each segment: the offset index maps a record offset
//! (relative to the segment's base) to the byte position of the batch that
//! holds it; the time index maps a timestamp to the first offset at or after
//! which records reach that timestamp.
//!
//! Both live in memory and are mirrored to their files by appending; they are
//! not fsynced on every append because recovery can rebuild them from the log.
//! Invariant: entries are strictly increasing in offset (and position, and
//! timestamp for the time index).

use std::io::{self, IoSlice};
use std::sync::Arc;

use super::io::{LogFile, read_full_at};

/// One offset index entry on disk: relative offset u32 LE, position u32 LE.
pub const OFFSET_ENTRY_LEN: usize = 8;
/// One time index entry on disk: timestamp i64 LE, relative offset u32 LE.
pub const TIME_ENTRY_LEN: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

/// Offset → position.
#[derive(Debug)]
pub struct OffsetIndex {
    entries: Vec<OffsetEntry>,
    /// The file the entries are mirrored to; `None` once the segment is
    /// sealed and the file closed (lookups need only the entries).
    file: Option<Arc<dyn LogFile>>,
}

impl OffsetIndex {
    /// Reads the index file. Returns `None` when its contents are not a
    /// well-formed index (wrong length, entries out of order), so the caller
    /// rebuilds it.
    pub fn load(file: Arc<dyn LogFile>) -> io::Result<Option<Self>> {
        let bytes = read_whole(file.as_ref())?;
        if bytes.len() % OFFSET_ENTRY_LEN != 0 {
            return Ok(None);
        }
        let entries: Vec<OffsetEntry> = bytes
            .chunks_exact(OFFSET_ENTRY_LEN)
            .map(offset_entry)
            .collect();
        let ordered = entries.windows(2).all(|w| w[1].follows(w[0]));
        Ok(ordered.then_some(Self {
            entries,
            file: Some(file),
        }))
    }

    /// Reads the longest well-formed prefix of the index file whose entries
    /// all satisfy `keep`, and cuts the file to it (so that later entries
    /// follow it). For an index whose tail may be stale or torn.
    pub fn load_prefix(
        file: Arc<dyn LogFile>,
        keep: impl Fn(&OffsetEntry) -> bool,
    ) -> io::Result<Self> {
        let entries = load_prefix_of(
            file.as_ref(),
            OFFSET_ENTRY_LEN,
            offset_entry,
            OffsetEntry::follows,
            keep,
        )?;
        Ok(Self {
            entries,
            file: Some(file),
        })
    }

    /// Replaces the file's contents with `entries`.
    pub fn rewrite(file: Arc<dyn LogFile>, entries: &[OffsetEntry]) -> io::Result<Self> {
        file.truncate(0)?;
        let mut index = Self {
            entries: Vec::new(),
            file: Some(file),
        };
        index.extend(entries)?;
        Ok(index)
    }

    pub fn push(&mut self, entry: OffsetEntry) -> io::Result<()> {
        self.extend(&[entry])
    }

    /// Appends `entries` with one write.
    pub fn extend(&mut self, entries: &[OffsetEntry]) -> io::Result<()> {
        let mut bytes = Vec::with_capacity(entries.len() * OFFSET_ENTRY_LEN);
        let mut last = self.entries.last().copied();
        for entry in entries {
            assert!(
                last.is_none_or(|last| entry.follows(last)),
                "offset index entries must increase"
            );
            bytes.extend_from_slice(&entry.relative_offset.to_le_bytes());
            bytes.extend_from_slice(&entry.position.to_le_bytes());
            last = Some(*entry);
        }
        if bytes.is_empty() {
            return Ok(());
        }
        self.file()?.append(&[IoSlice::new(&bytes)])?;
        self.entries.extend_from_slice(entries);
        Ok(())
    }

    /// The last entry at or below `relative_offset`: where to start scanning.
    pub fn floor(&self, relative_offset: u32) -> Option<OffsetEntry> {
        let idx = self
            .entries
            .partition_point(|e| e.relative_offset <= relative_offset);
        idx.checked_sub(1).map(|i| self.entries[i])
    }

    pub fn last(&self) -> Option<OffsetEntry> {
        self.entries.last().copied()
    }

    pub fn entries(&self) -> &[OffsetEntry] {
        &self.entries
    }

    /// Keeps the first `len` entries, in memory and in the file: undoes
    /// entries (or torn bytes) of an append that failed.
    pub fn cut_back(&mut self, len: usize) -> io::Result<()> {
        self.file()?.truncate((len * OFFSET_ENTRY_LEN) as u64)?;
        self.entries.truncate(len);
        Ok(())
    }

    /// Syncs the file; nothing to do once it is closed (a segment is
    /// synced whole before it is closed).
    pub fn sync(&self) -> io::Result<()> {
        self.file.as_ref().map_or(Ok(()), |file| file.sync())
    }

    /// Closes the file, keeping the entries: for a sealed segment, which
    /// is never written again.
    pub fn close_file(&mut self) {
        self.file = None;
    }

    fn file(&self) -> io::Result<&Arc<dyn LogFile>> {
        self.file.as_ref().ok_or_else(closed_index)
    }
}

/// Timestamp → offset.
#[derive(Debug)]
pub struct TimeIndex {
    entries: Vec<TimeEntry>,
    /// As the offset index's: `None` once sealed and closed.
    file: Option<Arc<dyn LogFile>>,
}

impl TimeIndex {
    /// Reads the index file; `None` when it is not well formed.
    pub fn load(file: Arc<dyn LogFile>) -> io::Result<Option<Self>> {
        let bytes = read_whole(file.as_ref())?;
        if bytes.len() % TIME_ENTRY_LEN != 0 {
            return Ok(None);
        }
        let entries: Vec<TimeEntry> = bytes.chunks_exact(TIME_ENTRY_LEN).map(time_entry).collect();
        let ordered = entries.windows(2).all(|w| w[1].follows(w[0]));
        Ok(ordered.then_some(Self {
            entries,
            file: Some(file),
        }))
    }

    /// Reads the longest well-formed prefix of the index file whose entries
    /// all satisfy `keep`, and cuts the file to it.
    pub fn load_prefix(
        file: Arc<dyn LogFile>,
        keep: impl Fn(&TimeEntry) -> bool,
    ) -> io::Result<Self> {
        let entries = load_prefix_of(
            file.as_ref(),
            TIME_ENTRY_LEN,
            time_entry,
            TimeEntry::follows,
            keep,
        )?;
        Ok(Self {
            entries,
            file: Some(file),
        })
    }

    pub fn rewrite(file: Arc<dyn LogFile>, entries: &[TimeEntry]) -> io::Result<Self> {
        file.truncate(0)?;
        let mut index = Self {
            entries: Vec::new(),
            file: Some(file),
        };
        index.extend(entries)?;
        Ok(index)
    }

    /// Appends an entry; one whose timestamp is not above the last entry's
    /// adds nothing (its offset is found through the earlier entry).
    pub fn push(&mut self, entry: TimeEntry) -> io::Result<()> {
        self.extend(&[entry])
    }

    /// Appends `entries` (as `push` each) with one write.
    pub fn extend(&mut self, entries: &[TimeEntry]) -> io::Result<()> {
        let file = self.file()?.clone();
        let mut bytes = Vec::with_capacity(entries.len() * TIME_ENTRY_LEN);
        let kept_from = self.entries.len();
        for &entry in entries {
            if self
                .entries
                .last()
                .is_some_and(|last| entry.timestamp <= last.timestamp)
            {
                continue;
            }
            bytes.extend_from_slice(&entry.timestamp.to_le_bytes());
            bytes.extend_from_slice(&entry.relative_offset.to_le_bytes());
            self.entries.push(entry);
        }
        if bytes.is_empty() {
            return Ok(());
        }
        if let Err(e) = file.append(&[IoSlice::new(&bytes)]) {
            self.entries.truncate(kept_from);
            return Err(e);
        }
        Ok(())
    }

    /// The relative offset to start scanning from for the first record with a
    /// timestamp at or after `timestamp`: the entry just before the first one
    /// that reaches it (records between two entries may reach it earlier).
    pub fn scan_start(&self, timestamp: i64) -> u32 {
        let idx = self.entries.partition_point(|e| e.timestamp < timestamp);
        idx.checked_sub(1)
            .map_or(0, |i| self.entries[i].relative_offset)
    }

    /// Keeps the first `len` entries, in memory and in the file: undoes
    /// entries (or torn bytes) of an append that failed.
    pub fn cut_back(&mut self, len: usize) -> io::Result<()> {
        self.file()?.truncate((len * TIME_ENTRY_LEN) as u64)?;
        self.entries.truncate(len);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn first_relative_offset(&self) -> Option<u32> {
        self.entries.first().map(|e| e.relative_offset)
    }

    pub fn max_timestamp(&self) -> Option<i64> {
        self.entries.last().map(|e| e.timestamp)
    }

    /// Syncs the file; nothing to do once it is closed (a segment is
    /// synced whole before it is closed).
    pub fn sync(&self) -> io::Result<()> {
        self.file.as_ref().map_or(Ok(()), |file| file.sync())
    }

    /// Closes the file, keeping the entries: for a sealed segment, which
    /// is never written again.
    pub fn close_file(&mut self) {
        self.file = None;
    }

    fn file(&self) -> io::Result<&Arc<dyn LogFile>> {
        self.file.as_ref().ok_or_else(closed_index)
    }
}

impl OffsetEntry {
    /// Whether the entry may come after `earlier` in an index.
    fn follows(self, earlier: Self) -> bool {
        earlier.relative_offset < self.relative_offset && earlier.position < self.position
    }
}

impl TimeEntry {
    /// Whether the entry may come after `earlier` in an index.
    fn follows(self, earlier: Self) -> bool {
        earlier.timestamp < self.timestamp && earlier.relative_offset <= self.relative_offset
    }
}

/// Decodes one offset index entry from `OFFSET_ENTRY_LEN` bytes.
fn offset_entry(c: &[u8]) -> OffsetEntry {
    OffsetEntry {
        relative_offset: u32::from_le_bytes([c[0], c[1], c[2], c[3]]),
        position: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
    }
}

/// Decodes one time index entry from `TIME_ENTRY_LEN` bytes.
fn time_entry(c: &[u8]) -> TimeEntry {
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&c[..8]);
    TimeEntry {
        timestamp: i64::from_le_bytes(ts),
        relative_offset: u32::from_le_bytes([c[8], c[9], c[10], c[11]]),
    }
}

/// A write to the index of a sealed segment: a bug in the caller, reported
/// as an error rather than a crash of the partition's writer.
fn closed_index() -> io::Error {
    io::Error::other("the index of a sealed segment is not written")
}

/// The longest prefix of an index file's entries (`entry_len` bytes each)
/// in which every entry follows the one before and is one to `keep`; the
/// file is cut back to it.
fn load_prefix_of<E: Copy>(
    file: &dyn LogFile,
    entry_len: usize,
    decode: impl Fn(&[u8]) -> E,
    follows: impl Fn(E, E) -> bool,
    keep: impl Fn(&E) -> bool,
) -> io::Result<Vec<E>> {
    let bytes = read_whole(file)?;
    let mut entries: Vec<E> = Vec::new();
    for chunk in bytes.chunks_exact(entry_len) {
        let entry = decode(chunk);
        let ordered = entries.last().is_none_or(|&last| follows(entry, last));
        if !ordered || !keep(&entry) {
            break;
        }
        entries.push(entry);
    }
    let kept = entries.len() * entry_len;
    if kept < bytes.len() {
        file.truncate(kept as u64)?;
    }
    Ok(entries)
}

fn read_whole(file: &dyn LogFile) -> io::Result<Vec<u8>> {
    let len =
        usize::try_from(file.len()?).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let mut bytes = vec![0u8; len];
    let n = read_full_at(file, &mut bytes, 0)?;
    bytes.truncate(n);
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::Storage;
    use crate::testing::MemStorage;
    use std::path::Path;

    fn file() -> Arc<dyn LogFile> {
        MemStorage::default().open(Path::new("/i")).unwrap()
    }

    #[test]
    fn floor_finds_last_entry_at_or_below() {
        let mut index = OffsetIndex::rewrite(file(), &[]).unwrap();
        for (o, p) in [(0, 0), (10, 4096), (25, 8200)] {
            index
                .push(OffsetEntry {
                    relative_offset: o,
                    position: p,
                })
                .unwrap();
        }
        assert_eq!(index.floor(9).unwrap().position, 0);
        assert_eq!(index.floor(10).unwrap().position, 4096);
        assert_eq!(index.floor(1000).unwrap().position, 8200);
    }

    #[test]
    fn load_round_trips_and_rejects_garbage() {
        let f = file();
        let mut index = OffsetIndex::rewrite(f.clone(), &[]).unwrap();
        index
            .push(OffsetEntry {
                relative_offset: 3,
                position: 100,
            })
            .unwrap();
        let loaded = OffsetIndex::load(f.clone()).unwrap().unwrap();
        assert_eq!(loaded.entries(), index.entries());
        f.append(&[IoSlice::new(&[1, 2, 3])]).unwrap();
        assert!(OffsetIndex::load(f).unwrap().is_none());
    }

    #[test]
    fn time_index_scan_start() {
        let mut index = TimeIndex::rewrite(file(), &[]).unwrap();
        index
            .push(TimeEntry {
                timestamp: 100,
                relative_offset: 0,
            })
            .unwrap();
        index
            .push(TimeEntry {
                timestamp: 90,
                relative_offset: 5,
            })
            .unwrap();
        index
            .push(TimeEntry {
                timestamp: 200,
                relative_offset: 10,
            })
            .unwrap();
        assert_eq!(index.scan_start(50), 0);
        assert_eq!(index.scan_start(150), 0);
        assert_eq!(index.scan_start(250), 10);
        assert_eq!(index.max_timestamp(), Some(200));
    }

    #[test]
    fn load_prefix_keeps_ordered_wanted_entries_and_cuts_the_file() {
        let f = file();
        let entries = [(0, 0), (1, 10), (2, 20), (3, 30)].map(|(o, p)| OffsetEntry {
            relative_offset: o,
            position: p,
        });
        OffsetIndex::rewrite(f.clone(), &entries).unwrap();
        let loaded = OffsetIndex::load_prefix(f.clone(), |e| e.position < 25).unwrap();
        assert_eq!(loaded.entries(), &entries[..3]);
        assert_eq!(f.len().unwrap(), 3 * OFFSET_ENTRY_LEN as u64);

        // Out of order, then a torn entry: only what comes before counts.
        f.append(&[IoSlice::new(&[0; OFFSET_ENTRY_LEN]), IoSlice::new(&[9; 3])])
            .unwrap();
        let loaded = OffsetIndex::load_prefix(f.clone(), |_| true).unwrap();
        assert_eq!(loaded.entries(), &entries[..3]);
        assert_eq!(f.len().unwrap(), 3 * OFFSET_ENTRY_LEN as u64);

        let t = file();
        let times = [(5, 0), (7, 1), (9, 4)].map(|(timestamp, o)| TimeEntry {
            timestamp,
            relative_offset: o,
        });
        TimeIndex::rewrite(t.clone(), &times).unwrap();
        let loaded = TimeIndex::load_prefix(t.clone(), |e| e.relative_offset <= 1).unwrap();
        assert_eq!(loaded.max_timestamp(), Some(7));
        assert_eq!(t.len().unwrap(), 2 * TIME_ENTRY_LEN as u64);
    }
}

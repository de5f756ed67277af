//! The bound on open files of sealed segments.
//!
//! An active segment keeps its three files open (it is appended to). A
//! sealed one needs no file for its indexes, which are in memory from the
//! moment it is opened, and its log file only while someone reads it: it is
//! opened on demand and kept in `OpenSegments`, a least-recently-read cache
//! of at most `max` sealed segments, shared by every partition of a broker
//! (the descriptor limit is the process's, not a partition's). Opening one
//! more closes the least recently read.
//!
//! Invariants: a sealed segment's log file is open only while the segment
//! is in the cache or is being evicted from it, so at most `max` of them
//! (plus those being evicted and those a reader holds a moment longer) are
//! open at once. The cache's lock is never held while a segment's own lock
//! is taken: victims are closed after it is released.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::segment::Segment;

/// Sealed segments whose log file stays open, by default, across a broker.
pub const DEFAULT_OPEN_SEGMENTS_MAX: usize = 256;

/// A least-recently-read set of sealed segments with an open log file.
#[derive(Debug)]
pub struct OpenSegments {
    max: usize,
    /// The segments, by id and by last read; one lock, held only for
    /// bookkeeping (never across I/O or another segment's lock).
    state: Mutex<Lru>,
}

#[derive(Debug, Default)]
struct Lru {
    /// Bumped at every read: the order of reads.
    tick: u64,
    /// Segment id → its last read and the segment.
    by_id: HashMap<u64, (u64, Weak<Segment>)>,
    /// Last read → segment id, oldest first.
    by_tick: BTreeMap<u64, u64>,
}

impl OpenSegments {
    /// A cache of at most `max` sealed segments' open files (`max` ≥ 1).
    pub fn new(max: usize) -> Self {
        assert!(max >= 1, "at least one sealed segment must be readable");
        Self {
            max,
            state: Mutex::new(Lru::default()),
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Sealed segments whose log file is open now.
    pub fn len(&self) -> usize {
        self.state.lock().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Marks a segment as read now, if it is in the cache.
    pub(crate) fn touch(&self, id: u64) {
        let mut state = self.state.lock();
        state.tick += 1;
        let tick = state.tick;
        if let Some((last, _)) = state.by_id.get_mut(&id) {
            let previous = std::mem::replace(last, tick);
            state.by_tick.remove(&previous);
            state.by_tick.insert(tick, id);
        }
    }

    /// Adds a segment whose log file was just opened (or stays open after
    /// it was sealed) and returns those that must now close theirs, least
    /// recently read first. The caller closes them after this returns.
    pub(crate) fn insert(&self, id: u64, segment: &Arc<Segment>) -> Vec<Arc<Segment>> {
        let mut state = self.state.lock();
        state.tick += 1;
        let tick = state.tick;
        if let Some((previous, _)) = state.by_id.insert(id, (tick, Arc::downgrade(segment))) {
            state.by_tick.remove(&previous);
        }
        state.by_tick.insert(tick, id);
        let mut victims = Vec::new();
        while state.by_id.len() > self.max {
            let Some((_, oldest)) = state.by_tick.pop_first() else {
                break;
            };
            // A segment dropped meanwhile (retention, a deleted topic)
            // closed its file with it; its entry just goes.
            if let Some(victim) = state.by_id.remove(&oldest).and_then(|(_, s)| s.upgrade()) {
                victims.push(victim);
            }
        }
        victims
    }

    /// Forgets a segment (deleted by retention): its file is closed by the
    /// caller or when the segment is dropped.
    pub(crate) fn remove(&self, id: u64) {
        let mut state = self.state.lock();
        if let Some((tick, _)) = state.by_id.remove(&id) {
            state.by_tick.remove(&tick);
        }
    }
}

impl Default for OpenSegments {
    fn default() -> Self {
        Self::new(DEFAULT_OPEN_SEGMENTS_MAX)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{self, IoSlice};
    use std::path::Path;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use brook_record::{BatchHeader, BatchOptions, NewRecord};
    use bytes::Bytes;

    use super::OpenSegments;
    use crate::{LogConfig, LogFile, OsStorage, PartitionLog, Storage, SyncGroup};

    /// The real file system, counting the files open through it now and
    /// at most: each handle is one descriptor.
    #[derive(Debug, Default)]
    struct CountingStorage {
        open_now: Arc<AtomicUsize>,
        open_max: Arc<AtomicUsize>,
    }

    #[derive(Debug)]
    struct CountedFile {
        inner: Arc<dyn LogFile>,
        open_now: Arc<AtomicUsize>,
    }

    impl Drop for CountedFile {
        fn drop(&mut self) {
            self.open_now.fetch_sub(1, Ordering::SeqCst);
        }
    }

    impl LogFile for CountedFile {
        fn read_at(&self, buf: &mut [u8], position: u64) -> io::Result<usize> {
            self.inner.read_at(buf, position)
        }
        fn append(&self, bufs: &[IoSlice<'_>]) -> io::Result<()> {
            self.inner.append(bufs)
        }
        fn sync(&self) -> io::Result<()> {
            self.inner.sync()
        }
        fn truncate(&self, len: u64) -> io::Result<()> {
            self.inner.truncate(len)
        }
        fn len(&self) -> io::Result<u64> {
            self.inner.len()
        }
    }

    impl Storage for CountingStorage {
        fn open(&self, path: &Path) -> io::Result<Arc<dyn LogFile>> {
            let inner = OsStorage.open(path)?;
            let now = self.open_now.fetch_add(1, Ordering::SeqCst) + 1;
            self.open_max.fetch_max(now, Ordering::SeqCst);
            Ok(Arc::new(CountedFile {
                inner,
                open_now: self.open_now.clone(),
            }))
        }
        fn remove_file(&self, path: &Path) -> io::Result<()> {
            OsStorage.remove_file(path)
        }
        fn create_dir_all(&self, path: &Path) -> io::Result<()> {
            OsStorage.create_dir_all(path)
        }
        fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
            OsStorage.remove_dir_all(path)
        }
        fn list_files(&self, path: &Path) -> io::Result<Vec<String>> {
            OsStorage.list_files(path)
        }
        fn list_dirs(&self, path: &Path) -> io::Result<Vec<String>> {
            OsStorage.list_dirs(path)
        }
        fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
            OsStorage.rename(from, to)
        }
        fn sync_dir(&self, path: &Path) -> io::Result<()> {
            OsStorage.sync_dir(path)
        }
        fn sync_group(&self, _dir: &Path) -> io::Result<SyncGroup> {
            Ok(SyncGroup::per_file())
        }
    }

    fn batch(offset: i64) -> (Bytes, BatchHeader) {
        let record = NewRecord {
            timestamp: 1_000 + offset,
            value: Some(Bytes::from(format!("{offset:0>300}"))),
            ..NewRecord::default()
        };
        let bytes = brook_record::encode_batch(&[record], BatchOptions::default()).unwrap();
        let header = BatchHeader::parse(&bytes).unwrap();
        (bytes, header)
    }

    const BATCHES: i64 = 200;
    /// The active segment's log and two indexes.
    const ACTIVE_FILES: usize = 3;
    const BOUND: usize = 4;

    fn open(dir: &Path, storage: &Arc<CountingStorage>) -> PartitionLog {
        let config = LogConfig {
            segment_bytes: 1024,
            ..LogConfig::default()
        };
        let (log, _) = PartitionLog::open(storage.clone(), dir, config).unwrap();
        log.share_open_segments(Arc::new(OpenSegments::new(BOUND)));
        log
    }

    fn read_every_offset(log: &PartitionLog, storage: &CountingStorage) {
        for offset in 0..BATCHES {
            let read = log.read(offset, 1).unwrap();
            assert_eq!(brook_record::read_base_offset(&read.records), Some(offset));
            assert!(storage.open_now.load(Ordering::SeqCst) <= ACTIVE_FILES + BOUND);
        }
        assert_eq!(log.find_timestamp(1_000 + 5).unwrap(), Some((5, 1_005)));
        assert!(storage.open_now.load(Ordering::SeqCst) <= ACTIVE_FILES + BOUND);
    }

    #[test]
    fn a_log_of_many_segments_keeps_at_most_the_bound_of_sealed_files_open() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Arc::new(CountingStorage::default());
        let log = open(dir.path(), &storage);
        for offset in 0..BATCHES {
            log.append(&[batch(offset)], 0).unwrap();
            let mark = log.sync().unwrap();
            log.publish(&mark);
        }
        let segments = log.segment_count();
        assert!(segments > 50, "{segments} segments");
        assert!(
            storage.open_now.load(Ordering::SeqCst) <= ACTIVE_FILES + BOUND,
            "{} files open for {segments} segments",
            storage.open_now.load(Ordering::SeqCst)
        );
        read_every_offset(&log, &storage);
        log.close_clean().unwrap();
        drop(log);
        assert_eq!(storage.open_now.load(Ordering::SeqCst), 0);

        // A restart checks every sealed segment, one at a time, and keeps
        // none of them open.
        let storage = Arc::new(CountingStorage::default());
        let log = open(dir.path(), &storage);
        assert_eq!(log.segment_count(), segments);
        assert_eq!(storage.open_now.load(Ordering::SeqCst), ACTIVE_FILES);
        assert!(
            storage.open_max.load(Ordering::SeqCst) <= 2 * ACTIVE_FILES,
            "{} files open at once while opening",
            storage.open_max.load(Ordering::SeqCst)
        );
        read_every_offset(&log, &storage);
        log.append(&[batch(BATCHES)], 0).unwrap();
    }
}

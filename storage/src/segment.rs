//! One segment: a log file of whole record batches, stored exactly as they
//! were produced (base offset stamped), plus its offset and time indexes.
//!
//! Invariants: batches in a segment have dense offsets starting at the
//! segment's base offset; readers never see past `visible_bytes`, which only
//! grows, and only to batch boundaries. The active segment keeps its three
//! files open; a sealed one keeps its indexes in memory only, and its log
//! file open only while `OpenSegments` holds it (reopened for a read).

use std::io::{self, IoSlice};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

/// Gives each segment an identity for `OpenSegments`.
static NEXT_SEGMENT_ID: AtomicU64 = AtomicU64::new(0);

use brook_record::{BatchHeader, HEADER_LEN, LENGTH_PREFIX_LEN};
use bytes::{Bytes, BytesMut};
use parking_lot::{Mutex, RwLock};

use super::damage::{Damage, Floor};
use super::error::LogError;
use super::index::{OffsetEntry, OffsetIndex, TimeEntry, TimeIndex};
use super::io::{LogFile, Storage, read_exact_at};
use super::open_segments::OpenSegments;
use super::recovery_point::RecoveryPoint;
use super::scan::{ScanOutcome, ScanStart, Scanner, TailDamage};

/// Paths of a segment's three files.
#[derive(Debug, Clone)]
pub struct SegmentPaths {
    pub log: PathBuf,
    pub index: PathBuf,
    pub time_index: PathBuf,
}

impl SegmentPaths {
    pub fn new(dir: &Path, base_offset: i64) -> Self {
        Self {
            log: dir.join(format!("{base_offset:020}.log")),
            index: dir.join(format!("{base_offset:020}.index")),
            time_index: dir.join(format!("{base_offset:020}.timeindex")),
        }
    }
}

/// Parses a segment log file name (`00000000000000001234.log`) into its base offset.
pub fn parse_log_name(name: &str) -> Option<i64> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

#[derive(Debug)]
pub struct Segment {
    base_offset: i64,
    /// Its key in `OpenSegments`.
    id: u64,
    paths: SegmentPaths,
    /// The log file while it is open: always while the segment is active;
    /// once sealed, while `OpenSegments` keeps it (readers take a clone, so
    /// closing it never cuts a read short).
    log: RwLock<Option<Arc<dyn LogFile>>>,
    /// Set (under `log`'s lock) once retention or a deletion forgot the
    /// segment: a late reader must not open its file again.
    deleted: AtomicBool,
    /// Written by the partition's single writer, read by fetches.
    index: RwLock<OffsetIndex>,
    /// Written by the partition's single writer, read by timestamp lookups.
    time_index: RwLock<TimeIndex>,
    /// Bytes written to the log file (the writer's view).
    written_bytes: AtomicU64,
    /// Bytes readers may see: durable ones, or written ones when the fsync
    /// policy does not wait for the disk. Always at a batch boundary.
    visible_bytes: AtomicU64,
    /// The offset after the last batch written.
    next_offset: AtomicI64,
    /// Largest record timestamp in the segment (`i64::MIN` while empty).
    max_timestamp: AtomicI64,
    /// Wall-clock milliseconds of the first append, for roll by age.
    first_append_ms: AtomicI64,
    /// Bytes appended since the last offset index entry (writer only).
    bytes_since_index: AtomicU64,
    /// Held while the log file is synced: syncs of a segment run one at a
    /// time, so `sync_failed` is set before any other sync can report.
    syncing: Mutex<()>,
    /// A sync of the log file or of an index failed.
    sync_failed: AtomicBool,
}

/// What recovery of the active segment found.
#[derive(Debug)]
pub struct Recovery {
    pub segment: Segment,
    /// Damage found and cut off, if any.
    pub damage: Option<TailDamage>,
    pub truncated_bytes: u64,
    /// The segment ends before the synced end of the `Floor` it was held
    /// to. Unless the loss was accepted, nothing was cut.
    pub shortfall: Option<Damage>,
}

impl Segment {
    /// Creates an empty segment (any leftover files of that name are emptied).
    pub fn create(storage: &dyn Storage, dir: &Path, base_offset: i64) -> Result<Self, LogError> {
        // A failure leaves at most empty files that the next try empties
        // again: a resource shortage here is `ResourceExhausted`.
        let paths = SegmentPaths::new(dir, base_offset);
        let log = open(storage, &paths.log)?;
        log.truncate(0)
            .map_err(|e| LogError::io_or_resource("truncate", &paths.log, e))?;
        let index = OffsetIndex::rewrite(open(storage, &paths.index)?, &[])
            .map_err(|e| LogError::io_or_resource("write", &paths.index, e))?;
        let time_index = TimeIndex::rewrite(open(storage, &paths.time_index)?, &[])
            .map_err(|e| LogError::io_or_resource("write", &paths.time_index, e))?;
        Ok(Self::assemble(
            base_offset,
            paths,
            log,
            index,
            time_index,
            0,
            base_offset,
            i64::MIN,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        base_offset: i64,
        paths: SegmentPaths,
        log: Arc<dyn LogFile>,
        index: OffsetIndex,
        time_index: TimeIndex,
        size: u64,
        next_offset: i64,
        max_timestamp: i64,
    ) -> Self {
        Self {
            base_offset,
            id: NEXT_SEGMENT_ID.fetch_add(1, Ordering::Relaxed),
            paths,
            log: RwLock::new(Some(log)),
            deleted: AtomicBool::new(false),
            index: RwLock::new(index),
            time_index: RwLock::new(time_index),
            written_bytes: AtomicU64::new(size),
            visible_bytes: AtomicU64::new(size),
            next_offset: AtomicI64::new(next_offset),
            max_timestamp: AtomicI64::new(max_timestamp),
            first_append_ms: AtomicI64::new(i64::MIN),
            bytes_since_index: AtomicU64::new(0),
            syncing: Mutex::new(()),
            sync_failed: AtomicBool::new(false),
        }
    }

    /// Opens a sealed (not last) segment. Its indexes are trusted when they
    /// are well formed and their last entry points at the batch it names;
    /// otherwise they are rebuilt from the log's batch headers. Its files
    /// are closed again before it returns (the indexes stay in memory), so
    /// opening a partition holds no more than one segment's files at a time.
    pub fn open_sealed(
        storage: &dyn Storage,
        dir: &Path,
        base_offset: i64,
    ) -> Result<Self, LogError> {
        let segment = Self::open_through_indexes(storage, dir, base_offset)?;
        segment.close_files();
        Ok(segment)
    }

    /// `open_sealed`, keeping the files open.
    fn open_through_indexes(
        storage: &dyn Storage,
        dir: &Path,
        base_offset: i64,
    ) -> Result<Self, LogError> {
        let paths = SegmentPaths::new(dir, base_offset);
        let log = open(storage, &paths.log)?;
        let size = log.len().map_err(|e| LogError::io("stat", &paths.log, e))?;
        let index_file = open(storage, &paths.index)?;
        let time_file = open(storage, &paths.time_index)?;
        let loaded = OffsetIndex::load(index_file.clone())
            .map_err(|e| LogError::io("read", &paths.index, e))?
            .filter(|index| index_matches_log(index, log.as_ref(), base_offset, size));
        // An empty time index beside a non-empty log was lost, not empty.
        let time_loaded = TimeIndex::load(time_file.clone())
            .map_err(|e| LogError::io("read", &paths.time_index, e))?
            .filter(|t| size == 0 || t.max_timestamp().is_some());
        let (index, time_index) = if let (Some(index), Some(time_index)) = (loaded, time_loaded) {
            (index, time_index)
        } else {
            {
                tracing::warn!(path = %paths.index.display(), "index missing or damaged; rebuilding");
                let mut scanner = Scanner::new(log.as_ref(), size);
                let scan = scanner
                    .walk_headers(0, base_offset, &mut |_| {})
                    .map_err(|e| LogError::io("read", &paths.log, e))?;
                let index = OffsetIndex::rewrite(index_file, &scan.index)
                    .map_err(|e| LogError::io("write", &paths.index, e))?;
                let time_index = TimeIndex::rewrite(time_file, &scan.time_index)
                    .map_err(|e| LogError::io("write", &paths.time_index, e))?;
                (index, time_index)
            }
        };
        // The tail after the last index entry holds the end offset.
        let tail_start = index.last().map_or(0, |e| u64::from(e.position));
        let mut scanner = Scanner::new(log.as_ref(), size);
        let tail = scanner
            .walk_headers(tail_start, base_offset, &mut |_| {})
            .map_err(|e| LogError::io("read", &paths.log, e))?;
        let next_offset = if tail.end_position == tail_start {
            base_offset
        } else {
            tail.next_offset
        };
        let max_timestamp = time_index
            .max_timestamp()
            .unwrap_or(i64::MIN)
            .max(tail.max_timestamp);
        Ok(Self::assemble(
            base_offset,
            paths,
            log,
            index,
            time_index,
            tail.end_position,
            next_offset,
            max_timestamp,
        ))
    }

    /// Opens the active (last) segment after a clean shutdown synced it and
    /// its indexes: like a sealed segment, through its indexes (checked
    /// against the log, rebuilt from the headers if they do not match),
    /// without reading every batch.
    /// `None` unless the log holds exactly `bytes` of whole batches.
    pub fn open_clean_active(
        storage: &dyn Storage,
        dir: &Path,
        base_offset: i64,
        bytes: u64,
    ) -> Result<Option<Self>, LogError> {
        let path = SegmentPaths::new(dir, base_offset).log;
        let size = open(storage, &path)?
            .len()
            .map_err(|e| LogError::io("stat", &path, e))?;
        if size != bytes {
            return Ok(None);
        }
        let segment = Self::open_through_indexes(storage, dir, base_offset)?;
        if segment.written_bytes() != bytes {
            return Ok(None);
        }
        let last_indexed = segment
            .index
            .read()
            .last()
            .map_or(0, |e| u64::from(e.position));
        let since_index = segment.written_bytes().saturating_sub(last_indexed);
        Ok(Some(segment.reopened_active(since_index)))
    }

    /// Opens the active (last) segment: every batch is checked (length, CRC,
    /// dense offsets); the log is cut at the first damaged one and both
    /// indexes are rebuilt from what remains. A log that ends before
    /// `floor`'s synced end is cut only if the loss is accepted.
    pub fn recover_active(
        storage: &dyn Storage,
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: u64,
        floor: Floor,
        visit: &mut dyn FnMut(&BatchHeader),
    ) -> Result<Recovery, LogError> {
        let paths = SegmentPaths::new(dir, base_offset);
        let log = open(storage, &paths.log)?;
        let size = log.len().map_err(|e| LogError::io("stat", &paths.log, e))?;
        let mut scanner = Scanner::new(log.as_ref(), size);
        let scan = scanner
            .verify(base_offset, index_interval_bytes, visit)
            .map_err(|e| LogError::io("read", &paths.log, e))?;
        let index = OffsetIndex::rewrite(open(storage, &paths.index)?, &[])
            .map_err(|e| LogError::io("write", &paths.index, e))?;
        let time_index = TimeIndex::rewrite(open(storage, &paths.time_index)?, &[])
            .map_err(|e| LogError::io("write", &paths.time_index, e))?;
        Self::finish_recovery(
            base_offset,
            paths,
            log,
            size,
            scan,
            index,
            time_index,
            floor,
        )
    }

    /// Opens the active (last) segment from a recovery point: the log and
    /// its indexes are trusted up to the point (the indexes are cut back to
    /// it), and batches are checked from the last indexed one before the
    /// point to the end of the file, as `recover_active` checks them all.
    /// `visit` sees the headers of the batches after the point.
    /// `None` when the log does not match the point: it is shorter, the
    /// index has nothing before the point, or the batches do not end at the
    /// point's size and offset (damage before the point among them).
    pub fn recover_active_from(
        storage: &dyn Storage,
        dir: &Path,
        point: &RecoveryPoint,
        index_interval_bytes: u64,
        floor: Floor,
        visit: &mut dyn FnMut(&BatchHeader),
    ) -> Result<Option<Recovery>, LogError> {
        let base_offset = point.active_base;
        let paths = SegmentPaths::new(dir, base_offset);
        let log = open(storage, &paths.log)?;
        let size = log.len().map_err(|e| LogError::io("stat", &paths.log, e))?;
        if point.active_bytes == 0 || size < point.active_bytes {
            return Ok(None);
        }
        let index = OffsetIndex::load_prefix(open(storage, &paths.index)?, |e| {
            u64::from(e.position) < point.active_bytes
        })
        .map_err(|e| LogError::io("read", &paths.index, e))?;
        let (Some(first), Some(start)) = (index.entries().first(), index.last()) else {
            return Ok(None);
        };
        if first.position != 0 || first.relative_offset != 0 {
            return Ok(None);
        }
        let time_index = TimeIndex::load_prefix(open(storage, &paths.time_index)?, |e| {
            e.relative_offset <= start.relative_offset
        })
        .map_err(|e| LogError::io("read", &paths.time_index, e))?;
        // As in `open_sealed`: a time index with nothing for the first batch
        // was lost, and the segment's largest timestamp with it.
        if time_index.first_relative_offset() != Some(0) {
            return Ok(None);
        }
        let scan_start = ScanStart {
            position: u64::from(start.position),
            expected_offset: Some(base_offset + i64::from(start.relative_offset)),
            indexed: true,
        };
        let mut position = scan_start.position;
        let mut reached_point = false;
        let mut scanner = Scanner::new(log.as_ref(), size);
        let scan = scanner
            .verify_from(
                scan_start,
                base_offset,
                index_interval_bytes,
                &mut |header| {
                    if header.base_offset >= point.next_offset {
                        visit(header);
                    }
                    position += header.total_len() as u64;
                    if position == point.active_bytes
                        && header.last_offset() + 1 == point.next_offset
                    {
                        reached_point = true;
                    }
                },
            )
            .map_err(|e| LogError::io("read", &paths.log, e))?;
        if !reached_point {
            return Ok(None);
        }
        Self::finish_recovery(
            base_offset,
            paths,
            log,
            size,
            scan,
            index,
            time_index,
            floor,
        )
        .map(Some)
    }

    /// The common end of both recoveries: refuses damage followed by intact
    /// batches, cuts a damaged tail (unless that would cut below the synced
    /// end of `floor` without the loss accepted), adds the scan's index
    /// entries and assembles the segment.
    #[allow(clippy::too_many_arguments)]
    fn finish_recovery(
        base_offset: i64,
        paths: SegmentPaths,
        log: Arc<dyn LogFile>,
        size: u64,
        scan: ScanOutcome,
        mut index: OffsetIndex,
        mut time_index: TimeIndex,
        floor: Floor,
    ) -> Result<Recovery, LogError> {
        if let (Some(damage), true) = (&scan.damage, scan.intact_after_damage) {
            // Cutting here would drop intact, acknowledged batches after the
            // damage: leave the decision to an operator.
            return Err(LogError::corrupt(
                &paths.log,
                scan.end_position,
                format!(
                    "{damage}, followed by intact batches; refusing to cut them (move the segment aside or truncate it at this byte to accept the loss)"
                ),
            ));
        }
        let shortfall = floor.shortfall(scan.next_offset);
        let truncated_bytes = if floor.keeps_files(shortfall.as_ref()) {
            0
        } else {
            size - scan.end_position
        };
        if truncated_bytes > 0 {
            log.truncate(scan.end_position)
                .and_then(|()| log.sync())
                .map_err(|e| LogError::io("truncate", &paths.log, e))?;
        }
        index
            .extend(&scan.index)
            .map_err(|e| LogError::io("write", &paths.index, e))?;
        time_index
            .extend(&scan.time_index)
            .map_err(|e| LogError::io("write", &paths.time_index, e))?;
        let max_timestamp = time_index
            .max_timestamp()
            .unwrap_or(i64::MIN)
            .max(scan.max_timestamp);
        let segment = Self::assemble(
            base_offset,
            paths,
            log,
            index,
            time_index,
            scan.end_position,
            scan.next_offset,
            max_timestamp,
        );
        Ok(Recovery {
            segment: segment.reopened_active(scan.bytes_since_index),
            damage: scan.damage,
            truncated_bytes,
            shortfall,
        })
    }

    /// Readies a reopened active segment for appends: `since_index` bytes
    /// follow its last index entry, and roll by age counts from the
    /// restart (the batches' own timestamps are the producers' clocks).
    fn reopened_active(self, since_index: u64) -> Self {
        self.bytes_since_index.store(since_index, Ordering::Relaxed);
        if !self.is_empty() {
            self.first_append_ms
                .store(crate::clock::now_ms(), Ordering::Relaxed);
        }
        self
    }

    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }

    pub fn next_offset(&self) -> i64 {
        self.next_offset.load(Ordering::Acquire)
    }

    pub fn written_bytes(&self) -> u64 {
        self.written_bytes.load(Ordering::Acquire)
    }

    pub fn visible_bytes(&self) -> u64 {
        self.visible_bytes.load(Ordering::Acquire)
    }

    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp.load(Ordering::Acquire)
    }

    /// Wall-clock ms of the first append (or of the first batch's timestamp
    /// after a restart); `None` while empty.
    pub fn first_append_ms(&self) -> Option<i64> {
        let ms = self.first_append_ms.load(Ordering::Relaxed);
        (ms != i64::MIN).then_some(ms)
    }

    pub fn is_empty(&self) -> bool {
        self.written_bytes() == 0
    }

    /// Appends one validated batch with `base_offset` stamped in front of
    /// its bytes (written with one vectored write, the batch is not copied).
    /// Only the partition's writer calls this.
    ///
    /// When a write fails for want of a resource (a full disk), the log and
    /// both indexes are cut back to where they were before the batch, so
    /// nothing of it stays and the next append starts on a clean end; the
    /// error is then `ResourceExhausted`. If the cut itself fails, the error
    /// is that failure (an `Io` error): the end of the files is unknown.
    pub fn append(
        &self,
        base_offset: i64,
        batch: &[u8],
        header: &BatchHeader,
        index_interval_bytes: u64,
        now_ms: i64,
    ) -> Result<(), LogError> {
        assert_eq!(base_offset, self.next_offset(), "appends must be dense");
        assert!(batch.len() >= HEADER_LEN, "batch was validated");
        let position = self.written_bytes();
        let index_len = self.index.read().entries().len();
        let time_index_len = self.time_index.read().len();
        let max_timestamp = self.max_timestamp().max(header.max_timestamp);
        let indexed =
            position == 0 || self.bytes_since_index.load(Ordering::Relaxed) >= index_interval_bytes;
        if let Err(e) = self.write_batch(position, base_offset, batch, max_timestamp, indexed) {
            if e.resource().is_some() {
                self.cut_back(position, index_len, time_index_len)?;
            }
            return Err(e);
        }
        // The segment's state moves only once every write succeeded.
        self.max_timestamp.store(max_timestamp, Ordering::Release);
        if indexed {
            self.bytes_since_index.store(0, Ordering::Relaxed);
        }
        self.bytes_since_index
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        if position == 0 {
            self.first_append_ms.store(now_ms, Ordering::Relaxed);
        }
        self.written_bytes
            .store(position + batch.len() as u64, Ordering::Release);
        self.next_offset.store(
            i64::from(header.last_offset_delta) + base_offset + 1,
            Ordering::Release,
        );
        Ok(())
    }

    /// The writes of `append`: the batch at `position`, and, if `indexed`,
    /// an entry in each index (the time index's holds the largest
    /// timestamp up to this batch).
    fn write_batch(
        &self,
        position: u64,
        base_offset: i64,
        batch: &[u8],
        max_timestamp: i64,
        indexed: bool,
    ) -> Result<(), LogError> {
        let stamp = brook_record::encode_base_offset(base_offset);
        self.active_log()
            .append(&[IoSlice::new(&stamp), IoSlice::new(&batch[8..])])
            .map_err(|e| LogError::io_or_resource("append", &self.paths.log, e))?;
        if !indexed {
            return Ok(());
        }
        let relative_offset = u32::try_from(base_offset - self.base_offset)
            .expect("segments roll long before 2^32 offsets");
        self.time_index
            .write()
            .push(TimeEntry {
                timestamp: max_timestamp,
                relative_offset,
            })
            .map_err(|e| LogError::io_or_resource("append", &self.paths.time_index, e))?;
        self.index
            .write()
            .push(OffsetEntry {
                relative_offset,
                position: u32::try_from(position).expect("segments roll before 4 GiB"),
            })
            .map_err(|e| LogError::io_or_resource("append", &self.paths.index, e))
    }

    /// Cuts the log and both indexes back to what they held before a
    /// failed append. A failure here leaves the files' ends unknown, which
    /// only a restart's recovery can settle: it is an `Io` error, never a
    /// resource shortage, so that the caller poisons the log.
    fn cut_back(
        &self,
        position: u64,
        index_len: usize,
        time_index_len: usize,
    ) -> Result<(), LogError> {
        let cut =
            |path: &Path, e: io::Error| LogError::io("cut back after a failed append", path, e);
        self.active_log()
            .truncate(position)
            .map_err(|e| cut(&self.paths.log, e))?;
        self.index
            .write()
            .cut_back(index_len)
            .map_err(|e| cut(&self.paths.index, e))?;
        self.time_index
            .write()
            .cut_back(time_index_len)
            .map_err(|e| cut(&self.paths.time_index, e))
    }
    /// The log file of the active segment.
    fn active_log(&self) -> Arc<dyn LogFile> {
        self.log
            .read()
            .clone()
            .expect("only sealed segments close their log file")
    }

    /// The log file for a read: the open one, or, for a sealed segment
    /// whose file was closed, the file opened again and kept in
    /// `open_segments` (which closes the least recently read ones past its
    /// bound). `None` once the segment was deleted: its file is gone, and
    /// opening it by name could only find another file or make an empty
    /// one. Failing to reopen for want of descriptors is
    /// `ResourceExhausted`.
    pub fn log_for_read(
        self: &Arc<Self>,
        storage: &dyn Storage,
        open_segments: &OpenSegments,
    ) -> Result<Option<Arc<dyn LogFile>>, LogError> {
        if let Some(log) = self.log.read().clone() {
            open_segments.touch(self.id);
            return Ok(Some(log));
        }
        let log = {
            let mut slot = self.log.write();
            if self.deleted.load(Ordering::Acquire) {
                return Ok(None);
            }
            if let Some(log) = slot.clone() {
                log
            } else {
                let log = storage
                    .open_existing(&self.paths.log)
                    .map_err(|e| LogError::io_or_resource("open", &self.paths.log, e))?;
                *slot = Some(log.clone());
                log
            }
        };
        for victim in open_segments.insert(self.id, self) {
            victim.close_log();
        }
        Ok(Some(log))
    }

    /// Seals the segment's files for good once it is no longer active: the
    /// index files close (their entries stay in memory) and the log file
    /// joins `open_segments`, as the most recently read, for the readers that tail
    /// the partition and still read its last batches.
    pub fn retire(self: &Arc<Self>, open_segments: &OpenSegments) {
        self.index.write().close_file();
        self.time_index.write().close_file();
        for victim in open_segments.insert(self.id, self) {
            victim.close_log();
        }
    }

    /// Leaves `open_segments` (the segment was deleted): its file closes
    /// now, and no read opens it again.
    pub fn forget(&self, open_segments: &OpenSegments) {
        open_segments.remove(self.id);
        let mut slot = self.log.write();
        self.deleted.store(true, Ordering::Release);
        *slot = None;
    }

    fn close_log(&self) {
        *self.log.write() = None;
    }

    fn close_files(&self) {
        self.close_log();
        self.index.write().close_file();
        self.time_index.write().close_file();
    }

    /// Calls `visit` with the header of every batch, in order (no CRC checks).
    pub fn visit_headers(
        &self,
        storage: &dyn Storage,
        visit: &mut dyn FnMut(&BatchHeader),
    ) -> Result<(), LogError> {
        // Only while a partition opens: a sealed segment's file is opened
        // for the walk and closed after it.
        let log = match self.log.read().clone() {
            Some(log) => log,
            None => open(storage, &self.paths.log)?,
        };
        let mut scanner = Scanner::new(log.as_ref(), self.written_bytes());
        scanner
            .walk_headers(0, self.base_offset, visit)
            .map(drop)
            .map_err(|e| LogError::io("read", &self.paths.log, e))
    }

    /// Lets readers see the first `bytes` bytes (a batch boundary the writer
    /// reported). Never moves backwards.
    pub fn publish(&self, bytes: u64) {
        assert!(
            bytes <= self.written_bytes(),
            "cannot publish unwritten bytes"
        );
        self.visible_bytes.fetch_max(bytes, Ordering::AcqRel);
    }

    /// Syncs the log file. A failure is sticky: the kernel reports a lost
    /// write-back to one fsync of a file only, and a later one that
    /// succeeds must not pass for covering the lost bytes.
    pub fn sync(&self) -> Result<(), LogError> {
        let _one_at_a_time = self.syncing.lock();
        if self.sync_failed.load(Ordering::Acquire) {
            return Err(LogError::io(
                "fsync",
                &self.paths.log,
                io::Error::other("an earlier fsync of this file failed"),
            ));
        }
        // A closed file belongs to a sealed segment, synced whole (or
        // marked failed) when it was sealed.
        let Some(log) = self.log.read().clone() else {
            return Ok(());
        };
        log.sync().map_err(|e| {
            self.sync_failed.store(true, Ordering::Release);
            LogError::io("fsync", &self.paths.log, e)
        })
    }

    /// Syncs the log and both indexes (for a seal, a recovery point or a
    /// clean shutdown). A failed index sync is as sticky as a failed log sync: recovery
    /// points and clean-shutdown marks trust the indexes.
    pub fn sync_files(&self) -> Result<(), LogError> {
        self.sync()?;
        let indexes = self
            .index
            .read()
            .sync()
            .map_err(|e| LogError::io("fsync", &self.paths.index, e))
            .and_then(|()| {
                self.time_index
                    .read()
                    .sync()
                    .map_err(|e| LogError::io("fsync", &self.paths.time_index, e))
            });
        if indexes.is_err() {
            self.sync_failed.store(true, Ordering::Release);
        }
        indexes
    }

    /// Syncs the log and both indexes: the segment becomes read-only. The
    /// time index gets a last entry with the segment's largest timestamp,
    /// which time retention reads after a restart.
    pub fn seal(&self) -> Result<(), LogError> {
        if !self.is_empty() {
            let last_relative = u32::try_from(self.next_offset() - 1 - self.base_offset)
                .expect("segments roll long before 2^32 offsets");
            let mut time_index = self.time_index.write();
            let len = time_index.len();
            let pushed = time_index.push(TimeEntry {
                timestamp: self.max_timestamp(),
                relative_offset: last_relative,
            });
            if let Err(e) = pushed {
                let error = LogError::io_or_resource("append", &self.paths.time_index, e);
                if error.resource().is_some() {
                    // The roll is retried with the next append: no torn
                    // entry may lie before the one it writes.
                    time_index.cut_back(len).map_err(|e| {
                        LogError::io("cut back after a failed append", &self.paths.time_index, e)
                    })?;
                }
                return Err(error);
            }
        }
        self.sync_files()
    }

    /// Removes the segment's files. Readers holding the segment keep reading
    /// the unlinked file until they drop it.
    pub fn delete_files(&self, storage: &dyn Storage) -> Result<(), LogError> {
        for path in [&self.paths.log, &self.paths.index, &self.paths.time_index] {
            match storage.remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(LogError::io("remove", path, e));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Whether the log file's path still names the file this segment
    /// writes to (see `LogFile::is_linked`).
    /// A segment whose file is closed (a sealed one, out of the open-file
    /// cache) takes no writes, so it counts as linked.
    pub fn is_linked(&self) -> Result<bool, LogError> {
        let Some(log) = self.log.read().clone() else {
            return Ok(true);
        };
        log.is_linked()
            .map_err(|e| LogError::io("stat", &self.paths.log, e))
    }

    pub fn log_path(&self) -> &Path {
        &self.paths.log
    }

    /// Position of the visible batch that holds `offset`, found through the
    /// index and a short walk of batch headers; `None` past the visible end.
    pub fn position_of(&self, log: &dyn LogFile, offset: i64) -> Result<Option<u64>, LogError> {
        let visible = self.visible_bytes();
        let relative = u32::try_from(offset - self.base_offset).unwrap_or(u32::MAX);
        let mut position = self
            .index
            .read()
            .floor(relative)
            .map_or(0, |e| u64::from(e.position));
        let mut header = [0u8; HEADER_LEN];
        while position + HEADER_LEN as u64 <= visible {
            read_exact_at(log, &mut header, position)
                .map_err(|e| LogError::io("read", &self.paths.log, e))?;
            let parsed = BatchHeader::parse(&header)
                .map_err(|e| LogError::corrupt(&self.paths.log, position, e.to_string()))?;
            if parsed.last_offset() >= offset {
                return Ok(Some(position));
            }
            position += parsed.total_len() as u64;
        }
        Ok(None)
    }

    /// Whole batches starting with the one holding `offset`, up to
    /// `max_bytes` (but always the first batch whole). `None` when `offset`
    /// is past the visible end of this segment.
    pub fn read(
        &self,
        log: &dyn LogFile,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Option<Bytes>, LogError> {
        let Some(start) = self.position_of(log, offset)? else {
            return Ok(None);
        };
        let visible = self.visible_bytes();
        let mut prefix = [0u8; LENGTH_PREFIX_LEN];
        read_exact_at(log, &mut prefix, start)
            .map_err(|e| LogError::io("read", &self.paths.log, e))?;
        let first_len = brook_record::batch_total_len(&prefix).unwrap_or(0) as u64;
        let available = visible - start;
        let want = (max_bytes as u64).max(first_len).min(available);
        let mut buf = log
            .read_vec_at(usize::try_from(want).unwrap_or(usize::MAX), start)
            .map_err(|e| LogError::io("read", &self.paths.log, e))?;
        buf.truncate(whole_batches_len(&buf));
        Ok(Some(Bytes::from(buf)))
    }

    /// The first record at or after `timestamp` in this segment, as
    /// `(offset, timestamp)`.
    /// `log` is the segment's log file; it is asked for only when the
    /// segment may hold such a record, so that looking past older
    /// segments opens none of their files. A segment deleted meanwhile
    /// (`log` gives `None`) holds nothing.
    pub fn find_timestamp(
        &self,
        log: impl FnOnce() -> Result<Option<Arc<dyn LogFile>>, LogError>,
        timestamp: i64,
    ) -> Result<Option<(i64, i64)>, LogError> {
        if self.max_timestamp() < timestamp {
            return Ok(None);
        }
        let Some(log) = log()? else {
            return Ok(None);
        };
        let log = log.as_ref();
        let relative = self.time_index.read().scan_start(timestamp);
        let Some(mut position) = self.position_of(log, self.base_offset + i64::from(relative))?
        else {
            return Ok(None);
        };
        let visible = self.visible_bytes();
        let mut header = [0u8; HEADER_LEN];
        while position + HEADER_LEN as u64 <= visible {
            read_exact_at(log, &mut header, position)
                .map_err(|e| LogError::io("read", &self.paths.log, e))?;
            let parsed = BatchHeader::parse(&header)
                .map_err(|e| LogError::corrupt(&self.paths.log, position, e.to_string()))?;
            if parsed.max_timestamp >= timestamp {
                let mut batch = BytesMut::zeroed(parsed.total_len());
                read_exact_at(log, &mut batch, position)
                    .map_err(|e| LogError::io("read", &self.paths.log, e))?;
                match brook_record::decode_batch(&batch.freeze()) {
                    Ok((_, records)) => {
                        if let Some(r) = records.iter().find(|r| r.timestamp >= timestamp) {
                            return Ok(Some((r.offset, r.timestamp)));
                        }
                    }
                    // A batch written before records were validated on
                    // produce, or under `validate_records = framing`, may
                    // not decode: answer with the batch rather than fail
                    // every later lookup.
                    Err(e) => {
                        tracing::warn!(path = %self.paths.log.display(), position, error = %e, "batch does not decode; answering a timestamp lookup with its base offset");
                        return Ok(Some((parsed.base_offset, parsed.max_timestamp)));
                    }
                }
            }
            position += parsed.total_len() as u64;
        }
        Ok(None)
    }
}

/// Length of the longest prefix of `buf` made of whole batches.
fn whole_batches_len(buf: &[u8]) -> usize {
    let mut end = 0;
    while let Some(len) = buf.get(end..).and_then(brook_record::batch_total_len) {
        if len < HEADER_LEN || end + len > buf.len() {
            break;
        }
        end += len;
    }
    end
}

/// Whether a loaded index agrees with its log: its last entry lies inside
/// the log and points at a batch with the offset the entry names.
fn index_matches_log(index: &OffsetIndex, log: &dyn LogFile, base_offset: i64, size: u64) -> bool {
    let Some(last) = index.last() else {
        return size == 0;
    };
    if index
        .entries()
        .first()
        .is_some_and(|e| e.position != 0 || e.relative_offset != 0)
    {
        return false;
    }
    let position = u64::from(last.position);
    if position + HEADER_LEN as u64 > size {
        return false;
    }
    let mut header = [0u8; HEADER_LEN];
    if read_exact_at(log, &mut header, position).is_err() {
        return false;
    }
    BatchHeader::parse(&header)
        .is_ok_and(|h| h.base_offset == base_offset + i64::from(last.relative_offset))
}

fn open(storage: &dyn Storage, path: &Path) -> Result<Arc<dyn LogFile>, LogError> {
    storage
        .open(path)
        .map_err(|e| LogError::io_or_resource("open", path, e))
}

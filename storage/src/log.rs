//! A partition's log: an ordered set of segments, the last one active.
//!
//! One writer at a time appends (under `writer`), rolls and applies
//! retention; any number of readers read concurrently. Appending and making
//! data visible are separate steps so that the caller decides when readers
//! may see a batch (after its fsync, or at once when the fsync policy does
//! not wait).
//!
//! Invariants: offsets are dense across segments; the high watermark only
//! grows and never passes what was written; after a failed fsync, or a
//! failed write whose outcome cannot be made known, the log is poisoned and
//! refuses appends. A write that fails for want of a resource (disk space,
//! file descriptors) leaves nothing behind and does not poison: the log
//! records the shortage (`write_shortage`) until the next append succeeds.
//!
//! Lock order: `writer`, then `producers`, then any one of the leaf locks
//! (`segments`, `refusal`, `shortage`, `last_recovery_point`, `config`, and a
//! segment's own locks); a leaf lock is never held while another lock is
//! taken. `writer` is held across the syncs of a roll and of a clean
//! shutdown, when nothing else may append; the group commit's sync
//! (`sync_in`) and a recovery point's take what they need under `writer`
//! and sync after releasing it, so appends go on meanwhile.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use brook_record::BatchHeader;
use bytes::Bytes;
use parking_lot::{Mutex, RwLock};

use super::clean::{self, CleanShutdown};
use super::damage::{self, Damage, Floor, LostData};
use super::error::{LogError, Resource};
use super::io::{LogFile, Storage};
use super::open_segments::OpenSegments;
use super::producers::{self, ProducerState, SequenceCheck, SequenceError};
use super::recovery_point::{self, RecoveryPoint};
use super::segment::{Recovery, Segment, parse_log_name};
use super::sync_group::SyncGroup;

/// Per-partition log settings (a topic's config, resolved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogConfig {
    /// Roll once the active segment holds this many bytes.
    pub segment_bytes: u64,
    /// Roll once the active segment's first append is this old.
    pub segment_ms: i64,
    /// Delete sealed segments whose newest record is older; -1 keeps all.
    pub retention_ms: i64,
    /// Delete the oldest sealed segments while the rest still hold this
    /// many bytes; -1 keeps all.
    pub retention_bytes: i64,
    pub index_interval_bytes: u64,
}

/// Largest segment: index positions are 32-bit.
pub const SEGMENT_BYTES_MAX: u64 = u32::MAX as u64;
/// Offsets a segment may span: index offsets are 32-bit relative to the base.
const SEGMENT_OFFSETS_MAX: i64 = u32::MAX as i64 / 2;

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 256 * 1024 * 1024,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            index_interval_bytes: super::DEFAULT_INDEX_INTERVAL_BYTES,
        }
    }
}

/// The end of what a writer has written: what a later `publish` makes
/// visible.
#[derive(Debug, Clone)]
pub struct WrittenMark {
    segment: Arc<Segment>,
    bytes: u64,
    next_offset: i64,
}

#[derive(Debug, Clone)]
pub struct ReadResult {
    /// Whole batches, possibly empty.
    pub records: Bytes,
    pub high_watermark: i64,
    pub start_offset: i64,
}

#[derive(Debug)]
pub struct PartitionLog {
    dir: PathBuf,
    storage: Arc<dyn Storage>,
    config: RwLock<LogConfig>,
    /// Segments by base offset; the last is the active one. Never empty.
    segments: RwLock<BTreeMap<i64, Arc<Segment>>>,
    /// The single writer: appends, rolls and retention hold it.
    writer: Mutex<()>,
    /// The offset after the last visible record.
    high_watermark: AtomicI64,
    /// The first offset still retained.
    start_offset: AtomicI64,
    /// Set by the first failed write or fsync, or by deletion: either way
    /// the log refuses writes from then on.
    refusal: Mutex<Option<Refusal>>,
    /// Set when the last append failed for want of a resource; cleared by
    /// the next append that succeeds.
    shortage: Mutex<Option<Shortage>>,
    /// Idempotent producers' sequences; changed only under `writer`.
    producers: Mutex<ProducerState>,
    /// Where the last recovery point was taken.
    last_recovery_point: Mutex<PointTaken>,
    /// Acknowledged records found missing since the log was opened
    /// (accepted or not), for metrics.
    lost_records: AtomicU64,
    /// The bound on sealed segments with an open log file: the log's own
    /// until `share_open_segments` gives it the broker's.
    open_segments: RwLock<Arc<OpenSegments>>,
}

/// Why a log refuses writes.
#[derive(Debug, Clone)]
enum Refusal {
    /// A write or fsync failed: until a restart, when recovery checks the
    /// tail.
    Poisoned(String),
    /// The partition's files are gone (its topic was deleted).
    Deleted,
    /// Acknowledged data is missing: reads are refused too, until an
    /// operator accepts the loss.
    Damaged(Damage),
}

/// Why the last append failed, when a resource was short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortage {
    pub resource: Resource,
    /// The failure in full (operation, file, errno).
    pub reason: String,
    /// Wall-clock milliseconds of the first failure in a row.
    pub since_ms: i64,
}

/// The active segment's base and size when the last recovery point was
/// taken, and the time.
#[derive(Debug, Clone, Copy)]
struct PointTaken {
    active_base: i64,
    active_bytes: u64,
    at_ms: i64,
}

/// What became of one batch handed to `append`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Written at this base offset.
    Appended(i64),
    /// A retry of a batch already written at this base offset; not written again.
    Duplicate(i64),
    /// Refused by its producer's sequence.
    Refused(SequenceError),
}

/// What `open` found and repaired, for the caller to log.
#[derive(Debug)]
pub struct OpenReport {
    /// The active segment was opened through a clean-shutdown mark, without
    /// reading it batch by batch.
    pub clean_shutdown: bool,
    /// The active segment was checked only after its recovery point.
    pub from_recovery_point: bool,
    pub segments: usize,
    pub truncated_bytes: u64,
    pub damage: Option<super::scan::TailDamage>,
    /// The log ends before what its clean-shutdown mark or recovery point
    /// says was synced: acknowledged records are missing. Unless the loss
    /// was accepted, the log is damaged and nothing was cut.
    pub shortfall: Option<Damage>,
}

impl PartitionLog {
    /// Opens (or creates) the partition in `dir`: sealed segments are
    /// opened through their indexes, the active one is checked batch by
    /// batch and a damaged tail is cut off. A log that ends before what its
    /// clean-shutdown mark or recovery point says was synced opens damaged
    /// (see `open_with`).
    pub fn open(
        storage: Arc<dyn Storage>,
        dir: &Path,
        config: LogConfig,
    ) -> Result<(Self, OpenReport), LogError> {
        Self::open_with(storage, dir, config, LostData::Refuse)
    }

    /// Like `open`, saying what to do with a log that ends before what its
    /// clean-shutdown mark or recovery point says was synced (acknowledged
    /// records are missing): with `LostData::Refuse` the log opens damaged
    /// (it refuses reads and writes, and none of its files is changed: the
    /// mark and the point stay, so the next open finds the same); with
    /// `LostData::Accept` it is cut as usual and serves from its end.
    /// Either way `OpenReport::shortfall` says what is missing.
    pub fn open_with(
        storage: Arc<dyn Storage>,
        dir: &Path,
        config: LogConfig,
        lost_data: LostData,
    ) -> Result<(Self, OpenReport), LogError> {
        assert!(config.segment_bytes <= SEGMENT_BYTES_MAX);
        storage
            .create_dir_all(dir)
            .map_err(|e| LogError::io("create", dir, e))?;
        let files = storage
            .list_files(dir)
            .map_err(|e| LogError::io("list", dir, e))?;
        let mut bases: Vec<i64> = files
            .iter()
            .filter_map(|name| parse_log_name(name))
            .collect();
        bases.sort_unstable();
        let mut segments = BTreeMap::new();
        // Removed (in `settle`) before the log takes an append: whatever
        // happens from then on is not covered by the last clean shutdown.
        let clean_mark = clean::read(storage.as_ref(), dir, &files)?;
        let point = recovery_point::read(storage.as_ref(), dir, &files)?;
        let floor = Floor {
            synced: damage::synced_end(clean_mark.as_ref(), point.as_ref()),
            lost_data,
        };
        let mut report = OpenReport {
            clean_shutdown: false,
            from_recovery_point: false,
            segments: bases.len().max(1),
            truncated_bytes: 0,
            damage: None,
            shortfall: None,
        };
        let Some((&active_base, sealed)) = bases.split_last() else {
            report.shortfall = floor.shortfall(0);
            if floor.keeps_files(report.shortfall.as_ref()) {
                let damage = report.shortfall.clone().expect("kept for a shortfall");
                return Ok((Self::damaged_without_files(dir, config, damage)?, report));
            }
            let segment = Segment::create(storage.as_ref(), dir, 0)?;
            storage
                .sync_dir(dir)
                .map_err(|e| LogError::io("fsync", dir, e))?;
            segments.insert(0, Arc::new(segment));
            Self::settle(storage.as_ref(), dir, &files, true)?;
            let log = Self::assemble(dir, storage, config, segments, ProducerState::default());
            log.count_lost(report.shortfall.as_ref());
            return Ok((log, report));
        };
        for (i, &base) in sealed.iter().enumerate() {
            let segment = Segment::open_sealed(storage.as_ref(), dir, base)?;
            let next_base = bases[i + 1];
            if segment.next_offset() != next_base {
                return Err(LogError::corrupt(
                    &dir.join(format!("{base:020}.log")),
                    segment.written_bytes(),
                    format!(
                        "segment ends at offset {} but the next one starts at {next_base}",
                        segment.next_offset()
                    ),
                ));
            }
            segments.insert(base, Arc::new(segment));
        }
        if let Some(mark) = &clean_mark
            && let Some(active) = Self::open_clean_active(storage.as_ref(), dir, active_base, mark)?
        {
            let stale_point = point.as_ref().is_some_and(|p| p.active_base != active_base);
            Self::settle(storage.as_ref(), dir, &files, stale_point)?;
            report.clean_shutdown = true;
            segments.insert(active_base, Arc::new(active));
            let log = Self::assemble(dir, storage, config, segments, mark.producers.clone());
            return Ok((log, report));
        }
        if let Some(point) = point.as_ref().filter(|p| p.active_base == active_base) {
            let mut producers = point.producers.clone();
            if let Some(recovery) = Segment::recover_active_from(
                storage.as_ref(),
                dir,
                point,
                config.index_interval_bytes,
                floor,
                &mut |h| producers.record(h, h.base_offset),
            )? {
                report.from_recovery_point = true;
                let log = Self::finish_open(
                    dir,
                    storage,
                    config,
                    segments,
                    producers,
                    recovery,
                    floor,
                    &files,
                    false,
                    &mut report,
                )?;
                *log.last_recovery_point.lock() = PointTaken {
                    active_base,
                    active_bytes: point.active_bytes,
                    at_ms: crate::clock::now_ms(),
                };
                return Ok((log, report));
            }
            tracing::warn!(dir = %dir.display(), "recovery point does not match the log; recovering the active segment in full");
        }
        // Producer state: the newest snapshot, then the headers of every
        // batch after it (normally just the active segment's, which
        // recovery reads anyway).
        let (snapshot_offset, mut producers) =
            producers::snapshot::load_latest(storage.as_ref(), dir, active_base)?
                .unwrap_or_default();
        for segment in segments.range(snapshot_offset..).map(|(_, s)| s) {
            segment.visit_headers(storage.as_ref(), &mut |h| {
                producers.record(h, h.base_offset);
            })?;
        }
        let recovery = Segment::recover_active(
            storage.as_ref(),
            dir,
            active_base,
            config.index_interval_bytes,
            floor,
            &mut |h| producers.record(h, h.base_offset),
        )?;
        if clean_mark.is_some() && recovery.shortfall.is_none() {
            tracing::warn!(dir = %dir.display(), "clean-shutdown mark does not match the log; recovered it in full");
        }
        // A point not used now is stale: gone before the log can change.
        let log = Self::finish_open(
            dir,
            storage,
            config,
            segments,
            producers,
            recovery,
            floor,
            &files,
            true,
            &mut report,
        )?;
        Ok((log, report))
    }

    /// The end of an open that recovered the active segment: a log short
    /// of its synced end is damaged (its mark and point kept) unless the
    /// loss was accepted; otherwise the clean-shutdown mark is removed, and
    /// the recovery point too if `point_stale`.
    #[allow(clippy::too_many_arguments)]
    fn finish_open(
        dir: &Path,
        storage: Arc<dyn Storage>,
        config: LogConfig,
        mut segments: BTreeMap<i64, Arc<Segment>>,
        producers: ProducerState,
        recovery: Recovery,
        floor: Floor,
        files: &[String],
        point_stale: bool,
        report: &mut OpenReport,
    ) -> Result<Self, LogError> {
        report.truncated_bytes = recovery.truncated_bytes;
        report.damage = recovery.damage;
        report.shortfall = recovery.shortfall;
        let keep = floor.keeps_files(report.shortfall.as_ref());
        if !keep {
            Self::settle(storage.as_ref(), dir, files, point_stale)?;
        }
        let segment = recovery.segment;
        segments.insert(segment.base_offset(), Arc::new(segment));
        let log = Self::assemble(dir, storage, config, segments, producers);
        log.count_lost(report.shortfall.as_ref());
        if keep && let Some(damage) = &report.shortfall {
            *log.refusal.lock() = Some(Refusal::Damaged(damage.clone()));
        }
        Ok(log)
    }

    /// Removes the clean-shutdown mark and, if `remove_point`, the
    /// recovery point: the log is about to take appends.
    fn settle(
        storage: &dyn Storage,
        dir: &Path,
        files: &[String],
        remove_point: bool,
    ) -> Result<(), LogError> {
        clean::remove(storage, dir, files)?;
        if remove_point {
            recovery_point::remove(storage, dir, files)?;
        }
        Ok(())
    }

    /// A damaged log for a partition without files: it refuses reads and
    /// writes, and creates nothing on disk.
    fn damaged_without_files(
        dir: &Path,
        config: LogConfig,
        damage: Damage,
    ) -> Result<Self, LogError> {
        let segment = Segment::create(&damage::Detached, dir, 0)?;
        let segments = BTreeMap::from([(0, Arc::new(segment))]);
        let log = Self::assemble(
            dir,
            Arc::new(damage::Detached),
            config,
            segments,
            ProducerState::default(),
        );
        log.count_lost(Some(&damage));
        *log.refusal.lock() = Some(Refusal::Damaged(damage));
        Ok(log)
    }

    /// The log of a partition whose directory is missing although its
    /// topic exists: damaged, nothing created on disk.
    pub fn missing(dir: &Path, config: LogConfig) -> Result<Self, LogError> {
        Self::damaged_without_files(dir, config, Damage::MissingDirectory)
    }

    /// The active segment, opened through `mark` if it matches it (same
    /// base, size and end); `None` sends `open` down the full recovery.
    fn open_clean_active(
        storage: &dyn Storage,
        dir: &Path,
        active_base: i64,
        mark: &CleanShutdown,
    ) -> Result<Option<Segment>, LogError> {
        let segment = if mark.active_base == active_base {
            Segment::open_clean_active(storage, dir, active_base, mark.active_bytes)?
        } else {
            None
        };
        // A mark that does not match is reported once the full recovery
        // says whether acknowledged data is missing.
        Ok(segment.filter(|s| s.next_offset() == mark.next_offset))
    }

    /// Syncs the log and its indexes and leaves a clean-shutdown mark, so
    /// that the next `open` need not read the active segment batch by
    /// batch. Call once nothing more will be appended (the broker's
    /// shutdown); an append after it makes the mark stale, which `open`
    /// notices.
    pub fn close_clean(&self) -> Result<(), LogError> {
        let _writer = self.writer.lock();
        self.check_poison()?;
        let active = self.active();
        active
            .sync_files()
            .inspect_err(|e| self.poison(e.to_string()))?;
        clean::write(
            self.storage.as_ref(),
            &self.dir,
            &self.point_at_end(&active),
        )
    }

    /// A recovery point at the end of what `active` holds now. Called
    /// under `writer`, so the producer state is that of those bytes.
    fn point_at_end(&self, active: &Segment) -> RecoveryPoint {
        RecoveryPoint {
            active_base: active.base_offset(),
            active_bytes: active.written_bytes(),
            next_offset: active.next_offset(),
            producers: self.producers.lock().clone(),
        }
    }

    /// Whether the active segment has grown enough since the last recovery
    /// point, for the time since, to take another (`recovery_point::due`).
    pub fn recovery_point_due(&self, now_ms: i64) -> bool {
        let active = self.active();
        let last = *self.last_recovery_point.lock();
        let taken = if last.active_base == active.base_offset() {
            last.active_bytes
        } else {
            0
        };
        let grown = active.written_bytes().saturating_sub(taken);
        recovery_point::due(grown, now_ms.saturating_sub(last.at_ms))
    }

    /// Syncs the active segment and its indexes, then records everything
    /// written so far as the partition's recovery point. Appends may go on
    /// during the sync (the point is what was written when it started). A
    /// failed sync poisons the log, as an append's would. The point is
    /// written only if, after the sync, the log is still unpoisoned (no
    /// other sync failed meanwhile, the partition was not deleted) and the
    /// segment still active.
    pub fn write_recovery_point(&self, now_ms: i64) -> Result<(), LogError> {
        let (active, point) = {
            let _writer = self.writer.lock();
            self.check_poison()?;
            let active = self.active();
            let point = self.point_at_end(&active);
            *self.last_recovery_point.lock() = PointTaken {
                active_base: point.active_base,
                active_bytes: point.active_bytes,
                at_ms: now_ms,
            };
            (active, point)
        };
        if point.active_bytes == 0 {
            return Ok(());
        }
        active
            .sync_files()
            .inspect_err(|e| self.poison(e.to_string()))?;
        let _writer = self.writer.lock();
        self.check_poison()?;
        if !Arc::ptr_eq(&self.active(), &active) {
            return Ok(());
        }
        recovery_point::write(self.storage.as_ref(), &self.dir, &point)
    }

    fn assemble(
        dir: &Path,
        storage: Arc<dyn Storage>,
        config: LogConfig,
        segments: BTreeMap<i64, Arc<Segment>>,
        producers: ProducerState,
    ) -> Self {
        let start = segments.keys().next().copied().unwrap_or(0);
        let end = segments.values().next_back().map_or(0, |s| s.next_offset());
        let active_base = segments.keys().next_back().copied().unwrap_or(0);
        Self {
            dir: dir.to_owned(),
            storage,
            config: RwLock::new(config),
            segments: RwLock::new(segments),
            writer: Mutex::new(()),
            high_watermark: AtomicI64::new(end),
            start_offset: AtomicI64::new(start),
            refusal: Mutex::new(None),
            shortage: Mutex::new(None),
            producers: Mutex::new(producers),
            last_recovery_point: Mutex::new(PointTaken {
                active_base,
                active_bytes: 0,
                at_ms: crate::clock::now_ms(),
            }),
            lost_records: AtomicU64::new(0),
            open_segments: RwLock::new(Arc::default()),
        }
    }

    /// Makes the log keep its sealed segments' open files in `open`, a
    /// bound shared with other partitions. Call before the log is read.
    pub fn share_open_segments(&self, open: Arc<OpenSegments>) {
        *self.open_segments.write() = open;
    }

    /// The log file of `segment`, for a read (sealed ones are reopened on
    /// demand); `None` once retention or a deletion removed it.
    fn log_for_read(&self, segment: &Arc<Segment>) -> Result<Option<Arc<dyn LogFile>>, LogError> {
        let open = self.open_segments.read().clone();
        segment.log_for_read(self.storage.as_ref(), &open)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> LogConfig {
        *self.config.read()
    }

    pub fn set_config(&self, config: LogConfig) {
        assert!(config.segment_bytes <= SEGMENT_BYTES_MAX);
        *self.config.write() = config;
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    pub fn start_offset(&self) -> i64 {
        self.start_offset.load(Ordering::Acquire)
    }

    /// Bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments
            .read()
            .values()
            .map(|s| s.written_bytes())
            .sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.read().len()
    }

    /// Why the log refuses writes after a failure; `None` while it takes
    /// them (or after it was deleted, which is not a failure).
    pub fn poisoned(&self) -> Option<String> {
        match self.refusal.lock().as_ref() {
            Some(Refusal::Poisoned(reason)) => Some(reason.clone()),
            Some(Refusal::Deleted | Refusal::Damaged(_)) | None => None,
        }
    }

    /// Refuses all further writes, keeping the first reason. The refusal
    /// is set before anything is logged, so that nothing the logging does
    /// can leave the log taking writes.
    pub fn poison(&self, reason: String) {
        let first = {
            let mut refusal = self.refusal.lock();
            if refusal.is_some() {
                return;
            }
            *refusal = Some(Refusal::Poisoned(reason.clone()));
            reason
        };
        tracing::error!(dir = %self.dir.display(), reason = %first, "partition poisoned");
    }

    /// The resource whose shortage failed the last append, while no append
    /// has succeeded since; `None` while writes go through.
    pub fn write_shortage(&self) -> Option<Shortage> {
        self.shortage.lock().clone()
    }

    /// Decides what a failed write means for the log: a resource shortage
    /// (the write was undone) is recorded and the log takes writes again
    /// once the resource is back; anything else poisons it.
    fn after_failed_write(&self, error: LogError) -> LogError {
        match error.resource() {
            Some(resource) => {
                let reason = error.to_string();
                let mut shortage = self.shortage.lock();
                let since_ms = shortage
                    .as_ref()
                    .map_or_else(crate::clock::now_ms, |s| s.since_ms);
                let first = shortage.is_none();
                *shortage = Some(Shortage {
                    resource,
                    reason: reason.clone(),
                    since_ms,
                });
                drop(shortage);
                if first {
                    tracing::warn!(dir = %self.dir.display(), %reason, "partition cannot write: {resource}");
                }
            }
            None => self.poison(error.to_string()),
        }
        error
    }

    /// After a successful append: a shortage is over.
    fn writes_resumed(&self) {
        let ended = self.shortage.lock().take();
        if let Some(shortage) = ended {
            tracing::info!(dir = %self.dir.display(), resource = %shortage.resource, "partition writes again");
        }
    }

    fn check_poison(&self) -> Result<(), LogError> {
        match self.refusal.lock().as_ref() {
            Some(Refusal::Poisoned(reason)) => Err(LogError::Poisoned {
                reason: reason.clone(),
            }),
            Some(Refusal::Deleted) => Err(LogError::Deleted),
            Some(Refusal::Damaged(damage)) => Err(LogError::Damaged {
                damage: damage.clone(),
            }),
            None => Ok(()),
        }
    }

    fn active(&self) -> Arc<Segment> {
        self.segments
            .read()
            .values()
            .next_back()
            .cloned()
            .expect("a log always has an active segment")
    }

    /// Writes validated batches (not yet durable, not yet visible) and
    /// returns what became of each and the mark to publish afterwards. A
    /// retried batch of an idempotent producer is answered with its original
    /// offset; one out of sequence is refused. A write that fails for want of
    /// a resource fails with `ResourceExhausted` and leaves nothing of its
    /// batch (the batches before it in `batches` stay written, and become
    /// visible with the next publish); any other failed write poisons the
    /// log.
    pub fn append(
        &self,
        batches: &[(Bytes, BatchHeader)],
        now_ms: i64,
    ) -> Result<(Vec<BatchOutcome>, WrittenMark), LogError> {
        self.append_checked(batches, now_ms, true)
    }

    /// Appends batches copied from another replica of this log, each at the
    /// next offset: they were checked when first appended there, so no
    /// producer sequence refuses them (a replica that restarted at the
    /// others' log start lacks the batches the sequences follow); the
    /// producers' sequences are recorded as usual.
    pub fn append_copied(
        &self,
        batches: &[(Bytes, BatchHeader)],
        now_ms: i64,
    ) -> Result<(Vec<BatchOutcome>, WrittenMark), LogError> {
        self.append_checked(batches, now_ms, false)
    }

    fn append_checked(
        &self,
        batches: &[(Bytes, BatchHeader)],
        now_ms: i64,
        check_sequences: bool,
    ) -> Result<(Vec<BatchOutcome>, WrittenMark), LogError> {
        let _writer = self.writer.lock();
        self.check_poison()?;
        let config = self.config();
        let mut outcomes = Vec::with_capacity(batches.len());
        let mut active = self.active();
        let mut producers = self.producers.lock();
        for (batch, header) in batches {
            let check = if check_sequences {
                producers.check(header)
            } else {
                Ok(SequenceCheck::Append)
            };
            match check {
                Ok(SequenceCheck::Append) => {}
                Ok(SequenceCheck::Duplicate { base_offset }) => {
                    outcomes.push(BatchOutcome::Duplicate(base_offset));
                    continue;
                }
                Err(refused) => {
                    outcomes.push(BatchOutcome::Refused(refused));
                    continue;
                }
            }
            if Self::should_roll(&active, batch.len() as u64, header, &config, now_ms) {
                active = self
                    .roll(&active, now_ms, &config, &producers)
                    .map_err(|e| self.after_failed_write(e))?;
            }
            let base_offset = active.next_offset();
            active
                .append(
                    base_offset,
                    batch,
                    header,
                    config.index_interval_bytes,
                    now_ms,
                )
                .map_err(|e| self.after_failed_write(e))?;
            producers.record(header, base_offset);
            outcomes.push(BatchOutcome::Appended(base_offset));
        }
        drop(producers);
        self.writes_resumed();
        let mark = WrittenMark {
            bytes: active.written_bytes(),
            next_offset: active.next_offset(),
            segment: active,
        };
        Ok((outcomes, mark))
    }

    fn should_roll(
        active: &Segment,
        batch_bytes: u64,
        header: &BatchHeader,
        config: &LogConfig,
        now_ms: i64,
    ) -> bool {
        if active.is_empty() {
            return false;
        }
        let too_big = active.written_bytes() + batch_bytes > config.segment_bytes;
        let too_old = active
            .first_append_ms()
            .is_some_and(|first| now_ms.saturating_sub(first) >= config.segment_ms);
        let too_many_offsets = active.next_offset() + i64::from(header.last_offset_delta)
            - active.base_offset()
            >= SEGMENT_OFFSETS_MAX;
        too_big || too_old || too_many_offsets
    }

    /// Seals the active segment, starts the next one and applies retention.
    fn roll(
        &self,
        active: &Arc<Segment>,
        now_ms: i64,
        config: &LogConfig,
        producers: &ProducerState,
    ) -> Result<Arc<Segment>, LogError> {
        self.refuse_if_unlinked(active)?;
        // Sealed, not published: its last batches become visible with the
        // next `publish`, once the round they belong to is acknowledged.
        active.seal()?;
        // A roll that fails for want of a resource is retried by the next
        // append: sealing again adds nothing, and the snapshot and the next
        // segment's files are written anew.
        let base = active.next_offset();
        // Recovery then rebuilds producer state from the new segment only.
        producers::snapshot::write(self.storage.as_ref(), &self.dir, base, producers)?;
        let next = Arc::new(Segment::create(self.storage.as_ref(), &self.dir, base)?);
        self.storage
            .sync_dir(&self.dir)
            .map_err(|e| dir_sync_error(&self.dir, e))?;
        self.segments.write().insert(base, next.clone());
        active.retire(&self.open_segments.read().clone());
        tracing::info!(dir = %self.dir.display(), base_offset = base, "segment rolled");
        self.apply_retention(now_ms, config)?;
        Ok(next)
    }

    /// Makes everything written so far durable and returns the mark to
    /// publish. Appends may continue while the fsync runs (group commit: one
    /// fsync covers every batch written before it started).
    pub fn sync(&self) -> Result<WrittenMark, LogError> {
        self.sync_in(&SyncGroup::per_file())
    }

    /// Like `sync`, but through `group`: when many partitions sync at once
    /// they share one file-system sync.
    pub fn sync_in(&self, group: &SyncGroup) -> Result<WrittenMark, LogError> {
        let mark = self.written_mark()?;
        group
            .sync(|| mark.segment.sync())
            .inspect_err(|e| self.poison(e.to_string()))?;
        self.refuse_if_unlinked(&mark.segment)?;
        Ok(mark)
    }

    /// Starts the active segment's way to the disk ahead of the sync that
    /// counts: fsyncs what was written so far, and nothing more. Unlike
    /// `sync` it answers for nothing: a segment deleted meanwhile (the log
    /// restarted, say) is no loss here and is not taken for damage, which
    /// the next `sync` would report if it were. A failed fsync poisons the
    /// log, as it does in `sync`.
    pub fn write_back(&self) -> Result<(), LogError> {
        self.written_mark()?
            .segment
            .sync()
            .inspect_err(|e| self.poison(e.to_string()))
    }

    /// Where what was written so far ends, in the active segment (an
    /// error when the log is poisoned).
    fn written_mark(&self) -> Result<WrittenMark, LogError> {
        let _writer = self.writer.lock();
        self.check_poison()?;
        let active = self.active();
        Ok(WrittenMark {
            bytes: active.written_bytes(),
            next_offset: active.next_offset(),
            segment: active,
        })
    }

    /// Lets readers see everything up to `mark`.
    pub fn publish(&self, mark: &WrittenMark) {
        // Segments sealed since the last publish are on disk (a roll syncs
        // them) and end before the mark: they become visible whole.
        for sealed in self
            .segments
            .read()
            .range(..mark.segment.base_offset())
            .rev()
            .map(|(_, s)| s)
            .take_while(|s| s.visible_bytes() < s.written_bytes())
        {
            sealed.publish(sealed.written_bytes());
        }
        mark.segment.publish(mark.bytes);
        self.high_watermark
            .fetch_max(mark.next_offset, Ordering::AcqRel);
    }

    /// Whole batches from the one holding `offset`, about `max_bytes` of
    /// them (at least one whole batch when any is visible).
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadResult, LogError> {
        self.refuse_if_damaged()?;
        let high_watermark = self.high_watermark();
        let start_offset = self.start_offset();
        if offset < start_offset || offset > high_watermark {
            return Err(LogError::OffsetOutOfRange {
                offset,
                start_offset,
                end_offset: high_watermark,
            });
        }
        let mut records = Bytes::new();
        if offset < high_watermark {
            // Offsets are dense and a segment is published whole before the
            // next one's batches become visible, so the segment whose base is
            // the floor of `offset` holds it.
            let segment = self
                .segments
                .read()
                .range(..=offset)
                .next_back()
                .map(|(_, s)| s.clone());
            let read = |s: Arc<Segment>| -> Result<Option<Bytes>, LogError> {
                let Some(log) = self.log_for_read(&s)? else {
                    return Ok(None);
                };
                s.read(log.as_ref(), offset, max_bytes)
            };
            match segment.map(read).transpose()?.flatten() {
                Some(bytes) => records = bytes,
                // Retention removed the segment after the range check.
                None if offset < self.start_offset() => {
                    return Err(LogError::OffsetOutOfRange {
                        offset,
                        start_offset: self.start_offset(),
                        end_offset: high_watermark,
                    });
                }
                None => {}
            }
        }
        Ok(ReadResult {
            records,
            high_watermark,
            start_offset,
        })
    }

    /// The first visible record at or after `timestamp`: `(offset, timestamp)`.
    pub fn find_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>, LogError> {
        self.refuse_if_damaged()?;
        let segments: Vec<Arc<Segment>> = self.segments.read().values().cloned().collect();
        let high_watermark = self.high_watermark();
        for segment in segments {
            if let Some((offset, ts)) =
                segment.find_timestamp(|| self.log_for_read(&segment), timestamp)?
            {
                return Ok((offset < high_watermark).then_some((offset, ts)));
            }
        }
        Ok(None)
    }

    /// Deletes whole sealed segments past the retention limits; returns how
    /// many went.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<usize, LogError> {
        let _writer = self.writer.lock();
        // A deleted log's paths may already belong to a new topic of the
        // same name; a poisoned one is left as it is until restart.
        if self.refusal.lock().is_some() {
            return Ok(0);
        }
        let config = self.config();
        self.apply_retention(now_ms, &config)
    }

    fn apply_retention(&self, now_ms: i64, config: &LogConfig) -> Result<usize, LogError> {
        let mut deleted = Vec::new();
        {
            let mut segments = self.segments.write();
            let mut total: u64 = segments.values().map(|s| s.written_bytes()).sum();
            while segments.len() > 1 {
                let Some(oldest) = segments.values().next().cloned() else {
                    break;
                };
                // Never retire what readers cannot see yet: the start offset
                // must not pass the high watermark.
                if oldest.next_offset() > self.high_watermark() {
                    break;
                }
                let size = oldest.written_bytes();
                // While the partition holds more than the limit (the active
                // segment is never deleted, so it alone may exceed it).
                let over_bytes =
                    config.retention_bytes >= 0 && total > config.retention_bytes as u64;
                let over_age = config.retention_ms >= 0
                    && oldest.max_timestamp() < now_ms.saturating_sub(config.retention_ms);
                if !(over_bytes || over_age) {
                    break;
                }
                segments.remove(&oldest.base_offset());
                total -= size;
                deleted.push(oldest);
            }
            if let Some(first) = segments.keys().next() {
                self.start_offset.store(*first, Ordering::Release);
            }
        }
        for segment in &deleted {
            tracing::info!(
                dir = %self.dir.display(),
                base_offset = segment.base_offset(),
                start_offset = self.start_offset(),
                "segment deleted by retention"
            );
            segment.forget(&self.open_segments.read().clone());
            segment.delete_files(self.storage.as_ref())?;
        }
        Ok(deleted.len())
    }

    /// Drops every record and makes the log start again, empty, at
    /// `start`; the producers' sequences go with the records. For a
    /// replica whose records another replica's replace: one taken off the
    /// partition, or one behind the others' log start. The only way the
    /// high watermark goes back.
    ///
    /// The clean-shutdown mark, the recovery point and the producer
    /// snapshots go first, then the segments from the newest down, so a
    /// crash part way leaves a shorter log that still opens (and that
    /// lost nothing its marks promise).
    pub fn restart_at(&self, start: i64) -> Result<(), LogError> {
        let _writer = self.writer.lock();
        if let Some(refusal) = self.refusal.lock().as_ref()
            && matches!(refusal, Refusal::Deleted)
        {
            return Err(LogError::Deleted);
        }
        let storage = self.storage.as_ref();
        let files = storage
            .list_files(&self.dir)
            .map_err(|e| LogError::io("list", &self.dir, e))?;
        Self::settle(storage, &self.dir, &files, true)?;
        producers::snapshot::remove_all(storage, &self.dir)?;
        let open = self.open_segments.read().clone();
        let old: Vec<Arc<Segment>> = self.segments.read().values().cloned().collect();
        for segment in old.iter().rev() {
            segment.forget(&open);
            segment.delete_files(storage)?;
        }
        let fresh = Arc::new(Segment::create(storage, &self.dir, start)?);
        storage
            .sync_dir(&self.dir)
            .map_err(|e| LogError::io("fsync", &self.dir, e))?;
        *self.segments.write() = BTreeMap::from([(start, fresh)]);
        self.high_watermark.store(start, Ordering::Release);
        self.start_offset.store(start, Ordering::Release);
        *self.producers.lock() = ProducerState::default();
        *self.last_recovery_point.lock() = PointTaken {
            active_base: start,
            active_bytes: 0,
            at_ms: crate::clock::now_ms(),
        };
        *self.shortage.lock() = None;
        tracing::info!(dir = %self.dir.display(), start, "log restarted empty");
        Ok(())
    }

    /// The idempotent producers' sequences after the last batch written.
    pub fn producer_state(&self) -> ProducerState {
        let _writer = self.writer.lock();
        self.producers.lock().clone()
    }

    /// Replaces the producers' sequences: those another replica had at
    /// the offset this log ends at (after `restart_at`, this log lacks
    /// the batches that made them).
    pub fn replace_producer_state(&self, state: ProducerState) {
        let _writer = self.writer.lock();
        *self.producers.lock() = state;
    }

    /// Removes the partition's directory; the log refuses writes afterwards.
    pub fn delete(&self) -> Result<(), LogError> {
        let _writer = self.writer.lock();
        self.refusal.lock().get_or_insert(Refusal::Deleted);
        // A late reader must not open a sealed segment's file by a name a
        // new topic of the same name may own by then. (The active segment
        // keeps its file open, so nothing reopens it.)
        let open = self.open_segments.read().clone();
        let segments = self.segments.read();
        for segment in segments.values().rev().skip(1) {
            segment.forget(&open);
        }
        drop(segments);
        self.storage
            .remove_dir_all(&self.dir)
            .map_err(|e| LogError::io("remove", &self.dir, e))
    }
}

/// Damage: acknowledged data found missing at open, or the active
/// segment unlinked while open (see `damage`).
impl PartitionLog {
    /// Why the log refuses reads and writes because acknowledged data is
    /// missing; `None` while it is whole.
    pub fn damage(&self) -> Option<Damage> {
        match self.refusal.lock().as_ref() {
            Some(Refusal::Damaged(damage)) => Some(damage.clone()),
            _ => None,
        }
    }

    /// Acknowledged records found missing since the log was opened,
    /// whether the loss was accepted or not.
    pub fn lost_records(&self) -> u64 {
        self.lost_records.load(Ordering::Relaxed)
    }

    fn count_lost(&self, damage: Option<&Damage>) {
        if let Some(damage) = damage {
            self.lost_records
                .fetch_add(damage.lost_records(), Ordering::Relaxed);
        }
    }

    fn refuse_if_damaged(&self) -> Result<(), LogError> {
        match self.damage() {
            Some(damage) => Err(LogError::Damaged { damage }),
            None => Ok(()),
        }
    }

    /// Checked at every sync and roll: appends to a segment file that was
    /// removed (or replaced) under the broker would be acknowledged and
    /// then lost with its last handle, so the log turns damaged instead.
    /// A failed check poisons it, as a failed sync would.
    fn refuse_if_unlinked(&self, segment: &Segment) -> Result<(), LogError> {
        if segment
            .is_linked()
            .inspect_err(|e| self.poison(e.to_string()))?
        {
            return Ok(());
        }
        let damage = Damage::Unlinked {
            path: segment.log_path().to_owned(),
            lost: segment.base_offset()..self.high_watermark().max(segment.base_offset()),
        };
        let mut refusal = self.refusal.lock();
        let newly_damaged = refusal.is_none();
        if newly_damaged {
            self.count_lost(Some(&damage));
            *refusal = Some(Refusal::Damaged(damage.clone()));
        }
        drop(refusal);
        // Logged once the state is set: a failure to log must not leave
        // the partition taking writes.
        if newly_damaged {
            tracing::error!(
                dir = %self.dir.display(),
                %damage,
                "partition damaged: acknowledged records are gone from its directory; it refuses reads and writes"
            );
        }
        self.check_poison()
    }
}

/// A failed sync of a directory: opening it may fail for want of file
/// descriptors (nothing was written yet); anything else is a failed fsync.
fn dir_sync_error(dir: &Path, error: std::io::Error) -> LogError {
    match Resource::of(&error) {
        Some(Resource::OpenFiles) => LogError::io_or_resource("open", dir, error),
        _ => LogError::io("fsync", dir, error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{FailingStorage, MemStorage};
    use brook_record::{BatchOptions, NewRecord};

    const LOG: &str = "/p/00000000000000000000.log";

    use crate::testing::single_record_batch as batch;

    fn open(storage: &MemStorage) -> Result<PartitionLog, LogError> {
        PartitionLog::open(
            Arc::new(storage.clone()),
            Path::new("/p"),
            LogConfig::default(),
        )
        .map(|(log, _)| log)
    }

    /// A write-back that finds its segment deleted (the log restarted
    /// while it ran) takes nothing for damage; the sync that counts still
    /// does.
    #[test]
    fn a_write_back_does_not_take_a_deleted_segment_for_damage() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) =
            PartitionLog::open(Arc::new(crate::OsStorage), dir.path(), LogConfig::default())
                .unwrap();
        log.append(&[batch("one")], 0).unwrap();
        log.write_back().unwrap();
        std::fs::remove_file(dir.path().join("00000000000000000000.log")).unwrap();
        log.write_back().unwrap();
        assert!(log.damage().is_none(), "{:?}", log.damage());
        assert!(log.sync().is_err());
        assert!(log.damage().is_some());
    }

    fn write_three(storage: &MemStorage) -> Vec<u64> {
        let log = open(storage).unwrap();
        let mut ends = Vec::new();
        for value in ["one", "two", "three"] {
            let (_, mark) = log.append(&[batch(value)], 0).unwrap();
            ends.push(mark.bytes);
        }
        log.sync().unwrap();
        ends
    }

    fn flip(storage: &MemStorage, position: u64) {
        let path = Path::new(LOG);
        let mut bytes = storage.contents(path).unwrap();
        bytes[position as usize] ^= 0xff;
        storage.set_contents(path, bytes);
    }

    #[test]
    fn a_corrupt_last_batch_is_cut() {
        let storage = MemStorage::default();
        let ends = write_three(&storage);
        flip(&storage, ends[1] + 30);
        let log = open(&storage).unwrap();
        assert_eq!(log.high_watermark(), 2);
    }

    #[test]
    fn corruption_followed_by_intact_batches_refuses_to_open() {
        let storage = MemStorage::default();
        let ends = write_three(&storage);
        flip(&storage, ends[0] + 30);
        let error = open(&storage).unwrap_err();
        assert!(
            error.to_string().contains("followed by intact batches"),
            "{error}"
        );
        // Nothing was cut.
        let path = Path::new(LOG);
        assert_eq!(storage.contents(path).unwrap().len() as u64, ends[2]);
    }

    #[test]
    fn retention_leaves_a_deleted_log_alone() {
        let storage = MemStorage::default();
        let log = open(&storage).unwrap();
        log.set_config(LogConfig {
            segment_bytes: 1024,
            retention_bytes: 0,
            ..LogConfig::default()
        });
        for _ in 0..40 {
            let (_, mark) = log.append(&[batch(&"x".repeat(100))], 0).unwrap();
            log.publish(&mark);
        }
        log.delete().unwrap();
        // A new log in the same place, as when a topic is recreated.
        let _new = open(&storage).unwrap();
        let files = storage.paths();
        assert_eq!(log.enforce_retention(i64::MAX).unwrap(), 0);
        assert_eq!(storage.paths(), files);
    }

    #[test]
    fn a_log_restarted_at_an_offset_holds_nothing_before_it_and_reopens_there() {
        let storage = MemStorage::default();
        let log = open(&storage).unwrap();
        log.set_config(LogConfig {
            segment_bytes: 1024,
            ..LogConfig::default()
        });
        for sequence in 0..30 {
            let (_, mark) = log
                .append(&[idempotent_batch(&"x".repeat(100), sequence)], 0)
                .unwrap();
            log.publish(&mark);
        }
        log.close_clean().unwrap();
        assert!(log.segment_count() > 1);

        log.restart_at(500).unwrap();
        assert_eq!((log.start_offset(), log.high_watermark()), (500, 500));
        assert!(log.read(500, usize::MAX).unwrap().records.is_empty());
        // The producer's sequence went with its records: it starts anew.
        let (outcomes, mark) = log.append(&[idempotent_batch("y", 0)], 0).unwrap();
        assert_eq!(outcomes, [BatchOutcome::Appended(500)]);
        log.publish(&mark);
        log.sync().unwrap();
        drop(log);

        let (log, report) = open_with_report(&storage);
        assert!(report.shortfall.is_none(), "{report:?}");
        assert_eq!((log.start_offset(), log.high_watermark()), (500, 501));
        assert_eq!(log.segment_count(), 1);
        let files = storage.paths();
        assert!(
            files
                .iter()
                .all(|path| !path.to_string_lossy().contains("0000000000.")),
            "the old files are gone: {files:?}"
        );
    }

    fn idempotent_batch(value: &str, base_sequence: i32) -> (Bytes, BatchHeader) {
        let record = NewRecord {
            timestamp: 1_000,
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            ..NewRecord::default()
        };
        let options = BatchOptions {
            producer_id: 7,
            producer_epoch: 0,
            base_sequence,
            ..BatchOptions::default()
        };
        let bytes = brook_record::encode_batch(&[record], options).unwrap();
        let header = BatchHeader::parse(&bytes).unwrap();
        (bytes, header)
    }

    fn open_with_report(storage: &MemStorage) -> (PartitionLog, OpenReport) {
        open_indexing_every(storage, LogConfig::default().index_interval_bytes)
    }

    #[test]
    fn a_clean_shutdown_reopens_without_recovery_and_keeps_producer_state() {
        let storage = MemStorage::default();
        let log = open(&storage).unwrap();
        for sequence in 0..3 {
            let value = format!("v{sequence}");
            log.append(&[idempotent_batch(&value, sequence)], 0)
                .unwrap();
        }
        log.close_clean().unwrap();
        drop(log);

        let (log, report) = open_with_report(&storage);
        assert!(report.clean_shutdown);
        assert_eq!(log.high_watermark(), 3);
        let (outcomes, _) = log.append(&[idempotent_batch("v2", 2)], 0).unwrap();
        assert_eq!(
            outcomes,
            [BatchOutcome::Duplicate(2)],
            "the retry is recognised"
        );
        let (outcomes, _) = log.append(&[idempotent_batch("v3", 3)], 0).unwrap();
        assert_eq!(outcomes, [BatchOutcome::Appended(3)]);
        log.sync().unwrap();
        drop(log);

        let (log, report) = open_with_report(&storage);
        assert!(
            !report.clean_shutdown,
            "the mark was used up by the last open"
        );
        assert_eq!(log.high_watermark(), 4);
        assert_eq!(log.read(0, usize::MAX).unwrap().high_watermark, 4);
    }

    #[test]
    fn a_log_that_changed_after_its_mark_is_recovered_in_full() {
        // An append after the mark.
        let storage = MemStorage::default();
        let log = open(&storage).unwrap();
        log.append(&[batch("one")], 0).unwrap();
        log.close_clean().unwrap();
        log.append(&[batch("two")], 0).unwrap();
        log.sync().unwrap();
        drop(log);
        let (log, report) = open_with_report(&storage);
        assert!(!report.clean_shutdown);
        assert_eq!(log.high_watermark(), 2);

        // Bytes after the marked end (a torn write of another life).
        let storage = MemStorage::default();
        let log = open(&storage).unwrap();
        log.append(&[batch("one")], 0).unwrap();
        log.close_clean().unwrap();
        drop(log);
        let path = Path::new(LOG);
        let mut bytes = storage.contents(path).unwrap();
        bytes.extend_from_slice(&[0xab; 40]);
        storage.set_contents(path, bytes);
        let (log, report) = open_with_report(&storage);
        assert!(!report.clean_shutdown);
        assert_eq!(report.truncated_bytes, 40, "recovery cut the stray bytes");
        assert_eq!(log.high_watermark(), 1);
    }

    fn open_indexing_every(
        storage: &MemStorage,
        index_interval_bytes: u64,
    ) -> (PartitionLog, OpenReport) {
        let config = LogConfig {
            index_interval_bytes,
            ..LogConfig::default()
        };
        PartitionLog::open(Arc::new(storage.clone()), Path::new("/p"), config).unwrap()
    }

    fn open_indexing_every_batch(storage: &MemStorage) -> (PartitionLog, OpenReport) {
        open_indexing_every(storage, 1)
    }

    const POINT: &str = "/p/recovery-point";
    /// Index intervals: an entry per batch (also with 0), one every few
    /// batches, or one for all.
    const INTERVALS: [u64; 4] = [0, 1, 100, 4096];

    /// Five idempotent batches with a recovery point after the first
    /// three; the last two are synced if `sync_tail`. Returns the end of
    /// each batch.
    fn five_with_a_point_after_three(
        storage: &MemStorage,
        index_interval_bytes: u64,
        sync_tail: bool,
    ) -> Vec<u64> {
        let (log, _) = open_indexing_every(storage, index_interval_bytes);
        let mut ends = Vec::new();
        for sequence in 0..5 {
            if sequence == 3 {
                log.write_recovery_point(0).unwrap();
            }
            let value = format!("v{sequence}");
            let (_, mark) = log
                .append(&[idempotent_batch(&value, sequence)], 0)
                .unwrap();
            ends.push(mark.bytes);
        }
        if sync_tail {
            log.sync().unwrap();
        }
        ends
    }

    fn assert_reads_every_offset(log: &PartitionLog) {
        for offset in 0..log.high_watermark() {
            let read = log.read(offset, 1).unwrap();
            assert_eq!(
                brook_record::read_base_offset(&read.records),
                Some(offset),
                "read at {offset}"
            );
        }
    }

    #[test]
    fn a_crash_after_a_recovery_point_checks_only_what_follows_and_keeps_producer_state() {
        for interval in INTERVALS {
            let storage = MemStorage::default();
            five_with_a_point_after_three(&storage, interval, true);
            let storage = storage.crash_image();

            let (log, report) = open_indexing_every(&storage, interval);
            assert!(report.from_recovery_point, "interval {interval}");
            assert!(!report.clean_shutdown);
            assert_eq!(log.high_watermark(), 5);
            assert_reads_every_offset(&log);
            // Each batch counted once: the oldest of the five is still known.
            let retries: Vec<_> = [0, 2, 4]
                .map(|sequence| idempotent_batch(&format!("v{sequence}"), sequence))
                .into_iter()
                .chain([idempotent_batch("v5", 5)])
                .collect();
            let (outcomes, _) = log.append(&retries, 0).unwrap();
            assert_eq!(
                outcomes,
                [
                    BatchOutcome::Duplicate(0),
                    BatchOutcome::Duplicate(2),
                    BatchOutcome::Duplicate(4),
                    BatchOutcome::Appended(5)
                ],
                "retries from before and after the point are recognised (interval {interval})"
            );
            log.sync().unwrap();
            drop(log);

            // The point stays valid for the next crash.
            let (log, report) = open_indexing_every(&storage.crash_image(), interval);
            assert!(report.from_recovery_point);
            assert_eq!(log.high_watermark(), 6);
            assert_reads_every_offset(&log);
        }
    }

    #[test]
    fn a_recovery_point_survives_a_crash_that_loses_everything_after_it() {
        for interval in INTERVALS {
            let storage = MemStorage::default();
            five_with_a_point_after_three(&storage, interval, false);
            let (log, report) = open_indexing_every(&storage.crash_image(), interval);
            // The point synced the log and both indexes: without either
            // index, the point would not be used.
            assert!(report.from_recovery_point, "interval {interval}");
            assert_eq!(log.high_watermark(), 3);
            assert_reads_every_offset(&log);
            assert_eq!(log.find_timestamp(0).unwrap(), Some((0, 1_000)));
        }
    }

    #[test]
    fn a_lost_time_index_sends_open_down_the_full_recovery() {
        let storage = MemStorage::default();
        five_with_a_point_after_three(&storage, 1, true);
        storage.set_contents(Path::new("/p/00000000000000000000.timeindex"), Vec::new());
        let (log, report) = open_indexing_every_batch(&storage);
        assert!(!report.from_recovery_point);
        assert_eq!(log.high_watermark(), 5);
        assert_eq!(log.find_timestamp(0).unwrap(), Some((0, 1_000)));
    }

    #[test]
    fn damage_after_the_recovery_point_is_cut_as_in_a_full_recovery() {
        let storage = MemStorage::default();
        let ends = five_with_a_point_after_three(&storage, 1, true);
        flip(&storage, ends[3] + 30);
        let (log, report) = open_indexing_every_batch(&storage);
        assert!(report.from_recovery_point);
        assert!(matches!(
            report.damage,
            Some(super::super::scan::TailDamage::Corrupt { .. })
        ));
        assert_eq!(report.truncated_bytes, ends[4] - ends[3]);
        assert_eq!(log.high_watermark(), 4);
        assert_reads_every_offset(&log);

        // A torn last batch.
        let storage = MemStorage::default();
        let ends = five_with_a_point_after_three(&storage, 1, true);
        let mut bytes = storage.contents(Path::new(LOG)).unwrap();
        bytes.truncate(ends[4] as usize - 5);
        storage.set_contents(Path::new(LOG), bytes);
        let (log, report) = open_indexing_every_batch(&storage);
        assert!(report.from_recovery_point);
        assert_eq!(log.high_watermark(), 4);
    }

    #[test]
    fn damage_before_the_recovery_point_sends_open_down_the_full_recovery() {
        let storage = MemStorage::default();
        let log = open(&storage).unwrap();
        let mut ends = Vec::new();
        for value in ["one", "two", "three"] {
            let (_, mark) = log.append(&[batch(value)], 0).unwrap();
            ends.push(mark.bytes);
        }
        log.write_recovery_point(0).unwrap();
        drop(log);
        // The last batch before the point: checked, since no index entry
        // lies between it and the point. The full recovery finds it, and
        // would cut a batch the point says was synced: the log is damaged
        // until the loss is accepted, and then cut.
        flip(&storage, ends[1] + 30);
        let (log, report) = open_with_report(&storage);
        assert!(!report.from_recovery_point);
        assert!(log.damage().is_some());
        assert_eq!(
            storage.contents(Path::new(LOG)).unwrap().len() as u64,
            ends[2]
        );
        drop(log);
        let (log, report) = open_accepting(&storage);
        assert!(matches!(
            report.damage,
            Some(super::super::scan::TailDamage::Corrupt { .. })
        ));
        assert!(report.shortfall.is_some());
        assert_eq!(log.high_watermark(), 2);
        assert!(!storage.paths().contains(&Path::new(POINT).to_owned()));
    }

    fn open_accepting(storage: &MemStorage) -> (PartitionLog, OpenReport) {
        let config = LogConfig {
            index_interval_bytes: 1,
            ..LogConfig::default()
        };
        PartitionLog::open_with(
            Arc::new(storage.clone()),
            Path::new("/p"),
            config,
            LostData::Accept,
        )
        .unwrap()
    }

    #[test]
    fn a_recovery_point_the_log_no_longer_matches_is_removed() {
        let storage = MemStorage::default();
        let ends = five_with_a_point_after_three(&storage, 1, true);
        // Cut back below the point, and the loss accepted.
        let mut bytes = storage.contents(Path::new(LOG)).unwrap();
        bytes.truncate(ends[1] as usize);
        storage.set_contents(Path::new(LOG), bytes);
        let (log, report) = open_accepting(&storage);
        assert!(!report.from_recovery_point);
        assert_eq!(log.high_watermark(), 2);
        assert!(!storage.paths().contains(&Path::new(POINT).to_owned()));
        // Grown past the old point again: still recovered in full.
        for value in ["x", "y", "z"] {
            log.append(&[batch(value)], 0).unwrap();
        }
        log.sync().unwrap();
        drop(log);
        let (log, report) = open_indexing_every_batch(&storage);
        assert!(!report.from_recovery_point);
        assert!(report.shortfall.is_none());
        assert_eq!(log.high_watermark(), 5);
    }

    #[test]
    fn index_entries_past_the_recovery_point_are_cut_and_rebuilt() {
        let storage = MemStorage::default();
        five_with_a_point_after_three(&storage, 1, true);
        // Stale entries after the point: garbage, then a torn entry.
        let path = Path::new("/p/00000000000000000000.index");
        let mut index = storage.contents(path).unwrap();
        index.truncate(3 * super::super::index::OFFSET_ENTRY_LEN);
        index.extend_from_slice(&[0xff; 8]);
        index.extend_from_slice(&[1, 2, 3]);
        storage.set_contents(path, index);
        let (log, report) = open_indexing_every_batch(&storage);
        assert!(report.from_recovery_point);
        assert_eq!(log.high_watermark(), 5);
        assert_reads_every_offset(&log);
        assert_eq!(
            storage.contents(path).unwrap().len(),
            5 * super::super::index::OFFSET_ENTRY_LEN,
            "one entry per batch, none stale"
        );
        log.append(&[idempotent_batch("v5", 5)], 0).unwrap();
        log.close_clean().unwrap();
        drop(log);
        let (log, report) = open_indexing_every_batch(&storage);
        assert!(report.clean_shutdown);
        assert_eq!(log.high_watermark(), 6);
        assert_reads_every_offset(&log);
    }

    /// A log with one batch on storage whose operations can be made to fail.
    fn a_batch_on_failing_storage() -> (MemStorage, FailingStorage, PartitionLog) {
        let memory = MemStorage::default();
        let failing = FailingStorage::new(Arc::new(memory.clone()), u64::MAX);
        let (log, _) = PartitionLog::open(
            Arc::new(failing.clone()),
            Path::new("/p"),
            LogConfig::default(),
        )
        .unwrap();
        log.append(&[batch("one")], 0).unwrap();
        (memory, failing, log)
    }

    #[test]
    fn no_recovery_point_is_written_after_a_failed_sync() {
        let (memory, failing, log) = a_batch_on_failing_storage();
        // Another sync of the segment fails (the kernel reports it there
        // and only there); the log is not poisoned by it yet.
        failing.set_budget(0);
        assert!(log.active().sync().is_err());
        assert!(log.poisoned().is_none());
        failing.set_budget(u64::MAX);
        assert!(
            log.write_recovery_point(0).is_err(),
            "the point's own sync now succeeds, but must not count"
        );
        assert!(log.poisoned().is_some());
        assert!(!memory.paths().contains(&Path::new(POINT).to_owned()));

        // A failed index sync is sticky too.
        let (_, failing, log) = a_batch_on_failing_storage();
        failing.set_budget(1);
        assert!(
            log.active().sync_files().is_err(),
            "the offset index's sync fails"
        );
        failing.set_budget(u64::MAX);
        assert!(log.active().sync().is_err());
        assert!(log.close_clean().is_err());
        assert!(log.poisoned().is_some());
    }

    #[test]
    fn a_recovery_point_is_due_after_enough_bytes_or_time() {
        let storage = MemStorage::default();
        let log = open(&storage).unwrap();
        let now = crate::clock::now_ms();
        assert!(!log.recovery_point_due(now + recovery_point::LATEST_MS * 2));
        log.append(&[batch("small")], 0).unwrap();
        assert!(!log.recovery_point_due(now + recovery_point::SOON_MS));
        assert!(!log.recovery_point_due(now + recovery_point::LATEST_MS - 1_000));
        assert!(log.recovery_point_due(now + recovery_point::LATEST_MS + 1_000));
        log.write_recovery_point(now).unwrap();
        assert!(!log.recovery_point_due(now + recovery_point::LATEST_MS));

        let soon = "x".repeat(recovery_point::SOON_BYTES as usize);
        log.append(&[batch(&soon)], 0).unwrap();
        assert!(!log.recovery_point_due(now + recovery_point::SOON_MS - 1));
        assert!(log.recovery_point_due(now + recovery_point::SOON_MS));

        let big = "x".repeat(recovery_point::INTERVAL_BYTES as usize);
        log.append(&[batch(&big)], 0).unwrap();
        assert!(log.recovery_point_due(now));
    }
}

/// A failed write for want of a resource is undone and does not poison; a
/// failed fsync (or a failed undo) still does.
#[cfg(test)]
mod shortage_tests {
    use std::path::Path;
    use std::sync::Arc;

    use nix::errno::Errno;

    use super::{BatchOutcome, LogConfig, LogError, PartitionLog};
    use crate::Resource;
    use crate::testing::{FailingStorage, MemStorage};

    const LOG: &str = "/p/00000000000000000000.log";

    use crate::testing::single_record_batch as batch;

    fn open_on(failing: &FailingStorage, config: LogConfig) -> PartitionLog {
        PartitionLog::open(Arc::new(failing.clone()), Path::new("/p"), config)
            .unwrap()
            .0
    }

    fn append_and_publish(log: &PartitionLog, value: &str) -> Result<i64, LogError> {
        let (outcomes, _) = log.append(&[batch(value)], 0)?;
        let mark = log.sync()?;
        log.publish(&mark);
        match outcomes[..] {
            [BatchOutcome::Appended(offset)] => Ok(offset),
            _ => panic!("unexpected outcome {outcomes:?}"),
        }
    }

    fn values(log: &PartitionLog) -> Vec<String> {
        (log.start_offset()..log.high_watermark())
            .map(|offset| {
                let read = log.read(offset, 1).unwrap();
                let (_, records) = brook_record::decode_batch(&read.records).unwrap();
                let value = records[0].value.clone().unwrap();
                String::from_utf8(value.to_vec()).unwrap()
            })
            .collect()
    }

    /// A reader that took a sealed segment before retention deleted it
    /// must not open its file again by name: that made an empty file the
    /// next start took for a segment (and failed on).
    #[test]
    fn a_read_of_a_segment_retention_deleted_does_not_recreate_its_file() {
        use crate::Storage;
        let memory = MemStorage::default();
        let failing = FailingStorage::new(Arc::new(memory.clone()), u64::MAX);
        let config = LogConfig {
            segment_bytes: 1024,
            retention_ms: -1,
            ..LogConfig::default()
        };
        let log = open_on(&failing, config);
        // Sealed segments' files close beyond one.
        log.share_open_segments(Arc::new(crate::open_segments::OpenSegments::new(1)));
        for i in 0..8 {
            append_and_publish(&log, &format!("{}{i}", "x".repeat(400))).unwrap();
        }
        assert!(log.segment_count() >= 3, "{}", log.segment_count());
        let oldest = log.segments.read().values().next().cloned().unwrap();
        let path = oldest.log_path().to_owned();
        // Reading the next segment closes the oldest one's file.
        let second = log.segments.read().values().nth(1).cloned().unwrap();
        assert!(log.log_for_read(&second).unwrap().is_some());
        // Retention deletes the oldest segment, as a reader holds it.
        log.set_config(LogConfig {
            retention_bytes: 0,
            ..config
        });
        log.enforce_retention(0).unwrap();
        assert!(memory.open_existing(&path).is_err(), "the file was deleted");
        assert!(log.log_for_read(&oldest).unwrap().is_none());
        assert!(
            memory.open_existing(&path).is_err(),
            "a late read created {} again",
            path.display()
        );
    }

    #[test]
    fn a_roll_without_file_descriptors_fails_the_append_and_succeeds_once_they_are_back() {
        let memory = MemStorage::default();
        let failing = FailingStorage::new(Arc::new(memory.clone()), u64::MAX);
        let config = LogConfig {
            segment_bytes: 1024,
            ..LogConfig::default()
        };
        let log = open_on(&failing, config);
        // Two batches of 400 bytes: the next one rolls.
        let written: Vec<String> = (0..2).map(|i| format!("{}{i}", "x".repeat(400))).collect();
        for value in &written {
            append_and_publish(&log, value).unwrap();
        }
        assert_eq!(log.segment_count(), 1);
        let mut written = written;
        failing.fail_opens_with(Some(Errno::EMFILE as i32));
        for _ in 0..3 {
            let error = append_and_publish(&log, &"r".repeat(400)).unwrap_err();
            assert_eq!(error.resource(), Some(Resource::OpenFiles), "{error}");
            assert!(error.to_string().contains("too many open files"), "{error}");
        }
        assert!(log.poisoned().is_none());
        let shortage = log.write_shortage().expect("the shortage is reported");
        assert_eq!(shortage.resource, Resource::OpenFiles);
        assert_eq!(log.segment_count(), 1, "no segment was added");
        assert_eq!(values(&log), written);

        failing.fail_opens_with(None);
        written.push("a".repeat(400));
        append_and_publish(&log, &written[2]).unwrap();
        assert_eq!(log.segment_count(), 2, "the roll went through");
        assert!(
            log.write_shortage().is_none(),
            "a successful write clears it"
        );
        assert_eq!(values(&log), written);
        drop(log);

        let (log, report) =
            PartitionLog::open(Arc::new(memory.crash_image()), Path::new("/p"), config).unwrap();
        assert_eq!(report.truncated_bytes, 0);
        assert_eq!(values(&log), written);
    }

    #[test]
    fn a_write_cut_short_by_a_full_disk_leaves_nothing_and_writes_resume_once_there_is_space() {
        for errno in [Errno::ENOSPC, Errno::EDQUOT] {
            let memory = MemStorage::default();
            let failing = FailingStorage::new(Arc::new(memory.clone()), u64::MAX);
            let log = open_on(&failing, LogConfig::default());
            append_and_publish(&log, "one").unwrap();
            let end = memory.contents(Path::new(LOG)).unwrap().len();

            failing.fail_appends_with(errno as i32, 10);
            let error = append_and_publish(&log, "two").unwrap_err();
            assert_eq!(error.resource(), Some(Resource::DiskSpace), "{error}");
            assert!(
                error
                    .to_string()
                    .contains("no space left on the data volume"),
                "{error}"
            );
            assert_eq!(
                memory.contents(Path::new(LOG)).unwrap().len(),
                end,
                "the partial write was cut back"
            );
            assert!(log.poisoned().is_none());
            assert_eq!(
                log.write_shortage().map(|s| s.resource),
                Some(Resource::DiskSpace)
            );

            failing.stop_failing_appends();
            assert_eq!(append_and_publish(&log, "three").unwrap(), 1);
            assert!(log.write_shortage().is_none());
            assert_eq!(values(&log), ["one", "three"]);
            drop(log);
            let (log, report) = PartitionLog::open(
                Arc::new(memory.crash_image()),
                Path::new("/p"),
                LogConfig::default(),
            )
            .unwrap();
            assert_eq!(report.truncated_bytes, 0, "no torn bytes were left");
            assert!(report.damage.is_none());
            assert_eq!(values(&log), ["one", "three"]);
        }
    }

    #[test]
    fn a_failed_cut_back_poisons() {
        let memory = MemStorage::default();
        let failing = FailingStorage::new(Arc::new(memory.clone()), u64::MAX);
        let log = open_on(&failing, LogConfig::default());
        append_and_publish(&log, "one").unwrap();
        failing.fail_appends_with(Errno::ENOSPC as i32, 10);
        failing.set_budget(0);
        let error = append_and_publish(&log, "two").unwrap_err();
        assert!(error.resource().is_none(), "{error}");
        assert!(log.poisoned().is_some());
        failing.stop_failing_appends();
        failing.set_budget(u64::MAX);
        assert!(matches!(
            append_and_publish(&log, "three"),
            Err(LogError::Poisoned { .. })
        ));
    }

    #[test]
    fn a_failed_fsync_poisons_even_when_it_blames_a_full_disk() {
        let memory = MemStorage::default();
        let failing = FailingStorage::new(Arc::new(memory.clone()), u64::MAX);
        let log = open_on(&failing, LogConfig::default());
        append_and_publish(&log, "one").unwrap();
        log.append(&[batch("two")], 0).unwrap();
        failing.set_errno(Errno::ENOSPC as i32);
        failing.set_budget(0);
        assert!(log.sync().is_err());
        assert!(log.poisoned().is_some());
        assert!(log.write_shortage().is_none());
        failing.set_budget(u64::MAX);
        assert!(matches!(
            log.append(&[batch("three")], 0),
            Err(LogError::Poisoned { .. })
        ));
    }

    /// A subscriber whose every event panics: logging that fails.
    struct PanickingSubscriber;

    impl tracing::Subscriber for PanickingSubscriber {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, _: &tracing::Event<'_>) {
            panic!("logging failed");
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    #[test]
    fn poisoning_holds_even_when_logging_it_fails() {
        let memory = MemStorage::default();
        let failing = FailingStorage::new(Arc::new(memory), u64::MAX);
        let log = open_on(&failing, LogConfig::default());
        let poisoned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            tracing::subscriber::with_default(PanickingSubscriber, || {
                log.poison("fsync failed".to_owned());
            });
        }));
        assert!(poisoned.is_err(), "the subscriber panicked");
        assert_eq!(log.poisoned().as_deref(), Some("fsync failed"));
    }
}

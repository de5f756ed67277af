//! Acknowledged data found missing: a partition whose log ends before the
//! end its own records say was synced, whose directory is gone, or whose
//! active segment was unlinked under the running broker.
//!
//! A torn tail past the last synced end was never acknowledged and is cut
//! quietly. Anything shorter than a clean-shutdown mark or a recovery
//! point says was synced was acknowledged: the log is then *damaged*. It
//! refuses reads and writes, and opening it changes none of its files
//! (nothing is cut, the mark and the point stay, so the next start finds
//! the same), until an operator accepts the loss (`LostData::Accept`).
//!
//! Invariant: a damaged log never serves a read or takes a write; only an
//! explicit acceptance lets recovery cut below a synced end.

use std::fmt;
use std::io::{self, IoSlice};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::io::{LogFile, Storage};
use super::recovery_point::RecoveryPoint;

/// What opening does with a log that ends before its synced end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LostData {
    /// Opens it damaged: it refuses reads and writes, its files untouched.
    #[default]
    Refuse,
    /// An operator accepted the loss: recovery cuts as usual and the log
    /// serves from its shortened end.
    Accept,
}

/// Which of the partition's records says how far the log was synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncRecord {
    CleanShutdown,
    RecoveryPoint,
}

impl fmt::Display for SyncRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::CleanShutdown => "clean-shutdown mark",
            Self::RecoveryPoint => "recovery point",
        })
    }
}

/// Why a partition lost acknowledged data.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Damage {
    /// Recovery ended at `recovered_next_offset`, before the
    /// `synced_next_offset` that `by` recorded as synced.
    Shortfall {
        by: SyncRecord,
        synced_next_offset: i64,
        recovered_next_offset: i64,
    },
    /// The partition's directory is missing although its topic exists:
    /// how much it held is not known.
    MissingDirectory,
    /// The active segment's file was removed or replaced while the
    /// partition was open; the acknowledged records in it (`lost`) are
    /// gone from the directory.
    Unlinked { path: PathBuf, lost: Range<i64> },
}

impl Damage {
    /// The acknowledged offsets that are gone, when known.
    pub fn lost_offsets(&self) -> Option<Range<i64>> {
        match self {
            Self::Shortfall {
                synced_next_offset,
                recovered_next_offset,
                ..
            } => Some(*recovered_next_offset..*synced_next_offset),
            Self::MissingDirectory => None,
            Self::Unlinked { lost, .. } => Some(lost.clone()),
        }
    }

    /// How many acknowledged records are gone (0 when not known).
    pub fn lost_records(&self) -> u64 {
        self.lost_offsets()
            .map_or(0, |r| u64::try_from(r.end - r.start).unwrap_or(0))
    }
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Shortfall {
                by,
                synced_next_offset,
                recovered_next_offset,
            } => write!(
                f,
                "the log ends at offset {recovered_next_offset} but its {by} says it was synced up to offset {synced_next_offset}: offsets {recovered_next_offset} to {} are missing",
                synced_next_offset - 1
            ),
            Self::MissingDirectory => {
                f.write_str("the partition's directory is missing although its topic exists")
            }
            Self::Unlinked { path, lost } => write!(
                f,
                "the active segment {} was removed or replaced under the running broker: offsets {} to {} are gone from the directory",
                path.display(),
                lost.start,
                lost.end - 1
            ),
        }
    }
}

/// The furthest end a clean-shutdown mark or recovery point records as synced.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SyncedEnd {
    by: SyncRecord,
    next_offset: i64,
}

/// The synced end to hold recovery to: the further of the two records.
pub(crate) fn synced_end(
    mark: Option<&RecoveryPoint>,
    point: Option<&RecoveryPoint>,
) -> Option<SyncedEnd> {
    let mark = mark.map(|m| SyncedEnd {
        by: SyncRecord::CleanShutdown,
        next_offset: m.next_offset,
    });
    let point = point.map(|p| SyncedEnd {
        by: SyncRecord::RecoveryPoint,
        next_offset: p.next_offset,
    });
    match (mark, point) {
        (Some(m), Some(p)) if p.next_offset > m.next_offset => Some(p),
        (Some(m), _) => Some(m),
        (None, p) => p,
    }
}

/// What recovery of the active segment is held to: the synced end, and
/// whether a log short of it may be cut.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Floor {
    pub(crate) synced: Option<SyncedEnd>,
    pub(crate) lost_data: LostData,
}

impl Floor {
    /// The damage when a log recovered up to `recovered_next_offset` falls
    /// short of the synced end.
    pub(crate) fn shortfall(&self, recovered_next_offset: i64) -> Option<Damage> {
        self.synced
            .filter(|s| recovered_next_offset < s.next_offset)
            .map(|s| Damage::Shortfall {
                by: s.by,
                synced_next_offset: s.next_offset,
                recovered_next_offset,
            })
    }

    /// Whether a log with `shortfall` must keep its files as they are.
    pub(crate) fn keeps_files(&self, shortfall: Option<&Damage>) -> bool {
        shortfall.is_some() && self.lost_data == LostData::Refuse
    }
}

/// Storage for a damaged partition that has no files to open: every file
/// is empty and stays so, and nothing is created on disk.
#[derive(Debug)]
pub(crate) struct Detached;

#[derive(Debug)]
struct DetachedFile;

fn refused() -> io::Error {
    io::Error::other("the partition is damaged and has no files")
}

impl LogFile for DetachedFile {
    fn read_at(&self, _buf: &mut [u8], _position: u64) -> io::Result<usize> {
        Ok(0)
    }

    fn append(&self, bufs: &[IoSlice<'_>]) -> io::Result<()> {
        if bufs.iter().all(|b| b.is_empty()) {
            Ok(())
        } else {
            Err(refused())
        }
    }

    fn sync(&self) -> io::Result<()> {
        Ok(())
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        if len == 0 { Ok(()) } else { Err(refused()) }
    }

    fn len(&self) -> io::Result<u64> {
        Ok(0)
    }
}

impl Storage for Detached {
    fn open(&self, _path: &Path) -> io::Result<Arc<dyn LogFile>> {
        Ok(Arc::new(DetachedFile))
    }

    fn remove_file(&self, _path: &Path) -> io::Result<()> {
        Err(refused())
    }

    fn create_dir_all(&self, _path: &Path) -> io::Result<()> {
        Err(refused())
    }

    /// Nothing of the partition is here: deleting its topic removes what
    /// is left of its directory through the real storage.
    fn remove_dir_all(&self, _path: &Path) -> io::Result<()> {
        Ok(())
    }

    fn list_files(&self, _path: &Path) -> io::Result<Vec<String>> {
        Ok(Vec::new())
    }

    fn list_dirs(&self, _path: &Path) -> io::Result<Vec<String>> {
        Ok(Vec::new())
    }

    fn rename(&self, _from: &Path, _to: &Path) -> io::Result<()> {
        Err(refused())
    }

    fn sync_dir(&self, _path: &Path) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::error::LogError;
    use crate::log::{LogConfig, OpenReport, PartitionLog};
    use crate::testing::MemStorage;

    const DIR: &str = "/p";
    const LOG: &str = "/p/00000000000000000000.log";
    const MARK: &str = "/p/clean-shutdown";
    const POINT: &str = "/p/recovery-point";

    use crate::testing::single_record_batch as batch;

    fn open(storage: &MemStorage, lost_data: LostData) -> (PartitionLog, OpenReport) {
        PartitionLog::open_with(
            Arc::new(storage.clone()),
            Path::new(DIR),
            LogConfig::default(),
            lost_data,
        )
        .unwrap()
    }

    /// Appends `count` one-record batches (synced) and returns each one's end.
    fn append(log: &PartitionLog, count: usize) -> Vec<u64> {
        let ends = (0..count)
            .map(|i| {
                log.append(&[batch(&format!("v{i}"))], 0).unwrap();
                log.size_bytes()
            })
            .collect();
        log.publish(&log.sync().unwrap());
        ends
    }

    fn cut_log_to(storage: &MemStorage, len: u64) {
        let mut bytes = storage.contents(Path::new(LOG)).unwrap();
        bytes.truncate(len as usize);
        storage.set_contents(Path::new(LOG), bytes);
    }

    fn assert_refuses_reads_and_writes(log: &PartitionLog) {
        assert!(matches!(log.read(0, 1), Err(LogError::Damaged { .. })));
        assert!(matches!(
            log.append(&[batch("more")], 0),
            Err(LogError::Damaged { .. })
        ));
        assert!(matches!(log.close_clean(), Err(LogError::Damaged { .. })));
    }

    #[test]
    fn a_log_short_of_its_clean_shutdown_mark_is_damaged_until_the_loss_is_accepted() {
        let storage = MemStorage::default();
        let (log, _) = open(&storage, LostData::Refuse);
        let ends = append(&log, 5);
        log.close_clean().unwrap();
        drop(log);
        // The last two batches and a bit of the third are gone.
        cut_log_to(&storage, ends[2] - 3);
        let files = storage.paths();
        let image = |s: &MemStorage| s.paths().iter().map(|p| s.contents(p)).collect::<Vec<_>>();
        let before = image(&storage);

        for _ in 0..2 {
            let (log, report) = open(&storage, LostData::Refuse);
            let expected = Damage::Shortfall {
                by: SyncRecord::CleanShutdown,
                synced_next_offset: 5,
                recovered_next_offset: 2,
            };
            assert_eq!(report.shortfall.as_ref(), Some(&expected));
            assert_eq!(log.damage(), Some(expected));
            assert_eq!(log.lost_records(), 3);
            assert_refuses_reads_and_writes(&log);
            drop(log);
            assert_eq!(storage.paths(), files, "nothing removed, mark kept");
            assert_eq!(image(&storage), before, "nothing cut");
        }

        let (log, report) = open(&storage, LostData::Accept);
        assert_eq!(report.shortfall.map(|d| d.lost_records()), Some(3));
        assert!(log.damage().is_none());
        assert_eq!(log.lost_records(), 3);
        assert_eq!(log.high_watermark(), 2);
        assert_eq!(
            storage.contents(Path::new(LOG)).unwrap().len() as u64,
            ends[1]
        );
        assert!(!storage.paths().contains(&Path::new(MARK).to_owned()));
        append(&log, 1);
        drop(log);

        // Accepted once: later opens do not report it again.
        let (log, report) = open(&storage, LostData::Refuse);
        assert!(report.shortfall.is_none());
        assert!(log.damage().is_none());
        assert_eq!(log.high_watermark(), 3);
    }

    #[test]
    fn a_log_short_of_its_recovery_point_is_damaged() {
        let storage = MemStorage::default();
        let (log, _) = open(&storage, LostData::Refuse);
        let ends = append(&log, 4);
        log.write_recovery_point(0).unwrap();
        drop(log);
        let storage = storage.crash_image();
        cut_log_to(&storage, ends[0]);

        let (log, report) = open(&storage, LostData::Refuse);
        assert_eq!(
            report.shortfall,
            Some(Damage::Shortfall {
                by: SyncRecord::RecoveryPoint,
                synced_next_offset: 4,
                recovered_next_offset: 1,
            })
        );
        assert_refuses_reads_and_writes(&log);
        assert!(storage.paths().contains(&Path::new(POINT).to_owned()));
    }

    #[test]
    fn a_torn_tail_past_the_last_sync_is_cut_quietly() {
        // Past a recovery point, with no mark.
        let storage = MemStorage::default();
        let (log, _) = open(&storage, LostData::Refuse);
        let ends = append(&log, 3);
        log.write_recovery_point(0).unwrap();
        log.append(&[batch("unsynced")], 0).unwrap();
        drop(log);
        let storage = storage.crash_image();
        let mut bytes = storage.contents(Path::new(LOG)).unwrap();
        bytes.extend_from_slice(&batch("torn").0[..20]);
        storage.set_contents(Path::new(LOG), bytes);
        let (log, report) = open(&storage, LostData::Refuse);
        assert!(report.shortfall.is_none());
        assert!(report.truncated_bytes > 0);
        assert!(log.damage().is_none());
        assert_eq!(log.high_watermark(), 3);
        assert_eq!(log.lost_records(), 0);
        assert_eq!(
            storage.contents(Path::new(LOG)).unwrap().len() as u64,
            ends[2]
        );

        // Nothing synced at all, nothing recorded: cut to empty.
        let storage = MemStorage::default();
        let (log, _) = open(&storage, LostData::Refuse);
        log.append(&[batch("unsynced")], 0).unwrap();
        drop(log);
        cut_log_to(&storage, 10);
        let (log, report) = open(&storage, LostData::Refuse);
        assert!(report.shortfall.is_none());
        assert_eq!(log.high_watermark(), 0);
    }

    #[test]
    fn a_mark_without_its_segments_is_damaged_and_nothing_is_created() {
        let storage = MemStorage::default();
        let (log, _) = open(&storage, LostData::Refuse);
        append(&log, 2);
        log.close_clean().unwrap();
        drop(log);
        for path in storage.paths() {
            if path != Path::new(MARK) {
                storage.remove_file(&path).unwrap();
            }
        }
        let (log, report) = open(&storage, LostData::Refuse);
        assert_eq!(report.shortfall.map(|d| d.lost_records()), Some(2));
        assert_refuses_reads_and_writes(&log);
        assert_eq!(storage.paths(), [Path::new(MARK).to_owned()]);
    }

    #[test]
    fn a_missing_partition_is_damaged_and_creates_nothing() {
        let log = PartitionLog::missing(Path::new(DIR), LogConfig::default()).unwrap();
        assert_eq!(log.damage(), Some(Damage::MissingDirectory));
        assert_refuses_reads_and_writes(&log);
        log.delete().expect("its topic can be deleted");
    }

    #[test]
    fn a_segment_removed_under_the_log_turns_it_damaged_at_the_next_sync() {
        let storage = MemStorage::default();
        let (log, _) = open(&storage, LostData::Refuse);
        append(&log, 3);
        storage.remove_dir_all(Path::new(DIR)).unwrap();
        log.append(&[batch("after")], 0).unwrap();
        let Err(LogError::Damaged { damage }) = log.sync() else {
            panic!("the sync after the removal must refuse");
        };
        assert_eq!(damage.lost_offsets(), Some(0..3));
        assert_eq!(log.lost_records(), 3);
        assert_eq!(
            log.high_watermark(),
            3,
            "the unsynced batch stays invisible"
        );
        assert_refuses_reads_and_writes(&log);
        assert!(log.poisoned().is_none(), "damaged, not poisoned");
    }

    #[test]
    fn a_segment_replaced_under_the_log_is_noticed_at_a_roll() {
        let storage = MemStorage::default();
        let (log, _) = open(&storage, LostData::Refuse);
        log.set_config(LogConfig {
            segment_bytes: 1,
            ..LogConfig::default()
        });
        append(&log, 1);
        storage.set_contents(Path::new(LOG), Vec::new());
        assert!(matches!(
            log.append(&[batch("rolls")], 0),
            Err(LogError::Damaged { .. })
        ));
    }
}

//! Syncing many partitions at once: when enough partitions wait for an
//! fsync at the same time, one `syncfs` of the data directory's file system
//! makes all of them durable, instead of one `fdatasync` (and one flush of
//! the disk's cache) per partition.
//!
//! A caller that needs its writes durable joins the next round that starts
//! after it arrived; the first caller to find no round running runs it,
//! the others wait for its result. With few partitions syncing at once
//! (fewer than `SHARED_SYNC_MIN`), each syncs its own file as before: a
//! file-system-wide sync also writes back what other programs left dirty,
//! which only pays off when it replaces many fsyncs.
//!
//! Sharing is used only where `syncfs` reports write-back errors (Linux
//! 5.8 and later) and only for partitions on the data directory's own file
//! system (`covers`). `syncfs` reports an error once: after a failed round
//! the group stops sharing for good, so that each partition's own
//! `fdatasync` (whose file still holds the error) reports whether its data
//! was lost.
//!
//! Invariants: a caller returns `Ok` only after a sync that started after
//! it arrived has succeeded; a failed round fails every caller that was
//! waiting for it (or for a later one) when it failed; no round is shared
//! after one failed.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use parking_lot::{Condvar, Mutex, MutexGuard};

use super::error::LogError;

/// Partitions syncing at once from which they share one file-system sync.
pub const SHARED_SYNC_MIN: usize = 16;

/// How a round makes everything written so far durable.
type SyncAll = Box<dyn Fn() -> io::Result<()> + Send + Sync>;

pub struct SyncGroup {
    /// The file-system-wide sync; `None` where there is none (then every
    /// partition syncs its own file).
    sync_all: Option<SyncAll>,
    /// For error messages: what `sync_all` syncs.
    dir: PathBuf,
    /// The device of `dir`: only partitions on it may share its syncs.
    device: Option<u64>,
    /// Set after a failed round: every caller syncs its own file from then on.
    stopped_sharing: AtomicBool,
    /// Callers inside `sync` now.
    syncing: AtomicUsize,
    /// File-system syncs run so far.
    shared_rounds: AtomicU64,
    rounds: Mutex<Rounds>,
    round_done: Condvar,
}

impl std::fmt::Debug for SyncGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncGroup")
            .field("dir", &self.dir)
            .field("shared", &self.sync_all.is_some())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Rounds {
    /// Rounds started so far; the last one may be running.
    started: u64,
    finished: u64,
    running: bool,
    /// The latest failed round, and its error.
    failure: Option<(u64, io::ErrorKind, String)>,
}

impl SyncGroup {
    /// Every partition syncs its own file.
    pub fn per_file() -> Self {
        Self::new(None, PathBuf::new(), None)
    }

    /// Shares `syncfs` of `dir`'s file system when many partitions sync at
    /// once (Linux; elsewhere, per file).
    pub fn for_data_dir(dir: &Path) -> io::Result<Self> {
        let sync_all = filesystem_sync(dir)?;
        let device = std::fs::metadata(dir)?.dev();
        Ok(Self::new(sync_all, dir.to_owned(), Some(device)))
    }

    fn new(sync_all: Option<SyncAll>, dir: PathBuf, device: Option<u64>) -> Self {
        Self {
            sync_all,
            dir,
            device,
            stopped_sharing: AtomicBool::new(false),
            syncing: AtomicUsize::new(0),
            shared_rounds: AtomicU64::new(0),
            rounds: Mutex::new(Rounds::default()),
            round_done: Condvar::new(),
        }
    }

    /// Whether a partition whose files are in `path` may share this group's
    /// syncs: it is on the same file system (not a mount or symlink to
    /// another disk), or the group does not share at all.
    pub fn covers(&self, path: &Path) -> bool {
        match (&self.sync_all, self.device) {
            (Some(_), Some(device)) => std::fs::metadata(path).is_ok_and(|m| m.dev() == device),
            _ => true,
        }
    }

    /// File-system syncs run so far (each shared by the callers of a round).
    pub fn shared_rounds(&self) -> u64 {
        self.shared_rounds.load(Ordering::Relaxed)
    }

    /// Makes what the caller wrote durable: with `own` (its file's fsync),
    /// or by joining a shared round when many callers sync at once.
    pub fn sync(&self, own: impl FnOnce() -> Result<(), LogError>) -> Result<(), LogError> {
        let _counted = Counted::enter(&self.syncing);
        let Some(sync_all) = &self.sync_all else {
            return own();
        };
        if self.syncing.load(Ordering::Acquire) < SHARED_SYNC_MIN
            || self.stopped_sharing.load(Ordering::Acquire)
        {
            return own();
        }
        let mut rounds = self.rounds.lock();
        // A round running now may have started before this caller's writes.
        let needed = rounds.started + 1;
        loop {
            if rounds.finished >= needed {
                return match &rounds.failure {
                    Some((round, kind, message)) if *round >= needed => Err(LogError::io(
                        "syncfs",
                        &self.dir,
                        io::Error::new(*kind, message.clone()),
                    )),
                    _ => Ok(()),
                };
            }
            if rounds.running {
                self.round_done.wait(&mut rounds);
                continue;
            }
            rounds.running = true;
            rounds.started += 1;
            let round = rounds.started;
            // A panic must not leave the round running forever, with
            // every waiter blocked: it fails the round instead.
            let result = MutexGuard::unlocked(&mut rounds, || {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(sync_all))
                    .unwrap_or_else(|_panic| Err(io::Error::other("the file-system sync panicked")))
            });
            self.shared_rounds.fetch_add(1, Ordering::Relaxed);
            rounds.running = false;
            rounds.finished = round;
            if let Err(e) = result {
                tracing::error!(dir = %self.dir.display(), error = %e, "syncfs failed; partitions sync their own files from now on");
                // The file system's error is now consumed: a later round
                // would succeed over lost data. Each file's own fdatasync
                // still reports it.
                self.stopped_sharing.store(true, Ordering::Release);
                rounds.failure = Some((round, e.kind(), e.to_string()));
            }
            self.round_done.notify_all();
        }
    }
}

/// Counts a caller in for as long as it is inside `sync`.
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(count)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `syncfs` of the file system holding `dir`, through a descriptor kept
/// open: `syncfs` reports write-back errors that happened since the
/// descriptor was opened, so it must outlive every write it covers.
/// Only where the kernel reports write-back errors through `syncfs`
/// (Linux 5.8 and later); elsewhere `None`.
#[cfg(target_os = "linux")]
fn filesystem_sync(dir: &Path) -> io::Result<Option<SyncAll>> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    if !reports_writeback_errors(&release) {
        tracing::info!(
            kernel = release.trim(),
            "syncfs does not report write-back errors on this kernel; partitions sync their own files"
        );
        return Ok(None);
    }
    let dir = File::open(dir)?;
    Ok(Some(Box::new(move || {
        nix::unistd::syncfs(&dir).map_err(io::Error::from)
    })))
}

/// Whether a Linux kernel `release` ("6.1.0-18-amd64") is 5.8 or later.
fn reports_writeback_errors(release: &str) -> bool {
    let mut numbers = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(str::parse::<u32>);
    match (numbers.next(), numbers.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => (major, minor) >= (5, 8),
        _ => false,
    }
}

#[cfg(not(target_os = "linux"))]
fn filesystem_sync(_dir: &Path) -> io::Result<Option<SyncAll>> {
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::{LogConfig, OsStorage, PartitionLog};

    fn counting(calls: Arc<AtomicU64>, fail: bool) -> SyncGroup {
        SyncGroup::new(
            Some(Box::new(move || {
                calls.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
                if fail {
                    Err(io::Error::other("disk gone"))
                } else {
                    Ok(())
                }
            })),
            PathBuf::from("/data"),
            None,
        )
    }

    /// `callers` threads sync at once; how many synced their own file.
    fn sync_together(group: &Arc<SyncGroup>, callers: usize) -> (usize, Vec<Result<(), String>>) {
        let own = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(std::sync::Barrier::new(callers));
        let threads: Vec<_> = (0..callers)
            .map(|_| {
                let (group, own, barrier) = (group.clone(), own.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    group
                        .sync(|| {
                            own.fetch_add(1, Ordering::SeqCst);
                            // Held long enough that the others arrive meanwhile.
                            std::thread::sleep(Duration::from_millis(20));
                            Ok(())
                        })
                        .map_err(|e| e.to_string())
                })
            })
            .collect();
        let results = threads.into_iter().map(|t| t.join().unwrap()).collect();
        (own.load(Ordering::SeqCst), results)
    }

    #[test]
    fn a_few_callers_sync_their_own_files() {
        let calls = Arc::new(AtomicU64::new(0));
        let group = Arc::new(counting(calls.clone(), false));
        let (own, results) = sync_together(&group, 4);
        assert_eq!(own, 4);
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn many_callers_share_few_file_system_syncs() {
        let calls = Arc::new(AtomicU64::new(0));
        let group = Arc::new(counting(calls.clone(), false));
        let callers = 64;
        let (own, results) = sync_together(&group, callers);
        assert!(results.iter().all(Result::is_ok));
        let shared = calls.load(Ordering::SeqCst);
        assert!(own < callers, "some joined a shared round");
        assert!(
            shared >= 1 && shared < (callers - own) as u64,
            "{shared} rounds for {} callers",
            callers - own
        );
    }

    #[test]
    fn a_failed_round_fails_its_callers() {
        let calls = Arc::new(AtomicU64::new(0));
        let group = Arc::new(counting(calls, true));
        let (own, results) = sync_together(&group, 64);
        let failed = results.iter().filter(|r| r.is_err()).count();
        assert_eq!(failed, 64 - own, "every caller of a shared round fails");
        assert!(results.iter().flatten().count() == own);
        assert!(
            results
                .iter()
                .any(|r| r.as_ref().is_err_and(|e| e.contains("disk gone")))
        );
    }

    #[test]
    fn after_a_failed_round_nothing_is_shared() {
        let calls = Arc::new(AtomicU64::new(0));
        let group = Arc::new(counting(calls.clone(), true));
        let (own, _) = sync_together(&group, 64);
        assert!(own < 64);
        let rounds = calls.load(Ordering::SeqCst);
        let (own, results) = sync_together(&group, 64);
        assert_eq!(own, 64, "every caller syncs its own file");
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            rounds,
            "no more shared rounds"
        );
    }

    #[test]
    fn kernels_from_5_8_report_writeback_errors_through_syncfs() {
        assert!(reports_writeback_errors("6.18.44-fc-v595\n"));
        assert!(reports_writeback_errors("5.8.0"));
        assert!(reports_writeback_errors("5.15.0-91-generic"));
        assert!(!reports_writeback_errors("5.4.0-150-generic"));
        assert!(!reports_writeback_errors("4.18.0-513.el8.x86_64"));
        assert!(!reports_writeback_errors(""));
    }

    #[test]
    fn a_group_covers_only_its_own_file_system() {
        assert!(SyncGroup::per_file().covers(Path::new("/anywhere")));
        let dir = tempfile::tempdir().unwrap();
        let group = SyncGroup::for_data_dir(dir.path()).unwrap();
        if group.sync_all.is_none() {
            // This kernel's syncfs does not report errors: nothing is shared.
            return;
        }
        std::fs::create_dir(dir.path().join("topics")).unwrap();
        assert!(group.covers(&dir.path().join("topics")));
        assert!(!group.covers(&dir.path().join("missing")));
        assert!(!group.covers(Path::new("/proc")), "another file system");
    }

    #[test]
    fn without_a_file_system_sync_every_caller_syncs_its_own_file() {
        let group = Arc::new(SyncGroup::per_file());
        let (own, results) = sync_together(&group, 32);
        assert_eq!(own, 32);
        assert!(results.iter().all(Result::is_ok));
    }

    #[test]
    fn partitions_on_disk_syncing_at_once_share_syncfs_and_reopen_whole() {
        let dir = tempfile::tempdir().unwrap();
        let group = Arc::new(SyncGroup::for_data_dir(dir.path()).unwrap());
        let partitions = 48;
        // Whether a round is shared depends on the scheduler: 20 rounds
        // missed every time in about one run in twenty; 100 do not.
        let rounds: i64 = 100;
        let logs: Vec<Arc<PartitionLog>> = (0..partitions)
            .map(|p| {
                let (log, _) = PartitionLog::open(
                    Arc::new(OsStorage),
                    &dir.path().join(p.to_string()),
                    LogConfig::default(),
                )
                .unwrap();
                Arc::new(log)
            })
            .collect();
        let barrier = Arc::new(std::sync::Barrier::new(partitions));
        let threads: Vec<_> = logs
            .iter()
            .map(|log| {
                let (log, group, barrier) = (log.clone(), group.clone(), barrier.clone());
                std::thread::spawn(move || {
                    for round in 0..rounds {
                        barrier.wait();
                        let record = brook_record::NewRecord {
                            value: Some(Bytes::from(format!("r{round}"))),
                            ..brook_record::NewRecord::default()
                        };
                        let batch = brook_record::encode_batch(
                            &[record],
                            brook_record::BatchOptions::default(),
                        )
                        .unwrap();
                        let header = brook_record::BatchHeader::parse(&batch).unwrap();
                        log.append(&[(batch, header)], 0).unwrap();
                        let mark = log.sync_in(&group).unwrap();
                        log.publish(&mark);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert!(group.shared_rounds() > 0, "some rounds were shared");
        drop(logs);
        for p in 0..partitions {
            let (log, _) = PartitionLog::open(
                Arc::new(OsStorage),
                &dir.path().join(p.to_string()),
                LogConfig::default(),
            )
            .unwrap();
            assert_eq!(log.high_watermark(), rounds, "partition {p}");
        }
    }
}

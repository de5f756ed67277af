//! Writing a replica's applied batches to disk as they accumulate.
//!
//! A replicated partition's segments are not synced as batches are
//! applied (the Raft log holds them durably); a snapshot syncs them. Left
//! to the snapshot, that sync writes everything applied since the last
//! one at once, tens of megabytes under load, and while the disk is busy
//! with it every Raft log fsync of every group on the broker waits: the
//! produces of those moments were acknowledged tens of milliseconds late.
//! Syncing a little at a time, in the background, spreads those writes
//! out, and leaves the snapshot's sync little to do.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use brook_storage::PartitionLog;

/// Applied bytes that start a background sync of the segments.
const WRITE_BACK_BYTES: u64 = 1024 * 1024;

/// Counts the bytes applied to one partition's log and syncs it in the
/// background once `WRITE_BACK_BYTES` have gathered; at most one sync
/// runs at a time. Clones share the count.
#[derive(Debug, Clone, Default)]
pub(crate) struct WriteBack {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    /// Bytes applied since the last sync started.
    unsynced: AtomicU64,
    syncing: AtomicBool,
}

impl WriteBack {
    /// Counts `bytes` more applied to `log`; starts a sync of it when
    /// enough have gathered and none runs.
    pub(crate) fn applied(&self, log: &Arc<PartitionLog>, bytes: u64) {
        let unsynced = self.shared.unsynced.fetch_add(bytes, Ordering::AcqRel) + bytes;
        if unsynced < WRITE_BACK_BYTES || self.shared.syncing.swap(true, Ordering::AcqRel) {
            return;
        }
        // The sync covers everything written before it starts.
        self.shared.unsynced.store(0, Ordering::Release);
        let log = log.clone();
        let shared = self.shared.clone();
        let sync = move || {
            // A failed sync poisons the log: the next append fails and the
            // replica stops applying, as it does when a snapshot's sync
            // fails. It answers for nothing else: the log may restart (a
            // replica behind the others' start, or moved off) while it
            // runs, which the snapshot's own sync must not take for a
            // damaged log.
            if let Err(e) = log.write_back() {
                tracing::debug!(error = %e, "a background sync of a replica's segments failed");
            }
            shared.syncing.store(false, Ordering::Release);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(sync)),
            Err(_) => sync(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use brook_storage::LogConfig;
    use brook_storage::testing::{MemStorage, single_record_batch};

    use super::*;

    /// How many records a crash now would leave in the log.
    fn surviving_a_crash(storage: &MemStorage) -> i64 {
        let (log, _) = PartitionLog::open(
            Arc::new(storage.crash_image()),
            Path::new("/p"),
            LogConfig::default(),
        )
        .unwrap();
        log.high_watermark()
    }

    async fn synced(write_back: &WriteBack) {
        for _ in 0..200 {
            if !write_back.shared.syncing.load(Ordering::Acquire) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the background sync never ended");
    }

    #[tokio::test]
    async fn applied_batches_reach_the_disk_once_enough_gathered() {
        let storage = Arc::new(MemStorage::default());
        let (log, _) =
            PartitionLog::open(storage.clone(), Path::new("/p"), LogConfig::default()).unwrap();
        let log = Arc::new(log);
        let write_back = WriteBack::default();
        let value = "v".repeat(64 * 1024);
        let applied = |count: i64| {
            for _ in 0..count {
                let batch = single_record_batch(&value);
                let bytes = batch.0.len() as u64;
                let (_, mark) = log.append(&[batch], 1_000).unwrap();
                log.publish(&mark);
                write_back.applied(&log, bytes);
            }
        };
        // 64 KiB batches: 15 stay under the threshold, the 16th is over.
        applied(15);
        synced(&write_back).await;
        assert_eq!(surviving_a_crash(&storage), 0, "too little to sync yet");
        applied(1);
        synced(&write_back).await;
        assert_eq!(surviving_a_crash(&storage), 16, "synced in the background");
        applied(15);
        synced(&write_back).await;
        assert_eq!(
            surviving_a_crash(&storage),
            16,
            "counted again from the sync"
        );
    }
}

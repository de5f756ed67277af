//! The metadata group's durable storage: the Raft log and vote
//! ([`LogStore`]) and the state machine with its snapshot
//! ([`StateMachine`]), both under `<data dir>/cluster/meta/`.

pub(crate) mod files;
mod log;
mod state_machine;

pub use log::LogStore;

use crate::types::{LogId, SnapshotMeta, StoredMembership};

/// The metadata of a snapshot of what was applied up to `last_applied`.
pub(crate) fn snapshot_meta(
    last_applied: Option<LogId>,
    membership: &StoredMembership,
) -> SnapshotMeta {
    let snapshot_id = last_applied.map_or_else(
        || "empty".to_owned(),
        |last| format!("{}-{}", last.leader_id, last.index),
    );
    SnapshotMeta {
        last_log_id: last_applied,
        last_membership: membership.clone(),
        snapshot_id,
    }
}
pub use state_machine::StateMachine;

#[cfg(test)]
mod tests {
    use openraft::storage::{RaftLogStorage, RaftStateMachine};
    use openraft::testing::{StoreBuilder, Suite};
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, Vote};
    use tempfile::TempDir;

    use super::StateMachine;
    use crate::command::MetaCommand;
    use crate::types::{MetaRaftConfig, StorageError};

    type LogStore = super::LogStore<MetaRaftConfig>;

    struct OnDisk;

    impl StoreBuilder<MetaRaftConfig, LogStore, StateMachine, TempDir> for OnDisk {
        async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
            let dir = tempfile::tempdir().unwrap();
            let log = LogStore::open(&dir.path().join("log")).unwrap();
            let state = StateMachine::open(&dir.path().join("state")).unwrap();
            Ok((dir, log, state))
        }
    }

    /// openraft's own conformance tests for storage implementations.
    #[test]
    fn the_stores_pass_openraft_s_storage_suite() {
        Suite::test_all(OnDisk).unwrap();
    }

    /// Chunks so small that nearly every entry starts one.
    pub(super) const TINY_CHUNKS: u64 = 64;

    /// The log in `dir`, of tiny chunks, with entries 1 to `count` of term
    /// 1 appended one at a time: one chunk each.
    pub(super) fn log_of_chunks(dir: &std::path::Path, count: u64) -> LogStore {
        let log = LogStore::open_with_chunks_of(dir, TINY_CHUNKS).unwrap();
        for index in 1..=count {
            log.append_now(&[entry(1, index, "a")]).unwrap();
        }
        log
    }

    struct InTinyChunks;

    impl StoreBuilder<MetaRaftConfig, LogStore, StateMachine, TempDir> for InTinyChunks {
        async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
            let dir = tempfile::tempdir().unwrap();
            let log = LogStore::open_with_chunks_of(&dir.path().join("log"), TINY_CHUNKS).unwrap();
            let state = StateMachine::open(&dir.path().join("state")).unwrap();
            Ok((dir, log, state))
        }
    }

    #[test]
    fn a_log_of_many_chunks_passes_openraft_s_storage_suite() {
        Suite::test_all(InTinyChunks).unwrap();
    }

    /// The chunk files in `dir`, by name, with their inode numbers.
    fn chunks(dir: &std::path::Path) -> Vec<(String, u64)> {
        use std::os::unix::fs::MetadataExt;
        let mut chunks: Vec<(String, u64)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|found| found.unwrap())
            .map(|found| {
                let inode = found.metadata().unwrap().ino();
                (found.file_name().to_string_lossy().into_owned(), inode)
            })
            .filter(|(name, _)| name == "log" || name.starts_with("log."))
            .collect();
        chunks.sort();
        chunks
    }

    #[tokio::test]
    async fn a_purge_deletes_whole_chunks_and_copies_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let at = |index| LogId::new(CommittedLeaderId::new(1, 1), index);
        let mut log = log_of_chunks(dir.path(), 6);
        let before = chunks(dir.path());
        assert_eq!(before.len(), 6, "one entry per chunk: {before:?}");
        log.purge(at(3)).await.unwrap();
        // The chunks of entries 4 to 6 are the same files as before: a
        // purge that rewrote the log copied every entry it kept.
        assert_eq!(chunks(dir.path()), before[3..].to_vec());
        assert_eq!(entries(&mut log).await, vec![(1, 4), (1, 5), (1, 6)]);
        drop(log);
        let mut log = LogStore::open_with_chunks_of(dir.path(), TINY_CHUNKS).unwrap();
        assert_eq!(entries(&mut log).await, vec![(1, 4), (1, 5), (1, 6)]);
        // Purging everything keeps the chunk that takes appends.
        log.purge(at(6)).await.unwrap();
        assert_eq!(chunks(dir.path()), before[5..].to_vec());
        log.append_now(&[entry(1, 7, "b")]).unwrap();
        drop(log);
        let mut log = LogStore::open_with_chunks_of(dir.path(), TINY_CHUNKS).unwrap();
        assert_eq!(entries(&mut log).await, vec![(1, 7)]);
    }

    #[tokio::test]
    async fn a_truncation_into_an_earlier_chunk_removes_the_later_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = log_of_chunks(dir.path(), 5);
        log.truncate(LogId::new(CommittedLeaderId::new(1, 1), 3))
            .await
            .unwrap();
        assert_eq!(
            chunks(dir.path()).len(),
            3,
            "entries 1 and 2, and an emptied third"
        );
        log.append_now(&[entry(2, 3, "b"), entry(2, 4, "b")])
            .unwrap();
        assert_eq!(
            entries(&mut log).await,
            vec![(1, 1), (1, 2), (2, 3), (2, 4)]
        );
        drop(log);
        let mut log = LogStore::open_with_chunks_of(dir.path(), TINY_CHUNKS).unwrap();
        assert_eq!(
            entries(&mut log).await,
            vec![(1, 1), (1, 2), (2, 3), (2, 4)]
        );
    }

    #[tokio::test]
    async fn chunks_after_a_torn_one_are_dropped_at_open() {
        let dir = tempfile::tempdir().unwrap();
        drop(log_of_chunks(dir.path(), 4));
        let names = chunks(dir.path());
        assert_eq!(names.len(), 4);
        // The second chunk lost its tail: what follows it was never
        // acknowledged.
        let second = dir.path().join(&names[1].0);
        let length = std::fs::metadata(&second).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&second)
            .unwrap()
            .set_len(length - 3)
            .unwrap();
        let mut log = LogStore::open_with_chunks_of(dir.path(), TINY_CHUNKS).unwrap();
        assert_eq!(entries(&mut log).await, vec![(1, 1)]);
        assert_eq!(chunks(dir.path()).len(), 2);
        log.append_now(&[entry(1, 2, "b")]).unwrap();
        drop(log);
        let mut log = LogStore::open_with_chunks_of(dir.path(), TINY_CHUNKS).unwrap();
        assert_eq!(entries(&mut log).await, vec![(1, 1), (1, 2)]);
    }

    pub(super) fn entry(term: u64, index: u64, name: &str) -> Entry<MetaRaftConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(MetaCommand::DeleteTopic {
                name: name.to_owned(),
            }),
        }
    }

    async fn entries(log: &mut LogStore) -> Vec<(u64, u64)> {
        log.try_get_log_entries(..)
            .await
            .unwrap()
            .iter()
            .map(|e| (e.log_id.leader_id.term, e.log_id.index))
            .collect()
    }

    #[tokio::test]
    async fn the_log_and_vote_survive_a_reopen_with_truncations_and_purges() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = LogStore::open(dir.path()).unwrap();
            log.append_now(&(1..=6).map(|i| entry(1, i, "a")).collect::<Vec<_>>())
                .unwrap();
            log.save_vote(&Vote::new(2, 3)).await.unwrap();
            // A new leader overwrites the tail from index 5.
            log.truncate(LogId::new(CommittedLeaderId::new(1, 1), 5))
                .await
                .unwrap();
            log.append_now(&[entry(2, 5, "b")]).unwrap();
            log.purge(LogId::new(CommittedLeaderId::new(1, 1), 2))
                .await
                .unwrap();
        }
        let mut log = LogStore::open(dir.path()).unwrap();
        assert_eq!(entries(&mut log).await, vec![(1, 3), (1, 4), (2, 5)]);
        assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(2, 3)));
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(2));
        assert_eq!(state.last_log_id.map(|l| l.index), Some(5));
    }

    #[tokio::test]
    async fn the_log_is_purged_only_as_far_as_the_snapshot_on_disk_reaches() {
        let dir = tempfile::tempdir().unwrap();
        let at = |index| LogId::new(CommittedLeaderId::new(1, 1), index);
        let snapshot = std::sync::Arc::new(parking_lot::Mutex::new(Some(at(2))));
        let reaches = snapshot.clone();
        let mut log = LogStore::open(dir.path())
            .unwrap()
            .with_purge_limit(std::sync::Arc::new(move || *reaches.lock()));
        log.append_now(&(1..=6).map(|i| entry(1, i, "a")).collect::<Vec<_>>())
            .unwrap();
        // openraft purges as it installs a snapshot, before the state
        // machine has written it.
        log.purge(at(5)).await.unwrap();
        assert_eq!(
            entries(&mut log).await,
            vec![(1, 3), (1, 4), (1, 5), (1, 6)]
        );
        assert_eq!(
            LogStore::open(dir.path())
                .unwrap()
                .get_log_state()
                .await
                .unwrap()
                .last_purged_log_id,
            Some(at(2))
        );
        // Once the snapshot is written, the rest goes before the next append.
        *snapshot.lock() = Some(at(5));
        log.append_now(&[entry(1, 7, "b")]).unwrap();
        assert_eq!(entries(&mut log).await, vec![(1, 6), (1, 7)]);
    }

    #[tokio::test]
    async fn a_torn_last_entry_is_cut_off_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = LogStore::open(dir.path()).unwrap();
            log.append_now(&(1..=3).map(|i| entry(1, i, "a")).collect::<Vec<_>>())
                .unwrap();
        }
        let path = dir.path().join("log");
        let length = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(length - 3)
            .unwrap();
        let mut log = LogStore::open(dir.path()).unwrap();
        assert_eq!(entries(&mut log).await, vec![(1, 1), (1, 2)]);
        // Appending goes on where the intact entries end.
        log.append_now(&[entry(1, 3, "c")]).unwrap();
        drop(log);
        let mut log = LogStore::open(dir.path()).unwrap();
        assert_eq!(entries(&mut log).await, vec![(1, 1), (1, 2), (1, 3)]);
    }

    #[tokio::test]
    async fn a_committed_mark_the_log_does_not_back_is_dropped_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let at = |term, index| LogId::new(CommittedLeaderId::new(term, 1), index);
        {
            let mut log = LogStore::open(dir.path()).unwrap();
            log.append_now(&(1..=3).map(|i| entry(1, i, "a")).collect::<Vec<_>>())
                .unwrap();
            log.save_committed(Some(at(1, 2))).await.unwrap();
        }
        let mut log = LogStore::open(dir.path()).unwrap();
        assert_eq!(log.read_committed().await.unwrap(), Some(at(1, 2)));

        // A power failure kept the mark but not the entries it names.
        log.save_committed(Some(at(1, 5))).await.unwrap();
        drop(log);
        let mut log = LogStore::open(dir.path()).unwrap();
        assert_eq!(log.read_committed().await.unwrap(), None);

        // Or it names an entry of a term the log does not hold there.
        log.save_committed(Some(at(2, 3))).await.unwrap();
        drop(log);
        let mut log = LogStore::open(dir.path()).unwrap();
        assert_eq!(log.read_committed().await.unwrap(), None);

        // Or it is torn.
        std::fs::write(dir.path().join("committed"), b"{\"leader_id\":").unwrap();
        let mut log = LogStore::open(dir.path()).unwrap();
        assert_eq!(log.read_committed().await.unwrap(), None);
        assert_eq!(entries(&mut log).await, vec![(1, 1), (1, 2), (1, 3)]);
    }

    #[tokio::test]
    async fn the_state_machine_starts_again_from_its_snapshot() {
        use openraft::RaftSnapshotBuilder;
        let dir = tempfile::tempdir().unwrap();
        {
            let mut state = StateMachine::open(dir.path()).unwrap();
            state
                .apply([Entry {
                    log_id: LogId::new(CommittedLeaderId::new(1, 1), 1),
                    payload: EntryPayload::Normal(MetaCommand::RegisterBroker {
                        id: 7,
                        address: "b7:9420".to_owned(),
                        incarnation: 1,
                    }),
                }])
                .await
                .unwrap();
            state
                .get_snapshot_builder()
                .await
                .build_snapshot()
                .await
                .unwrap();
        }
        let mut state = StateMachine::open(dir.path()).unwrap();
        let (applied, _) = state.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(1));
        assert_eq!(state.state().brokers[&7].address, "b7:9420");
    }
}

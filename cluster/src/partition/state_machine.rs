//! A partition group's state machine: the partition's segmented log.
//!
//! Applying a committed produce entry appends its batches to the
//! `PartitionLog` (which assigns offsets and recognises idempotent
//! producers' retries), so every replica that applied the same entries
//! holds the same batches at the same offsets and the same producer state.
//! The log's high watermark is therefore what is committed and applied;
//! consumers read nothing else.
//!
//! Durability comes from the Raft log (fsynced before an entry counts
//! towards a majority); the segments are synced in the background as
//! batches are applied (`write_back`) and when a snapshot is taken,
//! and the snapshot records how far they were synced (`applied`). After a
//! crash, openraft applies the entries after that point again: the log may
//! already hold some of their batches (written but not synced before the
//! crash, and kept), so a batch found at the offset applying would give it
//! is not written twice.
//!
//! A snapshot carries no records: it says where the log ends and which
//! broker holds it. A replica that installs one (it fell behind the
//! leader's purged Raft log) reads the missing batches from that broker.

use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use brook_record::BatchHeader;
use brook_storage::{BatchOutcome, LogError, PartitionLog, ProducerState};
use bytes::Bytes;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, RaftSnapshotBuilder, StorageIOError};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::source::LogSource;
use super::types::{
    AppliedBatch, PartitionEntry, PartitionRaftConfig, ProduceApplied, ProduceCommand,
};
use super::write_back::WriteBack;
use crate::store::files::{read_json, replace_json};
use crate::store::snapshot_meta;
use crate::types::{LogId, NodeId, SnapshotMeta, StorageError, StoredMembership};

const APPLIED: &str = "applied";

/// Bytes asked of the holder per read while installing a snapshot.
const CATCH_UP_READ_BYTES: u32 = 4 * 1024 * 1024;
/// Pauses between rounds over the replicas while none serves a catch-up.
const CATCH_UP_BACKOFF_MIN: std::time::Duration = std::time::Duration::from_millis(100);
const CATCH_UP_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// The state machine; clones share it (the snapshot builder is a clone).
#[derive(Clone)]
pub struct PartitionStateMachine {
    inner: Arc<Mutex<Applied>>,
    /// The last mark written. Held while one is written: a snapshot
    /// built from an older state must not replace the mark an installed
    /// snapshot wrote meanwhile (openraft builds snapshots in a task of
    /// their own), or a restart would apply from before the purged log.
    marked: Arc<Mutex<Option<AppliedMark>>>,
    log: Arc<PartitionLog>,
    /// Where `applied` lives.
    dir: PathBuf,
    /// The group's name, for the holder of a snapshot.
    group: String,
    node: NodeId,
    source: Arc<dyn LogSource>,
    /// Told the log's high watermark whenever applying moves it: readers
    /// of the partition wait on it.
    watermark: Option<watch::Sender<i64>>,
    /// Syncs the segments a little at a time as batches are applied.
    write_back: WriteBack,
}

impl std::fmt::Debug for PartitionStateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionStateMachine")
            .field("group", &self.group)
            .field("applied", &*self.inner.lock())
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
#[allow(clippy::struct_field_names)] // `last_applied` is openraft's word
struct Applied {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    /// Where the next batch appended goes, as applying the log in order
    /// places it. Below the log's end only after a restart, while entries
    /// whose batches the log kept are applied again.
    next_offset: i64,
}

/// What a snapshot stands for, written once the segments are synced up to
/// `next_offset`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AppliedMark {
    meta: SnapshotMeta,
    next_offset: i64,
    /// The idempotent producers' sequences at `next_offset`, when known
    /// (not while entries applied before a restart are applied again).
    #[serde(default)]
    producers: Option<ProducerState>,
}

/// A snapshot's data: where the log ends and who can serve it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SnapshotData {
    next_offset: i64,
    start_offset: i64,
    holder: NodeId,
    /// The producers' sequences at `next_offset`: a replica that restarts
    /// its log at `start_offset` reads only the batches after it, and
    /// takes these so that it judges later batches as the others do.
    #[serde(default)]
    producers: Option<ProducerState>,
}

impl PartitionStateMachine {
    /// The state machine of `group` over `log`, as far as its last
    /// snapshot in `dir` says it was applied.
    pub fn open(
        dir: &Path,
        group: &str,
        node: NodeId,
        log: Arc<PartitionLog>,
        source: Arc<dyn LogSource>,
        watermark: Option<watch::Sender<i64>>,
    ) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mark: Option<AppliedMark> = read_json(dir, APPLIED)?;
        let applied = match mark.clone() {
            Some(mark) => Applied {
                last_applied: mark.meta.last_log_id,
                membership: mark.meta.last_membership,
                next_offset: mark.next_offset,
            },
            None => Applied {
                last_applied: None,
                membership: StoredMembership::default(),
                next_offset: log.start_offset(),
            },
        };
        Ok(Self {
            inner: Arc::new(Mutex::new(applied)),
            marked: Arc::new(Mutex::new(mark)),
            write_back: WriteBack::default(),
            log,
            dir: dir.to_owned(),
            group: group.to_owned(),
            node,
            source,
            watermark,
        })
    }

    /// Tells readers where the log's committed end is now.
    fn publish_watermark(&self) {
        if let Some(watermark) = &self.watermark {
            watermark.send_replace(self.log.high_watermark());
        }
    }

    /// The partition's log.
    pub fn log(&self) -> &Arc<PartitionLog> {
        &self.log
    }

    /// The last log id the `applied` mark on disk covers: the Raft log is
    /// never purged beyond it.
    pub fn durable_applied(&self) -> Option<LogId> {
        self.marked.lock().as_ref().and_then(|m| m.meta.last_log_id)
    }

    fn mark(&self) -> Option<AppliedMark> {
        self.marked.lock().clone()
    }

    /// Syncs the segments and records that they hold what was applied up
    /// to `meta`; returns the mark now written, which is a later one when
    /// a later one was written meanwhile.
    fn write_mark(
        &self,
        meta: &SnapshotMeta,
        next_offset: i64,
        producers: Option<ProducerState>,
    ) -> io::Result<AppliedMark> {
        let mut marked = self.marked.lock();
        if let Some(later) = marked
            .as_ref()
            .filter(|m| m.meta.last_log_id > meta.last_log_id)
        {
            return Ok(later.clone());
        }
        self.log.sync().map_err(io::Error::other)?;
        let mark = AppliedMark {
            meta: meta.clone(),
            next_offset,
            producers,
        };
        replace_json(&self.dir, APPLIED, &mark)?;
        *marked = Some(mark.clone());
        Ok(mark)
    }

    fn snapshot_of(&self, mark: AppliedMark) -> io::Result<Snapshot<PartitionRaftConfig>> {
        let data = SnapshotData {
            next_offset: mark.next_offset,
            start_offset: self.log.start_offset(),
            holder: self.node,
            producers: mark.producers,
        };
        let bytes = serde_json::to_vec(&data).map_err(io::Error::other)?;
        Ok(Snapshot {
            meta: mark.meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }

    /// Reads what this replica misses of the log from the broker that
    /// holds it, up to `data.next_offset`.
    async fn catch_up(&self, meta: &SnapshotMeta, data: &SnapshotData) -> Result<(), StorageError> {
        let failed = |reason: String| -> StorageError {
            StorageIOError::write_snapshot(Some(meta.signature()), &io::Error::other(reason)).into()
        };
        // The holder first; any other replica holds the same committed
        // batches, as far as it has applied them.
        let membership = meta.last_membership.membership();
        let mut sources: Vec<(NodeId, String)> = membership
            .nodes()
            .filter(|(id, _)| **id != self.node)
            .map(|(id, node)| (*id, node.address.clone()))
            .collect();
        sources.sort_by_key(|(id, _)| *id != data.holder);
        if sources.is_empty() {
            return Err(failed("no other replica to read from".to_owned()));
        }
        let mut backoff = CATCH_UP_BACKOFF_MIN;
        let mut next_source = 0;
        let mut restarted = self.log.high_watermark() < data.start_offset;
        if restarted {
            // What this replica has ends before the first record the
            // others keep: the gap can never be filled, so its log starts
            // again where theirs does.
            tracing::info!(group = %self.group, ends = self.log.high_watermark(), start = data.start_offset, "this replica is behind the others' log start: restarting its log there");
            self.log
                .restart_at(data.start_offset)
                .map_err(|e| failed(e.to_string()))?;
            self.publish_watermark();
        }
        while self.log.high_watermark() < data.next_offset {
            let from = self.log.high_watermark();
            let (source, address) = &sources[next_source % sources.len()];
            let wanted = match self.read_from(address, from, data.next_offset).await {
                Ok(wanted) => wanted,
                Err(Unread::Gap { starts_at }) => {
                    // Retention removed what this replica misses since the
                    // snapshot was made: it starts again where the others
                    // now start.
                    tracing::info!(group = %self.group, source, from, starts_at, "the replicas' logs now start after this replica's end: restarting its log there");
                    self.log
                        .restart_at(starts_at)
                        .map_err(|e| failed(e.to_string()))?;
                    self.publish_watermark();
                    restarted = true;
                    continue;
                }
                Err(Unread::Failed(reason)) => {
                    // Unreachable, or behind: the next replica, and after a
                    // round of them all a pause.
                    tracing::warn!(group = %self.group, source, from, %reason, "catching up: a replica did not serve");
                    next_source += 1;
                    if next_source % sources.len() == 0 {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(CATCH_UP_BACKOFF_MAX);
                    }
                    continue;
                }
            };
            backoff = CATCH_UP_BACKOFF_MIN;
            let now_ms = wanted.last().map_or(0, |(_, h)| h.max_timestamp);
            let (_, mark) = self
                .log
                .append_copied(&wanted, now_ms)
                .map_err(|e| failed(e.to_string()))?;
            self.log.publish(&mark);
            self.publish_watermark();
        }
        if restarted && let Some(producers) = &data.producers {
            self.log.replace_producer_state(producers.clone());
        }
        Ok(())
    }

    /// The batches from `from` up to `until` a replica at `address` serves.
    async fn read_from(
        &self,
        address: &str,
        from: i64,
        until: i64,
    ) -> Result<Vec<(Bytes, BatchHeader)>, Unread> {
        let records = self
            .source
            .read(address, &self.group, from, CATCH_UP_READ_BYTES)
            .await
            .map_err(Unread::Failed)?;
        let batches = split_batches(&records).map_err(Unread::Failed)?;
        // A replica serves from its log start when asked for less.
        if let Some((_, first)) = batches.first()
            && first.base_offset > from
        {
            return Err(Unread::Gap {
                starts_at: first.base_offset,
            });
        }
        let wanted: Vec<(Bytes, BatchHeader)> = batches
            .into_iter()
            .filter(|(_, header)| header.base_offset >= from && header.base_offset < until)
            .collect();
        match wanted.first() {
            Some((_, first)) if first.base_offset == from => Ok(wanted),
            Some((_, first)) => Err(Unread::Failed(format!(
                "its batches start at offset {}, not {from}",
                first.base_offset
            ))),
            None => Err(Unread::Failed(format!("it has nothing from offset {from}"))),
        }
    }
}

/// Why a replica did not serve a catch-up read.
#[derive(Debug)]
enum Unread {
    /// Its log starts at `starts_at`, after the offset asked for.
    Gap { starts_at: i64 },
    /// Unreachable, behind, or refused.
    Failed(String),
}

impl Applied {
    fn apply_produce(
        &mut self,
        log: &PartitionLog,
        command: &ProduceCommand,
    ) -> Result<ProduceApplied, LogError> {
        let mut results: Vec<Option<AppliedBatch>> = vec![None; command.batches.len()];
        let mut to_append = Vec::new();
        let mut positions = Vec::new();
        for (position, batch) in command.batches.iter().enumerate() {
            let header = match BatchHeader::parse(batch) {
                Ok(header) => header,
                Err(e) => {
                    // The leader validated it; the same bytes are refused
                    // the same way everywhere.
                    results[position] = Some(AppliedBatch::Refused {
                        reason: e.to_string(),
                    });
                    continue;
                }
            };
            if to_append.is_empty() && self.next_offset < log.high_watermark() {
                results[position] = Some(self.applied_again(log, &header)?);
                continue;
            }
            to_append.push((batch.clone(), header));
            positions.push(position);
        }
        if !to_append.is_empty() {
            let (outcomes, mark) = log.append(&to_append, command.now_ms)?;
            log.publish(&mark);
            self.next_offset = log.high_watermark();
            for (position, outcome) in positions.into_iter().zip(outcomes) {
                results[position] = Some(match outcome {
                    BatchOutcome::Appended(base_offset) => AppliedBatch::Appended { base_offset },
                    BatchOutcome::Duplicate(base_offset) => AppliedBatch::Duplicate { base_offset },
                    BatchOutcome::Refused(refused) => AppliedBatch::Sequence(refused),
                });
            }
        }
        Ok(ProduceApplied {
            batches: results.into_iter().flatten().collect(),
        })
    }

    /// A batch of an entry applied before a restart: found in the log at
    /// `next_offset` when it was appended then; otherwise it was a retry or
    /// refused then, and nobody waits for the answer now.
    fn applied_again(
        &mut self,
        log: &PartitionLog,
        header: &BatchHeader,
    ) -> Result<AppliedBatch, LogError> {
        // Retention may have removed what the entries after the last
        // snapshot appended; those batches are then compared with the
        // first one kept and skipped.
        self.next_offset = self.next_offset.max(log.start_offset());
        let stored = log.read(self.next_offset, 1)?;
        let found = split_batches(&stored.records)
            .ok()
            .and_then(|batches| batches.into_iter().next())
            .map(|(_, stored)| stored);
        match found {
            Some(stored)
                if stored.base_offset == self.next_offset && same_batch(&stored, header) =>
            {
                let base_offset = self.next_offset;
                self.next_offset += i64::from(header.last_offset_delta) + 1;
                Ok(AppliedBatch::Appended { base_offset })
            }
            _ => Ok(AppliedBatch::Refused {
                reason: "not appended when first applied".to_owned(),
            }),
        }
    }
}

/// Whether a stored batch is the one proposed (its base offset aside, which
/// the log stamps and the CRC does not cover).
fn same_batch(stored: &BatchHeader, proposed: &BatchHeader) -> bool {
    stored.crc == proposed.crc
        && stored.batch_length == proposed.batch_length
        && stored.producer_id == proposed.producer_id
        && stored.base_sequence == proposed.base_sequence
        && stored.last_offset_delta == proposed.last_offset_delta
}

/// Whole batches of a read, with their headers.
pub(crate) fn split_batches(records: &Bytes) -> Result<Vec<(Bytes, BatchHeader)>, String> {
    let mut batches = Vec::new();
    let mut at = 0usize;
    while at < records.len() {
        let header = BatchHeader::parse(&records[at..]).map_err(|e| e.to_string())?;
        let length = header.total_len();
        if length == 0 || at + length > records.len() {
            break;
        }
        batches.push((records.slice(at..at + length), header));
        at += length;
    }
    Ok(batches)
}

impl RaftSnapshotBuilder<PartitionRaftConfig> for PartitionStateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<PartitionRaftConfig>, StorageError> {
        let (meta, next_offset, producers) = {
            // Under the lock applying holds: the log ends at
            // `next_offset` unless entries are being applied again.
            let applied = self.inner.lock();
            let meta = snapshot_meta(applied.last_applied, &applied.membership);
            let producers = (applied.next_offset == self.log.high_watermark())
                .then(|| self.log.producer_state());
            (meta, applied.next_offset, producers)
        };
        let failed = |e: io::Error| StorageIOError::write_snapshot(Some(meta.signature()), &e);
        let mark = self
            .write_mark(&meta, next_offset, producers)
            .map_err(failed)?;
        self.snapshot_of(mark).map_err(|e| failed(e).into())
    }
}

impl RaftStateMachine<PartitionRaftConfig> for PartitionStateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied = self.inner.lock();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ProduceApplied>, StorageError>
    where
        I: IntoIterator<Item = PartitionEntry> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let mut applied = self.inner.lock();
        let mut responses = Vec::new();
        let mut applied_bytes = 0;
        for entry in entries {
            let response = match &entry.payload {
                EntryPayload::Blank => ProduceApplied::default(),
                EntryPayload::Normal(command) => {
                    applied_bytes += command.batches.iter().map(|b| b.len() as u64).sum::<u64>();
                    applied
                        .apply_produce(&self.log, command)
                        // A replica that cannot apply what the others
                        // applied must stop rather than diverge.
                        .map_err(|e| StorageIOError::write_state_machine(&e))?
                }
                EntryPayload::Membership(membership) => {
                    applied.membership =
                        StoredMembership::new(Some(entry.log_id), membership.clone());
                    ProduceApplied::default()
                }
            };
            applied.last_applied = Some(entry.log_id);
            responses.push(response);
        }
        drop(applied);
        self.publish_watermark();
        self.write_back.applied(&self.log, applied_bytes);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data: SnapshotData = serde_json::from_slice(&snapshot.into_inner())
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        tracing::info!(
            group = %self.group,
            from = self.log.high_watermark(),
            to = data.next_offset,
            holder = data.holder,
            "installing a snapshot: reading the records this replica misses from the holder"
        );
        self.catch_up(meta, &data).await?;
        self.write_mark(meta, data.next_offset, data.producers.clone())
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        *self.inner.lock() = Applied {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            next_offset: data.next_offset,
        };
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<PartitionRaftConfig>>, StorageError> {
        self.mark()
            .map(|mark| self.snapshot_of(mark))
            .transpose()
            .map_err(|e| StorageIOError::read_snapshot(None, &e).into())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    use brook_record::{BatchOptions, NewRecord};
    use brook_storage::testing::MemStorage;
    use brook_storage::{LogConfig, SequenceError};
    use openraft::{CommittedLeaderId, Membership};

    use super::*;
    use crate::partition::source::LogRead;
    use crate::types::BrokerNode;

    /// The leader's log as its peers read it: only from `start` on, what
    /// retention left.
    struct Retained {
        log: Arc<PartitionLog>,
        start: i64,
    }

    impl LogSource for Retained {
        fn read<'a>(
            &'a self,
            _address: &'a str,
            _group: &'a str,
            offset: i64,
            max_bytes: u32,
        ) -> LogRead<'a> {
            // As `RaftService.ReadLog`: from the log start when asked
            // for less.
            Box::pin(async move {
                self.log
                    .read(offset.max(self.start), max_bytes as usize)
                    .map(|read| read.records)
                    .map_err(|e| e.to_string())
            })
        }
    }

    fn log() -> Arc<PartitionLog> {
        let storage = Arc::new(MemStorage::default());
        let (log, _) = PartitionLog::open(storage, Path::new("/p"), LogConfig::default())
            .expect("a log in memory");
        Arc::new(log)
    }

    fn batch(producer_id: i64, base_sequence: i32) -> (Bytes, BatchHeader) {
        let record = NewRecord {
            timestamp: 1_000,
            value: Some(Bytes::from(format!("{producer_id}/{base_sequence}"))),
            ..NewRecord::default()
        };
        let options = BatchOptions {
            producer_id,
            producer_epoch: 0,
            base_sequence,
            ..BatchOptions::default()
        };
        let bytes = brook_record::encode_batch(&[record], options).expect("a batch");
        let header = BatchHeader::parse(&bytes).expect("its header");
        (bytes, header)
    }

    fn append(log: &PartitionLog, batch: (Bytes, BatchHeader)) -> BatchOutcome {
        let (outcomes, mark) = log.append(&[batch], 1_000).expect("appended");
        log.publish(&mark);
        outcomes.into_iter().next().expect("one outcome")
    }

    /// A snapshot's description in a group of brokers 1 and 2.
    fn snapshot_of_two() -> SnapshotMeta {
        let nodes: BTreeMap<NodeId, BrokerNode> = [1, 2]
            .into_iter()
            .map(|id| (id, BrokerNode::new(format!("b{id}:9420"))))
            .collect();
        let membership = Membership::new(vec![BTreeSet::from([1, 2])], nodes);
        let last = LogId::new(CommittedLeaderId::new(3, 1), 40);
        SnapshotMeta {
            last_log_id: Some(last),
            last_membership: StoredMembership::new(Some(last), membership),
            snapshot_id: "3-1-40".to_owned(),
        }
    }

    /// Installs, on a replica over `behind`, a snapshot of `leader`'s log up
    /// to its end, which says the log starts at `start_offset`, while the
    /// leader serves its log from `retained_from` on (what retention left).
    async fn install_behind(
        behind: &Arc<PartitionLog>,
        leader: &Arc<PartitionLog>,
        start_offset: i64,
        retained_from: i64,
    ) {
        let source = Arc::new(Retained {
            log: leader.clone(),
            start: retained_from,
        });
        let dir = tempfile::tempdir().expect("a directory");
        let mut machine =
            PartitionStateMachine::open(dir.path(), "t/0@0", 2, behind.clone(), source, None)
                .expect("the state machine");
        let data = SnapshotData {
            next_offset: leader.high_watermark(),
            start_offset,
            holder: 1,
            producers: Some(leader.producer_state()),
        };
        let bytes = serde_json::to_vec(&data).expect("json");
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            machine.install_snapshot(&snapshot_of_two(), Box::new(Cursor::new(bytes))),
        )
        .await
        .expect("installed in time")
        .expect("installed");
    }

    /// A replica that ends before the leader's log start (retention
    /// removed what it misses) restarts its log there, reads the rest,
    /// and takes the leader's producer sequences: a producer whose last
    /// batch is before the start goes on as it does on the leader.
    #[tokio::test]
    async fn a_replica_behind_the_log_start_restarts_there_with_the_producers_sequences() {
        // On the leader: producer 7 wrote offsets 0 to 4, producer 8 the
        // offsets 5 to 9; retention removed everything before 5.
        let leader = log();
        for sequence in 0..5 {
            append(&leader, batch(7, sequence));
        }
        for sequence in 0..5 {
            append(&leader, batch(8, sequence));
        }
        let behind = log();
        append(&behind, batch(7, 0));
        install_behind(&behind, &leader, 5, 5).await;

        assert_eq!((behind.start_offset(), behind.high_watermark()), (5, 10));
        assert_eq!(
            behind.read(5, usize::MAX).expect("read").records,
            leader.read(5, usize::MAX).expect("read").records,
            "the same batches at the same offsets"
        );
        // The replica judges the next batches as the leader does.
        for (producer_id, sequence) in [(7, 5), (8, 5), (7, 4)] {
            let on_leader = append(&leader, batch(producer_id, sequence));
            let on_replica = append(&behind, batch(producer_id, sequence));
            assert_eq!(
                on_replica, on_leader,
                "producer {producer_id} sequence {sequence}"
            );
        }
        assert!(matches!(
            append(&behind, batch(7, 9)),
            BatchOutcome::Refused(SequenceError::OutOfOrder { .. })
        ));
    }

    /// The snapshot says the others' log starts at 0, but retention has
    /// removed records since: the replica restarts its log where their
    /// logs start now instead of asking for the missing ones for ever.
    #[tokio::test]
    async fn a_replica_whose_missing_records_retention_removed_since_the_snapshot_restarts() {
        let leader = log();
        for sequence in 0..10 {
            append(&leader, batch(7, sequence));
        }
        let behind = log();
        // The snapshot says the log starts at 0; the leader serves from 6.
        install_behind(&behind, &leader, 0, 6).await;
        assert_eq!((behind.start_offset(), behind.high_watermark()), (6, 10));
        assert_eq!(append(&behind, batch(7, 10)), append(&leader, batch(7, 10)));
    }
}
